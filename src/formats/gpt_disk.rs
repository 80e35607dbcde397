//! Raw GPT disk images in the systemd-boot layout of Talos: protective MBR, GPT with
//! `EFI` (FAT: systemd-boot, UKI, loader.conf, enrollment files) and `META` (Talos
//! ADV with the `--meta` values). The file is sparse: only the partition table, the
//! FAT and META are written; the rest of `diskSize` is a hole.

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
/// Linux filesystem data (META).
const LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// One partition of the layout.
struct PartitionSpec {
    label: &'static str,
    type_guid: &'static str,
    size: u64,
}

/// The disk's geometry: size, sector size and the partition sizes that depend on
/// the target version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Total size in bytes.
    pub size: u64,
    /// Logical sector size: 512 or 4096.
    pub sector_size: u32,
    /// Size of the EFI system partition (Talos: 1101 MiB before 1.11, 2101 MiB from 1.11).
    pub efi_size: u64,
}

impl Layout {
    fn partitions(&self) -> [PartitionSpec; 2] {
        [
            PartitionSpec {
                label: "EFI",
                type_guid: EFI_TYPE,
                size: self.efi_size,
            },
            PartitionSpec {
                label: "META",
                type_guid: LINUX_DATA,
                size: adv::PARTITION_LEN as u64,
            },
        ]
    }

    /// The smallest disk the partitions fit on.
    pub fn minimum_size(&self) -> u64 {
        ALIGN + self.partitions().iter().map(|p| p.size).sum::<u64>() + TAIL
    }
}

/// A disk image to write.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub layout: Layout,
    pub esp_entries: Vec<EspEntry>,
    pub esp_options: EspOptions,
    pub meta: Vec<MetaValue>,
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
    let layout = &spec.layout;
    // The plan checks both; a caller of this writer gets the same guarantee.
    assert!(
        matches!(layout.sector_size, 512 | 4096) && layout.size >= layout.minimum_size(),
        "disk layout {layout:?} was not checked"
    );
    // Validate META before anything is written.
    let meta = adv::encode(&spec.meta)?;
    let sector = u64::from(layout.sector_size);
    file.set_len(0).during(WRITING)?;
    file.set_len(layout.size).during(WRITING)?;

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
    let mut offsets = Vec::new();
    let mut next = ALIGN;
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
            0,
        )
        .map_err(gpt_error)?;
        offsets.push((next, p.size));
        next += p.size;
    }
    let mut parts = disk.partitions().clone();
    for (id, part) in parts.iter_mut() {
        part.part_guid = label_guid(&part.name);
        let _ = id;
    }
    disk.update_partitions(parts).map_err(gpt_error)?;
    disk.write().map_err(gpt_error)?;

    let (efi_offset, efi_size) = offsets[0];
    esp::write_filled(
        &spec.esp_entries,
        &spec.esp_options,
        (file, efi_offset, efi_size),
        scratch,
        fill,
        |_, _| true,
    )?;
    let (meta_offset, _) = offsets[1];
    let mut f = file.try_clone().during(WRITING)?;
    f.seek(SeekFrom::Start(meta_offset)).during(WRITING)?;
    // Only the two ADV copies carry data; the rest of META stays a hole.
    f.write_all(&meta[..2 * adv::COPY_LEN]).during(WRITING)?;
    f.flush().during(WRITING)?;
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
}
