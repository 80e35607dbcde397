//! Unpacking a system extension image into a directory.
//!
//! Registry and OCI layout images are flattened the way go-containerregistry's
//! `mutate.Extract` does it for the Talos imager (`pkg/imager/extensions`): layers
//! walked from the top down, names cleaned (`./x` is `x`), the first occurrence of a
//! path wins, `.wh.NAME` hides `NAME` in the layers below and is not written, and a
//! non-directory hides everything beneath its path. The opaque marker `.wh..wh..opq`
//! is not honoured (as in Talos). A plain tarball (`tarballPath`) is one such layer.
//!
//! Entries are written as `pkg/archiver/untar.go` writes them: directories with their
//! mode plus owner `rwx`, symlinks with their text verbatim, every other type (hard
//! links, devices, fifos included) as a regular file holding the entry's data, mode
//! bits kept. Ownership and times are not restored. Unlike Talos, which silently
//! forces names relative, a name that climbs out of the image root, or one that
//! would be written through a symlink of the image, is refused.
//!
//! SELinux labels (PAX `SCHILY.xattr.security.selinux` records) of the entries written
//! are kept beside the unpacked image (`<dest>.xattrs.json`) for the squashfs writer:
//! Talos v1.12 sets them on the unpacked files, which mksquashfs then stores, and
//! v1.13+ passes them to mksquashfs as pseudo xattrs; before v1.12 they are dropped
//! ([`squashfs_xattrs`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::formats::squashfs::Xattrs;
use crate::io::HashingReader;
use crate::oci::Blob;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    NonDir,
    Symlink,
    Whiteout,
}

/// The flattening state of one image being unpacked into `dest`.
pub struct Unpacker {
    dest: PathBuf,
    /// Names the image for messages.
    source: String,
    /// What the image is, for messages (`system extension` unless [`Unpacker::describing`]).
    what: &'static str,
    seen: HashMap<PathBuf, Seen>,
    /// `security.selinux` labels of the entries written, by path relative to `dest`.
    labels: Vec<(String, Vec<u8>)>,
}

/// The PAX record holding an entry's SELinux label.
const SELINUX_PAX: &str = "SCHILY.xattr.security.selinux";
/// The xattr it becomes.
const SELINUX_XATTR: &str = "security.selinux";

impl Unpacker {
    pub fn new(dest: &Path, source: &str) -> Result<Self> {
        std::fs::create_dir_all(dest).op("creating", dest)?;
        Ok(Unpacker {
            dest: dest.to_path_buf(),
            source: source.to_string(),
            what: "system extension",
            seen: HashMap::new(),
            labels: Vec::new(),
        })
    }

    /// Names the image as `what` in messages (an `overlay`, ...).
    pub fn describing(mut self, what: &'static str) -> Self {
        self.what = what;
        self
    }

    fn labels_file(&self) -> PathBuf {
        self.dest.with_extension("xattrs.json")
    }

    /// Keeps the labels met so far beside the unpacked image.
    fn save_labels(&self) -> Result<()> {
        if self.labels.is_empty() {
            return Ok(());
        }
        let path = self.labels_file();
        let json = serde_json::to_vec(&self.labels).expect("labels serialize");
        std::fs::write(&path, json).writing(&path)
    }

    fn bad(&self, msg: String) -> Error {
        Error::invalid(format!("{} {}: {msg}", self.what, self.source))
    }

    /// Unpacks the layers of an image, given bottom first (manifest order). A layer
    /// whose bytes do not match its digest is reported as such, even when the damage
    /// also broke its compression or tar stream.
    pub fn layers(&mut self, layers: &[Blob]) -> Result<()> {
        for blob in layers.iter().rev() {
            let mut hashing = HashingReader::new(blob.open()?);
            let unpacked = crate::io::tar::layer_decoder(&mut hashing)
                .map_err(|e| Error::format(&blob.file, format!("reading a layer: {e}")))
                .and_then(|reader| self.tar(reader, &blob.file));
            let drained = std::io::copy(&mut hashing, &mut std::io::sink()).at(&blob.file);
            let (_, sum, size) = hashing.finish();
            let got = crate::io::digest_string(sum);
            if let Some(want) = &blob.digest
                && (*want != got || size != blob.size)
            {
                return Err(Error::format(
                    &blob.file,
                    format!(
                        "layer of {} does not match its digest: expected {want}, got {got}",
                        self.source
                    ),
                ));
            }
            unpacked?;
            drained?;
        }
        self.save_labels()
    }

    /// Unpacks one tar stream (a layer, or a plain tarball).
    pub fn tar(&mut self, reader: impl Read, file: &Path) -> Result<()> {
        let mut archive = tar::Archive::new(reader);
        let corrupt = |e: std::io::Error| Error::format(file, format!("corrupt tar stream: {e}"));
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = match crate::io::tar::clean_name(Path::new(&raw)) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(crate::io::tar::EscapesRoot) => {
                    return Err(self.bad(format!("layer entry {raw:?} escapes the image root")));
                }
            };
            let base = name
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_default();
            if base == ".wh..wh..opq" {
                continue;
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                let target = name.with_file_name(hidden);
                self.seen.entry(target).or_insert(Seen::Whiteout);
                continue;
            }
            if self.seen.contains_key(&name) {
                continue;
            }
            let mut hidden = false;
            let mut through_link = false;
            for a in name.ancestors().skip(1) {
                match self.seen.get(a) {
                    Some(Seen::Whiteout | Seen::NonDir) => hidden = true,
                    Some(Seen::Symlink) => through_link = true,
                    _ => {}
                }
            }
            if hidden {
                continue;
            }
            if through_link {
                return Err(self.bad(format!(
                    "layer entry {raw:?} would be written through a symlink of the image"
                )));
            }
            if let Some(pax) = entry.pax_extensions().map_err(corrupt)? {
                for ext in pax {
                    let ext = ext.map_err(corrupt)?;
                    if ext.key_bytes() == SELINUX_PAX.as_bytes() {
                        let rel = name.to_string_lossy().into_owned();
                        self.labels.push((rel, ext.value_bytes().to_vec()));
                    }
                }
            }
            let header = entry.header();
            let mode = header.mode().map_err(corrupt)? & 0o7777;
            let kind = header.entry_type();
            let path = self.dest.join(&name);
            if let Some(parent) = path.parent() {
                create_parents(&self.dest, parent)?;
            }
            if kind.is_dir() {
                self.seen.insert(name, Seen::Dir);
                if !path.is_dir() {
                    std::fs::create_dir(&path).op("creating", &path)?;
                }
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o700))
                    .at(&path)?;
            } else if kind.is_symlink() {
                self.seen.insert(name, Seen::Symlink);
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| Error::format(file, format!("{raw}: symlink without target")))?
                    .into_owned();
                std::os::unix::fs::symlink(&target, &path).op("creating", &path)?;
            } else {
                self.seen.insert(name, Seen::NonDir);
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .op("creating", &path)?;
                if kind.is_file() || kind == tar::EntryType::Continuous {
                    std::io::copy(&mut entry, &mut out).map_err(corrupt)?;
                }
                drop(out);
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).at(&path)?;
            }
        }
        Ok(())
    }
}

/// Creates the missing parents of an entry with mode 0700 (implicit directories).
fn create_parents(root: &Path, dir: &Path) -> Result<()> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(p) = dir.parent() {
        create_parents(root, p)?;
    }
    std::fs::create_dir(dir).op("creating", dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).at(dir)
}

/// Unpacks a plain filesystem tarball.
pub fn tarball(path: &Path, dest: &Path, source: &str) -> Result<()> {
    let mut u = Unpacker::new(dest, source)?;
    let file =
        File::open(path).map_err(|e| Error::invalid(format!("system extension {source}: {e}")))?;
    u.tar(BufReader::new(file), path)?;
    u.save_labels()
}

/// The xattrs of the squashfs image of `rootfs` (an unpacked image's `rootfs/`): the
/// SELinux labels its entries carried, on the paths still there (firmware and
/// microcode moved out lose theirs), for profiles that keep them (Talos >= 1.12).
pub fn squashfs_xattrs(rootfs: &Path, profile: &crate::profile::Profile) -> Result<Xattrs> {
    let mut out = Xattrs::new();
    let Some(dest) = rootfs.parent() else {
        return Ok(out);
    };
    let path = dest.with_extension("xattrs.json");
    if !profile.quirks().selinux_labels() || !path.exists() {
        return Ok(out);
    }
    let bytes = std::fs::read(&path).at(&path)?;
    let labels: Vec<(String, Vec<u8>)> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, format!("unreadable labels: {e}")))?;
    for (rel, value) in labels {
        let Ok(inside) = Path::new(&rel).strip_prefix("rootfs") else {
            continue;
        };
        if std::fs::symlink_metadata(rootfs.join(inside)).is_err() {
            continue;
        }
        let list = out.entry(inside.to_path_buf()).or_default();
        list.retain(|(n, _)| n != SELINUX_XATTR);
        list.push((SELINUX_XATTR.to_string(), value));
    }
    Ok(out)
}
