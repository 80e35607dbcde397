//! Prometheus metrics under Image Factory's names (`image_factory_*`, labelled
//! `talos_version`, `output_kind`, `arch`), plus the HTTP metrics of the
//! go-http-metrics defaults the factory uses, labelled by route pattern. Counters are
//! registered without `_total`: the text encoder appends it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the asset counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssetLabels {
    pub talos_version: String,
    pub output_kind: String,
    pub arch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExtensionLabels {
    pub extension: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub handler: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabels {
    pub handler: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    pub schematic_get: Counter,
    pub schematic_create: Counter,
    pub schematic_duplicate_create: Counter,
    pub schematic_cache_size: Gauge,
    pub assets_delivered_cached: Family<AssetLabels, Counter>,
    pub assets_built: Family<AssetLabels, Counter>,
    pub assets_cached_bytes: Family<AssetLabels, Counter>,
    pub assets_built_bytes: Family<AssetLabels, Counter>,
    pub assets_cached_errors: Family<AssetLabels, Counter>,
    pub concurrency_latency: Histogram,
    pub build_latency: Histogram,
    pub extension_hits: Family<ExtensionLabels, Counter>,
    pub http_duration: HistogramFamily<HttpLabels>,
    pub http_size: HistogramFamily<HttpLabels>,
    pub http_inflight: Family<HandlerLabels, Gauge>,
}

fn build_buckets() -> Histogram {
    Histogram::new([1.0, 10.0, 60.0, 180.0, 600.0])
}

fn duration_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn size_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        100.0, 10.0, 8,
    ))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            schematic_get: Counter::default(),
            schematic_create: Counter::default(),
            schematic_duplicate_create: Counter::default(),
            schematic_cache_size: Gauge::default(),
            assets_delivered_cached: Family::default(),
            assets_built: Family::default(),
            assets_cached_bytes: Family::default(),
            assets_built_bytes: Family::default(),
            assets_cached_errors: Family::default(),
            concurrency_latency: build_buckets(),
            build_latency: build_buckets(),
            extension_hits: Family::default(),
            http_duration: Family::new_with_constructor(duration_buckets),
            http_size: Family::new_with_constructor(size_buckets),
            http_inflight: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "image_factory_schematic_get",
            "Schematics read",
            m.schematic_get.clone(),
        );
        r.register(
            "image_factory_schematic_create",
            "Schematics created",
            m.schematic_create.clone(),
        );
        r.register(
            "image_factory_schematic_duplicate_create",
            "Schematics created that already existed",
            m.schematic_duplicate_create.clone(),
        );
        r.register(
            "image_factory_schematic_cache_size",
            "Schematics in this replica's memory",
            m.schematic_cache_size.clone(),
        );
        r.register(
            "image_factory_assets_delivered_cached",
            "Assets served from the cache",
            m.assets_delivered_cached.clone(),
        );
        r.register(
            "image_factory_assets_built",
            "Assets built",
            m.assets_built.clone(),
        );
        r.register(
            "image_factory_assets_cached_bytes",
            "Bytes of assets served from the cache",
            m.assets_cached_bytes.clone(),
        );
        r.register(
            "image_factory_assets_built_bytes",
            "Bytes of assets built",
            m.assets_built_bytes.clone(),
        );
        r.register(
            "image_factory_assets_cached_errors",
            "Failures reading or writing the asset cache",
            m.assets_cached_errors.clone(),
        );
        r.register(
            "image_factory_assets_concurrency_latency_seconds",
            "Time a build waited for a build slot",
            m.concurrency_latency.clone(),
        );
        r.register(
            "image_factory_assets_build_latency_seconds",
            "Time a build took",
            m.build_latency.clone(),
        );
        r.register(
            "image_factory_profile_system_extension_hits",
            "Official extensions requested in built profiles",
            m.extension_hits.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.http_duration.clone(),
        );
        r.register(
            "http_response_size_bytes",
            "HTTP response sizes by route",
            m.http_size.clone(),
        );
        r.register(
            "http_requests_inflight",
            "HTTP requests being served",
            m.http_inflight.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
