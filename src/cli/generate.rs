//! `imager gen secureboot uki|pcr|database`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// (placeholder)
    Secureboot,
}

pub fn run(_cmd: GenCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
