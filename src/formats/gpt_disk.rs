//! Raw GPT disk images in Talos's layouts: protective MBR, GPT with `EFI` (FAT), for
//! the GRUB layouts (`grub`, `dual-boot`) a `BIOS` boot partition holding GRUB's core
//! image and a `BOOT` partition (XFS, written by the caller into
//! [`Layout::range`]`("BOOT")`), then `META` (Talos ADV with the `--meta` values).
//! Partition order, sizes, type GUIDs, names and the BIOS-boot attribute follow Talos
//! (`internal/pkg/partition`, `pkg/machinery/imager/quirks/partitions.go`, go-blockdevice
//! `partitioning/gpt`): first partition at 1 MiB, each at the next 1 MiB boundary.
//! The protective MBR is the plain one; only its boot code (bytes 0..446) carries GRUB's
//! boot.img. The file is sparse: only what holds data is written; the rest of
//! `diskSize` is a hole.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use gpt::disk::LogicalBlockSize;
use gpt::partition_types::{OperatingSystem, Type};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::formats::fat_esp::{self as esp, EspEntry, EspOptions, Fill};
use crate::meta::{MetaValue, adv};

const MIB: u64 = 1024 * 1024;
/// Partitions start on 1 MiB boundaries, as sgdisk and Talos place them.
const ALIGN: u64 = MIB;
/// Room for the backup GPT at the end of the disk.
const TAIL: u64 = MIB;

/// EFI system partition type.
const EFI_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Linux filesystem data (BOOT, META).
const LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// BIOS boot partition (GRUB's core image).
const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
/// GPT attribute bit 2, "legacy BIOS bootable", which Talos sets on the BIOS partition.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// Size of the BIOS boot partition (`GrubBIOSSize`).
const BIOS_SIZE: u64 = MIB;
/// The image cache partition's label (its GUID is [`label_guid`] of it).
pub const IMAGECACHE: &str = "IMAGECACHE";
/// Length of the MBR boot code, the only MBR bytes GRUB's boot.img may replace.
pub const MBR_BOOT_CODE_LEN: usize = 446;

/// One partition of the layout.
struct PartitionSpec {
    label: &'static str,
    type_guid: &'static str,
    size: u64,
    attributes: u64,
}

/// The disk's geometry: size, sector size and the partition sizes that depend on
/// the bootloader and the target version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Total size in bytes.
    pub size: u64,
    /// Logical sector size: 512 or 4096.
    pub sector_size: u32,
    /// Size of the EFI system partition (Talos: 100 MiB for `grub`; for a UKI,
    /// 1101 MiB before 1.11, 2101 MiB from 1.11).
    pub efi_size: u64,
    /// Size of the BOOT partition of the GRUB layouts (1000 MiB before 1.11, 2000 MiB
    /// from 1.11); `None` for `sd-boot`, which has neither BIOS nor BOOT.
    pub boot_size: Option<u64>,
    /// Size of the IMAGECACHE partition (ext4, the image cache), the last one, after
    /// META; `None` without an image cache.
    pub image_cache: Option<u64>,
    /// Sectors left free before the primary GPT entry array (a board overlay's
    /// `partitionOptions.offset`; 0 for the usual layout): the array starts at LBA
    /// `2 + skip_lbas` and the first partition at the next 1 MiB boundary after it
    /// (go-blockdevice `partitioning/gpt` `WithSkipLBAs`).
    pub skip_lbas: u64,
}

/// Bytes of a GPT entry array (128 entries of 128 bytes).
const ENTRY_ARRAY_LEN: u64 = 128 * 128;

impl Layout {
    /// Where the first partition starts: 1 MiB, or with [`Layout::skip_lbas`] the
    /// 1 MiB boundary at or after the end of the moved entry array.
    pub fn first_offset(&self) -> u64 {
        if self.skip_lbas == 0 {
            return ALIGN;
        }
        let sector = u64::from(self.sector_size);
        let end = (2 + self.skip_lbas) * sector + ENTRY_ARRAY_LEN;
        end.div_ceil(ALIGN) * ALIGN
    }

    fn partitions(&self) -> Vec<PartitionSpec> {
        let part = |label, type_guid, size, attributes| PartitionSpec {
            label,
            type_guid,
            size,
            attributes,
        };
        let mut parts = vec![part("EFI", EFI_TYPE, self.efi_size, 0)];
        if let Some(boot) = self.boot_size {
            parts.push(part(
                "BIOS",
                BIOS_BOOT_TYPE,
                BIOS_SIZE,
                LEGACY_BIOS_BOOTABLE,
            ));
            parts.push(part("BOOT", LINUX_DATA, boot, 0));
        }
        parts.push(part("META", LINUX_DATA, adv::PARTITION_LEN as u64, 0));
        if let Some(size) = self.image_cache {
            parts.push(part(IMAGECACHE, LINUX_DATA, size, 0));
        }
        parts
    }

    /// The smallest disk the partitions fit on.
    pub fn minimum_size(&self) -> u64 {
        self.first_offset() + self.partitions().iter().map(|p| p.size).sum::<u64>() + TAIL
    }

    /// Byte offset and length of the partition named `label` (`EFI`, `BIOS`, `BOOT`,
    /// `META`), if the layout has it.
    pub fn range(&self, label: &str) -> Option<(u64, u64)> {
        let mut next = self.first_offset();
        for p in self.partitions() {
            if p.label == label {
                return Some((next, p.size));
            }
            next += p.size;
        }
        None
    }

    /// First LBA of the BIOS boot partition, where GRUB's core image starts.
    pub fn bios_first_lba(&self) -> Option<u64> {
        self.range("BIOS")
            .map(|(at, _)| at / u64::from(self.sector_size))
    }
}

/// GRUB for BIOS: the core image for the BIOS partition and the MBR boot code, both
/// already patched for [`Layout::bios_first_lba`].
#[derive(Debug, Clone)]
pub struct BiosBoot {
    /// GRUB's core image (at most the BIOS partition's size).
    pub core: Vec<u8>,
    /// GRUB's boot.img bytes 0..446.
    pub boot_code: [u8; MBR_BOOT_CODE_LEN],
}

/// A disk image to write.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub layout: Layout,
    pub esp_entries: Vec<EspEntry>,
    pub esp_options: EspOptions,
    pub meta: Vec<MetaValue>,
    /// GRUB for BIOS (the amd64 GRUB layouts only).
    pub bios: Option<BiosBoot>,
}

/// Talos's deterministic GUIDs: a name-based UUID (version 8) from SHA-256 over the
/// nil namespace and the label.
pub fn label_guid(label: &str) -> uuid::Uuid {
    let mut h = Sha256::new();
    h.update([0u8; 16]);
    h.update(label.as_bytes());
    let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b)
}

const WRITING: &str = "writing the disk image";

/// The gpt crate's errors: I/O on the image, or a layout it refused.
fn gpt_error(e: gpt::GptError) -> Error {
    match e {
        gpt::GptError::Io(e) => Error::io_during(WRITING, e),
        other => Error::invalid(format!("GPT: {other}")),
    }
}

/// Writes the disk image into `file` (which it sizes).
///
/// A reserved ESP file (the UKI) is written in place by `fill`, into its clusters;
/// were they not contiguous, it is built in `scratch` and the ESP written again.
pub fn write_raw(spec: &DiskSpec, file: &File, scratch: &Path, fill: Fill) -> Result<()> {
    write_raw_keeping(spec, file, scratch, fill, false)
}

/// [`write_raw`]; with `keep` the bytes already in `file` outside the GPT structures
/// and the partitions written here stay (a board overlay's installer wrote its
/// loader into the image, e.g. Rockchip's u-boot at byte 32768).
pub fn write_raw_keeping(
    spec: &DiskSpec,
    file: &File,
    scratch: &Path,
    fill: Fill,
    keep: bool,
) -> Result<()> {
    let layout = &spec.layout;
    // The plan checks both; a caller of this writer gets the same guarantee.
    assert!(
        matches!(layout.sector_size, 512 | 4096) && layout.size >= layout.minimum_size(),
        "disk layout {layout:?} was not checked"
    );
    // Validate META before anything is written.
    let meta = adv::encode(&spec.meta)?;
    if !keep {
        file.set_len(0).during(WRITING)?;
    }
    file.set_len(layout.size).during(WRITING)?;
    // The gpt crate writes the primary entry array at LBA 2; with skipped LBAs it is
    // moved afterwards and what was there before comes back.
    let sector = u64::from(layout.sector_size);
    let saved = if layout.skip_lbas != 0 {
        let mut b = vec![0u8; ENTRY_ARRAY_LEN as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut b, 2 * sector).during(WRITING)?;
        Some(b)
    } else {
        None
    };

    let mut dev = file.try_clone().during(WRITING)?;
    let lb = if sector == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    };
    let total_lbas = layout.size / sector;
    gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(total_lbas - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(&mut dev)
        .map_err(|e| match e {
            gpt::mbr::MBRError::Io(e) => Error::io_during(WRITING, e),
            other => Error::invalid(format!("protective MBR: {other}")),
        })?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .create_from_device(dev, Some(label_guid("talos-image-disk")))
        .map_err(gpt_error)?;
    let mut next = layout.first_offset();
    for (i, p) in layout.partitions().iter().enumerate() {
        let guid = uuid::Uuid::parse_str(p.type_guid).expect("type GUID");
        let kind = Type {
            guid,
            os: OperatingSystem::None,
        };
        disk.add_partition_at(
            p.label,
            i as u32 + 1,
            next / sector,
            p.size / sector,
            kind,
            p.attributes,
        )
        .map_err(gpt_error)?;
        next += p.size;
    }
    let mut parts = disk.partitions().clone();
    for (id, part) in parts.iter_mut() {
        part.part_guid = label_guid(&part.name);
        let _ = id;
    }
    disk.update_partitions(parts).map_err(gpt_error)?;
    disk.write().map_err(gpt_error)?;
    if let Some(saved) = saved {
        move_entry_array(file, layout, &saved)?;
    }

    let (efi_offset, efi_size) = layout.range("EFI").expect("EFI partition");
    esp::write_filled(
        &spec.esp_entries,
        &spec.esp_options,
        (file, efi_offset, efi_size),
        scratch,
        fill,
        |_, _| true,
    )?;
    let (meta_offset, _) = layout.range("META").expect("META partition");
    let mut f = file.try_clone().during(WRITING)?;
    f.seek(SeekFrom::Start(meta_offset)).during(WRITING)?;
    // Only the two ADV copies carry data; the rest of META stays a hole.
    f.write_all(&meta[..2 * adv::COPY_LEN]).during(WRITING)?;
    match (&spec.bios, layout.range("BIOS")) {
        (Some(bios), Some((bios_offset, bios_size))) => {
            if bios.core.len() as u64 > bios_size {
                return Err(Error::invalid(format!(
                    "GRUB core image ({} bytes) does not fit the {bios_size}-byte BIOS boot partition",
                    bios.core.len()
                )));
            }
            f.seek(SeekFrom::Start(bios_offset)).during(WRITING)?;
            f.write_all(&bios.core).during(WRITING)?;
            // Bytes 446.. (partition table and signature) stay the protective MBR's.
            f.seek(SeekFrom::Start(0)).during(WRITING)?;
            f.write_all(&bios.boot_code).during(WRITING)?;
        }
        // sd-boot has no BIOS partition; arm64's grub layout has one, left zeroed
        // (unused, as Talos leaves it).
        (None, _) => {}
        (Some(_), None) => panic!("BIOS boot code needs the layout's BIOS partition"),
    }
    f.flush().during(WRITING)?;
    Ok(())
}

/// Moves the primary GPT entry array from LBA 2 to LBA `2 + skip_lbas`, puts `saved`
/// back at LBA 2, and sets `PartitionEntryLBA` (primary) and `FirstUsableLBA` (both
/// headers) with their CRCs, as go-blockdevice writes a table with skipped LBAs.
fn move_entry_array(file: &File, layout: &Layout, saved: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let sector = u64::from(layout.sector_size);
    let mut entries = vec![0u8; ENTRY_ARRAY_LEN as usize];
    file.read_exact_at(&mut entries, 2 * sector)
        .during(WRITING)?;
    file.write_all_at(saved, 2 * sector).during(WRITING)?;
    let entry_lba = 2 + layout.skip_lbas;
    file.write_all_at(&entries, entry_lba * sector)
        .during(WRITING)?;
    let first_usable = layout.first_offset() / sector;
    let backup_lba = layout.size / sector - 1;
    for (lba, primary) in [(1, true), (backup_lba, false)] {
        let mut h = vec![0u8; sector as usize];
        file.read_exact_at(&mut h, lba * sector).during(WRITING)?;
        let header_len = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")) as usize;
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        if primary {
            h[72..80].copy_from_slice(&entry_lba.to_le_bytes());
        }
        h[16..20].fill(0);
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&h[..header_len]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        file.write_all_at(&h, lba * sector).during(WRITING)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_version_8_and_stable() {
        let g = label_guid("talos-image-disk");
        assert_eq!(g.get_version_num(), 8);
        assert_eq!(g, label_guid("talos-image-disk"));
        assert_ne!(label_guid("EFI"), label_guid("META"));
    }

    const MIB: u64 = super::MIB;
    /// (first LBA, last LBA) of `label` in 512-byte sectors.
    fn lbas(layout: &Layout, label: &str) -> (u64, u64) {
        let (at, len) = layout.range(label).unwrap();
        (at / 512, (at + len) / 512 - 1)
    }

    #[test]
    fn grub_and_dual_boot_layouts_match_talos_lbas() {
        // grub, target 1.9: EFI 100 MiB, BIOS 1 MiB, BOOT 1000 MiB, META.
        let grub = Layout {
            size: 1246 * MIB,
            sector_size: 512,
            efi_size: 100 * MIB,
            boot_size: Some(1000 * MIB),
            image_cache: None,
            skip_lbas: 0,
        };
        assert_eq!(lbas(&grub, "EFI"), (2048, 206847));
        assert_eq!(lbas(&grub, "BIOS"), (206848, 208895));
        assert_eq!(lbas(&grub, "BOOT"), (208896, 2256895));
        assert_eq!(lbas(&grub, "META"), (2256896, 2258943));
        assert_eq!(grub.bios_first_lba(), Some(206848));
        // dual-boot, target >= 1.11.
        let dual = Layout {
            size: 4247 * MIB,
            sector_size: 512,
            efi_size: 2101 * MIB,
            boot_size: Some(2000 * MIB),
            image_cache: None,
            skip_lbas: 0,
        };
        assert_eq!(lbas(&dual, "EFI"), (2048, 4304895));
        assert_eq!(lbas(&dual, "BIOS"), (4304896, 4306943));
        assert_eq!(lbas(&dual, "BOOT"), (4306944, 8402943));
        assert_eq!(lbas(&dual, "META"), (8402944, 8404991));
        // sd-boot has neither BIOS nor BOOT.
        let sd = Layout {
            boot_size: None,
            ..dual
        };
        assert_eq!(sd.range("BIOS"), None);
        assert_eq!(lbas(&sd, "META"), (4304896, 4306943));
    }

    #[test]
    fn skipped_lbas_move_the_first_partition_as_talos() {
        // Rockchip overlay (offset 20480), target >= 1.11.
        let rk = Layout {
            size: 2355101696,
            sector_size: 512,
            efi_size: 100 * MIB,
            boot_size: Some(2000 * MIB),
            image_cache: None,
            skip_lbas: 20480,
        };
        assert_eq!(lbas(&rk, "EFI"), (22528, 227327));
        assert_eq!(lbas(&rk, "BIOS"), (227328, 229375));
        assert_eq!(lbas(&rk, "BOOT"), (229376, 4325375));
        assert_eq!(lbas(&rk, "META"), (4325376, 4327423));
    }
}
