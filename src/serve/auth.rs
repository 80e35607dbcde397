//! Access control of `imager serve` (`--auth-policy FILE`): who may create schematics
//! and who may get **signed** assets (SecureBoot: UKIs, ISOs, disk images and
//! installers signed with the fleet's key, whose `.pcrsig` unseals disks), and what a
//! signed asset may carry. Image Factory's community edition has none of this.
//!
//! Clients authenticate with `Authorization: Bearer`: a token from the tokens file, or
//! an OIDC ID token checked against a JWKS file ([`super::jwt`]). Every denial is one
//! line: 401 without (valid) credentials, 403 when the identity may not, 429 over a
//! per-client limit (builds in flight, schematics per minute; anonymous clients share
//! one bucket); a refused request builds nothing. Every signed asset served is one
//! audit line: who, schematic, version, asset, bytes and the SHA-256 of what was sent.
//!
//! The policy file (YAML):
//!
//! ```yaml
//! tokens: /etc/imager/tokens          # lines "IDENTITY TOKEN" ('#' comments)
//! oidc:
//!   issuer: https://idp.example.com
//!   audience: imager
//!   jwks: /etc/imager/jwks.json       # a JWKS file or URL, read at start (RS256, ES256 keys)
//!   identityClaim: email              # default sub
//! anonymous:                          # clients without credentials
//!   createSchematics: true            # default true
//!   unsignedAssets: true              # default true
//! rules:                              # first rule naming the identity applies
//!   - identities: [alice@example.com, "re:^ci-[a-z]+@example\\.com$"]   # or "*"
//!     createSchematics: true          # default true
//!     unsignedAssets: true            # default true
//!     signedAssets: true              # default false
//!     talosVersions: ["v1.9.*", "v1.10.*"]         # globs, default any
//!     extensions: ["siderolabs/*"]                 # globs, default any
//!     overlays: []                                 # overlay names, default any
//!     kernelArgs: ["console=*", "talos.config=https://cfg.example.com/*"]  # default any
//!     denyKernelArgs: ["init=*"]                   # checked first
//! limits:
//!   buildsInFlight: 2                 # per client, asset requests at once (0: no limit)
//!   schematicsPerMinute: 30           # per client (0: no limit)
//! auditLog: /var/log/imager/audit.log # else audit lines go to the service log
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State as Extract};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::jwt;
use super::{AppState, ServeError};
use crate::error::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    tokens: Option<PathBuf>,
    oidc: Option<OidcFile>,
    #[serde(default)]
    anonymous: Anonymous,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    limits: Limits,
    audit_log: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OidcFile {
    issuer: String,
    audience: String,
    /// A JWKS file, or an `https://` (or `http://`) URL read once at start.
    jwks: String,
    #[serde(default = "default_claim")]
    identity_claim: String,
}

fn default_claim() -> String {
    "sub".into()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Anonymous {
    #[serde(default = "yes")]
    create_schematics: bool,
    #[serde(default = "yes")]
    unsigned_assets: bool,
}

impl Default for Anonymous {
    fn default() -> Self {
        Anonymous {
            create_schematics: true,
            unsigned_assets: true,
        }
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleFile {
    identities: Vec<String>,
    #[serde(default = "yes")]
    create_schematics: bool,
    #[serde(default = "yes")]
    unsigned_assets: bool,
    #[serde(default)]
    signed_assets: bool,
    talos_versions: Option<Vec<String>>,
    extensions: Option<Vec<String>>,
    overlays: Option<Vec<String>>,
    kernel_args: Option<Vec<String>>,
    #[serde(default)]
    deny_kernel_args: Vec<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Limits {
    #[serde(default)]
    builds_in_flight: usize,
    #[serde(default)]
    schematics_per_minute: usize,
}

enum IdentityPattern {
    Any,
    Exact(String),
    Regex(regex::Regex),
}

struct Rule {
    identities: Vec<IdentityPattern>,
    grants: RuleFile,
}

/// The loaded policy and the per-client counters.
pub struct Auth {
    tokens: HashMap<[u8; 32], String>,
    oidc: Option<(jwt::Jwks, jwt::Expect)>,
    anonymous: Anonymous,
    rules: Vec<Rule>,
    limits: Limits,
    audit: Option<Mutex<std::fs::File>>,
    in_flight: Mutex<HashMap<String, usize>>,
    created: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn any_glob(patterns: &Option<Vec<String>>, text: &str) -> bool {
    patterns
        .as_ref()
        .is_none_or(|p| p.iter().any(|p| glob(p, text)))
}

impl Auth {
    /// Reads the policy at `path` (and the tokens and JWKS files it names).
    pub fn load(path: &Path) -> Result<Auth> {
        let bad = |msg: String| Error::format(path, msg);
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let file: PolicyFile =
            serde_yaml::from_slice(&text).map_err(|e| bad(format!("not an auth policy: {e}")))?;
        let mut tokens = HashMap::new();
        if let Some(t) = &file.tokens {
            let body = std::fs::read_to_string(t).map_err(|e| Error::io(t, e))?;
            for (n, line) in body.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((id, token)) = line.split_once(char::is_whitespace) else {
                    return Err(Error::format(
                        t,
                        format!("line {}: not \"IDENTITY TOKEN\"", n + 1),
                    ));
                };
                let token = token.trim();
                if token.len() < 16 {
                    return Err(Error::format(
                        t,
                        format!("line {}: tokens need at least 16 characters", n + 1),
                    ));
                }
                tokens.insert(Sha256::digest(token.as_bytes()).into(), id.to_string());
            }
        }
        let oidc = match &file.oidc {
            None => None,
            Some(o) => {
                let bytes = if o.jwks.starts_with("https://") || o.jwks.starts_with("http://") {
                    fetch_jwks(&o.jwks)?
                } else {
                    std::fs::read(&o.jwks).map_err(|e| Error::io(&o.jwks, e))?
                };
                let jwks = jwt::Jwks::parse(&bytes)
                    .map_err(|e| Error::format(&o.jwks, format!("not a JWKS: {e}")))?;
                Some((
                    jwks,
                    jwt::Expect {
                        issuer: o.issuer.clone(),
                        audience: o.audience.clone(),
                        identity_claim: o.identity_claim.clone(),
                    },
                ))
            }
        };
        let mut rules = Vec::new();
        for r in &file.rules {
            let identities = r
                .identities
                .iter()
                .map(|i| {
                    if i == "*" {
                        Ok(IdentityPattern::Any)
                    } else if let Some(re) = i.strip_prefix("re:") {
                        regex::Regex::new(re)
                            .map(IdentityPattern::Regex)
                            .map_err(|e| bad(format!("identity pattern {i:?}: {e}")))
                    } else {
                        Ok(IdentityPattern::Exact(i.clone()))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            rules.push(Rule {
                identities,
                grants: r.clone(),
            });
        }
        let audit = match &file.audit_log {
            None => None,
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::io_op("opening", p, e))?,
            )),
        };
        Ok(Auth {
            tokens,
            oidc,
            anonymous: file.anonymous,
            rules,
            limits: file.limits,
            audit,
            in_flight: Mutex::default(),
            created: Mutex::default(),
        })
    }

    /// The identity the request's credentials prove (`None`: anonymous), or why they do not.
    fn authenticate(&self, req: &Request) -> std::result::Result<Option<String>, String> {
        let Some(h) = req.headers().get(axum::http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let h = h.to_str().map_err(|_| "malformed Authorization header")?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or("only Bearer credentials are accepted")?
            .trim();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(id) = self.tokens.get(&digest) {
            return Ok(Some(id.clone()));
        }
        if let Some((keys, expect)) = &self.oidc
            && jwt::looks_like_jwt(token)
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            return jwt::verify(token, keys, expect, now).map(Some);
        }
        Err("unknown token".into())
    }

    fn rule(&self, who: &str) -> Option<&RuleFile> {
        self.rules
            .iter()
            .find(|r| {
                r.identities.iter().any(|p| match p {
                    IdentityPattern::Any => true,
                    IdentityPattern::Exact(s) => s == who,
                    IdentityPattern::Regex(re) => re.is_match(who),
                })
            })
            .map(|r| &r.grants)
    }
}

/// Reads a JWKS from `url` (at most 1 MiB; HTTPS checked against the system's roots and
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`, as registries are).
fn fetch_jwks(url: &str) -> Result<Vec<u8>> {
    let fail = |e: String| Error::Dependency(format!("JWKS {url}: {e}"));
    let agent = ureq::AgentBuilder::new()
        .tls_config(crate::oci::tls::client_config()?)
        .timeout(Duration::from_secs(30))
        .build();
    let r = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(r.into_reader(), 1 << 20),
        &mut bytes,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

/// What a request asks for.
enum Ask {
    Open,
    CreateSchematic,
    Asset {
        schematic: String,
        version: String,
        asset: String,
        signed: bool,
    },
}

fn classify(method: &Method, path: &str) -> Ask {
    if method == Method::POST && (path == "/schematics" || path.starts_with("/ui/")) {
        return Ask::CreateSchematic;
    }
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match seg.as_slice() {
        ["image", id, version, asset] => Ask::Asset {
            schematic: id.to_string(),
            version: version.to_string(),
            asset: asset.to_string(),
            signed: asset.contains("-secureboot"),
        },
        ["pxe", id, version, asset] => Ask::Asset {
            schematic: id.to_string(),
            version: version.to_string(),
            asset: format!("pxe {asset}"),
            signed: asset.ends_with("-secureboot"),
        },
        ["v2", rest @ ..] if rest.len() >= 4 && rest[rest.len() - 2] == "manifests" => {
            let image = rest[rest.len() - 4];
            Ask::Asset {
                schematic: rest[rest.len() - 3].to_string(),
                version: rest[rest.len() - 1].to_string(),
                asset: image.to_string(),
                signed: image.ends_with("-secureboot"),
            }
        }
        _ => Ask::Open,
    }
}

fn deny(status: StatusCode, msg: String) -> Response {
    tracing::warn!(status = status.as_u16(), reason = %msg, "request refused");
    ServeError::new(status, msg).into_response()
}

/// Releases a client's build slot when dropped.
struct Slot<'a> {
    auth: &'a Auth,
    client: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut m = self.auth.in_flight.lock().unwrap();
        if let Some(n) = m.get_mut(&self.client) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Adds the access checks to `router` when a policy is loaded.
pub fn layer(router: axum::Router<AppState>, state: &AppState) -> axum::Router<AppState> {
    if state.auth.is_none() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(state.clone(), check))
}

async fn check(Extract(state): Extract<AppState>, req: Request, next: Next) -> Response {
    let auth = state
        .auth
        .as_ref()
        .expect("the layer is added with a policy");
    let who = match auth.authenticate(&req) {
        Ok(w) => w,
        Err(e) => {
            return deny(
                StatusCode::UNAUTHORIZED,
                format!("invalid credentials: {e}"),
            );
        }
    };
    let name = who.clone().unwrap_or_else(|| "anonymous".into());
    let rule = who.as_deref().and_then(|w| auth.rule(w));
    let refuse = |what: &str| match &who {
        None => deny(
            StatusCode::UNAUTHORIZED,
            format!("authentication required to {what}"),
        ),
        Some(w) => deny(StatusCode::FORBIDDEN, format!("{w} may not {what}")),
    };
    let method = req.method().clone();
    match classify(&method, req.uri().path()) {
        Ask::Open => next.run(req).await,
        Ask::CreateSchematic => {
            let allowed = match (&who, rule) {
                (None, _) => auth.anonymous.create_schematics,
                (Some(_), Some(r)) => r.create_schematics,
                (Some(_), None) => false,
            };
            if !allowed {
                return refuse("create schematics");
            }
            let limit = auth.limits.schematics_per_minute;
            if limit > 0 {
                let mut m = auth.created.lock().unwrap();
                let q = m.entry(name.clone()).or_default();
                let now = Instant::now();
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
                {
                    q.pop_front();
                }
                if q.len() >= limit {
                    return deny(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("{name} created {limit} schematics in the last minute (the limit)"),
                    );
                }
                q.push_back(now);
            }
            next.run(req).await
        }
        Ask::Asset {
            schematic,
            version,
            asset,
            signed,
        } => {
            if signed {
                let Some(r) = rule.filter(|r| r.signed_assets) else {
                    return refuse("get signed assets");
                };
                if let Err(why) = signed_allowed(&state, r, &schematic, &version).await {
                    return deny(
                        StatusCode::FORBIDDEN,
                        format!("{name} may not get signed assets {why}"),
                    );
                }
            } else {
                let allowed = match (&who, rule) {
                    (None, _) => auth.anonymous.unsigned_assets,
                    (Some(_), Some(r)) => r.unsigned_assets,
                    (Some(_), None) => false,
                };
                if !allowed {
                    return refuse("get assets");
                }
            }
            let limit = auth.limits.builds_in_flight;
            let _slot = if limit > 0 {
                let mut m = auth.in_flight.lock().unwrap();
                let n = m.entry(name.clone()).or_default();
                if *n >= limit {
                    drop(m);
                    return deny(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("{name} has {limit} builds in flight (the limit)"),
                    );
                }
                *n += 1;
                Some(Slot {
                    auth,
                    client: name.clone(),
                })
            } else {
                None
            };
            let response = next.run(req).await;
            if !signed || !response.status().is_success() {
                return response;
            }
            let line = AuditLine {
                identity: name,
                schematic,
                version,
                asset,
                method: method.to_string(),
            };
            if method != Method::GET {
                write_audit(&state, &line, None);
                return response;
            }
            let (parts, body) = response.into_parts();
            let stream = Audited {
                inner: body.into_data_stream(),
                hasher: Sha256::new(),
                bytes: 0,
                line: Some(line),
                state: state.clone(),
            };
            Response::from_parts(parts, Body::from_stream(stream))
        }
    }
}

/// Whether rule `r` lets a signed asset of `schematic` for `version` be built.
async fn signed_allowed(
    state: &AppState,
    r: &RuleFile,
    schematic: &str,
    version: &str,
) -> std::result::Result<(), String> {
    let v = if version.starts_with('v') {
        version.to_string()
    } else {
        format!("v{version}")
    };
    if !any_glob(&r.talos_versions, &v) {
        return Err(format!("for Talos {v}"));
    }
    let bytes = super::routes::load_schematic(state, schematic)
        .await
        .map_err(|e| format!("of schematic {schematic}: {}", e.message))?;
    let parsed = crate::schematic::parse(&bytes, Some("application/yaml"))
        .map_err(|_| format!("of schematic {schematic}: it does not parse"))?;
    for e in parsed.official_extensions() {
        if !any_glob(&r.extensions, e) {
            return Err(format!("with extension {e}"));
        }
    }
    if let Some(o) = parsed.overlay()
        && !any_glob(&r.overlays, &o.name)
    {
        return Err(format!("with overlay {}", o.name));
    }
    for a in parsed.extra_kernel_args() {
        if r.deny_kernel_args.iter().any(|p| glob(p, a)) || !any_glob(&r.kernel_args, a) {
            return Err(format!("with kernel argument {a}"));
        }
    }
    Ok(())
}

struct AuditLine {
    identity: String,
    schematic: String,
    version: String,
    asset: String,
    method: String,
}

fn write_audit(state: &AppState, l: &AuditLine, sent: Option<(u64, String)>) {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (bytes, sha256) = match sent {
        Some((b, d)) => (serde_json::json!(b), serde_json::json!(d)),
        None => (serde_json::Value::Null, serde_json::Value::Null),
    };
    let json = serde_json::json!({
        "time": time,
        "event": "signed asset served",
        "identity": l.identity,
        "schematic": l.schematic,
        "version": l.version,
        "asset": l.asset,
        "method": l.method,
        "bytes": bytes,
        "sha256": sha256,
    });
    match state.auth.as_ref().and_then(|a| a.audit.as_ref()) {
        Some(f) => {
            use std::io::Write;
            let mut f = f.lock().unwrap();
            if let Err(e) = writeln!(f, "{json}").and_then(|_| f.flush()) {
                tracing::error!(error = %e, audit = %json, "writing the audit log failed");
            }
        }
        None => tracing::info!(target: "audit", audit = %json, "signed asset served"),
    }
}

/// A response body that hashes what it sends and writes the audit line at its end.
struct Audited {
    inner: axum::body::BodyDataStream,
    hasher: Sha256,
    bytes: u64,
    line: Option<AuditLine>,
    state: AppState,
}

impl futures_util::Stream for Audited {
    type Item = std::result::Result<axum::body::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                this.hasher.update(&b);
                this.bytes += b.len() as u64;
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl Audited {
    /// Writes the audit line once: at the body's end, or when the server drops the body
    /// (hyper stops polling once `Content-Length` bytes are out; a cut transfer is
    /// logged with the bytes it got to).
    fn finish(&mut self) {
        if let Some(line) = self.line.take() {
            let digest = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
            write_audit(&self.state, &line, Some((self.bytes, digest)));
        }
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("init=*", "init=/bin/sh"));
        assert!(!glob("init=*", "xinit=1"));
        assert!(glob(
            "talos.config=https://cfg.example.com/*",
            "talos.config=https://cfg.example.com/a"
        ));
        assert!(!glob(
            "talos.config=https://cfg.example.com/*",
            "talos.config=https://evil.com/cfg.example.com/"
        ));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(glob("siderolabs/*", "siderolabs/gvisor"));
        assert!(!glob("ab*ba", "aba"));
    }
}
