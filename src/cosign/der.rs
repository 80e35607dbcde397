//! The few DER and X.509 pieces the cosign verifier reads: a certificate's signed
//! bytes, names, validity, public key and extensions, and UTC times as Unix seconds.
//!
//! Read with the raw TLV reader ([`crate::sign::tlv`]) rather than decoded with
//! `x509-cert`: signatures cover the exact bytes (the `tbsCertificate` as sent, and
//! for a certificate-transparency check that same element with one extension cut
//! out), which a decode and re-encode would not guarantee. Follows RFC 5280 §4.1.

use crate::sign::tlv::{Reader, Tlv, tag};

/// OIDs (DER content octets) used by the verifier.
pub mod oid {
    /// id-ecPublicKey 1.2.840.10045.2.1
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// prime256v1 1.2.840.10045.3.1.7
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// secp384r1 1.3.132.0.34
    pub const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// rsaEncryption 1.2.840.113549.1.1.1
    pub const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// Ed25519 1.3.101.112
    pub const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    /// ecdsa-with-SHA256 1.2.840.10045.4.3.2
    pub const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    /// ecdsa-with-SHA384 1.2.840.10045.4.3.3
    pub const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    /// sha256WithRSAEncryption 1.2.840.113549.1.1.11
    pub const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    /// subjectAltName 2.5.29.17
    pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    /// extKeyUsage 2.5.29.37
    pub const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    /// id-kp-codeSigning 1.3.6.1.5.5.7.3.3
    pub const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
    /// Embedded SCT list 1.3.6.1.4.1.11129.2.4.2
    pub const SCT_LIST: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];
    /// Fulcio OIDC issuer (v1, raw string) 1.3.6.1.4.1.57264.1.1
    pub const FULCIO_ISSUER_V1: &[u8] =
        &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x01];
    /// Fulcio OIDC issuer (v2, DER UTF8String) 1.3.6.1.4.1.57264.1.8
    pub const FULCIO_ISSUER_V2: &[u8] =
        &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x08];
}

/// A malformed element: the message says which.
pub type DerResult<T> = std::result::Result<T, String>;

fn e(err: crate::sign::tlv::DerError) -> String {
    err.0
}

/// One extension of a certificate.
#[derive(Debug, Clone, Copy)]
pub struct Extension<'a> {
    pub oid: &'a [u8],
    pub critical: bool,
    /// The extension's value (inside its OCTET STRING).
    pub value: &'a [u8],
    /// The whole `Extension` element.
    pub raw: &'a [u8],
}

/// A parsed certificate, borrowing the DER it came from.
#[derive(Debug, Clone)]
pub struct Certificate<'a> {
    pub der: &'a [u8],
    /// The `tbsCertificate` element as sent (what the issuer signed).
    pub tbs: Tlv<'a>,
    /// The signature algorithm's OID.
    pub signature_algorithm: &'a [u8],
    /// The signature (BIT STRING content without its unused-bits octet).
    pub signature: &'a [u8],
    /// Issuer and subject names as DER (compared byte for byte).
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    /// Validity as Unix seconds (inclusive).
    pub not_before: i64,
    pub not_after: i64,
    /// The `SubjectPublicKeyInfo` element.
    pub spki: &'a [u8],
    pub extensions: Vec<Extension<'a>>,
}

impl<'a> Certificate<'a> {
    /// Parses a DER certificate.
    pub fn parse(der: &'a [u8]) -> DerResult<Certificate<'a>> {
        let mut top = Reader::new(der);
        let cert = top.expect(tag::SEQUENCE, "Certificate").map_err(e)?;
        if !top.is_empty() {
            return Err("bytes after the certificate".into());
        }
        let mut r = cert.children();
        let tbs = r.expect(tag::SEQUENCE, "tbsCertificate").map_err(e)?;
        let alg = r.expect(tag::SEQUENCE, "signatureAlgorithm").map_err(e)?;
        let signature_algorithm = alg
            .children()
            .expect(tag::OID, "algorithm")
            .map_err(e)?
            .content;
        let sig = r.expect(tag::BIT_STRING, "signature").map_err(e)?;
        let signature = match sig.content.split_first() {
            Some((0, rest)) => rest,
            _ => return Err("signature BIT STRING has unused bits".into()),
        };
        let mut t = tbs.children();
        t.optional(tag::CONTEXT_0).map_err(e)?;
        t.expect(tag::INTEGER, "serialNumber").map_err(e)?;
        t.expect(tag::SEQUENCE, "signature").map_err(e)?;
        let issuer = t.expect(tag::SEQUENCE, "issuer").map_err(e)?.raw;
        let validity = t.expect(tag::SEQUENCE, "validity").map_err(e)?;
        let mut v = validity.children();
        let not_before = parse_time(v.any().map_err(e)?)?;
        let not_after = parse_time(v.any().map_err(e)?)?;
        let subject = t.expect(tag::SEQUENCE, "subject").map_err(e)?.raw;
        let spki = t
            .expect(tag::SEQUENCE, "subjectPublicKeyInfo")
            .map_err(e)?
            .raw;
        t.optional(0x81).map_err(e)?;
        t.optional(0x82).map_err(e)?;
        let mut extensions = Vec::new();
        if let Some(exts) = t.optional(0xA3).map_err(e)? {
            let list = exts
                .children()
                .expect(tag::SEQUENCE, "extensions")
                .map_err(e)?;
            let mut l = list.children();
            while !l.is_empty() {
                let ext = l.expect(tag::SEQUENCE, "Extension").map_err(e)?;
                let mut x = ext.children();
                let oid = x.expect(tag::OID, "extnID").map_err(e)?.content;
                let critical = match x.optional(0x01).map_err(e)? {
                    Some(b) => b.content == [0xFF],
                    None => false,
                };
                let value = x.expect(tag::OCTET_STRING, "extnValue").map_err(e)?.content;
                extensions.push(Extension {
                    oid,
                    critical,
                    value,
                    raw: ext.raw,
                });
            }
        }
        Ok(Certificate {
            der,
            tbs,
            signature_algorithm,
            signature,
            issuer,
            subject,
            not_before,
            not_after,
            spki,
            extensions,
        })
    }

    /// The extension with `oid`, if present.
    pub fn extension(&self, oid: &[u8]) -> Option<&Extension<'a>> {
        self.extensions.iter().find(|x| x.oid == oid)
    }

    /// The `tbsCertificate` re-encoded without the extension `oid` (what a
    /// certificate-transparency log signed for a precertificate, RFC 6962 §3.2).
    pub fn tbs_without(&self, oid: &[u8]) -> DerResult<Vec<u8>> {
        use crate::sign::tlv::encode;
        let mut t = self.tbs.children();
        let mut parts: Vec<Vec<u8>> = Vec::new();
        while !t.is_empty() {
            let el = t.any().map_err(e)?;
            if el.tag == 0xA3 {
                let kept: Vec<u8> = self
                    .extensions
                    .iter()
                    .filter(|x| x.oid != oid)
                    .flat_map(|x| x.raw.iter().copied())
                    .collect();
                parts.push(encode(0xA3, &encode(tag::SEQUENCE, &kept)));
            } else {
                parts.push(el.raw.to_vec());
            }
        }
        Ok(encode(tag::SEQUENCE, &parts.concat()))
    }

    /// Subject alternative names that are e-mail addresses or URIs (Fulcio's identities).
    pub fn san_identities(&self) -> DerResult<Vec<String>> {
        let Some(ext) = self.extension(oid::SUBJECT_ALT_NAME) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut r = Reader::new(ext.value);
        let seq = r.expect(tag::SEQUENCE, "GeneralNames").map_err(e)?;
        let mut names = seq.children();
        while !names.is_empty() {
            let n = names.any().map_err(e)?;
            // [1] rfc822Name, [6] uniformResourceIdentifier (IA5String, implicit)
            if n.tag == 0x81 || n.tag == 0x86 {
                out.push(String::from_utf8_lossy(n.content).into_owned());
            }
        }
        Ok(out)
    }

    /// Whether the extended key usage lists `purpose`.
    pub fn has_eku(&self, purpose: &[u8]) -> DerResult<bool> {
        let Some(ext) = self.extension(oid::EXT_KEY_USAGE) else {
            return Ok(false);
        };
        let mut r = Reader::new(ext.value);
        let seq = r.expect(tag::SEQUENCE, "ExtKeyUsageSyntax").map_err(e)?;
        let mut l = seq.children();
        while !l.is_empty() {
            if l.expect(tag::OID, "KeyPurposeId").map_err(e)?.content == purpose {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The OIDC issuer Fulcio recorded (v2 extension, else the v1 one).
    pub fn fulcio_issuer(&self) -> DerResult<Option<String>> {
        if let Some(ext) = self.extension(oid::FULCIO_ISSUER_V2) {
            let s = Reader::new(ext.value)
                .expect(0x0C, "UTF8String")
                .map_err(e)?;
            return Ok(Some(String::from_utf8_lossy(s.content).into_owned()));
        }
        Ok(self
            .extension(oid::FULCIO_ISSUER_V1)
            .map(|x| String::from_utf8_lossy(x.value).into_owned()))
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn parse_time(t: Tlv<'_>) -> DerResult<i64> {
    let s = std::str::from_utf8(t.content).map_err(|_| "time is not ASCII".to_string())?;
    let digits = s.strip_suffix('Z').ok_or("time is not in UTC")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("malformed time {s:?}"));
    }
    let (year, rest) = match (t.tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().unwrap();
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().unwrap(), &digits[4..]),
        _ => return Err(format!("malformed time {s:?}")),
    };
    let n = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap() };
    Ok(unix_seconds(year, n(0), n(2), n(4), n(6), n(8)))
}

/// Seconds since 1970-01-01T00:00:00Z of a proleptic Gregorian UTC date and time.
pub fn unix_seconds(year: i64, month: i64, day: i64, h: i64, m: i64, s: i64) -> i64 {
    // Days from civil (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + h * 3600 + m * 60 + s
}

/// An RFC 3339 UTC time (`2021-01-12T11:53:27Z`, fractions ignored) as Unix seconds.
pub fn rfc3339_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if !s.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    Some(unix_seconds(
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(unix_seconds(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(unix_seconds(2000, 3, 1, 0, 0, 0), 951_868_800);
        assert_eq!(
            rfc3339_seconds("2021-03-07T03:20:29.000Z"),
            Some(1_615_087_229)
        );
        assert_eq!(rfc3339_seconds("2021-03-07"), None);
    }
}
