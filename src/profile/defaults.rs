//! Filling in what a profile leaves open: name, version, input paths, SecureBoot
//! key paths, bootloader and disk size.

use std::path::{Path, PathBuf};

use super::quirks::DEFAULT_VERSION;
use super::{
    ContainerAsset, FileAsset, OutputKind, Profile, SecureBootAssets, SigningKey,
    SigningKeyAndCertificate,
};

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
    // An unset `secureboot` stays unset (printed `null`, as Talos does) and means off.
    fill_inputs(profile, roots);
    fill_output(profile);
}

fn path_in(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

fn fill_inputs(profile: &mut Profile, roots: &Roots) {
    let arch_dir = roots.install_dir.join(&profile.arch);
    let quirks = profile.quirks();
    let secureboot = profile.secureboot();
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

    // Talos fills the base installer only when the whole asset is unset.
    let base = input
        .base_installer
        .get_or_insert_with(ContainerAsset::default);
    if *base == ContainerAsset::default() {
        base.image_ref = quirks.installer_image_ref(&profile.version);
    }

    if secureboot {
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

/// Output options the way Talos fills them (`Output.FillDefaults` in
/// `pkg/imager/profile/output.go`): the bootloader Talos picks
/// ([`Quirks::talos_default_bootloader`](super::quirks::Quirks::talos_default_bootloader))
/// and, for disk images, the disk size grown for the partitions of that bootloader.
fn fill_output(profile: &mut Profile) {
    let quirks = profile.quirks();
    let secureboot = profile.secureboot();
    let arch = profile.arch.clone();
    match profile.output.kind {
        Some(OutputKind::Image) => {
            let image = profile
                .output
                .image_options
                .get_or_insert_with(Default::default);
            let bootloader = quirks.talos_default_bootloader(image.bootloader, &arch, secureboot);
            image.bootloader = Some(bootloader);
            image.disk_size = quirks.disk_size_default(image.disk_size, bootloader);
        }
        Some(OutputKind::Iso) if quirks.iso_bootloader_option() => {
            let iso = profile
                .output
                .iso_options
                .get_or_insert_with(Default::default);
            iso.bootloader =
                Some(quirks.talos_default_bootloader(iso.bootloader, &arch, secureboot));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Bootloader;
    use crate::profile::builtin;

    fn filled(name: &str, arch: &str, version: &str) -> Profile {
        let mut p = builtin::get(name).unwrap();
        p.arch = arch.into();
        p.version = version.into();
        fill(&mut p, &Roots::default());
        p
    }

    #[test]
    fn image_gets_talos_bootloader_and_size() {
        // Dual-boot grows the disk for its BIOS + BOOT partitions.
        let p = filled("metal", "amd64", "1.10.0");
        let image = p.output.image_options.unwrap();
        assert_eq!(image.bootloader, Some(Bootloader::DualBoot));
        assert_eq!(image.disk_size, 2356150272);

        let image = filled("metal", "arm64", "1.10.0")
            .output
            .image_options
            .unwrap();
        assert_eq!(image.bootloader, Some(Bootloader::SdBoot));
        assert_eq!(image.disk_size, 1306525696);

        let image = filled("metal", "amd64", "1.9.0")
            .output
            .image_options
            .unwrap();
        assert_eq!(image.bootloader, Some(Bootloader::Grub));
        assert_eq!(image.disk_size, 1306525696);

        let image = filled("secureboot-metal", "amd64", "1.15.0")
            .output
            .image_options
            .unwrap();
        assert_eq!(image.bootloader, Some(Bootloader::SdBoot));
        assert_eq!(image.disk_size, 2355101696);
    }

    #[test]
    fn iso_options_appear_from_1_12() {
        assert_eq!(filled("iso", "amd64", "1.11.0").output.iso_options, None);
        let iso = filled("iso", "amd64", "1.12.0").output.iso_options.unwrap();
        assert_eq!(iso.bootloader, Some(Bootloader::DualBoot));
        assert_eq!(iso.sd_boot_enroll_keys, super::super::EnrollKeys::IfSafe);
    }

    #[test]
    fn unset_secureboot_stays_unset() {
        let mut p = Profile {
            platform: "metal".into(),
            ..Default::default()
        };
        fill(&mut p, &Roots::default());
        assert_eq!(p.secureboot, None);
        assert!(p.to_yaml().contains("\nsecureboot: null\n"));
    }
}
