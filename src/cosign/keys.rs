//! Public keys that verify cosign signatures (PEM `PUBLIC KEY`, as `cosign
//! public-key` writes them, or a certificate's key) and the ECDSA P-256 key that
//! signs what `imager serve` pushes (PEM `EC PRIVATE KEY` from `openssl ecparam
//! -genkey`, or PKCS#8 `PRIVATE KEY`).
//!
//! The arithmetic is ring's (already in the tree through rustls): ECDSA P-256/P-384,
//! RSA PKCS#1 v1.5 and Ed25519 verification, ECDSA P-256 signing.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use super::der::{DerResult, oid};
use crate::sign::tlv::{Reader, encode, tag};

/// The key types a signature can be checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcP256,
    EcP384,
    Rsa,
    Ed25519,
}

/// A public key: its type, the bytes ring takes, and its `SubjectPublicKeyInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: KeyType,
    key: Vec<u8>,
    pub spki: Vec<u8>,
}

/// Hash a signature was made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
}

impl PublicKey {
    /// Parses a DER `SubjectPublicKeyInfo`.
    pub fn from_spki(spki: &[u8]) -> DerResult<PublicKey> {
        let de = |x: crate::sign::tlv::DerError| x.0;
        let mut r = Reader::new(spki);
        let seq = r
            .expect(tag::SEQUENCE, "SubjectPublicKeyInfo")
            .map_err(de)?;
        let mut s = seq.children();
        let alg = s.expect(tag::SEQUENCE, "algorithm").map_err(de)?;
        let mut a = alg.children();
        let alg_oid = a.expect(tag::OID, "algorithm").map_err(de)?.content;
        let param = a.optional(tag::OID).map_err(de)?.map(|p| p.content);
        let bits = s.expect(tag::BIT_STRING, "subjectPublicKey").map_err(de)?;
        let key = match bits.content.split_first() {
            Some((0, k)) => k.to_vec(),
            _ => return Err("public key BIT STRING has unused bits".into()),
        };
        let kind = match (alg_oid, param) {
            (oid::EC_PUBLIC_KEY, Some(oid::P256)) => KeyType::EcP256,
            (oid::EC_PUBLIC_KEY, Some(oid::P384)) => KeyType::EcP384,
            (oid::RSA, _) => KeyType::Rsa,
            (oid::ED25519, _) => KeyType::Ed25519,
            _ => {
                return Err(
                    "unsupported public key type (ECDSA P-256/P-384, RSA, Ed25519 are)".into(),
                );
            }
        };
        Ok(PublicKey {
            kind,
            key,
            spki: spki.to_vec(),
        })
    }

    /// Parses a PEM `PUBLIC KEY`.
    pub fn from_pem(text: &[u8]) -> DerResult<PublicKey> {
        let der = pem_block(text, "PUBLIC KEY").ok_or("no PEM PUBLIC KEY block")?;
        PublicKey::from_spki(&der)
    }

    /// The key as a PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        to_pem("PUBLIC KEY", &self.spki)
    }

    /// Whether `sig` (ASN.1 DER for ECDSA) over `msg` with `hash` verifies.
    pub fn verify(&self, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let alg: &'static dyn VerificationAlgorithm = match (self.kind, hash) {
            (KeyType::EcP256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
            (KeyType::EcP256, Hash::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
            (KeyType::EcP384, Hash::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
            (KeyType::EcP384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
            (KeyType::Rsa, Hash::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (KeyType::Rsa, Hash::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (KeyType::Ed25519, _) => &signature::ED25519,
        };
        UnparsedPublicKey::new(alg, &self.key)
            .verify(msg, sig)
            .is_ok()
    }

    /// Whether a certificate signature with algorithm `alg_oid` verifies.
    pub fn verify_x509(&self, alg_oid: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let hash = match alg_oid {
            oid::ECDSA_SHA256 | oid::RSA_SHA256 => Hash::Sha256,
            oid::ECDSA_SHA384 => Hash::Sha384,
            _ => return false,
        };
        self.verify(hash, msg, sig)
    }
}

/// The ECDSA P-256 key that signs cache entries and installers.
pub struct SigningKey {
    pair: signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    pub public: PublicKey,
}

impl SigningKey {
    /// Reads a PEM `EC PRIVATE KEY` (SEC 1) or `PRIVATE KEY` (PKCS#8) on P-256.
    pub fn from_pem(text: &[u8]) -> DerResult<SigningKey> {
        let pkcs8 = if let Some(sec1) = pem_block(text, "EC PRIVATE KEY") {
            // PKCS#8 wrapping of a SEC 1 key: version 0, id-ecPublicKey on
            // prime256v1, the key as an OCTET STRING (RFC 5915 §3, RFC 5208 §5).
            let alg = encode(
                tag::SEQUENCE,
                &[
                    encode(tag::OID, oid::EC_PUBLIC_KEY),
                    encode(tag::OID, oid::P256),
                ]
                .concat(),
            );
            encode(
                tag::SEQUENCE,
                &[
                    encode(tag::INTEGER, &[0]),
                    alg,
                    encode(tag::OCTET_STRING, &sec1),
                ]
                .concat(),
            )
        } else if let Some(p8) = pem_block(text, "PRIVATE KEY") {
            p8
        } else if pem_block(text, "ENCRYPTED SIGSTORE PRIVATE KEY").is_some() {
            return Err("is a password-protected cosign key; export it unencrypted \
                 (openssl ecparam -name prime256v1 -genkey -noout) or use a PEM EC PRIVATE KEY"
                .into());
        } else {
            return Err("no PEM EC PRIVATE KEY or PRIVATE KEY block".into());
        };
        let rng = ring::rand::SystemRandom::new();
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &rng,
        )
        .map_err(|e| format!("not an ECDSA P-256 private key with its public key ({e})"))?;
        use ring::signature::KeyPair;
        let point = pair.public_key().as_ref().to_vec();
        let alg = encode(
            tag::SEQUENCE,
            &[
                encode(tag::OID, oid::EC_PUBLIC_KEY),
                encode(tag::OID, oid::P256),
            ]
            .concat(),
        );
        let spki = encode(
            tag::SEQUENCE,
            &[alg, encode(tag::BIT_STRING, &[&[0u8][..], &point].concat())].concat(),
        );
        Ok(SigningKey {
            pair,
            rng,
            public: PublicKey {
                kind: KeyType::EcP256,
                key: point,
                spki,
            },
        })
    }

    /// ECDSA P-256 over SHA-256(`msg`), ASN.1 DER.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&self.rng, msg)
            .expect("ECDSA signing with a system RNG")
            .as_ref()
            .to_vec()
    }
}

/// The DER of the first PEM block labelled `label`.
pub fn pem_block(text: &[u8], label: &str) -> Option<Vec<u8>> {
    pem_blocks(text, label).into_iter().next()
}

/// The DER of every PEM block labelled `label`, in order.
pub fn pem_blocks(text: &[u8], label: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(text);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = &text[..];
    while let Some(i) = rest.find(&begin) {
        let after = &rest[i + begin.len()..];
        let Some(j) = after.find(&end) else { break };
        let b64: String = after[..j].split_whitespace().collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &after[j + end.len()..];
    }
    out
}

/// DER as PEM with 64-column lines.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}
