//! System extensions: the rebuilt initramfs judged by GNU cpio, zstd and squashfs-tools
//! (`unsquashfs` listings beside `mksquashfs` 4.5.1's image of the same rootfs with
//! the Talos flags), from a plain tarball, an OCI layout and a loopback registry; and
//! the bad inputs, each one `error:` line with nothing left behind.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::oci::Layer;
use common::registry::registry;
use common::{
    demo_build, demo_dir, demo_modules, entries, pseudo_random, require_tool, run_ok, sha256,
    unsquashfs,
};
use imager::extensions::manifest::{self, Compatibility, Metadata, TalosCompat, extensions_yaml};

/// One file of a fixture: path (relative to the image root), mode, content.
type Entry = (&'static str, u32, Vec<u8>);

fn manifest_yaml(name: &str, version: &str, desc: &str, constraint: &str) -> Vec<u8> {
    format!(
        "version: v1alpha1\nmetadata:\n  name: {name}\n  version: \"{version}\"\n  author: Sidero Labs\n  description: |\n    {desc}\n  compatibility:\n    talos:\n      version: \"{constraint}\"\n"
    )
    .into_bytes()
}

/// hello-world-service (siderolabs/extensions `examples/hello-world-service`).
fn hello_world() -> Vec<Entry> {
    vec![
        (
            "manifest.yaml",
            0o644,
            manifest_yaml(
                "hello-world-service",
                "v1.0.0",
                "[core] This system extension provides an example Talos extension service.",
                ">= v1.0.0",
            ),
        ),
        (
            "rootfs/usr/local/etc/containers/hello-world.yaml",
            0o644,
            b"name: hello-world\ncontainer:\n  entrypoint: ./hello-world\n".to_vec(),
        ),
        (
            "rootfs/usr/local/lib/containers/hello-world/hello-world",
            0o755,
            vec![0x7f; 200_000],
        ),
        (
            "rootfs/usr/local/lib/containers/hello-world/random",
            0o600,
            pseudo_random(300_000, 1),
        ),
    ]
}

/// intel-ucode: microcode files under the firmware directory, and an SPDX file.
fn intel_ucode() -> Vec<Entry> {
    vec![
        (
            "manifest.yaml",
            0o644,
            manifest_yaml(
                "intel-ucode",
                "20250211",
                "[core] This system extension provides Intel microcode binaries.",
                ">= v1.0.0",
            ),
        ),
        (
            "rootfs/usr/lib/firmware/intel-ucode/06-8f-08",
            0o644,
            pseudo_random(5000, 2),
        ),
        (
            "rootfs/usr/lib/firmware/intel-ucode/06-55-04",
            0o644,
            pseudo_random(3000, 3),
        ),
        (
            "rootfs/usr/local/share/spdx/intel-ucode.spdx.json",
            0o644,
            b"{}\n".to_vec(),
        ),
    ]
}

/// amd-ucode: `microcode_amd*.bin` blobs beside signature files that stay firmware.
fn amd_ucode() -> Vec<Entry> {
    vec![
        (
            "manifest.yaml",
            0o644,
            manifest_yaml(
                "amd-ucode",
                "20250211",
                "[core] This system extension provides AMD microcode binaries.",
                ">= v1.0.0",
            ),
        ),
        (
            "rootfs/usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin",
            0o644,
            pseudo_random(2000, 4),
        ),
        (
            "rootfs/usr/lib/firmware/amd-ucode/microcode_amd.bin",
            0o644,
            pseudo_random(1000, 5),
        ),
        (
            "rootfs/usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin.asc",
            0o644,
            b"sig\n".to_vec(),
        ),
    ]
}

/// An OCI image layout of one gzip'd layer for `linux/<arch>`.
fn oci_layout(dir: &Path, layer_tar: &[u8], arch: &str) {
    oci_layout_of(dir, &[(layer_tar, Layer::Gzip)], arch);
}

/// An OCI image layout for `linux/<arch>` of the given layers, bottom first; returns
/// the layers' blob paths.
fn oci_layout_of(dir: &Path, layers: &[(&[u8], Layer)], arch: &str) -> Vec<PathBuf> {
    let image = common::oci::Image {
        arch,
        layers: layers.to_vec(),
        config: serde_json::json!({}),
    };
    common::oci::layout(dir, &[image], "v1").remove(0)
}

/// A profile file for `kind` with the given `systemExtensions` YAML items.
fn profile(dir: &Path, version: &str, kind: &str, items: &[String]) -> PathBuf {
    let mut y = format!(
        "baseProfileName: metal\narch: amd64\nversion: {version}\noutput:\n  kind: {kind}\n  outFormat: raw\ninput:\n  systemExtensions:\n"
    );
    for i in items {
        y.push_str(&format!("    - {i}\n"));
    }
    let p = dir.join(format!("profile-{kind}.yaml"));
    std::fs::write(&p, y).unwrap();
    p
}

/// Splits the rebuilt initramfs: (early cpio, rest after the base initramfs).
fn split(rebuilt: &[u8], base: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let at = rebuilt
        .windows(base.len())
        .position(|w| w == base)
        .expect("the base initramfs bytes appear unchanged");
    (rebuilt[..at].to_vec(), rebuilt[at + base.len()..].to_vec())
}

fn cpio_list(archive: &[u8]) -> String {
    let mut c = Command::new(require_tool("cpio"))
        .args(["-itv", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(archive).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `cpio -itv` lines reduced to mode, owner, group, size and name.
fn cpio_fields(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {} {}", f[0], f[2], f[3], f[4], f[f.len() - 1])
        })
        .collect()
}

fn cpio_extract(archive: &[u8], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = Command::new(require_tool("cpio"))
        .args(["-idm", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(archive).unwrap();
    assert!(c.wait().unwrap().success());
}

/// The squashfs mksquashfs makes of the fixture's rootfs (firmware removed) with the
/// Talos flags, under the test epoch.
fn reference_squashfs(entries: &[Entry], work: &Path) -> PathBuf {
    let root = work.join("tree");
    std::fs::create_dir_all(&root).unwrap();
    let tar = work.join("fixture.tar");
    std::fs::write(&tar, common::tar_of(entries)).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-mxf")
            .arg(&tar),
    );
    let _ = std::fs::remove_dir_all(root.join("rootfs/usr/lib/firmware"));
    let out = work.join("ref.sqsh");
    run_ok(&mut common::talos_mksquashfs(
        require_tool("mksquashfs"),
        &root.join("rootfs"),
        &out,
        common::TalosSquashfs::Zstd18,
    ));
    out
}

const EXPECTED_YAML: &str = "layers:
    - image: 0.sqsh
      metadata:
        name: hello-world-service
        version: v1.0.0
        author: Sidero Labs
        description: |
            [core] This system extension provides an example Talos extension service.
        compatibility:
            talos:
                version: '>= v1.0.0'
    - image: 1.sqsh
      metadata:
        name: intel-ucode
        version: \"20250211\"
        author: Sidero Labs
        description: |
            [core] This system extension provides Intel microcode binaries.
        compatibility:
            talos:
                version: '>= v1.0.0'
    - image: 2.sqsh
      metadata:
        name: amd-ucode
        version: \"20250211\"
        author: Sidero Labs
        description: |
            [core] This system extension provides AMD microcode binaries.
        compatibility:
            talos:
                version: '>= v1.0.0'
";

#[test]
fn initramfs_with_extensions_from_a_tarball_a_layout_and_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("hello.tar"), common::tar_of(&hello_world())).unwrap();
    oci_layout(&d.join("intel"), &common::tar_of(&intel_ucode()), "amd64");
    oci_layout(&d.join("amd"), &common::tar_of(&amd_ucode()), "amd64");
    let reg = registry(d);
    let amd_ref = format!("127.0.0.1:{}/siderolabs/amd-ucode:20250211", reg.1);
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", d.join("amd").display()))
            .arg(format!("docker://{amd_ref}")),
    );
    let items = vec![
        format!("tarballPath: {}", d.join("hello.tar").display()),
        format!("ociPath: {}", d.join("intel").display()),
        format!("{{imageRef: \"{amd_ref}\", forceInsecure: true}}"),
    ];
    let p = profile(d, "v1.10.0", "initramfs", &items);
    let built = demo_build(&p).no_console().run();
    let again = demo_build(&p).no_console().run();
    let rebuilt = std::fs::read(&built.artifact).unwrap();
    assert_eq!(
        rebuilt,
        std::fs::read(&again.artifact).unwrap(),
        "reproducible"
    );

    // Progress lines as Talos prints them, the heading once.
    assert_eq!(
        built
            .stderr
            .lines()
            .filter(|l| l.contains("rebuilding initramfs"))
            .count(),
        1,
        "{}",
        built.stderr
    );
    for line in [
        "rebuilding initramfs with system extensions...",
        "    NAME                  VERSION    AUTHOR",
        "    hello-world-service   v1.0.0     Sidero Labs",
        "    intel-ucode           20250211   Sidero Labs",
        &format!("    pulling {amd_ref}..."),
        "initramfs ready",
    ] {
        assert!(
            built.stderr.lines().any(|l| l == line),
            "{line:?} in:\n{}",
            built.stderr
        );
    }

    // [early cpio] + [base initramfs, untouched] + [zstd frames].
    let base = std::fs::read(demo_dir().join("amd64/initramfs.xz")).unwrap();
    let (early, tail) = split(&rebuilt, &base);
    assert!(
        early.starts_with(b"070701"),
        "the early cpio is first and uncompressed"
    );
    assert_eq!(early.len() % 512, 0);
    assert_eq!(
        cpio_fields(&cpio_list(&early)),
        [
            "drwxr-xr-x root root 0 kernel",
            "drwxr-xr-x root root 0 kernel/x86",
            "drwxr-xr-x root root 0 kernel/x86/microcode",
            "-rw-r--r-- root root 3000 kernel/x86/microcode/AuthenticAMD.bin",
            "-rw-r--r-- root root 8000 kernel/x86/microcode/GenuineIntel.bin",
        ]
    );
    let ex = d.join("early");
    cpio_extract(&early, &ex);
    let intel = intel_ucode();
    assert_eq!(
        std::fs::read(ex.join("kernel/x86/microcode/GenuineIntel.bin")).unwrap(),
        [intel[2].2.clone(), intel[1].2.clone()].concat(),
        "intel blobs byte-sorted by name (06-55-04, 06-8f-08)"
    );
    let amd = amd_ucode();
    assert_eq!(
        std::fs::read(ex.join("kernel/x86/microcode/AuthenticAMD.bin")).unwrap(),
        [amd[2].2.clone(), amd[1].2.clone()].concat(),
        "amd blobs byte-sorted (microcode_amd.bin, microcode_amd_fam17h.bin)"
    );

    let zst = d.join("tail.zst");
    std::fs::write(&zst, &tail).unwrap();
    run_ok(Command::new(require_tool("zstd")).arg("-tq").arg(&zst));
    let cpio = run_ok_bytes(Command::new(require_tool("zstd")).arg("-dcq").arg(&zst));
    // Frames: the three squashfs images stored, the rest one level-18 frame.
    let fx = d.join("frames");
    std::fs::create_dir_all(&fx).unwrap();
    assert_eq!(judge_frames(&tail, &cpio, &fx), 4);
    let names: Vec<String> = cpio_fields(&cpio_list(&cpio));
    assert_eq!(
        names,
        [
            // Mode, owner and name stated; the size is the member's own (its bytes are
            // judged against mksquashfs below).
            format!(
                "-rw-r--r-- root root {} 0.sqsh",
                size_of_member(&cpio, "0.sqsh", d)
            ),
            format!(
                "-rw-r--r-- root root {} 1.sqsh",
                size_of_member(&cpio, "1.sqsh", d)
            ),
            format!(
                "-rw-r--r-- root root {} 2.sqsh",
                size_of_member(&cpio, "2.sqsh", d)
            ),
            format!(
                "-rw-r--r-- root root {} extensions.yaml",
                EXPECTED_YAML.len()
            ),
            "drwxr-xr-x root root 0 usr".into(),
            "drwxr-xr-x root root 0 usr/lib".into(),
            "drwxr-xr-x root root 0 usr/lib/firmware".into(),
            "drwxr-xr-x root root 0 usr/lib/firmware/amd-ucode".into(),
            "-rw-r--r-- root root 4 usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin.asc".into(),
            "drwxr-xr-x root root 0 usr/lib/firmware/intel-ucode".into(),
        ]
    );
    let cx = d.join("compressed");
    cpio_extract(&cpio, &cx);
    assert_eq!(
        std::fs::read_to_string(cx.join("extensions.yaml")).unwrap(),
        EXPECTED_YAML
    );
    // Decompressed, the frames are the very archive GNU cpio makes of the same tree.
    let gnu = gnu_cpio_of(&cpio, &cx);
    assert!(
        gnu == cpio,
        "GNU cpio's archive of the extracted tree, byte for byte"
    );

    // Each squashfs beside mksquashfs's image of the same rootfs.
    for (i, fixture) in [hello_world(), intel_ucode(), amd_ucode()]
        .iter()
        .enumerate()
    {
        let ours = cx.join(format!("{i}.sqsh"));
        let work = d.join(format!("ref{i}"));
        let reference = reference_squashfs(fixture, &work);
        let strip = |s: String, img: &Path| s.replace(&img.display().to_string(), "IMG");
        assert_eq!(
            strip(unsquashfs(&["-lln"], &ours), &ours),
            strip(unsquashfs(&["-lln"], &reference), &reference),
            "{i}.sqsh listing"
        );
        let sb = unsquashfs(&["-s"], &ours);
        assert!(
            sb.contains("Compression zstd") && sb.contains("compression-level 18"),
            "{sb}"
        );
        assert!(sb.contains("Block size 131072"), "{sb}");
        assert!(
            sb.contains("Creation or last append time Tue Nov 14 22:13:20 2023"),
            "{sb}"
        );
        let (a, b) = (work.join("ours"), work.join("theirs"));
        unsquashfs(&["-q", "-n", "-d", a.to_str().unwrap()], &ours);
        unsquashfs(&["-q", "-n", "-d", b.to_str().unwrap()], &reference);
        run_ok(Command::new("diff").arg("-r").arg(&a).arg(&b));
    }

    // The manifest lists the extensions.
    let ext = built.manifest["extensions"].as_array().unwrap();
    assert_eq!(ext.len(), 3);
    assert_eq!(ext[0]["name"], "hello-world-service");
    assert_eq!(
        ext[1]["source"],
        format!("oci:{}", d.join("intel").display())
    );
    assert_eq!(ext[2]["source"], amd_ref.as_str());
    let sq = std::fs::read(cx.join("2.sqsh")).unwrap();
    assert_eq!(ext[2]["digest"], sha256(&sq).as_str());

    // The UKI's .initrd is the rebuilt initramfs, byte for byte.
    let p = profile(d, "v1.10.0", "uki", &items);
    let uki = demo_build(&p).no_console().run();
    let bytes = std::fs::read(&uki.artifact).unwrap();
    let pe = goblin::pe::PE::parse(&bytes).unwrap();
    let s = pe
        .sections
        .iter()
        .find(|s| s.name().unwrap_or("") == ".initrd")
        .unwrap();
    let start = s.pointer_to_raw_data as usize;
    assert_eq!(&bytes[start..start + rebuilt.len()], &rebuilt[..]);
    drop(reg);
}

/// The start offsets of a newc archive's entries, then the end of its trailer entry
/// and the archive's end (after the padding): the places a frame may end.
fn cpio_boundaries(cpio: &[u8]) -> Vec<(u64, String)> {
    let field = |at: usize, i: usize| {
        let f = std::str::from_utf8(&cpio[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
        u64::from_str_radix(f, 16).unwrap() as usize
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        assert_eq!(&cpio[at..at + 6], b"070701", "an entry at {at}");
        let (size, namesize) = (field(at, 6), field(at, 11));
        let name = String::from_utf8_lossy(&cpio[at + 110..at + 110 + namesize - 1]).into_owned();
        out.push((at as u64, name.clone()));
        at = align(align(at + 110 + namesize) + size);
        if name == "TRAILER!!!" {
            break;
        }
    }
    out.push((cpio.len() as u64, "(end)".into()));
    out
}

/// Judges the appended part of a rebuilt initramfs frame by frame, as the kernel will
/// read it (`unpack_to_rootfs`: one decompressor call per frame, the cpio parser between
/// entries when a frame ends): cut at the frame boundaries the frame headers give, each
/// piece must decode alone in the zstd CLI (its XXH64 checksum verified), with a window
/// of at most 8 MiB (`zstd -lv`; the kernel's limit), and end on a cpio entry boundary
/// of the whole decompressed archive, which is `cpio`. Each `.sqsh` entry must be one
/// frame of its own, of raw blocks. Returns the number of frames.
fn judge_frames(tail: &[u8], cpio: &[u8], work: &Path) -> usize {
    let frames = imager::formats::zstd_frames::frames(tail).unwrap();
    let bounds = cpio_boundaries(cpio);
    let mut at = 0u64;
    let mut starts = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        starts.push(at);
        let piece = &tail[f.offset as usize..(f.offset + f.len) as usize];
        let path = work.join(format!("frame{i}.zst"));
        std::fs::write(&path, piece).unwrap();
        let plain = run_ok_bytes(Command::new(require_tool("zstd")).arg("-dcq").arg(&path));
        let want = cpio.get(at as usize..at as usize + plain.len());
        assert!(
            want == Some(&plain[..]),
            "frame {i}: the cpio bytes at {at}"
        );
        let info = run_ok(Command::new(require_tool("zstd")).arg("-lv").arg(&path));
        let window: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("Window Size: "))
            .and_then(|l| l.rsplit_once('(')?.1.strip_suffix(" B)")?.parse().ok())
            .unwrap_or_else(|| panic!("a window size in {info}"));
        assert!(window <= 8 << 20, "frame {i}: window {window}");
        let start = bounds.iter().position(|b| b.0 == at);
        at += plain.len() as u64;
        let end = bounds.iter().position(|b| b.0 == at);
        let (Some(start), Some(end)) = (start, end) else {
            panic!("frame {i} ends at {at}, between cpio entries: {bounds:?}")
        };
        if bounds[start].1.ends_with(".sqsh") {
            assert_eq!(end, start + 1, "{} is a frame of its own", bounds[start].1);
            assert!(f.stored, "{} is stored", bounds[start].1);
        }
    }
    assert_eq!(at, cpio.len() as u64, "the frames hold the whole archive");
    for (offset, name) in bounds.iter().filter(|b| b.1.ends_with(".sqsh")) {
        assert!(starts.contains(offset), "{name} begins a frame");
    }
    frames.len()
}

/// GNU cpio's archive (`-H newc --create --reproducible -R +0:+0`, the Talos imager's
/// command) of the tree `dir` extracted from `ours`, every entry timed at the test
/// epoch, listed in `ours`'s order.
fn gnu_cpio_of(ours: &[u8], dir: &Path) -> Vec<u8> {
    let names: Vec<String> = cpio_boundaries(ours)
        .into_iter()
        .map(|b| b.1)
        .filter(|n| n != "TRAILER!!!" && n != "(end)")
        .collect();
    for n in &names {
        run_ok(
            Command::new("touch")
                .args(["-h", "-d"])
                .arg(format!("@{}", common::build::EPOCH))
                .arg(dir.join(n)),
        );
    }
    let mut c = Command::new(require_tool("cpio"))
        .args([
            "-o",
            "-H",
            "newc",
            "--reproducible",
            "--quiet",
            "-R",
            "+0:+0",
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let list = names.join("\n") + "\n";
    let feed = std::thread::spawn(move || stdin.write_all(list.as_bytes()));
    let out = c.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn run_ok_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn size_of_member(cpio: &[u8], name: &str, d: &Path) -> u64 {
    let x = d.join(format!("member-{name}"));
    cpio_extract(cpio, &x);
    std::fs::metadata(x.join(name)).unwrap().len()
}

#[test]
fn every_image_kind_builds_with_an_extension() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("hello.tar"), common::tar_of(&hello_world())).unwrap();
    let items = vec![format!("tarballPath: {}", d.join("hello.tar").display())];
    let rebuilt = demo_build(profile(d, "v1.10.0", "initramfs", &items))
        .no_console()
        .run();
    for kind in ["iso", "image"] {
        let built = demo_build(profile(d, "v1.10.0", kind, &items))
            .no_console()
            .run();
        assert!(built.stderr.contains("initramfs ready"), "{kind}");
        assert_eq!(
            built.manifest["extensions"][0]["name"],
            "hello-world-service"
        );
        if kind == "image" {
            // The dual-boot image's GRUB entry boots the rebuilt initramfs too.
            let on_boot = common::bootpart::grub_read(&built.artifact, 3, "/A/initramfs.xz", d);
            assert!(
                on_boot == rebuilt.bytes(),
                "BOOT /A/initramfs.xz is the rebuilt one"
            );
        }
    }
    // kernel and cmdline skip the rebuild silently.
    for kind in ["kernel", "cmdline"] {
        let built = demo_build(profile(d, "v1.10.0", kind, &items))
            .no_console()
            .run();
        assert!(
            !built.stderr.contains("system extensions"),
            "{kind}: {}",
            built.stderr
        );
    }
}

/// One bad extension input: one `error:` line containing `want`, exit != 0, nothing left.
fn refused(d: &Path, version: &str, fixture: Vec<u8>, want: &str) {
    let tar = d.join("bad.tar");
    std::fs::write(&tar, fixture).unwrap();
    let p = profile(
        d,
        version,
        "initramfs",
        &[format!("tarballPath: {}", tar.display())],
    );
    demo_build(&p).no_console().run_err().refused(&[want], want);
}

fn with(mut base: Vec<Entry>, extra: Entry) -> Vec<Entry> {
    base.push(extra);
    base
}

#[test]
fn bad_extension_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hw = hello_world;
    refused(
        d,
        "v1.10.0",
        common::tar_of(&with(hw(), ("bin/sh", 0o755, b"x".to_vec()))),
        r#"unexpected file "bin""#,
    );
    refused(
        d,
        "v1.10.0",
        common::tar_of(&hw()[1..]),
        "extension manifest is missing",
    );
    let mut no_rootfs = tar::Builder::new(Vec::new());
    let m = manifest_yaml("x", "1", "d", "");
    let mut h = tar::Header::new_ustar();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    no_rootfs
        .append_data(&mut h, "manifest.yaml", &m[..])
        .unwrap();
    refused(
        d,
        "v1.10.0",
        no_rootfs.into_inner().unwrap(),
        "extension rootfs is missing",
    );
    let mut v = hw();
    v[0].2 = b"version: v1alpha2\nmetadata:\n  name: x\n".to_vec();
    refused(
        d,
        "v1.10.0",
        common::tar_of(&v),
        r#"unsupported manifest version: "v1alpha2""#,
    );
    let mut v = hw();
    v[0].2 = b"version: [v1alpha1\n".to_vec();
    refused(
        d,
        "v1.10.0",
        common::tar_of(&v),
        "error unmarshalling extension manifest",
    );
    let mut v = hw();
    v[0].2 = manifest_yaml("hello-world-service", "v1.0.0", "d", ">= v1.11.0");
    refused(
        d,
        "v1.10.0",
        common::tar_of(&v),
        r#"error validating extension "hello-world-service": version constraint >= v1.11.0 can't be satisfied with Talos version 1.10.0"#,
    );
    // A path escape in the layer.
    let mut esc = common::tar_of(&hw());
    esc.truncate(esc.len() - 1024);
    let mut b = tar::Builder::new(esc);
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    {
        let raw = h.as_old_mut();
        raw.name[..13].copy_from_slice(b"../escaped.sh");
    }
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    refused(
        d,
        "v1.10.0",
        b.into_inner().unwrap(),
        "escapes the image root",
    );
    assert!(!d.join("escaped.sh").exists());
    // A directory where microcode is expected.
    refused(
        d,
        "v1.10.0",
        common::tar_of(&with(
            intel_ucode(),
            (
                "rootfs/usr/lib/firmware/intel-ucode/06-00-00/x",
                0o644,
                b"x".to_vec(),
            ),
        )),
        "is a directory",
    );
    // Kernel modules with a base initramfs that has no rootfs.sqsh (the demo one).
    refused(
        d,
        "v1.10.0",
        common::tar_of(&with(
            hw(),
            (
                "rootfs/usr/lib/modules/6.12.25-talos/extras/x.ko",
                0o644,
                b"x".to_vec(),
            ),
        )),
        "base initramfs: no rootfs.sqsh in it",
    );

    // Wrong architecture: a layout for arm64 only.
    oci_layout(&d.join("arm"), &common::tar_of(&hw()), "arm64");
    let p = profile(
        d,
        "v1.10.0",
        "initramfs",
        &[format!("ociPath: {}", d.join("arm").display())],
    );
    demo_build(&p)
        .no_console()
        .run_err()
        .refused(&["amd64"], "an arm64-only layout");
}

#[test]
fn eleven_extensions_are_layered_in_string_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut items = Vec::new();
    for j in 0..11 {
        let mut f = hello_world();
        f[0].2 = manifest_yaml(&format!("ext-{j}"), "v1.0.0", "d", "");
        let t = d.join(format!("e{j}.tar"));
        std::fs::write(&t, common::tar_of(&f)).unwrap();
        items.push(format!("tarballPath: {}", t.display()));
    }
    let built = demo_build(profile(d, "v1.10.0", "initramfs", &items))
        .no_console()
        .run();
    let names: Vec<&str> = built.manifest["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ext-0", "ext-1", "ext-10", "ext-2", "ext-3", "ext-4", "ext-5", "ext-6", "ext-7",
            "ext-8", "ext-9"
        ]
    );
}

/// `extensions.yaml`'s entry for the embedded configuration `config` as image `image`.
fn embedded_entry(image: &str, config: &[u8]) -> String {
    format!(
        "    - image: {image}
      metadata:
        name: embedded-config
        version: {}
        author: Imager
        description: Virtual extension which embeds the machine configuration.
        compatibility:
            talos:
                version: '>= 1.0.0'
",
        &sha256(config)[7..]
    )
}

/// The compressed cpio of a rebuilt initramfs, extracted into `dir`.
fn extract_tail(rebuilt: &[u8], dir: &Path) {
    let base = std::fs::read(demo_dir().join("amd64/initramfs.xz")).unwrap();
    let (_, tail) = split(rebuilt, &base);
    let zst = dir.with_extension("zst");
    std::fs::write(&zst, &tail).unwrap();
    let cpio = run_ok_bytes(Command::new(require_tool("zstd")).arg("-dcq").arg(&zst));
    cpio_extract(&cpio, dir);
}

const MACHINE_CONFIG: &[u8] = b"version: v1alpha1\nmachine:\n  type: worker\n  token: abc.def\ncluster:\n  controlPlane:\n    endpoint: https://10.5.0.2:6443\n";

#[test]
fn embedded_machine_configuration_is_the_last_extension() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("config.yaml");
    std::fs::write(&config, MACHINE_CONFIG).unwrap();

    // --embedded-config-path alone forces the rebuild: one virtual extension, 0.sqsh.
    let p = d.join("only.yaml");
    std::fs::write(
        &p,
        "baseProfileName: metal\narch: amd64\nversion: v1.12.0\noutput:\n  kind: initramfs\n  outFormat: raw\n",
    )
    .unwrap();
    let built = demo_build(&p)
        .no_console()
        .arg("--embedded-config-path")
        .arg(&config)
        .run();
    let again = demo_build(&p)
        .no_console()
        .arg("--embedded-config-path")
        .arg(&config)
        .run();
    assert_eq!(built.bytes(), again.bytes(), "reproducible");
    // The heading once, its steps indented under it.
    let headings = built
        .stderr
        .lines()
        .filter(|l| l.contains("rebuilding initramfs with system extensions"))
        .count();
    assert_eq!(headings, 1, "{}", built.stderr);
    let version = &sha256(MACHINE_CONFIG)[7..];
    assert!(
        built
            .stderr
            .lines()
            .any(|l| l == format!("    embedded-config   {version}   Imager")),
        "{}",
        built.stderr
    );
    // The dump before the build lists the virtual extension where it is written.
    let entry = format!(
        "  systemExtensions:\n    - imageRef: \"\"\n      tarballPath: {}/.imager-work-",
        built.out.display()
    );
    let dump = &built.stderr[..built.stderr.find("\noutput:\n").unwrap()];
    assert!(
        dump.starts_with("profile ready:\n") && dump.contains(&entry),
        "{}",
        built.stderr
    );
    assert!(dump.ends_with("/embedded-config.tar"), "{}", built.stderr);
    let x = d.join("only");
    extract_tail(&built.bytes(), &x);
    assert_eq!(
        std::fs::read_to_string(x.join("extensions.yaml")).unwrap(),
        format!("layers:\n{}", embedded_entry("0.sqsh", MACHINE_CONFIG))
    );
    let ext = &built.manifest["extensions"][0];
    assert_eq!(ext["name"], "embedded-config");
    assert_eq!(ext["version"], version);
    assert_eq!(ext["source"], "customization.embeddedMachineConfiguration");

    // The squashfs beside mksquashfs's image of the tree Talos's tarball unpacks to.
    let tree = d.join("tree");
    std::fs::create_dir_all(tree.join("usr/local/etc/talos")).unwrap();
    std::fs::write(tree.join("usr/local/etc/talos/config.yaml"), MACHINE_CONFIG).unwrap();
    run_ok(
        Command::new("chmod")
            .arg("0400")
            .arg(tree.join("usr/local/etc/talos/config.yaml")),
    );
    let reference = d.join("ref.sqsh");
    run_ok(&mut common::talos_mksquashfs(
        require_tool("mksquashfs"),
        &tree,
        &reference,
        common::TalosSquashfs::Zstd18,
    ));
    let ours = x.join("0.sqsh");
    let strip = |s: String, img: &Path| s.replace(&img.display().to_string(), "IMG");
    let listing = strip(unsquashfs(&["-lln"], &ours), &ours);
    assert_eq!(
        listing,
        strip(unsquashfs(&["-lln"], &reference), &reference)
    );
    assert!(
        listing.contains("-r-------- 0/0"),
        "config.yaml is 0400, owned by root:\n{listing}"
    );
    let out = d.join("sq");
    unsquashfs(&["-q", "-n", "-d", out.to_str().unwrap()], &ours);
    let got = out.join("usr/local/etc/talos/config.yaml");
    run_ok(Command::new("chmod").arg("u+r").arg(&got));
    assert_eq!(std::fs::read(&got).unwrap(), MACHINE_CONFIG);

    // customization.embeddedMachineConfiguration after a real extension: 1.sqsh, last.
    std::fs::write(d.join("hello.tar"), common::tar_of(&hello_world())).unwrap();
    let p = d.join("both.yaml");
    let indented: String = String::from_utf8_lossy(MACHINE_CONFIG)
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    std::fs::write(
        &p,
        format!(
            "baseProfileName: metal\narch: amd64\nversion: v1.12.0\noutput:\n  kind: initramfs\n  outFormat: raw\ninput:\n  systemExtensions:\n    - tarballPath: {}\ncustomization:\n  embeddedMachineConfiguration: |\n{indented}",
            d.join("hello.tar").display()
        ),
    )
    .unwrap();
    let built = demo_build(&p).no_console().run();
    let x = d.join("both");
    extract_tail(&built.bytes(), &x);
    let yaml = std::fs::read_to_string(x.join("extensions.yaml")).unwrap();
    assert!(
        yaml.ends_with(&embedded_entry("1.sqsh", MACHINE_CONFIG)),
        "{yaml}"
    );
    assert!(yaml.starts_with(
        "layers:\n    - image: 0.sqsh\n      metadata:\n        name: hello-world-service\n"
    ));
    let listing = unsquashfs(&["-lln"], &x.join("1.sqsh"));
    assert!(
        listing.contains("/usr/local/etc/talos/config.yaml"),
        "{listing}"
    );

    // Talos < 1.12 reads no embedded configuration: refused, nothing left behind.
    let p = d.join("old.yaml");
    std::fs::write(
        &p,
        "baseProfileName: metal\narch: amd64\nversion: v1.11.0\noutput:\n  kind: initramfs\n  outFormat: raw\n",
    )
    .unwrap();
    let failed = demo_build(&p)
        .no_console()
        .arg("--embedded-config-path")
        .arg(&config)
        .run_err();
    assert_eq!(failed.code, Some(3), "{}", failed.stderr);
    assert_eq!(failed.error_lines().len(), 1, "{}", failed.stderr);
    assert!(
        failed
            .error_line()
            .contains("needs Talos >= 1.12 (profile version v1.11.0)"),
        "{}",
        failed.error_line()
    );
    assert_eq!(failed.left(), Vec::<String>::new());
    // A missing file is one error line naming it.
    let failed = demo_build(&p)
        .no_console()
        .arg("--embedded-config-path")
        .arg(d.join("missing.yaml"))
        .run_err();
    assert_eq!(failed.error_lines().len(), 1, "{}", failed.stderr);
    assert!(
        failed.error_line().contains("missing.yaml"),
        "{}",
        failed.error_line()
    );
}

/// A build of `p` fails with one `error:` line containing `want`, nothing left behind.
fn refused_build(build: common::build::DemoBuild, want: &str) {
    build.no_console().run_err().refused(&[want], want);
}

#[test]
fn layers_are_flattened_across_whiteouts_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = "rootfs/usr/local/share";
    let lower: Vec<(String, u32, Vec<u8>)> = hello_world()
        .into_iter()
        .map(|(p, m, c)| (p.to_string(), m, c))
        .chain(
            [
                ("gone", "x"),
                ("d/x", "x"),
                ("d/y", "y"),
                ("o/p", "p"),
                ("n/z", "z"),
                ("v", "lower"),
            ]
            .iter()
            .map(|(p, c)| (format!("{s}/{p}"), 0o644, c.as_bytes().to_vec())),
        )
        .collect();
    let upper: Vec<(String, u32, Vec<u8>)> = [
        (".wh.gone", ""),
        ("d/.wh.x", ""),
        ("o/.wh..wh..opq", ""),
        ("o/q", "q"),
        ("n", "now a file"),
        ("v", "upper"),
    ]
    .iter()
    .map(|(p, c)| (format!("{s}/{p}"), 0o644, c.as_bytes().to_vec()))
    .collect();
    let leak = |v: &[(String, u32, Vec<u8>)]| -> Vec<Entry> {
        v.iter()
            .map(|(p, m, c)| (&*Box::leak(p.clone().into_boxed_str()), *m, c.clone()))
            .collect()
    };
    let (lower, upper) = (common::tar_of(&leak(&lower)), common::tar_of(&leak(&upper)));
    oci_layout_of(
        &d.join("two"),
        &[(&lower, Layer::Gzip), (&upper, Layer::Zstd)],
        "amd64",
    );
    let p = profile(
        d,
        "v1.10.0",
        "initramfs",
        &[format!("ociPath: {}", d.join("two").display())],
    );
    let built = demo_build(&p).no_console().run();
    let x = d.join("x");
    extract_tail(&built.bytes(), &x);
    let listing = unsquashfs(&["-lln"], &x.join("0.sqsh"));
    let share: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split("squashfs-root/usr/local/share/").nth(1))
        .collect();
    // `.wh.gone` hides the lower file, `d/.wh.x` the lower d/x, the file `n` the lower
    // directory n/; the opaque marker is not honoured (as in Talos), so o/p stays; the
    // upper v wins; no whiteout is written.
    assert_eq!(
        share,
        ["d", "d/y", "n", "o", "o/p", "o/q", "v"],
        "{listing}"
    );
    let out = d.join("sq");
    unsquashfs(
        &["-q", "-n", "-d", out.to_str().unwrap()],
        &x.join("0.sqsh"),
    );
    assert_eq!(
        std::fs::read(out.join("usr/local/share/v")).unwrap(),
        b"upper"
    );
    assert_eq!(
        std::fs::read(out.join("usr/local/share/n")).unwrap(),
        b"now a file"
    );
}

#[test]
fn tampered_layers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tar = common::tar_of(&hello_world());
    let layout = |name: &str, how: Layer| {
        let blobs = oci_layout_of(&d.join(name), &[(&tar, how)], "amd64");
        blobs[0].clone()
    };
    let build = |dir: &str| {
        demo_build(profile(
            d,
            "v1.10.0",
            "initramfs",
            &[format!("ociPath: {}", d.join(dir).display())],
        ))
    };
    // One byte flipped in the middle of a gzip and of a zstd layer; a byte appended.
    for (name, how) in [("gz", Layer::Gzip), ("zst", Layer::Zstd)] {
        let blob = layout(name, how);
        let mut b = std::fs::read(&blob).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x55;
        std::fs::write(&blob, &b).unwrap();
        refused_build(build(name), "does not match its digest");
    }
    let blob = layout("longer", Layer::Gzip);
    let mut b = std::fs::read(&blob).unwrap();
    b.extend_from_slice(b"trailing");
    std::fs::write(&blob, &b).unwrap();
    refused_build(build("longer"), "does not match its digest");

    // A registry serving a tampered layer: the download fails its digest check and
    // nothing is cached.
    let blob = layout("pushed", Layer::Gzip);
    let digest = blob.file_name().unwrap().to_string_lossy().into_owned();
    let reg = registry(d);
    let r = format!("127.0.0.1:{}/siderolabs/hello:v1", reg.1);
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", d.join("pushed").display()))
            .arg(format!("docker://{r}")),
    );
    let stored = d.join(format!(
        "registry-data/docker/registry/v2/blobs/sha256/{}/{digest}/data",
        &digest[..2]
    ));
    let mut b = std::fs::read(&stored).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&stored, &b).unwrap();
    let cache = d.join("cache");
    let p = profile(
        d,
        "v1.10.0",
        "initramfs",
        &[format!("{{imageRef: \"{r}\", forceInsecure: true}}")],
    );
    refused_build(
        demo_build(&p).env("XDG_CACHE_HOME", &cache),
        &format!("error pulling image {r}"),
    );
    let failed = demo_build(&p)
        .env("XDG_CACHE_HOME", &cache)
        .no_console()
        .run_err();
    assert!(
        failed
            .error_line()
            .contains(&format!("layer sha256:{digest} downloaded with digest")),
        "{}",
        failed.error_line()
    );
    assert_eq!(
        entries(&cache.join("imager/blobs/sha256")),
        Vec::<String>::new(),
        "nothing cached"
    );
    drop(reg);
}

/// ukify's view of a UKI's `.initrd`: `sha256:<hex>` of the section.
fn ukify_initrd(uki: &Path) -> String {
    let ukify = std::env::var_os("UKIFY")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .unwrap_or_else(|| require_tool("ukify"));
    let text = run_ok(Command::new(ukify).arg("inspect").arg(uki));
    let at = text
        .find("\n.initrd:\n")
        .unwrap_or_else(|| panic!("no .initrd in:\n{text}"));
    let line = text[at..]
        .lines()
        .find(|l| l.trim_start().starts_with("sha256: "))
        .unwrap();
    format!(
        "sha256:{}",
        line.trim_start().trim_start_matches("sha256: ")
    )
}

/// The file at `path` in the root file system of an installer image (skopeo copies it
/// out of the OCI archive, umoci unpacks it).
fn installer_file(tarball: &Path, work: &Path, path: &str) -> Vec<u8> {
    std::fs::create_dir_all(work).unwrap();
    let copy = work.join("copy");
    run_ok(
        Command::new(require_tool("skopeo"))
            .arg("copy")
            .arg(format!("oci-archive:{}", tarball.display()))
            .arg(format!("oci:{}:x", copy.display())),
    );
    let bundle = work.join("bundle");
    run_ok(
        Command::new(require_tool("umoci"))
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:x", copy.display()))
            .arg(&bundle),
    );
    std::fs::read(bundle.join("rootfs").join(path)).unwrap()
}

#[test]
fn every_output_kind_carries_the_rebuilt_initramfs_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A service extension with a few MiB in many blocks (parallel squashfs compression)
    // and a microcode extension.
    let mut hello = hello_world();
    hello.push((
        "rootfs/usr/local/lib/containers/hello-world/big",
        0o644,
        [pseudo_random(2 << 20, 7), vec![b'a'; 3 << 20]].concat(),
    ));
    std::fs::write(d.join("hello.tar"), common::tar_of(&hello)).unwrap();
    oci_layout(&d.join("intel"), &common::tar_of(&intel_ucode()), "amd64");
    let items = vec![
        format!("tarballPath: {}", d.join("hello.tar").display()),
        format!("ociPath: {}", d.join("intel").display()),
    ];
    // An installer base image: one layer with the installer binary.
    let base = common::tar_of(&[("usr/bin/installer", 0o755, b"#!/bin/sh\n".to_vec())]);
    oci_layout(&d.join("base"), &base, "amd64");
    let base_ref = format!("oci:{}:v1", d.join("base").display());

    // Every kind twice: on every core, and on one core with one squashfs thread.
    let build = |version: &str, kind: &str| {
        let p = profile(d, version, kind, &items);
        let mk = || {
            demo_build(&p)
                .no_console()
                .args(["--base-installer-image", &base_ref])
        };
        let built = mk().run();
        let single = mk().single_core().run();
        assert!(
            built.bytes() == single.bytes(),
            "{kind} {version}: the same bytes on one core and on all"
        );
        assert!(built.stderr.contains("initramfs ready"), "{}", built.stderr);
        built
    };
    let rebuilt: std::collections::HashMap<&str, Vec<u8>> = ["v1.9.2", "v1.10.0"]
        .iter()
        .map(|v| (*v, build(v, "initramfs").bytes()))
        .collect();
    let base_initramfs = std::fs::read(demo_dir().join("amd64/initramfs.xz")).unwrap();
    for r in rebuilt.values() {
        assert!(r.len() > base_initramfs.len() + (2 << 20));
        split(r, &base_initramfs);
    }
    let want = sha256(&rebuilt["v1.10.0"]);

    // The UKI, and the UKI inside the ISO, the disk image's ESP and the installer.
    let uki = build("v1.10.0", "uki");
    assert_eq!(ukify_initrd(&uki.artifact), want, "uki");
    let iso = build("v1.10.0", "iso");
    let from_iso = d.join("iso.efi");
    run_ok(
        Command::new(require_tool("xorriso"))
            .args(["-osirrox", "on", "-indev"])
            .arg(&iso.artifact)
            .args(["-extract", "/EFI/Linux/Talos-v1.10.0.efi"])
            .arg(&from_iso),
    );
    assert_eq!(ukify_initrd(&from_iso), want, "iso");
    // The plain ISO's BIOS path (isolinux: /boot/initramfs.xz) carries it too.
    let bios_initramfs = d.join("iso-initramfs.xz");
    run_ok(
        Command::new(require_tool("xorriso"))
            .args(["-osirrox", "on", "-indev"])
            .arg(&iso.artifact)
            .args(["-extract", "/boot/initramfs.xz"])
            .arg(&bios_initramfs),
    );
    assert_eq!(
        sha256(&std::fs::read(&bios_initramfs).unwrap()),
        want,
        "iso: BIOS /boot/initramfs.xz is the rebuilt initramfs"
    );
    let disk = build("v1.10.0", "image");
    let (at, len, _) = common::partition(&disk.artifact, 1, 512);
    let bytes = std::fs::read(&disk.artifact).unwrap();
    let esp = d.join("esp.img");
    std::fs::write(&esp, &bytes[at as usize..(at + len) as usize]).unwrap();
    let from_disk = d.join("disk.efi");
    common::fat::copy_out(&esp, "::/EFI/Linux/Talos-v1.10.0.efi", &from_disk);
    assert_eq!(ukify_initrd(&from_disk), want, "disk image");
    let installer = build("v1.10.0", "installer");
    let work = d.join("inst10");
    let efi = installer_file(&installer.artifact, &work, "usr/install/amd64/vmlinuz.efi");
    std::fs::write(work.join("vmlinuz.efi"), efi).unwrap();
    assert_eq!(
        ukify_initrd(&work.join("vmlinuz.efi")),
        want,
        "installer 1.10"
    );
    // Talos < 1.10 without SecureBoot: the installer carries the initramfs itself.
    let installer = build("v1.9.2", "installer");
    assert!(
        installer_file(
            &installer.artifact,
            &d.join("inst9"),
            "usr/install/amd64/initramfs.xz"
        ) == rebuilt["v1.9.2"],
        "installer 1.9: usr/install/amd64/initramfs.xz is the rebuilt initramfs"
    );
}

/// Panics unless the demo initramfs's `/init` mounts system extensions (a demo tree
/// from an older `scripts/demo-inputs` does not).
fn require_extension_aware_demo() {
    let xz = std::fs::read(demo_dir().join("amd64/initramfs.xz")).unwrap();
    let mut c = Command::new(require_tool("xz"))
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let feed = std::thread::spawn(move || stdin.write_all(&xz));
    let cpio = c.wait_with_output().unwrap().stdout;
    feed.join().unwrap().unwrap();
    let d = tempfile::tempdir().unwrap();
    cpio_extract(&cpio, d.path());
    let init = std::fs::read_to_string(d.path().join("init")).unwrap();
    assert!(
        init.contains("/extensions.yaml") && d.path().join("lib/modules/squashfs.ko").is_file(),
        "the demo initramfs in {} predates extension support: rebuild it with scripts/demo-inputs",
        demo_dir().display()
    );
}

#[test]
fn boot_secureboot_uki_with_a_service_and_a_firmware_extension() {
    boot_with_extensions(
        "v1.10.0",
        &[
            "extension-mounted: 0.sqsh",
            "extension-mounted: 1.sqsh",
            "extension-file: 0.sqsh /usr/local/share/imager-test/service-marker: IMAGER-EXT-SERVICE-OK",
            "firmware-file: /usr/lib/firmware/imager-test/fw-marker: IMAGER-EXT-FIRMWARE-OK",
        ],
    );
}

/// Before Talos 1.8: xz squashfs images in stored xz streams, then the xz stream with
/// `extensions.yaml` and `/lib/firmware` (which the test `/init` does not print; the
/// firmware extension's marker under `/usr/lib/firmware` stays in its image there).
#[test]
fn boot_secureboot_uki_with_xz_extensions_before_talos_1_8() {
    boot_with_extensions(
        "v1.7.6",
        &[
            "extension-mounted: 0.sqsh",
            "extension-mounted: 1.sqsh",
            "extension-file: 0.sqsh /usr/local/share/imager-test/service-marker: IMAGER-EXT-SERVICE-OK",
            "extension-file: 1.sqsh /usr/local/share/imager-test/in-image: IMAGER-EXT-IMAGE-OK",
        ],
    );
}

/// Boots a SecureBoot UKI of `version` with a service and a firmware extension under
/// enforced SecureBoot; the test `/init` reports what it finds (`want`, line by line).
fn boot_with_extensions(version: &str, want: &[&str]) {
    require_extension_aware_demo();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut service = hello_world();
    service.push((
        "rootfs/usr/local/share/imager-test/service-marker",
        0o644,
        b"IMAGER-EXT-SERVICE-OK\n".to_vec(),
    ));
    let firmware: Vec<Entry> = vec![
        (
            "manifest.yaml",
            0o644,
            manifest_yaml("test-firmware", "20250211", "Test firmware.", ">= v1.0.0"),
        ),
        (
            "rootfs/usr/lib/firmware/imager-test/fw-marker",
            0o644,
            b"IMAGER-EXT-FIRMWARE-OK\n".to_vec(),
        ),
        (
            "rootfs/lib/firmware/imager-test/fw-marker",
            0o644,
            b"IMAGER-EXT-FIRMWARE-OK\n".to_vec(),
        ),
        (
            "rootfs/usr/local/share/imager-test/in-image",
            0o644,
            b"IMAGER-EXT-IMAGE-OK\n".to_vec(),
        ),
    ];
    std::fs::write(d.join("service.tar"), common::tar_of(&service)).unwrap();
    oci_layout(&d.join("firmware"), &common::tar_of(&firmware), "amd64");
    let p = d.join("sb.yaml");
    std::fs::write(
        &p,
        format!(
            "baseProfileName: secureboot-metal-uki\narch: amd64\nversion: {version}\ninput:\n  systemExtensions:\n    - tarballPath: {}\n    - ociPath: {}\n",
            d.join("service.tar").display(),
            d.join("firmware").display()
        ),
    )
    .unwrap();
    let keys = common::gen_keys(d);
    let uki = demo_build(&p).keys(&keys).run();
    assert_eq!(uki.manifest["extensions"].as_array().unwrap().len(), 2);
    let esp = d.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::copy(&uki.artifact, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    let log = common::boot::boot(
        common::boot::Media::EspDir(esp),
        common::boot::SecureBoot::Enrolled(keys.join("uki-signing-cert.pem")),
        true,
        240,
    );
    log.assert_measured(1, &common::predicted_pcr11(&uki.manifest));
    let at = log.path.display();
    for line in want {
        assert!(
            log.text.lines().any(|l| l.trim() == *line),
            "{line:?} in the serial log {at}"
        );
    }
}

/// `unsquashfs -s` without the lines that name the image or its size, and without the
/// NFS export line (the squashfs writer writes no export table).
fn superblock_summary(image: &Path) -> Vec<String> {
    unsquashfs(&["-s"], image)
        .lines()
        .filter(|l| {
            !l.starts_with("Found a valid")
                && !l.starts_with("Filesystem size")
                && !l.contains("exportable via NFS")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn profiles_before_1_8_get_xz_squashfs_and_an_xz_cpio() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut hello = hello_world();
    hello.push((
        "rootfs/usr/local/lib/containers/hello-world/big",
        0o644,
        [pseudo_random(1 << 20, 9), vec![b'z'; 1 << 20]].concat(),
    ));
    std::fs::write(d.join("hello.tar"), common::tar_of(&hello)).unwrap();
    let p = profile(
        d,
        "v1.7.6",
        "initramfs",
        &[format!("tarballPath: {}", d.join("hello.tar").display())],
    );
    let built = demo_build(&p).no_console().run();
    let single = demo_build(&p).no_console().single_core().run();
    assert!(
        built.bytes() == single.bytes(),
        "the same bytes on one core"
    );

    // [base initramfs] + [xz stream of the cpio]: xz checks it (CRC32, as the kernel needs).
    let base = std::fs::read(demo_dir().join("amd64/initramfs.xz")).unwrap();
    let (early, tail) = split(&built.bytes(), &base);
    assert!(early.is_empty(), "no microcode, no early cpio");
    let xz = d.join("tail.xz");
    std::fs::write(&xz, &tail).unwrap();
    run_ok(Command::new(require_tool("xz")).arg("-t").arg(&xz));
    let info = run_ok(Command::new(require_tool("xz")).args(["-lvv"]).arg(&xz));
    assert!(info.contains("CRC32"), "{info}");
    let cpio = run_ok_bytes(Command::new(require_tool("xz")).arg("-dc").arg(&xz));
    // Streams, as `xz -lvv` lists them: 0.sqsh stored in one, the rest in another; each
    // decodes alone (the kernel's unxz takes one stream per call) and ends between
    // two cpio entries.
    let bounds = cpio_boundaries(&cpio);
    let rows: Vec<Vec<String>> = info
        .lines()
        .skip_while(|l| l.trim() != "Streams:")
        .skip(2)
        .take_while(|l| !l.trim_start().starts_with("Blocks:"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{info}");
    for (i, r) in rows.iter().enumerate() {
        let n = |k: usize| r[k].parse::<usize>().unwrap();
        let (comp, uncomp, comp_len, uncomp_len) = (n(2), n(3), n(4), n(5));
        assert_eq!(r[7], "CRC32", "{info}");
        let piece = d.join(format!("stream{i}.xz"));
        std::fs::write(&piece, &tail[comp..comp + comp_len]).unwrap();
        let plain = run_ok_bytes(Command::new(require_tool("xz")).arg("-dc").arg(&piece));
        assert!(plain[..] == cpio[uncomp..uncomp + uncomp_len], "stream {i}");
        for at in [uncomp, uncomp + uncomp_len] {
            assert!(bounds.iter().any(|b| b.0 == at as u64), "stream {i}: {at}");
        }
    }
    assert_eq!(bounds[0].1, "0.sqsh");
    assert_eq!(
        bounds[1].0,
        n_bytes(&rows[0][5]),
        "0.sqsh is the first stream"
    );
    let x = d.join("x");
    cpio_extract(&cpio, &x);
    assert!(x.join("extensions.yaml").is_file());
    let gnu = gnu_cpio_of(&cpio, &x);
    assert!(
        gnu == cpio,
        "GNU cpio's archive of the extracted tree, byte for byte"
    );

    // The squashfs beside mksquashfs 4.5.1's `-comp xz -Xdict-size 100%` image.
    let work = d.join("ref");
    let root = work.join("tree");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(work.join("f.tar"), common::tar_of(&hello)).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-mxf")
            .arg(work.join("f.tar")),
    );
    let reference = work.join("ref.sqsh");
    run_ok(&mut common::talos_mksquashfs(
        require_tool("mksquashfs"),
        &root.join("rootfs"),
        &reference,
        common::TalosSquashfs::Xz,
    ));
    let ours = x.join("0.sqsh");
    let summary = superblock_summary(&ours);
    assert!(
        summary.contains(&"Compression xz".to_string()),
        "{summary:?}"
    );
    assert_eq!(summary, superblock_summary(&reference));
    let strip = |s: String, img: &Path| s.replace(&img.display().to_string(), "IMG");
    assert_eq!(
        strip(unsquashfs(&["-lln"], &ours), &ours),
        strip(unsquashfs(&["-lln"], &reference), &reference)
    );
    let (a, b) = (work.join("ours"), work.join("theirs"));
    unsquashfs(&["-q", "-n", "-d", a.to_str().unwrap()], &ours);
    unsquashfs(&["-q", "-n", "-d", b.to_str().unwrap()], &reference);
    run_ok(Command::new("diff").arg("-r").arg(&a).arg(&b));
    // Within a few percent of mksquashfs's size (same xz settings per block).
    let (n, m) = (
        std::fs::metadata(&ours).unwrap().len() as f64,
        std::fs::metadata(&reference).unwrap().len() as f64,
    );
    assert!((n / m - 1.0).abs() < 0.05, "{n} vs {m}");
}

fn n_bytes(s: &str) -> u64 {
    s.parse().unwrap()
}

/// `cmd` as one shell word list, for `script -c`.
fn shell_line(cmd: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    words.insert(0, "env".into());
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

#[test]
fn progress_bars_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut hello = hello_world();
    hello.push((
        "rootfs/usr/local/lib/containers/hello-world/big",
        0o644,
        pseudo_random(4 << 20, 11),
    ));
    oci_layout(&d.join("hello"), &common::tar_of(&hello), "amd64");
    let reg = registry(d);
    let r = format!("127.0.0.1:{}/siderolabs/hello:v1", reg.1);
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", d.join("hello").display()))
            .arg(format!("docker://{r}")),
    );
    let p = profile(
        d,
        "v1.10.0",
        "initramfs",
        &[format!("{{imageRef: \"{r}\", forceInsecure: true}}")],
    );

    // stderr a pipe: the plain lines, no bar, no terminal control.
    let built = demo_build(&p)
        .no_console()
        .env("XDG_CACHE_HOME", d.join("cache1"))
        .run();
    assert!(
        !built.stderr.contains('\r') && !built.stderr.contains('\x1b'),
        "{:?}",
        built.stderr
    );
    let steps: Vec<&str> = built
        .stderr
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .collect();
    assert!(
        steps.contains(&format!("    pulling {r}...").as_str()),
        "{steps:?}"
    );
    assert!(
        steps.contains(&"    compressing system extensions"),
        "{steps:?}"
    );
    assert!(
        !built.stderr.contains("compressing 0.sqsh"),
        "{}",
        built.stderr
    );

    // stderr a terminal (script(1) gives the build a pty): the bars are drawn.
    let out = d.join("tty-out");
    let cmd = demo_build(&p)
        .no_console()
        .env("XDG_CACHE_HOME", d.join("cache2"))
        .out(&out)
        .command();
    let typescript =
        run_ok(Command::new(require_tool("script")).args(["-qec", &shell_line(&cmd), "/dev/null"]));
    assert!(typescript.contains("compressing 0.sqsh"), "{typescript:?}");
    assert!(typescript.contains("pulling "), "{typescript:?}");
    assert!(typescript.contains("initramfs ready"), "{typescript:?}");
    // The same artifact either way.
    let tty_built = common::build::Built::in_dir(&out, typescript.clone());
    assert!(tty_built.bytes() == built.bytes());
    drop(reg);
}

/// A Talos-shaped base initramfs: zstd of a newc cpio holding `init` and `rootfs.sqsh`
/// (an xz squashfs image) whose `<mdir>/<kver>/` (`usr/lib/modules`, or `lib/modules`
/// before 1.10) is the demo module tree plus a stale `modules.dep`; and an install dir
/// with it beside the demo inputs. The image is zstd level 18 as Talos 1.10 makes it for
/// `usr/lib/modules`, xz for `lib/modules`.
fn module_base(d: &Path, mdir: &str) -> (PathBuf, String) {
    let comp: &[&str] = if mdir == "usr/lib/modules" {
        &["-comp", "zstd", "-Xcompression-level", "18"]
    } else {
        &["-comp", "xz"]
    };
    let (mods, kver) = demo_modules();
    let root = d.join("base-rootfs");
    std::fs::create_dir_all(root.join(mdir)).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/init"), b"#!/bin/sh\n").unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(mods.join(&kver))
            .arg(root.join(mdir)),
    );
    std::fs::write(root.join(mdir).join(&kver).join("modules.dep"), b"stale\n").unwrap();
    let cpio_dir = d.join("base-cpio");
    std::fs::create_dir_all(&cpio_dir).unwrap();
    run_ok(
        Command::new(require_tool("mksquashfs"))
            .arg(&root)
            .arg(cpio_dir.join("rootfs.sqsh"))
            .args(["-all-root", "-noappend", "-no-progress"])
            .args(comp),
    );
    std::fs::write(cpio_dir.join("init"), b"#!/bin/sh\n").unwrap();
    let mut c = Command::new(require_tool("cpio"))
        .args(["-o", "-H", "newc", "--quiet", "-R", "+0:+0"])
        .current_dir(&cpio_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b".\ninit\nrootfs.sqsh\n")
        .unwrap();
    let cpio = c.wait_with_output().unwrap();
    assert!(cpio.status.success());
    let install = d.join("install");
    std::fs::create_dir_all(install.join("amd64")).unwrap();
    for f in ["vmlinuz", "systemd-stub.efi", "systemd-boot.efi"] {
        std::os::unix::fs::symlink(
            demo_dir().join("amd64").join(f),
            install.join("amd64").join(f),
        )
        .unwrap();
    }
    let z = zstd::encode_all(&cpio.stdout[..], 19).unwrap();
    std::fs::write(install.join("amd64/initramfs.xz"), z).unwrap();
    (install, kver)
}

/// A gasket-driver-shaped module extension: `extras/*.ko` (dm-snapshot, dm-bufio, and
/// nbd shadowing the in-tree one) with the kernel's modules.order, modules.builtin and
/// modules.builtin.modinfo, for release `kver`.
fn module_extension(kver: &str, mdir: &str) -> Vec<Entry> {
    let (mods, base_kver) = demo_modules();
    let mut e: Vec<Entry> = vec![(
        "manifest.yaml",
        0o644,
        manifest_yaml(
            "gasket-driver",
            "20240916-v1.10.0",
            "[extra] This system extension provides gasket-driver kernel modules.",
            ">= v1.2.0",
        ),
    )];
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let data = std::fs::read(mods.join(&base_kver).join(f)).unwrap();
        e.push((leak(format!("rootfs/{mdir}/{kver}/{f}")), 0o644, data));
    }
    let extra = mods.parent().unwrap().join("modules-extra");
    let mut names: Vec<String> = std::fs::read_dir(&extra)
        .unwrap()
        .map(|x| x.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for n in names {
        let data = std::fs::read(extra.join(&n)).unwrap();
        e.push((
            leak(format!("rootfs/{mdir}/{kver}/extras/{n}")),
            0o644,
            data,
        ));
    }
    e
}

/// What modules.dep.sqsh must hold: kmod 34.2's depmod over the merged tree, as
/// mksquashfs lays it out with the Talos flags.
fn reference_modules_layer(d: &Path, kver: &str, mdir: &str, ext: &[Entry]) -> PathBuf {
    let (mods, _) = demo_modules();
    let merged = d.join("ref-merged/lib/modules");
    std::fs::create_dir_all(&merged).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(mods.join(kver))
            .arg(&merged),
    );
    let tree = merged.join(kver);
    for (p, _, data) in ext {
        if let Some(rel) = p.strip_prefix(&format!("rootfs/{mdir}/{kver}/")) {
            let to = tree.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, data).unwrap();
        }
    }
    let conf = d.join("ref-depmod.conf");
    std::fs::write(&conf, "search extras built-in\n").unwrap();
    let kmod =
        std::env::var_os("KMOD34_DEPMOD").unwrap_or_else(|| "/opt/kmod-34/bin/depmod".into());
    run_ok(
        Command::new(&kmod)
            .arg("--all")
            .arg("--basedir")
            .arg(d.join("ref-merged"))
            .arg("--config")
            .arg(&conf)
            .arg(kver),
    );
    let layer = d.join("ref-layer");
    let dest = layer.join(mdir).join(kver);
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(&tree).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().into_string().unwrap();
        if n.starts_with("modules.") && e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dest.join(&n)).unwrap();
            std::fs::set_permissions(
                dest.join(&n),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
        }
    }
    let out = d.join("ref-modules.dep.sqsh");
    run_ok(&mut common::talos_mksquashfs(
        require_tool("mksquashfs"),
        &layer,
        &out,
        common::TalosSquashfs::Zstd18,
    ));
    out
}

#[test]
fn module_extension_gets_a_modules_dep_layer_as_kmod_34_writes_it() {
    module_layer_case("v1.10.0", "usr/lib/modules");
}

/// Talos < 1.10: modules (and firmware) under /lib.
#[test]
fn module_extension_before_talos_1_10_uses_lib_modules() {
    module_layer_case("v1.9.0", "lib/modules");
}

fn module_layer_case(version: &str, mdir: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (install, kver) = module_base(d, mdir);
    let ext = module_extension(&kver, mdir);
    oci_layout(&d.join("gasket"), &common::tar_of(&ext), "amd64");
    std::fs::write(d.join("hello.tar"), common::tar_of(&hello_world())).unwrap();
    let items = vec![
        format!("ociPath: {}", d.join("gasket").display()),
        format!("tarballPath: {}", d.join("hello.tar").display()),
    ];
    let p = profile(d, version, "initramfs", &items);
    let built = demo_build(&p).install_dir(&install).no_console().run();
    // Pinned to one CPU (what a one-CPU cpuset gives): the base's module tree is read
    // whole and the bytes are the same.
    let pinned = demo_build(&p)
        .install_dir(&install)
        .no_console()
        .single_core()
        .run();
    assert!(
        std::fs::read(&built.artifact).unwrap() == std::fs::read(&pinned.artifact).unwrap(),
        "the same bytes on one core and on all"
    );
    for line in [
        "    preparing to run depmod to generate kernel modules dependency tree",
        "    running depmod to generate kernel modules dependency tree",
        "initramfs ready",
    ] {
        assert!(
            built.stderr.lines().any(|l| l == line),
            "{line:?} in:\n{}",
            built.stderr
        );
    }
    // In Talos's order: validation, then depmod, then compression.
    let at = |line: &str| {
        built
            .stderr
            .lines()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line:?} in:\n{}", built.stderr))
    };
    assert!(
        at("    validating system extensions")
            < at("    preparing to run depmod to generate kernel modules dependency tree")
    );
    assert!(
        at("    running depmod to generate kernel modules dependency tree")
            < at("    compressing system extensions")
    );
    // The manifest lists the real extensions, not the synthetic layer.
    let names: Vec<&str> = built.manifest["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gasket-driver", "hello-world-service"]);
    let rebuilt = std::fs::read(&built.artifact).unwrap();
    let base = std::fs::read(install.join("amd64/initramfs.xz")).unwrap();
    let (early, tail) = split(&rebuilt, &base);
    assert!(early.is_empty(), "no microcode, no early cpio");
    let zst = d.join("tail.zst");
    std::fs::write(&zst, &tail).unwrap();
    let cpio = run_ok_bytes(Command::new(require_tool("zstd")).arg("-dcq").arg(&zst));
    let names: Vec<String> = cpio_fields(&cpio_list(&cpio))
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["0.sqsh", "1.sqsh", "extensions.yaml", "modules.dep.sqsh"]
    );
    let cx = d.join("compressed");
    cpio_extract(&cpio, &cx);

    // extensions.yaml: the synthetic layer last, named by the base kernel's release.
    let yaml = std::fs::read_to_string(cx.join("extensions.yaml")).unwrap();
    let want_tail = format!(
        "    - image: modules.dep.sqsh
      metadata:
        name: modules.dep
        version: {kver}
        author: Talos Machinery
        description: Combined modules.dep for all extensions
        compatibility:
            talos:
                version: \"\"
"
    );
    assert!(yaml.ends_with(&want_tail), "{yaml}");
    assert!(
        yaml.starts_with(
            "layers:\n    - image: 0.sqsh\n      metadata:\n        name: gasket-driver\n"
        ),
        "{yaml}"
    );

    // modules.dep.sqsh beside mksquashfs's image of kmod 34.2's output: same listing,
    // same bytes in every file.
    let ours = cx.join("modules.dep.sqsh");
    let reference = reference_modules_layer(d, &kver, mdir, &ext);
    let strip = |s: String, img: &Path| s.replace(&img.display().to_string(), "IMG");
    let listing = strip(unsquashfs(&["-lln"], &ours), &ours);
    assert_eq!(
        listing,
        strip(unsquashfs(&["-lln"], &reference), &reference)
    );
    for f in [
        "modules.alias",
        "modules.alias.bin",
        "modules.builtin",
        "modules.builtin.alias.bin",
        "modules.builtin.bin",
        "modules.builtin.modinfo",
        "modules.dep",
        "modules.dep.bin",
        "modules.devname",
        "modules.order",
        "modules.softdep",
        "modules.symbols",
        "modules.symbols.bin",
        "modules.weakdep",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!("squashfs-root/{mdir}/{kver}/{f}"))),
            "{f} in\n{listing}"
        );
    }
    assert!(
        !listing.contains(".ko"),
        "the .ko files stay in the extension's image"
    );
    let (a, b) = (d.join("layer-ours"), d.join("layer-kmod"));
    unsquashfs(&["-q", "-n", "-d", a.to_str().unwrap()], &ours);
    unsquashfs(&["-q", "-n", "-d", b.to_str().unwrap()], &reference);
    run_ok(Command::new("diff").arg("-r").arg(&a).arg(&b));
    let dep = std::fs::read_to_string(a.join(mdir).join(&kver).join("modules.dep")).unwrap();
    assert!(dep.lines().any(|l| l == "extras/nbd.ko:"), "{dep}");
    assert!(
        dep.contains("extras/dm-snapshot.ko: extras/dm-bufio.ko kernel/drivers/md/dm-mod.ko"),
        "{dep}"
    );
    let sb = unsquashfs(&["-s"], &ours);
    assert!(
        sb.contains("Compression zstd") && sb.contains("compression-level 18"),
        "{sb}"
    );

    // The extension's own image keeps its .ko files.
    let ext_list = unsquashfs(&["-lln"], &cx.join("0.sqsh"));
    assert!(
        ext_list.contains(&format!("/{mdir}/{kver}/extras/nbd.ko")),
        "{ext_list}"
    );
}

/// One failing module build with `install`: one `error:` line containing every `want`.
fn modules_refused(d: &Path, install: &Path, fixture: &[Entry], want: &[&str]) {
    let tar = d.join("mods.tar");
    std::fs::write(&tar, common::tar_of(fixture)).unwrap();
    let p = profile(
        d,
        "v1.10.0",
        "initramfs",
        &[format!("tarballPath: {}", tar.display())],
    );
    demo_build(&p)
        .install_dir(install)
        .no_console()
        .run_err()
        .refused(want, "module build");
}

#[test]
fn module_extension_for_another_kernel_or_a_corrupt_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (install, kver) = module_base(d, "usr/lib/modules");
    // Built for another kernel release: both releases named.
    modules_refused(
        d,
        &install,
        &module_extension("6.12.25-talos", "usr/lib/modules"),
        &["gasket-driver", "6.12.25-talos", &kver],
    );
    // Corrupt base initramfs: not compressed at all, then a zstd frame of garbage,
    // then a cpio whose rootfs.sqsh is not a squashfs image.
    let ext = module_extension(&kver, "usr/lib/modules");
    let initramfs = install.join("amd64/initramfs.xz");
    std::fs::write(&initramfs, b"this is not an initramfs").unwrap();
    modules_refused(
        d,
        &install,
        &ext,
        &["base initramfs", "neither xz nor zstd"],
    );
    std::fs::write(
        &initramfs,
        zstd::encode_all(&b"garbage garbage garbage"[..], 3).unwrap(),
    )
    .unwrap();
    modules_refused(
        d,
        &install,
        &ext,
        &["base initramfs", "not a newc cpio archive"],
    );
    let cpio_dir = d.join("bad-cpio");
    std::fs::create_dir_all(&cpio_dir).unwrap();
    std::fs::write(cpio_dir.join("rootfs.sqsh"), b"hsqs but not really").unwrap();
    let mut c = Command::new(require_tool("cpio"))
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&cpio_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"rootfs.sqsh\n").unwrap();
    let out = c.wait_with_output().unwrap();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&out.stdout).unwrap();
    std::fs::write(&initramfs, xz.finish().unwrap()).unwrap();
    modules_refused(
        d,
        &install,
        &ext,
        &[
            "base initramfs",
            "rootfs.sqsh",
            "not a readable squashfs image",
        ],
    );
}

/// One generated `extensions.yaml` input: up to three layers whose every string is made
/// of scalars go-yaml treats specially (numbers, booleans, indicators, breaks, escapes).
fn random_layers(r: &mut common::goyaml::Rng) -> Vec<(String, Metadata)> {
    use common::goyaml::random_string;
    (0..1 + r.below(3))
        .map(|i| {
            let image = match r.below(3) {
                0 => random_string(r),
                _ => format!("{i}.sqsh"),
            };
            let m = Metadata {
                name: random_string(r),
                version: random_string(r),
                author: random_string(r),
                description: random_string(r),
                compatibility: Compatibility {
                    talos: TalosCompat {
                        version: random_string(r),
                    },
                },
                extra_info: if r.below(2) == 0 {
                    String::new()
                } else {
                    random_string(r)
                },
            };
            (image, m)
        })
        .collect()
}

/// `extensions.yaml` is byte for byte what go-yaml v3 (the Talos imager's encoder)
/// writes for the same `Config`: the spec's example and the manifests of this file's
/// fixtures, then a few thousand generated ones.
#[test]
fn extensions_yaml_matches_go_yaml() {
    let meta =
        |name: &str, version: &str, author: &str, desc: &str, c: &str, extra: &str| Metadata {
            name: name.into(),
            version: version.into(),
            author: author.into(),
            description: desc.into(),
            compatibility: Compatibility {
                talos: TalosCompat { version: c.into() },
            },
            extra_info: extra.into(),
        };
    let mut configs = vec![
        vec![
            (
                "0.sqsh".to_string(),
                meta(
                    "intel-ucode",
                    "20250211",
                    "Sidero Labs",
                    "[core] This system extension provides Intel microcode binaries.\n",
                    ">= v1.0.0",
                    "",
                ),
            ),
            (
                "modules.dep.sqsh".to_string(),
                meta(
                    "modules.dep",
                    "6.12.9-talos",
                    "Talos Machinery",
                    "Combined modules.dep for all extensions",
                    "",
                    "",
                ),
            ),
        ],
        vec![(
            "0.sqsh".to_string(),
            meta(
                "schematic",
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
                "Image Factory (https://factory.talos.dev)",
                "",
                "",
                "customization:\n    extraKernelArgs:\n        - console=ttyS0\n",
            ),
        )],
        vec![],
    ];
    let mut r = common::goyaml::Rng(0x5eed_e87e_0000_0001);
    configs.extend((0..3000).map(|_| random_layers(&mut r)));
    let bodies: Vec<Vec<u8>> = configs
        .iter()
        .map(|layers| {
            let layers: Vec<_> = layers
                .iter()
                .map(|(image, m)| {
                    serde_json::json!({
                        "image": image,
                        "metadata": {
                            "name": m.name,
                            "version": m.version,
                            "author": m.author,
                            "description": m.description,
                            "compatibility": {"talos": {"version": m.compatibility.talos.version}},
                            "extraInfo": m.extra_info,
                        },
                    })
                })
                .collect();
            serde_json::to_vec(&serde_json::json!({ "layers": layers })).unwrap()
        })
        .collect();
    let want = common::goyaml::oracle("extensions", &bodies);
    assert_eq!(
        want[0].as_deref(),
        Ok(&*format!("layers:\n{}", EXPECTED_SPEC_TAIL)),
        "the oracle writes the spec's example"
    );
    for (layers, want) in configs.iter().zip(want) {
        let want = want.unwrap_or_else(|e| panic!("go-yaml refuses {layers:?}: {e}"));
        let got = extensions_yaml(
            &layers
                .iter()
                .map(|(image, m)| manifest::Layer {
                    image: image.clone(),
                    metadata: m,
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(got, want, "extensions.yaml differs for {layers:?}");
    }
}

/// The spec's `extensions.yaml` example after its `layers:` line
/// (`/work/shared/spec/extensions.md` §3).
const EXPECTED_SPEC_TAIL: &str = "    - image: 0.sqsh
      metadata:
        name: intel-ucode
        version: \"20250211\"
        author: Sidero Labs
        description: |
            [core] This system extension provides Intel microcode binaries.
        compatibility:
            talos:
                version: '>= v1.0.0'
    - image: modules.dep.sqsh
      metadata:
        name: modules.dep
        version: 6.12.9-talos
        author: Talos Machinery
        description: Combined modules.dep for all extensions
        compatibility:
            talos:
                version: \"\"
";
/// SELinux labels of extension files (PAX `SCHILY.xattr.security.selinux`): dropped
/// before Talos 1.12; from 1.12 on in the squashfs exactly as mksquashfs 4.6.1 (Debian
/// 13, zstd 1.5.7, `tests/extensions/squashfs-tools-461`) stores them from Talos
/// v1.13's `-xattrs-exclude .* -p "PATH x security.selinux=LABEL"`, byte for byte;
/// `unsquashfs` extracts the label where it was.
#[test]
fn selinux_labels_reach_the_squashfs_from_talos_1_12() {
    const LABEL: &str = "system_u:object_r:system_state_t:s0";
    const LABELLED: &str = "usr/local/etc/containers/hello-world.yaml";
    let mksquashfs_461 = std::env::var_os("MKSQUASHFS461")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/squashfs-tools-4.6.1/bin/mksquashfs".into());
    assert!(
        mksquashfs_461.is_file(),
        "{} missing: run tests/extensions/squashfs-tools-461",
        mksquashfs_461.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The hello-world fixture with a label on its service file.
    let plain = common::tar_of(&hello_world());
    let mut b = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(&plain[..]).entries().unwrap() {
        let mut e = entry.unwrap();
        let path = e.path().unwrap().into_owned();
        if path == Path::new("rootfs").join(LABELLED) {
            b.append_pax_extensions([("SCHILY.xattr.security.selinux", LABEL.as_bytes())])
                .unwrap();
        }
        let mut h = e.header().clone();
        b.append_data(&mut h, &path, &mut e).unwrap();
    }
    let tar = d.join("hello.tar");
    std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
    let tree = d.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-mxf")
            .arg(&tar),
    );

    for (version, labelled) in [("v1.11.0", false), ("v1.13.0", true)] {
        let p = d.join(format!("{version}.yaml"));
        std::fs::write(
            &p,
            format!(
                "baseProfileName: metal\narch: amd64\nversion: {version}\noutput:\n  kind: initramfs\n  outFormat: raw\ninput:\n  systemExtensions:\n    - tarballPath: {}\n",
                tar.display()
            ),
        )
        .unwrap();
        let built = demo_build(&p).no_console().run();
        let x = d.join(version);
        extract_tail(&built.bytes(), &x);
        let ours = x.join("0.sqsh");
        let reference = d.join(format!("{version}.sqsh"));
        let mut cmd = common::talos_mksquashfs(
            &mksquashfs_461,
            &tree.join("rootfs"),
            &reference,
            common::TalosSquashfs::Zstd18,
        );
        if labelled {
            cmd.args(["-xattrs-exclude", ".*", "-p"])
                .arg(format!("{LABELLED} x security.selinux={LABEL}"));
        }
        run_ok(&mut cmd);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&reference).unwrap(),
            "{version}: 0.sqsh is not mksquashfs 4.6.1's image"
        );
        let sb = unsquashfs(&["-s"], &ours);
        let ids = if labelled { 1 } else { 0 };
        assert!(
            sb.contains(&format!("Number of xattr ids {ids}")),
            "{version}: {sb}"
        );
        if labelled {
            let out = d.join(format!("{version}-x"));
            unsquashfs(&["-q", "-n", "-d", out.to_str().unwrap()], &ours);
            let got = run_ok(
                Command::new(require_tool("getfattr"))
                    .args(["--only-values", "-n", "security.selinux"])
                    .arg(out.join(LABELLED)),
            );
            assert_eq!(got, LABEL);
        }
    }

    // The embedded machine configuration's virtual extension labels config.yaml.
    let config = d.join("config.yaml");
    std::fs::write(&config, MACHINE_CONFIG).unwrap();
    let p = d.join("embedded.yaml");
    std::fs::write(
        &p,
        "baseProfileName: metal\narch: amd64\nversion: v1.13.0\noutput:\n  kind: initramfs\n  outFormat: raw\n",
    )
    .unwrap();
    let built = demo_build(&p)
        .no_console()
        .arg("--embedded-config-path")
        .arg(&config)
        .run();
    let x = d.join("embedded");
    extract_tail(&built.bytes(), &x);
    let tree = d.join("embedded-tree");
    std::fs::create_dir_all(tree.join("usr/local/etc/talos")).unwrap();
    std::fs::write(tree.join("usr/local/etc/talos/config.yaml"), MACHINE_CONFIG).unwrap();
    run_ok(
        Command::new("chmod")
            .arg("0400")
            .arg(tree.join("usr/local/etc/talos/config.yaml")),
    );
    let reference = d.join("embedded.sqsh");
    run_ok(
        common::talos_mksquashfs(
            &mksquashfs_461,
            &tree,
            &reference,
            common::TalosSquashfs::Zstd18,
        )
        .args(["-xattrs-exclude", ".*", "-p"])
        .arg(format!(
            "usr/local/etc/talos/config.yaml x security.selinux={LABEL}"
        )),
    );
    assert!(
        std::fs::read(x.join("0.sqsh")).unwrap() == std::fs::read(&reference).unwrap(),
        "the embedded configuration's 0.sqsh is not mksquashfs 4.6.1's image"
    );
}

/// `built` (a v1.10.0 initramfs with one pulled extension) is byte for byte the
/// initramfs built from the extension's OCI layout `layout`.
fn assert_built_as_from_layout(built: &common::build::Built, layout: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let from_layout = profile(
        dir.path(),
        "v1.10.0",
        "initramfs",
        &[format!("ociPath: {}", layout.display())],
    );
    let expected = demo_build(&from_layout).no_console().run();
    assert!(
        std::fs::read(&built.artifact).unwrap() == std::fs::read(&expected.artifact).unwrap(),
        "the pulled extension builds the same initramfs as its layout"
    );
}

/// An extension in a registry behind an internal CA: refused with one line naming the
/// certificate problem until `SSL_CERT_FILE` names the CA, then pulled over HTTPS and
/// built into the same bytes as from its OCI layout; a bad `SSL_CERT_FILE` is one line
/// naming the file.
#[test]
fn extension_from_an_https_registry_behind_an_internal_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    oci_layout(&d.join("amd"), &common::tar_of(&amd_ucode()), "amd64");
    let (reg, ca) = common::registry::registry_with_tls(d);
    let r = format!("127.0.0.1:{}/siderolabs/amd-ucode:20250211", reg.1);
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", d.join("amd").display()))
            .arg(format!("docker://{r}")),
    );
    let cache = d.join("cache");
    let pulled = profile(d, "v1.10.0", "initramfs", &[format!("imageRef: \"{r}\"")]);
    let build = || {
        demo_build(&pulled)
            .env("XDG_CACHE_HOME", &cache)
            .env("SSL_CERT_DIR", d.join("no-such-dir"))
    };

    refused_build(
        build().env("SSL_CERT_FILE", ""),
        "invalid peer certificate: UnknownIssuer (a registry behind an internal CA: set SSL_CERT_FILE",
    );
    let not_pem = d.join("not-a-ca.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    refused_build(
        build().env("SSL_CERT_FILE", &not_pem),
        "not-a-ca.pem: holds no PEM certificate",
    );

    let built = build().env("SSL_CERT_FILE", &ca).no_console().run();
    assert_built_as_from_layout(&built, &d.join("amd"));
    drop(reg);
}

/// An extension in a registry that asks for a password (htpasswd), the password coming
/// from a docker credential helper that `DOCKER_CONFIG/config.json` names for the host
/// (`credHelpers`), as ECR or GCR users have it: pulled and built as from its layout; a
/// helper that fails is one line naming it.
#[test]
fn extension_from_a_registry_with_a_credential_helper() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    oci_layout(&d.join("amd"), &common::tar_of(&amd_ucode()), "amd64");
    let (user, password) = ("robot", "h3lper-pass");
    let reg = common::registry::registry_with_htpasswd(d, user, password);
    let host = format!("127.0.0.1:{}", reg.1);
    let r = format!("{host}/siderolabs/amd-ucode:20250211");
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds"])
            .arg(format!("{user}:{password}"))
            .arg(format!("oci:{}:v1", d.join("amd").display()))
            .arg(format!("docker://{r}")),
    );
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = |name: &str, body: &str| {
        let p = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\nread -r server || true\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    helper(
        "imager-test",
        &format!(
            r#"[ "$1" = get ] && [ "$server" = {host} ] || exit 3
printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}' "$server""#
        ),
    );
    helper("broken", "echo 'token service unreachable' >&2; exit 1");
    let docker = |helper: &str| {
        let dir = d.join(format!("docker-{helper}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"credHelpers": {{"{host}": "{helper}"}}, "auths": {{}}}}"#),
        )
        .unwrap();
        dir
    };
    let p = profile(
        d,
        "v1.10.0",
        "initramfs",
        &[format!("{{imageRef: \"{r}\", forceInsecure: true}}")],
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let build = |helper: &str| {
        demo_build(&p)
            .env("XDG_CACHE_HOME", d.join("cache"))
            .env("PATH", &path)
            .env("HOME", d)
            .env("REGISTRY_AUTH_FILE", "")
            .env("XDG_RUNTIME_DIR", "")
            .env("DOCKER_CONFIG", docker(helper))
    };
    refused_build(
        build("broken"),
        "credential helper docker-credential-broken: failed (exit status: 1)",
    );
    let built = build("imager-test").no_console().run();
    assert_built_as_from_layout(&built, &d.join("amd"));
    assert!(
        !built.stderr.contains(password),
        "the password is never printed"
    );
    drop(reg);
}

/// An arm64 initramfs with an extension from a two-arch layout: the arm64 image is the one
/// taken (its own file is in the squashfs, the amd64 image's is not), the arm64 base
/// initramfs stays byte for byte, and one core gives the same bytes.
#[test]
fn arm64_initramfs_takes_the_arm64_image_of_a_two_arch_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let layout = d.join("multi");
    let tars: Vec<(&str, Vec<u8>)> = [
        (
            "amd64",
            "rootfs/usr/local/lib/containers/hello-world/amd64-only",
        ),
        (
            "arm64",
            "rootfs/usr/local/lib/containers/hello-world/arm64-only",
        ),
    ]
    .into_iter()
    .map(|(arch, only)| {
        let mut f = hello_world();
        f.push((only, 0o644, arch.as_bytes().to_vec()));
        (arch, common::tar_of(&f))
    })
    .collect();
    let images: Vec<common::oci::Image> = tars
        .iter()
        .map(|(arch, tar)| common::oci::Image {
            arch,
            layers: vec![(tar.as_slice(), Layer::Gzip)],
            config: serde_json::json!({}),
        })
        .collect();
    common::oci::layout(&layout, &images, "v1");
    let p = d.join("arm64.yaml");
    std::fs::write(
        &p,
        format!(
            "baseProfileName: metal\narch: arm64\nversion: v1.10.0\noutput:\n  kind: initramfs\n  outFormat: raw\ninput:\n  systemExtensions:\n    - ociPath: {}\n",
            layout.display()
        ),
    )
    .unwrap();
    let built = demo_build(&p).arch("arm64").no_console().run();
    let single = demo_build(&p)
        .arch("arm64")
        .no_console()
        .single_core()
        .run();
    assert!(
        built.bytes() == single.bytes(),
        "the same bytes on one core"
    );

    let base = std::fs::read(demo_dir().join("arm64/initramfs.xz")).unwrap();
    let (early, tail) = split(&built.bytes(), &base);
    assert!(early.is_empty(), "no microcode cpio on arm64");
    let zst = d.join("tail.zst");
    std::fs::write(&zst, &tail).unwrap();
    let cpio = run_ok_bytes(Command::new(require_tool("zstd")).arg("-dcq").arg(&zst));
    let x = d.join("x");
    cpio_extract(&cpio, &x);
    let listing = unsquashfs(&["-lln"], &x.join("0.sqsh"));
    assert!(
        listing.contains("hello-world/arm64-only") && !listing.contains("amd64-only"),
        "{listing}"
    );
    assert_eq!(
        built.manifest["extensions"][0]["name"], "hello-world-service",
        "{}",
        built.manifest
    );
}
