//! The PKCS#11 backend: a key (and optionally its certificate) on a token, named by
//! an RFC 7512 `pkcs11:` URI in `keyPath`/`certPath`, the way sbsign and OpenSSL's
//! providers take HSM keys. Talos has no PKCS#11 (its answer is the external
//! signer); this is for the HSMs every release pipeline has (YubiHSM, Luna, CloudHSM,
//! SoftHSM).
//!
//! The module is `module-path=` from the URI, else `IMAGER_PKCS11_MODULE`. Signing is
//! `CKM_RSA_PKCS` over the DER DigestInfo of the digest (RFC 8017 9.2), so the token
//! never hashes and the signature equals the file key's. Uses the `cryptoki` crate
//! (Parsec's kept binding); the module is loaded with `dlopen`, so a fully static
//! build (the container) cannot load one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::super::signer::{HashAlg, KeySigner};
use crate::error::{Error, Result};

/// The environment variable naming the module when the URI has no `module-path`.
pub const MODULE_ENV: &str = "IMAGER_PKCS11_MODULE";

/// Whether a `keyPath`/`certPath` value is a PKCS#11 URI rather than a file.
pub fn is_uri(s: &str) -> bool {
    s.len() >= 7 && s[..7].eq_ignore_ascii_case("pkcs11:")
}

/// The parts of an RFC 7512 URI this backend uses (the others are refused, so a
/// typo does not silently select another object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    /// `type=`: `private`, `public`, `cert`, ...
    pub object_type: Option<String>,
    pub pin_value: Option<String>,
    /// `pin-source=`: `file:PATH` or a bare path.
    pub pin_source: Option<String>,
    pub module_path: Option<String>,
}

/// Parses a `pkcs11:` URI (RFC 7512): `;`-separated path attributes, then
/// `?`/`&`-separated query attributes, values percent-decoded.
pub fn parse_uri(uri: &str) -> std::result::Result<Pkcs11Uri, String> {
    if !is_uri(uri) {
        return Err("does not start with pkcs11:".into());
    }
    let rest = &uri[7..];
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut out = Pkcs11Uri::default();
    let text = |name: &str, v: &str| -> std::result::Result<String, String> {
        String::from_utf8(pct_decode(v)?).map_err(|_| format!("{name}: not UTF-8"))
    };
    for attr in path.split(';').filter(|a| !a.is_empty()) {
        let (name, value) = attr
            .split_once('=')
            .ok_or_else(|| format!("path attribute {attr:?} has no '='"))?;
        let slot = match name {
            "token" => &mut out.token,
            "manufacturer" => &mut out.manufacturer,
            "model" => &mut out.model,
            "serial" => &mut out.serial,
            "object" => &mut out.object,
            "type" => &mut out.object_type,
            "id" => {
                set_once(&mut out.id, pct_decode(value)?, name)?;
                continue;
            }
            "slot-id" => {
                let n = text(name, value)?
                    .parse()
                    .map_err(|_| format!("slot-id {value:?} is not a number"))?;
                set_once(&mut out.slot_id, n, name)?;
                continue;
            }
            // Library and slot descriptions: informational; vendor attributes: ignored.
            "library-manufacturer"
            | "library-description"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer" => continue,
            n if n.starts_with("x-") => continue,
            _ => return Err(format!("unknown path attribute {name:?}")),
        };
        set_once(slot, text(name, value)?, name)?;
    }
    for attr in query.split('&').filter(|a| !a.is_empty()) {
        let (name, value) = attr
            .split_once('=')
            .ok_or_else(|| format!("query attribute {attr:?} has no '='"))?;
        let slot = match name {
            "pin-value" => &mut out.pin_value,
            "pin-source" => &mut out.pin_source,
            "module-path" => &mut out.module_path,
            "module-name" => {
                return Err("module-name is not supported: give module-path".into());
            }
            n if n.starts_with("x-") => continue,
            _ => return Err(format!("unknown query attribute {name:?}")),
        };
        set_once(slot, text(name, value)?, name)?;
    }
    if out.object.is_none() && out.id.is_none() {
        return Err("names no object (give object= or id=)".into());
    }
    if out.pin_value.is_some() && out.pin_source.is_some() {
        return Err("gives both pin-value and pin-source".into());
    }
    Ok(out)
}

fn set_once<T>(slot: &mut Option<T>, v: T, name: &str) -> std::result::Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} given twice"));
    }
    *slot = Some(v);
    Ok(())
}

/// RFC 3986 percent-decoding.
fn pct_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl Pkcs11Uri {
    /// The URI without its PIN, for messages.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token={t}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            let esc: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            parts.push(format!("id={esc}"));
        }
        format!("pkcs11:{}", parts.join(";"))
    }

    fn module(&self) -> Result<PathBuf> {
        match &self.module_path {
            Some(p) => Ok(PathBuf::from(p)),
            None => match std::env::var_os(MODULE_ENV) {
                Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
                _ => Err(Error::invalid(format!(
                    "{}: no module-path in the URI and {MODULE_ENV} is not set",
                    self.describe()
                ))),
            },
        }
    }

    fn pin(&self) -> Result<Option<AuthPin>> {
        if let Some(v) = &self.pin_value {
            return Ok(Some(AuthPin::from(v.clone())));
        }
        let Some(src) = &self.pin_source else {
            return Ok(None);
        };
        let path = src.strip_prefix("file:").unwrap_or(src);
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("{}: pin-source {path}: {e}", self.describe())))?;
        Ok(Some(AuthPin::from(
            text.trim_end_matches(['\n', '\r']).to_string(),
        )))
    }
}

/// One initialized context per module for the whole process: `C_Initialize` may run
/// once per module, and the SecureBoot and PCR keys are often on the same token.
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let fail = |e: CkError| {
        Error::invalid(format!(
            "PKCS#11 module {}: cannot load it: {e}",
            module.display()
        ))
    };
    let ctx = Pkcs11::new(module).map_err(fail)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(fail(e)),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// An open, logged-in session on the token the URI names.
fn session(uri: &Pkcs11Uri) -> Result<Session> {
    let module = uri.module()?;
    let ctx = context(&module)?;
    let what = uri.describe();
    let ck = |op: &str, e: CkError| Error::Dependency(format!("{what}: {op}: {}", short(&e)));
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| ck("listing slots", e))?;
    let mut labels = Vec::new();
    let mut found: Option<Slot> = None;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| ck("reading token info", e))?;
        let label = info.label().trim_end().to_string();
        let matches = uri.token.as_ref().is_none_or(|t| *t == label)
            && uri
                .manufacturer
                .as_ref()
                .is_none_or(|m| m == info.manufacturer_id().trim_end())
            && uri
                .model
                .as_ref()
                .is_none_or(|m| m == info.model().trim_end())
            && uri
                .serial
                .as_ref()
                .is_none_or(|s| s == info.serial_number().trim_end())
            && uri.slot_id.is_none_or(|id| id == slot.id());
        labels.push(label);
        if matches {
            if found.is_some() {
                return Err(Error::invalid(format!(
                    "{what}: more than one token matches (add serial= or slot-id=)"
                )));
            }
            found = Some(slot);
        }
    }
    let slot = found.ok_or_else(|| {
        Error::invalid(format!(
            "{what}: no such token in {} (tokens: {})",
            module.display(),
            if labels.is_empty() {
                "none".to_string()
            } else {
                labels.join(", ")
            }
        ))
    })?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(|e| ck("opening a session", e))?;
    if let Some(pin) = uri.pin()? {
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinLocked
                | RvError::PinExpired),
                _,
            )) => {
                return Err(Error::invalid(format!("{what}: login refused: {rv:?}")));
            }
            Err(e) => return Err(ck("login", e)),
        }
    }
    Ok(session)
}

/// The one object of `class` the URI names.
fn find(session: &Session, uri: &Pkcs11Uri, class: ObjectClass) -> Result<ObjectHandle> {
    let what = uri.describe();
    let mut template = vec![Attribute::Class(class)];
    if let Some(o) = &uri.object {
        template.push(Attribute::Label(o.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&template)
        .map_err(|e| Error::Dependency(format!("{what}: finding objects: {}", short(&e))))?;
    let kind = match class {
        ObjectClass::PRIVATE_KEY => "private key",
        ObjectClass::CERTIFICATE => "certificate",
        _ => "object",
    };
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::invalid(format!(
            "{what}: no such {kind} on the token (a private key needs the PIN: pin-value= or pin-source=)"
        ))),
        _ => Err(Error::invalid(format!(
            "{what}: {} {kind}s match (add id= or object=)",
            found.len()
        ))),
    }
}

/// A cryptoki error in a few words (`PinIncorrect` rather than the spec's paragraph).
fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// An RSA private key on a PKCS#11 token.
pub struct Pkcs11Key {
    /// Sessions are `Send` but not `Sync`: one signature at a time per key.
    session: Mutex<Session>,
    key: ObjectHandle,
    public: rsa::PublicKey,
    what: String,
}

impl Pkcs11Key {
    /// Opens the private key `uri` names; refuses a key that is not RSA.
    pub fn open(uri: &str) -> Result<Self> {
        let uri = parse_uri(uri)
            .map_err(|e| Error::invalid(format!("PKCS#11 URI {}: {e}", redact(uri))))?;
        if let Some(t) = &uri.object_type
            && t != "private"
        {
            return Err(Error::invalid(format!(
                "{}: type={t} does not name a private key",
                uri.describe()
            )));
        }
        let what = uri.describe();
        let session = session(&uri)?;
        let key = find(&session, &uri, ObjectClass::PRIVATE_KEY)?;
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                ],
            )
            .map_err(|e| Error::Dependency(format!("{what}: reading the key: {}", short(&e))))?;
        let (mut kt, mut n, mut e) = (None, None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => kt = Some(t),
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        if kt != Some(KeyType::RSA) {
            return Err(Error::invalid(format!("{what}: key type is not RSA")));
        }
        let (Some(n), Some(e)) = (n, e) else {
            return Err(Error::Dependency(format!(
                "{what}: the token does not show the key's modulus and exponent"
            )));
        };
        let public =
            public_key_from_parts(&n, &e).map_err(|m| Error::Dependency(format!("{what}: {m}")))?;
        Ok(Pkcs11Key {
            session: Mutex::new(session),
            key,
            public,
            what,
        })
    }
}

/// An RSA public key from big-endian modulus and exponent bytes (as tokens and JWKs
/// give them).
pub fn public_key_from_parts(n: &[u8], e: &[u8]) -> std::result::Result<rsa::PublicKey, String> {
    use der::Encode;
    use rsa::pkcs1::DecodeRsaPublicKey;
    let strip = |b: &[u8]| -> Vec<u8> {
        let at = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b[at..].to_vec()
    };
    let (n, e) = (strip(n), strip(e));
    let der = rsa::pkcs1::RsaPublicKey {
        modulus: rsa::pkcs1::UintRef::new(&n).map_err(|err| format!("bad modulus: {err}"))?,
        public_exponent: rsa::pkcs1::UintRef::new(&e)
            .map_err(|err| format!("bad exponent: {err}"))?,
    }
    .to_der()
    .map_err(|err| format!("cannot encode the public key: {err}"))?;
    rsa::PublicKey::from_pkcs1_der(&der)
        .map_err(|err| format!("not a usable RSA public key: {err}"))
}

impl KeySigner for Pkcs11Key {
    fn public_key(&self) -> &rsa::PublicKey {
        &self.public
    }

    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>> {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session
            .sign(&Mechanism::RsaPkcs, self.key, &hash.digest_info(digest))
            .map_err(|e| Error::Dependency(format!("{}: signing: {}", self.what, short(&e))))
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// Reads the certificate (DER) `uri` names from its token.
pub fn certificate(uri: &str) -> Result<Vec<u8>> {
    let uri =
        parse_uri(uri).map_err(|e| Error::invalid(format!("PKCS#11 URI {}: {e}", redact(uri))))?;
    let what = uri.describe();
    let session = session(&uri)?;
    let cert = find(&session, &uri, ObjectClass::CERTIFICATE)?;
    let attrs = session
        .get_attributes(cert, &[AttributeType::Value])
        .map_err(|e| {
            Error::Dependency(format!("{what}: reading the certificate: {}", short(&e)))
        })?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| Error::Dependency(format!("{what}: the certificate has no value")))
}

/// A URI with any `pin-value` hidden, for messages about URIs that do not parse.
pub fn redact(uri: &str) -> String {
    if !is_uri(uri) {
        return uri.to_string();
    }
    match uri.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|a| match a.split_once('=') {
                    Some(("pin-value", _)) => "pin-value=***".to_string(),
                    _ => a.to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7512_examples_parse() {
        let u = parse_uri(
            "pkcs11:token=release;object=uki?pin-source=file:/run/pin&module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("release"));
        assert_eq!(u.object.as_deref(), Some("uki"));
        assert_eq!(u.pin_source.as_deref(), Some("file:/run/pin"));
        assert_eq!(
            u.module_path.as_deref(),
            Some("/usr/lib/softhsm/libsofthsm2.so")
        );
        let u = parse_uri("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;id=%01%a0;type=private?pin-value=1234").unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xa0][..]));
        assert_eq!(u.pin_value.as_deref(), Some("1234"));
    }

    #[test]
    fn bad_uris_are_refused() {
        for bad in [
            "pkcs11:token=a",
            "pkcs11:object=a;object=b",
            "pkcs11:objekt=a",
            "pkcs11:object=a?module-name=softhsm2",
            "pkcs11:id=%zz",
            "pkcs11:object=a?pin-value=1&pin-source=file:/x",
            "file:/x",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
        assert_eq!(
            redact("pkcs11:object=a?pin-value=1234&module-path=/m.so"),
            "pkcs11:object=a?pin-value=***&module-path=/m.so"
        );
    }
}
