//! The EFI system partition writer, judged by fsck.fat and mtools.

mod common;

use std::path::Path;
use std::process::Command;

use common::{demo_dir, fat, require_tool, run_ok};
use imager::formats::fat_esp::{self as esp, EspEntry, EspOptions, EspSource};

const MIB: u64 = 1024 * 1024;

fn entries(demo: &Path) -> Vec<EspEntry> {
    vec![
        EspEntry {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            source: EspSource::File(demo.join("amd64/systemd-boot.efi")),
            read_only: false,
        },
        EspEntry {
            path: "EFI/Linux/Talos-v1.9.2.efi".into(),
            source: EspSource::File(demo.join("amd64/vmlinuz")),
            read_only: false,
        },
        EspEntry {
            path: "loader/loader.conf".into(),
            source: EspSource::Bytes(b"timeout 10\nsecure-boot-enroll off\n".to_vec()),
            read_only: false,
        },
        EspEntry {
            path: "loader/random-seed".into(),
            source: EspSource::Bytes(vec![0; 32]),
            read_only: true,
        },
    ]
}

/// Writes an ESP of `size` at `offset` into a fresh file; returns the ESP bytes extracted.
fn write_esp(dir: &Path, name: &str, offset: u64, size: u64) -> std::path::PathBuf {
    let demo = demo_dir();
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.set_len(offset + size + MIB).unwrap();
    esp::write(
        &entries(&demo),
        &EspOptions {
            label: "EFI".into(),
            epoch: 1_700_000_000,
            sector_size: 512,
        },
        &file,
        offset,
        size,
    )
    .unwrap();
    drop(file);
    let extracted = dir.join(format!("{name}.esp"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(
        &extracted,
        &bytes[offset as usize..(offset + size) as usize],
    )
    .unwrap();
    extracted
}

#[test]
fn esp_is_clean_for_fsck_and_mtools_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dir();
    for (name, offset, size) in [
        ("fat16", 0, 20 * MIB),
        ("fat32", 0, 100 * MIB),
        ("offset", MIB, 40 * MIB),
    ] {
        let esp = write_esp(dir.path(), name, offset, size);
        let text = fat::fsck(&esp);
        assert!(
            !text.contains("Expected") && !text.contains("wrong") && !text.contains("Dirty"),
            "{name}: {text}"
        );
        let listing = fat::files(&esp);
        for f in [
            "BOOTX64.EFI",
            "Talos-v1.9.2.efi",
            "loader.conf",
            "random-seed",
        ] {
            assert!(listing.contains(f), "{name}: {f} listed:\n{listing}");
        }
        let out = dir.path().join(format!("{name}.boot"));
        fat::copy_out(&esp, "::/EFI/BOOT/BOOTX64.EFI", &out);
        assert!(
            std::fs::read(&out).unwrap()
                == std::fs::read(demo.join("amd64/systemd-boot.efi")).unwrap(),
            "{name}: content"
        );
        let attrs = run_ok(
            Command::new(require_tool("mattrib"))
                .arg("-i")
                .arg(&esp)
                .arg("::/loader/random-seed"),
        );
        assert!(
            attrs.split_whitespace().next().unwrap_or("").contains('R'),
            "{name}: random-seed read-only: {attrs}"
        );
        let label = run_ok(
            Command::new(require_tool("mlabel"))
                .arg("-s")
                .arg("-i")
                .arg(&esp)
                .arg("::"),
        );
        assert!(label.contains("EFI"), "{name}: label {label}");
    }
    let kind = run_ok(Command::new("file").arg(dir.path().join("fat32.esp")));
    assert!(kind.contains("FAT (32 bit)"), "{kind}");
}

#[test]
fn esp_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_esp(dir.path(), "a", 0, 40 * MIB);
    let b = write_esp(dir.path(), "b", 0, 40 * MIB);
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap());
}
