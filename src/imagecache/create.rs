//! `imager cache create`: pulls a list of images into Talos's image cache layout
//! (what `talosctl images cache-create` makes: Talos `pkg/imager/cache/cache.go`,
//! `cmd/talosctl/cmd/talos/image.go`), with the project's registry client (auth
//! files, credential helpers, `SSL_CERT_FILE`), so an air-gapped build needs one
//! tool.
//!
//! For each image: the manifest its tag names (`manifests/<registry>/<repo>/reference/<tag>`),
//! every manifest by digest (`.../digest/sha256-<hex>`: the top one and, for an index,
//! the per-platform manifests of the platforms asked for), and their configs and
//! layers (`blob/sha256-<hex>`, as served). Docker Hub is written `docker.io`,
//! `host:port` as `host_port_`. Blobs are fetched once for all images and platforms,
//! several at a time, each checked against its digest before it is renamed into
//! place; a blob already in the tree is not fetched again (an interrupted run resumes),
//! and a transfer that breaks is retried.
//!
//! The tree is written as a directory (`--layout flat`), a tarball of it
//! (`tarballPath`), or wrapped as a one-layer image in an OCI layout whose index
//! entry names the first platform (`--layout oci`, the default of talosctl).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::error::{Error, IoContext, Result};
use crate::oci::Reference;
use crate::oci::registry::Session;
use crate::report::Progress;

/// Where the cache goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// The tree itself.
    Dir(PathBuf),
    /// An OCI layout wrapping the tree.
    Oci(PathBuf),
    /// A tarball of the tree.
    Tar(PathBuf),
}

impl Output {
    /// `DIR`, `oci:DIR` or `tar:FILE`.
    pub fn parse(text: &str) -> Output {
        if let Some(d) = text.strip_prefix("oci:") {
            Output::Oci(d.into())
        } else if let Some(f) = text.strip_prefix("tar:") {
            Output::Tar(f.into())
        } else {
            Output::Dir(text.into())
        }
    }
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Architectures (`amd64`, `arm64`) of the per-platform images cached from indexes.
    pub arches: Vec<String>,
    pub insecure: bool,
    /// Timestamp of the OCI wrapping and tarball entries.
    pub epoch: u64,
    /// Blobs fetched at once.
    pub jobs: usize,
}

/// The directory name of a registry in the cache (Talos: Docker Hub as `docker.io`,
/// `host:port` as `host_port_`, which vfat can hold).
pub fn registry_dir(host: &str) -> String {
    let host = match host {
        "registry-1.docker.io" | "index.docker.io" => "docker.io",
        h => h,
    };
    match host.split_once(':') {
        Some((h, port)) => format!("{h}_{port}_"),
        None => host.to_string(),
    }
}

/// The image references of a list: one a line, blank lines and `#` comments skipped.
pub fn read_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Pulls `images` into the cache tree at `tree` (created; what is there is kept).
pub fn pull_tree(
    images: &[String],
    tree: &Path,
    opts: &CreateOptions,
    progress: &dyn Progress,
) -> Result<()> {
    if images.is_empty() {
        return Err(Error::invalid("cache create: the image list is empty"));
    }
    let blob_dir = tree.join("blob");
    std::fs::create_dir_all(&blob_dir).op("creating", &blob_dir)?;
    // Blobs to fetch: digest → (host, repository) of one image that has it.
    let mut blobs: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    for text in images {
        let Reference::Registry(r) = Reference::parse(text)? else {
            return Err(Error::invalid(format!(
                "cache create: {text:?} is not a registry reference"
            )));
        };
        progress.step(&format!("fetching {text}..."));
        if !sessions.contains_key(&r.host) {
            let creds = crate::oci::auth::lookup(&r.host)?;
            sessions.insert(
                r.host.clone(),
                Session::with_credentials(&r.host, opts.insecure, creds)?,
            );
        }
        let session = &sessions[&r.host];
        let mdir = tree
            .join("manifests")
            .join(registry_dir(&r.host))
            .join(&r.repository);
        let not_found = || Error::Dependency(format!("cache create: image {text} not found"));
        let top = session
            .manifest(&r.repository, &r.reference)?
            .ok_or_else(not_found)?;
        let write = |path: PathBuf, bytes: &[u8]| -> Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).op("creating", parent)?;
            }
            std::fs::write(&path, bytes).writing(&path)
        };
        let digest_file = |d: &str| mdir.join("digest").join(d.replacen(':', "-", 1));
        if !r.reference.starts_with("sha256:") {
            write(mdir.join("reference").join(&r.reference), &top.bytes)?;
        }
        write(digest_file(&top.digest), &top.bytes)?;
        let mut manifests = Vec::new();
        let value: serde_json::Value = serde_json::from_slice(&top.bytes)
            .map_err(|e| Error::Dependency(format!("cache create: {text}: manifest: {e}")))?;
        if value.get("manifests").is_some() {
            let index: ImageIndex =
                crate::oci::source::parse(&top.bytes, "index", Path::new(text))?;
            let mut any = false;
            for m in index.manifests() {
                let Some(p) = m.platform() else { continue };
                if p.os().to_string() != "linux"
                    || !opts.arches.contains(&p.architecture().to_string())
                {
                    continue;
                }
                let d = m.digest().to_string();
                let child = session.manifest(&r.repository, &d)?.ok_or_else(not_found)?;
                write(digest_file(&child.digest), &child.bytes)?;
                manifests.push(child.bytes);
                any = true;
            }
            if !any {
                return Err(Error::invalid(format!(
                    "cache create: {text} has no image for linux/{}",
                    opts.arches.join(", linux/")
                )));
            }
        } else {
            manifests.push(top.bytes.clone());
        }
        for bytes in manifests {
            let m: ImageManifest = crate::oci::source::parse(&bytes, "manifest", Path::new(text))?;
            for d in
                std::iter::once(m.config().digest()).chain(m.layers().iter().map(|l| l.digest()))
            {
                blobs
                    .entry(d.to_string())
                    .or_insert_with(|| (r.host.clone(), r.repository.clone()));
            }
        }
    }
    // Blobs, several at a time, each once; those already in the tree are kept.
    let todo: Vec<_> = blobs
        .into_iter()
        .filter(|(d, _)| !blob_dir.join(d.replacen(':', "-", 1)).is_file())
        .collect();
    progress.step(&format!("fetching {} blobs...", todo.len()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(todo.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((digest, (host, repo))) = todo.get(i) else {
                        break;
                    };
                    if failed.lock().expect("lock").is_some() {
                        break;
                    }
                    let path = blob_dir.join(digest.replacen(':', "-", 1));
                    if let Err(e) = fetch_blob(&sessions[host], repo, digest, &path) {
                        failed.lock().expect("lock").get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(())
}

/// One blob into `path`, digest-checked; a broken transfer is tried again (3 times).
fn fetch_blob(session: &Session, repo: &str, digest: &str, path: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match session.blob_to_file(repo, digest, path) {
            Ok(true) => return Ok(()),
            Ok(false) => {
                return Err(Error::Dependency(format!(
                    "cache create: blob {digest} of {repo} not found"
                )));
            }
            // A blob that arrived whole but with other bytes is refused at once.
            Err(e) if e.to_string().contains("downloaded with digest") => return Err(e),
            Err(e) if tries >= 3 => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200 * tries)),
        }
    }
}

/// A reproducible tar of the tree: sorted names, mode-only headers, owner 0:0.
fn write_tar<W: Write>(tree: &Path, out: W, epoch: u64) -> Result<W> {
    let mut paths = Vec::new();
    crate::io::walk(tree, tree, &mut paths)?;
    let mut b = tar::Builder::new(out);
    for rel in paths {
        let p = tree.join(&rel);
        let md = std::fs::symlink_metadata(&p).at(&p)?;
        let mut h = tar::Header::new_ustar();
        h.set_mtime(epoch);
        h.set_uid(0);
        h.set_gid(0);
        if md.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, &rel, std::io::empty()).at(&p)?;
        } else {
            h.set_mode(0o644);
            h.set_size(md.len());
            b.append_data(&mut h, &rel, File::open(&p).at(&p)?).at(&p)?;
        }
    }
    b.into_inner().at(tree)
}

/// Pulls `images` and writes the cache to `output`: the tree is built beside it and
/// renamed (or wrapped) into place at the end.
pub fn create(
    images: &[String],
    output: &Output,
    opts: &CreateOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let target = match output {
        Output::Dir(p) | Output::Oci(p) | Output::Tar(p) => p.clone(),
    };
    if target.exists() && !matches!(output, Output::Dir(_)) {
        return Err(Error::invalid(format!(
            "cache create: {} exists",
            target.display()
        )));
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent).op("creating", &parent)?;
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    // A partial tree stays beside the output for the next run to resume.
    let tree = match output {
        Output::Dir(p) => p.clone(),
        _ => parent.join(format!(".{name}.cache-tree")),
    };
    pull_tree(images, &tree, opts, progress)?;
    match output {
        Output::Dir(_) => {}
        Output::Tar(p) => {
            let tmp = parent.join(format!(".{name}.tmp"));
            write_tar(&tree, File::create(&tmp).op("creating", &tmp)?, opts.epoch)?
                .flush()
                .at(&tmp)?;
            std::fs::rename(&tmp, p).op("renaming into", p)?;
            std::fs::remove_dir_all(&tree).op("removing", &tree)?;
        }
        Output::Oci(p) => {
            let tmp = parent.join(format!(".{name}.tmp"));
            let _ = std::fs::remove_dir_all(&tmp);
            write_oci(&tree, &tmp, opts)?;
            std::fs::rename(&tmp, p).op("renaming into", p)?;
            std::fs::remove_dir_all(&tree).op("removing", &tree)?;
        }
    }
    progress.step(&format!("image cache written to {}", target.display()));
    Ok(())
}

/// The tree as a one-layer image (gzip'd tar) in an OCI layout at `dir`.
fn write_oci(tree: &Path, dir: &Path, opts: &CreateOptions) -> Result<()> {
    use sha2::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).op("creating", &blobs)?;
    let layer_tmp = blobs.join(".layer");
    // Hash the uncompressed tar (diff_id) and the compressed layer on the way.
    let out = crate::io::HashingWriter::new(File::create(&layer_tmp).op("creating", &layer_tmp)?);
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let inner = crate::io::HashingWriter::new(gz);
    let inner = write_tar(tree, inner, opts.epoch)?;
    let (gz, diff_sum, _) = inner.finish();
    let out = gz.finish().at(&layer_tmp)?;
    let (_, layer_sum, layer_size) = out.finish();
    let layer_hex = hex::encode(layer_sum);
    std::fs::rename(&layer_tmp, blobs.join(&layer_hex)).at(&layer_tmp)?;
    let arch = opts
        .arches
        .first()
        .cloned()
        .unwrap_or_else(|| "amd64".into());
    let put = |bytes: &[u8]| -> Result<(String, usize)> {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        let p = blobs.join(&hex);
        std::fs::write(&p, bytes).writing(&p)?;
        Ok((hex, bytes.len()))
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": crate::formats::oci_image::rfc3339(opts.epoch),
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex::encode(diff_sum))]},
        "config": {},
    });
    let (config_hex, config_len) = put(&serde_json::to_vec(&config).expect("json"))?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_hex}"), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{layer_hex}"), "size": layer_size}],
    });
    let (manifest_hex, manifest_len) = put(&serde_json::to_vec(&manifest).expect("json"))?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest_len,
            "platform": {"architecture": arch, "os": "linux"},
        }],
    });
    let p = dir.join("index.json");
    std::fs::write(&p, serde_json::to_vec(&index).expect("json")).writing(&p)?;
    let p = dir.join("oci-layout");
    std::fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).writing(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_as_talos_writes_them() {
        assert_eq!(registry_dir("registry-1.docker.io"), "docker.io");
        assert_eq!(registry_dir("127.0.0.1:5000"), "127.0.0.1_5000_");
        assert_eq!(registry_dir("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn lists_skip_comments_and_blank_lines() {
        assert_eq!(
            read_list("a:1\n\n# c\n  b@sha256:x \n"),
            ["a:1", "b@sha256:x"]
        );
    }
}
