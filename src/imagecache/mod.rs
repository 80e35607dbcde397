//! The image cache input (`input.imageCache`, `--image-cache`): container images for
//! air-gapped installs, laid out as Talos's registryd serves them (`blob/sha256-<hex>`,
//! `manifests/<registry>/<repo>/{reference,digest}/...`; Talos
//! `pkg/imager/cache/cache.go`), carried in ISOs as `imagecache/` and in disk images
//! as the ext4 `IMAGECACHE` partition ([`crate::formats::ext4`]).
//!
//! The cache arrives as an OCI layout wrapping the tree in one layer (`--layout oci`,
//! `ociPath`; its index entry names the architecture), as that image in a registry
//! (`imageRef`), or as a tarball of the tree (`tarballPath`, `--layout flat`). It is
//! unpacked into the scratch directory (it can be GBs: streamed, never held in
//! memory) and checked: only `blob/` and `manifests/`, only directories and regular
//! files, every blob named for the SHA-256 of its bytes.

pub mod create;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::error::{Error, IoContext, Result};
use crate::oci::source::{Blob, is_index, parse};
use crate::profile::{ContainerAsset, Profile};
use crate::report::Progress;

/// An unpacked, checked image cache.
#[derive(Debug, Clone)]
pub struct ImageCache {
    /// The directory holding `blob/` and `manifests/`.
    pub root: PathBuf,
    /// The sum of the regular files' sizes (Talos's partition size rule).
    pub files_size: u64,
}

/// What names the cache in messages.
fn source_name(a: &ContainerAsset) -> String {
    if !a.tarball_path.is_empty() {
        a.tarball_path.clone()
    } else if !a.oci_path.is_empty() {
        a.oci_path.clone()
    } else {
        a.image_ref.clone()
    }
}

/// Unpacks and checks the profile's image cache into `scratch/imagecache`; `None`
/// without one.
pub fn prepare(
    profile: &Profile,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Option<ImageCache>> {
    let Some(asset) = profile.input.image_cache.as_ref() else {
        return Ok(None);
    };
    let source = source_name(asset);
    if source.is_empty() {
        return Err(Error::invalid(
            "input.imageCache: set one of imageRef, ociPath or tarballPath",
        ));
    }
    let root = scratch.join("imagecache");
    std::fs::create_dir_all(&root).op("creating", &root)?;
    let arch = profile.arch.as_str();
    if !asset.tarball_path.is_empty() {
        progress.step(&format!("extracting image cache {source}..."));
        unpack_tarball(Path::new(&asset.tarball_path), &root, &source)?;
    } else if !asset.oci_path.is_empty() {
        progress.step(&format!("using image cache from {source}..."));
        for layer in layout_layers(Path::new(&asset.oci_path), arch)? {
            unpack_layer(&layer, &root, &source)?;
        }
    } else {
        progress.step(&format!("pulling image cache {source}..."));
        let image = crate::oci::Reference::parse(&asset.image_ref)?
            .open(arch, asset.force_insecure)
            .map_err(|err| match err {
                Error::Dependency(m) => {
                    Error::Dependency(format!("error pulling image cache {source}: {m}"))
                }
                other => other,
            })?;
        for layer in &image.layers {
            unpack_layer(layer, &root, &source)?;
        }
    }
    let files_size = check_tree(&root, &source)?;
    Ok(Some(ImageCache { root, files_size }))
}

/// The layers of the cache image in an OCI layout, for `arch`: the index entry for
/// `linux/<arch>` (Talos writes the platform there), or an entry without a platform
/// whose config names the architecture.
pub fn layout_layers(dir: &Path, arch: &str) -> Result<Vec<Blob>> {
    let bad = |msg: String| Error::invalid(format!("image cache {}: {msg}", dir.display()));
    let index_path = dir.join("index.json");
    let bytes = read_bounded(&index_path, 4 << 20)?;
    let index: ImageIndex = parse(&bytes, "index.json", &index_path)?;
    let mut found = Vec::new();
    let mut chosen = None;
    for m in index.manifests() {
        match m.platform() {
            Some(p) => {
                let a = p.architecture().to_string();
                if a == arch && chosen.is_none() {
                    chosen = Some(m.clone());
                }
                found.push(a);
            }
            None if chosen.is_none() => chosen = Some(m.clone()),
            None => {}
        }
    }
    let mut desc = chosen.ok_or_else(|| {
        bad(format!(
            "the cache is for {}, not {arch} (create it with --platform linux/{arch})",
            found.join(", ")
        ))
    })?;
    if is_index(desc.media_type()) {
        let inner: ImageIndex = read_blob(dir, desc.digest().as_ref(), "image index")?;
        desc = crate::oci::source::for_platform(&inner, arch)
            .cloned()
            .ok_or_else(|| bad(format!("no linux/{arch} image in its index")))?;
    }
    let manifest: ImageManifest = read_blob(dir, desc.digest().as_ref(), "manifest")?;
    let config: serde_json::Value =
        read_blob(dir, manifest.config().digest().as_ref(), "image config")?;
    if let Some(a) = config["architecture"].as_str()
        && !a.is_empty()
        && a != arch
    {
        return Err(bad(format!(
            "the cache is for {a}, not {arch} (create it with --platform linux/{arch})"
        )));
    }
    manifest
        .layers()
        .iter()
        .map(|l| {
            let digest = l.digest().to_string();
            let file = blob_path(dir, &digest)?;
            let size = std::fs::metadata(&file).at(&file)?.len();
            Ok(Blob {
                digest: Some(digest),
                media_type: l.media_type().to_string(),
                size,
                file,
                offset: 0,
            })
        })
        .collect()
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let (alg, hex) = digest.split_once(':').unwrap_or(("", ""));
    if alg != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "image cache {}: unsupported digest {digest:?}",
            dir.display()
        )));
    }
    Ok(dir.join("blobs").join(alg).join(hex))
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = File::open(path).at(path)?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes).at(path)?;
    if bytes.len() as u64 > max {
        return Err(Error::format(path, format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

fn read_blob<T: serde::de::DeserializeOwned>(dir: &Path, digest: &str, what: &str) -> Result<T> {
    let path = blob_path(dir, digest)?;
    let bytes = read_bounded(&path, 4 << 20)?;
    let got = crate::io::sha256_digest(&bytes);
    if got != digest {
        return Err(Error::format(
            &path,
            format!("blob {digest} has digest {got}"),
        ));
    }
    parse(&bytes, what, &path)
}

/// Unpacks a tarball of the cache tree (`tarballPath`) into `root`.
pub fn unpack_tarball(path: &Path, root: &Path, source: &str) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::invalid(format!("image cache {source}: {e}")))?;
    unpack_tar(std::io::BufReader::new(f), path, root, source)
}

/// Unpacks one (compressed) layer, checking its digest.
fn unpack_layer(layer: &Blob, root: &Path, source: &str) -> Result<()> {
    let mut hashing = crate::io::HashingReader::new(layer.open()?);
    let unpacked = crate::io::tar::layer_decoder(&mut hashing)
        .map_err(|e| Error::format(&layer.file, format!("reading a layer: {e}")))
        .and_then(|r| unpack_tar(r, &layer.file, root, source));
    let drained = std::io::copy(&mut hashing, &mut std::io::sink()).at(&layer.file);
    let (_, sum, _) = hashing.finish();
    let got = crate::io::digest_string(sum);
    if let Some(want) = &layer.digest
        && *want != got
    {
        return Err(Error::format(
            &layer.file,
            format!("image cache layer does not match its digest: expected {want}, got {got}"),
        ));
    }
    unpacked?;
    drained?;
    Ok(())
}

/// Unpacks a tar stream of the cache tree: directories and regular files only.
fn unpack_tar(reader: impl Read, file: &Path, root: &Path, source: &str) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let corrupt = |e: std::io::Error| Error::format(file, format!("corrupt tar stream: {e}"));
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = match crate::io::tar::clean_name(Path::new(&raw)) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(crate::io::tar::EscapesRoot) => {
                return Err(Error::invalid(format!(
                    "image cache {source}: entry {raw:?} escapes the cache root"
                )));
            }
        };
        let dest = root.join(&name);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&dest).op("creating", &dest)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).op("creating", parent)?;
                }
                let mut out = File::create(&dest).op("creating", &dest)?;
                crate::io::copy(&mut entry, file, &mut out, &dest)?;
            }
            other => {
                return Err(Error::invalid(format!(
                    "image cache {source}: entry {raw:?} is a {other:?}; a cache holds only directories and regular files"
                )));
            }
        }
    }
    Ok(())
}

/// Checks the unpacked tree; the sum of its file sizes.
pub fn check_tree(root: &Path, source: &str) -> Result<u64> {
    let bad = |msg: String| Error::invalid(format!("image cache {source}: {msg}"));
    for top in std::fs::read_dir(root).at(root)? {
        let name = top.at(root)?.file_name();
        if name != "blob" && name != "manifests" {
            return Err(bad(format!(
                "{:?} at its root: a cache holds only blob/ and manifests/",
                name
            )));
        }
    }
    if !root.join("blob").is_dir() || !root.join("manifests").is_dir() {
        return Err(bad(
            "blob/ or manifests/ is missing: not an image cache".into()
        ));
    }
    let mut paths = Vec::new();
    crate::io::walk(root, root, &mut paths)?;
    let mut total = 0u64;
    for rel in paths {
        let path = root.join(&rel);
        let md = std::fs::symlink_metadata(&path).at(&path)?;
        if md.is_dir() {
            continue;
        }
        if !md.is_file() {
            return Err(bad(format!(
                "{}: neither a regular file nor a directory",
                rel.display()
            )));
        }
        total += md.len();
        if rel.parent() == Some(Path::new("blob")) {
            let name = rel.file_name().unwrap_or_default().to_string_lossy();
            let hex = name.strip_prefix("sha256-").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad(format!(
                    "blob/{name}: not named sha256-<64 hex digits>"
                )));
            }
            let (_, got) = crate::io::sha256_file(&path)?;
            if got != hex {
                return Err(bad(format!(
                    "blob/{name} holds bytes of digest sha256:{got}"
                )));
            }
        }
    }
    Ok(total)
}
