//! The files of the EFI system partition, as Talos lays them out for an ISO or a disk
//! image: systemd-boot as the removable-media loader, the UKI under `EFI/Linux/`,
//! `loader/loader.conf`, and for SecureBoot the enrollment files systemd-boot offers
//! from `loader/keys/auto/`.

use super::boot::Boot;
use crate::error::{IoContext, Result};
use crate::formats::fat_esp::{EspEntry, EspSource};
use crate::inputs::SecureBootInputs;
use crate::keys::efivar::EnrollmentDb;
use crate::plan::{Arch, Plan};
use crate::profile::EnrollKeys;

/// Where the ESP is going, with systemd-boot's `secure-boot-enroll` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspFlavor {
    /// The ISO's: random-seed, a copy of the signing certificate, enrollment files always.
    Iso(EnrollKeys),
    /// A disk image's.
    Disk(EnrollKeys),
}

/// The ESP's files for `plan`. The UKI is a reserved entry when `boot` builds it in place.
pub fn entries(plan: &Plan, boot: &Boot, flavor: EspFlavor) -> Result<Vec<EspEntry>> {
    let (iso, mode) = match flavor {
        EspFlavor::Iso(mode) => (true, mode),
        EspFlavor::Disk(mode) => (false, mode),
    };
    let loader = match (iso, plan.arch) {
        (true, Arch::Amd64) => "EFI/BOOT/BOOTX64.EFI",
        (true, Arch::Arm64) => "EFI/BOOT/BOOTAA64.EFI",
        (false, Arch::Amd64) => "EFI/boot/BOOTX64.efi",
        (false, Arch::Arm64) => "EFI/boot/BOOTAA64.efi",
    };
    let bytes = |path: &str, data: Vec<u8>, read_only: bool| EspEntry {
        path: path.into(),
        source: EspSource::Bytes(data),
        read_only,
    };
    let mut entries = vec![
        EspEntry {
            path: loader.into(),
            source: EspSource::File(boot.sd_boot()?.to_path_buf()),
            read_only: false,
        },
        EspEntry {
            path: format!("EFI/Linux/{}.efi", plan.label),
            source: match boot.reserved_uki_size() {
                Some(size) => EspSource::Reserved(size),
                None => EspSource::File(boot.uki_file().to_path_buf()),
            },
            read_only: false,
        },
    ];
    let loader_conf = match (iso, plan.secureboot) {
        // The template Talos writes.
        (false, false) => "# systemd-boot configuration\n\ntimeout 10\n".to_string(),
        _ => format!("# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll {mode}\n"),
    };
    entries.push(bytes("loader/loader.conf", loader_conf.into_bytes(), false));
    if iso {
        // Read-only so systemd-boot does not try to update the seed on read-only media.
        entries.push(bytes("loader/random-seed", vec![0; 32], true));
    }
    if let Some(sb) = &boot.secureboot {
        if iso {
            entries.push(bytes(
                "EFI/keys/uki-signing-cert.der",
                sb.signer.cert_der().to_vec(),
                false,
            ));
        }
        if mode != EnrollKeys::Off || iso {
            for (name, data) in enrollment_files(sb, plan.epoch)?.files() {
                entries.push(bytes(
                    &format!("loader/keys/auto/{name}"),
                    data.to_vec(),
                    false,
                ));
            }
        }
    }
    Ok(entries)
}

/// The enrollment files for a SecureBoot build: the profile's pre-built ones, or
/// generated from the signing certificate, stamped `epoch`.
fn enrollment_files(sb: &SecureBootInputs, epoch: u64) -> Result<EnrollmentDb> {
    match &sb.enrollment {
        Some([pk, kek, db]) => Ok(EnrollmentDb {
            pk: std::fs::read(pk).reading(pk)?,
            kek: std::fs::read(kek).reading(kek)?,
            db: std::fs::read(db).reading(db)?,
        }),
        None => crate::keys::efivar::enrollment_db(&sb.signer, sb.include_well_known_certs, epoch),
    }
}
