//! Signing: the signer seam ([`KeySigner`], the SecureBoot [`Signer`]) and its
//! [`backends`], Authenticode signing of PE/COFF EFI binaries (the UKI and
//! systemd-boot), and the PKCS#7 SignedData it shares with the SecureBoot enrollment
//! variables. No code here uses [`crate::keys`] (only tests borrow its key
//! generator); `keys` (the PCR key, key generation, the enrollment variables) builds
//! on this module.

pub mod authenticode;
pub mod backends;
pub mod pkcs7;
mod signer;
pub mod tlv;

pub use signer::{
    HashAlg, KeySigner, RsaKey, Signer, der_to_pem, load_certificate, load_rsa_key,
    parse_certificate, sign_checked,
};
