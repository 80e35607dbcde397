//! PE/COFF header parsing of stubs, kernels and systemd-boot.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imager::pe::PeHeaders::parse(data);
});
