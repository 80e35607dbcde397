//! Signer backends judged against the file signer: the same RSA keys in PEM files and
//! in a backend must give byte-identical artifacts (RSASSA-PKCS1-v1_5 is
//! deterministic), and sbverify must accept them. PKCS#11 is judged with SoftHSM2
//! (Debian `softhsm2`), the keys imported (not generated) so the file build is
//! comparable; certificates are written to the token with OpenSC's `pkcs11-tool`. The
//! external signer (Talos 1.14 `signerapi.SignerService`) is judged by a grpcio
//! server generated from the proto with grpcio-tools (`tests/signers/`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::build::demo_build;
use common::{gen_keys, imager, require_tool, run_ok, sbverify};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";

/// A SoftHSM2 token `release` (user PIN 1234) in a temporary directory, holding the
/// UKI signing key (`object=uki`, id 01) with its certificate and the PCR key
/// (`object=pcr`, id 02) of a `gen_keys` directory, plus an EC key (`object=ec`).
struct SoftHsm {
    dir: tempfile::TempDir,
    keys: PathBuf,
}

impl SoftHsm {
    fn new() -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing (the CI script installs softhsm2)"
        );
        let dir = tempfile::tempdir().unwrap();
        let keys = gen_keys(dir.path());
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
        let hsm = SoftHsm { dir, keys };
        hsm.util(&[
            "--init-token",
            "--free",
            "--label",
            "release",
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ]);
        let openssl = require_tool("openssl");
        let p8 = |from: &Path, name: &str| {
            let to = hsm.dir.path().join(name);
            run_ok(
                Command::new(&openssl)
                    .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
                    .arg(from)
                    .arg("-out")
                    .arg(&to),
            );
            to
        };
        let uki = p8(&hsm.keys.join("uki-signing-key.pem"), "uki.p8");
        let pcr = p8(&hsm.keys.join("pcr-signing-key.pem"), "pcr.p8");
        let ec = hsm.dir.path().join("ec.pem");
        common::ec_key(&ec);
        let ec = p8(&ec, "ec.p8");
        for (file, label, id) in [(&uki, "uki", "01"), (&pcr, "pcr", "02"), (&ec, "ec", "03")] {
            let file = file.to_str().unwrap();
            hsm.util(&[
                "--import", file, "--token", "release", "--label", label, "--id", id, "--pin", PIN,
            ]);
        }
        let der = hsm.dir.path().join("uki.der");
        run_ok(
            Command::new(&openssl)
                .args(["x509", "-outform", "der", "-in"])
                .arg(hsm.keys.join("uki-signing-cert.pem"))
                .arg("-out")
                .arg(&der),
        );
        run_ok(
            hsm.env(&mut Command::new(require_tool("pkcs11-tool")))
                .args(["--module", MODULE, "--token-label", "release", "--login"])
                .args([
                    "--pin", PIN, "--type", "cert", "--label", "uki", "--id", "01",
                ])
                .arg("--write-object")
                .arg(&der),
        );
        hsm
    }

    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"))
    }

    fn util(&self, args: &[&str]) {
        run_ok(
            self.env(&mut Command::new(require_tool("softhsm2-util")))
                .args(["--module", MODULE])
                .args(args),
        );
    }

    fn pin_file(&self) -> String {
        self.dir.path().join("pin").display().to_string()
    }

    /// The key `object` on the token, PIN from a file, module from the URI.
    fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token=release;object={object}?pin-source=file:{}&module-path={MODULE}",
            self.pin_file()
        )
    }

    /// The effective profile of a `profile` build with the PEM keys, as YAML, its
    /// signer fields replaced by `key`, `cert` and `pcr` where given; written to a file.
    fn profile(
        &self,
        profile: &str,
        arch: &str,
        key: Option<&str>,
        cert: Option<&str>,
        pcr: Option<&str>,
    ) -> PathBuf {
        let out = demo_build(profile)
            .keys(&self.keys)
            .arch(arch)
            .arg("--dry-run")
            .output();
        assert!(out.status.success(), "{out:?}");
        let mut yaml = String::from_utf8(out.stdout).unwrap();
        let k = |f: &str| self.keys.join(f).display().to_string();
        for (from, to) in [
            (format!("keyPath: {}", k("uki-signing-key.pem")), key),
            (format!("certPath: {}", k("uki-signing-cert.pem")), cert),
            (format!("keyPath: {}", k("pcr-signing-key.pem")), pcr),
        ] {
            assert!(yaml.contains(&from), "{from} not in\n{yaml}");
            if let Some(to) = to {
                let field = from.split(':').next().unwrap();
                yaml = yaml.replace(&from, &format!("{field}: {to:?}"));
            }
        }
        let path = self
            .dir
            .path()
            .join(format!("{profile}-{arch}-{}.yaml", rand_suffix()));
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn pkcs11_keys_sign_byte_identical_artifacts() {
    let hsm = SoftHsm::new();
    let cert_uri = format!("pkcs11:token=release;object=uki;type=cert?module-path={MODULE}");
    // PCR key by id, module from the environment, PIN in the URI.
    let pcr_uri = format!("pkcs11:token=release;id=%02?pin-value={PIN}");
    for (profile, arch) in [
        ("secureboot-iso", "amd64"),
        ("secureboot-metal-uki", "arm64"),
    ] {
        let files = demo_build(hsm.profile(profile, arch, None, None, None))
            .arch(arch)
            .run();
        // Key on the token, certificate in a file; then both on the token.
        for cert in [None, Some(cert_uri.as_str())] {
            let p = hsm.profile(profile, arch, Some(&hsm.uri("uki")), cert, Some(&pcr_uri));
            let token = demo_build(&p)
                .arch(arch)
                .env("SOFTHSM2_CONF", hsm.dir.path().join("softhsm2.conf"))
                .env("IMAGER_PKCS11_MODULE", MODULE)
                .run();
            assert!(
                !token.stderr.contains(&format!("pin-value={PIN}")),
                "{}",
                token.stderr
            );
            assert!(
                token.bytes() == files.bytes(),
                "{profile} {arch}: {} differs from the file-key build",
                token.artifact.display()
            );
            let manifest = token.manifest.to_string();
            assert!(
                manifest.contains("pin-value=***")
                    && !manifest.contains(&format!("pin-value={PIN}")),
                "the manifest must not hold the PIN:\n{manifest}"
            );
            let out = &token.artifact;
            if profile == "secureboot-metal-uki" {
                sbverify(&hsm.keys, out);
            }
        }
    }
}

#[test]
fn pkcs11_key_signs_the_enrollment_database_like_the_file() {
    let hsm = SoftHsm::new();
    let cert = hsm.keys.join("uki-signing-cert.pem");
    let db = |key: &str, out: &Path| {
        let o = hsm
            .env(&mut imager())
            .args(["gen", "secureboot", "database", "--signing-key", key])
            .arg("--signing-certificate")
            .arg(&cert)
            .arg("--enrolled-certificate")
            .arg(&cert)
            .arg("--output")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (a, b) = (
        hsm.dir.path().join("db-file"),
        hsm.dir.path().join("db-token"),
    );
    db(hsm.keys.join("uki-signing-key.pem").to_str().unwrap(), &a);
    db(&hsm.uri("uki"), &b);
    for f in ["PK.auth", "KEK.auth", "db.auth"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// A refused build: SecureBoot key, certificate, PCR key (`None`: the PEM file) and
/// the expected part of the error line.
type Case = (Option<String>, Option<String>, Option<String>, &'static str);

#[test]
fn pkcs11_refusals_are_one_line_and_leave_nothing() {
    let hsm = SoftHsm::new();
    let bad_pin = hsm.dir.path().join("bad-pin");
    std::fs::write(&bad_pin, "0000\n").unwrap();
    let other = gen_keys(&hsm.dir.path().join("other"));
    let other_cert = other.join("uki-signing-cert.pem").display().to_string();
    let good_pcr = format!("pkcs11:token=release;object=pcr?pin-value={PIN}&module-path={MODULE}");
    let cases: Vec<Case> = vec![
        (
            Some(format!(
                "pkcs11:token=release;object=uki?pin-source=file:{}&module-path={MODULE}",
                bad_pin.display()
            )),
            None,
            None,
            "object=uki: login refused: PinIncorrect",
        ),
        (
            None,
            None,
            Some(format!(
                "pkcs11:token=release;object=nope?pin-value={PIN}&module-path={MODULE}"
            )),
            "object=nope: no such private key",
        ),
        (
            None,
            None,
            Some(format!(
                "pkcs11:token=release;object=ec?pin-value={PIN}&module-path={MODULE}"
            )),
            "object=ec: key type is not RSA",
        ),
        (
            None,
            None,
            Some(format!(
                "pkcs11:token=staging;object=pcr?pin-value={PIN}&module-path={MODULE}"
            )),
            "token=staging;object=pcr: no such token",
        ),
        (
            None,
            None,
            Some(format!(
                "pkcs11:token=release;object=pcr?module-path={}/absent.so",
                hsm.dir.path().display()
            )),
            "absent.so: cannot load it",
        ),
        (
            None,
            None,
            Some(format!(
                "pkcs11:token=release;objekt=pcr?module-path={MODULE}"
            )),
            "unknown path attribute \"objekt\"",
        ),
        (
            Some(hsm.uri("uki")),
            Some(other_cert.clone()),
            Some(good_pcr.clone()),
            "does not match the signing key pkcs11:token=release;object=uki",
        ),
    ];
    for (key, cert, pcr, expected) in cases {
        let p = hsm.profile(
            "secureboot-iso",
            "amd64",
            key.as_deref(),
            cert.as_deref(),
            pcr.as_deref(),
        );
        let mut build = demo_build(&p);
        build = build.env("SOFTHSM2_CONF", hsm.dir.path().join("softhsm2.conf"));
        let failed = build.run_err();
        failed.refused(&[expected], "refusal");
        assert!(
            !failed.stderr.contains(&format!("pin-value={PIN}")),
            "{}",
            failed.stderr
        );
    }
}

/// The grpcio judge (`tests/signers/signerd.py`) serving `key` (and `cert`) on a Unix
/// socket in `dir`; stopped on drop.
struct Signerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Signerd {
    fn start(dir: &Path, name: &str, key: &Path, cert: Option<&Path>, mode: &str) -> Signerd {
        let python = Path::new("/opt/grpcio/bin/python");
        assert!(
            python.exists(),
            "{} is missing (the CI script installs grpcio and grpcio-tools there)",
            python.display()
        );
        let socket = dir.join(format!("{name}.sock"));
        let mut cmd = Command::new(python);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signers/signerd.py"))
            .arg(&socket)
            .arg(key);
        if let Some(c) = cert {
            cmd.arg(c);
        }
        let child = cmd
            .args(["--mode", mode])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Signerd { child, socket };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !s.socket.exists() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("signerd.py exited: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "signerd.py did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        s
    }

    fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The Sign calls it answered, one hash name each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(format!("{}.calls", self.socket.display()))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Signerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The effective profile of a `profile` build with the PEM keys in `keys`, its signer
/// blocks replaced by `signerAddress` ones where given.
fn with_signer_addresses(
    dir: &Path,
    keys: &Path,
    profile: &str,
    arch: &str,
    secureboot: Option<&str>,
    pcr: Option<&str>,
) -> PathBuf {
    let out = demo_build(profile)
        .keys(keys)
        .arch(arch)
        .arg("--dry-run")
        .output();
    assert!(out.status.success(), "{out:?}");
    let mut yaml = String::from_utf8(out.stdout).unwrap();
    let k = |f: &str| keys.join(f).display().to_string();
    if let Some(a) = secureboot {
        let from = format!(
            "keyPath: {}\n      certPath: {}",
            k("uki-signing-key.pem"),
            k("uki-signing-cert.pem")
        );
        assert!(yaml.contains(&from), "{yaml}");
        yaml = yaml.replace(&from, &format!("signerAddress: {a:?}"));
    }
    if let Some(a) = pcr {
        let from = format!("keyPath: {}", k("pcr-signing-key.pem"));
        assert!(yaml.contains(&from), "{yaml}");
        yaml = yaml.replace(&from, &format!("signerAddress: {a:?}"));
    }
    let path = dir.join(format!("{profile}-{arch}-{}.yaml", rand_suffix()));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn external_signer_signs_byte_identical_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = gen_keys(dir.path());
    let sb = Signerd::start(
        dir.path(),
        "sb",
        &keys.join("uki-signing-key.pem"),
        Some(&keys.join("uki-signing-cert.pem")),
        "good",
    );
    let pcr = Signerd::start(
        dir.path(),
        "pcr",
        &keys.join("pcr-signing-key.pem"),
        None,
        "good",
    );
    for (profile, arch) in [
        ("secureboot-iso", "amd64"),
        ("secureboot-metal-uki", "arm64"),
    ] {
        // The same profile file (its name is the profile's name, in .osrel) with the PEM keys.
        let p = with_signer_addresses(dir.path(), &keys, profile, arch, None, None);
        let files = demo_build(&p).arch(arch).run();
        let p = with_signer_addresses(
            dir.path(),
            &keys,
            profile,
            arch,
            Some(&sb.address()),
            Some(&pcr.address()),
        );
        let remote = demo_build(&p).arch(arch).run();
        assert!(
            remote.bytes() == files.bytes(),
            "{profile} {arch}: {} differs from the file-key build",
            remote.artifact.display()
        );
        if profile == "secureboot-metal-uki" {
            sbverify(&keys, &remote.artifact);
        }
    }
    // Talos's flags, on the built-in profile.
    let files = demo_build("secureboot-iso").keys(&keys).run();
    let flags = demo_build("secureboot-iso")
        .keys(&keys)
        .args(["--secureboot-signer-address", &sb.address()])
        .args(["--pcr-signer-address", &pcr.address()])
        .run();
    assert!(
        flags.bytes() == files.bytes(),
        "--secureboot-signer-address"
    );
    assert!(
        flags
            .stderr
            .contains(&format!("signerAddress: {}", sb.address())),
        "{}",
        flags.stderr
    );
    // The signers did the signing: Authenticode and the .auth files with SHA-256, the
    // PCR policy in the three banks (once per build).
    assert!(
        sb.calls().iter().all(|h| h == "sha256") && sb.calls().len() >= 5,
        "{:?}",
        sb.calls()
    );
    let mut banks = pcr.calls();
    banks.sort();
    assert_eq!(
        banks,
        [
            "sha256", "sha256", "sha256", "sha384", "sha384", "sha384", "sha512", "sha512",
            "sha512"
        ]
    );
}

#[test]
fn external_signer_refusals_are_one_line_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = gen_keys(dir.path());
    let other = gen_keys(&dir.path().join("other"));
    let key = keys.join("uki-signing-key.pem");
    let cert = keys.join("uki-signing-cert.pem");
    let pcr = Signerd::start(
        dir.path(),
        "pcr",
        &keys.join("pcr-signing-key.pem"),
        None,
        "good",
    );
    let sock = |s: &Signerd| s.address();
    let cases: Vec<(Signerd, &str)> = vec![
        (
            Signerd::start(dir.path(), "wrong", &key, Some(&cert), "wrong"),
            "returned a sha256 signature that does not verify with its public key",
        ),
        (
            Signerd::start(dir.path(), "rehash", &key, Some(&cert), "rehash"),
            "returned a sha256 signature that does not verify with its public key",
        ),
        (
            Signerd::start(dir.path(), "down", &key, Some(&cert), "unavailable"),
            "Sign: gRPC status 14 (UNAVAILABLE): HSM offline",
        ),
        (
            Signerd::start(dir.path(), "nocert", &key, None, "good"),
            "GetCertificate: gRPC status 5 (NOT_FOUND): no certificate configured",
        ),
        (
            Signerd::start(
                dir.path(),
                "mismatch",
                &key,
                Some(&other.join("uki-signing-cert.pem")),
                "good",
            ),
            // The key comes from the certificate (as in Talos), so the first signature
            // is the one that shows the mismatch.
            "mismatch.sock: returned a sha256 signature that does not verify",
        ),
    ];
    let mut addresses: Vec<(String, String)> = cases
        .iter()
        .map(|(s, e)| (sock(s), e.to_string()))
        .collect();
    let gone = dir.path().join("gone.sock");
    addresses.push((
        format!("unix://{}", gone.display()),
        format!("cannot connect to {}", gone.display()),
    ));
    addresses.push((
        "tcp://127.0.0.1:1".into(),
        "must use the unix:// scheme".into(),
    ));
    for (address, expected) in addresses {
        let p = with_signer_addresses(
            dir.path(),
            &keys,
            "secureboot-iso",
            "amd64",
            Some(&address),
            Some(&pcr.address()),
        );
        let failed = demo_build(&p).run_err();
        failed.refused(&[expected.as_str()], "refusal");
    }
}

/// The moto judge (`tests/signers/kms.py`): KMS, ACM and STS on loopback with the
/// keys of `keys` imported; stopped on drop.
struct Kms {
    child: std::process::Child,
    info: serde_json::Value,
}

impl Kms {
    fn start(keys: &Path) -> Kms {
        use std::io::BufRead;
        let python = Path::new("/opt/moto/bin/python");
        assert!(
            python.exists(),
            "{} is missing (the CI script installs moto there)",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signers/kms.py"))
            .arg(keys.join("uki-signing-key.pem"))
            .arg(keys.join("uki-signing-cert.pem"))
            .arg(keys.join("pcr-signing-key.pem"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let line = stdout
            .lines()
            .map(|l| l.unwrap())
            .find(|l| l.starts_with('{'))
            .expect("kms.py printed no key list");
        Kms {
            child,
            info: serde_json::from_str(&line).unwrap(),
        }
    }

    fn get(&self, k: &str) -> String {
        self.info[k].as_str().unwrap().to_string()
    }
}

impl Drop for Kms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The effective profile of a secureboot ISO build with the PEM keys in `keys`, its
/// signer blocks replaced by `secureboot` and `pcr` (YAML lines of the block).
fn with_blocks(dir: &Path, keys: &Path, secureboot: &str, pcr: &str) -> PathBuf {
    let out = demo_build("secureboot-iso")
        .keys(keys)
        .arg("--dry-run")
        .output();
    assert!(out.status.success(), "{out:?}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    let k = |f: &str| keys.join(f).display().to_string();
    let sb_from = format!(
        "keyPath: {}\n      certPath: {}",
        k("uki-signing-key.pem"),
        k("uki-signing-cert.pem")
    );
    let pcr_from = format!("keyPath: {}", k("pcr-signing-key.pem"));
    assert!(
        yaml.contains(&sb_from) && yaml.contains(&pcr_from),
        "{yaml}"
    );
    let yaml = yaml.replace(&sb_from, secureboot).replace(&pcr_from, pcr);
    let path = dir.join(format!("aws-{}.yaml", rand_suffix()));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A build of `profile` against the judge with credentials `access_key` from the
/// environment (`""`: none there).
fn aws_build(profile: &Path, kms: &Kms, access_key: &str) -> common::build::DemoBuild {
    demo_build(profile)
        .env("AWS_ENDPOINT_URL", kms.get("endpoint"))
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_SESSION_TOKEN", "")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", "")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
}

#[test]
fn aws_kms_signs_byte_identical_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = gen_keys(dir.path());
    let kms = Kms::start(&keys);
    let files = demo_build(with_blocks(
        dir.path(),
        &keys,
        &format!(
            "keyPath: {}\n      certPath: {}",
            keys.join("uki-signing-key.pem").display(),
            keys.join("uki-signing-cert.pem").display()
        ),
        &format!("keyPath: {}", keys.join("pcr-signing-key.pem").display()),
    ))
    .run();
    // KMS + ACM; the PCR key answers its first two signatures with ThrottlingException.
    let acm = with_blocks(
        dir.path(),
        &keys,
        &format!(
            "awsKMSKeyID: {}\n      awsRegion: us-east-1\n      awsCertARN: {}",
            kms.get("sb"),
            kms.get("cert_arn")
        ),
        &format!("awsKMSKeyID: {}", kms.get("throttle")),
    );
    let built = aws_build(&acm, &kms, "test").run();
    assert!(built.bytes() == files.bytes(), "KMS + ACM build differs");
    // KMS + a certificate file, credentials from the shared credentials file.
    let cert_file = with_blocks(
        dir.path(),
        &keys,
        &format!(
            "awsKMSKeyID: {}\n      awsCertPath: {}",
            kms.get("sb"),
            keys.join("uki-signing-cert.pem").display()
        ),
        &format!(
            "awsKMSKeyID: {}\n      awsRegion: us-east-1",
            kms.get("pcr")
        ),
    );
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[other]\naws_access_key_id = wrong\n[ci]\naws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    let built = aws_build(&cert_file, &kms, "")
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_PROFILE", "ci")
        .run();
    assert!(
        built.bytes() == files.bytes(),
        "KMS + certificate file build differs"
    );
}

#[test]
fn aws_kms_refusals_are_one_line_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = gen_keys(dir.path());
    let kms = Kms::start(&keys);
    let sb = format!(
        "awsKMSKeyID: {}\n      awsCertARN: {}",
        kms.get("sb"),
        kms.get("cert_arn")
    );
    let pcr = |id: &str| format!("awsKMSKeyID: {id}");
    let other = gen_keys(&dir.path().join("other"));
    let cases = [
        (
            sb.clone(),
            pcr(&kms.get("ec")),
            "test",
            "key type is not RSA",
        ),
        (
            sb.clone(),
            pcr(&kms.get("encrypt")),
            "test",
            "key usage is \"ENCRYPT_DECRYPT\", not SIGN_VERIFY",
        ),
        (
            sb.clone(),
            pcr("00000000-0000-0000-0000-000000000000"),
            "test",
            "GetPublicKey: HTTP 400 NotFoundException",
        ),
        (
            sb.clone(),
            pcr(&kms.get("pcr")),
            "expired",
            "HTTP 403 ExpiredTokenException: The security token included in the request is expired",
        ),
        (
            format!(
                "awsKMSKeyID: {}\n      awsCertPath: {}",
                kms.get("sb"),
                other.join("uki-signing-cert.pem").display()
            ),
            pcr(&kms.get("pcr")),
            "test",
            "does not match the signing key AWS KMS key",
        ),
    ];
    for (sb, pcr, access_key, expected) in cases {
        let p = with_blocks(dir.path(), &keys, &sb, &pcr);
        let failed = aws_build(&p, &kms, access_key).run_err();
        failed.refused(&[expected], "refusal");
    }
    // Unreachable: a closed port on loopback.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = with_blocks(dir.path(), &keys, &sb, &pcr(&kms.get("pcr")));
    let failed = aws_build(&p, &kms, "test")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .run_err();
    assert!(
        failed.error_line().contains("AWS KMS GetPublicKey")
            && failed.error_line().contains("Connection refused"),
        "{}",
        failed.error_line()
    );
    assert!(failed.left().is_empty());
}
