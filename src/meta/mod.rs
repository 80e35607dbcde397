//! Talos META: key/value pairs (e.g. `0x0a` = platform network config) that reach
//! the machine in the META partition of a disk image, or on the kernel command line.

pub mod adv;
