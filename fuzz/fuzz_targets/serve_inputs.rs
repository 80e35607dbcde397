//! What `imager serve --assets-registry` takes from untrusted images and files: an imager
//! image's layers (decompression by magic, tar entries, whiteouts, path cleaning; nothing
//! may land outside the unpack directory), the imager tags it offers as versions (always a
//! sorted subset of valid `vX.Y.Z` tags) and auth files (never a panic).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("imager-fuzz-inputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("box/dest")).unwrap();
    let layer = root.join("layer");
    std::fs::write(&layer, data).unwrap();
    // The same bytes as two layers: the second's whiteouts apply to the first's files.
    let _ = imager::serve::inputs::unpack_usr_install(&[layer.clone(), layer], &root.join("box/dest"));
    let left: Vec<_> = std::fs::read_dir(root.join("box"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["dest"], "an entry escaped the unpack directory");
    let _ = std::fs::remove_dir_all(&root);

    let text = String::from_utf8_lossy(data);
    let tags: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let offered = imager::serve::inputs::offered_versions(&tags);
    for v in &offered {
        assert!(tags.contains(v) && v.starts_with('v'), "{v:?} was not a tag");
    }
    let _ = imager::oci::auth::lookup_in(data, "127.0.0.1:5000");
});
