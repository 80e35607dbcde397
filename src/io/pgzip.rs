//! gzip on every core, as pigz does: the input is cut into fixed-size blocks, each
//! compressed on its own thread into a complete gzip member, and the members are
//! written in order. Concatenated members are one valid gzip stream (RFC 1952 §2.2;
//! gzip, Go's `compress/gzip` and so containerd read them as one). Block size and level
//! are fixed, so the bytes do not depend on the number of cores.
//!
//! flate2 compresses on one thread; at level 6 that is ~25 MB/s on the incompressible
//! bytes of a UKI, which made installer images CPU-bound.

use std::io::{self, Write};

/// Uncompressed bytes per member: large enough that the per-member header and the
/// lost back-references cost < 0.1%, small enough to keep memory flat.
const BLOCK: usize = 1 << 20;

/// A writer that gzips everything written to it into `inner`, on several threads.
pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: u32,
    threads: usize,
    /// Filled blocks waiting to be compressed together.
    pending: Vec<Vec<u8>>,
    /// The block being filled.
    current: Vec<u8>,
    /// Whether a member was written (an empty input still gets one).
    wrote: bool,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(inner: W, level: u32) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        ParallelGzEncoder {
            inner,
            level,
            threads,
            pending: Vec::new(),
            current: Vec::with_capacity(BLOCK),
            wrote: false,
        }
    }

    /// Compresses and writes every pending block, in order.
    fn drain(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let level = self.level;
        let members: Vec<io::Result<Vec<u8>>> = std::thread::scope(|scope| {
            let jobs: Vec<_> = self
                .pending
                .iter()
                .map(|block| scope.spawn(move || member(block, level)))
                .collect();
            jobs.into_iter()
                .map(|j| j.join().expect("gzip thread does not panic"))
                .collect()
        });
        for m in members {
            self.inner.write_all(&m?)?;
        }
        self.wrote = true;
        self.pending.clear();
        Ok(())
    }

    /// Moves the current block to the pending ones, compressing when enough are ready.
    fn seal(&mut self) -> io::Result<()> {
        let block = std::mem::take(&mut self.current);
        self.pending.push(block);
        if self.pending.len() >= self.threads {
            self.drain()?;
        }
        self.current = Vec::with_capacity(BLOCK);
        Ok(())
    }

    /// Writes the rest and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || !self.wrote && self.pending.is_empty() {
            let block = std::mem::take(&mut self.current);
            self.pending.push(block);
        }
        self.drain()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// One complete gzip member for `block`: no name, mtime 0 (reproducible). Blocks
/// that do not compress (kernel and xz initramfs bytes) are stored, which costs a copy
/// instead of a futile search for matches.
fn member(block: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let level = if level > 0 && incompressible(block)? {
        0
    } else {
        level
    };
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(block.len() / 2 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(block)?;
    enc.finish()
}

/// Whether deflate gains under 2% on `block`, judged by its first 64 KiB at level 1.
fn incompressible(block: &[u8]) -> io::Result<bool> {
    let sample = &block[..block.len().min(64 << 10)];
    if sample.len() < 4096 {
        return Ok(false);
    }
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(1));
    enc.write_all(sample)?;
    let packed = enc.finish()?.len();
    Ok(packed * 100 >= sample.len() * 98)
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BLOCK {
            self.seal()?;
        }
        Ok(n)
    }

    /// Buffered blocks are compressed at [`finish`](Self::finish); flushing earlier
    /// would cut members at other places and change the bytes.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_across_blocks_and_is_deterministic() {
        let data: Vec<u8> = (0..(3 * BLOCK + 12345))
            .map(|i| ((i * 2654435761usize) >> 13) as u8)
            .collect();
        let run = |threads: usize| {
            let mut enc = ParallelGzEncoder::new(Vec::new(), 6);
            enc.threads = threads;
            for chunk in data.chunks(100_000) {
                enc.write_all(chunk).unwrap();
            }
            enc.finish().unwrap()
        };
        let one = run(1);
        assert_eq!(gunzip(&one), data);
        assert_eq!(run(3), one, "same bytes whatever the thread count");
        assert_eq!(&one[..3], &[0x1f, 0x8b, 8]);
    }

    #[test]
    fn incompressible_blocks_are_stored_and_others_compressed() {
        let mut x = 0x9E3779B97F4A7C15u64;
        let noise: Vec<u8> = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text = b"talos.platform=metal console=tty0 ".repeat(BLOCK / 34);
        let stored = member(&noise, 6).unwrap();
        assert!(stored.len() > noise.len(), "stored, not compressed");
        assert!(stored.len() < noise.len() + noise.len() / 100);
        assert!(member(&text, 6).unwrap().len() < text.len() / 20);
        let mut both = noise.clone();
        both.extend_from_slice(&text);
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6);
        enc.write_all(&both).unwrap();
        assert_eq!(gunzip(&enc.finish().unwrap()), both);
    }

    #[test]
    fn empty_input_is_one_empty_member() {
        let out = ParallelGzEncoder::new(Vec::new(), 6).finish().unwrap();
        assert!(!out.is_empty());
        assert!(gunzip(&out).is_empty());
    }
}
