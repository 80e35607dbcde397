//! System extension layers from untrusted images: decompression by magic, tar entries,
//! whiteouts and path cleaning, then the image layout and manifest checks. Whatever the
//! input, nothing may be written outside the unpack directory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("imager-fuzz-layer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let blob = root.join("layer");
    std::fs::write(&blob, data).unwrap();
    let dest = root.join("box/dest");
    let layer = imager::oci::Blob {
        digest: None,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size: data.len() as u64,
        file: blob.clone(),
        offset: 0,
    };
    // The same bytes as two layers: whiteouts and first-wins across layers.
    let mut u = imager::extensions::unpack::Unpacker::new(&dest, "fuzz").unwrap();
    if u.layers(&[layer.clone(), layer]).is_ok() {
        let _ = imager::extensions::manifest::load(&dest);
    }
    let mut left: Vec<_> = std::fs::read_dir(root.join("box"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    // Beside the unpack directory only the SELinux labels the entries carried, under
    // its fixed name, naming paths inside the image.
    if left.len() == 2 {
        assert_eq!(left[1], "dest.xattrs.json", "an entry escaped the unpack directory");
        let labels: Vec<(String, Vec<u8>)> =
            serde_json::from_slice(&std::fs::read(root.join("box/dest.xattrs.json")).unwrap())
                .unwrap();
        for (path, _) in labels {
            let p = std::path::Path::new(&path);
            assert!(
                p.components().all(|c| matches!(c, std::path::Component::Normal(_))),
                "label for {path:?}"
            );
        }
        left.pop();
    }
    assert_eq!(left, ["dest"], "an entry escaped the unpack directory");
    let _ = std::fs::remove_dir_all(&root);
});
