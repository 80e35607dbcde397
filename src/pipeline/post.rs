//! The last stage: outFormat (rename, or stream through a compressor into the final
//! name, atomically), then the artifact's hash and the build manifest beside it.

use std::path::{Path, PathBuf};

use super::Facts;
use crate::error::{IoContext, Result};
use crate::io::{AtomicFile, HashingWriter};
use crate::plan::Plan;
use crate::profile::OutFormat;
use crate::report::{Manifest, OutputFile};

/// Applies `format` to the artifact at `produced`: a rename for raw, streaming
/// compression otherwise. The result appears at `dest` only when complete. Returns its
/// size and SHA-256 (hex): `known` (the produced artifact's, hashed by its writer) for
/// raw, hashed while compressing otherwise, and else hashed from the file without
/// reading its holes.
pub fn finish(
    format: OutFormat,
    produced: &Path,
    dest: &Path,
    epoch: u64,
    known: Option<(u64, String)>,
) -> Result<(u64, String)> {
    if format == OutFormat::Raw {
        std::fs::rename(produced, dest).op("renaming into", dest)?;
        return match known {
            Some(digest) => Ok(digest),
            None => crate::io::sha256_file(dest),
        };
    }
    let mut out = AtomicFile::create(dest)?;
    let mut hashed = HashingWriter::new(out.file());
    crate::formats::compression::compress(produced, format, &mut hashed, dest, epoch)?;
    let (_, sum, size) = hashed.finish();
    out.commit()?;
    std::fs::remove_file(produced).op("removing", produced)?;
    Ok((size, hex::encode(sum)))
}

/// Writes `<artifact>.manifest.json` beside the artifact, whose size and SHA-256 (hex)
/// are `digest`; returns its path.
pub fn manifest(
    plan: &Plan,
    artifact: &Path,
    (size, sha256): (u64, String),
    facts: Facts,
) -> Result<PathBuf> {
    let dir = artifact.parent().unwrap_or(Path::new("."));
    let manifest = Manifest {
        manifest_version: 1,
        imager_version: env!("CARGO_PKG_VERSION").to_string(),
        profile: {
            // The manifest lies beside the artifact: no PIN in it.
            let mut p = plan.profile.clone();
            p.input.secureboot = p.input.secureboot.as_ref().map(|sb| sb.redacted());
            serde_json::to_value(&p).expect("profile serializes")
        },
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
