//! Image signature verification (`imager verify`, the checks `imager serve` runs on its
//! inputs) against independent judges: sigstore-python on a real Sidero Labs keyless
//! signature (Image Factory's integration data, tests/data/cosign), and legacy
//! signatures made by Python `cryptography` over cosign's simple-signing payload, both
//! served by a loopback registry.

mod common;

use std::path::{Path, PathBuf};

use common::cosign::{
    get, oracle, push_blob, push_image, push_legacy_signature, push_signature_layer, put_manifest,
    sha256, simple_signing,
};
use common::registry::registry;
use common::{imager, run_ok};

const CATALOG: &str = "sha256:35b6021450b858574e182bbee95d6b9c8ab95f3623fdcc38e62997f763af631e";
const SIGNER: &str = "albert.kostusev@siderolabs.com";
const ISSUER: &str = "https://accounts.google.com";

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cosign")
}

fn blob(layout: &str, digest: &str) -> Vec<u8> {
    std::fs::read(data().join(layout).join("blobs/sha256").join(&digest[7..])).unwrap()
}

/// Pushes the Sidero-signed catalog (Docker v2 manifest and its blobs) as
/// `siderolabs/extensions:v1`, and its bundle referrer under the referrers tag
/// `sha256-<hex>` (Debian's registry has no referrers API: the tag schema is what
/// cosign falls back to). `manifest` replaces the catalog manifest's bytes.
fn push_catalog(port: u16, manifest: &[u8], bundle: &[u8]) -> String {
    let repo = "siderolabs/extensions";
    for d in [
        "sha256:263ff3409c99ab6abed308b160ebd774dceb75568b0e019479098226a800ced4",
        "sha256:574d9e16099696929f5eeb890ef9a53ba012939b59bd3866b5eb8acc97760b3c",
        "sha256:37e1a6bb7d947f4347826f92090f95e9214cd4d218b0c12128a4aa7de5906c7d",
    ] {
        push_blob(port, repo, &blob("extensions-catalog-image", d));
    }
    let digest = put_manifest(
        port,
        repo,
        "v1",
        "application/vnd.docker.distribution.manifest.v2+json",
        manifest,
    );
    push_blob(port, repo, b"{}");
    let bundle_digest = push_blob(port, repo, bundle);
    // The referrer manifest as cosign wrote it, pointing at this bundle.
    let referrer = String::from_utf8(blob(
        "extensions-catalog-signature",
        "sha256:a7bef7f443fe8dd71efb4970fef7e085039656c17b4fc0857a81968dd1e61b3c",
    ))
    .unwrap()
    .replace(
        "sha256:1cb58d4133145491babe234449ab14b88f5ee750eaeec3b20ec0345f5352a4bf",
        &bundle_digest,
    )
    .replace(r#""size": 6977"#, &format!(r#""size": {}"#, bundle.len()));
    let referrer_digest = put_manifest(
        port,
        repo,
        &sha256(referrer.as_bytes()),
        "application/vnd.oci.image.manifest.v1+json",
        referrer.as_bytes(),
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": referrer.len(),
            "digest": referrer_digest,
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        }],
    });
    put_manifest(
        port,
        repo,
        &digest.replacen(':', "-", 1),
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    digest
}

fn verify(port: u16, image: &str, extra: &[&str]) -> std::process::Output {
    imager()
        .args([
            "verify",
            &format!("127.0.0.1:{port}/{image}"),
            "--insecure-registry",
        ])
        .arg("--container-signature-trusted-root")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sigstore/trusted_root.json"))
        .args(extra)
        .output()
        .unwrap()
}

/// A refusal ([`common::refused`]) whose stderr is that one line and nothing else.
fn one_error_line(out: &std::process::Output) -> String {
    common::refused(out, &[], "a refused verification");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

/// What sigstore-python says of `bundle` for image `digest` and `subject`.
fn sigstore_python(bundle: &[u8], subject: &str, digest: &str, dir: &Path) -> (bool, String) {
    let f = dir.join("bundle.json");
    std::fs::write(&f, bundle).unwrap();
    oracle(&["sigstore", f.to_str().unwrap(), subject, ISSUER, digest])
}

#[test]
fn sidero_keyless_bundle_accepted_and_refused_as_sigstore_python_says() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let manifest = blob("extensions-catalog-image", CATALOG);
    let bundle = blob(
        "extensions-catalog-signature",
        "sha256:1cb58d4133145491babe234449ab14b88f5ee750eaeec3b20ec0345f5352a4bf",
    );

    // Genuine: both accept, for Sidero's default identity rule.
    assert_eq!(push_catalog(reg.1, &manifest, &bundle), CATALOG);
    let (ok, why) = sigstore_python(&bundle, SIGNER, CATALOG, dir.path());
    assert!(ok, "sigstore-python refused the genuine bundle: {why}");
    let out = verify(reg.1, "siderolabs/extensions:v1", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{CATALOG}: signature verified (bundled: certificate subject {SIGNER})"
        )),
        "{stdout}"
    );

    // Another identity: both refuse.
    let (ok, _) = sigstore_python(&bundle, "someone@example.com", CATALOG, dir.path());
    assert!(!ok);
    let err = one_error_line(&verify(
        reg.1,
        "siderolabs/extensions:v1",
        &["--container-signature-subject-regexp", r"@example\.com$"],
    ));
    assert!(
        err.contains("siderolabs/extensions:v1") && err.contains("does not match"),
        "{err}"
    );
    // Another issuer: refused.
    let err = one_error_line(&verify(
        reg.1,
        "siderolabs/extensions:v1",
        &[
            "--container-signature-issuer",
            "https://github.com/login/oauth",
        ],
    ));
    assert!(err.contains("issuer"), "{err}");

    // A flipped byte in the signed payload (one base64 character of the in-toto
    // statement): both refuse.
    let text = String::from_utf8(bundle.clone()).unwrap();
    let at = text
        .find(r#""payload": ""#)
        .or(text.find(r#""payload":""#))
        .unwrap();
    let pos = text[at..].find("eyJfdHlw").unwrap() + at + 20;
    let mut flipped = bundle.clone();
    flipped[pos] = if flipped[pos] == b'A' { b'B' } else { b'A' };
    let (ok, _) = sigstore_python(&flipped, SIGNER, CATALOG, dir.path());
    assert!(!ok, "sigstore-python accepted a changed payload");
    push_catalog(reg.1, &manifest, &flipped);
    let err = one_error_line(&verify(reg.1, "siderolabs/extensions:v1", &[]));
    assert!(err.contains("refused"), "{err}");

    // A flipped byte in the image manifest: the bundle no longer names the image.
    let mut changed = manifest.clone();
    let p = changed.iter().position(|b| *b == b'\n').unwrap();
    changed.insert(p, b' ');
    let digest = push_catalog(reg.1, &changed, &bundle);
    let (ok, why) = sigstore_python(&bundle, SIGNER, &digest, dir.path());
    assert!(!ok && why.contains("does not name"), "{why}");
    let err = one_error_line(&verify(reg.1, "siderolabs/extensions:v1", &[]));
    assert!(
        err.contains(&digest) && err.contains("does not name"),
        "{err}"
    );
}

#[test]
fn legacy_signatures_made_by_python_cryptography() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let (key, pubkey) = (dir.path().join("key.pem"), dir.path().join("key.pub"));
    let (ok, why) = oracle(&["genkey", key.to_str().unwrap(), pubkey.to_str().unwrap()]);
    assert!(ok, "{why}");
    let (other, other_pub) = (dir.path().join("other.pem"), dir.path().join("other.pub"));
    oracle(&[
        "genkey",
        other.to_str().unwrap(),
        other_pub.to_str().unwrap(),
    ]);
    let repo_ref = format!("127.0.0.1:{}/siderolabs/overlay", reg.1);
    let run = |tag: &str, key: &Path| {
        imager()
            .args([
                "verify",
                &format!("{repo_ref}:{tag}"),
                "--insecure-registry",
            ])
            .arg("--container-signature-pubkey")
            .arg(key)
            .output()
            .unwrap()
    };

    // Signed as cosign signs: verified with the key, refused with another key.
    let good = push_image(reg.1, "siderolabs/overlay", "good", b"good layer");
    push_legacy_signature(
        reg.1,
        "siderolabs/overlay",
        &good,
        &key,
        &simple_signing(&repo_ref, &good),
        dir.path(),
    );
    let out = run("good", &pubkey);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{good}: signature verified (legacy: public key)")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = one_error_line(&run("good", &other_pub));
    assert!(err.contains("does not verify with the public key"), "{err}");

    // A payload changed after signing: refused (and the Python judge agrees).
    let tampered = push_image(reg.1, "siderolabs/overlay", "tampered", b"tampered layer");
    let payload = simple_signing(&repo_ref, &tampered);
    let file = dir.path().join("p.json");
    std::fs::write(&file, &payload).unwrap();
    let (_, sig) = oracle(&["sign", key.to_str().unwrap(), file.to_str().unwrap()]);
    let mut changed = payload.clone();
    changed.extend_from_slice(b" ");
    push_signature_layer(reg.1, "siderolabs/overlay", &tampered, &changed, &sig);
    std::fs::write(&file, &changed).unwrap();
    assert!(
        !oracle(&[
            "verify",
            pubkey.to_str().unwrap(),
            file.to_str().unwrap(),
            &sig
        ])
        .0
    );
    let err = one_error_line(&run("tampered", &pubkey));
    assert!(err.contains("tampered") && err.contains("refused"), "{err}");

    // A valid signature over another image's payload: refused (names another digest).
    let moved = push_image(reg.1, "siderolabs/overlay", "moved", b"moved layer");
    push_legacy_signature(
        reg.1,
        "siderolabs/overlay",
        &moved,
        &key,
        &simple_signing(&repo_ref, &good),
        dir.path(),
    );
    let err = one_error_line(&run("moved", &pubkey));
    assert!(err.contains(&format!("names \"{good}\"")), "{err}");

    // No signature at all: refused.
    push_image(reg.1, "siderolabs/overlay", "unsigned", b"unsigned layer");
    let err = one_error_line(&run("unsigned", &pubkey));
    assert!(err.contains("no signature"), "{err}");
    assert!(get(reg.1, "siderolabs/overlay/tags/list").is_some());
    let _ = run_ok;
}

/// A system extension image layer: manifest.yaml and one file under rootfs/.
fn extension_layer() -> Vec<u8> {
    let manifest = b"version: v1alpha1\nmetadata:\n    name: signed-hello\n    version: v1.0.0\n    author: Test\n    description: |\n        A test extension.\n    compatibility:\n        talos:\n            version: '>= v1.0.0'\n";
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in [
        ("manifest.yaml", &manifest[..], 0o644),
        (
            "rootfs/usr/local/share/signed-hello/hello.txt",
            &b"hello\n"[..],
            0o644,
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn cli_verifies_registry_extension_images_behind_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let (key, pubkey) = (dir.path().join("key.pem"), dir.path().join("key.pub"));
    assert!(oracle(&["genkey", key.to_str().unwrap(), pubkey.to_str().unwrap()]).0);
    let layer = extension_layer();
    let signed = push_image(reg.1, "ext/signed", "v1", &layer);
    let signed_ref = format!("127.0.0.1:{}/ext/signed:v1", reg.1);
    push_legacy_signature(
        reg.1,
        "ext/signed",
        &signed,
        &key,
        &simple_signing(&format!("127.0.0.1:{}/ext/signed", reg.1), &signed),
        dir.path(),
    );
    push_image(reg.1, "ext/unsigned", "v1", &layer);
    let unsigned_ref = format!("127.0.0.1:{}/ext/unsigned:v1", reg.1);
    let build = |image: &str, verify: bool| {
        let mut b = common::demo_build("metal")
            .no_console()
            .args(["--output-kind", "initramfs", "--insecure"])
            .args(["--system-extension-image", image]);
        if verify {
            b = b
                .arg("--verify-image-signatures")
                .arg("--container-signature-pubkey")
                .arg(&pubkey);
        }
        b
    };

    // Unsigned, with the flag: one line naming the image and the reason, nothing written.
    let failed = build(&unsigned_ref, true).run_err();
    let line = failed.error_line();
    assert!(
        line.contains(&unsigned_ref) && line.contains("refused: no signature"),
        "{}",
        failed.stderr
    );
    assert!(failed.left().is_empty(), "{:?}", failed.left());
    // Signed, with the flag: verified, then built.
    let built = build(&signed_ref, true).run();
    assert!(
        built.stderr.contains(&format!(
            "{signed_ref}: signature verified (legacy: public key)"
        )),
        "{}",
        built.stderr
    );
    // Without the flag the unsigned image is used (the refusal above is the flag's).
    let built = build(&unsigned_ref, false).run();
    assert!(!built.stderr.contains("signature"), "{}", built.stderr);
}
