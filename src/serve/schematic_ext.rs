//! The virtual `schematic` system extension Image Factory adds to every asset but the
//! kernel and the command line (`internal/artifacts/schematic.go`): a manifest named
//! `schematic` whose version is the schematic ID (and, for Talos >= 1.7, the
//! canonical schematic as `extraInfo`), and an empty marker file
//! `rootfs/usr/local/share/schematic/<ID>`. Talos and Omni read the ID from it.
//! Written once per ID and version as a plain tar in the work directory, with
//! fixed headers, so it is the same bytes on every replica.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::State;
use crate::error::{IoContext, Result};
use crate::profile::quirks::{Quirks, Semver};

#[derive(Serialize)]
struct Manifest<'a> {
    version: &'a str,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    name: &'a str,
    version: &'a str,
    author: String,
    description: &'a str,
    compatibility: Compatibility<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_info: Option<&'a str>,
}

#[derive(Serialize)]
struct Compatibility<'a> {
    talos: Talos<'a>,
}

#[derive(Serialize)]
struct Talos<'a> {
    version: &'a str,
}

/// The manifest of the extension for schematic `id`.
pub fn manifest_yaml(id: &str, version: &str, external_url: &str, canonical: &str) -> String {
    let extra = Quirks::new(version).version() >= Some(Semver(1, 7, 0));
    let m = Manifest {
        version: "v1alpha1",
        metadata: Metadata {
            name: "schematic",
            version: id,
            author: format!("Image Factory ({external_url})"),
            description: "Virtual extension which specifies the schematic ID",
            compatibility: Compatibility {
                talos: Talos {
                    version: ">= 1.0.0",
                },
            },
            extra_info: extra.then_some(canonical),
        },
    };
    serde_yaml::to_string(&m).expect("the manifest serializes")
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
