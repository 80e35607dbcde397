//! SecureBoot key material: loading the signing key + certificate and the PCR key,
//! generating new ones (`imager gen secureboot`), and the EFI authenticated variables
//! (`PK.auth`, `KEK.auth`, `db.auth`) that systemd-boot enrolls.

pub mod efivar;
pub mod generate;

use std::path::{Path, PathBuf};

use rsa::traits::PublicKeyParts;

use crate::error::Result;
/// The signer and its files live with the signatures they make; re-exported here
/// next to the rest of the key material.
pub use crate::sign::{RsaKey, Signer, der_to_pem, load_certificate, load_rsa_key};

/// The key that signs the PCR 11 policy (`.pcrsig`); its public half goes to `.pcrpkey`.
#[derive(Clone)]
pub struct PcrKey {
    pub key: RsaKey,
    pub path: PathBuf,
}

impl std::fmt::Debug for PcrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcrKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PcrKey {
    /// Loads a PEM RSA private key.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(PcrKey {
            key: load_rsa_key(path)?,
            path: path.into(),
        })
    }

    /// Modulus size in bytes (the size of every signature).
    pub fn size(&self) -> usize {
        self.key.size()
    }
}
