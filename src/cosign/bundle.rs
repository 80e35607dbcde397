//! Sigstore bundles (v0.1–v0.3) holding a DSSE envelope, as cosign 3 attaches them to
//! an image as OCI referrers (artifact type `application/vnd.dev.sigstore.bundle.v0.3+json`).
//!
//! What is checked follows cosign's bundle verification and Image Factory's claim
//! check (`internal/image/attestation/verification.go`): the DSSE signature over the
//! PAE (DSSE spec, `protocol.md`) with the policy's key or the Fulcio certificate; for
//! keyless, the Rekor `dsse 0.0.1` entry records this payload and signature by this
//! certificate; the payload is an in-toto Statement v1 whose predicate type is
//! `https://sigstore.dev/cosign/sign/v1` and one of whose subjects has the image's digest.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::keyless::{ChainJson, InclusionProof, LogIdJson, RawJson, TlogEntry};
use super::{Policy, Verified};

/// Media type of the bundle (layer and artifact type of the referrer).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The predicate type cosign 3 signs images with.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleJson {
    media_type: String,
    verification_material: Material,
    dsse_envelope: Option<Envelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    certificate: Option<RawJson>,
    x509_certificate_chain: Option<ChainJson>,
    #[serde(default)]
    tlog_entries: Vec<TlogJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogJson {
    log_index: String,
    log_id: LogIdJson,
    integrated_time: String,
    inclusion_promise: Option<PromiseJson>,
    inclusion_proof: Option<ProofJson>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromiseJson {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProofJson {
    log_index: String,
    root_hash: String,
    tree_size: String,
    hashes: Vec<String>,
    checkpoint: CheckpointJson,
}

#[derive(Deserialize)]
struct CheckpointJson {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<SigJson>,
}

#[derive(Deserialize)]
struct SigJson {
    sig: String,
}

/// A parsed bundle.
pub struct Bundle {
    certificate: Option<Vec<u8>>,
    tlog: Vec<TlogEntry>,
    payload: Vec<u8>,
    payload_type: String,
    signatures: Vec<(String, Vec<u8>)>,
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    B64.decode(s).map_err(|e| format!("{what}: {e}"))
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{what} is not a number"))
}

impl Bundle {
    /// Parses a bundle's JSON.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, String> {
        let json: BundleJson = serde_json::from_slice(bytes).map_err(|e| format!("bundle: {e}"))?;
        if !json
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle")
        {
            return Err(format!("bundle media type {:?}", json.media_type));
        }
        let m = json.verification_material;
        let certificate = match (m.certificate, m.x509_certificate_chain) {
            (Some(c), _) => Some(b64(&c.raw_bytes, "certificate")?),
            (None, Some(chain)) => match chain.certificates.first() {
                Some(c) => Some(b64(&c.raw_bytes, "certificate")?),
                None => None,
            },
            (None, None) => None,
        };
        let tlog = m
            .tlog_entries
            .iter()
            .map(|t| {
                Ok(TlogEntry {
                    log_index: num(&t.log_index, "logIndex")?,
                    log_id: b64(&t.log_id.key_id, "logId")?,
                    integrated_time: num(&t.integrated_time, "integratedTime")?,
                    body: b64(&t.canonicalized_body, "canonicalizedBody")?,
                    set: t
                        .inclusion_promise
                        .as_ref()
                        .map(|p| b64(&p.signed_entry_timestamp, "signedEntryTimestamp"))
                        .transpose()?,
                    proof: t
                        .inclusion_proof
                        .as_ref()
                        .map(|p| {
                            Ok::<_, String>(InclusionProof {
                                index: num(&p.log_index, "inclusionProof.logIndex")?,
                                tree_size: num(&p.tree_size, "treeSize")?,
                                root_hash: b64(&p.root_hash, "rootHash")?,
                                hashes: p
                                    .hashes
                                    .iter()
                                    .map(|h| b64(h, "inclusion proof hash"))
                                    .collect::<Result<_, _>>()?,
                                checkpoint: p.checkpoint.envelope.clone(),
                            })
                        })
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let env = json.dsse_envelope.ok_or(
            "bundle holds no DSSE envelope (a message signature is not an image signature)",
        )?;
        Ok(Bundle {
            certificate,
            tlog,
            payload: b64(&env.payload, "DSSE payload")?,
            payload_type: env.payload_type,
            signatures: env
                .signatures
                .iter()
                .map(|s| Ok((s.sig.clone(), b64(&s.sig, "DSSE signature")?)))
                .collect::<Result<_, String>>()?,
        })
    }

    /// DSSE pre-authentication encoding of the payload.
    fn pae(&self) -> Vec<u8> {
        let mut v = format!(
            "DSSEv1 {} {} {} ",
            self.payload_type.len(),
            self.payload_type,
            self.payload.len()
        )
        .into_bytes();
        v.extend_from_slice(&self.payload);
        v
    }

    /// Verifies the bundle for image `digest` (`sha256:<hex>`) under `policy`.
    pub fn verify(&self, digest: &str, policy: &Policy) -> Result<Verified, String> {
        if self.payload_type != IN_TOTO_PAYLOAD {
            return Err(format!("DSSE payload type {:?}", self.payload_type));
        }
        let pae = self.pae();
        let verified = match policy {
            Policy::PublicKey(key) => {
                if !self
                    .signatures
                    .iter()
                    .any(|(_, s)| key.verify(super::keys::Hash::Sha256, &pae, s))
                {
                    return Err("the bundle's signature does not verify with the public key".into());
                }
                Verified {
                    method: "bundled",
                    policy: "public key".into(),
                }
            }
            Policy::Keyless { root, identity } => {
                let cert = self
                    .certificate
                    .as_ref()
                    .ok_or("the bundle has no signing certificate")?;
                let entry = self
                    .tlog
                    .first()
                    .ok_or("the bundle has no transparency log entry")?;
                if !root.verify_tlog(entry)? {
                    return Err(
                        "the bundle's transparency log entry has no signed entry timestamp to date it"
                            .into(),
                    );
                }
                let (key, subject) =
                    root.verify_certificate(cert, entry.integrated_time, identity)?;
                let Some((sig_b64, _)) = self
                    .signatures
                    .iter()
                    .find(|(_, s)| key.verify(super::keys::Hash::Sha256, &pae, s))
                else {
                    return Err(
                        "the bundle's signature does not verify with its certificate".into(),
                    );
                };
                self.check_dsse_body(&entry.body, sig_b64, cert)?;
                Verified {
                    method: "bundled",
                    policy: format!("certificate subject {subject}"),
                }
            }
        };
        self.check_statement(digest)?;
        Ok(verified)
    }

    /// The Rekor `dsse 0.0.1` body records this payload, signature and certificate.
    fn check_dsse_body(&self, body: &[u8], sig_b64: &str, cert: &[u8]) -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("transparency log body: {e}"))?;
        if v["kind"] != "dsse" {
            return Err(format!("transparency log entry kind {}", v["kind"]));
        }
        let spec = &v["spec"];
        let payload_hash = hex::encode(Sha256::digest(&self.payload));
        if spec["payloadHash"]["value"] != payload_hash.as_str() {
            return Err("the transparency log entry records another payload".into());
        }
        let ok = spec["signatures"].as_array().is_some_and(|sigs| {
            sigs.iter().any(|s| {
                s["signature"] == sig_b64
                    && s["verifier"]
                        .as_str()
                        .and_then(|p| B64.decode(p).ok())
                        .and_then(|p| super::keys::pem_block(&p, "CERTIFICATE"))
                        .is_some_and(|der| der == cert)
            })
        });
        if !ok {
            return Err(
                "the transparency log entry records another signature or certificate".into(),
            );
        }
        Ok(())
    }

    /// The in-toto statement names the image and cosign's signing predicate.
    fn check_statement(&self, digest: &str) -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_slice(&self.payload).map_err(|e| format!("in-toto statement: {e}"))?;
        let t = v["_type"].as_str().unwrap_or_default();
        if t != "https://in-toto.io/Statement/v1" && t != "https://in-toto.io/Statement/v0.1" {
            return Err(format!("payload is not an in-toto statement ({t:?})"));
        }
        if v["predicateType"] != COSIGN_SIGN_PREDICATE {
            return Err(format!(
                "statement predicate type {} is not {COSIGN_SIGN_PREDICATE}",
                v["predicateType"]
            ));
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let named = v["subject"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"] == hex));
        if !named {
            return Err(format!("the signed statement does not name {digest}"));
        }
        Ok(())
    }
}
