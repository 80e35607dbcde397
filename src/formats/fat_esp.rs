//! The EFI system partition: a FAT image holding systemd-boot, the UKI, loader.conf
//! and the SecureBoot enrollment files. Shared by the ISO and the disk image.
//!
//! Written with hadris-fat (fsck.fat-clean, reproducible, streams host files);
//! fatfs 0.3.6 writes directories fsck.fat rejects. The FAT goes straight into its
//! place on the target device through a [`hadris_storage::Partition`] window.

use std::fs::File;
use std::path::PathBuf;

use hadris_fat::{FatKind, FatOptions, VolumeLabel};
use hadris_fs::{Attributes, Content, DateTime, Node, SetAttr, Tree};
use hadris_storage::Partition;

use crate::error::{Error, IoContext, Result};
use crate::io::{FileRegion, HostDevice, Output};

const MIB: u64 = 1024 * 1024;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum EspSource {
    /// Streamed from a file on disk.
    File(PathBuf),
    /// Small generated content.
    Bytes(Vec<u8>),
    /// Room for a file of this many bytes, written in place afterwards (see
    /// [`region`]); the FAT is written with zeros there, which cost nothing in a hole.
    Reserved(u64),
}

/// One file of the ESP.
#[derive(Debug, Clone)]
pub struct EspEntry {
    /// Path inside the ESP, `/`-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub source: EspSource,
    pub read_only: bool,
}

impl EspEntry {
    /// The file's length in bytes.
    pub fn size(&self) -> Result<u64> {
        Ok(match &self.source {
            EspSource::File(p) => std::fs::metadata(p).at(p)?.len(),
            EspSource::Bytes(b) => b.len() as u64,
            EspSource::Reserved(len) => *len,
        })
    }
}

/// Options of the FAT file system.
#[derive(Debug, Clone)]
pub struct EspOptions {
    /// Volume label, e.g. `EFI`.
    pub label: String,
    /// Timestamp of every entry and the source of the volume serial (seconds since epoch).
    pub epoch: u64,
    /// Logical sector size of the file system (512, or 4096 on 4K-sector disks).
    pub sector_size: u32,
}

/// ESP size for an ISO, as Talos sizes it: 10 MiB plus each file rounded up to MiB.
pub fn iso_esp_size(entries: &[EspEntry]) -> Result<u64> {
    let mut size = 10 * MIB;
    for e in entries {
        size += e.size()?.div_ceil(MIB) * MIB;
    }
    Ok(size)
}

/// The FAT variant for a file system of `size` bytes on `sector`-byte sectors: FAT32
/// needs 65525 clusters of at least one sector (with 512-byte sectors about 33 MiB,
/// with 4096-byte sectors about 260 MiB); smaller ESPs are FAT16 (GRUB's 100 MiB ESP
/// on a 4 KiB-sector disk).
fn kind_for(size: u64, sector: u32) -> FatKind {
    if size >= 64 * MIB && size / u64::from(sector.max(512)) >= 2 * 65525 {
        FatKind::Fat32
    } else {
        FatKind::Fat16
    }
}

/// An error about the ESP's content (a name, a label, a timestamp).
fn content_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("EFI system partition: {what}: {e}"))
}

const WRITING: &str = "writing the EFI system partition";

/// Writes a FAT file system of `size` bytes holding `entries` into `dev` at byte
/// `offset`. The data region starts 4 KiB-aligned.
pub fn write(
    entries: &[EspEntry],
    options: &EspOptions,
    dev: &File,
    offset: u64,
    size: u64,
) -> Result<()> {
    write_fat(entries, options, dev, offset, size, false)
}

/// [`write`]; with `fresh`, the range of `dev` is a hole (never written), so zeros,
/// such as the content of reserved files and free clusters, are left unwritten.
fn write_fat(
    entries: &[EspEntry],
    options: &EspOptions,
    dev: &File,
    offset: u64,
    size: u64,
    fresh: bool,
) -> Result<()> {
    let time = DateTime::new(options.epoch as i64, 0).map_err(|e| content_error("timestamp", e))?;
    let mut tree = Tree::new();
    let mut holes = Vec::new();
    for entry in entries {
        let content = match &entry.source {
            EspSource::File(p) => {
                crate::inputs::require_file(&entry.path, &p.to_string_lossy())?;
                hadris_fs::host::file(p).map_err(|e| {
                    crate::formats::hadris_error("reading an ESP file", e.with_host_path(p))
                })?
            }
            EspSource::Bytes(b) => Content::bytes(b.clone()),
            EspSource::Reserved(len) => {
                let (hole, content) = crate::io::zeros(*len)?;
                holes.push(hole);
                content
            }
        };
        let mut attrs = SetAttr::new()
            .with_modified(time)
            .with_created(time)
            .with_accessed(time);
        if entry.read_only {
            attrs = attrs.with_attributes(Attributes::READ_ONLY);
        }
        tree.insert(entry.path.as_bytes(), Node::file(content).with_attrs(attrs))
            .map_err(|e| content_error(&entry.path, e))?;
    }
    let label = VolumeLabel::new(&options.label).map_err(|e| content_error("volume label", e))?;
    let fat = FatOptions::new()
        .with_kind(kind_for(size, options.sector_size))
        .with_size(size)
        .with_label(label)
        .with_time(time)
        .with_seed(options.epoch)
        .with_sector_size(if options.sector_size == 0 {
            512
        } else {
            options.sector_size
        })
        .with_alignment(4096)
        .with_partition_offset(offset);
    let file = dev.try_clone().during(WRITING)?;
    let mut device = HostDevice::new(file, 512, offset + size).during(WRITING)?;
    if fresh {
        device = device.with_fresh(offset..offset + size);
    }
    let window = Partition::new(device, offset, size);
    hadris_fat::sync::write(window, &tree, &fat).map_err(|e| match e.kind() {
        hadris_io::ErrorKind::Io => crate::formats::hadris_error(WRITING, e),
        _ => Error::invalid(format!(
            "cannot write the EFI system partition ({size} bytes): {e}"
        )),
    })?;
    Ok(())
}

/// Writes the reserved ESP file (the UKI) into the room made for it.
pub type Fill<'a> = &'a mut dyn FnMut(&mut dyn Output) -> Result<()>;

/// Where the reserved file of [`write_filled`] ended up.
pub enum Placed {
    /// There was no reserved file.
    Nothing,
    /// Written in place, into its clusters at this region of the device.
    InPlace { start: u64, len: u64 },
    /// Its clusters were not usable in place: it was built in this scratch file
    /// (removed when dropped) and the ESP written again with it as a plain file.
    Copied(Scratch),
}

/// A scratch file removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the FAT file system holding `entries` into the hole at `offset..offset +
/// size` of `dev` (the triple `(dev, offset, size)`), then the reserved entry, if there is one, with `fill`: straight
/// into its clusters when they are contiguous and `usable(start, len)` accepts their
/// place on the device (a fresh FAT lays a file out contiguously, so this is the
/// path builds take). Otherwise the file is built in `scratch` and the ESP written
/// again with it as a plain file.
pub fn write_filled(
    entries: &[EspEntry],
    options: &EspOptions,
    (dev, offset, size): (&File, u64, u64),
    scratch: &std::path::Path,
    fill: Fill,
    usable: impl Fn(u64, u64) -> bool,
) -> Result<Placed> {
    write_fat(entries, options, dev, offset, size, true)?;
    let Some(reserved) = entries
        .iter()
        .find(|e| matches!(e.source, EspSource::Reserved(_)))
    else {
        return Ok(Placed::Nothing);
    };
    if let Some(mut region) = region(dev, offset, size, &reserved.path)?
        && usable(region.start(), region.len())
    {
        let (start, len) = (region.start(), region.len());
        fill(&mut region)?;
        return Ok(Placed::InPlace { start, len });
    }
    let copy = Scratch(scratch.to_path_buf());
    fill(&mut crate::io::create_rw(copy.path())?)?;
    let entries: Vec<EspEntry> = entries
        .iter()
        .map(|e| match e.source {
            EspSource::Reserved(_) => EspEntry {
                source: EspSource::File(copy.path().to_path_buf()),
                ..e.clone()
            },
            _ => e.clone(),
        })
        .collect();
    write(&entries, options, dev, offset, size)?;
    Ok(Placed::Copied(copy))
}

/// Where the file at `path` of the FAT at byte `offset` of `dev` lies, as a region of
/// `dev` to write it in place; `None` when its clusters are not contiguous.
pub fn region(dev: &File, offset: u64, size: u64, path: &str) -> Result<Option<FileRegion>> {
    Ok(match file_extents(dev, offset, size, path)?[..] {
        [(at, len)] => Some(FileRegion::new(
            dev.try_clone().during(WRITING)?,
            offset + at,
            len,
        )),
        _ => None,
    })
}

/// Where the bytes of the file at `path` lie in the FAT file system at byte `offset`
/// of `dev`: runs of `(offset from the file system's start, length)`, in file order.
pub fn file_extents(dev: &File, offset: u64, size: u64, path: &str) -> Result<Vec<(u64, u64)>> {
    use hadris_fs::{Extent, MountOptions, Resolve};
    let file = dev.try_clone().during(WRITING)?;
    let device = HostDevice::new(file, 512, offset + size).during(WRITING)?;
    let window = Partition::new(device, offset, size);
    let mut fs = hadris_fat::sync::FatFs::mount(window, MountOptions::new().read_only())
        .map_err(|e| crate::formats::hadris_error("mounting the written ESP", e))?;
    let node = fs
        .resolve(path.as_bytes(), Resolve::Lexical)
        .map_err(|e| crate::formats::hadris_error("locating a file in the ESP", e))?;
    let mut runs = Vec::new();
    let mut from = 0u64;
    loop {
        let mut out = [Extent::new(0, 0); 16];
        let n = fs
            .extents(node, from, &mut out)
            .map_err(|e| crate::formats::hadris_error("locating a file in the ESP", e))?;
        if n == 0 {
            return Ok(runs);
        }
        for x in &out[..n] {
            runs.push((x.offset(), x.len()));
            from += x.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_size_rounds_each_file_up() {
        let entries = vec![
            EspEntry {
                path: "a".into(),
                source: EspSource::Bytes(vec![0; 1]),
                read_only: false,
            },
            EspEntry {
                path: "b".into(),
                source: EspSource::Bytes(vec![0; (MIB + 1) as usize]),
                read_only: false,
            },
        ];
        assert_eq!(iso_esp_size(&entries).unwrap(), 13 * MIB);
    }
}
