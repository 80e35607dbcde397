//! A host file as a hadris block device, tuned for writing images once.
//!
//! hadris-storage's `FileDevice` syncs the file on every flush; an image written in
//! several passes (ISO, then its ESP) would reach the disk several times. This device
//! never syncs and leaves blocks of zeros as holes where the file is known to hold
//! zeros (beyond the written end, or in a range declared fresh), so padding, free
//! space and placeholder content cost neither writes nor disk space.

use super::is_zero;
use std::fs::File;
use std::os::unix::fs::FileExt;

use hadris_fs::{Error, ErrorKind};
use hadris_io::ErrorType;
use hadris_storage::sync::BlockDevice;
use hadris_storage::{BlockIndex, BlockSize};

/// A sparse-writing view of a host file with `block_size`-byte blocks.
pub struct HostDevice {
    file: File,
    block_size: BlockSize,
    /// Logical length: the file's length grows to it on [`HostDevice::finish`].
    len: u64,
    /// The end of the bytes actually written; beyond it the file reads as zeros.
    written: u64,
    /// The largest length the device accepts.
    max_len: u64,
    /// A range known to hold zeros, except where `dirty` says it was written.
    fresh: std::ops::Range<u64>,
    /// Written parts of `fresh`: start → end, disjoint and not touching.
    dirty: std::collections::BTreeMap<u64, u64>,
}

impl HostDevice {
    /// A device over `file` (its current content is kept) that may grow to `max_len` bytes.
    pub fn new(file: File, block_size: u32, max_len: u64) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let block_size = BlockSize::new(block_size)
            .ok_or_else(|| std::io::Error::other(format!("bad block size {block_size}")))?;
        Ok(HostDevice {
            file,
            block_size,
            len,
            written: len,
            max_len,
            fresh: 0..0,
            dirty: Default::default(),
        })
    }

    /// Declares that `range` of the file holds zeros (a hole nothing wrote yet), so
    /// zero blocks written there before anything else can be left out.
    pub fn with_fresh(mut self, range: std::ops::Range<u64>) -> Self {
        self.fresh = range;
        self
    }

    /// Whether `[start, end)` lies in the fresh range and no write touched it yet.
    fn untouched(&self, start: u64, end: u64) -> bool {
        self.fresh.start <= start
            && end <= self.fresh.end
            && self
                .dirty
                .range(..end)
                .next_back()
                .is_none_or(|(_, &e)| e <= start)
    }

    /// Records `[start, end)` of the fresh range as written.
    fn mark(&mut self, mut start: u64, mut end: u64) {
        if end <= self.fresh.start || self.fresh.end <= start {
            return;
        }
        // Merge with every run that overlaps or touches.
        let touching: Vec<(u64, u64)> = self
            .dirty
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.dirty.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.dirty.insert(start, end);
    }

    /// Extends the file to its logical length (trailing zeros become a hole).
    pub fn finish(self) -> std::io::Result<File> {
        if self.file.metadata()?.len() < self.len {
            self.file.set_len(self.len)?;
        }
        Ok(self.file)
    }

    fn check(
        &self,
        first: BlockIndex,
        len: usize,
        limit: u64,
    ) -> Result<u64, Error<std::io::Error>> {
        let size = u64::from(self.block_size.get());
        let offset = first.get().checked_mul(size);
        match offset {
            Some(o) if (len as u64).is_multiple_of(size) && o + len as u64 <= limit => Ok(o),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                "access outside the device or not whole blocks",
            )),
        }
    }
}

impl ErrorType for HostDevice {
    type Error = std::io::Error;
}

impl BlockDevice for HostDevice {
    fn block_size(&self) -> BlockSize {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        self.len / u64::from(self.block_size.get())
    }

    fn max_block_count(&self) -> u64 {
        self.max_len / u64::from(self.block_size.get())
    }

    fn writable(&self) -> bool {
        true
    }

    fn read_blocks(
        &mut self,
        first: BlockIndex,
        buf: &mut [u8],
    ) -> Result<(), Error<std::io::Error>> {
        let offset = self.check(first, buf.len(), self.len)?;
        // Bytes past the written end are zeros whether or not the file reaches them.
        let stored = self.written.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.file
            .read_exact_at(&mut buf[..stored], offset)
            .map_err(|e| Error::device(e, "reading the image failed"))?;
        buf[stored..].fill(0);
        Ok(())
    }

    fn write_blocks(&mut self, first: BlockIndex, buf: &[u8]) -> Result<(), Error<std::io::Error>> {
        let offset = self.check(first, buf.len(), self.max_len)?;
        let end = offset + buf.len() as u64;
        self.len = self.len.max(end);
        if (offset >= self.written || self.untouched(offset, end)) && is_zero(buf) {
            return Ok(());
        }
        self.mark(offset, end);
        self.file.write_all_at(buf, offset).map_err(|e| {
            let kind = if e.raw_os_error() == Some(28) {
                ErrorKind::NoSpace
            } else {
                ErrorKind::Io
            };
            Error::device(e, "writing the image failed").with_kind(kind)
        })?;
        self.written = self.written.max(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(len: u64) -> (tempfile::TempDir, HostDevice) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("img"))
            .unwrap();
        file.set_len(len).unwrap();
        let dev = HostDevice::new(file, 512, 1 << 20).unwrap();
        (dir, dev)
    }

    #[test]
    fn zero_blocks_past_the_end_become_holes() {
        let (_dir, mut dev) = device(0);
        dev.write_blocks(BlockIndex::new(0), &[7; 512]).unwrap();
        dev.write_blocks(BlockIndex::new(1), &[0; 4096]).unwrap();
        dev.write_blocks(BlockIndex::new(9), &[5; 512]).unwrap();
        dev.write_blocks(BlockIndex::new(10), &[0; 512]).unwrap();
        assert_eq!(dev.block_count(), 11);
        let mut buf = vec![1u8; 11 * 512];
        dev.read_blocks(BlockIndex::new(0), &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 7));
        assert!(buf[512..9 * 512].iter().all(|&b| b == 0));
        assert!(buf[9 * 512..10 * 512].iter().all(|&b| b == 5));
        assert!(buf[10 * 512..].iter().all(|&b| b == 0));
        let file = dev.finish().unwrap();
        assert_eq!(file.metadata().unwrap().len(), 11 * 512);
    }

    #[test]
    fn zero_check_sees_every_byte() {
        let mut buf = vec![0u8; 4096 + 7];
        assert!(is_zero(&buf));
        for i in [0, 63, 64, 4095, 4096, 4102] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "byte {i}");
            buf[i] = 0;
        }
    }

    #[test]
    fn fresh_range_skips_zeros_until_written() {
        let (_dir, dev) = device(8192);
        let mut dev = dev.with_fresh(1024..8192);
        dev.write_blocks(BlockIndex::new(4), &[9; 1024]).unwrap();
        // Zeros over written bytes (also partly) are written; elsewhere they are not.
        dev.write_blocks(BlockIndex::new(5), &[0; 1024]).unwrap();
        dev.write_blocks(BlockIndex::new(10), &[0; 512]).unwrap();
        let mut buf = vec![1u8; 1536];
        dev.read_blocks(BlockIndex::new(4), &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 9));
        assert!(buf[512..].iter().all(|&b| b == 0));
        assert_eq!(dev.dirty.len(), 1, "{:?}", dev.dirty);
        assert!(dev.untouched(3 * 512, 4 * 512));
        assert!(!dev.untouched(3 * 512, 5 * 512));
        assert!(dev.untouched(7 * 512, 16 * 512));
        assert!(!dev.untouched(0, 512), "outside the fresh range");
        let allocated = dev.finish().unwrap().metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            allocated.blocks() * 512 <= 4096,
            "{} blocks",
            allocated.blocks()
        );
    }

    #[test]
    fn zeros_over_written_data_are_written() {
        let (_dir, mut dev) = device(0);
        dev.write_blocks(BlockIndex::new(0), &[7; 1024]).unwrap();
        dev.write_blocks(BlockIndex::new(0), &[0; 512]).unwrap();
        let mut buf = vec![1u8; 1024];
        dev.read_blocks(BlockIndex::new(0), &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0));
        assert!(buf[512..].iter().all(|&b| b == 7));
    }

    #[test]
    fn refuses_partial_blocks_and_overruns() {
        let (_dir, mut dev) = device(1024);
        assert!(dev.write_blocks(BlockIndex::new(0), &[1; 100]).is_err());
        assert!(dev.write_blocks(BlockIndex::new(2048), &[1; 512]).is_err());
        let mut buf = [0u8; 512];
        assert!(dev.read_blocks(BlockIndex::new(2), &mut buf).is_err());
    }
}
