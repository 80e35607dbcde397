//! Keyless (Fulcio/Rekor) verification against a Sigstore trusted root read from a
//! file: the signing certificate chains to a Fulcio CA of the root that was valid at
//! the signing time, carries a code-signing usage, an embedded SCT from a known
//! certificate-transparency log and the expected identity (subject regexp, issuer);
//! the Rekor entry is signed by a known log (signed entry timestamp, RFC 6962
//! inclusion proof to a signed checkpoint) and its integrated time is the signing time.
//!
//! Follows sigstore's `protobuf-specs` (trusted root, bundle), cosign
//! `pkg/cosign/verify.go` and `pkg/cosign/tlog.go`, RFC 6962 §3.2 (precertificate
//! SCTs) and RFC 9162 §2.1.3.2 (inclusion proofs), and the signed-note checkpoint
//! format of transparency-dev. Image Factory reads the root online at start (TUF);
//! here it is a file, so an air-gapped factory can verify.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::der::{Certificate, oid, rfc3339_seconds};
use super::keys::{Hash, PublicKey};

/// What a keyless signature must name: a subject (SAN e-mail or URI) matching a
/// regular expression, and an OIDC issuer (exact, or a regular expression).
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: regex::Regex,
    pub issuer: IssuerRule,
}

#[derive(Debug, Clone)]
pub enum IssuerRule {
    Exact(String),
    Regex(regex::Regex),
}

impl Identity {
    fn check(&self, cert: &Certificate<'_>) -> Result<String, String> {
        let issuer = cert
            .fulcio_issuer()?
            .ok_or("the certificate names no OIDC issuer")?;
        let ok = match &self.issuer {
            IssuerRule::Exact(s) => *s == issuer,
            IssuerRule::Regex(r) => r.is_match(&issuer),
        };
        if !ok {
            return Err(format!(
                "certificate issuer {issuer:?} is not the expected one"
            ));
        }
        let sans = cert.san_identities()?;
        match sans.iter().find(|s| self.subject.is_match(s)) {
            Some(s) => Ok(s.clone()),
            None => Err(format!(
                "certificate subject {:?} does not match {:?}",
                sans.join(", "),
                self.subject.as_str()
            )),
        }
    }
}

/// A certificate authority of the root: its chain (issuing certificate first), and
/// when it could issue.
#[derive(Debug, Clone)]
struct Authority {
    chain: Vec<Vec<u8>>,
    start: i64,
    end: Option<i64>,
}

/// A transparency log (Rekor or CT) of the root.
#[derive(Debug, Clone)]
struct Log {
    key_id: Vec<u8>,
    key: PublicKey,
    start: i64,
    end: Option<i64>,
}

/// A Sigstore trusted root (`application/vnd.dev.sigstore.trustedroot+json`).
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    authorities: Vec<Authority>,
    tlogs: Vec<Log>,
    ctlogs: Vec<Log>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootJson {
    #[serde(default)]
    tlogs: Vec<LogJson>,
    #[serde(default)]
    certificate_authorities: Vec<CaJson>,
    #[serde(default)]
    ctlogs: Vec<LogJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogJson {
    public_key: KeyJson,
    log_id: LogIdJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyJson {
    raw_bytes: String,
    valid_for: Option<RangeJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogIdJson {
    pub key_id: String,
}

#[derive(Deserialize)]
struct RangeJson {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaJson {
    cert_chain: ChainJson,
    valid_for: Option<RangeJson>,
}

#[derive(Deserialize)]
pub(crate) struct ChainJson {
    pub certificates: Vec<RawJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawJson {
    pub raw_bytes: String,
}

fn range(r: &Option<RangeJson>) -> Result<(i64, Option<i64>), String> {
    let t = |s: &Option<String>| -> Result<Option<i64>, String> {
        s.as_deref()
            .map(|s| rfc3339_seconds(s).ok_or_else(|| format!("malformed time {s:?}")))
            .transpose()
    };
    match r {
        None => Ok((i64::MIN, None)),
        Some(r) => Ok((t(&r.start)?.unwrap_or(i64::MIN), t(&r.end)?)),
    }
}

fn within(t: i64, start: i64, end: Option<i64>) -> bool {
    t >= start && end.is_none_or(|e| t <= e)
}

impl TrustedRoot {
    /// Parses a trusted root's JSON; the message says what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<TrustedRoot, String> {
        let json: RootJson = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let logs = |list: &[LogJson], what: &str| -> Result<Vec<Log>, String> {
            list.iter()
                .map(|l| {
                    let der = B64
                        .decode(&l.public_key.raw_bytes)
                        .map_err(|e| format!("{what} key: {e}"))?;
                    let key = PublicKey::from_spki(&der).map_err(|e| format!("{what} key: {e}"))?;
                    let (start, end) = range(&l.public_key.valid_for)?;
                    Ok(Log {
                        key_id: B64
                            .decode(&l.log_id.key_id)
                            .map_err(|e| format!("{what} log ID: {e}"))?,
                        key,
                        start,
                        end,
                    })
                })
                .collect()
        };
        let mut authorities = Vec::new();
        for ca in &json.certificate_authorities {
            let chain = ca
                .cert_chain
                .certificates
                .iter()
                .map(|c| {
                    B64.decode(&c.raw_bytes)
                        .map_err(|e| format!("CA certificate: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for c in &chain {
                Certificate::parse(c).map_err(|e| format!("CA certificate: {e}"))?;
            }
            if chain.is_empty() {
                return Err("a certificate authority has no certificate".into());
            }
            let (start, end) = range(&ca.valid_for)?;
            authorities.push(Authority { chain, start, end });
        }
        let root = TrustedRoot {
            authorities,
            tlogs: logs(&json.tlogs, "transparency log")?,
            ctlogs: logs(&json.ctlogs, "CT log")?,
        };
        if root.authorities.is_empty() || root.tlogs.is_empty() {
            return Err("names no certificate authority or no transparency log".into());
        }
        Ok(root)
    }

    /// Reads a trusted root file.
    pub fn load(path: &std::path::Path) -> crate::Result<TrustedRoot> {
        let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
        TrustedRoot::from_json(&bytes)
            .map_err(|e| crate::Error::format(path, format!("not a Sigstore trusted root: {e}")))
    }

    /// Checks a Fulcio leaf certificate (DER) at signing time `time` (Unix seconds)
    /// for `identity`; returns its public key and the matched subject.
    pub fn verify_certificate(
        &self,
        leaf_der: &[u8],
        time: i64,
        identity: &Identity,
    ) -> Result<(PublicKey, String), String> {
        let leaf = Certificate::parse(leaf_der).map_err(|e| format!("signing certificate: {e}"))?;
        if !within(time, leaf.not_before, Some(leaf.not_after)) {
            return Err("the signing certificate was not valid at the signing time".into());
        }
        if !leaf.has_eku(oid::CODE_SIGNING)? {
            return Err("the signing certificate is not for code signing".into());
        }
        let mut issuer_spki = None;
        for ca in &self.authorities {
            if !within(time, ca.start, ca.end) {
                continue;
            }
            if chain_verifies(&leaf, &ca.chain, time) {
                issuer_spki = Some(Certificate::parse(&ca.chain[0]).unwrap().spki.to_vec());
                break;
            }
        }
        let issuer_spki =
            issuer_spki.ok_or("the signing certificate does not chain to a trusted Fulcio CA")?;
        self.verify_sct(&leaf, &issuer_spki)?;
        let subject = identity.check(&leaf)?;
        let key = PublicKey::from_spki(leaf.spki)?;
        Ok((key, subject))
    }

    /// The embedded SCT of a precertificate, signed by a CT log of the root (RFC 6962 §3.2).
    fn verify_sct(&self, leaf: &Certificate<'_>, issuer_spki: &[u8]) -> Result<(), String> {
        let ext = leaf
            .extension(oid::SCT_LIST)
            .ok_or("the signing certificate has no embedded SCT")?;
        let list = crate::sign::tlv::Reader::new(ext.value)
            .expect(0x04, "SCT list")
            .map_err(|e| e.0)?
            .content;
        let tbs = leaf.tbs_without(oid::SCT_LIST)?;
        let issuer_key_hash = Sha256::digest(issuer_spki);
        let mut r = Tls(list);
        let mut all = Tls(r.vec16()?);
        while !all.0.is_empty() {
            let mut sct = Tls(all.vec16()?);
            let version = sct.take(1)?[0];
            let log_id = sct.take(32)?;
            let timestamp = sct.take(8)?;
            let extensions = sct.vec16()?;
            let (hash, sig_alg) = (sct.take(1)?[0], sct.take(1)?[0]);
            let sig = sct.vec16()?;
            let Some(log) = self.ctlogs.iter().find(|l| l.key_id == log_id) else {
                continue;
            };
            if version != 0 || hash != 4 || !(sig_alg == 3 || sig_alg == 1) {
                continue;
            }
            let mut msg = vec![0u8, 0u8];
            msg.extend_from_slice(timestamp);
            msg.extend_from_slice(&[0, 1]);
            msg.extend_from_slice(&issuer_key_hash);
            msg.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
            msg.extend_from_slice(&tbs);
            msg.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
            msg.extend_from_slice(extensions);
            if log.key.verify(Hash::Sha256, &msg, sig) {
                return Ok(());
            }
        }
        Err("the signing certificate has no SCT signed by a trusted CT log".into())
    }

    /// Checks a Rekor entry: a log of the root, its signed entry timestamp (when
    /// present) and its inclusion proof with a signed checkpoint (when present); at
    /// least one of them. Returns whether the integrated time is vouched for (by the SET).
    pub fn verify_tlog(&self, entry: &TlogEntry) -> Result<bool, String> {
        let log = self
            .tlogs
            .iter()
            .find(|l| l.key_id == entry.log_id)
            .ok_or("the transparency log entry is from a log the trusted root does not name")?;
        if !within(entry.integrated_time, log.start, log.end) {
            return Err("the transparency log's key was not valid at the entry's time".into());
        }
        let mut vouched = false;
        if let Some(set) = &entry.set {
            // cosign pkg/cosign/tlog.go VerifySET: canonical JSON, keys sorted.
            let payload = format!(
                "{{\"body\":\"{}\",\"integratedTime\":{},\"logID\":\"{}\",\"logIndex\":{}}}",
                B64.encode(&entry.body),
                entry.integrated_time,
                hex::encode(&entry.log_id),
                entry.log_index
            );
            if !log.key.verify(Hash::Sha256, payload.as_bytes(), set) {
                return Err("the transparency log entry's signed timestamp does not verify".into());
            }
            vouched = true;
        }
        if let Some(proof) = &entry.proof {
            proof.verify(&entry.body, &log.key)?;
        } else if entry.set.is_none() {
            return Err(
                "the transparency log entry has neither a signed timestamp nor an inclusion proof"
                    .into(),
            );
        }
        Ok(vouched)
    }
}

/// The leaf is signed by `chain[0]`, each certificate by the next, the last by
/// itself; all valid at `time`.
fn chain_verifies(leaf: &Certificate<'_>, chain: &[Vec<u8>], time: i64) -> bool {
    let mut child = leaf.clone();
    for (i, der) in chain.iter().enumerate() {
        let Ok(parent) = Certificate::parse(der) else {
            return false;
        };
        if child.issuer != parent.subject
            || !within(time, parent.not_before, Some(parent.not_after))
        {
            return false;
        }
        let Ok(key) = PublicKey::from_spki(parent.spki) else {
            return false;
        };
        if !key.verify_x509(child.signature_algorithm, child.tbs.raw, child.signature) {
            return false;
        }
        if i + 1 == chain.len() {
            // The last one is the root: self-signed.
            return parent.issuer == parent.subject
                && key.verify_x509(parent.signature_algorithm, parent.tbs.raw, parent.signature);
        }
        child = parent;
    }
    false
}

/// A TLS-presentation-language reader (RFC 8446 §3) for SCT lists.
struct Tls<'a>(&'a [u8]);

impl<'a> Tls<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated SCT list".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn vec16(&mut self) -> Result<&'a [u8], String> {
        let n = self.take(2)?;
        let n = u16::from_be_bytes([n[0], n[1]]) as usize;
        self.take(n)
    }
}

/// A Rekor entry as a bundle (or a legacy signature's bundle annotation) carries it.
#[derive(Debug, Clone)]
pub struct TlogEntry {
    pub log_index: i64,
    pub log_id: Vec<u8>,
    pub integrated_time: i64,
    /// The canonicalized entry body (JSON).
    pub body: Vec<u8>,
    /// The signed entry timestamp (inclusion promise).
    pub set: Option<Vec<u8>>,
    pub proof: Option<InclusionProof>,
}

/// An RFC 6962 inclusion proof and the checkpoint it leads to.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub index: u64,
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    pub hashes: Vec<Vec<u8>>,
    pub checkpoint: String,
}

fn node(l: &[u8], r: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

impl InclusionProof {
    /// The leaf hash of `body` leads to the root hash (RFC 9162 §2.1.3.2), and the
    /// checkpoint, signed by `key`, names that root and tree size.
    pub fn verify(&self, body: &[u8], key: &PublicKey) -> Result<(), String> {
        if self.index >= self.tree_size {
            return Err("inclusion proof index past the tree size".into());
        }
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(body);
        let mut r: [u8; 32] = leaf.finalize().into();
        let (mut fnode, mut snode) = (self.index, self.tree_size - 1);
        for p in &self.hashes {
            if snode == 0 {
                return Err("inclusion proof is too long".into());
            }
            if fnode & 1 == 1 || fnode == snode {
                r = node(p, &r);
                if fnode & 1 == 0 {
                    while fnode & 1 == 0 && fnode != 0 {
                        fnode >>= 1;
                        snode >>= 1;
                    }
                }
            } else {
                r = node(&r, p);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        if snode != 0 || r[..] != self.root_hash[..] {
            return Err("the inclusion proof does not lead to the log's root hash".into());
        }
        // Signed note: body lines, a blank line, then "— <name> <base64(hint || sig)>".
        let (text, sigs) = self
            .checkpoint
            .split_once("\n\n")
            .ok_or("malformed checkpoint")?;
        let text = format!("{text}\n");
        let mut lines = text.lines();
        let _origin = lines.next();
        let size: u64 = lines
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed checkpoint size")?;
        let root = lines
            .next()
            .and_then(|s| B64.decode(s).ok())
            .ok_or("malformed checkpoint root hash")?;
        if size != self.tree_size || root != self.root_hash {
            return Err("the checkpoint does not name the proof's tree".into());
        }
        let signed = sigs.lines().any(|l| {
            let Some(rest) = l.strip_prefix("\u{2014} ") else {
                return false;
            };
            let Some(b64) = rest.rsplit(' ').next() else {
                return false;
            };
            match B64.decode(b64) {
                Ok(raw) if raw.len() > 4 => key.verify(Hash::Sha256, text.as_bytes(), &raw[4..]),
                _ => false,
            }
        });
        if !signed {
            return Err("the checkpoint is not signed by the transparency log".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9162 inclusion on a 3-leaf tree, every index.
    #[test]
    fn inclusion_three_leaves() {
        let leaf = |b: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(b);
            h.finalize().into()
        };
        let (a, b, c) = (leaf(b"a"), leaf(b"b"), leaf(b"c"));
        let ab = node(&a, &b);
        let root = node(&ab, &c);
        let key_less = |index: u64, hashes: Vec<Vec<u8>>, body: &[u8]| {
            let p = InclusionProof {
                index,
                tree_size: 3,
                root_hash: root.to_vec(),
                hashes,
                checkpoint: String::new(),
            };
            // Only the path part: the checkpoint check fails after it.
            let err = p
                .verify(
                    body,
                    &PublicKey::from_spki(&[]).unwrap_or_else(|_| dummy_key()),
                )
                .unwrap_err();
            err != "the inclusion proof does not lead to the log's root hash"
        };
        assert!(key_less(0, vec![b.to_vec(), c.to_vec()], b"a"));
        assert!(key_less(1, vec![a.to_vec(), c.to_vec()], b"b"));
        assert!(key_less(2, vec![ab.to_vec()], b"c"));
        assert!(!key_less(2, vec![ab.to_vec()], b"x"));
        assert!(!key_less(0, vec![c.to_vec(), b.to_vec()], b"a"));
    }

    fn dummy_key() -> PublicKey {
        let spki = B64
            .decode("MCowBQYDK2VwAyEAt8rlp1knGwjfbcXAYPYAkn0XiLz1x8O4t0YkEhie244=")
            .unwrap();
        PublicKey::from_spki(&spki).unwrap()
    }
}
