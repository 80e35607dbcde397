//! Squashfs images of system extensions, written by our own writer ([`writer`]).
//!
//! The image is the one the Talos imager gets from
//! `mksquashfs ROOTFS OUT -all-root -noappend -no-progress -comp zstd -Xcompression-level 18`
//! under `SOURCE_DATE_EPOCH` (`internal/pkg/extensions/compress.go`): 128 KiB blocks,
//! zstd level 18 with the compressor options stored, fragments, duplicate detection,
//! sparse blocks, the NFS export table, every inode owned by root and timed at the
//! epoch, the superblock's mkfs time the epoch, padded to 4 KiB; modes and symlink
//! targets from the tree. Profiles before Talos 1.8 get xz (`-comp xz -Xdict-size 100%`).
//! Talos 1.13+ adds `-xattrs-exclude .*` and one `-p "PATH x security.selinux=LABEL"`
//! per label its tar layers carried: the `xattrs` map of [`write_tree`].
//!
//! Why not `backhand` (0.25), which still reads images here ([`read_kind`], the
//! modules tree): its writer splits directory headers at 255 entries where mksquashfs
//! splits at 256 (so `unsquashfs -lln` of a large directory differs), writes no
//! xattrs, no NFS export table, and cannot time the root directory. The layout follows
//! the kernel's `fs/squashfs/squashfs_fs.h` (on-disk structures) and squashfs-tools
//! 4.5.1's `mksquashfs.c` (order of blocks, inodes, directory headers and tables;
//! `xattr.c` of 4.6.1 for the xattr table), so the bytes are mksquashfs's wherever the
//! compressor library is the same: images with compression off (`-noI -noD -noF -noX`),
//! xz images, zstd images when mksquashfs runs on zstd 1.5.7 (the version bundled here
//! and linked by the Talos imager), and labelled images beside mksquashfs 4.6.1's
//! `-xattrs-exclude .* -p "PATH x security.selinux=..."` (`tests/squashfs.rs`). With
//! Debian 12's zstd 1.5.4 the compressed blocks differ, the listing does not.
//!
//! xz blocks: `backhand`'s xz feature links a second liblzma beside the one `xz2` links,
//! which cargo refuses, so [`XzBlocks`] is a `backhand` custom compressor over xz2's
//! liblzma for reading, and [`xz_block`] encodes as squashfs-tools 4.5.1's
//! `xz_wrapper.c` does per block: preset 6 (`LZMA_PRESET_DEFAULT`), the dictionary set
//! to the block size (8 KiB for metadata), the LZMA2 filter alone, one
//! `lzma_stream_buffer_encode` call with a CRC32 check. A dictionary equal to the block
//! size and no extra filter are mksquashfs's defaults, for which it stores no
//! compressor options (superblock flags without "compressor options present").

mod data;
mod meta;
mod writer;
mod xattr;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use backhand::compression::Compressor;
use backhand::compression::{CompressionAction, DefaultCompressor};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemCompressor, SuperBlock};

use crate::error::{IoContext, Result};
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

/// Extended attributes of an image: (full name, value) pairs by path relative to the
/// tree (the empty path for the root directory).
pub type Xattrs = BTreeMap<PathBuf, Vec<(String, Vec<u8>)>>;

/// Writer settings beyond the Talos defaults.
#[derive(Debug, Clone)]
pub struct Options {
    pub compression: Compression,
    /// Inode mtimes and the mkfs time.
    pub epoch: u32,
    /// Compressing threads (default: the available cores). The bytes do not depend on it.
    pub threads: Option<usize>,
    /// Store every block uncompressed, as `mksquashfs -noI -noD -noF -noX` with the same
    /// `-comp` does (for comparing layouts independently of the compressor library).
    pub uncompressed: bool,
}

/// Writes the tree at `rootfs` as a squashfs image to `dest` (mode 0644), with
/// `xattrs` on the paths it names.
pub fn write_tree(
    rootfs: &Path,
    dest: &Path,
    epoch: u32,
    compression: Compression,
    xattrs: &Xattrs,
) -> Result<()> {
    let options = Options {
        compression,
        epoch,
        threads: None,
        uncompressed: false,
    };
    write_tree_with(rootfs, dest, xattrs, &options)
}

/// [`write_tree`] with every setting explicit.
pub fn write_tree_with(rootfs: &Path, dest: &Path, xattrs: &Xattrs, o: &Options) -> Result<()> {
    let (codec, compression_id, options) = match o.compression {
        Compression::Zstd18 => (
            meta::Codec::Zstd(ZSTD_LEVEL as i32),
            6,
            Some(ZSTD_LEVEL.to_le_bytes().to_vec()),
        ),
        Compression::Xz => (meta::Codec::Xz, 4, None),
    };
    let codec = if o.uncompressed {
        meta::Codec::Stored
    } else {
        codec
    };
    let threads = o.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let label = format!(
        "compressing {}",
        dest.file_name().unwrap_or_default().to_string_lossy()
    );
    let bar = Bar::new(&label, 0);
    let mut out = crate::io::AtomicFile::create(dest)?;
    let file = out.file().try_clone().at(dest)?;
    let settings = writer::Settings {
        dest,
        codec,
        compression_id,
        options,
        block_size: BLOCK_SIZE,
        epoch: o.epoch,
        xattrs,
        threads,
        bar: bar.clone(),
    };
    let written = writer::write(rootfs, file, &settings);
    bar.finish();
    written?;
    std::fs::set_permissions(out.temp_path(), std::fs::Permissions::from_mode(0o644)).at(dest)?;
    out.commit()?;
    Ok(())
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
pub(crate) fn xz_block(
    bytes: &[u8],
    dict_size: u32,
) -> std::result::Result<Vec<u8>, BackhandError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use backhand::FilesystemReader;
    use std::io::Cursor;

    #[test]
    fn image_reads_back_with_root_timed_at_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("usr/local")).unwrap();
        std::fs::write(root.join("usr/local/a"), b"hello").unwrap();
        std::os::unix::fs::symlink("a", root.join("usr/local/l")).unwrap();
        let img = dir.path().join("x.sqsh");
        write_tree(
            &root,
            &img,
            1_700_000_000,
            Compression::Zstd18,
            &Xattrs::new(),
        )
        .unwrap();
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
        write_tree(&root, &img, 1_700_000_000, Compression::Xz, &Xattrs::new()).unwrap();
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
