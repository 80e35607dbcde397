//! Request path segments of `imager serve` (`/image/:id/:version/:path`, `/pxe/...`):
//! any bytes parse to an asset or a one-line error, never a panic, and an accepted
//! path never names a file outside the service's inputs (no `/`, no `..`).
#![no_main]

use imager::serve::paths::{parse_asset_path, parse_platform_arch, parse_version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = parse_asset_path(text) {
        assert!(!p.platform.contains('/') && !p.platform.contains(".."));
    }
    let _ = parse_platform_arch(text);
    if let Ok(v) = parse_version(text) {
        assert!(v.starts_with('v') && !v.contains('/') && !v.contains(".."));
    }
});
