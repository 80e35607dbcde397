//! Squashfs images of system extensions, written with the `backhand` crate.
//!
//! The image matches what the Talos imager gets from
//! `mksquashfs ROOTFS OUT -all-root -noappend -no-progress -comp zstd -Xcompression-level 18`
//! under `SOURCE_DATE_EPOCH` (`internal/pkg/extensions/compress.go`): 128 KiB blocks,
//! zstd level 18 with the compressor options stored, duplicate detection, every
//! inode owned by root and timed at the epoch, the superblock's mkfs time the epoch,
//! padded to 4 KiB. Directory modes, file modes and symlink targets come from the tree.
//!
//! Two things `backhand` 0.25 does differently from mksquashfs, and how they are handled:
//! - it has no setter for the root directory's mtime (a fresh writer's root is timed 0).
//!   A writer derived from a reader (`FilesystemWriter::from_fs_reader`) takes the
//!   reader's root header, whose fields are public: so the writer is seeded from a
//!   one-directory image whose root header is set to the epoch.
//! - it writes no NFS export table. Listings and extracted trees are the same; the
//!   image bytes are not mksquashfs's.
//!
//! Profiles before Talos 1.8 get xz instead (`-comp xz -Xdict-size 100%`). `backhand`'s
//! xz feature links a second liblzma beside the one `xz2` links, which cargo refuses,
//! so [`XzBlocks`] is a `backhand` custom compressor over that liblzma doing what
//! squashfs-tools 4.5.1's `xz_wrapper.c` does per block: preset 6
//! (`LZMA_PRESET_DEFAULT`), the dictionary set to the block size, the LZMA2 filter
//! alone, one `lzma_stream_buffer_encode` call with a CRC32 check. A dictionary equal
//! to the block size and no extra filter are mksquashfs's defaults, for which it stores
//! no compressor options (superblock flags without "compressor options present").

use std::io::{Cursor, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use backhand::compression::{
    CompressionAction, CompressionOptions, Compressor, DefaultCompressor, Zstd,
};
use backhand::kind::Kind;
use backhand::{
    BackhandError, FilesystemCompressor, FilesystemReader, FilesystemWriter, NodeHeader, SuperBlock,
};

use crate::error::{Error, IoContext, Result};
use crate::report::Bar;

/// Block size of the images (mksquashfs's default).
pub const BLOCK_SIZE: u32 = 128 * 1024;
/// zstd level (`-Xcompression-level 18`).
pub const ZSTD_LEVEL: u32 = 18;
/// xz preset of mksquashfs (`LZMA_PRESET_DEFAULT`).
const XZ_PRESET: u32 = 6;

/// How the blocks of an image are compressed: Talos's flags by profile version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `-comp zstd -Xcompression-level 18` (Talos >= 1.8).
    Zstd18,
    /// `-comp xz -Xdict-size 100%` (before 1.8).
    Xz,
}

fn compressor(c: Compression) -> Result<FilesystemCompressor> {
    let (id, options) = match c {
        Compression::Zstd18 => (
            Compressor::Zstd,
            Some(CompressionOptions::Zstd(Zstd {
                compression_level: ZSTD_LEVEL,
            })),
        ),
        Compression::Xz => (Compressor::Xz, None),
    };
    FilesystemCompressor::new(id, options)
        .map_err(|e| Error::invalid(format!("squashfs compressor: {e}")))
}

/// The compressor of xz images: every block and metadata block through xz2's
/// liblzma. Reading also goes through it ([`read_kind`]): xz and gzip blocks by xz2 and
/// flate2, any other compressor as `backhand` does.
pub struct XzBlocks;

static XZ_BLOCKS: XzBlocks = XzBlocks;

/// The `backhand` kind for reading squashfs images of any compressor this build can
/// decode (xz, gzip, zstd): Talos's `rootfs.sqsh` is xz.
pub fn read_kind() -> Kind {
    Kind::new_v4(&XZ_BLOCKS)
}

/// One block as mksquashfs's xz compressor writes it.
fn xz_block(bytes: &[u8], dict_size: u32) -> std::result::Result<Vec<u8>, BackhandError> {
    use lzma_sys::*;
    let fail = |what: &str, code: u32| {
        BackhandError::StdIo(std::io::Error::other(format!(
            "xz {what}: liblzma error {code}"
        )))
    };
    // SAFETY: `opts` is plain data that `lzma_lzma_preset` fills in; `filters` is
    // terminated by LZMA_VLI_UNKNOWN and points at `opts`, which outlives the call;
    // `out` has `out.len()` writable bytes and liblzma reports how many it wrote.
    unsafe {
        let mut opts: lzma_options_lzma = std::mem::zeroed();
        if lzma_lzma_preset(&mut opts, XZ_PRESET) != 0 {
            return Err(fail("preset", 0));
        }
        opts.dict_size = dict_size;
        let mut filters = [
            lzma_filter {
                id: LZMA_FILTER_LZMA2,
                options: (&mut opts as *mut lzma_options_lzma).cast(),
            },
            lzma_filter {
                id: LZMA_VLI_UNKNOWN,
                options: std::ptr::null_mut(),
            },
        ];
        let mut out = vec![0u8; lzma_stream_buffer_bound(bytes.len())];
        let mut pos = 0usize;
        let ret = lzma_stream_buffer_encode(
            filters.as_mut_ptr(),
            LZMA_CHECK_CRC32,
            std::ptr::null(),
            bytes.as_ptr(),
            bytes.len(),
            out.as_mut_ptr(),
            &mut pos,
            out.len(),
        );
        if ret != LZMA_OK {
            return Err(fail("encode", ret as u32));
        }
        out.truncate(pos);
        Ok(out)
    }
}

impl CompressionAction for XzBlocks {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        compressor: Compressor,
    ) -> std::result::Result<(), BackhandError> {
        match compressor {
            Compressor::Xz => {
                xz2::read::XzDecoder::new_multi_decoder(bytes).read_to_end(out)?;
                Ok(())
            }
            Compressor::Gzip => {
                flate2::read::ZlibDecoder::new(bytes).read_to_end(out)?;
                Ok(())
            }
            other => DefaultCompressor.decompress(bytes, out, other),
        }
    }

    fn compress(
        &self,
        bytes: &[u8],
        _fc: FilesystemCompressor,
        block_size: u32,
    ) -> std::result::Result<Vec<u8>, BackhandError> {
        xz_block(bytes, block_size)
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &Kind,
        fs_compressor: FilesystemCompressor,
    ) -> std::result::Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

fn header(perm: u32, epoch: u32) -> NodeHeader {
    NodeHeader {
        permissions: (perm & 0o7777) as u16,
        uid: 0,
        gid: 0,
        mtime: epoch,
    }
}

/// A file of the tree, opened when the writer first reads it (so a large tree does not
/// hold a descriptor per file), counting what it reads on the progress bar.
struct Counted {
    path: std::path::PathBuf,
    /// `None` before the first read; `Some(None)` once the file is read to its end.
    file: Option<Option<std::io::BufReader<std::fs::File>>>,
    bar: Bar,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let slot = match &mut self.file {
            Some(slot) => slot,
            None => {
                let f = std::fs::File::open(&self.path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
                })?;
                self.file.insert(Some(std::io::BufReader::new(f)))
            }
        };
        let Some(file) = slot else {
            return Ok(0);
        };
        let n = file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // Done with this file: release its descriptor.
            *slot = None;
        }
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// An image holding only the root directory, as the seed of the real one.
fn seed_image() -> Result<Vec<u8>> {
    let mut w = FilesystemWriter::default();
    w.set_compressor(compressor(Compression::Zstd18)?);
    let mut out = Cursor::new(Vec::new());
    w.write(&mut out)
        .map_err(|e| Error::invalid(format!("writing the squashfs seed: {e}")))?;
    Ok(out.into_inner())
}

/// Writes the tree at `rootfs` as a squashfs image to `dest` (mode 0644).
pub fn write_tree(rootfs: &Path, dest: &Path, epoch: u32, compression: Compression) -> Result<()> {
    let fail = |e: backhand::BackhandError| Error::format(rootfs, format!("squashfs: {e}"));
    let seed = seed_image()?;
    let mut reader = FilesystemReader::from_reader(Cursor::new(seed)).map_err(fail)?;
    let root_mode = std::fs::metadata(rootfs).at(rootfs)?.permissions().mode();
    reader.root.nodes[0].header = header(root_mode, epoch);
    let mut w = FilesystemWriter::from_fs_reader(&reader).map_err(fail)?;
    if compression == Compression::Xz {
        w.set_kind(Kind::new_v4(&XZ_BLOCKS));
    }
    w.set_compressor(compressor(compression)?);
    w.set_block_size(BLOCK_SIZE);
    w.set_time(epoch);
    w.set_only_root_id();

    let mut entries = Vec::new();
    crate::io::walk(rootfs, rootfs, &mut entries)?;
    let label = format!(
        "compressing {}",
        dest.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut total = 0;
    let bar = Bar::new(&label, 0);
    for rel in entries {
        let path = rootfs.join(&rel);
        let meta = std::fs::symlink_metadata(&path).at(&path)?;
        let h = header(meta.permissions().mode(), epoch);
        let ty = meta.file_type();
        let target = Path::new("/").join(&rel);
        if ty.is_dir() {
            w.push_dir(&target, h).map_err(fail)?;
        } else if ty.is_symlink() {
            let link = std::fs::read_link(&path).at(&path)?;
            w.push_symlink(link, &target, h).map_err(fail)?;
        } else if ty.is_file() {
            total += meta.len();
            let file = Counted {
                path: path.clone(),
                file: None,
                bar: bar.clone(),
            };
            w.push_file(file, &target, h).map_err(fail)?;
        } else {
            return Err(Error::format(&path, "not a file, directory or symlink"));
        }
    }
    bar.set_total(total);
    let mut out = crate::io::AtomicFile::create(dest)?;
    let written = w
        .write(std::io::BufWriter::new(out.file()))
        .map_err(|e| Error::format(dest, format!("writing squashfs: {e}")));
    bar.finish();
    written?;
    std::fs::set_permissions(out.temp_path(), std::fs::Permissions::from_mode(0o644)).at(dest)?;
    out.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_reads_back_with_root_timed_at_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("usr/local")).unwrap();
        std::fs::write(root.join("usr/local/a"), b"hello").unwrap();
        std::os::unix::fs::symlink("a", root.join("usr/local/l")).unwrap();
        let img = dir.path().join("x.sqsh");
        write_tree(&root, &img, 1_700_000_000, Compression::Zstd18).unwrap();
        let bytes = std::fs::read(&img).unwrap();
        assert_eq!(bytes.len() % 4096, 0);
        let r = FilesystemReader::from_reader(Cursor::new(bytes)).unwrap();
        assert_eq!(r.mod_time, 1_700_000_000);
        assert_eq!(r.block_size, BLOCK_SIZE);
        for node in &r.root.nodes {
            assert_eq!(node.header.mtime, 1_700_000_000, "{:?}", node.fullpath);
            assert_eq!((node.header.uid, node.header.gid), (0, 0));
        }
        assert_eq!(r.root.nodes.len(), 5);
    }

    #[test]
    fn xz_image_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("usr")).unwrap();
        let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("usr/a"), &data).unwrap();
        let img = dir.path().join("x.sqsh");
        write_tree(&root, &img, 1_700_000_000, Compression::Xz).unwrap();
        let r = FilesystemReader::from_reader_with_offset_and_kind(
            std::io::BufReader::new(std::fs::File::open(&img).unwrap()),
            0,
            Kind::new_v4(&XZ_BLOCKS),
        )
        .unwrap();
        assert_eq!(
            r.compressor.map(|c| format!("{c:?}")).as_deref(),
            Some("Xz")
        );
        let node = r
            .files()
            .find(|n| n.fullpath == Path::new("/usr/a"))
            .unwrap();
        let backhand::InnerNode::File(f) = &node.inner else {
            panic!("a file")
        };
        let mut got = Vec::new();
        r.file(f).reader().read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
    }
}
