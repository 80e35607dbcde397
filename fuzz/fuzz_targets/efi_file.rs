//! Whole-file readers of untrusted EFI binaries and kernels: the stub loader, the
//! bzImage version reader, `imager inspect` and Authenticode verification.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("imager-fuzz-efi-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = imager::uki::stub::Stub::load(&path);
    let _ = imager::uki::kernel::uname(&path);
    let _ = imager::uki::inspect::inspect(&path);
    let _ = imager::sign::authenticode::verify(&path);
    let _ = imager::sign::authenticode::image_digest(&path);
});
