//! The file formats the pipeline writes, one module each, named for the format:
//! the FAT EFI system partition, ISO 9660, GPT disk images and their qcow2/VHD/OVA
//! conversions, GRUB boot images, the XFS BOOT partition, outFormat compression, OCI
//! installer images, the PXE recipes, the initramfs's newc cpio and squashfs images
//! and its sequences of zstd frames and xz streams.

pub mod chunked;
pub mod compression;
pub mod cpio;
pub mod ext4;
pub mod fat_esp;
pub mod gpt_disk;
pub mod grub;
pub mod iso9660;
pub mod oci_image;
pub mod ova;
pub mod pxe_recipes;
pub mod qcow2;
pub mod squashfs;
pub mod vhd;
pub mod vmdk;
pub mod xfs;
pub mod xz_streams;
pub mod zstd_frames;

use crate::error::Error;

/// A file-system writer's error as ours: when the device (the output file) failed,
/// an I/O error of `op` (the caller names the file); otherwise the content did not
/// fit the format (files larger than the partition, a name it cannot hold), which is
/// about the inputs.
pub(crate) fn hadris_error(op: &'static str, e: impl Into<hadris_fs::PathError>) -> Error {
    let e: hadris_fs::PathError = e.into();
    if e.kind() == hadris_io::ErrorKind::Io {
        Error::io_during(op, std::io::Error::from(e))
    } else {
        Error::invalid(format!("{op}: {e}"))
    }
}
