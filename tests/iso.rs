//! ISO outputs judged by xorriso, isoinfo, fsck.fat and mtools, and booted for real:
//! the SecureBoot ISO enrolls its keys from setup mode and boots enforced, as a CD and
//! as a USB disk; the plain ISO boots on UEFI and on legacy BIOS.

mod common;

use std::path::Path;
use std::process::Command;

use common::boot::{Media, SecureBoot, boot};
use common::build::Built;
use common::{assert_listed, demo_build, demo_dir, fat, require_tool, run_ok};

/// Builds an ISO profile from the demo inputs, with keys when it is signed.
fn build_iso(profile: &str, keys: Option<&Path>) -> Built {
    let mut build = demo_build(profile);
    if let Some(keys) = keys {
        build = build.keys(keys);
    }
    let iso = build.run();
    assert!(iso.stderr.contains("ISO ready"), "{}", iso.stderr);
    iso
}

/// Every path in the ISO 9660 tree (Rock Ridge names through isoinfo), one a line.
fn iso_files(iso: &Path) -> String {
    run_ok(
        Command::new(require_tool("isoinfo"))
            .args(["-R", "-f", "-i"])
            .arg(iso),
    )
}

/// The UKI as the ISO 9660 tree shows it (Rock Ridge through xorriso, Joliet and the
/// plain primary tree through isoinfo) is the ESP's file, and its data lies inside
/// the ESP partition: the image holds it once.
fn uki_is_stored_once(iso: &Path, dir: &Path, esp: &Path) {
    let from_esp = dir.join("uki-esp.efi");
    fat::copy_out(esp, "::/EFI/Linux/Talos-v1.9.2.efi", &from_esp);
    let from_esp = std::fs::read(&from_esp).unwrap();
    let rock_ridge = dir.join("uki-rr.efi");
    run_ok(
        Command::new(require_tool("xorriso"))
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", "/EFI/Linux/Talos-v1.9.2.efi"])
            .arg(&rock_ridge),
    );
    assert!(
        std::fs::read(&rock_ridge).unwrap() == from_esp,
        "Rock Ridge view"
    );
    for (flag, name) in [
        ("-J", "/EFI/Linux/Talos-v1.9.2.efi"),
        ("", "/EFI/LINUX/TALOS_V1_9_2.EFI;1"),
    ] {
        let mut cmd = Command::new(require_tool("isoinfo"));
        cmd.arg("-i").arg(iso).args(["-x", name]);
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success() && o.stdout == from_esp,
            "{name} through isoinfo {flag}"
        );
    }

    let lba = run_ok(
        Command::new(require_tool("xorriso"))
            .arg("-indev")
            .arg(iso)
            .args(["-find", "/EFI/Linux", "-type", "f", "-exec", "report_lba"]),
    );
    let start: u64 = lba
        .lines()
        .find(|l| l.contains("Talos-v1.9.2.efi"))
        .and_then(|l| l.split(',').nth(1))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("report_lba:\n{lba}"));
    let bytes = std::fs::read(iso).unwrap();
    let part = (0..4)
        .map(|i| &bytes[446 + 16 * i..462 + 16 * i])
        .find(|e| e[4] == 0xef)
        .unwrap();
    let first = u64::from(u32::from_le_bytes(part[8..12].try_into().unwrap())) * 512;
    let len = u64::from(u32::from_le_bytes(part[12..16].try_into().unwrap())) * 512;
    assert!(
        (first..first + len).contains(&(start * 2048)),
        "UKI data at byte {} lies in the ESP [{first}, {})",
        start * 2048,
        first + len
    );
    // Nothing else in the image spells the UKI out again (its headers and section
    // table are its own; the plain ISO's /boot holds the kernel and initramfs too).
    let needle = &from_esp[..4096];
    let copies = bytes.windows(needle.len()).filter(|w| w == &needle).count();
    assert_eq!(copies, 1, "copies of the UKI's middle 4 KiB in the ISO");
}

#[test]
fn secureboot_iso_layout() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let built = build_iso("secureboot-iso", Some(&keys));
    let (iso, manifest) = (&built.artifact, &built.manifest);
    assert_eq!(built.name(), "metal-amd64-secureboot.iso");

    let report = run_ok(
        Command::new(require_tool("xorriso"))
            .arg("-indev")
            .arg(iso)
            .args(["-report_el_torito", "plain", "-report_system_area", "plain"]),
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("El Torito boot img :   1  UEFI")),
        "UEFI El Torito entry:\n{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("MBR partition") && l.contains("0xef")),
        "EF partition:\n{report}"
    );
    assert!(
        report.contains("EFI System Partition"),
        "GPT ESP:\n{report}"
    );
    let pvd = run_ok(
        Command::new(require_tool("isoinfo"))
            .arg("-d")
            .arg("-i")
            .arg(iso),
    );
    assert!(
        pvd.contains("Volume id: TALOS_V1_9_2") && pvd.contains("Volume set id: Talos-v1.9.2"),
        "{pvd}"
    );

    assert_listed(
        &iso_files(iso),
        &[
            "/EFI/BOOT/BOOTX64.EFI",
            "/EFI/Linux/Talos-v1.9.2.efi",
            "/loader/loader.conf",
            "/loader/keys/auto/PK.auth",
            "/EFI/keys/uki-signing-cert.der",
        ],
        "the ISO 9660 tree",
    );

    let esp = fat::iso_esp(iso, dir.path());
    fat::fsck(&esp);
    assert_listed(
        &fat::files(&esp),
        &[
            "::/EFI/BOOT/BOOTX64.EFI",
            "::/EFI/Linux/Talos-v1.9.2.efi",
            "::/loader/loader.conf",
            "::/loader/random-seed",
            "::/EFI/keys/uki-signing-cert.der",
            "::/loader/keys/auto/PK.auth",
            "::/loader/keys/auto/KEK.auth",
            "::/loader/keys/auto/db.auth",
        ],
        "the ESP",
    );
    let conf = fat::read_text(&esp, "::/loader/loader.conf");
    assert_eq!(
        conf,
        "# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll if-safe\n"
    );
    let cert = dir.path().join("cert.der");
    fat::copy_out(&esp, "::/EFI/keys/uki-signing-cert.der", &cert);
    let pem = run_ok(
        Command::new(require_tool("openssl"))
            .args(["x509", "-inform", "DER", "-in"])
            .arg(&cert),
    );
    assert_eq!(
        pem,
        std::fs::read_to_string(keys.join("uki-signing-cert.pem")).unwrap()
    );
    for (name, judge) in [
        ("BOOTX64.EFI", "::/EFI/BOOT/BOOTX64.EFI"),
        ("uki.efi", "::/EFI/Linux/Talos-v1.9.2.efi"),
    ] {
        let f = dir.path().join(name);
        fat::copy_out(&esp, judge, &f);
        common::sbverify(&keys, &f);
    }
    assert!(manifest["secureboot"]["signerCertSha256"].is_string());
    uki_is_stored_once(iso, dir.path(), &esp);

    // Reproducible: a second build, later, into another directory.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = build_iso("secureboot-iso", Some(&keys));
    assert!(built.bytes() == again.bytes(), "identical bytes");
}

#[test]
fn plain_iso_has_bios_and_uefi_entries() {
    let dir = tempfile::tempdir().unwrap();
    let built = build_iso("iso", None);
    let iso = &built.artifact;
    assert_eq!(built.name(), "metal-amd64.iso");
    let report = run_ok(
        Command::new(require_tool("xorriso"))
            .arg("-indev")
            .arg(iso)
            .args(["-report_el_torito", "plain"]),
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("El Torito boot img :   1  BIOS")),
        "{report}"
    );
    assert!(report.lines().any(|l| l.contains("UEFI")), "{report}");
    assert_listed(
        &iso_files(iso),
        &[
            "/isolinux/isolinux.bin",
            "/isolinux/isolinux.cfg",
            "/boot/vmlinuz",
            "/boot/initramfs.xz",
            "/EFI/BOOT/BOOTX64.EFI",
        ],
        "the ISO 9660 tree",
    );
    let esp = fat::iso_esp(iso, dir.path());
    let conf = fat::read_text(&esp, "::/loader/loader.conf");
    assert_eq!(
        conf,
        "# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll off\n"
    );
    uki_is_stored_once(iso, dir.path(), &esp);
}

#[test]
fn boot_secureboot_iso_as_cdrom_enrolls_keys_and_boots_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let iso = build_iso("secureboot-iso", Some(&keys));
    let log = boot(Media::Cdrom(iso.artifact), SecureBoot::Setup, true, 300);
    assert!(
        log.contains("Enrolling secure boot keys"),
        "systemd-boot enrolls; log {}",
        log.path.display()
    );
    log.assert_measured(1, &common::predicted_pcr11(&iso.manifest));
    assert!(
        log.contains("talos.halt_if_installed=1"),
        "the ISO command line"
    );
}

#[test]
fn boot_secureboot_iso_as_usb_disk() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let iso = build_iso("secureboot-iso", Some(&keys));
    let log = boot(Media::Disk(iso.artifact), SecureBoot::Setup, true, 300);
    log.assert_measured(1, &common::predicted_pcr11(&iso.manifest));
}

#[test]
fn boot_tampered_secureboot_iso_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let iso = build_iso("secureboot-iso", Some(&keys));
    // Flip one byte inside the UKI's .linux in the ESP copy (the one firmware boots).
    let uki = std::fs::read(demo_dir().join("amd64/vmlinuz")).unwrap();
    let mut bytes = iso.bytes();
    let needle = &uki[4096..4096 + 64];
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(!hits.is_empty(), "the kernel bytes are in the ISO");
    for at in hits {
        bytes[at + 10] ^= 0x01;
    }
    let tampered = dir.path().join("tampered.iso");
    std::fs::write(&tampered, bytes).unwrap();
    let log = boot(
        Media::Cdrom(tampered),
        SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        false,
        150,
    );
    log.assert_refused_by_secureboot();
}

#[test]
fn boot_plain_iso_on_uefi_and_bios() {
    let built = build_iso("iso", None);
    let iso = built.artifact.clone();
    let uefi = boot(Media::Cdrom(iso.clone()), SecureBoot::Off, false, 200);
    assert!(uefi.marker, "UEFI boot; log {}", uefi.path.display());
    assert_eq!(uefi.secureboot, Some(0));
    let bios_disk = boot(Media::Disk(iso.clone()), SecureBoot::Bios, false, 200);
    assert!(
        bios_disk.marker,
        "BIOS boot as a USB disk (isohybrid MBR); log {}",
        bios_disk.path.display()
    );
    let bios = boot(Media::Cdrom(iso), SecureBoot::Bios, false, 200);
    assert!(bios.marker, "BIOS boot; log {}", bios.path.display());
    let cmdline = bios.cmdline.unwrap_or_default();
    assert!(
        cmdline.contains("talos.platform=metal") && cmdline.contains("talos.halt_if_installed=1"),
        "{cmdline}"
    );
}
