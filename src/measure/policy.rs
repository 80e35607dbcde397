//! The signed PCR 11 policy: TPM2 PolicyPCR digest, its RSA signature, the
//! `.pcrsig` JSON and the `.pcrpkey` PEM.
//!
//! At unlock time the TPM checks the signature over the PolicyPCR digest
//! (TPM2_VerifySignature + TPM2_PolicyAuthorize), so every byte here must match
//! what the TPM computes itself (TPM 2.0 Part 3, TPM2_PolicyPCR).

use base64::Engine;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::digest::Bank;
use crate::error::Result;
use crate::sign::{HashAlg, KeySigner, sign_checked};

/// The PCR the UKI policy covers.
pub const PCR_INDEX: u32 = 11;

/// TPM_CC_PolicyPCR.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;

/// Marshalled TPML_PCR_SELECTION selecting PCR 11 in `bank`:
/// count=1, hash alg, sizeofSelect=3, 3-byte bitmap (PCR n -> bit n%8 of byte n/8).
pub fn pcr_selection(bank: Bank) -> [u8; 10] {
    let mut sel = [0u8; 10];
    sel[..4].copy_from_slice(&1u32.to_be_bytes());
    sel[4..6].copy_from_slice(&bank.alg_id().to_be_bytes());
    sel[6] = 3;
    sel[7 + (PCR_INDEX / 8) as usize] = 1 << (PCR_INDEX % 8);
    sel
}

/// PolicyPCR digest for PCR 11 = `pcr_value` in `bank`. Always SHA-256 (the policy
/// session's hash), whatever the bank: `SHA256(0^32 || CC || selection || SHA256(value))`.
pub fn policy_digest(bank: Bank, pcr_value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(TPM_CC_POLICY_PCR.to_be_bytes());
    h.update(pcr_selection(bank));
    h.update(Sha256::digest(pcr_value));
    h.finalize().into()
}

/// The bank's hash as a signing hash, and the prehash of `pol` with it.
fn scheme(bank: Bank, pol: &[u8; 32]) -> (HashAlg, Vec<u8>) {
    match bank {
        Bank::Sha256 => (HashAlg::Sha256, Sha256::digest(pol).to_vec()),
        Bank::Sha384 => (HashAlg::Sha384, Sha384::digest(pol).to_vec()),
        Bank::Sha512 => (HashAlg::Sha512, Sha512::digest(pol).to_vec()),
    }
}

/// RSASSA-PKCS#1 v1.5 signature over `pol`, hashed with the bank's hash
/// (= `openssl dgst -<bank> -sign key` over the 32 raw bytes), made by `key` and
/// checked against its public key. Deterministic.
pub fn sign(key: &dyn KeySigner, bank: Bank, pol: &[u8; 32]) -> Result<Vec<u8>> {
    let (hash, hashed) = scheme(bank, pol);
    sign_checked(key, hash, &hashed)
}

/// Checks a signature made by [`sign`].
pub fn verify(key: &rsa::PublicKey, bank: Bank, pol: &[u8; 32], sig: &[u8]) -> bool {
    let (hash, hashed) = scheme(bank, pol);
    key.verify(hash.pkcs1v15(), &hashed, sig).is_ok()
}

/// `pkfp`: SHA-256 of the PKCS#1 RSAPublicKey DER (not the SPKI, not the PEM).
pub fn fingerprint(key: &rsa::PublicKey) -> String {
    let der = key
        .to_pkcs1_der()
        .expect("an RSA public key always encodes");
    hex::encode(Sha256::digest(der.as_bytes()))
}

/// `.pcrpkey`: PEM `PUBLIC KEY` (SubjectPublicKeyInfo), 64-column lines, final newline,
/// exactly what `openssl rsa -pubout` prints.
pub fn public_key_pem(key: &rsa::PublicKey) -> String {
    let der = key
        .to_public_key_der()
        .expect("an RSA public key always encodes");
    crate::keys::der_to_pem("PUBLIC KEY", der.as_bytes())
}

/// One signed policy: PCR 11 in `bank` must hold the value whose PolicyPCR digest is `pol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPolicy {
    pub bank: Bank,
    pub pol: [u8; 32],
    pub sig: Vec<u8>,
}

/// Computes and signs the policies for the final PCR values of each bank. The banks
/// are signed concurrently (a remote key answers in tens of milliseconds each); the
/// result is in `values` order whatever finishes first.
pub fn sign_all(key: &dyn KeySigner, values: &[(Bank, &[u8])]) -> Result<Vec<SignedPolicy>> {
    let one = |&(bank, value): &(Bank, &[u8])| {
        let pol = policy_digest(bank, value);
        Ok(SignedPolicy {
            bank,
            pol,
            sig: sign(key, bank, &pol)?,
        })
    };
    if values.len() < 2 {
        return values.iter().map(one).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = values.iter().map(|v| s.spawn(move || one(v))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a signing thread panicked"))
            .collect()
    })
}

/// `.pcrsig` content: compact JSON, one single-entry array per bank, keys in the
/// order `pcrs, pkfp, pol, sig`, no trailing newline (Talos / `systemd-measure --json=short`).
/// Written by hand so the byte layout is fixed and its length is known in advance.
pub fn pcrsig_json(pkfp: &str, policies: &[SignedPolicy]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let banks: Vec<String> = policies
        .iter()
        .map(|p| {
            format!(
                r#""{}":[{{"pcrs":[{PCR_INDEX}],"pkfp":"{pkfp}","pol":"{}","sig":"{}"}}]"#,
                p.bank.name(),
                hex::encode(p.pol),
                b64.encode(&p.sig)
            )
        })
        .collect();
    format!("{{{}}}", banks.join(","))
}

/// Length of the `.pcrsig` JSON for `key` and `banks`: fixed, because every field has a
/// fixed width for a given key size. Lets the UKI writer reserve the section before signing.
pub fn pcrsig_len(key: &dyn KeySigner, banks: &[Bank]) -> usize {
    let placeholder: Vec<SignedPolicy> = banks
        .iter()
        .map(|&bank| SignedPolicy {
            bank,
            pol: [0; 32],
            sig: vec![0; key.public_key().size()],
        })
        .collect();
    pcrsig_json(&"0".repeat(64), &placeholder).len()
}

/// One entry of a `.pcrsig` as read back by `imager inspect`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PcrSigEntry {
    pub pcrs: Vec<u32>,
    pub pkfp: String,
    pub pol: String,
    pub sig: String,
}

/// Parses `.pcrsig` JSON into `(bank name, entries)`, in file order.
pub fn parse_pcrsig(json: &[u8]) -> std::result::Result<Vec<(String, Vec<PcrSigEntry>)>, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| format!("not valid JSON: {e}"))?;
    map.into_iter()
        .map(|(bank, v)| {
            let entries: Vec<PcrSigEntry> = serde_json::from_value(v)
                .map_err(|e| format!("bank {bank}: unexpected shape: {e}"))?;
            Ok((bank, entries))
        })
        .collect()
}

/// Bank by its `.pcrsig` name.
pub fn bank_by_name(name: &str) -> Option<Bank> {
    super::BANKS.iter().copied().find(|b| b.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec 4.1: TPML_PCR_SELECTION bytes per bank.
    #[test]
    fn pcr_selection_bytes() {
        assert_eq!(
            hex::encode(pcr_selection(Bank::Sha256)),
            "00000001000b03000800"
        );
        assert_eq!(
            hex::encode(pcr_selection(Bank::Sha384)),
            "00000001000c03000800"
        );
        assert_eq!(
            hex::encode(pcr_selection(Bank::Sha512)),
            "00000001000d03000800"
        );
    }

    /// Spec 4.1: `pol` values pinned in Talos' measure test, from its PCR values.
    #[test]
    fn policy_digest_golden() {
        let cases = [
            (
                Bank::Sha256,
                "535f91bd7887cccefedd0b0344b3ce7d4fc390f356b276960547502657258839",
                "c0c4f61f8ac39267a7638cde8029b82a0ccd378b2acbfdffb77ee1f0f9d464ec",
            ),
            (
                Bank::Sha384,
                "07a81a45b36a54296527f424360e376e6cf74ab4681c035079832ea68525bc02926fd793151665408ecc182bd32b5b03",
                "e8f6311e36f9ee038df65255ae7c471d1d1f91ce742b98a152be72337f6c937d",
            ),
            (
                Bank::Sha512,
                "3521e1c6a94931d1cdd17de5141bb8d6ef6fa88d5eb5d069e1dc321d649ac601087d0613fedcf05e67f7508683f40fecaabbfb994a8876d8d7bd3ebbeb8bdf28",
                "207a8217158f9cc521dca50358a593dc61ed9308ef27da9df4ef64d634309160",
            ),
        ];
        for (bank, pcr, pol) in cases {
            assert_eq!(
                hex::encode(policy_digest(bank, &hex::decode(pcr).unwrap())),
                pol,
                "{bank:?}"
            );
        }
    }
}
