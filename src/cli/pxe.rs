//! `imager pxe PROFILE [flags]`: the PXE assets (kernel, initramfs, command line)
//! plus an iPXE script and a Matchbox profile that boot them.

use anyhow::Context;
use clap::Args;

use super::build::BuildArgs;
use imager::error::IoContext;
use imager::formats::pxe_recipes::{self as pxe, PxeAssets};
use imager::pipeline::{self as build, BuildOptions};
use imager::profile::OutputKind;
use imager::profile::resolve::{self, Source};
use imager::report::Stderr;

#[derive(Debug, Args)]
pub struct PxeArgs {
    #[command(flatten)]
    pub build: BuildArgs,

    /// Machine configuration URL, added as `talos.config=URL` (Talos substitutes ${mac}, ${uuid}, ...).
    #[arg(long)]
    pub config_url: Option<String>,

    /// URL prefix of the assets in the iPXE script (default: relative to the script).
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
    let source = Source::parse(args.build.profile.as_deref().unwrap_or("metal"));
    let roots = args.build.roots();
    let overrides = args.build.overrides()?;
    let out_dir = args.build.output.clone();
    build::check_writable(&out_dir)?;
    let mut names = Vec::new();
    let mut cmdline = String::new();
    for kind in [
        OutputKind::Kernel,
        OutputKind::Initramfs,
        OutputKind::Cmdline,
    ] {
        let mut o = overrides.clone();
        o.output_kind = Some(kind);
        if kind != OutputKind::Cmdline {
            // The kernel and initramfs are plain copies: arguments and META live in the command line.
            o.extra_kernel_args.clear();
            o.meta.clear();
        }
        let profile = resolve::resolve(&source, &o, &roots)?;
        if kind == OutputKind::Cmdline {
            cmdline = imager::kernel_cmdline::build(&profile).to_string();
            eprintln!("profile ready:");
            eprint!("{}", profile.to_yaml());
        }
        let result = build::build(
            &profile,
            &BuildOptions {
                output_dir: out_dir.clone(),
            },
            &Stderr,
        )?;
        names.push(
            result
                .artifact
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    let assets = PxeAssets {
        kernel: names[0].clone(),
        initramfs: names[1].clone(),
        cmdline,
    };
    let stem = names[2].trim_start_matches("cmdline-").to_string();
    let id = args.matchbox_id.clone().unwrap_or_else(|| stem.clone());
    let ipxe = out_dir.join(format!("{stem}.ipxe"));
    write_atomic(&ipxe, pxe::ipxe_script(&assets, &args.base_url).as_bytes())?;
    eprintln!("iPXE script: {}", ipxe.display());
    let matchbox = out_dir.join(format!("matchbox-{stem}.json"));
    let mut json = serde_json::to_string_pretty(&pxe::matchbox_profile(&id, &assets))
        .context("matchbox profile")?;
    json.push('\n');
    write_atomic(&matchbox, json.as_bytes())?;
    eprintln!("Matchbox profile: {}", matchbox.display());
    Ok(())
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> imager::Result<()> {
    let mut f = imager::io::AtomicFile::create(path)?;
    std::io::Write::write_all(f.file(), bytes).at(path)?;
    f.commit()?;
    Ok(())
}
