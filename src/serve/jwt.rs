//! OIDC ID tokens (JWS compact, RS256 or ES256) checked against a JWKS file: the
//! signature by a key of the set (by `kid`), the issuer, the audience, `exp` and
//! `nbf` (60 s leeway). RFC 7515 (JWS), RFC 7517 (JWK), RFC 7519 (JWT), OpenID
//! Connect Core §2. Written on ring: a JWT crate would bring its own crypto stack for
//! two algorithms and four claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature;

/// A verification key of the set.
#[derive(Debug, Clone)]
enum Jwk {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed P-256 point.
    Ec(Vec<u8>),
}

/// A JSON Web Key Set (`{"keys": [...]}`), RSA and P-256 keys; others are skipped.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<(Option<String>, Jwk)>,
}

fn field(v: &serde_json::Value, k: &str) -> Result<Vec<u8>, String> {
    let s = v[k].as_str().ok_or_else(|| format!("key has no {k:?}"))?;
    B64URL
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("key {k:?}: {e}"))
}

impl Jwks {
    pub fn parse(bytes: &[u8]) -> Result<Jwks, String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let list = v["keys"].as_array().ok_or("no \"keys\" array")?;
        let mut keys = Vec::new();
        for k in list {
            let kid = k["kid"].as_str().map(str::to_string);
            match (k["kty"].as_str(), k["crv"].as_str()) {
                (Some("RSA"), _) => keys.push((
                    kid,
                    Jwk::Rsa {
                        n: field(k, "n")?,
                        e: field(k, "e")?,
                    },
                )),
                (Some("EC"), Some("P-256")) => {
                    let (x, y) = (field(k, "x")?, field(k, "y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err("P-256 key coordinates are not 32 bytes".into());
                    }
                    keys.push((kid, Jwk::Ec([&[4u8][..], &x, &y].concat())));
                }
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err("no RSA or P-256 key".into());
        }
        Ok(Jwks { keys })
    }
}

/// What a token must name.
#[derive(Debug, Clone)]
pub struct Expect {
    pub issuer: String,
    pub audience: String,
    /// The claim that names the client (`sub`, `email`, ...).
    pub identity_claim: String,
}

/// Whether `text` looks like a JWS compact token (three base64url parts).
pub fn looks_like_jwt(text: &str) -> bool {
    text.split('.').count() == 3 && text.starts_with("eyJ")
}

/// Verifies `token` at `now` (Unix seconds); returns the identity claim's value.
pub fn verify(token: &str, keys: &Jwks, expect: &Expect, now: i64) -> Result<String, String> {
    let mut parts = token.split('.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err("not a JWT".into()),
    };
    let dec = |x: &str, what: &str| B64URL.decode(x).map_err(|e| format!("token {what}: {e}"));
    let header: serde_json::Value =
        serde_json::from_slice(&dec(h, "header")?).map_err(|e| format!("token header: {e}"))?;
    let sig = dec(s, "signature")?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    let alg = header["alg"].as_str().unwrap_or_default();
    let kid = header["kid"].as_str();
    let candidates = keys
        .keys
        .iter()
        .filter(|(k, _)| kid.is_none() || k.is_none() || k.as_deref() == kid);
    let mut ok = false;
    for (_, key) in candidates {
        ok = match (alg, key) {
            ("RS256", Jwk::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
                .is_ok(),
            ("ES256", Jwk::Ec(point)) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, &sig)
                    .is_ok()
            }
            _ => false,
        };
        if ok {
            break;
        }
    }
    if !ok {
        return Err(format!(
            "token signature ({alg}) does not verify with the JWKS"
        ));
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&dec(p, "payload")?).map_err(|e| format!("token claims: {e}"))?;
    if claims["iss"] != expect.issuer.as_str() {
        return Err(format!(
            "token issuer {} is not {}",
            claims["iss"], expect.issuer
        ));
    }
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(a) => *a == expect.audience,
        serde_json::Value::Array(a) => a.iter().any(|a| a == expect.audience.as_str()),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("token audience is not {}", expect.audience));
    }
    const LEEWAY: i64 = 60;
    match claims["exp"].as_i64() {
        Some(exp) if now <= exp + LEEWAY => {}
        Some(_) => return Err("token expired".into()),
        None => return Err("token has no exp".into()),
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| now + LEEWAY < nbf) {
        return Err("token not yet valid".into());
    }
    claims[expect.identity_claim.as_str()]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("token has no {:?} claim", expect.identity_claim))
}
