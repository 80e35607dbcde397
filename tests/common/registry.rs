//! A loopback OCI registry for the tests that push and pull images.

use std::path::Path;
use std::process::{Child, Command};

use super::require_tool;

/// Debian's docker-registry (CNCF distribution) on a free loopback port, for pulls and
/// pushes that stay on this machine; killed when dropped. `.1` is the port.
pub struct Registry(pub Child, pub u16);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a registry storing its blobs under `dir`, and waits until it answers.
pub fn registry(dir: &Path) -> Registry {
    start(dir, "")
}

/// A registry that asks for HTTP basic authentication: `user` with `password`
/// (bcrypt in an htpasswd file, made by apache2-utils' `htpasswd -B`).
pub fn registry_with_htpasswd(dir: &Path, user: &str, password: &str) -> Registry {
    let line = super::run_ok(
        std::process::Command::new(require_tool("htpasswd")).args(["-nbB", user, password]),
    );
    let file = dir.join("htpasswd");
    std::fs::write(&file, line.trim()).unwrap();
    start(
        dir,
        &format!(
            "auth:\n  htpasswd:\n    realm: imager-test\n    path: {}\n",
            file.display()
        ),
    )
}

/// A registry on HTTPS with a certificate for `127.0.0.1` issued by a CA of its own
/// (made by `openssl`), as a registry behind an internal CA is; returns it and the
/// CA certificate's PEM file.
pub fn registry_with_tls(dir: &Path) -> (Registry, std::path::PathBuf) {
    let openssl = require_tool("openssl");
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let key = dir.join("registry.key");
    let csr = dir.join("registry.csr");
    let cert = dir.join("registry.pem");
    let ext = dir.join("registry.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    super::run_ok(
        Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=imager test CA",
                "-keyout",
            ])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    );
    super::run_ok(
        Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    super::run_ok(
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    );
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    );
    (start_with(dir, &tls, ""), ca)
}

fn start(dir: &Path, auth: &str) -> Registry {
    start_with(dir, "", auth)
}

/// Starts the registry; `http` is appended to its `http:` section, `auth` to the top.
fn start_with(dir: &Path, http: &str, auth: &str) -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{http}log:\n  level: error\n{auth}",
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
    let registry = Registry(child, port);
    assert!(
        super::wait_until(std::time::Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "docker-registry did not listen on port {port}"
    );
    registry
}
