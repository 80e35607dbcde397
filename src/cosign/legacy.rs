//! Legacy cosign signatures: an image manifest tagged `sha256-<hex>.sig` in the
//! image's repository whose layers are simple-signing payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`), each with its base64
//! signature in the annotation `dev.cosignproject.cosign/signature` and, when keyless,
//! the Fulcio certificate (`dev.sigstore.cosign/certificate`) and the Rekor entry
//! (`dev.sigstore.cosign/bundle`). Follows cosign `pkg/oci/static`, `pkg/cosign/verify.go`
//! and sigstore `pkg/signature/payload/payload.go` (the payload's JSON shape).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::keyless::TlogEntry;
use super::keys::{Hash, SigningKey};
use super::{Policy, Verified};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const CERT_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The tag the signatures of manifest `digest` live under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The simple-signing payload for `docker_reference` (registry/repository) at
/// `digest`, byte for byte as cosign writes it (`SignImage` with no annotations).
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    // Written out rather than through a JSON map: the key order is the struct's,
    // whatever map type serde_json was built with.
    let q = |s: &str| serde_json::to_string(s).unwrap();
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":{}}},\"image\":{{\"docker-manifest-digest\":{}}},\"type\":{}}},\"optional\":null}}",
        q(docker_reference),
        q(digest),
        q(PAYLOAD_TYPE)
    )
    .into_bytes()
}

/// One layer of a signature manifest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

/// The simple-signing layers of a signature manifest.
pub fn layers(manifest: &[u8]) -> Result<Vec<Layer>, String> {
    let m: Manifest =
        serde_json::from_slice(manifest).map_err(|e| format!("signature manifest: {e}"))?;
    Ok(m.layers
        .into_iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING)
        .collect())
}

/// Verifies one layer (its payload already read and digest-checked) for image `digest`.
pub fn verify_layer(
    layer: &Layer,
    payload: &[u8],
    digest: &str,
    policy: &Policy,
) -> Result<Verified, String> {
    let sig_b64 = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or("no signature annotation")?;
    let sig = B64
        .decode(sig_b64.trim())
        .map_err(|e| format!("signature annotation: {e}"))?;
    let verified = match policy {
        Policy::PublicKey(key) => {
            if !key.verify(Hash::Sha256, payload, &sig) {
                return Err("the signature does not verify with the public key".into());
            }
            Verified {
                method: "legacy",
                policy: "public key".into(),
            }
        }
        Policy::Keyless { root, identity } => {
            let cert_pem = layer
                .annotations
                .get(CERT_ANNOTATION)
                .ok_or("no certificate annotation (not a keyless signature)")?;
            let cert = super::keys::pem_block(cert_pem.as_bytes(), "CERTIFICATE")
                .ok_or("certificate annotation is not a PEM certificate")?;
            let entry = rekor_bundle(
                layer
                    .annotations
                    .get(BUNDLE_ANNOTATION)
                    .ok_or("no transparency log bundle annotation")?,
            )?;
            if !root.verify_tlog(&entry)? {
                return Err("the transparency log entry has no signed entry timestamp".into());
            }
            let (key, subject) = root.verify_certificate(&cert, entry.integrated_time, identity)?;
            if !key.verify(Hash::Sha256, payload, &sig) {
                return Err("the signature does not verify with its certificate".into());
            }
            check_hashedrekord(&entry.body, payload, sig_b64.trim(), &cert)?;
            Verified {
                method: "legacy",
                policy: format!("certificate subject {subject}"),
            }
        }
    };
    check_payload(payload, digest)?;
    Ok(verified)
}

/// The payload names image `digest` and is a cosign container signature.
fn check_payload(payload: &[u8], digest: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("simple-signing payload: {e}"))?;
    let c = &v["critical"];
    if c["type"] != PAYLOAD_TYPE {
        return Err(format!(
            "payload type {} is not {PAYLOAD_TYPE:?}",
            c["type"]
        ));
    }
    if c["image"]["docker-manifest-digest"] != digest {
        return Err(format!(
            "the signed payload names {}, not {digest}",
            c["image"]["docker-manifest-digest"]
        ));
    }
    Ok(())
}

/// cosign's `dev.sigstore.cosign/bundle` annotation: `{SignedEntryTimestamp, Payload:
/// {body, integratedTime, logIndex, logID}}`.
fn rekor_bundle(text: &str) -> Result<TlogEntry, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct RekorBundle {
        signed_entry_timestamp: String,
        payload: RekorPayload,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RekorPayload {
        body: String,
        integrated_time: i64,
        log_index: i64,
        #[serde(rename = "logID")]
        log_id: String,
    }
    let b: RekorBundle =
        serde_json::from_str(text).map_err(|e| format!("transparency log bundle: {e}"))?;
    Ok(TlogEntry {
        log_index: b.payload.log_index,
        log_id: hex::decode(&b.payload.log_id).map_err(|e| format!("logID: {e}"))?,
        integrated_time: b.payload.integrated_time,
        body: B64
            .decode(&b.payload.body)
            .map_err(|e| format!("transparency log body: {e}"))?,
        set: Some(
            B64.decode(&b.signed_entry_timestamp)
                .map_err(|e| format!("SignedEntryTimestamp: {e}"))?,
        ),
        proof: None,
    })
}

/// The Rekor `hashedrekord` body records this payload's hash, signature and certificate.
fn check_hashedrekord(
    body: &[u8],
    payload: &[u8],
    sig_b64: &str,
    cert: &[u8],
) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("transparency log body: {e}"))?;
    let spec = &v["spec"];
    if v["kind"] != "hashedrekord" {
        return Err(format!("transparency log entry kind {}", v["kind"]));
    }
    if spec["data"]["hash"]["value"] != hex::encode(Sha256::digest(payload)).as_str() {
        return Err("the transparency log entry records another payload".into());
    }
    if spec["signature"]["content"] != sig_b64 {
        return Err("the transparency log entry records another signature".into());
    }
    let recorded = spec["signature"]["publicKey"]["content"]
        .as_str()
        .and_then(|p| B64.decode(p).ok())
        .and_then(|p| super::keys::pem_block(&p, "CERTIFICATE"));
    if recorded.as_deref() != Some(cert) {
        return Err("the transparency log entry records another certificate".into());
    }
    Ok(())
}

/// A signature image for `digest` signed by `key`: the config and payload blobs
/// and the manifest (OCI image manifest, as cosign writes it).
pub struct SignatureImage {
    pub config: Vec<u8>,
    pub payload: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// Signs image `digest` of `docker_reference` in the legacy format.
pub fn sign(key: &SigningKey, docker_reference: &str, digest: &str) -> SignatureImage {
    let payload = payload(docker_reference, digest);
    let sig = B64.encode(key.sign(&payload));
    let payload_digest = format!("sha256:{}", hex::encode(Sha256::digest(&payload)));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.len(),
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(&config))),
        },
        "layers": [{
            "mediaType": SIMPLE_SIGNING,
            "size": payload.len(),
            "digest": payload_digest,
            "annotations": {SIGNATURE_ANNOTATION: sig},
        }],
    }))
    .unwrap();
    SignatureImage {
        config,
        payload,
        manifest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes() {
        assert_eq!(
            String::from_utf8(payload("r.example/x", "sha256:ab")).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"r.example/x"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#
        );
        assert_eq!(signature_tag("sha256:ab"), "sha256-ab.sig");
    }
}
