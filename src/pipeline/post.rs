//! The last stage: outFormat (rename, or stream through a compressor into the final
//! name, atomically), then the artifact's hash and the build manifest beside it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Facts;
use crate::error::{IoContext, Result};
use crate::io::{AtomicFile, BUFFER_SIZE};
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
    crate::formats::compression::compress(produced, format, out.file(), epoch)
        .map_err(|e| e.at_output(dest))?;
    out.commit()?;
    std::fs::remove_file(produced).op("removing", produced)
}

/// Writes `<artifact>.manifest.json` beside the artifact; returns its path.
pub fn manifest(plan: &Plan, artifact: &Path, facts: Facts) -> Result<PathBuf> {
    let (size, sha256) = sha256_file(artifact)?;
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
    };
    manifest.write(dir, &plan.file_name)
}

/// Size and SHA-256 (hex) of a file, streamed; holes of sparse disk images are
/// hashed as zeros without being read.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = crate::io::sparse::SparseReader::new(File::open(path).at(path)?).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).reading(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}
