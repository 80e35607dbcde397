//! cosign signatures on OCI images: verifying the images `imager serve` (and, behind a
//! flag, the CLI) pulls, and signing what the service pushes — as Image Factory does
//! (`internal/image/verify/verify.go`, `internal/image/signer/key.go`).
//!
//! Verification is by digest. For each policy (a public key, then keyless against a
//! trusted root) a sigstore bundle attached as an OCI referrer is tried first
//! ([`bundle`]), then legacy `sha256-<hex>.sig` signatures ([`legacy`]); the first that
//! verifies wins. Keyless checks are in [`keyless`].
//!
//! Why a verifier of our own and not the `sigstore` crate: that crate is async
//! (tokio + reqwest) with its own TLS stack (openssl by default, or rustls on aws-lc-rs,
//! a C/assembly build beside the ring this project already has), pulls `tough` (TUF),
//! `oci-client`, `x509-cert`/`p256`/`p384`/`ecdsa`/`rsa` stacks of other versions and
//! `sigstore_protobuf_specs`, and expects the trusted root from TUF over the network —
//! the very thing an air-gapped factory cannot do. What a verifier needs here is small:
//! DSSE's PAE, a simple-signing payload, an X.509 chain walk, an SCT, a signed entry
//! timestamp, an RFC 6962 inclusion proof and a signed checkpoint. Those are written
//! here on ring (ECDSA P-256/P-384, RSA, Ed25519), sha2 and the DER reader the
//! Authenticode code already has, and judged by sigstore-python on a real Sidero
//! signature (tests/cosign.rs). Not verified: RFC 3161 timestamps (the Rekor signed
//! entry timestamp dates a keyless signature instead, as cosign does for Rekor v1
//! entries); bundles with only a timestamp and a Rekor v2 entry are refused.

pub mod bundle;
pub mod der;
pub mod keyless;
pub mod keys;
pub mod legacy;

use std::path::Path;

use crate::error::{Error, Result};
use crate::oci::registry::Session;

pub use keyless::{Identity, IssuerRule, TrustedRoot};
pub use keys::{PublicKey, SigningKey};

/// Image Factory's default identity: Sidero Labs' release signers.
pub const DEFAULT_SUBJECT_REGEXP: &str =
    r"(@siderolabs\.com$|^releasemgr-svc@talos-production\.iam\.gserviceaccount\.com$)";
/// Image Factory's default OIDC issuer for keyless signatures.
pub const DEFAULT_ISSUER: &str = "https://accounts.google.com";

/// The Sigstore public-good trusted root this binary was built with (assets/sigstore),
/// the keyless default when no `--container-signature-trusted-root` is given.
pub const EMBEDDED_ROOT: &[u8] = include_bytes!("../../assets/sigstore/trusted_root.json");

/// Largest signature manifest, bundle or payload read.
const SMALL: u64 = 1 << 20;

/// One way an image may be signed.
#[derive(Debug, Clone)]
pub enum Policy {
    /// Signed with this key (offline, no transparency log: Image Factory's
    /// `containerSignature.publicKeyFile`).
    PublicKey(PublicKey),
    /// Signed keylessly by this identity, per this trusted root.
    Keyless {
        root: std::sync::Arc<TrustedRoot>,
        identity: Identity,
    },
}

impl Policy {
    fn describe(&self) -> &'static str {
        match self {
            Policy::PublicKey(_) => "public key",
            Policy::Keyless { .. } => "keyless",
        }
    }
}

/// What verification settles for: policies to try in order, or none at all.
#[derive(Debug, Clone)]
pub enum Verification {
    Disabled,
    Policies(Vec<Policy>),
}

/// How a signature verified: `bundled` or `legacy`, and with what (`public key`,
/// `certificate subject <identity>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub method: &'static str,
    pub policy: String,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.method, self.policy)
    }
}

/// Where an image's signatures are read from.
pub trait Source {
    /// A manifest by tag or digest (checked against the digest), at most 1 MiB.
    fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>>;
    /// A blob by digest (checked), at most `limit` bytes.
    fn blob(&self, digest: &str, limit: u64) -> Result<Option<Vec<u8>>>;
    /// The referrers index of `digest` from the registry's referrers API; `None` when
    /// the registry has none (the `sha256-<hex>` tag is read instead).
    fn referrers(&self, digest: &str) -> Result<Option<Vec<u8>>>;
}

/// A repository in a registry.
pub struct RegistrySource<'a> {
    pub session: &'a Session,
    pub repo: &'a str,
}

impl Source for RegistrySource<'_> {
    fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .session
            .manifest(self.repo, reference)?
            .map(|m| m.bytes))
    }
    fn blob(&self, digest: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.session.read_blob(self.repo, digest, limit)
    }
    fn referrers(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        self.session.referrers(self.repo, digest)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    artifact_type: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexOrManifest {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
}

/// Checks the signatures of image `digest` read from `source`; `Ok` names how it
/// verified, `Err` is one line saying why none did.
pub fn verify(source: &dyn Source, digest: &str, policies: &[Policy]) -> Result<Verified> {
    if !digest.starts_with("sha256:") || digest.len() != 71 {
        return Err(Error::invalid(format!("{digest} is not a sha256 digest")));
    }
    let bundles = referrer_bundles(source, digest)?;
    let legacy = match source.manifest(&legacy::signature_tag(digest))? {
        Some(m) => {
            let layers = legacy::layers(&m).map_err(Error::Invalid)?;
            let mut out = Vec::new();
            for l in layers {
                if l.size > SMALL {
                    continue;
                }
                if let Some(p) = source.blob(&l.digest, SMALL)? {
                    out.push((l, p));
                }
            }
            out
        }
        None => Vec::new(),
    };
    if bundles.is_empty() && legacy.is_empty() {
        return Err(Error::Invalid(
            "no signature (no sigstore bundle referrer, no .sig tag)".into(),
        ));
    }
    let mut reasons: Vec<String> = Vec::new();
    for policy in policies {
        for b in &bundles {
            match bundle::Bundle::parse(b).and_then(|b| b.verify(digest, policy)) {
                Ok(v) => return Ok(v),
                Err(e) => reasons.push(format!("bundle, {}: {e}", policy.describe())),
            }
        }
        for (layer, payload) in &legacy {
            match legacy::verify_layer(layer, payload, digest, policy) {
                Ok(v) => return Ok(v),
                Err(e) => reasons.push(format!("legacy, {}: {e}", policy.describe())),
            }
        }
    }
    reasons.dedup();
    Err(Error::Invalid(format!(
        "no signature verified ({})",
        reasons.join("; ")
    )))
}

/// The bundles attached to `digest` as referrers (API, else the `sha256-<hex>` tag).
fn referrer_bundles(source: &dyn Source, digest: &str) -> Result<Vec<Vec<u8>>> {
    let index = match source.referrers(digest)? {
        Some(i) => Some(i),
        None => source.manifest(&digest.replacen(':', "-", 1))?,
    };
    let Some(index) = index else {
        return Ok(Vec::new());
    };
    let index: IndexOrManifest = serde_json::from_slice(&index)
        .map_err(|e| Error::Invalid(format!("referrers index of {digest}: {e}")))?;
    let mut out = Vec::new();
    for d in index.manifests.iter().take(64) {
        if d.artifact_type.as_deref() != Some(bundle::BUNDLE_MEDIA_TYPE) {
            continue;
        }
        let Some(m) = source.manifest(&d.digest)? else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<IndexOrManifest>(&m) else {
            continue;
        };
        let typed = m.artifact_type.as_deref() == Some(bundle::BUNDLE_MEDIA_TYPE)
            || m.config.as_ref().and_then(|c| c.artifact_type.as_deref())
                == Some(bundle::BUNDLE_MEDIA_TYPE);
        if !typed {
            continue;
        }
        for l in m
            .layers
            .iter()
            .filter(|l| l.media_type == bundle::BUNDLE_MEDIA_TYPE)
        {
            if let Some(b) = source.blob(&l.digest, SMALL)? {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// Pushes the legacy signature of `repo`@`digest` made with `key`; `docker_reference`
/// is the `registry/repository` the payload names.
pub fn sign_and_push(
    session: &Session,
    repo: &str,
    docker_reference: &str,
    digest: &str,
    key: &SigningKey,
) -> Result<()> {
    let sig = legacy::sign(key, docker_reference, digest);
    session.push_blob_bytes(repo, &sig.config)?;
    session.push_blob_bytes(repo, &sig.payload)?;
    session.put_manifest(
        repo,
        &legacy::signature_tag(digest),
        "application/vnd.oci.image.manifest.v1+json",
        &sig.manifest,
    )?;
    Ok(())
}

/// The verification settings of Image Factory's `containerSignature` options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub disabled: bool,
    pub public_key: Option<std::path::PathBuf>,
    pub subject_regexp: Option<String>,
    pub issuer: Option<String>,
    pub issuer_regexp: Option<String>,
    pub trusted_root: Option<std::path::PathBuf>,
}

impl Options {
    /// The policies these options give, in Image Factory's order: the public key, then
    /// keyless when the subject regexp is not empty (by default: Sidero's signers), against
    /// the trusted root file or else the embedded one ([`EMBEDDED_ROOT`]).
    pub fn load(&self) -> Result<Verification> {
        if self.disabled {
            return Ok(Verification::Disabled);
        }
        let mut policies = Vec::new();
        if let Some(path) = &self.public_key {
            let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let key = PublicKey::from_pem(&text)
                .map_err(|e| Error::format(path, format!("not a public key: {e}")))?;
            policies.push(Policy::PublicKey(key));
        }
        let subject = self
            .subject_regexp
            .as_deref()
            .unwrap_or(DEFAULT_SUBJECT_REGEXP);
        if !subject.is_empty() {
            let root = std::sync::Arc::new(match &self.trusted_root {
                Some(path) => TrustedRoot::load(path)?,
                None => {
                    TrustedRoot::from_json(EMBEDDED_ROOT).expect("the embedded trusted root parses")
                }
            });
            let re = |what: &str, s: &str| {
                regex::Regex::new(s).map_err(|e| {
                    Error::invalid(format!("{what} {s:?} is not a regular expression: {e}"))
                })
            };
            let issuer = match &self.issuer_regexp {
                Some(r) => IssuerRule::Regex(re("--container-signature-issuer-regexp", r)?),
                None => {
                    IssuerRule::Exact(self.issuer.clone().unwrap_or_else(|| DEFAULT_ISSUER.into()))
                }
            };
            policies.push(Policy::Keyless {
                root,
                identity: Identity {
                    subject: re("--container-signature-subject-regexp", subject)?,
                    issuer,
                },
            });
        }
        if policies.is_empty() {
            return Err(Error::invalid(
                "an empty --container-signature-subject-regexp needs --container-signature-pubkey \
                 (or --container-signature-disabled)",
            ));
        }
        Ok(Verification::Policies(policies))
    }
}

/// Resolves registry image `image` (`host/repo:tag` or `@sha256:…`) to its digest and
/// verifies it under `verification`: `Ok((digest, how))`, `how` being `None` when
/// verification is disabled. The error is one line naming the image and the reason.
pub fn verify_reference(
    image: &str,
    insecure: bool,
    verification: &Verification,
) -> Result<(String, Option<Verified>)> {
    let r = crate::oci::reference::RegistryRef::parse(image)?;
    let session = Session::with_credentials(&r.host, insecure, crate::oci::auth::lookup(&r.host)?)?;
    let digest = match r.reference.starts_with("sha256:") {
        true => r.reference.clone(),
        false => {
            session
                .manifest(&r.repository, &r.reference)?
                .ok_or_else(|| Error::invalid(format!("image {image}: not found")))?
                .digest
        }
    };
    let Verification::Policies(policies) = verification else {
        return Ok((digest, None));
    };
    let source = RegistrySource {
        session: &session,
        repo: &r.repository,
    };
    match verify(&source, &digest, policies) {
        Ok(v) => Ok((digest, Some(v))),
        Err(e) => Err(Error::Invalid(format!(
            "image {image} ({digest}) refused: {}",
            e.to_string().trim_start_matches("invalid input: ")
        ))),
    }
}

/// What the CLI's registry pulls must satisfy (`--verify-image-signatures`); unset: no check.
static PULL_VERIFICATION: std::sync::OnceLock<Verification> = std::sync::OnceLock::new();

/// Makes every registry pull of this process ([`crate::oci::registry::pull`]) check
/// signatures under `verification` first.
pub fn verify_pulls(verification: Verification) {
    let _ = PULL_VERIFICATION.set(verification);
}

/// The check [`verify_pulls`] asks for, on image `text` resolved to `digest`.
pub fn check_pull(
    r: &crate::oci::reference::RegistryRef,
    digest: &str,
    insecure: bool,
) -> Result<()> {
    let Some(Verification::Policies(policies)) = PULL_VERIFICATION.get() else {
        return Ok(());
    };
    let session = Session::with_credentials(&r.host, insecure, crate::oci::auth::lookup(&r.host)?)?;
    let source = RegistrySource {
        session: &session,
        repo: &r.repository,
    };
    match verify(&source, digest, policies) {
        Ok(how) => {
            eprintln!("{}: signature verified ({how})", r.as_written());
            Ok(())
        }
        Err(e) => Err(Error::Invalid(format!(
            "image {} ({digest}) refused: {}",
            r.as_written(),
            e.to_string().trim_start_matches("invalid input: ")
        ))),
    }
}

/// Reads an OCI image layout directory as a signature source (tests, air-gapped copies):
/// tags are `org.opencontainers.image.ref.name` annotations of `index.json`.
pub struct LayoutSource<'a> {
    pub dir: &'a Path,
}

impl Source for LayoutSource<'_> {
    fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>> {
        let digest = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            let path = self.dir.join("index.json");
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).map_err(|e| Error::io(&path, e))?)
                    .map_err(|e| Error::format(&path, e.to_string()))?;
            let found = index["manifests"].as_array().and_then(|m| {
                m.iter()
                    .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == reference)
            });
            match found.and_then(|d| d["digest"].as_str()) {
                Some(d) => d.to_string(),
                None => return Ok(None),
            }
        };
        self.blob(&digest, SMALL)
    }
    fn blob(&self, digest: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(hex) = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Ok(None);
        };
        let path = self.dir.join("blobs/sha256").join(hex);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if bytes.len() as u64 > limit || crate::io::sha256_digest(&bytes) != digest {
            return Err(Error::format(&path, format!("is not blob {digest}")));
        }
        Ok(Some(bytes))
    }
    fn referrers(&self, _digest: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Sidero-signed catalog of Image Factory's integration data (tests/data/cosign):
    /// the signature layout's index is the referrers index of the catalog manifest.
    struct Fixture {
        image: std::path::PathBuf,
        sig: std::path::PathBuf,
        mutate: Option<fn(&mut serde_json::Value)>,
    }

    const CATALOG: &str = "sha256:35b6021450b858574e182bbee95d6b9c8ab95f3623fdcc38e62997f763af631e";

    impl Source for Fixture {
        fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>> {
            if reference == CATALOG.replacen(':', "-", 1) {
                return self.blob(
                    "sha256:dc55f0aeed24ed51131f2a5d6100461df0a86351045660e2ad438a82653e43a5",
                    SMALL,
                );
            }
            self.blob(reference, SMALL)
        }
        fn blob(&self, digest: &str, limit: u64) -> Result<Option<Vec<u8>>> {
            let mut b = LayoutSource { dir: &self.sig }.blob(digest, limit)?;
            if b.is_none() {
                b = LayoutSource { dir: &self.image }.blob(digest, limit)?;
            }
            // A changed bundle (its digest is the test's, not the registry's).
            if let (Some(f), Some(bytes)) = (self.mutate, b.as_mut())
                && digest.starts_with("sha256:1cb58d41")
            {
                let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                f(&mut v);
                *bytes = serde_json::to_vec(&v).unwrap();
            }
            Ok(b)
        }
        fn referrers(&self, _: &str) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
    }

    fn keyless(subject: &str) -> Policy {
        Policy::Keyless {
            root: std::sync::Arc::new(TrustedRoot::from_json(EMBEDDED_ROOT).unwrap()),
            identity: Identity {
                subject: regex::Regex::new(subject).unwrap(),
                issuer: IssuerRule::Exact(DEFAULT_ISSUER.into()),
            },
        }
    }

    fn fixture(mutate: Option<fn(&mut serde_json::Value)>) -> Fixture {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cosign");
        Fixture {
            image: dir.join("extensions-catalog-image"),
            sig: dir.join("extensions-catalog-signature"),
            mutate,
        }
    }

    #[test]
    fn sidero_bundle_verifies_keyless() {
        let v = verify(&fixture(None), CATALOG, &[keyless(DEFAULT_SUBJECT_REGEXP)]).unwrap();
        assert_eq!(
            v.to_string(),
            "bundled: certificate subject albert.kostusev@siderolabs.com"
        );
    }

    #[test]
    fn sidero_bundle_refused_for_other_identity_or_digest() {
        let e = verify(&fixture(None), CATALOG, &[keyless("@example\\.com$")]).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let other = format!("sha256:{}", "0".repeat(64));
        assert!(verify(&fixture(None), &other, &[keyless(DEFAULT_SUBJECT_REGEXP)]).is_err());
    }

    /// Each transparency-log check bites: a changed time, body, proof hash or
    /// checkpoint signature, or a missing signed entry timestamp, is refused.
    #[test]
    fn changed_log_entries_are_refused() {
        fn entry(v: &mut serde_json::Value) -> &mut serde_json::Value {
            &mut v["verificationMaterial"]["tlogEntries"][0]
        }
        type Change = fn(&mut serde_json::Value);
        let cases: [(Change, &str); 5] = [
            (
                |v| entry(v)["integratedTime"] = "1783246501".into(),
                "signed timestamp does not verify",
            ),
            (
                |v| {
                    entry(v)["inclusionPromise"].take();
                    entry(v).as_object_mut().unwrap().remove("inclusionPromise");
                },
                "no signed entry timestamp",
            ),
            (
                |v| {
                    entry(v)["inclusionProof"]["hashes"][0] =
                        "Pn+wyWsw78Q7hv/SgAtojReCU/rZMM/DKdNXCZWDfYM=".into()
                },
                "does not lead to the log's root hash",
            ),
            (
                |v| {
                    let c = &mut entry(v)["inclusionProof"]["checkpoint"]["envelope"];
                    let s = c.as_str().unwrap().to_string();
                    let i = s.rfind(' ').unwrap() + 12;
                    let mut b = s.into_bytes();
                    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
                    *c = String::from_utf8(b).unwrap().into();
                },
                "checkpoint is not signed",
            ),
            (
                |v| {
                    let b = entry(v)["canonicalizedBody"]
                        .as_str()
                        .unwrap()
                        .replace("eyJh", "eyJi");
                    entry(v)["canonicalizedBody"] = b.into();
                },
                "signed timestamp does not verify",
            ),
        ];
        for (f, want) in cases {
            let e = verify(
                &fixture(Some(f)),
                CATALOG,
                &[keyless(DEFAULT_SUBJECT_REGEXP)],
            )
            .unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    /// Truncated and bit-flipped bundles and certificates are refused, never a panic
    /// (the fuzz target's seeds, walked exhaustively for truncation).
    #[test]
    fn damaged_bundles_and_certificates_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/cosign/extensions-catalog-signature/blobs/sha256");
        let bundle = std::fs::read(
            dir.join("1cb58d4133145491babe234449ab14b88f5ee750eaeec3b20ec0345f5352a4bf"),
        )
        .unwrap();
        let policy = keyless(DEFAULT_SUBJECT_REGEXP);
        for n in 0..bundle.len() {
            if let Ok(b) = bundle::Bundle::parse(&bundle[..n]) {
                assert!(b.verify(CATALOG, &policy).is_err());
            }
        }
        for i in (0..bundle.len()).step_by(7) {
            let mut b = bundle.clone();
            b[i] ^= 0x01;
            if let Ok(b) = bundle::Bundle::parse(&b) {
                let _ = b.verify(CATALOG, &policy);
            }
        }
        let v: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
        use base64::Engine;
        let cert = base64::engine::general_purpose::STANDARD
            .decode(
                v["verificationMaterial"]["certificate"]["rawBytes"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert!(der::Certificate::parse(&cert).is_ok());
        for n in 0..cert.len() {
            assert!(der::Certificate::parse(&cert[..n]).is_err());
        }
        for i in 0..cert.len() {
            let mut c = cert.clone();
            c[i] ^= 0x80;
            if let Ok(c) = der::Certificate::parse(&c) {
                let _ = (
                    c.san_identities(),
                    c.fulcio_issuer(),
                    c.has_eku(der::oid::CODE_SIGNING),
                );
                let _ = c.tbs_without(der::oid::SCT_LIST);
            }
        }
    }
}
