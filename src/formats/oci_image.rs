//! The installer image: the base image's layers, untouched, plus one layer with the
//! boot assets under `usr/install/<arch>/`, an updated config and manifest. Written as
//! one tar that is both an OCI image layout (`oci-layout`, `index.json`, `blobs/`) and
//! a docker archive (`manifest.json`), as current Docker saves images, so `docker load`,
//! `podman load` and skopeo's `docker-archive:` and `oci-archive:` transports all read it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndexBuilder, ImageManifestBuilder, MediaType,
};
use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::io::tar::{dir_header, file_header};
use crate::io::{HashingReader, HashingWriter, digest_string, sha256_digest};
use crate::oci::source::DockerArchiveEntry;
use crate::oci::{BaseImage, document_bytes};

/// One file of the new layer.
#[derive(Debug, Clone)]
pub struct InstallerFile {
    /// Path in the image, without a leading `/`: `usr/install/amd64/vmlinuz.efi`.
    pub path: String,
    pub source: PathBuf,
    pub mode: u32,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct InstallerSpec {
    pub base: BaseImage,
    pub arch: String,
    pub files: Vec<InstallerFile>,
    pub epoch: u64,
    /// Image name with tag for `manifest.json`'s RepoTags, e.g. `ghcr.io/siderolabs/installer:v1.9.2`.
    pub tag: String,
    /// A board overlay's layer after the boot assets' (empty: none), as Talos's
    /// `outInstaller` adds it with `filemap.Layer`.
    pub overlay_layer: Vec<LayerEntry>,
}

/// One entry of the overlay layer: a directory (`source` `None`) or a file.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    pub path: String,
    pub source: Option<PathBuf>,
    pub mode: u32,
}

/// A layer of exactly `entries`, sorted by path, headers with name, mode, size and
/// type only (mtime 0, owner 0), as go's `filemap.Layer` writes them.
fn write_entries_layer(entries: &[LayerEntry], path: &Path) -> Result<(String, String, u64)> {
    let file = File::create(path).at(path)?;
    let compressed = HashingWriter::new(file);
    let gz = crate::io::pgzip::ParallelGzEncoder::new(compressed, LAYER_GZIP_LEVEL);
    let uncompressed = HashingWriter::new(gz);
    let mut tar = tar::Builder::new(uncompressed);
    let mut entries = entries.to_vec();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for e in &entries {
        match &e.source {
            None => {
                let mut h = dir_header(e.mode, 0);
                tar.append_data(&mut h, &e.path, std::io::empty())
                    .writing(path)?;
            }
            Some(source) => {
                let src = File::open(source).at(source)?;
                let len = src.metadata().at(source)?.len();
                let mut h = file_header(len, e.mode, 0);
                tar.append_data(&mut h, &e.path, src).at(source)?;
            }
        }
    }
    let uncompressed = tar.into_inner().writing(path)?;
    let (gz, diff_id, _) = uncompressed.finish();
    let compressed = gz.finish().writing(path)?;
    let (mut file, digest, size) = compressed.finish();
    file.flush().writing(path)?;
    Ok((digest_string(digest), digest_string(diff_id), size))
}

/// Annotation containerd (and `docker load` of an OCI layout) names the image by.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A descriptor of content this program computed the digest of.
fn descriptor(media_type: MediaType, size: u64, digest: &str) -> Descriptor {
    let digest: Digest = digest.parse().expect("a sha256 digest computed here");
    Descriptor::new(media_type, size, digest)
}

pub(crate) fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// gzip level of the assets layer: its bytes are already compressed (kernel, xz
/// initramfs inside the UKI), so level 6 would spend five times the CPU of level 1
/// for a layer well under 1% smaller.
const LAYER_GZIP_LEVEL: u32 = 1;

/// Writes the assets layer (gzip'd tar) to `path`; returns (digest, diff_id, size).
fn write_layer(spec: &InstallerSpec, path: &Path) -> Result<(String, String, u64)> {
    let file = File::create(path).at(path)?;
    let compressed = HashingWriter::new(file);
    let gz = crate::io::pgzip::ParallelGzEncoder::new(compressed, LAYER_GZIP_LEVEL);
    let uncompressed = HashingWriter::new(gz);
    let mut tar = tar::Builder::new(uncompressed);
    let mut files = spec.files.clone();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut dirs: Vec<String> = Vec::new();
    for f in &files {
        let mut prefix = String::new();
        for part in f
            .path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, d)| d.to_vec())
            .unwrap_or_default()
        {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                let mut h = dir_header(0o755, spec.epoch);
                tar.append_data(&mut h, &prefix, std::io::empty())
                    .writing(path)?;
            }
        }
        let src = File::open(&f.source).at(&f.source)?;
        let len = src.metadata().at(&f.source)?.len();
        let mut h = file_header(len, f.mode, spec.epoch);
        tar.append_data(&mut h, &f.path, src).at(&f.source)?;
    }
    let uncompressed = tar.into_inner().writing(path)?;
    let (gz, diff_id, _) = uncompressed.finish();
    let compressed = gz.finish().writing(path)?;
    let (mut file, digest, size) = compressed.finish();
    file.flush().writing(path)?;
    Ok((digest_string(digest), digest_string(diff_id), size))
}

/// Builds the installer image tarball into `out`, the file at `out_path`; `scratch` is
/// a temporary file path for the new layer (its size must be known before its tar
/// header is written).
pub fn write(spec: &InstallerSpec, scratch: &Path, out: &mut File, out_path: &Path) -> Result<()> {
    let (layer_digest, diff_id, layer_size) = write_layer(spec, scratch)?;
    let overlay_scratch = scratch.with_extension("overlay.tar.gz");
    let overlay = if spec.overlay_layer.is_empty() {
        None
    } else {
        Some(write_entries_layer(&spec.overlay_layer, &overlay_scratch)?)
    };

    // Talos keeps only the first layer of a two-layer base (the second held old boot assets).
    let mut base_layers = spec.base.layers.clone();
    let mut config = spec.base.config.clone();
    let mut diff_ids: Vec<Value> = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut history: Vec<Value> = config["history"].as_array().cloned().unwrap_or_default();
    if base_layers.len() == 2 {
        base_layers.truncate(1);
        diff_ids.truncate(1);
        history.clear();
    }
    if diff_ids.len() != base_layers.len() {
        return Err(Error::invalid(format!(
            "base image {}: its config lists {} layers, its manifest {}",
            spec.base.reference,
            diff_ids.len(),
            base_layers.len()
        )));
    }
    let created = rfc3339(spec.epoch);
    diff_ids.push(json!(diff_id));
    if history.is_empty() {
        for _ in &base_layers {
            history.push(json!({"created": created, "created_by": "base image layer"}));
        }
    }
    history.push(json!({"created": created, "created_by": "imager: boot assets in /usr/install", "comment": "imager"}));
    if let Some((_, overlay_diff_id, _)) = &overlay {
        diff_ids.push(json!(overlay_diff_id));
        history.push(json!({"created": created, "created_by": "imager: board overlay in /overlay", "comment": "imager"}));
    }
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    config["history"] = json!(history);
    config["architecture"] = json!(spec.arch);
    config["os"] = json!("linux");
    config["created"] = json!(created);
    // The config stays the base's JSON with these fields replaced (see `crate::oci`).
    let config_bytes = serde_json::to_vec(&config).expect("config serializes");
    let config_digest = sha256_digest(&config_bytes);

    let mut layer_descs = Vec::new();
    let mut layer_digests = Vec::new();
    for l in &base_layers {
        let digest = match &l.digest {
            Some(d) => d.clone(),
            None => {
                let mut h = HashingReader::new(l.open()?);
                crate::io::copy_during(&mut h, &l.file, &mut std::io::sink(), "hashing")?;
                digest_string(h.finish().1)
            }
        };
        layer_descs.push(descriptor(
            MediaType::from(l.media_type.as_str()),
            l.size,
            &digest,
        ));
        layer_digests.push(digest);
    }
    layer_descs.push(descriptor(
        MediaType::ImageLayerGzip,
        layer_size,
        &layer_digest,
    ));
    layer_digests.push(layer_digest.clone());
    if let Some((overlay_digest, _, overlay_size)) = &overlay {
        layer_descs.push(descriptor(
            MediaType::ImageLayerGzip,
            *overlay_size,
            overlay_digest,
        ));
        layer_digests.push(overlay_digest.clone());
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            &config_digest,
        ))
        .layers(layer_descs)
        .build()
        .expect("all manifest fields are set");
    let manifest_bytes = document_bytes(&manifest);
    let manifest_digest = sha256_digest(&manifest_bytes);
    let ref_name = spec
        .tag
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let mut manifest_desc = descriptor(
        MediaType::ImageManifest,
        manifest_bytes.len() as u64,
        &manifest_digest,
    );
    manifest_desc.set_annotations(Some(HashMap::from([
        (ANNOTATION_CONTAINERD_NAME.to_string(), spec.tag.clone()),
        (ANNOTATION_REF_NAME.to_string(), ref_name.to_string()),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .expect("all index fields are set");
    let blob_path = |d: &str| format!("blobs/{}", d.replacen(':', "/", 1));
    let docker = [DockerArchiveEntry {
        config: blob_path(&config_digest),
        repo_tags: Some(vec![spec.tag.clone()]),
        layers: layer_digests.iter().map(|d| blob_path(d)).collect(),
    }];

    out.set_len(0).writing(out_path)?;
    let mut tar = tar::Builder::new(&mut *out);
    let small = |tar: &mut tar::Builder<&mut File>, name: &str, bytes: &[u8]| -> Result<()> {
        let mut h = file_header(bytes.len() as u64, 0o644, spec.epoch);
        tar.append_data(&mut h, name, bytes).writing(out_path)
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = dir_header(0o755, spec.epoch);
        tar.append_data(&mut h, dir, std::io::empty())
            .writing(out_path)?;
    }
    small(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut written: Vec<String> = Vec::new();
    for (l, digest) in base_layers.iter().zip(&layer_digests) {
        if written.contains(digest) {
            continue;
        }
        let mut reader = HashingReader::new(l.open()?);
        let mut h = file_header(l.size, 0o644, spec.epoch);
        tar.append_data(&mut h, blob_path(digest), &mut reader)
            .map_err(|e| Error::format(&l.file, format!("reading layer {digest}: {e}")))?;
        let actual = digest_string(reader.finish().1);
        if &actual != digest {
            return Err(Error::format(
                &l.file,
                format!("base image layer {digest} has digest {actual}"),
            ));
        }
        written.push(digest.clone());
    }
    {
        let layer = File::open(scratch).at(scratch)?;
        let mut h = file_header(layer_size, 0o644, spec.epoch);
        tar.append_data(&mut h, blob_path(&layer_digest), layer)
            .at(scratch)?;
    }
    if let Some((overlay_digest, _, overlay_size)) = &overlay {
        let layer = File::open(&overlay_scratch).at(&overlay_scratch)?;
        let mut h = file_header(*overlay_size, 0o644, spec.epoch);
        tar.append_data(&mut h, blob_path(overlay_digest), layer)
            .at(&overlay_scratch)?;
    }
    small(&mut tar, &blob_path(&config_digest), &config_bytes)?;
    small(&mut tar, &blob_path(&manifest_digest), &manifest_bytes)?;
    small(&mut tar, "index.json", &document_bytes(&index))?;
    small(&mut tar, "manifest.json", &document_bytes(&docker))?;
    tar.finish().writing(out_path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of a tar in memory: name → bytes.
    fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        use std::io::Read;
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn base_config_fields_survive_and_documents_are_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let asset = dir.path().join("vmlinuz");
        std::fs::write(&asset, b"kernel").unwrap();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "container_config": {"Cmd": ["/bin/sh"]},
            "docker_version": "24.0.0",
            "config": {"Labels": {"b": "2", "a": "1"}},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let spec = InstallerSpec {
            overlay_layer: Vec::new(),
            base: BaseImage {
                reference: "oci:base".into(),
                config,
                layers: Vec::new(),
            },
            arch: "amd64".into(),
            files: vec![InstallerFile {
                path: "usr/install/amd64/vmlinuz".into(),
                source: asset,
                mode: 0o644,
            }],
            epoch: 0,
            tag: "ghcr.io/siderolabs/installer:v1.9.2".into(),
        };
        let out_path = dir.path().join("installer.tar");
        let mut out = crate::io::create_rw(&out_path).unwrap();
        write(&spec, &dir.path().join("layer"), &mut out, &out_path).unwrap();
        drop(out);
        let entries = entries(&std::fs::read(&out_path).unwrap());
        let get = |name: &str| -> Value {
            let (_, data) = entries.iter().find(|(n, _)| n == name).unwrap();
            let text = std::str::from_utf8(data).unwrap();
            // Stored compact with sorted keys: parsing and re-serializing changes nothing.
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), text, "{name}");
            v
        };
        let index = get("index.json");
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "v1.9.2"
        );
        let blob = |d: &Value| format!("blobs/{}", d.as_str().unwrap().replacen(':', "/", 1));
        let manifest = get(&blob(&index["manifests"][0]["digest"]));
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
        let config = get(&blob(&manifest["config"]["digest"]));
        assert_eq!(config["container_config"], json!({"Cmd": ["/bin/sh"]}));
        assert_eq!(config["docker_version"], "24.0.0");
        assert_eq!(config["config"]["Labels"]["a"], "1");
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        let docker = get("manifest.json");
        assert_eq!(docker[0]["RepoTags"][0], spec.tag);
        assert_eq!(docker[0]["Config"], blob(&manifest["config"]["digest"]));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
