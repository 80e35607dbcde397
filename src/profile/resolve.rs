//! From what the user gave (a built-in name, a YAML file, or `-` for stdin, plus
//! flags) to the complete profile a build runs with.

use std::io::Read;
use std::path::Path;

use serde_yaml::Value;

use super::defaults::{self, Roots};
use super::{ContainerAsset, EnrollKeys, OutputKind, Profile, builtin, merge, validate};
use crate::error::{Error, IoContext, Result};
use crate::meta::MetaValue;

/// Where the profile document comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A built-in profile name.
    Builtin(String),
    /// A YAML file.
    File(std::path::PathBuf),
    /// YAML on standard input.
    Stdin,
}

impl Source {
    /// `-` is stdin; an existing file (or anything that looks like a path) is a file;
    /// anything else is a built-in name.
    pub fn parse(arg: &str) -> Source {
        if arg == "-" {
            Source::Stdin
        } else if builtin::yaml(arg).is_none()
            && (Path::new(arg).is_file()
                || arg.contains('/')
                || arg.ends_with(".yaml")
                || arg.ends_with(".yml"))
        {
            Source::File(arg.into())
        } else {
            Source::Builtin(arg.to_string())
        }
    }
}

/// Profile-shaping flags. `None`/empty leaves the profile's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub arch: Option<String>,
    pub platform: Option<String>,
    pub extra_kernel_args: Vec<String>,
    pub meta: Vec<MetaValue>,
    pub output_kind: Option<OutputKind>,
    pub out_format: Option<super::OutFormat>,
    pub base_installer_image: Option<String>,
    pub insecure: bool,
    /// `--image-cache`: a reference when it parses as one, else an OCI layout path.
    pub image_cache: Option<String>,
    pub system_extension_images: Vec<String>,
    pub include_well_known_certs: bool,
    pub enroll_keys: Option<EnrollKeys>,
    pub embedded_config: Option<String>,
    /// Talos version (`version:`), e.g. `v1.10.0`.
    pub version: Option<String>,
    /// Bootloader of a disk image or ISO (`output.imageOptions.bootloader`,
    /// `output.isoOptions.bootloader`).
    pub bootloader: Option<super::Bootloader>,
    /// `--secureboot-signer-address`: the SecureBoot signer's `signerAddress`.
    pub secureboot_signer_address: Option<String>,
    /// `--pcr-signer-address`: the PCR signer's `signerAddress`.
    pub pcr_signer_address: Option<String>,
    /// `--overlay-image`: sets `overlay.image.imageRef` and `input.overlayInstaller.imageRef`
    /// (`--insecure` does not apply, as in Talos).
    pub overlay_image: Option<String>,
    /// `--overlay-name`.
    pub overlay_name: Option<String>,
    /// `--overlay-option`s, merged over the profile's `overlay.options`.
    pub overlay_options: serde_yaml::Mapping,
}

/// Reads, merges, overrides, defaults and validates: the profile a build runs with.
/// An overlay's profiles are not looked up (see [`resolve_with_overlay`]).
pub fn resolve(source: &Source, overrides: &Overrides, roots: &Roots) -> Result<Profile> {
    resolve_with_overlay(source, overrides, roots, None, &crate::report::Silent)
        .map(|(profile, _)| profile)
}

/// [`resolve`], and with `overlay_dir` the profile's overlay image (or
/// `--overlay-image`) is extracted there first and its `profiles/<name>.yaml` are base
/// profiles looked up before the built-ins (Talos's `handleOverlay`, `handleProf`).
pub fn resolve_with_overlay(
    source: &Source,
    overrides: &Overrides,
    roots: &Roots,
    overlay_dir: Option<&Path>,
    progress: &dyn crate::report::Progress,
) -> Result<(Profile, Option<crate::overlay::Extracted>)> {
    let (value, origin) = match source {
        Source::Builtin(name) => (
            single("baseProfileName", Value::String(name.clone())),
            format!("built-in {name}"),
        ),
        Source::File(path) => {
            let text = std::fs::read_to_string(path).at(path)?;
            (
                parse_yaml(&text, &path.display().to_string())?,
                path.display().to_string(),
            )
        }
        Source::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .during("reading the profile from stdin")?;
            (parse_yaml(&text, "on stdin")?, "on stdin".to_string())
        }
    };
    // Typed once first, so unknown fields are reported against the user's document.
    let user = Profile::from_value(value.clone(), &origin)?;
    let mut overlay = user.overlay.clone();
    apply_overlay(&mut overlay, &mut None, overrides);
    let extracted = match (&overlay, overlay_dir) {
        (Some(o), Some(dir)) => Some(crate::overlay::extract(&o.image, &o.name, dir, progress)?),
        _ => None,
    };
    let merged = if user.base_profile_name.is_empty() {
        value
    } else {
        let name = &user.base_profile_name;
        let base = match extracted.as_ref().and_then(|e| e.profiles.get(name)) {
            Some(v) => v.clone(),
            None => {
                let yaml = builtin::yaml(name).ok_or_else(|| match source {
                    Source::Builtin(_) => Error::invalid(format!(
                        "unknown profile {name:?}: not a built-in profile (see `imager profiles`), not an overlay profile and not a file"
                    )),
                    _ => Error::invalid(format!(
                        "profile {origin}: unknown baseProfileName {name:?}"
                    )),
                })?;
                parse_yaml(yaml, name)?
            }
        };
        merge::merge(base, value)
    };
    let mut profile = Profile::from_value(merged, &origin)?;
    profile.base_profile_name.clear();
    apply(&mut profile, overrides);
    defaults::fill(&mut profile, roots);
    if let Some(o) = profile.overlay.as_mut()
        && o.name.is_empty()
    {
        o.name = crate::overlay::DEFAULT_NAME.to_string();
    }
    validate::validate(&profile)?;
    Ok((profile, extracted))
}

/// The overlay flags over the profile's `overlay` (and `input.overlayInstaller`).
fn apply_overlay(
    overlay: &mut Option<super::Overlay>,
    installer: &mut Option<ContainerAsset>,
    o: &Overrides,
) {
    if o.overlay_image.is_none() && o.overlay_name.is_none() && o.overlay_options.is_empty() {
        return;
    }
    let overlay = overlay.get_or_insert_with(Default::default);
    if let Some(image) = &o.overlay_image {
        overlay.image = ContainerAsset {
            image_ref: image.clone(),
            ..Default::default()
        };
        *installer = Some(ContainerAsset {
            image_ref: image.clone(),
            ..Default::default()
        });
    }
    if let Some(name) = &o.overlay_name {
        overlay.name = name.clone();
    }
    for (k, v) in &o.overlay_options {
        overlay.options.insert(k.clone(), v.clone());
    }
}

fn parse_yaml(text: &str, origin: &str) -> Result<Value> {
    let v: Value =
        serde_yaml::from_str(text).map_err(|e| Error::invalid(format!("profile {origin}: {e}")))?;
    Ok(if v.is_null() {
        Value::Mapping(Default::default())
    } else {
        v
    })
}

fn single(key: &str, value: Value) -> Value {
    let mut m = serde_yaml::Mapping::new();
    m.insert(Value::String(key.into()), value);
    Value::Mapping(m)
}

fn apply(profile: &mut Profile, o: &Overrides) {
    if let Some(arch) = &o.arch {
        profile.arch = arch.clone();
    }
    if let Some(platform) = o.platform.as_ref().filter(|p| !p.is_empty()) {
        profile.platform = platform.clone();
    }
    profile
        .customization
        .extra_kernel_args
        .extend(o.extra_kernel_args.iter().cloned());
    profile
        .customization
        .meta_contents
        .extend(o.meta.iter().cloned());
    if let Some(kind) = o.output_kind.filter(|k| Some(*k) != profile.output.kind) {
        // A different kind starts from that kind's own defaults: the base profile's
        // image/ISO options and compression belong to the kind it was made for.
        profile.output.kind = Some(kind);
        profile.output.image_options = None;
        profile.output.iso_options = None;
        profile.output.out_format = Some(super::OutFormat::Raw);
    }
    if let Some(format) = o.out_format {
        profile.output.out_format = Some(format);
    }
    if let Some(version) = o.version.as_ref().filter(|v| !v.is_empty()) {
        profile.version = version.clone();
    }
    if let Some(bootloader) = o.bootloader {
        match profile.output.kind {
            Some(OutputKind::Iso) => {
                let iso = profile
                    .output
                    .iso_options
                    .get_or_insert_with(Default::default);
                iso.bootloader = Some(bootloader);
            }
            _ => {
                let image = profile
                    .output
                    .image_options
                    .get_or_insert_with(Default::default);
                image.bootloader = Some(bootloader);
            }
        }
    }
    if let Some(image) = &o.base_installer_image {
        profile.input.base_installer = Some(ContainerAsset {
            image_ref: image.clone(),
            force_insecure: o.insecure,
            ..Default::default()
        });
    } else if o.insecure
        && let Some(base) = profile.input.base_installer.as_mut()
    {
        base.force_insecure = true;
    }
    if let Some(cache) = &o.image_cache {
        // As Talos's imager: a strict image reference is pulled, anything else is an
        // OCI layout on disk.
        let is_ref = !std::path::Path::new(cache).exists()
            && crate::oci::Reference::parse(cache)
                .is_ok_and(|r| matches!(r, crate::oci::Reference::Registry(_)));
        profile.input.image_cache = Some(if is_ref {
            ContainerAsset {
                image_ref: cache.clone(),
                force_insecure: o.insecure,
                ..Default::default()
            }
        } else {
            ContainerAsset {
                oci_path: cache.clone(),
                ..Default::default()
            }
        });
    }
    for image in &o.system_extension_images {
        profile.input.system_extensions.push(ContainerAsset {
            image_ref: image.clone(),
            force_insecure: o.insecure,
            ..Default::default()
        });
    }
    if o.include_well_known_certs {
        profile
            .input
            .secureboot
            .get_or_insert_with(Default::default)
            .include_well_known_certs = true;
    }
    // As Talos: the address is set beside whatever else the block holds (it takes
    // precedence over every other backend).
    if let Some(a) = &o.secureboot_signer_address {
        let sb = profile
            .input
            .secureboot
            .get_or_insert_with(Default::default);
        sb.secure_boot_signer
            .get_or_insert_with(Default::default)
            .signer_address = a.clone();
    }
    if let Some(a) = &o.pcr_signer_address {
        let sb = profile
            .input
            .secureboot
            .get_or_insert_with(Default::default);
        sb.pcr_signer
            .get_or_insert_with(Default::default)
            .signer_address = a.clone();
    }
    if let Some(mode) = o.enroll_keys {
        profile
            .output
            .image_options
            .get_or_insert_with(Default::default)
            .sd_boot_enroll_keys = Some(mode);
        profile
            .output
            .iso_options
            .get_or_insert_with(Default::default)
            .sd_boot_enroll_keys = mode;
    }
    if let Some(config) = &o.embedded_config {
        profile.customization.embedded_machine_configuration = config.clone();
    }
    apply_overlay(
        &mut profile.overlay,
        &mut profile.input.overlay_installer,
        o,
    );
    // The image options created for --secureboot-enroll-keys must not make a
    // non-image profile look like an image.
    if profile.output.kind != Some(OutputKind::Image)
        && let Some(io) = &profile.output.image_options
        && io.disk_size == 0
        && io.disk_format.is_none()
    {
        profile.output.image_options = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_kinds() {
        assert_eq!(Source::parse("-"), Source::Stdin);
        assert_eq!(
            Source::parse("secureboot-iso"),
            Source::Builtin("secureboot-iso".into())
        );
        assert_eq!(Source::parse("./p.yaml"), Source::File("./p.yaml".into()));
        assert_eq!(Source::parse("nope"), Source::Builtin("nope".into()));
    }

    #[test]
    fn builtin_with_flags() {
        let o = Overrides {
            arch: Some("arm64".into()),
            meta: vec![MetaValue::parse("0x0a=x").unwrap()],
            output_kind: Some(OutputKind::Cmdline),
            ..Default::default()
        };
        let p = resolve(&Source::Builtin("metal".into()), &o, &Roots::default()).unwrap();
        assert_eq!(p.arch, "arm64");
        assert_eq!(p.output.kind, Some(OutputKind::Cmdline));
        assert_eq!(p.input.kernel.path, "/usr/install/arm64/vmlinuz");
        assert_eq!(p.version, "v1.9.2");
        assert!(p.base_profile_name.is_empty());
    }
}
