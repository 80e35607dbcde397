//! The virtual `schematic` system extension Image Factory adds to every asset but the
//! kernel and the command line (`internal/artifacts/schematic.go`, v1.5.0
//! `schematicExtension`): a manifest named `schematic` whose version is the schematic ID
//! (and, for Talos >= 1.7, the canonical schematic as `extraInfo`), marshalled with
//! go-yaml v4 as the factory does, and an empty marker file
//! `rootfs/usr/local/share/schematic/<ID>`. Talos and Omni read the ID from it.
//! Written once per ID and version as a plain tar ([`super::virtual_ext`]) in the work
//! directory, with fixed headers, so it is the same bytes on every replica.

use std::path::{Path, PathBuf};

use super::manifest::{self, Compatibility, Manifest, Metadata, TalosCompat};
use crate::error::{IoContext, Result};
use crate::profile::quirks::Quirks;

/// The manifest's description, as Image Factory v1.5.0 writes it.
const DESCRIPTION: &str =
    "Virtual extension which specifies the schematic of the image built with schematic.";

/// The manifest of the extension for schematic `id`, as Image Factory's go-yaml v4 writes
/// Talos's `Manifest` ([`manifest::manifest_yaml_v4`]).
pub fn manifest_yaml(id: &str, version: &str, external_url: &str, canonical: &str) -> String {
    let extra = Quirks::new(version).supports_overlay();
    manifest::manifest_yaml_v4(&Manifest {
        version: "v1alpha1".into(),
        metadata: Metadata {
            name: "schematic".into(),
            version: id.into(),
            author: format!("Image Factory ({external_url})"),
            description: DESCRIPTION.into(),
            compatibility: Compatibility {
                talos: TalosCompat {
                    version: ">= 1.0.0".into(),
                },
            },
            extra_info: if extra {
                canonical.into()
            } else {
                String::new()
            },
        },
    })
}

/// The extension tarball for schematic `id` and Talos `version` under `work_dir`, made
/// if missing.
pub fn tarball(
    work_dir: &Path,
    external_url: &str,
    epoch: u64,
    id: &str,
    version: &str,
    canonical: &str,
) -> Result<PathBuf> {
    let dir = work_dir.join("schematic-extensions");
    std::fs::create_dir_all(&dir).op("creating", &dir)?;
    let path = dir.join(format!("{id}-{version}.tar"));
    if path.is_file() {
        return Ok(path);
    }
    let marker = format!("usr/local/share/schematic/{id}");
    let files = [super::virtual_ext::File {
        path: &marker,
        mode: 0o644,
        data: b"",
        selinux: None,
    }];
    let manifest = manifest_yaml(id, version, external_url, canonical);
    super::virtual_ext::write(&manifest, &files, epoch, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes `yaml.Marshal` of go.yaml.in/yaml/v4 (v1.5.0's pin) gives for the
    /// factory's `extensions.Manifest`: indent 4, `>= 1.0.0` single-quoted, the
    /// canonical schematic as a literal block.
    #[test]
    fn manifest_is_image_factory_1_5_0s() {
        let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
        let canonical = "customization:\n    extraKernelArgs:\n        - console=ttyS0\n";
        let head = format!(
            "version: v1alpha1\nmetadata:\n    name: schematic\n    version: {id}\n    author: Image Factory (https://factory.example)\n    description: Virtual extension which specifies the schematic of the image built with schematic.\n    compatibility:\n        talos:\n            version: '>= 1.0.0'\n"
        );
        assert_eq!(
            manifest_yaml(id, "v1.12.0", "https://factory.example", canonical),
            format!(
                "{head}    extraInfo: |\n        customization:\n            extraKernelArgs:\n                - console=ttyS0\n"
            )
        );
        assert_eq!(
            manifest_yaml(id, "v1.6.0", "https://factory.example", canonical),
            head
        );
    }

    /// The entries in v1.5.0's order: the manifest, the directories, the marker.
    #[test]
    fn tarball_entries_in_factory_order() {
        let dir = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        let canonical = "customization: {}\n";
        let path = tarball(
            dir.path(),
            "https://f.example",
            9,
            &id,
            "v1.12.0",
            canonical,
        )
        .unwrap();
        let mut a = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "manifest.yaml" {
                let mut m = String::new();
                std::io::Read::read_to_string(&mut e, &mut m).unwrap();
                assert_eq!(
                    m,
                    manifest_yaml(&id, "v1.12.0", "https://f.example", canonical)
                );
            }
            names.push(name);
        }
        let want = [
            "manifest.yaml".to_string(),
            "rootfs/".into(),
            "rootfs/usr/".into(),
            "rootfs/usr/local/".into(),
            "rootfs/usr/local/share/".into(),
            "rootfs/usr/local/share/schematic/".into(),
            format!("rootfs/usr/local/share/schematic/{id}"),
        ];
        assert_eq!(names, want);
    }
}
