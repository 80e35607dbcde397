//! The service's configuration: what `imager serve` was given (flags or
//! `IMAGER_SERVE_*`), checked once at start-up so a bad setting fails before the
//! listener opens, with one line naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::oci::auth::Credentials;

/// The build epoch when `SOURCE_DATE_EPOCH` is not set: the one Image Factory builds
/// with, so that every replica produces the same bytes for the same request.
pub const FACTORY_EPOCH: u64 = 1_559_424_892;

/// Everything the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Address of a separate `/metrics` listener (else `/metrics` is on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// How clients reach this service (iPXE scripts, the web page), without a trailing `/`.
    pub external_url: String,
    /// `<assets>/<version>/<arch>/...`, `installer-base/`, `extensions/<name>/` (unused
    /// with `assets_registry`).
    pub assets: PathBuf,
    /// Inputs from images in a registry instead (`--assets-registry`).
    pub assets_registry: Option<AssetsRegistry>,
    /// The shared store.
    pub registry: RegistryTarget,
    /// Credentials for the shared store (flags or an auth file), if any.
    pub registry_credentials: Option<Credentials>,
    /// Talk to the registry over plain HTTP.
    pub insecure_registry: bool,
    /// `uki-signing-key.pem`, `uki-signing-cert.pem`, `pcr-signing-key.pem`; none: no SecureBoot assets.
    pub secureboot_dir: Option<PathBuf>,
    /// Builds at once in this replica.
    pub concurrency: usize,
    /// GRUB's platform directories for the grub and dual-boot disk layouts.
    pub grub_dir: PathBuf,
    /// Scratch space for builds.
    pub work_dir: PathBuf,
    /// Timestamp of every built asset.
    pub epoch: u64,
    /// A connection that has not sent a request's headers within this is dropped.
    pub header_read_timeout: std::time::Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// What the cosign signatures of images pulled from the assets registry must satisfy.
    pub container_signature: crate::cosign::Verification,
    /// ECDSA P-256 PEM key that signs cache entries and installer indexes (cosign legacy format).
    pub cache_signing_key: Option<PathBuf>,
    /// Access control policy (`--auth-policy`): who may create schematics and get signed assets.
    pub auth_policy: Option<PathBuf>,
    /// After SIGTERM: how long in-flight responses, builds and cache pushes get.
    pub shutdown_drain: std::time::Duration,
}

/// `--assets-registry REF`: where the imager, installer-base, extensions images are.
#[derive(Debug, Clone)]
pub struct AssetsRegistry {
    pub target: RegistryTarget,
    pub insecure: bool,
    pub credentials: Option<Credentials>,
}

/// `host[:port][/prefix]`: the registry and the repository prefix the store writes under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTarget {
    pub host: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl RegistryTarget {
    /// Parses `--registry`.
    pub fn parse(text: &str) -> Result<RegistryTarget> {
        Self::parse_flag("--registry", text)
    }

    /// Parses the value of `flag` (`--registry`, `--assets-registry`).
    pub fn parse_flag(flag: &str, text: &str) -> Result<RegistryTarget> {
        let bad = |rule: &str| Error::invalid(format!("{flag} {text:?}: {rule}"));
        if text.contains("://") {
            return Err(bad(
                "give host[:port]/prefix without a scheme (plain HTTP is --insecure-registry)",
            ));
        }
        let (host, prefix) = text.split_once('/').unwrap_or((text, ""));
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad("the registry host is missing or malformed"));
        }
        let prefix = prefix.trim_matches('/');
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !prefix.is_empty() && !prefix.split('/').all(component_ok) {
            return Err(bad(
                "the repository prefix must be lower-case path components ([a-z0-9._-])",
            ));
        }
        Ok(RegistryTarget {
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// `<prefix>/<name>` (or `name` without a prefix).
    pub fn repo(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl Config {
    /// Checks what can be checked before serving: the assets directory, the keys, the URL.
    pub fn check(&self) -> Result<()> {
        if self.assets_registry.is_some() {
            if !self.assets.as_os_str().is_empty() {
                return Err(Error::invalid(
                    "--assets and --assets-registry: give one source of Talos inputs, not both",
                ));
            }
        } else if self.assets.as_os_str().is_empty() {
            return Err(Error::invalid(
                "--assets DIR or --assets-registry REF: the Talos inputs are missing",
            ));
        } else if !self.assets.is_dir() {
            return Err(Error::invalid(format!(
                "--assets {}: not a directory (expected <dir>/<version>/<arch>/vmlinuz, ...)",
                self.assets.display()
            )));
        }
        if !(self.external_url.starts_with("http://") || self.external_url.starts_with("https://"))
        {
            return Err(Error::invalid(format!(
                "--external-url {:?}: must start with http:// or https://",
                self.external_url
            )));
        }
        if self.header_read_timeout.is_zero() {
            return Err(Error::invalid(
                "--header-read-timeout 0: clients need some time to send their headers",
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::invalid(
                "--max-connections 0: at least one connection must be served",
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid(
                "--concurrency 0: at least one build must be able to run",
            ));
        }
        if let Some(dir) = &self.secureboot_dir {
            for f in [
                "uki-signing-key.pem",
                "uki-signing-cert.pem",
                "pcr-signing-key.pem",
            ] {
                if !dir.join(f).is_file() {
                    return Err(Error::invalid(format!(
                        "--secureboot-dir {}: {f} is missing",
                        dir.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_targets() {
        let t = RegistryTarget::parse("127.0.0.1:5000/factory").unwrap();
        assert_eq!(
            (t.host.as_str(), t.prefix.as_str()),
            ("127.0.0.1:5000", "factory")
        );
        assert_eq!(t.repo("cache"), "factory/cache");
        assert_eq!(RegistryTarget::parse("reg").unwrap().repo("cache"), "cache");
        assert!(RegistryTarget::parse("http://reg/x").is_err());
        assert!(RegistryTarget::parse("reg/Upper").is_err());
        assert!(RegistryTarget::parse("/x").is_err());
    }
}
