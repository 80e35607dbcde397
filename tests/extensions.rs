//! System extensions: the rebuilt initramfs judged by GNU cpio, zstd and squashfs-tools
//! (`unsquashfs` listings beside `mksquashfs` 4.5.1's image of the same rootfs with
//! the Talos flags), from a plain tarball, an OCI layout and a loopback registry; and
//! the bad inputs, each one `error:` line with nothing left behind.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::registry::registry;
use common::{demo_build, demo_dir, entries, require_tool, run_ok};
use sha2::Digest;

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

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A plain tar of the entries, with their directories (0755).
fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (p, _, _) in entries {
        let mut d = Path::new(p).parent();
        while let Some(x) = d.filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(x.to_path_buf());
            d = x.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, format!("{}/", d.display()), &[][..])
            .unwrap();
    }
    for (p, mode, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// An OCI image layout of one gzip'd layer for `linux/<arch>`.
fn oci_layout(dir: &Path, layer_tar: &[u8], arch: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha256(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(layer_tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]}, "config": {}
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(&layer), "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&manifest),
            "size": manifest.len(), "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
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
    std::fs::write(&tar, tar_bytes(entries)).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-mxf")
            .arg(&tar),
    );
    let _ = std::fs::remove_dir_all(root.join("rootfs/usr/lib/firmware"));
    let out = work.join("ref.sqsh");
    run_ok(
        Command::new(require_tool("mksquashfs"))
            .arg(root.join("rootfs"))
            .arg(&out)
            .args([
                "-all-root",
                "-noappend",
                "-no-progress",
                "-comp",
                "zstd",
                "-Xcompression-level",
                "18",
            ])
            .env("SOURCE_DATE_EPOCH", common::build::EPOCH.to_string()),
    );
    out
}

fn unsquashfs(args: &[&str], image: &Path) -> String {
    run_ok(
        Command::new(require_tool("unsquashfs"))
            .args(args)
            .arg(image),
    )
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
    std::fs::write(d.join("hello.tar"), tar_bytes(&hello_world())).unwrap();
    oci_layout(&d.join("intel"), &tar_bytes(&intel_ucode()), "amd64");
    oci_layout(&d.join("amd"), &tar_bytes(&amd_ucode()), "amd64");
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

    // Progress lines as Talos prints them.
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

    // [early cpio] + [base initramfs, untouched] + [zstd frame].
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
    let names: Vec<String> = cpio_fields(&cpio_list(&cpio));
    assert_eq!(
        names,
        [
            "-rw-r--r-- root root 4096 0.sqsh".to_string(),
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
        .iter()
        .map(|s| s.to_string())
        .map(|s| if s.ends_with(" 0.sqsh") {
            names[0].clone()
        } else {
            s
        })
        .collect::<Vec<_>>()
    );
    let cx = d.join("compressed");
    cpio_extract(&cpio, &cx);
    assert_eq!(
        std::fs::read_to_string(cx.join("extensions.yaml")).unwrap(),
        EXPECTED_YAML
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
    std::fs::write(d.join("hello.tar"), tar_bytes(&hello_world())).unwrap();
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
    let failed = demo_build(&p).no_console().run_err();
    assert_ne!(failed.code, Some(0));
    let errors: Vec<&str> = failed
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{want}: {}", failed.stderr);
    assert!(errors[0].contains(want), "{want:?} in {:?}", errors[0]);
    assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
    assert_eq!(
        entries(&failed.out),
        Vec::<String>::new(),
        "{want}: output dir"
    );
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
        tar_bytes(&with(hw(), ("bin/sh", 0o755, b"x".to_vec()))),
        r#"unexpected file "bin""#,
    );
    refused(
        d,
        "v1.10.0",
        tar_bytes(&hw()[1..]),
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
        tar_bytes(&v),
        r#"unsupported manifest version: "v1alpha2""#,
    );
    let mut v = hw();
    v[0].2 = b"version: [v1alpha1\n".to_vec();
    refused(
        d,
        "v1.10.0",
        tar_bytes(&v),
        "error unmarshalling extension manifest",
    );
    let mut v = hw();
    v[0].2 = manifest_yaml("hello-world-service", "v1.0.0", "d", ">= v1.11.0");
    refused(
        d,
        "v1.10.0",
        tar_bytes(&v),
        r#"error validating extension "hello-world-service": version constraint >= v1.11.0 can't be satisfied with Talos version 1.10.0"#,
    );
    // A path escape in the layer.
    let mut esc = tar_bytes(&hw());
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
        tar_bytes(&with(
            intel_ucode(),
            (
                "rootfs/usr/lib/firmware/intel-ucode/06-00-00/x",
                0o644,
                b"x".to_vec(),
            ),
        )),
        "is a directory",
    );
    // Kernel modules are not rebuilt yet.
    refused(
        d,
        "v1.10.0",
        tar_bytes(&with(
            hw(),
            (
                "rootfs/usr/lib/modules/6.12.25-talos/extras/x.ko",
                0o644,
                b"x".to_vec(),
            ),
        )),
        "system extension hello-world-service carries kernel modules",
    );
    // xz squashfs (Talos < 1.8) is not written.
    refused(d, "v1.7.6", tar_bytes(&hw()), "Talos < 1.8");

    // Wrong architecture: a layout for arm64 only.
    oci_layout(&d.join("arm"), &tar_bytes(&hw()), "arm64");
    let p = profile(
        d,
        "v1.10.0",
        "initramfs",
        &[format!("ociPath: {}", d.join("arm").display())],
    );
    let failed = demo_build(&p).no_console().run_err();
    let errors: Vec<&str> = failed
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", failed.stderr);
    assert!(errors[0].contains("amd64"), "{}", errors[0]);
    assert_eq!(entries(&failed.out), Vec::<String>::new());
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
        std::fs::write(&t, tar_bytes(&f)).unwrap();
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
