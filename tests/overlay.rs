//! Board overlays: a test overlay image made here (its installer a shell script that
//! answers `get-options` with kernel arguments and a partition offset, and proves what it
//! was given on stdin through them), read from a plain tarball and from an OCI layout;
//! its profile as the base profile; its kernel arguments in Talos's position on the
//! command line; and the confinement of the installer: no network, no writes outside
//! its tree, a time limit, one error line naming the overlay and nothing left.

mod common;

use std::path::{Path, PathBuf};

use common::{demo_build, tar_of};

/// Talos's official overlay profile (every sbc-* profile is this).
const PROFILE: &str = "arch: arm64\nplatform: metal\nsecureboot: false\noutput:\n  kind: image\n  outFormat: .xz\n  imageOptions:\n    diskSize: 1306525696\n    diskFormat: raw\n    bootloader: grub\n";

/// An installer answering `get-options` as the Rockchip ones do (offset 20480), with
/// its argv and the SHA-256 of its stdin as kernel arguments.
const INSTALLER: &str = r#"#!/bin/sh
set -e
case "$1" in
get-options)
  sum=$(sha256sum | cut -c1-16)
  printf 'name: fake\nkernelArgs:\n  - console=ttyS2,1500000\n  - fake.argv=%s\n  - fake.stdin=%s\n  - fake.env=%s\npartitionOptions:\n  offset: 20480\n' "$1" "$sum" "$(env | sort | tr '\n' ',')"
  ;;
install)
  in=$(cat)
  disk=$(printf '%s\n' "$in" | sed -n 's/^installDisk: //p')
  mp=$(printf '%s\n' "$in" | sed -n 's/^mountPrefix: //p')
  art=$(printf '%s\n' "$in" | sed -n 's/^artifactsPath: //p')
  printf '%s\n' "$in" > "$mp/boot/EFI/install-stdin.yaml"
  dd if="$art/arm64/u-boot/fake/u-boot-rockchip.bin" of="$disk" bs=512 seek=64 conv=notrunc status=none
  mkdir -p "$mp/boot/EFI/dtb/rockchip"
  echo dtb > "$mp/boot/EFI/dtb/rockchip/rk3588-rock-5b-with-a-long-name.dtb"
  printf 'kernel=u-boot.bin\n' > "$mp/boot/EFI/config.txt"
  ;;
*)
  echo "unknown command: $1" >&2
  exit 1
  ;;
esac
"#;

/// A plain tar of an overlay image with `installers/fake` = `installer`.
fn overlay_tar(installer: &str) -> Vec<u8> {
    tar_of(&[
        ("profiles/fake.yaml", 0o644, PROFILE.as_bytes().to_vec()),
        ("installers/fake", 0o755, installer.as_bytes().to_vec()),
        (
            "artifacts/arm64/u-boot/fake/u-boot-rockchip.bin",
            0o644,
            vec![0xa5; 4096],
        ),
    ])
}

/// An OCI image layout for `linux/<arch>` holding `tar` as its one (gzip'd) layer.
fn oci_layout(dir: &Path, tar: &[u8], arch: &str) {
    let image = common::oci::Image {
        arch,
        layers: vec![(tar, common::oci::Layer::Gzip)],
        config: serde_json::json!({}),
    };
    common::oci::layout(dir, &[image], "v1");
}

/// A profile file building `kind` on the overlay profile `fake` from the tarball.
fn profile_file(dir: &Path, tarball: &Path, kind: &str) -> PathBuf {
    profile_file_for(dir, tarball, kind, "v1.9.2")
}

/// [`profile_file`] for Talos `version`.
fn profile_file_for(dir: &Path, tarball: &Path, kind: &str, version: &str) -> PathBuf {
    let p = dir.join("board.yaml");
    std::fs::write(
        &p,
        format!(
            "baseProfileName: fake\nversion: {version}\noverlay:\n  name: fake\n  image:\n    tarballPath: {}\n  options:\n    board: rock5b\n    spi: \"no\"\noutput:\n  kind: {kind}\n  outFormat: raw\n",
            tarball.display()
        ),
    )
    .unwrap();
    p
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// The kernel arguments of `get-options` go onto the command line after the platform's
/// and before the defaults, with the platform arguments' rule; the installer got
/// `get-options`, the YAML of `overlay.options` (keys sorted) and a minimal environment.
#[test]
fn kernel_args_from_get_options_in_talos_position() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = tmp.path().join("overlay.tar");
    std::fs::write(&tarball, overlay_tar(INSTALLER)).unwrap();
    let profile = profile_file(tmp.path(), &tarball, "cmdline");
    let built = demo_build(&profile).no_console().no_arch().run();
    let cmdline = String::from_utf8(built.bytes()).unwrap();
    let stdin = common::sha256_hex(b"board: rock5b\nspi: \"no\"\n");
    let tokens: Vec<&str> = cmdline.split_whitespace().collect();
    // Talos buildCmdline: talos.platform, the platform's arguments (SetAll), the
    // overlay's (SetAll), then the defaults.
    assert_eq!(tokens[0], "talos.platform=metal", "{cmdline}");
    let at = |t: &str| {
        tokens
            .iter()
            .position(|x| x.starts_with(t))
            .unwrap_or_else(|| panic!("{t} not in {cmdline}"))
    };
    assert!(at("console=ttyS2,1500000") < at("fake.argv=get-options"));
    assert!(at("fake.argv=get-options") < at("slab_nomerge"));
    assert!(
        tokens.contains(&format!("fake.stdin={}", &stdin[..16]).as_str()),
        "stdin was not the options YAML: {cmdline}"
    );
    // The whole environment is PATH, HOME and TMPDIR (a fresh working directory).
    let env = tokens[at("fake.env=")].trim_start_matches("fake.env=");
    let names: Vec<&str> = env
        .split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split('=').next().unwrap())
        .filter(|k| *k != "PWD" && *k != "SHLVL" && *k != "_" && *k != "OLDPWD")
        .collect();
    assert_eq!(names, ["HOME", "PATH", "TMPDIR"], "{env}");
    assert!(
        built.stderr.contains("pulling overlay..."),
        "{}",
        built.stderr
    );
    assert!(
        built
            .stderr
            .contains("overlay \"fake\": get-options (network namespace: "),
        "{}",
        built.stderr
    );
}

/// `imager fake --overlay-image oci:DIR --overlay-name fake --overlay-option ...`: the
/// positional name is the overlay's profile (looked up before the built-ins), the
/// options flags reach the installer, and `--dry-run` prints the merged profile: the
/// arm64 grub layout and the overlay profile's disk size.
#[test]
fn overlay_profile_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &overlay_tar(INSTALLER), host_arch());
    std::fs::write(tmp.path().join("board"), "rock5b").unwrap();
    std::fs::write(tmp.path().join("more.yaml"), "spi: \"no\"\n").unwrap();
    let overlay_args = |b: common::build::DemoBuild| {
        b.arg("--overlay-image")
            .arg(format!("oci:{}", layout.display()))
            .args(["--overlay-name", "fake"])
            .arg("--overlay-option")
            .arg(format!("board=@{}", tmp.path().join("board").display()))
            .arg("--overlay-option")
            .arg(format!("@{}", tmp.path().join("more.yaml").display()))
    };
    let built = overlay_args(demo_build("fake").no_console().no_arch())
        .args(["--output-kind", "cmdline"])
        .run();
    let cmdline = String::from_utf8(built.bytes()).unwrap();
    let stdin = common::sha256_hex(b"board: rock5b\nspi: \"no\"\n");
    assert!(
        cmdline.contains(&format!("fake.stdin={}", &stdin[..16])),
        "{cmdline}"
    );

    // The merged profile, printed by --dry-run (no installer runs).
    let out = overlay_args(demo_build("fake").no_console().no_arch())
        .arg("--dry-run")
        .output();
    let printed = String::from_utf8_lossy(&out.stdout);
    for want in [
        "arch: arm64",
        "diskSize: 1306525696",
        "bootloader: grub",
        "  name: fake",
        "imageRef: oci:",
    ] {
        assert!(printed.contains(want), "{want:?} not in\n{printed}");
    }
    // Without the overlay, `fake` is no profile.
    let failed = demo_build("fake").no_arch().run_err();
    common::one_error_line(&failed.stderr, &["unknown profile \"fake\""], "no overlay");
}

/// One installer that misbehaves, run by a cmdline build with `timeout` seconds:
/// the error line, and what the build left in its output and temporary directories.
fn misbehave(script: &str, timeout: &str) -> (String, Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = tmp.path().join("overlay.tar");
    std::fs::write(&tarball, overlay_tar(script)).unwrap();
    let profile = profile_file(tmp.path(), &tarball, "cmdline");
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let failed = demo_build(&profile)
        .no_arch()
        .env("TMPDIR", &scratch)
        .env("IMAGER_OVERLAY_TIMEOUT", timeout)
        .run_err();
    assert_ne!(failed.code, Some(0));
    (
        common::one_error_line(&failed.stderr, &[], "a misbehaving installer").to_string(),
        failed.left(),
        common::entries(&scratch),
    )
}

/// An installer that connects to a TCP listener of the test is stopped: the listener
/// sees no connection, the error names the overlay.
#[test]
fn an_installer_gets_no_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/{port} || exit 3\necho connected >&3\nprintf 'name: fake\\n'\n"
    );
    let (line, left, tmp_left) = misbehave(&script, "60");
    assert!(
        line.contains("overlay \"fake\": failed to run overlay installer: exit status"),
        "{line}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the installer reached the test's listener"
    );
    assert!(left.is_empty(), "{left:?}");
    assert!(tmp_left.is_empty(), "{tmp_left:?}");
}

/// An installer that writes outside its tree is refused the write.
#[test]
fn an_installer_writes_only_its_tree() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("escaped");
    let script = format!(
        "#!/bin/sh\necho escaped > {} || exit 4\nprintf 'name: fake\\n'\n",
        target.display()
    );
    let (line, left, tmp_left) = misbehave(&script, "60");
    assert!(
        line.contains("overlay \"fake\": failed to run overlay installer: exit status 4"),
        "{line}"
    );
    assert!(!target.exists(), "the installer wrote {}", target.display());
    assert!(left.is_empty(), "{left:?}");
    assert!(tmp_left.is_empty(), "{tmp_left:?}");
}

/// An installer that runs forever (and starts a child that would too) is stopped at
/// the time limit, with its child.
#[test]
fn an_installer_is_stopped_at_the_time_limit() {
    let script = "#!/bin/sh\nsleep 1000.4242 &\nsleep 1000.4243\n";
    let started = std::time::Instant::now();
    let (line, left, tmp_left) = misbehave(script, "2");
    assert!(started.elapsed().as_secs() < 30);
    assert!(
        line.contains("overlay \"fake\": installer get-options stopped: still running after the time limit of 2 s"),
        "{line}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        assert!(
            !cmd.contains("1000.424"),
            "left running: {} {cmd}",
            entry.path().display()
        );
    }
    assert!(left.is_empty(), "{left:?}");
    assert!(tmp_left.is_empty(), "{tmp_left:?}");
}

/// A disk image with the overlay (target 1.11, Rockchip-like offset 20480): sgdisk finds
/// the table clean with the primary entry array at LBA 20482 and EFI at 22528 on
/// Talos's disk size; the installer's u-boot at byte 32768 survives; its files are in
/// the ESP (fsck.fat clean, mdir) and not in BOOT (xfs_db); it got Talos's fields.
#[test]
fn disk_image_with_the_overlay() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = tmp.path().join("overlay.tar");
    std::fs::write(&tarball, overlay_tar(INSTALLER)).unwrap();
    let profile = profile_file_for(tmp.path(), &tarball, "image", "v1.11.0");
    let built = demo_build(&profile).no_console().no_arch().run();
    let image = &built.artifact;
    assert_eq!(built.name(), "metal-arm64.raw");
    // Talos's size for an overlay profile on >= 1.11: 1306525696 + 1000 MiB of BOOT.
    assert_eq!(std::fs::metadata(image).unwrap().len(), 2355101696);
    let verify = common::run_ok(
        std::process::Command::new(common::require_tool("sgdisk"))
            .arg("-v")
            .arg(image),
    );
    assert!(verify.contains("No problems found"), "{verify}");
    let header = common::bootpart::read_range(image, 512, 92);
    assert_eq!(&header[0..8], b"EFI PART");
    let le = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    assert_eq!(le(72), 20482, "PartitionEntryLBA");
    assert_eq!(le(40), 22528, "FirstUsableLBA");
    let rows = common::bootpart::sgdisk_rows(image);
    let names: Vec<(u64, &str)> = rows.iter().map(|r| (r.1, r.4.as_str())).collect();
    assert_eq!(names[0], (22528, "EFI"), "{rows:?}");
    assert_eq!(names.len(), 4, "{rows:?}");
    // The installer's raw write.
    assert_eq!(
        common::bootpart::read_range(image, 32768, 4096),
        vec![0xa5; 4096]
    );
    // Its files, in the ESP beside GRUB.
    let (efi_at, efi_len, _) = common::partition(image, 1, 512);
    let esp = tmp.path().join("esp.img");
    common::bootpart::extract(image, efi_at, efi_len, &esp);
    common::fat::fsck(&esp);
    let files = common::fat::files(&esp);
    for want in [
        "::/EFI/boot/BOOTAA64.efi",
        "::/config.txt",
        "::/dtb/rockchip/rk3588-rock-5b-with-a-long-name.dtb",
    ] {
        assert!(
            files.lines().any(|l| l.trim() == want),
            "{want} not in\n{files}"
        );
    }
    // What install got on stdin: Talos's fields, in its order.
    let stdin = common::fat::read_text(&esp, "::/install-stdin.yaml");
    let keys: Vec<&str> = stdin
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "installDisk",
            "mountPrefix",
            "artifactsPath",
            "extraOptions"
        ],
        "{stdin}"
    );
    assert!(
        stdin.contains("extraOptions:\n    board: rock5b\n    spi: \"no\"\n"),
        "{stdin}"
    );
    assert!(stdin.contains("installDisk: /"), "{stdin}");
    // Not in BOOT.
    let (boot_at, boot_len, _) = common::partition(image, 3, 512);
    let boot = tmp.path().join("boot.img");
    common::bootpart::extract(image, boot_at, boot_len, &boot);
    let root = common::bootpart::xfs_db(&boot, &["ls /"]);
    assert!(root.contains("grub"), "{root}");
    for absent in ["config.txt", "dtb", "EFI", "install-stdin.yaml"] {
        assert!(
            !root.split_whitespace().any(|w| w == absent),
            "{absent} in BOOT:\n{root}"
        );
    }
    // The overlay's kernel arguments are on GRUB's command line.
    let cfg = String::from_utf8(common::bootpart::grub_read(
        image,
        3,
        "/grub/grub.cfg",
        tmp.path(),
    ))
    .unwrap();
    assert!(
        cfg.contains("talos.platform=metal console=ttyS2,1500000 fake.argv=get-options"),
        "{cfg}"
    );
}

/// A `FROM scratch` base installer image built with buildah, as an OCI layout `DIR:v1.9.2`.
fn base_image(dir: &Path, arch: &str) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/installer"), "#!/bin/sh\n").unwrap();
    let name = format!("imager-test-overlay-base-{}", std::process::id());
    let ctr = common::run_ok(common::buildah().args(["from", "scratch"]))
        .trim()
        .to_string();
    common::run_ok(common::buildah().arg("copy").arg(&ctr).arg(&root).arg("/"));
    common::run_ok(
        common::buildah()
            .args(["config", "--arch", arch, "--os", "linux"])
            .arg(&ctr),
    );
    common::run_ok(
        common::buildah()
            .args(["commit", "-q"])
            .arg(&ctr)
            .arg(&name),
    );
    common::run_ok(common::buildah().arg("rm").arg(&ctr));
    let layout = dir.join("base");
    common::run_ok(
        common::buildah()
            .args(["push", "-q"])
            .arg(&name)
            .arg(format!("oci:{}:v1.9.2", layout.display())),
    );
    let _ = common::buildah().args(["rmi", "-f"]).arg(&name).output();
    layout
}

/// The installer image with the overlay: its last layer holds exactly Talos's paths
/// (`overlay/artifacts/...`, `overlay/installers/default` executable,
/// `overlay/extra-options` with the options YAML), listed by GNU tar; skopeo reads the image.
#[test]
fn installer_image_with_the_overlay_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = tmp.path().join("overlay.tar");
    std::fs::write(&tarball, overlay_tar(INSTALLER)).unwrap();
    let base = base_image(tmp.path(), "arm64");
    let profile = tmp.path().join("installer.yaml");
    std::fs::write(
        &profile,
        format!(
            "baseProfileName: fake\nversion: v1.9.2\noverlay:\n  name: fake\n  image:\n    tarballPath: {t}\n  options:\n    board: rock5b\ninput:\n  overlayInstaller:\n    tarballPath: {t}\noutput:\n  kind: installer\n  outFormat: raw\n",
            t = tarball.display()
        ),
    )
    .unwrap();
    let built = demo_build(&profile)
        .no_console()
        .no_arch()
        .arg("--base-installer-image")
        .arg(format!("oci:{}:v1.9.2", base.display()))
        .run();
    // skopeo reads it.
    let inspect = common::run_ok(
        std::process::Command::new(common::require_tool("skopeo"))
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", built.artifact.display())),
    );
    let manifest: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let last = layers.last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let unpacked = tmp.path().join("image");
    std::fs::create_dir(&unpacked).unwrap();
    common::run_ok(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&built.artifact)
            .arg("-C")
            .arg(&unpacked),
    );
    let blob = unpacked.join("blobs/sha256").join(&last);
    let listing = common::run_ok(
        std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(&blob),
    );
    let rows: Vec<(String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[f.len() - 1].to_string())
        })
        .collect();
    let want = [
        ("drwxr-xr-x", "overlay/artifacts/arm64"),
        ("drwxr-xr-x", "overlay/artifacts/arm64/u-boot"),
        ("drwxr-xr-x", "overlay/artifacts/arm64/u-boot/fake"),
        (
            "-rw-r--r--",
            "overlay/artifacts/arm64/u-boot/fake/u-boot-rockchip.bin",
        ),
        ("-rw-r--r--", "overlay/extra-options"),
        ("-rwxr-xr-x", "overlay/installers/default"),
    ];
    let got: Vec<(&str, &str)> = rows.iter().map(|(m, n)| (m.as_str(), n.as_str())).collect();
    assert_eq!(got, want, "{listing}");
    let options = common::run_ok(
        std::process::Command::new("tar")
            .args(["-xOzf"])
            .arg(&blob)
            .arg("overlay/extra-options"),
    );
    assert_eq!(options, "board: rock5b\n");
}
