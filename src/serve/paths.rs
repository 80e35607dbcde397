//! Request paths to what they ask for: Image Factory's `/image/:id/:version/:path`
//! rules (`internal/profile/profile.go` `ParseFromPath`), checked in the factory's
//! order, first match wins, plus the `:version` and PXE path segments. Pure
//! functions over strings: every hostile path ends here as a one-line 400.

use crate::plan::Arch;
use crate::profile::quirks::Semver;
use crate::profile::{DiskFormat, OutFormat};

/// What an asset path builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    Kernel,
    Cmdline,
    Initramfs,
    Iso,
    Uki,
    Installer,
    Image(DiskFormat),
}

impl AssetKind {
    /// The `output_kind` metric label (Talos's kind names).
    pub fn label(self) -> &'static str {
        match self {
            AssetKind::Kernel => "kernel",
            AssetKind::Cmdline => "cmdline",
            AssetKind::Initramfs => "initramfs",
            AssetKind::Iso => "iso",
            AssetKind::Uki => "uki",
            AssetKind::Installer => "installer",
            AssetKind::Image(_) => "image",
        }
    }
}

/// A parsed asset path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetPath {
    pub kind: AssetKind,
    pub platform: String,
    pub arch: Arch,
    pub secureboot: bool,
    /// Compression of the disk image (`raw` for everything else).
    pub out_format: OutFormat,
}

fn invalid_path(path: &str) -> String {
    format!("error parsing profile from path: invalid profile path: {path:?}")
}

/// `<platform>-<arch>[-secureboot]` (arch `x86_64`/`i386` meaning amd64).
pub fn parse_platform_arch(text: &str) -> Result<(String, Arch, bool), String> {
    let (rest, secureboot) = match text.strip_suffix("-secureboot") {
        Some(r) => (r, true),
        None => (text, false),
    };
    let (platform, arch) = if let Some(arch) = rest.strip_prefix("digital-ocean-") {
        ("digital-ocean", arch)
    } else {
        rest.split_once('-')
            .ok_or_else(|| format!("invalid platform-arch: {text:?}"))?
    };
    let arch = match arch {
        "amd64" | "x86_64" | "i386" => Arch::Amd64,
        "arm64" => Arch::Arm64,
        _ => return Err(format!("invalid architecture: {arch:?}")),
    };
    let name_ok = !platform.is_empty()
        && platform.len() <= 64
        && platform
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(format!("invalid platform: {platform:?}"));
    }
    Ok((platform.to_string(), arch, secureboot))
}

/// Parses the `:path` of `/image/:id/:version/:path`.
pub fn parse_asset_path(path: &str) -> Result<AssetPath, String> {
    let metal = |kind, arch| AssetPath {
        kind,
        platform: "metal".into(),
        arch,
        secureboot: false,
        out_format: OutFormat::Raw,
    };
    let arch_only = |a: &str| match a {
        "amd64" | "x86_64" | "i386" => Ok(Arch::Amd64),
        "arm64" => Ok(Arch::Arm64),
        _ => Err(format!("invalid architecture: {a:?}")),
    };
    let with = |kind, stem: &str| -> Result<AssetPath, String> {
        let (platform, arch, secureboot) = parse_platform_arch(stem)?;
        Ok(AssetPath {
            kind,
            platform,
            arch,
            secureboot,
            out_format: OutFormat::Raw,
        })
    };
    if let Some(arch) = path.strip_prefix("kernel-") {
        return Ok(metal(AssetKind::Kernel, arch_only(arch)?));
    }
    if let Some(stem) = path.strip_prefix("cmdline-") {
        return with(AssetKind::Cmdline, stem);
    }
    if let Some(arch) = path
        .strip_prefix("initramfs-")
        .and_then(|p| p.strip_suffix(".xz"))
    {
        return Ok(metal(AssetKind::Initramfs, arch_only(arch)?));
    }
    if let Some(stem) = path.strip_suffix(".iso") {
        return with(AssetKind::Iso, stem);
    }
    if let Some(stem) = path.strip_suffix("-uki.efi") {
        return with(AssetKind::Uki, stem);
    }
    if let Some(stem) = path
        .strip_prefix("installer-")
        .and_then(|p| p.strip_suffix(".tar"))
    {
        let (arch, secureboot) = match stem.strip_suffix("-secureboot") {
            Some(a) => (a, true),
            None => (stem, false),
        };
        let mut p = metal(AssetKind::Installer, arch_only(arch)?);
        p.secureboot = secureboot;
        return Ok(p);
    }
    if let Some((platform, rest)) = path.split_once("-installer-")
        && let Some(stem) = rest.strip_suffix(".tar")
    {
        return with(AssetKind::Installer, &format!("{platform}-{stem}"));
    }
    let (rest, out_format) = [
        (".tar.gz", OutFormat::TarGz),
        (".gz", OutFormat::Gz),
        (".xz", OutFormat::Xz),
        (".zst", OutFormat::Zst),
    ]
    .iter()
    .find_map(|(suffix, f)| path.strip_suffix(suffix).map(|r| (r, *f)))
    .unwrap_or((path, OutFormat::Raw));
    let (stem, format) = [
        (".raw", DiskFormat::Raw),
        (".qcow2", DiskFormat::Qcow2),
        (".vhd", DiskFormat::Vhd),
        (".ova", DiskFormat::Ova),
    ]
    .iter()
    .find_map(|(suffix, f)| rest.strip_suffix(suffix).map(|r| (r, *f)))
    .ok_or_else(|| invalid_path(path))?;
    let mut p = with(AssetKind::Image(format), stem)?;
    p.out_format = out_format;
    Ok(p)
}

/// The `:version` segment: `v1.9.2` or `1.9.2` (pre-releases allowed), as `v1.9.2`.
pub fn parse_version(text: &str) -> Result<String, String> {
    let bare = text.strip_prefix('v').unwrap_or(text);
    let (core, pre) = bare.split_once('-').unwrap_or((bare, ""));
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit());
    // Pre-release: dot-separated identifiers, none empty (semver 2.0.0, item 9).
    let pre_ok = pre.len() <= 32
        && (pre.is_empty()
            || pre.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if parts.len() != 3
        || !parts.iter().all(numeric)
        || !pre_ok
        || (bare.contains('-') && pre.is_empty())
    {
        return Err(format!("invalid version: {text:?}"));
    }
    Ok(format!("v{bare}"))
}

/// Sort key of a `vX.Y.Z[-pre]` version: numeric, pre-releases before their release.
pub fn version_key(v: &str) -> Option<(Semver, bool, String)> {
    let bare = v.strip_prefix('v')?;
    let (core, pre) = bare.split_once('-').unwrap_or((bare, ""));
    let mut n = core.split('.').map(|p| p.parse::<u64>().ok());
    let s = Semver(n.next()??, n.next()??, n.next()??);
    if n.next().is_some() {
        return None;
    }
    Some((s, pre.is_empty(), pre.to_string()))
}

/// `Content-Type` of an asset file name (Image Factory's `internal/mime` table).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "efi" => "application/efi",
        "iso" => "application/x-iso9660-image",
        "xz" => "application/x-xz",
        "gz" => "application/gzip",
        "qcow2" => "application/x-qemu-disk",
        "tar" => "application/x-tar",
        "zst" => "application/zstd",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_paths() {
        let p = parse_asset_path("metal-amd64-secureboot.iso").unwrap();
        assert_eq!(
            (p.kind, p.platform.as_str(), p.arch, p.secureboot),
            (AssetKind::Iso, "metal", Arch::Amd64, true)
        );
        let p = parse_asset_path("digital-ocean-arm64.raw.gz").unwrap();
        assert_eq!(
            (p.kind, p.platform.as_str(), p.out_format),
            (
                AssetKind::Image(DiskFormat::Raw),
                "digital-ocean",
                OutFormat::Gz
            )
        );
        let p = parse_asset_path("gcp-amd64.raw.tar.gz").unwrap();
        assert_eq!(p.out_format, OutFormat::TarGz);
        assert_eq!(parse_asset_path("kernel-x86_64").unwrap().arch, Arch::Amd64);
        assert_eq!(
            parse_asset_path("initramfs-arm64.xz").unwrap().kind,
            AssetKind::Initramfs
        );
        let p = parse_asset_path("installer-amd64-secureboot.tar").unwrap();
        assert!(p.secureboot && p.kind == AssetKind::Installer);
        let p = parse_asset_path("aws-installer-arm64.tar").unwrap();
        assert_eq!((p.platform.as_str(), p.arch), ("aws", Arch::Arm64));
        let p = parse_asset_path("cmdline-metal-amd64-secureboot").unwrap();
        assert!(p.secureboot && p.kind == AssetKind::Cmdline);
        assert_eq!(
            parse_asset_path("metal-amd64-uki.efi").unwrap().kind,
            AssetKind::Uki
        );
        assert_eq!(
            parse_asset_path("oracle-amd64.qcow2").unwrap().kind,
            AssetKind::Image(DiskFormat::Qcow2)
        );
    }

    #[test]
    fn hostile_paths() {
        for bad in [
            "metal-amd64.ssd",
            "../../etc/passwd",
            "metal-rpi_generic-arm64.raw.xz",
            "metal-riscv64.iso",
            "kernel-",
            "kernel-../x",
            "..%2f.iso",
            "/etc/passwd.raw",
            "",
            ".iso",
            "-amd64.iso",
        ] {
            assert!(parse_asset_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.9.2").unwrap(), "v1.9.2");
        assert_eq!(parse_version("v1.10.0-beta.1").unwrap(), "v1.10.0-beta.1");
        for bad in [
            "..",
            "v1.9",
            "v1.9.2/..",
            "v1.9.x",
            "v1.9.2-",
            "",
            "v",
            "v1.10.0-beta.1metmd..aamd64-s",
            "v1.0.0-a.",
        ] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
        let mut v = vec!["v1.10.0", "v1.9.2", "v1.10.0-alpha.1", "v1.2.0"];
        v.sort_by_key(|v| version_key(v));
        assert_eq!(v, ["v1.2.0", "v1.9.2", "v1.10.0-alpha.1", "v1.10.0"]);
    }
}
