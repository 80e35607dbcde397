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

    /// GRUB's platform directories (i386-pc, x86_64-efi; arm64-efi for arm64) for disk images in the grub and dual-boot layouts.
    #[arg(long, env = "IMAGER_SERVE_GRUB_DIR", value_name = "DIR", default_value = imager::formats::grub::DEFAULT_DIR)]
    pub grub_dir: PathBuf,

    /// Scratch space for builds (default: a directory under the system temp dir).
    #[arg(long, env = "IMAGER_SERVE_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Images pulled from the assets registry may be signed with this public key (PEM;
    /// offline, no transparency log), tried before keyless.
    #[arg(
        long,
        env = "IMAGER_SERVE_CONTAINER_SIGNATURE_PUBKEY",
        value_name = "FILE"
    )]
    pub container_signature_pubkey: Option<PathBuf>,

    /// Keyless: the signing certificate's subject must match this regexp (default: Sidero
    /// Labs' release signers; empty: no keyless verification).
    #[arg(
        long,
        env = "IMAGER_SERVE_CONTAINER_SIGNATURE_SUBJECT_REGEXP",
        value_name = "REGEXP"
    )]
    pub container_signature_subject_regexp: Option<String>,

    /// Keyless: the OIDC issuer the certificate must name (default https://accounts.google.com).
    #[arg(
        long,
        env = "IMAGER_SERVE_CONTAINER_SIGNATURE_ISSUER",
        value_name = "URL",
        conflicts_with = "container_signature_issuer_regexp"
    )]
    pub container_signature_issuer: Option<String>,

    /// Keyless: a regexp the OIDC issuer must match instead.
    #[arg(
        long,
        env = "IMAGER_SERVE_CONTAINER_SIGNATURE_ISSUER_REGEXP",
        value_name = "REGEXP"
    )]
    pub container_signature_issuer_regexp: Option<String>,

    /// Keyless: the Sigstore trusted root (trusted_root.json; default: the one built in).
    #[arg(
        long,
        env = "IMAGER_SERVE_CONTAINER_SIGNATURE_TRUSTED_ROOT",
        value_name = "FILE"
    )]
    pub container_signature_trusted_root: Option<PathBuf>,

    /// Sign cached assets and installer images with this ECDSA P-256 key (PEM; cosign's
    /// legacy format); its public key is served at /oci/cosign/signing-key.pub and cached
    /// assets whose signature does not verify are built again.
    #[arg(long, env = "IMAGER_SERVE_CACHE_SIGNING_KEY_PATH", value_name = "FILE")]
    pub cache_signing_key_path: Option<PathBuf>,

    /// Access control: bearer tokens and OIDC tokens, who may create schematics and get
    /// signed (SecureBoot) assets with which extensions, overlays and kernel arguments,
    /// per-client limits, the audit log (YAML; the format is in the README).
    #[arg(long, env = "IMAGER_SERVE_AUTH_POLICY", value_name = "FILE")]
    pub auth_policy: Option<PathBuf>,

    /// Use images from the assets registry without checking their signatures.
    #[arg(long, env = "IMAGER_SERVE_CONTAINER_SIGNATURE_DISABLED")]
    pub container_signature_disabled: bool,
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
    let container_signature = imager::cosign::Options {
        disabled: args.container_signature_disabled,
        public_key: args.container_signature_pubkey,
        subject_regexp: args.container_signature_subject_regexp,
        issuer: args.container_signature_issuer,
        issuer_regexp: args.container_signature_issuer_regexp,
        trusted_root: args.container_signature_trusted_root,
    }
    .load()?;
    if args.container_signature_disabled && assets_registry.is_some() {
        tracing::warn!("image signature verification is disabled");
    }
    let config = Config {
        container_signature,
        cache_signing_key: args.cache_signing_key_path,
        auth_policy: args.auth_policy,
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
