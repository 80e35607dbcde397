//! The profile: what to build, from which inputs, into which output.
//!
//! The YAML schema uses the Talos imager's field names, so a Talos profile file
//! works unchanged. A profile comes from a built-in name ([`builtin`]), a YAML file
//! or stdin; `baseProfileName` merges a built-in under it ([`merge`]); [`defaults`]
//! fills what is left open, and [`validate`] enforces the rules of each output kind.

pub mod builtin;
pub mod defaults;
pub mod merge;
pub mod platforms;
pub mod quirks;
pub mod resolve;
pub mod validate;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::meta::MetaValue;

/// A complete build description.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// Built-in profile merged under this one; cleared once resolved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_profile_name: String,
    /// `amd64` or `arm64`.
    #[serde(default)]
    pub arch: String,
    /// Talos platform (`metal`, `aws`, ...): `talos.platform=` and platform kernel args.
    #[serde(default)]
    pub platform: String,
    /// SecureBoot: signed UKI and systemd-boot. `None` keeps the base profile's value.
    #[serde(default)]
    pub secureboot: Option<bool>,
    /// OS name in the UKI's os-release and the UKI file name (default `Talos`).
    /// Read from a profile, never printed: the effective profile matches the Talos
    /// dumps of `pkg/imager/profile/testdata`, which carry no name.
    #[serde(default, skip_serializing)]
    pub name: String,
    /// Target Talos version; drives version-dependent behaviour.
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Customization::is_empty")]
    pub customization: Customization,
    #[serde(default)]
    pub input: Input,
    /// Board overlays (Talos SBC images); accepted in the schema, not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
    #[serde(default)]
    pub output: Output,
}

/// User customization of the boot assets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Customization {
    /// Extra kernel arguments; `-key` / `-key=value` remove defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    /// META values: written to the META partition of disk images, carried on the
    /// kernel command line for the other kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta_contents: Vec<MetaValue>,
    /// A machine configuration to embed into the initramfs (Talos >= 1.12).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub embedded_machine_configuration: String,
}

impl Customization {
    fn is_empty(&self) -> bool {
        *self == Customization::default()
    }
}

/// A file input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileAsset {
    pub path: String,
}

impl FileAsset {
    fn is_unset(v: &Option<FileAsset>) -> bool {
        v.as_ref().is_none_or(|a| *a == FileAsset::default())
    }
}

/// A container image input. `imageRef` is always printed, as Talos does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerAsset {
    #[serde(default)]
    pub image_ref: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_insecure: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tarball_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub oci_path: String,
}

impl ContainerAsset {
    fn is_unset(v: &Option<ContainerAsset>) -> bool {
        v.as_ref().is_none_or(|a| *a == ContainerAsset::default())
    }
}

/// The files and images a build reads. Unset assets are left out of the dump, as in
/// Talos (`pkg/imager/profile/input.go`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Input {
    #[serde(default)]
    pub kernel: FileAsset,
    #[serde(default)]
    pub initramfs: FileAsset,
    #[serde(default, skip_serializing_if = "FileAsset::is_unset")]
    pub sd_stub: Option<FileAsset>,
    #[serde(default, skip_serializing_if = "FileAsset::is_unset")]
    pub sd_boot: Option<FileAsset>,
    #[serde(default, skip_serializing_if = "ContainerAsset::is_unset")]
    pub base_installer: Option<ContainerAsset>,
    #[serde(default, skip_serializing_if = "ContainerAsset::is_unset")]
    pub image_cache: Option<ContainerAsset>,
    #[serde(default, skip_serializing_if = "ContainerAsset::is_unset")]
    pub overlay_installer: Option<ContainerAsset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secureboot: Option<SecureBootAssets>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_extensions: Vec<ContainerAsset>,
}

/// SecureBoot inputs. Both the nested form of current Talos and the flat form of
/// Talos 1.5 profile dumps (`signingKeyPath`, ...) are read; [`SecureBootAssets::normalize`]
/// turns the flat form into the nested one. Both signer blocks are always printed,
/// as Talos does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecureBootAssets {
    #[serde(default, serialize_with = "or_default")]
    pub secure_boot_signer: Option<SigningKeyAndCertificate>,
    #[serde(default, serialize_with = "or_default")]
    pub pcr_signer: Option<SigningKey>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform_key_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_exchange_key_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature_key_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_well_known_certs: bool,
    /// Flat form: the SecureBoot signing key.
    #[serde(default, skip_serializing)]
    pub signing_key_path: String,
    /// Flat form: the SecureBoot signing certificate.
    #[serde(default, skip_serializing)]
    pub signing_cert_path: String,
    /// Flat form: the PCR signing key.
    #[serde(default, skip_serializing)]
    pub pcr_signing_key_path: String,
    /// Flat form: the PCR public key (derived from the private key; accepted and ignored).
    #[serde(default, skip_serializing)]
    pub pcr_public_key_path: String,
}

impl SecureBootAssets {
    /// A copy without secrets (a PKCS#11 URI's `pin-value`), for manifests and logs.
    pub fn redacted(&self) -> Self {
        use crate::sign::backends::pkcs11::redact;
        let mut out = self.clone();
        if let Some(s) = &mut out.secure_boot_signer {
            s.key_path = redact(&s.key_path);
            s.cert_path = redact(&s.cert_path);
        }
        if let Some(p) = &mut out.pcr_signer {
            p.key_path = redact(&p.key_path);
        }
        out
    }

    /// Moves flat-form paths into the nested signer blocks.
    pub fn normalize(&mut self) {
        if !self.signing_key_path.is_empty() || !self.signing_cert_path.is_empty() {
            let signer = self.secure_boot_signer.get_or_insert_with(Default::default);
            if signer.key_path.is_empty() {
                signer.key_path = std::mem::take(&mut self.signing_key_path);
            }
            if signer.cert_path.is_empty() {
                signer.cert_path = std::mem::take(&mut self.signing_cert_path);
            }
        }
        if !self.pcr_signing_key_path.is_empty() {
            let signer = self.pcr_signer.get_or_insert_with(Default::default);
            if signer.key_path.is_empty() {
                signer.key_path = std::mem::take(&mut self.pcr_signing_key_path);
            }
        }
        self.signing_key_path.clear();
        self.signing_cert_path.clear();
        self.pcr_signing_key_path.clear();
        self.pcr_public_key_path.clear();
    }
}

/// Prints an unset block as an empty one.
fn or_default<T: Default + Serialize, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(v) => v.serialize(s),
        None => T::default().serialize(s),
    }
}

/// A signing key with its certificate (the SecureBoot signer), fields in Talos's order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKeyAndCertificate {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_path: String,
    #[serde(
        default,
        rename = "azureVaultURL",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_vault_url: String,
    #[serde(
        default,
        rename = "azureCertificateID",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_certificate_id: String,
    #[serde(
        default,
        rename = "awsKMSKeyID",
        skip_serializing_if = "String::is_empty"
    )]
    pub aws_kms_key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aws_region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aws_cert_path: String,
    #[serde(
        default,
        rename = "awsCertARN",
        skip_serializing_if = "String::is_empty"
    )]
    pub aws_cert_arn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signer_address: String,
}

/// A signing key alone (the PCR signer), fields in Talos's order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKey {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_path: String,
    #[serde(
        default,
        rename = "azureVaultURL",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_vault_url: String,
    #[serde(
        default,
        rename = "azureKeyID",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub azure_key_version: String,
    #[serde(
        default,
        rename = "awsKMSKeyID",
        skip_serializing_if = "String::is_empty"
    )]
    pub aws_kms_key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aws_region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signer_address: String,
}

/// Board overlay (not supported by this implementation; kept so such profiles parse).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overlay {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: ContainerAsset,
    #[serde(default, skip_serializing_if = "serde_yaml::Mapping::is_empty")]
    pub options: serde_yaml::Mapping,
}

/// What to produce.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Output {
    #[serde(default)]
    pub kind: Option<OutputKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_options: Option<ImageOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso_options: Option<IsoOptions>,
    #[serde(default)]
    pub out_format: Option<OutFormat>,
}

/// Options of the `image` kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageOptions {
    /// Disk size in bytes.
    #[serde(default)]
    pub disk_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_format: Option<DiskFormat>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub disk_format_options: String,
    /// Logical sector size; 0 means 512.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_sector_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
    /// Not printed when `if-safe`, the zero value of Talos's enum.
    #[serde(default, skip_serializing_if = "EnrollKeys::is_default")]
    pub sd_boot_enroll_keys: Option<EnrollKeys>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Options of the `iso` kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IsoOptions {
    #[serde(default)]
    pub sd_boot_enroll_keys: EnrollKeys,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The YAML / CLI spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    Error::invalid(format!("unknown {} {s:?} (expected one of: {})", stringify!($name), all.join(", ")))
                })
            }
        }
    };
}

string_enum!(
    /// Output kinds.
    OutputKind {
        Iso = "iso",
        Image = "image",
        Installer = "installer",
        Kernel = "kernel",
        Initramfs = "initramfs",
        Uki = "uki",
        Cmdline = "cmdline",
    }
);

string_enum!(
    /// Post-processing of the artifact.
    OutFormat {
        Raw = "raw",
        TarGz = ".tar.gz",
        Xz = ".xz",
        Gz = ".gz",
        Zst = ".zst",
    }
);

string_enum!(
    /// Disk image container formats.
    DiskFormat {
        Raw = "raw",
        Qcow2 = "qcow2",
        Vhd = "vhd",
        Ova = "ova",
    }
);

string_enum!(
    /// Boot loaders.
    Bootloader {
        DualBoot = "dual-boot",
        SdBoot = "sd-boot",
        Grub = "grub",
    }
);

string_enum!(
    /// systemd-boot's `secure-boot-enroll` policy.
    EnrollKeys {
        IfSafe = "if-safe",
        Manual = "manual",
        Force = "force",
        Off = "off",
    }
);

// string_enum! cannot mark a default variant.
#[allow(clippy::derivable_impls)]
impl Default for EnrollKeys {
    fn default() -> Self {
        EnrollKeys::IfSafe
    }
}

impl EnrollKeys {
    fn is_default(v: &Option<EnrollKeys>) -> bool {
        v.is_none_or(|v| v == EnrollKeys::IfSafe)
    }
}

impl Profile {
    /// Parses a profile document strictly: unknown fields are errors naming their path.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Profile> {
        let value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| Error::invalid(format!("profile {origin}: {e}")))?;
        Profile::from_value(value, origin)
    }

    /// Deserializes a YAML value strictly (see [`Profile::from_yaml`]).
    pub fn from_value(value: serde_yaml::Value, origin: &str) -> Result<Profile> {
        let value = if value.is_null() {
            serde_yaml::Value::Mapping(Default::default())
        } else {
            value
        };
        let mut profile: Profile =
            serde_path(value).map_err(|e| Error::invalid(format!("profile {origin}: {e}")))?;
        if let Some(sb) = profile.input.secureboot.as_mut() {
            sb.normalize();
        }
        Ok(profile)
    }

    /// The profile as YAML, the way Talos prints it before a build (`Profile.Dump`:
    /// go-yaml with `SetIndent(2)`, written by [`crate::goyaml`]).
    pub fn to_yaml(&self) -> String {
        let value = serde_yaml::to_value(self).expect("profile serializes");
        crate::goyaml::marshal_indent(&yaml_out(&value), 2)
    }

    /// `secureboot`, with unset meaning off.
    pub fn secureboot(&self) -> bool {
        self.secureboot.unwrap_or(false)
    }

    /// Version quirks of the target version.
    pub fn quirks(&self) -> quirks::Quirks {
        quirks::Quirks::new(&self.version)
    }
}

/// A serialized profile as go-yaml nodes: strings are go-yaml strings (quoted as it
/// quotes them), numbers, booleans and null are written as they are.
fn yaml_out(v: &serde_yaml::Value) -> crate::goyaml::Out {
    use crate::goyaml::Out;
    use serde_yaml::Value;
    match v {
        Value::Null => Out::Raw("null".into()),
        Value::Bool(b) => Out::Raw(b.to_string()),
        Value::Number(n) => Out::Raw(n.to_string()),
        Value::String(s) => Out::Str(s.clone()),
        Value::Sequence(items) => Out::Seq(items.iter().map(yaml_out).collect()),
        Value::Mapping(m) => Out::Map(
            m.iter()
                .map(|(k, v)| {
                    let k = k.as_str().expect("profile keys are field names");
                    (k.to_string(), yaml_out(v))
                })
                .collect(),
        ),
        Value::Tagged(t) => yaml_out(&t.value),
    }
}

/// Deserializes with the path of the offending field in the message
/// (`input.kernel.pth: unknown field ...`).
fn serde_path(value: serde_yaml::Value) -> std::result::Result<Profile, String> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    Profile::deserialize(de).map_err(|e| {
        let path = track.path().to_string();
        if path.is_empty() || path == "." {
            e.to_string()
        } else {
            format!("{path}: {e}")
        }
    })
}
