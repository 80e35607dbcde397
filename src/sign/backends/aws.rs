//! The AWS KMS backend (+ ACM for the certificate): Talos's
//! `pkg/imager/profile/internal/signer/aws`. `GetPublicKey` must say `KeyUsage`
//! `SIGN_VERIFY` and an RSA `KeySpec`; every signature is a `Sign` of the digest the
//! imager computed (`MessageType: DIGEST`, `RSASSA_PKCS1_V1_5_SHA_256|384|512`). The
//! certificate comes from a file (`awsCertPath`) or ACM (`awsCertARN`).
//!
//! Why not the AWS SDK crates: they pull in their own HTTP, runtime and config stacks
//! (hundreds of crates, many minutes on a 2-core builder) for three JSON calls. Here
//! they are `ureq` POSTs (already the registry client) signed with SigV4 (HMAC-SHA256
//! from `ring`, tested against AWS's published example), with the SDK's credential
//! chain: environment, web identity token (EKS IRSA, GitHub OIDC), the shared
//! credentials/config files, the ECS container endpoint and EC2 IMDSv2; and its
//! endpoint overrides (`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL_ACM`,
//! `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`), so local emulators work.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::super::signer::{HashAlg, KeySigner};
use crate::error::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Temporary or long-term AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where they came from, for messages.
    pub source: String,
}

/// One request to sign: `headers` are (name, value) pairs including `host` and
/// `x-amz-date`, `query` already canonical.
pub struct SigV4Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
    pub amz_date: &'a str,
}

/// SigV4 `Authorization` of `r` (every header in `r.headers` is signed).
pub fn sigv4_authorization(creds: &Credentials, r: &SigV4Request) -> String {
    let SigV4Request {
        method,
        path,
        query,
        headers,
        body,
        region,
        service,
        amz_date,
    } = *r;
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    hs.sort();
    let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let hmac = |key: &[u8], data: &str| -> Vec<u8> {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        ring::hmac::sign(&k, data.as_bytes()).as_ref().to_vec()
    };
    let k = hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, service);
    let k = hmac(&k, "aws4_request");
    let signature = hex::encode(hmac(&k, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

/// `YYYYMMDDTHHMMSSZ` of `t`.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The region: the profile's `awsRegion`, else `AWS_REGION`, `AWS_DEFAULT_REGION`, the
/// shared config file's `region`.
fn region(configured: &str) -> Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| shared_value(&config_file(), &profile_name(), true, "region"))
        .ok_or_else(|| {
            Error::invalid("AWS KMS: no region (set awsRegion in the profile or AWS_REGION)")
        })
}

fn home() -> PathBuf {
    env("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

fn profile_name() -> String {
    env("AWS_PROFILE").unwrap_or_else(|| "default".into())
}

fn config_file() -> PathBuf {
    env("AWS_CONFIG_FILE").map_or_else(|| home().join(".aws/config"), PathBuf::from)
}

fn credentials_file() -> PathBuf {
    env("AWS_SHARED_CREDENTIALS_FILE")
        .map_or_else(|| home().join(".aws/credentials"), PathBuf::from)
}

/// `key` in section `profile` of an INI-style AWS file (`[profile NAME]` in the config
/// file except for `default`).
fn shared_value(path: &PathBuf, profile: &str, config: bool, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let wanted = if config && profile != "default" {
        format!("profile {profile}")
    } else {
        profile.to_string()
    };
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == wanted;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

fn agent() -> Result<ureq::Agent> {
    Ok(ureq::AgentBuilder::new()
        .tls_config(crate::oci::tls::client_config()?)
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build())
}

/// The standard credential chain, first match wins.
pub fn credentials(agent: &ureq::Agent, region: &str) -> Result<Credentials> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
            source: "environment".into(),
        });
    }
    if let (Some(token_file), Some(role)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        return web_identity(agent, region, &token_file, &role);
    }
    let (file, profile) = (credentials_file(), profile_name());
    if let (Some(id), Some(secret)) = (
        shared_value(&file, &profile, false, "aws_access_key_id"),
        shared_value(&file, &profile, false, "aws_secret_access_key"),
    ) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: shared_value(&file, &profile, false, "aws_session_token"),
            source: format!("{} [{profile}]", file.display()),
        });
    }
    let ecs = env("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|r| format!("http://169.254.170.2{r}"))
    });
    if let Some(url) = ecs {
        let mut req = agent.get(&url);
        if let Some(t) = env("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
            req = req.set("Authorization", &t);
        }
        let text = req
            .call()
            .map_err(|e| dependency("ECS credentials endpoint", &e))?
            .into_string()
            .map_err(|e| Error::Dependency(format!("AWS ECS credentials: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Dependency(format!("AWS ECS credentials: {e}")))?;
        return from_json(&v, "Token", "the ECS container credentials endpoint");
    }
    if env("AWS_EC2_METADATA_DISABLED").is_none_or(|v| !v.eq_ignore_ascii_case("true"))
        && let Some(c) = imds()
    {
        return Ok(c);
    }
    Err(Error::invalid(
        "AWS KMS: no credentials (environment, web identity token, shared credentials file, \
         ECS or EC2 instance metadata)",
    ))
}

fn from_json(v: &Value, token_field: &str, source: &str) -> Result<Credentials> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    match (s("AccessKeyId"), s("SecretAccessKey")) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: s(token_field),
            source: source.into(),
        }),
        _ => Err(Error::Dependency(format!(
            "AWS credentials from {source}: no AccessKeyId/SecretAccessKey"
        ))),
    }
}

/// EC2 IMDSv2, with a short timeout (it is not there off EC2).
fn imds() -> Option<Credentials> {
    let base =
        env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
    let base = base.trim_end_matches('/');
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .build();
    let token = agent
        .put(&format!("{base}/latest/api/token"))
        .set("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .call()
        .ok()?
        .into_string()
        .ok()?;
    let get = |path: &str| {
        agent
            .get(&format!("{base}{path}"))
            .set("X-aws-ec2-metadata-token", &token)
            .call()
            .ok()?
            .into_string()
            .ok()
    };
    let role = get("/latest/meta-data/iam/security-credentials/")?;
    let role = role.lines().next()?.trim().to_string();
    let v: Value = serde_json::from_str(&get(&format!(
        "/latest/meta-data/iam/security-credentials/{role}"
    ))?)
    .ok()?;
    from_json(&v, "Token", "EC2 instance metadata").ok()
}

/// STS `AssumeRoleWithWebIdentity` (unsigned: the token is the credential).
fn web_identity(
    agent: &ureq::Agent,
    region: &str,
    token_file: &str,
    role: &str,
) -> Result<Credentials> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| Error::invalid(format!("AWS_WEB_IDENTITY_TOKEN_FILE {token_file}: {e}")))?;
    let session = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "imager".into());
    let url = endpoint("STS", "sts", region);
    let response = agent
        .post(&url)
        .send_form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", &session),
            ("WebIdentityToken", token.trim()),
        ])
        .map_err(|e| dependency("STS AssumeRoleWithWebIdentity", &e))?
        .into_string()
        .map_err(|e| Error::Dependency(format!("AWS STS: {e}")))?;
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = response.find(&open)? + open.len();
        let end = response[start..].find(&format!("</{name}>"))? + start;
        Some(response[start..end].to_string())
    };
    match (tag("AccessKeyId"), tag("SecretAccessKey")) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: tag("SessionToken"),
            source: format!("web identity {role}"),
        }),
        _ => Err(Error::Dependency(
            "AWS STS AssumeRoleWithWebIdentity: no credentials in the answer".into(),
        )),
    }
}

/// The endpoint of `service`: `AWS_ENDPOINT_URL_<ID>`, `AWS_ENDPOINT_URL`, else AWS's.
fn endpoint(id: &str, service: &str, region: &str) -> String {
    env(&format!("AWS_ENDPOINT_URL_{id}"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"))
}

fn dependency(what: &str, e: &ureq::Error) -> Error {
    match e {
        ureq::Error::Status(code, r) => {
            Error::Dependency(format!("AWS {what}: HTTP {code} from {}", r.get_url()))
        }
        ureq::Error::Transport(t) => Error::Dependency(format!("AWS {what}: {t}")),
    }
}

/// A JSON 1.1 client of one AWS service.
struct Service {
    agent: ureq::Agent,
    creds: Credentials,
    region: String,
    /// `kms`, `acm`.
    name: &'static str,
    target_prefix: &'static str,
    url: String,
}

impl Service {
    fn new(agent: ureq::Agent, creds: Credentials, region: &str, id: &str) -> Service {
        let (name, target_prefix) = match id {
            "KMS" => ("kms", "TrentService"),
            _ => ("acm", "CertificateManager"),
        };
        Service {
            url: endpoint(id, name, region),
            agent,
            creds,
            region: region.into(),
            name,
            target_prefix,
        }
    }

    /// One call; throttling and 5xx answers are tried again (4 tries, backing off).
    fn call(&self, action: &str, body: &Value) -> Result<Value> {
        let body = serde_json::to_vec(body).expect("JSON");
        let mut delay = Duration::from_millis(200);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.call_once(action, &body) {
                Err(Retry::Again(e)) if tries < 4 => {
                    std::thread::sleep(delay);
                    delay *= 2;
                    let _ = e;
                }
                Err(Retry::Again(e) | Retry::Fail(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    fn call_once(&self, action: &str, body: &[u8]) -> std::result::Result<Value, Retry> {
        let url = url_parts(&self.url);
        let date = amz_date(SystemTime::now());
        let target = format!("{}.{action}", self.target_prefix);
        let mut headers = vec![
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            ("host".to_string(), url.host.clone()),
            ("x-amz-date".to_string(), date.clone()),
            ("x-amz-target".to_string(), target.clone()),
        ];
        if let Some(t) = &self.creds.session_token {
            headers.push(("x-amz-security-token".to_string(), t.clone()));
        }
        let auth = sigv4_authorization(
            &self.creds,
            &SigV4Request {
                method: "POST",
                path: &url.path,
                query: "",
                headers: &headers,
                body,
                region: &self.region,
                service: self.name,
                amz_date: &date,
            },
        );
        let mut req = self.agent.post(&self.url);
        for (k, v) in &headers {
            if k != "host" {
                req = req.set(k, v);
            }
        }
        let what = format!("{} {action}", self.name.to_uppercase());
        match req.set("authorization", &auth).send_bytes(body) {
            Ok(r) => r
                .into_string()
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                .map_err(|e| {
                    Retry::Fail(Error::Dependency(format!(
                        "AWS {what}: unreadable answer: {e}"
                    )))
                }),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let kind = v
                    .get("__type")
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
                    .unwrap_or_default();
                let message = v
                    .get("message")
                    .or_else(|| v.get("Message"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let e = Error::Dependency(format!(
                    "AWS {what}: HTTP {code} {kind}{}{message}",
                    if message.is_empty() { "" } else { ": " }
                ));
                if code >= 500 || code == 429 || kind.contains("Throttl") {
                    Err(Retry::Again(e))
                } else {
                    Err(Retry::Fail(e))
                }
            }
            Err(e @ ureq::Error::Transport(_)) => Err(Retry::Again(dependency(&what, &e))),
        }
    }
}

enum Retry {
    Again(Error),
    Fail(Error),
}

struct UrlParts {
    host: String,
    path: String,
}

fn url_parts(url: &str) -> UrlParts {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = host
        .strip_suffix(":443")
        .filter(|_| url.starts_with("https:"))
        .or_else(|| {
            host.strip_suffix(":80")
                .filter(|_| url.starts_with("http:"))
        })
        .unwrap_or(host);
    UrlParts {
        host: host.to_string(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    }
}

/// A KMS key.
pub struct KmsKey {
    kms: Service,
    key_id: String,
    public: rsa::PublicKey,
}

impl KmsKey {
    /// Opens `key_id` (id, ARN or alias) in `region` (else the environment's).
    pub fn open(key_id: &str, region: &str) -> Result<Self> {
        use rsa::pkcs8::DecodePublicKey;
        let region = self::region(region)?;
        let agent = agent()?;
        let creds = credentials(&agent, &region)?;
        let kms = Service::new(agent, creds, &region, "KMS");
        let v = kms.call("GetPublicKey", &json!({ "KeyId": key_id }))?;
        let what = format!("AWS KMS key {key_id}");
        let usage = v.get("KeyUsage").and_then(Value::as_str).unwrap_or("");
        if usage != "SIGN_VERIFY" {
            return Err(Error::invalid(format!(
                "{what}: key usage is {usage:?}, not SIGN_VERIFY"
            )));
        }
        let spec = v.get("KeySpec").and_then(Value::as_str).unwrap_or("");
        if !matches!(spec, "RSA_2048" | "RSA_3072" | "RSA_4096") {
            return Err(Error::invalid(format!(
                "{what}: key type is not RSA ({spec})"
            )));
        }
        let der = v
            .get("PublicKey")
            .and_then(Value::as_str)
            .and_then(|b| B64.decode(b).ok())
            .ok_or_else(|| Error::Dependency(format!("{what}: GetPublicKey has no PublicKey")))?;
        let public = rsa::PublicKey::from_public_key_der(&der)
            .map_err(|e| Error::Dependency(format!("{what}: unreadable public key: {e}")))?;
        Ok(KmsKey {
            kms,
            key_id: key_id.to_string(),
            public,
        })
    }

    /// The first certificate of ACM certificate `arn`, with this key's credentials.
    pub fn acm_certificate(&self, arn: &str) -> Result<Vec<u8>> {
        let acm = Service::new(
            self.kms.agent.clone(),
            self.kms.creds.clone(),
            &self.kms.region,
            "ACM",
        );
        let v = acm.call("GetCertificate", &json!({ "CertificateArn": arn }))?;
        v.get("Certificate")
            .and_then(Value::as_str)
            .map(|pem| pem.as_bytes().to_vec())
            .ok_or_else(|| Error::Dependency(format!("AWS ACM {arn}: no Certificate")))
    }
}

impl KeySigner for KmsKey {
    fn public_key(&self) -> &rsa::PublicKey {
        &self.public
    }

    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>> {
        let alg = match hash {
            HashAlg::Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
            HashAlg::Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
            HashAlg::Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
        };
        let v = self.kms.call(
            "Sign",
            &json!({
                "KeyId": self.key_id,
                "Message": B64.encode(digest),
                "MessageType": "DIGEST",
                "SigningAlgorithm": alg,
            }),
        )?;
        v.get("Signature")
            .and_then(Value::as_str)
            .and_then(|b| B64.decode(b).ok())
            .ok_or_else(|| {
                Error::Dependency(format!(
                    "AWS KMS key {}: Sign has no Signature",
                    self.key_id
                ))
            })
    }

    fn describe(&self) -> String {
        format!("AWS KMS key {}", self.key_id)
    }
}

/// The parse of a KMS or ACM JSON answer, for the fuzz target.
pub fn parse_answer(bytes: &[u8]) -> Option<(String, Vec<u8>)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let spec = v.get("KeySpec").and_then(Value::as_str)?.to_string();
    let der = B64
        .decode(v.get("PublicKey").and_then(Value::as_str)?)
        .ok()?;
    Some((spec, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 example (General Reference, "Signature Version 4 signing process":
    /// IAM ListUsers, 2015-08-30T12:36:00Z, us-east-1).
    #[test]
    fn sigv4_matches_the_published_example() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            source: String::new(),
        };
        let headers = [
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("Host".to_string(), "iam.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let auth = sigv4_authorization(
            &creds,
            &SigV4Request {
                method: "GET",
                path: "/",
                query: "Action=ListUsers&Version=2010-05-08",
                headers: &headers,
                body: b"",
                region: "us-east-1",
                service: "iam",
                amz_date: "20150830T123600Z",
            },
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn amz_dates() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(amz_date(t(0)), "19700101T000000Z");
        assert_eq!(amz_date(t(1_440_938_160)), "20150830T123600Z");
        assert_eq!(amz_date(t(951_782_400)), "20000229T000000Z");
    }

    #[test]
    fn url_host_and_path() {
        let u = url_parts("http://127.0.0.1:5000");
        assert_eq!((u.host.as_str(), u.path.as_str()), ("127.0.0.1:5000", "/"));
        let u = url_parts("https://kms.eu-west-1.amazonaws.com:443/");
        assert_eq!(u.host, "kms.eu-west-1.amazonaws.com");
    }
}
