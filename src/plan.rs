//! From a resolved profile to what the pipeline does: [`Plan::new`] decodes the
//! profile's output section once (kind, outFormat, disk and ISO options), checks every
//! option rule there with one message per rule, names the artifact, assembles the
//! kernel command line and fixes the build epoch. It is the only reader of
//! `profile.output`; the pipeline and the format writers take typed plans.
//!
//! The rules follow the Talos imager (`pkg/imager/profile`: `Validate`, `OutputPath`,
//! `FillDefaults`); where this implementation does less than Talos, the message says so.

use crate::error::{Error, Result};
use crate::formats::gpt_disk;
use crate::kernel_cmdline;
use crate::meta::{MetaValue, adv};
use crate::pe;
use crate::profile::{
    Bootloader, DiskFormat, EnrollKeys, ImageOptions, OutFormat, OutputKind, Profile,
};
use crate::uki::UkiProfile;

const MIB: u64 = 1024 * 1024;

/// Target architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Talos spelling (`amd64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The UEFI removable-media loader name suffix (`X64`, `AA64`).
    pub fn efi_suffix(self) -> &'static str {
        match self {
            Arch::Amd64 => "X64",
            Arch::Arm64 => "AA64",
        }
    }

    /// The PE/COFF machine type of this architecture's EFI binaries.
    pub fn pe_machine(self) -> u16 {
        match self {
            Arch::Amd64 => pe::MACHINE_X86_64,
            Arch::Arm64 => pe::MACHINE_ARM64,
        }
    }

    /// Refuses the EFI binary at `path`, of PE machine type `machine`, when it is not
    /// built for this architecture (the firmware would not run it).
    pub fn require_pe_machine(self, path: &std::path::Path, machine: u16) -> Result<()> {
        if machine == self.pe_machine() {
            return Ok(());
        }
        Err(Error::format(
            path,
            format!(
                "is {} (PE machine {machine:#06x}), the target arch is {self}",
                pe::machine_description(machine)
            ),
        ))
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "amd64" => Ok(Arch::Amd64),
            "arm64" => Ok(Arch::Arm64),
            other => Err(Error::invalid(format!(
                "arch {other:?} is not supported: use amd64 or arm64"
            ))),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Seconds since the epoch that a build stamps into its outputs: `SOURCE_DATE_EPOCH`
/// when set to a number (reproducible builds), the wall clock otherwise. Read once,
/// by whoever drives the pipeline, and carried in the [`Plan`].
pub fn epoch_from_env() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

/// Everything a build needs to know, decided before any input is read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The effective profile (printed before a build, recorded in the manifest).
    pub profile: Profile,
    pub arch: Arch,
    pub secureboot: bool,
    /// Timestamp of every file system entry, signature and archive header.
    pub epoch: u64,
    /// The kernel command line.
    pub cmdline: String,
    /// The artifact's file name before outFormat (Talos naming).
    pub artifact: String,
    /// The file name after outFormat.
    pub file_name: String,
    pub out_format: OutFormat,
    /// `<name>-<version>`: the UKI's file name on the ESP and the ISO's volume label.
    pub label: String,
    pub kind: KindPlan,
    /// The board overlay and what its installer's `get-options` answered.
    pub overlay: Option<crate::overlay::Applied>,
}

/// What the kind builds.
#[derive(Debug, Clone)]
pub enum KindPlan {
    /// The kernel command line as a file.
    Cmdline,
    /// The kernel, copied.
    Kernel,
    /// The initramfs, copied.
    Initramfs,
    /// A bare UKI (signed when SecureBoot is on).
    Uki(BootPlan),
    Iso(IsoPlan),
    Disk(DiskPlan),
    Installer(InstallerPlan),
}

/// The UKI and systemd-boot of a UKI-based kind.
#[derive(Debug, Clone)]
pub struct BootPlan {
    /// UKI profiles (Talos >= 1.10 adds a reset entry); empty for a single-profile UKI.
    pub uki_profiles: Vec<UkiProfile>,
    /// Whether the kind ships systemd-boot (everything but the bare UKI).
    pub sd_boot: bool,
}

/// A bootable ISO.
#[derive(Debug, Clone)]
pub struct IsoPlan {
    pub boot: BootPlan,
    /// systemd-boot's `secure-boot-enroll` (off without SecureBoot).
    pub enroll: EnrollKeys,
    /// Legacy BIOS boot through ISOLINUX (plain amd64 ISOs).
    pub bios: bool,
}

/// A disk image.
#[derive(Debug, Clone)]
pub struct DiskPlan {
    /// The UKI and systemd-boot (`sd-boot` and `dual-boot`; unused by `grub`).
    pub boot: BootPlan,
    /// `sd-boot` (UEFI), `dual-boot` (GRUB for BIOS, systemd-boot for UEFI) or `grub`
    /// (GRUB for both).
    pub bootloader: Bootloader,
    pub layout: gpt_disk::Layout,
    pub format: DiskFormatPlan,
    /// systemd-boot's `secure-boot-enroll` (off without SecureBoot).
    pub enroll: EnrollKeys,
    /// Values for the META partition.
    pub meta: Vec<MetaValue>,
    /// How the IMAGECACHE partition is sized, with an image cache input.
    pub image_cache: Option<CacheSizeRule>,
}

/// Talos's sizes for the IMAGECACHE partition (`pkg/imager/out.go` `buildImage`,
/// `internal/pkg/partition/partition.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSizeRule {
    /// Talos < 1.13: the space left after META (the user sizes `diskSize`).
    Remaining,
    /// Talos >= 1.13: the files' total plus 20%, rounded up to 1 MiB; the disk grows
    /// by it.
    Grow,
}

impl CacheSizeRule {
    /// The partition size for `layout` and a cache of `files_size` bytes of files, and
    /// the disk size that goes with it; `None` when no space is left.
    pub fn apply(self, layout: &gpt_disk::Layout, files_size: u64) -> Option<(u64, u64)> {
        match self {
            CacheSizeRule::Grow => {
                let size = (files_size + files_size * 20 / 100)
                    .next_multiple_of(MIB)
                    .max(MIB);
                Some((size, layout.size + size))
            }
            CacheSizeRule::Remaining => {
                let left = layout.size.checked_sub(layout.minimum_size())?;
                let size = left / MIB * MIB;
                (size > 0).then_some((size, layout.size))
            }
        }
    }
}

/// The format the raw disk image is converted to (diskFormat with its options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormatPlan {
    Raw,
    Qcow2 {
        /// `cluster_size` of diskFormatOptions (64 KiB by default).
        cluster_size: u64,
    },
    /// A fixed VHD.
    Vhd,
    /// A VMware OVA appliance around a stream-optimized VMDK.
    Ova {
        /// `disk.EnableUUID=true` in the OVF (Talos >= 1.12).
        enable_uuid: bool,
    },
}

impl DiskFormatPlan {
    /// The diskFormat, which names the artifact's extension.
    pub fn kind(&self) -> DiskFormat {
        match self {
            DiskFormatPlan::Raw => DiskFormat::Raw,
            DiskFormatPlan::Qcow2 { .. } => DiskFormat::Qcow2,
            DiskFormatPlan::Vhd => DiskFormat::Vhd,
            DiskFormatPlan::Ova { .. } => DiskFormat::Ova,
        }
    }
}

/// An installer container image.
#[derive(Debug, Clone)]
pub struct InstallerPlan {
    pub contents: InstallerContents,
    /// The base image: in a registry, or `oci:DIR`, `oci-archive:PATH`, `docker-archive:PATH`.
    pub base: crate::oci::Reference,
    /// Pull the base over plain HTTP.
    pub insecure: bool,
}

/// What the installer carries in `/usr/install/<arch>/`.
#[derive(Debug, Clone)]
pub enum InstallerContents {
    /// systemd-boot and the UKI, stored as `uki_name`.
    Uki {
        boot: BootPlan,
        uki_name: &'static str,
    },
    /// Kernel and initramfs for GRUB (Talos < 1.10 without SecureBoot).
    KernelAndInitramfs,
}

impl Plan {
    /// Plans the build of a resolved (defaulted, validated) profile, stamped `epoch`;
    /// what this imager does not build is refused here
    /// ([`crate::profile::validate::supported`], then the output kind's rules).
    pub fn new(profile: &Profile, epoch: u64) -> Result<Plan> {
        Plan::with_overlay(profile, epoch, None)
    }

    /// [`Plan::new`] with the overlay installer's answer to `get-options` (its kernel
    /// arguments go onto the command line after the platform's).
    pub fn with_overlay(
        profile: &Profile,
        epoch: u64,
        overlay: Option<crate::overlay::Applied>,
    ) -> Result<Plan> {
        crate::profile::validate::supported(profile)?;
        let arch: Arch = profile.arch.parse()?;
        let output_kind = profile.output.kind.ok_or_else(|| {
            Error::invalid(
                "output.kind is not set (iso, image, installer, kernel, initramfs, uki, cmdline)",
            )
        })?;
        let out_format = profile.output.out_format.ok_or_else(|| {
            Error::invalid("output.outFormat is not set (raw, .xz, .gz, .zst, .tar.gz)")
        })?;
        let overlay_args = overlay.as_ref().map(|o| o.options.kernel_args.as_slice());
        let cmdline =
            kernel_cmdline::build_with_overlay(profile, output_kind, overlay_args.unwrap_or(&[]))
                .to_string();
        let mut kind = kind_plan(profile, output_kind, arch, &cmdline)?;
        if let (KindPlan::Disk(disk), Some(o)) = (&mut kind, &overlay) {
            disk.layout.skip_lbas = o.options.partition_options.offset;
            if disk.layout.size < disk.layout.minimum_size() {
                return Err(Error::invalid(format!(
                    "output.imageOptions.diskSize {} is too small for the overlay's partition offset {}: the partitions need at least {} bytes",
                    disk.layout.size,
                    disk.layout.skip_lbas,
                    disk.layout.minimum_size()
                )));
            }
        }
        let artifact = artifact_name(profile, &kind);
        let file_name = match out_format {
            OutFormat::Raw => artifact.clone(),
            f => format!("{artifact}{}", f.as_str()),
        };
        Ok(Plan {
            cmdline,
            profile: profile.clone(),
            arch,
            secureboot: profile.secureboot(),
            epoch,
            artifact,
            file_name,
            out_format,
            label: format!("{}-{}", profile.name, profile.version),
            kind,
            overlay,
        })
    }

    /// The output kind as the profile spells it.
    pub fn output_kind(&self) -> OutputKind {
        match self.kind {
            KindPlan::Cmdline => OutputKind::Cmdline,
            KindPlan::Kernel => OutputKind::Kernel,
            KindPlan::Initramfs => OutputKind::Initramfs,
            KindPlan::Uki(_) => OutputKind::Uki,
            KindPlan::Iso(_) => OutputKind::Iso,
            KindPlan::Disk(_) => OutputKind::Image,
            KindPlan::Installer(_) => OutputKind::Installer,
        }
    }

    /// `<platform>-<arch>[-secureboot]`, the stem of most artifact names.
    pub fn stem(&self) -> String {
        stem(&self.profile)
    }
}

fn stem(profile: &Profile) -> String {
    format!(
        "{}-{}{}",
        profile.platform,
        profile.arch,
        secureboot_suffix(profile)
    )
}

/// `-secureboot` for SecureBoot builds, as Talos names their artifacts.
fn secureboot_suffix(profile: &Profile) -> &'static str {
    if profile.secureboot() {
        "-secureboot"
    } else {
        ""
    }
}

/// The artifact's file name before outFormat, as Talos names it.
fn artifact_name(profile: &Profile, kind: &KindPlan) -> String {
    let p = stem(profile);
    let arch = &profile.arch;
    let sb = secureboot_suffix(profile);
    match kind {
        KindPlan::Iso(_) => format!("{p}.iso"),
        KindPlan::Disk(disk) => format!("{p}.{}", disk.format.kind()),
        KindPlan::Installer(_) => format!("installer-{arch}{sb}.tar"),
        KindPlan::Kernel => format!("kernel-{arch}"),
        KindPlan::Initramfs => format!("initramfs-{p}.xz"),
        KindPlan::Uki(_) => format!("{p}-uki.efi"),
        KindPlan::Cmdline => format!("cmdline-{p}"),
    }
}

/// The kind's plan, with the rules of its options.
fn kind_plan(profile: &Profile, kind: OutputKind, arch: Arch, cmdline: &str) -> Result<KindPlan> {
    let quirks = profile.quirks();
    let secureboot = profile.secureboot();
    let meta = !profile.customization.meta_contents.is_empty();
    let args = !profile.customization.extra_kernel_args.is_empty();
    let boot = |sd_boot| BootPlan {
        uki_profiles: uki_profiles(profile, kind, cmdline),
        sd_boot,
    };
    Ok(match kind {
        OutputKind::Cmdline => KindPlan::Cmdline,
        OutputKind::Kernel | OutputKind::Initramfs => {
            if secureboot {
                return Err(Error::invalid(format!(
                    "SecureBoot does not apply to the {kind} output"
                )));
            }
            if args {
                return Err(Error::invalid(format!(
                    "extra kernel arguments do not apply to the {kind} output"
                )));
            }
            if meta {
                return Err(Error::invalid(format!(
                    "META values do not apply to the {kind} output"
                )));
            }
            match kind {
                OutputKind::Kernel => KindPlan::Kernel,
                _ => KindPlan::Initramfs,
            }
        }
        OutputKind::Uki => {
            if !quirks.supports_uki() {
                return Err(Error::unsupported(format!(
                    "UKI needs Talos >= 1.5 (version {})",
                    profile.version
                )));
            }
            KindPlan::Uki(boot(false))
        }
        OutputKind::Iso => {
            let options = profile.output.iso_options.clone().unwrap_or_default();
            // dual-boot (Talos's default from 1.12) is what this ISO is: systemd-boot
            // for UEFI and, on plain amd64 ISOs, ISOLINUX for BIOS.
            if options.bootloader == Some(Bootloader::Grub) {
                return Err(Error::unsupported(
                    "ISO bootloader grub: this imager builds systemd-boot ISOs (with ISOLINUX for BIOS); use dual-boot or sd-boot",
                ));
            }
            KindPlan::Iso(IsoPlan {
                boot: boot(true),
                enroll: if secureboot {
                    options.sd_boot_enroll_keys
                } else {
                    EnrollKeys::Off
                },
                bios: !secureboot && arch == Arch::Amd64,
            })
        }
        OutputKind::Image => KindPlan::Disk(disk_plan(profile, arch, boot(true))?),
        OutputKind::Installer => {
            if meta {
                return Err(Error::unsupported(
                    "META values (--meta, customization.metaContents) are not supported for the installer: pass them to the ISO, disk image, UKI or cmdline instead",
                ));
            }
            let contents = if !secureboot && !quirks.sd_boot_for_uefi() {
                InstallerContents::KernelAndInitramfs
            } else {
                InstallerContents::Uki {
                    boot: boot(true),
                    // Talos names the signed UKI `vmlinuz.efi.signed` for SecureBoot before 1.10.
                    uki_name: if secureboot && !quirks.sd_boot_for_uefi() {
                        "vmlinuz.efi.signed"
                    } else {
                        "vmlinuz.efi"
                    },
                }
            };
            let base = profile.input.base_installer.clone().unwrap_or_default();
            KindPlan::Installer(InstallerPlan {
                contents,
                base: crate::oci::Reference::from_profile(&base.image_ref, &base.oci_path)?,
                insecure: base.force_insecure,
            })
        }
    })
}

fn disk_plan(profile: &Profile, arch: Arch, boot: BootPlan) -> Result<DiskPlan> {
    let image = profile
        .output
        .image_options
        .as_ref()
        .ok_or_else(|| Error::invalid("output.imageOptions is required for the image kind"))?;
    if image.disk_size == 0 {
        return Err(Error::invalid(
            "output.imageOptions.diskSize must be set for the image kind",
        ));
    }
    let sector_size = match image.disk_sector_size {
        0 | 512 => 512,
        4096 => 4096,
        other => {
            return Err(Error::invalid(format!(
                "output.imageOptions.diskSectorSize {other} is not supported: use 512 or 4096"
            )));
        }
    };
    let format = disk_format_plan(profile, image)?;
    let bootloader = image.bootloader.ok_or_else(|| {
        Error::invalid(
            "output.imageOptions.bootloader must be set for the image kind (dual-boot, sd-boot, grub)",
        )
    })?;
    // Talos's rules (`pkg/imager/profile/output.go`, the installer's dual-boot check).
    if arch == Arch::Arm64 && bootloader == Bootloader::DualBoot {
        return Err(Error::invalid("dual-boot is not supported on arm64"));
    }
    if profile.secureboot() && bootloader != Bootloader::SdBoot {
        return Err(Error::invalid(format!(
            "bootloader {bootloader} is not supported with SecureBoot: SecureBoot images boot systemd-boot (sd-boot)"
        )));
    }
    let quirks = profile.quirks();
    let boot_size = quirks.boot_partition_size();
    // The UKI ESP has room for two UKIs (A/B); GRUB's ESP holds only GRUB's EFI image.
    let uki_efi_size = 100 * MIB + MIB + boot_size;
    let (efi_size, bios_boot) = match bootloader {
        Bootloader::SdBoot => (uki_efi_size, None),
        Bootloader::DualBoot => (uki_efi_size, Some(boot_size)),
        Bootloader::Grub => (100 * MIB, Some(boot_size)),
    };
    let layout = gpt_disk::Layout {
        size: image.disk_size,
        sector_size,
        efi_size,
        boot_size: bios_boot,
        image_cache: None,
        skip_lbas: 0,
    };
    if layout.size < layout.minimum_size() {
        return Err(Error::invalid(format!(
            "output.imageOptions.diskSize {} is too small for the {bootloader} layout: its partitions need at least {} bytes",
            layout.size,
            layout.minimum_size()
        )));
    }
    let mut meta = profile.customization.meta_contents.clone();
    // The first-boot handshake: machined removes the bootloader that did not boot.
    if arch == Arch::Amd64
        && !profile.secureboot()
        && quirks.sd_boot_for_uefi()
        && bootloader == Bootloader::DualBoot
    {
        meta.push(MetaValue {
            key: crate::meta::DUAL_BOOT_KEY,
            value: "dual-boot".into(),
        });
    }
    adv::encode(&meta)?;
    Ok(DiskPlan {
        boot,
        bootloader,
        layout,
        format,
        enroll: if profile.secureboot() {
            image.sd_boot_enroll_keys.unwrap_or_default()
        } else {
            EnrollKeys::Off
        },
        meta,
        image_cache: profile.input.image_cache.as_ref().map(|_| {
            if quirks
                .version()
                .is_none_or(|v| v >= crate::profile::quirks::Semver(1, 13, 0))
            {
                CacheSizeRule::Grow
            } else {
                CacheSizeRule::Remaining
            }
        }),
    })
}

/// diskFormat and its diskFormatOptions. The options are `qemu-img convert -o` syntax
/// (`key=value` or `key`, comma-separated), as Talos passes them to qemu-img; each
/// format takes the ones its writer honours, and anything else is refused by name.
fn disk_format_plan(profile: &Profile, image: &ImageOptions) -> Result<DiskFormatPlan> {
    let format = image.disk_format.unwrap_or(DiskFormat::Raw);
    let text = image.disk_format_options.trim();
    let field = || format!("output.imageOptions.diskFormatOptions {text:?}");
    let options: Vec<(&str, Option<&str>)> = text
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (o, None),
        })
        .collect();
    let unknown = |key: &str, takes: &str| {
        Error::invalid(format!(
            "{}: unknown {format} option {key:?} ({takes})",
            field()
        ))
    };
    Ok(match format {
        // Nothing converts a raw image (Talos ignores the options too), so a base
        // profile's qcow2 options do not stand in the way of asking for raw.
        DiskFormat::Raw => DiskFormatPlan::Raw,
        DiskFormat::Ova => {
            if let Some((key, _)) = options.first() {
                return Err(unknown(key, "the OVA's VMDK takes no options"));
            }
            DiskFormatPlan::Ova {
                enable_uuid: profile.quirks().ovf_disk_enable_uuid(),
            }
        }
        DiskFormat::Qcow2 => {
            let mut cluster_size = crate::formats::qcow2::DEFAULT_CLUSTER_SIZE;
            for (key, value) in options {
                if key != "cluster_size" {
                    return Err(unknown(key, "this imager takes cluster_size"));
                }
                cluster_size = value
                    .and_then(parse_size)
                    .filter(|s| {
                        s.is_power_of_two() && crate::formats::qcow2::CLUSTER_SIZES.contains(s)
                    })
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{}: cluster_size must be a power of two from 512 to 2M (e.g. 8k, 65536)",
                            field()
                        ))
                    })?;
            }
            DiskFormatPlan::Qcow2 { cluster_size }
        }
        DiskFormat::Vhd => {
            for (key, value) in options {
                match (key, value) {
                    ("subformat", Some("fixed")) => {}
                    ("subformat", _) => {
                        return Err(Error::unsupported(format!(
                            "{}: this imager writes fixed VHDs (subformat=fixed)",
                            field()
                        )));
                    }
                    // The footer always carries the exact disk size.
                    ("force_size", None | Some("on" | "true")) => {}
                    _ => {
                        return Err(unknown(
                            key,
                            "this imager takes subformat=fixed, force_size",
                        ));
                    }
                }
            }
            DiskFormatPlan::Vhd
        }
    })
}

/// A qemu-style size: bytes, or a number with a `k`, `M` or `G` suffix (powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// UKI profiles for the target version and kind (Talos >= 1.10 adds a reset entry).
fn uki_profiles(profile: &Profile, kind: OutputKind, cmdline: &str) -> Vec<UkiProfile> {
    if !profile.quirks().uki_profiles() {
        return Vec::new();
    }
    let main = UkiProfile {
        id: "main".into(),
        title: None,
        cmdline: None,
    };
    let reset = match kind {
        OutputKind::Iso => UkiProfile {
            id: "reset".into(),
            title: Some("Reset system disk".into()),
            cmdline: Some(format!("{cmdline} talos.experimental.wipe=system")),
        },
        OutputKind::Image | OutputKind::Installer => UkiProfile {
            id: "reset-maintenance".into(),
            title: Some("Reset to maintenance mode".into()),
            cmdline: Some(format!(
                "{cmdline} talos.experimental.wipe=system:EPHEMERAL,STATE"
            )),
        },
        _ => return vec![main],
    };
    vec![main, reset]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::resolve::{Overrides, Source, resolve};

    fn plan(name: &str, edit: impl FnOnce(&mut Profile)) -> Result<Plan> {
        let mut p = resolve(
            &Source::Builtin(name.into()),
            &Overrides::default(),
            &Default::default(),
        )
        .unwrap();
        edit(&mut p);
        Plan::new(&p, 0)
    }

    #[test]
    fn names_follow_talos() {
        let name = |n: &str| plan(n, |_| {}).unwrap().file_name;
        assert_eq!(name("secureboot-iso"), "metal-amd64-secureboot.iso");
        assert_eq!(name("metal"), "metal-amd64.raw.zst");
        assert_eq!(
            name("secureboot-installer"),
            "installer-amd64-secureboot.tar"
        );
        assert_eq!(name("metal-uki"), "metal-amd64-uki.efi");
    }

    #[test]
    fn one_message_per_disk_rule() {
        let err = |edit: fn(&mut Profile)| plan("metal", edit).unwrap_err().to_string();
        assert!(
            err(|p| p.output.image_options.as_mut().unwrap().disk_size = 1).contains("too small")
        );
        assert!(
            err(|p| p.output.image_options.as_mut().unwrap().disk_sector_size = 1024)
                .contains("diskSectorSize 1024")
        );
        assert!(
            err(|p| {
                let image = p.output.image_options.as_mut().unwrap();
                image.disk_format = Some(DiskFormat::Ova);
                image.disk_format_options = "cluster_size=8k".into();
            })
            .contains("unknown ova option \"cluster_size\"")
        );
        assert!(err(|p| p.output.out_format = None).contains("outFormat is not set"));
    }

    #[test]
    fn disk_format_options_follow_qemu_img() {
        let format = |name: &str, edit: fn(&mut Profile)| match plan(name, edit).map(|p| p.kind) {
            Ok(KindPlan::Disk(disk)) => Ok(disk.format),
            Ok(_) => unreachable!(),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(
            format("alibabacloud", |_| {}),
            Ok(DiskFormatPlan::Qcow2 { cluster_size: 8192 })
        );
        assert_eq!(format("azure", |_| {}), Ok(DiskFormatPlan::Vhd));
        assert_eq!(
            format("vmware", |_| {}),
            Ok(DiskFormatPlan::Ova { enable_uuid: false })
        );
        assert_eq!(
            format("vmware", |p| p.version = "v1.12.0".into()),
            Ok(DiskFormatPlan::Ova { enable_uuid: true })
        );
        let options = |o: &'static str| {
            move |p: &mut Profile| {
                p.output.image_options.as_mut().unwrap().disk_format_options = o.into()
            }
        };
        for (o, size) in [
            ("cluster_size=65536", 65536),
            ("cluster_size=2M", 2 << 20),
            ("", 65536),
        ] {
            let mut p = resolve(
                &Source::Builtin("oracle".into()),
                &Overrides::default(),
                &Default::default(),
            )
            .unwrap();
            options(o)(&mut p);
            match Plan::new(&p, 0).unwrap().kind {
                KindPlan::Disk(d) => assert_eq!(
                    d.format,
                    DiskFormatPlan::Qcow2 { cluster_size: size },
                    "{o}"
                ),
                _ => unreachable!(),
            }
        }
        let e = format("oracle", |p| {
            p.output.image_options.as_mut().unwrap().disk_format_options =
                "cluster_size=8k,lazy_refcounts=on".into()
        })
        .unwrap_err();
        assert!(e.contains("unknown qcow2 option \"lazy_refcounts\""), "{e}");
        let e = format("oracle", |p| {
            p.output.image_options.as_mut().unwrap().disk_format_options = "cluster_size=3k".into()
        })
        .unwrap_err();
        assert!(e.contains("power of two"), "{e}");
        let e = format("azure", |p| {
            p.output.image_options.as_mut().unwrap().disk_format_options =
                "subformat=dynamic".into()
        })
        .unwrap_err();
        assert!(e.contains("fixed VHDs"), "{e}");
        assert_eq!(parse_size("8k"), Some(8192));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn disk_layout_and_meta_follow_the_bootloader() {
        let disk = |version: &'static str, edit: fn(&mut Profile)| {
            match plan("metal", |p| {
                p.version = version.into();
                // Defaults again for the new version, as resolve would fill them.
                p.output.image_options.as_mut().unwrap().bootloader = None;
                p.output.image_options.as_mut().unwrap().disk_size = 1306525696;
                edit(p);
                crate::profile::defaults::fill(p, &Default::default());
            })
            .map(|p| p.kind)
            {
                Ok(KindPlan::Disk(d)) => Ok(d),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.to_string()),
            }
        };
        let grub = disk("v1.9.2", |_| {}).unwrap();
        assert_eq!(grub.bootloader, Bootloader::Grub);
        assert_eq!(grub.layout.efi_size, 100 * MIB);
        assert_eq!(grub.layout.boot_size, Some(1000 * MIB));
        assert!(grub.meta.is_empty());
        let dual = disk("v1.11.0", |_| {}).unwrap();
        assert_eq!(dual.bootloader, Bootloader::DualBoot);
        assert_eq!(dual.layout.efi_size, 2101 * MIB);
        assert_eq!(dual.layout.boot_size, Some(2000 * MIB));
        assert_eq!(
            dual.meta,
            vec![MetaValue {
                key: 0x11,
                value: "dual-boot".into()
            }]
        );
        let sd = disk("v1.11.0", |p| {
            p.output.image_options.as_mut().unwrap().bootloader = Some(Bootloader::SdBoot)
        })
        .unwrap();
        assert_eq!((sd.layout.boot_size, sd.meta.len()), (None, 0));
        let arm = disk("v1.11.0", |p| {
            p.arch = "arm64".into();
            p.output.image_options.as_mut().unwrap().bootloader = Some(Bootloader::DualBoot)
        });
        assert_eq!(
            arm.unwrap_err(),
            "invalid input: dual-boot is not supported on arm64"
        );
        // A plan made without the defaults (library use) still refuses GRUB with SecureBoot.
        let sb = plan("secureboot-metal", |p| {
            p.output.image_options.as_mut().unwrap().bootloader = Some(Bootloader::DualBoot)
        });
        assert!(
            sb.unwrap_err()
                .to_string()
                .contains("bootloader dual-boot is not supported with SecureBoot")
        );
    }

    #[test]
    fn the_iso_boots_bios_only_without_secureboot() {
        let bios = |n: &str| match plan(n, |_| {}).unwrap().kind {
            KindPlan::Iso(iso) => iso.bios,
            _ => unreachable!(),
        };
        assert!(bios("iso"));
        assert!(!bios("secureboot-iso"));
    }
}
