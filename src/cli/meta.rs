//! `imager meta dump FILE|DISK`.

use clap::Subcommand;

use imager::meta::image::Found;

#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Prints the META values of a disk image (.raw, or .raw.zst/.xz/.gz as `imager`
    /// writes them), a META partition image, a device, or an ISO/UKI/PXE command line
    /// built with --meta.
    Dump {
        /// The disk image, META partition image, device, ISO, UKI or command-line file.
        path: std::path::PathBuf,
        /// JSON instead of `0xKEY=VALUE` lines.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: MetaCommand) -> anyhow::Result<()> {
    match cmd {
        MetaCommand::Dump { path, json } => {
            let (decoded, found) = imager::meta::image::read_path(&path)?;
            for copy in &decoded.corrupt_copies {
                eprintln!(
                    "warning: {}: META copy {copy} is corrupt (bad magic or checksum)",
                    path.display()
                );
            }
            if found == Found::Cmdline {
                eprintln!(
                    "{}: META from the kernel command line (talos.environment=INSTALLER_META_BASE64)",
                    path.display()
                );
            }
            let text = if json {
                format!("{}\n", serde_json::to_string_pretty(&decoded.values)?)
            } else {
                decoded
                    .values
                    .iter()
                    .map(|v| format!("{}\n", v.display()))
                    .collect()
            };
            super::print_out(&text)
        }
    }
}
