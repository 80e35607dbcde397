//! Small I/O building blocks shared by every output: atomic output files, hashing
//! writers, and the build timestamp.

mod atomic;
pub mod cleanup;
mod device;
mod hashing;
pub mod le;
pub mod pgzip;
mod region;
pub mod sparse;

pub use atomic::AtomicFile;
pub use device::HostDevice;
pub use hashing::HashingWriter;
pub use region::{FileRegion, Output};

/// Buffer size for streaming copies: large enough to keep syscalls and hashing
/// efficient on multi-hundred-MiB kernels and initramfs images, small enough that
/// peak memory stays flat.
pub const BUFFER_SIZE: usize = 256 * 1024;

/// Opens `path` for reading and writing, created empty: writers that read back what
/// they wrote (signing, the ISO's directory records, the ESP in an image).
pub fn create_rw(path: &std::path::Path) -> crate::error::Result<std::fs::File> {
    use crate::error::IoContext;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)
}

/// Seconds since the epoch that builds stamp into their outputs: `SOURCE_DATE_EPOCH`
/// when set (reproducible builds), the wall clock otherwise.
pub fn build_epoch() -> u64 {
    source_date_epoch().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// `SOURCE_DATE_EPOCH`, if set to a valid number.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}
