//! Builds off the async runtime: a bounded pool (`--concurrency` builds at once per
//! replica), single-flight per cache key (concurrent requests for the same asset
//! share one build), detached from the requests that asked (a client that hangs up
//! does not cancel a build others may be waiting for). A finished build is pushed to
//! the cache while it is served from its local file; a failed push is counted and
//! logged, and the asset is still served.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;

use super::assets::Planned;
use super::metrics::AssetLabels;
use super::store::CachedAsset;
use super::{AppState, ServeError};
use crate::pipeline::{self, BuildOptions};

/// A finished asset.
pub enum Ready {
    /// In the registry cache.
    Cached(CachedAsset),
    /// Built here, still on local disk.
    Local(LocalFile),
}

/// A built file in its own scratch directory, removed when the last user drops it
/// (readers that opened it keep reading: the file lives until they close it).
pub struct LocalFile {
    dir: PathBuf,
    pub path: PathBuf,
    pub asset: CachedAsset,
    /// The artifact's Talos name (the cache image's title).
    title: String,
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Outcome = Result<Arc<Ready>, ServeError>;

/// The build pool of one replica.
pub struct Builds {
    slots: Arc<Semaphore>,
    inflight: Mutex<HashMap<String, Shared<BoxFuture<'static, Outcome>>>>,
    /// Keys this replica has pushed to the cache: a request whose cache lookup raced
    /// with the push (missed it, then found no build in flight) looks again instead of
    /// building a second time.
    stored: Mutex<std::collections::HashSet<String>>,
}

/// Pipeline progress lines as debug events of the build.
struct TraceProgress<'a>(&'a str);

impl crate::report::Progress for TraceProgress<'_> {
    fn step(&self, line: &str) {
        tracing::debug!(cache_key = self.0, "{line}");
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> ServeError {
    ServeError::internal(format!("a build task failed: {e}"))
}

impl Builds {
    pub fn new(concurrency: usize) -> Builds {
        Builds {
            slots: Arc::new(Semaphore::new(concurrency)),
            inflight: Mutex::default(),
            stored: Mutex::default(),
        }
    }

    /// Builds being run by this replica.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }

    /// The asset of `planned`: from the cache, from a build already running here, or
    /// built now. `true` with it when it was delivered without a build for it: from the
    /// cache, or from an asset this replica had already built (its push to the cache
    /// still running). A request that joins a build still running shares that build's
    /// one count of `assets_built`, as with the factory's single-flight.
    pub async fn get(
        state: &AppState,
        planned: Planned,
        labels: AssetLabels,
    ) -> Result<(Arc<Ready>, bool), ServeError> {
        let key = planned.key.clone();
        let mut planned = Some(planned);
        let mut looked_again = false;
        let shared = loop {
            if let Some(a) = lookup(state, &key, &labels).await {
                return Ok((Arc::new(Ready::Cached(a)), true));
            }
            let mut inflight = state.builds.inflight.lock().unwrap();
            if let Some(running) = inflight.get(&key) {
                if let Some(Ok(ready)) = running.peek() {
                    return Ok((ready.clone(), true));
                }
                break running.clone();
            }
            // Pushed by this replica after the lookup above started: look again (once).
            if !looked_again && state.builds.stored.lock().unwrap().contains(&key) {
                looked_again = true;
                continue;
            }
            let planned = planned.take().expect("built at most once per request");
            let task = tokio::spawn(build_and_store(state.clone(), planned, labels.clone()));
            let running = async move { task.await.unwrap_or_else(|e| Err(blocking_failed(e))) }
                .boxed()
                .shared();
            inflight.insert(key.clone(), running.clone());
            break running;
        };
        let ready = shared.await?;
        let cached = matches!(*ready, Ready::Cached(_));
        Ok((ready, cached))
    }
}

/// The complete cache entry `key`, if any; a registry failure counts as a miss.
async fn lookup(state: &AppState, key: &str, labels: &AssetLabels) -> Option<CachedAsset> {
    let s = state.clone();
    let k = key.to_string();
    match tokio::task::spawn_blocking(move || s.store.cached_asset(&k)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            state
                .metrics
                .assets_cached_errors
                .get_or_create(labels)
                .inc();
            tracing::warn!(cache_key = key, error = %e, "reading the asset cache failed; building");
            None
        }
        Err(_) => None,
    }
}

/// Builds, answers the waiters at once from the local file, and pushes it to the
/// cache meanwhile; the in-flight entry (which later requests join, getting the local
/// file) is dropped once the cache has the asset, so no request in between rebuilds it.
async fn build_and_store(state: AppState, planned: Planned, labels: AssetLabels) -> Outcome {
    let key = planned.key.clone();
    let result = build_once(&state, planned, &labels).await;
    match &result {
        Ok(ready) if matches!(**ready, Ready::Local(_)) => {
            let (state, ready) = (state.clone(), ready.clone());
            tokio::spawn(async move {
                let stored = match &*ready {
                    Ready::Local(local) => store(&state, &key, local, &labels).await,
                    _ => false,
                };
                let mut inflight = state.builds.inflight.lock().unwrap();
                if stored {
                    state.builds.stored.lock().unwrap().insert(key.clone());
                }
                inflight.remove(&key);
            });
        }
        _ => {
            state.builds.inflight.lock().unwrap().remove(&key);
        }
    }
    result
}

/// Pushes a built file to the cache; a failure is counted and logged, not fatal.
/// `true` once the cache has it.
async fn store(state: &AppState, key: &str, local: &LocalFile, labels: &AssetLabels) -> bool {
    let (s, p, k) = (state.clone(), local.path.clone(), key.to_string());
    let (asset, title) = (local.asset.clone(), local.title.clone());
    match tokio::task::spawn_blocking(move || s.store.put_asset(&k, &p, &asset, &title)).await {
        Ok(Ok(())) => {
            tracing::debug!(cache_key = key, "stored in the cache");
            return true;
        }
        Ok(Err(e)) => {
            state
                .metrics
                .assets_cached_errors
                .get_or_create(labels)
                .inc();
            tracing::warn!(cache_key = key, error = %e, "storing the asset in the cache failed; it was served anyway");
        }
        Err(e) => tracing::warn!(cache_key = key, error = %e, "the cache upload task failed"),
    }
    false
}

async fn build_once(state: &AppState, planned: Planned, labels: &AssetLabels) -> Outcome {
    let key = planned.key.clone();
    let waited = Instant::now();
    let permit = state
        .builds
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ServeError::internal("the build pool is closed"))?;
    state
        .metrics
        .concurrency_latency
        .observe(waited.elapsed().as_secs_f64());
    // Another replica may have finished it while this one waited.
    if let Some(a) = lookup(state, &key, labels).await {
        return Ok(Arc::new(Ready::Cached(a)));
    }
    for ext in planned.plan.profile.input.system_extensions.iter() {
        if let Some(name) = ext.oci_path.split("/extensions/").nth(1) {
            state
                .metrics
                .extension_hits
                .get_or_create(&super::metrics::ExtensionLabels {
                    extension: name.to_string(),
                })
                .inc();
        }
    }
    let grub_dir = state.config.grub_dir.clone();
    let dir = state.config.work_dir.join("builds").join(format!(
        "{key}-{}",
        hex::encode(getrandom::u64().unwrap_or(0).to_le_bytes())
    ));
    let started = Instant::now();
    let build_dir = dir.clone();
    let k = key.clone();
    let built = tokio::task::spawn_blocking(move || {
        let guard = DirGuard(build_dir.clone());
        let result = pipeline::build(
            &planned.plan,
            &BuildOptions {
                output_dir: build_dir,
                grub_dir,
            },
            &TraceProgress(&k),
        )
        .map(|r| {
            let digest = format!("sha256:{}", r.sha256);
            (
                r.artifact,
                planned.plan.file_name.clone(),
                CachedAsset {
                    digest,
                    size: r.size,
                },
            )
        });
        if result.is_ok() {
            std::mem::forget(guard);
        }
        result
    })
    .await
    .map_err(blocking_failed)?
    .map_err(ServeError::from_build)?;
    drop(permit);
    let (path, title, asset) = built;
    state
        .metrics
        .build_latency
        .observe(started.elapsed().as_secs_f64());
    state.metrics.assets_built.get_or_create(labels).inc();
    state
        .metrics
        .assets_built_bytes
        .get_or_create(labels)
        .inc_by(asset.size);
    tracing::info!(
        cache_key = %key,
        version = %labels.talos_version,
        kind = %labels.output_kind,
        arch = %labels.arch,
        artifact = %path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        size = asset.size,
        digest = %asset.digest,
        seconds = started.elapsed().as_secs_f64(),
        "built"
    );
    Ok(Arc::new(Ready::Local(LocalFile {
        dir,
        path,
        asset,
        title,
    })))
}

/// Removes a build directory unless the build succeeded.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
