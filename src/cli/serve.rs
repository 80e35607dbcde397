//! `imager serve`: the Image-Factory-compatible HTTP service. Every flag is also an
//! `IMAGER_SERVE_*` environment variable (booleans `true`/`false` or `1`/`0`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use imager::oci::auth::{self, Credentials};
use imager::serve::config::{AssetsRegistry, Config, FACTORY_EPOCH, RegistryTarget};

/// Credentials from a user name and password file, else from an auth file for `host`.
fn credentials(
    user: Option<&str>,
    password_file: Option<&PathBuf>,
    host: &str,
) -> anyhow::Result<Option<Credentials>> {
    match (user, password_file) {
        (Some(u), Some(f)) => Ok(Some(Credentials::from_password_file(u, f)?)),
        _ => Ok(auth::lookup(host)?),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "IMAGER_SERVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// URL clients reach this service at (iPXE scripts, the web page); default http://LISTEN.
    #[arg(long, env = "IMAGER_SERVE_EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Inputs per Talos version: DIR/<version>/<arch>/{vmlinuz,initramfs.xz,systemd-stub.efi,systemd-boot.efi},
    /// DIR/<version>/installer-base/ (OCI layout), DIR/<version>/extensions/<name>/ (OCI layouts).
    #[arg(
        long,
        env = "IMAGER_SERVE_ASSETS",
        value_name = "DIR",
        required_unless_present = "assets_registry",
        conflicts_with = "assets_registry"
    )]
    pub assets: Option<PathBuf>,

    /// Inputs per Talos version from images in a registry, as Image Factory takes them:
    /// REF/imager:<version> (usr/install/<arch>/...), REF/installer-base:<version>,
    /// REF/extensions:<version> (image-digests, descriptions.yaml) and the extensions by digest.
    #[arg(
        long,
        env = "IMAGER_SERVE_ASSETS_REGISTRY",
        value_name = "HOST[:PORT]/PREFIX"
    )]
    pub assets_registry: Option<String>,

    /// Talk to the assets registry over plain HTTP.
    #[arg(long, env = "IMAGER_SERVE_INSECURE_ASSETS_REGISTRY")]
    pub insecure_assets_registry: bool,

    /// Shared store: host[:port]/prefix of an OCI registry (schematics, asset cache, installers).
    #[arg(long, env = "IMAGER_SERVE_REGISTRY", value_name = "HOST[:PORT]/PREFIX")]
    pub registry: String,

    /// Talk to the registry over plain HTTP.
    #[arg(long, env = "IMAGER_SERVE_INSECURE_REGISTRY")]
    pub insecure_registry: bool,

    /// User name for the shared store (else an auth file entry: REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, $DOCKER_CONFIG/config.json, ~/.docker/config.json).
    #[arg(
        long,
        env = "IMAGER_SERVE_REGISTRY_USERNAME",
        requires = "registry_password_file"
    )]
    pub registry_username: Option<String>,

    /// File holding the shared store's password (one line).
    #[arg(
        long,
        env = "IMAGER_SERVE_REGISTRY_PASSWORD_FILE",
        value_name = "FILE",
        requires = "registry_username"
    )]
    pub registry_password_file: Option<PathBuf>,

    /// User name for the assets registry (else the shared store's when it is the same host, else an auth file entry).
    #[arg(
        long,
        env = "IMAGER_SERVE_ASSETS_REGISTRY_USERNAME",
        requires = "assets_registry_password_file"
    )]
    pub assets_registry_username: Option<String>,

    /// File holding the assets registry's password (one line).
    #[arg(
        long,
        env = "IMAGER_SERVE_ASSETS_REGISTRY_PASSWORD_FILE",
        value_name = "FILE",
        requires = "assets_registry_username"
    )]
    pub assets_registry_password_file: Option<PathBuf>,

    /// Seconds a client gets to send a request's headers before its connection is dropped.
    #[arg(
        long,
        env = "IMAGER_SERVE_HEADER_READ_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    pub header_read_timeout: u64,

    /// Seconds after SIGTERM for in-flight responses, builds and cache pushes to finish
    /// before the process exits anyway.
    #[arg(
        long,
        env = "IMAGER_SERVE_SHUTDOWN_DRAIN",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    pub shutdown_drain: u64,

    /// Connections served at once; more wait in the listen queue.
    #[arg(long, env = "IMAGER_SERVE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// SecureBoot keys: uki-signing-key.pem, uki-signing-cert.pem, pcr-signing-key.pem (without it, no SecureBoot assets).
    #[arg(long, env = "IMAGER_SERVE_SECUREBOOT_DIR", value_name = "DIR")]
    pub secureboot_dir: Option<PathBuf>,

    /// Builds at once in this replica.
    #[arg(long, env = "IMAGER_SERVE_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,

    /// Serve /metrics on this address instead of the main listener.
    #[arg(long, env = "IMAGER_SERVE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// GRUB's platform directories (i386-pc, x86_64-efi) for disk images in the grub and dual-boot layouts.
    #[arg(long, env = "IMAGER_SERVE_GRUB_DIR", value_name = "DIR", default_value = imager::formats::grub::DEFAULT_DIR)]
    pub grub_dir: PathBuf,

    /// Scratch space for builds (default: a directory under the system temp dir).
    #[arg(long, env = "IMAGER_SERVE_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMAGER_SERVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
    let external_url = args
        .external_url
        .unwrap_or_else(|| format!("http://{}", args.listen))
        .trim_end_matches('/')
        .to_string();
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(FACTORY_EPOCH);
    let registry = RegistryTarget::parse(&args.registry)?;
    let registry_credentials = credentials(
        args.registry_username.as_deref(),
        args.registry_password_file.as_ref(),
        &registry.host,
    )?;
    let assets_registry = match &args.assets_registry {
        None => None,
        Some(text) => {
            let target = RegistryTarget::parse_flag("--assets-registry", text)?;
            let credentials = if args.assets_registry_username.is_some() {
                credentials(
                    args.assets_registry_username.as_deref(),
                    args.assets_registry_password_file.as_ref(),
                    &target.host,
                )?
            } else if target.host == registry.host && args.registry_username.is_some() {
                registry_credentials.clone()
            } else {
                auth::lookup(&target.host)?
            };
            Some(AssetsRegistry {
                target,
                insecure: args.insecure_assets_registry,
                credentials,
            })
        }
    };
    let config = Config {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        external_url,
        assets: args.assets.unwrap_or_default(),
        assets_registry,
        registry,
        registry_credentials,
        header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout),
        max_connections: args.max_connections,
        shutdown_drain: std::time::Duration::from_secs(args.shutdown_drain),
        insecure_registry: args.insecure_registry,
        secureboot_dir: args.secureboot_dir,
        concurrency: args.concurrency,
        grub_dir: args.grub_dir,
        work_dir: args.work_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("imager-serve-{}", std::process::id()))
        }),
        epoch,
    };
    imager::serve::run(config)?;
    Ok(())
}
