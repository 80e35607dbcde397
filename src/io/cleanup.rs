//! Removal of unfinished outputs when the process is interrupted.
//!
//! [`super::AtomicFile`] registers its temporary path here; the CLI's SIGINT/SIGTERM
//! handler calls [`remove_all`] before exiting, so Ctrl-C leaves no partial file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub(crate) fn register(path: &Path) {
    if let Ok(mut v) = PENDING.lock() {
        v.push(path.to_path_buf());
    }
}

pub(crate) fn unregister(path: &Path) {
    if let Ok(mut v) = PENDING.lock() {
        v.retain(|p| p != path);
    }
}

/// Removes every registered temporary file (and directory).
pub fn remove_all() {
    if let Ok(v) = PENDING.lock() {
        for p in v.iter() {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Registers a temporary directory for removal on interrupt.
pub fn register_dir(path: &Path) {
    register(path)
}

/// Forgets a temporary directory (it was removed normally).
pub fn unregister_dir(path: &Path) {
    unregister(path)
}
