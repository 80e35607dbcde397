//! Image caches from untrusted inputs: an OCI layout's index.json (the layout reader
//! and its architecture check), and a tarball of the tree (unpacking and the checks
//! of blob names and digests).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("imager-fuzz-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("index.json"), data).unwrap();
    let _ = imager::imagecache::layout_layers(&dir, "amd64");
    let tar = dir.join("cache.tar");
    std::fs::write(&tar, data).unwrap();
    let root = dir.join("tree");
    if imager::imagecache::unpack_tarball(&tar, &root, "fuzz").is_ok() {
        let _ = imager::imagecache::check_tree(&root, "fuzz");
    }
    let _ = std::fs::remove_dir_all(&dir);
});
