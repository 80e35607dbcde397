//! Output files that appear under their final name only when complete.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// A file written under a temporary name next to its destination and renamed into
/// place by [`AtomicFile::commit`]. Dropped without commit, it is removed, so a
/// failed or interrupted build leaves nothing half-written behind.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates `.<name>.partial` beside `dest`.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.partial"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .at(&tmp)?;
        crate::io::cleanup::register(&tmp);
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            dest,
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until commit")
    }

    /// Path of the temporary file (for code that reopens it).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames the file to its final name. The data is not forced to disk: artifacts
    /// are hundreds of MiB and their consumers (uploads, `dd`) read them right away;
    /// run `sync` before cutting power.
    pub fn commit(self) -> Result<PathBuf> {
        self.rename(false)
    }

    /// Writes the file to stable storage, then renames it: for small files that
    /// must survive a crash (private keys).
    pub fn commit_durable(self) -> Result<PathBuf> {
        self.rename(true)
    }

    fn rename(mut self, durable: bool) -> Result<PathBuf> {
        let file = self.file.take().expect("file is open until commit");
        if durable {
            file.sync_all().at(&self.tmp)?;
        }
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).at(&self.dest)?;
        crate::io::cleanup::unregister(&self.tmp);
        Ok(self.dest.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            crate::io::cleanup::unregister(&self.tmp);
        }
    }
}
