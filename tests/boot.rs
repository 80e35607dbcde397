//! The product, booted for real: QEMU + OVMF (SecureBoot enforced where it applies) +
//! swtpm, with the demo kernel and busybox initramfs, judged by what the guest prints
//! (`IMAGER-BOOT-OK`, SecureBoot state, PCR 11 read from the TPM) against what imager
//! predicted in the build manifest.

mod common;

use std::path::{Path, PathBuf};

use common::boot::{BootLog, Media, SecureBoot, boot};
use common::{demo_dir, imager, run_ok};

/// Builds `profile` from the demo inputs into `out` with `console=ttyS0`; returns the
/// artifact path and the manifest.
fn build(
    profile: &str,
    out: &Path,
    keys: Option<&Path>,
    extra: &[&str],
) -> (PathBuf, serde_json::Value) {
    let demo = demo_dir();
    let mut cmd = imager();
    cmd.env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            profile,
            "--arch",
            "amd64",
            "--extra-kernel-arg",
            "console=ttyS0",
            "--install-dir",
        ])
        .arg(&demo)
        .arg("--output")
        .arg(out)
        .args(extra);
    if let Some(keys) = keys {
        cmd.arg("--secureboot-dir").arg(keys);
    }
    let stderr = {
        let o = cmd.output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "imager {profile} failed:\n{e}");
        e
    };
    let path = stderr
        .lines()
        .find_map(|l| l.strip_prefix("output asset path: "))
        .map(PathBuf::from)
        .expect("output asset path line");
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let manifest = std::fs::read(out.join(format!("{name}.manifest.json"))).unwrap();
    (path, serde_json::from_slice(&manifest).unwrap())
}

/// An ESP directory with `efi` as the fallback boot loader.
fn esp_with(efi: &Path, dir: &Path) -> PathBuf {
    let esp = dir.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::copy(efi, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    esp
}

fn assert_booted(log: &BootLog, predicted: &str, secureboot: u8) {
    assert!(log.marker, "no IMAGER-BOOT-OK; log {}", log.path.display());
    assert_eq!(
        log.secureboot,
        Some(secureboot),
        "SecureBoot state; log {}",
        log.path.display()
    );
    assert_eq!(
        log.pcr11_sha256.as_deref(),
        Some(predicted),
        "PCR 11 (sha256) after the stub; log {}",
        log.path.display()
    );
    let cmdline = log.cmdline.as_deref().unwrap_or_default();
    assert!(
        cmdline.contains("talos.platform=metal") && cmdline.contains("console=ttyS0"),
        "cmdline {cmdline}"
    );
}

#[test]
fn boot_unsigned_uki_measures_the_predicted_pcr11() {
    let dir = tempfile::tempdir().unwrap();
    let (uki, manifest) = build("metal-uki", &dir.path().join("out"), None, &[]);
    let predicted = common::predicted_pcr11(&manifest);
    let log = boot(
        Media::EspDir(esp_with(&uki, dir.path())),
        SecureBoot::Off,
        true,
        180,
    );
    assert_booted(&log, &predicted, 0);
}

#[test]
fn boot_unsigned_uki_on_the_252_stub() {
    let dir = tempfile::tempdir().unwrap();
    // Same demo kernel and initramfs, Debian 12's systemd-stub 252 (measures no .uname/.sbat).
    let install = dir.path().join("install/amd64");
    std::fs::create_dir_all(&install).unwrap();
    let demo = demo_dir();
    for f in ["vmlinuz", "initramfs.xz"] {
        std::fs::copy(demo.join("amd64").join(f), install.join(f)).unwrap();
    }
    std::fs::copy(
        demo.join("amd64-252/systemd-stub.efi"),
        install.join("systemd-stub.efi"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let stderr = run_ok(
        imager()
            .args([
                "metal-uki",
                "--arch",
                "amd64",
                "--extra-kernel-arg",
                "console=ttyS0",
                "--install-dir",
            ])
            .arg(dir.path().join("install"))
            .arg("--output")
            .arg(&out),
    );
    let _ = stderr;
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("metal-amd64-uki.efi.manifest.json")).unwrap(),
    )
    .unwrap();
    let log = boot(
        Media::EspDir(esp_with(&out.join("metal-amd64-uki.efi"), dir.path())),
        SecureBoot::Off,
        true,
        180,
    );
    assert_booted(&log, &common::predicted_pcr11(&manifest), 0);
}

/// Offset of `.linux`'s data, from `imager inspect --json`.
fn linux_offset(uki: &Path) -> u64 {
    let out = imager()
        .arg("inspect")
        .arg("--json")
        .arg(uki)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json");
    let linux = v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ".linux")
        .expect(".linux");
    linux["offset"].as_u64().expect("offset")
}

#[test]
fn boot_signed_uki_under_enforced_secureboot() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let (uki, manifest) = build(
        "secureboot-metal-uki",
        &dir.path().join("out"),
        Some(&keys),
        &[],
    );
    assert!(manifest["secureboot"]["signerCertSha256"].is_string());
    let log = boot(
        Media::EspDir(esp_with(&uki, dir.path())),
        SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        true,
        180,
    );
    assert_booted(&log, &common::predicted_pcr11(&manifest), 1);
    assert!(
        log.contains("lockdown=confidentiality"),
        "the sealed SecureBoot command line"
    );
}

#[test]
fn boot_tampered_signed_uki_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let (uki, _) = build(
        "secureboot-metal-uki",
        &dir.path().join("out"),
        Some(&keys),
        &[],
    );
    let mut bytes = std::fs::read(&uki).unwrap();
    let at = linux_offset(&uki) as usize + 4096;
    bytes[at] ^= 0x01;
    let tampered = dir.path().join("tampered.efi");
    std::fs::write(&tampered, bytes).unwrap();
    let log = boot(
        Media::EspDir(esp_with(&tampered, dir.path())),
        SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        false,
        120,
    );
    assert!(
        !log.marker,
        "a tampered UKI must not boot; log {}",
        log.path.display()
    );
    assert!(
        log.contains("Access Denied") || log.contains("Security Violation"),
        "the firmware refuses it; log {}",
        log.path.display()
    );
}
