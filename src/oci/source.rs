//! Locating a base image's manifest, config and layers in local sources.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Reference;
use crate::error::{Error, IoContext, Result};

/// A blob of the base image: where its bytes are and what they must hash to.
#[derive(Debug, Clone)]
pub struct Blob {
    /// `sha256:<hex>` of the bytes, as the manifest names it (for docker archives of
    /// uncompressed layers, computed while copying).
    pub digest: Option<String>,
    pub media_type: String,
    pub size: u64,
    /// File holding the blob and the byte offset inside it (archives are not unpacked).
    pub file: PathBuf,
    pub offset: u64,
}

impl Blob {
    /// A reader over exactly this blob's bytes.
    pub fn open(&self) -> Result<impl Read> {
        let mut f = File::open(&self.file).at(&self.file)?;
        f.seek(SeekFrom::Start(self.offset)).at(&self.file)?;
        Ok(f.take(self.size))
    }
}

/// A base image, resolved to its config and layers for one architecture.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The reference as given (names the image in messages).
    pub reference: String,
    /// The image config as the base has it, every field kept (see [`crate::oci`]).
    pub config: Value,
    pub layers: Vec<Blob>,
}

/// Entries of a tar archive: name → (offset of data, size).
fn tar_index(path: &Path) -> Result<Vec<(String, u64, u64)>> {
    let file = File::open(path).at(path)?;
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| Error::format(path, format!("not a tar archive: {e}")))?
    {
        let entry = entry
            .map_err(|e| Error::format(path, format!("truncated or corrupt tar archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| Error::format(path, e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        out.push((name, entry.raw_file_position(), entry.size()));
    }
    let total = std::fs::metadata(path).at(path)?.len();
    if let Some((name, off, size)) = out.iter().max_by_key(|(_, o, s)| o + s)
        && off + size > total
    {
        return Err(Error::format(
            path,
            format!("truncated archive: {name} runs past the end"),
        ));
    }
    Ok(out)
}

/// Reads a whole small entry (JSON) of a located source.
fn read_small(file: &Path, offset: u64, size: u64) -> Result<Vec<u8>> {
    if size > 16 << 20 {
        return Err(Error::format(file, "a JSON document over 16 MiB"));
    }
    let blob = Blob {
        digest: None,
        media_type: String::new(),
        size,
        file: file.into(),
        offset,
    };
    let mut buf = Vec::new();
    blob.open()?.read_to_end(&mut buf).at(file)?;
    if buf.len() as u64 != size {
        return Err(Error::format(file, "truncated archive"));
    }
    Ok(buf)
}

/// Parses a JSON document of a located source as `T`.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str, path: &Path) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::format(path, describe_json_error(what, &e)))
}

/// `WHAT is not valid JSON: ...` or `WHAT is not a valid document: ...`, the serde
/// message cut to one line (it can quote the offending value).
pub(crate) fn describe_json_error(what: &str, e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Data => "is not a valid document",
        _ => "is not valid JSON",
    };
    format!("{what} {kind}: {}", super::one_line(&e.to_string()))
}

/// Whether a descriptor's media type is an index (OCI) or a manifest list (docker).
pub(crate) fn is_index(media_type: &MediaType) -> bool {
    let m = media_type.to_string();
    m.contains("index") || m.contains("manifest.list")
}

/// The `linux/<arch>` entry of an image index.
pub(crate) fn for_platform<'a>(index: &'a ImageIndex, arch: &str) -> Option<&'a Descriptor> {
    index.manifests().iter().find(|m| {
        m.platform()
            .as_ref()
            .is_some_and(|p| p.architecture().to_string() == arch && p.os().to_string() == "linux")
    })
}

/// An entry of a docker archive's `manifest.json` (`docker save`), also written into
/// installer images so `docker load` reads them. Blob names are paths in the archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// A way to find files of an OCI layout: a directory, or an archive's index.
enum Layout {
    Dir(PathBuf),
    Archive(PathBuf, Vec<(String, u64, u64)>),
}

impl Layout {
    fn locate(&self, name: &str) -> Result<(PathBuf, u64, u64)> {
        match self {
            Layout::Dir(dir) => {
                let p = dir.join(name);
                let len = std::fs::metadata(&p)
                    .map_err(|e| {
                        Error::invalid(format!("base image {}: {name}: {e}", dir.display()))
                    })?
                    .len();
                Ok((p, 0, len))
            }
            Layout::Archive(path, index) => index
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, o, s)| (path.clone(), *o, *s))
                .ok_or_else(|| Error::format(path, format!("{name} is missing from the archive"))),
        }
    }

    fn read(&self, name: &str) -> Result<(Vec<u8>, PathBuf)> {
        let (file, offset, size) = self.locate(name)?;
        Ok((read_small(&file, offset, size)?, file))
    }

    fn blob_name(digest: &str) -> String {
        format!("blobs/{}", digest.replacen(':', "/", 1))
    }
}

impl BaseImage {
    /// Opens a local base image reference for `arch`: `oci:DIR[:TAG]`,
    /// `oci-archive:PATH[:TAG]`, `docker-archive:PATH`. Registry references are
    /// opened by [`Reference::open`], which pulls them.
    pub fn open_local(reference: &str, arch: &str) -> Result<BaseImage> {
        let parsed = Reference::parse(reference)?;
        if !parsed.is_local() {
            return Err(Error::invalid(format!(
                "base image {}: a registry reference, not oci:DIR, oci-archive:PATH or docker-archive:PATH",
                super::one_line(reference)
            )));
        }
        Self::open_local_ref(&parsed, arch)
    }

    /// Opens a local base image for `arch` (a registry reference is refused).
    pub(crate) fn open_local_ref(reference: &Reference, arch: &str) -> Result<BaseImage> {
        let text = reference.to_string();
        match reference {
            Reference::Layout { dir, tag } => {
                Self::from_layout(&text, Layout::Dir(dir.clone()), tag.as_deref(), arch)
            }
            Reference::OciArchive { path, tag } => {
                let index = tar_index(path)?;
                Self::from_layout(
                    &text,
                    Layout::Archive(path.clone(), index),
                    tag.as_deref(),
                    arch,
                )
            }
            Reference::DockerArchive(path) => Self::from_docker_archive(&text, path, arch),
            Reference::Registry(_) => Err(Error::invalid(format!(
                "base image {}: a registry reference is pulled, not opened from a file",
                super::one_line(&text)
            ))),
        }
    }

    fn from_layout(
        reference: &str,
        layout: Layout,
        tag: Option<&str>,
        arch: &str,
    ) -> Result<BaseImage> {
        let (index_bytes, index_file) = layout.read("index.json")?;
        let index: ImageIndex = parse(&index_bytes, "index.json", &index_file)?;
        // The entries with the tag (every entry without one); of those, the one for
        // linux/<arch> when entries name their platform, else the first (a layout that
        // `skopeo copy` writes has one entry without a platform: its config says the arch).
        let tagged: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|m| {
                tag.is_none_or(|t| {
                    m.annotations()
                        .as_ref()
                        .and_then(|a| a.get(oci_spec::image::ANNOTATION_REF_NAME))
                        .is_some_and(|name| name == t)
                })
            })
            .collect();
        let chosen = tagged
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.architecture().to_string() == arch && p.os().to_string() == "linux"
                })
            })
            .or(tagged.first())
            .copied()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "base image {reference}: no manifest{} in index.json",
                    tag.map(|t| format!(" tagged {t}")).unwrap_or_default()
                ))
            })?;
        let mut manifest_desc = chosen.clone();
        // An index inside the layout: pick linux/<arch>.
        if is_index(manifest_desc.media_type()) {
            let digest = manifest_desc.digest().to_string();
            let (bytes, file) = layout.read(&Layout::blob_name(&digest))?;
            check_digest(&bytes, &digest, &file)?;
            let inner: ImageIndex = parse(&bytes, "image index", &file)?;
            manifest_desc = for_platform(&inner, arch).cloned().ok_or_else(|| {
                Error::invalid(format!(
                    "base image {reference}: no linux/{arch} image in its index"
                ))
            })?;
        }
        let digest = manifest_desc.digest().to_string();
        let (bytes, file) = layout.read(&Layout::blob_name(&digest))?;
        check_digest(&bytes, &digest, &file)?;
        let manifest: ImageManifest = parse(&bytes, "manifest", &file)?;
        let config_digest = manifest.config().digest().to_string();
        let (config_bytes, file) = layout.read(&Layout::blob_name(&config_digest))?;
        check_digest(&config_bytes, &config_digest, &file)?;
        let config: Value = parse(&config_bytes, "image config", &file)?;
        let mut layers = Vec::new();
        for l in manifest.layers() {
            let digest = l.digest().to_string();
            let (file, offset, size) = layout.locate(&Layout::blob_name(&digest))?;
            layers.push(Blob {
                digest: Some(digest),
                media_type: l.media_type().to_string(),
                size,
                file,
                offset,
            });
        }
        BaseImage::checked(reference, config, layers, arch)
    }

    /// The image of `reference`, refused unless its config is for `arch`.
    fn checked(reference: &str, config: Value, layers: Vec<Blob>, arch: &str) -> Result<BaseImage> {
        let image = BaseImage {
            reference: reference.to_string(),
            config,
            layers,
        };
        image.check_arch(arch)?;
        Ok(image)
    }

    fn from_docker_archive(reference: &str, path: &Path, arch: &str) -> Result<BaseImage> {
        let index = tar_index(path)?;
        let layout = Layout::Archive(path.into(), index);
        let (bytes, file) = layout.read("manifest.json")?;
        let manifest: Vec<DockerArchiveEntry> = parse(&bytes, "manifest.json", &file)?;
        let first = manifest
            .first()
            .ok_or_else(|| Error::format(path, "manifest.json lists no image"))?;
        let (config_bytes, file) = layout.read(&first.config)?;
        let config: Value = parse(&config_bytes, "image config", &file)?;
        let mut layers = Vec::new();
        for name in &first.layers {
            let (file, offset, size) = layout.locate(name)?;
            // Layer blobs in docker archives are named by their digest when they are OCI blobs.
            let digest = name
                .strip_prefix("blobs/sha256/")
                .map(|h| format!("sha256:{h}"));
            let mut head = [0u8; 2];
            Blob {
                digest: None,
                media_type: String::new(),
                size: 2,
                file: file.clone(),
                offset,
            }
            .open()?
            .read_exact(&mut head)
            .at(&file)?;
            let media_type = if head == [0x1f, 0x8b] {
                MediaType::ImageLayerGzip
            } else {
                MediaType::ImageLayer
            };
            layers.push(Blob {
                digest,
                media_type: media_type.to_string(),
                size,
                file,
                offset,
            });
        }
        BaseImage::checked(reference, config, layers, arch)
    }

    fn check_arch(&self, arch: &str) -> Result<()> {
        let found = self.config["architecture"].as_str().unwrap_or("");
        if found != arch {
            return Err(Error::invalid(format!(
                "base image {} is for architecture {found:?}, not {arch}",
                self.reference
            )));
        }
        Ok(())
    }
}

fn check_digest(bytes: &[u8], digest: &str, file: &Path) -> Result<()> {
    let actual = crate::io::sha256_digest(bytes);
    if actual != digest {
        return Err(Error::format(
            file,
            format!("blob {digest} has digest {actual}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sha256_digest;
    use serde_json::json;

    fn tar_of(path: &Path, files: &[(&str, Vec<u8>)]) {
        let mut tar = tar::Builder::new(File::create(path).unwrap());
        for (name, data) in files {
            let mut h = crate::io::tar::file_header(data.len() as u64, 0o644, 0);
            tar.append_data(&mut h, name, &data[..]).unwrap();
        }
        tar.finish().unwrap();
    }

    fn blob_name(bytes: &[u8]) -> String {
        Layout::blob_name(&sha256_digest(bytes))
    }

    #[test]
    fn docker_archive_layers_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::to_vec(&json!({"architecture": "arm64", "os": "linux"})).unwrap();
        let gz_layer = vec![0x1f, 0x8b, 8, 0];
        let plain_layer = b"plain tar".to_vec();
        let manifest = serde_json::to_vec(&json!([{
            "Config": "config.json",
            "RepoTags": null,
            "Layers": [blob_name(&gz_layer), "abc/layer.tar"],
        }]))
        .unwrap();
        let path = dir.path().join("base.tar");
        tar_of(
            &path,
            &[
                ("manifest.json", manifest),
                ("config.json", config),
                (&blob_name(&gz_layer), gz_layer.clone()),
                ("abc/layer.tar", plain_layer),
            ],
        );
        let text = format!("docker-archive:{}", path.display());
        let image = BaseImage::open_local(&text, "arm64").unwrap();
        assert_eq!(image.reference, text);
        let layers: Vec<_> = image
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.media_type.as_str(), l.size))
            .collect();
        assert_eq!(
            layers,
            [
                (
                    Some(sha256_digest(&gz_layer)),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    4
                ),
                (None, "application/vnd.oci.image.layer.v1.tar", 9),
            ]
        );
        let e = BaseImage::open_local(&text, "amd64").unwrap_err();
        assert!(e.to_string().contains("\"arm64\", not amd64"), "{e}");
    }

    #[test]
    fn layout_with_a_nested_index_picks_the_platform() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| -> String {
            let d = sha256_digest(bytes);
            std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
            d
        };
        let mut manifests = Vec::new();
        for arch in ["amd64", "arm64"] {
            let config = serde_json::to_vec(&json!({
                "architecture": arch, "os": "linux", "container_config": {"x": 1}
            }))
            .unwrap();
            let layer = format!("layer {arch}").into_bytes();
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": put(&config), "size": config.len()},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                            "digest": put(&layer), "size": layer.len()}],
            }))
            .unwrap();
            manifests.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(&manifest), "size": manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }));
        }
        let inner =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": put(&inner), "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }]});
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();

        // The same two manifests at the top of the layout, without tags: the platform decides.
        let flat = dir.path().join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        std::os::unix::fs::symlink(dir.path().join("blobs"), flat.join("blobs")).unwrap();
        let top = json!({"schemaVersion": 2, "manifests": manifests});
        std::fs::write(flat.join("index.json"), top.to_string()).unwrap();
        for arch in ["amd64", "arm64"] {
            let image = BaseImage::open_local(&format!("oci:{}", flat.display()), arch).unwrap();
            assert_eq!(image.config["architecture"], arch);
        }

        let text = format!("oci:{}:v1", dir.path().display());
        let image = BaseImage::open_local(&text, "arm64").unwrap();
        assert_eq!(image.config["architecture"], "arm64");
        // Fields outside the OCI spec are kept.
        assert_eq!(image.config["container_config"], json!({"x": 1}));
        assert_eq!(
            image.layers[0].media_type,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let e = BaseImage::open_local(&format!("oci:{}:v2", dir.path().display()), "arm64")
            .unwrap_err();
        assert!(e.to_string().contains("no manifest tagged v2"), "{e}");
        let e = BaseImage::open_local(&text, "riscv64").unwrap_err();
        assert!(e.to_string().contains("no linux/riscv64 image"), "{e}");
        let e = BaseImage::open_local("ghcr.io/x/y:1", "amd64").unwrap_err();
        assert!(e.to_string().contains("registry reference"), "{e}");

        // A document that is JSON but not an index says so, on one line.
        std::fs::write(dir.path().join("index.json"), r#"{"manifests": "no"}"#).unwrap();
        let e = BaseImage::open_local(&text, "arm64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("index.json is not a valid document"), "{e}");
        std::fs::write(dir.path().join("index.json"), "{").unwrap();
        let e = BaseImage::open_local(&text, "arm64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("index.json is not valid JSON"), "{e}");
    }
}
