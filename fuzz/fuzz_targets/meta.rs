//! `--meta KEY=VALUE`, META partition blobs and the command-line META payload.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = imager::meta::MetaValue::parse(text);
        let _ = imager::meta::decode_cmdline_payload(text);
    }
    let mut part = vec![0u8; 2 * imager::meta::adv::COPY_LEN];
    let n = data.len().min(part.len());
    part[..n].copy_from_slice(&data[..n]);
    // Make the magics right often enough to reach the record parser.
    part[..4].copy_from_slice(&0x5a4b3c2du32.to_be_bytes());
    let _ = imager::meta::adv::decode(&part);
});
