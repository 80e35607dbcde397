//! `/v2/`: the installer images as a container registry (Image Factory's
//! `internal/frontend/http/registry.go`). `installer[-secureboot]/<schematic>` and
//! `<platform>-installer[-secureboot]/<schematic>` by version tag: the first manifest
//! request (GET or HEAD, as containerd starts with HEAD) builds the installer for
//! every architecture with inputs, through the asset cache, pushes each image and
//! an OCI index to the backing registry (the tag last, marking it complete) and
//! answers `307` to the index by digest there; later requests redirect at once.
//! Blobs and digests always redirect. One build per image and tag in a replica.
//! With credentials for the store, clients could not follow a redirect there: the
//! service then answers from the store itself (as the factory proxies when auth is on).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::builds::{Builds, Ready};
use super::metrics::AssetLabels;
use super::paths::{AssetKind, AssetPath};
use super::routes::load_customization;
use super::{AppState, ServeError, assets};
use crate::plan::Arch;
use crate::profile::OutFormat;

/// One installer push, shared by the requests waiting for its index digest.
type Flight = Shared<BoxFuture<'static, Result<String, ServeError>>>;

/// Installer pushes running in this replica, by `<repo>:<tag>`.
#[derive(Default)]
pub struct Flights(Mutex<HashMap<String, Flight>>);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(ping))
        .route("/v2/", get(ping))
        .route("/v2/{*rest}", get(dispatch))
}

/// A registry-style error (`{"errors":[{code, message}]}`).
fn registry_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn from_serve(e: ServeError) -> Response {
    let code = match e.status {
        StatusCode::NOT_FOUND => "NAME_UNKNOWN",
        StatusCode::BAD_REQUEST => "NAME_INVALID",
        _ => "UNKNOWN",
    };
    registry_error(e.status, code, &e.message)
}

async fn ping() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("docker-distribution-api-version"),
                "registry/2.0",
            ),
        ],
        "{}",
    )
        .into_response()
}

/// `<image>` → (platform, SecureBoot).
fn parse_image(image: &str) -> Option<(String, bool)> {
    let (rest, secureboot) = match image.strip_suffix("-secureboot") {
        Some(r) => (r, true),
        None => (image, false),
    };
    if rest == "installer" {
        return Some(("metal".into(), secureboot));
    }
    let platform = rest.strip_suffix("-installer")?;
    let ok = !platform.is_empty()
        && platform
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| (platform.to_string(), secureboot))
}

fn redirect(state: &AppState, repo: &str, resource: &str, digest: &str) -> Response {
    let location = format!(
        "{}/v2/{repo}/{resource}/{digest}",
        state.store.session().origin()
    );
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A manifest or blob by digest: a redirect to the store, or, when the store needs
/// credentials, the store's answer relayed (the blob streamed and digest-checked).
async fn answer(
    state: &AppState,
    method: &axum::http::Method,
    repo: &str,
    resource: &str,
    digest: &str,
) -> Response {
    if !state.store.session().has_credentials() {
        return redirect(state, repo, resource, digest);
    }
    let (s, r, d) = (state.clone(), repo.to_string(), digest.to_string());
    let head = method == axum::http::Method::HEAD;
    if resource == "manifests" {
        let found = tokio::task::spawn_blocking(move || s.store.session().manifest(&r, &d)).await;
        return match found {
            Ok(Ok(Some(m))) => {
                let mut headers = axum::http::HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&m.media_type) {
                    headers.insert(header::CONTENT_TYPE, v);
                }
                if let Ok(v) = HeaderValue::from_str(&m.digest) {
                    headers.insert("docker-content-digest", v);
                }
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
                let body = if head { Vec::new() } else { m.bytes };
                (headers, body).into_response()
            }
            Ok(Ok(None)) => registry_error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            ),
            Ok(Err(e)) => from_serve(ServeError::new(StatusCode::BAD_GATEWAY, e.to_string())),
            Err(e) => from_serve(ServeError::internal(e.to_string())),
        };
    }
    let size = tokio::task::spawn_blocking(move || s.store.session().blob_size(&r, &d)).await;
    match size {
        Ok(Ok(Some(size))) => {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            if let Ok(v) = HeaderValue::from_str(digest) {
                headers.insert("docker-content-digest", v);
            }
            if head {
                return (headers, axum::body::Body::empty()).into_response();
            }
            let asset = super::store::CachedAsset {
                digest: digest.to_string(),
                size,
            };
            (
                headers,
                super::routes::stream_blob(state, repo.to_string(), asset),
            )
                .into_response()
        }
        Ok(Ok(None)) => registry_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown"),
        Ok(Err(e)) => from_serve(ServeError::new(StatusCode::BAD_GATEWAY, e.to_string())),
        Err(e) => from_serve(ServeError::internal(e.to_string())),
    }
}

async fn dispatch(
    Extract(state): Extract<AppState>,
    method: axum::http::Method,
    Path(rest): Path<String>,
) -> Response {
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let [image, schematic, resource, reference] = segments.as_slice() else {
        return registry_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository must be <image>/<schematic>",
        );
    };
    let Some((platform, secureboot)) = parse_image(image) else {
        return registry_error(StatusCode::BAD_REQUEST, "NAME_INVALID", "invalid image");
    };
    let custom = match load_customization(&state, schematic).await {
        Ok(c) => c,
        Err(e) => return from_serve(e),
    };
    let repo = state.store.repo(&format!("{image}/{schematic}"));
    let digest_like = |r: &str| {
        r.starts_with("sha256:") && r.len() == 71 && r[7..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    match *resource {
        "blobs" if digest_like(reference) => {
            answer(&state, &method, &repo, "blobs", reference).await
        }
        "manifests" if digest_like(reference) => {
            answer(&state, &method, &repo, "manifests", reference).await
        }
        "manifests" => {
            let version = if *reference == "latest" {
                match state
                    .versions()
                    .into_iter()
                    .rev()
                    .find(|v| !v.contains('-'))
                {
                    Some(v) => match state.prepared_version(&v).await {
                        Ok(v) => v,
                        Err(e) => return registry_error(e.status, "MANIFEST_UNKNOWN", &e.message),
                    },
                    None => {
                        return registry_error(
                            StatusCode::NOT_FOUND,
                            "MANIFEST_UNKNOWN",
                            "no versions",
                        );
                    }
                }
            } else {
                match state.prepared_version(reference).await {
                    Ok(v) => v,
                    Err(e) => return registry_error(e.status, "MANIFEST_UNKNOWN", &e.message),
                }
            };
            match installer(
                &state, &repo, schematic, &version, &platform, secureboot, custom,
            )
            .await
            {
                Ok(digest) => answer(&state, &method, &repo, "manifests", &digest).await,
                Err(e) => from_serve(e),
            }
        }
        // The tags are the Talos versions this service builds the installer for
        // (skopeo inspect lists them before reading the manifest).
        "tags" if *reference == "list" => {
            let body = serde_json::json!({
                "name": format!("{image}/{schematic}"),
                "tags": state.versions(),
            })
            .to_string();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        _ => registry_error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "only manifests, blobs and tags/list are served",
        ),
    }
}

/// The digest of the installer index `repo:version`, built and pushed if missing.
async fn installer(
    state: &AppState,
    repo: &str,
    id: &str,
    version: &str,
    platform: &str,
    secureboot: bool,
    custom: assets::Customization,
) -> Result<String, ServeError> {
    let s = state.clone();
    let (r, v) = (repo.to_string(), version.to_string());
    let existing = tokio::task::spawn_blocking(move || s.store.installer_digest(&r, &v))
        .await
        .map_err(|e| ServeError::internal(e.to_string()))?;
    match existing {
        Ok(Some(d)) if !d.is_empty() => return Ok(d),
        Ok(_) => {}
        Err(e) => return Err(ServeError::internal(e.to_string())),
    }
    let key = format!("{repo}:{version}");
    let shared = {
        let mut flights = state.installer_flights.0.lock().unwrap();
        flights
            .entry(key.clone())
            .or_insert_with(|| {
                let (state, repo, id, version, platform) = (
                    state.clone(),
                    repo.to_string(),
                    id.to_string(),
                    version.to_string(),
                    platform.to_string(),
                );
                let task = tokio::spawn(async move {
                    let r = build_installer(
                        &state, &repo, &id, &version, &platform, secureboot, custom,
                    )
                    .await;
                    state
                        .installer_flights
                        .0
                        .lock()
                        .unwrap()
                        .remove(&format!("{repo}:{version}"));
                    r
                });
                async move {
                    task.await
                        .unwrap_or_else(|e| Err(ServeError::internal(e.to_string())))
                }
                .boxed()
                .shared()
            })
            .clone()
    };
    shared.await
}

async fn build_installer(
    state: &AppState,
    repo: &str,
    id: &str,
    version: &str,
    platform: &str,
    secureboot: bool,
    custom: assets::Customization,
) -> Result<String, ServeError> {
    let mut manifests = Vec::new();
    for arch in [Arch::Amd64, Arch::Arm64] {
        if !state
            .inputs
            .root()
            .join(version)
            .join(arch.as_str())
            .join("vmlinuz")
            .is_file()
        {
            continue;
        }
        let path = AssetPath {
            kind: AssetKind::Installer,
            platform: platform.to_string(),
            arch,
            secureboot,
            out_format: OutFormat::Raw,
        };
        let s = state.clone();
        let (i, v, c, p) = (
            id.to_string(),
            version.to_string(),
            custom.clone(),
            path.clone(),
        );
        let planned = tokio::task::spawn_blocking(move || assets::plan(&s, &i, &c, &v, &p))
            .await
            .map_err(|e| ServeError::internal(e.to_string()))??;
        let labels = AssetLabels {
            talos_version: version.to_string(),
            output_kind: "installer".into(),
            arch: arch.to_string(),
        };
        let (ready, _) = Builds::get(state, planned, labels).await?;
        let s = state.clone();
        let r = repo.to_string();
        let descriptor = tokio::task::spawn_blocking(move || -> crate::Result<_> {
            match &*ready {
                Ready::Local(local) => {
                    s.store
                        .push_installer_archive(&r, &local.path, arch.as_str())
                }
                Ready::Cached(asset) => {
                    // The archive is read twice: fetch it to a scratch file first.
                    let dir = s.config.work_dir.join("installer-pushes");
                    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
                    let tmp = dir.join(format!("{}.tar", &asset.digest[7..]));
                    let (_, mut reader) = s.store.open_asset(asset)?.ok_or_else(|| {
                        crate::Error::Dependency(format!("cache blob {} vanished", asset.digest))
                    })?;
                    let mut out =
                        std::fs::File::create(&tmp).map_err(|e| crate::Error::io(&tmp, e))?;
                    std::io::copy(&mut reader, &mut out).map_err(|e| crate::Error::io(&tmp, e))?;
                    let result = s.store.push_installer_archive(&r, &tmp, arch.as_str());
                    let _ = std::fs::remove_file(&tmp);
                    result
                }
            }
        })
        .await
        .map_err(|e| ServeError::internal(e.to_string()))?
        .map_err(|e| ServeError::internal(e.to_string()))?;
        manifests.push(descriptor);
    }
    if manifests.is_empty() {
        return Err(ServeError::not_found(format!(
            "no inputs for Talos version {version}"
        )));
    }
    let s = state.clone();
    let (r, v) = (repo.to_string(), version.to_string());
    tokio::task::spawn_blocking(move || s.store.push_installer_index(&r, &v, manifests))
        .await
        .map_err(|e| ServeError::internal(e.to_string()))?
        .map_err(|e| ServeError::internal(e.to_string()))
}
