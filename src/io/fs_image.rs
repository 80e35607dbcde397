//! A file system image written straight into a byte range of an output file (the XFS
//! BOOT and ext4 IMAGECACHE partitions inside a disk image): positioned writes, the
//! range made a hole first so unwritten blocks read as zeros, and file contents
//! streamed into their extents with all-zero chunks left as holes.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// The range of `file` from `offset` on that a file system of `what` goes to.
pub struct FsImage<'f> {
    file: &'f File,
    offset: u64,
    what: &'static str,
}

impl<'f> FsImage<'f> {
    /// `what` names the file system in I/O errors ("writing the XFS filesystem").
    pub fn new(file: &'f File, offset: u64, what: &'static str) -> Self {
        FsImage { file, offset, what }
    }

    fn err(&self, e: std::io::Error) -> Error {
        Error::io_during(self.what, e)
    }

    /// Writes `data` at `pos` in the file system.
    pub fn at(&self, pos: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, self.offset + pos)
            .map_err(|e| self.err(e))
    }

    /// Makes the file long enough for `size` bytes of file system and the range a hole;
    /// false when the range could not be made a hole and still holds what it held.
    pub fn prepare(&self, size: u64) -> Result<bool> {
        let md = self.file.metadata().map_err(|e| self.err(e))?;
        if md.is_file() && md.len() < self.offset + size {
            self.file
                .set_len(self.offset + size)
                .map_err(|e| self.err(e))?;
        }
        Ok(punch_hole(self.file, self.offset, size))
    }

    /// Writes `len` zeros at `pos`.
    pub fn zero(&self, pos: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; super::BUFFER_SIZE];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.at(pos + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Streams `len` bytes of `reader` into `runs` (byte position and length in the
    /// file system, in order), the tail of the last run zero. With `zeroed` (the range
    /// is a hole) all-zero chunks are not written. `name` is the source file, if any,
    /// for the errors of a file that shrinks or grows while it is copied.
    pub fn copy_into(
        &self,
        reader: &mut dyn Read,
        len: u64,
        runs: impl IntoIterator<Item = (u64, u64)>,
        zeroed: bool,
        name: Option<&Path>,
    ) -> Result<()> {
        let rerr = |e: std::io::Error| match name {
            Some(p) if e.kind() == ErrorKind::UnexpectedEof => {
                Error::format(p, format!("shrank below {len} bytes while being written"))
            }
            Some(p) => Error::io_op("reading", p, e),
            None => Error::io_during("reading", e),
        };
        let mut buf = vec![0u8; super::BUFFER_SIZE];
        let mut left = len;
        for (mut pos, mut run_left) in runs {
            while run_left > 0 {
                let n = run_left.min(buf.len() as u64) as usize;
                let data = (n as u64).min(left) as usize;
                reader.read_exact(&mut buf[..data]).map_err(rerr)?;
                buf[data..n].fill(0);
                if !(zeroed && is_zero(&buf[..n])) {
                    self.at(pos, &buf[..n])?;
                }
                left -= data as u64;
                pos += n as u64;
                run_left -= n as u64;
            }
        }
        let mut probe = [0u8; 1];
        if reader.read(&mut probe).map_err(rerr)? != 0 {
            let msg = format!("grew past {len} bytes while being written");
            return Err(match name {
                Some(p) => Error::format(p, msg),
                None => Error::io_during("reading", std::io::Error::other(msg)),
            });
        }
        Ok(())
    }
}

/// Makes `len` bytes at `offset` of `out` a hole (reads as zeros); false when the
/// file system or device cannot.
pub fn punch_hole(out: &File, offset: u64, len: u64) -> bool {
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            out.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    r == 0
}

/// Whether `buf` holds only zeros; OR-folds 64-byte blocks so the check vectorizes.
pub fn is_zero(buf: &[u8]) -> bool {
    let (blocks, rest) = buf.as_chunks::<64>();
    blocks
        .iter()
        .all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0)
        && rest.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_into_runs_and_leaves_zero_chunks_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let f = crate::io::create_rw(&dir.path().join("img")).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(&[0xee; 16], 4096).unwrap();
        let img = FsImage::new(&f, 4096, "writing a test image");
        // Two runs of 8 bytes: 10 bytes of data, the rest zero; `zeroed` is false, so
        // the zero tail is written over the 0xee bytes.
        img.copy_into(&mut &b"abcdefghij"[..], 10, [(0, 8), (8, 8)], false, None)
            .unwrap();
        let mut got = [0u8; 16];
        f.read_exact_at(&mut got, 4096).unwrap();
        assert_eq!(&got, b"abcdefghij\0\0\0\0\0\0");
        // A source longer than it said is refused.
        let e = img
            .copy_into(&mut &b"abc"[..], 2, [(0, 8)], true, None)
            .unwrap_err();
        assert!(e.to_string().contains("grew past 2 bytes"), "{e}");
        assert!(is_zero(&[0; 130]) && !is_zero(&[0, 0, 1]));
    }
}
