//! Target Talos version and the behaviour that depends on it ("quirks").
//!
//! The thresholds come from the Talos imager (`pkg/machinery/imager/quirks/quirks.go`,
//! `pkg/machinery/imager/quirks/partitions.go`) and the defaults it fills into a
//! profile (`pkg/imager/profile/input.go`, `pkg/imager/profile/output.go`). An
//! unparsable version means "newest behaviour" for most checks, but "no" for the
//! checks that need a parsed version.

use super::Bootloader;

const MIB: u64 = 1024 * 1024;

/// The version Talos assets are built for when a profile names none.
pub const DEFAULT_VERSION: &str = "v1.9.2";

/// A parsed `vMAJOR.MINOR.PATCH` (prerelease and build suffixes dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Semver(pub u64, pub u64, pub u64);

/// Quirk answers for one target version.
#[derive(Debug, Clone, Copy)]
pub struct Quirks {
    parsed: Option<Semver>,
}

impl Quirks {
    /// Parses `version` tolerantly (`v1.9.2`, `1.9.2`, `v1.10.0-alpha.1`).
    pub fn new(version: &str) -> Self {
        Quirks {
            parsed: parse(version),
        }
    }

    /// The parsed version, if any.
    pub fn version(&self) -> Option<Semver> {
        self.parsed
    }

    fn at_least(&self, major: u64, minor: u64, patch: u64) -> bool {
        self.parsed.is_none_or(|v| v >= Semver(major, minor, patch))
    }

    fn parsed_at_least(&self, major: u64, minor: u64) -> bool {
        self.parsed.is_some_and(|v| v >= Semver(major, minor, 0))
    }

    /// UKI and SecureBoot exist (>= 1.5).
    pub fn supports_uki(&self) -> bool {
        self.at_least(1, 5, 0)
    }

    /// META payloads over 256 bytes are gzipped on the command line (>= 1.6.3).
    pub fn gzip_meta_payload(&self) -> bool {
        self.at_least(1, 6, 3)
    }

    /// The OVF of the vmware OVA sets `disk.EnableUUID=true` (>= 1.12).
    pub fn ovf_disk_enable_uuid(&self) -> bool {
        self.at_least(1, 12, 0)
    }

    /// ISO command lines carry `talos.halt_if_installed=1`; metal amd64 drops ttyS0 (>= 1.8).
    pub fn halt_if_installed(&self) -> bool {
        self.at_least(1, 8, 0)
    }

    /// metal amd64 uses only `console=tty0` (>= 1.8; needs a parsed version).
    pub fn metal_without_serial_console(&self) -> bool {
        self.parsed_at_least(1, 8)
    }

    /// systemd-boot for UEFI, installer-base image, UKI profiles, `selinux=1` (>= 1.10).
    pub fn sd_boot_for_uefi(&self) -> bool {
        self.parsed_at_least(1, 10)
    }

    /// The default base installer is the unified `installer-base` image rather than
    /// `installer` (>= 1.10; an unparsable version counts as newest).
    /// Talos `SupportsUnifiedInstaller`, used by `Input.FillDefaults` in
    /// `pkg/imager/profile/input.go`.
    pub fn installer_base_image(&self) -> bool {
        self.at_least(1, 10, 0)
    }

    /// The default `input.baseInstaller.imageRef`: the Talos version is appended as
    /// given (`1.10.0` stays `1.10.0`, `v1.10.0` stays `v1.10.0`).
    pub fn installer_image_ref(&self, version: &str) -> String {
        let repo = if self.installer_base_image() {
            "installer-base"
        } else {
            "installer"
        };
        format!("ghcr.io/siderolabs/{repo}:{version}")
    }

    /// The bootloader the Talos imager picks for a disk image or (>= 1.12) an ISO
    /// (`selectBootloader` in `pkg/imager/profile/output.go`): an explicit choice is
    /// kept unless SecureBoot is on; SecureBoot always gets systemd-boot; from 1.10
    /// (`UseSDBootForUEFI`, which needs a parsed version) arm64 gets systemd-boot and
    /// amd64 dual-boot (GRUB for BIOS, systemd-boot for UEFI); before, GRUB.
    pub fn talos_default_bootloader(
        &self,
        current: Option<Bootloader>,
        arch: &str,
        secureboot: bool,
    ) -> Bootloader {
        match current {
            Some(chosen) if !secureboot => chosen,
            _ if secureboot => Bootloader::SdBoot,
            _ if !self.sd_boot_for_uefi() => Bootloader::Grub,
            _ if arch == "arm64" => Bootloader::SdBoot,
            _ => Bootloader::DualBoot,
        }
    }

    /// Size of the BOOT partition of the GRUB layout: 2000 MiB from 1.11, 1000 MiB
    /// before (`PartitionSizes` in `pkg/machinery/imager/quirks/quirks.go`; an
    /// unparsable version counts as newest).
    pub fn boot_partition_size(&self) -> u64 {
        if self.large_boot_partition() {
            2000 * MIB
        } else {
            1000 * MIB
        }
    }

    /// Size of the BIOS boot partition of the GRUB layout (`GrubBIOSSize` in
    /// `pkg/machinery/imager/quirks/partitions.go`).
    pub fn bios_partition_size(&self) -> u64 {
        MIB
    }

    /// The disk size of an image profile once Talos has filled its defaults
    /// (`Output.FillDefaults` in `pkg/imager/profile/output.go`): the profile's size
    /// grows by the growth of the BOOT partition over its original 1000 MiB, and a
    /// dual-boot image adds room for its BIOS and BOOT partitions. `bootloader` is
    /// the one Talos picks ([`Quirks::talos_default_bootloader`]).
    pub fn disk_size_default(&self, disk_size: u64, bootloader: Bootloader) -> u64 {
        let mut size = (disk_size + self.boot_partition_size()).saturating_sub(1000 * MIB);
        if bootloader == Bootloader::DualBoot {
            size += self.bios_partition_size() + self.boot_partition_size();
        }
        size
    }

    /// UKIs carry `.profile` sections (>= 1.10).
    pub fn uki_profiles(&self) -> bool {
        self.at_least(1, 10, 0)
    }

    /// `selinux=1` on the command line (>= 1.10).
    pub fn selinux(&self) -> bool {
        self.at_least(1, 10, 0)
    }

    /// IMA arguments (1.x <= 1.10; needs a parsed version).
    pub fn ima(&self) -> bool {
        self.parsed.is_some_and(|v| v < Semver(1, 11, 0))
    }

    /// BOOT partition and EFI-UKI sizes grew (>= 1.11).
    pub fn large_boot_partition(&self) -> bool {
        self.at_least(1, 11, 0)
    }

    /// ISO bootloader is selectable, so an ISO profile gets `isoOptions` with a
    /// bootloader filled in (>= 1.12; Talos `ISOSupportsSettingBootloader`).
    pub fn iso_bootloader_option(&self) -> bool {
        self.at_least(1, 12, 0)
    }

    /// A machine configuration can be embedded as a virtual extension (>= 1.12;
    /// Talos `SupportsEmbeddedConfig`).
    pub fn embedded_config(&self) -> bool {
        self.at_least(1, 12, 0)
    }

    /// SELinux labels of extension files (PAX `SCHILY.xattr.security.selinux`) end up
    /// in their squashfs images (>= 1.12: set on disk and stored by mksquashfs in
    /// v1.12, passed as `-p "PATH x security.selinux=..."` from v1.13).
    pub fn selinux_labels(&self) -> bool {
        self.at_least(1, 12, 0)
    }

    /// `module.sig_enforce=1` (>= 1.12).
    pub fn module_sig_enforce(&self) -> bool {
        self.at_least(1, 12, 0)
    }

    /// `proc_mem.force_override=never` (>= 1.13).
    pub fn proc_mem_override(&self) -> bool {
        self.at_least(1, 13, 0)
    }

    /// `init_on_alloc=1` and `nvme_core.io_timeout` on every platform (< 1.14).
    pub fn legacy_hardening_args(&self) -> bool {
        !self.at_least(1, 14, 0)
    }

    /// Overlays exist, and Image Factory's `schematic` extension carries the schematic
    /// as `extraInfo` (>= 1.7; Talos `SupportsOverlay`; needs a parsed version).
    pub fn supports_overlay(&self) -> bool {
        self.parsed_at_least(1, 7)
    }

    /// Extensions' squashfs images and the appended cpio are xz-compressed (< 1.8, zstd
    /// since; needs a parsed version).
    pub fn xz_extensions(&self) -> bool {
        self.parsed.is_some_and(|v| v < Semver(1, 8, 0))
    }

    /// Firmware and kernel modules live under `/usr/lib` (>= 1.10; `/lib` before).
    pub fn usr_lib(&self) -> bool {
        self.at_least(1, 10, 0)
    }

    /// `lockdown=confidentiality` for SecureBoot (< 1.14; needs a parsed version).
    pub fn lockdown(&self) -> bool {
        self.parsed.is_some_and(|v| v < Semver(1, 14, 0))
    }
}

fn parse(version: &str) -> Option<Semver> {
    let v = version.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some(Semver(major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_and_prereleases() {
        assert_eq!(parse("v1.9.2"), Some(Semver(1, 9, 2)));
        assert_eq!(parse("1.10.0-alpha.1"), Some(Semver(1, 10, 0)));
        assert_eq!(
            parse("v1.5.0-alpha.3-35-ge0f383598-dirty"),
            Some(Semver(1, 5, 0))
        );
        assert_eq!(parse("latest"), None);
    }

    #[test]
    fn v1_9_2_quirks() {
        let q = Quirks::new(DEFAULT_VERSION);
        assert!(q.supports_uki() && q.halt_if_installed() && q.ima() && q.lockdown());
        assert!(
            !q.sd_boot_for_uefi() && !q.uki_profiles() && !q.selinux() && !q.large_boot_partition()
        );
        assert!(q.legacy_hardening_args());
    }

    #[test]
    fn unparsable_means_newest_except_parsed_checks() {
        let q = Quirks::new("main");
        assert!(q.uki_profiles() && q.selinux() && !q.legacy_hardening_args());
        assert!(!q.sd_boot_for_uefi() && !q.ima() && !q.lockdown());
        assert!(q.installer_base_image() && q.large_boot_partition());
        assert_eq!(
            q.talos_default_bootloader(None, "amd64", false),
            Bootloader::Grub
        );
    }

    #[test]
    fn installer_image_ref_keeps_the_version_spelling() {
        assert_eq!(
            Quirks::new("1.9.0").installer_image_ref("1.9.0"),
            "ghcr.io/siderolabs/installer:1.9.0"
        );
        assert_eq!(
            Quirks::new("v1.10.0").installer_image_ref("v1.10.0"),
            "ghcr.io/siderolabs/installer-base:v1.10.0"
        );
    }

    #[test]
    fn talos_bootloader_choice() {
        let pick =
            |v: &str, current, arch, sb| Quirks::new(v).talos_default_bootloader(current, arch, sb);
        assert_eq!(pick("1.9.0", None, "amd64", false), Bootloader::Grub);
        assert_eq!(pick("1.9.0", None, "arm64", false), Bootloader::Grub);
        assert_eq!(pick("1.9.0", None, "amd64", true), Bootloader::SdBoot);
        assert_eq!(pick("1.10.0", None, "amd64", false), Bootloader::DualBoot);
        assert_eq!(pick("1.10.0", None, "arm64", false), Bootloader::SdBoot);
        assert_eq!(
            pick("1.10.0", Some(Bootloader::SdBoot), "amd64", false),
            Bootloader::SdBoot
        );
        assert_eq!(
            pick("1.10.0", Some(Bootloader::Grub), "amd64", true),
            Bootloader::SdBoot
        );
    }

    #[test]
    fn disk_size_follows_the_boot_partitions() {
        const BASE: u64 = 1246 * MIB;
        let size = |v: &str, b| Quirks::new(v).disk_size_default(BASE, b);
        assert_eq!(size("1.9.0", Bootloader::Grub), 1306525696);
        assert_eq!(size("1.10.0", Bootloader::SdBoot), 1306525696);
        assert_eq!(size("1.10.0", Bootloader::DualBoot), 2356150272);
        assert_eq!(size("1.11.0", Bootloader::SdBoot), 2355101696);
        assert_eq!(size("1.15.0", Bootloader::DualBoot), 4453302272);
    }

    #[test]
    fn extension_layout_quirks() {
        let q = Quirks::new;
        assert!(!q("v1.6.9").supports_overlay() && q("v1.7.0").supports_overlay());
        assert!(!q("").supports_overlay(), "needs a parsed version");
        assert!(q("v1.7.6").xz_extensions() && !q("v1.8.0").xz_extensions());
        assert!(!q("").xz_extensions(), "needs a parsed version");
        assert!(!q("v1.9.5").usr_lib() && q("v1.10.0").usr_lib() && q("").usr_lib());
    }
}
