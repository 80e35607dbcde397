//! Registry credentials: a user name and password for one registry host, given on the
//! command line or found in the auth files container tools keep (podman/skopeo's
//! `REGISTRY_AUTH_FILE` and `$XDG_RUNTIME_DIR/containers/auth.json`, docker's
//! `$DOCKER_CONFIG/config.json` and `~/.docker/config.json`; their `auths` map, keyed by
//! host with or without a scheme, holds `auth` = base64 of `user:password`, or
//! `username` and `password`). Credential helpers (`credsStore`, `credHelpers`) run
//! programs and are not consulted.
//!
//! The password is never printed: [`Credentials`]'s `Debug` hides it.

use std::path::{Path, PathBuf};

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
/// A file that exists but does not parse is an error naming it.
pub fn lookup(host: &str) -> Result<Option<Credentials>> {
    for file in auth_files() {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        if let Some(c) = lookup_in(&text, host).map_err(|m| Error::format(&file, m))? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Credentials for `host` in one auth file's bytes.
pub fn lookup_in(text: &[u8], host: &str) -> std::result::Result<Option<Credentials>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let wanted = normalize(host);
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
        let get = |h: &str| lookup_in(text, h).unwrap();
        assert_eq!(
            get("registry-1.docker.io"),
            Some(Credentials::new("user", "pass"))
        );
        assert_eq!(get("127.0.0.1:5000"), Some(Credentials::new("u", "p:w")));
        assert_eq!(get("reg.example:8443"), Some(Credentials::new("a", "b:c")));
        assert_eq!(get("other"), None);
        assert!(lookup_in(b"{", "x").is_err());
        assert!(lookup_in(br#"{"auths":{"x":{"auth":"!!"}}}"#, "x").is_err());
        assert!(!format!("{:?}", Credentials::new("u", "secret")).contains("secret"));
        assert_eq!(Credentials::new("u", "p").basic(), "Basic dTpw");
    }
}
