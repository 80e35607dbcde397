//! The EFI system partition: a FAT image holding systemd-boot, the UKI, loader.conf
//! and the SecureBoot enrollment files. Shared by the ISO and the disk image.

use std::fs::File;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum EspSource {
    /// Streamed from a file on disk.
    File(PathBuf),
    /// Small generated content.
    Bytes(Vec<u8>),
}

/// One file of the ESP.
#[derive(Debug, Clone)]
pub struct EspEntry {
    /// Path inside the ESP, `/`-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub source: EspSource,
    pub read_only: bool,
}

/// Options of the FAT file system.
#[derive(Debug, Clone)]
pub struct EspOptions {
    /// Volume label, e.g. `EFI`.
    pub label: String,
    /// Timestamp of every entry and the source of the volume serial (seconds since epoch).
    pub epoch: u64,
}

/// Writes a FAT file system of `size` bytes holding `entries` into `dev` at byte `offset`.
pub fn write(
    entries: &[EspEntry],
    options: &EspOptions,
    dev: &File,
    offset: u64,
    size: u64,
) -> Result<()> {
    let _ = (entries, options, dev, offset, size);
    Err(Error::unsupported("ESP writing is not implemented yet"))
}
