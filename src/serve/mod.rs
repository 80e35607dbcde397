//! `imager serve`: an Image-Factory-compatible HTTP service over the same pipeline
//! as the CLI. Same routes, schematic IDs and iPXE scripts as Sidero Labs' Image
//! Factory, so `talosctl`, iPXE and container runtimes work against it unchanged.
//!
//! Replicas are stateless: schematics, built assets and installer images live in an
//! OCI registry ([`store`]). Requests are served by axum on tokio; builds run on the
//! blocking pipeline in a bounded pool, single-flight per cache key ([`builds`]).
//! One file per concern: [`config`], [`inputs`] (Talos inputs: `--assets` or pulled
//! from `--assets-registry`), [`paths`] (request paths), [`assets`] (path and
//! schematic to a plan; the virtual `schematic` extension is
//! [`crate::extensions::schematic`]), [`routes`] (the HTTP API), [`ipxe`], [`registry_frontend`] (`/v2/`), [`metrics`],
//! [`http_log`] (request IDs, JSON request logs, HTTP metrics).
//!
//! The web page ([`web`]) is merged in [`app`], on the shared [`AppState`].

pub mod assets;
pub mod auth;
pub mod builds;
pub mod config;
pub mod http_log;
pub mod inputs;
pub mod ipxe;
pub mod jwt;
pub mod metrics;
pub mod paths;
pub mod registry_frontend;
pub mod routes;
pub mod store;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use config::Config;

use crate::error::{Error, Result};

/// Shared state of one replica, cheap to clone (an `Arc`).
pub type AppState = Arc<State>;

/// What every handler works with.
pub struct State {
    pub config: Config,
    pub store: store::Store,
    pub metrics: metrics::Metrics,
    pub builds: builds::Builds,
    /// Talos inputs per version (a directory, or pulled from a registry).
    pub inputs: inputs::Inputs,
    installer_flights: registry_frontend::Flights,
    /// PEM of the UKI signing certificate, when SecureBoot is configured.
    pub signing_cert: Option<Vec<u8>>,
    /// Access control (`--auth-policy`), if configured.
    pub auth: Option<auth::Auth>,
    /// Schematics this replica has read or written (canonical bytes by ID).
    schematics: std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<u8>>>>,
}

/// The cache signing key of `--cache-signing-key-path` (an ECDSA P-256 PEM file).
fn cache_signing_key(path: Option<&std::path::Path>) -> Result<Option<crate::cosign::SigningKey>> {
    let Some(path) = path else {
        return Ok(None);
    };
    if path.to_string_lossy().starts_with("pkcs11:") {
        return Err(Error::unsupported(format!(
            "--cache-signing-key-path {}: PKCS#11 keys are not supported yet; give an ECDSA P-256 PEM file",
            path.display()
        )));
    }
    let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    crate::cosign::SigningKey::from_pem(&pem)
        .map(Some)
        .map_err(|e| Error::format(path, format!("not a cache signing key: {e}")))
}

/// At most this many schematics are kept in memory; the registry has them all.
const SCHEMATIC_MEMORY: usize = 10_000;

impl State {
    /// Opens the state for `config` (nothing is contacted yet).
    pub fn new(config: Config) -> Result<AppState> {
        config.check()?;
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| Error::io_op("creating", &config.work_dir, e))?;
        let signing_cert = match &config.secureboot_dir {
            Some(dir) => {
                let path = dir.join("uki-signing-cert.pem");
                let pem = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(Error::format(&path, "is not a PEM certificate"));
                }
                Some(pem)
            }
            None => None,
        };
        let inputs = match &config.assets_registry {
            None => inputs::Inputs::dir(config.assets.clone()),
            Some(a) => inputs::Inputs::registry(
                a.target.clone(),
                crate::oci::registry::Session::with_credentials(
                    &a.target.host,
                    a.insecure,
                    a.credentials.clone(),
                )?,
                config.work_dir.join("inputs"),
                config.container_signature.clone(),
            ),
        };
        Ok(Arc::new(State {
            store: store::Store::new(
                config.registry.clone(),
                config.insecure_registry,
                config.registry_credentials.clone(),
            )?
            .signed_with(cache_signing_key(config.cache_signing_key.as_deref())?),
            inputs,
            builds: builds::Builds::new(config.concurrency),
            installer_flights: Default::default(),
            metrics: metrics::Metrics::new(),
            signing_cert,
            auth: config
                .auth_policy
                .as_deref()
                .map(auth::Auth::load)
                .transpose()?,
            schematics: Default::default(),
            config,
        }))
    }

    /// The versions offered, in semver order: the `--assets` directories named like
    /// `v1.9.2`, or the tags of the assets registry's imager image the factory offers.
    pub fn versions(&self) -> Vec<String> {
        self.inputs.versions()
    }

    /// `text` as an offered version (`v1.9.2` or `1.9.2`), else 404 (503 while the
    /// assets registry's versions are unknown).
    pub fn version(&self, text: &str) -> std::result::Result<String, ServeError> {
        let v = paths::parse_version(text).map_err(ServeError::bad_request)?;
        self.inputs.offered(&v)?;
        Ok(v)
    }

    /// [`State::version`], with the version's inputs on local disk (pulled from the
    /// assets registry the first time).
    pub async fn prepared_version(
        self: &Arc<Self>,
        text: &str,
    ) -> std::result::Result<String, ServeError> {
        let v = self.version(text)?;
        let (s, version) = (self.clone(), v.clone());
        tokio::task::spawn_blocking(move || s.inputs.prepare(&version))
            .await
            .map_err(|e| ServeError::internal(e.to_string()))??;
        Ok(v)
    }

    fn remember_schematic(&self, id: &str, canonical: Arc<Vec<u8>>) {
        let mut m = self.schematics.lock().unwrap();
        if m.len() >= SCHEMATIC_MEMORY {
            m.clear();
        }
        m.insert(id.to_string(), canonical);
        self.metrics.schematic_cache_size.set(m.len() as i64);
    }

    fn remembered_schematic(&self, id: &str) -> Option<Arc<Vec<u8>>> {
        self.schematics.lock().unwrap().get(id).cloned()
    }
}

/// An HTTP error answer: status and a one-line `text/plain` message.
#[derive(Debug, Clone)]
pub struct ServeError {
    pub status: StatusCode,
    pub message: String,
}

impl ServeError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ServeError {
        ServeError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ServeError {
        ServeError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ServeError {
        ServeError::new(StatusCode::NOT_FOUND, message)
    }
    /// A failure of this service: logged in full, answered as `internal server error`.
    pub fn internal(message: impl Into<String>) -> ServeError {
        let message = message.into();
        tracing::error!(error = %message, "internal error");
        ServeError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
    /// A library error: the request's fault (invalid, unsupported) is a 400 with the
    /// library's message; anything else is this service's.
    pub fn from_build(e: Error) -> ServeError {
        match e {
            Error::Invalid(m) | Error::Unsupported(m) => ServeError::bad_request(m),
            other => ServeError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let mut body = self.message.clone();
        body.push('\n');
        let mut response = (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            body,
        )
            .into_response();
        // For the request log line (`error`).
        response.extensions_mut().insert(ErrorMessage(self.message));
        response
    }
}

/// The message of an error answer, carried to the request log in the response's
/// extensions.
#[derive(Clone)]
pub struct ErrorMessage(pub String);

/// The whole application: the API routes plus any routes added here, with request
/// logging and metrics around them.
pub fn app(state: AppState, with_metrics: bool) -> Router {
    let mut router = routes::router()
        .merge(web::routes())
        .merge(registry_frontend::router())
        .fallback(|| async { ServeError::not_found("not found") });
    if with_metrics {
        router = router.route("/metrics", axum::routing::get(routes::metrics));
    }
    let router = auth::layer(router, &state);
    http_log::layer(router.with_state(state.clone()), state)
}

/// Runs the service until SIGTERM or Ctrl-C; in-flight responses, builds and cache
/// pushes then get `--shutdown-drain` (30 s) in all, after which the process exits.
///
/// Builds and pushes run on tokio's blocking pool, which dropping the runtime would
/// wait for without end (a push to a registry that stopped answering held the process
/// alive): the runtime is shut down with the rest of the drain as its timeout, and its
/// blocking threads are then left behind as the process exits.
pub fn run(config: Config) -> Result<()> {
    let drain = config.shutdown_drain;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("imager-serve")
        .build()
        .map_err(|e| Error::io_during("starting the async runtime", e))?;
    let deadline = match runtime.block_on(serve(config)) {
        Ok(deadline) => deadline,
        Err(e) => {
            runtime.shutdown_background();
            return Err(e);
        }
    };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let started = std::time::Instant::now();
    runtime.shutdown_timeout(left);
    if started.elapsed() >= left {
        tracing::warn!(
            drain_s = drain.as_secs_f64(),
            "builds or cache pushes still running after the shutdown drain; exiting without them"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// A failed bind, naming the flag and the address: `--listen 127.0.0.1:8080: address
/// in use`.
fn bind_error(flag: &str, addr: std::net::SocketAddr, e: &std::io::Error) -> Error {
    let why = match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_string(),
        std::io::ErrorKind::AddrNotAvailable => "no such address on this host".to_string(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".to_string()
        }
        _ => e.to_string(),
    };
    Error::invalid(format!("{flag} {addr}: {why}"))
}

/// Serves until the stop signal and the drain of the connections; the end of the drain.
async fn serve(config: Config) -> Result<std::time::Instant> {
    // Bound first: a port in use is said before the work directory is made.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| bind_error("--listen", config.listen, &e))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| bind_error("--metrics-listen", addr, &e))?,
        ),
        None => None,
    };
    let state = State::new(config)?;
    check_registries(&state).await?;
    let config = &state.config;
    tracing::info!(
        listen = %config.listen,
        external_url = %config.external_url,
        registry = %format!("{}/{}", config.registry.host, config.registry.prefix),
        versions = %state.versions().join(","),
        assets_registry = state.inputs.registry_name().as_deref(),
        concurrency = config.concurrency,
        header_read_timeout_s = config.header_read_timeout.as_secs_f64(),
        max_connections = config.max_connections,
        secureboot = state.signing_cert.is_some(),
        "serving"
    );
    if state.inputs.registry_name().is_none() && state.versions().is_empty() {
        // An --assets tree without version directories serves nothing: say what is there.
        let mut found: Vec<String> = std::fs::read_dir(&config.assets)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| format!("{}/", e.file_name().to_string_lossy()))
            .collect();
        found.sort();
        tracing::warn!(
            assets = %config.assets.display(),
            found = %found.join(" "),
            expected = %format!("{}/<version>/<arch>/vmlinuz, e.g. {}/v1.9.2/amd64/vmlinuz", config.assets.display(), config.assets.display()),
            "no Talos version directory under --assets: every asset will answer 404"
        );
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let drain = config.shutdown_drain;
    if let Some(l) = metrics_listener {
        let app = Router::new()
            .route("/metrics", axum::routing::get(routes::metrics))
            .with_state(state.clone());
        let stop = stop.clone();
        let limits = Limits {
            header_read_timeout: config.header_read_timeout,
            max_connections: 64,
        };
        tokio::spawn(serve_connections(l, app, stop, limits, drain));
    }
    let app = app(state.clone(), config.metrics_listen.is_none());
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            drain_s = drain.as_secs_f64(),
            "shutting down: no new connections, in-flight work gets the drain"
        );
        signal_stop.cancel();
    });
    let limits = Limits {
        header_read_timeout: config.header_read_timeout,
        max_connections: config.max_connections,
    };
    let deadline = serve_connections(listener, app, stop.clone(), limits, drain).await;
    Ok(deadline)
}

/// What one client may hold of a listener.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
}

/// Serves `app` on `listener` until `stop`, then lets open connections finish their
/// in-flight responses for at most `drain`; the end of that drain.
///
/// hyper's own connection builder rather than `axum::serve`, which sets no timer, so
/// a client that opens connections and never finishes its request headers would hold
/// them (and their buffers) forever: here HTTP/1 headers must arrive within
/// `header_read_timeout` (between keep-alive requests too), and at most
/// `max_connections` are served at once — further clients wait in the listen queue.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: tokio_util::sync::CancellationToken,
    limits: Limits,
    drain: Duration,
) -> std::time::Instant {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + drain;
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_s = drain.as_secs_f64(),
            "in-flight responses did not finish within the shutdown drain; stopping"
        );
    }
    deadline.into_std()
}

/// Before serving: a registry that refuses this service's credentials (or their
/// absence), or whose certificate is not trusted, stops the start with one line naming
/// it; one that cannot be reached is logged and tried again (`/readyz` says not ready
/// meanwhile). The assets registry's
/// versions are then re-read every 15 minutes (every 10 s while they are unknown).
async fn check_registries(state: &AppState) -> Result<()> {
    let s = state.clone();
    let store =
        tokio::task::spawn_blocking(move || s.store.session().probe(&s.store.repo("schematics")))
            .await
            .map_err(|e| Error::io_during("checking --registry", std::io::Error::other(e)))?;
    match store {
        Err(e) if e.refused => {
            return Err(Error::Dependency(format!(
                "--registry: {}",
                e.error.detail()
            )));
        }
        Err(e) => tracing::warn!(error = %e.error, "the registry does not answer yet"),
        Ok(()) => {}
    }
    if state.inputs.registry_name().is_none() {
        return Ok(());
    }
    let s = state.clone();
    let first = tokio::task::spawn_blocking(move || s.inputs.refresh())
        .await
        .map_err(|e| Error::io_during("checking --assets-registry", std::io::Error::other(e)))?;
    match first {
        Err(e) if e.refused => {
            return Err(Error::Dependency(format!(
                "--assets-registry: {}",
                e.error.detail()
            )));
        }
        Err(e) => tracing::warn!(error = %e.error, "the Talos versions could not be read yet"),
        Ok(()) => {}
    }
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let known = !s.versions().is_empty();
            let wait = if known { 15 * 60 } else { 10 };
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let s2 = s.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s2.inputs.refresh()).await {
                tracing::warn!(error = %e.error, "re-reading the Talos versions failed");
            }
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
