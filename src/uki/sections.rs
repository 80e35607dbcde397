//! The UKI sections systemd-stub knows, as one table: canonical measurement order,
//! and the systemd version from which the stub measures each one.
//!
//! A stub measures only the sections its own version knows, so the PCR 11
//! prediction must use the table filtered by the version of the embedded stub
//! (systemd `src/fundamental/uki.h`; UAPI UKI specification).

/// A section systemd-stub looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionKind {
    /// PE section name (at most 8 bytes, so it fits the header without a string table).
    pub name: &'static str,
    /// First systemd version whose stub measures it into PCR 11; `None`: never measured.
    pub measured_since: Option<u32>,
    /// What it holds.
    pub content: &'static str,
}

/// Every known section in systemd's canonical order, which is the order the stub
/// measures in (file order does not matter).
pub const SECTIONS: &[SectionKind] = &[
    SectionKind {
        name: ".linux",
        measured_since: Some(252),
        content: "kernel EFI image",
    },
    SectionKind {
        name: ".osrel",
        measured_since: Some(252),
        content: "os-release",
    },
    SectionKind {
        name: ".cmdline",
        measured_since: Some(252),
        content: "kernel command line",
    },
    SectionKind {
        name: ".initrd",
        measured_since: Some(252),
        content: "initramfs",
    },
    SectionKind {
        name: ".ucode",
        measured_since: Some(256),
        content: "microcode initrd",
    },
    SectionKind {
        name: ".splash",
        measured_since: Some(252),
        content: "BMP splash image",
    },
    SectionKind {
        name: ".dtb",
        measured_since: Some(252),
        content: "devicetree",
    },
    SectionKind {
        name: ".uname",
        measured_since: Some(254),
        content: "kernel release",
    },
    SectionKind {
        name: ".sbat",
        measured_since: Some(254),
        content: "SBAT revocation data (the stub's own)",
    },
    SectionKind {
        name: ".pcrsig",
        measured_since: None,
        content: "signed PCR 11 policies (JSON)",
    },
    SectionKind {
        name: ".pcrpkey",
        measured_since: Some(252),
        content: "PEM public key for .pcrsig",
    },
    SectionKind {
        name: ".profile",
        measured_since: Some(257),
        content: "profile ID/TITLE",
    },
    SectionKind {
        name: ".dtbauto",
        measured_since: Some(257),
        content: "automatically selected devicetrees",
    },
    SectionKind {
        name: ".hwids",
        measured_since: Some(257),
        content: "hardware IDs for .dtbauto",
    },
    SectionKind {
        name: ".efifw",
        measured_since: Some(258),
        content: "firmware images",
    },
];

/// Oldest stub this builder accepts (first with `.pcrsig`/`.pcrpkey` support).
pub const MIN_STUB_VERSION: u32 = 252;

/// First stub version that understands multi-profile UKIs (`.profile`).
pub const PROFILES_SINCE: u32 = 257;

/// Looks a section up by name.
pub fn kind(name: &str) -> Option<&'static SectionKind> {
    SECTIONS.iter().find(|k| k.name == name)
}

/// Whether a stub of systemd `version` measures section `name`.
pub fn is_measured(name: &str, version: u32) -> bool {
    kind(name)
        .and_then(|k| k.measured_since)
        .is_some_and(|since| version >= since)
}

/// The names a stub of systemd `version` measures, in canonical order.
pub fn measured_in(version: u32) -> impl Iterator<Item = &'static str> {
    SECTIONS
        .iter()
        .filter(move |k| k.measured_since.is_some_and(|s| version >= s))
        .map(|k| k.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_lists_per_stub_version() {
        let v252: Vec<_> = measured_in(252).collect();
        assert_eq!(
            v252,
            [
                ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"
            ]
        );
        assert_eq!(measured_in(253).collect::<Vec<_>>(), v252);
        let v254: Vec<_> = measured_in(254).collect();
        assert_eq!(
            v254,
            [
                ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".uname", ".sbat",
                ".pcrpkey"
            ]
        );
        assert!(measured_in(256).any(|n| n == ".ucode"));
        assert_eq!(measured_in(257).count(), 13);
        assert!(!is_measured(".pcrsig", 999));
        assert!(SECTIONS.iter().all(|k| k.name.len() <= 8));
    }
}
