//! SecureBoot builds end to end: the signed UKI judged by sbverify and osslsigncode,
//! its PCR prediction cross-checked by `imager inspect`, reproducibility, bad keys.

mod common;

use std::path::Path;
use std::process::Command;

use common::{demo_build, demo_dir, imager, require_tool, run_ok};

fn judges_accept(file: &Path, cert: &Path) -> (bool, bool) {
    let sbverify = Command::new(require_tool("sbverify"))
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .unwrap();
    let ossl = Command::new(require_tool("osslsigncode"))
        .args(["verify", "-CAfile"])
        .arg(cert)
        .arg("-in")
        .arg(file)
        .output()
        .unwrap();
    (sbverify.status.success(), ossl.status.success())
}

#[test]
fn signed_uki_is_accepted_by_sbverify_and_osslsigncode_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let built = demo_build("secureboot-metal-uki").keys(&keys).run();
    assert_eq!(built.name(), "metal-amd64-secureboot-uki.efi");
    let uki = &built.artifact;
    let cert = keys.join("uki-signing-cert.pem");
    assert_eq!(
        judges_accept(uki, &cert),
        (true, true),
        "both judges accept the UKI"
    );

    // inspect: every check passes and its PCR 11 equals the manifest's.
    let json = run_ok(imager().arg("inspect").arg("--json").arg(uki));
    let inspection: serde_json::Value = serde_json::from_str(&json).unwrap();
    for bank in built.manifest["pcr11"].as_array().unwrap() {
        let name = bank["bank"].as_str().unwrap();
        let after = bank["afterStub"].as_str().unwrap();
        assert!(
            json.contains(after),
            "inspect shows the manifest's {name} PCR 11 {after}"
        );
        assert!(json.contains(bank["enterMachined"].as_str().unwrap()));
    }
    assert!(inspection.is_object());

    // One flipped byte inside .linux: both judges and inspect refuse.
    let linux = inspection["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ".linux")
        .unwrap();
    let at = linux["offset"].as_u64().unwrap() as usize + 1000;
    let mut bytes = built.bytes();
    bytes[at] ^= 0x80;
    let tampered = dir.path().join("tampered.efi");
    std::fs::write(&tampered, bytes).unwrap();
    assert_eq!(
        judges_accept(&tampered, &cert),
        (false, false),
        "both judges reject the tampered UKI"
    );
    assert!(
        !imager()
            .arg("inspect")
            .arg(&tampered)
            .output()
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn secureboot_builds_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let a = demo_build("secureboot-metal-uki").keys(&keys).run();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = demo_build("secureboot-metal-uki").keys(&keys).run();
    assert_eq!(a.name(), "metal-amd64-secureboot-uki.efi");
    assert_eq!(b.name(), a.name());
    assert!(a.bytes() == b.bytes(), "identical bytes");
}

#[test]
fn bad_keys_fail_clearly_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let other = dir.path().join("other");
    run_ok(
        imager()
            .args(["gen", "secureboot", "pcr", "--output"])
            .arg(&other),
    );

    /// (what is wrong, how to break the key directory, expected message)
    type Case<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "certificate of another key",
            Box::new(|k: &Path| {
                std::fs::copy(
                    other.join("pcr-signing-key.pem"),
                    k.join("uki-signing-key.pem"),
                )
                .map(|_| ())
                .unwrap()
            }),
            "does not match",
        ),
        (
            "missing PCR key",
            Box::new(|k: &Path| std::fs::remove_file(k.join("pcr-signing-key.pem")).unwrap()),
            "pcr-signing-key.pem",
        ),
        (
            "EC PCR key",
            Box::new(move |k: &Path| {
                common::ec_key(&k.join("pcr-signing-key.pem"));
            }),
            "pcr-signing-key.pem",
        ),
        (
            "empty certificate",
            Box::new(|k: &Path| std::fs::write(k.join("uki-signing-cert.pem"), b"").unwrap()),
            "uki-signing-cert.pem",
        ),
        (
            "garbage certificate",
            Box::new(|k: &Path| {
                std::fs::write(
                    k.join("uki-signing-cert.pem"),
                    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                )
                .unwrap()
            }),
            "uki-signing-cert.pem",
        ),
    ];
    for (i, (what, spoil, needle)) in cases.iter().enumerate() {
        let k = common::copy_keys(&keys, &dir.path().join(format!("keys{i}")));
        spoil(&k);
        let failed = demo_build("secureboot-metal-uki").keys(&k).run_err();
        let line = failed.error_line();
        assert!(
            line.contains(needle),
            "{what}: error names {needle}: {line}"
        );
        assert!(!failed.stderr.contains("panicked"), "{what}: no panic");
        let left = failed.left();
        assert!(
            left.is_empty(),
            "{what}: nothing left in the output dir: {left:?}"
        );
    }
}

#[test]
fn bad_stub_and_kernel_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dir();
    let cases: &[(&str, &str, &[u8], &str)] = &[
        (
            "stub is not a PE",
            "systemd-stub.efi",
            b"#!/bin/sh\necho not a PE\n",
            "systemd-stub.efi",
        ),
        (
            "kernel is not a bzImage",
            "vmlinuz",
            b"MZ this is not a kernel at all",
            "vmlinuz",
        ),
    ];
    for (i, (what, file, content, needle)) in cases.iter().enumerate() {
        let install = dir.path().join(format!("i{i}/amd64"));
        std::fs::create_dir_all(&install).unwrap();
        for f in [
            "vmlinuz",
            "initramfs.xz",
            "systemd-stub.efi",
            "systemd-boot.efi",
        ] {
            std::fs::copy(demo.join("amd64").join(f), install.join(f)).unwrap();
        }
        std::fs::write(install.join(file), content).unwrap();
        let failed = demo_build("metal-uki")
            .install_dir(install.parent().unwrap())
            .run_err();
        let line = failed.error_line();
        assert!(line.contains(needle), "{what}: {line}");
        assert!(failed.left().is_empty(), "{what}: nothing left");
    }
}
