//! The PXE kind: the kernel, the initramfs and the kernel command line as three
//! artifacts, plus an iPXE script and a Matchbox profile that boot them.

use std::path::PathBuf;

use super::{BuildOptions, build};
use crate::error::{IoContext, Result};
use crate::formats::pxe_recipes::{self, PxeAssets};
use crate::plan::Plan;
use crate::profile::{OutputKind, Profile};
use crate::report::Progress;

/// How the recipes refer to the assets.
#[derive(Debug, Clone, Default)]
pub struct PxeOptions {
    /// URL prefix of the assets in the iPXE script (empty: relative to the script).
    pub base_url: String,
    /// Matchbox profile id (default: the artifacts' stem, e.g. `metal-amd64`).
    pub matchbox_id: Option<String>,
}

/// What a PXE build wrote.
#[derive(Debug, Clone)]
pub struct PxeResult {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: PathBuf,
    pub ipxe: PathBuf,
    pub matchbox: PathBuf,
}

/// Builds the PXE assets of `profile` (its output kind is replaced): the kernel and
/// the initramfs are plain copies, so the extra kernel arguments and META values go
/// to the command line only.
pub fn build_pxe(
    profile: &Profile,
    epoch: u64,
    pxe: &PxeOptions,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<PxeResult> {
    let plan_for = |kind| {
        let mut p = profile.clone();
        p.output.kind = Some(kind);
        p.output.image_options = None;
        p.output.iso_options = None;
        if kind != OutputKind::Cmdline {
            p.customization.extra_kernel_args.clear();
            p.customization.meta_contents.clear();
        }
        Plan::new(&p, epoch)
    };
    let kernel = build(&plan_for(OutputKind::Kernel)?, options, progress)?;
    let initramfs = build(&plan_for(OutputKind::Initramfs)?, options, progress)?;
    let cmdline_plan = plan_for(OutputKind::Cmdline)?;
    let cmdline = build(&cmdline_plan, options, progress)?;

    let name = |p: &PathBuf| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let assets = PxeAssets {
        kernel: name(&kernel.artifact),
        initramfs: name(&initramfs.artifact),
        cmdline: cmdline_plan.cmdline.clone(),
    };
    let stem = cmdline_plan.stem();
    let id = pxe.matchbox_id.clone().unwrap_or_else(|| stem.clone());
    let dir = &options.output_dir;
    let ipxe = dir.join(format!("{stem}.ipxe"));
    write_atomic(
        &ipxe,
        pxe_recipes::ipxe_script(&assets, &pxe.base_url).as_bytes(),
    )?;
    progress.step(&format!("iPXE script: {}", ipxe.display()));
    let matchbox = dir.join(format!("matchbox-{stem}.json"));
    let mut json = serde_json::to_string_pretty(&pxe_recipes::matchbox_profile(&id, &assets))
        .expect("a JSON value serializes");
    json.push('\n');
    write_atomic(&matchbox, json.as_bytes())?;
    progress.step(&format!("Matchbox profile: {}", matchbox.display()));
    Ok(PxeResult {
        kernel: kernel.artifact,
        initramfs: initramfs.artifact,
        cmdline: cmdline.artifact,
        ipxe,
        matchbox,
    })
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut f = crate::io::AtomicFile::create(path)?;
    std::io::Write::write_all(f.file(), bytes).writing(path)?;
    f.commit()?;
    Ok(())
}
