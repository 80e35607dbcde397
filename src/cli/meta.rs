//! `imager meta dump FILE|DISK`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Prints the META values stored in a disk image, a META partition image or a device.
    Dump { path: std::path::PathBuf },
}

pub fn run(_cmd: MetaCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
