//! Filling in what a profile leaves open: name, version, input paths, SecureBoot
//! key paths, bootloader and disk size.

use std::path::{Path, PathBuf};

use super::quirks::{DEFAULT_VERSION, Quirks};
use super::{
    Bootloader, ContainerAsset, FileAsset, OutputKind, Profile, SecureBootAssets, SigningKey,
    SigningKeyAndCertificate,
};

const MIB: u64 = 1024 * 1024;

/// Where default inputs live: the Talos imager container paths unless moved for a
/// local build (`--install-dir`, `--secureboot-dir`).
#[derive(Debug, Clone)]
pub struct Roots {
    /// Holds `<arch>/vmlinuz`, `<arch>/initramfs.xz`, `<arch>/systemd-stub.efi`, `<arch>/systemd-boot.efi`.
    pub install_dir: PathBuf,
    /// Holds `uki-signing-key.pem`, `uki-signing-cert.pem`, `pcr-signing-key.pem`, optional `*.auth`.
    pub secureboot_dir: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            install_dir: "/usr/install".into(),
            secureboot_dir: "/secureboot".into(),
        }
    }
}

/// The architecture of this machine in Talos spelling.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// Fills every unset field of `profile`.
pub fn fill(profile: &mut Profile, roots: &Roots) {
    if profile.name.is_empty() {
        profile.name = "Talos".into();
    }
    if profile.version.is_empty() {
        profile.version = DEFAULT_VERSION.into();
    }
    if profile.arch.is_empty() {
        profile.arch = host_arch().into();
    }
    if profile.secureboot.is_none() {
        profile.secureboot = Some(false);
    }
    fill_inputs(profile, roots);
    fill_output(profile);
}

fn path_in(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

fn fill_inputs(profile: &mut Profile, roots: &Roots) {
    let arch_dir = roots.install_dir.join(&profile.arch);
    let quirks = profile.quirks();
    let input = &mut profile.input;
    let default_file = |asset: &mut FileAsset, name: &str| {
        if asset.path.is_empty() {
            asset.path = path_in(&arch_dir, name);
        }
    };
    default_file(&mut input.kernel, "vmlinuz");
    default_file(&mut input.initramfs, "initramfs.xz");
    default_file(
        input.sd_stub.get_or_insert_with(Default::default),
        "systemd-stub.efi",
    );
    default_file(
        input.sd_boot.get_or_insert_with(Default::default),
        "systemd-boot.efi",
    );

    let base = input
        .base_installer
        .get_or_insert_with(ContainerAsset::default);
    if base.image_ref.is_empty() && base.oci_path.is_empty() {
        let repo = if quirks.sd_boot_for_uefi() {
            "installer-base"
        } else {
            "installer"
        };
        base.image_ref = format!("ghcr.io/siderolabs/{repo}:{}", profile.version);
    }

    if profile.secureboot == Some(true) {
        let dir = &roots.secureboot_dir;
        let sb = input
            .secureboot
            .get_or_insert_with(SecureBootAssets::default);
        let signer = sb
            .secure_boot_signer
            .get_or_insert_with(SigningKeyAndCertificate::default);
        if *signer == SigningKeyAndCertificate::default() {
            signer.key_path = path_in(dir, "uki-signing-key.pem");
            signer.cert_path = path_in(dir, "uki-signing-cert.pem");
        }
        let pcr = sb.pcr_signer.get_or_insert_with(SigningKey::default);
        if *pcr == SigningKey::default() {
            pcr.key_path = path_in(dir, "pcr-signing-key.pem");
        }
        for (field, file) in [
            (&mut sb.platform_key_path, "PK.auth"),
            (&mut sb.key_exchange_key_path, "KEK.auth"),
            (&mut sb.signature_key_path, "db.auth"),
        ] {
            if field.is_empty() && dir.join(file).is_file() {
                *field = path_in(dir, file);
            }
        }
    }
}

/// Bootloader and disk size. This implementation writes systemd-boot layouts, so
/// an unset bootloader becomes `sd-boot` (Talos would pick GRUB or dual-boot for
/// some versions and architectures; an explicit choice is kept and validated).
fn fill_output(profile: &mut Profile) {
    let quirks = profile.quirks();
    let secureboot = profile.secureboot();
    let kind = profile.output.kind;
    if kind == Some(OutputKind::Iso) {
        let iso = profile
            .output
            .iso_options
            .get_or_insert_with(Default::default);
        if quirks.iso_bootloader_option() && (iso.bootloader.is_none() || secureboot) {
            iso.bootloader = Some(Bootloader::SdBoot);
        }
    }
    if kind == Some(OutputKind::Image)
        && let Some(image) = profile.output.image_options.as_mut()
    {
        if image.bootloader.is_none() || secureboot {
            image.bootloader = Some(Bootloader::SdBoot);
        }
        if image.disk_size != 0 {
            image.disk_size = adjusted_disk_size(image.disk_size, &quirks);
        }
    }
}

/// Talos grows the built-in disk size by the growth of its boot partition.
fn adjusted_disk_size(base: u64, quirks: &Quirks) -> u64 {
    let boot = if quirks.large_boot_partition() {
        2000 * MIB
    } else {
        1000 * MIB
    };
    base + boot - 1000 * MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_size_follows_the_boot_partition() {
        assert_eq!(
            adjusted_disk_size(1306525696, &Quirks::new("v1.9.2")),
            1306525696
        );
        assert_eq!(
            adjusted_disk_size(1306525696, &Quirks::new("v1.15.0")),
            2355101696
        );
    }
}
