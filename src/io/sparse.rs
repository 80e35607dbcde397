//! Reading sparse files without touching their holes.
//!
//! Disk images are mostly unallocated space. `SEEK_DATA`/`SEEK_HOLE` tell where the
//! data is; holes are produced as zeros from memory, so streaming a 4 GiB image with
//! 100 MiB of data reads 100 MiB from disk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;

/// A reader over a (possibly sparse) file that yields holes as zeros without reading them.
pub struct SparseReader {
    file: File,
    pos: u64,
    len: u64,
    /// End of the current data run (reads from the file up to here).
    data_end: u64,
    /// Start of the next data run when `pos` is in a hole.
    hole_end: u64,
}

impl SparseReader {
    /// Wraps `file`, starting at its beginning.
    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let mut r = SparseReader {
            file,
            pos: 0,
            len,
            data_end: 0,
            hole_end: 0,
        };
        r.locate()?;
        Ok(r)
    }

    /// Total length of the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn lseek(&self, offset: u64, whence: i32) -> Option<u64> {
        // SAFETY: lseek on an owned, open descriptor; no memory is passed.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), offset as libc::off_t, whence) };
        (r >= 0).then_some(r as u64)
    }

    /// Finds the data run or hole at `pos`.
    fn locate(&mut self) -> io::Result<()> {
        if self.pos >= self.len {
            return Ok(());
        }
        match self.lseek(self.pos, libc::SEEK_DATA) {
            Some(data) if data == self.pos => {
                self.data_end = self
                    .lseek(self.pos, libc::SEEK_HOLE)
                    .unwrap_or(self.len)
                    .min(self.len);
                self.hole_end = self.pos;
            }
            Some(data) => {
                self.data_end = self.pos;
                self.hole_end = data.min(self.len);
            }
            // ENXIO: no data after pos (trailing hole); other errors: treat as all data.
            None if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => {
                self.data_end = self.pos;
                self.hole_end = self.len;
            }
            None => {
                self.data_end = self.len;
                self.hole_end = self.pos;
            }
        }
        if self.data_end > self.pos {
            self.file.seek(SeekFrom::Start(self.pos))?;
        }
        Ok(())
    }
}

impl Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.data_end && self.pos >= self.hole_end {
            self.locate()?;
        }
        let n = if self.pos < self.hole_end {
            let n = buf.len().min((self.hole_end - self.pos) as usize);
            buf[..n].fill(0);
            n
        } else {
            let want = buf.len().min((self.data_end - self.pos) as usize);
            let n = self.file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while reading",
                ));
            }
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// The byte ranges `[start, end)` of `file` (of length `len`) that hold data, in order,
/// as `SEEK_DATA`/`SEEK_HOLE` report them; everything else reads as zeros. A file
/// system without hole reporting gives one range, the whole file. Writers that store
/// only non-zero blocks (qcow2 clusters, VMDK grains) visit just these ranges.
pub fn data_runs(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: i32| -> io::Result<Option<u64>> {
        // SAFETY: lseek on an open descriptor the caller owns; no memory is passed.
        let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        }
    };
    let mut runs = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(pos, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            // No hole reporting (EINVAL on old file systems): all data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && runs.is_empty() => {
                return Ok(vec![(0, len)]);
            }
            Err(e) => return Err(e),
        };
        if start >= len {
            break;
        }
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        runs.push((start, end));
        pos = end;
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_data_and_holes_like_a_plain_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let mut f = File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        f.seek(SeekFrom::Start((8 << 20) - 10)).unwrap();
        f.write_all(b"0123456789").unwrap();
        drop(f);
        let mut plain = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut plain).unwrap();
        let mut sparse = Vec::new();
        SparseReader::new(File::open(&path).unwrap())
            .unwrap()
            .read_to_end(&mut sparse)
            .unwrap();
        assert_eq!(plain.len(), sparse.len());
        assert!(plain == sparse);

        // The data runs cover both writes and leave most of the file out.
        let runs = data_runs(&File::open(&path).unwrap(), 8 << 20).unwrap();
        let covered = |at: u64| runs.iter().any(|&(s, e)| s <= at && at < e);
        assert!(covered(1 << 20) && covered((1 << 20) + 4999) && covered((8 << 20) - 1));
        let total: u64 = runs.iter().map(|(s, e)| e - s).sum();
        assert!(total < 8 << 20, "{runs:?}");
        assert!(runs.windows(2).all(|w| w[0].1 <= w[1].0), "{runs:?}");
    }
}
