//! A sequence of zstd frames written as one stream: each frame either compressed by
//! libzstd or *stored* (raw blocks, no compression), so bytes that are already
//! compressed (squashfs images) cost a copy instead of a level-18 pass.
//!
//! Why our own frame writer: libzstd has no "store this stretch" mode — at any level
//! it runs its match finder over the input first (35 s and ~350 MiB at level 18 for
//! 150 MiB of squashfs images), only to emit raw blocks for them in the end. A stored
//! frame is simple enough to write directly, following RFC 8878 (Zstandard), §3.1.1:
//! magic `0xFD2FB528` (little-endian); a frame header descriptor with the content-size
//! flag and the checksum flag, Single_Segment clear; a window descriptor (exponent 7,
//! mantissa 0: a 128 KiB window, so blocks of up to 128 KiB — Block_Maximum_Size is
//! the smaller of the window and 128 KiB, §3.1.1.2.4); the content size (4 bytes, or 8
//! from 4 GiB); Raw blocks (§3.1.1.2: a 3-byte little-endian header `size << 3 |
//! Block_Type 0 << 1 | Last_Block`, then the bytes); and the content checksum, the low
//! 32 bits of XXH64 (seed 0) of the frame's content, little-endian (§3.1.1.3.2).
//!
//! Compressed frames pledge their content size to libzstd, which then sizes its window
//! and match tables to the frame instead of to the level's defaults: a few KiB for a
//! small frame instead of ~60 MiB at level 18. A frame must be given exactly the bytes
//! it was begun with (more or fewer is an error), and every frame's window stays at or
//! below 8 MiB (zstd's level-18 window; the Linux initramfs decompressor refuses larger
//! ones). Frames of [`MT_MIN`] bytes or more are compressed by libzstd's multi-threaded
//! encoder: its output depends on its job size, not on the number of threads, so the
//! bytes are the same on any number of cores.

use std::io::{self, Write};

use xxhash_rust::xxh64::Xxh64;

use crate::formats::chunked::{self, ChunkWriter, Codec, StoredChunk};

/// zstd's frame magic number, little-endian on disk.
pub const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The largest block: Block_Maximum_Size for a stored frame's 128 KiB window.
const BLOCK_MAX: u64 = 128 << 10;
/// Window descriptor of a stored frame: exponent 7 (2^(10+7) = 128 KiB), mantissa 0.
const STORED_WINDOW: u8 = 7 << 3;
/// Frames from this size on use the multi-threaded encoder. Below, one thread: the
/// multi-threaded encoder at level 18 holds a 32 MiB job buffer and match tables per
/// worker (~200 MiB for one worker), worth it only where the second core saves seconds.
pub const MT_MIN: u64 = 32 << 20;

/// zstd as a [`Codec`]: compressed frames at `level`, with the content size and
/// checksum, multi-threaded (`threads` workers) from [`MT_MIN`] bytes on.
#[derive(Debug, Clone, Copy)]
pub struct Zstd {
    pub level: i32,
    pub threads: u32,
}

/// Writes zstd frames one after another; [`ChunkWriter::begin`] starts each.
pub type FrameWriter<W> = ChunkWriter<W, Zstd>;

impl Codec for Zstd {
    const CHUNK: &'static str = "zstd frame";
    type Encoder<W: Write> = zstd::stream::write::Encoder<'static, W>;
    type Stored<W: Write> = Stored<W>;

    fn encoder<W: Write>(&self, out: W, size: u64) -> io::Result<Self::Encoder<W>> {
        let mut enc = zstd::stream::write::Encoder::new(out, self.level)?;
        enc.include_checksum(true)?;
        enc.include_contentsize(true)?;
        if size >= MT_MIN {
            enc.multithread(self.threads.max(1))?;
        }
        enc.set_pledged_src_size(Some(size))?;
        Ok(enc)
    }

    fn finish<W: Write>(enc: Self::Encoder<W>) -> io::Result<W> {
        enc.finish()
    }

    fn stored<W: Write>(out: W, size: u64) -> io::Result<Self::Stored<W>> {
        Stored::begin(out, size)
    }
}

/// A stored frame being written: blocks are cut at 128 KiB as the bytes pass through.
pub struct Stored<W: Write> {
    out: W,
    hash: Xxh64,
    /// Content bytes still to come, in the frame and in the current block.
    left: u64,
    block_left: u64,
}

impl<W: Write> Stored<W> {
    fn begin(mut out: W, size: u64) -> io::Result<Self> {
        let (fcs_flag, fcs): (u8, Vec<u8>) = match u32::try_from(size) {
            Ok(s) => (2, s.to_le_bytes().to_vec()),
            Err(_) => (3, size.to_le_bytes().to_vec()),
        };
        // Frame_Header_Descriptor: FCS flag (bits 7-6), Single_Segment 0 (bit 5),
        // Content_Checksum 1 (bit 2), no dictionary (bits 1-0).
        let fhd = (fcs_flag << 6) | (1 << 2);
        out.write_all(&MAGIC)?;
        out.write_all(&[fhd, STORED_WINDOW])?;
        out.write_all(&fcs)?;
        if size == 0 {
            // A frame has at least one block: an empty last one.
            out.write_all(&block_header(0, true))?;
        }
        Ok(Stored {
            out,
            hash: Xxh64::new(0),
            left: size,
            block_left: 0,
        })
    }
}

impl<W: Write> StoredChunk<W> for Stored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(chunked::overflow(Zstd::CHUNK));
        }
        if self.block_left == 0 {
            let n = self.left.min(BLOCK_MAX);
            self.out
                .write_all(&block_header(n as u32, n == self.left))?;
            self.block_left = n;
        }
        let take = (buf.len() as u64).min(self.block_left) as usize;
        let n = self.out.write(&buf[..take])?;
        self.hash.update(&buf[..n]);
        self.block_left -= n as u64;
        self.left -= n as u64;
        Ok(n)
    }

    fn finish(mut self) -> io::Result<W> {
        if self.left != 0 {
            return Err(chunked::short(Zstd::CHUNK, self.left));
        }
        let check = self.hash.digest() as u32;
        self.out.write_all(&check.to_le_bytes())?;
        Ok(self.out)
    }

    fn out(&mut self) -> &mut W {
        &mut self.out
    }
}

/// A Raw block's 3-byte header.
fn block_header(size: u32, last: bool) -> [u8; 3] {
    let h = (size << 3) | u32::from(last);
    let b = h.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// One frame's header fields, as a reader of the stream needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Offset of the frame in the stream, and its length.
    pub offset: u64,
    pub len: u64,
    /// Window size (for a single-segment frame, the content size).
    pub window: u64,
    pub content_size: Option<u64>,
    /// True when every block is a Raw block.
    pub stored: bool,
}

/// The frames of a stream of concatenated zstd frames, from their headers and block
/// headers (no decompression).
pub fn frames(data: &[u8]) -> Result<Vec<FrameInfo>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let get = |i: usize| data.get(i).copied().ok_or("truncated frame");
    while at < data.len() {
        let start = at;
        if data.get(at..at + 4) != Some(&MAGIC[..]) {
            return Err(format!("no zstd magic at offset {at}"));
        }
        let fhd = get(at + 4)?;
        at += 5;
        let single = fhd & 0x20 != 0;
        let checksum = fhd & 0x04 != 0;
        let dict_len = [0, 1, 2, 4][usize::from(fhd & 3)];
        let fcs_len = match fhd >> 6 {
            0 if single => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let mut window = 0u64;
        if !single {
            let wd = get(at)?;
            at += 1;
            let base = 1u64 << (10 + (wd >> 3));
            window = base + (base / 8) * u64::from(wd & 7);
        }
        at += dict_len;
        let content_size = if fcs_len == 0 {
            None
        } else {
            let b = data.get(at..at + fcs_len).ok_or("truncated frame header")?;
            let mut v = [0u8; 8];
            v[..fcs_len].copy_from_slice(b);
            let v = u64::from_le_bytes(v) + if fcs_len == 2 { 256 } else { 0 };
            at += fcs_len;
            Some(v)
        };
        if single {
            window = content_size.unwrap_or(0);
        }
        let mut stored = true;
        loop {
            let h = data.get(at..at + 3).ok_or("truncated block header")?;
            let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
            let (last, kind, size) = (h & 1 != 0, (h >> 1) & 3, (h >> 3) as usize);
            at += 3;
            at += match kind {
                0 => size,
                1 => 1, // RLE: one byte repeated `size` times
                2 => size,
                _ => return Err(format!("reserved block type at offset {}", at - 3)),
            };
            stored &= kind == 0;
            if last {
                break;
            }
        }
        if checksum {
            at += 4;
        }
        if at > data.len() {
            return Err("truncated frame".into());
        }
        out.push(FrameInfo {
            offset: start as u64,
            len: (at - start) as u64,
            window,
            content_size,
            stored,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::chunked::Chunk;

    fn decode(z: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(z).unwrap()
    }

    #[test]
    fn stored_and_compressed_frames_concatenate() {
        let stored: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let text = b"abcabcabc".repeat(1000);
        let mut w = FrameWriter::new(
            Vec::new(),
            Zstd {
                level: 18,
                threads: 2,
            },
        );
        w.begin(Chunk::Compressed, text.len() as u64).unwrap();
        w.write_all(&text).unwrap();
        w.begin(Chunk::Stored, stored.len() as u64).unwrap();
        for chunk in stored.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        w.begin(Chunk::Stored, 0).unwrap();
        w.begin(Chunk::Compressed, 3).unwrap();
        w.write_all(b"end").unwrap();
        let z = w.finish().unwrap();
        assert_eq!(decode(&z), [&text[..], &stored, b"end"].concat());
        let f = frames(&z).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(
            f.iter().map(|f| f.content_size).collect::<Vec<_>>(),
            [Some(9000), Some(300_000), Some(0), Some(3)]
        );
        // (libzstd stores the 3 bytes of the last frame in a raw block too.)
        assert_eq!(
            f[..3].iter().map(|f| f.stored).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(f[1].window, 128 << 10);
        assert!(f.iter().all(|f| f.window <= 8 << 20));
        // The stored frame: header 10 bytes, 3 blocks (128 KiB, 128 KiB, rest), checksum.
        assert_eq!(f[1].len, 10 + 3 * 3 + 300_000 + 4);
        assert_eq!(f.iter().map(|f| f.len).sum::<u64>(), z.len() as u64);
    }

    /// A frame past [`MT_MIN`] goes through the multi-threaded encoder, whose bytes do
    /// not depend on the number of workers.
    #[test]
    fn large_frames_are_the_same_on_any_number_of_threads() {
        let len = MT_MIN as usize + (3 << 20);
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 & 0x3f)
            .collect();
        let encode = |threads| {
            let mut w = FrameWriter::new(Vec::new(), Zstd { level: 3, threads });
            w.begin(Chunk::Compressed, len as u64).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap()
        };
        let one = encode(1);
        assert!(one == encode(2) && one == encode(3));
        assert!(decode(&one) == data);
        let single = zstd::bulk::compress(&data, 3).unwrap();
        assert!(single != one, "the multi-threaded encoder was used");
    }

    #[test]
    fn a_frame_takes_exactly_its_size() {
        let mut w = FrameWriter::new(
            Vec::new(),
            Zstd {
                level: 3,
                threads: 1,
            },
        );
        w.begin(Chunk::Stored, 4).unwrap();
        assert!(w.write_all(b"12345").is_err());
        let mut w = FrameWriter::new(
            Vec::new(),
            Zstd {
                level: 3,
                threads: 1,
            },
        );
        w.begin(Chunk::Stored, 4).unwrap();
        w.write_all(b"123").unwrap();
        assert!(w.finish().is_err());
        let mut w = FrameWriter::new(
            Vec::new(),
            Zstd {
                level: 3,
                threads: 1,
            },
        );
        w.begin(Chunk::Compressed, 4).unwrap();
        w.write_all(b"123").unwrap();
        assert!(w.begin(Chunk::Stored, 1).is_err());
        let mut w = FrameWriter::new(
            Vec::new(),
            Zstd {
                level: 3,
                threads: 1,
            },
        );
        assert!(w.write_all(b"x").is_err());
    }

    #[test]
    fn a_bad_checksum_is_caught_by_libzstd() {
        let mut w = FrameWriter::new(
            Vec::new(),
            Zstd {
                level: 3,
                threads: 1,
            },
        );
        w.begin(Chunk::Stored, 5).unwrap();
        w.write_all(b"hello").unwrap();
        let mut z = w.finish().unwrap();
        let n = z.len();
        z[n - 1] ^= 1;
        assert!(zstd::stream::decode_all(&z[..]).is_err());
    }
}
