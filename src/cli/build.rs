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

    /// systemd-boot secure-boot-enroll policy: if-safe, manual, force, off.
    #[arg(long)]
    pub secureboot_enroll_keys: Option<String>,

    /// Machine configuration to embed (not supported yet, rejected with a clear error).
    #[arg(long)]
    pub embedded_config_path: Option<PathBuf>,

    /// Root of the default boot inputs (<dir>/<arch>/vmlinuz, initramfs.xz, systemd-stub.efi, systemd-boot.efi).
    #[arg(long, default_value = "/usr/install", env = "IMAGER_INSTALL_DIR")]
    pub install_dir: PathBuf,

    /// GRUB's platform directories (i386-pc, x86_64-efi; arm64-efi for arm64) for the grub and dual-boot disk layouts.
    #[arg(long, default_value = imager::formats::grub::DEFAULT_DIR, env = "IMAGER_GRUB_DIR")]
    pub grub_dir: PathBuf,

    /// Directory of the default SecureBoot keys (uki-signing-key.pem, uki-signing-cert.pem, pcr-signing-key.pem).
    #[arg(long, default_value = "/secureboot", env = "IMAGER_SECUREBOOT_DIR")]
    pub secureboot_dir: PathBuf,

    #[command(flatten)]
    pub overlay: OverlayArgs,
}

/// Board overlay flags (Talos `cmd/installer/cmd/imager/root.go`).
#[derive(Debug, Args)]
pub struct OverlayArgs {
    /// Board overlay image (a registry reference, oci:DIR, ...); its profiles/<name>.yaml are base profiles.
    #[arg(long)]
    pub overlay_image: Option<String>,

    /// Overlay name: the installer installers/<name> of the overlay image (default: default).
    #[arg(long)]
    pub overlay_name: Option<String>,

    /// Overlay option (repeatable): key=value (a string), key=@file (a string from a file), @file.yaml (a YAML map).
    #[arg(long = "overlay-option", value_name = "OPTION")]
    pub overlay_options: Vec<String>,
}

impl OverlayArgs {
    /// `--overlay-option`s as one map, in the order given (Talos `overlayOpts.Set`).
    pub fn options(&self) -> anyhow::Result<serde_yaml::Mapping> {
        use serde_yaml::Value;
        let mut map = serde_yaml::Mapping::new();
        for opt in &self.overlay_options {
            if let Some(file) = opt.strip_prefix('@') {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("--overlay-option {opt}"))?;
                let more: serde_yaml::Mapping = serde_yaml::from_str(&text)
                    .with_context(|| format!("--overlay-option {opt}: not a YAML map"))?;
                for (k, v) in more {
                    map.insert(k, v);
                }
                continue;
            }
            let Some((key, value)) = opt.split_once('=') else {
                anyhow::bail!("--overlay-option {opt:?}: use key=value, key=@file or @file.yaml");
            };
            let value = match value.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("--overlay-option {key}=@{file}"))?,
                None => value.to_string(),
            };
            map.insert(Value::String(key.to_string()), Value::String(value));
        }
        Ok(map)
    }
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
            overlay_image: self.overlay.overlay_image.clone(),
            overlay_name: self.overlay.overlay_name.clone(),
            overlay_options: self.overlay.options()?,
        })
    }
}

pub fn run(args: BuildArgs, output_given: bool) -> anyhow::Result<()> {
    let source = Source::parse(args.profile.as_deref().unwrap_or_default());
    // The overlay image is extracted here for the whole build.
    let overlay_dir = imager::overlay::TempDir::new("imager-overlay-image")?;
    imager::io::cleanup::register_dir(overlay_dir.path());
    let result = run_in(args, output_given, &source, overlay_dir.path());
    imager::io::cleanup::unregister_dir(overlay_dir.path());
    result
}

fn run_in(
    args: BuildArgs,
    output_given: bool,
    source: &Source,
    overlay_dir: &Path,
) -> anyhow::Result<()> {
    let (profile, overlay) = resolve::resolve_with_overlay(
        source,
        &args.overrides()?,
        &args.roots(),
        Some(overlay_dir),
        &Stderr,
    )?;
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
    // Talos runs get-options whatever the kind (its kernel arguments are on every
    // command line).
    let options = match (overlay, &profile.overlay) {
        (Some(o), Some(p)) => Some(imager::overlay::Applied {
            options: o.get_options(&p.options, &Stderr)?,
            extracted: o,
            extra_options: p.options.clone(),
        }),
        _ => None,
    };
    let plan = Plan::with_overlay(&profile, imager::plan::epoch_from_env(), options)?;
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
