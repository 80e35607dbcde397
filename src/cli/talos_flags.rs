//! Flags of Talos's imager (`cmd/installer/cmd/imager/root.go`) for what this imager
//! does not build: the board selection of releases before 1.7 (`--board`), which
//! overlays replaced. Accepted by name, so a Talos command line gets a clear refusal
//! instead of a parser tip.

use clap::Args;

#[derive(Debug, Default, Args)]
pub struct TalosFlags {
    /// Board name of Talos < 1.7 (replaced by overlays: --overlay-image; not built).
    #[arg(long, value_name = "BOARD")]
    pub board: Option<String>,
}

impl TalosFlags {
    /// Refuses a flag given whose feature is not built, with its own line.
    pub fn refuse_unbuilt(&self) -> imager::Result<()> {
        if let Some(board) = &self.board {
            return Err(imager::Error::unsupported(format!(
                "--board {board}: boards were replaced by overlays in Talos 1.7: use --overlay-image and --overlay-name"
            )));
        }
        Ok(())
    }
}
