//! `POST /schematics` bodies: parsing never panics, stays bounded, and whatever parses
//! re-encodes to canonical bytes that parse again to the same ID.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = imager::schematic::parse(data, None) {
        let canonical = s.canonical_yaml();
        let again = imager::schematic::parse(canonical.as_bytes(), None)
            .unwrap_or_else(|e| panic!("canonical bytes {canonical:?} do not parse: {e}"));
        assert_eq!(
            again.canonical_yaml(),
            canonical,
            "canonical bytes are not a fixed point"
        );
    }
});
