//! The build pipeline: profile → inputs → command line → UKI (measured, signed) →
//! the output kind's artifact → outFormat → manifest. One function per output kind.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub mod boot;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::io::{AtomicFile, BUFFER_SIZE};
use crate::kernel_cmdline;
use crate::profile::{OutFormat, OutputKind, Profile};
use crate::report::{Manifest, OutputFile, Pcr11Bank, Progress, SecureBootFacts};

/// Where and how to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub output_dir: PathBuf,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The final artifact.
    pub artifact: PathBuf,
    /// The manifest written beside it.
    pub manifest: PathBuf,
}

/// A scratch directory inside the output directory (same file system, so results
/// can be renamed into place); removed when dropped and on interrupt.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(output_dir: &Path) -> Result<Self> {
        let path = output_dir.join(format!(".imager-work-{}", std::process::id()));
        std::fs::create_dir_all(&path).at(&path)?;
        crate::io::cleanup::register_dir(&path);
        Ok(WorkDir { path })
    }

    /// A path inside the scratch directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        crate::io::cleanup::unregister_dir(&self.path);
    }
}

/// `<platform>-<arch>[-secureboot]`, the stem of most artifact names.
fn stem(profile: &Profile) -> String {
    let sb = if profile.secureboot() {
        "-secureboot"
    } else {
        ""
    };
    format!("{}-{}{sb}", profile.platform, profile.arch)
}

/// The artifact's file name before outFormat post-processing (Talos naming).
pub fn artifact_name(profile: &Profile) -> Result<String> {
    let p = stem(profile);
    let sb = if profile.secureboot() {
        "-secureboot"
    } else {
        ""
    };
    Ok(match profile.kind()? {
        OutputKind::Iso => format!("{p}.iso"),
        OutputKind::Image => {
            let format = profile
                .output
                .image_options
                .as_ref()
                .and_then(|o| o.disk_format)
                .unwrap_or(crate::profile::DiskFormat::Raw);
            format!("{p}.{format}")
        }
        OutputKind::Installer => format!("installer-{}{sb}.tar", profile.arch),
        OutputKind::Kernel => format!("kernel-{}", profile.arch),
        OutputKind::Initramfs => format!("initramfs-{p}.xz"),
        OutputKind::Uki => format!("{p}-uki.efi"),
        OutputKind::Cmdline => format!("cmdline-{p}"),
    })
}

/// The final file name after outFormat.
pub fn final_name(profile: &Profile) -> Result<String> {
    let name = artifact_name(profile)?;
    Ok(match profile.output.out_format.unwrap_or(OutFormat::Raw) {
        OutFormat::Raw => name,
        f => format!("{name}{}", f.as_str()),
    })
}

/// Runs the pipeline for a resolved profile.
pub fn build(
    profile: &Profile,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildResult> {
    let kind = profile.kind()?;
    let out_dir = &options.output_dir;
    std::fs::create_dir_all(out_dir).at(out_dir)?;
    let work = WorkDir::new(out_dir)?;

    if matches!(
        kind,
        OutputKind::Iso
            | OutputKind::Image
            | OutputKind::Installer
            | OutputKind::Initramfs
            | OutputKind::Uki
    ) {
        progress.step("skipped initramfs rebuild (no system extensions)");
    }
    let cmdline = kernel_cmdline::build(profile).to_string();
    if kind != OutputKind::Kernel && kind != OutputKind::Initramfs {
        progress.step(&format!("kernel command line: {cmdline}"));
    }

    let name = artifact_name(profile)?;
    let produced = work.file(&name);
    let mut facts = Facts::default();
    match kind {
        OutputKind::Cmdline => write_bytes(&produced, cmdline.as_bytes())?,
        OutputKind::Kernel => copy_input("kernel", &profile.input.kernel.path, &produced)?,
        OutputKind::Initramfs => copy_input("initramfs", &profile.input.initramfs.path, &produced)?,
        OutputKind::Uki | OutputKind::Iso | OutputKind::Image | OutputKind::Installer => {
            boot::assemble(
                profile, kind, &cmdline, &work, &produced, progress, &mut facts,
            )?;
        }
    }

    let final_name = final_name(profile)?;
    let final_path = out_dir.join(&final_name);
    post_process(profile, &produced, &final_path)?;
    progress.step(&format!("output asset path: {}", final_path.display()));

    let (size, sha256) = sha256_file(&final_path)?;
    let manifest = Manifest {
        manifest_version: 1,
        imager_version: env!("CARGO_PKG_VERSION").to_string(),
        profile: serde_json::to_value(profile).expect("profile serializes"),
        kernel_cmdline: cmdline,
        outputs: vec![OutputFile {
            name: final_name.clone(),
            size,
            sha256,
        }],
        secureboot: facts.secureboot,
        pcr11: facts.pcr11,
    };
    let manifest = manifest.write(out_dir, &final_name)?;
    Ok(BuildResult {
        artifact: final_path,
        manifest,
    })
}

/// Facts about the artifact gathered while building it, for the manifest.
#[derive(Debug, Default)]
pub struct Facts {
    pub secureboot: Option<SecureBootFacts>,
    pub pcr11: Vec<Pcr11Bank>,
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).at(path)
}

fn copy_input(role: &str, source: &str, dest: &Path) -> Result<()> {
    let source = crate::inputs::require_file(role, source)?;
    let mut from = File::open(&source).at(&source)?;
    let mut to = File::create(dest).at(dest)?;
    copy_stream(&mut from, &source, &mut to, dest)?;
    Ok(())
}

/// Copies `from` to `to` in [`BUFFER_SIZE`] chunks; returns the byte count.
pub fn copy_stream(
    from: &mut impl Read,
    from_path: &Path,
    to: &mut impl Write,
    to_path: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).at(from_path)?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).at(to_path)?;
        total += n as u64;
    }
}

/// Applies `outFormat`: rename for raw, streaming compression otherwise. The result
/// appears at `dest` atomically.
fn post_process(profile: &Profile, produced: &Path, dest: &Path) -> Result<()> {
    match profile.output.out_format.unwrap_or(OutFormat::Raw) {
        OutFormat::Raw => std::fs::rename(produced, dest).at(dest),
        format => {
            let mut out = AtomicFile::create(dest)?;
            crate::formats::compression::compress(produced, format.as_str(), out.file())?;
            out.commit()?;
            std::fs::remove_file(produced).at(produced)
        }
    }
}

/// Size and SHA-256 (hex) of a file, streamed; holes of sparse disk images are
/// hashed as zeros without being read.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = crate::io::sparse::SparseReader::new(File::open(path).at(path)?).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Refuses to run when `dir` cannot be written, before any work.
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).at(dir)?;
    let probe = dir.join(format!(".imager-probe-{}", std::process::id()));
    File::create(&probe).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
