//! `imager inspect FILE.efi`.

use clap::Args;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The EFI binary (UKI or systemd-boot) to inspect.
    pub file: std::path::PathBuf,
}

pub fn run(_args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
