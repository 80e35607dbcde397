//! The XFS writer (the BOOT partition), judged by xfsprogs (`xfs_repair -n`, `xfs_db`),
//! GRUB's own XFS reader (`grub-fstest`) and, when permitted, the kernel (a loop mount).

mod common;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require_tool, run_ok};
use imager::formats::xfs::{self, Entry, Source, XfsOptions};

const MIB: u64 = 1024 * 1024;
const EPOCH: u64 = 1_700_000_000;

fn opts(sector_size: u32) -> XfsOptions {
    XfsOptions {
        label: "BOOT".into(),
        uuid: uuid::Uuid::parse_str("6d8d2e9b-8a4d-4c3f-9a53-0c8f3e1f7b21").unwrap(),
        epoch: EPOCH,
        sector_size,
    }
}

/// A file of `len` bytes, mostly holes with random-looking (deterministic) data at
/// the start, every MiB and at the end, so a misplaced block shows.
fn test_file(path: &Path, len: u64, seed: u64) {
    let mut f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut chunk = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(5000) as usize;
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.write_all(&chunk(n)).unwrap();
        pos += MIB;
    }
    if len > 3000 {
        f.seek(SeekFrom::Start(len - 3000)).unwrap();
        f.write_all(&chunk(3000)).unwrap();
    }
}

/// Talos's BOOT tree: kernel and initramfs from files, grub.cfg from bytes.
fn talos_entries(dir: &Path, kernel: u64, initramfs: u64) -> Vec<Entry> {
    let vmlinuz = dir.join("vmlinuz");
    let initrd = dir.join("initramfs.xz");
    test_file(&vmlinuz, kernel, 1);
    test_file(&initrd, initramfs, 2);
    vec![
        Entry::Dir { path: "A".into(), mode: 0o755 },
        Entry::File { path: "A/vmlinuz".into(), mode: 0o644, source: Source::File(vmlinuz) },
        Entry::File { path: "A/initramfs.xz".into(), mode: 0o644, source: Source::File(initrd) },
        Entry::Dir { path: "grub".into(), mode: 0o700 },
        Entry::File {
            path: "grub/grub.cfg".into(),
            mode: 0o600,
            source: Source::Bytes(b"set default=\"A - Talos v1.11.0\"\nset timeout=3\n".to_vec()),
        },
    ]
}

/// Writes a filesystem of `size` at `offset` in a new file `name` under `dir`.
fn build(dir: &Path, name: &str, offset: u64, size: u64, sector: u32, entries: &[Entry]) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    xfs::write(&f, offset, size, &opts(sector), entries).unwrap();
    path
}

/// `xfs_repair -n` finds nothing to fix: exit 0 and no complaint on either stream.
fn assert_repair_clean(img: &Path) {
    let out = Command::new(require_tool("xfs_repair")).args(["-n", "-f"]).arg(img).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "xfs_repair -n failed ({}):\n{text}", out.status);
    for bad in ["would", "bad ", "error", "corrupt", "invalid", "mismatch", "disconnected", "unknown", "missing"] {
        // The sector size warning is about the host (a tmpfs has no geometry), not the image.
        let found: Vec<&str> = text
            .lines()
            .filter(|l| l.to_lowercase().contains(bad) && !l.contains("sector size mismatch between"))
            .collect();
        assert!(found.is_empty(), "xfs_repair -n complains ({bad}): {found:?}\n{text}");
    }
}

fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new(require_tool("xfs_db"));
    c.arg("-r");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run_ok(c.arg(img))
}

#[test]
fn talos_boot_tree_passes_xfs_repair() {
    let dir = tempfile::tempdir().unwrap();
    let entries = talos_entries(dir.path(), 12 * MIB + 123, 60 * MIB + 7);
    let img = build(dir.path(), "boot.img", 0, 1000 * MIB, 512, &entries);
    assert_repair_clean(&img);
}
