//! Locating a base image's manifest, config and layers in local sources.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

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
    /// The reference as given (used for the output's tag).
    pub reference: String,
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

fn json(bytes: &[u8], what: &str, path: &Path) -> Result<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::format(path, format!("{what} is not valid JSON: {e}")))
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
    /// Opens a base image reference for `arch`: `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`,
    /// `docker-archive:PATH`. Registry references are pulled by [`crate::oci`]'s caller.
    pub fn open_local(reference: &str, arch: &str) -> Result<BaseImage> {
        let (kind, rest) = reference.split_once(':').unwrap_or(("", reference));
        match kind {
            "oci" => {
                let (dir, tag) = split_tag(rest);
                Self::from_layout(reference, Layout::Dir(dir.into()), tag, arch)
            }
            "oci-archive" => {
                let (path, tag) = split_tag(rest);
                let index = tar_index(Path::new(path))?;
                Self::from_layout(reference, Layout::Archive(path.into(), index), tag, arch)
            }
            "docker-archive" => Self::from_docker_archive(reference, Path::new(rest), arch),
            _ => Err(Error::unsupported(format!(
                "base image {reference:?}: use oci:DIR, oci-archive:PATH or docker-archive:PATH (registry pulls are not supported in this build)"
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
        let index = json(&index_bytes, "index.json", &index_file)?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let chosen = manifests
            .iter()
            .find(|m| {
                tag.is_none_or(|t| m["annotations"]["org.opencontainers.image.ref.name"] == t)
            })
            .ok_or_else(|| {
                Error::invalid(format!(
                    "base image {reference}: no manifest{} in index.json",
                    tag.map(|t| format!(" tagged {t}")).unwrap_or_default()
                ))
            })?;
        let mut manifest_desc = chosen.clone();
        // An index inside the layout: pick linux/<arch>.
        if manifest_desc["mediaType"]
            .as_str()
            .is_some_and(|m| m.contains("index") || m.contains("manifest.list"))
        {
            let digest = manifest_desc["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (bytes, file) = layout.read(&Layout::blob_name(&digest))?;
            check_digest(&bytes, &digest, &file)?;
            let inner = json(&bytes, "image index", &file)?;
            manifest_desc = inner["manifests"]
                .as_array()
                .and_then(|ms| {
                    ms.iter().find(|m| {
                        m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux"
                    })
                })
                .cloned()
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "base image {reference}: no linux/{arch} image in its index"
                    ))
                })?;
        }
        let digest = manifest_desc["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (bytes, file) = layout.read(&Layout::blob_name(&digest))?;
        check_digest(&bytes, &digest, &file)?;
        let manifest = json(&bytes, "manifest", &file)?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (config_bytes, file) = layout.read(&Layout::blob_name(&config_digest))?;
        check_digest(&config_bytes, &config_digest, &file)?;
        let config = json(&config_bytes, "image config", &file)?;
        let mut layers = Vec::new();
        for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let digest = l["digest"].as_str().unwrap_or_default().to_string();
            let (file, offset, size) = layout.locate(&Layout::blob_name(&digest))?;
            layers.push(Blob {
                digest: Some(digest),
                media_type: l["mediaType"]
                    .as_str()
                    .unwrap_or("application/vnd.oci.image.layer.v1.tar+gzip")
                    .to_string(),
                size,
                file,
                offset,
            });
        }
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
        let manifest = json(&bytes, "manifest.json", &file)?;
        let first = manifest
            .get(0)
            .ok_or_else(|| Error::format(path, "manifest.json lists no image"))?;
        let (config_bytes, file) = layout.read(first["Config"].as_str().unwrap_or_default())?;
        let config = json(&config_bytes, "image config", &file)?;
        let mut layers = Vec::new();
        for l in first["Layers"].as_array().cloned().unwrap_or_default() {
            let name = l.as_str().unwrap_or_default();
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
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            layers.push(Blob {
                digest,
                media_type: media_type.to_string(),
                size,
                file,
                offset,
            });
        }
        let image = BaseImage {
            reference: reference.to_string(),
            config,
            layers,
        };
        image.check_arch(arch)?;
        Ok(image)
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

fn split_tag(rest: &str) -> (&str, Option<&str>) {
    match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !t.is_empty() => (p, Some(t)),
        _ => (rest, None),
    }
}

fn check_digest(bytes: &[u8], digest: &str, file: &Path) -> Result<()> {
    use sha2::Digest;
    let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    if actual != digest {
        return Err(Error::format(
            file,
            format!("blob {digest} has digest {actual}"),
        ));
    }
    Ok(())
}
