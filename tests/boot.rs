//! The product, booted for real: QEMU + OVMF (SecureBoot enforced where it applies) +
//! swtpm, with the demo kernel and busybox initramfs, judged by what the guest prints
//! (`IMAGER-BOOT-OK`, SecureBoot state, PCR 11 read from the TPM) against what imager
//! predicted in the build manifest.

mod common;

use std::path::Path;

use common::boot::{Arch, BootLog, Media, SecureBoot, boot, esp_with};
use common::{demo_build, demo_dir, imager};

fn assert_booted(log: &BootLog, predicted: &str, secureboot: u8) {
    log.assert_measured(secureboot, predicted);
    let cmdline = log.cmdline.as_deref().unwrap_or_default();
    assert!(
        cmdline.contains("talos.platform=metal") && cmdline.contains("console=ttyS0"),
        "cmdline {cmdline}"
    );
}

#[test]
fn boot_unsigned_uki_measures_the_predicted_pcr11() {
    let dir = tempfile::tempdir().unwrap();
    let uki = demo_build("metal-uki").run();
    let predicted = common::predicted_pcr11(&uki.manifest);
    let log = boot(
        Media::EspDir(esp_with(&uki.artifact, dir.path(), Arch::Amd64)),
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
    let uki = demo_build("metal-uki")
        .install_dir(&dir.path().join("install"))
        .run();
    assert_eq!(uki.name(), "metal-amd64-uki.efi");
    let log = boot(
        Media::EspDir(esp_with(&uki.artifact, dir.path(), Arch::Amd64)),
        SecureBoot::Off,
        true,
        180,
    );
    assert_booted(&log, &common::predicted_pcr11(&uki.manifest), 0);
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
    let uki = demo_build("secureboot-metal-uki").keys(&keys).run();
    assert!(uki.manifest["secureboot"]["signerCertSha256"].is_string());
    let log = boot(
        Media::EspDir(esp_with(&uki.artifact, dir.path(), Arch::Amd64)),
        SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        true,
        180,
    );
    assert_booted(&log, &common::predicted_pcr11(&uki.manifest), 1);
    assert!(
        log.contains("lockdown=confidentiality"),
        "the sealed SecureBoot command line"
    );
}

#[test]
fn boot_tampered_signed_uki_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let uki = demo_build("secureboot-metal-uki").keys(&keys).run();
    let mut bytes = uki.bytes();
    let at = linux_offset(&uki.artifact) as usize + 4096;
    bytes[at] ^= 0x01;
    let tampered = dir.path().join("tampered.efi");
    std::fs::write(&tampered, bytes).unwrap();
    let log = boot(
        Media::EspDir(esp_with(&tampered, dir.path(), Arch::Amd64)),
        SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        false,
        120,
    );
    log.assert_refused_by_secureboot();
}
