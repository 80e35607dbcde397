//! The build pipeline, in the order it runs:
//!
//! 1. a scratch directory beside the outputs,
//! 2. the inputs (the initramfs rebuild for system extensions goes here),
//! 3. the kernel command line,
//! 4. the kind's artifact: the one `match` on the kind, each arm a short call into
//!    [`boot`] (keys, signed systemd-boot, the UKI), [`esp_layout`] and a format writer,
//! 5. outFormat and the manifest ([`post`]).
//!
//! [`build`] takes a [`Plan`]; stages return what they learned (SecureBoot facts,
//! PCR 11) instead of filling an out-parameter. [`pxe`] builds the PXE kind on top.

pub mod boot;
pub mod esp_layout;
pub mod post;
pub mod pxe;

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::error::{Error, IoContext, Result};
use crate::formats::fat_esp::{EspEntry, EspSource};
use crate::formats::{ext4, gpt_disk, grub, iso9660, oci_image, ova, qcow2, vhd, xfs};
use crate::plan::{
    BootPlan, CacheSizeRule, DiskFormatPlan, DiskPlan, InstallerContents, InstallerPlan, IsoPlan,
    KindPlan, Plan,
};
use crate::profile::{Bootloader, Profile};
use crate::report::{Pcr11Bank, Progress, SecureBootFacts};
use boot::{Boot, Placement};
use esp_layout::EspFlavor;

/// Where to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub output_dir: PathBuf,
    /// GRUB's platform directories (`i386-pc/`, `x86_64-efi/`; `arm64-efi/` for
    /// arm64) for the GRUB disk layouts; Talos's imager has them in
    /// [`grub::DEFAULT_DIR`].
    pub grub_dir: PathBuf,
}

impl BuildOptions {
    /// Builds into `output_dir` with GRUB from its default directory.
    pub fn new(output_dir: impl Into<PathBuf>) -> Self {
        BuildOptions {
            output_dir: output_dir.into(),
            grub_dir: grub::DEFAULT_DIR.into(),
        }
    }
}

/// Runs the board overlay's `install` against the sized, still empty disk image `raw`
/// (its raw writes, such as a board loader, stay: the table and partitions are written
/// around them) with a staging tree whose `boot/EFI` files become ESP entries (Talos
/// 1.13: the overlay's files belong in the ESP, not in BOOT).
fn overlay_install(
    overlay: &crate::overlay::Applied,
    layout: &gpt_disk::Layout,
    file: &File,
    raw: &Path,
    work: &WorkDir,
    progress: &dyn Progress,
) -> Result<Vec<EspEntry>> {
    file.set_len(layout.size).at(raw)?;
    let prefix = work.file("overlay-image");
    overlay.install(raw, &prefix, progress)?;
    let efi = prefix.join("boot/EFI");
    let mut found = Vec::new();
    crate::io::walk(&efi, &efi, &mut found)?;
    let mut entries = Vec::new();
    for rel in found {
        let path = efi.join(&rel);
        let meta = std::fs::symlink_metadata(&path).at(&path)?;
        if !meta.is_file() {
            continue;
        }
        entries.push(EspEntry {
            path: rel.to_string_lossy().into_owned(),
            source: EspSource::File(path),
            read_only: false,
        });
    }
    Ok(entries)
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The final artifact.
    pub artifact: PathBuf,
    /// The manifest written beside it.
    pub manifest: PathBuf,
    /// The artifact's size and SHA-256 (hex), as the manifest records them.
    pub size: u64,
    pub sha256: String,
}

/// What building the artifact established, for the manifest.
#[derive(Debug, Default)]
pub struct Facts {
    pub secureboot: Option<SecureBootFacts>,
    pub pcr11: Vec<Pcr11Bank>,
    /// The system extensions in the initramfs.
    pub extensions: Vec<crate::extensions::ExtensionRecord>,
    /// Size and SHA-256 (hex) of the artifact, when its writer hashed it on the way;
    /// else the artifact is hashed once written (holes are not read).
    pub digest: Option<(u64, String)>,
}

/// A scratch directory inside the output directory (same file system, so results
/// can be renamed into place); removed when dropped and on interrupt.
pub struct WorkDir {
    path: PathBuf,
}

/// The scratch directory of a build into `output_dir` by this process.
fn work_dir_path(output_dir: &Path) -> PathBuf {
    output_dir.join(format!(".imager-work-{}", std::process::id()))
}

/// The profile as it is printed before a build into `output_dir` ("profile ready:"),
/// without secrets (a PKCS#11 `pin-value`).
/// Talos appends the embedded configuration's virtual extension (a `tarballPath` in its
/// scratch directory) to `input.systemExtensions` before it dumps the profile
/// (`pkg/imager/imager.go`: `handleEmbeddedConfig`, then `Dump`), whatever the output
/// kind; the entry printed here names the tarball this build writes.
pub fn printed_profile(profile: &Profile, output_dir: &Path) -> String {
    // No PKCS#11 PIN in logs.
    let mut shown = profile.clone();
    shown.input.secureboot = shown.input.secureboot.as_ref().map(|sb| sb.redacted());
    if profile
        .customization
        .embedded_machine_configuration
        .is_empty()
    {
        return shown.to_yaml();
    }
    let tarball = work_dir_path(output_dir).join(crate::extensions::embedded::TARBALL);
    shown
        .input
        .system_extensions
        .push(crate::profile::ContainerAsset {
            tarball_path: tarball.to_string_lossy().into_owned(),
            ..Default::default()
        });
    shown.to_yaml()
}

impl WorkDir {
    fn new(output_dir: &Path) -> Result<Self> {
        let path = work_dir_path(output_dir);
        std::fs::create_dir_all(&path).op("creating", &path)?;
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

/// What every stage of one build works with.
struct Stage<'a> {
    plan: &'a Plan,
    work: &'a WorkDir,
    progress: &'a dyn Progress,
    /// The initramfs rebuilt with system extensions, used instead of the profile's.
    initramfs: Option<&'a Path>,
    /// GRUB's files, for the GRUB disk layouts.
    grub: Option<&'a grub::GrubDir>,
    /// The image cache, unpacked (ISO and disk image kinds).
    cache: Option<&'a crate::imagecache::ImageCache>,
}

/// Runs the pipeline for a plan.
pub fn build(plan: &Plan, options: &BuildOptions, progress: &dyn Progress) -> Result<BuildResult> {
    // 0. The GRUB directory of a GRUB layout, before any work.
    let grub = match &plan.kind {
        KindPlan::Disk(disk) if disk.bootloader != Bootloader::SdBoot => Some(
            grub::GrubDir::open_for(&options.grub_dir, plan.arch == crate::plan::Arch::Arm64)?,
        ),
        _ => None,
    };

    // 1. Scratch space beside the outputs.
    let out_dir = &options.output_dir;
    std::fs::create_dir_all(out_dir).op("creating", out_dir)?;
    let work = WorkDir::new(out_dir)?;

    // 2. Inputs: the initramfs rebuilt with the system extensions, if any.
    let rebuilt = match plan.kind {
        KindPlan::Kernel | KindPlan::Cmdline => None,
        _ => crate::extensions::rebuild(&plan.profile, &work.path, plan.epoch, progress)?,
    };
    let initramfs = rebuilt.as_ref().map(|r| r.initramfs.as_path());
    // The image cache goes into ISOs and disk images only (Talos ignores it elsewhere).
    let cache = match plan.kind {
        KindPlan::Iso(_) | KindPlan::Disk(_) => {
            crate::imagecache::prepare(&plan.profile, &work.path, progress)?
        }
        _ => None,
    };

    // 3. The kernel command line.
    if !matches!(plan.kind, KindPlan::Kernel | KindPlan::Initramfs) {
        progress.step(&format!("kernel command line: {}", plan.cmdline));
    }

    // 4. The artifact.
    let produced = work.file(&plan.artifact);
    let input = &plan.profile.input;
    let stage = Stage {
        plan,
        work: &work,
        progress,
        initramfs,
        grub: grub.as_ref(),
        cache: cache.as_ref(),
    };
    let mut facts = match &plan.kind {
        KindPlan::Cmdline => {
            std::fs::write(&produced, plan.cmdline.as_bytes()).writing(&produced)?;
            Facts {
                digest: Some((
                    plan.cmdline.len() as u64,
                    hex::encode(sha2::Sha256::digest(plan.cmdline.as_bytes())),
                )),
                ..Facts::default()
            }
        }
        KindPlan::Kernel => copy_input("kernel", &input.kernel.path, &produced)?,
        KindPlan::Initramfs => match initramfs {
            Some(rebuilt) => copy_input("initramfs", &rebuilt.to_string_lossy(), &produced)?,
            None => copy_input("initramfs", &input.initramfs.path, &produced)?,
        },
        KindPlan::Uki(boot) => stage.uki(boot, &produced)?,
        KindPlan::Iso(iso) => stage.iso(iso, &produced)?,
        KindPlan::Disk(disk) => stage.disk(disk, &produced)?,
        KindPlan::Installer(installer) => stage.installer(installer, &produced)?,
    };

    if let Some(r) = rebuilt {
        facts.extensions = r.extensions;
    }

    // 5. outFormat, hash, manifest.
    let artifact = out_dir.join(&plan.file_name);
    let digest = post::finish(
        plan.out_format,
        &produced,
        &artifact,
        plan.epoch,
        facts.digest.take(),
    )?;
    progress.step(&format!("output asset path: {}", artifact.display()));
    let (size, sha256) = digest.clone();
    let manifest = post::manifest(plan, &artifact, digest, facts)?;
    Ok(BuildResult {
        artifact,
        manifest,
        size,
        sha256,
    })
}

/// Copies an input file as the artifact (the kernel and initramfs kinds), hashed on
/// the way.
fn copy_input(role: &str, source: &str, dest: &Path) -> Result<Facts> {
    let source = crate::inputs::require_file(role, source)?;
    let mut from = File::open(&source).at(&source)?;
    let mut to = crate::io::HashingWriter::new(File::create(dest).op("creating", dest)?);
    crate::io::copy(&mut from, &source, &mut to, dest)?;
    let (_, sum, size) = to.finish();
    Ok(Facts {
        digest: Some((size, hex::encode(sum))),
        ..Facts::default()
    })
}

impl Stage<'_> {
    /// The bare UKI, built in the scratch directory and renamed.
    fn uki(&self, boot: &BootPlan, dest: &Path) -> Result<Facts> {
        let boot = Boot::prepare(
            self.plan,
            boot,
            self.work,
            Placement::Scratch,
            self.initramfs,
        )?;
        self.progress.step("UKI ready");
        std::fs::rename(boot.uki_file(), dest).op("renaming into", dest)?;
        Ok(boot.facts)
    }

    /// The ISO: ESP and ISO 9660 tree, the UKI built straight into its ESP clusters.
    fn iso(&self, iso: &IsoPlan, dest: &Path) -> Result<Facts> {
        let (plan, work, progress) = (self.plan, self.work, self.progress);
        let mut boot = Boot::prepare(plan, &iso.boot, work, Placement::InOutput, self.initramfs)?;
        let bios = iso.bios.then(|| iso9660::BiosBoot {
            kernel: boot.inputs.kernel.clone(),
            initramfs: boot.inputs.initramfs.clone(),
            cmdline: plan.cmdline.clone(),
        });
        let spec = iso9660::IsoSpec {
            esp_entries: esp_layout::entries(plan, &boot, EspFlavor::Iso(iso.enroll))?,
            scratch: work.file("vmlinuz.efi"),
            label: plan.label.clone(),
            epoch: plan.epoch,
            bios,
            image_cache: self.cache.map(|c| c.root.clone()),
        };
        let file = crate::io::create_rw(dest)?;
        iso9660::write(&spec, &file, &mut |out| boot.write_uki(out, progress))
            .map_err(|e| e.at_output(dest))?;
        progress.step("ISO ready");
        Ok(boot.take_facts())
    }

    /// The disk image: GPT with the ESP (UKI built in place), for the GRUB layouts
    /// GRUB's BIOS boot code (amd64) and the BOOT file system, and META; then its disk
    /// format.
    fn disk(&self, disk: &DiskPlan, dest: &Path) -> Result<Facts> {
        let (plan, work, progress) = (self.plan, self.work, self.progress);
        let layout = &self.disk_layout(disk)?;
        // systemd-boot and the UKI on the ESP (sd-boot, dual-boot); GRUB EFI (grub:
        // BOOTX64.efi, or BOOTAA64.efi on arm64).
        let (mut boot, esp_entries) = match disk.bootloader {
            Bootloader::Grub => {
                let grub = self
                    .grub
                    .expect("the GRUB directory is opened for GRUB layouts");
                let efi = EspEntry {
                    path: grub.efi_target().esp_path().into(),
                    source: EspSource::Bytes(grub::efi_image(grub)?),
                    read_only: false,
                };
                (None, vec![efi])
            }
            Bootloader::SdBoot | Bootloader::DualBoot => {
                let boot =
                    Boot::prepare(plan, &disk.boot, work, Placement::InOutput, self.initramfs)?;
                let entries = esp_layout::entries(plan, &boot, EspFlavor::Disk(disk.enroll))?;
                (Some(boot), entries)
            }
        };
        let bios = match self.grub {
            Some(grub) => Some(self.grub_bios(grub, layout, boot.as_ref())?),
            None => None,
        };
        let raw = match disk.format {
            DiskFormatPlan::Raw => dest.to_path_buf(),
            _ => work.file("disk.raw"),
        };
        let file = crate::io::create_rw(&raw)?;
        let mut esp_entries = esp_entries;
        if let Some(overlay) = &plan.overlay {
            esp_entries.extend(overlay_install(
                overlay, layout, &file, &raw, work, progress,
            )?);
        }
        let spec = gpt_disk::DiskSpec {
            layout: layout.clone(),
            esp_entries,
            esp_options: crate::formats::fat_esp::EspOptions {
                label: "EFI".into(),
                epoch: plan.epoch,
                sector_size: layout.sector_size,
            },
            meta: disk.meta.clone(),
            bios: bios.as_ref().and_then(|b| b.code.clone()),
        };
        let keep = plan.overlay.is_some();
        gpt_disk::write_raw_keeping(
            &spec,
            &file,
            &work.file("vmlinuz.efi"),
            &mut |out| {
                let boot = boot.as_mut().expect("only a UKI is built in place");
                boot.write_uki(out, progress)
            },
            keep,
        )
        .map_err(|e| e.at_output(&raw))?;
        if let Some(bios) = &bios {
            let (at, len) = layout.range("BOOT").expect("GRUB layouts have BOOT");
            xfs::write(&file, at, len, &bios.boot_options, &bios.boot_entries)
                .map_err(|e| e.at_output(&raw))?;
            progress.step("BOOT file system ready");
        }
        if let (Some(cache), Some((at, len))) = (self.cache, layout.range(gpt_disk::IMAGECACHE)) {
            let guid = gpt_disk::label_guid(gpt_disk::IMAGECACHE);
            let options = ext4::Ext4Options {
                label: gpt_disk::IMAGECACHE.into(),
                uuid: guid,
                hash_seed: guid,
                epoch: plan.epoch as i64,
                // Talos passes the disk's sector size as the block size when it is set.
                block_size: (layout.sector_size == 4096).then_some(4096),
            };
            ext4::write(&file, at, len, &options, &cache.root).map_err(|e| match e {
                Error::Invalid(m) if disk.image_cache == Some(CacheSizeRule::Remaining) => {
                    Error::invalid(format!(
                        "image cache: {m}; Talos {} puts it in the space left after META: raise output.imageOptions.diskSize",
                        plan.profile.version
                    ))
                }
                Error::Invalid(m) => Error::invalid(format!(
                    "image cache: {m}; Talos {} sizes the partition as its files plus 20%, which the small files' {}-byte blocks outgrew",
                    plan.profile.version,
                    options.block_size.unwrap_or_else(|| ext4::default_block_size(len))
                )),
                other => other.at_output(&raw),
            })?;
            progress.step("image cache partition ready");
        }
        drop(file);
        let mut digest = None;
        match disk.format {
            DiskFormatPlan::Raw => {}
            DiskFormatPlan::Qcow2 { cluster_size } => {
                let mut out = File::create(dest).op("creating", dest)?;
                qcow2::convert(&raw, &mut out, cluster_size).map_err(|e| e.at_output(dest))?;
            }
            DiskFormatPlan::Vhd => {
                let mut out = File::create(dest).op("creating", dest)?;
                let (size, sum) = vhd::convert(&raw, &mut out, dest, plan.epoch)?;
                digest = Some((size, hex::encode(sum)));
            }
            DiskFormatPlan::Ova { enable_uuid } => {
                let out = crate::io::create_rw(dest)?;
                let spec = ova::OvaSpec {
                    enable_uuid,
                    epoch: plan.epoch,
                    threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
                };
                ova::write(&raw, &work.file("disk.vmdk"), &spec, &out, dest)?;
            }
        }
        progress.step("disk image ready");
        let facts = boot.map(|mut b| b.take_facts()).unwrap_or_default();
        Ok(Facts { digest, ..facts })
    }

    /// The disk layout, with the IMAGECACHE partition sized by Talos's rule for the
    /// version when there is an image cache.
    fn disk_layout(&self, disk: &DiskPlan) -> Result<gpt_disk::Layout> {
        let mut layout = disk.layout.clone();
        let (Some(cache), Some(rule)) = (self.cache, disk.image_cache) else {
            return Ok(layout);
        };
        let (size, disk_size) = rule.apply(&layout, cache.files_size).ok_or_else(|| {
            Error::invalid(format!(
                "output.imageOptions.diskSize {} leaves no room for the image cache after META (Talos {} puts it in the remaining space): raise diskSize",
                layout.size, self.plan.profile.version
            ))
        })?;
        if disk_size != layout.size {
            self.progress.step(&format!(
                "updating image size to accommodate image cache: +{}",
                human_size(size)
            ));
        }
        layout.size = disk_size;
        layout.image_cache = Some(size);
        Ok(layout)
    }

    /// GRUB for BIOS on a GRUB layout: the core image and boot code patched for the
    /// BIOS partition (amd64; on arm64 the BIOS partition stays zeroed, as Talos
    /// leaves it), and the BOOT file system (label `BOOT`, Talos's UUID for the
    /// label) with the kernel and initramfs of entry `A` and `grub/grub.cfg`.
    fn grub_bios(
        &self,
        grub: &grub::GrubDir,
        layout: &gpt_disk::Layout,
        boot: Option<&Boot>,
    ) -> Result<GrubBios> {
        let plan = self.plan;
        let code = if grub.has_bios() {
            let first_lba = layout.bios_first_lba().expect("GRUB layouts have BIOS");
            let mut core = grub::bios_core_image(grub)?;
            let boot_code = grub::patch_for_disk(&grub::boot_image(grub)?, &mut core, first_lba)?;
            Some(gpt_disk::BiosBoot { core, boot_code })
        } else {
            None
        };
        // The kernel and initramfs the UKI carries (dual-boot), or the profile's (grub);
        // the initramfs rebuilt with system extensions in both cases.
        let (kernel, initramfs) = match boot {
            Some(boot) => (boot.inputs.kernel.clone(), boot.inputs.initramfs.clone()),
            None => {
                let input = &plan.profile.input;
                let kernel = crate::inputs::require_file("kernel", &input.kernel.path)?;
                let initramfs = match self.initramfs {
                    Some(rebuilt) => rebuilt.to_path_buf(),
                    None => crate::inputs::require_file("initramfs", &input.initramfs.path)?,
                };
                (kernel, initramfs)
            }
        };
        let config = grub::config(&plan.profile.version, &plan.cmdline);
        let boot_entries = vec![
            xfs::Entry::Dir {
                path: "A".into(),
                mode: 0o755,
            },
            xfs::Entry::File {
                path: "A/vmlinuz".into(),
                mode: 0o644,
                source: xfs::Source::File(kernel),
            },
            xfs::Entry::File {
                path: "A/initramfs.xz".into(),
                mode: 0o644,
                source: xfs::Source::File(initramfs),
            },
            xfs::Entry::Dir {
                path: "grub".into(),
                mode: 0o700,
            },
            xfs::Entry::File {
                path: "grub/grub.cfg".into(),
                mode: 0o600,
                source: xfs::Source::Bytes(config.into_bytes()),
            },
        ];
        Ok(GrubBios {
            code,
            boot_entries,
            boot_options: xfs::XfsOptions {
                label: "BOOT".into(),
                uuid: gpt_disk::label_guid("BOOT"),
                epoch: plan.epoch,
                sector_size: layout.sector_size,
            },
        })
    }

    /// The installer image: the base image plus a layer with the boot assets.
    fn installer(&self, installer: &InstallerPlan, dest: &Path) -> Result<Facts> {
        let (plan, work, progress) = (self.plan, self.work, self.progress);
        let arch = plan.arch;
        let file = |path: String, source: &Path| oci_image::InstallerFile {
            path,
            source: source.to_path_buf(),
            mode: 0o644,
        };
        let (files, facts) = match &installer.contents {
            InstallerContents::KernelAndInitramfs => {
                let mut inputs = crate::inputs::BootInputs::open(&plan.profile, false)?;
                if let Some(rebuilt) = self.initramfs {
                    inputs.initramfs = rebuilt.to_path_buf();
                }
                let files = vec![
                    file(format!("usr/install/{arch}/vmlinuz"), &inputs.kernel),
                    file(
                        format!("usr/install/{arch}/initramfs.xz"),
                        &inputs.initramfs,
                    ),
                ];
                (files, Facts::default())
            }
            InstallerContents::Uki { boot, uki_name } => {
                let boot = Boot::prepare(plan, boot, work, Placement::Scratch, self.initramfs)?;
                progress.step("UKI ready");
                let sd_boot = boot.sd_boot()?;
                let files = vec![
                    file(format!("usr/install/{arch}/systemd-boot.efi"), sd_boot),
                    file(format!("usr/install/{arch}/{uki_name}"), boot.uki_file()),
                ];
                (files, boot.facts)
            }
        };
        let base = installer
            .base
            .open(plan.arch.as_str(), installer.insecure)?;
        let tag = installer.base.installer_tag(&plan.profile.version);
        let overlay_layer = match (&plan.overlay, &plan.profile.input.overlay_installer) {
            (None, _) => Vec::new(),
            (Some(_), None) => {
                return Err(Error::invalid(
                    "input.overlayInstaller is not set: an installer with an overlay carries the overlay for the target architecture (--overlay-image sets it)",
                ));
            }
            (Some(o), Some(asset)) => {
                let target = crate::overlay::extract_for(
                    asset,
                    &o.extracted.name,
                    arch.as_str(),
                    &work.file("overlay-installer"),
                    progress,
                )?;
                crate::overlay::installer_layer(
                    &target,
                    &o.extra_options,
                    &work.file("extra-options"),
                )?
            }
        };
        let spec = oci_image::InstallerSpec {
            overlay_layer,
            base,
            arch: arch.to_string(),
            files,
            epoch: plan.epoch,
            tag,
        };
        let mut out = File::create(dest).op("creating", dest)?;
        oci_image::write(&spec, &work.file("assets-layer.tar.gz"), &mut out, dest)?;
        progress.step("installer container image ready");
        Ok(facts)
    }
}

/// What a GRUB layout adds to a disk image.
struct GrubBios {
    /// The BIOS boot code; none on arm64.
    code: Option<gpt_disk::BiosBoot>,
    boot_entries: Vec<xfs::Entry>,
    boot_options: xfs::XfsOptions,
}

/// Bytes as go-humanize's `Bytes` prints them (`13 MB`), as Talos's message does.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let v = n as f64 / 1000f64.powi(e as i32);
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[e])
    } else {
        format!("{v:.0} {}", UNITS[e])
    }
}

/// Refuses to run when `dir` cannot be written, before any work.
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).op("creating", dir)?;
    let probe = dir.join(format!(".imager-probe-{}", std::process::id()));
    File::create(&probe).map_err(|e| Error::io_op("writing into", dir, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
