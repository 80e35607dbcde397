//! Command-line interface: argument types and dispatch. The work lives in the library;
//! each subcommand is one small function over its parsed arguments.

mod build;
mod cache;
mod generate;
mod inspect;
mod meta;
mod pxe;
mod serve;

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
    /// Reads and writes Talos META partitions.
    #[command(subcommand)]
    Meta(meta::MetaCommand),
    /// Writes the PXE assets with an iPXE script and a Matchbox profile.
    Pxe(Box<pxe::PxeArgs>),
    /// Lists the built-in profiles.
    Profiles,
    /// Runs the Image-Factory-compatible HTTP service.
    Serve(Box<serve::ServeArgs>),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
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
        None => build::run(cli.build, output_given),
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            imager::io::cleanup::remove_all();
            eprintln!("error: {err:#}");
            err.downcast_ref::<imager::Error>()
                .map(imager::Error::exit_code)
                .unwrap_or(1)
        }
    }
}
