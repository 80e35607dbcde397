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

  # PXE assets: kernel, initramfs, command line, an iPXE script and a Matchbox profile
  imager pxe metal --base-url http://10.0.0.1/assets --output tftp

  # Read META back from a disk image (compressed or not) or an ISO
  imager meta dump _out/metal-amd64.raw.zst

  # Another Talos version or bootloader
  imager metal --arch arm64 --talos-version v1.10.0 --bootloader sd-boot --output _out

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

    /// Output directory (created when the build starts writing).
    #[arg(short, long, default_value = "/out", env = "IMAGER_OUTPUT")]
    pub output: PathBuf,

    /// Override the output kind: iso, image, installer, kernel, initramfs, uki, cmdline.
    #[arg(long)]
    pub output_kind: Option<String>,

    /// Override the output post-processing: raw, .xz, .gz, .zst, .tar.gz (the dot is optional).
    #[arg(long)]
    pub out_format: Option<String>,

    /// Print the effective profile as YAML on stdout, then check every input the build
    /// would read (exit != 0 listing what is missing); build nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the effective profile as YAML on stdout and stop: no input checks.
    #[arg(long, conflicts_with = "dry_run")]
    pub print_profile: bool,

    /// Write a gzip'd tar of the output directory to stdout (and nothing else).
    #[arg(long)]
    pub tar_to_stdout: bool,

    /// Base installer image: a registry reference, oci-archive:PATH, docker-archive:PATH or oci:DIR.
    #[arg(long)]
    pub base_installer_image: Option<String>,

    /// Allow plain-HTTP and self-signed registries.
    #[arg(long)]
    pub insecure: bool,

    /// Check the cosign signature of every image pulled from a registry (base installer,
    /// system extensions, overlays) before using it, as `imager serve` does: a public key
    /// (--container-signature-pubkey), else keyless for Sidero Labs' signers.
    #[arg(long)]
    pub verify_image_signatures: bool,

    #[command(flatten)]
    pub image_signature: super::verify::SignatureArgs,

    /// Image cache for `iso` and `image`: a registry reference, else an OCI layout directory
    /// (`talosctl images cache-create` output; `--insecure` applies).
    #[arg(long)]
    pub image_cache: Option<String>,

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

    /// Machine configuration file to embed in the image (Talos >= 1.12).
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

    /// Talos version to build for, e.g. v1.10.0 (default: the profile's, else v1.9.2).
    #[arg(long, value_name = "VERSION")]
    pub talos_version: Option<String>,

    /// Bootloader of a disk image or ISO: sd-boot, dual-boot or grub (default: Talos's for the version and arch).
    #[arg(long, value_name = "BOOTLOADER")]
    pub bootloader: Option<String>,

    #[command(flatten)]
    pub overlay: OverlayArgs,

    #[command(flatten)]
    pub talos: super::talos_flags::TalosFlags,
}

/// Parses a flag's value with the enum's own list, the error naming the flag.
fn parse_flag<T: std::str::FromStr>(flag: &str, value: &str, all: &[&str]) -> imager::Result<T> {
    value.parse::<T>().map_err(|_| {
        imager::Error::invalid(format!(
            "{flag} {value:?}: expected one of: {}",
            all.join(", ")
        ))
    })
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
        use imager::profile::{Bootloader, OutFormat};
        self.talos.refuse_unbuilt()?;
        let names = |all: &[&'static str]| all.to_vec();
        let output_kind = self
            .output_kind
            .as_deref()
            .map(|v| {
                let all: Vec<_> = OutputKind::ALL.iter().map(|k| k.as_str()).collect();
                parse_flag::<OutputKind>("--output-kind", v, &names(&all))
            })
            .transpose()?;
        let out_format = self
            .out_format
            .as_deref()
            .map(|v| {
                // `zst`, `xz`, `gz`, `tar.gz` as well as Talos's `.zst`, ...
                let dotted = match v {
                    "zst" | "xz" | "gz" | "tar.gz" => format!(".{v}"),
                    _ => v.to_string(),
                };
                let all: Vec<_> = OutFormat::ALL.iter().map(|k| k.as_str()).collect();
                parse_flag::<OutFormat>("--out-format", &dotted, &names(&all))
            })
            .transpose()?;
        let enroll_keys = self
            .secureboot_enroll_keys
            .as_deref()
            .map(|v| {
                let all: Vec<_> = EnrollKeys::ALL.iter().map(|k| k.as_str()).collect();
                parse_flag::<EnrollKeys>("--secureboot-enroll-keys", v, &names(&all))
            })
            .transpose()?;
        let bootloader = self
            .bootloader
            .as_deref()
            .map(|v| {
                let all: Vec<_> = Bootloader::ALL.iter().map(|k| k.as_str()).collect();
                parse_flag::<Bootloader>("--bootloader", v, &names(&all))
            })
            .transpose()?;
        if let Some(platform) = self.platform.as_deref()
            && !imager::profile::platforms::known_platform(platform)
        {
            return Err(unknown_platform(platform).into());
        }
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
            image_cache: self.image_cache.clone(),
            system_extension_images: self.system_extension_images.clone(),
            include_well_known_certs: self.secureboot_include_well_known_certs,
            enroll_keys,
            embedded_config,
            version: self.talos_version.clone(),
            bootloader,
            secureboot_signer_address: self.secureboot_signer_address.clone(),
            pcr_signer_address: self.pcr_signer_address.clone(),
            overlay_image: self.overlay.overlay_image.clone(),
            overlay_name: self.overlay.overlay_name.clone(),
            overlay_options: self.overlay.options()?,
        })
    }
}

pub fn run(args: BuildArgs, output_given: bool) -> anyhow::Result<()> {
    let arg = args.profile.as_deref().unwrap_or_default();
    // With an overlay image, a name may be one of its profiles: checked when it is read.
    let source = if args.overlay.overlay_image.is_some() {
        Source::parse(arg)
    } else {
        profile_source(arg)?
    };
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
    if args.verify_image_signatures {
        imager::cosign::verify_pulls(args.image_signature.options(false).load()?);
    }
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
    if args.print_profile {
        super::print_out(&build::printed_profile(&profile, &output_dir))?;
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
    if args.dry_run {
        // The effective profile as Talos prints it, then whether this imager builds it:
        // every input there, keys and boot files readable.
        super::print_out(&build::printed_profile(&profile, &output_dir))?;
        let plan = Plan::with_overlay(&profile, 0, options)?;
        super::preflight::check(&plan, &args)?;
        super::preflight::output_dir(&output_dir)?;
        super::preflight::contents(&plan)?;
        eprintln!("dry run: the inputs are there; nothing was built");
        return Ok(());
    }
    let plan = Plan::with_overlay(&profile, imager::plan::epoch_from_env(), options)?;
    super::preflight::check(&plan, &args)?;
    super::preflight::output_dir(&output_dir)?;
    super::preflight::registries(&plan)?;
    if args.tar_to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(imager::Error::invalid(
            "--tar-to-stdout: stdout is a terminal; pipe it (`| tar xz`) or redirect it to a file",
        )
        .into());
    }
    eprintln!("profile ready:");
    eprint!("{}", build::printed_profile(&profile, &output_dir));
    if let Some(dir) = &scratch {
        imager::io::cleanup::register_dir(dir);
    }
    // A directory this run creates is removed again if the run fails (when empty).
    let created = !output_dir.exists();
    let result = build::check_writable(&output_dir).and_then(|()| {
        build::build(
            &plan,
            &BuildOptions {
                output_dir: output_dir.clone(),
                grub_dir: args.grub_dir.clone(),
            },
            &Shown {
                scratch: scratch.as_deref(),
            },
        )
    });
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
    if result.is_err() && created {
        let _ = std::fs::remove_dir(&output_dir);
    }
    Ok(result?)
}

/// The profile argument: `-`, a file (which must exist) or a built-in name (with the
/// nearest name suggested when it is not one).
pub fn profile_source(arg: &str) -> anyhow::Result<Source> {
    match Source::parse(arg) {
        Source::File(path) if !path.exists() => Err(imager::Error::invalid(format!(
            "profile file {}: not found (built-in profiles: `imager profiles`)",
            path.display()
        ))
        .into()),
        Source::Builtin(name) if builtin::yaml(&name).is_none() => {
            let names = builtin::BUILTINS.iter().map(|(n, _)| *n);
            let hint = match nearest(&name, names) {
                Some(n) => format!("did you mean {n:?}? "),
                None => String::new(),
            };
            Err(imager::Error::invalid(format!(
                "unknown profile {name:?}: not a built-in profile and not a file ({hint}see `imager profiles`)"
            ))
            .into())
        }
        source => Ok(source),
    }
}

/// An unknown `--platform`, with the nearest known one and the list.
fn unknown_platform(platform: &str) -> imager::Error {
    let mut all: Vec<&str> = imager::profile::platforms::PLATFORM_ARGS
        .iter()
        .map(|(p, _, _)| *p)
        .collect();
    all.dedup();
    let hint = match nearest(platform, all.iter().copied()) {
        Some(n) => format!("did you mean {n:?}? "),
        None => String::new(),
    };
    imager::Error::invalid(format!(
        "--platform {platform:?}: unknown platform ({hint}known: {})",
        all.join(", ")
    ))
}

/// The candidate closest to `word` by edit distance, if it is close (at most a third
/// of the word's length, at least 1).
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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
    let mut text = String::new();
    for (name, yaml) in builtin::BUILTINS {
        text.push_str(&format!("{name:<24} {}\n", summary(yaml)));
        if *name == "metal" {
            // Talos's docs build disk images with `imager image --platform ...`.
            text.push_str(&format!(
                "{:<24} {}\n",
                "image", "the same as metal; pick the platform with --platform"
            ));
        }
    }
    super::print_out(&text)
}

/// `imager PROFILE --help` (or `-h`) for a built-in profile: its summary, the file it
/// writes, the inputs it reads (as the other flags place them) and its effective
/// profile, then a pointer to the flags. `None` when `args` ask for something else.
pub fn profile_help(args: Vec<std::ffi::OsString>) -> Option<anyhow::Result<()>> {
    let is_help = |a: &std::ffi::OsString| a == "--help" || a == "-h";
    let name = args.get(1)?.to_str()?.to_string();
    let yaml = builtin::yaml(if name == "image" { "metal" } else { &name })?;
    if !args.iter().skip(2).any(is_help) {
        return None;
    }
    let rest: Vec<_> = args.into_iter().filter(|a| !is_help(a)).collect();
    Some(profile_help_text(&name, yaml, rest))
}

fn profile_help_text(name: &str, yaml: &str, args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    use clap::Parser;
    let cli = super::Cli::try_parse_from(args).map_err(|e| {
        imager::Error::invalid(e.to_string().lines().next().unwrap_or("").to_string())
    })?;
    let args = cli.build;
    let source = Source::parse(name);
    let (profile, _) = resolve::resolve_with_overlay(
        &source,
        &args.overrides()?,
        &args.roots(),
        None,
        &imager::report::Silent,
    )?;
    let plan = Plan::new(&profile, 0)?;
    let mut text = format!("imager {name}: {}\n\n", summary(yaml));
    text.push_str(&format!(
        "Writes: {} into --output (now {})\n",
        plan.file_name,
        args.output.display()
    ));
    let mut wanted = imager::inputs::wanted(&plan);
    if let KindPlan::Disk(disk) = &plan.kind
        && disk.bootloader != imager::profile::Bootloader::SdBoot
    {
        wanted.push((
            "GRUB files (--grub-dir)",
            args.grub_dir.display().to_string(),
        ));
    }
    if !wanted.is_empty() {
        text.push_str("Reads (move them with --install-dir and --secureboot-dir):\n");
        for (role, path) in wanted {
            text.push_str(&format!("  {role:<31} {path}\n"));
        }
    }
    text.push_str(&format!(
        "\nEffective profile (`imager {name} --print-profile`; flags change it):\n"
    ));
    text.push_str(&build::printed_profile(&profile, &args.output));
    text.push_str("\nEvery flag: `imager --help`. All profiles: `imager profiles`.\n");
    super::print_out(&text)
}

/// The leading comment block of a built-in profile, joined into one line.
fn summary(yaml: &str) -> String {
    yaml.lines()
        .map_while(|l| l.strip_prefix('#'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The build's progress on stderr, without the private directory of
/// `--tar-to-stdout` (`scratch`): it is gone when the run ends, so the artifact is
/// named as it is in the tar, and other paths inside it are shown as `<scratch>`.
struct Shown<'a> {
    scratch: Option<&'a Path>,
}

impl imager::report::Progress for Shown<'_> {
    fn step(&self, line: &str) {
        let Some(dir) = self.scratch.map(|d| d.to_string_lossy()) else {
            return Stderr.step(line);
        };
        if let Some(path) = line.strip_prefix("output asset path: ")
            && let Some(name) = Path::new(path).file_name()
        {
            return Stderr.step(&format!(
                "output asset path: {} (in the tar on stdout)",
                name.to_string_lossy()
            ));
        }
        Stderr.step(&line.replace(dir.as_ref(), "<scratch>"));
    }
}
