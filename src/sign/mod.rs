//! Authenticode signing of PE/COFF EFI binaries (the UKI and systemd-boot).

pub mod authenticode;
