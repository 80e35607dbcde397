//! An unpacked extension's layout and `manifest.yaml`, the Talos version constraint,
//! and `extensions.yaml`.
//!
//! Layout and messages follow `pkg/machinery/extensions/{load,metadata,validate}.go`:
//! exactly `manifest.yaml` and the directory `rootfs` at the top, manifest `version`
//! `v1alpha1`, and `metadata.compatibility.talos.version` a semver range (blang/semver
//! syntax, each `v` before a digit dropped) that the profile's Talos version
//! (major.minor.patch) must satisfy. `extensions.yaml` is written as go-yaml v3
//! encodes `pkg/machinery/extensions/config.go`'s `Config` (4-space indentation).

use std::path::Path;

use serde::Deserialize;

use crate::profile::quirks::Semver;

/// `manifest.yaml`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Manifest {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub metadata: Metadata,
}

/// The manifest's `metadata`, in the order `extensions.yaml` writes it.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub compatibility: Compatibility,
    #[serde(default)]
    pub extra_info: String,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
pub struct Compatibility {
    #[serde(default)]
    pub talos: TalosCompat,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
pub struct TalosCompat {
    #[serde(default)]
    pub version: String,
}

/// Checks the top level of an unpacked extension and reads its manifest; errors are
/// the cause only (the caller names the extension).
pub fn load(dir: &Path) -> std::result::Result<Manifest, String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| e.to_string())?;
    names.sort();
    let (mut manifest, mut rootfs) = (false, false);
    for name in &names {
        let meta = std::fs::symlink_metadata(dir.join(name)).map_err(|e| e.to_string())?;
        match name.as_str() {
            "manifest.yaml" if meta.is_file() => manifest = true,
            "rootfs" if meta.is_dir() => rootfs = true,
            _ => return Err(format!("unexpected file {name:?}")),
        }
    }
    if !manifest {
        return Err("extension manifest is missing".into());
    }
    if !rootfs {
        return Err("extension rootfs is missing".into());
    }
    let text = std::fs::read_to_string(dir.join("manifest.yaml")).map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        return Err("error unmarshalling extension manifest: EOF".into());
    }
    let m: Manifest = serde_yaml::from_str(&text)
        .map_err(|e| format!("error unmarshalling extension manifest: {e}"))?;
    if m.version != "v1alpha1" {
        return Err(format!("unsupported manifest version: {:?}", m.version));
    }
    Ok(m)
}

/// Checks the manifest's Talos constraint against `talos` (Talos's wording).
pub fn check_constraint(constraint: &str, talos: Semver) -> std::result::Result<(), String> {
    if constraint.is_empty() {
        return Ok(());
    }
    let range = parse_range(&strip_v(constraint))
        .map_err(|e| format!("error parsing Talos version constraint: {e}"))?;
    let v = Version {
        core: (talos.0, talos.1, talos.2),
        pre: Vec::new(),
    };
    if range
        .iter()
        .any(|and| and.iter().all(|(op, want)| op.holds(&v, want)))
    {
        Ok(())
    } else {
        Err(format!(
            "version constraint {constraint} can't be satisfied with Talos version {}.{}.{}",
            talos.0, talos.1, talos.2
        ))
    }
}

/// Drops every `v` directly followed by a digit.
fn strip_v(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        if c == 'v' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    core: (u64, u64, u64),
    pre: Vec<String>,
}

impl Version {
    fn cmp(&self, o: &Version) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        match self.core.cmp(&o.core) {
            Equal => {}
            x => return x,
        }
        match (self.pre.is_empty(), o.pre.is_empty()) {
            (true, true) => return Equal,
            (true, false) => return Greater,
            (false, true) => return Less,
            _ => {}
        }
        for (a, b) in self.pre.iter().zip(&o.pre) {
            let x = match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                (Ok(_), Err(_)) => Less,
                (Err(_), Ok(_)) => Greater,
                _ => a.cmp(b),
            };
            if x != Equal {
                return x;
            }
        }
        self.pre.len().cmp(&o.pre.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn holds(self, v: &Version, want: &Version) -> bool {
        use std::cmp::Ordering::*;
        let c = v.cmp(want);
        match self {
            Op::Eq => c == Equal,
            Op::Ne => c != Equal,
            Op::Gt => c == Greater,
            Op::Ge => c != Less,
            Op::Lt => c == Less,
            Op::Le => c != Greater,
        }
    }
}

type Range = Vec<Vec<(Op, Version)>>;

/// A blang/semver v4 range: `||` separates alternatives, spaces separate the
/// comparators that must all hold, an operator may be followed by a space, and a
/// trailing `x` wildcard (`1.x`, `1.2.x`) widens a comparator.
fn parse_range(s: &str) -> std::result::Result<Range, String> {
    let mut out = Vec::new();
    for alt in s.split("||") {
        let mut tokens: Vec<String> = Vec::new();
        let mut pending = String::new();
        for t in alt.split_whitespace() {
            if t.chars().all(|c| "<>=!".contains(c)) {
                pending.push_str(t);
                continue;
            }
            tokens.push(format!("{pending}{t}"));
            pending.clear();
        }
        if !pending.is_empty() || tokens.is_empty() {
            return Err(format!(
                "Could not get version from string: {:?}",
                alt.trim()
            ));
        }
        let mut and = Vec::new();
        for t in tokens {
            and.extend(parse_comparator(&t)?);
        }
        out.push(and);
    }
    Ok(out)
}

fn parse_comparator(t: &str) -> std::result::Result<Vec<(Op, Version)>, String> {
    let (op, rest) = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("!=", Op::Ne),
        ("==", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
        ("!", Op::Ne),
    ]
    .iter()
    .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r)))
    .unwrap_or((Op::Eq, t));
    let parts: Vec<&str> = rest.splitn(3, '.').collect();
    let wild = |p: &str| p == "x" || p == "X" || p == "*";
    let num = |p: &str| -> std::result::Result<u64, String> {
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            Err(format!("Invalid character(s) found in version {rest:?}"))
        } else {
            p.parse().map_err(|_| format!("Invalid version {rest:?}"))
        }
    };
    let v = |core| Version {
        core,
        pre: Vec::new(),
    };
    match parts.as_slice() {
        [maj, min, patch] if !wild(maj) && !wild(min) && !wild(patch) => {
            let (patch, pre) = match patch.split_once('-') {
                Some((p, pre)) => (p, pre.split('.').map(String::from).collect()),
                None => (*patch, Vec::new()),
            };
            let patch = patch.split('+').next().unwrap_or(patch);
            let ver = Version {
                core: (num(maj)?, num(min)?, num(patch)?),
                pre,
            };
            Ok(vec![(op, ver)])
        }
        [maj, min, rest @ ..]
            if !wild(maj) && (wild(min) || rest.first().is_some_and(|p| wild(p))) =>
        {
            // M.x or M.m.x: the range [lo, hi).
            let m = num(maj)?;
            let (lo, hi) = if wild(min) {
                ((m, 0, 0), (m + 1, 0, 0))
            } else {
                let n = num(min)?;
                ((m, n, 0), (m, n + 1, 0))
            };
            match op {
                Op::Eq => Ok(vec![(Op::Ge, v(lo)), (Op::Lt, v(hi))]),
                Op::Ge => Ok(vec![(Op::Ge, v(lo))]),
                Op::Gt => Ok(vec![(Op::Ge, v(hi))]),
                Op::Lt => Ok(vec![(Op::Lt, v(lo))]),
                Op::Le => Ok(vec![(Op::Lt, v(hi))]),
                Op::Ne => Err(format!("Invalid wildcard comparator {t:?}")),
            }
        }
        _ => Err(format!("No Major.Minor.Patch elements found in {rest:?}")),
    }
}

/// One `layers:` entry of `extensions.yaml`.
pub struct Layer<'a> {
    pub image: String,
    pub metadata: &'a Metadata,
}

/// `extensions.yaml` as the Talos imager writes it.
pub fn extensions_yaml(layers: &[Layer]) -> String {
    let mut out = String::from("layers:\n");
    for l in layers {
        let m = l.metadata;
        out.push_str(&format!("    - image: {}\n", scalar(&l.image, 8)));
        out.push_str("      metadata:\n");
        for (k, v) in [
            ("name", &m.name),
            ("version", &m.version),
            ("author", &m.author),
            ("description", &m.description),
        ] {
            out.push_str(&format!("        {k}: {}\n", scalar(v, 12)));
        }
        out.push_str("        compatibility:\n            talos:\n");
        out.push_str(&format!(
            "                version: {}\n",
            scalar(&m.compatibility.talos.version, 20)
        ));
        if !m.extra_info.is_empty() {
            out.push_str(&format!(
                "        extraInfo: {}\n",
                scalar(&m.extra_info, 12)
            ));
        }
    }
    out
}

/// A string scalar as go-yaml v3 writes it, `indent` being the column of a block
/// scalar's body. Plain when that reads back as the same string, double-quoted when
/// it would read as another type or holds characters plain text cannot, single-quoted
/// when YAML syntax forbids it plain, literal block style for multi-line text.
pub fn scalar(s: &str, indent: usize) -> String {
    // U+2028/U+2029 are line breaks to a YAML reader: plain they would split the value.
    // go-yaml single-quotes such a string with the raw separator (an exotic case this
    // does not copy byte for byte); escaped in double quotes it reads back the same.
    let special = s.chars().any(|c| {
        c != '\n' && (c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}'))
    });
    if s.contains('\n') {
        let space_break = s.contains(" \n");
        let trailing_space = s.ends_with(' ');
        if special || space_break || trailing_space {
            return double_quoted(s);
        }
        return literal(s, indent);
    }
    if special {
        return double_quoted(s);
    }
    if resolves_to_non_string(s) {
        return double_quoted(s);
    }
    if plain_allowed(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn literal(s: &str, indent: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let mut head = String::from("|");
    if s.starts_with(' ') || s.starts_with('\n') {
        head.push('4');
    }
    match trailing {
        0 => head.push('-'),
        1 => {}
        _ => head.push('+'),
    }
    // The last line break is the one after the scalar; the rest are part of the body.
    let body = if trailing == 0 { s } else { &s[..s.len() - 1] };
    let pad = " ".repeat(indent);
    let mut out = head;
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if c.is_control() || c == '\u{feff}' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether go-yaml v3 would read the plain text as something other than a string
/// (null, bool including YAML 1.1's, int, float, base-60 float, timestamp, merge).
fn resolves_to_non_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "y",
        "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
        ".nan", ".NaN", ".NAN", "<<",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    is_int(s) || is_float(s) || is_base60(s) || is_timestamp(s)
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax (sign, 0x/0o/0b/leading-0 prefixes, `_`).
fn is_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (digits, radix): (&str, u32) =
        if let Some(r) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (r, 16)
        } else if let Some(r) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (r, 8)
        } else if let Some(r) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (r, 2)
        } else if body.len() > 1 && body.starts_with('0') {
            (&body[1..], 8)
        } else {
            (body, 10)
        };
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty()
        || digits.starts_with('_') && radix == 10
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return false;
    }
    u64::from_str_radix(&clean, radix).is_ok()
        && i64::try_from(u64::from_str_radix(&clean, radix).unwrap_or(u64::MAX)).is_ok()
}

/// go-yaml's float pattern `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_float(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.first() == Some(&b'.') {
        i = 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (main, frac) = match body.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (body, None),
    };
    if frac.is_some_and(|f| !f.bytes().all(|c| c.is_ascii_digit() || c == b'_')) {
        return false;
    }
    let mut parts = main.split(':');
    let first = parts.next().unwrap_or("");
    if !first.starts_with(|c: char| c.is_ascii_digit())
        || !first.bytes().all(|c| c.is_ascii_digit() || c == b'_')
    {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && rest.iter().all(|p| {
            let b = p.as_bytes();
            match b.len() {
                1 => b[0].is_ascii_digit(),
                2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
                _ => false,
            }
        })
}

/// A `YYYY-MM-DD` date (go-yaml's timestamps all start with one).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && (b.len() == 10 || matches!(b[10], b'T' | b't' | b' ' | b'\t'))
}

/// libyaml's analysis: may the text be written plain in block context?
fn plain_allowed(s: &str) -> bool {
    if s.is_empty() || s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    let blank_after = |i: usize| chars.get(i + 1).is_none_or(|c| *c == ' ');
    for (i, &c) in chars.iter().enumerate() {
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => return false,
                '?' | ':' | '-' if blank_after(i) => return false,
                _ => {}
            }
        } else {
            match c {
                ':' if blank_after(i) => return false,
                '#' if chars[i - 1] == ' ' => return false,
                _ => {}
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, version: &str, author: &str, desc: &str, c: &str) -> Metadata {
        Metadata {
            name: name.into(),
            version: version.into(),
            author: author.into(),
            description: desc.into(),
            compatibility: Compatibility {
                talos: TalosCompat { version: c.into() },
            },
            extra_info: String::new(),
        }
    }

    #[test]
    fn extensions_yaml_matches_the_talos_bytes() {
        let a = meta(
            "intel-ucode",
            "20250211",
            "Sidero Labs",
            "[core] This system extension provides Intel microcode binaries.\n",
            ">= v1.0.0",
        );
        let b = meta(
            "modules.dep",
            "6.12.9-talos",
            "Talos Machinery",
            "Combined modules.dep for all extensions",
            "",
        );
        let got = extensions_yaml(&[
            Layer {
                image: "0.sqsh".into(),
                metadata: &a,
            },
            Layer {
                image: "modules.dep.sqsh".into(),
                metadata: &b,
            },
        ]);
        let want = "layers:
    - image: 0.sqsh
      metadata:
        name: intel-ucode
        version: \"20250211\"
        author: Sidero Labs
        description: |
            [core] This system extension provides Intel microcode binaries.
        compatibility:
            talos:
                version: '>= v1.0.0'
    - image: modules.dep.sqsh
      metadata:
        name: modules.dep
        version: 6.12.9-talos
        author: Talos Machinery
        description: Combined modules.dep for all extensions
        compatibility:
            talos:
                version: \"\"
";
        assert_eq!(got, want);
    }

    #[test]
    fn scalar_styles() {
        assert_eq!(scalar("a\u{2028}b", 12), "\"a\\Lb\"");
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
        ] {
            assert_eq!(scalar(s, 12), want, "{s:?}");
        }
        assert_eq!(scalar("a\nb", 4), "|-\n    a\n    b");
        assert_eq!(scalar("a\n\nb\n\n", 4), "|+\n    a\n\n    b\n");
        assert_eq!(scalar(" a\n", 4), "|4\n     a");
    }

    #[test]
    fn constraints() {
        let v = Semver(1, 10, 0);
        for ok in [
            ">= v1.0.0",
            ">=1.0.0",
            ">= 1.10.0",
            "< 2.0.0 >= 1.9.0",
            "1.x",
            ">= v1.10.0-alpha.0",
            "<1.0.0 || >=1.10.0",
            "",
        ] {
            assert!(check_constraint(ok, v).is_ok(), "{ok}");
        }
        assert_eq!(
            check_constraint(">= v1.11.0", v).unwrap_err(),
            "version constraint >= v1.11.0 can't be satisfied with Talos version 1.10.0"
        );
        assert!(
            check_constraint(">= banana", v)
                .unwrap_err()
                .starts_with("error parsing Talos version constraint: ")
        );
    }
}
