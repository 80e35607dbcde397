//! The embedded machine configuration as a virtual system extension (Talos >= 1.12).
//!
//! Talos's `pkg/imager/embed.go` (`BuildEmbeddedConfigExtension`) turns
//! `customization.embeddedMachineConfiguration` into a tarball appended as the last
//! `systemExtensions` entry ([`super::virtual_ext`]): `manifest.yaml` (0644; name `embedded-config`, version
//! the lowercase hex SHA-256 of the configuration bytes, author `Imager`,
//! description `Virtual extension which embeds the machine configuration.`,
//! constraint `>= 1.0.0`), the directories `rootfs`, `rootfs/usr`, `rootfs/usr/local`,
//! `rootfs/usr/local/etc`, `rootfs/usr/local/etc/talos` (0755) and
//! `rootfs/usr/local/etc/talos/config.yaml` (0400) carrying the PAX record
//! `SCHILY.xattr.security.selinux=system_u:object_r:system_state_t:s0`. The same
//! tarball is written here and goes through the ordinary unpack and rebuild.
//!
//! The unpack step keeps that label and the squashfs writer stores it as the
//! `security.selinux` xattr of `config.yaml` (Talos v1.12 labels the file on disk and
//! mksquashfs stores it; v1.13+ passes it as a mksquashfs pseudo xattr definition).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::{self, Compatibility, Manifest, Metadata, TalosCompat};
use crate::error::{Error, Result};
use crate::profile::Profile;

/// The `source` the build manifest records for the virtual extension.
pub const SOURCE: &str = "customization.embeddedMachineConfiguration";
/// The tarball's file name in the build's scratch directory (Talos:
/// `<tmp>/embedded-config.tar`).
pub const TARBALL: &str = "embedded-config.tar";
/// Where the configuration lands in the extension's rootfs.
pub const CONFIG_PATH: &str = "usr/local/etc/talos/config.yaml";
const SELINUX_LABEL: &str = "system_u:object_r:system_state_t:s0";

/// Refuses an embedded configuration for a Talos version that does not read one.
pub fn validate(profile: &Profile) -> Result<()> {
    if profile
        .customization
        .embedded_machine_configuration
        .is_empty()
        || profile.quirks().embedded_config()
    {
        return Ok(());
    }
    Err(Error::unsupported(format!(
        "customization.embeddedMachineConfiguration: embedding a machine configuration needs Talos >= 1.12 (profile version {})",
        profile.version
    )))
}

/// The virtual extension's `manifest.yaml`, as go-yaml encodes Talos's `Manifest`.
pub fn manifest(config: &[u8]) -> String {
    manifest::manifest_yaml(&Manifest {
        version: "v1alpha1".into(),
        metadata: Metadata {
            name: "embedded-config".into(),
            version: hex::encode(Sha256::digest(config)),
            author: "Imager".into(),
            description: "Virtual extension which embeds the machine configuration.".into(),
            compatibility: Compatibility {
                talos: TalosCompat {
                    version: ">= 1.0.0".into(),
                },
            },
            extra_info: String::new(),
        },
    })
}

/// Writes the virtual extension's tarball for `config` to `dest`.
pub fn write_tarball(config: &[u8], dest: &Path) -> Result<()> {
    let files = [super::virtual_ext::File {
        path: CONFIG_PATH,
        mode: 0o400,
        data: config,
        selinux: Some(SELINUX_LABEL),
    }];
    super::virtual_ext::write(&manifest(config), &files, 0, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_reads_back_as_talos_writes_it() {
        let m: Manifest = serde_yaml::from_str(&manifest(b"machine: {}\n")).unwrap();
        assert_eq!(m.version, "v1alpha1");
        assert_eq!(m.metadata.name, "embedded-config");
        assert_eq!(
            m.metadata.version,
            hex::encode(Sha256::digest(b"machine: {}\n"))
        );
        assert_eq!(m.metadata.author, "Imager");
        assert_eq!(m.metadata.compatibility.talos.version, ">= 1.0.0");
    }

    #[test]
    fn manifest_bytes() {
        let config = b"machine: {}\n";
        let want = format!(
            "version: v1alpha1\nmetadata:\n    name: embedded-config\n    version: {}\n    author: Imager\n    description: Virtual extension which embeds the machine configuration.\n    compatibility:\n        talos:\n            version: '>= 1.0.0'\n",
            hex::encode(Sha256::digest(config))
        );
        assert_eq!(manifest(config), want);
    }
}
