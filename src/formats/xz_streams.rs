//! A sequence of xz streams written as one file: each stream either compressed by
//! liblzma (`xz -C crc32 -0 -e`, multi-threaded) or *stored* (LZMA2 uncompressed
//! chunks), the xz counterpart of [`crate::formats::zstd_frames`] for the profiles
//! before Talos 1.8, whose appended initramfs part is xz.
//!
//! Why our own stream writer: liblzma has no "store" mode; on already-compressed bytes
//! it runs its match finder and then emits uncompressed chunks anyway. A stored stream
//! follows "The .xz File Format" 1.2.0 (tukaani.org/xz/xz-file-format.txt):
//! stream header (magic `FD 37 7A 58 5A 00`, stream flags `00 01` = CRC32 check, their
//! CRC32; §2.1.1); one block (§3): a 12-byte block header (size byte 2, flags 0: one
//! filter, no size fields; filter LZMA2 `0x21` with one property byte, 64 KiB
//! dictionary; padding; CRC32), LZMA2 uncompressed chunks (control `0x01` for the first,
//! which resets the dictionary, then `0x02`; a 16-bit big-endian size minus one; up to
//! 64 KiB of bytes) ended by `0x00`, block padding to 4 bytes, the CRC32 of the content;
//! the index (§4: indicator 0, one record of unpadded and uncompressed size as
//! multibyte integers, padding, CRC32); the stream footer (§2.1.2: CRC32, backward
//! size, stream flags, `YZ`). The Linux initramfs unpacker decompresses one xz stream
//! per call (`lib/decompress_unxz.c` stops at the stream end and reports the consumed
//! input) and continues with the next, as for zstd frames; its decoder needs the CRC32
//! check, which every stream here carries.

use std::io::{self, Write};

use crate::formats::chunked::{self, ChunkWriter, Codec, StoredChunk};

/// Stream header magic (§2.1.1.1).
const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];
/// Stream flags: no reserved bits, check type CRC32 (0x01).
const FLAGS: [u8; 2] = [0, 1];
/// LZMA2's largest uncompressed chunk.
const CHUNK_MAX: u64 = 64 << 10;
/// LZMA2 dictionary-size property 8: 2^(8/2 + 12) = 64 KiB, one chunk.
const DICT_PROP: u8 = 8;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// xz as a [`Codec`]: compressed streams by liblzma, preset 0 extreme, CRC32 check, as
/// Talos's `xz -C crc32 -0 -e -T 0`, on `threads` workers (the multi-threaded encoder
/// cuts blocks by the preset's block size, so the bytes do not depend on the thread
/// count).
#[derive(Debug, Clone, Copy)]
pub struct Xz {
    pub threads: u32,
}

/// Writes xz streams one after another; [`ChunkWriter::begin`] starts each.
pub type StreamWriter<W> = ChunkWriter<W, Xz>;

impl Codec for Xz {
    const CHUNK: &'static str = "xz stream";
    type Encoder<W: Write> = xz2::write::XzEncoder<W>;
    type Stored<W: Write> = Stored<W>;

    fn encoder<W: Write>(&self, out: W, _size: u64) -> io::Result<Self::Encoder<W>> {
        let s = xz2::stream::MtStreamBuilder::new()
            .preset(lzma_sys::LZMA_PRESET_EXTREME) // level 0, extreme
            .check(xz2::stream::Check::Crc32)
            .threads(self.threads.max(1))
            .encoder()
            .map_err(|e| io::Error::other(format!("xz encoder: {e}")))?;
        Ok(xz2::write::XzEncoder::new_stream(out, s))
    }

    fn finish<W: Write>(enc: Self::Encoder<W>) -> io::Result<W> {
        enc.finish()
    }

    fn stored<W: Write>(out: W, size: u64) -> io::Result<Self::Stored<W>> {
        Stored::begin(out, size)
    }
}

/// A multibyte integer (§1.2): 7 bits a byte, low first, high bit = more follow.
fn vli(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A stored stream being written: chunks are cut at 64 KiB as the bytes pass through.
pub struct Stored<W: Write> {
    out: W,
    crc: crc::Digest<'static, u32>,
    size: u64,
    left: u64,
    chunk_left: u64,
    /// Bytes of LZMA2 data written so far (chunk headers and contents).
    packed: u64,
}

/// The block header: size byte, flags, LZMA2 filter flags, padding, CRC32.
fn block_header() -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..5].copy_from_slice(&[12 / 4 - 1, 0, 0x21, 1, DICT_PROP]);
    let crc = CRC32.checksum(&h[..8]);
    h[8..].copy_from_slice(&crc.to_le_bytes());
    h
}

impl<W: Write> Stored<W> {
    fn begin(mut out: W, size: u64) -> io::Result<Self> {
        out.write_all(&HEADER_MAGIC)?;
        out.write_all(&FLAGS)?;
        out.write_all(&CRC32.checksum(&FLAGS).to_le_bytes())?;
        out.write_all(&block_header())?;
        Ok(Stored {
            out,
            crc: CRC32.digest(),
            size,
            left: size,
            chunk_left: 0,
            packed: 0,
        })
    }
}

impl<W: Write> StoredChunk<W> for Stored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(chunked::overflow(Xz::CHUNK));
        }
        if self.chunk_left == 0 {
            let n = self.left.min(CHUNK_MAX);
            let control = if self.left == self.size { 0x01 } else { 0x02 };
            let s = (n - 1) as u16;
            self.out.write_all(&[control])?;
            self.out.write_all(&s.to_be_bytes())?;
            self.packed += 3;
            self.chunk_left = n;
        }
        let take = (buf.len() as u64).min(self.chunk_left) as usize;
        let n = self.out.write(&buf[..take])?;
        self.crc.update(&buf[..n]);
        self.chunk_left -= n as u64;
        self.left -= n as u64;
        self.packed += n as u64;
        Ok(n)
    }

    fn finish(mut self) -> io::Result<W> {
        if self.left != 0 {
            return Err(chunked::short(Xz::CHUNK, self.left));
        }
        // End of LZMA2 data, block padding, check.
        self.out.write_all(&[0])?;
        let compressed = self.packed + 1;
        let header = block_header().len() as u64;
        let pad = (4 - (header + compressed) % 4) % 4;
        self.out.write_all(&vec![0; pad as usize])?;
        self.out.write_all(&self.crc.finalize().to_le_bytes())?;
        // Index: one record.
        let mut index = vec![0u8];
        vli(1, &mut index);
        vli(header + compressed + 4, &mut index);
        vli(self.size, &mut index);
        while index.len() % 4 != 0 {
            index.push(0);
        }
        let crc = CRC32.checksum(&index);
        index.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&index)?;
        // Footer.
        let mut footer = Vec::with_capacity(12);
        let backward = (index.len() / 4 - 1) as u32;
        let mut tail = backward.to_le_bytes().to_vec();
        tail.extend_from_slice(&FLAGS);
        footer.extend_from_slice(&CRC32.checksum(&tail).to_le_bytes());
        footer.extend_from_slice(&tail);
        footer.extend_from_slice(b"YZ");
        self.out.write_all(&footer)?;
        Ok(self.out)
    }

    fn out(&mut self) -> &mut W {
        &mut self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::chunked::Chunk;
    use std::io::Read;

    fn decode(x: &[u8]) -> Vec<u8> {
        // liblzma, concatenated streams accepted.
        let mut out = Vec::new();
        xz2::read::XzDecoder::new_multi_decoder(x)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn stored_and_compressed_streams_concatenate() {
        let stored: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let text = b"abcabcabc".repeat(1000);
        let mut w = StreamWriter::new(Vec::new(), Xz { threads: 2 });
        w.begin(Chunk::Compressed, text.len() as u64).unwrap();
        w.write_all(&text).unwrap();
        w.begin(Chunk::Stored, stored.len() as u64).unwrap();
        for chunk in stored.chunks(50_001) {
            w.write_all(chunk).unwrap();
        }
        w.begin(Chunk::Stored, 0).unwrap();
        w.begin(Chunk::Compressed, 3).unwrap();
        w.write_all(b"end").unwrap();
        let x = w.finish().unwrap();
        assert_eq!(decode(&x), [&text[..], &stored, b"end"].concat());
    }

    #[test]
    fn a_stream_takes_exactly_its_size() {
        let mut w = StreamWriter::new(Vec::new(), Xz { threads: 1 });
        w.begin(Chunk::Stored, 4).unwrap();
        assert!(w.write_all(b"12345").is_err());
        let mut w = StreamWriter::new(Vec::new(), Xz { threads: 1 });
        w.begin(Chunk::Stored, 4).unwrap();
        w.write_all(b"123").unwrap();
        assert!(w.finish().is_err());
    }

    #[test]
    fn a_bad_check_is_caught_by_liblzma() {
        let mut w = StreamWriter::new(Vec::new(), Xz { threads: 1 });
        w.begin(Chunk::Stored, 5).unwrap();
        w.write_all(b"hello").unwrap();
        let mut x = w.finish().unwrap();
        x[12 + 12 + 3] ^= 1; // the first content byte
        let mut out = Vec::new();
        assert!(
            xz2::read::XzDecoder::new(&x[..])
                .read_to_end(&mut out)
                .is_err()
        );
    }
}
