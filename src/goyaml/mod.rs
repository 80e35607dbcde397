//! The parts of go-yaml v3 (`gopkg.in/yaml.v3`) and v4 (`go.yaml.in/yaml/v4`) that decide
//! the bytes of the YAML files Talos tools and Image Factory write with it, one file per
//! go-yaml file: the plain-scalar resolver ([`resolve`], `resolve.go`), Go's float
//! conversions ([`float`]), the map key order ([`sort`], `sorter.go`) and a block-style
//! emitter with the string style choice ([`emit`], `emitterc.go` and `encode.go`). Its
//! users are an Image Factory schematic's canonical bytes ([`crate::schematic`]) and the
//! `extensions.yaml` and extension `manifest.yaml` files ([`crate::extensions::manifest`]).
//!
//! Why not serde_yaml: its emitter (libyaml through `unsafe-libyaml`, with its own
//! settings: 2-space indent, indentless sequences, different quoting of `yes`/`on` and
//! numeric-looking strings) produces other bytes, and a schematic's ID is the SHA-256 of
//! exactly the bytes the factory's go-yaml writes. The schemas are fixed and small, so
//! the emitter covers only what they need, with indent 4 as `yaml.Marshal` and
//! `yaml.NewEncoder` configure it.
//!
//! [`marshal_v4`] writes what `go.yaml.in/yaml/v4`'s `Marshal` writes (its v3 defaults:
//! indent 4, legacy quoting, unlimited width), which Image Factory uses from v0.9.0;
//! it differs from v3 in the representer (`internal/libyaml/representer.go`
//! `stringv`: YAML 1.1 booleans, sexagesimal-looking strings and `<<` single-quoted; a
//! multi-line string literal only when it has two bytes or more and a non-space
//! character, else double-quoted) and in the emitter's block scalars (`emitter.go`
//! `writeBlockScalarHints`/`writeLiteralScalar`: an indentation indicator only before a
//! leading space, and the header always ends its line).
//!
//! go-yaml's own output is not always a fixed point of its reader;
//! [`unstable_encoding`] names those cases for round-trip checks.

mod emit;
mod float;
mod resolve;
mod sort;

use emit::{Dialect, emit};
pub(crate) use float::format_float;
pub(crate) use resolve::{Resolved, is_old_bool, resolve};
pub(crate) use sort::key_less;

/// Whether `yaml` (this emitter's output) holds one of the encodings go-yaml writes
/// but does not read back as the same text: a `|4` block scalar (the indentation
/// indicator of a multi-line value starting with a space or a break is relative to the
/// wrong column inside a sequence item), raw tabs (in literal blocks, where a reader
/// may take them for indentation) and raw U+2028/U+2029 (copied into single quotes,
/// where a reader folds them as line breaks).
pub fn unstable_encoding(yaml: &str) -> bool {
    yaml.contains("|4") || yaml.contains(['\t', '\u{2028}', '\u{2029}'])
}

/// A node of the document to emit. Strings carry their text; `Raw` scalars (numbers,
/// booleans, null) are emitted plain as go-yaml does for non-string kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Str(String),
    Raw(String),
    Map(Vec<(String, Out)>),
    Seq(Vec<Out>),
}

/// `yaml.Marshal` of the document rooted at `root` (a mapping), which is also what
/// `yaml.NewEncoder(w).Encode` writes for one document.
pub(crate) fn marshal(root: &Out) -> String {
    marshal_indent(root, 4)
}

/// `go.yaml.in/yaml/v4` `Marshal` of the document rooted at `root` (a mapping).
pub(crate) fn marshal_v4(root: &Out) -> String {
    emit(root, 4, Dialect::V4)
}

/// What an encoder with `SetIndent(indent)` writes for the document rooted at `root`.
pub(crate) fn marshal_indent(root: &Out, indent: u8) -> String {
    emit(root, indent, Dialect::V3)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn string_styles() {
        let one = |s: &str| marshal(&Out::Map(vec![("k".into(), Out::Str(s.into()))]));
        for (s, want) in [
            ("20250211", "\"20250211\""),
            ("1.10", "\"1.10\""),
            ("1e3", "\"1e3\""),
            ("0x10", "\"0x10\""),
            ("012", "\"012\""),
            ("yes", "\"yes\""),
            ("on", "\"on\""),
            ("y", "\"y\""),
            ("true", "\"true\""),
            ("null", "\"null\""),
            ("~", "\"~\""),
            ("", "\"\""),
            ("a\tb", "\"a\\tb\""),
            ("'>= v1.0.0'", "'''>= v1.0.0'''"),
            ("a: b", "'a: b'"),
            ("- x", "'- x'"),
            ("1.10.0", "1.10.0"),
            ("v1.0.0", "v1.0.0"),
            ("-x", "-x"),
            ("x,y", "x,y"),
            ("6.12.9-talos", "6.12.9-talos"),
            ("2025-02-11", "\"2025-02-11\""),
            ("1:20", "\"1:20\""),
            ("a\u{2028}b", "'a\u{2028}    b'"),
            ("a\nb", "|-\n    a\n    b"),
            ("a\n\nb\n\n", "|+\n    a\n\n    b\n"),
            (" a\n", "|4\n     a"),
        ] {
            assert_eq!(one(s), format!("k: {want}\n"), "{s:?}");
        }
        assert!(unstable_encoding(&one("a\u{2028}b")) && unstable_encoding(&one(" a\n")));
        assert!(!unstable_encoding(&one("a\nb")));
    }

    #[test]
    fn set_indent_2_indents_sequences_as_go_yaml() {
        // go-yaml v3: NewEncoder, SetIndent(2), Encode of a struct with these fields.
        let entry = |fields: &[(&str, &str)]| {
            Out::Map(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), Out::Str(v.to_string())))
                    .collect(),
            )
        };
        let doc = Out::Map(vec![
            (
                "input".into(),
                Out::Map(vec![(
                    "systemExtensions".into(),
                    Out::Seq(vec![
                        entry(&[("imageRef", "ghcr.io/x/y:1")]),
                        entry(&[
                            ("imageRef", ""),
                            ("tarballPath", "/tmp/imager123/embedded-config.tar"),
                        ]),
                    ]),
                )]),
            ),
            ("args".into(), Out::Seq(vec![Out::Str("a".into())])),
            ("text".into(), Out::Str(" a\n".into())),
        ]);
        assert_eq!(
            marshal_indent(&doc, 2),
            "input:\n  systemExtensions:\n    - imageRef: ghcr.io/x/y:1\n    - imageRef: \"\"\n      tarballPath: /tmp/imager123/embedded-config.tar\nargs:\n  - a\ntext: |2\n   a\n"
        );
    }
}
