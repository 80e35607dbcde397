//! `imager PROFILE|- [flags]`: the main build command.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use imager::meta::MetaValue;
use imager::pipeline::{self as build, BuildOptions};
use imager::plan::{KindPlan, Plan};
use imager::profile::builtin;
use imager::profile::defaults::Roots;
use imager::profile::resolve::{self, Overrides, Source};
use imager::profile::{EnrollKeys, OutputKind};
use imager::report::Stderr;

pub const EXAMPLES: &str = "\
Examples:
  # SecureBoot ISO with keys from ./keys, inputs from ./demo/amd64
  imager secureboot-iso --install-dir demo --secureboot-dir keys --output _out

  # Disk image with a platform network configuration in META key 0x0a
  imager metal --meta 0x0a=\"$(cat network.yaml)\" --output _out

  # ISO as a gzip'd tar on stdout (Talos docs style)
  imager iso --arch amd64 --tar-to-stdout --meta 0x0a='{...}' | tar xz

  # PXE assets
  imager metal --output-kind kernel;  imager metal --output-kind initramfs;  imager metal --output-kind cmdline

  # A full profile on stdin
  imager - < profile.yaml

  # SecureBoot keys
  imager gen secureboot uki --common-name 'SecureBoot Key' && imager gen secureboot pcr && imager gen secureboot database";

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Built-in profile name (see `imager profiles`), a profile YAML file, or `-` for YAML on stdin.
    #[arg(required = true, value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Target architecture: amd64 or arm64 (default: the profile's, else this machine's).
    #[arg(long)]
    pub arch: Option<String>,

    /// Talos platform (talos.platform=), e.g. metal, aws, nocloud.
    #[arg(long)]
    pub platform: Option<String>,

    /// Extra kernel argument (repeatable); `-name` removes a default argument, `-name=value` one value.
    #[arg(
        long = "extra-kernel-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub extra_kernel_args: Vec<String>,

    /// META value KEY=VALUE (repeatable); KEY is 0x0a-style hex or decimal.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,

    /// Output directory.
    #[arg(long, default_value = "/out", env = "IMAGER_OUTPUT")]
    pub output: PathBuf,

    /// Override the output kind: iso, image, installer, kernel, initramfs, uki, cmdline.
    #[arg(long)]
    pub output_kind: Option<String>,

    /// Override the output post-processing: raw, .xz, .gz, .zst, .tar.gz.
    #[arg(long)]
    pub out_format: Option<String>,

    /// Print the effective profile as YAML on stdout, check that it can be built, build nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Write a gzip'd tar of the output directory to stdout (and nothing else).
    #[arg(long)]
    pub tar_to_stdout: bool,

    /// Base installer image: a registry reference, oci-archive:PATH, docker-archive:PATH or oci:DIR.
    #[arg(long)]
    pub base_installer_image: Option<String>,

    /// Allow plain-HTTP and self-signed registries.
    #[arg(long)]
    pub insecure: bool,

    /// System extension image (repeatable; `--insecure` applies): the initramfs is rebuilt with it.
    #[arg(long = "system-extension-image")]
    pub system_extension_images: Vec<String>,

    /// Add the Microsoft UEFI certificates to the generated KEK and db.
    #[arg(long)]
    pub secureboot_include_well_known_certs: bool,

    /// gRPC unix:// address of a SecureBoot signer service (Talos's signerd protocol).
    #[arg(long, value_name = "unix:///PATH")]
    pub secureboot_signer_address: Option<String>,

    /// gRPC unix:// address of a PCR signer service (Talos's signerd protocol).
    #[arg(long, value_name = "unix:///PATH")]
    pub pcr_signer_address: Option<String>,

    /// systemd-boot secure-boot-enroll policy: if-safe, manual, force, off.
    #[arg(long)]
    pub secureboot_enroll_keys: Option<String>,

    /// Machine configuration to embed (not supported yet, rejected with a clear error).
    #[arg(long)]
    pub embedded_config_path: Option<PathBuf>,

    /// Root of the default boot inputs (<dir>/<arch>/vmlinuz, initramfs.xz, systemd-stub.efi, systemd-boot.efi).
    #[arg(long, default_value = "/usr/install", env = "IMAGER_INSTALL_DIR")]
    pub install_dir: PathBuf,

    /// GRUB's platform directories (i386-pc, x86_64-efi) for the grub and dual-boot disk layouts.
    #[arg(long, default_value = imager::formats::grub::DEFAULT_DIR, env = "IMAGER_GRUB_DIR")]
    pub grub_dir: PathBuf,

    /// Directory of the default SecureBoot keys (uki-signing-key.pem, uki-signing-cert.pem, pcr-signing-key.pem).
    #[arg(long, default_value = "/secureboot", env = "IMAGER_SECUREBOOT_DIR")]
    pub secureboot_dir: PathBuf,
}

impl BuildArgs {
    /// Where default inputs are looked up.
    pub fn roots(&self) -> Roots {
        Roots {
            install_dir: self.install_dir.clone(),
            secureboot_dir: self.secureboot_dir.clone(),
        }
    }

    pub fn overrides(&self) -> anyhow::Result<Overrides> {
        let meta = self
            .meta
            .iter()
            .map(|m| MetaValue::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        let output_kind = self
            .output_kind
            .as_deref()
            .map(str::parse::<OutputKind>)
            .transpose()?;
        let out_format = self
            .out_format
            .as_deref()
            .map(str::parse::<imager::profile::OutFormat>)
            .transpose()?;
        let enroll_keys = self
            .secureboot_enroll_keys
            .as_deref()
            .map(str::parse::<EnrollKeys>)
            .transpose()?;
        let embedded_config = match &self.embedded_config_path {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("--embedded-config-path {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Overrides {
            arch: self.arch.clone(),
            platform: self.platform.clone(),
            extra_kernel_args: self.extra_kernel_args.clone(),
            meta,
            output_kind,
            out_format,
            base_installer_image: self.base_installer_image.clone(),
            insecure: self.insecure,
            system_extension_images: self.system_extension_images.clone(),
            include_well_known_certs: self.secureboot_include_well_known_certs,
            enroll_keys,
            embedded_config,
            secureboot_signer_address: self.secureboot_signer_address.clone(),
            pcr_signer_address: self.pcr_signer_address.clone(),
        })
    }
}

pub fn run(args: BuildArgs, output_given: bool) -> anyhow::Result<()> {
    let source = Source::parse(args.profile.as_deref().unwrap_or_default());
    let profile = resolve::resolve(&source, &args.overrides()?, &args.roots())?;
    // With --tar-to-stdout and no explicit --output, build into a private directory.
    let (output_dir, scratch) = if args.tar_to_stdout && !output_given {
        let dir = std::env::temp_dir().join(format!("imager-out-{}", std::process::id()));
        (dir.clone(), Some(dir))
    } else {
        (args.output.clone(), None)
    };
    if args.dry_run {
        // The effective profile as Talos prints it, then whether this imager builds it.
        print!("{}", build::printed_profile(&profile, &output_dir));
        Plan::new(&profile, 0)?;
        return Ok(());
    }
    let plan = Plan::new(&profile, imager::plan::epoch_from_env())?;
    eprintln!("profile ready:");
    eprint!("{}", build::printed_profile(&profile, &output_dir));
    if let Some(dir) = &scratch {
        imager::io::cleanup::register_dir(dir);
    }
    build::check_writable(&output_dir)?;
    let result = build::build(
        &plan,
        &BuildOptions {
            output_dir: output_dir.clone(),
            grub_dir: args.grub_dir.clone(),
        },
        &Stderr,
    );
    let result = result.and_then(|built| match args.tar_to_stdout {
        // An installer image is already a tarball: it goes to stdout as it is, so
        // `imager secureboot-installer --tar-to-stdout | docker load` works.
        true if matches!(plan.kind, KindPlan::Installer(_)) => artifact_to_stdout(&built.artifact),
        true => tar_to_stdout(&output_dir, plan.epoch),
        false => Ok(()),
    });
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(&dir);
        imager::io::cleanup::unregister_dir(&dir);
    }
    result?;
    Ok(())
}

/// What failed when stdout could not take the output (a closed pipe, a full disk).
const STDOUT: &str = "writing to stdout";

/// Copies one file to stdout.
fn artifact_to_stdout(path: &Path) -> imager::Result<()> {
    use imager::error::IoContext;
    let mut file = std::fs::File::open(path).at(path)?;
    let mut stdout = std::io::stdout().lock();
    imager::io::copy_during(&mut file, path, &mut stdout, STDOUT)?;
    std::io::Write::flush(&mut stdout).during(STDOUT)?;
    Ok(())
}

/// Streams a gzip'd tar of `dir` (regular files, sorted, reproducible headers) to stdout.
fn tar_to_stdout(dir: &Path, mtime: u64) -> imager::Result<()> {
    use imager::error::IoContext;
    let stdout = std::io::stdout().lock();
    let gz = flate2::write::GzEncoder::new(stdout, flate2::Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let file = std::fs::File::open(&path).at(&path)?;
        let meta = file.metadata().at(&path)?;
        let mut header = imager::io::tar::file_header(meta.len(), 0o644, mtime);
        // Reads `path`, writes stdout: the error can be either side.
        tar.append_data(&mut header, &name, file)
            .op("archiving", &path)?;
    }
    let gz = tar.into_inner().during(STDOUT)?;
    let mut stdout = gz.finish().during(STDOUT)?;
    std::io::Write::flush(&mut stdout).during(STDOUT)?;
    Ok(())
}

pub fn list_profiles() -> anyhow::Result<()> {
    for (name, yaml) in builtin::BUILTINS {
        println!("{name:<24} {}", builtin::summary(yaml));
    }
    Ok(())
}
