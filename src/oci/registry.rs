//! Pulling a base image over the OCI distribution API: manifest (resolving an index
//! to `linux/<arch>`), config and layers, with anonymous bearer-token auth as public
//! registries use. HTTPS by default (webpki roots); `insecure` uses plain HTTP, as
//! for a registry on loopback. Layers are streamed into a cache by digest
//! (`$XDG_CACHE_HOME/imager/blobs`, else `~/.cache/imager/blobs`), verified as they
//! arrive, and reused by later builds.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::source::{BaseImage, Blob};
use crate::error::{Error, IoContext, Result};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A parsed `host[:port]/repository[:tag|@digest]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub host: String,
    pub repository: String,
    /// Tag or `sha256:` digest.
    pub reference: String,
}

impl Reference {
    /// Parses a registry reference; Docker Hub names get `registry-1.docker.io` and `library/`.
    pub fn parse(text: &str) -> Result<Reference> {
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
                "base image {text:?} is not an image reference"
            )));
        }
        Ok(Reference {
            host,
            repository,
            reference,
        })
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
    what: String,
    token: Option<String>,
}

impl Client {
    fn get(&mut self, path: &str, accept: &str) -> Result<ureq::Response> {
        let url = format!("{}{path}", self.base);
        for _ in 0..2 {
            let mut req = self.agent.get(&url).set("Accept", accept);
            if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if self.token.is_none() => {
                    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
                    self.token = Some(self.token_for(&challenge)?);
                }
                Err(ureq::Error::Status(code, _)) => {
                    return Err(Error::Dependency(format!(
                        "{}: {url}: HTTP {code}",
                        self.what
                    )));
                }
                Err(e) => return Err(Error::Dependency(format!("{}: {url}: {e}", self.what))),
            }
        }
        Err(Error::Dependency(format!(
            "{}: {url}: authorization refused",
            self.what
        )))
    }

    /// Anonymous token from a `Bearer realm=...,service=...,scope=...` challenge.
    fn token_for(&self, challenge: &str) -> Result<String> {
        let params: Vec<(String, String)> = challenge
            .trim_start_matches("Bearer ")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect();
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                Error::Dependency(format!(
                    "{}: unsupported authentication {challenge:?}",
                    self.what
                ))
            })?;
        let mut req = self.agent.get(&realm);
        for (k, v) in params.iter().filter(|(k, _)| k != "realm") {
            req = req.query(k, v);
        }
        let body: Value = req
            .call()
            .map_err(|e| Error::Dependency(format!("{}: token: {e}", self.what)))?
            .into_string()
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| Error::Dependency(format!("{}: token: not JSON", self.what)))?;
        body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::Dependency(format!("{}: no token in the token response", self.what))
            })
    }

    fn json(&mut self, path: &str, accept: &str, digest: Option<&str>) -> Result<(Value, String)> {
        let r = self.get(path, accept)?;
        let media = r.content_type().to_string();
        let mut bytes = Vec::new();
        r.into_reader()
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Dependency(format!("{}: {e}", self.what)))?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(d) = digest.filter(|d| d.starts_with("sha256:"))
            && actual != d
        {
            return Err(Error::Dependency(format!(
                "{}: {path} has digest {actual}, expected {d}",
                self.what
            )));
        }
        let v = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Dependency(format!("{}: {path}: {e}", self.what)))?;
        Ok((v, media))
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("imager/blobs/sha256")
}

/// Pulls `text` for `arch`.
pub fn pull(text: &str, arch: &str, insecure: bool) -> Result<BaseImage> {
    let r = Reference::parse(text)?;
    let scheme = if insecure { "http" } else { "https" };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(10))
        .build();
    let mut c = Client {
        agent,
        base: format!("{scheme}://{}/v2/{}", r.host, r.repository),
        what: format!("base image {text}"),
        token: None,
    };
    let digest = r
        .reference
        .starts_with("sha256:")
        .then_some(r.reference.as_str());
    let (mut manifest, mut media) =
        c.json(&format!("/manifests/{}", r.reference), ACCEPT, digest)?;
    if media.contains("index") || media.contains("list") || manifest["manifests"].is_array() {
        let chosen = manifest["manifests"]
            .as_array()
            .and_then(|ms| {
                ms.iter().find(|m| {
                    m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux"
                })
            })
            .cloned()
            .ok_or_else(|| {
                Error::invalid(format!("base image {text} has no linux/{arch} image"))
            })?;
        let d = chosen["digest"].as_str().unwrap_or_default().to_string();
        (manifest, media) = c.json(&format!("/manifests/{d}"), ACCEPT, Some(&d))?;
    }
    let _ = media;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (config, _) = c.json(
        &format!("/blobs/{config_digest}"),
        "*/*",
        Some(&config_digest),
    )?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).at(&dir)?;
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
        let digest = l["digest"].as_str().unwrap_or_default().to_string();
        let hex_part = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::Dependency(format!("{}: layer digest {digest:?}", c.what)))?;
        let path = dir.join(hex_part);
        if !path.is_file() {
            let tmp = dir.join(format!(".{hex_part}.{}", std::process::id()));
            let mut reader = c.get(&format!("/blobs/{digest}"), "*/*")?.into_reader();
            let mut out = std::fs::File::create(&tmp).at(&tmp)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; crate::io::BUFFER_SIZE];
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| Error::Dependency(format!("{}: layer {digest}: {e}", c.what)))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).at(&tmp)?;
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Dependency(format!(
                    "{}: layer {digest} downloaded with digest {actual}",
                    c.what
                )));
            }
            std::fs::rename(&tmp, &path).at(&path)?;
        }
        let size = std::fs::metadata(&path).at(&path)?.len();
        let media_type = l["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.layer.v1.tar+gzip")
            .to_string();
        layers.push(Blob {
            digest: Some(digest),
            media_type,
            size,
            file: path,
            offset: 0,
        });
    }
    let found = config["architecture"].as_str().unwrap_or("").to_string();
    if found != arch {
        return Err(Error::invalid(format!(
            "base image {text} is for architecture {found:?}, not {arch}"
        )));
    }
    Ok(BaseImage {
        reference: text.to_string(),
        config,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("ghcr.io/siderolabs/installer:v1.9.2").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("ghcr.io", "siderolabs/installer", "v1.9.2")
        );
        let r = Reference::parse("127.0.0.1:5000/a/b").unwrap();
        assert_eq!(
            (r.host.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "latest")
        );
        let r = Reference::parse("alpine:3").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("registry-1.docker.io", "library/alpine")
        );
        let r = Reference::parse("ghcr.io/x/y@sha256:abc").unwrap();
        assert_eq!(r.reference, "sha256:abc");
    }
}
