//! Disk images judged by sgdisk, fsck.fat, mtools, an independent META parser, the
//! decompressors, and a real boot.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::boot::{Media, SecureBoot, boot};
use common::meta::parse_meta;
use common::{assert_listed, demo_build, fat, imager, require_tool, run_ok};

const MIB: u64 = 1024 * 1024;

#[test]
fn metal_raw_image_layout_esp_and_meta() {
    let dir = tempfile::tempdir().unwrap();
    let net = r#"{"addresses":[{"address":"10.5.0.2/24","linkName":"eth0"}]}"#;
    // The systemd-boot layout (Talos 1.9 would pick GRUB: tests/bootloaders.rs).
    let profile = dir.path().join("metal-sd-boot.yaml");
    std::fs::write(
        &profile,
        "baseProfileName: metal\noutput:\n  imageOptions:\n    bootloader: sd-boot\n",
    )
    .unwrap();
    let built = demo_build(&profile)
        .args(["--out-format", "raw", "--meta", &format!("0x0a={net}")])
        .args(["--meta", "12=user"])
        .run();
    let image = &built.artifact;
    assert_eq!(image.file_name().unwrap(), "metal-amd64.raw");
    assert_eq!(
        std::fs::metadata(image).unwrap().len(),
        1306525696,
        "diskSize of the metal profile (v1.9.2, sd-boot)"
    );

    let sgdisk = require_tool("sgdisk");
    let verify = run_ok(Command::new(&sgdisk).arg("-v").arg(image));
    assert!(verify.contains("No problems found"), "{verify}");
    let print = run_ok(Command::new(&sgdisk).arg("-p").arg(image));
    assert!(
        print.contains("EF00  EFI") && print.contains("8300  META"),
        "{print}"
    );

    let (efi_at, efi_len, efi_info) = common::partition(image, 1, 512);
    assert_eq!(efi_at, MIB, "1 MiB aligned");
    assert_eq!(efi_len, 1101 * MIB, "EFI-UKI size before 1.11");
    assert!(efi_info.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
    let (meta_at, meta_len, meta_info) = common::partition(image, 2, 512);
    assert_eq!(meta_at % MIB, 0);
    assert_eq!(meta_len, MIB);
    assert!(meta_info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"));

    let bytes = std::fs::read(image).unwrap();
    let meta = parse_meta(&bytes[meta_at as usize..(meta_at + meta_len) as usize]);
    assert_eq!(
        meta,
        vec![(0x0a, net.to_string()), (12, "user".to_string())]
    );
    let dump = run_ok(imager().args(["meta", "dump"]).arg(image));
    assert_eq!(dump, format!("0x0a={net}\n0x0c=user\n"));

    let esp = dir.path().join("esp.img");
    std::fs::write(&esp, &bytes[efi_at as usize..(efi_at + efi_len) as usize]).unwrap();
    fat::fsck(&esp);
    assert_listed(
        &fat::files(&esp),
        &[
            "::/EFI/boot/BOOTX64.efi",
            "::/EFI/Linux/Talos-v1.9.2.efi",
            "::/loader/loader.conf",
        ],
        "the ESP",
    );
    let conf = fat::read_text(&esp, "::/loader/loader.conf");
    assert_eq!(conf, "# systemd-boot configuration\n\ntimeout 10\n");

    // Sparse: the unused space is not written.
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(image).unwrap().blocks() * 512;
    assert!(
        allocated < 64 * MIB,
        "allocated {allocated} bytes of a 1.2 GiB image"
    );

    // A corrupt first META copy: imager meta dump falls back to the second.
    let mut spoiled = bytes.clone();
    spoiled[meta_at as usize + 100] ^= 0xff;
    let spoiled_path = dir.path().join("spoiled.raw");
    std::fs::write(&spoiled_path, &spoiled).unwrap();
    let o = imager()
        .args(["meta", "dump"])
        .arg(&spoiled_path)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("0x0a={net}\n0x0c=user\n")
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("copy 1 is corrupt"));
}

#[test]
fn compressed_images_decompress_to_the_raw_image_and_are_reproducible() {
    let raw = demo_build("metal").args(["--out-format", "raw"]).run();
    let zst = demo_build("metal").run();
    assert_eq!(
        zst.name(),
        "metal-amd64.raw.zst",
        "the metal profile's default outFormat"
    );
    let zst2 = demo_build("metal").run();
    assert!(zst.bytes() == zst2.bytes(), "reproducible .zst");
    let xz = demo_build("metal").args(["--out-format", ".xz"]).run();
    let raw_bytes = raw.bytes();
    for (file, tool) in [(&zst.artifact, "zstd"), (&xz.artifact, "xz")] {
        let t = Command::new(require_tool(tool))
            .arg("-t")
            .arg(file)
            .output()
            .unwrap();
        assert!(t.status.success(), "{tool} -t");
        let d = Command::new(require_tool(tool))
            .arg("-dc")
            .arg(file)
            .output()
            .unwrap();
        assert!(d.stdout == raw_bytes, "{tool} -dc equals the raw image");
    }
    let raw2 = demo_build("metal").args(["--out-format", "raw"]).run();
    assert!(raw2.bytes() == raw_bytes, "reproducible raw image");
}

#[test]
fn bad_disk_options_fail_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.yaml");
    std::fs::write(
        &small,
        "baseProfileName: metal\noutput:\n  imageOptions:\n    diskSize: 104857600\n",
    )
    .unwrap();
    let huge = dir.path().join("huge.yaml");
    let value = "x".repeat(300 * 1024);
    std::fs::write(&huge, format!("baseProfileName: metal\ncustomization:\n  metaContents:\n    - key: 10\n      value: {value}\n")).unwrap();
    let cases = [(&small, "too small"), (&huge, "META")];
    for (profile, needle) in cases {
        let failed = demo_build(profile).no_console().run_err();
        let line = failed.error_line();
        assert!(line.contains(needle), "{needle}: {line}");
        assert_eq!(failed.left(), Vec::<String>::new(), "nothing left");
    }
}

#[test]
fn metal_4k_image_has_4096_byte_sectors() {
    let built = demo_build("metal-4k").args(["--out-format", "raw"]).run();
    let image = &built.artifact;
    let bytes = std::fs::read(image).unwrap();
    assert_eq!(
        &bytes[4096..4104],
        b"EFI PART",
        "GPT header at LBA 1 of 4096-byte sectors"
    );
    assert_ne!(&bytes[512..520], b"EFI PART");
    // sgdisk on a loop device with 4096-byte logical sectors.
    let losetup = require_tool("losetup");
    let out = Command::new(&losetup)
        .args(["--sector-size", "4096", "-f", "--show"])
        .arg(image)
        .output()
        .unwrap();
    if out.status.success() {
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let verify = Command::new(require_tool("sgdisk"))
            .arg("-v")
            .arg(&dev)
            .output()
            .unwrap();
        let print = Command::new(require_tool("sgdisk"))
            .arg("-p")
            .arg(&dev)
            .output()
            .unwrap();
        let _ = Command::new(&losetup).arg("-d").arg(&dev).status();
        let verify = String::from_utf8_lossy(&verify.stdout);
        assert!(verify.contains("No problems found"), "{verify}");
        let print = String::from_utf8_lossy(&print.stdout);
        assert!(
            print.contains("Sector size (logical/physical): 4096"),
            "{print}"
        );
        assert!(print.contains("EFI") && print.contains("META"), "{print}");
    } else {
        // No loop devices in this sandbox: parse the GPT by hand.
        let entries_lba = u64::from_le_bytes(bytes[4096 + 72..4096 + 80].try_into().unwrap());
        let entry = &bytes[(entries_lba * 4096) as usize..];
        let first = u64::from_le_bytes(entry[32..40].try_into().unwrap());
        assert_eq!(first * 4096, MIB, "EFI starts at 1 MiB in 4096-byte LBAs");
    }
    let meta = run_ok(imager().args(["meta", "dump"]).arg(image));
    assert_eq!(meta, "");
}

#[test]
fn boot_metal_disk_image_measures_the_predicted_pcr11() {
    // Talos's default metal image from 1.10 is dual-boot: this is its UEFI half
    // (systemd-boot -> UKI); tests/bootloaders.rs boots its BIOS half.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("metal-1.11.yaml");
    std::fs::write(&profile, "baseProfileName: metal\nversion: v1.11.0\n").unwrap();
    let image = demo_build(&profile).args(["--out-format", "raw"]).run();
    assert_eq!(image.name(), "metal-amd64.raw");
    assert_eq!(
        image.manifest["profile"]["output"]["imageOptions"]["bootloader"],
        "dual-boot"
    );
    let predicted = common::predicted_pcr11(&image.manifest);
    let log = boot(Media::Disk(image.artifact), SecureBoot::Off, true, 240);
    log.assert_measured(0, &predicted);
}

#[test]
fn boot_secureboot_metal_disk_image_under_enforced_secureboot() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let image = demo_build("secureboot-metal")
        .keys(&keys)
        .args(["--out-format", "raw"])
        .run();
    assert_eq!(image.name(), "metal-amd64-secureboot.raw");
    let predicted = common::predicted_pcr11(&image.manifest);
    let log = boot(
        Media::Disk(image.artifact),
        SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        true,
        240,
    );
    log.assert_measured(1, &predicted);
}

#[test]
fn qcow2_and_vhd_convert_back_to_the_raw_image() {
    let dir = tempfile::tempdir().unwrap();
    let qemu_img = require_tool("qemu-img");
    let mut outputs = Vec::new();
    for format in ["raw", "qcow2", "vhd"] {
        let profile = dir.path().join(format!("{format}.yaml"));
        std::fs::write(
            &profile,
            format!("baseProfileName: nocloud\noutput:\n  imageOptions:\n    diskFormat: {format}\n  outFormat: raw\n"),
        )
        .unwrap();
        let built = demo_build(&profile).no_console().run();
        assert_eq!(built.name(), format!("nocloud-amd64.{format}"));
        outputs.push(built);
    }
    let outputs: Vec<PathBuf> = outputs.iter().map(|b| b.artifact.clone()).collect();
    let raw = std::fs::read(&outputs[0]).unwrap();
    let check = run_ok(Command::new(&qemu_img).arg("check").arg(&outputs[1]));
    assert!(check.contains("No errors were found"), "{check}");
    for (path, fmt) in [(&outputs[1], "qcow2"), (&outputs[2], "vpc")] {
        let info = run_ok(
            Command::new(&qemu_img)
                .args(["info", "--output=json", "-f", fmt])
                .arg(path),
        );
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["format"], fmt);
        assert_eq!(
            info["virtual-size"].as_u64().unwrap(),
            raw.len() as u64,
            "{fmt} virtual size"
        );
        let back = dir.path().join(format!("{fmt}.back"));
        run_ok(
            Command::new(&qemu_img)
                .args(["convert", "-f", fmt, "-O", "raw"])
                .arg(path)
                .arg(&back),
        );
        assert!(
            std::fs::read(&back).unwrap() == raw,
            "{fmt} converts back to our raw image"
        );
    }
    // The qcow2 stores only the written clusters.
    assert!(std::fs::metadata(&outputs[1]).unwrap().len() < 64 * MIB);
}

/// `sha256sum`'s digest of `path`.
fn sha256sum(path: &std::path::Path) -> String {
    let out = run_ok(Command::new(require_tool("sha256sum")).arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

/// The build manifest's size and SHA-256 are those of the file, as `sha256sum` and the
/// file system see it, for every way an output is written: hashed on the way (kernel,
/// command line, VHD, compressed images) or afterwards from the file (the sparse raw
/// disk written by regions, qcow2, OVA, ISO, UKI).
#[test]
fn manifest_digests_are_sha256sum_of_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let profile = |name: &str, body: &str| {
        let p = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, body).unwrap();
        p
    };
    let disk = |format: &str, out: &str| {
        profile(
            format,
            &format!(
                "baseProfileName: nocloud\noutput:\n  imageOptions:\n    diskFormat: {format}\n  outFormat: {out}\n"
            ),
        )
    };
    let builds = vec![
        demo_build("metal").args(["--out-format", "raw"]).run(),
        demo_build("metal").run(),
        demo_build("metal").args(["--out-format", ".gz"]).run(),
        demo_build(disk("qcow2", "raw")).no_console().run(),
        demo_build(disk("vhd", "raw")).no_console().run(),
        demo_build(disk("vhd", ".xz")).no_console().run(),
        demo_build("vmware").no_console().run(),
        demo_build("iso").run(),
        demo_build("metal").args(["--output-kind", "uki"]).run(),
        demo_build("metal")
            .no_console()
            .args(["--output-kind", "kernel"])
            .run(),
        demo_build("metal").args(["--output-kind", "cmdline"]).run(),
    ];
    let mut names = Vec::new();
    for b in &builds {
        let out = &b.manifest["outputs"][0];
        assert_eq!(
            out["sha256"].as_str().unwrap(),
            sha256sum(&b.artifact),
            "{}",
            b.name()
        );
        assert_eq!(
            out["size"].as_u64().unwrap(),
            std::fs::metadata(&b.artifact).unwrap().len(),
            "{}",
            b.name()
        );
        names.push(b.name());
    }
    assert_eq!(
        names,
        [
            "metal-amd64.raw",
            "metal-amd64.raw.zst",
            "metal-amd64.raw.gz",
            "nocloud-amd64.qcow2",
            "nocloud-amd64.vhd",
            "nocloud-amd64.vhd.xz",
            "vmware-amd64.ova",
            "metal-amd64.iso",
            "metal-amd64-uki.efi",
            "kernel-amd64",
            "cmdline-metal-amd64",
        ]
    );
    // The raw and VHD images are mostly holes: their zeros were hashed, not read.
    use std::os::unix::fs::MetadataExt;
    for b in [&builds[0], &builds[4]] {
        let m = std::fs::metadata(&b.artifact).unwrap();
        assert!(m.blocks() * 512 < m.len() / 4, "{} is sparse", b.name());
    }
}
