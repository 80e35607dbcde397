//! The installer image, judged by skopeo, umoci, sbverify and a loopback registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::{demo_dir, imager, require_tool, run_ok};

fn buildah() -> Command {
    let mut c = Command::new(require_tool("buildah"));
    c.env("BUILDAH_ISOLATION", "chroot")
        .env("STORAGE_DRIVER", "vfs");
    c
}

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

fn build(base: &str, out: &Path, keys: &Path) -> std::process::Output {
    imager()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["secureboot-installer", "--arch", "amd64", "--install-dir"])
        .arg(demo_dir())
        .arg("--secureboot-dir")
        .arg(keys)
        .args(["--base-installer-image", base, "--output"])
        .arg(out)
        .output()
        .unwrap()
}

struct Registry(Child, u16);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's docker-registry (CNCF distribution) on a free loopback port.
fn registry(dir: &Path) -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let child = Command::new(require_tool("docker-registry"))
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Registry(child, port)
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

    let out = dir.path().join("out");
    let o = build(&base_ref, &out, &keys);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tarball = out.join("installer-amd64-secureboot.tar");

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
            .arg(&tarball),
    );
    assert!(loaded.contains("Loaded image"), "{loaded}");

    // umoci unpacks a root file system with the base's files and our assets.
    let copy = dir.path().join("copy");
    run_ok(
        Command::new(&skopeo)
            .arg("copy")
            .arg(format!("oci-archive:{}", tarball.display()))
            .arg(format!("oci:{}:x", copy.display())),
    );
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new(require_tool("umoci"))
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:x", copy.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("bin/installer").is_file() && rootfs.join("etc/os-release").is_file());
    let uki = rootfs.join("usr/install/amd64/vmlinuz.efi.signed");
    run_ok(
        Command::new(require_tool("sbverify"))
            .arg("--cert")
            .arg(keys.join("uki-signing-cert.pem"))
            .arg(&uki),
    );
    run_ok(
        Command::new(require_tool("sbverify"))
            .arg("--cert")
            .arg(keys.join("uki-signing-cert.pem"))
            .arg(rootfs.join("usr/install/amd64/systemd-boot.efi")),
    );

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
    let pulled = dir.path().join("pulled");
    let o = imager()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("XDG_CACHE_HOME", &cache)
        .args([
            "secureboot-installer",
            "--arch",
            "amd64",
            "--insecure",
            "--install-dir",
        ])
        .arg(demo_dir())
        .arg("--secureboot-dir")
        .arg(&keys)
        .arg("--base-installer-image")
        .arg(format!(
            "127.0.0.1:{}/siderolabs/installer-base:v1.9.2",
            reg.1
        ))
        .arg("--output")
        .arg(&pulled)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pulled_tar = pulled.join("installer-amd64-secureboot.tar");
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
    let o = imager()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "secureboot-installer",
            "--arch",
            "amd64",
            "--tar-to-stdout",
            "--install-dir",
        ])
        .arg(demo_dir())
        .arg("--secureboot-dir")
        .arg(&keys)
        .args(["--base-installer-image", &base_ref])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let streamed = dir.path().join("streamed.tar");
    std::fs::write(&streamed, &o.stdout).unwrap();
    assert!(
        o.stdout == std::fs::read(&tarball).unwrap(),
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
    let again = dir.path().join("again");
    let o = build(&format!("oci-archive:{}", archive.display()), &again, &keys);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&tarball).unwrap()
            == std::fs::read(again.join("installer-amd64-secureboot.tar")).unwrap(),
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
    for (i, (base, needle)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let o = build(base, &out, &keys);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{base}: must fail");
        let line = err
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{base}: {err}"));
        assert!(
            line.contains(needle),
            "{base}: error names {needle}: {line}"
        );
        assert_eq!(
            std::fs::read_dir(&out).map(|r| r.count()).unwrap_or(0),
            0,
            "{base}: nothing left"
        );
    }
}
