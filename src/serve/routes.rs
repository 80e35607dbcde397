//! The HTTP API of Image Factory (`internal/frontend/http/http.go`): schematics,
//! assets, PXE scripts, versions, the extension catalog, the signing certificate,
//! health and metrics. Errors are one `text/plain` line, as the factory's.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State as Extract};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::assets::{self, Customization};
use super::builds::{Builds, Ready};
use super::metrics::AssetLabels;
use super::paths;
use super::{AppState, ServeError};
use crate::schematic::{self, SchematicError};

/// Bodies above this are refused before they are read whole (the schematic parser
/// refuses anything over its own, smaller limit with 413 too).
const BODY_LIMIT: usize = 1 << 20;
/// Chunk size of streamed responses.
const CHUNK: usize = 256 << 10;

/// The API routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(readyz))
        .route("/versions", get(versions))
        .route(
            "/version/{version}/extensions/official",
            get(official_extensions),
        )
        .route(
            "/version/{version}/overlays/official",
            get(
                async |Extract(state): Extract<AppState>, Path(version): Path<String>| {
                    // Board overlays are not built by this service: an empty catalog.
                    state
                        .prepared_version(&version)
                        .await
                        .map(|_| axum::Json(Vec::<String>::new()))
                },
            ),
        )
        .route("/secureboot/signing-cert.pem", get(signing_cert))
        .route(
            "/oci/cosign/signing-key.pub",
            get(async |Extract(state): Extract<AppState>| match state.store.signing_key_pem() {
                Some(pem) => Ok((
                    [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
                    pem,
                )),
                None => Err(ServeError::not_found(
                    "no cache signing key is configured (--cache-signing-key-path): cached assets and installer images are not signed",
                )),
            }),
        )
        .route("/talosctl/{version}", get(talosctl_list))
        .route("/talosctl/{version}/{file}", get(talosctl_file))
        .route(
            "/schematics",
            post(create_schematic).layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        .route("/schematics/{id}", get(get_schematic))
        .route("/image/{id}/{version}/{path}", get(image))
        .route("/pxe/{id}/{version}/{path}", get(super::ipxe::script))
}

async fn readyz(Extract(state): Extract<AppState>) -> Response {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.store.ping()).await {
        Ok(true) => StatusCode::OK.into_response(),
        _ => ServeError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response(),
    }
}

/// `/metrics`: Prometheus text format.
pub async fn metrics(Extract(state): Extract<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn versions(Extract(state): Extract<AppState>) -> Response {
    axum::Json(state.versions()).into_response()
}

/// `[{name, ref, digest, author, description}]` of `<assets>/<version>/extensions/`.
async fn official_extensions(
    Extract(state): Extract<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ServeError> {
    let version = state.prepared_version(&version).await?;
    Ok(axum::Json(state.inputs.catalog(&version)?).into_response())
}

/// `talosctl-<os>-<arch>[.exe]`.
fn is_talosctl_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("talosctl-") else {
        return false;
    };
    let rest = rest.strip_suffix(".exe").unwrap_or(rest);
    let mut parts = rest.split('-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The talosctl binaries of a version (file names, sorted): `<inputs>/<version>/talosctl/`,
/// or the `talosctl-all` image of the assets registry.
async fn talosctl_files(
    state: &AppState,
    version: &str,
) -> Result<(String, std::path::PathBuf, Vec<String>), ServeError> {
    let version = state.prepared_version(version).await?;
    let (s, v) = (state.clone(), version.clone());
    let dir = tokio::task::spawn_blocking(move || s.inputs.talosctl(&v))
        .await
        .map_err(|e| ServeError::internal(e.to_string()))??;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_talosctl_name(n))
        .collect();
    names.sort();
    Ok((version, dir, names))
}

/// `GET /talosctl/:v`: the download URLs, for Talos 1.11 and later (`[]` before, as the factory).
async fn talosctl_list(
    Extract(state): Extract<AppState>,
    Path(version): Path<String>,
) -> Result<Response, ServeError> {
    let v = paths::parse_version(&version).map_err(ServeError::bad_request)?;
    let new_enough = paths::version_key(&v)
        .is_some_and(|(s, _, _)| s >= crate::profile::quirks::Semver(1, 11, 0));
    if !new_enough {
        state.version(&v)?;
        return Ok(axum::Json(Vec::<String>::new()).into_response());
    }
    let (version, _, names) = talosctl_files(&state, &v).await?;
    let base = state.config.external_url.trim_end_matches('/');
    let urls: Vec<String> = names
        .iter()
        .map(|n| format!("{base}/talosctl/{version}/{n}"))
        .collect();
    Ok(axum::Json(urls).into_response())
}

/// `GET|HEAD /talosctl/:v/:file`: one binary, as an attachment.
async fn talosctl_file(
    Extract(state): Extract<AppState>,
    Path((version, file)): Path<(String, String)>,
) -> Result<Response, ServeError> {
    if !is_talosctl_name(&file) {
        return Err(ServeError::not_found(format!(
            "{file:?} is not a talosctl binary name (talosctl-<os>-<arch>[.exe])"
        )));
    }
    let (version, dir, names) = talosctl_files(&state, &version).await?;
    if !names.contains(&file) {
        return Err(ServeError::not_found(format!(
            "{file} is not available for Talos version {version}"
        )));
    }
    let path = dir.join(&file);
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ServeError::internal(format!("{}: {e}", path.display())))?;
    let size = f
        .metadata()
        .await
        .map_err(|e| ServeError::internal(format!("{}: {e}", path.display())))?
        .len();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, CHUNK));
    Ok((headers, body).into_response())
}

async fn signing_cert(Extract(state): Extract<AppState>) -> Result<Response, ServeError> {
    let pem = state
        .signing_cert
        .clone()
        .ok_or_else(|| ServeError::not_found("secure boot is disabled"))?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

/// Parses, stores and returns a schematic: what `POST /schematics` does, for other
/// front ends (the web page) too. Returns (ID, canonical YAML).
pub async fn store_schematic(
    state: &AppState,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(String, String), ServeError> {
    let parsed = schematic::parse(body, content_type).map_err(|e| match e {
        SchematicError::TooLarge => schematic_too_large(),
        SchematicError::Invalid(m) => ServeError::bad_request(m),
    })?;
    let id = parsed.id();
    let canonical = parsed.canonical_yaml();
    if state.remembered_schematic(&id).is_some() {
        state.metrics.schematic_duplicate_create.inc();
        return Ok((id, canonical));
    }
    let s = state.clone();
    let (i, c) = (id.clone(), canonical.clone());
    let created = tokio::task::spawn_blocking(move || s.store.put_schematic(&i, c.as_bytes()))
        .await
        .map_err(|e| ServeError::internal(e.to_string()))?
        .map_err(|e| ServeError::internal(e.to_string()))?;
    if created {
        state.metrics.schematic_create.inc();
    } else {
        state.metrics.schematic_duplicate_create.inc();
    }
    state.remember_schematic(&id, Arc::new(canonical.clone().into_bytes()));
    Ok((id, canonical))
}

/// The one answer to a schematic body over the limit, whether the body limit of the
/// route or the schematic reader stopped it.
fn schematic_too_large() -> ServeError {
    ServeError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "schematic is too large (limit {} KiB)",
            schematic::MAX_BODY / 1024
        ),
    )
}

async fn create_schematic(
    Extract(state): Extract<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ServeError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => schematic_too_large(),
        _ => ServeError::bad_request(e.body_text()),
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (id, canonical) = store_schematic(&state, &body, content_type).await?;
    let mut text = serde_json::to_string(&json!({"id": id, "schematic": canonical})).expect("JSON");
    text.push('\n');
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

/// The canonical bytes of schematic `id`, from memory or the registry; 404 if unknown.
pub async fn load_schematic(state: &AppState, id: &str) -> Result<Arc<Vec<u8>>, ServeError> {
    if let Some(b) = state.remembered_schematic(id) {
        return Ok(b);
    }
    let s = state.clone();
    let i = id.to_string();
    let bytes = tokio::task::spawn_blocking(move || s.store.schematic(&i))
        .await
        .map_err(|e| ServeError::internal(e.to_string()))?
        .map_err(|e| ServeError::internal(e.to_string()))?
        .ok_or_else(|| ServeError::not_found(format!("schematic ID {id:?} not found")))?;
    let bytes = Arc::new(bytes);
    state.remember_schematic(id, bytes.clone());
    Ok(bytes)
}

/// The customization of a stored schematic.
pub async fn load_customization(state: &AppState, id: &str) -> Result<Customization, ServeError> {
    let bytes = load_schematic(state, id).await?;
    let parsed = schematic::parse(&bytes, Some("application/yaml"))
        .map_err(|_| ServeError::internal(format!("stored schematic {id} does not parse")))?;
    Ok(Customization::of(&parsed))
}

async fn get_schematic(
    Extract(state): Extract<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ServeError> {
    let bytes = load_schematic(&state, &id).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ServeError::not_found("schematic not found")
        } else {
            e
        }
    })?;
    state.metrics.schematic_get.inc();
    Ok((
        [(header::CONTENT_TYPE, "application/yaml")],
        (*bytes).clone(),
    )
        .into_response())
}

async fn image(
    Extract(state): Extract<AppState>,
    method: Method,
    Path((id, version, path)): Path<(String, String, String)>,
) -> Result<Response, ServeError> {
    if path.ends_with(".sha256") || path.ends_with(".sha512") || path.ends_with(".sigstore.json") {
        return Err(ServeError::new(
            StatusCode::PAYMENT_REQUIRED,
            "checksums and signatures are an Enterprise feature of Image Factory; not served",
        ));
    }
    let custom = load_customization(&state, &id).await?;
    let version = state.prepared_version(&version).await?;
    let parsed = paths::parse_asset_path(&path).map_err(ServeError::bad_request)?;
    let s = state.clone();
    let (i, v, p) = (id.clone(), version.clone(), parsed.clone());
    let planned = tokio::task::spawn_blocking(move || assets::plan(&s, &i, &custom, &v, &p))
        .await
        .map_err(|e| ServeError::internal(e.to_string()))??;
    let labels = AssetLabels {
        talos_version: version,
        output_kind: parsed.kind.label().to_string(),
        arch: parsed.arch.to_string(),
    };
    let (ready, cached) = Builds::get(&state, planned, labels.clone()).await?;
    let size = match &*ready {
        Ready::Cached(a) => a.size,
        Ready::Local(l) => l.asset.size,
    };
    if cached {
        state
            .metrics
            .assets_delivered_cached
            .get_or_create(&labels)
            .inc();
        state
            .metrics
            .assets_cached_bytes
            .get_or_create(&labels)
            .inc_by(size);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(paths::content_type(&path)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{path}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if method == Method::HEAD {
        return Ok((headers, Body::empty()).into_response());
    }
    let body = match &*ready {
        Ready::Local(local) => {
            let file = std::fs::File::open(&local.path)
                .map_err(|e| ServeError::internal(format!("{}: {e}", local.path.display())))?;
            let stream =
                tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), CHUNK);
            Body::from_stream(stream)
        }
        Ready::Cached(asset) => stream_cached(&state, asset.clone()),
    };
    Ok((headers, body).into_response())
}

/// Streams a cached layer from the registry, hashing it on the way: a body whose
/// bytes do not match the digest ends in an error (the client sees a cut response,
/// never wrong bytes reported complete). A few chunks in flight at most.
pub fn stream_cached(state: &AppState, asset: super::store::CachedAsset) -> Body {
    stream_blob(state, state.store.repo("cache"), asset)
}

/// Streams blob `asset` of `repo` in the store, checked against its digest as in
/// [`stream_cached`].
pub fn stream_blob(state: &AppState, repo: String, asset: super::store::CachedAsset) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let fail = |m: String| std::io::Error::other(m);
        let mut reader = match s.store.session().open_blob(&repo, &asset.digest) {
            Ok(Some((_, r))) => crate::io::HashingReader::new(r),
            Ok(None) => {
                let _ =
                    tx.blocking_send(Err(fail(format!("cache blob {} vanished", asset.digest))));
                return;
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(fail(e.to_string())));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; CHUNK];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        let (_, sum, read) = reader.finish();
        let digest = crate::io::digest_string(sum);
        if digest != asset.digest || read != asset.size {
            s.metrics
                .assets_cached_errors
                .get_or_create(&AssetLabels {
                    talos_version: String::new(),
                    output_kind: String::new(),
                    arch: String::new(),
                })
                .inc();
            tracing::error!(expected = %asset.digest, actual = %digest, "cached asset failed its digest check");
            let _ = tx.blocking_send(Err(fail(format!(
                "cache blob {} read back as {digest}",
                asset.digest
            ))));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}
