//! The XFS writer (the BOOT partition), judged by xfsprogs (`xfs_repair -n`, `xfs_db`),
//! GRUB's own XFS reader (`grub-fstest`) and, when permitted, the kernel (a loop mount).

mod common;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::bootpart::xfs_db;
use common::{pseudo_random, require_tool, run_ok};
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
    // Data at the start of every MiB and in the last 3000 bytes: one pseudo-random
    // stream cut into those pieces in order.
    let mut pieces: Vec<(u64, usize)> = (0..len)
        .step_by(MIB as usize)
        .map(|pos| (pos, (len - pos).min(5000) as usize))
        .collect();
    if len > 3000 {
        pieces.push((len - 3000, 3000));
    }
    let data = pseudo_random(pieces.iter().map(|p| p.1).sum(), seed);
    let mut at = 0;
    for (pos, n) in pieces {
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.write_all(&data[at..at + n]).unwrap();
        at += n;
    }
}

/// Talos's BOOT tree: kernel and initramfs from files, grub.cfg from bytes.
fn talos_entries(dir: &Path, kernel: u64, initramfs: u64) -> Vec<Entry> {
    let vmlinuz = dir.join("vmlinuz");
    let initrd = dir.join("initramfs.xz");
    test_file(&vmlinuz, kernel, 1);
    test_file(&initrd, initramfs, 2);
    vec![
        Entry::Dir {
            path: "A".into(),
            mode: 0o755,
        },
        Entry::File {
            path: "A/vmlinuz".into(),
            mode: 0o644,
            source: Source::File(vmlinuz),
        },
        Entry::File {
            path: "A/initramfs.xz".into(),
            mode: 0o644,
            source: Source::File(initrd),
        },
        Entry::Dir {
            path: "grub".into(),
            mode: 0o700,
        },
        Entry::File {
            path: "grub/grub.cfg".into(),
            mode: 0o600,
            source: Source::Bytes(b"set default=\"A - Talos v1.11.0\"\nset timeout=3\n".to_vec()),
        },
    ]
}

/// Writes a filesystem of `size` at `offset` in a new file `name` under `dir`.
fn build(
    dir: &Path,
    name: &str,
    offset: u64,
    size: u64,
    sector: u32,
    entries: &[Entry],
) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    xfs::write(&f, offset, size, &opts(sector), entries).unwrap();
    path
}

/// `xfs_repair -n` finds nothing to fix (exit 0 and no complaint on either stream),
/// and neither does `xfs_db`'s block-by-block `check` (silent when all is well).
fn assert_repair_clean(img: &Path) {
    let check = Command::new(require_tool("xfs_db"))
        .args(["-r", "-c", "check"])
        .arg(img)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success() && said.trim().is_empty(),
        "xfs_db check: {said}"
    );
    let out = Command::new(require_tool("xfs_repair"))
        .args(["-n", "-f"])
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "xfs_repair -n failed ({}):\n{text}",
        out.status
    );
    for bad in [
        "would",
        "bad ",
        "error",
        "corrupt",
        "invalid",
        "mismatch",
        "disconnected",
        "unknown",
        "missing",
    ] {
        // The sector size warning is about the host (a tmpfs has no geometry), not the image.
        let found: Vec<&str> = text
            .lines()
            .filter(|l| l.to_lowercase().contains(bad))
            .filter(|l| {
                !l.contains("sector size mismatch between")
                    && l.trim() != "- moving disconnected inodes to lost+found ..."
            })
            .collect();
        assert!(
            found.is_empty(),
            "xfs_repair -n complains ({bad}): {found:?}\n{text}"
        );
    }
}

/// What `xfs_db` prints of the superblocks, AG headers and btree roots, which for an
/// empty filesystem owe nothing to timestamps.
fn metadata_dump(img: &Path, agcount: u32) -> String {
    let mut cmds = vec![
        "sb 0".to_string(),
        "print".into(),
        "sb 1".into(),
        "print".into(),
    ];
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
    // Talos's sizes, the smallest, sizes whose blocks do not split into four equal
    // AGs or that end in a partial block, and one large enough for a log above 64 MiB.
    for (size, sector) in [
        (300 * MIB, 512u32),
        (1000 * MIB, 512),
        (1000 * MIB, 4096),
        (2000 * MIB, 512),
        (2000 * MIB, 4096),
        (1001 * MIB + 3 * 4096 + 100, 512),
        (200 << 30, 4096),
    ] {
        let mib = size / MIB;
        let ours = build(dir.path(), "ours.img", 0, size, sector, &[]);
        let theirs = dir.path().join("mkfs.img");
        File::create(&theirs).unwrap().set_len(size).unwrap();
        let uuid = format!("uuid={}", opts(sector).uuid);
        run_ok(
            Command::new(require_tool("mkfs.xfs"))
                .args([
                    "-q",
                    "-f",
                    "-L",
                    "BOOT",
                    "-s",
                    &format!("size={sector}"),
                    "-n",
                    "ftype=1",
                ])
                .args([
                    "-m",
                    &format!("{uuid},bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=1"),
                ])
                .args(["-i", "sparse=1,nrext64=1"])
                .arg(&theirs),
        );
        let (a, b) = (metadata_dump(&ours, 4), metadata_dump(&theirs, 4));
        assert!(
            a.contains("features_ro_compat = 0xf") && a.contains("magic = 0x52334643"),
            "{a}"
        );
        let diff: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
        assert!(
            diff.is_empty() && a.lines().count() == b.lines().count(),
            "{mib} MiB, {sector}-byte sectors: ours vs mkfs.xfs: {diff:#?}"
        );
        // The log: the same first record, zeros after.
        let logstart: u64 = xfs_db(&ours, &["sb 0", "print logstart"])
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let agblklog: u32 = xfs_db(&ours, &["sb 0", "print agblklog"])
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let agblocks: u64 = xfs_db(&ours, &["sb 0", "print agblocks"])
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let byte = ((logstart >> agblklog) * agblocks + (logstart & ((1 << agblklog) - 1))) * 4096;
        let read = |p: &Path| {
            use std::io::Read;
            let mut f = File::open(p).unwrap();
            f.seek(SeekFrom::Start(byte)).unwrap();
            let mut v = vec![0u8; 1 << 20];
            f.read_exact(&mut v).unwrap();
            v
        };
        assert!(
            read(&ours) == read(&theirs),
            "{mib} MiB: log start differs from mkfs.xfs"
        );
    }
}

/// `grub-fstest IMG ARGS...` with the image as `(loop0)`.
fn grub_fstest(img: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new(require_tool("grub-fstest"))
            .arg(img)
            .args(args),
    )
}

/// GRUB reads every file back byte for byte.
fn assert_grub_reads(img: &Path, dir: &Path, files: &[(&str, &[u8])]) {
    for (path, want) in files {
        let out = dir.join("grub-read");
        let _ = std::fs::remove_file(&out);
        grub_fstest(
            img,
            &["cp", &format!("(loop0)/{path}"), out.to_str().unwrap()],
        );
        let got = std::fs::read(&out).unwrap();
        assert!(
            got.len() == want.len() && got == *want,
            "GRUB reads {path} as {} bytes, not the {} written",
            got.len(),
            want.len()
        );
    }
}

/// A field of `xfs_db`'s `print FIELD` output.
fn field(img: &Path, cmds: &[&str]) -> String {
    let out = xfs_db(img, cmds);
    out.split_once(" = ")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("no field in {out:?}"))
}

#[test]
fn talos_boot_tree_is_accepted_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    for (mib, sector) in [(1000u64, 512u32), (2000, 4096)] {
        let entries = talos_entries(dir.path(), 12 * MIB + 123, 60 * MIB + 7);
        let img = build(dir.path(), "boot.img", 0, mib * MIB, sector, &entries);
        assert_repair_clean(&img);

        let sb = xfs_db(&img, &["sb 0", "print"]);
        for want in [
            // v5 (5) with NLINK, ALIGN, LOGV2, EXTFLG, DIRV2, MOREBITS; SECTOR for 4 KiB sectors.
            if sector == 512 {
                "versionnum = 0xb4a5"
            } else {
                "versionnum = 0xbca5"
            },
            // LAZYSBCOUNT | ATTR2 | PROJID32 | CRC
            "features2 = 0x18a",
            "features_compat = 0",
            // FINOBT | RMAPBT | REFLINK | INOBTCNT
            "features_ro_compat = 0xf",
            // FTYPE | SPINODES | BIGTIME | NREXT64
            "features_incompat = 0x2b",
            "features_log_incompat = 0",
            "fname = \"BOOT\\000\\000\\000\\000\\000\\000\\000\\000\"",
            "uuid = 6d8d2e9b-8a4d-4c3f-9a53-0c8f3e1f7b21",
            "blocksize = 4096",
            "inodesize = 512",
            "agcount = 4",
            "logblocks = 16384",
            "crc = ",
        ] {
            assert!(
                sb.lines().any(|l| l.starts_with(want)),
                "superblock lacks {want:?}:\n{sb}"
            );
        }
        assert!(sb.contains("(correct)"), "{sb}");
        assert_eq!(
            xfs_db(&img, &["sb 0", "print sectsize"]).trim(),
            format!("sectsize = {sector}")
        );
        let features = xfs_db(&img, &["version"]);
        for f in [
            "CRC",
            "FINOBT",
            "SPARSE_INODES",
            "RMAPBT",
            "REFLINK",
            "INOBTCNT",
            "BIGTIME",
            "NREXT64",
            "FTYPE",
        ] {
            assert!(features.contains(f), "xfs_db version lacks {f}: {features}");
        }

        assert_eq!(
            grub_fstest(&img, &["ls", "(loop0)/"])
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["A/", "grub/"]
        );
        assert_eq!(
            grub_fstest(&img, &["ls", "(loop0)/A/"])
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["vmlinuz", "initramfs.xz"]
        );
        let kernel = std::fs::read(dir.path().join("vmlinuz")).unwrap();
        let initrd = std::fs::read(dir.path().join("initramfs.xz")).unwrap();
        let cfg = b"set default=\"A - Talos v1.11.0\"\nset timeout=3\n";
        assert_grub_reads(
            &img,
            dir.path(),
            &[
                ("A/vmlinuz", &kernel),
                ("A/initramfs.xz", &initrd),
                ("grub/grub.cfg", cfg),
            ],
        );

        for (path, mode) in [
            ("/", "040755"),
            ("/A", "040755"),
            ("/A/vmlinuz", "0100644"),
            ("/A/initramfs.xz", "0100644"),
            ("/grub", "040700"),
            ("/grub/grub.cfg", "0100600"),
        ] {
            let p = format!("path {path}");
            assert_eq!(field(&img, &[&p, "print core.mode"]), mode, "{path}");
            assert_eq!(field(&img, &[&p, "print core.uid"]), "0", "{path}");
            assert_eq!(field(&img, &[&p, "print core.gid"]), "0", "{path}");
            for t in ["atime", "mtime", "ctime"] {
                assert_eq!(
                    field(&img, &[&p, &format!("print core.{t}.sec")]),
                    "Tue Nov 14 22:13:20 2023",
                    "{path} {t}"
                );
                assert_eq!(
                    field(&img, &[&p, &format!("print core.{t}.nsec")]),
                    "0",
                    "{path} {t}"
                );
            }
            assert_eq!(
                field(&img, &[&p, "print v3.crtime.sec"]),
                "Tue Nov 14 22:13:20 2023",
                "{path}"
            );
        }
        assert_eq!(field(&img, &["path /A", "print core.nlinkv2"]), "2");
        assert_eq!(field(&img, &["path /", "print core.nlinkv2"]), "4");
        assert_eq!(
            field(&img, &["path /A/vmlinuz", "print core.size"]),
            (12 * MIB + 123).to_string()
        );
    }
}

#[test]
fn a_300_mib_kernel_and_initramfs_span_allocation_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (klen, ilen) = (24 * MIB + 5, 290 * MIB + 4097);
    let entries = talos_entries(dir.path(), klen, ilen);
    let img = build(dir.path(), "boot.img", 0, 1000 * MIB, 4096, &entries);
    assert_repair_clean(&img);
    // 250 MiB AGs: the initramfs continues from AG 0 into AG 1.
    let extents = field(&img, &["path /A/initramfs.xz", "print core.nextents"]);
    assert_eq!(
        extents,
        "2",
        "{}",
        xfs_db(&img, &["path /A/initramfs.xz", "print u3"])
    );
    let kernel = std::fs::read(dir.path().join("vmlinuz")).unwrap();
    let initrd = std::fs::read(dir.path().join("initramfs.xz")).unwrap();
    assert_grub_reads(
        &img,
        dir.path(),
        &[("A/vmlinuz", &kernel), ("A/initramfs.xz", &initrd)],
    );
}

fn sha256(path: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn same_inputs_give_the_same_bytes_wherever_written() {
    let dir = tempfile::tempdir().unwrap();
    let entries = talos_entries(dir.path(), 3 * MIB + 1, 9 * MIB + 2);
    let a = build(dir.path(), "a.img", 0, 300 * MIB, 512, &entries);
    let b = build(dir.path(), "b.img", 0, 300 * MIB, 512, &entries);
    assert_eq!(sha256(&a), sha256(&b));

    // At an offset inside a larger file that already holds other bytes (before, after
    // and scattered through the range): the bytes around are kept, the filesystem's
    // are the same.
    let c = dir.path().join("c.img");
    let (offset, size) = (3 * MIB, 300 * MIB);
    let garbage = vec![0x5a; 64 * 1024];
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&c)
            .unwrap();
        use std::os::unix::fs::FileExt;
        let before = (0..offset).step_by(garbage.len());
        let inside = (offset..offset + size).step_by(7 * MIB as usize);
        let after = (offset + size..offset + size + MIB).step_by(garbage.len());
        for pos in before.chain(inside).chain(after) {
            f.write_all_at(&garbage, pos).unwrap();
        }
        xfs::write(&f, offset, size, &opts(512), &entries).unwrap();
    }
    let read = |p: &Path, start: u64, len: u64| {
        use std::io::Read;
        let mut f = File::open(p).unwrap();
        f.seek(SeekFrom::Start(start)).unwrap();
        let mut v = vec![0u8; len as usize];
        f.read_exact(&mut v).unwrap();
        v
    };
    assert!(read(&c, 0, offset).iter().all(|&x| x == 0x5a));
    assert!(read(&c, offset + size, MIB).iter().all(|&x| x == 0x5a));
    for at in (0..size).step_by(MIB as usize) {
        assert!(
            read(&c, offset + at, MIB) == read(&a, at, MIB),
            "differs from the MiB at {at}"
        );
    }
}

#[test]
fn the_kernel_mounts_it_and_writes_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let entries = talos_entries(dir.path(), 5 * MIB + 3, 20 * MIB + 9);
    let img = build(dir.path(), "boot.img", 0, 1000 * MIB, 512, &entries);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Command::new("mount")
        .args(["-o", "loop,ro"])
        .arg(&img)
        .arg(&mnt)
        .output();
    // CI runs as root with loop devices: a mount that fails is a failure, not a skip.
    match &mount {
        Ok(o) if o.status.success() => {}
        _ => panic!("the kernel refused to mount our XFS image (mount -o loop,ro): {mount:?}"),
    }
    let stat = |p: &str| {
        run_ok(
            Command::new("stat")
                .args(["-c", "%f %u %g %Y %s"])
                .arg(mnt.join(p)),
        )
    };
    let listing = (
        stat("."),
        stat("A"),
        stat("A/vmlinuz"),
        stat("grub"),
        stat("grub/grub.cfg"),
        std::fs::read(mnt.join("A/initramfs.xz")).unwrap()
            == std::fs::read(dir.path().join("initramfs.xz")).unwrap(),
    );
    run_ok(Command::new("umount").arg(&mnt));
    assert_eq!(listing.0.trim(), "41ed 0 0 1700000000 27");
    assert_eq!(listing.1.trim(), "41ed 0 0 1700000000 41");
    assert_eq!(
        listing.2.trim(),
        format!("81a4 0 0 1700000000 {}", 5 * MIB + 3)
    );
    assert_eq!(listing.3.trim(), "41c0 0 0 1700000000 22");
    assert_eq!(listing.4.trim(), "8180 0 0 1700000000 46");
    assert!(listing.5, "the mounted initramfs differs");

    // An upgrade writes to BOOT: the kernel allocates from the free space and free list
    // it is given, and xfs_repair still finds nothing wrong.
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt),
    );
    let changed = (|| -> std::io::Result<()> {
        std::fs::create_dir(mnt.join("B"))?;
        std::fs::copy(dir.path().join("initramfs.xz"), mnt.join("B/initramfs.xz"))?;
        std::fs::remove_file(mnt.join("A/vmlinuz"))?;
        std::fs::write(mnt.join("grub/grub.cfg"), "set timeout=1\n")
    })();
    run_ok(Command::new("umount").arg(&mnt));
    changed.unwrap();
    assert_repair_clean(&img);
}

#[test]
fn large_directories_and_many_inodes() {
    let dir = tempfile::tempdir().unwrap();
    // 100 entries in one directory need a directory block; 103 inodes, two chunks.
    let mut entries = vec![Entry::Dir {
        path: "many".into(),
        mode: 0o755,
    }];
    let mut want = Vec::new();
    for i in 0..100 {
        let data = format!("file {i}\n").repeat(i * 50);
        want.push((format!("many/f-{i:03}"), data.clone().into_bytes()));
        entries.push(Entry::File {
            path: format!("many/f-{i:03}"),
            mode: 0o644,
            source: Source::Bytes(data.into_bytes()),
        });
    }
    entries.push(Entry::Dir {
        path: "many/sub".into(),
        mode: 0o750,
    });
    for sector in [512, 4096] {
        let img = build(dir.path(), "boot.img", 0, 300 * MIB, sector, &entries);
        assert_repair_clean(&img);
        assert_eq!(
            field(&img, &["path /many", "print core.format"]),
            "2 (extents)"
        );
        assert_eq!(field(&img, &["path /many", "print core.nlinkv2"]), "3");
        assert_eq!(field(&img, &["sb 0", "print icount"]), "128");
        let listed = grub_fstest(&img, &["ls", "(loop0)/many/"]);
        assert_eq!(listed.split_whitespace().count(), 101, "{listed}");
        let files: Vec<(&str, &[u8])> = want
            .iter()
            .step_by(9)
            .map(|(p, d)| (p.as_str(), &d[..]))
            .collect();
        assert_grub_reads(&img, dir.path(), &files);
        // The empty file has no extents.
        assert_eq!(
            field(&img, &["path /many/f-000", "print core.nextents"]),
            "0"
        );
    }
}

fn write_err(size: u64, sector: u32, entries: &[Entry]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.img");
    let f = File::create(&path).unwrap();
    let err = xfs::write(&f, 0, size, &opts(sector), entries).expect_err("accepted");
    eprintln!("{err}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "written despite {err}"
    );
    err.to_string()
}

#[test]
fn bad_input_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let file = |path: &str, len: usize| Entry::File {
        path: path.into(),
        mode: 0o644,
        source: Source::Bytes(vec![1; len]),
    };
    let e = write_err(299 * MIB, 512, &[]);
    assert!(e.contains("too small"), "{e}");
    let e = write_err(1000 * MIB, 1024, &[]);
    assert!(e.contains("sector size 1024"), "{e}");

    let big = dir.path().join("big");
    File::create(&big).unwrap().set_len(280 * MIB).unwrap();
    let e = write_err(
        300 * MIB,
        512,
        &[Entry::File {
            path: "big".into(),
            mode: 0o644,
            source: Source::File(big.clone()),
        }],
    );
    assert!(e.contains("\"big\"") && e.contains("does not fit"), "{e}");

    let e = write_err(300 * MIB, 512, &[file(&"n".repeat(256), 1)]);
    assert!(e.contains("longer than 255"), "{e}");
    let e = write_err(300 * MIB, 512, &[file("A/vmlinuz", 1)]);
    assert!(e.contains("\"A/vmlinuz\"") && e.contains("parent"), "{e}");
    let e = write_err(300 * MIB, 512, &[file("x", 1), file("x", 1)]);
    assert!(e.contains("twice"), "{e}");
    let e = write_err(300 * MIB, 512, &[file("x", 1), file("x/y", 1)]);
    assert!(e.contains("parent is a file"), "{e}");
    let e = write_err(300 * MIB, 512, &[file("/abs", 1)]);
    assert!(e.contains("relative"), "{e}");
    let e = write_err(
        300 * MIB,
        512,
        &[Entry::Dir {
            path: "d".into(),
            mode: 0o40755,
        }],
    );
    assert!(e.contains("permission bits"), "{e}");
    let e = write_err(
        300 * MIB,
        512,
        &[Entry::File {
            path: "f".into(),
            mode: 0o644,
            source: Source::File(dir.path().join("missing")),
        }],
    );
    assert!(e.contains("missing"), "{e}");

    let f = File::create(dir.path().join("o")).unwrap();
    let mut o = opts(512);
    o.label = "THIRTEEN-BYTE".into();
    let e = xfs::write(&f, 0, 300 * MIB, &o, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("label"), "{e}");
}

#[test]
fn minimum_size_holds_the_files() {
    assert_eq!(xfs::minimum_size(0), 300 * MIB);
    let dir = tempfile::tempdir().unwrap();
    for total in [100 * MIB, 400 * MIB] {
        let min = xfs::minimum_size(total);
        assert_eq!(min % MIB, 0);
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(total).unwrap();
        let entries = [Entry::File {
            path: "big".into(),
            mode: 0o644,
            source: Source::File(big.clone()),
        }];
        let img = build(dir.path(), "fits.img", 0, min, 512, &entries);
        if total > 200 * MIB {
            // Tight: within the MiB of slack and the MiB of rounding.
            assert!(
                xfs::write(
                    &File::create(dir.path().join("no.img")).unwrap(),
                    0,
                    min - 2 * MIB,
                    &opts(512),
                    &entries
                )
                .is_err()
            );
        }
        assert_repair_clean(&img);
    }
}

/// Throughput of writing a 256 MiB file of random bytes (run with `--run-ignored only`).
#[test]
#[ignore]
fn write_speed() {
    let dir = tempfile::tempdir_in(
        std::env::var_os("XFS_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()),
    )
    .unwrap();
    let data = dir.path().join("random");
    run_ok(
        Command::new("head")
            .args(["-c", "268435456", "/dev/urandom"])
            .stdout(File::create(&data).unwrap()),
    );
    let entries = [Entry::File {
        path: "initramfs.xz".into(),
        mode: 0o644,
        source: Source::File(data),
    }];
    let start = std::time::Instant::now();
    let img = build(dir.path(), "boot.img", 0, 1000 * MIB, 512, &entries);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("wrote 256 MiB in {secs:.2} s: {:.0} MiB/s", 256.0 / secs);
    assert_repair_clean(&img);
}
