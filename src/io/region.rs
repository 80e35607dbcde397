//! Outputs that writers such as the UKI builder fill with random access: a whole
//! file, or a byte range of a larger image (the UKI's clusters inside an ESP inside
//! an ISO or disk image, so it is written once, in place).

use std::fs::File;
use std::io::{Error, ErrorKind, Read, Result, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// A seekable output whose length can be reset.
pub trait Output: Read + Write + Seek {
    /// Sets the length (a [`FileRegion`] has a fixed length and only accepts it).
    fn set_len(&mut self, len: u64) -> Result<()>;
}

impl<T: Output + ?Sized> Output for &mut T {
    fn set_len(&mut self, len: u64) -> Result<()> {
        (**self).set_len(len)
    }
}

impl Output for File {
    fn set_len(&mut self, len: u64) -> Result<()> {
        File::set_len(self, len)
    }
}

/// `len` bytes of a file from byte `start`, seen as a file of their own. Reads and
/// writes stay inside the range; the range starts out as zeros (or holes).
pub struct FileRegion {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl FileRegion {
    pub fn new(file: File, start: u64, len: u64) -> Self {
        FileRegion {
            file,
            start,
            len,
            pos: 0,
        }
    }

    /// Byte offset of the region in the file.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Length of the region.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many of `want` bytes fit from the current position.
    fn room(&self, want: usize) -> usize {
        self.len.saturating_sub(self.pos).min(want as u64) as usize
    }
}

impl Read for FileRegion {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = self.room(buf.len());
        let n = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FileRegion {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(Error::new(
                ErrorKind::StorageFull,
                format!("write past the end of a {}-byte region", self.len),
            ));
        }
        let n = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Seek for FileRegion {
    fn seek(&mut self, to: SeekFrom) -> Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            pos.ok_or_else(|| Error::new(ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl Output for FileRegion {
    fn set_len(&mut self, len: u64) -> Result<()> {
        if len == self.len || len == 0 {
            // 0: a writer starting over; the region is rewritten from the start.
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!("a {}-byte region cannot be resized to {len}", self.len),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_reads_and_writes_inside_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut r = FileRegion::new(file, 2, 5);
        r.write_all(b"abc").unwrap();
        assert!(r.write_all(b"xyz").is_err(), "past the end");
        r.seek(SeekFrom::Start(1)).unwrap();
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"bcxy");
        assert_eq!(std::fs::read(&path).unwrap(), b"01abcxy789");
        assert_eq!(r.seek(SeekFrom::End(-1)).unwrap(), 4);
        assert!(r.set_len(3).is_err());
    }
}
