//! Output kinds: each writes one artifact into the output directory.

pub mod compress;
pub mod esp;
pub mod pxe;

use std::path::Path;

use crate::build::{Facts, WorkDir};
use crate::error::{Error, Result};
use crate::profile::{OutputKind, Profile};
use crate::report::Progress;

/// Builds the UKI-based kinds (`uki`, `iso`, `image`, `installer`) into `dest`.
pub fn assemble(
    profile: &Profile,
    kind: OutputKind,
    cmdline: &str,
    work: &WorkDir,
    dest: &Path,
    progress: &dyn Progress,
    facts: &mut Facts,
) -> Result<()> {
    let _ = (profile, cmdline, work, dest, progress, facts);
    Err(Error::unsupported(format!(
        "the {kind} output is not implemented yet"
    )))
}
