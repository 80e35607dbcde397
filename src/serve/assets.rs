//! From an asset request (schematic, version, parsed path) to the plan the pipeline
//! builds and its cache key, following Image Factory's enhancement rules
//! (`internal/profile/profile.go` `EnhanceFromSchematic`): which schematic fields apply
//! to which kind, official extensions resolved by name in the version's catalog, and
//! the virtual `schematic` extension appended after them.
//!
//! The profile starts from the built-in profile of the kind (and platform, for disk
//! images), then goes through the same defaults, validation and [`Plan::new`] as a
//! CLI build, so the service builds exactly what `imager` builds for that profile.

use sha2::Digest as _;

use super::paths::{AssetKind, AssetPath};
use super::{ServeError, State};
use crate::meta::MetaValue;
use crate::plan::Plan;
use crate::profile::defaults::{self, Roots};
use crate::profile::{
    Bootloader, ContainerAsset, EnrollKeys, OutFormat, OutputKind, Profile, builtin,
};
use crate::schematic::Schematic;

/// What of a schematic the build uses, read once.
#[derive(Debug, Clone, Default)]
pub struct Customization {
    pub extra_kernel_args: Vec<String>,
    pub meta: Vec<MetaValue>,
    pub extensions: Vec<String>,
    pub bootloader: Option<String>,
    pub enroll_keys: Option<String>,
    pub include_well_known_certs: bool,
    pub sector_size: u32,
    /// The overlay's name, when the schematic names one.
    pub overlay: Option<String>,
    pub embedded_config: String,
    /// The canonical YAML (the virtual extension's `extraInfo`).
    pub canonical: String,
}

impl Customization {
    pub fn of(s: &Schematic) -> Customization {
        Customization {
            extra_kernel_args: s.extra_kernel_args().to_vec(),
            meta: s
                .meta()
                .iter()
                .map(|(key, value)| MetaValue {
                    key: *key,
                    value: value.clone(),
                })
                .collect(),
            extensions: s.official_extensions().to_vec(),
            bootloader: s.bootloader().map(str::to_string),
            enroll_keys: s.secureboot_enroll_keys().map(str::to_string),
            include_well_known_certs: s.include_well_known_certificates(),
            sector_size: s
                .sector_size()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(0),
            overlay: s.overlay().map(|o| o.name.clone()),
            embedded_config: s
                .embedded_machine_configuration()
                .unwrap_or_default()
                .to_string(),
            canonical: s.canonical_yaml(),
        }
    }
}

/// A planned asset build.
pub struct Planned {
    pub plan: Plan,
    /// Hash of everything that decides the asset's bytes.
    pub key: String,
}

fn bad(msg: impl Into<String>) -> ServeError {
    ServeError::bad_request(msg)
}

/// The built-in profile a kind starts from.
fn base_profile(path: &AssetPath) -> &'static str {
    let sb = path.secureboot;
    match path.kind {
        AssetKind::Kernel | AssetKind::Initramfs | AssetKind::Cmdline => "metal",
        AssetKind::Iso if sb => "secureboot-iso",
        AssetKind::Iso => "iso",
        AssetKind::Uki if sb => "secureboot-metal-uki",
        AssetKind::Uki => "metal-uki",
        AssetKind::Installer if sb => "secureboot-installer",
        AssetKind::Installer => "installer",
        AssetKind::Image(_) => {
            let name = if sb {
                format!("secureboot-{}", path.platform)
            } else {
                path.platform.clone()
            };
            builtin::BUILTINS
                .iter()
                .map(|(n, _)| *n)
                .find(|n| *n == name)
                .unwrap_or(if sb { "secureboot-metal" } else { "metal" })
        }
    }
}

/// Plans the asset `path` of schematic `id` for `version`.
pub fn plan(
    state: &State,
    id: &str,
    custom: &Customization,
    version: &str,
    path: &AssetPath,
) -> Result<Planned, ServeError> {
    let config = &state.config;
    state.inputs.prepare(version)?;
    let version_dir = state.inputs.root().join(version);
    let arch = path.arch.as_str();
    if !version_dir.join(arch).join("vmlinuz").is_file() {
        return Err(ServeError::not_found(format!(
            "no {arch} inputs for Talos version {version}"
        )));
    }
    if path.secureboot && config.secureboot_dir.is_none() {
        return Err(bad(
            "secure boot is disabled: this service runs without --secureboot-dir",
        ));
    }
    if let Some(name) = &custom.overlay {
        return Err(bad(format!(
            "the schematic names overlay {name:?}: board overlays are not supported by this service"
        )));
    }
    let base = base_profile(path);
    let mut p: Profile = builtin::get(base).map_err(|e| ServeError::internal(e.to_string()))?;
    p.arch = arch.to_string();
    p.platform = path.platform.clone();
    p.version = version.to_string();
    p.secureboot = Some(path.secureboot);
    let kind = match path.kind {
        AssetKind::Kernel => Some(OutputKind::Kernel),
        AssetKind::Initramfs => Some(OutputKind::Initramfs),
        AssetKind::Cmdline => Some(OutputKind::Cmdline),
        _ => None,
    };
    if let Some(kind) = kind {
        p.output.kind = Some(kind);
        p.output.image_options = None;
        p.output.iso_options = None;
        p.output.out_format = Some(OutFormat::Raw);
    }
    let bootloader = custom
        .bootloader
        .as_deref()
        .map(str::parse::<Bootloader>)
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let with_args = match path.kind {
        AssetKind::Kernel | AssetKind::Initramfs => false,
        AssetKind::Uki | AssetKind::Installer => {
            path.secureboot
                || p.quirks().version() >= Some(crate::profile::quirks::Semver(1, 10, 0))
        }
        _ => true,
    };
    if with_args {
        p.customization.extra_kernel_args = custom.extra_kernel_args.clone();
    }
    if matches!(
        path.kind,
        AssetKind::Iso | AssetKind::Image(_) | AssetKind::Cmdline
    ) {
        p.customization.meta_contents = custom.meta.clone();
    }
    if !custom.embedded_config.is_empty()
        && !matches!(path.kind, AssetKind::Kernel | AssetKind::Cmdline)
    {
        p.customization.embedded_machine_configuration = custom.embedded_config.clone();
    }
    let enroll = custom
        .enroll_keys
        .as_deref()
        .map(str::parse::<EnrollKeys>)
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    match path.kind {
        AssetKind::Image(format) => {
            let o = p.output.image_options.get_or_insert_with(Default::default);
            o.disk_format = Some(format);
            if bootloader.is_some() {
                o.bootloader = bootloader;
            }
            if custom.sector_size != 0 {
                o.disk_sector_size = custom.sector_size;
            }
            if path.secureboot && enroll.is_some() {
                o.sd_boot_enroll_keys = enroll;
            }
            p.output.out_format = Some(path.out_format);
        }
        AssetKind::Iso if bootloader.is_some() || (path.secureboot && enroll.is_some()) => {
            let o = p.output.iso_options.get_or_insert_with(Default::default);
            if bootloader.is_some() {
                o.bootloader = bootloader;
            }
            if let Some(e) = enroll.filter(|_| path.secureboot) {
                o.sd_boot_enroll_keys = e;
            }
        }
        _ => {}
    }
    if path.kind == AssetKind::Installer {
        let base = state.inputs.installer_base(version)?;
        p.input.base_installer = Some(ContainerAsset {
            image_ref: format!("oci:{}", base.display()),
            oci_path: base.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    if !matches!(path.kind, AssetKind::Kernel | AssetKind::Cmdline) {
        for name in &custom.extensions {
            let dir = state.inputs.extension(version, name)?.ok_or_else(|| {
                bad(format!(
                    "official extension {name:?} is not available for Talos version {version}"
                ))
            })?;
            p.input.system_extensions.push(ContainerAsset {
                oci_path: dir.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        let tarball = crate::extensions::schematic::tarball(
            &state.config.work_dir,
            &state.config.external_url,
            state.config.epoch,
            id,
            version,
            &custom.canonical,
        )
        .map_err(|e| ServeError::internal(e.to_string()))?;
        p.input.system_extensions.push(ContainerAsset {
            tarball_path: tarball.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    if path.secureboot && custom.include_well_known_certs {
        p.input
            .secureboot
            .get_or_insert_with(Default::default)
            .include_well_known_certs = true;
    }
    let roots = Roots {
        install_dir: version_dir.clone(),
        secureboot_dir: config
            .secureboot_dir
            .clone()
            .unwrap_or_else(|| "/nonexistent".into()),
    };
    defaults::fill(&mut p, &roots);
    crate::profile::validate::validate(&p).map_err(ServeError::from_build)?;
    let plan = Plan::new(&p, config.epoch).map_err(ServeError::from_build)?;
    let key = cache_key(state, &plan);
    Ok(Planned { plan, key })
}

/// sha256 over the imager version, the epoch, the external URL, the effective profile with the
/// machine-specific directories replaced by names (replicas with other paths share
/// entries) and, for SecureBoot, the signing certificate (other keys, other bytes).
fn cache_key(state: &State, plan: &Plan) -> String {
    let config = &state.config;
    let mut yaml = plan.profile.to_yaml();
    // The inputs first: registry inputs are unpacked under the work directory, and the
    // same inputs give the same key whichever way they came.
    for (dir, name) in [
        (
            state.inputs.root().to_string_lossy().into_owned(),
            "$ASSETS",
        ),
        (config.work_dir.to_string_lossy().into_owned(), "$WORK"),
        (
            config
                .secureboot_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            "$KEYS",
        ),
    ] {
        if !dir.is_empty() {
            yaml = yaml.replace(&dir, name);
        }
    }
    let mut h = sha2::Sha256::new();
    h.update(b"imager-serve asset v1\n");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    // The external URL is in the virtual extension's manifest (its author).
    h.update(
        format!(
            "\n{}\n{}\n{}\n",
            plan.epoch, plan.file_name, config.external_url
        )
        .as_bytes(),
    );
    h.update(yaml.as_bytes());
    if plan.secureboot {
        h.update(state.signing_cert.as_deref().unwrap_or_default());
    }
    hex::encode(h.finalize())
}
