//! The file formats the pipeline writes, one module each, named for the format:
//! the FAT EFI system partition, ISO 9660, GPT disk images and their qcow2/VHD
//! conversions, outFormat compression, OCI installer images and the PXE recipes.

pub mod compression;
pub mod fat_esp;
pub mod gpt_disk;
pub mod iso9660;
pub mod oci_image;
pub mod pxe_recipes;
pub mod qcow2;
pub mod vhd;
