//! Pulling a base image over the OCI distribution API: manifest (resolving an index
//! to `linux/<arch>`), config and layers, with bearer-token auth as public registries
//! use (anonymous, or with the credentials of [`super::auth`]) and HTTP basic auth as
//! an htpasswd-protected registry asks. HTTPS by default (webpki roots); `insecure` uses plain HTTP, as
//! for a registry on loopback. Layers are streamed into a cache by digest
//! (`$XDG_CACHE_HOME/imager/blobs`, else `~/.cache/imager/blobs`), verified as they
//! arrive, and reused by later builds.

use std::io::{Read, Write};
use std::path::PathBuf;

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;
use serde_json::Value;

use super::RegistryRef;
use super::auth::Credentials;
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
    credentials: Option<Credentials>,
    /// The registry asked for basic authentication.
    basic: bool,
}

impl Client {
    fn get(&mut self, path: &str, accept: &str) -> Result<ureq::Response> {
        let url = format!("{}{path}", self.base);
        for _ in 0..2 {
            let mut req = self.agent.get(&url).set("Accept", accept);
            if let (true, Some(c)) = (self.basic, &self.credentials) {
                req = req.set("Authorization", &c.basic());
            } else if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if self.token.is_none() && !self.basic => {
                    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
                    if is_basic(&challenge) && self.credentials.is_some() {
                        self.basic = true;
                    } else {
                        self.token = Some(fetch_token(
                            &self.agent,
                            &self.what,
                            &challenge,
                            self.credentials.as_ref(),
                        )?);
                    }
                }
                Err(ureq::Error::Status(code, _)) => {
                    return Err(Error::Dependency(format!(
                        "{}: {url}: HTTP {code}",
                        self.what
                    )));
                }
                Err(e) => {
                    return Err(Error::Dependency(format!(
                        "{}: {url}: {}",
                        self.what,
                        transport_text(&e)
                    )));
                }
            }
        }
        Err(Error::Dependency(format!(
            "{}: {url}: authorization refused",
            self.what
        )))
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

/// Whether a `WWW-Authenticate` challenge asks for HTTP basic authentication.
fn is_basic(challenge: &str) -> bool {
    challenge
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("basic "))
}

/// A token from a `Bearer realm=...,service=...,scope=...` challenge: anonymous, or
/// asked for with `credentials` (basic authentication to the token service).
fn fetch_token(
    agent: &ureq::Agent,
    what: &str,
    challenge: &str,
    credentials: Option<&Credentials>,
) -> Result<String> {
    let unsupported = || {
        Error::Dependency(format!(
            "{what}: HTTP 401 Unauthorized and {}",
            if credentials.is_none() {
                "no credentials for it (an auth file entry or --registry-username/--registry-password-file)".to_string()
            } else {
                format!("an unsupported challenge {:?}", super::one_line(challenge))
            }
        ))
    };
    let Some(params) = challenge
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .map(|_| &challenge[7..])
    else {
        return Err(unsupported());
    };
    let params: Vec<(String, String)> = params
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect();
    let realm = params
        .iter()
        .find(|(k, _)| k == "realm")
        .map(|(_, v)| v.clone())
        .ok_or_else(unsupported)?;
    let mut req = agent.get(&realm);
    for (k, v) in params.iter().filter(|(k, _)| k != "realm") {
        req = req.query(k, v);
    }
    if let Some(c) = credentials {
        req = req.set("Authorization", &c.basic());
    }
    let body: Value = match req.call() {
        Ok(r) => r
            .into_string()
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| Error::Dependency(format!("{what}: token: not JSON")))?,
        Err(ureq::Error::Status(code @ (401 | 403), _)) => {
            return Err(Error::Dependency(format!(
                "{what}: HTTP {code} from the token service {realm}: {}",
                if credentials.is_some() {
                    "the credentials were refused"
                } else {
                    "no credentials for it (an auth file entry or --registry-username/--registry-password-file)"
                }
            )));
        }
        Err(e) => return Err(Error::Dependency(format!("{what}: token: {e}"))),
    };
    body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Dependency(format!("{what}: no token in the token response")))
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

/// A request that failed before an answer, in one line without the URL ureq repeats
/// (the caller names it); a certificate the roots do not cover says how to trust it.
fn transport_text(e: &ureq::Error) -> String {
    let text = match e {
        ureq::Error::Transport(t) => {
            let mut text = t.kind().to_string();
            for part in [
                t.message().map(str::to_string),
                std::error::Error::source(e).map(|s| s.to_string()),
            ]
            .into_iter()
            .flatten()
            {
                text.push_str(": ");
                text.push_str(&part);
            }
            text
        }
        other => other.to_string(),
    };
    if untrusted_certificate(e) {
        format!("{text} (a registry behind an internal CA: set SSL_CERT_FILE to the CA's PEM file)")
    } else {
        text
    }
}

/// Whether `e` is the TLS handshake refusing the registry's certificate (rustls's
/// `InvalidCertificate`, inside the I/O error ureq's transport carries).
fn untrusted_certificate(e: &ureq::Error) -> bool {
    let invalid = |err: &(dyn std::error::Error + 'static)| {
        matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        )
    };
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if invalid(err) || inner.is_some_and(invalid) {
            return true;
        }
        source = err.source();
    }
    false
}

/// An HTTP client builder: plain HTTP when `insecure`, else HTTPS checked against
/// [`super::tls`]'s roots.
fn agent_builder(insecure: bool) -> Result<ureq::AgentBuilder> {
    let builder = ureq::AgentBuilder::new();
    Ok(if insecure {
        builder
    } else {
        builder.tls_config(super::tls::client_config()?)
    })
}

/// Asks `host` for `/v2/` (the API's version check) and accepts any HTTP answer:
/// a cheap look, before a build starts, that the registry is reachable and speaks
/// the protocol chosen (a plain-HTTP registry fails the TLS handshake here).
/// `what` names the image in the error.
pub fn reachable(host: &str, insecure: bool, what: &str) -> Result<()> {
    let scheme = if insecure { "http" } else { "https" };
    let agent = agent_builder(insecure)?
        .timeout_connect(std::time::Duration::from_secs(10))
        .timeout_read(std::time::Duration::from_secs(30))
        .redirects(0)
        .build();
    let url = format!("{scheme}://{host}/v2/");
    match agent.get(&url).call() {
        Ok(_) | Err(ureq::Error::Status(..)) => Ok(()),
        Err(e) => Err(Error::Dependency(format!(
            "{what}: GET {url}: {}",
            transport_text(&e)
        ))),
    }
}

/// Pulls `r` for `arch`: plain HTTP when `insecure`, else HTTPS.
pub fn pull(r: &RegistryRef, arch: &str, insecure: bool) -> Result<BaseImage> {
    let text = r.as_written();
    let scheme = if insecure { "http" } else { "https" };
    let agent = agent_builder(insecure)?
        .timeout_connect(std::time::Duration::from_secs(10))
        .build();
    let mut c = Client {
        agent,
        base: format!("{scheme}://{}/v2/{}", r.host, r.repository),
        what: format!("base image {text}"),
        token: None,
        credentials: super::auth::lookup(&r.host)?,
        basic: false,
    };
    let digest = r
        .reference
        .starts_with("sha256:")
        .then_some(r.reference.as_str());
    let mut path = format!("/manifests/{}", r.reference);
    let (mut bytes, media) = c.document(&path, ACCEPT, digest)?;
    // --verify-image-signatures: the signature of what the reference names, before use.
    crate::cosign::check_pull(r, &sha256_digest(&bytes), insecure)?;
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
            // Its own temporary name: two builds of one process may pull the same layer.
            let mut file = crate::io::AtomicFile::create(&path)?;
            let tmp = file.temp_path().to_path_buf();
            let mut reader = c.get(&format!("/blobs/{digest}"), "*/*")?.into_reader();
            let mut out = HashingWriter::new(file.file());
            let mut buf = vec![0u8; crate::io::BUFFER_SIZE];
            let short = &hex_part[..12.min(hex_part.len())];
            let bar = crate::report::Bar::new(&format!("pulling {short}"), l.size());
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| Error::Dependency(format!("{}: layer {digest}: {e}", c.what)))?;
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
                return Err(Error::Dependency(format!(
                    "{}: layer {digest} downloaded with digest {actual}",
                    c.what
                )));
            }
            file.commit()?;
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

/// A read-write session with one registry: the calls the service's shared store makes
/// (blob HEAD/GET/monolithic upload, manifest HEAD/GET/PUT by tag or digest).
///
/// Our own client rather than the `oci-client` crate: the pull path above and every
/// build are blocking ureq already, while `oci-client` is async over reqwest (a
/// second HTTP and TLS stack in the binary) and buffers blobs it pushes in memory. The
/// service needs a handful of calls; it runs them off the async runtime
/// (`spawn_blocking`) and streams blobs from files. Uploads are monolithic (`POST`,
/// one `PUT ?digest=`) or, for large blobs, chunked (`PATCH`es with `Content-Range`);
/// the registry checks the digest before the blob exists, so a half-sent upload never
/// becomes visible.
pub struct Session {
    agent: ureq::Agent,
    /// `http://host:port` or `https://host`.
    origin: String,
    host: String,
    credentials: Option<Credentials>,
    /// The registry asked for basic authentication: every request carries it.
    basic: std::sync::atomic::AtomicBool,
    /// Bearer tokens by repository (from the registry's challenge, with the credentials if any).
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// A request that failed, and the one-line error. `refused`: asking again will not help —
/// the registry refused the caller (HTTP 401/403, or its token service did) or its
/// certificate is not trusted ([`super::tls`]).
#[derive(Debug)]
pub struct SendError {
    pub refused: bool,
    pub error: Error,
}

/// Blobs above this size are uploaded in chunks.
pub const CHUNKED_ABOVE: u64 = 16 << 20;
/// Size of one upload chunk.
const CHUNK: u64 = 8 << 20;

/// A manifest as stored: its bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

/// A blob being read: its size and the body (not yet verified; the caller hashes it).
pub type BlobReader = (u64, Box<dyn Read + Send + Sync + 'static>);

impl Session {
    /// A session with `host` (`host[:port]`), over plain HTTP when `insecure`, anonymous.
    pub fn new(host: &str, insecure: bool) -> Result<Session> {
        Session::with_credentials(host, insecure, None)
    }

    /// A session with `host` that authenticates with `credentials` when the registry asks.
    /// Fails only on a bad `SSL_CERT_FILE`/`SSL_CERT_DIR` ([`super::tls`]).
    pub fn with_credentials(
        host: &str,
        insecure: bool,
        credentials: Option<Credentials>,
    ) -> Result<Session> {
        let scheme = if insecure { "http" } else { "https" };
        Ok(Session {
            agent: agent_builder(insecure)?
                .timeout_connect(std::time::Duration::from_secs(10))
                .timeout_read(std::time::Duration::from_secs(300))
                .redirects(5)
                .build(),
            origin: format!("{scheme}://{host}"),
            host: host.to_string(),
            credentials,
            basic: Default::default(),
            tokens: Default::default(),
        })
    }

    /// Whether credentials are configured.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Dependency(format!("registry {}: {what}: {e}", self.host))
    }

    /// Sends one request, answering an authentication challenge once. `Ok(None)` for 404.
    fn send(
        &self,
        method: &str,
        repo: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&mut dyn Read>,
    ) -> Result<Option<ureq::Response>> {
        self.send_classified(method, repo, url, headers, body)
            .map_err(|e| e.error)
    }

    /// [`Session::send`], telling a refusal (401/403) from other failures.
    fn send_classified(
        &self,
        method: &str,
        repo: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&mut dyn Read>,
    ) -> std::result::Result<Option<ureq::Response>, SendError> {
        use std::sync::atomic::Ordering;
        let other = |error| SendError {
            refused: false,
            error,
        };
        let refused = |error| SendError {
            refused: true,
            error,
        };
        let mut body = body;
        for attempt in 0..2 {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let basic = self.basic.load(Ordering::Relaxed);
            if let (true, Some(c)) = (basic, &self.credentials) {
                req = req.set("Authorization", &c.basic());
            } else if let Some(t) = self.tokens.lock().unwrap().get(repo) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let result = match body.as_mut() {
                Some(r) => req.send(r),
                None => req.call(),
            };
            match result {
                Ok(r) => return Ok(Some(r)),
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(401, r)) if attempt == 0 && body.is_none() => {
                    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
                    if is_basic(&challenge) && self.credentials.is_some() && !basic {
                        self.basic.store(true, Ordering::Relaxed);
                        continue;
                    }
                    if is_basic(&challenge) {
                        return Err(refused(self.unauthorized(method, url, 401)));
                    }
                    let what = format!("registry {}", self.host);
                    let token =
                        fetch_token(&self.agent, &what, &challenge, self.credentials.as_ref())
                            .map_err(|e| SendError {
                                refused: e.to_string().contains(": HTTP 40")
                                    || e.to_string().contains("no credentials"),
                                error: e,
                            })?;
                    self.tokens.lock().unwrap().insert(repo.to_string(), token);
                }
                Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                    return Err(refused(self.unauthorized(method, url, code)));
                }
                Err(ureq::Error::Status(code, r)) => {
                    let text: String = r.into_string().unwrap_or_default();
                    return Err(other(self.fail(
                        &format!("{method} {url}"),
                        format!("HTTP {code} {}", super::one_line(&text)),
                    )));
                }
                Err(e) => {
                    let error = self.fail(&format!("{method} {url}"), transport_text(&e));
                    return Err(if untrusted_certificate(&e) {
                        refused(error)
                    } else {
                        other(error)
                    });
                }
            }
        }
        Err(refused(self.unauthorized(method, url, 401)))
    }

    /// The error of a refused request: which registry, and whether credentials were given.
    fn unauthorized(&self, method: &str, url: &str, code: u16) -> Error {
        let status = if code == 403 {
            "HTTP 403 Forbidden"
        } else {
            "HTTP 401 Unauthorized"
        };
        self.fail(
            &format!("{method} {url}"),
            if self.credentials.is_some() {
                format!("{status}: the credentials for {} were refused", self.host)
            } else {
                format!(
                    "{status}: no credentials for {} (an auth file entry or --registry-username/--registry-password-file)",
                    self.host
                )
            },
        )
    }

    /// Reads `repo`'s tag list (a cheap authenticated call): `Ok` when the registry
    /// answers (an unknown repository is an answer too), else whether it refused us.
    pub fn probe(&self, repo: &str) -> std::result::Result<(), SendError> {
        let url = self.url(repo, "tags/list?n=1");
        self.send_classified("GET", repo, &url, &[], None)
            .map(|_| ())
    }

    /// Every tag of `repo` (following `Link` pages); `None` when the repository is unknown.
    pub fn tags(&self, repo: &str) -> std::result::Result<Option<Vec<String>>, SendError> {
        #[derive(Deserialize)]
        struct List {
            tags: Option<Vec<String>>,
        }
        let mut url = self.url(repo, "tags/list?n=1000");
        let mut out = Vec::new();
        for _ in 0..1000 {
            let Some(r) = self.send_classified("GET", repo, &url, &[], None)? else {
                return Ok(None);
            };
            let next = r
                .header("link")
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(u, _)| u.to_string());
            let text = r.into_string().map_err(|e| SendError {
                refused: false,
                error: self.fail(&url, e),
            })?;
            let list: List = serde_json::from_str(&text).map_err(|e| SendError {
                refused: false,
                error: self.fail(&url, describe_json_error("the tag list", &e)),
            })?;
            out.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) if n.starts_with('/') => url = format!("{}{n}", self.origin),
                Some(n) => url = n,
                None => return Ok(Some(out)),
            }
        }
        Ok(Some(out))
    }

    /// Downloads blob `digest` of `repo` to `path` (atomically: a temporary file beside it,
    /// renamed once its digest checked out). `false` when the registry has no such blob.
    pub fn blob_to_file(&self, repo: &str, digest: &str, path: &std::path::Path) -> Result<bool> {
        let Some((_, mut reader)) = self.open_blob(repo, digest)? else {
            return Ok(false);
        };
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).at(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.{:?}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            std::thread::current().id()
        ));
        let result = (|| {
            let mut out = HashingWriter::new(std::fs::File::create(&tmp).at(&tmp)?);
            let mut buf = vec![0u8; crate::io::BUFFER_SIZE];
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| self.fail(&format!("reading blob {digest} of {repo}"), e))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).writing(&tmp)?;
            }
            let (_, sum, _) = out.finish();
            let actual = digest_string(sum);
            if actual != digest {
                return Err(self.fail(
                    &format!("blob {digest} of {repo}"),
                    format!("downloaded with digest {actual}"),
                ));
            }
            std::fs::rename(&tmp, path).at(path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|_| true)
    }

    fn url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.origin)
    }

    /// The size of blob `digest` in `repo`, if it is there.
    pub fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        Ok(self.send("HEAD", repo, &url, &[], None)?.map(|r| {
            r.header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }))
    }

    /// Opens blob `digest` of `repo` for reading.
    pub fn open_blob(&self, repo: &str, digest: &str) -> Result<Option<BlobReader>> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        Ok(self.send("GET", repo, &url, &[], None)?.map(|r| {
            let size = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (
                size,
                Box::new(r.into_reader()) as Box<dyn Read + Send + Sync>,
            )
        }))
    }

    /// Reads a small blob whole (at most `limit` bytes), checked against its digest.
    pub fn read_blob(&self, repo: &str, digest: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some((_, reader)) = self.open_blob(repo, digest)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        reader
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.fail(&format!("reading blob {digest}"), e))?;
        if bytes.len() as u64 > limit {
            return Err(self.fail(
                &format!("blob {digest}"),
                format!("larger than {limit} bytes"),
            ));
        }
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(self.fail(&format!("blob {digest}"), format!("has digest {actual}")));
        }
        Ok(Some(bytes))
    }

    /// Uploads a blob of `size` bytes read from `body` as `digest`, unless `repo` has
    /// it: in one `PUT` up to [`CHUNKED_ABOVE`] bytes, else in [`CHUNK`]-sized `PATCH`es
    /// (registries and proxies in front of them often cap one request's body) closed by
    /// a `PUT ?digest=`.
    pub fn push_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        body: &mut dyn Read,
    ) -> Result<()> {
        if self.blob_size(repo, digest)?.is_some() {
            return Ok(());
        }
        let start = self.url(repo, "blobs/uploads/");
        let r = self
            // No body: a bearer challenge (with the push scope) can be answered and retried.
            .send("POST", repo, &start, &[("Content-Length", "0")], None)?
            .ok_or_else(|| self.fail(&start, "uploads not found (HTTP 404)"))?;
        let mut location = self.location(&r, &start)?;
        let octets = ("Content-Type", "application/octet-stream");
        let mut rest: Option<&mut dyn Read> = Some(body);
        let mut final_size = size;
        if size > CHUNKED_ABOVE {
            let body = rest.take().expect("the body is there");
            let mut sent = 0u64;
            while sent < size {
                let n = CHUNK.min(size - sent);
                let range = format!("{sent}-{}", sent + n - 1);
                let len = n.to_string();
                let mut chunk = body.take(n);
                let r = self
                    .send(
                        "PATCH",
                        repo,
                        &location,
                        &[octets, ("Content-Range", &range), ("Content-Length", &len)],
                        Some(&mut chunk),
                    )?
                    .ok_or_else(|| self.fail(&location, "upload vanished (HTTP 404)"))?;
                location = self.location(&r, &location)?;
                sent += n;
            }
            final_size = 0;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let len = final_size.to_string();
        let mut empty = std::io::empty();
        let body: &mut dyn Read = match rest {
            Some(b) => b,
            None => &mut empty,
        };
        self.send(
            "PUT",
            repo,
            &put,
            &[octets, ("Content-Length", &len)],
            Some(body),
        )?
        .ok_or_else(|| self.fail(&put, "upload vanished (HTTP 404)"))?;
        Ok(())
    }

    /// The absolute upload URL a response's `Location` names.
    fn location(&self, r: &ureq::Response, request: &str) -> Result<String> {
        let location = r
            .header("location")
            .ok_or_else(|| self.fail(request, "no Location in the upload response"))?;
        Ok(if location.starts_with('/') {
            format!("{}{location}", self.origin)
        } else {
            location.to_string()
        })
    }

    /// Uploads an in-memory blob; returns its digest.
    pub fn push_blob_bytes(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        self.push_blob(repo, &digest, bytes.len() as u64, &mut &bytes[..])?;
        Ok(digest)
    }

    /// Stores a manifest under `reference` (a tag or its digest); returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let len = bytes.len().to_string();
        self.send(
            "PUT",
            repo,
            &url,
            &[("Content-Type", media_type), ("Content-Length", &len)],
            Some(&mut &bytes[..]),
        )?
        .ok_or_else(|| self.fail(&url, "HTTP 404"))?;
        Ok(sha256_digest(bytes))
    }

    /// The digest, media type and size of manifest `reference`, if it exists.
    pub fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(String, String, u64)>> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let Some(r) = self.send("HEAD", repo, &url, &[("Accept", ACCEPT)], None)? else {
            return Ok(None);
        };
        let digest = r
            .header("docker-content-digest")
            .unwrap_or_default()
            .to_string();
        let size = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some((digest, r.content_type().to_string(), size)))
    }

    /// The referrers index of manifest `digest` in `repo` (OCI Distribution 1.1
    /// referrers API), at most 4 MiB; `None` when the registry has no referrers API or
    /// answers 404 (then referrers are found under the `sha256-<hex>` tag).
    pub fn referrers(&self, repo: &str, digest: &str) -> Result<Option<Vec<u8>>> {
        let url = self.url(repo, &format!("referrers/{digest}"));
        let r = match self.send_classified(
            "GET",
            repo,
            &url,
            &[("Accept", "application/vnd.oci.image.index.v1+json")],
            None,
        ) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) if e.refused => return Err(e.error),
            // Registries without the API answer 400/405/500 as often as 404.
            Err(_) => return Ok(None),
        };
        if !r.content_type().contains("image.index") {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        r.into_reader()
            .take(4 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| self.fail(&url, e))?;
        Ok(Some(bytes))
    }

    /// Manifest `reference` of `repo` (at most 4 MiB), checked against its digest.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<Option<StoredManifest>> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let Some(r) = self.send("GET", repo, &url, &[("Accept", ACCEPT)], None)? else {
            return Ok(None);
        };
        let media_type = r.content_type().to_string();
        let header = r.header("docker-content-digest").map(str::to_string);
        let mut bytes = Vec::new();
        r.into_reader()
            .take(4 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| self.fail(&url, e))?;
        let digest = sha256_digest(&bytes);
        let expected = header.or_else(|| {
            reference
                .starts_with("sha256:")
                .then(|| reference.to_string())
        });
        if let Some(d) = expected.filter(|d| d.starts_with("sha256:"))
            && d != digest
        {
            return Err(self.fail(&url, format!("manifest has digest {digest}, expected {d}")));
        }
        Ok(Some(StoredManifest {
            bytes,
            media_type,
            digest,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A registry on loopback that wants a bearer token, handed out by its token
    /// endpoint for `user:pass` only (as Harbor, GitLab and Docker Hub do); serves
    /// `connections` connections, one request each.
    fn token_registry(connections: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let realm = format!("http://{host}/token");
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h
                        .strip_prefix("Authorization: ")
                        .or(h.strip_prefix("authorization: "))
                    {
                        auth = v.trim().to_string();
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                seen.push(format!("{path} [{auth}]"));
                let (status, extra, body) = if path.starts_with("/token") {
                    if auth == Credentials::new("user", "pass").basic()
                        && path.contains("scope=repository%3Ax%3Apull")
                    {
                        ("200 OK", String::new(), r#"{"token":"T0K3N"}"#.to_string())
                    } else {
                        ("401 Unauthorized", String::new(), "{}".to_string())
                    }
                } else if auth == "Bearer T0K3N" {
                    (
                        "200 OK",
                        String::new(),
                        r#"{"name":"x","tags":["v1.9.2"]}"#.to_string(),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        format!(
                            "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:x:pull\"\r\n"
                        ),
                        "{}".to_string(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
            }
            seen
        });
        (host, handle)
    }

    #[test]
    fn bearer_tokens_are_asked_for_with_the_credentials() {
        let (host, server) = token_registry(3);
        let s =
            Session::with_credentials(&host, true, Some(Credentials::new("user", "pass"))).unwrap();
        assert_eq!(s.tags("x").unwrap(), Some(vec!["v1.9.2".to_string()]));
        let seen = server.join().unwrap();
        assert!(
            seen[1].starts_with("/token?")
                && seen[1].ends_with(&format!("[{}]", Credentials::new("user", "pass").basic())),
            "{seen:?}"
        );
        assert!(seen[2].ends_with("[Bearer T0K3N]"), "{seen:?}");

        // A wrong password: refused, one line naming the registry and the token service.
        let (host, server) = token_registry(2);
        let s = Session::with_credentials(&host, true, Some(Credentials::new("user", "wrong")))
            .unwrap();
        let e = s.tags("x").unwrap_err();
        assert!(e.refused, "{:?}", e.error);
        let text = e.error.to_string();
        assert!(
            text.contains(&host)
                && text.contains("HTTP 401")
                && text.contains("refused")
                && !text.contains("wrong"),
            "{text}"
        );
        server.join().unwrap();

        // No credentials: refused, saying there are none.
        let (host, server) = token_registry(2);
        let e = Session::new(&host, true).unwrap().tags("x").unwrap_err();
        assert!(
            e.refused && e.error.to_string().contains("no credentials"),
            "{:?}",
            e.error
        );
        server.join().unwrap();
    }
}
