//! Base images from untrusted archives: tar entries, index, manifests, configs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("imager-fuzz-oci-{}.tar", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = imager::oci::BaseImage::open_local(&format!("oci-archive:{}", path.display()), "amd64");
    let _ = imager::oci::BaseImage::open_local(&format!("docker-archive:{}", path.display()), "amd64");
});
