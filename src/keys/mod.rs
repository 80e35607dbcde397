//! SecureBoot key material: the PCR key, generating new keys (`imager gen
//! secureboot`), and the EFI authenticated variables (`PK.auth`, `KEK.auth`,
//! `db.auth`) that systemd-boot enrolls. Keys are opened by
//! [`crate::sign::backends`].

pub mod efivar;
pub mod generate;

use std::path::Path;
use std::sync::Arc;

use rsa::traits::PublicKeyParts;

use crate::error::Result;
/// The signer and its files live with the signatures they make; re-exported here
/// next to the rest of the key material.
pub use crate::sign::{KeySigner, RsaKey, Signer, der_to_pem, load_certificate, load_rsa_key};

/// The key that signs the PCR 11 policy (`.pcrsig`); its public half goes to
/// `.pcrpkey`. Any [`KeySigner`] backend; cheap to clone.
#[derive(Clone)]
pub struct PcrKey(Arc<dyn KeySigner>);

impl std::fmt::Debug for PcrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PcrKey").field(&self.0.describe()).finish()
    }
}

impl PcrKey {
    /// A PCR key from any backend.
    pub fn new(key: Arc<dyn KeySigner>) -> Self {
        PcrKey(key)
    }

    /// Loads a PEM RSA private key (the file backend).
    pub fn load(path: &Path) -> Result<Self> {
        Ok(PcrKey(Arc::new(
            crate::sign::backends::file::FileKey::load(path)?,
        )))
    }

    /// The key that signs.
    pub fn signer(&self) -> &dyn KeySigner {
        &*self.0
    }

    /// The public key (`.pcrpkey`, `pkfp`).
    pub fn public_key(&self) -> &rsa::PublicKey {
        self.0.public_key()
    }

    /// Modulus size in bytes (the size of every signature).
    pub fn size(&self) -> usize {
        self.0.public_key().size()
    }
}
