//! What a build tells its user: one progress line per step on stderr, and the build
//! manifest (a JSON file beside the outputs, for CI).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{IoContext, Result};

/// Progress lines, all on stderr (stdout may carry `--tar-to-stdout`).
pub trait Progress {
    fn step(&self, line: &str);
}

/// Prints to stderr.
pub struct Stderr;

impl Progress for Stderr {
    fn step(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// Prints nothing.
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _line: &str) {}
}

/// One file a build produced.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    /// File name inside the output directory.
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// Predicted PCR 11 of one bank.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pcr11Bank {
    pub bank: String,
    /// Right after systemd-stub measured the UKI (what `/sys/class/tpm/tpm0/pcr-sha256/11` shows
    /// before any boot phase is extended).
    pub after_stub: String,
    /// After `enter-initrd`, `leave-initrd`, `enter-machined`: the state the signed policy is for.
    pub enter_machined: String,
}

/// SecureBoot facts of a signed build.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureBootFacts {
    /// SHA-256 fingerprint of the signing certificate (DER).
    pub signer_cert_sha256: String,
    pub signer_subject: String,
    /// SHA-256 of the PCR public key's PKCS#1 DER (the `pkfp` of `.pcrsig`).
    pub pcr_key_fingerprint: String,
}

/// The build manifest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Schema version of this document.
    pub manifest_version: u32,
    pub imager_version: String,
    /// The effective profile.
    pub profile: serde_json::Value,
    pub kernel_cmdline: String,
    pub outputs: Vec<OutputFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secureboot: Option<SecureBootFacts>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pcr11: Vec<Pcr11Bank>,
    /// System extensions in the initramfs, in `extensions.yaml` order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<crate::extensions::ExtensionRecord>,
}

impl Manifest {
    /// File name of the manifest for an artifact: `<artifact>.manifest.json`.
    pub fn file_name(artifact: &str) -> String {
        format!("{artifact}.manifest.json")
    }

    /// Writes the manifest atomically into `dir`.
    pub fn write(&self, dir: &Path, artifact: &str) -> Result<PathBuf> {
        let path = dir.join(Self::file_name(artifact));
        let mut out = crate::io::AtomicFile::create(&path)?;
        let mut text = serde_json::to_string_pretty(self).expect("manifest serializes");
        text.push('\n');
        std::io::Write::write_all(out.file(), text.as_bytes()).at(&path)?;
        out.commit()
    }
}
