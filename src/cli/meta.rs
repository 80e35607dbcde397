//! `imager meta dump FILE|DISK`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Prints the META values stored in a disk image, a META partition image or a device.
    Dump {
        path: std::path::PathBuf,
        /// JSON instead of `0xKEY=VALUE` lines.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: MetaCommand) -> anyhow::Result<()> {
    match cmd {
        MetaCommand::Dump { path, json } => {
            let decoded = imager::meta::read(&path)?;
            for copy in &decoded.corrupt_copies {
                eprintln!(
                    "warning: {}: META copy {copy} is corrupt (bad magic or checksum)",
                    path.display()
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&decoded.values)?);
            } else {
                for v in &decoded.values {
                    println!("{}", v.display());
                }
            }
            Ok(())
        }
    }
}
