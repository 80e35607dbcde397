//! OCI image layouts for the tests (extension images, installer bases): one index, one
//! manifest per architecture with `platform` set, layers gzip- or zstd-compressed, as
//! `skopeo copy` or `umoci` would leave them. The layout format is the OCI image spec's
//! (image-layout.md, image-index.md, manifest.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::sha256;

/// How a layer is stored in the layout.
#[derive(Debug, Clone, Copy)]
pub enum Layer {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    Zstd,
}

/// One image of a layout: its architecture, its layers (uncompressed tars, bottom first)
/// and the `config` object of its image configuration (e.g. an `Entrypoint`).
pub struct Image<'a> {
    pub arch: &'a str,
    pub layers: Vec<(&'a [u8], Layer)>,
    pub config: serde_json::Value,
}

/// Writes the layout of `images` to `dir` (created), every manifest annotated with
/// `ref_name`; returns, per image, the paths of its layer blobs.
pub fn layout(dir: &Path, images: &[Image], ref_name: &str) -> Vec<Vec<PathBuf>> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha256(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let mut entries = Vec::new();
    let mut paths = Vec::new();
    for image in images {
        let mut descs = Vec::new();
        let mut image_paths = Vec::new();
        for (tar, how) in &image.layers {
            let (blob, media) = match how {
                Layer::Gzip => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    gz.write_all(tar).unwrap();
                    (
                        gz.finish().unwrap(),
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                    )
                }
                Layer::Zstd => (
                    zstd::encode_all(*tar, 3).unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
            };
            let d = put(&blob);
            image_paths.push(blobs.join(&d[7..]));
            descs.push(serde_json::json!({"mediaType": media, "digest": d, "size": blob.len()}));
        }
        let diff_ids: Vec<String> = image.layers.iter().map(|(t, _)| sha256(t)).collect();
        let config = serde_json::json!({
            "architecture": image.arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": image.config
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
            "layers": descs
        })
        .to_string()
        .into_bytes();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&manifest),
            "size": manifest.len(), "platform": {"architecture": image.arch, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": ref_name}
        }));
        paths.push(image_paths);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    paths
}
