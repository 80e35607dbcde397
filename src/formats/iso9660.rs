//! Bootable ISO images: ISO 9660 (Rock Ridge, Joliet) with the ESP as an El Torito
//! EFI boot image that is also an appended GPT/MBR partition, so one file boots as
//! a CD and written to a USB stick. The plain ISO also boots legacy BIOS through
//! ISOLINUX. Written with hadris-iso; the ESP with [`super::fat_esp`].

use std::fs::File;
use std::path::PathBuf;

use hadris_fs::{Content, DateTime, Node, Tree};
use hadris_iso::{
    AppendedPartition, BootEntry, BootInfo, ElTorito, Hybrid, IsoId, IsoLevel, IsoOptions,
};

use super::fat_esp::{self as esp, EspEntry, EspOptions, EspSource, Fill, Placed};
use crate::error::{Error, IoContext, Result};
use crate::io::HostDevice;

/// ISO 9660 logical sector size.
const SECTOR: u64 = 2048;

const ISOLINUX_BIN: &[u8] = include_bytes!("../../assets/isolinux/isolinux.bin");
const LDLINUX_C32: &[u8] = include_bytes!("../../assets/isolinux/ldlinux.c32");
/// isohybrid MBR boot code: BIOS machines booting the ISO as a USB disk start ISOLINUX through it.
const ISOHDPFX_BIN: &[u8] = include_bytes!("../../assets/isolinux/isohdpfx.bin");

/// Legacy BIOS boot through ISOLINUX: kernel and initramfs in `/boot`.
#[derive(Debug, Clone)]
pub struct BiosBoot {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
}

/// What goes into an ISO.
#[derive(Debug, Clone)]
pub struct IsoSpec {
    /// Files of the ESP; also placed in the ISO 9660 tree, as Talos does.
    pub esp_entries: Vec<EspEntry>,
    /// Scratch path (next to the output), used only if the reserved file cannot be
    /// written in place.
    pub scratch: PathBuf,
    /// Volume label, e.g. `Talos-v1.9.2`; the volume id is derived from it.
    pub label: String,
    pub epoch: u64,
    pub bios: Option<BiosBoot>,
    /// An image cache tree (`blob/`, `manifests/`), placed as `imagecache/` (Talos
    /// `pkg/imager/out.go` `outISO`); its files are streamed from their paths.
    pub image_cache: Option<PathBuf>,
}

/// The ISO 9660 volume id for a label: upper case, `-` `.` `_` as `_`, other
/// characters dropped, at most 32 (`Talos-v1.9.2` → `TALOS_V1_9_2`).
pub fn volume_id(label: &str) -> String {
    label
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => Some(c.to_ascii_uppercase()),
            '-' | '.' | '_' => Some('_'),
            _ => None,
        })
        .take(32)
        .collect()
}

/// An error about the ISO's content (a name, a timestamp) or its own structure.
fn iso_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("ISO image: {what}: {e}"))
}

const WRITING: &str = "writing the ISO image";

fn content(source: &EspSource) -> Result<Content> {
    match source {
        EspSource::File(p) => hadris_fs::host::file(p)
            .map_err(|e| crate::formats::hadris_error("reading", e.with_host_path(p))),
        EspSource::Bytes(b) => Ok(Content::bytes(b.clone())),
        EspSource::Reserved(_) => Err(iso_error("ISO tree", "a reserved file is only shared")),
    }
}

/// Writes the ISO described by `spec` into `dest`; `fill` writes the reserved ESP
/// file, if there is one.
///
/// The ESP is written in place inside the ISO, and the reserved file (the UKI) is
/// written once, into its clusters there: the ISO 9660 directory records point at the
/// same bytes (the FAT lays a fresh file out contiguously, 2 KiB-aligned as the data
/// region is). If the FAT ever laid it out otherwise, the ESP writer builds it in a
/// scratch file, and the ISO is written again storing it twice.
pub fn write(spec: &IsoSpec, dest: &File, fill: Fill) -> Result<()> {
    let Placed::Copied(copy) = write_image(spec, dest, fill)? else {
        return Ok(());
    };
    let mut spec = spec.clone();
    for e in &mut spec.esp_entries {
        if matches!(e.source, EspSource::Reserved(_)) {
            e.source = EspSource::File(copy.path().to_path_buf());
        }
    }
    write_image(&spec, dest, &mut |_| {
        unreachable!("no reserved file is left")
    })?;
    Ok(())
}

/// One pass: the ISO 9660 tree, then the ESP in its place, the reserved file (shared
/// by both trees) filled in place when the ESP writer could.
fn write_image(spec: &IsoSpec, dest: &File, fill: Fill) -> Result<Placed> {
    let shared = spec
        .esp_entries
        .iter()
        .find(|e| matches!(e.source, EspSource::Reserved(_)))
        .map(|e| e.path.as_str());
    let time = DateTime::new(spec.epoch as i64, 0).map_err(|e| iso_error("timestamp", e))?;
    let esp_size = esp::iso_esp_size(&spec.esp_entries)?;

    let mut tree = Tree::new();
    let mut add = |path: &str, c: Content| {
        tree.insert(path.as_bytes(), Node::file(c))
            .map_err(|e| iso_error(path, e))
    };
    for e in &spec.esp_entries {
        if shared == Some(e.path.as_str()) {
            // A one-byte stand-in whose directory records are pointed at the ESP copy.
            add(&e.path, Content::bytes([0u8]))?;
        } else {
            add(&e.path, content(&e.source)?)?;
        }
    }
    if let Some(root) = &spec.image_cache {
        let mut paths = Vec::new();
        crate::io::walk(root, root, &mut paths)?;
        for rel in paths {
            let path = root.join(&rel);
            let md = std::fs::symlink_metadata(&path).at(&path)?;
            if !md.is_file() {
                continue;
            }
            if md.len() >= 1 << 32 {
                return Err(Error::unsupported(format!(
                    "image cache file {}: 4 GiB or more needs ISO 9660 multi-extent files, which this writer does not make",
                    path.display()
                )));
            }
            let name = format!("imagecache/{}", rel.to_string_lossy());
            add(&name, content(&EspSource::File(path))?)?;
        }
    }
    let mut el_torito = ElTorito::new();
    let mut hybrid = Hybrid::gpt_hybrid_mbr();
    if let Some(bios) = &spec.bios {
        add("isolinux/isolinux.bin", Content::bytes(ISOLINUX_BIN))?;
        add("isolinux/ldlinux.c32", Content::bytes(LDLINUX_C32))?;
        let cfg = format!(
            "DEFAULT talos\nPROMPT 0\nTIMEOUT 30\nLABEL talos\n  KERNEL /boot/vmlinuz\n  INITRD /boot/initramfs.xz\n  APPEND {}\n",
            bios.cmdline
        );
        add("isolinux/isolinux.cfg", Content::bytes(cfg.into_bytes()))?;
        add(
            "boot/vmlinuz",
            content(&EspSource::File(bios.kernel.clone()))?,
        )?;
        add(
            "boot/initramfs.xz",
            content(&EspSource::File(bios.initramfs.clone()))?,
        )?;
        el_torito = el_torito.with_entry(
            BootEntry::bios("isolinux/isolinux.bin")
                .with_load_size(4)
                .with_boot_info(BootInfo::Table),
        );
        el_torito = el_torito.with_catalog_path("isolinux/boot.cat");
        hybrid = hybrid.with_bootstrap(ISOHDPFX_BIN);
    }
    // El Torito counts 512-byte sectors in 16 bits; for a larger ESP a count of 1
    // makes firmware use the partition to the end (hadris would write 65535, which
    // OVMF reads as a 128 MiB window).
    let mut efi = BootEntry::uefi_appended(0);
    if esp_size / 512 > u64::from(u16::MAX) {
        efi = efi.with_load_size(1);
    }
    el_torito = el_torito.with_entry(efi);
    // The appended partition's content at this stage: a hole of the ESP's size,
    // which the device leaves unwritten; the FAT goes into its place afterwards.
    let (_zeros, esp_hole) = crate::io::zeros(esp_size)?;
    let options = IsoOptions::default()
        .with_id(IsoId::Volume, &volume_id(&spec.label))
        .with_id(IsoId::VolumeSet, &spec.label)
        .with_id(IsoId::Application, "imager")
        .with_level(IsoLevel::L3)
        .with_rock_ridge()
        .with_joliet()
        .with_time(time)
        .with_seed(spec.epoch)
        .with_el_torito(el_torito)
        .with_hybrid(hybrid.with_appended(AppendedPartition::esp(esp_hole)));
    let file = dest.try_clone().during(WRITING)?;
    file.set_len(0).during(WRITING)?;
    let mut device = HostDevice::new(file, 2048, u64::MAX).during(WRITING)?;
    let report = hadris_iso::sync::write(&mut device, &tree, &options)
        .map_err(|e| crate::formats::hadris_error(WRITING, e))?;
    device.finish().during(WRITING)?;

    let esp_offset = esp_partition_offset(dest)?;
    let placed = esp::write_filled(
        &spec.esp_entries,
        &EspOptions {
            label: "EFI".into(),
            epoch: spec.epoch,
            sector_size: 512,
        },
        (dest, esp_offset, esp_size),
        &spec.scratch,
        fill,
        |start, len| start % SECTOR == 0 && len < 1 << 32,
    )?;
    if let (Placed::InPlace { start, len }, Some(path)) = (&placed, shared) {
        let stand_in = report
            .extents(path)
            .and_then(|x| x.first())
            .map(|x| x.offset())
            .ok_or_else(|| iso_error(path, "no extent for the stand-in"))?;
        let patched = point_records(dest, stand_in / SECTOR, start / SECTOR, *len)?;
        if patched == 0 {
            return Err(iso_error(
                path,
                "no directory record found for the shared file",
            ));
        }
    }
    Ok(placed)
}

/// Byte offset of the EFI system partition (MBR type 0xEF) in the ISO at `iso`.
fn esp_partition_offset(iso: &File) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut mbr = [0u8; 512];
    iso.read_exact_at(&mut mbr, 0).during(WRITING)?;
    (0..4)
        .map(|i| &mbr[446 + 16 * i..462 + 16 * i])
        .find(|e| e[4] == 0xEF)
        .map(|e| u64::from(u32::from_le_bytes(e[8..12].try_into().expect("4 bytes"))) * 512)
        .ok_or_else(|| iso_error("hybrid MBR", "no EFI system partition entry"))
}

/// Points every file record (primary and Joliet trees) whose extent starts at sector
/// `from` at `len` bytes from sector `to`; returns how many records changed.
///
/// Written here because hadris-iso's image writer places every file's data itself;
/// a record pointing into the appended ESP is valid ISO 9660 (the volume space
/// includes the partition) and lets the two file systems share the UKI's bytes.
fn point_records(iso: &File, from: u64, to: u64, len: u64) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let read = |sector: u64, len: usize| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        iso.read_exact_at(&mut buf, sector * SECTOR)
            .during(WRITING)?;
        Ok(buf)
    };
    let both = |v: u32| [v.to_le_bytes(), v.to_be_bytes()].concat();
    let le = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let mut patched = 0;
    let mut pending = Vec::new();
    // Volume descriptors from sector 16 to the set terminator: primary (1) and
    // supplementary (2, Joliet) ones each hold a root directory record at byte 156.
    for sector in 16..64 {
        let d = read(sector, SECTOR as usize)?;
        match d[0] {
            1 | 2 => pending.push((le(&d[158..]), le(&d[166..]))),
            255 => break,
            _ => {}
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some((dir, size)) = pending.pop() {
        if !seen.insert(dir) || size > 64 << 20 {
            continue;
        }
        let mut data = read(u64::from(dir), size as usize)?;
        let mut at = 0usize;
        let mut changed = false;
        while at < data.len() {
            let rec_len = data[at] as usize;
            if rec_len == 0 {
                at = (at / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            if rec_len < 34 || at + rec_len > data.len() {
                return Err(iso_error("directory record", "malformed"));
            }
            let rec = &mut data[at..at + rec_len];
            let (extent, length, flags, name_len) =
                (le(&rec[2..]), le(&rec[10..]), rec[25], rec[32]);
            let dot = name_len == 1 && rec[33] <= 1;
            if flags & 2 != 0 {
                if !dot {
                    pending.push((extent, length));
                }
            } else if u64::from(extent) == from {
                rec[2..10].copy_from_slice(&both(to as u32));
                rec[10..18].copy_from_slice(&both(len as u32));
                patched += 1;
                changed = true;
            }
            at += rec_len;
        }
        if changed {
            iso.write_all_at(&data, u64::from(dir) * SECTOR)
                .during(WRITING)?;
        }
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids_follow_talos() {
        assert_eq!(volume_id("Talos-v1.9.2"), "TALOS_V1_9_2");
        assert_eq!(
            volume_id("Talos-v1.15.0-alpha.1+x"),
            "TALOS_V1_15_0_ALPHA_1X"
        );
    }
}
