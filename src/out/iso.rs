//! Bootable ISO images: ISO 9660 (Rock Ridge, Joliet) with the ESP as an El Torito
//! EFI boot image that is also an appended GPT/MBR partition, so one file boots as
//! a CD and written to a USB stick. The plain ISO also boots legacy BIOS through
//! ISOLINUX. Written with hadris-iso; the ESP with [`super::esp`].

use std::fs::File;
use std::path::PathBuf;

use hadris_fs::{Content, DateTime, Node, Tree};
use hadris_iso::{
    AppendedPartition, BootEntry, BootInfo, ElTorito, Hybrid, IsoId, IsoLevel, IsoOptions,
};
use hadris_storage::host::FileDevice;

use super::esp::{self, EspEntry, EspOptions, EspSource};
use crate::error::{Error, IoContext, Result};

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
    /// Scratch path for the ESP image (next to the output, removed by the caller).
    pub esp_image: PathBuf,
    /// Volume label, e.g. `Talos-v1.9.2`; the volume id is derived from it.
    pub label: String,
    pub epoch: u64,
    pub bios: Option<BiosBoot>,
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

fn iso_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::io(
        "<ISO image>",
        std::io::Error::other(format!("{what}: {e:?}")),
    )
}

fn content(source: &EspSource) -> Result<Content> {
    match source {
        EspSource::File(p) => {
            hadris_fs::host::file(p).map_err(|e| iso_error(&p.display().to_string(), e))
        }
        EspSource::Bytes(b) => Ok(Content::bytes(b.clone())),
    }
}

/// Writes the ISO described by `spec` into `dest`.
pub fn write(spec: &IsoSpec, dest: &File) -> Result<()> {
    let time = DateTime::new(spec.epoch as i64, 0).map_err(|e| iso_error("timestamp", e))?;

    // The ESP, written once into a scratch file that the ISO then appends.
    let esp_size = esp::iso_esp_size(&spec.esp_entries)?;
    {
        let f = rw_file(&spec.esp_image)?;
        f.set_len(esp_size).at(&spec.esp_image)?;
        esp::write(
            &spec.esp_entries,
            &EspOptions {
                label: "EFI".into(),
                epoch: spec.epoch,
                sector_size: 512,
            },
            &f,
            0,
            esp_size,
        )?;
        f.sync_all().at(&spec.esp_image)?;
    }

    let mut tree = Tree::new();
    let mut add = |path: &str, c: Content| {
        tree.insert(path.as_bytes(), Node::file(c))
            .map_err(|e| iso_error(path, e))
    };
    for e in &spec.esp_entries {
        add(&e.path, content(&e.source)?)?;
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
    let esp_content =
        hadris_fs::host::file(&spec.esp_image).map_err(|e| iso_error("ESP image", e))?;
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
        .with_hybrid(hybrid.with_appended(AppendedPartition::esp(esp_content)));
    let file = dest.try_clone().at("<ISO image>")?;
    file.set_len(0).at("<ISO image>")?;
    let device = FileDevice::new(file).at("<ISO image>")?;
    hadris_iso::sync::write(device, &tree, &options)
        .map_err(|e| iso_error("writing the ISO", e))?;
    Ok(())
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

/// Opens `path` for reading and writing, created empty: the writers read back what they wrote.
pub fn rw_file(path: &std::path::Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)
}
