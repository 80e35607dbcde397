//! The container image: built offline with buildah by scripts/build-container, then
//! used the way users do (`docker run ... imager secureboot-iso`), through `buildah run`;
//! its docker-archive is read by skopeo and loaded by `podman load`, as `docker load` would.
//!
//! The image is a fixture: .ci/run builds it with scripts/build-container before the tests
//! (target/container/), so its static release build does not count against this test's
//! time. Run alone, the test builds it itself when it is missing or older than the sources,
//! and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::build::Built;
use common::{buildah, demo_dir, require_tool, run_ok};

/// Where scripts/build-container (run by .ci/run before the tests) leaves the image.
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/container")
}

/// The newest modification time of the files the image is built from.
fn newest_source() -> std::time::SystemTime {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "Containerfile",
        "scripts/build-container",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).unwrap();
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            newest = newest.max(meta.modified().unwrap());
        }
    }
    newest
}

/// The image's OCI archive: the fixture when it is there and newer than the sources, else
/// built here (once per test process) with a note saying why.
fn image() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = fixture_dir();
        let archive = out.join(format!("imager-{}.oci.tar", env!("CARGO_PKG_VERSION")));
        let fresh = std::fs::metadata(&archive)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= newest_source());
        if !fresh {
            eprintln!(
                "container fixture {} is missing or older than the sources: building it with \
                 scripts/build-container (.ci/run builds it before the tests; this takes a \
                 static release build)",
                archive.display()
            );
            let stdout = run_ok(
                Command::new(root.join("scripts/build-container"))
                    .arg(demo_dir())
                    .arg(&out),
            );
            assert_eq!(Path::new(stdout.trim()), archive);
        }
        eprintln!(
            "image size: {} bytes ({})",
            std::fs::metadata(&archive).unwrap().len(),
            archive.display()
        );
        archive
    })
    .clone()
}

/// A working container from the image, removed on drop.
struct Container(String);

impl Container {
    fn new() -> Self {
        let archive = image();
        let name = run_ok(
            buildah()
                .arg("from")
                .arg("--pull=never")
                .arg(format!("oci-archive:{}", archive.display())),
        );
        Container(name.trim().to_string())
    }

    /// SecureBoot keys made by `imager gen secureboot uki` and `pcr` inside the container,
    /// in `dir/keys`.
    fn gen_keys(&self, dir: &Path) -> PathBuf {
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        for what in ["uki", "pcr"] {
            let o = self.run(
                &[(&keys, "/keys")],
                &["gen", "secureboot", what, "--output", "/keys"],
            );
            assert!(
                o.status.success(),
                "gen {what}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        keys
    }

    fn run(&self, volumes: &[(&Path, &str)], args: &[&str]) -> std::process::Output {
        let mut c = buildah();
        c.arg("run");
        for (host, guest) in volumes {
            c.arg("-v").arg(format!("{}:{guest}", host.display()));
        }
        c.arg(&self.0).arg("--").arg("/usr/bin/imager").args(args);
        c.stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah().arg("rm").arg(&self.0).output();
    }
}

fn image_metadata_and_static_binary() {
    let archive = image();
    let skopeo = require_tool("skopeo");
    let config = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", archive.display())),
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/imager"])
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "imager"
    );
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "IMAGER_OUTPUT=/out")
    );
    let inspect = run_ok(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("oci-archive:{}", archive.display())),
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Architecture"], "amd64");

    let bin = fixture_dir().join("context/imager");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let text =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        text.contains("statically linked") || text.contains("not a dynamic executable"),
        "ldd: {text}"
    );

    // The default inputs sit at the Talos paths: the kernel is the demo kernel.
    let out = tempfile::tempdir().unwrap();
    let c = Container::new();
    let o = c.run(
        &[(out.path(), "/tmp/k")],
        &["metal", "--output-kind", "kernel", "--output", "/tmp/k"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("output asset path: /tmp/k/kernel-amd64"),
        "{err}"
    );
    let kernel = Built::in_dir(out.path(), err.into_owned());
    assert_eq!(kernel.name(), "kernel-amd64");
    assert!(
        kernel.bytes() == std::fs::read(demo_dir().join("amd64/vmlinuz")).unwrap(),
        "the image's default kernel is the demo kernel"
    );

    // GRUB sits at /usr/lib/grub: the default metal image (Talos 1.9: grub) builds there.
    let disk = tempfile::tempdir().unwrap();
    let o = c.run(
        &[(disk.path(), "/tmp/d")],
        &["metal", "--out-format", "raw", "--output", "/tmp/d"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let image = Built::in_dir(disk.path(), err.into_owned());
    let print = run_ok(
        Command::new(require_tool("sgdisk"))
            .arg("-p")
            .arg(&image.artifact),
    );
    assert!(
        print.contains("EF02  BIOS") && print.contains("8300  BOOT"),
        "{print}"
    );
}

/// The docker-archive beside the OCI archive (what the README's `docker load` reads) holds
/// the same image: skopeo reads its config, and `podman load` (the docker-archive reader
/// Docker's own `docker load` shares the format with) loads it under its name.
fn docker_archive_loads() {
    let oci = image();
    let archive = fixture_dir().join(format!("imager-{}.docker.tar", env!("CARGO_PKG_VERSION")));
    let skopeo = require_tool("skopeo");
    let config = |transport: &str, path: &Path| -> serde_json::Value {
        let text = run_ok(
            Command::new(&skopeo)
                .args(["inspect", "--config"])
                .arg(format!("{transport}:{}", path.display())),
        );
        serde_json::from_str(&text).unwrap()
    };
    let docker = config("docker-archive", &archive);
    assert_eq!(
        docker["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/imager"])
    );
    assert_eq!(
        docker["rootfs"],
        config("oci-archive", &oci)["rootfs"],
        "the docker-archive's layers are the OCI archive's"
    );
    let inspect = run_ok(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("docker-archive:{}", archive.display())),
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Architecture"], "amd64");

    // podman load into a private store; the image is then there under its tag.
    let store = tempfile::tempdir().unwrap();
    let podman = || {
        let mut c = Command::new(require_tool("podman"));
        c.arg("--root")
            .arg(store.path().join("root"))
            .arg("--runroot")
            .arg(store.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    let loaded = run_ok(podman().arg("load").arg("-i").arg(&archive));
    let tag = format!("imager:{}", env!("CARGO_PKG_VERSION"));
    assert!(loaded.contains(&tag), "podman load: {loaded}");
    let image = run_ok(
        podman()
            .args([
                "image",
                "inspect",
                "--format",
                "{{json .Config.Entrypoint}}",
            ])
            .arg(&tag),
    );
    assert_eq!(image.trim(), r#"["/usr/bin/imager"]"#);
}

fn secureboot_uki_and_keys_inside_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let c = Container::new();
    let keys = c.gen_keys(dir.path());
    let o = c.run(
        &[(&out, "/out"), (&keys, "/secureboot")],
        &["secureboot-metal-uki"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let uki = Built::in_dir(&out, err.into_owned());
    assert_eq!(uki.name(), "metal-amd64-secureboot-uki.efi");
    common::sbverify(&keys, &uki.artifact);
}

fn tar_to_stdout_from_the_container() {
    let c = Container::new();
    let o = c.run(
        &[],
        &[
            "metal",
            "--output-kind",
            "cmdline",
            "--tar-to-stdout",
            "--meta",
            "0x0a={}",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = common::untar_gz(&o.stdout);
    let cmdline = std::fs::read_to_string(dir.path().join("cmdline-metal-amd64")).unwrap();
    assert!(cmdline.contains("INSTALLER_META_BASE64="));
}

/// `docker run -v $PWD/_out:/out -v $PWD/keys:/secureboot:ro imager secureboot-iso`, then
/// the ISO boots: keys enrolled from setup mode, SecureBoot enforced, PCR 11 as predicted.
fn secureboot_iso_from_the_container_boots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let c = Container::new();
    let keys = c.gen_keys(dir.path());
    let o = c.run(
        &[(&out, "/out"), (&keys, "/secureboot:ro")],
        &["secureboot-iso", "--extra-kernel-arg", "console=ttyS0"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("output asset path: /out/metal-amd64-secureboot.iso"),
        "{err}"
    );
    let iso = Built::in_dir(&out, err.into_owned());
    assert_eq!(iso.name(), "metal-amd64-secureboot.iso");
    let predicted = common::predicted_pcr11(&iso.manifest);
    let log = common::boot::boot(
        common::boot::Media::Cdrom(iso.artifact),
        common::boot::SecureBoot::Setup,
        true,
        300,
    );
    log.assert_measured(1, &predicted);
}

/// One test, so the image is built once (nextest runs each test in its own process);
/// named `boot` so it runs with the other boot tests, one at a time.
#[test]
fn container_image_works_like_docker_run_and_its_iso_boots() {
    image_metadata_and_static_binary();
    docker_archive_loads();
    secureboot_uki_and_keys_inside_the_container();
    tar_to_stdout_from_the_container();
    secureboot_iso_from_the_container_boots();
}
