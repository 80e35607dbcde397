//! The GRUB disk layouts, `grub` (Talos 1.9's default, amd64 and arm64) and `dual-boot`
//! (amd64 from 1.10), judged by independent tools: sgdisk for the partitions, the MBR and
//! core.img patches against Debian's own `boot.img`/`diskboot.img`, xfsprogs for the
//! BOOT file system, GRUB's `grub-fstest` for the files it will load and
//! `grub-script-check` for grub.cfg, Debian's `grub-mkimage` for the arm64 EFI image,
//! fsck.fat/mtools for the ESP, the tests' own META parser for key 0x11, and SeaBIOS
//! boots (the AAVMF boot of the arm64 layout is in tests/arm64.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::boot::{Media, SecureBoot, boot};
use common::bootpart::{extract, grub_read, read_range, sgdisk_rows, xfs_db, xfs_repair_clean};
use common::meta::parse_meta;
use common::{assert_listed, demo_build, demo_dir, fat, grub_dir, require_tool, run_ok};
use imager::formats::grub;

const MIB: u64 = 1024 * 1024;

/// For the boots: under TCG on a busy host the kernel's IO-APIC timer check can fail
/// ("IO-APIC + timer doesn't work") before anything this test is about; skip it.
const NO_TIMER_CHECK: [&str; 2] = ["--extra-kernel-arg", "no_timer_check"];

/// A profile file: the metal profile for Talos `version`.
fn metal(dir: &Path, version: &str) -> PathBuf {
    let p = dir.join(format!("metal-{version}.yaml"));
    std::fs::write(&p, format!("baseProfileName: metal\nversion: {version}\n")).unwrap();
    p
}

/// grub.cfg as Talos writes it for a fresh image (spec: bootloaders §1.5), from the
/// version and the kernel command line.
fn expected_grub_cfg(version: &str, cmdline: &str) -> String {
    let mut args = String::new();
    for c in cmdline.chars() {
        if "\\{}&$|;<>\"".contains(c) {
            args.push('\\');
        }
        args.push(c);
    }
    let entry = |name: &str, args: &str| {
        format!(
            "menuentry \"{name}\" {{\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /A/vmlinuz {args}\n  initrd /A/initramfs.xz\n}}\n"
        )
    };
    format!(
        "set default=\"A - Talos {version}\"\n\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n{}{}",
        entry(&format!("A - Talos {version}"), &args),
        entry(
            "Reset Talos installation and return to maintenance mode",
            &format!("{args} talos.experimental.wipe=system:EPHEMERAL,STATE")
        )
    )
}

/// (number, first LBA, last LBA, type code, name) rows.
fn rows(list: &[(u32, u64, u64, &str, &str)]) -> Vec<(u32, u64, u64, String, String)> {
    list.iter()
        .map(|&(n, a, b, c, l)| (n, a, b, c.into(), l.into()))
        .collect()
}

/// The boot code, core.img blocklist and protective MBR of a GRUB layout whose BIOS
/// partition starts at `bios_lba`, checked against Debian's GRUB files.
fn assert_grub_bios(path: &Path, bios_lba: u64, disk_sectors: u64) {
    let grub = grub_dir().join("i386-pc");
    let image = read_range(path, 0, 512);
    // MBR bytes 0..446: boot.img with the kernel sector and the NOP'd drive check.
    let mut boot = std::fs::read(grub.join("boot.img")).unwrap();
    boot[0x5c..0x64].copy_from_slice(&bios_lba.to_le_bytes());
    boot[0x66] = 0x90;
    boot[0x67] = 0x90;
    assert!(
        image[..446] == boot[..446],
        "MBR boot code = patched boot.img"
    );
    // Bytes 446..512: the plain protective MBR (status 0, CHS 00 02 00 / FF FF FF).
    let mut pmbr = [0u8; 66];
    pmbr[..8].copy_from_slice(&[0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff]);
    pmbr[8..12].copy_from_slice(&1u32.to_le_bytes());
    let len = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    pmbr[12..16].copy_from_slice(&len.to_le_bytes());
    pmbr[64..].copy_from_slice(&[0x55, 0xaa]);
    assert_eq!(&image[446..512], &pmbr[..], "protective MBR untouched");
    // core.img: diskboot.img with the first blocklist entry pointing at the next sector.
    let diskboot = std::fs::read(grub.join("diskboot.img")).unwrap();
    let core = &read_range(path, bios_lba * 512, MIB);
    assert_eq!(
        &core[..0x1f4],
        &diskboot[..0x1f4],
        "core.img starts with diskboot.img"
    );
    assert_eq!(
        u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
        bios_lba + 1,
        "blocklist start = BIOS first LBA + 1"
    );
    let count = u16::from_le_bytes([core[0x1fc], core[0x1fd]]) as usize;
    assert!(count > 0 && count < 2048, "blocklist count {count}");
    assert_eq!(&core[0x1fe..0x200], &[0x20, 0x08], "load segment 0x820");
    assert!(
        core[(count + 1) * 512..].iter().all(|&b| b == 0),
        "nothing after the {count}+1 core sectors"
    );
}

/// The BOOT partition (GPT 3): clean for xfs_repair, Talos's feature set and label,
/// the UUID Talos derives from the label (the partition's own GUID), the files GRUB
/// will load equal to the inputs (`arch`'s demo kernel), and grub.cfg Talos's text,
/// accepted by `grub-script-check`.
fn assert_boot_fs(
    image: &Path,
    arch: &str,
    version: &str,
    cmdline: &str,
    initramfs: &Path,
    d: &Path,
) {
    let (at, len, info) = common::partition(image, 3, 512);
    assert!(
        info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        "{info}"
    );
    let part = d.join("boot.xfs");
    extract(image, at, len, &part);
    xfs_repair_clean(&part);
    let version_line = xfs_db(&part, &["version"]);
    for feature in [
        "CRC",
        "FTYPE",
        "FINOBT",
        "SPARSE_INODES",
        "REFLINK",
        "RMAPBT",
        "INOBTCNT",
        "BIGTIME",
        "NREXT64",
    ] {
        assert!(version_line.contains(feature), "{feature}: {version_line}");
    }
    assert!(xfs_db(&part, &["label"]).contains("label = \"BOOT\""));
    let guid = info
        .lines()
        .find_map(|l| l.strip_prefix("Partition unique GUID: "))
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    assert!(
        xfs_db(&part, &["uuid"]).contains(&guid),
        "XFS UUID = GUIDFromLabel(BOOT) = {guid}"
    );
    let kernel = std::fs::read(demo_dir().join(arch).join("vmlinuz")).unwrap();
    assert!(grub_read(image, 3, "/A/vmlinuz", d) == kernel, "/A/vmlinuz");
    assert!(
        grub_read(image, 3, "/A/initramfs.xz", d) == std::fs::read(initramfs).unwrap(),
        "/A/initramfs.xz"
    );
    let cfg = String::from_utf8(grub_read(image, 3, "/grub/grub.cfg", d)).unwrap();
    common::grub_script_check(&cfg, "BOOT's /grub/grub.cfg");
    assert_eq!(cfg, expected_grub_cfg(version, cmdline));
    let cfg_file = d.join("grub.cfg");
    std::fs::write(&cfg_file, &cfg).unwrap();
    run_ok(Command::new(require_tool("grub-script-check")).arg(&cfg_file));
}

fn cmdline_of(built: &common::build::Built) -> String {
    built.manifest["kernelCmdline"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn grub_1_9_image_partitions_bios_code_esp_and_boot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let built = demo_build("metal").args(["--out-format", "raw"]).run();
    let image = &built.artifact;
    assert_eq!(
        built.manifest["profile"]["output"]["imageOptions"]["bootloader"], "grub",
        "Talos 1.9's pick"
    );
    assert_eq!(std::fs::metadata(image).unwrap().len(), 1306525696);
    let verify = run_ok(Command::new(require_tool("sgdisk")).arg("-v").arg(image));
    assert!(verify.contains("No problems found"), "{verify}");
    assert_eq!(
        sgdisk_rows(image),
        rows(&[
            (1, 2048, 206847, "EF00", "EFI"),
            (2, 206848, 208895, "EF02", "BIOS"),
            (3, 208896, 2256895, "8300", "BOOT"),
            (4, 2256896, 2258943, "8300", "META"),
        ])
    );
    let (_, _, bios) = common::partition(image, 2, 512);
    assert!(
        bios.contains("21686148-6449-6E6F-744E-656564454649")
            && bios.contains("Attribute flags: 0000000000000004"),
        "{bios}"
    );
    for n in [1, 3, 4] {
        let (_, _, info) = common::partition(image, n, 512);
        assert!(info.contains("Attribute flags: 0000000000000000"), "{info}");
    }
    assert_grub_bios(image, 206848, 1306525696 / 512);

    // The ESP holds GRUB's EFI image only, with the BOOT prefix baked in.
    let (efi_at, efi_len, _) = common::partition(image, 1, 512);
    assert_eq!((efi_at, efi_len), (MIB, 100 * MIB));
    let esp = d.join("esp.img");
    extract(image, efi_at, efi_len, &esp);
    fat::fsck(&esp);
    let files = fat::files(&esp);
    assert_listed(&files, &["::/EFI/boot/BOOTX64.efi"], "the ESP");
    assert!(
        !files.contains("Linux") && !files.contains("loader"),
        "{files}"
    );
    let efi = d.join("BOOTX64.efi");
    fat::copy_out(&esp, "::/EFI/boot/BOOTX64.efi", &efi);
    let efi = std::fs::read(&efi).unwrap();
    let pe = u32::from_le_bytes(efi[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(&efi[..2], b"MZ");
    assert_eq!(&efi[pe..pe + 6], b"PE\0\0\x64\x86", "x86-64 PE");
    assert!(
        efi.windows(15).any(|w| w == b"(hd0,gpt3)/grub"),
        "GRUB prefix (hd0,gpt3)/grub"
    );

    assert_boot_fs(
        image,
        "amd64",
        "v1.9.2",
        &cmdline_of(&built),
        &demo_dir().join("amd64/initramfs.xz"),
        d,
    );
    // No dual-boot marker in META for grub.
    let (meta_at, meta_len, _) = common::partition(image, 4, 512);
    let meta = parse_meta(&read_range(image, meta_at, meta_len));
    assert_eq!(meta, vec![]);
}

/// Talos 1.9's default arm64 disk image: the `grub` layout with GRUB arm64-efi as
/// `EFI/boot/BOOTAA64.efi` (the bytes Debian's grub-mkimage makes from the same
/// arm64-efi directory), the BIOS partition present but unused (no boot code anywhere),
/// BOOT as on amd64; the same bytes when built on one core.
#[test]
fn grub_arm64_1_9_image_partitions_esp_and_boot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let built = demo_build("metal")
        .arch("arm64")
        .args(["--out-format", "raw"])
        .run();
    let image = &built.artifact;
    assert_eq!(built.name(), "metal-arm64.raw");
    assert_eq!(
        built.manifest["profile"]["output"]["imageOptions"]["bootloader"], "grub",
        "Talos 1.9's arm64 pick"
    );
    assert_eq!(std::fs::metadata(image).unwrap().len(), 1306525696);
    let verify = run_ok(Command::new(require_tool("sgdisk")).arg("-v").arg(image));
    assert!(verify.contains("No problems found"), "{verify}");
    assert_eq!(
        sgdisk_rows(image),
        rows(&[
            (1, 2048, 206847, "EF00", "EFI"),
            (2, 206848, 208895, "EF02", "BIOS"),
            (3, 208896, 2256895, "8300", "BOOT"),
            (4, 2256896, 2258943, "8300", "META"),
        ])
    );
    let (bios_at, bios_len, bios) = common::partition(image, 2, 512);
    assert!(
        bios.contains("21686148-6449-6E6F-744E-656564454649")
            && bios.contains("Attribute flags: 0000000000000004"),
        "{bios}"
    );
    assert!(
        read_range(image, bios_at, bios_len).iter().all(|&b| b == 0),
        "the BIOS partition is unused on arm64"
    );
    let mbr = read_range(image, 0, 512);
    assert!(
        mbr[..446].iter().all(|&b| b == 0),
        "no MBR boot code on arm64"
    );
    assert_eq!(&mbr[510..], &[0x55, 0xaa]);

    // The ESP: GRUB's arm64 EFI image only, as grub-mkimage writes it.
    let (efi_at, efi_len, _) = common::partition(image, 1, 512);
    assert_eq!((efi_at, efi_len), (MIB, 100 * MIB));
    let esp = d.join("esp.img");
    extract(image, efi_at, efi_len, &esp);
    fat::fsck(&esp);
    let files = fat::files(&esp);
    let listed: Vec<&str> = files.lines().filter(|l| !l.ends_with('/')).collect();
    assert_eq!(listed, ["::/EFI/boot/BOOTAA64.efi"], "the ESP: {files}");
    let efi = d.join("BOOTAA64.efi");
    fat::copy_out(&esp, "::/EFI/boot/BOOTAA64.efi", &efi);
    let reference = d.join("reference.efi");
    run_ok(
        Command::new(require_tool("grub-mkimage"))
            .arg("-d")
            .arg(grub_dir().join("arm64-efi"))
            .args(["-O", "arm64-efi", "-p", grub::PREFIX, "-o"])
            .arg(&reference)
            .args(grub::TALOS_MODULES),
    );
    let ours = std::fs::read(&efi).unwrap();
    assert!(
        ours == std::fs::read(&reference).unwrap(),
        "BOOTAA64.efi = grub-mkimage -O arm64-efi -p {} <Talos modules>",
        grub::PREFIX
    );
    let pe = u32::from_le_bytes(ours[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(&ours[pe..pe + 6], b"PE\0\0\x64\xaa", "arm64 PE");

    assert_boot_fs(
        image,
        "arm64",
        "v1.9.2",
        &cmdline_of(&built),
        &demo_dir().join("arm64/initramfs.xz"),
        d,
    );
    let (meta_at, meta_len, _) = common::partition(image, 4, 512);
    assert_eq!(parse_meta(&read_range(image, meta_at, meta_len)), vec![]);

    // One core, same bytes.
    let again = demo_build("metal")
        .arch("arm64")
        .args(["--out-format", "raw"])
        .single_core()
        .run();
    run_ok(Command::new("cmp").arg(image).arg(&again.artifact));

    // Asked for on a later target (what overlay profiles do): BOOT is 2000 MiB from 1.11
    // and the disk grows by 1000 MiB, Talos's numbers.
    let p = d.join("metal-grub-1.11.yaml");
    std::fs::write(
        &p,
        "baseProfileName: metal\nversion: v1.11.0\noutput:\n  imageOptions:\n    bootloader: grub\n",
    )
    .unwrap();
    let later = demo_build(&p)
        .arch("arm64")
        .args(["--out-format", "raw"])
        .run();
    assert_eq!(
        std::fs::metadata(&later.artifact).unwrap().len(),
        2355101696
    );
    let verify = run_ok(
        Command::new(require_tool("sgdisk"))
            .arg("-v")
            .arg(&later.artifact),
    );
    assert!(verify.contains("No problems found"), "{verify}");
    assert_eq!(
        sgdisk_rows(&later.artifact),
        rows(&[
            (1, 2048, 206847, "EF00", "EFI"),
            (2, 206848, 208895, "EF02", "BIOS"),
            (3, 208896, 4304895, "8300", "BOOT"),
            (4, 4304896, 4306943, "8300", "META"),
        ])
    );
}

#[test]
fn dual_boot_images_for_1_10_and_1_11() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (version, size, bios_lba, table) in [
        (
            "v1.10.0",
            2356150272u64,
            2256896u64,
            [
                (1, 2048, 2256895, "EF00", "EFI"),
                (2, 2256896, 2258943, "EF02", "BIOS"),
                (3, 2258944, 4306943, "8300", "BOOT"),
                (4, 4306944, 4308991, "8300", "META"),
            ],
        ),
        (
            "v1.11.0",
            4453302272,
            4304896,
            [
                (1, 2048, 4304895, "EF00", "EFI"),
                (2, 4304896, 4306943, "EF02", "BIOS"),
                (3, 4306944, 8402943, "8300", "BOOT"),
                (4, 8402944, 8404991, "8300", "META"),
            ],
        ),
    ] {
        let built = demo_build(metal(d, version))
            .args(["--out-format", "raw", "--meta", "0x0c=user"])
            .run();
        let image = &built.artifact;
        assert_eq!(
            built.manifest["profile"]["output"]["imageOptions"]["bootloader"],
            "dual-boot"
        );
        assert_eq!(std::fs::metadata(image).unwrap().len(), size, "{version}");
        let verify = run_ok(Command::new(require_tool("sgdisk")).arg("-v").arg(image));
        assert!(verify.contains("No problems found"), "{verify}");
        assert_eq!(sgdisk_rows(image), rows(&table), "{version}");
        assert_grub_bios(image, bios_lba, size / 512);
        // META: the user's value, then the first-boot marker.
        let (meta_at, meta_len, _) = common::partition(image, 4, 512);
        let meta = parse_meta(&read_range(image, meta_at, meta_len));
        assert_eq!(
            meta,
            vec![(0x0c, "user".to_string()), (0x11, "dual-boot".to_string())],
            "{version}"
        );
        // The ESP: systemd-boot and the UKI, as for sd-boot.
        let (efi_at, efi_len, _) = common::partition(image, 1, 512);
        let esp = d.join("esp.img");
        extract(image, efi_at, efi_len, &esp);
        fat::fsck(&esp);
        assert_listed(
            &fat::files(&esp),
            &[
                "::/EFI/boot/BOOTX64.efi",
                &format!("::/EFI/Linux/Talos-{version}.efi"),
                "::/loader/loader.conf",
            ],
            "the ESP",
        );
        assert_boot_fs(
            image,
            "amd64",
            version,
            &cmdline_of(&built),
            &demo_dir().join("amd64/initramfs.xz"),
            d,
        );
        if version == "v1.10.0" {
            // Same inputs and epoch, same bytes (UKI, FAT, GRUB core image, XFS, META).
            let again = demo_build(metal(d, version))
                .args(["--out-format", "raw", "--meta", "0x0c=user"])
                .run();
            run_ok(Command::new("cmp").arg(image).arg(&again.artifact));
        }
    }
}

/// BIOS half of Talos's default metal image (the UEFI half: tests/disk.rs
/// `boot_metal_disk_image_measures_the_predicted_pcr11`).
#[test]
fn boot_dual_boot_metal_image_on_seabios() {
    let dir = tempfile::tempdir().unwrap();
    let image = demo_build(metal(dir.path(), "v1.11.0"))
        .args(["--out-format", "raw"])
        .args(NO_TIMER_CHECK)
        .run();
    let log = boot(
        Media::Disk(image.artifact.clone()),
        SecureBoot::Bios,
        false,
        150,
    );
    assert!(
        log.marker,
        "GRUB -> kernel -> /init; log {}",
        log.path.display()
    );
    let cmdline = log.cmdline.clone().unwrap_or_default();
    assert!(
        cmdline.contains("talos.platform=metal") && cmdline.contains("console=ttyS0"),
        "entry A's command line: {cmdline}"
    );
}

#[test]
fn boot_grub_1_9_qcow2_on_seabios() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("metal-qcow2.yaml");
    std::fs::write(
        &profile,
        "baseProfileName: metal\noutput:\n  imageOptions:\n    diskFormat: qcow2\n  outFormat: raw\n",
    )
    .unwrap();
    let image = demo_build(&profile).args(NO_TIMER_CHECK).run();
    assert_eq!(image.name(), "metal-amd64.qcow2");
    let log = boot(
        Media::Qcow2(image.artifact.clone()),
        SecureBoot::Bios,
        false,
        150,
    );
    assert!(
        log.marker,
        "GRUB -> kernel -> /init; log {}",
        log.path.display()
    );
}

/// The UEFI half of the grub layout: OVMF runs GRUB's EFI image from the ESP, which
/// reads grub.cfg and the kernel from BOOT through its baked-in prefix.
#[test]
fn boot_grub_1_9_image_on_ovmf() {
    let image = demo_build("metal")
        .args(["--out-format", "raw"])
        .args(NO_TIMER_CHECK)
        .run();
    let log = boot(
        Media::Disk(image.artifact.clone()),
        SecureBoot::Off,
        false,
        150,
    );
    assert!(
        log.marker,
        "GRUB EFI -> kernel -> /init; log {}",
        log.path.display()
    );
    assert_eq!(
        log.secureboot,
        Some(0),
        "booted through UEFI; log {}",
        log.path.display()
    );
}

#[test]
fn boot_dual_boot_image_with_a_flipped_core_byte_fails_on_bios() {
    let dir = tempfile::tempdir().unwrap();
    let image = demo_build(metal(dir.path(), "v1.10.0"))
        .args(["--out-format", "raw"])
        .run();
    // One byte of the LZMA-compressed GRUB kernel, a few KiB into core.img, flipped
    // in the image itself (the build's own copy).
    let at = 2256896 * 512 + 8 * 1024;
    let spoiled = image.artifact.clone();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&spoiled)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    }
    // A good image reaches the marker in about 15 s of emulation; 45 s is room enough.
    let log = boot(Media::Disk(spoiled), SecureBoot::Bios, false, 45);
    log.assert_bios_reached_disk_and_grub_failed();
}

#[test]
fn secureboot_replaces_a_chosen_grub_layout_with_sd_boot_as_talos_does() {
    let dir = tempfile::tempdir().unwrap();
    for bootloader in ["dual-boot", "grub"] {
        let p = dir.path().join(format!("{bootloader}.yaml"));
        std::fs::write(
            &p,
            format!("baseProfileName: secureboot-metal\nversion: v1.11.0\noutput:\n  imageOptions:\n    bootloader: {bootloader}\n"),
        )
        .unwrap();
        let dump = run_ok(
            common::imager()
                .arg(&p)
                .args(["--arch", "amd64", "--print-profile"]),
        );
        assert!(dump.contains("    bootloader: sd-boot\n"), "{dump}");
        assert!(dump.contains("    diskSize: 2355101696\n"), "{dump}");
    }
}
