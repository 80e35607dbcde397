//! Image Factory schematics: the strict parser of a `POST /schematics` body, the
//! canonical YAML re-encoding and the schematic ID (lowercase hex SHA-256 of that
//! encoding), byte-compatible with factory.talos.dev.
//!
//! The factory decodes the body with go-yaml (`KnownFields(true)`, first document
//! only) into a fixed Go struct and hashes `yaml.Marshal` of it; since Image Factory
//! v0.9.0 that is `go.yaml.in/yaml/v4` (v1.5.0, the release of today, pins
//! `v4.0.0-rc.6.0.20260809190231-643e93b9c9be`), before it `gopkg.in/yaml.v3`. The
//! ID depends on
//! go-yaml's decoding rules (how a scalar becomes a string, a `uint8`, a bool) and on
//! its emitter's layout and quoting. [`parse`] reads the YAML (JSON is YAML) with
//! `saphyr-parser`'s event stream ([`read`]), which lets it refuse anchors, aliases,
//! merge keys, unusual tags and nesting deeper than [`MAX_DEPTH`] before anything is
//! built, and then decodes the tree with go-yaml v3's rules ([`decode`]; v4's legacy
//! decoder keeps them);
//! [`Schematic::canonical_yaml`] writes the bytes with the go-yaml v4 emitter rules of
//! [`crate::goyaml`] (see there for why that is written here rather than taken from
//! serde_yaml). A schematic stored under a v3 ID stays found by that ID: the store is
//! keyed by ID and never re-derives it; only new bodies get v4 IDs.
//!
//! Stricter than the factory where it is cheap: bodies over [`MAX_BODY`], `owner`
//! (an Enterprise field), `bootloader: auto`, anchors/aliases/merge keys, tags other
//! than `!!str`/`!!map`/`!!seq`, non-string keys in nested overlay options, timestamps
//! in overlay options, and raw NEL/LS/PS characters (libyaml reads them as line breaks,
//! YAML 1.2 parsers as text; their escapes are fine) are refused.
//!
//! Judged by go-yaml itself: `tests/schematic.rs` compares the bytes for thousands of
//! bodies with go-yaml v4's answers, kept in `tests/data/goyaml-v4/`.

mod decode;
mod read;

use crate::goyaml::{self, Out};
use decode::decode_schematic;
use read::read_first_document;
use sha2::{Digest, Sha256};

/// The largest schematic body accepted (bytes); larger is [`SchematicError::TooLarge`].
pub const MAX_BODY: usize = 64 * 1024;

/// The deepest nesting of collections accepted in a body.
pub const MAX_DEPTH: usize = 64;

/// Why a body is not a schematic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchematicError {
    /// The body is larger than [`MAX_BODY`] (HTTP 413).
    #[error("schematic body is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// The body is not a valid schematic (HTTP 400); the message names the rule.
    #[error("invalid schematic: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> SchematicError {
    SchematicError::Invalid(msg.into())
}

/// The bootloader a schematic asks for (`customization.bootloader`); absent means the
/// Talos default for the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootloader {
    DualBoot,
    SdBoot,
    Grub,
}

impl Bootloader {
    /// The name as written in schematics.
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::DualBoot => "dual-boot",
            Bootloader::SdBoot => "sd-boot",
            Bootloader::Grub => "grub",
        }
    }
}

/// An overlay option value (`overlay.options` is free-form).
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    String(String),
    List(Vec<OptionValue>),
    /// Keys in go-yaml's map order.
    Map(Vec<(String, OptionValue)>),
}

/// `overlay`: the board overlay image and its options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overlay {
    pub image: String,
    pub name: String,
    /// In go-yaml's key order.
    pub options: Vec<(String, OptionValue)>,
}

/// A decoded schematic: the factory's `schematic.Schematic` (community edition, so no
/// `owner`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schematic {
    overlay: Overlay,
    embedded_machine_configuration: String,
    extra_kernel_args: Vec<String>,
    meta: Vec<(u8, String)>,
    official_extensions: Vec<String>,
    bootloader: Option<Bootloader>,
    enroll_keys: String,
    include_well_known_certificates: bool,
    sector_size: u64,
}

impl Schematic {
    /// The bytes the factory hashes: go-yaml v4 `Marshal` of the schematic struct
    /// (Image Factory from v0.9.0; v3's bytes differ in the quoting of YAML 1.1
    /// booleans, sexagesimal-looking strings and `<<`, and in block scalars).
    pub fn canonical_yaml(&self) -> String {
        goyaml::marshal_v4(&self.to_out())
    }

    /// The schematic ID: lowercase hex SHA-256 of [`Self::canonical_yaml`].
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_yaml().as_bytes()))
    }

    /// `customization.extraKernelArgs`, in order, duplicates kept.
    pub fn extra_kernel_args(&self) -> &[String] {
        &self.extra_kernel_args
    }

    /// `customization.meta` as (key, value), in order.
    pub fn meta(&self) -> Vec<(u8, String)> {
        self.meta.clone()
    }

    /// `customization.systemExtensions.officialExtensions`, in order.
    pub fn official_extensions(&self) -> &[String] {
        &self.official_extensions
    }

    /// `customization.bootloader` (`dual-boot`, `sd-boot`, `grub`), absent for the default.
    pub fn bootloader(&self) -> Option<&str> {
        self.bootloader.map(Bootloader::as_str)
    }

    /// `customization.secureboot.includeWellKnownCertificates`.
    pub fn include_well_known_certificates(&self) -> bool {
        self.include_well_known_certificates
    }

    /// `customization.secureboot.enrollKeys` (`off`, `manual`, `if-safe`, `force`;
    /// checked only when a SecureBoot asset is built), absent when not given.
    pub fn secureboot_enroll_keys(&self) -> Option<&str> {
        (!self.enroll_keys.is_empty()).then_some(self.enroll_keys.as_str())
    }

    /// `customization.diskImage.sectorSize`, absent when not given (512 then).
    pub fn sector_size(&self) -> Option<u64> {
        (self.sector_size != 0).then_some(self.sector_size)
    }

    /// `customization.embeddedMachineConfiguration`, absent when not given.
    pub fn embedded_machine_configuration(&self) -> Option<&str> {
        (!self.embedded_machine_configuration.is_empty())
            .then_some(self.embedded_machine_configuration.as_str())
    }

    /// `overlay`, absent when not given.
    pub fn overlay(&self) -> Option<&Overlay> {
        (self.overlay != Overlay::default()).then_some(&self.overlay)
    }

    /// A schematic with these customizations (what the web form builds); the result
    /// is what [`parse`] would return for the equivalent body.
    pub fn new(
        extra_kernel_args: Vec<String>,
        meta: Vec<(u8, String)>,
        official_extensions: Vec<String>,
        secureboot_well_known_certificates: bool,
    ) -> Self {
        Schematic {
            extra_kernel_args,
            meta,
            official_extensions,
            include_well_known_certificates: secureboot_well_known_certificates,
            ..Default::default()
        }
    }

    /// The document as go-yaml's encoder sees the struct: fixed field order, empty
    /// (zero) fields with `omitempty` dropped, `customization` always present.
    fn to_out(&self) -> Out {
        let strs = |v: &[String]| Out::Seq(v.iter().map(|s| Out::Str(s.clone())).collect());
        let mut root = Vec::new();
        if self.overlay != Overlay::default() {
            let mut o = vec![
                ("image".to_string(), Out::Str(self.overlay.image.clone())),
                ("name".to_string(), Out::Str(self.overlay.name.clone())),
            ];
            if !self.overlay.options.is_empty() {
                o.push(("options".into(), option_map_out(&self.overlay.options)));
            }
            root.push(("overlay".to_string(), Out::Map(o)));
        }
        let mut c = Vec::new();
        if !self.embedded_machine_configuration.is_empty() {
            c.push((
                "embeddedMachineConfiguration".into(),
                Out::Str(self.embedded_machine_configuration.clone()),
            ));
        }
        if !self.extra_kernel_args.is_empty() {
            c.push(("extraKernelArgs".into(), strs(&self.extra_kernel_args)));
        }
        if !self.meta.is_empty() {
            let items = self
                .meta
                .iter()
                .map(|(k, v)| {
                    Out::Map(vec![
                        ("key".into(), Out::Raw(k.to_string())),
                        ("value".into(), Out::Str(v.clone())),
                    ])
                })
                .collect();
            c.push(("meta".into(), Out::Seq(items)));
        }
        if !self.official_extensions.is_empty() {
            c.push((
                "systemExtensions".into(),
                Out::Map(vec![(
                    "officialExtensions".into(),
                    strs(&self.official_extensions),
                )]),
            ));
        }
        if let Some(b) = self.bootloader {
            c.push(("bootloader".into(), Out::Str(b.as_str().into())));
        }
        let mut sb = Vec::new();
        if !self.enroll_keys.is_empty() {
            sb.push(("enrollKeys".into(), Out::Str(self.enroll_keys.clone())));
        }
        if self.include_well_known_certificates {
            sb.push((
                "includeWellKnownCertificates".into(),
                Out::Raw("true".into()),
            ));
        }
        if !sb.is_empty() {
            c.push(("secureboot".into(), Out::Map(sb)));
        }
        if self.sector_size != 0 {
            c.push((
                "diskImage".into(),
                Out::Map(vec![(
                    "sectorSize".into(),
                    Out::Raw(self.sector_size.to_string()),
                )]),
            ));
        }
        root.push(("customization".to_string(), Out::Map(c)));
        Out::Map(root)
    }
}

fn option_map_out(m: &[(String, OptionValue)]) -> Out {
    Out::Map(m.iter().map(|(k, v)| (k.clone(), option_out(v))).collect())
}

fn option_out(v: &OptionValue) -> Out {
    match v {
        OptionValue::Null => Out::Raw("null".into()),
        OptionValue::Bool(b) => Out::Raw(b.to_string()),
        OptionValue::Int(i) => Out::Raw(i.to_string()),
        OptionValue::Float(f) => Out::Raw(goyaml::format_float(*f)),
        OptionValue::String(s) => Out::Str(s.clone()),
        OptionValue::List(l) => Out::Seq(l.iter().map(option_out).collect()),
        OptionValue::Map(m) => option_map_out(m),
    }
}

/// Parses a schematic body (YAML or JSON; the content type does not change the
/// parsing, as on the factory, where JSON is read as YAML).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Schematic, SchematicError> {
    let _ = content_type;
    if body.len() > MAX_BODY {
        return Err(SchematicError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|e| invalid(format!("body is not UTF-8: {e}")))?;
    // go-yaml v4's reader: only these characters may appear in a YAML stream (v3's
    // refused DEL and the C1 controls too).
    if let Some(c) = text.chars().find(|&c| {
        !matches!(c as u32, 0x09 | 0x0a | 0x0d | 0x20..=0x7e | 0x7f..=0x9f | 0xa0..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff)
    }) {
        return Err(invalid(format!("control character U+{:04X} is not allowed in YAML", c as u32)));
    }
    // libyaml reads NEL, LS and PS as line breaks (YAML 1.1), YAML 1.2 parsers as
    // content; refused rather than guessed (their escapes `\N`, `\L`, `\P` are fine).
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}'))
    {
        return Err(invalid(format!(
            "line break character U+{:04X} is not supported in a schematic (escape it)",
            c as u32
        )));
    }
    let root = read_first_document(text)?.ok_or_else(|| invalid("empty body (EOF)"))?;
    decode_schematic(&root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(body: &str) -> String {
        parse(body.as_bytes(), None)
            .unwrap_or_else(|e| panic!("{body:?}: {e}"))
            .canonical_yaml()
    }

    #[test]
    fn golden_vectors() {
        for (input, canonical, id) in [
            (
                "{}",
                "customization: {}\n",
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                "{\"customization\": {\"extraKernelArgs\": [\"noapic\", \"nolapic\"]}}",
                "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n",
                "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
            ),
            (
                "{\"customization\": {\"meta\": [{\"key\": 10, \"value\": \"foo\"}]}}",
                "customization:\n    meta:\n        - key: 10\n          value: foo\n",
                "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
            ),
        ] {
            let s = parse(input.as_bytes(), Some("application/json")).unwrap();
            assert_eq!(s.canonical_yaml(), canonical, "{input}");
            assert_eq!(s.id(), id, "{input}");
        }
    }

    /// The factory's own ID tests (`pkg/schematic/schematic_test.go`, `TestID` and
    /// `TestUnmarshalID`): body and expected ID.
    #[test]
    fn factory_repository_vectors() {
        for (body, id) in [
            (
                "{}",
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                "customization: {}",
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                r#"customization: {"extraKernelArgs": []}"#,
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                r#"{"customization": {"extraKernelArgs": ["noapic", "nolapic"]}}"#,
                "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
            ),
            (
                r#"{"customization": {"extraKernelArgs": ["noapic", "nolapic"], "systemExtensions": {}}}"#,
                "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
            ),
            (
                r#"{"customization": {"meta": [{"key": 10, "value": "foo"}], "extraKernelArgs": [], "systemExtensions": {}}}"#,
                "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
            ),
            (
                r#"{"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi"}}"#,
                "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
            ),
            (
                r#"{"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi"},"customization":{}}"#,
                "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
            ),
            (
                r#"{"customization":{"secureboot": {"includeWellKnownCertificates": true}}}"#,
                "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
            ),
            (
                "customization:\n  diskImage:\n    sectorSize: 4096\n",
                "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea",
            ),
        ] {
            assert_eq!(parse(body.as_bytes(), None).unwrap().id(), id, "{body}");
        }
    }

    #[test]
    fn scalar_styles() {
        assert_eq!(
            canon(
                "customization: {extraKernelArgs: ['yes', 'true', '10', '', '#x', 'a: b', ' s', ip=dhcp, -foo, 'ü']}"
            ),
            "customization:\n    extraKernelArgs:\n        - 'yes'\n        - \"true\"\n        - \"10\"\n        - \"\"\n        - '#x'\n        - 'a: b'\n        - ' s'\n        - ip=dhcp\n        - -foo\n        - ü\n"
        );
    }

    #[test]
    fn refusals() {
        for body in [
            "",
            "# nothing",
            "customization: {foo: 1}",
            "customization: {meta: [{key: 256, value: x}]}",
            "owner: me",
            "customization: {bootloader: auto}",
            "a: &x 1",
            "customization: {extraKernelArgs: *x}",
            "customization: {extraKernelArgs: [a}",
            "customization: {extraKernelArgs: [a], extraKernelArgs: [b]}",
        ] {
            assert!(
                matches!(
                    parse(body.as_bytes(), None),
                    Err(SchematicError::Invalid(_))
                ),
                "{body:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse(deep.as_bytes(), None),
            Err(SchematicError::Invalid(_))
        ));
        assert_eq!(
            parse(&vec![b' '; MAX_BODY + 1], None),
            Err(SchematicError::TooLarge)
        );
    }
}
