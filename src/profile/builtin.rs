//! Built-in profiles: the YAML files under `profiles/`, embedded at build time.

use crate::error::{Error, Result};

use super::Profile;

macro_rules! builtins {
    ($($name:literal),+ $(,)?) => {
        /// (name, YAML) of every built-in profile, sorted by name.
        pub const BUILTINS: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../profiles/", $name, ".yaml")))),+
        ];
    };
}

builtins!(
    "akamai",
    "alibabacloud",
    "aws",
    "azure",
    "cloudstack",
    "digital-ocean",
    "exoscale",
    "gcp",
    "hcloud",
    "installer",
    "iso",
    "metal",
    "metal-4k",
    "metal-uki",
    "nocloud",
    "opennebula",
    "openstack",
    "oracle",
    "scaleway",
    "secureboot-azure",
    "secureboot-cloudstack",
    "secureboot-installer",
    "secureboot-iso",
    "secureboot-metal",
    "secureboot-metal-uki",
    "secureboot-nocloud",
    "secureboot-opennebula",
    "secureboot-openstack",
    "secureboot-vmware",
    "upcloud",
    "vmware",
    "vultr",
);

/// Older Talos docs name profiles that today are reached differently
/// (`imager image --platform metal` = the `metal` profile).
const ALIASES: &[(&str, &str)] = &[("image", "metal")];

/// The YAML of a built-in profile.
pub fn yaml(name: &str) -> Option<&'static str> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, real)| *real)
        .unwrap_or(name);
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, y)| *y)
}

/// A built-in profile, parsed.
pub fn get(name: &str) -> Result<Profile> {
    let text = yaml(name).ok_or_else(|| {
        Error::invalid(format!("unknown profile {name:?}: not a built-in profile (see `imager profiles`) and not a file"))
    })?;
    Profile::from_yaml(text, &format!("built-in {name}"))
}

/// First comment line of a built-in profile: what it builds.
pub fn summary(yaml: &str) -> &str {
    yaml.lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_is_sorted() {
        let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for (name, _) in BUILTINS {
            let p = get(name).unwrap();
            assert!(p.output.kind.is_some(), "{name} has an output kind");
            assert!(
                !summary(yaml(name).unwrap()).is_empty(),
                "{name} has a summary"
            );
        }
    }

    #[test]
    fn image_is_the_metal_profile() {
        assert_eq!(get("image").unwrap(), get("metal").unwrap());
    }
}
