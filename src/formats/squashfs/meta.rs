//! Block compression and metadata tables of a squashfs image.
//!
//! A squashfs image stores its inodes, directories, xattrs and lookup tables as
//! "metadata blocks": 8 KiB of table bytes compressed on their own, each preceded by a
//! little-endian u16 holding the stored length, with bit 15 set when the block is
//! stored uncompressed (kernel `fs/squashfs/squashfs_fs.h`: `SQUASHFS_METADATA_SIZE`,
//! `SQUASHFS_COMPRESSED_BIT`). Data blocks and fragments use bit 24 of their u32 size
//! for the same purpose (`SQUASHFS_COMPRESSED_BIT_BLOCK`).
//!
//! A block is kept compressed only when the compressor's output fits in the block
//! size and is strictly shorter than the input (what mksquashfs 4.5.1 does), so the
//! same input gives the same choice.

use crate::error::{Error, Result};

/// Bytes of table data in one metadata block.
pub const METADATA_SIZE: usize = 8192;
/// Bit of a metadata block header: the block is stored uncompressed.
pub const META_UNCOMPRESSED: u16 = 0x8000;
/// Bit of a data block or fragment size: the block is stored uncompressed.
pub const BLOCK_UNCOMPRESSED: u32 = 1 << 24;

/// The block compressor of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// zstd at this level, one `ZSTD_compressCCtx` call per block.
    Zstd(i32),
    /// xz as mksquashfs's `xz_wrapper.c` writes it (see [`super::xz_block`]).
    Xz,
    /// Nothing is compressed (mksquashfs `-noI -noD -noF -noX`).
    Stored,
}

/// One thread's compressor: the codec plus its reusable context.
pub struct Compressor {
    codec: Codec,
    zstd: Option<zstd::zstd_safe::CCtx<'static>>,
}

impl Compressor {
    pub fn new(codec: Codec) -> Result<Self> {
        let zstd = match codec {
            Codec::Zstd(_) => Some(
                zstd::zstd_safe::CCtx::try_create()
                    .ok_or_else(|| Error::invalid("squashfs: cannot create a zstd context"))?,
            ),
            _ => None,
        };
        Ok(Compressor { codec, zstd })
    }

    /// `src` compressed into at most `cap` bytes with an xz dictionary of `dict`
    /// bytes; `None` when it is to be stored as it is.
    pub fn compress(&mut self, src: &[u8], cap: usize, dict: u32) -> Result<Option<Vec<u8>>> {
        let out = match self.codec {
            Codec::Stored => return Ok(None),
            Codec::Zstd(level) => {
                let cctx = self.zstd.as_mut().expect("a zstd context");
                let mut out = Vec::with_capacity(cap);
                match cctx.compress(&mut out, src, level) {
                    Ok(_) => out,
                    // No room within `cap` (zstd has no stable error codes; squashfs-tools
                    // reads any failure this way too).
                    Err(_) => return Ok(None),
                }
            }
            Codec::Xz => {
                super::xz_block(src, dict).map_err(|e| Error::invalid(format!("squashfs: {e}")))?
            }
        };
        Ok((!out.is_empty() && out.len() < src.len() && out.len() <= cap).then_some(out))
    }
}

/// A metadata table being built: complete blocks are compressed as they fill, the
/// last partial block when the table is finished.
pub struct MetaTable {
    /// The stored blocks so far (headers included).
    out: Vec<u8>,
    /// Table bytes not yet in a stored block (less than one block).
    pending: Vec<u8>,
    /// `out.len()` after each stored block: where each following block starts.
    starts: Vec<u64>,
}

impl MetaTable {
    pub fn new() -> Self {
        MetaTable {
            out: Vec::new(),
            pending: Vec::with_capacity(2 * METADATA_SIZE),
            starts: Vec::new(),
        }
    }

    /// Where the next byte goes: (offset of its block in the stored table, offset
    /// within the block's uncompressed bytes).
    pub fn position(&self) -> (u64, usize) {
        (self.out.len() as u64, self.pending.len())
    }

    /// The position as a squashfs reference (`block << 16 | offset`).
    pub fn reference(&self) -> u64 {
        let (block, offset) = self.position();
        (block << 16) | offset as u64
    }

    /// How many blocks are stored so far.
    pub fn blocks(&self) -> usize {
        self.starts.len()
    }

    /// The stored offset of the block that follows the `n`-th stored block (1-based).
    pub fn start_after(&self, n: usize) -> u64 {
        self.starts[n - 1]
    }

    pub fn push(&mut self, c: &mut Compressor, bytes: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= METADATA_SIZE {
            let rest = self.pending.split_off(METADATA_SIZE);
            let block = std::mem::replace(&mut self.pending, rest);
            self.store(c, &block)?;
        }
        Ok(())
    }

    fn store(&mut self, c: &mut Compressor, block: &[u8]) -> Result<()> {
        store_meta_block(c, block, &mut self.out)?;
        self.starts.push(self.out.len() as u64);
        Ok(())
    }

    /// The stored table, the last partial block included.
    pub fn finish(mut self, c: &mut Compressor) -> Result<Vec<u8>> {
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            self.store(c, &block)?;
        }
        Ok(self.out)
    }
}

/// Appends `block` (at most one metadata block of table bytes) to `out` as a stored
/// metadata block.
pub fn store_meta_block(c: &mut Compressor, block: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match c.compress(block, METADATA_SIZE, METADATA_SIZE as u32)? {
        Some(z) => {
            out.extend_from_slice(&(z.len() as u16).to_le_bytes());
            out.extend_from_slice(&z);
        }
        None => {
            out.extend_from_slice(&(block.len() as u16 | META_UNCOMPRESSED).to_le_bytes());
            out.extend_from_slice(block);
        }
    }
    Ok(())
}

/// A table indexed by a list of metadata block offsets (fragment, export, id and
/// xattr id tables): the metadata blocks of `data`, then `header`, then the absolute
/// offset of each block as little-endian u64s. `at` is where the table's first byte
/// lands in the image. Returns the bytes and the offset of `header` (or of the list).
pub fn indexed_table(
    c: &mut Compressor,
    data: &[u8],
    header: &[u8],
    at: u64,
) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut list = Vec::new();
    for block in data.chunks(METADATA_SIZE) {
        list.push(at + out.len() as u64);
        store_meta_block(c, block, &mut out)?;
    }
    let start = at + out.len() as u64;
    out.extend_from_slice(header);
    for l in list {
        out.extend_from_slice(&l.to_le_bytes());
    }
    Ok((out, start))
}
