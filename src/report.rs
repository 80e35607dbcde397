//! What a build tells its user: one progress line per step on stderr, progress bars for
//! the long steps when stderr is a terminal, and the build manifest (a JSON file beside
//! the outputs, for CI).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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

static BARS: AtomicBool = AtomicBool::new(false);

/// Draws progress bars from now on when `stderr` is a terminal (the binary calls this;
/// without it, and when stderr is a file or a pipe, a [`Bar`] prints nothing, so logs
/// keep their plain lines).
pub fn enable_bars_on_terminal() {
    use std::io::IsTerminal;
    BARS.store(std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// The progress of one long step (a layer download, a squashfs image), counted in
/// bytes; cheap to clone, drawn on stderr only where [`enable_bars_on_terminal`] found a
/// terminal. Cleared from the screen when dropped or finished.
#[derive(Clone)]
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// A bar named `label` for `total` bytes.
    pub fn new(label: &str, total: u64) -> Bar {
        if !BARS.load(Ordering::Relaxed) {
            return Bar(None);
        }
        // Hidden until its total is known, so it never shows a bogus 0/0.
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        let bar = Bar(Some(bar));
        if total > 0 {
            bar.set_total(total);
        }
        bar
    }

    /// Counts `n` more bytes done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Sets the number of bytes the step has (when known only after it started).
    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b.tick();
        }
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
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
    pub extensions: Vec<ExtensionRecord>,
}

/// One system extension of a build, for the manifest (filled by [`crate::extensions`]).
#[derive(Debug, Clone, Serialize)]
pub struct ExtensionRecord {
    /// The image name in the initramfs (`0.sqsh`, ...).
    pub image: String,
    pub name: String,
    pub version: String,
    pub author: String,
    /// Where it came from: the tarball, `oci:DIR` or the registry reference.
    pub source: String,
    /// `sha256:` of the squashfs image built from it.
    pub digest: String,
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
