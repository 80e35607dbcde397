//! Pulling a base image over the OCI distribution API: manifest (resolving an index
//! to `linux/<arch>`), config and layers, with anonymous bearer-token auth as public
//! registries use. HTTPS by default (webpki roots); `insecure` uses plain HTTP, as
//! for a registry on loopback. Layers are streamed into a cache by digest
//! (`$XDG_CACHE_HOME/imager/blobs`, else `~/.cache/imager/blobs`), verified as they
//! arrive, and reused by later builds.

use std::io::{Read, Write};
use std::path::PathBuf;

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;
use serde_json::Value;

use super::RegistryRef;
use super::source::{BaseImage, Blob, describe_json_error, for_platform};
use crate::error::{Error, IoContext, Result};
use crate::io::{HashingWriter, digest_string, sha256_digest};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

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
                    "{}: unsupported authentication {:?}",
                    self.what,
                    super::one_line(challenge)
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

    /// A JSON document (at most 16 MiB) with its content type, checked against
    /// `digest` when that is a `sha256:` digest.
    fn document(
        &mut self,
        path: &str,
        accept: &str,
        digest: Option<&str>,
    ) -> Result<(Vec<u8>, String)> {
        let r = self.get(path, accept)?;
        let media = r.content_type().to_string();
        let mut bytes = Vec::new();
        r.into_reader()
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Dependency(format!("{}: {e}", self.what)))?;
        let actual = sha256_digest(&bytes);
        if let Some(d) = digest.filter(|d| d.starts_with("sha256:"))
            && actual != d
        {
            return Err(Error::Dependency(format!(
                "{}: {path} has digest {actual}, expected {d}",
                self.what
            )));
        }
        Ok((bytes, media))
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, bytes: &[u8], path: &str) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::Dependency(format!("{}: {}", self.what, describe_json_error(path, &e)))
        })
    }
}

/// Whether a manifest response is an index: by its content type, or by having a
/// `manifests` list when the registry sends a generic type.
fn is_index_response(media: &str, bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        manifests: Option<Vec<serde::de::IgnoredAny>>,
    }
    media.contains("index")
        || media.contains("list")
        || serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.manifests.is_some())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("imager/blobs/sha256")
}

/// Pulls `r` for `arch`: plain HTTP when `insecure`, else HTTPS.
pub fn pull(r: &RegistryRef, arch: &str, insecure: bool) -> Result<BaseImage> {
    let text = r.as_written();
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
    let mut path = format!("/manifests/{}", r.reference);
    let (mut bytes, media) = c.document(&path, ACCEPT, digest)?;
    if is_index_response(&media, &bytes) {
        let index: ImageIndex = c.parse(&bytes, &path)?;
        let chosen = for_platform(&index, arch).ok_or_else(|| {
            Error::invalid(format!("base image {text} has no linux/{arch} image"))
        })?;
        let d = chosen.digest().to_string();
        path = format!("/manifests/{d}");
        (bytes, _) = c.document(&path, ACCEPT, Some(&d))?;
    }
    let manifest: ImageManifest = c.parse(&bytes, &path)?;
    let config_digest = manifest.config().digest().to_string();
    let config_path = format!("/blobs/{config_digest}");
    let (config_bytes, _) = c.document(&config_path, "*/*", Some(&config_digest))?;
    let config: Value = c.parse(&config_bytes, &config_path)?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).at(&dir)?;
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let digest = l.digest().to_string();
        let hex_part = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::Dependency(format!("{}: layer digest {digest:?}", c.what)))?;
        let path = dir.join(hex_part);
        if !path.is_file() {
            let tmp = dir.join(format!(".{hex_part}.{}", std::process::id()));
            let mut reader = c.get(&format!("/blobs/{digest}"), "*/*")?.into_reader();
            let mut out = HashingWriter::new(std::fs::File::create(&tmp).at(&tmp)?);
            let mut buf = vec![0u8; crate::io::BUFFER_SIZE];
            let short = &hex_part[..12.min(hex_part.len())];
            let bar = crate::report::Bar::new(&format!("pulling {short}"), l.size());
            loop {
                let n = reader.read(&mut buf).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    Error::Dependency(format!("{}: layer {digest}: {e}", c.what))
                })?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).writing(&tmp)?;
                bar.inc(n as u64);
            }
            bar.finish();
            let (_, sum, _) = out.finish();
            let actual = digest_string(sum);
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
        layers.push(Blob {
            digest: Some(digest),
            media_type: l.media_type().to_string(),
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
