//! Output kinds: each writes one artifact. [`assemble`] builds the boot assets the
//! UKI-based kinds share (the measured, signed UKI and systemd-boot) and hands them to
//! the kind's writer.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Facts, WorkDir};
use crate::error::{Error, IoContext, Result};
use crate::formats::fat_esp::{EspEntry, EspSource};
use crate::formats::{
    fat_esp as esp, gpt_disk as disk, iso9660 as iso, oci_image as installer, qcow2, vhd,
};
use crate::inputs::{BootInputs, SecureBootInputs};
use crate::io::{AtomicFile, Output};
use crate::profile::EnrollKeys;
use crate::profile::{OutputKind, Profile};
use crate::report::{Pcr11Bank, Progress, SecureBootFacts};
use crate::uki::{self, UkiProfile, UkiReport, UkiSpec};

/// The boot binaries of a build: systemd-boot (signed when SecureBoot is on) and the
/// UKI, built or ready to be built.
pub struct BootAssets {
    pub inputs: BootInputs,
    pub uki: Uki,
    /// systemd-boot, signed when SecureBoot is on (`None` for a bare UKI).
    pub sd_boot: Option<PathBuf>,
    pub secureboot: Option<SecureBootInputs>,
    profiles: Vec<UkiProfile>,
    cmdline: String,
    os_release: String,
    /// The UKI, planned once (stub checked, layout fixed) and written by `build_uki`.
    uki_plan: Option<uki::UkiPlan>,
}

/// Where the UKI is.
pub enum Uki {
    /// Built (and signed) into this file.
    File(PathBuf),
    /// To be built into the output, in `size` bytes reserved for it.
    InPlace { size: u64 },
}

/// Builds the UKI-based kinds (`uki`, `iso`, `image`, `installer`) into `dest`.
pub fn assemble(
    profile: &Profile,
    kind: OutputKind,
    cmdline: &str,
    work: &WorkDir,
    dest: &Path,
    progress: &dyn Progress,
    facts: &mut Facts,
) -> Result<()> {
    let disk = match kind {
        OutputKind::Image => Some(disk_spec(profile)?),
        _ => None,
    };
    if kind == OutputKind::Installer
        && !profile.secureboot()
        && !profile.quirks().sd_boot_for_uefi()
    {
        // Talos < 1.10 without SecureBoot installs GRUB with kernel + initramfs: no UKI.
        let inputs = BootInputs::open(profile, false)?;
        let arch = &profile.arch;
        let files = vec![
            installer_file(format!("usr/install/{arch}/vmlinuz"), &inputs.kernel),
            installer_file(
                format!("usr/install/{arch}/initramfs.xz"),
                &inputs.initramfs,
            ),
        ];
        return write_installer(profile, files, work, dest, progress);
    }
    let in_place = matches!(kind, OutputKind::Iso | OutputKind::Image);
    let boot = boot_assets(profile, kind, cmdline, work, facts, in_place)?;
    if let Uki::File(_) = boot.uki {
        progress.step("UKI ready");
    }
    let mut fill = |out: &mut dyn Output| -> Result<()> {
        boot.build_uki(out, facts)?;
        progress.step("UKI ready");
        Ok(())
    };
    match kind {
        OutputKind::Uki => std::fs::rename(boot.uki_path()?, dest).at(dest),
        OutputKind::Image => {
            let mut spec = disk.expect("disk spec for images");
            spec.esp_entries = esp_entries(profile, &boot, EspFlavor::Disk)?;
            write_disk_image(profile, &spec, work, dest, &mut fill)?;
            progress.step("disk image ready");
            Ok(())
        }
        OutputKind::Installer => {
            let arch = &profile.arch;
            let sd_boot = boot
                .sd_boot
                .clone()
                .ok_or_else(|| Error::invalid("input sdBoot is required"))?;
            // Talos names the signed UKI `vmlinuz.efi.signed` for SecureBoot before 1.10.
            let uki_name = if profile.secureboot() && !profile.quirks().sd_boot_for_uefi() {
                "vmlinuz.efi.signed"
            } else {
                "vmlinuz.efi"
            };
            let files = vec![
                installer_file(format!("usr/install/{arch}/systemd-boot.efi"), &sd_boot),
                installer_file(format!("usr/install/{arch}/{uki_name}"), boot.uki_path()?),
            ];
            write_installer(profile, files, work, dest, progress)
        }
        OutputKind::Iso => {
            let bios = (!profile.secureboot() && profile.arch == "amd64").then(|| iso::BiosBoot {
                kernel: boot.inputs.kernel.clone(),
                initramfs: boot.inputs.initramfs.clone(),
                cmdline: cmdline.to_string(),
            });
            let spec = iso::IsoSpec {
                esp_entries: esp_entries(profile, &boot, EspFlavor::Iso)?,
                scratch: work.file("vmlinuz.efi"),
                label: format!("{}-{}", profile.name, profile.version),
                epoch: crate::io::build_epoch(),
                bios,
            };
            let file = crate::io::create_rw(dest)?;
            iso::write(&spec, &file, &mut fill)?;
            progress.step("ISO ready");
            Ok(())
        }
        other => Err(Error::unsupported(format!(
            "the {other} output is not implemented yet"
        ))),
    }
}

/// The disk layout for an image profile, checked (size, META) before any work.
fn disk_spec(profile: &Profile) -> Result<disk::DiskSpec> {
    let image = profile
        .output
        .image_options
        .as_ref()
        .ok_or_else(|| Error::invalid("output.imageOptions is required for the image kind"))?;
    let mib = 1024 * 1024;
    let sector_size = if image.disk_sector_size == 0 {
        512
    } else {
        image.disk_sector_size
    };
    let spec = disk::DiskSpec {
        size: image.disk_size,
        sector_size,
        efi_size: if profile.quirks().large_boot_partition() {
            2101 * mib
        } else {
            1101 * mib
        },
        esp_entries: Vec::new(),
        esp_options: esp::EspOptions {
            label: "EFI".into(),
            epoch: crate::io::build_epoch(),
            sector_size,
        },
        meta: profile.customization.meta_contents.clone(),
    };
    if spec.size < spec.minimum_size() {
        return Err(Error::invalid(format!(
            "output.imageOptions.diskSize {} is too small: the partitions need at least {} bytes",
            spec.size,
            spec.minimum_size()
        )));
    }
    crate::meta::adv::encode(&spec.meta)?;
    Ok(spec)
}

/// Writes the raw image, then converts it to the profile's disk format.
fn write_disk_image(
    profile: &Profile,
    spec: &disk::DiskSpec,
    work: &WorkDir,
    dest: &Path,
    fill: iso::Fill,
) -> Result<()> {
    use crate::profile::DiskFormat;
    let format = profile
        .output
        .image_options
        .as_ref()
        .and_then(|o| o.disk_format)
        .unwrap_or(DiskFormat::Raw);
    let raw = if format == DiskFormat::Raw {
        dest.to_path_buf()
    } else {
        work.file("disk.raw")
    };
    let file = crate::io::create_rw(&raw)?;
    disk::write_raw(spec, &file, &work.file("vmlinuz.efi"), fill)?;
    drop(file);
    match format {
        DiskFormat::Raw => Ok(()),
        DiskFormat::Qcow2 => {
            let mut out = File::create(dest).at(dest)?;
            qcow2::convert(&raw, &mut out)
        }
        DiskFormat::Vhd => {
            let mut out = File::create(dest).at(dest)?;
            vhd::convert(&raw, &mut out, spec.esp_options.epoch)
        }
        DiskFormat::Ova => Err(Error::unsupported("diskFormat ova is not supported")),
    }
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

/// Loads keys and inputs, signs systemd-boot and builds the UKI (measured, PCR
/// policy signed, Authenticode-signed) into the work directory, or, with `in_place`,
/// only sizes it: the output writer then builds it straight into its place.
fn boot_assets(
    profile: &Profile,
    kind: OutputKind,
    cmdline: &str,
    work: &WorkDir,
    facts: &mut Facts,
    in_place: bool,
) -> Result<BootAssets> {
    let secureboot = if profile.secureboot() {
        Some(SecureBootInputs::load(profile)?)
    } else {
        None
    };
    let inputs = BootInputs::open(profile, kind != OutputKind::Uki)?;
    let mut sd_boot = inputs.sd_boot.clone();
    if let Some(sb) = &secureboot {
        if let Some(src) = &inputs.sd_boot {
            let signed = work.file("systemd-boot.efi.signed");
            let mut out = AtomicFile::create(&signed)?;
            crate::sign::authenticode::sign_to(
                src,
                out.file(),
                &signed,
                &sb.signer,
                crate::io::build_epoch(),
            )?;
            out.commit()?;
            sd_boot = Some(signed);
        }
        facts.secureboot = Some(SecureBootFacts {
            signer_cert_sha256: sb.signer.cert_fingerprint(),
            signer_subject: sb.signer.cert.tbs_certificate().subject().to_string(),
            pcr_key_fingerprint: crate::measure::policy::fingerprint(
                &sb.pcr_key.key.to_public_key(),
            ),
        });
    }
    let mut boot = BootAssets {
        inputs,
        uki: Uki::InPlace { size: 0 },
        sd_boot,
        secureboot,
        profiles: uki_profiles(profile, kind, cmdline),
        cmdline: cmdline.to_string(),
        os_release: uki::os_release(&profile.name, &profile.version),
        uki_plan: None,
    };
    let signer = boot.secureboot.as_ref().map(|sb| sb.signer.clone());
    let plan = uki::plan(boot.uki_spec(), signer)?;
    let size = plan.size();
    boot.uki_plan = Some(plan);
    if in_place {
        boot.uki = Uki::InPlace { size };
    } else {
        let path = work.file("vmlinuz.efi");
        let mut file = crate::io::create_rw(&path)?;
        boot.uki = Uki::File(path);
        boot.build_uki(&mut file, facts)?;
    }
    Ok(boot)
}

impl BootAssets {
    /// The built UKI's file (for outputs that copy it).
    fn uki_path(&self) -> Result<&Path> {
        match &self.uki {
            Uki::File(path) => Ok(path),
            Uki::InPlace { .. } => Err(Error::invalid("the UKI is built in place for this output")),
        }
    }

    fn uki_spec(&self) -> UkiSpec {
        UkiSpec {
            stub: self.inputs.sd_stub.clone(),
            kernel: self.inputs.kernel.clone(),
            initrd: self.inputs.initramfs.clone(),
            cmdline: self.cmdline.clone(),
            os_release: self.os_release.clone(),
            splash: None,
            dtb: None,
            profiles: self.profiles.clone(),
            pcr_key: self.secureboot.as_ref().map(|sb| sb.pcr_key.clone()),
            timestamp: crate::io::build_epoch() as u32,
        }
    }

    /// Builds the UKI into `out` (signed when SecureBoot is on) and records its PCR 11
    /// prediction in `facts`.
    fn build_uki(&self, out: &mut dyn Output, facts: &mut Facts) -> Result<UkiReport> {
        let plan = self.uki_plan.as_ref().expect("planned in boot_assets");
        let report = plan.write(out)?;
        if let Uki::InPlace { size } = self.uki
            && report.size != size
        {
            return Err(Error::invalid(format!(
                "the UKI came out {} bytes long, {size} were reserved for it",
                report.size
            )));
        }
        facts.pcr11 = report
            .pcr11
            .iter()
            .filter(|p| p.profile.as_deref().is_none_or(|id| id == "main"))
            .map(|p| Pcr11Bank {
                bank: p.bank.to_string(),
                after_stub: p.after_stub.clone(),
                enter_machined: p.enter_machined.clone(),
            })
            .collect();
        Ok(report)
    }
}

/// Where the ESP is going: the ISO's (random-seed, certificate copy) or a disk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspFlavor {
    Iso,
    Disk,
}

/// The enrollment files for a SecureBoot build: the profile's pre-built ones, or
/// generated from the signing certificate.
pub fn enrollment_files(
    profile: &Profile,
    sb: &SecureBootInputs,
) -> Result<crate::keys::efivar::EnrollmentDb> {
    match &sb.enrollment {
        Some([pk, kek, db]) => Ok(crate::keys::efivar::EnrollmentDb {
            pk: std::fs::read(pk).at(pk)?,
            kek: std::fs::read(kek).at(kek)?,
            db: std::fs::read(db).at(db)?,
        }),
        None => {
            let _ = profile;
            crate::keys::efivar::enrollment_db(
                &sb.signer,
                sb.include_well_known_certs,
                crate::io::build_epoch(),
            )
        }
    }
}

/// systemd-boot's `secure-boot-enroll` for this build (non-SecureBoot builds: off).
fn enroll_mode(profile: &Profile, flavor: EspFlavor) -> EnrollKeys {
    if !profile.secureboot() {
        return EnrollKeys::Off;
    }
    match flavor {
        EspFlavor::Iso => profile
            .output
            .iso_options
            .as_ref()
            .map(|o| o.sd_boot_enroll_keys)
            .unwrap_or_default(),
        EspFlavor::Disk => profile
            .output
            .image_options
            .as_ref()
            .and_then(|o| o.sd_boot_enroll_keys)
            .unwrap_or_default(),
    }
}

/// The files of the EFI system partition, as Talos lays them out.
pub fn esp_entries(
    profile: &Profile,
    boot: &BootAssets,
    flavor: EspFlavor,
) -> Result<Vec<EspEntry>> {
    let sd_boot = boot
        .sd_boot
        .clone()
        .ok_or_else(|| Error::invalid("input sdBoot is required"))?;
    let (efi_dir, loader_name) = match (flavor, profile.arch.as_str()) {
        (EspFlavor::Iso, "arm64") => ("EFI/BOOT", "BOOTAA64.EFI"),
        (EspFlavor::Iso, _) => ("EFI/BOOT", "BOOTX64.EFI"),
        (EspFlavor::Disk, "arm64") => ("EFI/boot", "BOOTAA64.efi"),
        (EspFlavor::Disk, _) => ("EFI/boot", "BOOTX64.efi"),
    };
    let mode = enroll_mode(profile, flavor);
    let file = |path: String, src: &Path| EspEntry {
        path,
        source: EspSource::File(src.to_path_buf()),
        read_only: false,
    };
    let bytes = |path: &str, data: Vec<u8>, read_only: bool| EspEntry {
        path: path.into(),
        source: EspSource::Bytes(data),
        read_only,
    };
    let uki = EspEntry {
        path: format!("EFI/Linux/{}-{}.efi", profile.name, profile.version),
        source: match &boot.uki {
            Uki::File(path) => EspSource::File(path.clone()),
            Uki::InPlace { size } => EspSource::Reserved(*size),
        },
        read_only: false,
    };
    let mut entries = vec![file(format!("{efi_dir}/{loader_name}"), &sd_boot), uki];
    let loader_conf = match (flavor, profile.secureboot()) {
        // The template Talos writes.
        (EspFlavor::Disk, false) => "# systemd-boot configuration\n\ntimeout 10\n".to_string(),
        _ => format!("# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll {mode}\n"),
    };
    entries.push(bytes("loader/loader.conf", loader_conf.into_bytes(), false));
    if flavor == EspFlavor::Iso {
        // Read-only so systemd-boot does not try to update the seed on read-only media.
        entries.push(bytes("loader/random-seed", vec![0; 32], true));
    }
    if let Some(sb) = &boot.secureboot {
        if flavor == EspFlavor::Iso {
            entries.push(bytes(
                "EFI/keys/uki-signing-cert.der",
                sb.signer.cert_der.clone(),
                false,
            ));
        }
        if mode != EnrollKeys::Off || flavor == EspFlavor::Iso {
            let db = enrollment_files(profile, sb)?;
            for (name, data) in db.files() {
                entries.push(bytes(
                    &format!("loader/keys/auto/{name}"),
                    data.to_vec(),
                    false,
                ));
            }
        }
    }
    Ok(entries)
}

/// Copies `len` bytes of a sparse source into `dest`, leaving holes where the source
/// has zero blocks (seeking over them), so a mostly empty disk image stays sparse.
pub fn copy_sparse(
    input: &mut impl std::io::Read,
    src: &Path,
    dest: &mut File,
    len: u64,
) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut buf = vec![0u8; crate::io::BUFFER_SIZE];
    let start = dest.stream_position().at("<output>")?;
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        input.read_exact(&mut buf[..want]).at(src)?;
        if buf[..want].iter().all(|&b| b == 0) {
            dest.seek(SeekFrom::Current(want as i64)).at("<output>")?;
        } else {
            dest.write_all(&buf[..want]).at("<output>")?;
        }
        done += want as u64;
    }
    dest.set_len(start + len).at("<output>")?;
    dest.seek(SeekFrom::Start(start + len)).at("<output>")?;
    Ok(())
}

fn installer_file(path: String, source: &Path) -> installer::InstallerFile {
    installer::InstallerFile {
        path,
        source: source.to_path_buf(),
        mode: 0o644,
    }
}

/// Opens the base installer image and writes the installer tarball.
fn write_installer(
    profile: &Profile,
    files: Vec<installer::InstallerFile>,
    work: &WorkDir,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let base = profile.input.base_installer.clone().unwrap_or_default();
    let reference = if !base.oci_path.is_empty() {
        format!("oci:{}", base.oci_path)
    } else {
        base.image_ref.clone()
    };
    let local = ["oci:", "oci-archive:", "docker-archive:"]
        .iter()
        .any(|p| reference.starts_with(p));
    let image = if local {
        crate::oci::BaseImage::open_local(&reference, &profile.arch)?
    } else {
        crate::oci::registry::pull(&reference, &profile.arch, base.force_insecure)?
    };
    let tag = if local {
        format!("ghcr.io/siderolabs/installer:{}", profile.version)
    } else {
        reference.clone()
    };
    let spec = installer::InstallerSpec {
        base: image,
        arch: profile.arch.clone(),
        files,
        epoch: crate::io::build_epoch(),
        tag,
    };
    let mut out = File::create(dest).at(dest)?;
    installer::write(&spec, &work.file("assets-layer.tar.gz"), &mut out)?;
    progress.step("installer container image ready");
    Ok(())
}
