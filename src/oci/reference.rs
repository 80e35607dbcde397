//! Base image references: where the installer's base image comes from.
//!
//! Accepted forms, as skopeo spells its transports:
//! - `oci:DIR[:TAG]`: an OCI image layout directory (profile `ociPath` is `DIR`);
//! - `oci-archive:PATH[:TAG]`: a tar of such a layout;
//! - `docker-archive:PATH`: a `docker save` tarball;
//! - anything else: a registry reference `[HOST[:PORT]/]REPOSITORY[:TAG|@DIGEST]`,
//!   pulled over the distribution API (Docker Hub names get `registry-1.docker.io`
//!   and `library/`).

use std::fmt;
use std::path::PathBuf;

use super::source::BaseImage;
use crate::error::{Error, Result};

/// Repository the installer is tagged with when its base comes from a local file:
/// there is no name to carry over, and Talos names its installers this way.
const LOCAL_INSTALLER_REPOSITORY: &str = "ghcr.io/siderolabs/installer";

/// A parsed base image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `oci:DIR[:TAG]`.
    Layout { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:PATH[:TAG]`.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// `docker-archive:PATH`.
    DockerArchive(PathBuf),
    /// An image in a registry.
    Registry(RegistryRef),
}

/// A registry reference `host[:port]/repository[:tag|@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `ghcr.io`, `127.0.0.1:5000`, `registry-1.docker.io`.
    pub host: String,
    /// `siderolabs/installer`, `library/alpine`.
    pub repository: String,
    /// Tag or `sha256:` digest.
    pub reference: String,
    /// The reference as written, which names the image in messages and tags the
    /// installer built on it.
    written: String,
}

impl Reference {
    /// Parses `text`; see the module documentation for the forms.
    pub fn parse(text: &str) -> Result<Reference> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest);
            return Ok(Reference::Layout {
                dir: dir.into(),
                tag,
            });
        }
        if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (path, tag) = split_tag(rest);
            if std::path::Path::new(path).is_dir() {
                return Err(Error::invalid(format!(
                    "base image {text:?}: {path} is a directory; an OCI layout directory is oci:{path}"
                )));
            }
            return Ok(Reference::OciArchive {
                path: path.into(),
                tag,
            });
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            return Ok(Reference::DockerArchive(rest.into()));
        }
        if let Some(hint) = local_path_hint(text) {
            return Err(Error::invalid(format!(
                "image {:?} is a local path, not a registry reference: {hint}",
                super::one_line(text)
            )));
        }
        RegistryRef::parse(text).map(Reference::Registry)
    }

    /// The base installer of a profile: `ociPath` (a layout directory) when set,
    /// else `imageRef`.
    pub fn from_profile(image_ref: &str, oci_path: &str) -> Result<Reference> {
        if oci_path.is_empty() {
            Reference::parse(image_ref)
        } else {
            Reference::parse(&format!("oci:{oci_path}"))
        }
    }

    /// Whether the image is read from a local file or directory.
    pub fn is_local(&self) -> bool {
        !matches!(self, Reference::Registry(_))
    }

    /// Opens the image for `arch`: locates a local image's blobs, or pulls a
    /// registry image's (over plain HTTP when `insecure`).
    pub fn open(&self, arch: &str, insecure: bool) -> Result<BaseImage> {
        match self {
            Reference::Registry(r) => super::registry::pull(r, arch, insecure),
            local => BaseImage::open_local_ref(local, arch),
        }
    }

    /// Name and tag the installer built on this base carries (docker's `RepoTags`,
    /// the index's `io.containerd.image.name`): a registry reference as written, or
    /// `ghcr.io/siderolabs/installer:VERSION` for a local base.
    pub fn installer_tag(&self, version: &str) -> String {
        match self {
            Reference::Registry(r) => r.written.clone(),
            _ => format!("{LOCAL_INSTALLER_REPOSITORY}:{version}"),
        }
    }
}

/// The reference as written (for a local one, as it parses back).
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tagged = |f: &mut fmt::Formatter<'_>, kind, path: &PathBuf, tag: &Option<String>| {
            write!(f, "{kind}:{}", path.display())?;
            match tag {
                Some(t) => write!(f, ":{t}"),
                None => Ok(()),
            }
        };
        match self {
            Reference::Layout { dir, tag } => tagged(f, "oci", dir, tag),
            Reference::OciArchive { path, tag } => tagged(f, "oci-archive", path, tag),
            Reference::DockerArchive(path) => write!(f, "docker-archive:{}", path.display()),
            Reference::Registry(r) => f.write_str(&r.written),
        }
    }
}

impl RegistryRef {
    /// Parses `[host[:port]/]repository[:tag|@digest]`; the tag defaults to `latest`.
    pub fn parse(text: &str) -> Result<RegistryRef> {
        let (name, reference) = match text.split_once('@') {
            Some((n, d)) => (n, d.to_string()),
            None => match text.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t.to_string()),
                _ => (text, "latest".to_string()),
            },
        };
        let (first, rest) = name.split_once('/').unwrap_or(("", name));
        let (host, repository) =
            if first.contains('.') || first.contains(':') || first == "localhost" {
                (first.to_string(), rest.to_string())
            } else {
                let repo = if name.contains('/') {
                    name.to_string()
                } else {
                    format!("library/{name}")
                };
                ("registry-1.docker.io".to_string(), repo)
            };
        if repository.is_empty() || reference.is_empty() {
            return Err(Error::invalid(format!(
                "base image {:?} is not an image reference",
                super::one_line(text)
            )));
        }
        Ok(RegistryRef {
            host,
            repository,
            reference,
            written: text.to_string(),
        })
    }

    /// The reference as written.
    pub fn as_written(&self) -> &str {
        &self.written
    }
}

/// How to name `text` if it is a local path written without a transport: it starts
/// like a path (`/`, `./`, `../`, `~`) or names an existing file or directory. A
/// registry reference never starts so, and its first component is a host or a
/// repository, which a user rarely has as a directory in the working directory.
fn local_path_hint(text: &str) -> Option<String> {
    let path_like = text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || text.starts_with('~')
        || text == "."
        || text == "..";
    let (untagged, _) = split_tag(text);
    let p = std::path::Path::new(untagged);
    if p.is_dir() {
        return Some(format!("an OCI layout directory is oci:{text}"));
    }
    if p.is_file() {
        return Some(format!(
            "a tar is oci-archive:{text} (OCI layout) or docker-archive:{text} (`docker save`)"
        ));
    }
    path_like.then(|| {
        format!(
            "name a layout directory oci:{text}, an OCI tar oci-archive:{text} or a `docker save` tar docker-archive:{text}"
        )
    })
}

/// `PATH:TAG` → (`PATH`, `TAG`); a last `:` followed by a `/` or nothing is part of
/// the path.
fn split_tag(rest: &str) -> (&str, Option<String>) {
    match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !t.is_empty() => (p, Some(t.to_string())),
        _ => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> (String, String, String) {
        match Reference::parse(text).unwrap() {
            Reference::Registry(r) => (r.host, r.repository, r.reference),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn local_paths_without_a_transport_are_refused_with_the_right_one() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("installer-base");
        std::fs::create_dir(&layout).unwrap();
        let tar = dir.path().join("base.tar");
        std::fs::write(&tar, b"x").unwrap();
        let err = |t: &str| Reference::parse(t).unwrap_err().to_string();
        let l = layout.display().to_string();
        assert!(err(&l).contains(&format!("oci:{l}")), "{}", err(&l));
        let t = tar.display().to_string();
        assert!(err(&t).contains(&format!("oci-archive:{t}")), "{}", err(&t));
        assert!(err("./installer-base").contains("oci:./installer-base"));
        assert!(err("../base/x:v1").contains("docker-archive:../base/x:v1"));
        assert!(err(&format!("oci-archive:{l}")).contains(&format!("oci:{l}")));
        // Registry references are not paths.
        assert!(Reference::parse("ghcr.io/siderolabs/installer:v1.9.2").is_ok());
        assert!(Reference::parse("127.0.0.1:5000/x/y:v1").is_ok());
    }

    #[test]
    fn local_forms() {
        assert_eq!(
            Reference::parse("oci:/tmp/layout:v1.9.2").unwrap(),
            Reference::Layout {
                dir: "/tmp/layout".into(),
                tag: Some("v1.9.2".into())
            }
        );
        assert_eq!(
            Reference::parse("oci:./rel/dir").unwrap(),
            Reference::Layout {
                dir: "./rel/dir".into(),
                tag: None
            }
        );
        // A colon followed by a path or nothing is part of the path.
        assert_eq!(
            Reference::parse("oci:a:b/c").unwrap(),
            Reference::Layout {
                dir: "a:b/c".into(),
                tag: None
            }
        );
        assert_eq!(
            Reference::parse("oci:dir:").unwrap(),
            Reference::Layout {
                dir: "dir:".into(),
                tag: None
            }
        );
        assert_eq!(
            Reference::parse("oci-archive:base.tar:v1").unwrap(),
            Reference::OciArchive {
                path: "base.tar".into(),
                tag: Some("v1".into())
            }
        );
        // docker archives take no tag: the whole rest is the path.
        assert_eq!(
            Reference::parse("docker-archive:x:y.tar").unwrap(),
            Reference::DockerArchive("x:y.tar".into())
        );
        for text in [
            "oci:/tmp/layout:v1.9.2",
            "oci:/tmp/layout",
            "oci-archive:base.tar:v1",
            "docker-archive:x:y.tar",
            "alpine",
        ] {
            assert_eq!(Reference::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn registry_forms() {
        assert_eq!(
            registry("ghcr.io/siderolabs/installer:v1.9.2"),
            (
                "ghcr.io".into(),
                "siderolabs/installer".into(),
                "v1.9.2".into()
            )
        );
        assert_eq!(
            registry("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000".into(), "a/b".into(), "latest".into())
        );
        assert_eq!(
            registry("localhost/x:1"),
            ("localhost".into(), "x".into(), "1".into())
        );
        assert_eq!(
            registry("alpine:3"),
            (
                "registry-1.docker.io".into(),
                "library/alpine".into(),
                "3".into()
            )
        );
        assert_eq!(
            registry("siderolabs/installer"),
            (
                "registry-1.docker.io".into(),
                "siderolabs/installer".into(),
                "latest".into()
            )
        );
        assert_eq!(registry("ghcr.io/x/y@sha256:abc").2, "sha256:abc");
        for bad in ["ghcr.io/", "x@", "x:"] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("not an image reference"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn profile_fields_and_tags() {
        let r = Reference::from_profile("ghcr.io/siderolabs/installer:v1.9.2", "").unwrap();
        assert!(!r.is_local());
        assert_eq!(
            r.installer_tag("v1.10.0"),
            "ghcr.io/siderolabs/installer:v1.9.2"
        );
        // ociPath wins over imageRef.
        let r = Reference::from_profile("ghcr.io/siderolabs/installer:v1.9.2", "/l").unwrap();
        assert_eq!(
            r,
            Reference::Layout {
                dir: "/l".into(),
                tag: None
            }
        );
        assert!(r.is_local());
        assert_eq!(
            r.installer_tag("v1.10.0"),
            "ghcr.io/siderolabs/installer:v1.10.0"
        );
        let r = Reference::from_profile("oci-archive:b.tar", "").unwrap();
        assert_eq!(
            r.installer_tag("v1.9.0"),
            "ghcr.io/siderolabs/installer:v1.9.0"
        );
    }
}
