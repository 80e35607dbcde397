//! Errors of the library, classified the way the CLI reports them.
//!
//! Every error names the input it is about (a file, a profile field, a flag), so the
//! one line the CLI prints is enough to fix the problem.

use std::path::{Path, PathBuf};

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by category. The category decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile, a flag or an input file's content is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Well-formed, but not something this build can do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An input file does not have the expected format.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// Reading or writing a file failed.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// Something outside this program failed (a registry, a base image).
    #[error("dependency: {0}")]
    Dependency(String),
}

impl Error {
    /// An invalid-input error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// An unsupported-feature error.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }

    /// A file whose content is not what it should be.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A failed read or write of `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err: source,
        }
    }

    /// Process exit code for this category.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) | Error::Format { .. } => 2,
            Error::Unsupported(_) => 3,
            Error::Io { .. } => 4,
            Error::Dependency(_) => 5,
        }
    }
}

/// Attaches a path to `std::io::Result`s: `file.read(..).at(&path)?`.
pub trait IoContext<T> {
    /// Turns an I/O error into [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
