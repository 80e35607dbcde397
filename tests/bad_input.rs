//! Every class of bad input, one table: the binary must exit non-zero with one clear
//! `error:` line naming the offending input, leave nothing in the output directory, and
//! never panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{demo_build, demo_dir, entries, imager, require_tool, run_ok};

/// A private copy of the demo inputs and keys that one row may spoil.
struct Inputs {
    install: PathBuf,
    keys: PathBuf,
}

fn inputs(dir: &Path, keys: &Path) -> Inputs {
    let install = dir.join("install");
    for arch in ["amd64", "arm64"] {
        std::fs::create_dir_all(install.join(arch)).unwrap();
        for f in [
            "vmlinuz",
            "initramfs.xz",
            "systemd-stub.efi",
            "systemd-boot.efi",
        ] {
            std::fs::copy(demo_dir().join(arch).join(f), install.join(arch).join(f)).unwrap();
        }
    }
    let keys = common::copy_keys(keys, &dir.join("keys"));
    Inputs { install, keys }
}

/// A profile YAML file in `dir`.
fn profile_file(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("p.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

#[test]
fn bad_input_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(&dir.path().join("master"));

    let sb = |i: &Inputs| -> Vec<String> {
        vec![
            "secureboot-metal-uki".into(),
            "--install-dir".into(),
            i.install.display().to_string(),
            "--secureboot-dir".into(),
            i.keys.display().to_string(),
        ]
    };
    // `file` of the other architecture's demo inputs in `arch`'s place, and a build for `arch`.
    let swapped = |i: &Inputs, arch: &str, file: &str, profile: &str| -> Vec<String> {
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        std::fs::copy(
            i.install.join(other).join(file),
            i.install.join(arch).join(file),
        )
        .unwrap();
        let mut args = sb(i);
        args[0] = profile.into();
        args.extend(["--arch".into(), arch.into()]);
        args
    };
    /// Arguments for one run, from the inputs and the output directory.
    type Args<'a> = Box<dyn Fn(&Inputs, &Path) -> Vec<String> + 'a>;
    // A build of the profile `yaml` for `arch` on the row's inputs.
    let profile_build = |yaml: &'static str, arch: &'static str| -> Args {
        Box::new(move |i, d| {
            vec![
                profile_file(d, yaml).display().to_string(),
                "--arch".into(),
                arch.into(),
                "--install-dir".into(),
                i.install.display().to_string(),
            ]
        })
    };
    let rows: Vec<(&str, Args, &str)> = vec![
        (
            "missing file",
            Box::new(|i, _| {
                std::fs::remove_file(i.install.join("amd64/initramfs.xz")).unwrap();
                sb(i)
            }),
            "initramfs.xz",
        ),
        (
            "empty file",
            Box::new(|i, _| {
                std::fs::write(i.install.join("amd64/vmlinuz"), b"").unwrap();
                sb(i)
            }),
            "vmlinuz",
        ),
        (
            "truncated PE",
            Box::new(|i, _| {
                let p = i.install.join("amd64/systemd-stub.efi");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..600]).unwrap();
                sb(i)
            }),
            "systemd-stub.efi",
        ),
        (
            "PE that is not EFI",
            Box::new(|i, _| {
                let p = i.install.join("amd64/systemd-stub.efi");
                let mut b = std::fs::read(&p).unwrap();
                let pe = u32::from_le_bytes(b[0x3c..0x40].try_into().unwrap()) as usize;
                b[pe + 24 + 68] = 3; // Subsystem: Windows console
                std::fs::write(&p, b).unwrap();
                sb(i)
            }),
            "systemd-stub.efi",
        ),
        (
            "kernel that is not a bzImage",
            Box::new(|i, _| {
                let mut b = std::fs::read(i.install.join("amd64/vmlinuz")).unwrap();
                b[0x202..0x206].copy_from_slice(b"XXXX");
                std::fs::write(i.install.join("amd64/vmlinuz"), b).unwrap();
                sb(i)
            }),
            "vmlinuz",
        ),
        (
            "certificate of another key",
            Box::new(|i, _| {
                std::fs::copy(
                    i.keys.join("pcr-signing-key.pem"),
                    i.keys.join("uki-signing-key.pem"),
                )
                .unwrap();
                sb(i)
            }),
            "does not match",
        ),
        (
            "wrong key type",
            Box::new(|i, _| {
                common::ec_key(&i.keys.join("pcr-signing-key.pem"));
                sb(i)
            }),
            "pcr-signing-key.pem",
        ),
        (
            "unknown profile field",
            Box::new(|_, d| {
                let p = profile_file(
                    d,
                    "baseProfileName: metal\noutput:\n  imageOptions:\n    diskSise: 1\n",
                );
                vec![p.display().to_string()]
            }),
            "diskSise",
        ),
        (
            "wrong field type",
            Box::new(|_, d| {
                let p = profile_file(
                    d,
                    "baseProfileName: metal\noutput:\n  imageOptions:\n    diskSize: big\n",
                );
                vec![p.display().to_string()]
            }),
            "diskSize",
        ),
        (
            "META key out of range",
            Box::new(|i, _| {
                vec![
                    "metal".into(),
                    "--meta".into(),
                    "256=x".into(),
                    "--install-dir".into(),
                    i.install.display().to_string(),
                ]
            }),
            "256",
        ),
        (
            "disk size too small",
            profile_build(
                "baseProfileName: metal\noutput:\n  imageOptions:\n    diskSize: 1048576\n",
                "amd64",
            ),
            "too small",
        ),
        (
            "dual-boot on arm64",
            profile_build(
                "baseProfileName: metal\narch: arm64\noutput:\n  imageOptions:\n    bootloader: dual-boot\n",
                "arm64",
            ),
            "dual-boot is not supported on arm64",
        ),
        (
            "GRUB directory without arm64-efi for arm64's grub layout",
            Box::new(|i, d| {
                let grub = d.join("grub");
                common::copy_tree(&common::grub_dir(), &grub);
                std::fs::remove_dir_all(grub.join("arm64-efi")).unwrap();
                vec![
                    "metal".into(),
                    "--arch".into(),
                    "arm64".into(),
                    "--install-dir".into(),
                    i.install.display().to_string(),
                    "--grub-dir".into(),
                    grub.display().to_string(),
                ]
            }),
            "no arm64-efi/ platform directory (install grub-efi-arm64-bin",
        ),
        (
            "GRUB directory missing a module",
            Box::new(|i, d| {
                let grub = d.join("grub");
                common::copy_tree(&common::grub_dir(), &grub);
                std::fs::remove_file(grub.join("i386-pc/xfs.mod")).unwrap();
                vec![
                    "metal".into(),
                    "--install-dir".into(),
                    i.install.display().to_string(),
                    "--grub-dir".into(),
                    grub.display().to_string(),
                ]
            }),
            "GRUB module xfs.mod (needed by the Talos module list) is missing",
        ),
        (
            "no GRUB directory",
            Box::new(|i, d| {
                vec![
                    "metal".into(),
                    "--install-dir".into(),
                    i.install.display().to_string(),
                    "--grub-dir".into(),
                    d.join("nowhere").display().to_string(),
                ]
            }),
            "no i386-pc/ platform directory",
        ),
        (
            "disk too small for the dual-boot layout",
            profile_build(
                "baseProfileName: metal\nversion: v1.11.0\noutput:\n  imageOptions:\n    diskSize: 1048576\n",
                "amd64",
            ),
            "too small for the dual-boot layout",
        ),
        (
            "unknown bootloader",
            profile_build(
                "baseProfileName: metal\noutput:\n  imageOptions:\n    bootloader: lilo\n",
                "amd64",
            ),
            "lilo",
        ),
    ];
    // Each boot binary of the other architecture in the target's place (PE machine check).
    let mut rows = rows;
    for (arch, is, machine) in [
        ("arm64", "an x86-64", "0x8664"),
        ("amd64", "an arm64", "0xaa64"),
    ] {
        for (file, profile) in [
            ("systemd-stub.efi", "secureboot-metal-uki"),
            ("vmlinuz", "metal-uki"),
            ("systemd-boot.efi", "secureboot-iso"),
        ] {
            let needle = format!(
                "{arch}/{file}: is {is} image (PE machine {machine}), the target arch is {arch}"
            );
            rows.push((
                "boot binary of the other architecture",
                Box::new(move |i, _| swapped(i, arch, file, profile)),
                Box::leak(needle.into_boxed_str()),
            ));
        }
    }
    for (i, (what, spoil, needle)) in rows.iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let ins = inputs(&case, &keys);
        let args = spoil(&ins, &case);
        let out = case.join("out");
        let mut cmd = imager();
        cmd.args(&args);
        if !args.iter().any(|a| a == "--arch") {
            cmd.args(["--arch", "amd64"]);
        }
        let o = cmd.arg("--output").arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        common::refused(&o, &[needle], what);
        if needle.contains("the target arch") {
            assert_eq!(o.status.code(), Some(2), "{what}: invalid input:\n{err}");
        }
        common::assert_nothing_left(&out, what);
    }
}

/// Mounts a tmpfs (size `size`, read-only if asked) at `dir`; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(
            Command::new(require_tool("mount"))
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(dir),
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn read_only_and_full_output_dirs_and_interrupts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(&dir.path().join("master"));
    let ins = inputs(dir.path(), &keys);
    let build = |install: &Path, out: &Path| {
        demo_build("secureboot-iso")
            .install_dir(install)
            .keys(&ins.keys)
            .out(out)
    };

    // Read-only output directory.
    let ro = Tmpfs::mount(&dir.path().join("ro"), "ro,size=64m");
    let err = build(&ins.install, &ro.0).run_err().stderr;
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains("ro") && l.contains("Read-only")),
        "{err}"
    );

    // Output disk full: a 4 MiB tmpfs cannot hold the ISO. An I/O failure (exit 4)
    // naming what was being written, not a complaint about the inputs.
    let full = Tmpfs::mount(&dir.path().join("full"), "size=4m");
    let failed = build(&ins.install, &full.0).run_err();
    let err = failed.stderr.clone();
    assert!(
        err.lines().any(|l| l.starts_with("error:")
            && l.contains("No space left")
            && l.contains("writing")
            && l.contains(&*full.0.to_string_lossy())),
        "{err}"
    );
    assert_eq!(failed.code, Some(4), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        entries(&full.0).is_empty(),
        "nothing left on the full disk: {:?}",
        entries(&full.0)
    );

    // SIGINT in the middle of a large build (a 256 MiB initramfs).
    let big = dir.path().join("big");
    std::fs::create_dir_all(big.join("amd64")).unwrap();
    for f in ["vmlinuz", "systemd-stub.efi", "systemd-boot.efi"] {
        std::fs::copy(ins.install.join("amd64").join(f), big.join("amd64").join(f)).unwrap();
    }
    // Random bytes behind an xz stream's magic: the build checks the magic, not the stream.
    let mut initramfs = std::fs::File::create(big.join("amd64/initramfs.xz")).unwrap();
    std::io::Write::write_all(&mut initramfs, &[0xfd, b'7', b'z', b'X', b'Z', 0]).unwrap();
    run_ok(
        Command::new("head")
            .args(["-c", "268435456", "/dev/urandom"])
            .stdout(initramfs),
    );
    let out = dir.path().join("interrupted");
    let child = build(&big, &out)
        .command()
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until work has started (the output directory holds the scratch directory).
    assert!(
        common::wait_until(std::time::Duration::from_secs(10), || !entries(&out)
            .is_empty()),
        "the build never started its scratch directory"
    );
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "interrupted build fails:\n{err}");
    assert!(
        entries(&out).is_empty(),
        "nothing left after SIGINT: {:?}\n{err}",
        entries(&out)
    );
}

/// `imager meta dump` on crafted 4 KiB GPT disks: lengths and offsets read from the file
/// are bounded by the file (a 0xFFFFFFFF entry size once allocated 4 TiB, a huge
/// PartitionEntryLBA overflowed): one error line naming the file and the rule, no panic.
#[test]
fn meta_dump_of_crafted_gpt_headers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = |entries_lba: u64, size: u32, meta_lba: u64| -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&entries_lba.to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&size.to_le_bytes());
        d[1024 + 32..1024 + 40].copy_from_slice(&meta_lba.to_le_bytes());
        for (i, c) in "META".encode_utf16().enumerate() {
            d[1024 + 56 + 2 * i..1024 + 58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        d
    };
    for (what, bytes, needle) in [
        (
            "entry size 0xFFFFFFFF",
            disk(2, u32::MAX, 64),
            "partition entry size 4294967295",
        ),
        (
            "PartitionEntryLBA overflows",
            disk(u64::MAX / 3, 128, 64),
            "partition entries at LBA",
        ),
        (
            "META partition past the end",
            disk(2, 128, u64::MAX / 512),
            "runs past the end of the file",
        ),
        ("nothing to read", vec![0u8; 4096], "no META found"),
    ] {
        let path = dir.path().join("crafted.raw");
        std::fs::write(&path, &bytes).unwrap();
        let start = std::time::Instant::now();
        let o = imager().args(["meta", "dump"]).arg(&path).output().unwrap();
        assert!(start.elapsed().as_secs() < 10, "{what}: quick refusal");
        common::refused(&o, &["crafted.raw", needle], what);
    }
}
