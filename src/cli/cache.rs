//! `imager cache create --images FILE|- --output DIR|oci:DIR|tar:FILE [--platform ...]`:
//! pulls images into Talos's image cache layout ([`imager::imagecache::create`]).

use std::io::Read;

use anyhow::Context;
use clap::Subcommand;

use imager::imagecache::create::{CreateOptions, Output, create, read_list};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Pulls the listed images into an image cache (the input of `--image-cache`).
    Create {
        /// The image references, one a line (`-`: standard input).
        #[arg(long)]
        images: String,
        /// DIR (the tree), oci:DIR (an OCI layout wrapping it, as talosctl's default) or
        /// tar:FILE (a tarball of the tree, for `input.imageCache.tarballPath`).
        #[arg(long)]
        output: String,
        /// Platforms cached from multi-platform images (repeatable or comma-separated);
        /// the first names the OCI layout's platform.
        #[arg(long, value_delimiter = ',', default_value = "linux/amd64")]
        platform: Vec<String>,
        /// Allow plain-HTTP and self-signed registries.
        #[arg(long)]
        insecure: bool,
        /// Blobs fetched at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
    },
}

pub fn run(cmd: CacheCommand) -> anyhow::Result<()> {
    let CacheCommand::Create {
        images,
        output,
        platform,
        insecure,
        jobs,
    } = cmd;
    let text = if images == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("--images -: reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&images).with_context(|| format!("--images {images}"))?
    };
    let mut arches = Vec::new();
    for p in &platform {
        match p.trim().strip_prefix("linux/") {
            Some(a @ ("amd64" | "arm64")) => arches.push(a.to_string()),
            _ => anyhow::bail!(imager::Error::invalid(format!(
                "--platform {p:?}: use linux/amd64 or linux/arm64"
            ))),
        }
    }
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let opts = CreateOptions {
        arches,
        insecure,
        epoch,
        jobs,
    };
    create(
        &read_list(&text),
        &Output::parse(&output),
        &opts,
        &imager::report::Stderr,
    )?;
    Ok(())
}
