//! Registry credentials: a user name and password for one registry host, given on the
//! command line or found in the auth files container tools keep (podman/skopeo's
//! `REGISTRY_AUTH_FILE` and `$XDG_RUNTIME_DIR/containers/auth.json`, docker's
//! `$DOCKER_CONFIG/config.json` and `~/.docker/config.json`; their `auths` map, keyed by
//! host with or without a scheme, holds `auth` = base64 of `user:password`, or
//! `username` and `password`). A credential helper named by the file — `credHelpers`
//! for the host, else `credsStore` — is asked first, as docker does: the program
//! `docker-credential-<name>` on `PATH`, run with `get` and the server address on
//! stdin, answering `{"Username","Secret"}` (ECR, GCR, ACR and desktop keychains work
//! this way); when it has nothing for the host, the file's own entry is used.
//!
//! The password is never printed: [`Credentials`]'s `Debug` hides it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::error::{Error, Result};

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// `user` with the password read from `file` (one line; a trailing newline is dropped).
    pub fn from_password_file(username: &str, file: &Path) -> Result<Credentials> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            return Err(Error::invalid(format!(
                "{}: the password file is empty",
                file.display()
            )));
        }
        Ok(Credentials::new(username, password))
    }

    /// The `Authorization` header value of HTTP basic authentication.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The auth files looked at, in order (the first that names the host wins).
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        out.push(f);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        out.push(d.join("containers/auth.json"));
    }
    if let Some(d) = env("DOCKER_CONFIG") {
        out.push(d.join("config.json"));
    }
    if let Some(h) = env("HOME") {
        out.push(h.join(".docker/config.json"));
    }
    out
}

/// Credentials for `host` (`host[:port]`) from the first auth file that has them.
/// A file that exists but does not parse, or a helper that fails, is an error naming it.
pub fn lookup(host: &str) -> Result<Option<Credentials>> {
    for file in auth_files() {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        let found = lookup_in(&text, host).map_err(|m| Error::format(&file, m))?;
        if let Some(helper) = &found.helper {
            let program = format!("docker-credential-{helper}");
            let from_helper = run_helper(Path::new(&program), &server_address(host))
                .map_err(|m| Error::format(&file, format!("credential helper {program}: {m}")))?;
            if from_helper.is_some() {
                return Ok(from_helper);
            }
        }
        if found.inline.is_some() {
            return Ok(found.inline);
        }
    }
    Ok(None)
}

/// What one auth file says about a host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The credential helper to ask (`credHelpers[host]`, else `credsStore`).
    pub helper: Option<String>,
    /// The file's own `auths` entry.
    pub inline: Option<Credentials>,
}

/// What the auth file `text` says about `host`.
pub fn lookup_in(text: &[u8], host: &str) -> std::result::Result<Found, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    let wanted = normalize(host);
    let name = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let helper = doc
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| h.iter().find(|(k, _)| normalize(k) == wanted))
        .and_then(|(_, v)| name(v))
        .or_else(|| doc.get("credsStore").and_then(name));
    if let Some(h) = &helper
        && !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "credential helper name {h:?} is not a plain program name"
        ));
    }
    Ok(Found {
        helper,
        inline: inline_entry(&doc, &wanted)?,
    })
}

/// The `auths` entry for the normalized host `wanted`, if it holds credentials.
fn inline_entry(
    doc: &serde_json::Value,
    wanted: &str,
) -> std::result::Result<Option<Credentials>, String> {
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let Some((key, entry)) = auths.iter().find(|(k, _)| normalize(k) == wanted) else {
        return Ok(None);
    };
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if !field("auth").is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(field("auth").trim())
            .map_err(|_| format!("auths.{key:?}.auth is not base64"))?;
        let raw = String::from_utf8(raw).map_err(|_| format!("auths.{key:?}.auth is not UTF-8"))?;
        let (user, password) = raw
            .split_once(':')
            .ok_or_else(|| format!("auths.{key:?}.auth is not base64 of user:password"))?;
        return Ok(Some(Credentials::new(user, password)));
    }
    if !field("username").is_empty() {
        return Ok(Some(Credentials::new(field("username"), field("password"))));
    }
    Ok(None)
}

/// The server address a helper is asked for: the host, docker Hub as docker names it.
fn server_address(host: &str) -> String {
    match normalize(host).as_str() {
        "docker.io" => "https://index.docker.io/v1/".into(),
        h => h.to_string(),
    }
}

/// How long a credential helper may take (it may call a cloud API).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs credential helper `program get` for `server`: its credentials, `None` when it
/// has none for the server ("credentials not found") or is not installed, else the
/// reason in one line. Not installed is not an error (docker makes it one): a
/// `config.json` copied from a desktop names `credsStore: desktop`, and pulls of public
/// images must not fail for it; a registry that wants credentials says so with a 401.
pub fn run_helper(
    program: &Path,
    server: &str,
) -> std::result::Result<Option<Credentials>, String> {
    let spawned = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be run: {e}")),
    };
    // Docker writes the address without a newline and closes stdin.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let _ = stdin.write_all(server.as_bytes());
    drop(stdin);
    // Its answers are small; read them on threads so a chatty helper cannot block.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.by_ref().take(1 << 20).read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.by_ref().take(1 << 20).read_to_end(&mut b);
        b
    });
    let started = Instant::now();
    let status = loop {
        match child
            .try_wait()
            .map_err(|e| format!("cannot be waited for: {e}"))?
        {
            Some(status) => break status,
            None if started.elapsed() > HELPER_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("gave no answer in {} s", HELPER_TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let said = String::from_utf8_lossy(if out.is_empty() { &err } else { &out }).into_owned();
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!(
            "failed ({status}) for {server}: {}",
            super::one_line(said.trim())
        ));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_slice(&out)
        .map_err(|e| format!("answered for {server} with something other than JSON: {e}"))?;
    if a.username == "<token>" {
        return Err(format!(
            "answered for {server} with an identity token, which this client does not exchange"
        ));
    }
    if a.username.is_empty() && a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(a.username, a.secret)))
}

/// An `auths` key or a host reduced to `host[:port]`: scheme and path dropped, docker
/// Hub's names made one.
fn normalize(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_file_entries() {
        let text = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "127.0.0.1:5000": {"username": "u", "password": "p:w"},
            "http://reg.example:8443/path": {"auth": "YTpiOmM="}
        }, "credsStore": "desktop"}"#;
        let get = |h: &str| lookup_in(text, h).unwrap().inline;
        assert_eq!(
            get("registry-1.docker.io"),
            Some(Credentials::new("user", "pass"))
        );
        assert_eq!(get("127.0.0.1:5000"), Some(Credentials::new("u", "p:w")));
        assert_eq!(get("reg.example:8443"), Some(Credentials::new("a", "b:c")));
        assert_eq!(get("other"), None);
        assert_eq!(
            lookup_in(text, "other").unwrap().helper.as_deref(),
            Some("desktop")
        );
        assert!(lookup_in(b"{", "x").is_err());
        assert!(lookup_in(br#"{"auths":{"x":{"auth":"!!"}}}"#, "x").is_err());
        assert!(!format!("{:?}", Credentials::new("u", "secret")).contains("secret"));
        assert_eq!(Credentials::new("u", "p").basic(), "Basic dTpw");
    }

    #[test]
    fn cred_helpers_for_the_host_come_before_creds_store() {
        let text = br#"{"credsStore": "desktop",
            "credHelpers": {"123.dkr.ecr.example.com": "ecr-login", "bad": "../x"},
            "auths": {"123.dkr.ecr.example.com": {}}}"#;
        let found = lookup_in(text, "123.dkr.ecr.example.com").unwrap();
        assert_eq!(
            found,
            Found {
                helper: Some("ecr-login".into()),
                inline: None
            }
        );
        assert_eq!(
            lookup_in(text, "ghcr.io").unwrap().helper.as_deref(),
            Some("desktop")
        );
        assert!(
            lookup_in(text, "bad")
                .unwrap_err()
                .contains("plain program name")
        );
        assert_eq!(
            lookup_in(br#"{"auths": {}}"#, "x").unwrap(),
            Found::default()
        );
        assert_eq!(
            server_address("registry-1.docker.io"),
            "https://index.docker.io/v1/"
        );
    }

    /// A helper script answering as docker-credential-* programs do.
    fn helper(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\nread -r server || true\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn credential_helpers_are_run_with_the_server_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let ok = helper(
            dir.path(),
            "ok",
            r#"[ "$1" = get ] && [ "$server" = reg.example:5000 ] || exit 3
printf '{"ServerURL":"%s","Username":"robot","Secret":"s3cret"}' "$server""#,
        );
        assert_eq!(
            run_helper(&ok, "reg.example:5000").unwrap(),
            Some(Credentials::new("robot", "s3cret"))
        );
        let e = run_helper(&ok, "other:5000").unwrap_err();
        assert!(e.contains("failed") && e.contains("other:5000"), "{e}");

        let none = helper(
            dir.path(),
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert_eq!(run_helper(&none, "x").unwrap(), None);
        let token = helper(
            dir.path(),
            "token",
            r#"echo '{"Username":"<token>","Secret":"t"}'"#,
        );
        assert!(
            run_helper(&token, "x")
                .unwrap_err()
                .contains("identity token")
        );
        let garbage = helper(dir.path(), "garbage", "echo hello");
        assert!(
            run_helper(&garbage, "x")
                .unwrap_err()
                .contains("other than JSON")
        );
        let missing = dir.path().join("docker-credential-absent");
        assert_eq!(
            run_helper(&missing, "x").unwrap(),
            None,
            "not installed: none"
        );
    }
}
