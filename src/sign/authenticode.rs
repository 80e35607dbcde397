//! Authenticode: PE image hash, PKCS#7 SignedData over SpcIndirectDataContent,
//! WIN_CERTIFICATE table, PE checksum.

use std::path::Path;

use crate::error::{Error, Result};
use crate::keys::Signer;

/// One embedded signature, as found and checked by [`verify`].
#[derive(Debug, Clone)]
pub struct SignatureInfo {
    /// Subject of the signer certificate (RFC 4514 string).
    pub signer_subject: String,
    /// Issuer of the signer certificate.
    pub signer_issuer: String,
    /// SHA-256 fingerprint (hex) of the signer certificate's DER.
    pub signer_fingerprint: String,
    /// The PE image digest recorded in the signature.
    pub signed_digest: Vec<u8>,
    /// The PE image digest recomputed from the file.
    pub image_digest: Vec<u8>,
    /// `signed_digest == image_digest`.
    pub digest_matches: bool,
    /// The RSA signature over the signed attributes verifies with the signer certificate.
    pub signature_valid: bool,
}

/// Signs the PE file at `path` in place: appends the certificate table and patches
/// the headers (data directory 4 and CheckSum). The file is read once.
pub fn sign_in_place(path: &Path, signer: &Signer) -> Result<()> {
    let _ = (path, signer);
    Err(Error::unsupported(
        "Authenticode signing is not implemented yet",
    ))
}

/// Authenticode SHA-256 digest of the PE file at `path`.
pub fn image_digest(path: &Path) -> Result<[u8; 32]> {
    let _ = path;
    Err(Error::unsupported(
        "Authenticode hashing is not implemented yet",
    ))
}

/// Lists and checks the signatures embedded in the PE file at `path`.
pub fn verify(path: &Path) -> Result<Vec<SignatureInfo>> {
    let _ = path;
    Err(Error::unsupported(
        "Authenticode verification is not implemented yet",
    ))
}

/// Writes a signed copy of the PE file `input` to `output`.
pub fn sign_to(input: &Path, output: &mut std::fs::File, signer: &Signer) -> Result<()> {
    let _ = (input, output, signer);
    Err(Error::unsupported(
        "Authenticode signing is not implemented yet",
    ))
}
