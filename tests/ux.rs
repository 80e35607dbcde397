//! What a Talos user meets on a first run, one test per bug and friction of the UX
//! trial (design/ux-trial.md): `meta dump` reading what `imager` writes, the kernel
//! command-line limit, closed pipes, help texts that match the tool, every missing
//! input in one message, Talos's flags, and the smaller value-spelling and output
//! directory rules. Every build runs the real binary on the demo inputs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{demo_build, demo_dir, imager, require_tool, run_ok};

const META: &str = "0x0a={\"externalIPs\":[\"1.2.3.4\"]}";

fn dump(path: &Path) -> String {
    run_ok(imager().args(["meta", "dump"]).arg(path))
}

#[test]
fn meta_dump_reads_a_compressed_disk_image_and_an_iso() {
    // What `imager metal` writes: a zstd-compressed disk image with a META partition.
    let metal = demo_build("metal").args(["--meta", META]).run();
    assert!(metal.artifact.to_string_lossy().ends_with(".raw.zst"));
    assert_eq!(dump(&metal.artifact), format!("{META}\n"));
    // The same image decompressed by zstd itself reads the same.
    let raw = metal.out.join("metal-amd64.raw");
    run_ok(
        Command::new(require_tool("zstd"))
            .args(["-q", "-d", "-o"])
            .arg(&raw)
            .arg(&metal.artifact),
    );
    assert_eq!(dump(&raw), format!("{META}\n"));
    // zstd, xz and gzip framing of a small disk: the unit tests of meta::image.
    // An ISO carries META on its kernel command line.
    let iso = demo_build("iso").args(["--meta", META]).run();
    let out = imager()
        .args(["meta", "dump", "--json"])
        .arg(&iso.artifact)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(values[0]["key"], 10);
    assert_eq!(values[0]["value"], "{\"externalIPs\":[\"1.2.3.4\"]}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel command line"));
    // `imager inspect` of the ISO and of the disk image says what they are.
    for (file, what) in [
        (&iso.artifact, "an ISO image"),
        (&metal.artifact, "a compressed image"),
    ] {
        let out = imager().arg("inspect").arg(file).output().unwrap();
        common::refused(&out, &[what, "-uki.efi"], "refusal");
    }
}

#[test]
fn a_command_line_longer_than_the_kernel_takes_is_refused() {
    // 250 addresses of network configuration: ~12 KB of YAML, ~3.2 KB once gzipped
    // and base64'd on the command line; the demo kernel's cmdline_size is 2047.
    let mut yaml = String::from("addresses:\n");
    let mut x: u32 = 2;
    for i in 0..250 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let b = x.to_be_bytes();
        yaml.push_str(&format!(
            "  - address: 10.{}.{}.{}/24\n    linkName: eth{i}\n",
            b[0], b[1], b[2]
        ));
    }
    let failed = demo_build("iso")
        .args(["--meta", &format!("0x0a={yaml}")])
        .run_err();
    failed.refused(
        &["takes at most 2047", "META partition"],
        "META values too long for an ISO",
    );
    // The same values fit a disk image's META partition and read back whole.
    let metal = demo_build("metal")
        .args(["--meta", &format!("0x0a={yaml}")])
        .run();
    assert_eq!(dump(&metal.artifact), format!("0x0a={yaml}\n"));
}

/// Runs `imager ARGS` with stdout a pipe closed before it writes: the process ends
/// with status 0 and no panic, as `imager ... | head -1` needs.
fn closed_pipe(args: &[&std::ffi::OsStr]) {
    let mut child = imager()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?}: no panic:\n{err}");
    assert_eq!(out.status.code(), Some(0), "{args:?}: quiet exit:\n{err}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    closed_pipe(&["profiles".as_ref()]);
    let metal = demo_build("metal").args(["--meta", META]).run();
    closed_pipe(&[
        "meta".as_ref(),
        "dump".as_ref(),
        "--json".as_ref(),
        metal.artifact.as_os_str(),
    ]);
    let uki = demo_build("metal-uki").run();
    closed_pipe(&[
        "inspect".as_ref(),
        "--json".as_ref(),
        uki.artifact.as_os_str(),
    ]);
    // And through a shell pipeline into `head -1`, with pipefail.
    let script = format!(
        "set -o pipefail; {:?} profiles | head -1",
        env!("CARGO_BIN_EXE_imager")
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn help_texts_match_the_tool() {
    let help = run_ok(imager().arg("--help"));
    assert!(!help.contains("not supported yet"), "{help}");
    assert!(help.contains("--talos-version") && help.contains("--bootloader"));
    assert!(help.contains("imager pxe metal --base-url"));
    let meta = run_ok(imager().args(["meta", "--help"]));
    assert!(!meta.contains("and writes"), "{meta}");
    let profiles = run_ok(imager().arg("profiles"));
    let sb_iso = profiles
        .lines()
        .find(|l| l.starts_with("secureboot-iso "))
        .unwrap();
    assert!(sb_iso.trim_end().ends_with("setup mode."), "{sb_iso}");
    assert!(
        profiles.lines().any(|l| l.starts_with("image ")),
        "{profiles}"
    );
    // `imager pxe` of a SecureBoot profile points at the UKI.
    let dir = tempfile::tempdir().unwrap();
    let out = imager()
        .args(["pxe", "secureboot-metal", "--install-dir"])
        .arg(demo_dir())
        .arg("--output")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    common::refused(&out, &["secureboot-metal-uki", "chain"], "refusal");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn first_run_lists_every_missing_input_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let install = dir.path().join("install");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let run = |extra: &[&str]| {
        imager()
            .arg("secureboot-iso")
            .args(extra)
            .arg("--install-dir")
            .arg(&install)
            .arg("--secureboot-dir")
            .arg(&keys)
            .arg("--output")
            .arg(&out_dir)
            .output()
            .unwrap()
    };
    let needles = [
        "amd64/vmlinuz",
        "amd64/initramfs.xz",
        "amd64/systemd-stub.efi",
        "amd64/systemd-boot.efi",
        "--install-dir",
        "uki-signing-key.pem",
        "uki-signing-cert.pem",
        "pcr-signing-key.pem",
        "--secureboot-dir",
        "imager gen secureboot uki",
        "imager gen secureboot pcr",
    ];
    let out = run(&[]);
    common::refused(&out, &needles, "refusal");
    assert!(
        !out_dir.exists(),
        "no output directory for a run that cannot start"
    );
    // --dry-run says the same, and fails.
    let dry = run(&["--dry-run"]);
    common::refused(&dry, &needles, "refusal");
    assert!(!out_dir.exists());
    // GRUB layout with no GRUB files: --dry-run refuses, naming --grub-dir.
    let out = imager()
        .args(["metal", "--dry-run", "--install-dir"])
        .arg(demo_dir())
        .args(["--grub-dir", "/nonexistent"])
        .output()
        .unwrap();
    common::refused(&out, &["--grub-dir", "/nonexistent"], "refusal");
    // A failed build removes the output directory it created.
    std::fs::create_dir_all(install.join("amd64")).unwrap();
    for f in ["vmlinuz", "systemd-stub.efi", "systemd-boot.efi"] {
        std::fs::copy(
            demo_dir().join("amd64").join(f),
            install.join("amd64").join(f),
        )
        .unwrap();
    }
    // A garbage initramfs is refused by its magic.
    std::fs::write(install.join("amd64/initramfs.xz"), b"garbage\n").unwrap();
    let out = imager()
        .arg("iso")
        .arg("--install-dir")
        .arg(&install)
        .arg("--output")
        .arg(&out_dir)
        .output()
        .unwrap();
    common::refused(&out, &["initramfs.xz", "not an initramfs"], "refusal");
    assert!(!out_dir.exists());
}

#[test]
fn talos_flags_are_accepted_and_unbuilt_features_refused() {
    // Talos's `--board`, which imager does not build, is refused by name.
    let failed = demo_build("metal")
        .args(["--board", "rpi_generic"])
        .run_err();
    common::one_error_line(&failed.stderr, &["--board rpi_generic"], "--board");
    assert!(
        !failed.stderr.contains("tip:"),
        "--board: {}",
        failed.stderr
    );
    // arm64 disk image at the default version: `--bootloader sd-boot`, or a version
    // whose default is sd-boot, with no profile file.
    for args in [["--bootloader", "sd-boot"], ["--talos-version", "v1.10.0"]] {
        let built = demo_build("metal").arch("arm64").args(args).run();
        let manifest = built.manifest.to_string();
        assert!(manifest.contains("sd-boot"), "{args:?}: {manifest}");
    }
    let built = demo_build("metal")
        .args(["--talos-version", "v1.10.0", "--output-kind", "cmdline"])
        .run();
    assert!(built.manifest.to_string().contains("v1.10.0"));
}

#[test]
fn value_spellings_and_output_paths() {
    // `-o` as `gen` has it.
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("o");
    run_ok(
        imager()
            .args(["metal", "--arch", "amd64", "--output-kind", "cmdline", "-o"])
            .arg(&o),
    );
    assert!(o.join("cmdline-metal-amd64").is_file());
    // `zst` without the dot.
    let built = demo_build("metal").args(["--out-format", "zst"]).run();
    assert!(built.artifact.to_string_lossy().ends_with(".raw.zst"));
    // Errors name the flag, list the values or suggest the nearest.
    for (args, needles) in [
        (
            vec!["--out-format", "bz2"],
            vec!["--out-format \"bz2\"", ".zst"],
        ),
        (
            vec!["--output-kind", "disk"],
            vec!["--output-kind \"disk\"", "image"],
        ),
        (
            vec!["--secureboot-enroll-keys", "always"],
            vec!["--secureboot-enroll-keys", "if-safe"],
        ),
        (
            vec!["--platform", "metall"],
            vec!["did you mean \"metal\"", "nocloud"],
        ),
        (
            vec!["--bootloader", "lilo"],
            vec!["--bootloader \"lilo\"", "sd-boot"],
        ),
    ] {
        let failed = demo_build("metal").args(args.clone()).run_err();
        let line = common::one_error_line(&failed.stderr, &needles, &format!("{args:?}"));
        assert!(!line.contains("OutFormat") && !line.contains("OutputKind"));
    }
    let out = imager()
        .args(["secureboot-is", "--output", "/nonexistent/x"])
        .output()
        .unwrap();
    common::refused(&out, &["did you mean \"secureboot-iso\""], "refusal");
    let out = imager()
        .args(["nothere.yaml", "--output", "/nonexistent/x"])
        .output()
        .unwrap();
    common::refused(&out, &["profile file nothere.yaml: not found"], "refusal");
    assert_eq!(out.status.code(), Some(2));
    // --output naming a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outfile");
    std::fs::write(&file, b"keep").unwrap();
    let out = imager()
        .args(["iso", "--install-dir"])
        .arg(demo_dir())
        .arg("--output")
        .arg(&file)
        .output()
        .unwrap();
    common::refused(&out, &["is a file, not a directory"], "refusal");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

#[test]
fn base_image_mistakes_are_named_before_any_work() {
    // A local layout directory without `oci:`.
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("installer-base");
    std::fs::create_dir(&layout).unwrap();
    let failed = demo_build("installer")
        .arg("--base-installer-image")
        .arg(&layout)
        .run_err();
    failed.refused(
        &[&format!("oci:{}", layout.display())],
        "an empty base installer layout",
    );
    assert!(
        !failed.stderr.contains("ready"),
        "refused before building: {}",
        failed.stderr
    );
    // A plain-HTTP registry on loopback without --insecure: the TLS hello gets an
    // HTTP answer; the error says to add --insecure.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let failed = demo_build("installer")
        .args([
            "--base-installer-image",
            &format!("127.0.0.1:{port}/siderolabs/installer:v1.9.2"),
        ])
        .run_err();
    assert_eq!(failed.error_lines().len(), 1, "{}", failed.stderr);
    assert!(
        failed.error_line().contains("add --insecure"),
        "{}",
        failed.stderr
    );
    assert!(
        !failed.stderr.contains("ready"),
        "probed before the UKI is built: {}",
        failed.stderr
    );
    assert!(failed.left().is_empty());
    // The same registry named by a system extension and by the image cache of an ISO.
    for flag in ["--system-extension-image", "--image-cache"] {
        let failed = demo_build("iso")
            .args([flag, &format!("127.0.0.1:{port}/siderolabs/gvisor:1")])
            .run_err();
        assert_eq!(failed.error_lines().len(), 1, "{}", failed.stderr);
        assert!(
            failed.error_line().contains("add --insecure")
                && failed.error_line().contains(&format!("127.0.0.1:{port}")),
            "{flag}: {}",
            failed.stderr
        );
        assert!(
            !failed.stderr.contains("ready"),
            "{flag}: {}",
            failed.stderr
        );
    }
}

/// `imager serve` on loopback, killed when dropped; stdout (the JSON log) in `log`.
struct Serve {
    child: std::process::Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, name: &str, assets: &Path, registry_port: u16) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let log = dir.join(format!("{name}.log"));
    let child = imager()
        .arg("serve")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--external-url",
            &url,
        ])
        .arg("--assets")
        .arg(assets)
        .args(["--registry", &format!("127.0.0.1:{registry_port}/factory")])
        .arg("--insecure-registry")
        .arg("--work-dir")
        .arg(dir.join(format!("work-{name}")))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let s = Serve { child, url, log };
    for _ in 0..100 {
        if ureq::get(&format!("{}/healthz", s.url)).call().is_ok() {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "serve did not come up:\n{}",
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
}

fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let req = ureq::request(method, url);
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[test]
fn serve_offers_only_what_it_builds_and_lists_tags() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry::registry(dir.path());
    // amd64 inputs only, no SecureBoot keys.
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("v1.9.2")).unwrap();
    std::os::unix::fs::symlink(demo_dir().join("amd64"), assets.join("v1.9.2/amd64")).unwrap();
    let s = serve(dir.path(), "amd64", &assets, registry.1);
    let (code, page) = http("GET", &format!("{}/", s.url), None);
    assert_eq!(code, 200);
    assert!(
        page.contains("value=\"arm64\" disabled") && !page.contains("value=\"amd64\" disabled"),
        "{page}"
    );
    assert!(
        page.contains("name=\"secureboot\" value=\"1\" disabled"),
        "{page}"
    );
    assert!(page.contains("without --secureboot-dir"));
    // A schematic naming an extension this version does not have: no PXE script.
    let (code, body) = http(
        "POST",
        &format!("{}/schematics", s.url),
        Some(
            "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/intel-ucode\n",
        ),
    );
    assert_eq!(code, 201, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = id["id"].as_str().unwrap();
    let (code, body) = http(
        "GET",
        &format!("{}/pxe/{id}/v1.9.2/metal-amd64", s.url),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("siderolabs/intel-ucode"), "{body}");
    // A schematic without extensions gets its script.
    let (_, body) = http(
        "POST",
        &format!("{}/schematics", s.url),
        Some("customization: {}\n"),
    );
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = id["id"].as_str().unwrap();
    let (code, body) = http(
        "GET",
        &format!("{}/pxe/{id}/v1.9.2/metal-amd64", s.url),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("#!ipxe"));
    // tags/list: the versions, read by skopeo's plain `inspect` (not --no-tags).
    let (code, body) = http(
        "GET",
        &format!("{}/v2/installer/{id}/tags/list", s.url),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let tags: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1.9.2"]));
    assert_eq!(tags["name"], format!("installer/{id}"));
    let out = Command::new(require_tool("skopeo"))
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!(
            "docker://{}/installer/{id}",
            s.url.trim_start_matches("http://")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"v1.9.2\""));
    // A second service on the same port: the address is named.
    let addr = s.url.trim_start_matches("http://");
    let out = imager()
        .args(["serve", "--listen", addr, "--external-url", &s.url])
        .arg("--assets")
        .arg(&assets)
        .args(["--registry", &format!("127.0.0.1:{}/factory", registry.1)])
        .arg("--insecure-registry")
        .arg("--work-dir")
        .arg(dir.path().join("work-second"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    common::refused(
        &out,
        &[&format!("--listen {addr}: address in use")],
        "a second serve on the port",
    );
    assert!(!dir.path().join("work-second").exists(), "nothing made");
    drop(s);
    // An --assets tree without version directories: a warning naming what it holds.
    let s = serve(dir.path(), "flat", &demo_dir(), registry.1);
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("no Talos version directory under --assets") && log.contains("amd64/"),
        "{log}"
    );
}

#[test]
fn gen_in_the_wrong_order_or_place_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = imager()
        .args(["gen", "secureboot", "database"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    common::refused(
        &out,
        &["uki-signing-key.pem", "imager gen secureboot uki"],
        "refusal",
    );
    // An output directory that cannot be made fails before the RSA-4096 work.
    let start = std::time::Instant::now();
    let out = imager()
        .args(["gen", "secureboot", "uki", "--output", "/proc/imager-x"])
        .output()
        .unwrap();
    common::refused(&out, &["/proc/imager-x"], "refusal");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("generating"));
    assert!(start.elapsed().as_secs() < 5);
}

#[test]
fn tar_to_stdout_names_the_artifact_not_a_scratch_path() {
    let out = imager()
        .args(["iso", "--arch", "amd64", "--tar-to-stdout", "--meta", META])
        .arg("--install-dir")
        .arg(demo_dir())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l == "output asset path: metal-amd64.iso (in the tar on stdout)"),
        "{err}"
    );
    let scratch = std::env::temp_dir().join("imager-out-");
    assert!(
        !err.contains(scratch.to_str().unwrap()),
        "no scratch path: {err}"
    );
    let dir = common::untar_gz(&out.stdout);
    assert!(dir.path().join("metal-amd64.iso").is_file());
}

#[test]
fn profile_help_says_what_the_profile_builds() {
    let out = run_ok(imager().args(["secureboot-iso", "--help"]));
    for needle in [
        "imager secureboot-iso: UEFI-only ISO",
        "Writes: metal-amd64-secureboot.iso",
        "PCR signing key",
        "/secureboot/pcr-signing-key.pem",
        "secureboot: true",
        "`imager --help`",
    ] {
        assert!(out.contains(needle), "{needle:?} in:\n{out}");
    }
    // The other flags apply; `-h` too.
    let out = run_ok(imager().args(["metal", "--arch", "arm64", "-h"]));
    assert!(out.contains("Writes: metal-arm64.raw.zst"), "{out}");
    assert!(out.contains("/usr/install/arm64/vmlinuz"), "{out}");
    // Not a profile: the top-level help as before.
    let out = run_ok(imager().arg("--help"));
    assert!(out.contains("Usage: imager"), "{out}");
    let failed = imager()
        .args(["secureboot-iso", "--arch", "x86", "--help"])
        .output()
        .unwrap();
    common::refused(&failed, &["x86"], "PROFILE --help with a bad --arch");
}

/// An EC key where an RSA key belongs gets Talos's `key type is not RSA`, naming the file and
/// how to make an RSA key, whether it is SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`).
#[test]
fn an_ec_key_is_named_as_one_in_either_pem_form() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(dir.path());
    for (file, pkcs8) in [
        ("uki-signing-key.pem", false),
        ("pcr-signing-key.pem", true),
    ] {
        let spoiled = common::copy_keys(&keys, &dir.path().join(file));
        let key = spoiled.join(file);
        let mut openssl = Command::new(require_tool("openssl"));
        if pkcs8 {
            openssl.args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ]);
        } else {
            openssl.args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ]);
        }
        run_ok(openssl.arg(&key));
        let head = std::fs::read_to_string(&key).unwrap();
        assert_eq!(
            head.starts_with("-----BEGIN PRIVATE KEY-----"),
            pkcs8,
            "{head}"
        );
        demo_build("secureboot-iso")
            .keys(&spoiled)
            .run_err()
            .refused(
                &[
                    file,
                    "key type is not RSA (an EC key",
                    "imager gen secureboot",
                ],
                file,
            );
    }
}
