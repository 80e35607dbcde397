//! The SecureBoot signer (an RSA key and its X.509 certificate) and the PEM/DER
//! files it is loaded from. Everything that signs (Authenticode, PKCS#7 for the
//! enrollment variables) takes a [`Signer`].

use std::path::{Path, PathBuf};

use der::{Decode, DecodePem, Encode};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use x509_cert::Certificate;

use crate::error::{Error, IoContext, Result};

/// RSA private key type used throughout.
pub type RsaKey = rsa::PrivateKey;

/// The SecureBoot signer: an RSA key and the X.509 certificate of its public key.
/// Signs the UKI and systemd-boot (Authenticode) and the enrollment variables.
#[derive(Clone)]
pub struct Signer {
    pub key: RsaKey,
    pub cert: Certificate,
    /// DER encoding of `cert`, as read.
    pub cert_der: Vec<u8>,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads a PEM key (PKCS#1 or PKCS#8) and a PEM or DER certificate and checks
    /// that the certificate is for this key.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self> {
        let key = load_rsa_key(key_path)?;
        let (cert, cert_der) = load_certificate(cert_path)?;
        let cert_spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| {
                Error::format(
                    cert_path,
                    format!("cannot encode the certificate's public key: {e}"),
                )
            })?;
        let key_spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| Error::format(key_path, format!("cannot encode the public key: {e}")))?;
        if cert_spki != key_spki.as_bytes() {
            return Err(Error::invalid(format!(
                "the certificate {} does not match the signing key {}",
                cert_path.display(),
                key_path.display()
            )));
        }
        Ok(Signer {
            key,
            cert,
            cert_der,
            key_path: key_path.into(),
            cert_path: cert_path.into(),
        })
    }

    /// A signer from a key and certificate already in memory (freshly generated ones).
    /// The paths are empty.
    pub fn from_parts(key: RsaKey, cert: Certificate) -> Result<Self> {
        let cert_der = cert
            .to_der()
            .map_err(|e| Error::invalid(format!("cannot encode the certificate: {e}")))?;
        Ok(Signer {
            key,
            cert,
            cert_der,
            key_path: PathBuf::new(),
            cert_path: PathBuf::new(),
        })
    }

    /// RSA PKCS#1 v1.5 signature of a SHA-256 digest: the only operation Authenticode
    /// and authenticated variables need from the key, so a remote or KMS-backed
    /// signer would only have to provide this.
    pub fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        use rsa::pkcs1v15::Pkcs1v15Sign;
        self.key
            .sign_with_rng(
                &mut getrandom::SysRng,
                Pkcs1v15Sign::new::<sha2::Sha256>(),
                digest,
            )
            .map_err(|e| {
                Error::invalid(format!(
                    "RSA signing with {} failed: {e}",
                    self.key_path.display()
                ))
            })
    }

    /// The certificate as PEM text.
    pub fn cert_pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.cert_der)
    }

    /// SHA-256 fingerprint of the certificate's DER, lower-case hex.
    pub fn cert_fingerprint(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&self.cert_der))
    }
}

/// Reads an RSA private key from a PEM file (`RSA PRIVATE KEY` or `PRIVATE KEY`).
pub fn load_rsa_key(path: &Path) -> Result<RsaKey> {
    let text = std::fs::read_to_string(path).at(path)?;
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        RsaKey::from_pkcs1_pem(&text)
            .map_err(|e| Error::format(path, format!("not a valid PKCS#1 RSA private key: {e}")))
    } else if text.contains("-----BEGIN PRIVATE KEY-----") {
        RsaKey::from_pkcs8_pem(&text).map_err(|e| {
            Error::format(
                path,
                format!("not an RSA private key (only RSA keys are supported): {e}"),
            )
        })
    } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        Err(Error::format(
            path,
            "an EC key; only RSA keys are supported",
        ))
    } else {
        Err(Error::format(
            path,
            "no PEM private key found (expected RSA PRIVATE KEY or PRIVATE KEY)",
        ))
    }
}

/// Reads an X.509 certificate, PEM or DER; returns it with its DER bytes.
pub fn load_certificate(path: &Path) -> Result<(Certificate, Vec<u8>)> {
    let bytes = std::fs::read(path).at(path)?;
    let cert = if bytes.starts_with(b"-----BEGIN") || bytes.windows(11).any(|w| w == b"-----BEGIN ")
    {
        let text = String::from_utf8_lossy(&bytes);
        Certificate::from_pem(text.as_bytes())
            .map_err(|e| Error::format(path, format!("not a valid PEM certificate: {e}")))?
    } else {
        Certificate::from_der(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid DER certificate: {e}")))?
    };
    let der = cert
        .to_der()
        .map_err(|e| Error::format(path, format!("cannot re-encode certificate: {e}")))?;
    Ok((cert, der))
}

/// PEM-encodes DER bytes with 64-column lines and a trailing newline.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
