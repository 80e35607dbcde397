//! The external signer (Talos 1.14 `signerd`): a `signerapi.SignerService` reached by
//! gRPC over a Unix socket (`signerAddress: unix:///run/signer.sock`). The imager
//! sends the digest it computed with its hash and `SCHEME_RSA_PKCS1V15`; the signer
//! returns the raw signature. SecureBoot signers read the certificate
//! (`GetCertificate`), PCR signers the public key (`GetPublicKey`). Follows Talos's
//! `api/signer/signer.proto` and `pkg/imager/profile/internal/signer/signerd`.
//!
//! Why no tonic/prost: the protocol is three messages of `bytes` and enum fields, so
//! [`proto`] encodes and decodes them by hand (no protoc or build script, and the
//! decoder is small enough to fuzz), and a gRPC unary call is one HTTP/2 POST with
//! 5-byte framing and a `grpc-status` trailer, which `hyper`'s HTTP/2 client (already
//! the service's HTTP stack) does on a `tokio` Unix socket. tonic would add tower,
//! prost and their build-time code generation for those few lines.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::super::signer::{HashAlg, KeySigner};
use crate::error::{Error, Result};

/// How long one call may take (a signer may wait for a touch on a YubiKey).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The messages of `signer.proto`, encoded and decoded by hand.
pub mod proto {
    /// `Hash`: HASH_SHA256 = 1, HASH_SHA384 = 2, HASH_SHA512 = 3.
    pub fn hash_value(hash: super::HashAlg) -> u64 {
        match hash {
            super::HashAlg::Sha256 => 1,
            super::HashAlg::Sha384 => 2,
            super::HashAlg::Sha512 => 3,
        }
    }

    /// `Scheme.SCHEME_RSA_PKCS1V15`.
    pub const SCHEME_RSA_PKCS1V15: u64 = 1;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// `SignRequest{digest = 1, hash = 2, scheme = 3}`.
    pub fn sign_request(digest: &[u8], hash: u64, scheme: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(digest.len() + 8);
        out.push(0x0a); // field 1, length-delimited
        varint(&mut out, digest.len() as u64);
        out.extend_from_slice(digest);
        out.push(0x10); // field 2, varint
        varint(&mut out, hash);
        out.push(0x18); // field 3, varint
        varint(&mut out, scheme);
        out
    }

    /// Field 1 (`bytes`) of a message whose only field that matters is 1:
    /// `CertificateResponse.cert_pem`, `PublicKeyResponse.pub_key_pem`,
    /// `SignResponse.signature`. Unknown fields are skipped, as proto3 requires; the
    /// last occurrence wins; absent means empty.
    pub fn bytes_field_1(msg: &[u8]) -> Result<Vec<u8>, String> {
        let mut at = 0;
        let mut found = Vec::new();
        while at < msg.len() {
            let key = read_varint(msg, &mut at)?;
            let (field, wire) = (key >> 3, key & 7);
            if field == 0 {
                return Err("field number 0".into());
            }
            match wire {
                0 => {
                    read_varint(msg, &mut at)?;
                }
                1 => at = skip(msg, at, 8)?,
                5 => at = skip(msg, at, 4)?,
                2 => {
                    let len = read_varint(msg, &mut at)?;
                    let len = usize::try_from(len).map_err(|_| "length too large")?;
                    let end = skip(msg, at, len)?;
                    if field == 1 {
                        found = msg[at..end].to_vec();
                    }
                    at = end;
                }
                w => return Err(format!("unsupported wire type {w}")),
            }
        }
        Ok(found)
    }

    fn skip(msg: &[u8], at: usize, n: usize) -> Result<usize, String> {
        at.checked_add(n)
            .filter(|&end| end <= msg.len())
            .ok_or_else(|| "truncated message".to_string())
    }

    fn read_varint(msg: &[u8], at: &mut usize) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*at).ok_or("truncated varint")?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// The gRPC length-prefixed message of a response body: exactly one
    /// uncompressed message.
    pub fn unframe(body: &[u8]) -> Result<&[u8], String> {
        if body.len() < 5 {
            return Err(format!("a {}-byte body holds no gRPC message", body.len()));
        }
        if body[0] != 0 {
            return Err("a compressed gRPC message (none was offered)".into());
        }
        let len = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        if body.len() - 5 != len {
            return Err(format!(
                "the gRPC message says {len} bytes, the body holds {}",
                body.len() - 5
            ));
        }
        Ok(&body[5..])
    }

    /// A request body: the 5-byte gRPC prefix and `msg`.
    pub fn frame(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 5);
        out.push(0);
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(msg);
        out
    }
}

/// A connection to a signer: its own small runtime (the imager's build is
/// synchronous; one worker drives the connection) and one HTTP/2 connection that
/// multiplexes the calls of concurrent signatures.
struct Client {
    address: String,
    runtime: tokio::runtime::Runtime,
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    fn connect(address: &str) -> Result<Client> {
        let path = socket_path(address)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("imager-signer")
            .enable_all()
            .build()
            .map_err(|e| Error::io_during("starting the signer client", e))?;
        let fail = |what: String| Error::Dependency(format!("signer {address}: {what}"));
        let send = runtime.block_on(async {
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(&path))
                    .await
                    .map_err(|_| fail("connecting timed out".into()))?
                    .map_err(|e| fail(format!("cannot connect to {}: {e}", path.display())))?;
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| fail(format!("HTTP/2 handshake failed: {e}")))?;
            tokio::spawn(conn);
            Ok::<_, Error>(send)
        })?;
        Ok(Client {
            address: address.to_string(),
            runtime,
            send,
        })
    }

    /// One unary call: `method` of `signerapi.SignerService` with request `msg`;
    /// returns the response message.
    fn call(&self, method: &str, msg: &[u8]) -> Result<Vec<u8>> {
        let fail =
            |what: String| Error::Dependency(format!("signer {}: {method}: {what}", self.address));
        let request =
            hyper::Request::post(format!("http://localhost/signerapi.SignerService/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(proto::frame(msg))))
                .map_err(|e| fail(format!("cannot make the request: {e}")))?;
        let mut send = self.send.clone();
        self.runtime.block_on(async {
            let call = async {
                send.ready()
                    .await
                    .map_err(|e| fail(format!("connection lost: {e}")))?;
                let response = send
                    .send_request(request)
                    .await
                    .map_err(|e| fail(format!("request failed: {e}")))?;
                let (parts, body) = response.into_parts();
                let collected = body
                    .collect()
                    .await
                    .map_err(|e| fail(format!("reading the response failed: {e}")))?;
                let trailers = collected.trailers().cloned();
                let body = collected.to_bytes();
                if parts.status != hyper::StatusCode::OK {
                    return Err(fail(format!("HTTP status {}", parts.status)));
                }
                // A failed call may put grpc-status in the headers (trailers-only).
                let status = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .or_else(|| parts.headers.get("grpc-status"));
                let message = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-message"))
                    .or_else(|| parts.headers.get("grpc-message"))
                    .and_then(|v| v.to_str().ok())
                    .map(percent_decode_lossy)
                    .unwrap_or_default();
                match status.and_then(|s| s.to_str().ok()) {
                    Some("0") => {}
                    Some(code) => {
                        return Err(fail(format!(
                            "gRPC status {code} ({}){}",
                            grpc_code_name(code),
                            if message.is_empty() {
                                String::new()
                            } else {
                                format!(": {message}")
                            }
                        )));
                    }
                    None => return Err(fail("no grpc-status in the response".into())),
                }
                proto::unframe(&body).map(<[u8]>::to_vec).map_err(&fail)
            };
            tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .map_err(|_| fail(format!("no answer in {} s", CALL_TIMEOUT.as_secs())))?
        })
    }
}

/// The socket path of a `unix://` address (`unix:///run/s.sock` → `/run/s.sock`),
/// the only scheme Talos accepts.
pub fn socket_path(address: &str) -> Result<PathBuf> {
    match address.strip_prefix("unix://") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(Error::invalid(format!(
            "signer address {address:?} must use the unix:// scheme (unix:///path/to/socket)"
        ))),
    }
}

fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(h)) => {
                out.push(h);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn grpc_code_name(code: &str) -> &'static str {
    match code {
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "16" => "UNAUTHENTICATED",
        _ => "error",
    }
}

/// A key behind an external signer.
pub struct ExternalKey {
    client: Client,
    public: rsa::PublicKey,
}

impl ExternalKey {
    /// A PCR signer: the public key from `GetPublicKey` (PEM SubjectPublicKeyInfo).
    pub fn open_pcr(address: &str) -> Result<Self> {
        use rsa::pkcs8::DecodePublicKey;
        let client = Client::connect(address)?;
        let pem = proto::bytes_field_1(&client.call("GetPublicKey", &[])?)
            .map_err(|e| Error::Dependency(format!("signer {address}: GetPublicKey: {e}")))?;
        let text = String::from_utf8_lossy(&pem);
        let public = rsa::PublicKey::from_public_key_pem(text.trim()).map_err(|e| {
            Error::invalid(format!(
                "signer {address}: GetPublicKey: key type is not RSA or not a PEM public key: {e}"
            ))
        })?;
        Ok(ExternalKey { client, public })
    }

    /// A SecureBoot signer: the certificate from `GetCertificate` (PEM), the public
    /// key read from it.
    pub fn open_secureboot(address: &str) -> Result<(Self, x509_cert::Certificate)> {
        use rsa::pkcs8::DecodePublicKey;
        let client = Client::connect(address)?;
        let pem = proto::bytes_field_1(&client.call("GetCertificate", &[])?)
            .map_err(|e| Error::Dependency(format!("signer {address}: GetCertificate: {e}")))?;
        let (cert, _) = super::super::parse_certificate(&pem)
            .map_err(|e| Error::invalid(format!("signer {address}: GetCertificate: {e}")))?;
        let spki = der::Encode::to_der(cert.tbs_certificate().subject_public_key_info())
            .map_err(|e| Error::invalid(format!("signer {address}: certificate: {e}")))?;
        let public = rsa::PublicKey::from_public_key_der(&spki).map_err(|_| {
            Error::invalid(format!(
                "signer {address}: the certificate's key type is not RSA"
            ))
        })?;
        Ok((ExternalKey { client, public }, cert))
    }
}

impl KeySigner for ExternalKey {
    fn public_key(&self) -> &rsa::PublicKey {
        &self.public
    }

    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>> {
        let request =
            proto::sign_request(digest, proto::hash_value(hash), proto::SCHEME_RSA_PKCS1V15);
        let response = self.client.call("Sign", &request)?;
        proto::bytes_field_1(&response)
            .map_err(|e| Error::Dependency(format!("signer {}: Sign: {e}", self.client.address)))
    }

    fn describe(&self) -> String {
        format!("signer {}", self.client.address)
    }
}

#[cfg(test)]
mod tests {
    use super::proto::*;

    #[test]
    fn sign_request_matches_protobuf_encoding() {
        // protoc --encode=signerapi.SignRequest: digest "abc", hash SHA384, scheme PKCS1V15.
        assert_eq!(
            hex::encode(sign_request(b"abc", 2, 1)),
            "0a03616263100218".to_string() + "01"
        );
    }

    #[test]
    fn responses_decode_and_garbage_is_refused() {
        assert_eq!(bytes_field_1(&[0x0a, 2, b'h', b'i']).unwrap(), b"hi");
        // Unknown fields before and after are skipped.
        assert_eq!(
            bytes_field_1(&[0x10, 0x96, 0x01, 0x0a, 1, b'x', 0x1d, 1, 2, 3, 4]).unwrap(),
            b"x"
        );
        assert_eq!(bytes_field_1(&[]).unwrap(), b"");
        for bad in [
            &[0x0a, 5, 1][..],
            &[0x0a],
            &[0x0b],
            &[0x08, 0xff],
            &[0x00, 0],
        ] {
            assert!(bytes_field_1(bad).is_err(), "{bad:?}");
        }
        assert_eq!(unframe(&frame(b"abc")).unwrap(), b"abc");
        assert!(unframe(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
    }
}
