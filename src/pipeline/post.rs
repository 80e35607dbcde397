//! The last stage: outFormat (rename, or stream through a compressor into the final
//! name, atomically), then the artifact's hash and the build manifest beside it.

use std::path::{Path, PathBuf};

use super::Facts;
use crate::error::{IoContext, Result};
use crate::io::AtomicFile;
use crate::plan::Plan;
use crate::profile::OutFormat;
use crate::report::{Manifest, OutputFile};

/// Applies `format` to the artifact at `produced`: a rename for raw, streaming
/// compression otherwise. The result appears at `dest` only when complete.
pub fn finish(format: OutFormat, produced: &Path, dest: &Path, epoch: u64) -> Result<()> {
    if format == OutFormat::Raw {
        return std::fs::rename(produced, dest).op("renaming into", dest);
    }
    let mut out = AtomicFile::create(dest)?;
    crate::formats::compression::compress(produced, format, out.file(), dest, epoch)?;
    out.commit()?;
    std::fs::remove_file(produced).op("removing", produced)
}

/// Writes `<artifact>.manifest.json` beside the artifact; returns its path.
pub fn manifest(plan: &Plan, artifact: &Path, facts: Facts) -> Result<PathBuf> {
    let (size, sha256) = crate::io::sha256_file(artifact)?;
    let dir = artifact.parent().unwrap_or(Path::new("."));
    let manifest = Manifest {
        manifest_version: 1,
        imager_version: env!("CARGO_PKG_VERSION").to_string(),
        profile: serde_json::to_value(&plan.profile).expect("profile serializes"),
        kernel_cmdline: plan.cmdline.clone(),
        outputs: vec![OutputFile {
            name: plan.file_name.clone(),
            size,
            sha256,
        }],
        secureboot: facts.secureboot,
        pcr11: facts.pcr11,
        extensions: facts.extensions,
    };
    manifest.write(dir, &plan.file_name)
}
