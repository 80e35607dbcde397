//! Unified Kernel Images: kernel, initramfs, command line and os-release appended
//! as PE sections to systemd-stub, with PCR 11 predicted and (for signed builds)
//! the signed PCR policy embedded.
//!
//! [`sections`] is the table of sections the stub knows, [`stub`] loads and checks
//! the stub, [`crate::pe`] lays out the PE headers, [`kernel`] reads the release for
//! `.uname`, [`plan`] fixes the layout and [`UkiPlan::write`] writes the image, and
//! [`inspect`] reads one back and checks it.

mod build;
pub mod inspect;
pub mod kernel;
pub mod sections;
pub mod stub;

use std::path::PathBuf;

pub use build::{UkiPlan, plan};

use crate::keys::PcrKey;
use crate::plan::Arch;

/// One UKI profile (systemd >= 257): selectable from the boot menu, may override
/// the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiProfile {
    /// `ID=` of the `.profile` section (e.g. `main`, `reset`).
    pub id: String,
    /// `TITLE=` shown in the boot menu.
    pub title: Option<String>,
    /// The profile's own `.cmdline`, replacing the base one.
    pub cmdline: Option<String>,
}

/// Everything a UKI is made of.
#[derive(Debug, Clone)]
pub struct UkiSpec {
    /// The target architecture: stub and kernel must be PE images for it.
    pub arch: Arch,
    /// systemd-stub (`linuxx64.efi.stub`, `linuxaa64.efi.stub`), 252 or later.
    pub stub: PathBuf,
    /// Kernel EFI image; on amd64 a bzImage (its header gives `.uname`), on arm64 an
    /// `Image` with an EFI stub or a zboot `vmlinuz.efi` (no `.uname`, as in Talos).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line, written as is (no newline added).
    pub cmdline: String,
    /// `.osrel` content, see [`os_release`].
    pub os_release: String,
    pub splash: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    /// UKI profiles; empty for a single-profile UKI.
    pub profiles: Vec<UkiProfile>,
    /// Signs the PCR 11 policy (`.pcrsig`) and provides `.pcrpkey`; `None` for unsigned builds.
    pub pcr_key: Option<PcrKey>,
    /// PE TimeDateStamp (`SOURCE_DATE_EPOCH` for reproducible builds), and the
    /// Authenticode signing time of a signed UKI.
    pub timestamp: u32,
}

/// What [`UkiPlan::write`] made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UkiReport {
    /// systemd-stub version from its `.sdmagic`, e.g. `257.13-1~deb13u1`.
    pub stub_version: String,
    /// Every section in file order with its size (VirtualSize, the measured length).
    pub sections: Vec<(String, u64)>,
    /// Predicted PCR 11, one entry per bank (per profile, if there are profiles).
    pub pcr11: Vec<Pcr11>,
    /// Length of the file, signature included.
    pub size: u64,
}

/// Predicted PCR 11 of one bank (for one profile).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pcr11 {
    /// Profile ID, `None` for a UKI without profiles.
    pub profile: Option<String>,
    /// `sha256`, `sha384` or `sha512`.
    pub bank: &'static str,
    /// Hex value right after the stub measured the sections.
    pub after_stub: String,
    /// Hex value after `enter-initrd`, `leave-initrd`, `enter-machined` (the signed state).
    pub enter_machined: String,
    /// Hex PolicyPCR digest signed in `.pcrsig` (signed builds).
    pub pol: Option<String>,
}

/// `.osrel` content (Talos' os-release template): every line ends with `\n`.
pub fn os_release(name: &str, version: &str) -> String {
    let id = name.to_lowercase().replace(' ', "_");
    format!(
        "NAME=\"{name}\"\nID={id}\nVERSION_ID={version}\nPRETTY_NAME=\"{name} ({version})\"\n\
         HOME_URL=\"https://www.talos.dev/\"\nBUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
         VENDOR_NAME=\"Sidero Labs\"\nVENDOR_URL=\"https://www.siderolabs.com/\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_template() {
        let s = os_release("Talos", "v1.0.0");
        assert!(s.starts_with(
            "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.0.0\nPRETTY_NAME=\"Talos (v1.0.0)\"\n"
        ));
        assert!(s.ends_with("VENDOR_URL=\"https://www.siderolabs.com/\"\n"));
        assert_eq!(s.lines().count(), 8);
        assert!(os_release("My OS", "1").contains("\nID=my_os\n"));
    }
}
