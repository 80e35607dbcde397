//! Board overlays (Talos >= 1.7): the overlay image, its profiles and its installer.
//!
//! An overlay image holds data (`profiles/<name>.yaml`, imager profiles that become
//! base profiles looked up before the built-ins; `artifacts/`, firmware, u-boot and
//! dtbs) and code (`installers/<name>`, a static binary for the build host). This
//! module follows Talos's `pkg/imager/imager.go` `handleOverlay` (extract the image
//! for the host architecture, read the profiles, default the name to `default`) and
//! `pkg/machinery/overlay/overlay.go` (the YAML exchanged with the installer:
//! [`Options`], [`InstallOptions`]). Running the installer is [`executor`]'s.

pub mod executor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::error::{Error, IoContext, Result};
use crate::goyaml::Out;
use crate::profile::ContainerAsset;
use crate::report::Progress;

/// The overlay name when the profile gives none (`constants.ImagerOverlayDefault`...).
pub const DEFAULT_NAME: &str = "default";

/// What `get-options` prints (`overlay.Options`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kernel_args: Vec<String>,
    #[serde(default)]
    pub partition_options: PartitionOptions,
}

/// `overlay.PartitionOptions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PartitionOptions {
    /// Sectors left free before the primary GPT entry array.
    #[serde(default)]
    pub offset: u64,
}

/// What `install` reads (`overlay.InstallOptions`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallOptions {
    pub install_disk: String,
    pub mount_prefix: String,
    pub artifacts_path: String,
    pub extra_options: Mapping,
}

impl InstallOptions {
    /// The YAML document `install` gets on stdin, as go-yaml marshals the struct
    /// (`extraOptions` left out when empty).
    pub fn to_yaml(&self) -> String {
        let mut m = vec![
            (
                "installDisk".to_string(),
                Out::Str(self.install_disk.clone()),
            ),
            (
                "mountPrefix".to_string(),
                Out::Str(self.mount_prefix.clone()),
            ),
            (
                "artifactsPath".to_string(),
                Out::Str(self.artifacts_path.clone()),
            ),
        ];
        if !self.extra_options.is_empty() {
            m.push(("extraOptions".to_string(), mapping_out(&self.extra_options)));
        }
        crate::goyaml::marshal(&Out::Map(m))
    }
}

/// `yaml.Marshal` of the overlay options map (`{}` when empty, keys sorted).
pub fn options_yaml(options: &Mapping) -> String {
    if options.is_empty() {
        return "{}\n".to_string();
    }
    crate::goyaml::marshal(&mapping_out(options))
}

fn mapping_out(m: &Mapping) -> Out {
    let mut entries: Vec<(String, Out)> = m
        .iter()
        .map(|(k, v)| (scalar_text(k), value_out(v)))
        .collect();
    entries.sort_by(|a, b| {
        if crate::goyaml::key_less(&a.0, &b.0) {
            std::cmp::Ordering::Less
        } else if crate::goyaml::key_less(&b.0, &a.0) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    Out::Map(entries)
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
}

fn value_out(v: &Value) -> Out {
    match v {
        Value::String(s) => Out::Str(s.clone()),
        Value::Null => Out::Raw("null".into()),
        Value::Bool(b) => Out::Raw(b.to_string()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => Out::Raw(crate::goyaml::format_float(f)),
            _ => Out::Raw(n.to_string()),
        },
        Value::Sequence(s) => Out::Seq(s.iter().map(value_out).collect()),
        Value::Mapping(m) => mapping_out(m),
        Value::Tagged(t) => value_out(&t.value),
    }
}

/// An overlay image extracted for the build host.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The overlay's name (`overlay.name`, default `default`).
    pub name: String,
    /// Where the image's filesystem is.
    pub root: PathBuf,
    /// `profiles/*.yaml` by file stem.
    pub profiles: BTreeMap<String, Value>,
}

impl Extracted {
    /// `installers/<name>`.
    pub fn installer(&self) -> PathBuf {
        self.root.join("installers").join(&self.name)
    }

    /// `artifacts/`.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// The executor of this overlay's installer; an error when the image has none.
    pub fn executor(&self) -> Result<executor::Executor> {
        let binary = self.installer();
        if !binary.is_file() {
            return Err(Error::invalid(format!(
                "overlay {:?}: the image has no installers/{}",
                self.name, self.name
            )));
        }
        Ok(executor::Executor {
            name: self.name.clone(),
            binary,
            timeout: executor::timeout_from_env()?,
        })
    }

    /// Runs `get-options` with `options` (`overlay.options`) and decodes its answer.
    pub fn get_options(&self, options: &Mapping, progress: &dyn Progress) -> Result<Options> {
        let exec = self.executor()?;
        let (stdout, confinement) =
            exec.run("get-options", options_yaml(options).as_bytes(), &[])?;
        progress.step(&format!(
            "overlay {:?}: get-options ({confinement})",
            self.name
        ));
        serde_yaml::from_slice(&stdout).map_err(|e| {
            Error::Dependency(
                format!(
                    "overlay {:?}: failed to unmarshal overlay options: {e}",
                    self.name
                )
                .replace('\n', " "),
            )
        })
    }
}

/// A private directory (mode 0700) under the system's temporary directory, removed
/// with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>` with the first free `n`.
    pub fn new(prefix: &str) -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io_op("creating", &path, e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An overlay of a build: the extracted image, what `get-options` answered and the
/// options `install` gets (`overlay.options`).
#[derive(Debug, Clone)]
pub struct Applied {
    pub extracted: Extracted,
    pub options: Options,
    pub extra_options: Mapping,
}

impl Applied {
    /// Runs `install` against the disk image `disk` with the staging tree `mount_prefix`
    /// (the files it puts under `boot/EFI` belong to the ESP); it may write only those two.
    pub fn install(&self, disk: &Path, mount_prefix: &Path, progress: &dyn Progress) -> Result<()> {
        let exec = self.extracted.executor()?;
        // The installer runs in its own directory: every path it gets is absolute.
        let disk = &std::path::absolute(disk).at(disk)?;
        let mount_prefix = &std::path::absolute(mount_prefix).at(mount_prefix)?;
        let efi = mount_prefix.join("boot/EFI");
        std::fs::create_dir_all(&efi).op("creating", &efi)?;
        let input = InstallOptions {
            install_disk: disk.to_string_lossy().into_owned(),
            mount_prefix: mount_prefix.to_string_lossy().into_owned(),
            artifacts_path: std::path::absolute(self.extracted.artifacts())
                .unwrap_or_else(|_| self.extracted.artifacts())
                .to_string_lossy()
                .into_owned(),
            extra_options: self.extra_options.clone(),
        };
        let (_, confinement) = exec.run(
            "install",
            input.to_yaml().as_bytes(),
            &[disk.to_path_buf(), mount_prefix.to_path_buf()],
        )?;
        progress.step(&format!(
            "overlay {:?}: install ({confinement})",
            self.extracted.name
        ));
        Ok(())
    }
}

/// The entries of the installer image's overlay layer (Talos `outInstaller`), from the
/// overlay installer image `target` extracted for the target architecture:
/// `overlay/artifacts/...` (directories included, not `overlay/artifacts` itself, as
/// `filemap.Walk` skips its root), `overlay/installers/default` (the
/// target's `installers/<name>`) and `overlay/extra-options` (written to `options_file`).
pub fn installer_layer(
    target: &Extracted,
    extra_options: &Mapping,
    options_file: &Path,
) -> Result<Vec<crate::formats::oci_image::LayerEntry>> {
    use crate::formats::oci_image::LayerEntry;
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let artifacts = target.artifacts();
    if artifacts.is_dir() {
        // filemap.Walk: the permission bits only; no entry for the root itself.
        let mode = |p: &Path| -> Result<u32> {
            Ok(std::fs::symlink_metadata(p).at(p)?.permissions().mode() & 0o777)
        };
        let mut found = Vec::new();
        crate::io::walk(&artifacts, &artifacts, &mut found)?;
        for rel in found {
            let path = artifacts.join(&rel);
            let meta = std::fs::symlink_metadata(&path).at(&path)?;
            let name = format!("overlay/artifacts/{}", rel.to_string_lossy());
            if meta.is_dir() {
                out.push(LayerEntry {
                    path: name,
                    source: None,
                    mode: mode(&path)?,
                });
            } else if meta.is_file() {
                out.push(LayerEntry {
                    path: name,
                    source: Some(path.clone()),
                    mode: mode(&path)?,
                });
            }
        }
    }
    let binary = target.installer();
    if !binary.is_file() {
        return Err(Error::invalid(format!(
            "input.overlayInstaller: the image has no installers/{}",
            target.name
        )));
    }
    let mode = std::fs::metadata(&binary).at(&binary)?.permissions().mode() & 0o777;
    out.push(LayerEntry {
        path: "overlay/installers/default".into(),
        source: Some(binary),
        mode,
    });
    std::fs::write(options_file, options_yaml(extra_options)).writing(options_file)?;
    out.push(LayerEntry {
        path: "overlay/extra-options".into(),
        source: Some(options_file.to_path_buf()),
        mode: 0o644,
    });
    Ok(out)
}

/// The architecture of the machine running the imager, as Go names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Extracts the overlay `image` (tarball > ociPath > imageRef, as every Talos container
/// asset) for the build host into `dest` and reads its profiles.
pub fn extract(
    image: &ContainerAsset,
    name: &str,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Extracted> {
    extract_for(image, name, host_arch(), dest, progress)
}

/// [`extract`] for `arch` (the target's, for the installer image's overlay layer).
pub fn extract_for(
    image: &ContainerAsset,
    name: &str,
    arch: &str,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Extracted> {
    let name = if name.is_empty() { DEFAULT_NAME } else { name };
    let source = if !image.tarball_path.is_empty() {
        image.tarball_path.clone()
    } else if !image.oci_path.is_empty() {
        format!("oci:{}", image.oci_path)
    } else if !image.image_ref.is_empty() {
        image.image_ref.clone()
    } else {
        return Err(Error::invalid(
            "overlay.image: set one of imageRef, ociPath or tarballPath",
        ));
    };
    progress.step("pulling overlay...");
    let mut unpacker =
        crate::extensions::unpack::Unpacker::new(dest, &source)?.describing("overlay");
    if !image.tarball_path.is_empty() {
        let path = Path::new(&image.tarball_path);
        let file = std::fs::File::open(path).at(path)?;
        unpacker.tar(std::io::BufReader::new(file), path)?;
    } else {
        let reference = if !image.oci_path.is_empty() {
            crate::oci::Reference::Layout {
                dir: PathBuf::from(&image.oci_path),
                tag: None,
            }
        } else {
            crate::oci::Reference::parse(&image.image_ref)?
        };
        let opened = reference
            .open(arch, image.force_insecure)
            .map_err(|err| match err {
                Error::Dependency(m) => {
                    Error::Dependency(format!("error pulling overlay image {source}: {m}"))
                }
                other => other,
            })?;
        unpacker.layers(&opened.layers)?;
    }
    let profiles = read_profiles(&dest.join("profiles"))?;
    Ok(Extracted {
        name: name.to_string(),
        root: dest.to_path_buf(),
        profiles,
    })
}

/// `profiles/*.yaml` (not recursive), each named by its file stem.
fn read_profiles(dir: &Path) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".yaml"))
        else {
            continue;
        };
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        let value: Value = serde_yaml::from_str(&text)
            .map_err(|e| Error::format(&path, format!("failed to unmarshal profile: {e}")))?;
        out.insert(stem.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_marshal_like_go_yaml() {
        assert_eq!(options_yaml(&Mapping::new()), "{}\n");
        let m: Mapping = serde_yaml::from_str("b: x\na: true\nc: 3\n").unwrap();
        assert_eq!(options_yaml(&m), "a: true\nb: x\nc: 3\n");
    }

    #[test]
    fn install_options_fields() {
        let o = InstallOptions {
            install_disk: "/o/metal-arm64.raw".into(),
            mount_prefix: "/t/image".into(),
            artifacts_path: "/t/overlay/artifacts".into(),
            extra_options: Mapping::new(),
        };
        assert_eq!(
            o.to_yaml(),
            "installDisk: /o/metal-arm64.raw\nmountPrefix: /t/image\nartifactsPath: /t/overlay/artifacts\n"
        );
    }
}
