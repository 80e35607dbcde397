//! The squashfs writer judged by squashfs-tools: Debian's `unsquashfs` 4.5.1 lists,
//! describes and extracts our images exactly as it does mksquashfs 4.5.1's images of
//! the same tree with the Talos flags; with compression off on both sides the image
//! bytes are mksquashfs's; the bytes do not depend on the thread count.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pseudo_random, require_tool, run_ok, unsquashfs};
use imager::formats::squashfs::{Compression, Options, Xattrs, write_tree_with};

const EPOCH: u32 = 1_700_000_000;

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with the shapes that exercise the layout: a directory of 1536 entries,
/// empty files, all-zero (sparse) blocks, duplicates, files of exactly one block and
/// one block + 1 byte, symlinks, nested empty directories, setuid/sticky modes,
/// compressible and incompressible data, many fragment-sized files.
fn edge_tree(root: &Path) {
    const B: usize = 128 * 1024;
    std::fs::create_dir_all(root).unwrap();
    let text: Vec<u8> = (0..3 * B + 5000)
        .map(|i| b"talos linux extension "[i % 22])
        .collect();
    write(root, "usr/bin/tool", &pseudo_random(3 * B + 777, 1), 0o755);
    write(
        root,
        "usr/bin/tool-copy",
        &pseudo_random(3 * B + 777, 1),
        0o755,
    );
    write(root, "usr/bin/suid", &pseudo_random(5000, 2), 0o4755);
    write(root, "usr/share/doc/text", &text, 0o644);
    write(root, "usr/share/doc/text-again", &text, 0o644);
    write(root, "usr/share/exact", &pseudo_random(B, 3), 0o644);
    write(
        root,
        "usr/share/exact-plus-one",
        &pseudo_random(B + 1, 4),
        0o644,
    );
    write(root, "usr/share/zeros-exact", &vec![0; B], 0o644);
    write(root, "usr/share/zeros-plus-one", &vec![0; B + 1], 0o644);
    let mut holes = pseudo_random(4 * B, 5);
    holes[B..3 * B].fill(0);
    write(root, "usr/share/holes", &holes, 0o600);
    write(root, "usr/share/zeros-small", &[0; 1000], 0o644);
    write(root, "usr/share/empty", b"", 0o644);
    write(root, "usr/share/empty2", b"", 0o400);
    write(root, "etc/a.conf", b"key: value\n", 0o644);
    write(root, "etc/a-dup.conf", b"key: value\n", 0o644);
    std::os::unix::fs::symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("etc/dangling")).unwrap();
    std::fs::create_dir_all(root.join("var/empty/a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(
        root.join("var/empty/a"),
        std::fs::Permissions::from_mode(0o2750),
    )
    .unwrap();
    for i in 0..1536 {
        let len = (i * 37) % 3000;
        write(
            root,
            &format!("big/entry-{i:05}"),
            &pseudo_random(len, i as u64 + 10),
            0o644,
        );
    }
    for i in 0..300 {
        write(
            root,
            &format!("lib/fw/blob-{i}.bin"),
            &pseudo_random(20_000 + i * 13, 99 + i as u64),
            0o644,
        );
    }
}

fn mksquashfs(root: &Path, out: &Path, extra: &[&str]) {
    mksquashfs_with(root, out, extra, None)
}

/// Debian 13's libzstd 1.5.7 (the version this build bundles and the Talos imager
/// links), unpacked with kmod 34 by `tests/extensions/kmod-34`, in a directory of its
/// own for `LD_LIBRARY_PATH`.
fn zstd_1_5_7(work: &Path) -> Option<PathBuf> {
    let depmod = std::env::var_os("KMOD34_DEPMOD")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/kmod-34/bin/depmod".into());
    let lib = depmod
        .parent()?
        .parent()?
        .join("root/usr/lib/x86_64-linux-gnu/libzstd.so.1.5.7");
    if !lib.is_file() {
        return None;
    }
    let dir = work.join("zstd-1.5.7");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&lib, dir.join("libzstd.so.1")).unwrap();
    Some(dir)
}

fn mksquashfs_with(root: &Path, out: &Path, extra: &[&str], libs: Option<&Path>) {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new(require_tool("mksquashfs"));
    if let Some(l) = libs {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    run_ok(
        cmd.arg(root)
            .arg(out)
            .args(["-all-root", "-noappend", "-no-progress"])
            .args(extra)
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string()),
    );
}

fn zstd_flags() -> Vec<&'static str> {
    vec!["-comp", "zstd", "-Xcompression-level", "18"]
}

fn ours(root: &Path, out: &Path, compression: Compression, threads: usize, uncompressed: bool) {
    let o = Options {
        compression,
        epoch: EPOCH,
        threads: Some(threads),
        uncompressed,
    };
    write_tree_with(root, out, &Xattrs::new(), &o).unwrap();
}

/// `unsquashfs -s` without the line naming the image file.
fn superblock(image: &Path) -> String {
    unsquashfs(&["-s"], image)
        .lines()
        .filter(|l| !l.contains(&*image.to_string_lossy()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn extract(image: &Path, dir: &Path) -> PathBuf {
    let d = dir.join(format!(
        "x-{}",
        image.file_name().unwrap().to_string_lossy()
    ));
    run_ok(
        Command::new(require_tool("unsquashfs"))
            .arg("-no-xattrs")
            .arg("-d")
            .arg(&d)
            .arg(image),
    );
    d
}

fn trees_equal(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "extracted trees differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn judge_same(
    root: &Path,
    work: &Path,
    compression: Compression,
    flags: &[&str],
) -> (PathBuf, PathBuf) {
    let theirs = work.join("theirs.sqsh");
    let mine = work.join("ours.sqsh");
    mksquashfs(root, &theirs, flags);
    ours(root, &mine, compression, 2, false);
    assert_eq!(
        unsquashfs(&["-lln"], &mine).replace("ours.sqsh", "X"),
        unsquashfs(&["-lln"], &theirs).replace("theirs.sqsh", "X")
    );
    // Every field but the size (compressed blocks depend on the compressor library's
    // version: Debian links zstd 1.5.4 and liblzma 5.4, this build zstd 1.5.7 and
    // xz2's liblzma).
    let no_size = |s: String| {
        s.lines()
            .filter(|l| !l.starts_with("Filesystem size"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(no_size(superblock(&mine)), no_size(superblock(&theirs)));
    trees_equal(&extract(&mine, work), &extract(&theirs, work));
    (theirs, mine)
}

#[test]
fn edge_tree_lists_and_extracts_as_mksquashfs_zstd() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    edge_tree(&root);
    let (theirs, mine) = judge_same(&root, d.path(), Compression::Zstd18, &zstd_flags());
    let sb = superblock(&mine);
    assert!(sb.contains("Compression zstd"), "{sb}");
    assert!(sb.contains("compression-level 18"), "{sb}");
    assert!(sb.contains("Block size 131072"), "{sb}");
    assert!(sb.contains("Filesystem is exportable via NFS"), "{sb}");
    let (a, b) = (
        std::fs::read(&mine).unwrap(),
        std::fs::read(&theirs).unwrap(),
    );
    // Flags, compression id and the stored options (uncompressed metadata block 0x8004
    // holding level 18), field by field as mksquashfs wrote them.
    assert_eq!(&a[24..26], &0x04c0u16.to_le_bytes());
    assert_eq!(&a[20..22], &6u16.to_le_bytes());
    assert_eq!(&a[96..102], &[0x04, 0x80, 18, 0, 0, 0]);
    assert_eq!((&a[20..28], &a[96..102]), (&b[20..28], &b[96..102]));
    eprintln!(
        "zstd-18: ours {} bytes, mksquashfs {} bytes, identical: {}",
        a.len(),
        b.len(),
        a == b
    );
}

#[test]
fn edge_tree_lists_and_extracts_as_mksquashfs_xz() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    edge_tree(&root);
    let (theirs, mine) = judge_same(
        &root,
        d.path(),
        Compression::Xz,
        &["-comp", "xz", "-Xdict-size", "100%"],
    );
    let (a, b) = (
        std::fs::read(&mine).unwrap(),
        std::fs::read(&theirs).unwrap(),
    );
    assert_eq!(&a[20..26], &[4, 0, 17, 0, 0xc0, 0]);
    assert_eq!(&a[20..28], &b[20..28]);
    // The tree holds compressible text (xz data blocks, fragments and metadata), so
    // this is liblzma's output through our block layout, byte for byte.
    let at = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        a == b,
        "xz: ours {} bytes, mksquashfs 4.5.1 {} bytes, first difference at {at:?}",
        a.len(),
        b.len()
    );
}

#[test]
fn uncompressed_image_is_byte_identical_to_mksquashfs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    edge_tree(&root);
    let theirs = d.path().join("theirs.sqsh");
    let mine = d.path().join("ours.sqsh");
    let mut flags = zstd_flags();
    flags.extend(["-noI", "-noD", "-noF", "-noX"]);
    mksquashfs(&root, &theirs, &flags);
    ours(&root, &mine, Compression::Zstd18, 2, true);
    let (a, b) = (
        std::fs::read(&mine).unwrap(),
        std::fs::read(&theirs).unwrap(),
    );
    if a != b {
        if let Some(keep) = std::env::var_os("SQUASHFS_KEEP") {
            std::fs::copy(&mine, Path::new(&keep).join("ours.sqsh")).unwrap();
            std::fs::copy(&theirs, Path::new(&keep).join("theirs.sqsh")).unwrap();
        }
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        panic!(
            "images differ: ours {} bytes, mksquashfs {} bytes, first difference at {first:?}\n{}\n{}",
            a.len(),
            b.len(),
            superblock(&mine),
            superblock(&theirs)
        );
    }
}

/// With the same zstd library as ours under mksquashfs, the zstd-18 image is
/// mksquashfs's byte for byte (block bytes included).
#[test]
fn zstd_image_is_byte_identical_to_mksquashfs_on_zstd_1_5_7() {
    let d = tempfile::tempdir().unwrap();
    let Some(libs) = zstd_1_5_7(d.path()) else {
        panic!("libzstd 1.5.7 missing: run tests/extensions/kmod-34 (or set KMOD34_DEPMOD)");
    };
    let root = d.path().join("root");
    edge_tree(&root);
    let theirs = d.path().join("theirs.sqsh");
    let mine = d.path().join("ours.sqsh");
    mksquashfs_with(&root, &theirs, &zstd_flags(), Some(&libs));
    ours(&root, &mine, Compression::Zstd18, 2, false);
    let (a, b) = (
        std::fs::read(&mine).unwrap(),
        std::fs::read(&theirs).unwrap(),
    );
    assert!(
        a == b,
        "ours {} bytes, mksquashfs on zstd 1.5.7 {} bytes",
        a.len(),
        b.len()
    );
}

#[test]
fn bytes_do_not_depend_on_the_thread_count() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    edge_tree(&root);
    let one = d.path().join("one.sqsh");
    let two = d.path().join("two.sqsh");
    let four = d.path().join("four.sqsh");
    ours(&root, &one, Compression::Zstd18, 1, false);
    ours(&root, &two, Compression::Zstd18, 2, false);
    ours(&root, &four, Compression::Zstd18, 4, false);
    let a = std::fs::read(&one).unwrap();
    assert_eq!(a, std::fs::read(&two).unwrap());
    assert_eq!(a, std::fs::read(&four).unwrap());
}

const LABEL: &str = "system_u:object_r:system_state_t:s0";

/// squashfs-tools 4.6.1 (Debian 13; Talos imager v1.10's version), installed by
/// `tests/extensions/squashfs-tools-461`.
fn mksquashfs_461() -> PathBuf {
    let p = std::env::var_os("MKSQUASHFS461")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/squashfs-tools-4.6.1/bin/mksquashfs".into());
    assert!(
        p.is_file(),
        "{} missing: run tests/extensions/squashfs-tools-461",
        p.display()
    );
    p
}

/// The labels Talos v1.13+ passes as `-p "PATH x security.selinux=LABEL"`: a file (as
/// the embedded configuration's `config.yaml`), a directory, a symlink, the root.
fn labels() -> (Xattrs, Vec<String>) {
    let mut x = Xattrs::new();
    let mut pseudo = Vec::new();
    for (path, label) in [
        ("etc/a.conf", LABEL),
        ("usr/share/doc/text", LABEL),
        ("var/empty/a", "system_u:object_r:var_t:s0"),
        ("etc/tool-link", LABEL),
        ("", "system_u:object_r:root_t:s0"),
    ] {
        x.insert(
            PathBuf::from(path),
            vec![("security.selinux".into(), label.as_bytes().to_vec())],
        );
        let p = if path.is_empty() { "/" } else { path };
        pseudo.push(format!("{p} x security.selinux={label}"));
    }
    (x, pseudo)
}

/// With the SELinux labels as pseudo xattrs, our image is mksquashfs 4.6.1's byte for
/// byte (its zstd is 1.5.7 too); without them as well.
#[test]
fn xattr_image_is_byte_identical_to_mksquashfs_461_pseudo_xattrs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    edge_tree(&root);
    let (xattrs, pseudo) = labels();
    for labelled in [false, true] {
        let theirs = d.path().join("theirs.sqsh");
        let mine = d.path().join("ours.sqsh");
        let _ = std::fs::remove_file(&theirs);
        let mut cmd = Command::new(mksquashfs_461());
        cmd.arg(&root)
            .arg(&theirs)
            .args(["-all-root", "-noappend", "-no-progress"])
            .args(zstd_flags())
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string());
        let none = Xattrs::new();
        if labelled {
            cmd.args(["-xattrs-exclude", ".*"]);
            for p in &pseudo {
                cmd.arg("-p").arg(p);
            }
        }
        run_ok(&mut cmd);
        let o = Options {
            compression: Compression::Zstd18,
            epoch: EPOCH,
            threads: Some(2),
            uncompressed: false,
        };
        write_tree_with(&root, &mine, if labelled { &xattrs } else { &none }, &o).unwrap();
        let (a, b) = (
            std::fs::read(&mine).unwrap(),
            std::fs::read(&theirs).unwrap(),
        );
        if a != b
            && let Some(keep) = std::env::var_os("SQUASHFS_KEEP")
        {
            std::fs::copy(&mine, Path::new(&keep).join("ours.sqsh")).unwrap();
            std::fs::copy(&theirs, Path::new(&keep).join("theirs.sqsh")).unwrap();
        }
        assert!(
            a == b,
            "labelled {labelled}: ours {} bytes, mksquashfs 4.6.1 {} bytes",
            a.len(),
            b.len()
        );
    }
}

/// Debian's unsquashfs 4.5.1 lists the labelled image as mksquashfs 4.5.1's image of the
/// same tree without xattrs, and extracts the labels (as root) where they were put.
#[test]
fn xattrs_list_as_without_and_extract_with_their_labels() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    edge_tree(&root);
    let (xattrs, _) = labels();
    let theirs = d.path().join("theirs.sqsh");
    let mine = d.path().join("ours.sqsh");
    mksquashfs(&root, &theirs, &zstd_flags());
    let o = Options {
        compression: Compression::Zstd18,
        epoch: EPOCH,
        threads: Some(2),
        uncompressed: false,
    };
    write_tree_with(&root, &mine, &xattrs, &o).unwrap();
    assert_eq!(
        unsquashfs(&["-lln"], &mine).replace("ours.sqsh", "X"),
        unsquashfs(&["-lln"], &theirs).replace("theirs.sqsh", "X")
    );
    let sb = superblock(&mine);
    assert!(sb.contains("Number of xattr ids 3"), "{sb}");
    let out = d.path().join("x");
    run_ok(
        Command::new(require_tool("unsquashfs"))
            .arg("-d")
            .arg(&out)
            .arg(&mine),
    );
    let getfattr = |p: &str| {
        let o = Command::new(require_tool("getfattr"))
            .args([
                "--no-dereference",
                "--only-values",
                "-n",
                "security.selinux",
            ])
            .arg(out.join(p))
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(getfattr("etc/a.conf"), (true, LABEL.to_string()));
    assert_eq!(getfattr("usr/share/doc/text"), (true, LABEL.to_string()));
    assert_eq!(
        getfattr("var/empty/a"),
        (true, "system_u:object_r:var_t:s0".to_string())
    );
    assert_eq!(
        getfattr(""),
        (true, "system_u:object_r:root_t:s0".to_string())
    );
    assert!(
        !getfattr("etc/a-dup.conf").0,
        "an unlabelled file has no label"
    );
}

/// Hard links (one inode, nlink counted in the tree), fifos, devices and sockets as
/// mksquashfs stores them: the uncompressed image byte for byte, the listing.
#[test]
fn hard_links_and_special_files_as_mksquashfs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    // Half text, half noise: xz compresses its data blocks and its fragment, so the
    // xz case below compares compressed data, not only stored blocks.
    let mut file: Vec<u8> = (0..300_000)
        .map(|i| b"hard linked squashfs file "[i % 26])
        .collect();
    file[150_000..].copy_from_slice(&pseudo_random(150_000, 7));
    write(&root, "a/file", &file, 0o644);
    write(&root, "a/small", b"small file\n", 0o600);
    std::fs::hard_link(root.join("a/file"), root.join("b-link")).unwrap();
    std::fs::create_dir_all(root.join("c")).unwrap();
    std::fs::hard_link(root.join("a/file"), root.join("c/third")).unwrap();
    std::fs::hard_link(root.join("a/small"), root.join("c/small-link")).unwrap();
    run_ok(Command::new("mkfifo").arg(root.join("c/fifo")));
    run_ok(
        Command::new("mknod")
            .arg(root.join("c/null"))
            .args(["c", "1", "3"]),
    );
    run_ok(
        Command::new("mknod")
            .arg(root.join("c/loop9"))
            .args(["b", "7", "300"]),
    );
    let _sock = std::os::unix::net::UnixListener::bind(root.join("c/sock")).unwrap();
    for (compression, uncompressed, flags) in [
        (
            Compression::Zstd18,
            true,
            vec!["-noI", "-noD", "-noF", "-noX"],
        ),
        (
            Compression::Xz,
            false,
            vec!["-comp", "xz", "-Xdict-size", "100%"],
        ),
    ] {
        let theirs = d.path().join("theirs.sqsh");
        let mine = d.path().join("ours.sqsh");
        let mut all = if uncompressed { zstd_flags() } else { vec![] };
        all.extend(flags);
        mksquashfs(&root, &theirs, &all);
        ours(&root, &mine, compression, 2, uncompressed);
        assert_eq!(
            unsquashfs(&["-lln"], &mine).replace("ours.sqsh", "X"),
            unsquashfs(&["-lln"], &theirs).replace("theirs.sqsh", "X")
        );
        assert!(
            std::fs::read(&mine).unwrap() == std::fs::read(&theirs).unwrap(),
            "{compression:?}: images differ"
        );
    }
}

/// The Linux kernel's squashfs driver mounts the labelled image (loop device, as root)
/// and reads back every file, symlink target and label as they were written.
#[test]
fn kernel_mounts_the_labelled_image() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    edge_tree(&root);
    let (xattrs, _) = labels();
    let image = d.path().join("ours.sqsh");
    let o = Options {
        compression: Compression::Zstd18,
        epoch: EPOCH,
        threads: Some(2),
        uncompressed: false,
    };
    write_tree_with(&root, &image, &xattrs, &o).unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&image)
            .arg(&mnt),
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    trees_equal(&root, &mnt);
    let getfattr = |p: &str| {
        run_ok(
            Command::new(require_tool("getfattr"))
                .args([
                    "--no-dereference",
                    "--only-values",
                    "-n",
                    "security.selinux",
                ])
                .arg(mnt.join(p)),
        )
    };
    assert_eq!(getfattr("etc/a.conf"), LABEL);
    assert_eq!(getfattr("etc/tool-link"), LABEL);
    assert_eq!(getfattr("var/empty/a"), "system_u:object_r:var_t:s0");
    assert_eq!(getfattr(""), "system_u:object_r:root_t:s0");
    let meta = std::fs::metadata(mnt.join("usr/bin/suid")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid(), meta.mtime()), (0, 0, EPOCH as i64));
}
