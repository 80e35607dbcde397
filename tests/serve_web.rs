//! The `imager serve` web page in a real browser (Debian's `chromium`, headless): it
//! loads `/`, submits the page's own form (taken from the DOM Chromium rendered,
//! prefilled through the page's query parameters, submitted by a one-line script in a
//! wrapper page), follows the redirect to the result page, and that page must show the
//! ID `POST /schematics` returns for the same choices. Screenshots of both pages are
//! kept under `target/tmp/serve-web/` (paths printed).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::registry::registry;
use common::{demo_dir, require_tool};

const VERSION: &str = "v1.9.2";

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// A minimal OCI layout: `index.json` is what the catalog lists.
fn extension_layout(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2,"annotations":{"org.opencontainers.image.ref.name":"v1.0.0"}}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("description.txt"),
        "An example <extension> & service.\n",
    )
    .unwrap();
}

fn chromium(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", home.path().display()))
        .args(args)
        .env("HOME", home.path())
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let a = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in {text}"))
        + start.len();
    let b = text[a..].find(end).unwrap() + a;
    &text[a..b]
}

#[test]
fn the_wizard_in_chromium_creates_the_schematic_the_api_creates() {
    require_tool("chromium");
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join(VERSION)).unwrap();
    std::os::unix::fs::symlink(demo_dir().join("amd64"), assets.join(VERSION).join("amd64"))
        .unwrap();
    extension_layout(
        &assets
            .join(VERSION)
            .join("extensions/siderolabs/hello-world-service"),
    );
    extension_layout(&assets.join(VERSION).join("extensions/siderolabs/gvisor"));
    let reg = registry(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .arg("serve")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--external-url",
            &url,
            "--assets",
        ])
        .arg(&assets)
        .args([
            "--registry",
            &format!("127.0.0.1:{}/factory", reg.1),
            "--insecure-registry",
        ])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        // With keys, so the page offers SecureBoot (it greys it out without them).
        .arg("--secureboot-dir")
        .arg(common::gen_keys(dir.path()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _service = Service(child);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    assert!(
        common::wait_until(Duration::from_secs(10), || agent
            .get(&format!("{url}/healthz"))
            .call()
            .is_ok()),
        "the service did not come up"
    );

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-web");
    std::fs::create_dir_all(&shots).unwrap();
    let index_png = shots.join("index.png");
    let result_png = shots.join("result.png");

    // 1. `/` as Chromium renders it: the catalog of the version, escaped.
    let dom = chromium(&["--dump-dom", &format!("{url}/")]);
    assert!(
        dom.contains("siderolabs/hello-world-service") && dom.contains("siderolabs/gvisor"),
        "{dom}"
    );
    assert!(
        dom.contains("An example &lt;extension&gt; &amp; service."),
        "descriptions are escaped: {dom}"
    );
    chromium(&[
        "--window-size=1200,1800",
        &format!("--screenshot={}", index_png.display()),
        &format!("{url}/"),
    ]);

    // 2. The page's own form, prefilled through its query parameters, submitted.
    let choices = "version=v1.9.2&platform=metal&arch=amd64&secureboot=1&well_known_certs=1\
&ext=siderolabs%2Fhello-world-service&ext=siderolabs%2Fgvisor\
&extra_args=console%3DttyS0+talos.dashboard.disabled%3D1&meta=0xa%3D%7B%22externalIPs%22%3A%5B%5D%7D";
    let prefilled = chromium(&["--dump-dom", &format!("{url}/?{choices}")]);
    let form = format!("<form{}</form>", between(&prefilled, "<form", "</form>"));
    assert!(
        form.contains("value=\"siderolabs/gvisor\" checked"),
        "{form}"
    );
    let wrapper = format!(
        "<!DOCTYPE html><html><head><base href=\"{url}/\"></head><body>{form}\
<script>document.getElementById('submit').click()</script></body></html>"
    );
    let wrapper_file = dir.path().join("submit.html");
    std::fs::write(&wrapper_file, wrapper).unwrap();
    let result = chromium(&[
        "--virtual-time-budget=10000",
        "--dump-dom",
        &format!("file://{}", wrapper_file.display()),
    ]);
    let shown_id = between(&result, "<code id=\"schematic-id\">", "</code>").to_string();

    // 3. The API, for the same choices (extensions sorted, as the wizard sends them).
    let body = r#"{"customization": {"extraKernelArgs": ["console=ttyS0", "talos.dashboard.disabled=1"],
        "meta": [{"key": 10, "value": "{\"externalIPs\":[]}"}],
        "systemExtensions": {"officialExtensions": ["siderolabs/gvisor", "siderolabs/hello-world-service"]},
        "secureboot": {"includeWellKnownCertificates": true}}}"#;
    let r = agent
        .post(&format!("{url}/schematics"))
        .send_string(body)
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = serde_json::from_reader(r.into_reader()).unwrap();
    let api_id = v["id"].as_str().unwrap();
    assert_eq!(shown_id, api_id, "the result page shows the API's ID");
    assert!(
        result.contains(&format!(
            "{url}/image/{api_id}/{VERSION}/metal-amd64-secureboot.iso"
        )),
        "{result}"
    );
    assert!(
        result.contains(&format!(
            "{url}/pxe/{api_id}/{VERSION}/metal-amd64-secureboot"
        )),
        "{result}"
    );
    assert!(
        result.contains(&format!(
            "127.0.0.1:{port}/installer-secureboot/{api_id}:{VERSION}"
        )),
        "{result}"
    );
    assert!(
        result.contains("includeWellKnownCertificates: true"),
        "{result}"
    );

    // 4. The result page is GET-able: screenshot it.
    let result_url = format!(
        "{url}/ui/schematic/{api_id}?version={VERSION}&platform=metal&arch=amd64&secureboot=1"
    );
    chromium(&[
        "--window-size=1200,1400",
        &format!("--screenshot={}", result_png.display()),
        &result_url,
    ]);
    for png in [&index_png, &result_png] {
        let bytes = std::fs::read(png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{} is a real screenshot",
            png.display()
        );
        println!("screenshot: {}", png.display());
    }
}
