//! Self-test of the boot harness and the demo inputs, using oracle tools only: ukify (systemd 257)
//! builds the UKI, sbsign signs it, OVMF judges the signature, swtpm records the measurements and
//! the demo initramfs reports them. If these pass, a failing product boot test points at the
//! product, not at the harness.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::boot::{BootLog, Media, SecureBoot, boot};
use common::{demo_dir, require_tool, run_ok};
use sha2::{Digest, Sha256};

/// systemd 257's ukify: env `UKIFY`, else where `tests/boot/install-ukify` puts it.
fn ukify() -> PathBuf {
    let path = std::env::var_os("UKIFY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ukify/bin/ukify"));
    assert!(
        path.is_file(),
        "ukify not found at {} (set UKIFY or run tests/boot/install-ukify)",
        path.display()
    );
    path
}

/// A throwaway SecureBoot key and a signed UKI built from the demo inputs.
struct Fixture {
    dir: tempfile::TempDir,
    key: PathBuf,
    cert: PathBuf,
    /// The UKI signed with `key`.
    uki: PathBuf,
}

const CMDLINE: &str = "console=ttyS0";

fn fixture() -> Fixture {
    let demo = demo_dir().join("amd64");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (key, cert) = (path("db.key"), path("db.pem"));
    run_ok(
        Command::new(require_tool("openssl"))
            .args(["req", "-new", "-x509", "-newkey", "rsa:2048"])
            .args([
                "-nodes",
                "-sha256",
                "-days",
                "30",
                "-subj",
                "/CN=imager harness test db/",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );

    std::fs::write(
        path("os-release"),
        "ID=imager-test\nNAME=\"imager harness test\"\n",
    )
    .unwrap();
    let mut os_release = std::ffi::OsString::from("@");
    os_release.push(path("os-release"));
    run_ok(
        Command::new(ukify())
            .arg("build")
            .arg("--linux")
            .arg(demo.join("vmlinuz"))
            .arg("--initrd")
            .arg(demo.join("initramfs.xz"))
            .arg("--stub")
            .arg(demo.join("systemd-stub.efi"))
            .arg("--os-release")
            .arg(os_release)
            .arg(format!("--cmdline={CMDLINE}"))
            .arg("--output")
            .arg(path("uki.efi")),
    );
    let uki = path("uki.signed.efi");
    run_ok(
        Command::new(require_tool("sbsign"))
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(&uki)
            .arg(path("uki.efi")),
    );
    Fixture {
        dir,
        key,
        cert,
        uki,
    }
}

impl Fixture {
    /// A fresh ESP directory holding `files` (ESP path, source).
    fn esp(&self, name: &str, files: &[(&str, &Path)]) -> PathBuf {
        let esp = self.dir.path().join(name);
        for (to, from) in files {
            let to = esp.join(to);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, to).unwrap();
        }
        esp
    }
}

/// Sections of a PE file: name and content (VirtualSize bytes, as the loader maps them).
fn sections(pe_path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(pe_path).unwrap();
    let pe = goblin::pe::PE::parse(&bytes).unwrap();
    pe.sections
        .iter()
        .map(|s| {
            let start = s.pointer_to_raw_data as usize;
            let len = (s.virtual_size.min(s.size_of_raw_data)) as usize;
            (
                s.name().unwrap().to_owned(),
                bytes[start..start + len].to_vec(),
            )
        })
        .collect()
}

/// PCR 11 (SHA-256) right after a systemd 257 stub measured the UKI (uki-and-pcr.md 2.2, 2.5):
/// for each section of the canonical list that is present, extend its name with NUL, then its
/// content.
fn predicted_pcr11_after_stub(uki: &Path) -> String {
    const CANONICAL_257: [&str; 13] = [
        ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
        ".pcrpkey", ".profile", ".dtbauto", ".hwids",
    ];
    let sections = sections(uki);
    let extend = |pcr: Vec<u8>, data: &[u8]| -> Vec<u8> {
        Sha256::new()
            .chain_update(&pcr)
            .chain_update(Sha256::digest(data))
            .finalize()
            .to_vec()
    };
    let mut pcr = vec![0u8; 32];
    for name in CANONICAL_257 {
        if let Some((_, content)) = sections.iter().find(|(n, _)| n == name) {
            pcr = extend(pcr, format!("{name}\0").as_bytes());
            pcr = extend(pcr, content);
        }
    }
    hex::encode(pcr)
}

#[test]
fn boot_signed_uki_under_enforced_secureboot_with_tpm() {
    let f = fixture();
    assert!(
        common::sbverify_cert(&f.uki, &f.cert).0,
        "sbverify rejects the signed UKI"
    );
    let names: Vec<_> = sections(&f.uki).into_iter().map(|(n, _)| n).collect();
    for name in [".linux", ".initrd", ".cmdline", ".osrel", ".uname", ".sbat"] {
        assert!(
            names.iter().any(|n| n == name),
            "ukify made no {name}: {names:?}"
        );
    }
    let esp = f.esp("esp", &[("EFI/BOOT/BOOTX64.EFI", &f.uki)]);

    let log = boot(
        Media::EspDir(esp),
        SecureBoot::Enrolled(f.cert.clone()),
        true,
        180,
    );

    assert!(log.marker, "no IMAGER-BOOT-OK in {}", log.path.display());
    assert_eq!(
        log.secureboot,
        Some(1),
        "SecureBoot not enforced: {}",
        log.path.display()
    );
    assert_eq!(log.cmdline.as_deref(), Some(CMDLINE));
    assert!(log.contains("EFI stub: UEFI Secure Boot is enabled."));
    let pcr11 = log
        .pcr11_sha256
        .as_deref()
        .expect("no PCR 11 reported (TPM missing?)");
    assert_eq!(
        pcr11,
        predicted_pcr11_after_stub(&f.uki),
        "log: {}",
        log.path.display()
    );
}

#[test]
fn boot_tampered_uki_is_refused_by_firmware() {
    let f = fixture();
    let tampered = f.dir.path().join("uki.tampered.efi");
    let mut bytes = std::fs::read(&f.uki).unwrap();
    let linux = {
        let pe = goblin::pe::PE::parse(&bytes).unwrap();
        let s = pe
            .sections
            .iter()
            .find(|s| s.name().unwrap() == ".linux")
            .unwrap();
        s.pointer_to_raw_data as usize + 0x1000
    };
    bytes[linux] ^= 0xff;
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(
        !common::sbverify_cert(&tampered, &f.cert).0,
        "sbverify accepts the tampered UKI"
    );
    let esp = f.esp("esp", &[("EFI/BOOT/BOOTX64.EFI", &tampered)]);

    let log = boot(
        Media::EspDir(esp),
        SecureBoot::Enrolled(f.cert.clone()),
        false,
        120,
    );

    log.assert_refused_by_secureboot();
}

/// Setup mode: signed systemd-boot enrols PK/KEK/db from `loader/keys/auto`, resets, and then
/// boots the signed UKI from `EFI/Linux` with SecureBoot enforced.
#[test]
fn boot_setup_mode_enrols_keys_with_systemd_boot() {
    let f = fixture();
    let demo = demo_dir().join("amd64");
    let path = |name: &str| f.dir.path().join(name);
    let guid = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d";
    run_ok(
        Command::new(require_tool("cert-to-efi-sig-list"))
            .args(["-g", guid])
            .arg(&f.cert)
            .arg(path("db.esl")),
    );
    for var in ["PK", "KEK", "db"] {
        run_ok(
            Command::new(require_tool("sign-efi-sig-list"))
                .args(["-g", guid, "-k"])
                .arg(&f.key)
                .arg("-c")
                .arg(&f.cert)
                .arg(var)
                .arg(path("db.esl"))
                .arg(path(&format!("{var}.auth"))),
        );
    }
    let bootloader = path("systemd-boot.signed.efi");
    run_ok(
        Command::new(require_tool("sbsign"))
            .arg("--key")
            .arg(&f.key)
            .arg("--cert")
            .arg(&f.cert)
            .arg("--output")
            .arg(&bootloader)
            .arg(demo.join("systemd-boot.efi")),
    );
    std::fs::write(path("loader.conf"), "timeout 0\nsecure-boot-enroll force\n").unwrap();
    let esp = f.esp(
        "esp",
        &[
            ("EFI/BOOT/BOOTX64.EFI", &bootloader),
            ("EFI/Linux/imager-test.efi", &f.uki),
            ("loader/loader.conf", &path("loader.conf")),
            ("loader/keys/auto/PK.auth", &path("PK.auth")),
            ("loader/keys/auto/KEK.auth", &path("KEK.auth")),
            ("loader/keys/auto/db.auth", &path("db.auth")),
        ],
    );

    let log = boot(Media::EspDir(esp), SecureBoot::Setup, true, 180);

    assert!(
        log.contains("Enrolling secure boot keys from directory"),
        "systemd-boot did not enrol: {}",
        log.path.display()
    );
    assert!(log.marker, "no IMAGER-BOOT-OK in {}", log.path.display());
    assert_eq!(
        log.secureboot,
        Some(1),
        "SecureBoot not enforced after enrolment"
    );
    assert_eq!(
        log.pcr11_sha256.as_deref(),
        Some(predicted_pcr11_after_stub(&f.uki).as_str())
    );
}

#[test]
fn log_parser_reads_the_init_report() {
    let text = "BdsDxe: starting\r\n[    3.1] Run /init as init process\r\nIMAGER-BOOT-OK\r\n\
                cmdline: console=ttyS0 quiet\r\npcr11-sha256: C803512868C4\r\nsecureboot: 1\r\n";
    let log = BootLog::parse(text, PathBuf::from("x.log"));
    assert!(log.marker);
    assert_eq!(log.cmdline.as_deref(), Some("console=ttyS0 quiet"));
    assert_eq!(log.pcr11_sha256.as_deref(), Some("c803512868c4"));
    assert_eq!(log.secureboot, Some(1));
    assert!(!log.text.contains('\r'));

    let log = BootLog::parse(
        "BdsDxe: failed to load Boot0001: Access Denied\n",
        "y".into(),
    );
    assert!(!log.marker);
    assert_eq!(
        (log.cmdline, log.pcr11_sha256, log.secureboot),
        (None, None, None)
    );
}

/// The harness' outcomes are distinct: QEMU failing to start and a "QEMU" that runs no
/// firmware both exit 3 (the test helper panics, so no negative boot can pass by them);
/// SeaBIOS finding nothing to boot exits 1 with its own words on the saved screen.
#[test]
fn boot_harness_outcomes_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("empty.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(10 << 20)
        .unwrap();
    let run = |extra: &[&str], path: Option<&Path>| {
        let log = dir.path().join("run.log");
        let mut cmd = Command::new(common::boot::harness());
        cmd.args(["--bios", "--timeout", "60", "--media", "disk"])
            .arg(&disk)
            .arg("--log")
            .arg(&log)
            .args(extra);
        if let Some(p) = path {
            let old = std::env::var_os("PATH").unwrap_or_default();
            let mut new = p.as_os_str().to_owned();
            new.push(":");
            new.push(old);
            cmd.env("PATH", new);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    };
    // QEMU refuses to start (no host has this much memory to give).
    let (code, stdout, _) = run(&["--memory", "99999999"], None);
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("qemu failed"), "{stdout}");
    // A "QEMU" that exits at once without running any firmware.
    let fake = dir.path().join("bin");
    std::fs::create_dir(&fake).unwrap();
    let q = fake.join("qemu-system-x86_64");
    std::fs::write(&q, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, stdout, _) = run(&[], Some(&fake));
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("firmware output: 0"), "{stdout}");
    // Real SeaBIOS, a blank disk: the firmware ran and found nothing to boot.
    require_tool("qemu-system-x86_64");
    let (code, stdout, text) = run(&[], None);
    assert_eq!(code, Some(1), "{stdout}\n{text}");
    let log = BootLog::parse(&text, "run.log".into());
    let screen = log.screen().expect("the harness saved the screen");
    assert!(
        screen.contains("Booting from Hard Disk") && screen.contains("No bootable device"),
        "{screen}"
    );
}
