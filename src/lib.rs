//! `imager`: builds Talos Linux boot assets.
//!
//! The modules follow the pipeline. A [`profile`] says what to build (Talos schema,
//! built-ins, defaults, version quirks); [`plan`] turns it into a typed plan once
//! (architecture, epoch, artifact names, one plan per output kind); [`inputs`] opens
//! the files it names; [`extensions`] rebuilds the initramfs with system extensions;
//! [`imagecache`] unpacks and checks the image cache input (air-gapped installs);
//! [`kernel_cmdline`] assembles the kernel command line; [`uki`]
//! puts kernel, initramfs and command line on systemd-stub, laid out with the [`pe`]
//! model; [`measure`] predicts PCR 11 and signs the policy; [`sign`] Authenticode-signs
//! PE images; [`keys`] loads and makes SecureBoot material; [`meta`] encodes Talos
//! META; [`formats`] writes each file format (FAT ESP, ISO 9660, GPT disk, GRUB boot images,
//! the XFS BOOT partition, qcow2, VHD, VMDK/OVA, squashfs, newc cpio, compression and the
//! initramfs's chunked zstd frames / xz streams, OCI installer image, PXE recipes)
//! and [`oci`] reads base images and reads and writes registries.
//! [`schematic`] parses Image Factory schematics and computes their IDs; [`goyaml`] writes
//! YAML byte for byte as go-yaml v3 does (schematics, `extensions.yaml`, extension manifests).
//! [`pipeline`] runs the stages for a plan; [`io`] holds the streaming adapters and
//! [`report`] the progress lines and the build manifest. The `imager` binary is a thin
//! CLI over [`pipeline::build`]; [`serve`] is the Image-Factory-compatible HTTP service
//! on the same pipeline, its shared state in an OCI registry.

pub mod cosign;
pub mod error;
pub mod extensions;
pub mod formats;
pub mod goyaml;
pub mod imagecache;
pub mod inputs;
pub mod io;
pub mod kernel_cmdline;
pub mod keys;
pub mod measure;
pub mod meta;
pub mod oci;
pub mod overlay;
pub mod pe;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod report;
pub mod schematic;
pub mod serve;
pub mod sign;
pub mod uki;

pub use error::{Error, Result};
