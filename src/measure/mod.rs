//! PCR 11 prediction and the signed PCR policy.
//!
//! [`digest`] hashes measured content in every bank (streaming, on two cores),
//! [`pcr`] replays the extends systemd-stub and Talos' init perform, and [`policy`]
//! turns the final values into the signed `.pcrsig` JSON and the `.pcrpkey` PEM.
//! Which sections are measured, and in which order, is the UKI's business
//! (`crate::uki::sections`); this module only sees names and digests.

pub mod digest;
pub mod pcr;
pub mod policy;

pub use digest::{BANKS, Bank, Digests, copy_hashed};
pub use pcr::{BankPcr, Measured, PHASES, predict};
