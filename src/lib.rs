//! `imager`: builds Talos Linux boot assets.
//!
//! The modules follow the pipeline: a [`profile`] fixes what to build, [`inputs`]
//! opens the files it names, [`cmdline`] assembles the kernel command line, [`uki`]
//! puts kernel, initramfs and command line on systemd-stub, [`measure`] predicts
//! PCR 11 and signs the policy, [`pe`] models PE/COFF headers (read, laid out,
//! hashed), [`sign`] holds the signer and Authenticode-signs PE images, [`keys`]
//! loads and makes SecureBoot material, and [`out`] writes each output kind (ESP,
//! ISO, disk image, META, installer image, PXE assets). [`build`] runs the pipeline;
//! the `imager` binary is a thin CLI over it.

pub mod error;
pub mod formats;
pub mod inputs;
pub mod io;
pub mod kernel_cmdline;
pub mod keys;
pub mod measure;
pub mod meta;
pub mod oci;
pub mod pe;
pub mod pipeline;
pub mod profile;
pub mod report;
pub mod sign;
pub mod uki;

pub use error::{Error, Result};
