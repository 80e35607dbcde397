//! `imager serve` against a loopback `docker-registry`, judged by independent tools:
//! xorriso, mtools and sbverify take the ISO apart, skopeo pulls the installer
//! through the `/v2/` frontend, curl-equivalent HTTP checks the API; two replicas share
//! one registry; hostile paths; a bounded load test; one boot under enforced SecureBoot.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::boot::{Media, SecureBoot, boot};
use common::registry::{Registry, registry};
use common::{demo_dir, fat, require_tool, run_ok, sha256};

const VERSION: &str = "v1.9.2";

/// A running `imager serve`, stopped with SIGTERM when dropped.
struct Service {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Service {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Inputs as `--assets` wants them, keys and a registry, in one directory.
struct Fixture {
    dir: tempfile::TempDir,
    assets: PathBuf,
    keys: PathBuf,
    registry: Registry,
}

/// An OCI layout with one single-layer image per (arch, layer tar), platforms in the index.
fn oci_layout(dir: &Path, images: &[(&str, Vec<u8>)]) {
    let images: Vec<common::oci::Image> = images
        .iter()
        .map(|(arch, tar)| common::oci::Image {
            arch,
            layers: vec![(tar.as_slice(), common::oci::Layer::Gzip)],
            config: serde_json::json!({"Entrypoint": ["/usr/bin/installer"]}),
        })
        .collect();
    common::oci::layout(dir, &images, VERSION);
}

/// `<assets>/v1.9.2/{amd64,arm64}` (the demo inputs), an installer base for both
/// arches, the hello-world-service extension; `v1.10.0` with amd64 inputs only.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    let demo = demo_dir();
    let v = assets.join(VERSION);
    std::fs::create_dir_all(&v).unwrap();
    for arch in ["amd64", "arm64"] {
        std::os::unix::fs::symlink(demo.join(arch), v.join(arch)).unwrap();
    }
    std::fs::create_dir_all(assets.join("v1.10.0")).unwrap();
    std::os::unix::fs::symlink(demo.join("amd64"), assets.join("v1.10.0/amd64")).unwrap();
    std::fs::create_dir_all(assets.join("not-a-version")).unwrap();
    let base = |arch: &str| {
        common::tar_of(&[
            (
                "usr/bin/installer",
                0o755,
                format!("#!/bin/sh\necho installer {arch}\n").into_bytes(),
            ),
            ("etc/os-release", 0o644, b"ID=talos\n".to_vec()),
        ])
    };
    oci_layout(
        &v.join("installer-base"),
        &[("amd64", base("amd64")), ("arm64", base("arm64"))],
    );
    let manifest = b"version: v1alpha1\nmetadata:\n  name: hello-world-service\n  version: v1.0.0\n  author: Sidero Labs\n  description: An example extension service.\n  compatibility:\n    talos:\n      version: \">= v1.0.0\"\n".to_vec();
    let ext = common::tar_of(&[
        ("manifest.yaml", 0o644, manifest),
        (
            "rootfs/usr/local/etc/containers/hello-world.yaml",
            0o644,
            b"name: hello-world\n".to_vec(),
        ),
        (
            "rootfs/usr/local/lib/containers/hello-world/hello-world",
            0o755,
            vec![0x7f; 4096],
        ),
    ]);
    oci_layout(
        &v.join("extensions/siderolabs/hello-world-service"),
        &[("amd64", ext.clone()), ("arm64", ext)],
    );
    let keys = common::gen_keys(dir.path());
    let registry = registry(dir.path());
    Fixture {
        dir,
        assets,
        keys,
        registry,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a replica on a free port and waits for `/healthz`.
fn start(f: &Fixture, name: &str, extra: &[&str]) -> Service {
    start_as(f, name, None, extra)
}

/// Starts a replica; `external` is the URL clients use (replicas behind one Service share it;
/// `{port}` in it stands for the replica's port).
fn start_as(f: &Fixture, name: &str, external: Option<&str>, extra: &[&str]) -> Service {
    start_with_env(f, name, external, &[], extra)
}

/// [`start_as`] with environment variables `env` set last (over the defaults).
fn start_with_env(
    f: &Fixture,
    name: &str,
    external: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
    extra: &[&str],
) -> Service {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let external = external
        .map(|e| e.replace("{port}", &port.to_string()))
        .unwrap_or_else(|| url.clone());
    let log = f.dir.path().join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .arg("serve")
        .env("IMAGER_SERVE_LISTEN", format!("127.0.0.1:{port}"))
        .env("IMAGER_SERVE_INSECURE_REGISTRY", "true")
        // The images these tests push are unsigned (tests/serve_trust.rs checks signatures).
        .env("IMAGER_SERVE_CONTAINER_SIGNATURE_DISABLED", "true")
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["--external-url", &external])
        // Defaults the caller may replace: the inputs directory and the store.
        .args(if extra.contains(&"--assets-registry") {
            vec![]
        } else {
            vec!["--assets".into(), f.assets.display().to_string()]
        })
        .args(if extra.contains(&"--registry") {
            vec![]
        } else {
            vec![
                "--registry".into(),
                format!("127.0.0.1:{}/factory", f.registry.1),
            ]
        })
        .arg("--secureboot-dir")
        .arg(&f.keys)
        .arg("--work-dir")
        .arg(f.dir.path().join(format!("work-{name}")))
        .args(extra)
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let service = Service { child, url, log };
    let healthz = format!("{}/healthz", service.url);
    assert!(
        common::wait_until(Duration::from_secs(10), || get(&healthz).0 == 200),
        "the service did not come up; log:\n{}",
        service.log_text()
    );
    service
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(600))
        .build()
}

/// (status, headers, body) of a request; 4xx/5xx are answers too.
fn request(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let req = agent().request(method, url);
    let result = match body {
        Some(b) => req.set("Content-Type", "application/yaml").send_bytes(b),
        None => req.call(),
    };
    let r = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return (0, vec![], e.to_string().into_bytes()),
    };
    let status = r.status();
    let headers = r
        .headers_names()
        .into_iter()
        .map(|n| (n.clone(), r.header(&n).unwrap_or_default().to_string()))
        .collect();
    let mut bytes = Vec::new();
    r.into_reader().read_to_end(&mut bytes).unwrap();
    (status, headers, bytes)
}

fn get(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    request("GET", url, None)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// POSTs a schematic; returns its ID.
fn create(s: &Service, body: &str) -> String {
    let (status, _, out) = request(
        "POST",
        &format!("{}/schematics", s.url),
        Some(body.as_bytes()),
    );
    assert_eq!(
        status,
        201,
        "POST /schematics: {}",
        String::from_utf8_lossy(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// The value of a counter (summed over its label sets) in `/metrics`.
fn metric(s: &Service, name: &str) -> f64 {
    let (status, _, body) = get(&format!("{}/metrics", s.url));
    assert_eq!(status, 200, "/metrics: {}", String::from_utf8_lossy(&body));
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (up to 60 s) until replica `name` of `f` (served as `s`) is building: its build
/// directory exists under `--work-dir`/builds while `image_factory_assets_built_total` is
/// still `built_before`. Returns whether that was seen; a test asserts it before it
/// interrupts "a build in flight".
fn wait_build_in_flight(f: &Fixture, s: &Service, name: &str, built_before: f64) -> bool {
    let builds = f.dir.path().join(format!("work-{name}/builds"));
    common::wait_until(Duration::from_secs(60), || {
        let building = std::fs::read_dir(&builds)
            .map(|d| d.filter_map(|e| e.ok()).any(|e| e.path().is_dir()))
            .unwrap_or(false);
        building && metric(s, "image_factory_assets_built_total") == built_before
    })
}

/// Tags of `repo` in the fixture's registry.
fn tags(f: &Fixture, repo: &str) -> Vec<String> {
    let (status, _, body) = get(&format!(
        "http://127.0.0.1:{}/v2/factory/{repo}/tags/list",
        f.registry.1
    ));
    if status == 404 {
        return vec![];
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    t.sort();
    t
}

/// Waits (at most 60 s) until `repo` has `n` tags: assets are pushed to the cache while
/// they are served.
fn wait_tags(f: &Fixture, repo: &str, n: usize) -> Vec<String> {
    for _ in 0..600 {
        let t = tags(f, repo);
        // distribution lists a tag a moment before its manifest can be read by it.
        let readable = |tag: &String| {
            let url = format!(
                "http://127.0.0.1:{}/v2/factory/{repo}/manifests/{tag}",
                f.registry.1
            );
            agent()
                .head(&url)
                .set("Accept", "application/vnd.oci.image.manifest.v1+json")
                .call()
                .is_ok()
        };
        if t.len() >= n && t.iter().all(readable) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{repo} did not reach {n} tags: {:?}", tags(f, repo));
}

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
const ARGS_SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - console=ttyS0\n    - imager.serve=test\n  meta:\n    - key: 0xa\n      value: '{\"hello\": 1}'\n";

#[test]
fn schematics_round_trip_and_bad_bodies_store_nothing() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    assert_eq!(create(&s, "{}"), EMPTY_ID);
    let (status, headers, body) = get(&format!("{}/schematics/{EMPTY_ID}", s.url));
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"customization: {}\n"[..])
    );
    assert_eq!(header(&headers, "content-type"), "application/yaml");
    // The spec's vector; the canonical bytes POSTed again give the same ID.
    let id = create(
        &s,
        "{\"customization\": {\"extraKernelArgs\": [\"noapic\", \"nolapic\"]}}",
    );
    assert_eq!(
        id,
        "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"
    );
    let (_, _, canonical) = get(&format!("{}/schematics/{id}", s.url));
    assert_eq!(create(&s, std::str::from_utf8(&canonical).unwrap()), id);
    // Stored as the factory stores them: a blob whose digest is the ID, tagged <ID>.
    assert_eq!(
        tags(&f, "schematics"),
        vec![EMPTY_ID.to_string(), id.clone()]
    );
    let blob = get(&format!(
        "http://127.0.0.1:{}/v2/factory/schematics/blobs/sha256:{id}",
        f.registry.1
    ));
    assert_eq!(blob.2, canonical);

    let before = tags(&f, "schematics");
    let deep = format!(
        "a:\n{}",
        (0..80)
            .map(|i| format!("{}b{i}:\n", "  ".repeat(i + 1)))
            .collect::<String>()
    );
    for (body, want) in [
        ("customization:\n  something: 1\n".to_string(), 400),
        (
            "customization:\n  meta:\n    - key: 256\n      value: x\n".to_string(),
            400,
        ),
        (String::new(), 400),
        ("customization: [\n".to_string(), 400),
        ("owner: someone\n".to_string(), 400),
        ("customization:\n  bootloader: auto\n".to_string(), 400),
        (deep, 400),
        (
            format!(
                "customization:\n  extraKernelArgs:\n{}",
                "    - aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n".repeat(3000)
            ),
            413,
        ),
        // Over the route's body limit (1 MiB): the same answer as over the schematic's.
        ("#".repeat(2 << 20), 413),
    ] {
        let (status, headers, out) = request(
            "POST",
            &format!("{}/schematics", s.url),
            Some(body.as_bytes()),
        );
        assert_eq!(
            status,
            want,
            "{body:.60?} → {}",
            String::from_utf8_lossy(&out)
        );
        assert!(header(&headers, "content-type").starts_with("text/plain"));
        assert!(
            out.ends_with(b"\n") && out.iter().filter(|b| **b == b'\n').count() == 1,
            "one line: {out:?}"
        );
        if want == 413 {
            assert_eq!(
                String::from_utf8_lossy(&out),
                "schematic is too large (limit 64 KiB)\n"
            );
        }
    }
    assert_eq!(tags(&f, "schematics"), before, "bad bodies store nothing");
    let (status, _, body) = get(&format!("{}/schematics/{}", s.url, "0".repeat(64)));
    assert_eq!(
        (status, body.as_slice()),
        (404, &b"schematic not found\n"[..])
    );
    // Logs: one JSON line per request with the request ID.
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("\"/schematics\""))
        .expect("a request log line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    for k in [
        "request_id",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
    ] {
        assert!(!v[k].is_null(), "{k} in {line}");
    }
    // A refused request's line says why; an answered one has no `error`.
    let refused: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["fields"]["status"] == 404 || v["status"] == 404)
        .collect();
    assert!(
        refused.iter().any(|v| {
            let e = if v["fields"].is_object() {
                &v["fields"]["error"]
            } else {
                &v["error"]
            };
            e == "schematic not found"
        }),
        "a 404 line with its error: {log}"
    );
    // The start line: versions as a plain list, no absent fields.
    let serving = log
        .lines()
        .find(|l| l.contains("\"serving\""))
        .expect("the serving line");
    assert!(!serving.contains("assets_registry"), "{serving}");
    assert!(!serving.contains("[\\\""), "versions as a list: {serving}");
}

/// (.cmdline of the UKI in the ISO's ESP, the UKI's path) — after xorriso, mtools and sbverify accept it.
fn check_secureboot_iso(f: &Fixture, iso: &Path) -> (String, PathBuf) {
    let listing = run_ok(
        Command::new(require_tool("xorriso"))
            .arg("-indev")
            .arg(iso)
            .args(["-find", "/", "-type", "f"]),
    );
    assert!(listing.contains("/EFI/Linux/Talos-v1.9.2.efi"), "{listing}");
    let work = iso.with_extension("parts");
    std::fs::create_dir_all(&work).unwrap();
    let esp = fat::iso_esp(iso, &work);
    fat::fsck(&esp);
    let uki = work.join("uki.efi");
    fat::copy_out(&esp, "::/EFI/Linux/Talos-v1.9.2.efi", &uki);
    let loader = work.join("BOOTX64.EFI");
    fat::copy_out(&esp, "::/EFI/BOOT/BOOTX64.EFI", &loader);
    common::sbverify(&f.keys, &uki);
    common::sbverify(&f.keys, &loader);
    let bytes = std::fs::read(&uki).unwrap();
    let pe = goblin::pe::PE::parse(&bytes).unwrap();
    let s = pe
        .sections
        .iter()
        .find(|s| s.name().ok() == Some(".cmdline"))
        .expect(".cmdline");
    let start = s.pointer_to_raw_data as usize;
    let cmdline = String::from_utf8_lossy(&bytes[start..start + s.virtual_size as usize])
        .trim_end_matches('\0')
        .to_string();
    (cmdline, uki)
}

#[test]
fn secureboot_iso_with_args_and_meta_then_from_the_cache() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    let id = create(&s, ARGS_SCHEMATIC);
    let url = format!("{}/image/{id}/{VERSION}/metal-amd64-secureboot.iso", s.url);
    let t = Instant::now();
    let (status, headers, first) = get(&url);
    let first_secs = t.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    assert_eq!(
        header(&headers, "content-type"),
        "application/x-iso9660-image"
    );
    assert_eq!(header(&headers, "content-length"), first.len().to_string());
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"metal-amd64-secureboot.iso\""
    );
    let iso = f.dir.path().join("first.iso");
    std::fs::write(&iso, &first).unwrap();
    let (cmdline, _) = check_secureboot_iso(&f, &iso);
    assert!(
        cmdline.contains("imager.serve=test")
            && cmdline.contains("talos.environment=INSTALLER_META_BASE64="),
        "{cmdline}"
    );
    assert_eq!(metric(&s, "image_factory_assets_built_total"), 1.0);
    assert_eq!(
        metric(&s, "image_factory_assets_delivered_cached_total"),
        0.0
    );

    // Once the cache has it: HEAD waits like GET and answers the same headers; then GET from the cache.
    wait_tags(&f, "cache", 1);
    let (status, headers, body) = request("HEAD", &url, None);
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(header(&headers, "content-length"), first.len().to_string());
    let t = Instant::now();
    let (status, _, second) = get(&url);
    let cached_secs = t.elapsed().as_secs_f64();
    assert_eq!(status, 200);
    assert!(second == first, "the cached ISO is byte-identical");
    assert_eq!(metric(&s, "image_factory_assets_built_total"), 1.0);
    assert_eq!(
        metric(&s, "image_factory_assets_delivered_cached_total"),
        2.0,
        "{}",
        s.log_text()
    );
    assert_eq!(tags(&f, "cache").len(), 1);
    // Time to first byte and throughput of the cached asset (streamed from the registry).
    let t = Instant::now();
    let r = agent().get(&url).call().unwrap();
    let ttfb = t.elapsed();
    let mut n = 0u64;
    let mut reader = r.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = reader.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let total = t.elapsed();
    assert_eq!(n, first.len() as u64);
    // The CLI build of the same profile (without the virtual schematic extension).
    let out = f.dir.path().join("cli");
    let t = Instant::now();
    run_ok(
        common::imager()
            .arg("secureboot-iso")
            .arg("--install-dir")
            .arg(f.assets.join(VERSION))
            .arg("--secureboot-dir")
            .arg(&f.keys)
            .args([
                "--arch",
                "amd64",
                "--extra-kernel-arg",
                "imager.serve=test",
                "--output",
            ])
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", "1559424892"),
    );
    let cli_secs = t.elapsed().as_secs_f64();
    println!(
        "ISO {} bytes: first request {first_secs:.2} s (built; CLI build of the profile {cli_secs:.2} s), cached {cached_secs:.3} s; cached TTFB {:.1} ms, {:.0} MiB/s",
        first.len(),
        ttfb.as_secs_f64() * 1000.0,
        n as f64 / 1048576.0 / total.as_secs_f64()
    );
    // A replica that never built it serves the same bytes from the registry.
    let t2 = start_as(&f, "b", Some(&s.url), &[]);
    let (_, _, third) = get(&format!(
        "{}/image/{id}/{VERSION}/metal-amd64-secureboot.iso",
        t2.url
    ));
    assert!(third == first);
    assert_eq!(metric(&t2, "image_factory_assets_built_total"), 0.0);
}

#[test]
fn boot_served_secureboot_iso_enforced_with_predicted_pcr11_and_the_args() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    let id = create(&s, ARGS_SCHEMATIC);
    let (status, _, bytes) = get(&format!(
        "{}/image/{id}/{VERSION}/metal-amd64-secureboot.iso",
        s.url
    ));
    assert_eq!(status, 200);
    let iso = f.dir.path().join("served.iso");
    std::fs::write(&iso, &bytes).unwrap();
    let (_, uki) = check_secureboot_iso(&f, &iso);
    // PCR 11 predicted from the UKI itself (its sections, as systemd-stub measures them).
    let report: serde_json::Value = serde_json::from_str(&run_ok(
        common::imager().args(["inspect", "--json"]).arg(&uki),
    ))
    .unwrap();
    let predicted = report["pcr11"][0]["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bank"] == "sha256")
        .unwrap()["after_stub"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let log = boot(
        Media::Cdrom(iso),
        SecureBoot::Enrolled(f.keys.join("uki-signing-cert.pem")),
        true,
        300,
    );
    log.assert_measured(1, &predicted);
    let cmdline = log.cmdline.clone().unwrap_or_default();
    assert!(
        cmdline.contains("imager.serve=test"),
        "{cmdline}; log {}",
        log.path.display()
    );
}

#[test]
fn installer_through_the_registry_frontend_is_pulled_by_skopeo() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    let id = create(&s, ARGS_SCHEMATIC);
    let host = s.url.trim_start_matches("http://");
    let image = format!("docker://{host}/installer-secureboot/{id}:{VERSION}");
    let raw = run_ok(
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(&image),
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let arches: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"], "{raw}\n{}", s.log_text());
    let layout = f.dir.path().join("pulled");
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--src-tls-verify=false", "--override-arch", "amd64"])
            .arg(&image)
            .arg(format!("oci:{}:x", layout.display())),
    );
    // The last layer holds the signed UKI (named as Talos 1.9 names it) and systemd-boot.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let last = blob(layers.last().unwrap()["digest"].as_str().unwrap());
    let unpacked = f.dir.path().join("layer");
    std::fs::create_dir_all(&unpacked).unwrap();
    let listing = run_ok(
        Command::new("tar")
            .arg("xzvf")
            .arg(&last)
            .arg("-C")
            .arg(&unpacked),
    );
    assert!(
        listing.contains("usr/install/amd64/vmlinuz.efi.signed"),
        "{listing}"
    );
    common::sbverify(
        &f.keys,
        &unpacked.join("usr/install/amd64/vmlinuz.efi.signed"),
    );
    common::sbverify(
        &f.keys,
        &unpacked.join("usr/install/amd64/systemd-boot.efi"),
    );
    // A second pull redirects to the stored index at once.
    let t = Instant::now();
    let (status, headers, _) = request(
        "HEAD",
        &format!("{}/v2/installer-secureboot/{id}/manifests/{VERSION}", s.url),
        None,
    );
    assert_eq!(status, 307);
    assert!(header(&headers, "location").contains(&format!(
        "/v2/factory/installer-secureboot/{id}/manifests/sha256:"
    )));
    assert!(t.elapsed() < Duration::from_secs(5));
    // Unknown image names and schematics are refused.
    assert_eq!(
        get(&format!("{}/v2/nonsense/{id}/manifests/{VERSION}", s.url)).0,
        400
    );
    assert_eq!(
        get(&format!(
            "{}/v2/installer/{}/manifests/{VERSION}",
            s.url,
            "0".repeat(64)
        ))
        .0,
        404
    );
}

#[test]
fn ipxe_script_urls_fetch_the_kernel_and_initramfs() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    let id = create(&s, ARGS_SCHEMATIC);
    let (status, _, script) = get(&format!("{}/pxe/{id}/{VERSION}/metal-amd64", s.url));
    assert_eq!(status, 200);
    let script = String::from_utf8(script).unwrap();
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(&lines[..3], ["#!ipxe", "", "imgfree"], "{script}");
    assert!(script.ends_with("\nboot\n"));
    let kernel: Vec<&str> = lines[3].split(' ').collect();
    assert_eq!(kernel[0], "kernel");
    assert_eq!(
        kernel[1],
        format!("{}/image/{id}/{VERSION}/kernel-amd64", s.url)
    );
    assert!(lines[3].contains("imager.serve=test") && lines[3].contains("talos.platform=metal"));
    let initrd = lines[4].strip_prefix("initrd ").unwrap();
    let (status, headers, k) = get(kernel[1]);
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, "application/octet-stream")
    );
    assert!(
        k == std::fs::read(demo_dir().join("amd64/vmlinuz")).unwrap(),
        "the kernel as given"
    );
    let (status, headers, i) = get(initrd);
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, "application/x-xz")
    );
    let base = std::fs::read(demo_dir().join("amd64/initramfs.xz")).unwrap();
    assert!(
        i.len() > base.len() && i[..base.len()] == base[..],
        "base initramfs + the schematic extension"
    );
    // The command line the script carries is the cmdline asset, byte for byte.
    let (_, _, cmdline) = get(&format!(
        "{}/image/{id}/{VERSION}/cmdline-metal-amd64",
        s.url
    ));
    assert!(lines[3].ends_with(&format!(" {}", String::from_utf8(cmdline).unwrap())));
    let (_, _, sb) = get(&format!(
        "{}/pxe/{id}/{VERSION}/metal-x86_64-secureboot",
        s.url
    ));
    let sb = String::from_utf8(sb).unwrap();
    assert!(
        sb.contains(&format!(
            "kernel {}/image/{id}/{VERSION}/metal-amd64-secureboot-uki.efi ",
            s.url
        )),
        "{sb}"
    );
    assert!(!sb.contains("initrd"));
}

/// The factory's PXE flow in a real firmware: QEMU's iPXE chains to the served script
/// (`chain http://.../pxe/<id>/<version>/metal-amd64`, as the README shows), fetches the
/// kernel and the initramfs with the schematic's extension over HTTP and boots them. The
/// guest reaches the host's loopback as 10.0.2.2, so that is the external URL here.
#[test]
fn boot_the_served_ipxe_script_through_qemus_ipxe() {
    let f = fixture();
    let s = start_as(&f, "pxe", Some("http://10.0.2.2:{port}"), &[]);
    let id = create(&s, ARGS_SCHEMATIC);
    let port = s.url.rsplit(':').next().unwrap();
    let tftp = f.dir.path().join("tftp");
    std::fs::create_dir(&tftp).unwrap();
    std::fs::write(
        tftp.join("boot.ipxe"),
        format!("#!ipxe\nchain http://10.0.2.2:{port}/pxe/{id}/{VERSION}/metal-amd64\n"),
    )
    .unwrap();
    let log = common::boot::pxe_boot(
        &tftp,
        "boot.ipxe",
        "IMAGER-BOOT-OK",
        Duration::from_secs(240),
    );
    assert!(
        log.contains("IMAGER-BOOT-OK"),
        "iPXE -> served script -> kernel + initramfs:\n{log}"
    );
    assert!(
        log.contains("imager.serve=test"),
        "the schematic's args reached the kernel:\n{log}"
    );
}

#[test]
fn two_replicas_one_registry_same_asset_at_once() {
    let f = fixture();
    // Replicas behind one Service share its URL.
    let a = start_as(&f, "a", Some("http://factory.example"), &[]);
    let b = start_as(&f, "b", Some("http://factory.example"), &[]);
    let id = create(
        &a,
        "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/hello-world-service\n",
    );
    let path = format!("image/{id}/{VERSION}/metal-amd64.raw.zst");
    let (ua, ub) = (format!("{}/{path}", a.url), format!("{}/{path}", b.url));
    let ta = std::thread::spawn(move || get(&ua));
    let tb = std::thread::spawn(move || get(&ub));
    let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
    assert_eq!(
        (ra.0, rb.0),
        (200, 200),
        "{}",
        String::from_utf8_lossy(&ra.2)
    );
    assert!(ra.2 == rb.2, "both replicas answer the same bytes");
    assert_eq!(header(&ra.1, "content-type"), "application/zstd");
    assert_eq!(wait_tags(&f, "cache", 1).len(), 1, "one cache entry");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tags(&f, "cache").len(), 1, "one cache entry");
    // zstd accepts it; the disk inside is GPT.
    let out = Command::new(require_tool("zstd"))
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    let mut stdin = out.stdin.take().unwrap();
    let data = ra.2.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let o = out.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(o.status.success());
    assert_eq!(&o.stdout[512..520], b"EFI PART");
    let hits = metric(&a, "image_factory_profile_system_extension_hits_total")
        + metric(&b, "image_factory_profile_system_extension_hits_total");
    assert!(hits >= 1.0);

    // Replica a killed (SIGKILL) while it builds: b still serves; every cache entry in
    // the registry is complete (its layer reads back with its digest).
    let mut a = a;
    let id2 = create(&a, "customization:\n  extraKernelArgs:\n    - killed=1\n");
    let path = format!("image/{id2}/{VERSION}/metal-amd64.raw.xz");
    let ua = format!("{}/{path}", a.url);
    let built_before = metric(&a, "image_factory_assets_built_total");
    let doomed = std::thread::spawn(move || get(&ua));
    assert!(
        wait_build_in_flight(&f, &a, "a", built_before),
        "replica a never showed a build in flight; log:\n{}",
        a.log_text()
    );
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let _ = doomed.join();
    let (status, _, from_b) = get(&format!("{}/{path}", b.url));
    assert_eq!(status, 200);
    let registry = format!("http://127.0.0.1:{}/v2/factory/cache", f.registry.1);
    assert!(!from_b.is_empty());
    for tag in wait_tags(&f, "cache", 2) {
        let m = agent()
            .get(&format!("{registry}/manifests/{tag}"))
            .set("Accept", "application/vnd.oci.image.manifest.v1+json")
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let m: serde_json::Value = serde_json::from_str(&m).unwrap();
        let layer = &m["layers"][0];
        let digest = layer["digest"].as_str().unwrap();
        let (status, _, blob) = get(&format!("{registry}/blobs/{digest}"));
        assert_eq!(status, 200);
        assert_eq!(sha256(&blob), digest, "cache entry {tag} is complete");
        assert_eq!(blob.len() as u64, layer["size"].as_u64().unwrap());
    }
    assert_eq!(tags(&f, "cache").len(), 2);
}

#[test]
fn sigterm_lets_the_in_flight_response_finish() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    let id = create(&s, "{}");
    let url = format!("{}/image/{id}/{VERSION}/metal-amd64-secureboot.iso", s.url);
    let built_before = metric(&s, "image_factory_assets_built_total");
    let inflight = std::thread::spawn(move || get(&url));
    assert!(
        wait_build_in_flight(&f, &s, "a", built_before),
        "no build in flight; log:\n{}",
        s.log_text()
    );
    let mut s = s;
    unsafe {
        libc::kill(s.child.id() as i32, libc::SIGTERM);
    }
    let (status, headers, body) = inflight.join().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-length"), body.len().to_string());
    let started = Instant::now();
    let exit = s.child.wait().unwrap();
    assert!(
        exit.success() && started.elapsed() < Duration::from_secs(30),
        "{exit:?}"
    );
    assert!(s.log_text().contains("shutting down"));
}

#[test]
fn hostile_paths_are_refused_and_the_service_keeps_serving() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    let id = create(&s, "{}");
    let cases = [
        (format!("/image/{id}/{VERSION}/..%2F..%2Fetc%2Fpasswd"), 400),
        (format!("/image/{id}/..%2F..%2F/metal-amd64.iso"), 400),
        (format!("/image/{id}/{VERSION}/../../../etc/passwd"), 404),
        (format!("/image/{id}/v9.9.9/metal-amd64.iso"), 404),
        (format!("/image/{id}/not-a-version/metal-amd64.iso"), 400),
        (format!("/image/{id}/{VERSION}/metal-riscv64.iso"), 400),
        (format!("/image/{id}/{VERSION}/metal-amd64.ssd"), 400),
        (format!("/image/{id}/v1.10.0/metal-arm64.iso"), 404),
        (
            format!("/image/{}/{VERSION}/metal-amd64.iso", "f".repeat(64)),
            404,
        ),
        (format!("/image/..%2F/{VERSION}/metal-amd64.iso"), 404),
        (format!("/pxe/{id}/{VERSION}/metal-sparc"), 400),
        (format!("/image/{id}/{VERSION}/metal-amd64.iso.sha256"), 402),
        ("/version/..%2F..%2F/extensions/official".to_string(), 400),
        (format!("/image/{id}/{VERSION}/{}", "a".repeat(5000)), 400),
    ];
    for (path, want) in &cases {
        let (status, _, body) = get(&format!("{}{path}", s.url));
        assert_eq!(status, *want, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(body.ends_with(b"\n"), "{path}: a message line");
    }
    // A client that sends half a body and stalls does not stop others.
    let mut slow = std::net::TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
    slow.write_all(
        b"POST /schematics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\ncustomization:",
    )
    .unwrap();
    assert_eq!(get(&format!("{}/healthz", s.url)).0, 200);
    let (status, _, versions) = get(&format!("{}/versions", s.url));
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(versions).unwrap(),
        "[\"v1.9.2\",\"v1.10.0\"]"
    );
    let (status, _, ext) = get(&format!("{}/version/1.9.2/extensions/official", s.url));
    assert_eq!(status, 200);
    let ext: serde_json::Value = serde_json::from_slice(&ext).unwrap();
    assert_eq!(ext[0]["name"], "siderolabs/hello-world-service");
    let (status, headers, overlays) = get(&format!("{}/version/v1.9.2/overlays/official", s.url));
    assert_eq!((status, overlays.as_slice()), (200, &b"[]"[..]));
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    assert_eq!(
        get(&format!("{}/version/v9.9.9/overlays/official", s.url)).0,
        404
    );
    let (status, headers, pem) = get(&format!("{}/secureboot/signing-cert.pem", s.url));
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, "application/x-pem-file")
    );
    assert!(pem == std::fs::read(f.keys.join("uki-signing-cert.pem")).unwrap());
    assert!(!s.log_text().contains("PRIVATE KEY"));
    drop(slow);
}

/// A loopback TCP proxy to the fixture's registry that holds every request writing to
/// it (`POST`/`PUT`/`PATCH`) while its gate is closed; reads pass.
struct WriteGate {
    port: u16,
    /// (closed, number of requests held so far)
    state: std::sync::Arc<(std::sync::Mutex<(bool, usize)>, std::sync::Condvar)>,
}

impl WriteGate {
    fn new(upstream: u16) -> WriteGate {
        use std::net::{TcpListener, TcpStream};
        use std::sync::{Arc, Condvar, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new((Mutex::new((false, 0usize)), Condvar::new()));
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let st = st.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        // Requests start a read after the previous answer: a chunk that
                        // starts with a writing method is a request's head.
                        if [&b"POST "[..], b"PUT ", b"PATCH "]
                            .iter()
                            .any(|m| chunk.starts_with(m))
                        {
                            let (lock, cv) = &*st;
                            let mut g = lock.lock().unwrap();
                            if g.0 {
                                g.1 += 1;
                                cv.notify_all();
                                while g.0 {
                                    g = cv.wait(g).unwrap();
                                }
                            }
                        }
                        if server.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        WriteGate { port, state }
    }

    fn set_closed(&self, closed: bool) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().0 = closed;
        cv.notify_all();
    }

    /// A guard that opens the gate when dropped (before the service it serves stops,
    /// which waits for its pushes).
    fn opened_on_drop(&self) -> impl Drop + '_ {
        struct Open<'a>(&'a WriteGate);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                self.0.set_closed(false);
            }
        }
        Open(self)
    }

    /// Waits until a write is held (at most 60 s); whether one was.
    fn wait_held(&self) -> bool {
        let (lock, cv) = &*self.state;
        let g = lock.lock().unwrap();
        let (g, _) = cv
            .wait_timeout_while(g, Duration::from_secs(60), |g| g.1 == 0)
            .unwrap();
        g.1 > 0
    }
}

/// `/metrics` counts a GET answered from an asset this replica built while its push to
/// the cache still runs as delivered from the cache (it is not built again).
#[test]
fn an_asset_served_while_its_push_runs_is_counted_as_delivered() {
    let f = fixture();
    let gate = WriteGate::new(f.registry.1);
    let store = format!("127.0.0.1:{}/factory", gate.port);
    let s = start(&f, "a", &["--registry", &store]);
    let id = create(&s, "{}");
    gate.set_closed(true);
    let _open = gate.opened_on_drop();
    let url = format!("{}/image/{id}/{VERSION}/kernel-amd64", s.url);
    let (status, _, first) = get(&url);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    assert!(gate.wait_held(), "the push to the cache never started");
    // The push is held: the asset is answered from this replica's build.
    let (status, _, second) = get(&url);
    assert_eq!(status, 200);
    assert!(first == second);
    assert_eq!(metric(&s, "image_factory_assets_built_total"), 1.0);
    assert_eq!(
        metric(&s, "image_factory_assets_delivered_cached_total"),
        1.0,
        "{}",
        s.log_text()
    );
    assert_eq!(
        metric(&s, "image_factory_assets_cached_bytes_total"),
        second.len() as f64
    );
}

/// SIGTERM while a push to the cache is held: the process exits once the shutdown drain
/// (`IMAGER_SERVE_SHUTDOWN_DRAIN`, 3 s here) has run out, saying so, instead of waiting
/// for the push.
#[test]
fn sigterm_with_a_stuck_push_exits_after_the_drain() {
    let f = fixture();
    let gate = WriteGate::new(f.registry.1);
    let store = format!("127.0.0.1:{}/factory", gate.port);
    let drain = ("IMAGER_SERVE_SHUTDOWN_DRAIN", std::ffi::OsStr::new("3"));
    let mut s = start_with_env(&f, "a", None, &[drain], &["--registry", &store]);
    let id = create(&s, "{}");
    gate.set_closed(true);
    let _open = gate.opened_on_drop();
    let url = format!("{}/image/{id}/{VERSION}/kernel-amd64", s.url);
    let (status, _, body) = get(&url);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(gate.wait_held(), "the push to the cache never started");
    let started = Instant::now();
    unsafe {
        libc::kill(s.child.id() as i32, libc::SIGTERM);
    }
    let mut exit = None;
    while exit.is_none() && started.elapsed() < Duration::from_secs(30) {
        exit = s.child.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let exit =
        exit.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{}", s.log_text()));
    assert!(exit.success(), "{exit:?}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM"
    );
    let log = s.log_text();
    assert!(
        log.contains("still running after the shutdown drain"),
        "{log}"
    );
}

/// An extension layout whose `index.json` is unreadable or not JSON is left out of the
/// catalog with one log line naming the file; the others are listed.
#[test]
fn extension_layouts_with_a_broken_index_are_skipped_and_named() {
    let f = fixture();
    let ext = f.assets.join(VERSION).join("extensions/siderolabs");
    let garbled = ext.join("garbled/index.json");
    std::fs::create_dir_all(garbled.parent().unwrap()).unwrap();
    std::fs::write(&garbled, b"{\"manifests\": [").unwrap();
    let no_digest = ext.join("no-digest/index.json");
    std::fs::create_dir_all(no_digest.parent().unwrap()).unwrap();
    std::fs::write(&no_digest, br#"{"manifests": [{"size": 1}]}"#).unwrap();
    let s = start(&f, "a", &[]);
    let (status, _, body) = get(&format!("{}/version/{VERSION}/extensions/official", s.url));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let cat: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = cat
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["siderolabs/hello-world-service"]);
    assert!(cat[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    let log = s.log_text();
    for (file, why) in [(&garbled, "not JSON"), (&no_digest, "no sha256 digest")] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&file.display().to_string()))
            .collect();
        assert!(
            lines.len() == 1 && lines[0].contains(why),
            "{file:?}: {log}"
        );
    }
}

/// The shared store on HTTPS behind an internal CA: trusted through `SSL_CERT_FILE`,
/// schematics and a built asset land there and the second request is served from it;
/// a bad `SSL_CERT_FILE` stops the service at start with one line naming the file.
#[test]
fn store_on_an_https_registry_behind_an_internal_ca() {
    let f = fixture();
    let tls_dir = f.dir.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let (reg, ca) = common::registry::registry_with_tls(&tls_dir);
    let store = format!("127.0.0.1:{}/factory", reg.1);
    let trust: [(&str, &std::ffi::OsStr); 2] = [
        ("IMAGER_SERVE_INSECURE_REGISTRY", "false".as_ref()),
        ("SSL_CERT_FILE", ca.as_os_str()),
    ];
    let s = start_with_env(&f, "tls", None, &trust, &["--registry", &store]);
    let id = create(&s, "customization:\n  extraKernelArgs:\n    - over=https\n");
    let url = format!("{}/image/{id}/{VERSION}/cmdline-metal-amd64", s.url);
    let (status, _, first) = get(&url);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    // Asked again until the push to the HTTPS registry has landed: then from the cache.
    for _ in 0..100 {
        let (status, _, again) = get(&url);
        assert_eq!((status, &again), (200, &first));
        if metric(&s, "image_factory_assets_delivered_cached_total") >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(&s, "image_factory_assets_delivered_cached_total"),
        1.0,
        "{}",
        s.log_text()
    );
    assert_eq!(metric(&s, "image_factory_assets_built_total"), 1.0);
    // The schematic is in the HTTPS registry, read there by an independent client
    // that trusts the same CA.
    std::fs::create_dir(tls_dir.join("certs.d")).unwrap();
    std::fs::copy(&ca, tls_dir.join("certs.d/ca.crt")).unwrap();
    let listed = run_ok(
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(tls_dir.join("certs.d"))
            .arg(format!("docker://{store}/schematics:{id}")),
    );
    assert!(
        listed.contains("application/vnd.sidero.dev-image.schematic"),
        "{listed}"
    );

    let not_pem = tls_dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let untrusted = "invalid peer certificate: UnknownIssuer (a registry behind an internal CA: set SSL_CERT_FILE";
    for (ca_file, want) in [
        (std::ffi::OsStr::new(""), untrusted),
        (
            not_pem.as_os_str(),
            "not-a-ca.pem: holds no PEM certificate",
        ),
    ] {
        let port = free_port();
        let out = Command::new(env!("CARGO_BIN_EXE_imager"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--registry", &store, "--assets"])
            .arg(&f.assets)
            .arg("--work-dir")
            .arg(tls_dir.join("work-refused"))
            .env("SSL_CERT_FILE", ca_file)
            .env_remove("IMAGER_SERVE_INSECURE_REGISTRY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{want:?} in {stderr}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens"
        );
    }
    drop(reg);
}

/// Every schematic image shares one config blob (`{}`): 60 schematics created by 20
/// clients at once push it concurrently. A registry on file-system storage fails some
/// of those pushes for a moment (500 on the blob, BLOB_UNKNOWN on the manifest); the
/// service retries them, and every schematic lands and reads back.
#[test]
fn concurrent_pushes_sharing_a_blob_all_land() {
    let f = fixture();
    let s = start(&f, "a", &[]);
    let bodies: Vec<String> = (0..60)
        .map(|i| format!("customization:\n  extraKernelArgs:\n    - shared={i}\n"))
        .collect();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let url = s.url.clone();
    let workers: Vec<_> = (0..20)
        .map(|_| {
            let (q, url) = (queue.clone(), url.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                loop {
                    let Some(body) = q.lock().unwrap().pop() else {
                        break;
                    };
                    let (status, _, answer) =
                        request("POST", &format!("{url}/schematics"), Some(body.as_bytes()));
                    out.push((status, String::from_utf8_lossy(&answer).into_owned()));
                }
                out
            })
        })
        .collect();
    let answers: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(answers.len(), 60);
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 201)
        .collect();
    assert!(
        failed.is_empty(),
        "{failed:?}\nservice log:\n{}",
        s.log_text()
    );
    for (_, answer) in &answers {
        let v: serde_json::Value = serde_json::from_str(answer).unwrap();
        let id = v["id"].as_str().unwrap();
        let (status, _, body) = get(&format!("{}/schematics/{id}", s.url));
        assert_eq!(status, 200, "GET /schematics/{id}");
        assert_eq!(sha256(&body), format!("sha256:{id}"));
    }
}

#[test]
fn load_test_200_requests_20_at_once() {
    let f = fixture();
    let s = start(&f, "a", &["--concurrency", "2"]);
    let ids: Vec<String> = (0..4)
        .map(|i| {
            create(
                &s,
                &format!("customization:\n  extraKernelArgs:\n    - load={i}\n"),
            )
        })
        .collect();
    // Mixed: cached after their first build (kernel, initramfs, UKI per schematic) and
    // cheap ones (cmdline, PXE scripts, schematics, versions).
    let mut urls = Vec::new();
    for n in 0..200 {
        let id = &ids[n % ids.len()];
        let path = match (n / ids.len()) % 6 {
            0 => format!("/image/{id}/{VERSION}/kernel-amd64"),
            1 => format!("/image/{id}/{VERSION}/initramfs-amd64.xz"),
            2 => format!("/image/{id}/{VERSION}/metal-amd64-uki.efi"),
            3 => format!("/pxe/{id}/{VERSION}/metal-amd64"),
            4 => format!("/schematics/{id}"),
            _ => format!("/image/{id}/{VERSION}/cmdline-metal-amd64"),
        };
        urls.push(format!("{}{path}", s.url));
    }
    let queue = std::sync::Arc::new(std::sync::Mutex::new(urls));
    let started = Instant::now();
    let workers: Vec<_> = (0..20)
        .map(|_| {
            let q = queue.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                loop {
                    let Some(u) = q.lock().unwrap().pop() else {
                        break;
                    };
                    let t = Instant::now();
                    let (status, headers, body) = get(&u);
                    let length = header(&headers, "content-length").to_string();
                    out.push((status, t.elapsed(), body.len(), u, sha256(&body), length));
                }
                out
            })
        })
        .collect();
    let mut results: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let total = started.elapsed();
    let errors: Vec<_> = results.iter().filter(|r| r.0 != 200).collect();
    assert!(
        errors.is_empty(),
        "errors: {:?}\nservice log:\n{}",
        errors.iter().map(|r| (r.0, &r.3)).collect::<Vec<_>>(),
        s.log_text()
    );
    assert_eq!(results.len(), 200);
    // Every body is the one answer for its URL: one reference per URL, fetched alone
    // after the load, and each body as long as its own Content-Length said.
    let mut reference = std::collections::BTreeMap::new();
    for r in &results {
        let (digest, len) = reference.entry(r.3.clone()).or_insert_with(|| {
            let (status, _, body) = get(&r.3);
            assert_eq!(status, 200, "{}", r.3);
            (sha256(&body), body.len())
        });
        assert_eq!(
            r.5,
            r.2.to_string(),
            "{}: Content-Length against the bytes received",
            r.3
        );
        assert!(
            r.4 == *digest && r.2 == *len,
            "{}: a {}-byte body under load, {} bytes alone (digests {} / {})",
            r.3,
            r.2,
            len,
            r.4,
            digest
        );
    }
    assert_eq!(reference.len(), 24, "distinct URLs");
    results.sort_by_key(|r| r.1);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let bytes: usize = results.iter().map(|r| r.2).sum();
    println!(
        "load: 200 requests, 20 concurrent, {:.2} s total, {:.0} req/s, {:.1} MiB; latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}; builds {}",
        total.as_secs_f64(),
        200.0 / total.as_secs_f64(),
        bytes as f64 / 1048576.0,
        ms(results[99].1),
        ms(results[179].1),
        ms(results[197].1),
        ms(results[199].1),
        metric(&s, "image_factory_assets_built_total"),
    );
    // Peak RSS of the replica.
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    if let Some(l) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!(
            "replica peak RSS: {}",
            l.split_whitespace().nth(1).unwrap_or("?").to_string() + " kB"
        );
    }
    // The kernel is the same for every schematic: one build; initramfs, UKI and
    // cmdline once per schematic.
    let (_, _, m) = get(&format!("{}/metrics", s.url));
    let m = String::from_utf8_lossy(&m).into_owned();
    let built: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("image_factory_assets_built_total"))
        .collect();
    assert_eq!(
        metric(&s, "image_factory_assets_built_total"),
        13.0,
        "{built:#?}\nservice log:\n{}",
        s.log_text()
    );
}

#[test]
fn bad_configuration_is_one_line_and_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let port = free_port();
    for (args, want) in [
        (
            vec!["--assets", "/nonexistent", "--registry", "r/x"],
            "--assets /nonexistent: not a directory",
        ),
        (
            vec!["--assets", "/", "--registry", "http://r/x"],
            "--registry \"http://r/x\": give host[:port]/prefix without a scheme",
        ),
        (
            vec!["--assets", "/", "--registry", "r/UPPER"],
            "the repository prefix must be lower-case",
        ),
        (
            vec!["--assets", "/", "--registry", "r/x", "--concurrency", "0"],
            "--concurrency 0",
        ),
        (
            vec![
                "--assets",
                "/",
                "--registry",
                "r/x",
                "--secureboot-dir",
                keys.to_str().unwrap(),
            ],
            "uki-signing-key.pem is missing",
        ),
        (
            vec![
                "--assets",
                "/",
                "--registry",
                "r/x",
                "--external-url",
                "ftp://x",
            ],
            "--external-url \"ftp://x\": must start with http:// or https://",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_imager"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// An OCI layout holding one image for `arch` (one gzip layer per tar), tagged `tag`.
fn image_layout(dir: &Path, arch: &str, layers: &[Vec<u8>], tag: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha256(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).unwrap();
        let layer = gz.finish().unwrap();
        diff_ids.push(sha256(tar));
        descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(&layer), "size": layer.len()}));
    }
    let config = serde_json::json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config.as_bytes()), "size": config.len()},
        "layers": descriptors,
    })
    .to_string();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest.as_bytes()),
        "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A copy of the per-arch layout `flat` whose `index.json` names one multi-arch image
/// index tagged `tag` (what `skopeo copy --all` pushes as one tag).
fn multi_arch_layout(flat: &Path, out: &Path, tag: &str) {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(flat.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    let flat_index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(flat.join("index.json")).unwrap()).unwrap();
    let mut manifests = flat_index["manifests"].as_array().unwrap().clone();
    for m in &mut manifests {
        m.as_object_mut().unwrap().remove("annotations");
    }
    let inner = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}).to_string();
    let d = sha256(inner.as_bytes());
    std::fs::write(blobs.join(&d[7..]), &inner).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": inner.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(out.join("index.json"), index.to_string()).unwrap();
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// `skopeo copy --all` of `from` to `docker://127.0.0.1:<port>/<to>`.
fn skopeo_push(port: u16, from: &str, to: &str) {
    skopeo_push_as(port, from, to, &[]);
}

/// [`skopeo_push`] with more `skopeo copy` flags (e.g. `--format v2s2`).
fn skopeo_push_as(port: u16, from: &str, to: &str, flags: &[&str]) {
    run_ok(
        Command::new(require_tool("skopeo"))
            .arg("copy")
            .args(flags)
            .args([
                "--all",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                from,
                &format!("docker://127.0.0.1:{port}/{to}"),
            ]),
    );
}

/// Images shaped like Talos's in the fixture's registry under `src/`, built from the same
/// inputs as the fixture's `--assets` directory: `imager` (usr/install/<arch>/ in two
/// layers, the second whiting out a file of the first), `installer-base` (an index of both
/// arches), `extensions` (image-digests + descriptions.yaml) and the extension by digest.
fn push_talos_images(f: &Fixture) {
    let port = f.registry.1;
    let demo = demo_dir();
    let mut files: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for arch in ["amd64", "arm64"] {
        for name in [
            "vmlinuz",
            "initramfs.xz",
            "systemd-stub.efi",
            "systemd-boot.efi",
        ] {
            files.push((
                format!("usr/install/{arch}/{name}"),
                0o644,
                std::fs::read(demo.join(arch).join(name)).unwrap(),
            ));
        }
    }
    files.push(("usr/install/amd64/stale".into(), 0o644, b"old".to_vec()));
    files.push(("usr/bin/imager".into(), 0o755, b"#!/bin/sh\n".to_vec()));
    let entries: Vec<(&str, u32, Vec<u8>)> = files
        .iter()
        .map(|(n, m, b)| (n.as_str(), *m, b.clone()))
        .collect();
    let layer1 = common::tar_of(&entries);
    let layer2 = common::tar_of(&[("usr/install/amd64/.wh.stale", 0o644, vec![])]);
    let images = f.dir.path().join("images");
    image_layout(&images.join("imager"), "amd64", &[layer1, layer2], VERSION);
    skopeo_push(
        port,
        &format!("oci:{}:{VERSION}", images.join("imager").display()),
        &format!("src/imager:{VERSION}"),
    );
    // Tags the factory does not offer (below 1.2.0, not a version, a pre-release of an
    // older minor), and one it does (a pre-release of the newest minor).
    for tag in [
        "v1.1.0",
        "latest",
        "v1.9.3-rc.1",
        "v1.10.0-alpha.1",
        "v1.10.1-rc.0",
    ] {
        skopeo_push(
            port,
            &format!("docker://127.0.0.1:{port}/src/imager:{VERSION}"),
            &format!("src/imager:{tag}"),
        );
    }
    let v = f.assets.join(VERSION);
    multi_arch_layout(&v.join("installer-base"), &images.join("base"), VERSION);
    skopeo_push(
        port,
        &format!("oci:{}:{VERSION}", images.join("base").display()),
        &format!("src/installer-base:{VERSION}"),
    );
    // The same as docker schema 2 (a manifest list of docker manifests), as some mirrors
    // store it, for the pre-release.
    skopeo_push_as(
        port,
        &format!("oci:{}:{VERSION}", images.join("base").display()),
        "src/installer-base:v1.10.0-alpha.1",
        &["--format", "v2s2"],
    );
    multi_arch_layout(
        &v.join("extensions/siderolabs/hello-world-service"),
        &images.join("hello"),
        "v1.0.0",
    );
    skopeo_push(
        port,
        &format!("oci:{}:v1.0.0", images.join("hello").display()),
        "src/hello-world-service:v1.0.0",
    );
    let index = agent()
        .get(&format!(
            "http://127.0.0.1:{port}/v2/src/hello-world-service/manifests/v1.0.0"
        ))
        .set("Accept", "application/vnd.oci.image.index.v1+json")
        .call()
        .unwrap();
    let mut bytes = Vec::new();
    index.into_reader().read_to_end(&mut bytes).unwrap();
    let hello = format!(
        "ghcr.io/siderolabs/hello-world-service:v1.0.0@{}",
        sha256(&bytes)
    );
    let missing = format!(
        "ghcr.io/siderolabs/missing-ext:v1@sha256:{}",
        "0".repeat(64)
    );
    let catalog = common::tar_of(&[
        (
            "image-digests",
            0o644,
            format!("{hello}\n{missing}\n").into_bytes(),
        ),
        (
            "descriptions.yaml",
            0o644,
            format!("\"{hello}\":\n    author: Sidero Labs\n    description: An example extension service.\n")
                .into_bytes(),
        ),
    ]);
    image_layout(&images.join("extensions"), "amd64", &[catalog], VERSION);
    let talosctl = common::tar_of(&[(
        "talosctl-linux-amd64",
        0o755,
        b"\x7fELF talosctl from the registry".to_vec(),
    )]);
    image_layout(&images.join("talosctl"), "amd64", &[talosctl], VERSION);
    skopeo_push(
        port,
        &format!("oci:{}:{VERSION}", images.join("talosctl").display()),
        &format!("src/talosctl-all:{VERSION}"),
    );
    skopeo_push(
        port,
        &format!("oci:{}:{VERSION}", images.join("extensions").display()),
        &format!("src/extensions:{VERSION}"),
    );
}

#[test]
fn assets_registry_serves_the_same_bytes_as_the_assets_directory() {
    let f = fixture();
    push_talos_images(&f);
    let port = f.registry.1;
    // One external URL: it is in the virtual schematic extension's manifest.
    let external = Some("http://factory.test");
    let dir = start_as(&f, "dir", external, &[]);
    let src = format!("127.0.0.1:{port}/src");
    let store = format!("127.0.0.1:{port}/other");
    let reg = start_as(
        &f,
        "reg",
        external,
        &[
            "--assets-registry",
            &src,
            "--insecure-assets-registry",
            "--registry",
            &store,
        ],
    );
    // The tags the factory offers, in semver order.
    let (status, _, body) = get(&format!("{}/versions", reg.url));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&body).unwrap(),
        [VERSION, "v1.10.0-alpha.1", "v1.10.1-rc.0"],
        "{}",
        reg.log_text()
    );
    let (status, _, body) = get(&format!(
        "{}/version/{VERSION}/extensions/official",
        reg.url
    ));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        catalog[0]["name"], "siderolabs/hello-world-service",
        "{catalog}"
    );
    assert_eq!(catalog[0]["author"], "Sidero Labs");
    assert_eq!(catalog[0]["description"], "An example extension service.");
    assert_eq!(
        catalog[0]["ref"],
        "ghcr.io/siderolabs/hello-world-service:v1.0.0"
    );
    // A pulled catalog.json that is not a catalog: a 500 and one log line naming the
    // file, not an empty catalog; the service keeps serving.
    let pulled = f
        .dir
        .path()
        .join(format!("work-reg/inputs/{VERSION}/catalog.json"));
    let good = std::fs::read(&pulled).unwrap();
    std::fs::write(&pulled, b"[{\"name\": 1").unwrap();
    let (status, _, body) = get(&format!(
        "{}/version/{VERSION}/extensions/official",
        reg.url
    ));
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    let logged: Vec<String> = reg
        .log_text()
        .lines()
        .filter(|l| l.contains(&pulled.display().to_string()))
        .map(str::to_string)
        .collect();
    assert!(
        logged.len() == 1 && logged[0].contains("not an extension catalog"),
        "{logged:?}"
    );
    assert_eq!(get(&format!("{}/healthz", reg.url)).0, 200);
    std::fs::write(&pulled, good).unwrap();
    // No catalog image for the pre-release: an empty catalog.
    let (status, _, body) = get(&format!(
        "{}/version/v1.10.0-alpha.1/extensions/official",
        reg.url
    ));
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));

    let schematic = "customization:\n  extraKernelArgs:\n    - imager.serve=registry\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/hello-world-service\n";
    let id = create(&dir, schematic);
    assert_eq!(create(&reg, schematic), id);
    for path in [
        "kernel-amd64",
        "metal-amd64-secureboot-uki.efi",
        "installer-amd64.tar",
    ] {
        let (s1, _, a) = get(&format!("{}/image/{id}/{VERSION}/{path}", dir.url));
        let (s2, h2, b) = get(&format!("{}/image/{id}/{VERSION}/{path}", reg.url));
        assert_eq!(
            (s1, s2),
            (200, 200),
            "{path}: {}",
            String::from_utf8_lossy(&b)
        );
        assert_eq!(header(&h2, "content-length"), b.len().to_string());
        assert!(a == b, "{path}: the registry inputs give other bytes");
    }
    common::sbverify(&f.keys, &{
        let p = f.dir.path().join("reg-uki.efi");
        let (_, _, b) = get(&format!(
            "{}/image/{id}/{VERSION}/metal-amd64-secureboot-uki.efi",
            reg.url
        ));
        std::fs::write(&p, b).unwrap();
        p
    });
    let (status, h, body) = get(&format!(
        "{}/talosctl/{VERSION}/talosctl-linux-amd64",
        reg.url
    ));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"\x7fELF talosctl from the registry");
    assert_eq!(
        header(&h, "content-disposition"),
        "attachment; filename=\"talosctl-linux-amd64\""
    );
    // The replica built them itself (another store), from inputs pulled once and whited out.
    assert!(metric(&reg, "image_factory_assets_built_total") >= 3.0);
    let unpacked = f.dir.path().join("work-reg/inputs").join(VERSION);
    assert!(unpacked.join("amd64/vmlinuz").is_file());
    assert!(
        !unpacked.join("amd64/stale").exists(),
        "the whiteout applies"
    );
    assert!(
        unpacked
            .join("extensions/siderolabs/hello-world-service/index.json")
            .is_file()
    );

    // What is missing is named: a version that is not offered, an extension whose image
    // is not in the registry, an installer base that is not there.
    let (status, _, body) = get(&format!("{}/image/{id}/v1.9.3-rc.1/kernel-amd64", reg.url));
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let bad = create(
        &reg,
        "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/missing-ext\n",
    );
    let (status, _, body) = get(&format!(
        "{}/image/{bad}/{VERSION}/initramfs-amd64.xz",
        reg.url
    ));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("missing-ext") && text.contains(&src),
        "{text}"
    );
    assert_eq!(create(&reg, "{}"), EMPTY_ID);
    let (status, _, body) = get(&format!(
        "{}/image/{EMPTY_ID}/v1.10.1-rc.0/installer-amd64.tar",
        reg.url
    ));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{text}");
    assert!(
        text.contains(&format!("{src}/installer-base:v1.10.1-rc.0")),
        "{text}"
    );

    // A docker schema 2 installer base: the installer is built on it and carries its layers.
    let (status, _, body) = get(&format!(
        "{}/image/{EMPTY_ID}/v1.10.0-alpha.1/installer-amd64.tar",
        reg.url
    ));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let tar = f.dir.path().join("alpha-installer.tar");
    std::fs::write(&tar, &body).unwrap();
    let listing = run_ok(Command::new("tar").arg("tf").arg(&tar));
    assert!(
        listing.contains("manifest.json") && listing.contains("index.json"),
        "{listing}"
    );

    // An unreachable assets registry: the service comes up, says why it has no versions,
    // and keeps serving what needs no inputs.
    let gone = format!("127.0.0.1:{}/src", free_port());
    let down = start(
        &f,
        "down",
        &["--assets-registry", &gone, "--insecure-assets-registry"],
    );
    let (status, _, body) = get(&format!("{}/versions", down.url));
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
    let (status, _, body) = get(&format!("{}/image/{id}/{VERSION}/kernel-amd64", down.url));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(&gone), "{text}");
    assert_eq!(get(&format!("{}/schematics/{id}", down.url)).0, 200);
}

#[test]
fn registry_credentials_from_flags_or_auth_files_and_one_line_without() {
    let f = fixture();
    let (user, password) = ("imager", "s3cret-pass");
    let auth_dir = f.dir.path().join("auth-registry");
    std::fs::create_dir_all(&auth_dir).unwrap();
    let locked = common::registry::registry_with_htpasswd(&auth_dir, user, password);
    let store = format!("127.0.0.1:{}/factory", locked.1);
    let password_file = f.dir.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let basic = |req: ureq::Request| {
        use base64::Engine as _;
        let raw = format!("{user}:{password}");
        req.set(
            "Authorization",
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ),
        )
    };

    // With the flags: schematics and assets are stored and served.
    let s = start(
        &f,
        "flags",
        &[
            "--registry",
            &store,
            "--registry-username",
            user,
            "--registry-password-file",
            password_file.to_str().unwrap(),
        ],
    );
    let id = create(&s, ARGS_SCHEMATIC);
    let (status, _, kernel) = get(&format!("{}/image/{id}/{VERSION}/kernel-amd64", s.url));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&kernel));
    let stored = |repo: &str| -> Vec<String> {
        let url = format!("http://127.0.0.1:{}/v2/factory/{repo}/tags/list", locked.1);
        assert_eq!(
            agent()
                .get(&url)
                .call()
                .map_err(|e| e.to_string())
                .unwrap_err()
                .split(':')
                .next_back()
                .map(str::trim),
            Some("status code 401"),
            "the registry refuses anonymous reads"
        );
        let body = match basic(agent().get(&url)).call() {
            Ok(r) => r.into_string().unwrap(),
            Err(ureq::Error::Status(404, _)) => return vec![],
            Err(e) => panic!("{e}"),
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(stored("schematics"), std::slice::from_ref(&id));
    for _ in 0..100 {
        if !stored("cache").is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored("cache").len(), 1, "{}", s.log_text());
    assert!(
        !s.log_text().contains(password),
        "the password is never logged"
    );
    // The installer through /v2/: the store needs credentials the client does not
    // have, so the service relays the store's manifests and blobs instead of redirecting.
    let host = s.url.trim_start_matches("http://");
    let layout = f.dir.path().join("pulled-with-auth");
    run_ok(
        Command::new(require_tool("skopeo"))
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/installer/{id}:{VERSION}"))
            .arg(format!("oci:{}:x", layout.display())),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    let (status, _, _) = request(
        "GET",
        &format!("{}/v2/installer/{id}/manifests/{VERSION}", s.url),
        None,
    );
    assert_eq!(
        status, 200,
        "relayed, not a redirect the client could not follow"
    );
    assert!(!s.log_text().contains(password));
    let external = s.url.clone();
    drop(s);

    // From a docker config.json (DOCKER_CONFIG), no flags: served from the cache.
    let docker = f.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"http://127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#,
            locked.1
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .arg("serve")
        .env("DOCKER_CONFIG", &docker)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--insecure-registry",
        ])
        .arg("--assets")
        .arg(&f.assets)
        .args([
            "--registry",
            &store,
            "--external-url",
            &external,
            "--work-dir",
        ])
        .arg(f.dir.path().join("work-docker"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let s = Service {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log: f.dir.path().join("none.log"),
    };
    let mut up = false;
    for _ in 0..100 {
        if get(&format!("{}/healthz", s.url)).0 == 200 {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "the service with a docker config came up");
    let (status, _, again) = get(&format!("{}/image/{id}/{VERSION}/kernel-amd64", s.url));
    assert_eq!(status, 200);
    assert!(again == kernel);
    assert_eq!(metric(&s, "image_factory_assets_built_total"), 0.0);
    drop(s);

    // Without credentials, or with a wrong password: one line naming the registry and
    // the refusal, and nothing listens. The same for an assets registry.
    let wrong = f.dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let empty = f.dir.path().join("no-docker");
    let assets_ref = format!("127.0.0.1:{}/src", locked.1);
    for (args, want) in [
        (
            vec!["--assets", f.assets.to_str().unwrap(), "--registry", &store],
            "no credentials for",
        ),
        (
            vec![
                "--assets",
                f.assets.to_str().unwrap(),
                "--registry",
                &store,
                "--registry-username",
                user,
                "--registry-password-file",
                wrong.to_str().unwrap(),
            ],
            "were refused",
        ),
        (
            vec![
                "--assets-registry",
                &assets_ref,
                "--insecure-assets-registry",
                "--registry",
                &format!("127.0.0.1:{}/factory", f.registry.1),
            ],
            "no credentials for",
        ),
    ] {
        let port = free_port();
        let out = Command::new(env!("CARGO_BIN_EXE_imager"))
            .arg("serve")
            .env("DOCKER_CONFIG", &empty)
            .env("HOME", &empty)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--insecure-registry",
            ])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ")
                && stderr.contains(&format!("127.0.0.1:{}", locked.1))
                && stderr.contains("HTTP 401")
                && stderr.contains(want)
                && !stderr.contains(password),
            "{args:?}: {stderr}"
        );
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
    // With the credentials, the assets registry is read (it has no imager images: no versions).
    let s = start(
        &f,
        "assets-auth",
        &[
            "--assets-registry",
            &assets_ref,
            "--insecure-assets-registry",
            "--assets-registry-username",
            user,
            "--assets-registry-password-file",
            password_file.to_str().unwrap(),
        ],
    );
    assert_eq!(create(&s, ARGS_SCHEMATIC), id);
    let (status, _, body) = get(&format!("{}/image/{id}/{VERSION}/kernel-amd64", s.url));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains(&format!("{assets_ref}/imager not found")),
        "{text}"
    );
}

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn slow_clients_are_cut_after_the_header_timeout_and_others_are_served() {
    let f = fixture();
    let s = start(&f, "slow", &["--header-read-timeout", "3"]);
    let addr = s.url.trim_start_matches("http://").to_string();
    let before = rss_kib(s.child.id());
    // Slowloris: many connections, each sending its headers a byte a second, never done.
    let slow: Vec<_> = (0..100)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(&addr).unwrap();
                c.set_read_timeout(Some(Duration::from_millis(1000)))
                    .unwrap();
                let t = Instant::now();
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap();
                let mut buf = [0u8; 512];
                while t.elapsed() < Duration::from_secs(20) {
                    if c.write_all(&[b'a' + (i % 26) as u8]).is_err() {
                        return t.elapsed();
                    }
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) if t.elapsed() >= Duration::from_millis(900) => {
                            // Closed (0, reset) — or just our 1 s read timeout: look again.
                            if let Ok(0) | Err(_) = c.peek(&mut buf)
                                && c.write_all(b"b").is_err()
                            {
                                return t.elapsed();
                            }
                        }
                        Ok(_) => {
                            // The server answered (408) before closing.
                            return t.elapsed();
                        }
                        _ => {}
                    }
                }
                t.elapsed()
            })
        })
        .collect();
    // Meanwhile ordinary requests are served promptly.
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        let r = Instant::now();
        assert_eq!(get(&format!("{}/healthz", s.url)).0, 200);
        slowest = slowest.max(r.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = rss_kib(s.child.id());
    let cut: Vec<Duration> = slow.into_iter().map(|h| h.join().unwrap()).collect();
    let latest = cut.iter().max().unwrap();
    println!(
        "100 slow clients cut after {:.1}..{:.1} s; slowest ordinary request {:.0} ms; RSS {} -> {} KiB",
        cut.iter().min().unwrap().as_secs_f64(),
        latest.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0,
        before,
        during
    );
    assert!(
        cut.iter()
            .all(|d| *d >= Duration::from_secs(2) && *d < Duration::from_secs(8)),
        "every slow client is cut after the 3 s header timeout: {cut:?}"
    );
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(
        during < before + 64 * 1024,
        "memory stays bounded: {before} -> {during} KiB"
    );
    assert_eq!(get(&format!("{}/healthz", s.url)).0, 200);
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_one() {
    let f = fixture();
    let s = start(
        &f,
        "cap",
        &["--header-read-timeout", "2", "--max-connections", "2"],
    );
    // healthz polling in start() left no connection open (each request closes its agent's).
    std::thread::sleep(Duration::from_millis(200));
    let addr = s.url.trim_start_matches("http://").to_string();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(get(&format!("{}/healthz", s.url)).0, 200);
    let waited = t.elapsed();
    // Served once the header timeout freed a slot, not before.
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    drop(held);
}

#[test]
fn talosctl_downloads_overlays_and_cosign_answers() {
    let f = fixture();
    let v11 = f.assets.join("v1.11.0");
    std::fs::create_dir_all(v11.join("talosctl")).unwrap();
    std::os::unix::fs::symlink(demo_dir().join("amd64"), v11.join("amd64")).unwrap();
    for name in [
        "talosctl-linux-amd64",
        "talosctl-darwin-arm64",
        "talosctl-windows-amd64.exe",
        "README",
    ] {
        std::fs::write(v11.join("talosctl").join(name), format!("binary {name}")).unwrap();
    }
    std::fs::create_dir_all(f.assets.join(VERSION).join("talosctl")).unwrap();
    std::fs::write(
        f.assets.join(VERSION).join("talosctl/talosctl-linux-amd64"),
        "old",
    )
    .unwrap();
    let s = start(&f, "talosctl", &[]);
    // 1.11 and later list the binaries' URLs, older versions nothing (as the factory).
    let (status, _, body) = get(&format!("{}/talosctl/1.11.0", s.url));
    assert_eq!(status, 200);
    let urls: Vec<String> = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        urls,
        [
            "talosctl-darwin-arm64",
            "talosctl-linux-amd64",
            "talosctl-windows-amd64.exe"
        ]
        .map(|n| format!("{}/talosctl/v1.11.0/{n}", s.url))
    );
    let (status, _, body) = get(&format!("{}/talosctl/{VERSION}", s.url));
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
    let (status, h, body) = get(&urls[2]);
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"binary talosctl-windows-amd64.exe"[..])
    );
    assert_eq!(header(&h, "content-type"), "application/octet-stream");
    assert_eq!(
        header(&h, "content-disposition"),
        "attachment; filename=\"talosctl-windows-amd64.exe\""
    );
    let (status, h, body) = request("HEAD", &urls[1], None);
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(header(&h, "content-length"), "27");
    for (path, want) in [
        ("/talosctl/v1.11.0/README", "not a talosctl binary name"),
        (
            "/talosctl/v1.11.0/talosctl-linux-riscv64",
            "not available for Talos version v1.11.0",
        ),
        (
            "/talosctl/v1.11.0/..%2Fvmlinuz",
            "not a talosctl binary name",
        ),
        (
            "/talosctl/v9.9.9/talosctl-linux-amd64",
            "version v9.9.9 is not available",
        ),
        (
            "/oci/cosign/signing-key.pub",
            "no cache signing key is configured",
        ),
    ] {
        let (status, _, body) = get(&format!("{}{path}", s.url));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 404, "{path}: {text}");
        assert!(text.contains(want), "{path}: {text}");
    }
    // Overlays: an empty catalog, and a schematic naming one is stored (same ID as the
    // factory's) but its assets are refused with the reason.
    let (status, _, body) = get(&format!("{}/version/v1.11.0/overlays/official", s.url));
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
    let id = create(
        &s,
        "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n",
    );
    let (status, _, body) = get(&format!(
        "{}/image/{id}/{VERSION}/metal-arm64.raw.xz",
        s.url
    ));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("\"rpi_generic\"")
            && text.contains("overlays are not supported by this service"),
        "{text}"
    );
}
