//! The base initramfs of a module build: xz/zstd by magic, newc cpio scanned for
//! `rootfs.sqsh`, that squashfs read for its `usr/lib/modules/<release>/` tree.
#![no_main]
use std::io::Write;

use imager::extensions::modules::{extract_modules, find_member};
use libfuzzer_sys::fuzz_target;

/// Keeps at most 64 MiB of the member (decompression bombs end the run, not the fuzzer).
struct Capped(Vec<u8>);
impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + b.len() > 64 << 20 {
            return Err(std::io::Error::other("too large"));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut out = Capped(Vec::new());
    if !matches!(find_member(data, "rootfs.sqsh", &mut out), Ok(true)) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("imager-fuzz-initramfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sqsh = dir.join("rootfs.sqsh");
    std::fs::write(&sqsh, &out.0).unwrap();
    let _ = extract_modules(&sqsh, "usr/lib/modules", &dir.join("tree"));
    let _ = std::fs::remove_dir_all(&dir);
});
