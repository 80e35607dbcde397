//! Command-line interface: argument types and dispatch. The work lives in the library;
//! each subcommand is one small function over its parsed arguments.

mod build;
mod cache;
mod generate;
mod inspect;
mod meta;
mod preflight;
mod pxe;
mod serve;
mod talos_flags;
mod verify;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Builds Talos Linux boot assets (UKI, SecureBoot ISO, disk images, PXE assets,
/// installer images) from a profile.
#[derive(Debug, Parser)]
#[command(
    name = "imager",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
#[command(after_help = build::EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    build: build::BuildArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Builds image caches for air-gapped installs (`--image-cache`).
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Generates SecureBoot keys, certificates and enrollment files.
    #[command(subcommand)]
    Gen(generate::GenCommand),
    /// Shows what is inside a UKI or signed EFI binary and checks it.
    Inspect(inspect::InspectArgs),
    /// Reads the Talos META values of a disk image, META partition or ISO.
    #[command(subcommand)]
    Meta(meta::MetaCommand),
    /// Writes the PXE assets with an iPXE script and a Matchbox profile.
    Pxe(Box<pxe::PxeArgs>),
    /// Lists the built-in profiles.
    Profiles,
    /// Runs the Image-Factory-compatible HTTP service.
    Serve(Box<serve::ServeArgs>),
    /// Check an image's cosign signature as `imager serve` checks its inputs.
    Verify(Box<verify::VerifyArgs>),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    // `imager PROFILE --help`: what that profile builds, before clap's own help.
    if let Some(result) = build::profile_help(std::env::args_os().collect()) {
        return match result {
            Ok(()) => 0,
            Err(err) if err.is::<ClosedStdout>() => 0,
            Err(err) => {
                eprintln!("error: {err:#}");
                err.downcast_ref::<imager::Error>()
                    .map(imager::Error::exit_code)
                    .unwrap_or(1)
            }
        };
    }
    let matches = Cli::command().get_matches();
    // Ctrl-C / SIGTERM: remove unfinished outputs, then exit like a shell would. The
    // service handles both itself (it stops accepting and lets responses finish).
    if matches.subcommand_name() != Some("serve") {
        let _ = ctrlc::set_handler(|| {
            imager::io::cleanup::remove_all();
            eprintln!("error: interrupted; unfinished outputs removed");
            std::process::exit(130);
        });
    }
    // --output from the command line or IMAGER_OUTPUT, not clap's default.
    let output_given = matches
        .value_source("output")
        .is_some_and(|s| s != ValueSource::DefaultValue);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    imager::report::enable_bars_on_terminal();
    let result = match cli.command {
        Some(Command::Cache(cmd)) => cache::run(cmd),
        Some(Command::Gen(cmd)) => generate::run(cmd),
        Some(Command::Inspect(args)) => inspect::run(args),
        Some(Command::Meta(cmd)) => meta::run(cmd),
        Some(Command::Pxe(args)) => pxe::run(*args),
        Some(Command::Profiles) => build::list_profiles(),
        Some(Command::Serve(args)) => serve::run(*args),
        Some(Command::Verify(args)) => verify::run(*args),
        None => build::run(cli.build, output_given),
    };
    match result {
        Ok(()) => 0,
        // The reader went away (`imager profiles | head -1`): stop quietly, as Unix tools do.
        Err(err) if err.is::<ClosedStdout>() => 0,
        Err(err) => {
            imager::io::cleanup::remove_all();
            eprintln!("error: {err:#}{}", hint(&format!("{err:#}")));
            err.downcast_ref::<imager::Error>()
                .map(imager::Error::exit_code)
                .unwrap_or(1)
        }
    }
}

/// Stdout was closed by its reader (a pipe into `head`).
#[derive(Debug)]
pub struct ClosedStdout;

impl std::fmt::Display for ClosedStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for ClosedStdout {}

/// Writes `text` to stdout; a closed pipe becomes [`ClosedStdout`] (not a panic, as
/// `print!` would give).
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ClosedStdout.into()),
        Err(e) => Err(imager::Error::io_during("writing to stdout", e).into()),
    }
}

/// A way out for errors whose text comes from a transport library.
fn hint(message: &str) -> &'static str {
    if message.contains("InvalidContentType") || message.contains("corrupt message") {
        // rustls got a plain-HTTP answer to its TLS hello.
        "; the registry answers plain HTTP: add --insecure (imager serve: --insecure-registry)"
    } else if message.contains("base image") && message.contains("Dns Failed") {
        "; offline? use a local base: --base-installer-image oci:DIR, oci-archive:FILE or docker-archive:FILE"
    } else {
        ""
    }
}
