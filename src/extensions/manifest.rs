//! An unpacked extension's layout and `manifest.yaml`, the Talos version constraint,
//! and `extensions.yaml`.
//!
//! Layout and messages follow `pkg/machinery/extensions/{load,metadata,validate}.go`:
//! exactly `manifest.yaml` and the directory `rootfs` at the top, manifest `version`
//! `v1alpha1`, and `metadata.compatibility.talos.version` a semver range (blang/semver
//! syntax, each `v` before a digit dropped) that the profile's Talos version
//! (major.minor.patch) must satisfy. `extensions.yaml` is written by [`crate::goyaml`]
//! as go-yaml v3 encodes `pkg/machinery/extensions/config.go`'s `Config` (4-space
//! indentation), and so are the manifests of virtual extensions.

use std::path::Path;

use serde::Deserialize;

use crate::goyaml::{self, Out};
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

/// `extensions.yaml` as the Talos imager writes it (go-yaml, `Config{Layers}`).
pub fn extensions_yaml(layers: &[Layer]) -> String {
    let layers = layers
        .iter()
        .map(|l| {
            Out::Map(vec![
                ("image".into(), Out::Str(l.image.clone())),
                ("metadata".into(), metadata_out(l.metadata)),
            ])
        })
        .collect();
    goyaml::marshal(&Out::Map(vec![("layers".into(), Out::Seq(layers))]))
}

/// A `manifest.yaml` as go-yaml encodes Talos's `Manifest` (the virtual extensions the
/// imager writes itself).
pub fn manifest_yaml(m: &Manifest) -> String {
    goyaml::marshal(&manifest_out(m))
}

/// A manifest as go-yaml v4's `Marshal` writes it (Image Factory's virtual
/// `schematic` extension, [`super::schematic`]).
pub fn manifest_yaml_v4(m: &Manifest) -> String {
    goyaml::marshal_v4(&manifest_out(m))
}

fn manifest_out(m: &Manifest) -> Out {
    Out::Map(vec![
        ("version".into(), Out::Str(m.version.clone())),
        ("metadata".into(), metadata_out(&m.metadata)),
    ])
}

/// Talos's `Metadata` in its field order; `extraInfo` is `omitempty`.
fn metadata_out(m: &Metadata) -> Out {
    let s = |v: &String| Out::Str(v.clone());
    let mut fields = vec![
        ("name".into(), s(&m.name)),
        ("version".into(), s(&m.version)),
        ("author".into(), s(&m.author)),
        ("description".into(), s(&m.description)),
        (
            "compatibility".into(),
            Out::Map(vec![(
                "talos".into(),
                Out::Map(vec![("version".into(), s(&m.compatibility.talos.version))]),
            )]),
        ),
    ];
    if !m.extra_info.is_empty() {
        fields.push(("extraInfo".into(), s(&m.extra_info)));
    }
    Out::Map(fields)
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
