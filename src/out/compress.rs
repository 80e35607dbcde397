//! Streaming compression of finished artifacts (outFormat).

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Compresses `src` into `dest` in `format` (`.xz`, `.zst`, `.gz`, `.tar.gz`).
pub fn compress(src: &Path, format: &str, dest: &mut File) -> Result<()> {
    let _ = (src, dest);
    Err(Error::unsupported(format!(
        "outFormat {format} is not implemented yet"
    )))
}
