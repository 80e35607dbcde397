//! Large runs of zeros as file content for the FAT and ISO writers, costing neither
//! memory nor disk.
//!
//! hadris takes file content as bytes in memory or as a host file. A zero-filled
//! region (an empty partition, padding) of hundreds of MiB is best a hole: an
//! anonymous memory file (`memfd_create`) set to the length reads from the shared
//! zero page. Where that is unavailable, a sparse temporary file does the same on disk.

use std::fs::File;
use std::path::PathBuf;

use hadris_fs::Content;

use crate::error::{Error, IoContext, Result};

/// Content of `len` zero bytes, backed by a hole. The returned guard keeps the memory
/// file open or removes the temporary file when dropped; keep it until the content
/// has been written.
pub fn zeros(len: u64) -> Result<(Zeros, Content)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: memfd_create takes a NUL-terminated name and returns a new descriptor
    // (or -1), which the File then owns.
    let fd = unsafe { libc::memfd_create(c"imager-zeros".as_ptr(), libc::MFD_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` is a descriptor just returned to us and owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if file.set_len(len).is_ok()
            && let Ok(content) = hadris_fs::host::file(&path)
            && content.len() == len
        {
            return Ok((Zeros::Memory(file), content));
        }
    }
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(".imager-zeros-{}-{n}", std::process::id()));
    crate::io::cleanup::register(&path);
    let guard = Zeros::File(path.clone());
    File::create(&path).at(&path)?.set_len(len).at(&path)?;
    let content = hadris_fs::host::file(&path)
        .map_err(|e| Error::io_op("reading", &path, std::io::Error::other(e.to_string())))?;
    Ok((guard, content))
}

/// Keeps the backing of [`zeros`] alive until dropped.
pub enum Zeros {
    Memory(#[allow(dead_code)] File),
    File(PathBuf),
}

impl Drop for Zeros {
    fn drop(&mut self) {
        if let Zeros::File(path) = self {
            let _ = std::fs::remove_file(&*path);
            crate::io::cleanup::unregister(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the content reads as: the backing the guard holds.
    fn bytes(guard: &Zeros) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f = match guard {
            Zeros::Memory(f) => f.try_clone().unwrap(),
            Zeros::File(p) => File::open(p).unwrap(),
        };
        std::io::Seek::rewind(&mut f).unwrap();
        std::io::Read::read_to_end(&mut f, &mut out).unwrap();
        out
    }

    #[test]
    fn content_is_zeros_of_the_length() {
        for len in [0u64, 1, 4096, (64 << 20) + 3] {
            let (guard, content) = zeros(len).unwrap();
            assert_eq!(content.len(), len);
            if len <= 4096 {
                assert_eq!(bytes(&guard), vec![0u8; len as usize]);
            }
            drop(guard);
        }
    }

    #[test]
    fn guard_frees_the_backing() {
        let (guard, _content) = zeros(1 << 20).unwrap();
        let path = match &guard {
            Zeros::Memory(_) => return,
            Zeros::File(p) => p.clone(),
        };
        assert!(path.exists());
        drop(guard);
        assert!(!path.exists());
    }
}
