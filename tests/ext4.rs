//! The ext4 writer (the IMAGECACHE partition), judged by e2fsprogs (`e2fsck -fn`,
//! `dumpe2fs`, `debugfs rdump`) and, when permitted, the kernel (a loop mount, read
//! only and then read-write).

mod common;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pseudo_random, require_tool, run_ok};
use imager::formats::ext4::{self, Ext4Options};

const MIB: u64 = 1024 * 1024;
const EPOCH: i64 = 1_700_000_000;
const GUID: &str = "3b5449bc-c21f-8009-8b51-18945967f8df";

fn opts(block_size: Option<u32>) -> Ext4Options {
    let guid = uuid::Uuid::parse_str(GUID).unwrap();
    Ext4Options {
        label: "IMAGECACHE".into(),
        uuid: guid,
        hash_seed: guid,
        epoch: EPOCH,
        block_size,
    }
}

/// A cache-like tree: 600 blobs with 71-character names (an htree directory), a deep
/// manifest path, an empty file, and a large sparse file with data here and there
/// (more extents than the inode holds).
fn tree(dir: &Path, large: u64) -> PathBuf {
    let root = dir.join("tree");
    let deep = root.join("manifests/registry.local_5000_/org/team/a/b/c/d/e/f/reference");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("v1.2.3"), pseudo_random(1234, 7)).unwrap();
    std::fs::create_dir_all(root.join("blob")).unwrap();
    for i in 0..600u64 {
        let name = format!("sha256-{:064x}", i.wrapping_mul(0x1234_5678_9abc_def1));
        std::fs::write(
            root.join("blob").join(name),
            pseudo_random((i * 97 % 9000) as usize, i),
        )
        .unwrap();
    }
    File::create(root.join("empty")).unwrap();
    let mut f = File::create(root.join("large")).unwrap();
    f.set_len(large).unwrap();
    let mut pos = 0;
    while pos < large {
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.write_all(&pseudo_random(4000, pos)).unwrap();
        pos += 37 * MIB;
    }
    f.seek(SeekFrom::Start(large - 10)).unwrap();
    f.write_all(b"0123456789").unwrap();
    root
}

/// Writes the tree into a file at `offset` (bytes before it hold a marker).
fn build(dir: &Path, name: &str, offset: u64, size: u64, o: &Ext4Options, root: &Path) -> PathBuf {
    let img = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img)
        .unwrap();
    if offset > 0 {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&vec![0xA5; offset as usize], 0).unwrap();
    }
    ext4::write(&f, offset, size, o, root).unwrap();
    img
}

fn extract(dir: &Path, img: &Path, offset: u64, size: u64, name: &str) -> PathBuf {
    let part = dir.join(name);
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", part.display()))
            .args([
                "bs=1M",
                "conv=sparse",
                "status=none",
                "iflag=skip_bytes,count_bytes",
            ])
            .arg(format!("skip={offset}"))
            .arg(format!("count={size}")),
    );
    part
}

fn fsck_and_compare(dir: &Path, fs: &Path, root: &Path, block_size: u32) {
    require_tool("e2fsck");
    let out = Command::new("e2fsck").arg("-fn").arg(fs).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = run_ok(Command::new("dumpe2fs").arg("-h").arg(fs));
    for want in [
        "Filesystem volume name:   IMAGECACHE".to_string(),
        format!("Filesystem UUID:          {GUID}"),
        format!("Directory Hash Seed:      {GUID}"),
        "Default directory hash:   half_md4".to_string(),
        format!("Block size:               {block_size}"),
        "Filesystem state:         clean".to_string(),
    ] {
        assert!(dump.contains(&want), "dumpe2fs lacks {want:?}:\n{dump}");
    }
    let features = dump
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap();
    for f in [
        "extent",
        "64bit",
        "metadata_csum",
        "dir_index",
        "large_file",
        "huge_file",
    ] {
        assert!(features.split_whitespace().any(|w| w == f), "{features}");
    }
    // The blob directory is an htree.
    let htree = run_ok(Command::new("debugfs").arg("-R").arg("htree /blob").arg(fs));
    assert!(htree.contains("Hash Version: 1"), "{htree}");
    // debugfs's copy of the tree equals the tree, byte for byte.
    let out = dir.join(format!("rdump-{block_size}"));
    std::fs::create_dir(&out).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!(
                "rdump /blob /manifests /empty /large {}",
                out.display()
            ))
            .arg(fs),
    );
    run_ok(Command::new("diff").arg("-r").arg(root).arg(&out));
    // Owned by root, stamped with the epoch.
    let stat = run_ok(Command::new("debugfs").arg("-R").arg("stat /large").arg(fs));
    assert!(stat.contains("User:     0   Group:     0"), "{stat}");
    assert!(stat.contains("mtime: 0x6553f100"), "{stat}");
}

#[test]
fn e2fsprogs_accept_it_with_1k_and_4k_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 300 * MIB + 5);
    for (bs, size) in [(1024u32, 400 * MIB), (4096, 700 * MIB)] {
        let offset = 3 * MIB;
        let img = build(
            dir.path(),
            &format!("img-{bs}"),
            offset,
            size,
            &opts(None),
            &root,
        );
        // Only the partition's range was written; the image stays sparse.
        let bytes = std::fs::read(&img).unwrap();
        assert!(bytes[..offset as usize].iter().all(|&b| b == 0xA5));
        let used = std::fs::metadata(&img).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            used.blocks() * 512 < 40 * MIB,
            "{} bytes allocated",
            used.blocks() * 512
        );
        drop(bytes);
        let fs = extract(dir.path(), &img, offset, size, &format!("fs-{bs}"));
        fsck_and_compare(dir.path(), &fs, &root, bs);
    }
}

#[test]
fn same_inputs_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 5 * MIB);
    let a = build(dir.path(), "a", 0, 64 * MIB, &opts(Some(4096)), &root);
    let b = build(dir.path(), "b", 0, 64 * MIB, &opts(Some(4096)), &root);
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap());
}

#[test]
fn what_it_cannot_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 50 * MIB);
    let img = dir.path().join("small");
    let f = File::create(&img).unwrap();
    let e = ext4::write(&f, 0, 40 * MIB, &opts(None), &root).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");

    std::os::unix::fs::symlink("blob", root.join("link")).unwrap();
    let e = ext4::write(&f, 0, 400 * MIB, &opts(None), &root).unwrap_err();
    assert!(
        e.to_string()
            .contains("neither a regular file nor a directory"),
        "{e}"
    );
}

#[test]
fn the_kernel_mounts_it_and_writes_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 200 * MIB);
    let img = build(dir.path(), "fs", 0, 600 * MIB, &opts(None), &root);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Command::new("mount")
        .args(["-o", "loop,ro", "-t", "ext4"])
        .arg(&img)
        .arg(&mnt)
        .output();
    if !matches!(&mount, Ok(o) if o.status.success()) {
        eprintln!("skipped: cannot loop-mount here ({mount:?})");
        return;
    }
    let diff = Command::new("diff")
        .args(["-r", "-x", "lost+found"])
        .arg(&root)
        .arg(&mnt)
        .output()
        .unwrap();
    let stat = Command::new("stat")
        .args(["-c", "%u %g %Y"])
        .arg(mnt.join("blob"))
        .output()
        .unwrap();
    run_ok(Command::new("umount").arg(&mnt));
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout).trim(),
        "0 0 1700000000"
    );

    // Talos copies an ISO's cache onto the partition read-write: the kernel adds to
    // the htree and allocates from the bitmaps it is given; e2fsck stays clean.
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt),
    );
    let changed = (|| -> std::io::Result<()> {
        for i in 0..2000 {
            std::fs::write(mnt.join(format!("blob/new-{i}")), pseudo_random(100, i))?;
        }
        std::fs::remove_file(mnt.join("large"))
    })();
    run_ok(Command::new("umount").arg(&mnt));
    changed.unwrap();
    run_ok(Command::new("e2fsck").arg("-fn").arg(&img));
}

#[test]
fn directories_too_large_for_one_index_block_get_two_levels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("blob")).unwrap();
    for i in 0..3000u64 {
        let name = format!("sha256-{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        std::fs::write(root.join("blob").join(name), i.to_string()).unwrap();
    }
    // 1 KiB blocks: 12 blob entries a leaf, 123 leaves under a root, so two levels.
    let img = build(dir.path(), "fs", 0, 64 * MIB, &opts(Some(1024)), &root);
    run_ok(Command::new(require_tool("e2fsck")).arg("-fn").arg(&img));
    let htree = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg("htree /blob")
            .arg(&img),
    );
    assert!(htree.contains("Indirect levels: 1"), "{htree}");
    let out = dir.path().join("rdump");
    std::fs::create_dir(&out).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /blob {}", out.display()))
            .arg(&img),
    );
    run_ok(
        Command::new("diff")
            .arg("-r")
            .arg(root.join("blob"))
            .arg(out.join("blob")),
    );
}
