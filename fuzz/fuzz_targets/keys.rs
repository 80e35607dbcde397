//! PEM/DER private keys and certificates.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("imager-fuzz-key-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = imager::keys::load_rsa_key(&path);
    let _ = imager::keys::load_certificate(&path);
});
