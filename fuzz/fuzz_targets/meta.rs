//! `--meta KEY=VALUE`, META partition blobs, the command-line META payload, and the
//! whole `imager meta dump` path (GPT disk, partition image, command line) over
//! arbitrary bytes, seekable and streamed.
#![no_main]
use libfuzzer_sys::fuzz_target;

use imager::meta::image::{Seekable, Stream, read_from};

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
    // `meta dump`: the input as a file of its length, and as a decompressed stream.
    let _ = read_from(Seekable(std::io::Cursor::new(data)), Some(data.len() as u64));
    let _ = read_from(Stream(data), None);
    // The same bytes behind a GPT signature, to reach the partition-entry parser.
    if data.len() >= 92 {
        let mut disk = vec![0u8; 512];
        disk.extend_from_slice(b"EFI PART");
        disk.extend_from_slice(&data[8..]);
        let _ = read_from(Seekable(std::io::Cursor::new(&disk[..])), Some(disk.len() as u64));
    }
});
