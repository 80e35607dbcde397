//! Pushing images and cosign signatures to the loopback registry by hand (OCI
//! Distribution calls over ureq), and the Python judges of tests/cosign/oracle.py.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use super::sha256;

/// Monolithic blob upload (POST, then PUT ?digest=); returns the digest.
pub fn push_blob(port: u16, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let base = format!("http://127.0.0.1:{port}");
    let r = ureq::post(&format!("{base}/v2/{repo}/blobs/uploads/"))
        .call()
        .expect("start upload");
    let loc = r.header("location").expect("upload location").to_string();
    let loc = if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    ureq::put(&format!("{loc}{sep}digest={digest}"))
        .set("Content-Type", "application/octet-stream")
        .send_bytes(bytes)
        .expect("finish upload");
    digest
}

/// PUT a manifest under `reference` with `media_type`; returns its digest.
pub fn put_manifest(
    port: u16,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    ureq::put(&format!(
        "http://127.0.0.1:{port}/v2/{repo}/manifests/{reference}"
    ))
    .set("Content-Type", media_type)
    .send_bytes(bytes)
    .unwrap_or_else(|e| panic!("PUT manifest {repo}:{reference}: {e}"));
    sha256(bytes)
}

/// GET a manifest or blob path under /v2/; `None` on 404.
pub fn get(port: u16, path: &str) -> Option<Vec<u8>> {
    match ureq::get(&format!("http://127.0.0.1:{port}/v2/{path}"))
        .set(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        )
        .call()
    {
        Ok(r) => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut v).unwrap();
            Some(v)
        }
        Err(ureq::Error::Status(404, _)) => None,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// A one-layer OCI image with `content` as its layer; returns the manifest digest.
pub fn push_image(port: u16, repo: &str, tag: &str, content: &[u8]) -> String {
    let layer = push_blob(port, repo, content);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"config":{{}}}}"#
    );
    let config_digest = push_blob(port, repo, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
        config.len(),
        content.len()
    );
    put_manifest(
        port,
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    )
}

/// The Python that has sigstore and cryptography (a venv the CI script makes).
pub fn python() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("SIGSTORE_PYTHON").unwrap_or("/opt/sigstore/bin/python".into()),
    );
    assert!(
        p.is_file(),
        "{} is missing (the CI script installs sigstore-python there)",
        p.display()
    );
    p
}

/// Runs tests/cosign/oracle.py; returns (success, stdout).
pub fn oracle(args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cosign/oracle.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// A legacy cosign signature of `repo`@`digest` made by Python `cryptography` with
/// `key` over `payload` (written as cosign writes it unless the test says otherwise),
/// pushed as `sha256-<hex>.sig`.
pub fn push_legacy_signature(
    port: u16,
    repo: &str,
    digest: &str,
    key: &Path,
    payload: &[u8],
    dir: &Path,
) {
    let file = dir.join("payload.json");
    std::fs::write(&file, payload).unwrap();
    let (ok, sig) = oracle(&["sign", key.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(ok, "{sig}");
    push_signature_layer(port, repo, digest, payload, &sig);
}

/// Pushes a signature manifest for `digest` with one simple-signing layer.
pub fn push_signature_layer(port: u16, repo: &str, digest: &str, payload: &[u8], sig_b64: &str) {
    let layer = push_blob(port, repo, payload);
    let config = b"{}";
    let config_digest = push_blob(port, repo, config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": layer,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": sig_b64},
        }],
    });
    put_manifest(
        port,
        repo,
        &format!("{}.sig", digest.replacen(':', "-", 1)),
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
}

/// The simple-signing payload as cosign writes it (sigstore `payload.go`).
pub fn simple_signing(reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}
