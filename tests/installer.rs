//! The installer image, judged by skopeo, umoci, sbverify and a loopback registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::build::DemoBuild;
use common::registry::registry;
use common::{buildah, demo_build, require_tool, run_ok};

/// A small `FROM scratch` base image built with buildah, saved as an OCI layout `DIR:v1.9.2`.
fn base_image(dir: &Path, arch: &str) -> PathBuf {
    let root = dir.join(format!("rootfs-{arch}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("bin/installer"), "#!/bin/sh\necho installer\n").unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=talos\n").unwrap();
    let name = format!("imager-test-base-{arch}-{}", std::process::id());
    let ctr = run_ok(buildah().args(["from", "scratch"]))
        .trim()
        .to_string();
    run_ok(buildah().arg("copy").arg(&ctr).arg(&root).arg("/"));
    run_ok(
        buildah()
            .args([
                "config",
                "--entrypoint",
                "[\"/bin/installer\"]",
                "--env",
                "VERSION=v1.9.2",
                "--label",
                "alpha.talos.dev/version=v1.9.2",
                "--arch",
                arch,
                "--os",
                "linux",
            ])
            .arg(&ctr),
    );
    run_ok(buildah().args(["commit", "-q"]).arg(&ctr).arg(&name));
    run_ok(buildah().arg("rm").arg(&ctr));
    let layout = dir.join(format!("base-{arch}"));
    run_ok(
        buildah()
            .args(["push", "-q"])
            .arg(&name)
            .arg(format!("oci:{}:v1.9.2", layout.display())),
    );
    let _ = buildah().args(["rmi", "-f"]).arg(&name).output();
    layout
}

/// The root file system of the installer tarball's image (for `arch`, if given): skopeo
/// copies it out of the OCI archive, umoci unpacks it into `dir/bundle`.
fn unpack(dir: &Path, tarball: &Path, arch: Option<&str>) -> PathBuf {
    let copy = dir.join("copy");
    let mut skopeo = Command::new(require_tool("skopeo"));
    skopeo.arg("copy");
    if let Some(arch) = arch {
        skopeo.args(["--override-arch", arch]);
    }
    run_ok(
        skopeo
            .arg(format!("oci-archive:{}", tarball.display()))
            .arg(format!("oci:{}:x", copy.display())),
    );
    let bundle = dir.join("bundle");
    run_ok(
        Command::new(require_tool("umoci"))
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:x", copy.display()))
            .arg(&bundle),
    );
    bundle.join("rootfs")
}

/// The SecureBoot installer of the demo inputs on base image `base`.
fn installer(keys: &Path, base: &str) -> DemoBuild {
    demo_build("secureboot-installer")
        .keys(keys)
        .args(["--base-installer-image", base])
}

#[test]
fn secureboot_installer_image_is_read_by_skopeo_umoci_and_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let layout = base_image(dir.path(), "amd64");
    let keys = common::gen_keys(dir.path());
    let skopeo = require_tool("skopeo");
    let base_ref = format!("oci:{}:v1.9.2", layout.display());
    let base: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new(&skopeo).arg("inspect").arg(&base_ref))).unwrap();
    let base_layer = base["Layers"][0].as_str().unwrap().to_string();

    let built = installer(&keys, &base_ref).run();
    assert_eq!(built.name(), "installer-amd64-secureboot.tar");
    let tarball = &built.artifact;

    for transport in ["docker-archive", "oci-archive"] {
        let inspect = run_ok(
            Command::new(&skopeo)
                .arg("inspect")
                .arg(format!("{transport}:{}", tarball.display())),
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(v["Architecture"], "amd64", "{transport}");
        assert_eq!(
            v["Layers"].as_array().unwrap().len(),
            2,
            "{transport}: base layer + assets layer"
        );
        assert_eq!(
            v["Labels"]["alpha.talos.dev/version"], "v1.9.2",
            "{transport}: base labels kept"
        );
    }
    let oci: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("oci-archive:{}", tarball.display())),
    ))
    .unwrap();
    assert_eq!(
        oci["Layers"][0],
        base_layer.as_str(),
        "the base layer is carried unchanged"
    );
    let config: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", tarball.display())),
    ))
    .unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/installer"])
    );

    // podman loads it as an image tagged with the base reference.
    let loaded = run_ok(
        Command::new(require_tool("podman"))
            .args(["--storage-driver", "vfs", "--root"])
            .arg(dir.path().join("podman-root"))
            .args(["--runroot"])
            .arg(dir.path().join("podman-run"))
            .args(["load", "-i"])
            .arg(tarball),
    );
    assert!(loaded.contains("Loaded image"), "{loaded}");

    // umoci unpacks a root file system with the base's files and our assets.
    let rootfs = unpack(dir.path(), tarball, None);
    assert!(rootfs.join("bin/installer").is_file() && rootfs.join("etc/os-release").is_file());
    let uki = rootfs.join("usr/install/amd64/vmlinuz.efi.signed");
    common::sbverify(&keys, &uki);
    common::sbverify(&keys, &rootfs.join("usr/install/amd64/systemd-boot.efi"));

    // Into a registry from the tarball.
    let reg = registry(dir.path());
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("docker-archive:{}", tarball.display()))
            .arg(format!(
                "docker://127.0.0.1:{}/siderolabs/installer-secureboot:v1.9.2",
                reg.1
            )),
    );
    let pushed = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--tls-verify=false"])
            .arg(format!(
                "docker://127.0.0.1:{}/siderolabs/installer-secureboot:v1.9.2",
                reg.1
            )),
    );
    assert!(
        pushed.contains(&base_layer) || pushed.contains("\"Layers\""),
        "{pushed}"
    );

    // The base pulled from the registry (plain HTTP with --insecure), cached by digest.
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--dest-tls-verify=false"])
            .arg(&base_ref)
            .arg(format!(
                "docker://127.0.0.1:{}/siderolabs/installer-base:v1.9.2",
                reg.1
            )),
    );
    let cache = dir.path().join("cache");
    let base_in_registry = format!("127.0.0.1:{}/siderolabs/installer-base:v1.9.2", reg.1);
    let pulled = installer(&keys, &base_in_registry)
        .arg("--insecure")
        .env("XDG_CACHE_HOME", &cache)
        .run();
    assert_eq!(pulled.name(), "installer-amd64-secureboot.tar");
    let pulled_tar = &pulled.artifact;
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("oci-archive:{}", pulled_tar.display())),
    ))
    .unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    let cached: Vec<_> = std::fs::read_dir(cache.join("imager/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(!cached.is_empty(), "layers cached by digest");

    // --tar-to-stdout: the tarball itself on stdout (for `| docker load`), nothing else.
    let o = installer(&keys, &base_ref)
        .arg("--tar-to-stdout")
        .command()
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let streamed = dir.path().join("streamed.tar");
    std::fs::write(&streamed, &o.stdout).unwrap();
    assert!(
        o.stdout == built.bytes(),
        "stdout carries exactly the installer tarball"
    );
    run_ok(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("docker-archive:{}", streamed.display())),
    );

    // Reproducible; the same from an OCI archive of the base.
    let archive = dir.path().join("base.tar");
    run_ok(
        Command::new(&skopeo)
            .arg("copy")
            .arg(&base_ref)
            .arg(format!("oci-archive:{}:v1.9.2", archive.display())),
    );
    let again = installer(&keys, &format!("oci-archive:{}", archive.display())).run();
    assert_eq!(again.name(), "installer-amd64-secureboot.tar");
    assert!(
        built.bytes() == again.bytes(),
        "identical bytes from the same inputs"
    );
}

#[test]
fn bad_base_images_fail_clearly_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    let arm = base_image(dir.path(), "arm64");
    let amd = base_image(dir.path(), "amd64");
    // Tamper with the layer blob of a copy of the amd64 layout.
    let tampered = dir.path().join("tampered");
    run_ok(Command::new("cp").arg("-a").arg(&amd).arg(&tampered));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tampered.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tampered.join("blobs/sha256").join(&manifest_digest)).unwrap(),
    )
    .unwrap();
    let layer = tampered.join("blobs/sha256").join(
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", ""),
    );
    let mut bytes = std::fs::read(&layer).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    // A truncated archive.
    let archive = dir.path().join("base.tar");
    run_ok(
        Command::new(require_tool("skopeo"))
            .arg("copy")
            .arg(format!("oci:{}:v1.9.2", amd.display()))
            .arg(format!("oci-archive:{}:v1.9.2", archive.display())),
    );
    let full = std::fs::read(&archive).unwrap();
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();

    let cases = [
        (format!("oci:{}:v1.9.2", arm.display()), "arm64"),
        (format!("oci:{}:v1.9.2", tampered.display()), "digest"),
        (
            format!("oci-archive:{}", truncated.display()),
            "truncated.tar",
        ),
        (
            "127.0.0.1:1/siderolabs/installer:v1.9.2".to_string(),
            "127.0.0.1:1",
        ),
    ];
    for (base, needle) in &cases {
        let failed = installer(&keys, base).run_err();
        let line = failed.error_line();
        assert!(
            line.contains(needle),
            "{base}: error names {needle}: {line}"
        );
        assert_eq!(failed.left(), Vec::<String>::new(), "{base}: nothing left");
    }
}

#[test]
fn arm64_installer_says_linux_arm64_and_carries_the_aa64_boot_files() {
    let dir = tempfile::tempdir().unwrap();
    let layout = base_image(dir.path(), "arm64");
    let keys = common::gen_keys(dir.path());
    let skopeo = require_tool("skopeo");
    let built = installer(&keys, &format!("oci:{}:v1.9.2", layout.display()))
        .arch("arm64")
        .run();
    assert_eq!(built.name(), "installer-arm64-secureboot.tar");
    let tarball = &built.artifact;
    for transport in ["docker-archive", "oci-archive"] {
        let v: serde_json::Value = serde_json::from_str(&run_ok(
            Command::new(&skopeo)
                .args(["inspect", "--override-arch", "arm64"])
                .arg(format!("{transport}:{}", tarball.display())),
        ))
        .unwrap();
        assert_eq!(v["Architecture"], "arm64", "{transport}");
        assert_eq!(v["Os"], "linux", "{transport}");
    }
    let config: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--override-arch", "arm64", "--config"])
            .arg(format!("oci-archive:{}", tarball.display())),
    ))
    .unwrap();
    assert_eq!(config["architecture"], "arm64");

    // The index may name a platform (it must then be arm64); the config does. The assets are
    // under /usr/install/arm64.
    let unpacked = dir.path().join("tar");
    std::fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        Command::new(require_tool("tar"))
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(&unpacked),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let platform = &index["manifests"][0]["platform"];
    assert!(
        platform.is_null() || platform["architecture"] == "arm64",
        "index platform: {platform}"
    );
    let install = unpack(dir.path(), tarball, Some("arm64")).join("usr/install/arm64");
    for f in ["systemd-boot.efi", "vmlinuz.efi.signed"] {
        let path = install.join(f);
        assert!(path.is_file(), "{} in the image", path.display());
        common::sbverify(&keys, &path);
    }
}
