//! Flags of Talos's imager (`cmd/installer/cmd/imager/root.go`) for features this
//! imager does not build yet: overlays (`--overlay-image`, `--overlay-name`,
//! `--overlay-option`) and the board selection of older releases (`--board`). They are accepted by name, so a Talos command line gets a
//! clear refusal instead of a parser tip, and this is the one place to wire them
//! when the features land.

use clap::Args;

#[derive(Debug, Default, Args)]
pub struct TalosFlags {
    /// Overlay image for single-board computers (Talos's flag; overlays are not built yet).
    #[arg(long, value_name = "IMAGE")]
    pub overlay_image: Option<String>,

    /// Overlay name inside the overlay image (Talos's flag; overlays are not built yet).
    #[arg(long, value_name = "NAME")]
    pub overlay_name: Option<String>,

    /// Extra overlay option, repeatable (Talos's flag; overlays are not built yet).
    #[arg(long = "overlay-option", value_name = "KEY=VALUE")]
    pub overlay_options: Vec<String>,

    /// Board name of Talos < 1.7 (replaced by overlays; not built).
    #[arg(long, value_name = "BOARD")]
    pub board: Option<String>,
}

impl TalosFlags {
    /// Refuses the first flag given whose feature is not built, with its own line.
    pub fn refuse_unbuilt(&self) -> imager::Result<()> {
        let overlay = self.overlay_image.is_some()
            || self.overlay_name.is_some()
            || !self.overlay_options.is_empty();
        if overlay {
            return Err(imager::Error::unsupported(
                "--overlay-image/--overlay-name/--overlay-option: overlays (single-board computer images) are not supported by this imager yet; build without an overlay",
            ));
        }
        if let Some(board) = &self.board {
            return Err(imager::Error::unsupported(format!(
                "--board {board}: boards were replaced by overlays in Talos 1.7, and overlays are not supported by this imager yet"
            )));
        }
        Ok(())
    }
}
