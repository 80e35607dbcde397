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
    /// Reading or writing a file failed: what was being done, to which file (when
    /// there is one), and the system's reason.
    // The system's reason is part of the message, not a `source`: an error chain
    // printer would repeat it.
    #[error("{}", io_message(op, path.as_deref(), *inside, reason))]
    Io {
        /// What was being done, e.g. `writing`; empty when the path says enough.
        op: &'static str,
        path: Option<PathBuf>,
        /// `op` was on a part of the file at `path` (`writing the UKI in PATH`).
        inside: bool,
        reason: std::io::Error,
    },
    /// Something outside this program failed (a registry, a base image).
    #[error("dependency: {0}")]
    Dependency(String),
}

impl Error {
    /// An invalid-input error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(one_line(msg.into()))
    }

    /// An unsupported-feature error.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(one_line(msg.into()))
    }

    /// A file whose content is not what it should be.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: one_line(msg.into()),
        }
    }

    /// A failed read or write of `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::io_op("", path, source)
    }

    /// `op` (`reading`, `writing`, ...) on `path` failed.
    pub fn io_op(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: Some(path.as_ref().to_path_buf()),
            inside: false,
            reason: source,
        }
    }

    /// `op` failed on something that is not a file (a pipe, a thread).
    pub fn io_during(op: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: None,
            inside: false,
            reason: source,
        }
    }

    /// Names `path` in an I/O error that names no file: a writer handed an open file
    /// reports what it was doing, and the caller, who knows the file, adds its path.
    pub fn at_output(self, output: &Path) -> Self {
        match self {
            Error::Io {
                op,
                path: None,
                reason,
                ..
            } => Error::Io {
                op,
                path: Some(output.to_path_buf()),
                inside: true,
                reason,
            },
            other => other,
        }
    }

    /// The message without its category prefix, for quoting inside another message.
    pub fn detail(&self) -> String {
        match self {
            Error::Dependency(m) | Error::Invalid(m) | Error::Unsupported(m) => m.clone(),
            other => other.to_string(),
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

/// The longest message an error carries: a message quotes the offending input, and a
/// profile of one 200 KB line must not come back whole.
const MAX_MESSAGE: usize = 400;

/// `msg` on one line (line breaks shown as `\n`), cut to [`MAX_MESSAGE`] bytes.
fn one_line(msg: String) -> String {
    let msg = if msg.contains(['\n', '\r']) {
        msg.replace('\r', "").replace('\n', "\\n")
    } else {
        msg
    };
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let mut cut = MAX_MESSAGE;
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes in all)", &msg[..cut], msg.len())
}

fn io_message(op: &str, path: Option<&Path>, inside: bool, source: &std::io::Error) -> String {
    match (op, path) {
        ("", Some(path)) => format!("{}: {source}", path.display()),
        (op, Some(path)) if inside => format!("{op} in {}: {source}", path.display()),
        (op, Some(path)) => format!("{op} {}: {source}", path.display()),
        ("", None) => source.to_string(),
        (op, None) => format!("{op}: {source}"),
    }
}

/// Attaches the operation and path to `std::io::Result`s:
/// `file.write_all(..).writing(&path)?` fails as `writing PATH: No space left on device`.
pub trait IoContext<T> {
    /// Turns an I/O error into [`Error::Io`] naming `path` (for opens and metadata,
    /// where the path alone says what failed).
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
    /// ... naming the operation too.
    fn op(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
    /// `reading PATH: ...`
    fn reading(self, path: impl AsRef<Path>) -> Result<T>;
    /// `writing PATH: ...`
    fn writing(self, path: impl AsRef<Path>) -> Result<T>;
    /// `OP: ...`, for I/O that has no path (stdout, a worker thread).
    fn during(self, op: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
    fn op(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io_op(op, path, e))
    }
    fn reading(self, path: impl AsRef<Path>) -> Result<T> {
        self.op("reading", path)
    }
    fn writing(self, path: impl AsRef<Path>) -> Result<T> {
        self.op("writing", path)
    }
    fn during(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::io_during(op, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_operation_and_path() {
        let full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = Err::<(), _>(full())
            .writing("_out/metal-amd64.raw")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("writing _out/metal-amd64.raw: {}", full())
        );
        assert_eq!(e.exit_code(), 4);
        let e = Err::<(), _>(full())
            .during("writing to stdout")
            .unwrap_err();
        assert_eq!(e.to_string(), format!("writing to stdout: {}", full()));
        let e = Err::<(), _>(full()).at("x").unwrap_err();
        assert_eq!(e.to_string(), format!("x: {}", full()));
        let e = Err::<(), _>(full())
            .during("writing the UKI")
            .unwrap_err()
            .at_output(Path::new("_out/metal-amd64.iso"));
        assert_eq!(
            e.to_string(),
            format!("writing the UKI in _out/metal-amd64.iso: {}", full())
        );
        // The reason is in the message, once: no error source to repeat it.
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn messages_quote_at_most_a_line_of_input() {
        let e = Error::invalid(format!("unknown platform {:?}", "y".repeat(200_000)));
        let text = e.to_string();
        assert!(text.len() < 500, "{}", text.len());
        assert!(text.ends_with("bytes in all)"));
        let e = Error::invalid("profile p.yaml: line 1\nline 2");
        assert_eq!(
            e.to_string(),
            "invalid input: profile p.yaml: line 1\\nline 2"
        );
        let e = Error::invalid("é".repeat(300));
        assert!(e.to_string().len() < 500);
    }
}
