//! `imager serve`: the Image-Factory-compatible HTTP service. Every flag is also an
//! `IMAGER_SERVE_*` environment variable (booleans `true`/`false` or `1`/`0`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use imager::serve::config::{Config, FACTORY_EPOCH, RegistryTarget};

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
    #[arg(long, env = "IMAGER_SERVE_ASSETS", value_name = "DIR")]
    pub assets: PathBuf,

    /// Shared store: host[:port]/prefix of an OCI registry (schematics, asset cache, installers).
    #[arg(long, env = "IMAGER_SERVE_REGISTRY", value_name = "HOST[:PORT]/PREFIX")]
    pub registry: String,

    /// Talk to the registry over plain HTTP.
    #[arg(long, env = "IMAGER_SERVE_INSECURE_REGISTRY")]
    pub insecure_registry: bool,

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
    let config = Config {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        external_url,
        assets: args.assets,
        registry: RegistryTarget::parse(&args.registry)?,
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
