//! The virtual `schematic` system extension Image Factory adds to every asset but the
//! kernel and the command line (`internal/artifacts/schematic.go`): a manifest named
//! `schematic` whose version is the schematic ID (and, for Talos >= 1.7, the
//! canonical schematic as `extraInfo`), and an empty marker file
//! `rootfs/usr/local/share/schematic/<ID>`. Talos and Omni read the ID from it.
//! Written once per ID and version as a plain tar in the work directory, with
//! fixed headers, so it is the same bytes on every replica.

use std::io::Write;
use std::path::PathBuf;

use super::State;
use crate::error::{IoContext, Result};
use crate::profile::quirks::{Quirks, Semver};

/// The manifest of the extension for schematic `id`, as Image Factory's go-yaml writes
/// Talos's `Manifest` ([`crate::extensions::manifest::manifest_yaml`]).
pub fn manifest_yaml(id: &str, version: &str, external_url: &str, canonical: &str) -> String {
    use crate::extensions::manifest::{self, Compatibility, Manifest, Metadata, TalosCompat};
    let extra = Quirks::new(version).version() >= Some(Semver(1, 7, 0));
    manifest::manifest_yaml(&Manifest {
        version: "v1alpha1".into(),
        metadata: Metadata {
            name: "schematic".into(),
            version: id.into(),
            author: format!("Image Factory ({external_url})"),
            description: "Virtual extension which specifies the schematic ID".into(),
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

/// The extension tarball for schematic `id` and `version`, made if missing.
pub fn tarball(state: &State, id: &str, version: &str, canonical: &str) -> Result<PathBuf> {
    let dir = state.config.work_dir.join("schematic-extensions");
    std::fs::create_dir_all(&dir).op("creating", &dir)?;
    let path = dir.join(format!("{id}-{version}.tar"));
    if path.is_file() {
        return Ok(path);
    }
    let epoch = state.config.epoch;
    let manifest = manifest_yaml(id, version, &state.config.external_url, canonical);
    let mut file = crate::io::AtomicFile::create(&path)?;
    {
        let mut tar = tar::Builder::new(file.file());
        let mut dir_entry = |name: &str| -> std::io::Result<()> {
            let mut h = crate::io::tar::dir_header(0o755, epoch);
            tar.append_data(&mut h, name, std::io::empty())
        };
        for d in [
            "rootfs/",
            "rootfs/usr/",
            "rootfs/usr/local/",
            "rootfs/usr/local/share/",
            "rootfs/usr/local/share/schematic/",
        ] {
            dir_entry(d).writing(&path)?;
        }
        let mut h = crate::io::tar::file_header(0, 0o644, epoch);
        tar.append_data(
            &mut h,
            format!("rootfs/usr/local/share/schematic/{id}"),
            std::io::empty(),
        )
        .writing(&path)?;
        let mut h = crate::io::tar::file_header(manifest.len() as u64, 0o644, epoch);
        tar.append_data(&mut h, "manifest.yaml", manifest.as_bytes())
            .writing(&path)?;
        tar.into_inner().writing(&path)?.flush().writing(&path)?;
    }
    file.commit()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_go_yaml_with_extra_info_from_1_7() {
        let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
        let canonical = "customization:\n    extraKernelArgs:\n        - console=ttyS0\n";
        let head = format!(
            "version: v1alpha1\nmetadata:\n    name: schematic\n    version: {id}\n    author: Image Factory (https://factory.example)\n    description: Virtual extension which specifies the schematic ID\n    compatibility:\n        talos:\n            version: '>= 1.0.0'\n"
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
}
