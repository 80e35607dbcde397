//! Output files that appear under their final name only when complete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The serial number of the next temporary name this process makes.
static SERIAL: AtomicU64 = AtomicU64::new(0);

impl AtomicFile {
    /// Creates `.<name>.<pid>.<n>.partial` beside `dest`: a name of its own, so
    /// writers racing for the same destination (requests of a service, pulls of one
    /// blob) never write into each other's file; the last rename wins, and every
    /// writer's bytes are whole.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A name left by a killed run of the same PID (PID 1 in a container) is skipped.
        let (tmp, file) = loop {
            let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
            let tmp =
                dest.with_file_name(format!(".{name}.{}.{serial}.partial", std::process::id()));
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => break (tmp, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).at(&tmp),
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writers_of_one_destination_do_not_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("asset.tar");
        let mut a = AtomicFile::create(&dest).unwrap();
        let mut b = AtomicFile::create(&dest).unwrap();
        assert_ne!(a.temp_path(), b.temp_path());
        a.file().write_all(b"first writer").unwrap();
        b.file().write_all(b"second").unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"first writer");
        b.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_leftover_temporary_name_is_skipped_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.iso");
        let next = SERIAL.load(Ordering::Relaxed);
        // Names a killed run of this PID could have left for the next few serials.
        for n in next..next + 4 {
            let stale = dir
                .path()
                .join(format!(".out.iso.{}.{n}.partial", std::process::id()));
            std::fs::write(stale, b"stale").unwrap();
        }
        let mut f = AtomicFile::create(&dest).unwrap();
        f.file().write_all(b"fresh").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"fresh");
    }

    #[test]
    fn an_uncommitted_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = AtomicFile::create(dir.path().join("x")).unwrap();
        let tmp = f.temp_path().to_path_buf();
        assert!(tmp.exists());
        drop(f);
        assert!(!tmp.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
