//! Authenticode signing judged by sbverify, osslsigncode, sbsign and pefile.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{demo_dir, require_tool, run_ok};
use imager::keys::Signer;
use imager::sign::authenticode;

/// Signing time of the signatures made here.
const SIGNING_TIME: u64 = 1_700_000_000;

/// A throw-away RSA key and self-signed certificate made by openssl (independent of
/// our generator, which has its own tests).
fn openssl_signer(dir: &Path) -> (Signer, PathBuf, PathBuf) {
    require_tool("openssl");
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=imager test",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (Signer::load(&key, &cert).unwrap(), key, cert)
}

fn inputs() -> Vec<PathBuf> {
    let demo = demo_dir();
    [
        "amd64/systemd-boot.efi",
        "amd64/systemd-stub.efi",
        "amd64-252/systemd-boot.efi",
        "amd64-252/systemd-stub.efi",
    ]
    .iter()
    .map(|p| demo.join(p))
    .collect()
}

fn sign_copy(input: &Path, output: &Path, signer: &Signer) {
    let mut out = std::fs::File::create(output).unwrap();
    authenticode::sign_to(input, &mut out, output, signer, SIGNING_TIME).unwrap();
}

/// Runs a command, returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn osslsigncode_verify(file: &Path, cert: &Path) -> (bool, String) {
    require_tool("osslsigncode");
    run(Command::new("osslsigncode")
        .arg("verify")
        .arg("-CAfile")
        .arg(cert)
        .arg("-in")
        .arg(file))
}

/// The digest osslsigncode reads from the signature ("Current") and recomputes ("Calculated").
fn osslsigncode_digests(text: &str) -> (String, String) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .map(|v| v.trim().trim_start_matches(':').trim().to_lowercase())
            })
            .unwrap_or_else(|| panic!("no {name:?} in osslsigncode output:\n{text}"))
    };
    (
        field("Current message digest"),
        field("Calculated message digest"),
    )
}

/// (stored CheckSum, pefile's generate_checksum()).
fn pefile_checksums(file: &Path) -> (u32, u32) {
    let out = run_ok(common::python().arg("-c").arg(
        "import pefile,sys; pe=pefile.PE(sys.argv[1]); print(pe.OPTIONAL_HEADER.CheckSum, pe.generate_checksum())",
    ).arg(file));
    let v: Vec<u32> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn signed_copies_verify_with_sbverify_osslsigncode_and_ourselves() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _, cert) = openssl_signer(dir.path());
    for input in inputs() {
        let out = dir.path().join("signed.efi");
        sign_copy(&input, &out, &signer);

        let (ok, text) = common::sbverify_cert(&out, &cert);
        assert!(
            ok && text.contains("Signature verification OK"),
            "sbverify on {}:\n{text}",
            input.display()
        );
        let (ok, text) = osslsigncode_verify(&out, &cert);
        assert!(
            ok && text.contains("Signature verification: ok"),
            "osslsigncode on {}:\n{text}",
            input.display()
        );
        let (current, calculated) = osslsigncode_digests(&text);
        let ours = hex::encode(authenticode::image_digest(&input).unwrap());
        assert_eq!(
            (current.as_str(), calculated.as_str()),
            (ours.as_str(), ours.as_str()),
            "{}",
            input.display()
        );

        let (stored, expected) = pefile_checksums(&out);
        assert_eq!(
            stored,
            expected,
            "PE checksum of signed {}",
            input.display()
        );

        let sigs = authenticode::verify(&out).unwrap();
        assert_eq!(sigs.len(), 1);
        assert!(
            sigs[0].digest_matches && sigs[0].signature_valid,
            "{:?}",
            sigs[0]
        );
        assert_eq!(sigs[0].signer_fingerprint, signer.cert_fingerprint());
        assert!(
            sigs[0].signer_subject.contains("imager test"),
            "{}",
            sigs[0].signer_subject
        );
        // Signing again from the signed copy's own image gives the same digest.
        assert_eq!(
            authenticode::image_digest(&out).unwrap().to_vec(),
            sigs[0].image_digest
        );
    }
}

#[test]
fn digest_equals_what_sbsign_embeds_and_we_verify_sbsign_output() {
    require_tool("sbsign");
    let dir = tempfile::tempdir().unwrap();
    let (_, key, cert) = openssl_signer(dir.path());
    for input in inputs() {
        let out = dir.path().join("sbsigned.efi");
        run(Command::new("sbsign")
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(&out)
            .arg(&input));
        let (_, text) = osslsigncode_verify(&out, &cert);
        let (embedded, _) = osslsigncode_digests(&text);
        assert_eq!(
            embedded,
            hex::encode(authenticode::image_digest(&input).unwrap()),
            "{}",
            input.display()
        );

        let sigs = authenticode::verify(&out).unwrap();
        assert_eq!(sigs.len(), 1);
        assert!(
            sigs[0].digest_matches && sigs[0].signature_valid,
            "our verify on sbsign output: {:?}",
            sigs[0]
        );
    }
}

#[test]
fn a_flipped_byte_in_a_section_is_rejected_by_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _, cert) = openssl_signer(dir.path());
    let input = demo_dir().join("amd64/systemd-boot.efi");
    let out = dir.path().join("signed.efi");
    sign_copy(&input, &out, &signer);
    let mut bytes = std::fs::read(&out).unwrap();
    // 0x2000 lies inside .text (the first section) of systemd-boot.
    bytes[0x2000] ^= 0x01;
    let bad = dir.path().join("tampered.efi");
    std::fs::write(&bad, &bytes).unwrap();

    let (ok, text) = common::sbverify_cert(&bad, &cert);
    assert!(!ok, "sbverify accepted a tampered file:\n{text}");
    let (ok, text) = osslsigncode_verify(&bad, &cert);
    assert!(!ok, "osslsigncode accepted a tampered file:\n{text}");
    let sigs = authenticode::verify(&bad).unwrap();
    assert!(
        !sigs[0].digest_matches && sigs[0].signature_valid,
        "{:?}",
        sigs[0]
    );

    // A flipped byte inside the signature itself breaks the signature, not the digest.
    let mut bytes = std::fs::read(&out).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0x01;
    std::fs::write(&bad, &bytes).unwrap();
    assert!(!common::sbverify_cert(&bad, &cert).0);
    let sigs = authenticode::verify(&bad).unwrap();
    assert!(
        sigs[0].digest_matches && !sigs[0].signature_valid,
        "{:?}",
        sigs[0]
    );
}

#[test]
fn signing_in_place_and_signing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _, cert) = openssl_signer(dir.path());
    let file = dir.path().join("boot.efi");
    std::fs::copy(demo_dir().join("amd64-252/systemd-boot.efi"), &file).unwrap();
    let before = authenticode::image_digest(&file).unwrap();
    authenticode::sign_in_place(&file, &signer, SIGNING_TIME).unwrap();
    assert!(common::sbverify_cert(&file, &cert).0);
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 8, 0);

    // A second signature is appended; both cover the same image digest.
    let other = tempfile::tempdir().unwrap();
    let (signer2, _, cert2) = openssl_signer(other.path());
    authenticode::sign_in_place(&file, &signer2, SIGNING_TIME).unwrap();
    let sigs = authenticode::verify(&file).unwrap();
    assert_eq!(sigs.len(), 2);
    assert!(
        sigs.iter()
            .all(|s| s.digest_matches && s.signature_valid && s.image_digest == before),
        "{sigs:?}"
    );
    assert_eq!(sigs[1].signer_fingerprint, signer2.cert_fingerprint());
    let (stored, expected) = pefile_checksums(&file);
    assert_eq!(stored, expected);
    // sbverify walks every entry of the table and accepts either certificate.
    // (osslsigncode only reads a table holding one entry; it nests further
    // signatures inside the first, so it is no judge here.)
    assert!(common::sbverify_cert(&file, &cert).0);
    assert!(
        common::sbverify_cert(&file, &cert2).0,
        "{}",
        common::sbverify_cert(&file, &cert2).1
    );
    let (ok, list) = run(Command::new("sbverify").arg("--list").arg(&file));
    assert!(
        ok && list.lines().filter(|l| l.starts_with("signature ")).count() == 2,
        "{list}"
    );
}

#[test]
fn a_large_section_is_hashed_by_streaming() {
    require_tool("objcopy");
    let dir = tempfile::tempdir().unwrap();
    let (signer, _, cert) = openssl_signer(dir.path());
    let blob = dir.path().join("big.bin");
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&blob, &data).unwrap();
    drop(data);
    let big = dir.path().join("big.efi");
    run_ok(
        Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".big={}", blob.display()))
            .args([
                "--change-section-vma",
                ".big=0x10000000",
                "--set-section-flags",
                ".big=data,readonly",
            ])
            .arg(demo_dir().join("amd64/systemd-stub.efi"))
            .arg(&big),
    );
    assert!(std::fs::metadata(&big).unwrap().len() > 64 << 20);
    authenticode::sign_in_place(&big, &signer, SIGNING_TIME).unwrap();
    assert!(common::sbverify_cert(&big, &cert).0);
    let (ok, text) = osslsigncode_verify(&big, &cert);
    assert!(ok, "{text}");
    let (current, calculated) = osslsigncode_digests(&text);
    assert_eq!(current, calculated);
    let (stored, expected) = pefile_checksums(&big);
    assert_eq!(stored, expected);
}

#[test]
fn bad_input_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _, _) = openssl_signer(dir.path());
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "not a PE file at all, just some text that is long enough to have a header\n".repeat(2),
    )
    .unwrap();
    let err = authenticode::sign_in_place(&text, &signer, SIGNING_TIME)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("notes.txt") && err.contains("not a PE image"),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(&text)
            .unwrap()
            .starts_with("not a PE")
    );

    let full = std::fs::read(demo_dir().join("amd64/systemd-boot.efi")).unwrap();
    let cut = dir.path().join("cut.efi");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let err = authenticode::image_digest(&cut).unwrap_err().to_string();
    assert!(
        err.contains("cut.efi") && err.contains("truncated"),
        "{err}"
    );
    let err = authenticode::verify(&dir.path().join("missing.efi"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.efi"), "{err}");
}
