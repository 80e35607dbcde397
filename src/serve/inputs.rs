//! Talos inputs per version: an `--assets` directory as given, or images in a registry
//! (`--assets-registry REF`) taken as Image Factory takes them (`internal/artifacts`):
//!
//! - versions: the tags of `REF/imager` that are semver ≥ 1.2.0 and either a release or an
//!   `-alpha.N`/`-beta.N`/`-rc.N` pre-release of the newest major.minor, re-read every
//!   15 minutes;
//! - per version, the `linux/amd64` image of `REF/imager:<version>`: the regular files
//!   under `usr/install/` (`<arch>/vmlinuz`, `initramfs.xz`, `systemd-stub.efi`,
//!   `systemd-boot.efi`), the layers applied in order with their whiteouts;
//! - `REF/installer-base:<version>`: its linux/amd64 and linux/arm64 images, copied into
//!   an OCI layout (when an installer is first asked for);
//! - `REF/extensions:<version>`: the catalog files `image-digests`
//!   (`<registry>/<ns>/<name>:<tag>@sha256:<digest>` lines) and `descriptions.yaml`
//!   (author and description by that line); an extension is pulled by digest from
//!   `REF/<name>` when a schematic first names it (a mirror keeps the repository
//!   names under its own prefix, as `REF/imager` stands for `<registry>/<ns>/imager`).
//!
//! Everything pulled is checked against the digest its manifest names and lands in
//! the same tree an `--assets` directory has (under the work directory), each part
//! made in a temporary directory and renamed into place whole, so the rest of the
//! service reads both kinds of input alike and a pull cut short leaves nothing half
//! there. Pulls are single-flight per part (one thread pulls, the others wait for it)
//! and run on the blocking pool.
//!
//! Layers are applied here rather than with `extensions::unpack`, which writes a whole
//! extension rootfs (links, modes, ownership): from an imager image of a gigabyte or
//! more only a handful of regular files are wanted, and nothing else is written.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::StatusCode;
use oci_spec::image::{ImageIndex, ImageManifest};

use super::ServeError;
use super::config::RegistryTarget;
use super::paths;
use crate::error::{Error, IoContext};
use crate::oci::registry::{SendError, Session};
use crate::profile::quirks::Semver;

/// The oldest Talos version the factory offers (`build.minTalosVersion`).
const MIN_VERSION: Semver = Semver(1, 2, 0);

/// One entry of an extension catalog (`/version/:v/extensions/official`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
    pub author: String,
    pub description: String,
}

/// A catalog entry of a registry catalog, with where its image is pulled from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RemoteEntry {
    #[serde(flatten)]
    entry: CatalogEntry,
    /// Repository in the assets registry.
    pull: String,
}

/// Where the inputs come from.
pub struct Inputs {
    /// The `--assets` directory, or where registry inputs are unpacked.
    root: PathBuf,
    remote: Option<Remote>,
}

struct Remote {
    target: RegistryTarget,
    session: Session,
    /// The offered versions, or why they could not be read.
    versions: RwLock<Option<Result<Vec<String>, String>>>,
    /// Single-flight locks by part (`<version>`, `<version>/installer-base`, ...).
    flights: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// What every pulled image's cosign signature must satisfy.
    verification: crate::cosign::Verification,
    /// `repo@digest` of the images whose signatures verified.
    verified: Mutex<std::collections::HashSet<String>>,
}

/// The Image Factory version filter over the tags of the imager repository, in semver order.
pub fn offered_versions(tags: &[String]) -> Vec<String> {
    let mut v: Vec<String> = tags
        .iter()
        .filter(|t| paths::parse_version(t).is_ok_and(|p| &p == *t))
        .filter(|t| paths::version_key(t).is_some_and(|(s, _, _)| s >= MIN_VERSION))
        .cloned()
        .collect();
    v.sort_by_key(|n| paths::version_key(n));
    let newest = v
        .iter()
        .filter_map(|t| paths::version_key(t))
        .map(|(s, _, _)| (s.0, s.1))
        .max();
    v.retain(|t| {
        let (s, release, pre) = paths::version_key(t).expect("kept above");
        if release {
            return true;
        }
        let known = ["alpha.", "beta.", "rc."].iter().any(|p| {
            pre.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
        known && Some((s.0, s.1)) == newest
    });
    v
}

fn gateway(e: impl std::fmt::Display) -> ServeError {
    ServeError::new(StatusCode::BAD_GATEWAY, e.to_string())
}

fn internal(e: impl std::fmt::Display) -> ServeError {
    ServeError::internal(e.to_string())
}

impl Inputs {
    /// Inputs read from the directory `dir` as it is.
    pub fn dir(dir: PathBuf) -> Inputs {
        Inputs {
            root: dir,
            remote: None,
        }
    }

    /// Inputs pulled from `target` (anonymous or with the session's credentials) and
    /// unpacked under `root`; every image pulled must pass `verification` first.
    pub fn registry(
        target: RegistryTarget,
        session: Session,
        root: PathBuf,
        verification: crate::cosign::Verification,
    ) -> Inputs {
        remove_unfinished(&root, 0);
        Inputs {
            root,
            remote: Some(Remote {
                target,
                session,
                versions: RwLock::new(None),
                flights: Mutex::default(),
                verification,
                verified: Mutex::default(),
            }),
        }
    }

    /// The tree the pipeline reads: `<root>/<version>/<arch>/vmlinuz`, ...
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `REF` as given, when the inputs come from a registry.
    pub fn registry_name(&self) -> Option<String> {
        self.remote.as_ref().map(|r| r.name(""))
    }

    /// Re-reads the tags of `REF/imager` (blocking). `Err` with `refused` when the
    /// registry turned the credentials (or their absence) down.
    pub fn refresh(&self) -> Result<(), SendError> {
        let Some(r) = &self.remote else {
            return Ok(());
        };
        let repo = r.target.repo("imager");
        let (list, failure) = match r.session.tags(&repo) {
            Ok(Some(tags)) => (Ok(offered_versions(&tags)), None),
            Ok(None) => {
                let m = format!("assets registry: {} not found", r.name("imager"));
                let e = SendError {
                    refused: false,
                    error: Error::Dependency(m.clone()),
                };
                (Err(m), Some(e))
            }
            Err(e) => (
                Err(format!(
                    "assets registry: the tags of {} could not be read: {}",
                    r.name("imager"),
                    e.error.detail()
                )),
                Some(e),
            ),
        };
        let known = r
            .versions
            .read()
            .unwrap()
            .as_ref()
            .is_some_and(|v| v.is_ok());
        if list.is_ok() || !known {
            *r.versions.write().unwrap() = Some(list);
        }
        // A failed re-read keeps offering what was read before.
        failure.map_or(Ok(()), Err)
    }

    /// The versions offered, in semver order.
    pub fn versions(&self) -> Vec<String> {
        match &self.remote {
            None => {
                let mut v: Vec<String> = std::fs::read_dir(&self.root)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        paths::version_key(n).is_some()
                            && paths::parse_version(n).is_ok_and(|p| &p == n)
                    })
                    .collect();
                v.sort_by_key(|n| paths::version_key(n));
                v
            }
            Some(r) => match &*r.versions.read().unwrap() {
                Some(Ok(v)) => v.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// `version` (already in `vX.Y.Z` form) if offered: 404 if not, 503 while the
    /// registry's version list could not be read.
    pub fn offered(&self, version: &str) -> Result<(), ServeError> {
        if let Some(r) = &self.remote {
            let unavailable = |m: String| Err(ServeError::new(StatusCode::SERVICE_UNAVAILABLE, m));
            match &*r.versions.read().unwrap() {
                Some(Ok(_)) => {}
                Some(Err(m)) => return unavailable(m.clone()),
                None => {
                    return unavailable(format!(
                        "assets registry: the tags of {} have not been read yet",
                        r.name("imager")
                    ));
                }
            }
        }
        let listed = self.versions().iter().any(|v| v == version);
        if listed && (self.remote.is_some() || self.root.join(version).is_dir()) {
            Ok(())
        } else {
            Err(ServeError::not_found(format!(
                "version {version} is not available"
            )))
        }
    }

    /// Makes sure the kernel inputs and the extension catalog of `version` are on local
    /// disk (blocking; pulls them the first time).
    pub fn prepare(&self, version: &str) -> Result<(), ServeError> {
        let Some(r) = &self.remote else {
            return Ok(());
        };
        let dest = self.root.join(version);
        r.once(version, &dest, |tmp| {
            r.unpack_imager(version, tmp)?;
            r.unpack_catalog(version, tmp)
        })
    }

    /// The extension catalog of a prepared `version`, sorted by name; a 500 (logged
    /// with the file) when the pulled `catalog.json` is not readable.
    pub fn catalog(&self, version: &str) -> Result<Vec<CatalogEntry>, ServeError> {
        if self.remote.is_some() {
            return Ok(remote_catalog(&self.root, version)?
                .into_iter()
                .map(|e| e.entry)
                .collect());
        }
        Ok(dir_catalog(&self.root, version))
    }

    /// The OCI layout of official extension `name` for a prepared `version` (pulled the
    /// first time); `None` if the catalog has no such extension.
    pub fn extension(&self, version: &str, name: &str) -> Result<Option<PathBuf>, ServeError> {
        let Some(dir) = extension_path(&self.root, version, name) else {
            return Ok(None);
        };
        let Some(r) = &self.remote else {
            return Ok(dir.join("index.json").is_file().then_some(dir));
        };
        let Some(e) = remote_catalog(&self.root, version)?
            .into_iter()
            .find(|e| e.entry.name == name)
        else {
            return Ok(None);
        };
        r.once(&format!("{version}/extensions/{name}"), &dir, |tmp| {
            let tag = e
                .entry
                .reference
                .rsplit_once(':')
                .map_or(version, |(_, t)| t);
            if !r.copy_image(&e.pull, &e.entry.digest, tmp, tag)? {
                return Err(ServeError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "official extension {name:?}: {}@{} is not in the assets registry",
                        r.name(repo_tail(&r.target, &e.pull)),
                        e.entry.digest
                    ),
                ));
            }
            Ok(())
        })?;
        Ok(Some(dir))
    }

    /// The directory of the talosctl binaries of a prepared `version`: `talosctl/` of
    /// the version, or the `talosctl-<os>-<arch>[.exe]` files of `REF/talosctl-all:<version>`
    /// (pulled the first time; an empty directory when the registry has no such image).
    pub fn talosctl(&self, version: &str) -> Result<PathBuf, ServeError> {
        let dir = self.root.join(version).join("talosctl");
        let Some(r) = &self.remote else {
            return Ok(dir);
        };
        let repo = r.target.repo("talosctl-all");
        r.once(&format!("{version}/talosctl"), &dir, |tmp| {
            let Some((manifest, _, _)) = r.image_manifest(&repo, version, "amd64")? else {
                return Ok(());
            };
            let blobs = tmp.join(".layers");
            let layers = r.layers(&repo, &manifest, &blobs)?;
            apply_layers(&layers, tmp, &|p| {
                let name = p.file_name()?.to_str()?;
                name.starts_with("talosctl-").then(|| PathBuf::from(name))
            })
            .map_err(gateway)?;
            let _ = std::fs::remove_dir_all(&blobs);
            Ok(())
        })?;
        Ok(dir)
    }

    /// The installer base of a prepared `version` as an OCI layout (pulled the first
    /// time), or the 404 naming what is missing.
    pub fn installer_base(&self, version: &str) -> Result<PathBuf, ServeError> {
        let dir = self.root.join(version).join("installer-base");
        let Some(r) = &self.remote else {
            return if dir.join("index.json").is_file() {
                Ok(dir)
            } else {
                Err(ServeError::not_found(format!(
                    "installer assets need an installer base: {version}/installer-base/ (an OCI layout) is missing"
                )))
            };
        };
        let repo = r.target.repo("installer-base");
        r.once(&format!("{version}/installer-base"), &dir, |tmp| {
            if !r.copy_image(&repo, version, tmp, version)? {
                return Err(ServeError::not_found(format!(
                    "installer assets need an installer base: {} is not in the assets registry",
                    r.name(&format!("installer-base:{version}"))
                )));
            }
            Ok(())
        })?;
        Ok(dir)
    }
}

/// Removes the temporary directories of pulls a stopped process left (`.pull-*`) under
/// `dir`, down to where extensions live.
fn remove_unfinished(dir: &Path, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_string_lossy().starts_with(".pull-") {
            let _ = std::fs::remove_dir_all(&path);
        } else if depth < 5 {
            remove_unfinished(&path, depth + 1);
        }
    }
}

/// `root/<version>/extensions/<name>` when `name` is a safe relative path.
fn extension_path(root: &Path, version: &str, name: &str) -> Option<PathBuf> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    ok.then(|| root.join(version).join("extensions").join(name))
}

/// The unpacked catalog of a registry version (`catalog.json`, written by the pull of
/// a prepared version): one it cannot read is this service's error, never an empty
/// catalog.
fn remote_catalog(root: &Path, version: &str) -> Result<Vec<RemoteEntry>, ServeError> {
    let path = root.join(version).join("catalog.json");
    let bytes = std::fs::read(&path).map_err(|e| internal(Error::io(&path, e)))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        internal(Error::format(
            &path,
            format!("not an extension catalog (JSON list of entries): {e}"),
        ))
    })
}

/// The catalog entry of the OCI layout `dir` (its `index.json`'s first manifest), or
/// why it cannot be listed.
fn dir_entry(dir: &Path, name: String, version: &str) -> std::result::Result<CatalogEntry, String> {
    let bytes = std::fs::read(dir.join("index.json")).map_err(|e| e.to_string())?;
    let index: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    let first = &index["manifests"][0];
    let digest = first["digest"]
        .as_str()
        .filter(|d| {
            d.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .ok_or("its first manifest has no sha256 digest")?;
    let tag = first["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or(version);
    let description = std::fs::read_to_string(dir.join("description.txt")).unwrap_or_default();
    Ok(CatalogEntry {
        reference: format!("ghcr.io/{name}:{tag}"),
        digest: digest.to_string(),
        author: if name.starts_with("siderolabs/") {
            "Sidero Labs".into()
        } else {
            String::new()
        },
        description: description.trim().to_string(),
        name,
    })
}

/// The catalog of an `--assets` directory: every OCI layout under `extensions/`, named
/// by its path there (`siderolabs/hello-world-service`), sorted by name. A layout whose
/// `index.json` cannot be read is left out with one log line naming the file.
fn dir_catalog(assets: &Path, version: &str) -> Vec<CatalogEntry> {
    let root = assets.join(version).join("extensions");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        if dir.join("index.json").is_file() {
            let Ok(name) = dir.strip_prefix(&root) else {
                continue;
            };
            let name = name.to_string_lossy().into_owned();
            if extension_path(assets, version, &name).is_none() {
                continue;
            }
            match dir_entry(&dir, name, version) {
                Ok(entry) => out.push(entry),
                Err(m) => tracing::warn!(
                    file = %dir.join("index.json").display(),
                    error = %m,
                    "extension catalog: skipping an extension whose index.json cannot be read"
                ),
            }
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().is_dir() && stack.len() < 10_000 {
                    stack.push(e.path());
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One `image-digests` line: `<registry>/<repository>:<tag>@sha256:<hex>`.
#[derive(Debug, PartialEq, Eq)]
struct DigestLine {
    /// `ghcr.io/siderolabs/gvisor:20231214.0-v1.9.2`
    tagged: String,
    /// `siderolabs/gvisor`
    repository: String,
    digest: String,
}

fn parse_digest_line(line: &str) -> Option<DigestLine> {
    let (tagged, digest) = line.trim().split_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (host, path) = tagged.split_once('/')?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return None;
    }
    let repository = match path.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => path,
    };
    extension_path(Path::new(""), "", repository)?;
    Some(DigestLine {
        tagged: tagged.to_string(),
        repository: repository.to_string(),
        digest: digest.to_string(),
    })
}

/// Reads a gzip-, zstd- or un-compressed tar layer (told apart by magic bytes).
fn layer_reader(path: &Path) -> crate::error::Result<Box<dyn Read>> {
    let f = std::fs::File::open(path).at(path)?;
    crate::io::tar::layer_decoder(f).at(path)
}

/// A tar entry's path made relative and safe (`None` for the root and for escapes).
fn clean(path: &Path) -> Option<PathBuf> {
    crate::io::tar::clean_name(path).ok().flatten()
}

/// Applies the imager image's `layers` in order to `dest`: the regular files under
/// `usr/install/` (as `<arch>/vmlinuz`, ...), whiteouts honoured, nothing written
/// outside `dest` whatever the layers hold.
pub fn unpack_usr_install(layers: &[PathBuf], dest: &Path) -> crate::error::Result<()> {
    apply_layers(layers, dest, &|p| {
        p.strip_prefix("usr/install")
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .map(Path::to_path_buf)
    })
}

/// Applies `layers` in order to `dest`, keeping only the regular files `keep` maps to
/// a destination path (relative); whiteouts remove what earlier layers put there.
fn apply_layers(
    layers: &[PathBuf],
    dest: &Path,
    keep: &dyn Fn(&Path) -> Option<PathBuf>,
) -> crate::error::Result<()> {
    for layer in layers {
        let mut archive = tar::Archive::new(layer_reader(layer)?);
        let bad = |e: std::io::Error| Error::format(layer, format!("a corrupt layer: {e}"));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let Some(path) = clean(&entry.path().map_err(bad)?) else {
                continue;
            };
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let parent = path.parent().unwrap_or(Path::new(""));
                let target = if hidden == ".wh..opq" {
                    keep(parent)
                } else {
                    keep(&parent.join(hidden))
                };
                if let Some(t) = target {
                    let t = dest.join(t);
                    if hidden == ".wh..opq" || t.is_dir() {
                        let _ = std::fs::remove_dir_all(&t);
                    } else {
                        let _ = std::fs::remove_file(&t);
                    }
                }
                continue;
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Some(rel) = keep(&path) else { continue };
            let out = dest.join(rel);
            if let Some(p) = out.parent() {
                std::fs::create_dir_all(p).at(p)?;
            }
            let _ = std::fs::remove_file(&out);
            let mut f = std::fs::File::create(&out).at(&out)?;
            std::io::copy(&mut entry, &mut f)
                .map_err(|e| Error::format(layer, format!("reading {}: {e}", path.display())))?;
        }
    }
    Ok(())
}

impl Remote {
    /// `REF/<name>` for messages.
    fn name(&self, name: &str) -> String {
        let repo = self.target.repo(name);
        format!("{}/{}", self.target.host, repo.trim_end_matches('/'))
    }

    /// Runs `make` into a temporary directory beside `dest` and renames it to `dest`,
    /// once: concurrent callers for the same part wait for the first.
    fn once(
        &self,
        part: &str,
        dest: &Path,
        make: impl FnOnce(&Path) -> Result<(), ServeError>,
    ) -> Result<(), ServeError> {
        if dest.exists() {
            return Ok(());
        }
        let lock = self
            .flights
            .lock()
            .unwrap()
            .entry(part.to_string())
            .or_default()
            .clone();
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        if dest.exists() {
            return Ok(());
        }
        let parent = dest.parent().expect("parts live under the root");
        std::fs::create_dir_all(parent)
            .map_err(|e| internal(Error::io_op("creating", parent, e)))?;
        let tmp = parent.join(format!(
            ".pull-{}-{}",
            dest.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| internal(Error::io_op("creating", &tmp, e)))?;
        let started = std::time::Instant::now();
        let result = make(&tmp).and_then(|_| {
            std::fs::rename(&tmp, dest).map_err(|e| internal(Error::io_op("renaming", dest, e)))
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        } else {
            tracing::info!(
                part,
                seconds = started.elapsed().as_secs_f64(),
                "pulled Talos inputs"
            );
        }
        result
    }

    /// The manifest of the linux/`arch` image of `repo:reference` (resolving an index),
    /// with its digest; `None` when the tag or digest is not there.
    fn image_manifest(
        &self,
        repo: &str,
        reference: &str,
        arch: &str,
    ) -> Result<Option<(ImageManifest, Vec<u8>, String)>, ServeError> {
        let Some(m) = self.session.manifest(repo, reference).map_err(gateway)? else {
            return Ok(None);
        };
        self.verify_signature(repo, reference, &m.digest)?;
        let what = format!("{}:{reference}", self.name(repo_tail(&self.target, repo)));
        let parse_err = |e: serde_json::Error| gateway(format!("{what}: not an image: {e}"));
        if is_index(&m.media_type, &m.bytes) {
            let index: ImageIndex = serde_json::from_slice(&m.bytes).map_err(parse_err)?;
            let Some(d) = crate::oci::source::for_platform(&index, arch) else {
                return Err(gateway(format!("{what} has no linux/{arch} image")));
            };
            let d = d.digest().to_string();
            let Some(inner) = self.session.manifest(repo, &d).map_err(gateway)? else {
                return Err(gateway(format!("{what}: manifest {d} is missing")));
            };
            let manifest = serde_json::from_slice(&inner.bytes).map_err(parse_err)?;
            return Ok(Some((manifest, inner.bytes, inner.digest)));
        }
        let manifest = serde_json::from_slice(&m.bytes).map_err(parse_err)?;
        Ok(Some((manifest, m.bytes, m.digest)))
    }

    /// Checks the cosign signature of `repo`@`digest` (what `reference` resolved to)
    /// before anything of it is read, as Image Factory does (`internal/image/verify`).
    /// A refusal is one log line and a 502 naming the image and the reason; the pull
    /// stops, so nothing of the image is unpacked or kept.
    fn verify_signature(
        &self,
        repo: &str,
        reference: &str,
        digest: &str,
    ) -> Result<(), ServeError> {
        let crate::cosign::Verification::Policies(policies) = &self.verification else {
            return Ok(());
        };
        let key = format!("{repo}@{digest}");
        if self.verified.lock().unwrap().contains(&key) {
            return Ok(());
        }
        let sep = if reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        let image = format!(
            "{}{sep}{reference}",
            self.name(repo_tail(&self.target, repo))
        );
        let source = crate::cosign::RegistrySource {
            session: &self.session,
            repo,
        };
        match crate::cosign::verify(&source, digest, policies) {
            Ok(how) => {
                tracing::info!(image, digest, method = %how, "image signature verified");
                self.verified.lock().unwrap().insert(key);
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                let reason = reason.trim_start_matches("invalid input: ");
                tracing::warn!(image, digest, reason, "image signature refused");
                Err(gateway(format!(
                    "image {image} ({digest}) refused: {reason}"
                )))
            }
        }
    }

    /// Downloads the layers of `manifest` into `dir`; their paths in order.
    fn layers(
        &self,
        repo: &str,
        manifest: &ImageManifest,
        dir: &Path,
    ) -> Result<Vec<PathBuf>, ServeError> {
        let mut out = Vec::new();
        for l in manifest.layers() {
            let digest = l.digest().to_string();
            let path = dir.join(digest.replace(':', "-"));
            if !self
                .session
                .blob_to_file(repo, &digest, &path)
                .map_err(gateway)?
            {
                return Err(gateway(format!("{repo}: layer {digest} is missing")));
            }
            out.push(path);
        }
        Ok(out)
    }

    /// `REF/imager:<version>` (its amd64 image): the files under `usr/install/` into `tmp`.
    fn unpack_imager(&self, version: &str, tmp: &Path) -> Result<(), ServeError> {
        let repo = self.target.repo("imager");
        let Some((manifest, _, _)) = self.image_manifest(&repo, version, "amd64")? else {
            return Err(ServeError::not_found(format!(
                "version {version} is not available: {} is not in the assets registry",
                self.name(&format!("imager:{version}"))
            )));
        };
        let blobs = tmp.join(".layers");
        let layers = self.layers(&repo, &manifest, &blobs)?;
        unpack_usr_install(&layers, tmp).map_err(gateway)?;
        let _ = std::fs::remove_dir_all(&blobs);
        let arches: Vec<&str> = ["amd64", "arm64"]
            .into_iter()
            .filter(|a| tmp.join(a).join("vmlinuz").is_file())
            .collect();
        if arches.is_empty() {
            return Err(gateway(format!(
                "{} has no usr/install/<arch>/vmlinuz",
                self.name(&format!("imager:{version}"))
            )));
        }
        Ok(())
    }

    /// `REF/extensions:<version>` into `tmp/catalog.json` (an empty catalog when the
    /// version has none).
    fn unpack_catalog(&self, version: &str, tmp: &Path) -> Result<(), ServeError> {
        let repo = self.target.repo("extensions");
        let what = self.name(&format!("extensions:{version}"));
        let mut entries = Vec::new();
        if let Some((manifest, _, _)) = self.image_manifest(&repo, version, "amd64")? {
            let dir = tmp.join(".catalog");
            let layers = self.layers(&repo, &manifest, &dir)?;
            apply_layers(&layers, &dir, &|p| {
                (p == Path::new("image-digests") || p == Path::new("descriptions.yaml"))
                    .then(|| p.to_path_buf())
            })
            .map_err(gateway)?;
            let digests = std::fs::read_to_string(dir.join("image-digests"))
                .map_err(|e| gateway(format!("{what}: image-digests: {e}")))?;
            let descriptions: HashMap<String, serde_yaml::Value> =
                match std::fs::read(dir.join("descriptions.yaml")) {
                    Ok(b) => serde_yaml::from_slice(&b)
                        .map_err(|e| gateway(format!("{what}: descriptions.yaml: {e}")))?,
                    Err(_) => HashMap::new(),
                };
            for line in digests.lines().filter(|l| !l.trim().is_empty()) {
                let Some(d) = parse_digest_line(line) else {
                    tracing::warn!(catalog = %what, line, "skipping an image-digests line that is not <registry>/<repo>:<tag>@sha256:<digest>");
                    continue;
                };
                let meta = descriptions.get(line.trim());
                let field = |k: &str| {
                    meta.and_then(|m| m.get(k))
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .trim()
                        .to_string()
                };
                let tail = d
                    .repository
                    .split_once('/')
                    .map_or(d.repository.as_str(), |(_, t)| t);
                entries.push(RemoteEntry {
                    pull: self.target.repo(tail),
                    entry: CatalogEntry {
                        name: d.repository,
                        reference: d.tagged,
                        digest: d.digest,
                        author: field("author"),
                        description: field("description"),
                    },
                });
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        entries.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        let path = tmp.join("catalog.json");
        std::fs::write(&path, serde_json::to_vec(&entries).expect("JSON"))
            .map_err(|e| internal(Error::io(&path, e)))
    }

    /// Copies the linux/amd64 and linux/arm64 images of `repo:reference` into an OCI
    /// layout at `dest` (index entries tagged `tag`); `false` when it is not there.
    fn copy_image(
        &self,
        repo: &str,
        reference: &str,
        dest: &Path,
        tag: &str,
    ) -> Result<bool, ServeError> {
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let found = match self.image_manifest(repo, reference, arch) {
                Ok(f) => f,
                // An index without this architecture: the other may be there.
                Err(e) if e.message.contains("has no linux/") => continue,
                Err(e) => return Err(e),
            };
            let Some((manifest, bytes, digest)) = found else {
                return Ok(false);
            };
            let blobs = dest.join("blobs/sha256");
            let mut descriptors = vec![manifest.config().clone()];
            descriptors.extend(manifest.layers().iter().cloned());
            for d in &descriptors {
                let digest = d.digest().to_string();
                let path = blobs.join(digest.trim_start_matches("sha256:"));
                if !path.is_file()
                    && !self
                        .session
                        .blob_to_file(repo, &digest, &path)
                        .map_err(gateway)?
                {
                    return Err(gateway(format!("{repo}: blob {digest} is missing")));
                }
            }
            let config = blobs.join(
                manifest
                    .config()
                    .digest()
                    .to_string()
                    .trim_start_matches("sha256:"),
            );
            let found_arch = std::fs::read(&config)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|c| c["architecture"].as_str().map(str::to_string))
                .unwrap_or_default();
            if found_arch != arch {
                // A single-architecture image answers every architecture: keep its own.
                if entries
                    .iter()
                    .any(|e: &serde_json::Value| e["digest"] == digest)
                {
                    continue;
                }
            }
            let path = blobs.join(digest.trim_start_matches("sha256:"));
            std::fs::write(&path, &bytes).map_err(|e| internal(Error::io(&path, e)))?;
            // Docker schema 2 manifests keep their own media type.
            let media_type = manifest
                .media_type()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
            entries.push(serde_json::json!({
                "mediaType": media_type,
                "digest": digest,
                "size": bytes.len(),
                "platform": {"architecture": found_arch, "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        }
        if entries.is_empty() {
            return Ok(false);
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        for (name, bytes) in [
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json", index.to_string().into_bytes()),
        ] {
            let p = dest.join(name);
            std::fs::write(&p, bytes).map_err(|e| internal(Error::io(&p, e)))?;
        }
        Ok(true)
    }
}

/// `repo` without the target's prefix (for messages).
fn repo_tail<'a>(target: &RegistryTarget, repo: &'a str) -> &'a str {
    if target.prefix.is_empty() {
        return repo;
    }
    repo.strip_prefix(&target.prefix)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(repo)
}

/// Whether a manifest is an index: by media type, or by having `manifests`.
fn is_index(media: &str, bytes: &[u8]) -> bool {
    media.contains("index")
        || media.contains("list")
        || serde_json::from_slice::<serde_json::Value>(bytes)
            .is_ok_and(|v| v.get("manifests").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_filter() {
        let tags: Vec<String> = [
            "v1.9.2",
            "v1.1.0",
            "latest",
            "v1.10.0-alpha.1",
            "v1.10.0-beta.0x",
            "v1.9.3-rc.1",
            "v1.10.0",
            "1.9.0",
            "v1.10.1-rc.0",
            "v1.10.0-amd64",
            "v1.2.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            offered_versions(&tags),
            [
                "v1.2.0",
                "v1.9.2",
                "v1.10.0-alpha.1",
                "v1.10.0",
                "v1.10.1-rc.0"
            ]
        );
    }

    #[test]
    fn digest_lines() {
        let hex = "a".repeat(64);
        let d = parse_digest_line(&format!(
            "ghcr.io/siderolabs/gvisor:20231214.0-v1.9.2@sha256:{hex}"
        ))
        .unwrap();
        assert_eq!(d.repository, "siderolabs/gvisor");
        assert_eq!(d.tagged, "ghcr.io/siderolabs/gvisor:20231214.0-v1.9.2");
        assert_eq!(d.digest, format!("sha256:{hex}"));
        let port = parse_digest_line(&format!("127.0.0.1:5000/a/b@sha256:{hex}")).unwrap();
        assert_eq!(port.repository, "a/b");
        for bad in [
            format!("ghcr.io/siderolabs/x:1@sha256:{}", "a".repeat(63)),
            format!("siderolabs/x:1@sha256:{hex}"),
            format!("ghcr.io/../x:1@sha256:{hex}"),
            "ghcr.io/a/b:1".to_string(),
        ] {
            assert!(parse_digest_line(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn unsafe_tar_paths_are_dropped() {
        assert_eq!(
            clean(Path::new("./usr/install/x")),
            Some("usr/install/x".into())
        );
        assert_eq!(clean(Path::new("/usr/x")), Some("usr/x".into()));
        assert_eq!(clean(Path::new("usr/../../x")), None);
    }
}
