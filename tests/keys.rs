//! `imager gen secureboot uki|pcr|database` judged by openssl, virt-firmware,
//! efitools and, at the end, OVMF enrolling the keys and enforcing SecureBoot.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{demo_dir, imager, require_tool, run_ok};

fn generate(args: &[&str], dir: &Path) -> Output {
    imager()
        .args(["gen", "secureboot"])
        .args(args)
        .arg("--output")
        .arg(dir)
        .output()
        .unwrap()
}

fn gen_ok(args: &[&str], dir: &Path) -> String {
    let out = generate(args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "gen secureboot {args:?} failed:\n{stderr}"
    );
    stderr
}

fn gen_err(args: &[&str], dir: &Path) -> String {
    let out = generate(args, dir);
    assert!(
        !out.status.success(),
        "gen secureboot {args:?} should have failed"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn openssl(args: &[&str], file: &Path) -> String {
    require_tool("openssl");
    run_ok(Command::new("openssl").args(args).arg("-in").arg(file))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A shared UKI key pair for the tests that only need one (RSA 4096 takes a moment).
fn uki_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    gen_ok(&["uki"], dir.path());
    dir
}

#[test]
fn uki_key_and_certificate_have_the_signing_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/keys");
    let stderr = gen_ok(&["uki", "--common-name", "Imager Test Signing"], &dir);
    let (cert, der, key) = (
        dir.join("uki-signing-cert.pem"),
        dir.join("uki-signing-cert.der"),
        dir.join("uki-signing-key.pem"),
    );
    for f in [&cert, &der, &key] {
        assert!(
            stderr.contains(&format!("writing {}", f.display())),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("RSA 4096"),
        "progress line missing: {stderr}"
    );

    let text = openssl(&["x509", "-text", "-noout"], &cert);
    for expected in [
        "Version: 3 (0x2)",
        "Signature Algorithm: sha512WithRSAEncryption",
        "Issuer: O = Imager Test Signing",
        "Subject: O = Imager Test Signing",
        "Public-Key: (4096 bit)",
        "X509v3 Basic Constraints: critical\n                CA:TRUE\n",
        "X509v3 Key Usage: critical\n                Digital Signature, Certificate Sign\n",
        "X509v3 Extended Key Usage: \n                Code Signing\n",
        "X509v3 Subject Key Identifier",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("Authority Key Identifier") && !text.contains("CN ="),
        "{text}"
    );
    // Serial: random, positive, below 2^128 (at most 16 significant bytes).
    let serial = openssl(&["x509", "-noout", "-serial"], &cert);
    let serial = serial.trim().trim_start_matches("serial=");
    assert!(
        serial.trim_start_matches('0').len() <= 32 && serial.len() >= 16,
        "{serial}"
    );
    // Valid now and for 87 600 hours, not longer.
    let checkend = |secs: u64| {
        Command::new("openssl")
            .args(["x509", "-noout", "-checkend", &secs.to_string(), "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(checkend(87_600 * 3600 - 600) && !checkend(87_600 * 3600 + 600));
    // The DER file is the same certificate.
    let from_der = run_ok(
        Command::new("openssl")
            .args(["x509", "-inform", "DER", "-outform", "PEM", "-in"])
            .arg(&der),
    );
    assert_eq!(from_der, std::fs::read_to_string(&cert).unwrap());

    // The key: PKCS#1 PEM, consistent, matches the certificate, private to the owner.
    let key_pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
        "{key_pem:.40}"
    );
    assert!(openssl(&["rsa", "-check", "-noout"], &key).contains("RSA key ok"));
    assert_eq!(
        openssl(&["rsa", "-noout", "-modulus"], &key),
        openssl(&["x509", "-noout", "-modulus"], &cert)
    );
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(mode(&dir), 0o700, "a new output directory is private");
}

#[test]
fn authenticode_verifiers_accept_the_generated_certificate() {
    let keys = uki_keys();
    let (cert, key) = (
        keys.path().join("uki-signing-cert.pem"),
        keys.path().join("uki-signing-key.pem"),
    );
    let signer = imager::keys::Signer::load(&key, &cert).unwrap();
    let signed = keys.path().join("systemd-boot.signed.efi");
    let mut out = std::fs::File::create(&signed).unwrap();
    imager::sign::authenticode::sign_to(
        &demo_dir().join("amd64/systemd-boot.efi"),
        &mut out,
        &signed,
        &signer,
        1_700_000_000,
    )
    .unwrap();
    require_tool("sbverify");
    run_ok(
        Command::new("sbverify")
            .arg("--cert")
            .arg(&cert)
            .arg(&signed),
    );
    require_tool("osslsigncode");
    let text = run_ok(
        Command::new("osslsigncode")
            .arg("verify")
            .arg("-CAfile")
            .arg(&cert)
            .arg("-in")
            .arg(&signed),
    );
    assert!(text.contains("Signature verification: ok"), "{text}");
}

#[test]
fn pcr_key_is_rsa_2048_pkcs1() {
    let dir = tempfile::tempdir().unwrap();
    gen_ok(&["pcr"], dir.path());
    let key = dir.path().join("pcr-signing-key.pem");
    assert!(openssl(&["rsa", "-check", "-noout"], &key).contains("RSA key ok"));
    assert!(
        openssl(&["rsa", "-noout", "-text"], &key).starts_with("Private-Key: (2048 bit, 2 primes)")
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    assert_eq!(mode(&key), 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["pcr-signing-key.pem"]);
}

#[test]
fn existing_files_are_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    gen_ok(&["pcr"], dir.path());
    let key = dir.path().join("pcr-signing-key.pem");
    let before = std::fs::read(&key).unwrap();
    let err = gen_err(&["pcr"], dir.path());
    assert!(
        err.contains(&key.display().to_string()) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    gen_ok(&["pcr", "--force"], dir.path());
    assert_ne!(std::fs::read(&key).unwrap(), before);
    assert_eq!(mode(&key), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "pcr-signing-key.pem")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_inputs_are_named() {
    let keys = uki_keys();
    let (cert, key) = (
        keys.path().join("uki-signing-cert.pem"),
        keys.path().join("uki-signing-key.pem"),
    );
    let out = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.display().to_string();

    let err = gen_err(&["database", "--signing-cert", &s(&cert)], out.path());
    assert!(err.contains("--signing-key"), "{err}");

    let other = tempfile::tempdir().unwrap();
    gen_ok(&["pcr"], other.path());
    let wrong_key = other.path().join("pcr-signing-key.pem");
    let err = gen_err(
        &[
            "database",
            "--signing-cert",
            &s(&cert),
            "--signing-key",
            &s(&wrong_key),
            "--enrolled-certificate",
            &s(&cert),
        ],
        out.path(),
    );
    assert!(
        err.contains("does not match") && err.contains(&s(&wrong_key)),
        "{err}"
    );

    // Defaults point into the output directory, which has no keys yet.
    let err = gen_err(&["database"], out.path());
    assert!(
        err.contains(&s(&out.path().join("uki-signing-key.pem"))),
        "{err}"
    );

    let err = gen_err(
        &[
            "database",
            "--signing-cert",
            &s(&cert),
            "--signing-key",
            &s(&key),
            "--enrolled-certificate",
            &s(&key),
        ],
        out.path(),
    );
    assert!(
        err.contains(&s(&key)) && err.contains("certificate"),
        "{err}"
    );

    // An output "directory" below a regular file cannot be created.
    let file = out.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let err = gen_err(&["pcr"], &file.join("keys"));
    assert!(err.contains(&s(&file)), "{err}");
    assert!(
        std::fs::read_dir(out.path()).unwrap().count() == 1,
        "nothing else written"
    );
}

/// Splits a `.auth` file into (EFI_TIME, PKCS#7 SignedData, payload).
fn split_auth(auth: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let len = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
    assert_eq!(
        &auth[20..24],
        &[0x00, 0x02, 0xF1, 0x0E],
        "revision 2.0, WIN_CERT_TYPE_EFI_GUID"
    );
    assert_eq!(
        &auth[24..40],
        &hex::decode("9dd2af4adf68ee498aa9347d375665a7").unwrap()[..],
        "EFI_CERT_TYPE_PKCS7_GUID"
    );
    (&auth[..16], &auth[40..16 + len], &auth[16 + len..])
}

/// Wraps a bare SignedData in a ContentInfo so openssl can read it.
fn content_info(signed_data: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, 0x83];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }
    let oid = hex::decode("06092a864886f70d010702").unwrap();
    tlv(0x30, &[oid, tlv(0xA0, signed_data)].concat())
}

/// Certificates in the ESLs of `payload`, by efitools' sig-list-to-certs.
fn esl_certs(payload: &[u8], dir: &Path, name: &str) -> Vec<Vec<u8>> {
    require_tool("sig-list-to-certs");
    let esl = dir.join(format!("{name}.esl"));
    std::fs::write(&esl, payload).unwrap();
    let prefix = dir.join(name);
    run_ok(Command::new("sig-list-to-certs").arg(&esl).arg(&prefix));
    (0..)
        .map(|i| dir.join(format!("{name}-{i}.der")))
        .take_while(|p| p.exists())
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Certificates and owners as virt-firmware's parser sees the .auth file.
fn virt_firmware_view(name: &str, auth: &Path) -> String {
    require_tool("virt-fw-vars");
    run_ok(
        common::python()
            .arg("-c")
            .arg(
                "import sys\nfrom virt.firmware.efi import efivar\n\
         v = efivar.EfiVar(sys.argv[1], authdata=open(sys.argv[2], 'rb').read())\n\
         print(v.time.isoformat())\n\
         for sl in v.sigdb:\n    for s in sl:\n        print(s['guid'], s['data'].hex())\n",
            )
            .arg(name)
            .arg(auth),
    )
}

#[test]
fn enrollment_files_parse_verify_and_reproduce() {
    let keys = uki_keys();
    let (cert, key) = (
        keys.path().join("uki-signing-cert.pem"),
        keys.path().join("uki-signing-key.pem"),
    );
    let cert_der = std::fs::read(keys.path().join("uki-signing-cert.der")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.display().to_string();
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "database",
            "--signing-cert",
            &s(&cert),
            "--signing-key",
            &s(&key),
            "--enrolled-certificate",
            &s(&cert),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|a| a.to_string()));
        let out = imager()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["gen", "secureboot"])
            .args(&args)
            .arg("--output")
            .arg(out)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (a, b, ms) = (
        work.path().join("a"),
        work.path().join("b"),
        work.path().join("ms"),
    );
    run(&a, &[]);
    run(&b, &[]);
    run(&ms, &["--include-well-known-uefi-certs"]);

    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/certs");
    let asset = |p: &str| std::fs::read(assets.join(p)).unwrap();
    let ms_kek = [
        asset("kek/microsoft-kek-ca-2011.der"),
        asset("kek/microsoft-kek-2k-ca-2023.der"),
    ];
    let ms_db = [
        asset("db/microsoft-uefi-ca-2011.der"),
        asset("db/microsoft-option-rom-uefi-ca-2023.der"),
        asset("db/microsoft-uefi-ca-2023.der"),
    ];

    let global = hex::decode("61dfe48bca93d211aa0d00e098032b8c").unwrap();
    let image_db = hex::decode("cbb219d73a3d9645a3bcdad00e67656f").unwrap();
    for (var, vendor, well_known) in [
        ("PK", &global, &[][..]),
        ("KEK", &global, &ms_kek[..]),
        ("db", &image_db, &ms_db[..]),
    ] {
        let file = a.join(format!("{var}.auth"));
        let auth = std::fs::read(&file).unwrap();
        assert_eq!(
            auth,
            std::fs::read(b.join(format!("{var}.auth"))).unwrap(),
            "{var}.auth is not reproducible"
        );
        let (time, p7, payload) = split_auth(&auth);
        // 1700000000 = 2023-11-14 22:13:20 UTC.
        assert_eq!(
            time,
            &[0xe7, 0x07, 11, 14, 22, 13, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // Bare SignedData, version 1 (not a ContentInfo).
        assert_eq!(
            (p7[0], p7[1], &p7[4..7]),
            (0x30, 0x82, &[0x02, 0x01, 0x01][..]),
            "{var}: {:02x?}",
            &p7[..8]
        );

        // efitools reads the signature list; it holds exactly our DER certificate.
        assert_eq!(
            esl_certs(payload, work.path(), var),
            vec![cert_der.clone()],
            "{var}"
        );
        // virt-firmware parses the whole file and sees the same.
        let view = virt_firmware_view(var, &file);
        assert!(view.starts_with("2023-11-14T22:13:20+00:00\n"), "{view}");
        assert!(view.contains(&hex::encode(&cert_der)), "{var}: {view:.200}");
        // efitools builds the same signature list from the certificate and that owner.
        let owner = view
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let reference = work.path().join(format!("{var}.reference.esl"));
        require_tool("cert-to-efi-sig-list");
        run_ok(
            Command::new("cert-to-efi-sig-list")
                .args(["-g", owner])
                .arg(&cert)
                .arg(&reference),
        );
        assert_eq!(
            payload,
            std::fs::read(&reference).unwrap(),
            "{var}: ESL differs from efitools'"
        );

        // openssl verifies the detached PKCS#7 over name ‖ vendor ‖ attributes ‖ time ‖ payload.
        let signed: Vec<u8> = [
            var.encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>(),
            vendor.clone(),
            0x27u32.to_le_bytes().to_vec(),
            time.to_vec(),
            payload.to_vec(),
        ]
        .concat();
        let (p7_file, content) = (
            work.path().join(format!("{var}.p7")),
            work.path().join(format!("{var}.signed")),
        );
        std::fs::write(&p7_file, content_info(p7)).unwrap();
        std::fs::write(&content, &signed).unwrap();
        let verify = |content: &Path| {
            Command::new("openssl")
                .args([
                    "cms",
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-purpose",
                    "any",
                    "-out",
                    "/dev/null",
                    "-in",
                ])
                .arg(&p7_file)
                .arg("-content")
                .arg(content)
                .arg("-CAfile")
                .arg(&cert)
                .output()
                .unwrap()
        };
        let out = verify(&content);
        assert!(
            out.status.success(),
            "openssl cms -verify {var}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut wrong = signed.clone();
        *wrong.last_mut().unwrap() ^= 1;
        std::fs::write(&content, &wrong).unwrap();
        assert!(
            !verify(&content).status.success(),
            "{var}: a changed payload must not verify"
        );

        // With the well-known certificates: ours first, then Microsoft's in Talos's order.
        let auth = std::fs::read(ms.join(format!("{var}.auth"))).unwrap();
        let (_, _, payload) = split_auth(&auth);
        let expected: Vec<Vec<u8>> = std::iter::once(cert_der.clone())
            .chain(well_known.iter().cloned())
            .collect();
        assert_eq!(
            esl_certs(payload, work.path(), &format!("ms-{var}")),
            expected,
            "{var} with well-known certificates"
        );
        let view = virt_firmware_view(var, &ms.join(format!("{var}.auth")));
        assert_eq!(
            view.matches("77fa9abd-0359-4d32-bd60-28f4e78f784b").count(),
            well_known.len(),
            "{view:.300}"
        );
    }
}

#[test]
fn library_enrollment_db_matches_the_cli_format() {
    let signer = imager::keys::generate::signer("library test", 2048).unwrap();
    let db = imager::keys::efivar::enrollment_db(&signer, true, 1_700_000_000).unwrap();
    let again = imager::keys::efivar::enrollment_db(&signer, true, 1_700_000_000).unwrap();
    assert_eq!(db, again, "same signer and timestamp give the same bytes");
    let dir = tempfile::tempdir().unwrap();
    let (_, _, payload) = split_auth(&db.kek);
    assert_eq!(esl_certs(payload, dir.path(), "kek").len(), 3);
    assert_eq!(esl_certs(payload, dir.path(), "kek")[0], signer.cert_der());
}

/// Waits until `log` contains `needle` or the process exits / `limit` passes.
fn wait_for(
    child: &mut std::process::Child,
    log: &Path,
    needle: &str,
    limit: std::time::Duration,
) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        if text.contains(needle) || start.elapsed() > limit || child.try_wait().unwrap().is_some() {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The real judge: OVMF in setup mode lets systemd-boot enroll our PK/KEK/db, resets,
/// and then, with SecureBoot enforced, runs our signed systemd-boot, which loads the
/// kernel we signed (next to Debian's signature); a kernel without our signature is refused.
#[test]
fn ovmf_enrolls_the_keys_and_boots_our_signed_binaries() {
    require_tool("qemu-system-x86_64");
    let code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
    let vars_template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    assert!(
        code.exists() && vars_template.exists(),
        "ovmf is not installed"
    );
    let keys = uki_keys();
    let demo = demo_dir();
    let work = tempfile::tempdir().unwrap();
    gen_ok(&["database"], keys.path());
    let signer = imager::keys::Signer::load(
        &keys.path().join("uki-signing-key.pem"),
        &keys.path().join("uki-signing-cert.pem"),
    )
    .unwrap();

    let esp: PathBuf = work.path().join("esp");
    for d in ["EFI/BOOT", "loader/keys/auto", "loader/entries"] {
        std::fs::create_dir_all(esp.join(d)).unwrap();
    }
    let sign = |from: &Path, to: &str| {
        let mut out = std::fs::File::create(esp.join(to)).unwrap();
        imager::sign::authenticode::sign_to(from, &mut out, &esp.join(to), &signer, 1_700_000_000)
            .unwrap();
    };
    sign(&demo.join("amd64/systemd-boot.efi"), "EFI/BOOT/BOOTX64.EFI");
    sign(&demo.join("amd64/vmlinuz"), "vmlinuz");
    std::fs::copy(demo.join("amd64/initramfs.xz"), esp.join("initramfs.xz")).unwrap();
    for f in ["PK.auth", "KEK.auth", "db.auth"] {
        std::fs::copy(keys.path().join(f), esp.join("loader/keys/auto").join(f)).unwrap();
    }
    std::fs::write(
        esp.join("loader/loader.conf"),
        "timeout 0\ndefault linux.conf\nsecure-boot-enroll force\n",
    )
    .unwrap();
    std::fs::write(
        esp.join("loader/entries/linux.conf"),
        "title Linux signed by imager\nlinux /vmlinuz\ninitrd /initramfs.xz\noptions console=ttyS0\n",
    )
    .unwrap();
    let vars = work.path().join("vars.fd");
    std::fs::copy(vars_template, &vars).unwrap();
    let boot = |needle: &str, log_name: &str| {
        let log = work.path().join(log_name);
        let mut qemu = Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "q35,smm=on",
                "-accel",
                "tcg",
                "-m",
                "1024",
                "-display",
                "none",
            ])
            .args(["-no-user-config", "-nodefaults"])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                code.display()
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            .arg("-drive")
            .arg(format!(
                "file=fat:rw:{},format=raw,if=virtio",
                esp.display()
            ))
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .spawn()
            .unwrap();
        let text = wait_for(&mut qemu, &log, needle, std::time::Duration::from_secs(400));
        let _ = qemu.kill();
        let _ = qemu.wait();
        std::fs::copy(
            &log,
            std::env::temp_dir().join(format!("imager-{log_name}")),
        )
        .ok();
        text
    };

    let text = boot("IMAGER-BOOT-OK", "ovmf-enroll.log");
    assert!(
        text.contains("Enrolling secure boot keys"),
        "systemd-boot did not enroll:\n{text}"
    );
    assert!(
        text.contains("IMAGER-BOOT-OK"),
        "no boot after enrollment:\n{text}"
    );
    assert!(
        text.contains("Secure boot enabled"),
        "SecureBoot not enforced after enrollment:\n{text}"
    );

    // Same firmware state, now enforcing: a kernel signed only by Debian is refused.
    std::fs::copy(demo.join("amd64/vmlinuz"), esp.join("vmlinuz")).unwrap();
    std::fs::remove_dir_all(esp.join("loader/keys")).unwrap();
    let text = boot("Error loading", "ovmf-refuse.log");
    assert!(
        text.contains("Error loading \\vmlinuz: Access denied") && !text.contains("IMAGER-BOOT-OK"),
        "a kernel without our signature was not refused:\n{text}"
    );
}
