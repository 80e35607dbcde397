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
            .filter(|l| l.to_lowercase().contains(bad))
            .filter(|l| !l.contains("sector size mismatch between") && l.trim() != "- moving disconnected inodes to lost+found ...")
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

/// What `xfs_db` prints of the superblocks, AG headers and btree roots, which for an
/// empty filesystem owe nothing to timestamps.
fn metadata_dump(img: &Path, agcount: u32) -> String {
    let mut cmds = vec!["sb 0".to_string(), "print".into(), "sb 1".into(), "print".into()];
    for ag in 0..agcount {
        for c in [
            format!("agf {ag}"),
            "print".into(),
            "addr bnoroot".into(),
            "print".into(),
            format!("agf {ag}"),
            "addr cntroot".into(),
            "print".into(),
            format!("agf {ag}"),
            "addr rmaproot".into(),
            "print".into(),
            format!("agf {ag}"),
            "addr refcntroot".into(),
            "print".into(),
            format!("agi {ag}"),
            "print".into(),
            "addr root".into(),
            "print".into(),
            format!("agi {ag}"),
            "addr free_root".into(),
            "print".into(),
            format!("agfl {ag}"),
            "print".into(),
        ] {
            cmds.push(c);
        }
    }
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    xfs_db(img, &cmds)
}

#[test]
fn empty_filesystem_is_what_mkfs_makes() {
    let dir = tempfile::tempdir().unwrap();
    for (mib, sector) in [(300u64, 512u32), (1000, 512), (1000, 4096), (2000, 512), (2000, 4096), (1333, 512)] {
        let ours = build(dir.path(), "ours.img", 0, mib * MIB, sector, &[]);
        let theirs = dir.path().join("mkfs.img");
        File::create(&theirs).unwrap().set_len(mib * MIB).unwrap();
        let uuid = format!("uuid={}", opts(sector).uuid);
        run_ok(
            Command::new(require_tool("mkfs.xfs"))
                .args(["-q", "-f", "-L", "BOOT", "-s", &format!("size={sector}"), "-n", "ftype=1"])
                .args(["-m", &format!("{uuid},bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=1")])
                .args(["-i", "sparse=1,nrext64=1"])
                .arg(&theirs),
        );
        let (a, b) = (metadata_dump(&ours, 4), metadata_dump(&theirs, 4));
        assert!(a.contains("features_ro_compat = 0xf") && a.contains("magicnum = 0x52334643"), "{a}");
        let diff: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
        assert!(diff.is_empty() && a.lines().count() == b.lines().count(), "{mib} MiB, {sector}-byte sectors: ours vs mkfs.xfs: {diff:#?}");
        // The log: the same first record, zeros after.
        let logstart: u64 = xfs_db(&ours, &["sb 0", "print logstart"]).trim().rsplit(' ').next().unwrap().parse().unwrap();
        let agblklog: u32 = xfs_db(&ours, &["sb 0", "print agblklog"]).trim().rsplit(' ').next().unwrap().parse().unwrap();
        let agblocks: u64 = xfs_db(&ours, &["sb 0", "print agblocks"]).trim().rsplit(' ').next().unwrap().parse().unwrap();
        let byte = ((logstart >> agblklog) * agblocks + (logstart & ((1 << agblklog) - 1))) * 4096;
        let read = |p: &Path| {
            use std::io::Read;
            let mut f = File::open(p).unwrap();
            f.seek(SeekFrom::Start(byte)).unwrap();
            let mut v = vec![0u8; 1 << 20];
            f.read_exact(&mut v).unwrap();
            v
        };
        assert!(read(&ours) == read(&theirs), "{mib} MiB: log start differs from mkfs.xfs");
    }
}

#[test]
#[ignore]
fn probe_keep_image() {
    let dir = Path::new("/tmp/xr/t");
    let entries = talos_entries(dir, 12 * MIB + 123, 60 * MIB + 7);
    build(dir, "boot.img", 0, 1000 * MIB, 512, &entries);
}
