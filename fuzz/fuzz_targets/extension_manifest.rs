//! `manifest.yaml` of untrusted extensions: decoding, the Talos version constraint, and
//! `extensions.yaml`, which must read back as the same metadata whatever the strings
//! hold, outside go-yaml's own unstable encodings.
#![no_main]
use imager::extensions::manifest::{Layer, Manifest, Metadata, check_constraint, extensions_yaml};
use imager::profile::quirks::Semver;
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
struct Config {
    layers: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    image: String,
    metadata: Metadata,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = serde_yaml::from_str::<Manifest>(text) else {
        return;
    };
    for v in [Semver(1, 10, 0), Semver(0, 0, 0), Semver(u64::MAX, 0, 1)] {
        let _ = check_constraint(&m.metadata.compatibility.talos.version, v);
    }
    let layers = [Layer {
        image: "0.sqsh".into(),
        metadata: &m.metadata,
    }];
    let yaml = extensions_yaml(&layers);
    assert_eq!(extensions_yaml(&layers), yaml);
    // go-yaml writes some strings in forms no reader gives back unchanged (see
    // `goyaml::unstable_encoding`); the bytes are still go-yaml's, so nothing to check.
    if imager::goyaml::unstable_encoding(&yaml) {
        return;
    }
    let back: Config = serde_yaml::from_str(&yaml)
        .unwrap_or_else(|e| panic!("extensions.yaml does not parse: {e}\n{yaml}"));
    assert_eq!(back.layers[0].image, "0.sqsh");
    assert_eq!(back.layers[0].metadata, m.metadata, "\n{yaml}");
});
