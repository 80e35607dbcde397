//! Output kinds: each writes one artifact into the output directory.

pub mod esp;
