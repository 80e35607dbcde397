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
//! xz (what Talos uses for profiles before 1.8) is not offered: `backhand`'s xz
//! feature links a second liblzma beside the one `xz2` links, which cargo refuses.

use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use backhand::compression::{CompressionOptions, Compressor, Zstd};
use backhand::{FilesystemCompressor, FilesystemReader, FilesystemWriter, NodeHeader};

use crate::error::{Error, IoContext, Result};

/// Block size of the images (mksquashfs's default).
pub const BLOCK_SIZE: u32 = 128 * 1024;
/// zstd level (`-Xcompression-level 18`).
pub const ZSTD_LEVEL: u32 = 18;

fn compressor() -> Result<FilesystemCompressor> {
    FilesystemCompressor::new(
        Compressor::Zstd,
        Some(CompressionOptions::Zstd(Zstd {
            compression_level: ZSTD_LEVEL,
        })),
    )
    .map_err(|e| Error::invalid(format!("squashfs compressor: {e}")))
}

fn header(perm: u32, epoch: u32) -> NodeHeader {
    NodeHeader {
        permissions: (perm & 0o7777) as u16,
        uid: 0,
        gid: 0,
        mtime: epoch,
    }
}

/// An image holding only the root directory, as the seed of the real one.
fn seed_image() -> Result<Vec<u8>> {
    let mut w = FilesystemWriter::default();
    w.set_compressor(compressor()?);
    let mut out = Cursor::new(Vec::new());
    w.write(&mut out)
        .map_err(|e| Error::invalid(format!("writing the squashfs seed: {e}")))?;
    Ok(out.into_inner())
}

/// Writes the tree at `rootfs` as a squashfs image to `dest` (mode 0644).
pub fn write_tree(rootfs: &Path, dest: &Path, epoch: u32) -> Result<()> {
    let fail = |e: backhand::BackhandError| Error::format(rootfs, format!("squashfs: {e}"));
    let seed = seed_image()?;
    let mut reader = FilesystemReader::from_reader(Cursor::new(seed)).map_err(fail)?;
    let root_mode = std::fs::metadata(rootfs).at(rootfs)?.permissions().mode();
    reader.root.nodes[0].header = header(root_mode, epoch);
    let mut w = FilesystemWriter::from_fs_reader(&reader).map_err(fail)?;
    w.set_compressor(compressor()?);
    w.set_block_size(BLOCK_SIZE);
    w.set_time(epoch);
    w.set_only_root_id();

    let mut entries = Vec::new();
    crate::io::walk(rootfs, rootfs, &mut entries)?;
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
            w.push_file_from_path(path.clone(), &target, h)
                .map_err(fail)?;
        } else {
            return Err(Error::format(&path, "not a file, directory or symlink"));
        }
    }
    let mut out = crate::io::AtomicFile::create(dest)?;
    w.write(std::io::BufWriter::new(out.file()))
        .map_err(|e| Error::format(dest, format!("writing squashfs: {e}")))?;
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
        write_tree(&root, &img, 1_700_000_000).unwrap();
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
}
