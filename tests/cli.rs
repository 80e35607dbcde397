//! The CLI and profiles, driven through the real binary.

mod common;

use std::process::{Command, Output, Stdio};

use common::imager;

const SEED_SB_CMDLINE: &str = "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 lockdown=confidentiality";

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("imager runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn builtin_names() -> Vec<String> {
    let out = run(imager().arg("profiles"));
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn every_builtin_profile_dumps_and_validates() {
    let names = builtin_names();
    for required in [
        "iso",
        "secureboot-iso",
        "metal",
        "secureboot-metal",
        "metal-uki",
        "secureboot-metal-uki",
        "installer",
        "secureboot-installer",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "built-in {required} exists"
        );
    }
    for name in names {
        let out = run(imager().args([&name, "--print-profile", "--arch", "amd64"]));
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let dump: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
        assert_eq!(dump["arch"], "amd64", "{name}");
        assert_eq!(dump["version"], "v1.9.2", "{name}");
        assert!(dump["output"]["kind"].is_string(), "{name} has a kind");
        assert_eq!(
            dump["secureboot"].as_bool().unwrap(),
            name.starts_with("secureboot-"),
            "{name}"
        );
        if name.starts_with("secureboot-") {
            assert_eq!(
                dump["input"]["secureboot"]["secureBootSigner"]["keyPath"],
                "/secureboot/uki-signing-key.pem"
            );
            assert_eq!(
                dump["input"]["secureboot"]["pcrSigner"]["keyPath"],
                "/secureboot/pcr-signing-key.pem"
            );
        }
    }
}

#[test]
fn secureboot_iso_dump_matches_talos() {
    let out = run(imager().args(["secureboot-iso", "--print-profile", "--arch", "amd64"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let dump: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(dump["platform"], "metal");
    assert_eq!(
        dump["input"]["kernel"]["path"],
        "/usr/install/amd64/vmlinuz"
    );
    assert_eq!(
        dump["input"]["initramfs"]["path"],
        "/usr/install/amd64/initramfs.xz"
    );
    assert_eq!(
        dump["input"]["sdStub"]["path"],
        "/usr/install/amd64/systemd-stub.efi"
    );
    assert_eq!(
        dump["input"]["sdBoot"]["path"],
        "/usr/install/amd64/systemd-boot.efi"
    );
    assert_eq!(
        dump["input"]["baseInstaller"]["imageRef"],
        "ghcr.io/siderolabs/installer:v1.9.2"
    );
    assert_eq!(dump["output"]["kind"], "iso");
    assert_eq!(dump["output"]["isoOptions"]["sdBootEnrollKeys"], "if-safe");
    assert_eq!(dump["output"]["outFormat"], "raw");
}

#[test]
fn talos_profile_file_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    // The flat SecureBoot form of the Talos 1.5-era docs and the nested form.
    let flat = "arch: amd64\nplatform: metal\nsecureboot: true\nversion: v1.9.2\ninput:\n  kernel:\n    path: /k\n  initramfs:\n    path: /i\n  secureboot:\n    signingKeyPath: /sb/key.pem\n    signingCertPath: /sb/cert.pem\n    pcrSigningKeyPath: /sb/pcr.pem\n    pcrPublicKeyPath: /sb/pcr-pub.pem\noutput:\n  kind: iso\n  outFormat: raw\n";
    let file = dir.path().join("profile.yaml");
    std::fs::write(&file, flat).unwrap();
    let out = run(imager().arg(&file).arg("--print-profile"));
    assert!(out.status.success(), "{}", stderr(&out));
    let dump: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(
        dump["input"]["secureboot"]["secureBootSigner"]["keyPath"],
        "/sb/key.pem"
    );
    assert_eq!(
        dump["input"]["secureboot"]["secureBootSigner"]["certPath"],
        "/sb/cert.pem"
    );
    assert_eq!(
        dump["input"]["secureboot"]["pcrSigner"]["keyPath"],
        "/sb/pcr.pem"
    );
    assert_eq!(dump["input"]["kernel"]["path"], "/k");

    // A nested profile on stdin: arm64 metal for 1.10 (systemd-boot, Talos's arm64 pick).
    let nested = "baseProfileName: metal\narch: arm64\nversion: v1.10.0\ncustomization:\n  extraKernelArgs: [foo=bar]\n  metaContents:\n    - key: 10\n      value: '{}'\n";
    let mut child = imager()
        .args(["-", "--print-profile"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), nested.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dump: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(dump["arch"], "arm64");
    assert_eq!(
        dump["output"]["kind"], "image",
        "merged from the metal base"
    );
    assert_eq!(dump["output"]["outFormat"], ".zst");
    assert_eq!(dump["customization"]["metaContents"][0]["key"], 10);
    assert!(dump.get("baseProfileName").is_none());
}

#[test]
fn cmdline_output_secureboot_metal_matches_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(imager()
        .args([
            "secureboot-metal",
            "--arch",
            "amd64",
            "--output-kind",
            "cmdline",
            "--output",
        ])
        .arg(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("cmdline-metal-amd64-secureboot")).unwrap();
    assert_eq!(text, SEED_SB_CMDLINE);
    assert!(stderr(&out).contains(&format!("kernel command line: {SEED_SB_CMDLINE}")));
    assert!(stderr(&out).starts_with("profile ready:\n"));
    assert!(out.stdout.is_empty(), "stdout stays empty");
}

#[test]
fn cmdline_output_plain_metal_matches_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.yaml");
    std::fs::write(&profile, "baseProfileName: metal\nversion: v1.15.0\narch: amd64\noutput:\n  kind: cmdline\n  outFormat: raw\n").unwrap();
    let outdir = dir.path().join("out");
    let out = run(imager().arg(&profile).arg("--output").arg(&outdir));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(outdir.join("cmdline-metal-amd64")).unwrap();
    assert_eq!(
        text,
        "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
    );
}

#[test]
fn meta_and_extra_args_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(imager()
        .args([
            "metal",
            "--arch",
            "amd64",
            "--output-kind",
            "cmdline",
            "--meta",
            "0x0a={\"externalIPs\":[\"1.2.3.4\"]}",
        ])
        .args([
            "--extra-kernel-arg",
            "console=ttyS0",
            "--extra-kernel-arg",
            "-pti",
            "--extra-kernel-arg",
            "talos.config=http://x/${mac}",
        ])
        .arg("--output")
        .arg(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("cmdline-metal-amd64")).unwrap();
    let tokens: Vec<&str> = text.split(' ').collect();
    assert_eq!(
        tokens[1], "console=ttyS0",
        "console replaced in place: {text}"
    );
    assert!(!tokens.contains(&"pti=on"), "-pti removed: {text}");
    assert_eq!(*tokens.last().unwrap(), "talos.config=http://x/${mac}");
    let env = tokens
        .iter()
        .find(|t| t.starts_with("talos.environment=INSTALLER_META_BASE64="))
        .expect("META payload");
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env.split_once("BASE64=").unwrap().1)
        .unwrap();
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        "0x0a={\"externalIPs\":[\"1.2.3.4\"]}"
    );
}

#[test]
fn kernel_and_initramfs_outputs_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let install = dir.path().join("install/amd64");
    std::fs::create_dir_all(&install).unwrap();
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(install.join("vmlinuz"), &kernel).unwrap();
    std::fs::write(install.join("initramfs.xz"), b"initramfs bytes").unwrap();
    let outdir = dir.path().join("out");
    for kind in ["kernel", "initramfs"] {
        let out = run(imager()
            .args([
                "metal",
                "--arch",
                "amd64",
                "--output-kind",
                kind,
                "--install-dir",
            ])
            .arg(dir.path().join("install"))
            .arg("--output")
            .arg(&outdir));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read(outdir.join("kernel-amd64")).unwrap(), kernel);
    assert_eq!(
        std::fs::read(outdir.join("initramfs-metal-amd64.xz")).unwrap(),
        b"initramfs bytes"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outdir.join("kernel-amd64.manifest.json")).unwrap())
            .unwrap();
    use sha2::Digest;
    assert_eq!(
        manifest["outputs"][0]["sha256"],
        hex::encode(sha2::Sha256::digest(&kernel))
    );
    assert_eq!(manifest["outputs"][0]["size"], kernel.len());
    let sha256sum = run(Command::new("sha256sum").arg(outdir.join("kernel-amd64")));
    let judged = String::from_utf8_lossy(&sha256sum.stdout);
    assert_eq!(
        manifest["outputs"][0]["sha256"].as_str().unwrap(),
        judged.split_whitespace().next().unwrap(),
        "sha256sum agrees"
    );
}

#[test]
fn tar_to_stdout_carries_only_the_tarball() {
    let out = run(imager().args([
        "iso",
        "--arch",
        "amd64",
        "--output-kind",
        "cmdline",
        "--tar-to-stdout",
        "--meta",
        "0x0a={}",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = common::untar_gz(&out.stdout);
    let text = std::fs::read_to_string(dir.path().join("cmdline-metal-amd64")).unwrap();
    assert!(
        !text.contains("talos.halt_if_installed=1"),
        "cmdline kind is not an ISO"
    );
    assert!(text.contains("INSTALLER_META_BASE64="));
}

#[test]
fn validation_rules_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "arch: x86\nplatform: metal\noutput: {kind: iso, outFormat: raw}",
            "arch \"x86\"",
        ),
        (
            "arch: amd64\noutput: {kind: iso, outFormat: raw}",
            "platform is not set",
        ),
        (
            "arch: amd64\nplatform: nowhere\noutput: {kind: iso, outFormat: raw}",
            "unknown platform",
        ),
        (
            // Talos fills empty image options for the image kind; the size is what is missing.
            "arch: amd64\nplatform: metal\noutput: {kind: image, outFormat: raw}",
            "diskSize must be set",
        ),
        (
            "arch: amd64\nplatform: metal\noutput: {kind: image, outFormat: raw, imageOptions: {diskSize: 0}}",
            "diskSize",
        ),
        (
            "arch: amd64\nplatform: metal\noutput: {kind: installer, outFormat: raw}\ncustomization: {metaContents: [{key: 10, value: x}]}",
            "installer",
        ),
        (
            "arch: amd64\nplatform: metal\nsecureboot: true\noutput: {kind: kernel, outFormat: raw}",
            "SecureBoot does not apply to the kernel",
        ),
        (
            "arch: amd64\nplatform: metal\noutput: {kind: initramfs, outFormat: raw}\ncustomization: {extraKernelArgs: [a=b]}",
            "extra kernel arguments",
        ),
        (
            "arch: amd64\nplatform: metal\noutput: {kind: kernel, outFormat: raw}\ncustomization: {metaContents: [{key: 10, value: x}]}",
            "META values do not apply",
        ),
        (
            "arch: amd64\nplatform: metal\nsecureboot: true\nversion: v1.4.0\noutput: {kind: iso, outFormat: raw}",
            "SecureBoot needs Talos >= 1.5",
        ),
        (
            "arch: amd64\nplatform: metal\noutput: {kind: iso}",
            "outFormat",
        ),
        (
            "arch: amd64\nplatform: metal\noutput: {kind: floppy, outFormat: raw}",
            "output.kind",
        ),
        (
            "arch: amd64\nplatform: metal\ninput: {kernel: {pth: /k}}\noutput: {kind: iso, outFormat: raw}",
            "input.kernel",
        ),
        (
            "arch: amd64\nplatform: metal\nsecureboot: true\ninput: {secureboot: {platformKeyPath: /pk}}\noutput: {kind: iso, outFormat: raw}",
            "missing keyExchangeKeyPath, signatureKeyPath",
        ),
        (
            "arch: [amd64]\nplatform: metal\noutput: {kind: iso, outFormat: raw}",
            "arch",
        ),
        ("baseProfileName: nope\n", "baseProfileName"),
    ];
    for (i, (yaml, needle)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let outdir = dir.path().join(format!("out{i}"));
        let out = run(imager().arg(&file).arg("--output").arg(&outdir));
        common::refused(&out, &[needle], needle);
        common::assert_nothing_left(&outdir, needle);
    }
}

#[test]
fn bad_flags_and_inputs_fail_clearly_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    let demo = common::demo_dir().display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["nope"], "unknown profile \"nope\""),
        (vec!["metal", "--arch", "x86"], "arch \"x86\""),
        (vec!["metal", "--meta", "0xzz=1"], "0xzz"),
        (vec!["metal", "--meta", "300=1"], "out of range"),
        (vec!["metal", "--output-kind", "floppy"], "floppy"),
        (
            vec![
                "metal",
                "--output-kind",
                "kernel",
                "--install-dir",
                "/nonexistent",
            ],
            "--install-dir /nonexistent lacks amd64/vmlinuz",
        ),
        (
            vec![
                "metal",
                "--system-extension-image",
                "127.0.0.1:1/x/y:1",
                "--install-dir",
                &demo,
            ],
            "error pulling image 127.0.0.1:1/x/y:1",
        ),
    ];
    for (args, needle) in cases {
        let out = run(imager().args(&args).arg("--output").arg(&outdir));
        common::refused(&out, &[needle], needle);
        common::assert_nothing_left(&outdir, needle);
    }
}

#[test]
fn unwritable_output_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = run(imager()
        .args([
            "metal",
            "--arch",
            "amd64",
            "--output-kind",
            "cmdline",
            "--output",
        ])
        .arg(blocker.join("out")));
    common::refused(&out, &["file/out"], "an output dir under a file");
}

#[test]
fn out_formats_compress_and_decompress_to_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let install = dir.path().join("install/amd64");
    std::fs::create_dir_all(&install).unwrap();
    // Some data, then a long hole: the way disk images look.
    let kernel = dir.path().join("install/amd64/vmlinuz");
    {
        let f = std::fs::File::create(&kernel).unwrap();
        std::io::Write::write_all(
            &mut &f,
            &(0..200_000u32).map(|i| (i % 13) as u8).collect::<Vec<u8>>(),
        )
        .unwrap();
        f.set_len(32 << 20).unwrap();
    }
    let original = std::fs::read(&kernel).unwrap();
    let cases: &[(&str, &[&str])] = &[
        (".xz", &["xz", "-dc"]),
        (".zst", &["zstd", "-dc"]),
        (".gz", &["gzip", "-dc"]),
    ];
    for (format, decompress) in cases {
        let out = dir.path().join(format!("out{format}"));
        for _ in 0..2 {
            let o = run(imager()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args([
                    "metal",
                    "--arch",
                    "amd64",
                    "--output-kind",
                    "kernel",
                    "--out-format",
                    format,
                    "--install-dir",
                ])
                .arg(dir.path().join("install"))
                .arg("--output")
                .arg(&out));
            assert!(o.status.success(), "{format}: {}", stderr(&o));
            let name = out.join(format!("kernel-amd64{format}"));
            let copy = out.join(format!("first{format}"));
            if copy.exists() {
                assert!(
                    std::fs::read(&name).unwrap() == std::fs::read(&copy).unwrap(),
                    "{format} is reproducible"
                );
            } else {
                std::fs::copy(&name, &copy).unwrap();
            }
        }
        let name = out.join(format!("kernel-amd64{format}"));
        let test = Command::new(decompress[0])
            .arg("-t")
            .arg(&name)
            .output()
            .unwrap();
        assert!(test.status.success(), "{} -t {format}", decompress[0]);
        let plain = Command::new(decompress[0])
            .args(&decompress[1..])
            .arg(&name)
            .output()
            .unwrap();
        assert!(
            plain.stdout == original,
            "{format} decompresses to the input"
        );
    }
    // .tar.gz: one member disk.raw holding the artifact.
    let out = dir.path().join("targz");
    let o = run(imager()
        .args([
            "metal",
            "--arch",
            "amd64",
            "--output-kind",
            "kernel",
            "--out-format",
            ".tar.gz",
            "--install-dir",
        ])
        .arg(dir.path().join("install"))
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let list = Command::new("tar")
        .arg("-tzvf")
        .arg(out.join("kernel-amd64.tar.gz"))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("disk.raw") && list.contains("33554432"),
        "{list}"
    );
}
