//! Target Talos version and the behaviour that depends on it ("quirks").
//!
//! The thresholds come from the Talos imager; see the quirk table in
//! `profiles-and-outputs.md` section 11. An unparsable version means "newest
//! behaviour" for most checks, but "no" for the checks that need a parsed version.

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

    /// ISO bootloader is selectable; `module.sig_enforce=1` (>= 1.12).
    pub fn iso_bootloader_option(&self) -> bool {
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
    }
}
