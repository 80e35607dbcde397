//! `imager PROFILE [flags]`: the main build command.

use clap::Args;

pub const EXAMPLES: &str = "";

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Built-in profile name, a profile YAML file, or `-` for YAML on stdin.
    #[arg(required = true)]
    pub profile: Option<String>,
}

pub fn run(_args: BuildArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn list_profiles() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
