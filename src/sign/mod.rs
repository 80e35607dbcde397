//! Authenticode signing of PE/COFF EFI binaries (the UKI and systemd-boot), and the
//! PKCS#7 SignedData it shares with the SecureBoot enrollment variables.

pub mod authenticode;
pub mod pkcs7;
pub mod tlv;
