//! `imager serve` trusts only signed inputs: images pulled from the assets registry
//! are verified (legacy signatures made by Python `cryptography`, the Sidero-signed
//! keyless catalog of Image Factory's test data) before anything of them is used, and a
//! refused one is one log line, a 502 naming the image and the reason, and nothing kept.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cosign::{oracle, push_blob, push_legacy_signature, put_manifest, simple_signing};
use common::registry::registry;

struct Service {
    child: Child,
    url: String,
    log: PathBuf,
    work: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Service {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Service {
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join(format!("{name}.log"));
    let work = dir.join(format!("work-{name}"));
    let child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--registry", &format!("127.0.0.1:{port}/factory")])
        .args(["--assets-registry", &format!("127.0.0.1:{port}/talos")])
        .args(["--insecure-registry", "--insecure-assets-registry"])
        .arg("--work-dir")
        .arg(&work)
        .args(extra)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let s = Service {
        child,
        url: format!("http://127.0.0.1:{http}"),
        log,
        work,
    };
    for _ in 0..100 {
        if get(&format!("{}/healthz", s.url)).0 == 200 {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the service did not come up; log:\n{}", s.log_text());
}

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// A gzip'd tar layer with `files`.
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// `talos/imager:<tag>`: an image with the kernel inputs under usr/install/amd64/.
fn push_imager(port: u16, tag: &str) -> String {
    let l = layer(&[
        ("usr/install/amd64/vmlinuz", b"kernel"),
        ("usr/install/amd64/initramfs.xz", b"initramfs"),
        ("usr/install/amd64/systemd-stub.efi", b"stub"),
        ("usr/install/amd64/systemd-boot.efi", b"boot"),
    ]);
    push_image_layer(port, "talos/imager", tag, &l)
}

fn push_image_layer(port: u16, repo: &str, tag: &str, l: &[u8]) -> String {
    let diff = common::cosign::sha256(&{
        use std::io::Read;
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(l).read_to_end(&mut v).unwrap();
        v
    });
    let ld = push_blob(port, repo, l);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}},"config":{{}}}}"#
    );
    let cd = push_blob(port, repo, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{ld}","size":{}}}]}}"#,
        config.len(),
        l.len()
    );
    put_manifest(
        port,
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    )
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cosign")
}

/// Pushes the Sidero-signed extensions catalog as `talos/extensions:<tag>` with its
/// bundle referrer under the `sha256-<hex>` tag.
fn push_sidero_catalog(port: u16, tag: &str) {
    let repo = "talos/extensions";
    let blob = |layout: &str, d: &str| {
        std::fs::read(data().join(layout).join("blobs/sha256").join(d)).unwrap()
    };
    for d in [
        "263ff3409c99ab6abed308b160ebd774dceb75568b0e019479098226a800ced4",
        "574d9e16099696929f5eeb890ef9a53ba012939b59bd3866b5eb8acc97760b3c",
        "37e1a6bb7d947f4347826f92090f95e9214cd4d218b0c12128a4aa7de5906c7d",
    ] {
        push_blob(port, repo, &blob("extensions-catalog-image", d));
    }
    let digest = put_manifest(
        port,
        repo,
        tag,
        "application/vnd.docker.distribution.manifest.v2+json",
        &blob(
            "extensions-catalog-image",
            "35b6021450b858574e182bbee95d6b9c8ab95f3623fdcc38e62997f763af631e",
        ),
    );
    let sig = "extensions-catalog-signature";
    push_blob(
        port,
        repo,
        &blob(
            sig,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ),
    );
    push_blob(
        port,
        repo,
        &blob(
            sig,
            "1cb58d4133145491babe234449ab14b88f5ee750eaeec3b20ec0345f5352a4bf",
        ),
    );
    let referrer = "a7bef7f443fe8dd71efb4970fef7e085039656c17b4fc0857a81968dd1e61b3c";
    put_manifest(
        port,
        repo,
        &format!("sha256:{referrer}"),
        "application/vnd.oci.image.manifest.v1+json",
        &blob(sig, referrer),
    );
    let index = "dc55f0aeed24ed51131f2a5d6100461df0a86351045660e2ad438a82653e43a5";
    put_manifest(
        port,
        repo,
        &digest.replacen(':', "-", 1),
        "application/vnd.oci.image.index.v1+json",
        &blob(sig, index),
    );
}

#[test]
fn inputs_are_verified_and_a_refused_image_is_neither_used_nor_kept() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let port = reg.1;
    let (key, pubkey) = (dir.path().join("key.pem"), dir.path().join("key.pub"));
    assert!(oracle(&["genkey", key.to_str().unwrap(), pubkey.to_str().unwrap()]).0);
    let pubkey_s = pubkey.to_str().unwrap().to_string();

    // v1.9.0: imager signed with the operator's key (legacy, by Python cryptography),
    // extensions catalog signed keylessly by Sidero Labs.
    let signed = push_imager(port, "v1.9.0");
    push_legacy_signature(
        port,
        "talos/imager",
        &signed,
        &key,
        &simple_signing(&format!("127.0.0.1:{port}/talos/imager"), &signed),
        dir.path(),
    );
    push_sidero_catalog(port, "v1.9.0");
    // v1.9.1: imager not signed at all.
    let unsigned = push_imager_other(port, "v1.9.1");

    let s = start(
        dir.path(),
        "verify",
        port,
        &["--container-signature-pubkey", &pubkey_s],
    );
    let (code, body) = get(&format!("{}/version/v1.9.0/extensions/official", s.url));
    assert_eq!(code, 200, "{body}\n{}", s.log_text());
    assert!(body.contains("my-extension"), "{body}");
    let log = s.log_text();
    assert!(
        log.contains("image signature verified") && log.contains("legacy: public key"),
        "{log}"
    );
    assert!(
        log.contains("bundled: certificate subject albert.kostusev@siderolabs.com"),
        "{log}"
    );

    // Unsigned: one line naming the image and the reason, 502, nothing unpacked.
    let (code, body) = get(&format!("{}/version/v1.9.1/extensions/official", s.url));
    assert_eq!(code, 502, "{body}");
    assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    assert!(
        body.contains(&format!(
            "talos/imager:v1.9.1 ({unsigned}) refused: no signature"
        )),
        "{body}"
    );
    assert!(s.log_text().contains("image signature refused"));
    assert!(!s.work.join("inputs/v1.9.1").exists());
    let leftovers: Vec<_> = std::fs::read_dir(s.work.join("inputs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("v1.9.1"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The service keeps serving.
    assert_eq!(get(&format!("{}/healthz", s.url)).0, 200);
    drop(s);

    // Default policy (Sidero's keyless identity only): the operator-signed imager is refused.
    let s = start(dir.path(), "default", port, &[]);
    let (code, body) = get(&format!("{}/version/v1.9.0/extensions/official", s.url));
    assert_eq!(code, 502, "{body}");
    assert!(
        body.contains("talos/imager:v1.9.0") && body.contains("refused"),
        "{body}"
    );
    drop(s);

    // A signature by another key: refused.
    let other_pub = dir.path().join("other.pub");
    oracle(&[
        "genkey",
        dir.path().join("other.pem").to_str().unwrap(),
        other_pub.to_str().unwrap(),
    ]);
    let s = start(
        dir.path(),
        "other",
        port,
        &["--container-signature-pubkey", other_pub.to_str().unwrap()],
    );
    let (code, body) = get(&format!("{}/version/v1.9.0/extensions/official", s.url));
    assert_eq!(code, 502, "{body}");
    assert!(
        body.contains("does not verify with the public key"),
        "{body}"
    );
    drop(s);

    // Verification disabled: the unsigned image is used.
    let s = start(
        dir.path(),
        "disabled",
        port,
        &["--container-signature-disabled"],
    );
    let (code, body) = get(&format!("{}/version/v1.9.1/extensions/official", s.url));
    assert_eq!(code, 200, "{body}\n{}", s.log_text());
    assert!(s.work.join("inputs/v1.9.1/amd64/vmlinuz").is_file());
}

/// Another imager image (different bytes, so a different digest).
fn push_imager_other(port: u16, tag: &str) -> String {
    let l = layer(&[
        ("usr/install/amd64/vmlinuz", b"kernel 2"),
        ("usr/install/amd64/initramfs.xz", b"initramfs"),
        ("usr/install/amd64/systemd-stub.efi", b"stub"),
        ("usr/install/amd64/systemd-boot.efi", b"boot"),
    ]);
    push_image_layer(port, "talos/imager", tag, &l)
}

/// A cosign legacy verifier written from the spec (sigstore `payload.go`, cosign's
/// `.sig` tag scheme), with Python `cryptography` checking the ECDSA signature:
/// manifest `repo@digest` is signed by the PEM public key `pubkey`. Returns why not.
fn cosign_spec_verify(
    port: u16,
    repo: &str,
    digest: &str,
    pubkey: &Path,
    dir: &Path,
) -> Result<(), String> {
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    let sig_manifest =
        common::cosign::get(port, &format!("{repo}/manifests/{tag}")).ok_or(format!("no {tag}"))?;
    let m: serde_json::Value = serde_json::from_slice(&sig_manifest).unwrap();
    let layers = m["layers"].as_array().ok_or("no layers")?;
    for l in layers {
        if l["mediaType"] != "application/vnd.dev.cosign.simplesigning.v1+json" {
            continue;
        }
        let payload = common::cosign::get(
            port,
            &format!("{repo}/blobs/{}", l["digest"].as_str().unwrap()),
        )
        .ok_or("payload blob missing")?;
        let p: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
        if p["critical"]["type"] != "cosign container image signature"
            || p["critical"]["image"]["docker-manifest-digest"] != digest
            || p["critical"]["identity"]["docker-reference"]
                != format!("127.0.0.1:{port}/{repo}").as_str()
            || !p["optional"].is_null()
        {
            return Err(format!("payload {p}"));
        }
        let sig = l["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .ok_or("no signature annotation")?;
        let f = dir.join("signed-payload.json");
        std::fs::write(&f, &payload).unwrap();
        let (ok, why) = oracle(&["verify", pubkey.to_str().unwrap(), f.to_str().unwrap(), sig]);
        return if ok { Ok(()) } else { Err(why) };
    }
    Err("no simple-signing layer".into())
}

fn tags(port: u16, repo: &str) -> Vec<String> {
    let list = common::cosign::get(port, &format!("{repo}/tags/list")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&list).unwrap_or_default();
    v["tags"]
        .as_array()
        .map(|t| t.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn cached_assets_are_signed_and_a_bad_signature_is_a_cache_miss() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let port = reg.1;
    let (key, pubkey) = (dir.path().join("cache.pem"), dir.path().join("cache.pub"));
    assert!(oracle(&["genkey", key.to_str().unwrap(), pubkey.to_str().unwrap()]).0);
    push_imager_other(port, "v1.9.1");
    // The external URL is part of the cache key: the same for both replicas.
    let args = [
        "--external-url",
        "http://factory.test",
        "--container-signature-disabled",
        "--cache-signing-key-path",
        key.to_str().unwrap(),
    ];
    let s = start(dir.path(), "signer", port, &args);

    // The public key served is the key's.
    let (code, served) = get(&format!("{}/oci/cosign/signing-key.pub", s.url));
    assert_eq!(code, 200);
    let served_file = dir.path().join("served.pub");
    std::fs::write(&served_file, &served).unwrap();

    let created = ureq::post(&format!("{}/schematics", s.url))
        .send_string("customization: {}\n")
        .unwrap()
        .into_string()
        .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let url = format!("{}/image/{id}/v1.9.1/kernel-amd64", s.url);
    let (code, body) = get(&url);
    assert_eq!(code, 200, "{body}\n{}", s.log_text());
    assert_eq!(body, "kernel 2");

    // One cache entry, signed: the spec-written verifier accepts it with the key file's
    // public key and with the one served.
    let mut cache_tags = tags(port, "factory/cache");
    for _ in 0..50 {
        if cache_tags.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        cache_tags = tags(port, "factory/cache");
    }
    let entry: Vec<&String> = cache_tags
        .iter()
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    assert_eq!(entry.len(), 1, "{cache_tags:?}");
    let manifest = (0..50)
        .find_map(|_| {
            let m = common::cosign::get(port, &format!("factory/cache/manifests/{}", entry[0]));
            if m.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            m
        })
        .expect("the cache entry's manifest");
    let digest = common::cosign::sha256(&manifest);
    assert!(
        cache_tags.contains(&format!("{}.sig", digest.replacen(':', "-", 1))),
        "{cache_tags:?}"
    );
    cosign_spec_verify(port, "factory/cache", &digest, &pubkey, dir.path()).unwrap();
    cosign_spec_verify(port, "factory/cache", &digest, &served_file, dir.path()).unwrap();
    drop(s);

    // A signature by another key: the entry is a cache miss, built again and signed anew.
    let (other, other_pub) = (dir.path().join("o.pem"), dir.path().join("o.pub"));
    oracle(&[
        "genkey",
        other.to_str().unwrap(),
        other_pub.to_str().unwrap(),
    ]);
    push_legacy_signature(
        port,
        "factory/cache",
        &digest,
        &other,
        &simple_signing(&format!("127.0.0.1:{port}/factory/cache"), &digest),
        dir.path(),
    );
    assert!(cosign_spec_verify(port, "factory/cache", &digest, &pubkey, dir.path()).is_err());
    // The same work directory: the cache key covers the inputs as unpacked there.
    let s = start(dir.path(), "signer", port, &args);
    let url = format!("{}/image/{id}/v1.9.1/kernel-amd64", s.url);
    let (code, body) = get(&url);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "kernel 2");
    let log = s.log_text();
    assert!(log.contains("cache entry signature invalid"), "{log}");
    // The entry is stored again after the response: signed anew with the cache key.
    let mut verdict = Err(String::new());
    for _ in 0..50 {
        verdict = cosign_spec_verify(port, "factory/cache", &digest, &pubkey, dir.path());
        if verdict.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    verdict.unwrap();
    // Read again: now a hit, no further warning.
    let warned = s
        .log_text()
        .matches("cache entry signature invalid")
        .count();
    let (code, _) = get(&url);
    assert_eq!(code, 200);
    assert_eq!(
        s.log_text()
            .matches("cache entry signature invalid")
            .count(),
        warned,
        "{}",
        s.log_text()
    );
}

fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut r = ureq::request(method, url);
    if let Some(t) = token {
        r = r.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => r.send_string(b),
        None => r.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

#[test]
fn access_control_matrix_audit_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = registry(d);
    // Inputs: the demo kernel inputs as Talos v1.10.0; SecureBoot keys for signed assets.
    let assets = d.join("assets");
    std::fs::create_dir_all(assets.join("v1.10.0")).unwrap();
    std::os::unix::fs::symlink(
        common::demo_dir().join("amd64"),
        assets.join("v1.10.0/amd64"),
    )
    .unwrap();
    let keys = common::gen_keys(d);
    // An OIDC provider's key (Python cryptography) and its JWKS.
    let (idp, idp_pub) = (d.join("idp.pem"), d.join("idp.pub"));
    assert!(oracle(&["genkey", idp.to_str().unwrap(), idp_pub.to_str().unwrap()]).0);
    let (ok, jwks) = oracle(&["jwks", idp_pub.to_str().unwrap(), "k1"]);
    assert!(ok, "{jwks}");
    std::fs::write(d.join("jwks.json"), jwks).unwrap();
    // The JWKS is read from a URL (a loopback HTTP server, as an IdP's jwks_uri).
    let jwks_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _jwks_server = KillOnDrop(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &jwks_port.to_string(),
            ])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if get(&format!("http://127.0.0.1:{jwks_port}/jwks.json")).0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(
        d.join("tokens"),
        "# identity token\nalice alice-0123456789abcdef\nbob bob-0123456789abcdef0\ndave dave-0123456789abcdef\n",
    )
    .unwrap();
    let audit = d.join("audit.log");
    let jwks_url = format!("http://127.0.0.1:{jwks_port}/jwks.json");
    std::fs::write(
        d.join("policy.yaml"),
        format!(
            "tokens: {tokens}\noidc:\n  issuer: https://idp.test\n  audience: imager\n  jwks: {jwks}\n\
             anonymous:\n  createSchematics: false\n\
             rules:\n\
             - identities: [alice, \"re:^ci-[a-z]+@idp\\\\.test$\"]\n  signedAssets: true\n  talosVersions: [\"v1.10.*\"]\n  extensions: [\"siderolabs/hello-*\"]\n  kernelArgs: [\"console=*\", \"talos.config=https://cfg.test/*\"]\n  denyKernelArgs: [\"init=*\"]\n\
             - identities: [\"*\"]\n\
             limits:\n  schematicsPerMinute: 5\n\
             auditLog: {audit}\n",
            tokens = d.join("tokens").display(),
            jwks = jwks_url,
            audit = audit.display(),
        ),
    )
    .unwrap();
    let log = d.join("serve.log");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args([
            "--registry",
            &format!("127.0.0.1:{}/factory", reg.1),
            "--insecure-registry",
        ])
        .arg("--assets")
        .arg(&assets)
        .arg("--secureboot-dir")
        .arg(&keys)
        .arg("--auth-policy")
        .arg(d.join("policy.yaml"))
        .arg("--work-dir")
        .arg(d.join("work"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let s = Service {
        child,
        url: format!("http://127.0.0.1:{http}"),
        log,
        work: d.join("work"),
    };
    for _ in 0..100 {
        if get(&format!("{}/healthz", s.url)).0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let alice = Some("alice-0123456789abcdef");
    let bob = Some("bob-0123456789abcdef0");
    let create = |token: Option<&str>, body: &str| {
        request("POST", &format!("{}/schematics", s.url), token, Some(body))
    };
    let id_of = |r: (u16, String, Vec<u8>)| -> String {
        assert_eq!(r.0, 201, "{}", r.1);
        serde_json::from_str::<serde_json::Value>(&r.1).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let one_line = |r: &(u16, String, Vec<u8>), status: u16, needle: &str| {
        assert_eq!(r.0, status, "{}", r.1);
        assert_eq!(r.1.trim_end().lines().count(), 1, "{}", r.1);
        assert!(r.1.contains(needle), "{needle:?} in {}", r.1);
    };
    let built = || s.log_text().matches("\"message\":\"built\"").count();

    // Schematics: anonymous may not create; alice may.
    one_line(
        &create(None, "customization: {}\n"),
        401,
        "authentication required to create schematics",
    );
    let good = id_of(create(
        alice,
        "customization:\n    extraKernelArgs:\n        - console=ttyS1\n",
    ));
    let init = id_of(create(
        alice,
        "customization:\n    extraKernelArgs:\n        - init=/bin/sh\n",
    ));
    let ext = id_of(create(
        alice,
        "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/gvisor\n",
    ));

    let signed = |id: &str| {
        format!(
            "{}/image/{id}/v1.10.0/metal-amd64-secureboot-uki.efi",
            s.url
        )
    };
    let unsigned = |id: &str| format!("{}/image/{id}/v1.10.0/kernel-amd64", s.url);
    // Unsigned asset without a token: served.
    let r = request("GET", &unsigned(&good), None, None);
    assert_eq!(r.0, 200, "{}", r.1);
    let before = built();
    // Signed asset: no token 401, wrong token 401, bob 403, alice with init= 403,
    // alice with a forbidden extension 403 — and none of them builds anything.
    one_line(
        &request("GET", &signed(&good), None, None),
        401,
        "authentication required to get signed assets",
    );
    one_line(
        &request("GET", &signed(&good), Some("nope-0123456789abcdef"), None),
        401,
        "invalid credentials",
    );
    one_line(
        &request("GET", &signed(&good), bob, None),
        403,
        "bob may not get signed assets",
    );
    one_line(
        &request("GET", &signed(&init), alice, None),
        403,
        "with kernel argument init=/bin/sh",
    );
    one_line(
        &request("GET", &signed(&ext), alice, None),
        403,
        "with extension siderolabs/gvisor",
    );
    let expired = oracle(&[
        "jwt",
        idp.to_str().unwrap(),
        "k1",
        "https://idp.test",
        "imager",
        "ci-deploy@idp.test",
        "-3600",
    ])
    .1;
    one_line(
        &request("GET", &signed(&good), Some(&expired), None),
        401,
        "token expired",
    );
    let other_aud = oracle(&[
        "jwt",
        idp.to_str().unwrap(),
        "k1",
        "https://idp.test",
        "other",
        "ci-deploy@idp.test",
        "600",
    ])
    .1;
    one_line(
        &request("GET", &signed(&good), Some(&other_aud), None),
        401,
        "audience",
    );
    assert_eq!(
        built(),
        before,
        "a refused request built something:\n{}",
        s.log_text()
    );
    assert!(!audit.exists() || std::fs::read_to_string(&audit).unwrap().is_empty());

    // Allowed: alice by token, then ci-deploy by an OIDC token; each is one audit line
    // with the SHA-256 of the bytes served.
    let r = request("GET", &signed(&good), alice, None);
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(&r.2[..2], b"MZ");
    let jwt = oracle(&[
        "jwt",
        idp.to_str().unwrap(),
        "k1",
        "https://idp.test",
        "imager",
        "ci-deploy@idp.test",
        "600",
    ])
    .1;
    let r2 = request("GET", &signed(&good), Some(&jwt), None);
    assert_eq!(r2.0, 200, "{}", r2.1);
    std::thread::sleep(Duration::from_millis(200));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let digest = common::cosign::sha256(&r.2);
    for (l, who) in lines.iter().zip(["alice", "ci-deploy@idp.test"]) {
        assert_eq!(l["identity"], who);
        assert_eq!(l["schematic"], good.as_str());
        assert_eq!(l["version"], "v1.10.0");
        assert_eq!(l["asset"], "metal-amd64-secureboot-uki.efi");
        assert_eq!(l["sha256"], digest.as_str());
        assert_eq!(l["bytes"], r.2.len());
    }

    // Per-client schematic limit: dave's 6th in a minute is 429, alice (3 so far) is
    // still served.
    let dave = Some("dave-0123456789abcdef");
    for i in 0..5 {
        id_of(create(
            dave,
            &format!("customization:\n    extraKernelArgs:\n        - n={i}\n"),
        ));
    }
    one_line(
        &create(dave, "customization: {}\n"),
        429,
        "dave created 5 schematics in the last minute",
    );
    id_of(create(alice, "customization: {}\n"));
    assert_eq!(get(&format!("{}/healthz", s.url)).0, 200);
}

/// A helper process ended with the test, whatever its outcome.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An OCI layout holding an installer base per architecture (a shell script installer).
fn installer_base_layout(dir: &Path, tag: &str) {
    let tars: Vec<(&str, Vec<u8>)> = ["amd64", "arm64"]
        .into_iter()
        .map(|arch| {
            let tar = common::tar_of(&[
                (
                    "usr/bin/installer",
                    0o755,
                    format!("#!/bin/sh\necho installer {arch}\n").into_bytes(),
                ),
                ("etc/os-release", 0o644, b"ID=talos\n".to_vec()),
            ]);
            (arch, tar)
        })
        .collect();
    let images: Vec<common::oci::Image> = tars
        .iter()
        .map(|(arch, tar)| common::oci::Image {
            arch,
            layers: vec![(tar.as_slice(), common::oci::Layer::Gzip)],
            config: serde_json::json!({"Entrypoint": ["/usr/bin/installer"]}),
        })
        .collect();
    common::oci::layout(dir, &images, tag);
}

/// What a Talos node with an `ImageVerificationConfig` public-key rule does with the
/// installer the service hands it: resolve the tag to the index digest (here the 307
/// to the store), then require a cosign signature of that digest by the rule's key.
#[test]
fn served_installer_passes_a_public_key_image_verification_rule() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = registry(d);
    let assets = d.join("assets");
    let v = assets.join("v1.10.0");
    std::fs::create_dir_all(&v).unwrap();
    for arch in ["amd64", "arm64"] {
        std::os::unix::fs::symlink(common::demo_dir().join(arch), v.join(arch)).unwrap();
    }
    installer_base_layout(&v.join("installer-base"), "v1.10.0");
    let (key, pubkey) = (d.join("cache.pem"), d.join("cache.pub"));
    assert!(oracle(&["genkey", key.to_str().unwrap(), pubkey.to_str().unwrap()]).0);
    let log = d.join("serve.log");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args([
            "--registry",
            &format!("127.0.0.1:{}/factory", reg.1),
            "--insecure-registry",
        ])
        .arg("--assets")
        .arg(&assets)
        .arg("--cache-signing-key-path")
        .arg(&key)
        .arg("--work-dir")
        .arg(d.join("work"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let s = Service {
        child,
        url: format!("http://127.0.0.1:{http}"),
        log,
        work: d.join("work"),
    };
    for _ in 0..100 {
        if get(&format!("{}/healthz", s.url)).0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The rule's key is the one the service publishes.
    let (code, served) = get(&format!("{}/oci/cosign/signing-key.pub", s.url));
    assert_eq!(code, 200);
    let served_file = d.join("served.pub");
    std::fs::write(&served_file, &served).unwrap();

    let r = request(
        "POST",
        &format!("{}/schematics", s.url),
        None,
        Some("customization:\n    extraKernelArgs:\n        - console=ttyS1\n"),
    );
    let id = serde_json::from_str::<serde_json::Value>(&r.1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let resp = match agent
        .head(&format!("{}/v2/installer/{id}/manifests/v1.10.0", s.url))
        .call()
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(resp.status(), 307, "{}", s.log_text());
    let location = resp.header("location").unwrap().to_string();
    let digest = location.rsplit('/').next().unwrap().to_string();
    assert!(
        location.contains(&format!("/v2/factory/installer/{id}/manifests/sha256:")),
        "{location}"
    );
    let repo = format!("factory/installer/{id}");
    cosign_spec_verify(reg.1, &repo, &digest, &served_file, d).unwrap();
    cosign_spec_verify(reg.1, &repo, &digest, &pubkey, d).unwrap();
    // Another key (a rule naming someone else's key) refuses it.
    let other = d.join("other.pub");
    oracle(&[
        "genkey",
        d.join("other.pem").to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    assert!(cosign_spec_verify(reg.1, &repo, &digest, &other, d).is_err());
}
