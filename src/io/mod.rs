//! Small I/O building blocks shared by every output: atomic output files, streaming
//! copies, hashing readers and writers, reproducible tar headers, zero content, the
//! little-endian reader.

mod atomic;
pub mod cleanup;
mod copy;
mod device;
mod fs_image;
mod hashing;
pub mod le;
pub mod pgzip;
mod region;
pub mod sparse;
pub mod tar;
mod walk;
mod zeros;

pub use atomic::AtomicFile;
pub use copy::{copy, copy_during, copy_file_sparse, copy_sparse};
pub use device::HostDevice;
pub use fs_image::{FsImage, is_zero, punch_hole};
pub use hashing::{HashingReader, HashingWriter, digest_string, sha256_digest, sha256_file};
pub use region::{FileRegion, Output};
pub use walk::walk;
pub use zeros::{Zeros, zeros};

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
