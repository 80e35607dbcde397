//! PXE: the assets, the iPXE script and the Matchbox profile; the script boots the
//! demo kernel + initramfs through iPXE from QEMU's built-in TFTP server, fetched by
//! the URLs `--base-url` (typed without a trailing slash) put in the script.

mod common;

use std::time::Duration;

use common::boot::pxe_boot;
use common::{demo_build, demo_dir, run_ok};

#[test]
fn pxe_recipes_reference_the_assets() {
    let demo = demo_dir();
    let out = tempfile::tempdir().unwrap();
    run_ok(
        &mut demo_build("metal")
            .subcommand("pxe")
            .no_console()
            .args(["--config-url", "http://172.16.0.1/talos/config?mac=${mac}"])
            .args(["--base-url", "http://172.16.0.1/assets/"])
            .out(out.path())
            .command(),
    );
    let dir = out.path();
    for f in [
        "kernel-amd64",
        "initramfs-metal-amd64.xz",
        "cmdline-metal-amd64",
        "metal-amd64.ipxe",
        "matchbox-metal-amd64.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    assert_eq!(
        std::fs::read(dir.join("kernel-amd64")).unwrap(),
        std::fs::read(demo.join("amd64/vmlinuz")).unwrap()
    );
    let cmdline = std::fs::read_to_string(dir.join("cmdline-metal-amd64")).unwrap();
    assert!(
        cmdline.ends_with("talos.config=http://172.16.0.1/talos/config?mac=${mac}"),
        "{cmdline}"
    );
    let script = std::fs::read_to_string(dir.join("metal-amd64.ipxe")).unwrap();
    assert_eq!(
        script,
        format!(
            "#!ipxe\nkernel http://172.16.0.1/assets/kernel-amd64 initrd=initramfs-metal-amd64.xz {cmdline}\ninitrd http://172.16.0.1/assets/initramfs-metal-amd64.xz\nboot\n"
        )
    );

    // Matchbox profile fields (matchbox storagepb.Profile): id, name, boot{kernel, initrd[], args[]},
    // optional cloud_id/ignition_id/generic_id/metadata.
    let profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("matchbox-metal-amd64.json")).unwrap())
            .unwrap();
    let known = [
        "id",
        "name",
        "boot",
        "cloud_id",
        "ignition_id",
        "generic_id",
        "metadata",
    ];
    for key in profile.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "unknown Matchbox profile field {key}"
        );
    }
    assert!(profile["id"].is_string() && profile["name"].is_string());
    let boot = profile["boot"].as_object().unwrap();
    for key in boot.keys() {
        assert!(
            ["kernel", "initrd", "args", "cmdline"].contains(&key.as_str()),
            "unknown boot field {key}"
        );
    }
    assert_eq!(boot["kernel"], "/assets/kernel-amd64");
    assert_eq!(
        boot["initrd"],
        serde_json::json!(["/assets/initramfs-metal-amd64.xz"])
    );
    let args: Vec<&str> = boot["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "initrd=initramfs-metal-amd64.xz");
    assert_eq!(args[1..].join(" "), cmdline);
}

#[test]
fn ipxe_script_boots_the_demo_kernel_over_tftp() {
    let out = tempfile::tempdir().unwrap();
    // QEMU's user network answers TFTP at 10.0.2.2 from the output directory. A base
    // URL without a trailing slash once gave `tftp://10.0.2.2kernel-amd64`.
    run_ok(
        &mut demo_build("metal")
            .subcommand("pxe")
            .args(["--base-url", "tftp://10.0.2.2"])
            .out(out.path())
            .command(),
    );
    let script = std::fs::read_to_string(out.path().join("metal-amd64.ipxe")).unwrap();
    assert!(
        script.contains("\nkernel tftp://10.0.2.2/kernel-amd64 ")
            && script.contains("\ninitrd tftp://10.0.2.2/initramfs-metal-amd64.xz\n"),
        "{script}"
    );
    let log = pxe_boot(
        out.path(),
        "metal-amd64.ipxe",
        "IMAGER-BOOT-OK",
        Duration::from_secs(240),
    );
    assert!(
        log.contains("IMAGER-BOOT-OK"),
        "the iPXE script booted the demo initramfs:\n{log}"
    );
    let cmdline = std::fs::read_to_string(out.path().join("cmdline-metal-amd64")).unwrap();
    assert!(
        log.contains("talos.platform=metal"),
        "the kernel got the command line {cmdline}:\n{log}"
    );
}
