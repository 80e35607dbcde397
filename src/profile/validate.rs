//! The rules a complete profile must satisfy before anything is built.

use super::{Bootloader, DiskFormat, OutputKind, Profile};
use crate::error::{Error, Result};

/// Platforms with a known kernel argument set (see `cmdline`).
pub use crate::kernel_cmdline::known_platform;

/// Checks `profile` (after defaults). The first violated rule is the error.
pub fn validate(profile: &Profile) -> Result<()> {
    let quirks = profile.quirks();
    if profile.arch != "amd64" && profile.arch != "arm64" {
        return Err(Error::invalid(format!(
            "arch {:?} is not supported: use amd64 or arm64",
            profile.arch
        )));
    }
    if profile.platform.is_empty() {
        return Err(Error::invalid("platform is not set"));
    }
    if !known_platform(&profile.platform) {
        return Err(Error::invalid(format!(
            "unknown platform {:?}",
            profile.platform
        )));
    }
    if profile.secureboot() && !quirks.supports_uki() {
        return Err(Error::unsupported(format!(
            "SecureBoot needs Talos >= 1.5 (version {})",
            profile.version
        )));
    }
    if profile.overlay.is_some() || profile.input.overlay_installer.is_some() {
        return Err(Error::unsupported(
            "overlays are not supported by this imager",
        ));
    }
    if !profile.input.system_extensions.is_empty() {
        return Err(Error::unsupported(
            "system extensions are not supported yet (initramfs rebuild): remove --system-extension-image / input.systemExtensions",
        ));
    }
    if profile.input.image_cache.is_some() {
        return Err(Error::unsupported("image caches are not supported yet"));
    }
    if !profile
        .customization
        .embedded_machine_configuration
        .is_empty()
    {
        return Err(Error::unsupported(
            "embedding a machine configuration needs an initramfs rebuild, which is not supported yet",
        ));
    }
    validate_secureboot(profile)?;

    let kind = profile.kind().map_err(|_| {
        Error::invalid(
            "output.kind is not set (iso, image, installer, kernel, initramfs, uki, cmdline)",
        )
    })?;
    let meta = !profile.customization.meta_contents.is_empty();
    let args = !profile.customization.extra_kernel_args.is_empty();
    match kind {
        OutputKind::Iso => {
            if let Some(Bootloader::Grub | Bootloader::DualBoot) = profile
                .output
                .iso_options
                .as_ref()
                .and_then(|o| o.bootloader)
            {
                return Err(Error::unsupported(
                    "ISO bootloader grub/dual-boot: this imager builds systemd-boot ISOs (with ISOLINUX for BIOS); use sd-boot",
                ));
            }
        }
        OutputKind::Image => {
            let image = profile.output.image_options.as_ref().ok_or_else(|| {
                Error::invalid("output.imageOptions is required for the image kind")
            })?;
            if image.disk_size == 0 {
                return Err(Error::invalid(
                    "output.imageOptions.diskSize must be set for the image kind",
                ));
            }
            if !matches!(image.disk_sector_size, 0 | 512 | 4096) {
                return Err(Error::invalid(format!(
                    "output.imageOptions.diskSectorSize {} is not supported: use 512 or 4096",
                    image.disk_sector_size
                )));
            }
            if image.disk_format == Some(DiskFormat::Ova) {
                return Err(Error::unsupported(
                    "diskFormat ova is not supported: use raw, qcow2 or vhd",
                ));
            }
            if let Some(b @ (Bootloader::Grub | Bootloader::DualBoot)) = image.bootloader {
                return Err(Error::unsupported(format!(
                    "bootloader {b}: this imager writes systemd-boot disk images; use sd-boot"
                )));
            }
            if profile.arch == "arm64" && image.bootloader == Some(Bootloader::DualBoot) {
                return Err(Error::invalid("dual-boot is not supported on arm64"));
            }
        }
        OutputKind::Installer => {
            if meta {
                return Err(Error::unsupported(
                    "META values (--meta, customization.metaContents) are not supported for the installer: pass them to the ISO, disk image, UKI or cmdline instead",
                ));
            }
        }
        OutputKind::Kernel | OutputKind::Initramfs => {
            if profile.secureboot() {
                return Err(Error::invalid(format!(
                    "SecureBoot does not apply to the {kind} output"
                )));
            }
            if args {
                return Err(Error::invalid(format!(
                    "extra kernel arguments do not apply to the {kind} output"
                )));
            }
            if meta {
                return Err(Error::invalid(format!(
                    "META values do not apply to the {kind} output"
                )));
            }
        }
        OutputKind::Uki => {
            if !quirks.supports_uki() {
                return Err(Error::unsupported(format!(
                    "UKI needs Talos >= 1.5 (version {})",
                    profile.version
                )));
            }
        }
        OutputKind::Cmdline => {}
    }
    if profile.output.out_format.is_none() {
        return Err(Error::invalid(
            "output.outFormat is not set (raw, .xz, .gz, .zst, .tar.gz)",
        ));
    }
    Ok(())
}

fn validate_secureboot(profile: &Profile) -> Result<()> {
    let Some(sb) = profile.input.secureboot.as_ref() else {
        return Ok(());
    };
    if !profile.secureboot() {
        return Ok(());
    }
    if let Some(signer) = &sb.secure_boot_signer
        && (signer.key_path.is_empty() || signer.cert_path.is_empty())
    {
        return Err(Error::unsupported(
            "SecureBoot signer: only keyPath + certPath (PEM files) are supported; remote, Azure and AWS signers are not",
        ));
    }
    if let Some(pcr) = &sb.pcr_signer
        && pcr.key_path.is_empty()
    {
        return Err(Error::unsupported(
            "PCR signer: only keyPath (a PEM file) is supported",
        ));
    }
    let dbs = [
        ("platformKeyPath", &sb.platform_key_path),
        ("keyExchangeKeyPath", &sb.key_exchange_key_path),
        ("signatureKeyPath", &sb.signature_key_path),
    ];
    let set = dbs.iter().filter(|(_, p)| !p.is_empty()).count();
    if set != 0 && set != dbs.len() {
        let missing: Vec<&str> = dbs
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(n, _)| *n)
            .collect();
        return Err(Error::invalid(format!(
            "partial SecureBoot pre-built database configuration: missing {}",
            missing.join(", ")
        )));
    }
    Ok(())
}
