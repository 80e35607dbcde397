//! The file backend: an RSA private key in a PEM file (PKCS#1 or PKCS#8), signing in
//! process. Talos's `pkg/imager/profile/internal/signer/file`.

use std::path::Path;

use super::super::signer::{HashAlg, KeySigner, RsaKey, load_rsa_key};
use crate::error::{Error, Result};

/// An RSA key held in memory, loaded from a PEM file (or freshly generated).
pub struct FileKey {
    key: RsaKey,
    public: rsa::PublicKey,
    source: String,
}

impl FileKey {
    /// Loads a PEM RSA private key.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(FileKey::new(
            load_rsa_key(path)?,
            path.display().to_string(),
        ))
    }

    /// A key already in memory; `source` names it in messages.
    pub fn new(key: RsaKey, source: String) -> Self {
        FileKey {
            public: key.to_public_key(),
            key,
            source,
        }
    }
}

impl KeySigner for FileKey {
    fn public_key(&self) -> &rsa::PublicKey {
        &self.public
    }

    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>> {
        // Blinded with OS randomness; PKCS#1 v1.5 output is the same either way.
        self.key
            .sign_with_rng(&mut getrandom::SysRng, hash.pkcs1v15(), digest)
            .map_err(|e| Error::invalid(format!("RSA signing with {} failed: {e}", self.source)))
    }

    fn describe(&self) -> String {
        self.source.clone()
    }
}
