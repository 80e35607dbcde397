//! `imager pxe PROFILE [flags]`: the PXE assets (kernel, initramfs, command line)
//! plus an iPXE script and a Matchbox profile that boot them.

use clap::Args;

use super::build::BuildArgs;
use imager::pipeline::pxe::{PxeOptions, build_pxe};
use imager::pipeline::{self as build, BuildOptions};
use imager::profile::OutputKind;
use imager::profile::resolve;
use imager::report::Stderr;

#[derive(Debug, Args)]
pub struct PxeArgs {
    #[command(flatten)]
    pub build: BuildArgs,

    /// Machine configuration URL, added as `talos.config=URL` (Talos substitutes ${mac}, ${uuid}, ...).
    #[arg(long)]
    pub config_url: Option<String>,

    /// URL of the directory holding the assets, for the iPXE script (default: relative to the script).
    #[arg(long, default_value = "")]
    pub base_url: String,

    /// Matchbox profile id (default: the profile name).
    #[arg(long)]
    pub matchbox_id: Option<String>,
}

pub fn run(mut args: PxeArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.config_url {
        args.build
            .extra_kernel_args
            .push(format!("talos.config={url}"));
    }
    let source = super::build::profile_source(args.build.profile.as_deref().unwrap_or("metal"))?;
    let mut overrides = args.build.overrides()?;
    overrides.output_kind = Some(OutputKind::Cmdline);
    let profile = resolve::resolve(&source, &overrides, &args.build.roots())?;
    if profile.secureboot() {
        return Err(imager::Error::unsupported(format!(
            "imager pxe: SecureBoot network boot uses the signed UKI, not a kernel and initramfs: build it with `imager secureboot-metal-uki` and chain it from iPXE (`chain <URL>/metal-{}-secureboot-uki.efi`)",
            profile.arch
        ))
        .into());
    }
    let cmdline = imager::kernel_cmdline::build(&profile, OutputKind::Cmdline).to_string();
    super::preflight::check_pxe(&profile, &cmdline, &args.build)?;
    let out_dir = args.build.output.clone();
    super::preflight::output_dir(&out_dir)?;
    let created = !out_dir.exists();
    let result = write(&args, &profile, out_dir.clone());
    if result.is_err() && created {
        let _ = std::fs::remove_dir(&out_dir);
    }
    result
}

fn write(
    args: &PxeArgs,
    profile: &imager::profile::Profile,
    out_dir: std::path::PathBuf,
) -> anyhow::Result<()> {
    build::check_writable(&out_dir)?;
    eprintln!("profile ready:");
    eprint!("{}", build::printed_profile(profile, &out_dir));
    let options = PxeOptions {
        base_url: args.base_url.clone(),
        matchbox_id: args.matchbox_id.clone(),
    };
    build_pxe(
        profile,
        imager::plan::epoch_from_env(),
        &options,
        &BuildOptions {
            output_dir: out_dir,
            grub_dir: args.build.grub_dir.clone(),
        },
        &Stderr,
    )?;
    Ok(())
}
