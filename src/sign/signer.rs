//! The signer seam: [`KeySigner`] (an RSA key that signs digests, wherever it lives)
//! and [`Signer`] (such a key with its X.509 certificate: the SecureBoot signer).
//! Everything that signs (Authenticode, PKCS#7 for the enrollment variables, the
//! PCR policy) goes through [`KeySigner::sign_digest`] by way of [`sign_checked`],
//! which checks every signature against the public key before anyone writes it.
//!
//! Follows Talos's split (`pkg/imager/profile/input.go`: `PCRSigner` is a
//! `measure.RSAKey`, `SecureBootSigner` a `pesign.CertificateSigner`, both over Go's
//! `crypto.Signer`, which signs a digest the caller computed); backends live in
//! [`super::backends`].

use std::path::Path;
use std::sync::Arc;

use der::{Decode, DecodePem, Encode};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use x509_cert::Certificate;

use crate::error::{Error, IoContext, Result};

/// RSA private key type used throughout.
pub type RsaKey = rsa::PrivateKey;

/// The hash a digest was made with (every signature is RSASSA-PKCS1-v1_5 over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Lower-case name (`sha256`), as the PCR banks and the error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// The PKCS#1 v1.5 padding scheme for this hash (its DigestInfo prefix).
    pub fn pkcs1v15(self) -> Pkcs1v15Sign {
        match self {
            HashAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            HashAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            HashAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }

    /// DER `DigestInfo` of `digest` (RFC 8017 9.2): what a raw RSA PKCS#1 signer
    /// (PKCS#11 `CKM_RSA_PKCS`) is given.
    pub fn digest_info(self, digest: &[u8]) -> Vec<u8> {
        let mut out = self.pkcs1v15().prefix.to_vec();
        out.extend_from_slice(digest);
        out
    }
}

/// An RSA key that signs digests: a PEM file, a PKCS#11 token, a cloud KMS or an
/// external signer. Implement this (and add a case to [`super::backends::open`]) to
/// add a backend. Remote failures are [`Error::Dependency`].
pub trait KeySigner: Send + Sync {
    /// The RSA public key.
    fn public_key(&self) -> &rsa::PublicKey;
    /// RSASSA-PKCS1-v1_5 signature of `digest`, a `hash` digest the caller made
    /// (the signer does not hash again). Callers use [`sign_checked`].
    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>>;
    /// Where the key is, for messages (`pcr-signing-key.pem`, `pkcs11:token=…`).
    fn describe(&self) -> String;
}

impl std::fmt::Debug for dyn KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Signs `digest` with `key` and checks the signature against the key's public key,
/// so that a backend returning a wrong signature (a different key behind the same
/// name, a broken HSM, a signer that hashes again) stops the build before anything
/// is written.
pub fn sign_checked(key: &dyn KeySigner, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>> {
    if digest.len() != hash.digest_len() {
        return Err(Error::invalid(format!(
            "a {} digest must be {} bytes, not {}",
            hash.name(),
            hash.digest_len(),
            digest.len()
        )));
    }
    let signature = key.sign_digest(hash, digest)?;
    let public = key.public_key();
    if signature.len() != public.size() {
        return Err(Error::Dependency(format!(
            "{}: the {} signature is {} bytes, the key's modulus {}",
            key.describe(),
            hash.name(),
            signature.len(),
            public.size()
        )));
    }
    public
        .verify(hash.pkcs1v15(), digest, &signature)
        .map_err(|_| {
            Error::Dependency(format!(
                "{}: returned a {} signature that does not verify with its public key",
                key.describe(),
                hash.name()
            ))
        })?;
    Ok(signature)
}

/// The SecureBoot signer: a [`KeySigner`] and the X.509 certificate of its public
/// key. Signs the UKI and systemd-boot (Authenticode) and the enrollment variables.
/// Cheap to clone (the key is shared).
#[derive(Clone)]
pub struct Signer {
    key: Arc<dyn KeySigner>,
    cert: Certificate,
    /// DER encoding of `cert`.
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.key.describe())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a key and the certificate `cert_source` names; refuses a
    /// certificate that is not for this key.
    pub fn new(key: Arc<dyn KeySigner>, cert: Certificate, cert_source: &str) -> Result<Self> {
        let cert_der = cert.to_der().map_err(|e| {
            Error::invalid(format!("{cert_source}: cannot encode the certificate: {e}"))
        })?;
        let cert_spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| {
                Error::invalid(format!(
                    "{cert_source}: cannot encode the certificate's public key: {e}"
                ))
            })?;
        let key_spki = key.public_key().to_public_key_der().map_err(|e| {
            Error::invalid(format!(
                "{}: cannot encode the public key: {e}",
                key.describe()
            ))
        })?;
        if cert_spki != key_spki.as_bytes() {
            return Err(Error::invalid(format!(
                "the certificate {cert_source} does not match the signing key {}",
                key.describe()
            )));
        }
        Ok(Signer {
            key,
            cert,
            cert_der,
        })
    }

    /// Loads a PEM key (PKCS#1 or PKCS#8) and a PEM or DER certificate and checks
    /// that the certificate is for this key.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self> {
        let key = super::backends::file::FileKey::load(key_path)?;
        let (cert, _) = load_certificate(cert_path)?;
        Signer::new(Arc::new(key), cert, &cert_path.display().to_string())
    }

    /// A signer from a key and certificate already in memory (freshly generated ones).
    pub fn from_parts(key: RsaKey, cert: Certificate) -> Result<Self> {
        let key = super::backends::file::FileKey::new(key, "a generated key".into());
        Signer::new(Arc::new(key), cert, "the generated certificate")
    }

    /// The key.
    pub fn key(&self) -> &dyn KeySigner {
        &*self.key
    }

    /// The certificate.
    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    /// The certificate's DER bytes.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// RSA PKCS#1 v1.5 signature of a SHA-256 digest, checked: the only operation
    /// Authenticode and authenticated variables need from the key.
    pub fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        sign_checked(&*self.key, HashAlg::Sha256, digest)
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

/// id-ecPublicKey, the algorithm of every EC private key (SEC1 or PKCS#8).
const EC_OID: &str = "1.2.840.10045.2.1";
/// Talos's wording (`key type is not RSA`), with how to get an RSA key.
const NOT_RSA_EC: &str = "key type is not RSA (an EC key; only RSA keys are supported: `imager gen secureboot` makes them)";

/// The algorithm OID of a PKCS#8 `PRIVATE KEY` PEM block, if it parses that far.
fn pkcs8_algorithm(text: &str) -> Option<String> {
    use base64::Engine;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let info = rsa::pkcs8::PrivateKeyInfoRef::try_from(der.as_slice()).ok()?;
    Some(info.algorithm.oid.to_string())
}

/// Reads an RSA private key from a PEM file (`RSA PRIVATE KEY` or `PRIVATE KEY`).
pub fn load_rsa_key(path: &Path) -> Result<RsaKey> {
    let text = std::fs::read_to_string(path).at(path)?;
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        RsaKey::from_pkcs1_pem(&text)
            .map_err(|e| Error::format(path, format!("not a valid PKCS#1 RSA private key: {e}")))
    } else if text.contains("-----BEGIN PRIVATE KEY-----") {
        RsaKey::from_pkcs8_pem(&text).map_err(|e| {
            let why = match pkcs8_algorithm(&text).as_deref() {
                Some(EC_OID) => NOT_RSA_EC.to_string(),
                Some("1.3.101.112") => {
                    "key type is not RSA (an Ed25519 key; only RSA keys are supported: `imager gen secureboot` makes them)".to_string()
                }
                _ => format!("not an RSA private key (only RSA keys are supported): {e}"),
            };
            Error::format(path, why)
        })
    } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        Err(Error::format(path, NOT_RSA_EC))
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
    parse_certificate(&bytes).map_err(|e| Error::format(path, e))
}

/// Parses an X.509 certificate, PEM (the first block) or DER; returns it with its DER.
pub fn parse_certificate(bytes: &[u8]) -> std::result::Result<(Certificate, Vec<u8>), String> {
    let cert = if bytes.starts_with(b"-----BEGIN") || bytes.windows(11).any(|w| w == b"-----BEGIN ")
    {
        let text = String::from_utf8_lossy(bytes);
        let start = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
        let text = &text[start..];
        let end = text
            .find("-----END CERTIFICATE-----")
            .map_or(text.len(), |e| e + "-----END CERTIFICATE-----".len());
        Certificate::from_pem(&text.as_bytes()[..end])
            .map_err(|e| format!("not a valid PEM certificate: {e}"))?
    } else {
        Certificate::from_der(bytes).map_err(|e| format!("not a valid DER certificate: {e}"))?
    };
    let der = cert
        .to_der()
        .map_err(|e| format!("cannot re-encode certificate: {e}"))?;
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
