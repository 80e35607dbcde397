//! go-yaml v3's decoding rules for the factory's `Schematic` struct (v4's legacy decoder
//! keeps them, with the differences its commit names): strict fields (`KnownFields`),
//! how a scalar becomes a string, a `uint8`, a bool or the bootloader enum, and
//! overlay options as free-form values. Input: the [`super::read`] tree.

use super::read::Node;
use super::{Bootloader, OptionValue, Schematic, SchematicError, invalid};
use crate::goyaml::{self, Resolved};

pub(super) fn decode_schematic(root: &Node) -> Result<Schematic, SchematicError> {
    let mut s = Schematic::default();
    for_fields(
        root,
        "schematic.Schematic",
        &["owner", "overlay", "customization"],
        |name, v| match name {
            "owner" => {
                if !decode_string(v)?.is_empty() {
                    return Err(invalid(
                        "owner field is only supported in Enterprise edition",
                    ));
                }
                Ok(())
            }
            "overlay" => for_fields(
                v,
                "schematic.Overlay",
                &["image", "name", "options"],
                |name, v| {
                    match name {
                        "image" => s.overlay.image = decode_string(v)?,
                        "name" => s.overlay.name = decode_string(v)?,
                        _ => s.overlay.options = decode_options(v, 0)?,
                    }
                    Ok(())
                },
            ),
            _ => decode_customization(v, &mut s),
        },
    )?;
    Ok(s)
}

pub(super) const CUSTOMIZATION_FIELDS: &[&str] = &[
    "embeddedMachineConfiguration",
    "extraKernelArgs",
    "meta",
    "systemExtensions",
    "bootloader",
    "secureboot",
    "diskImage",
];

pub(super) fn decode_customization(node: &Node, s: &mut Schematic) -> Result<(), SchematicError> {
    for_fields(
        node,
        "schematic.Customization",
        CUSTOMIZATION_FIELDS,
        |name, v| {
            match name {
                "embeddedMachineConfiguration" => {
                    s.embedded_machine_configuration = decode_string(v)?
                }
                "extraKernelArgs" => s.extra_kernel_args = decode_strings(v)?,
                "meta" => {
                    s.meta = decode_list(v, |item| {
                        let (mut key, mut value) = (0u8, String::new());
                        for_fields(item, "schematic.MetaValue", &["key", "value"], |name, v| {
                            match name {
                                "key" => key = decode_uint(v, u8::MAX as u64, "uint8")? as u8,
                                _ => value = decode_string(v)?,
                            }
                            Ok(())
                        })?;
                        Ok((key, value))
                    })?
                }
                "systemExtensions" => for_fields(
                    v,
                    "schematic.SystemExtensions",
                    &["officialExtensions"],
                    |_, v| {
                        s.official_extensions = decode_strings(v)?;
                        Ok(())
                    },
                )?,
                "bootloader" => s.bootloader = decode_bootloader(v)?,
                "secureboot" => for_fields(
                    v,
                    "schematic.SecureBootCustomization",
                    &["enrollKeys", "includeWellKnownCertificates"],
                    |name, v| {
                        match name {
                            "enrollKeys" => s.enroll_keys = decode_string(v)?,
                            _ => s.include_well_known_certificates = decode_bool(v)?,
                        }
                        Ok(())
                    },
                )?,
                _ => for_fields(
                    v,
                    "schematic.DiskImageCustomization",
                    &["sectorSize"],
                    |_, v| {
                        s.sector_size = decode_uint(v, u64::MAX, "uint")?;
                        Ok(())
                    },
                )?,
            }
            Ok(())
        },
    )
}

pub(super) fn type_error(node: &Node, into: &str) -> SchematicError {
    let shown = match node {
        Node::Scalar { value, .. } => format!(" `{}`", value.chars().take(40).collect::<String>()),
        _ => String::new(),
    };
    invalid(format!(
        "line {}: cannot unmarshal {}{} into {}",
        node.line(),
        node.kind(),
        shown,
        into
    ))
}

/// A struct: a mapping whose keys are field names (strictly known, each once), or null.
pub(super) fn for_fields(
    node: &Node,
    ty: &str,
    fields: &[&str],
    mut f: impl FnMut(&str, &Node) -> Result<(), SchematicError>,
) -> Result<(), SchematicError> {
    let entries = match node {
        Node::Map { entries, .. } => entries,
        n if n.is_null() => return Ok(()),
        n => return Err(type_error(n, ty)),
    };
    let mut seen = Vec::new();
    for (k, v) in entries {
        let Node::Scalar { value: name, .. } = k else {
            return Err(type_error(k, "string"));
        };
        if k.resolved() == Some(Resolved::Merge) {
            return Err(invalid(format!(
                "line {}: merge keys are not allowed",
                k.line()
            )));
        }
        if !fields.contains(&name.as_str()) {
            return Err(invalid(format!(
                "line {}: field {name} not found in type {ty}",
                k.line()
            )));
        }
        if seen.contains(name) {
            return Err(invalid(format!(
                "line {}: field {name} already set in type {ty}",
                k.line()
            )));
        }
        seen.push(name.clone());
        f(name, v)?;
    }
    Ok(())
}

/// go-yaml into a Go string: any scalar's text; null leaves it empty.
pub(super) fn decode_string(node: &Node) -> Result<String, SchematicError> {
    match node {
        n if n.is_null() => Ok(String::new()),
        // go-yaml v4 does not construct a timestamp into a string (v3 kept its text).
        n if matches!(n.resolved(), Some(Resolved::Timestamp)) => Err(type_error(n, "string")),
        Node::Scalar { value, .. } => Ok(value.clone()),
        n => Err(type_error(n, "string")),
    }
}

/// go-yaml into a Go slice of strings or structs: a null item decodes to nothing and
/// is dropped (go-yaml's `d.null` fails for those kinds, and the slice skips it).
pub(super) fn decode_list<T>(
    node: &Node,
    mut f: impl FnMut(&Node) -> Result<T, SchematicError>,
) -> Result<Vec<T>, SchematicError> {
    match node {
        Node::Seq { items, .. } => items.iter().filter(|i| !i.is_null()).map(&mut f).collect(),
        n if n.is_null() => Ok(Vec::new()),
        n => Err(type_error(n, "[]")),
    }
}

pub(super) fn decode_strings(node: &Node) -> Result<Vec<String>, SchematicError> {
    decode_list(node, decode_string)
}

/// go-yaml into a Go unsigned integer of at most `max`: an int, or a float that
/// converts without loss; null leaves it 0.
pub(super) fn decode_uint(node: &Node, max: u64, ty: &str) -> Result<u64, SchematicError> {
    let out_of_range = || {
        invalid(format!(
            "line {}: {} is out of range for {ty}",
            node.line(),
            scalar_text(node)
        ))
    };
    match node.resolved() {
        Some(Resolved::Null) => Ok(0),
        Some(Resolved::Int(v)) if v >= 0 && v <= max as i128 => Ok(v as u64),
        Some(Resolved::Int(_)) => Err(out_of_range()),
        // go-yaml v4 takes a float only when the conversion is lossless (v3 truncated).
        Some(Resolved::Float(f)) if f >= 0.0 && f.fract() == 0.0 && f <= max as f64 => Ok(f as u64),
        Some(Resolved::Float(_)) => Err(type_error(node, ty)),
        _ => Err(type_error(node, ty)),
    }
}

pub(super) fn scalar_text(node: &Node) -> &str {
    match node {
        Node::Scalar { value, .. } => value,
        _ => "",
    }
}

/// go-yaml into a Go bool: `true`/`false` (any case variant go-yaml knows), or a YAML
/// 1.1 boolean word such as `yes`/`off`; null leaves it false.
pub(super) fn decode_bool(node: &Node) -> Result<bool, SchematicError> {
    match node.resolved() {
        Some(Resolved::Null) => Ok(false),
        Some(Resolved::Bool(b)) => Ok(b),
        Some(Resolved::Str) => {
            goyaml::is_old_bool(scalar_text(node)).ok_or_else(|| type_error(node, "bool"))
        }
        _ => Err(type_error(node, "bool")),
    }
}

/// Talos `BootloaderKind` text (case-insensitive); `none` and null mean the default.
/// `auto` is not a Talos bootloader kind and is refused.
pub(super) fn decode_bootloader(node: &Node) -> Result<Option<Bootloader>, SchematicError> {
    if node.is_null() {
        return Ok(None);
    }
    let Node::Scalar { value, .. } = node else {
        return Err(type_error(node, "imageropts.BootloaderKind"));
    };
    match value.to_ascii_lowercase().as_str() {
        "none" => Ok(None),
        "dual-boot" => Ok(Some(Bootloader::DualBoot)),
        "sd-boot" => Ok(Some(Bootloader::SdBoot)),
        "grub" => Ok(Some(Bootloader::Grub)),
        _ => Err(invalid(format!(
            "line {}: bootloader {value:?} is not one of none, dual-boot, sd-boot, grub",
            node.line()
        ))),
    }
}

/// `overlay.options` (`map[string]any`): keys are any scalar's text, values decoded
/// as go-yaml decodes into `interface{}`, sorted the way go-yaml's encoder sorts them.
pub(super) fn decode_options(
    node: &Node,
    depth: usize,
) -> Result<Vec<(String, OptionValue)>, SchematicError> {
    let entries = match node {
        Node::Map { entries, .. } => entries,
        n if n.is_null() => return Ok(Vec::new()),
        n => return Err(type_error(n, "map[string]interface {}")),
    };
    let mut out: Vec<(String, OptionValue)> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for (k, v) in entries {
        let key = match k {
            Node::Scalar { value, .. } if depth == 0 && !k.is_null() => value.clone(),
            // Nested maps: go-yaml makes them map[string]interface{} only when every
            // key is a string; other key kinds are refused here.
            Node::Scalar { value, .. } if k.resolved() == Some(Resolved::Str) => value.clone(),
            _ => {
                return Err(invalid(format!(
                    "line {}: overlay option keys must be strings",
                    k.line()
                )));
            }
        };
        if k.resolved() == Some(Resolved::Merge) {
            return Err(invalid(format!(
                "line {}: merge keys are not allowed",
                k.line()
            )));
        }
        if key.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) || key.len() > 128 {
            return Err(invalid(format!(
                "line {}: overlay option keys must be single-line and at most 128 bytes",
                k.line()
            )));
        }
        if !seen.insert(key.clone()) {
            return Err(invalid(format!(
                "line {}: mapping key {key:?} already defined",
                k.line()
            )));
        }
        out.push((key, decode_any(v, depth)?));
    }
    Ok(merge_sort(out))
}

/// A merge sort by go-yaml's `keyList.Less` (keys are distinct): O(n log n), and,
/// unlike `slice::sort_by`, fine with an order that might not be total.
pub(super) fn merge_sort(mut v: Vec<(String, OptionValue)>) -> Vec<(String, OptionValue)> {
    if v.len() <= 1 {
        return v;
    }
    let right = merge_sort(v.split_off(v.len() / 2));
    let left = merge_sort(v);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut l, mut r) = (left.into_iter().peekable(), right.into_iter().peekable());
    while let (Some(a), Some(b)) = (l.peek(), r.peek()) {
        if goyaml::key_less(&b.0, &a.0) {
            out.push(r.next().expect("peeked"));
        } else {
            out.push(l.next().expect("peeked"));
        }
    }
    out.extend(l);
    out.extend(r);
    out
}

pub(super) fn decode_any(node: &Node, depth: usize) -> Result<OptionValue, SchematicError> {
    Ok(match node {
        Node::Scalar { value, .. } => match node.resolved().expect("a scalar resolves") {
            Resolved::Null => OptionValue::Null,
            Resolved::Bool(b) => OptionValue::Bool(b),
            Resolved::Int(i) => OptionValue::Int(i),
            Resolved::Float(f) => OptionValue::Float(f),
            Resolved::Str => OptionValue::String(value.clone()),
            Resolved::Timestamp => {
                return Err(invalid(format!(
                    "line {}: timestamps are not supported in overlay options (quote {value:?})",
                    node.line()
                )));
            }
            Resolved::Merge => OptionValue::String(value.clone()),
        },
        Node::Seq { items, .. } => OptionValue::List(
            items
                .iter()
                .map(|i| decode_any(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Node::Map { .. } => OptionValue::Map(decode_options(node, depth + 1)?),
    })
}
