//! arm64 outputs from the arm64 demo inputs (systemd 257 aa64 stub and boot loader, Debian's
//! arm64 `Image`, Debian's GRUB arm64-efi), judged by sbverify, osslsigncode, ukify, xorriso,
//! mtools and sgdisk, and booted in `qemu-system-aarch64 -machine virt` under AAVMF.
//!
//! The TPM is not checked in the guest: QEMU's `virt` machine offers only `tpm-tis-device`, and
//! Debian's arm64 kernels are built without its driver (CONFIG_TCG_TIS unset), so the guest has
//! no `/sys/class/tpm/tpm0`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::boot::{Arch, Media, SecureBoot, boot_arch};
use common::build::Built;
use common::{assert_listed, demo_build, demo_dir, fat, require_tool, run_ok};

/// `IMAGE_FILE_MACHINE_ARM64`.
const MACHINE_ARM64: u16 = 0xaa64;

/// The PE machine type of the image at `path`.
fn pe_machine(path: &Path) -> u16 {
    let b = std::fs::read(path).unwrap();
    let pe = u32::from_le_bytes(b[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(&b[pe..pe + 4], b"PE\0\0", "{}", path.display());
    u16::from_le_bytes([b[pe + 4], b[pe + 5]])
}

/// osslsigncode: does `file` verify against `cert`?
fn osslsigncode_accepts(file: &Path, cert: &Path) -> bool {
    Command::new(require_tool("osslsigncode"))
        .args(["verify", "-CAfile"])
        .arg(cert)
        .arg("-in")
        .arg(file)
        .output()
        .unwrap()
        .status
        .success()
}

/// Checks the signature of an arm64 EFI binary with both judges.
fn assert_signed_aa64(file: &Path, keys: &Path) {
    assert_eq!(pe_machine(file), MACHINE_ARM64, "{}", file.display());
    common::sbverify(keys, file);
    assert!(
        osslsigncode_accepts(file, &keys.join("uki-signing-cert.pem")),
        "osslsigncode accepts {}",
        file.display()
    );
}

fn arm64(profile: impl AsRef<std::ffi::OsStr>) -> common::build::DemoBuild {
    demo_build(profile).arch("arm64")
}

/// The metal profile with systemd-boot (for the default target, 1.9, Talos picks GRUB's
/// arm64-efi layout: tests/bootloaders.rs and [`boot_grub_arm64_disk_image`]).
fn sd_boot_metal(dir: &Path) -> PathBuf {
    let p = dir.join("metal-sd-boot.yaml");
    std::fs::write(
        &p,
        "baseProfileName: metal\noutput:\n  imageOptions:\n    bootloader: sd-boot\n",
    )
    .unwrap();
    p
}

#[test]
fn arm64_signed_uki_is_accepted_by_sbverify_osslsigncode_and_ukify() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let uki = arm64("secureboot-metal-uki").keys(&keys).no_console().run();
    assert_eq!(uki.name(), "metal-arm64-secureboot-uki.efi");
    assert_signed_aa64(&uki.artifact, &keys);

    let ukify = std::env::var_os("UKIFY")
        .map(PathBuf::from)
        .unwrap_or_else(|| require_tool("ukify"));
    let inspected = run_ok(Command::new(&ukify).arg("inspect").arg(&uki.artifact));
    let sections: Vec<&str> = inspected
        .lines()
        .filter(|l| l.starts_with('.') && l.ends_with(':'))
        .map(|l| l.trim_end_matches(':'))
        .collect();
    for s in [
        ".sbat", ".osrel", ".cmdline", ".pcrpkey", ".linux", ".initrd",
    ] {
        assert!(sections.contains(&s), "{s} in {sections:?}");
    }
    assert!(!sections.contains(&".uname"), "no .uname on arm64");
    assert!(
        inspected.contains("systemd-stub,1,The systemd Developers,systemd,257"),
        "the aa64 stub 257:\n{inspected}"
    );
    // The metal defaults for arm64.
    let cmdline = uki.manifest["kernelCmdline"].as_str().unwrap();
    assert!(
        cmdline.starts_with("talos.platform=metal console=ttyAMA0 console=tty0 "),
        "{cmdline}"
    );
    assert!(!uki.manifest["pcr11"][0]["afterStub"].is_null());
}

#[test]
fn arm64_secureboot_iso_is_uefi_only_with_a_signed_bootaa64() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let iso = arm64("secureboot-iso").keys(&keys).run();
    assert_eq!(iso.name(), "metal-arm64-secureboot.iso");
    let report = run_ok(
        Command::new(require_tool("xorriso"))
            .arg("-indev")
            .arg(&iso.artifact)
            .args(["-report_el_torito", "plain"]),
    );
    let boot_entries: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("El Torito boot img :"))
        .collect();
    assert_eq!(boot_entries.len(), 1, "one El Torito entry:\n{report}");
    assert!(boot_entries[0].contains("UEFI"), "an EFI entry:\n{report}");
    let esp = fat::iso_esp(&iso.artifact, dir.path());
    fat::fsck(&esp);
    let files = fat::files(&esp);
    assert_listed(
        &files,
        &[
            "::/EFI/BOOT/BOOTAA64.EFI",
            "::/EFI/Linux/Talos-v1.9.2.efi",
            "::/loader/keys/auto/db.auth",
        ],
        "the ESP",
    );
    assert!(!files.contains("BOOTX64"), "{files}");
    for (path, name) in [
        ("::/EFI/BOOT/BOOTAA64.EFI", "boot.efi"),
        ("::/EFI/Linux/Talos-v1.9.2.efi", "uki.efi"),
    ] {
        let out = dir.path().join(name);
        fat::copy_out(&esp, path, &out);
        assert_signed_aa64(&out, &keys);
    }
}

#[test]
fn arm64_disk_image_has_the_sd_boot_layout() {
    let dir = tempfile::tempdir().unwrap();
    let image = arm64(sd_boot_metal(dir.path()))
        .args(["--out-format", "raw"])
        .run();
    assert_eq!(image.name(), "metal-arm64.raw");
    run_ok(
        Command::new(require_tool("sgdisk"))
            .arg("-v")
            .arg(&image.artifact),
    );
    let (at, _, _) = common::partition(&image.artifact, 1, 512);
    let esp = format!("{}@@{at}", image.artifact.display());
    let files = fat::files(Path::new(&esp));
    assert_listed(
        &files,
        &[
            "::/EFI/boot/BOOTAA64.efi",
            "::/EFI/Linux/Talos-v1.9.2.efi",
            "::/loader/loader.conf",
        ],
        "the ESP",
    );
    let boot = dir.path().join("boot.efi");
    fat::copy_out(Path::new(&esp), "::/EFI/boot/BOOTAA64.efi", &boot);
    assert_eq!(
        std::fs::read(&boot).unwrap(),
        std::fs::read(demo_dir().join("arm64/systemd-boot.efi")).unwrap()
    );
}

#[test]
fn arm64_pxe_assets_carry_the_arm64_kernel() {
    let out = tempfile::tempdir().unwrap();
    run_ok(
        &mut arm64("metal")
            .subcommand("pxe")
            .no_console()
            .args(["--base-url", "http://172.16.0.1/assets/"])
            .out(out.path())
            .command(),
    );
    let dir = out.path();
    assert_eq!(
        std::fs::read(dir.join("kernel-arm64")).unwrap(),
        std::fs::read(demo_dir().join("arm64/vmlinuz")).unwrap()
    );
    assert!(dir.join("initramfs-metal-arm64.xz").is_file());
    let cmdline = std::fs::read_to_string(dir.join("cmdline-metal-arm64")).unwrap();
    assert!(
        cmdline.contains("console=ttyAMA0 console=tty0"),
        "{cmdline}"
    );
    let script = std::fs::read_to_string(dir.join("metal-arm64.ipxe")).unwrap();
    assert!(
        script.contains("kernel http://172.16.0.1/assets/kernel-arm64 "),
        "{script}"
    );
}

/// The boot log of the signed arm64 UKI `uki` from an ESP, keys `keys` enrolled.
fn boot_enrolled(uki: &Built, keys: &Path, dir: &Path) -> common::boot::BootLog {
    boot_arch(
        Arch::Arm64,
        Media::EspDir(common::boot::esp_with(&uki.artifact, dir, Arch::Arm64)),
        SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        true,
        180,
    )
}

#[test]
fn boot_arm64_signed_uki_under_enforced_secureboot_and_tampered_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(&dir.path().join("keys"));
    let uki = arm64("secureboot-metal-uki").keys(&keys).run();
    let log = boot_enrolled(&uki, &keys, &dir.path().join("good"));
    assert!(
        log.marker,
        "boots to the marker; log {}",
        log.path.display()
    );
    assert_eq!(
        log.secureboot,
        Some(1),
        "enforced; log {}",
        log.path.display()
    );
    assert!(log.contains("EFI stub: UEFI Secure Boot is enabled."));
    let cmdline = log.cmdline.as_deref().unwrap_or_default();
    assert!(
        cmdline.contains("talos.platform=metal") && cmdline.contains("console=ttyAMA0"),
        "{cmdline}"
    );

    // One byte of the kernel changed: the firmware refuses the image.
    let mut bytes = uki.bytes();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&uki.artifact, bytes).unwrap();
    let log = boot_enrolled(&uki, &keys, &dir.path().join("tampered"));
    log.assert_refused_by_secureboot();
}

#[test]
fn boot_arm64_secureboot_iso_enrolls_keys_and_boots_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let iso = arm64("secureboot-iso")
        .keys(&keys)
        .args(["--out-format", "raw"])
        .run();
    let log = boot_arch(
        Arch::Arm64,
        Media::Cdrom(iso.artifact.clone()),
        SecureBoot::Setup,
        false,
        240,
    );
    let path = log.path.display();
    assert!(
        log.contains("Enrolling secure boot keys"),
        "systemd-boot enrols; log {path}"
    );
    assert!(log.marker, "boots to the marker; log {path}");
    assert_eq!(
        log.secureboot,
        Some(1),
        "enforced after enrolment; log {path}"
    );
}

#[test]
fn boot_arm64_plain_disk_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = arm64(sd_boot_metal(dir.path()))
        .args(["--out-format", "raw"])
        .run();
    let log = boot_arch(
        Arch::Arm64,
        Media::Disk(image.artifact.clone()),
        SecureBoot::Off,
        false,
        180,
    );
    let path = log.path.display();
    assert!(log.marker, "boots to the marker; log {path}");
    assert_eq!(log.secureboot, Some(0), "not enforced; log {path}");
}

/// Talos 1.9's default arm64 disk image (the `grub` layout) under AAVMF: the firmware runs
/// `EFI/boot/BOOTAA64.efi` (our GRUB arm64-efi image) from the ESP, GRUB shows Talos's
/// menu from `(hd0,gpt3)/grub/grub.cfg` on the XFS BOOT partition and loads `/A/vmlinuz`
/// from there (its `linux` command adds `BOOT_IMAGE=`), and the initramfs reaches the
/// marker.
#[test]
fn boot_grub_arm64_disk_image() {
    let image = arm64("metal").args(["--out-format", "raw"]).run();
    assert_eq!(
        image.manifest["profile"]["output"]["imageOptions"]["bootloader"],
        "grub"
    );
    let log = boot_arch(
        Arch::Arm64,
        Media::Disk(image.artifact.clone()),
        SecureBoot::Off,
        false,
        180,
    );
    let path = log.path.display();
    assert!(log.contains("GNU GRUB"), "GRUB's menu; log {path}");
    assert!(
        log.contains("Booting `A - Talos v1.9.2'"),
        "entry A; log {path}"
    );
    let cmdline = log.cmdline.clone().unwrap_or_default();
    assert!(
        cmdline.starts_with("BOOT_IMAGE=/A/vmlinuz talos.platform=metal"),
        "GRUB loaded /A/vmlinuz with grub.cfg's command line: {cmdline:?}; log {path}"
    );
    assert!(log.marker, "boots to the marker; log {path}");
}
