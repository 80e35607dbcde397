//! Checks made before a build writes anything, so a first run (container defaults
//! `/usr/install`, `/secureboot`, `/out` on a workstation) hears of every missing
//! input at once, each with the flag or `imager gen` command that fixes it, and
//! `--dry-run` says no to a build that cannot run. The build repeats its own checks
//! (contents, key types, architectures); these come first and cover existence.

use std::path::Path;

use imager::Error;
use imager::inputs::Missing;
use imager::plan::{KindPlan, Plan};
use imager::profile::Bootloader;

use super::build::BuildArgs;

/// Every missing input of `plan`, the GRUB directory of a GRUB layout, the initramfs
/// format and the command-line length, in one error.
pub fn check(plan: &Plan, args: &BuildArgs) -> anyhow::Result<()> {
    let mut problems = describe(&imager::inputs::missing(plan), args);
    if let KindPlan::Disk(disk) = &plan.kind
        && disk.bootloader != Bootloader::SdBoot
        && let Err(e) = imager::formats::grub::GrubDir::open(&args.grub_dir)
    {
        problems.push(format!(
            "GRUB files for the {} layout: {} (--grub-dir DIR, or --bootloader sd-boot)",
            disk.bootloader.as_str(),
            e.to_string().trim_start_matches("invalid input: ")
        ));
    }
    if !problems.is_empty() {
        // Not `Error::invalid`: the list is the point, it is not cut at the usual length.
        return Err(Error::Invalid(format!("missing inputs: {}", problems.join("; "))).into());
    }
    if reads_initramfs(&plan.kind) {
        initramfs_magic(Path::new(&plan.profile.input.initramfs.path))?;
    }
    if !matches!(plan.kind, KindPlan::Kernel | KindPlan::Initramfs) {
        imager::kernel_cmdline::check_len(
            &plan.cmdline,
            &plan.profile.arch,
            Path::new(&plan.profile.input.kernel.path),
        )?;
    }
    Ok(())
}

/// Every image the build pulls (base installer, system extensions, image cache)
/// parsed, and each registry they name asked for `/v2/` once, so a local path
/// without `oci:`, an unreachable registry or a plain-HTTP one without
/// `--insecure` is named before any work starts (the overlay image was read
/// when the profile was resolved).
pub fn registries(plan: &Plan) -> anyhow::Result<()> {
    use imager::oci::Reference;
    let input = &plan.profile.input;
    let mut pulled: Vec<(&str, &imager::profile::ContainerAsset)> = Vec::new();
    if let KindPlan::Installer(_) = &plan.kind
        && let Some(base) = &input.base_installer
        && base.oci_path.is_empty()
    {
        pulled.push(("base image", base));
    }
    if let Some(cache) = &input.image_cache
        && cache.oci_path.is_empty()
        && cache.tarball_path.is_empty()
    {
        pulled.push(("error pulling image cache", cache));
    }
    for e in &input.system_extensions {
        if e.oci_path.is_empty() {
            pulled.push(("error pulling image", e));
        }
    }
    let mut asked: Vec<(String, bool)> = Vec::new();
    for (role, asset) in pulled {
        if asset.image_ref.is_empty() {
            continue;
        }
        let Reference::Registry(r) = Reference::parse(&asset.image_ref)? else {
            continue;
        };
        let key = (r.host.clone(), asset.force_insecure);
        if asked.contains(&key) {
            continue;
        }
        imager::oci::registry::reachable(
            &r.host,
            asset.force_insecure,
            &format!("{role} {}", r.as_written()),
        )?;
        asked.push(key);
    }
    Ok(())
}

/// The kernel and initramfs of `imager pxe`, and its command-line length.
pub fn check_pxe(
    profile: &imager::profile::Profile,
    cmdline: &str,
    args: &BuildArgs,
) -> anyhow::Result<()> {
    let input = &profile.input;
    let missing = imager::inputs::missing_files(vec![
        ("kernel", input.kernel.path.clone()),
        ("initramfs", input.initramfs.path.clone()),
    ]);
    let problems = describe(&missing, args);
    if !problems.is_empty() {
        return Err(Error::Invalid(format!("missing inputs: {}", problems.join("; "))).into());
    }
    initramfs_magic(Path::new(&input.initramfs.path))?;
    imager::kernel_cmdline::check_len(cmdline, &profile.arch, Path::new(&input.kernel.path))?;
    Ok(())
}

/// Whether the build boots the initramfs (an `initramfs` output is a plain copy).
fn reads_initramfs(kind: &KindPlan) -> bool {
    !matches!(
        kind,
        KindPlan::Cmdline | KindPlan::Kernel | KindPlan::Initramfs
    )
}

/// `--output DIR` must be a directory (or not exist yet).
pub fn output_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::invalid(format!(
            "--output {} is a file, not a directory",
            dir.display()
        ))
        .into()),
        _ => Ok(()),
    }
}

/// The missing inputs grouped by the flag that moves them, each group with the
/// command that makes its files.
fn describe(missing: &[Missing], args: &BuildArgs) -> Vec<String> {
    let name = |m: &Missing, root: &Path| {
        let rel = m
            .path
            .strip_prefix(root)
            .unwrap_or(&m.path)
            .display()
            .to_string();
        match m.why.as_str() {
            "not found" => rel,
            why => format!("{rel} ({why})"),
        }
    };
    let mut install = Vec::new();
    let mut keys = Vec::new();
    let mut other = Vec::new();
    for m in missing {
        if m.path.starts_with(&args.install_dir) && !m.path.as_os_str().is_empty() {
            install.push(name(m, &args.install_dir));
        } else if m.path.starts_with(&args.secureboot_dir) && !m.path.as_os_str().is_empty() {
            keys.push((m.role, name(m, &args.secureboot_dir)));
        } else {
            other.push(format!(
                "{} {} {} (named by the profile)",
                m.role,
                m.path.display(),
                m.why
            ));
        }
    }
    let mut out = Vec::new();
    if !install.is_empty() {
        out.push(format!(
            "--install-dir {} lacks {} (point --install-dir at the directory holding <arch>/vmlinuz, ...)",
            args.install_dir.display(),
            install.join(", ")
        ));
    }
    if !keys.is_empty() {
        let mut make = Vec::new();
        if keys
            .iter()
            .any(|(r, _)| r.starts_with("secureboot signing"))
        {
            make.push("`imager gen secureboot uki --common-name NAME --output DIR`");
        }
        if keys.iter().any(|(r, _)| *r == "PCR signing key") {
            make.push("`imager gen secureboot pcr --output DIR`");
        }
        let names: Vec<String> = keys.into_iter().map(|(_, n)| n).collect();
        out.push(format!(
            "--secureboot-dir {} lacks {} (pass --secureboot-dir DIR, or make them with {})",
            args.secureboot_dir.display(),
            names.join(", "),
            make.join(" and ")
        ));
    }
    out.extend(other);
    out
}

/// Refuses an initramfs that is neither a cpio archive nor a compressed stream the
/// kernel unpacks (gzip, xz, zstd, lz4, bzip2, lzma, lzo): it would not boot.
fn initramfs_magic(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut head = [0u8; 6];
    let n = std::fs::File::open(path)
        .and_then(|f| f.take(6).read(&mut head))
        .unwrap_or(6);
    let head = &head[..n];
    const MAGICS: &[&[u8]] = &[
        b"070701",                 // cpio newc
        b"070702",                 // cpio newc with CRC
        b"070707",                 // cpio odc
        &[0x1f, 0x8b],             // gzip
        &[0xfd, b'7', b'z', b'X'], // xz
        &[0x28, 0xb5, 0x2f, 0xfd], // zstd
        &[0x02, 0x21, 0x4c, 0x18], // lz4 legacy (what the kernel's lz4 takes)
        &[0x04, 0x22, 0x4d, 0x18], // lz4 frame
        b"BZh",                    // bzip2
        &[0x5d, 0x00, 0x00],       // lzma
        &[0x89, b'L', b'Z', b'O'], // lzop
    ];
    if n < 6 || MAGICS.iter().any(|m| head.starts_with(m)) {
        // Short files are refused by the build's own check, with its message.
        return Ok(());
    }
    Err(Error::format(
        path,
        "not an initramfs: neither a cpio archive nor a gzip, xz, zstd, lz4, bzip2, lzma or lzo stream",
    )
    .into())
}

/// What `--dry-run` adds to [`check`]: the boot inputs and SecureBoot keys opened and
/// checked as the build would (key types, key/certificate match).
pub fn contents(plan: &Plan) -> anyhow::Result<()> {
    use imager::plan::InstallerContents;
    let boot = match &plan.kind {
        KindPlan::Uki(b) => Some(b),
        KindPlan::Iso(iso) => Some(&iso.boot),
        KindPlan::Disk(d) if d.bootloader != Bootloader::Grub => Some(&d.boot),
        KindPlan::Installer(i) => match &i.contents {
            InstallerContents::Uki { boot, .. } => Some(boot),
            InstallerContents::KernelAndInitramfs => None,
        },
        _ => None,
    };
    if let Some(boot) = boot {
        if plan.secureboot {
            imager::inputs::SecureBootInputs::load(&plan.profile)?;
        }
        imager::inputs::BootInputs::open(&plan.profile, boot.sd_boot)?;
    }
    Ok(())
}
