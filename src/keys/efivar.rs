//! SecureBoot enrollment variables: EFI signature lists (ESL) of X.509 certificates,
//! wrapped as time-based authenticated writes (`EFI_VARIABLE_AUTHENTICATION_2`) —
//! the `PK.auth`, `KEK.auth` and `db.auth` files systemd-boot enrolls from
//! `loader/keys/auto/`.
//!
//! Talos (through go-uefi) stores the certificate's PEM text in the ESL and hashes the
//! signed bytes twice for messageDigest; firmware wants DER and a single hash (UEFI
//! Specification, "Variable Services": `EFI_VARIABLE_AUTHENTICATION_2`), so this
//! follows the UEFI Specification. The signature owner GUID is derived as
//! Talos derives it, so the entries carry the same owner.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::sign::pkcs7::{self, oid};
use crate::sign::{Signer, der_to_pem};

/// The three enrollment files, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentDb {
    pub pk: Vec<u8>,
    pub kek: Vec<u8>,
    pub db: Vec<u8>,
}

impl EnrollmentDb {
    /// `(file name, contents)` in the order systemd-boot enrolls them (PK last, since
    /// writing PK leaves Setup Mode).
    pub fn files(&self) -> [(&'static str, &[u8]); 3] {
        [
            ("db.auth", &self.db),
            ("KEK.auth", &self.kek),
            ("PK.auth", &self.pk),
        ]
    }
}

/// An EFI_GUID. Stored in wire layout: the first three fields little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// From the canonical text fields `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let (a, b, c) = (d1.to_le_bytes(), d2.to_le_bytes(), d3.to_le_bytes());
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// From the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, at compile
    /// time (a malformed text fails the build).
    pub const fn parse(text: &str) -> Self {
        let t = text.as_bytes();
        assert!(t.len() == 36, "a GUID has 36 characters");
        let mut be = [0u8; 16];
        let (mut i, mut n) = (0, 0);
        while i < 36 {
            if t[i] == b'-' {
                i += 1;
                continue;
            }
            be[n / 2] = be[n / 2] << 4 | hex_digit(t[i]);
            n += 1;
            i += 1;
        }
        assert!(n == 32, "a GUID has 32 hex digits");
        Guid::from_uuid_bytes(be)
    }

    /// From a big-endian (RFC 4122 byte order) UUID.
    pub const fn from_uuid_bytes(u: [u8; 16]) -> Self {
        let d1 = u32::from_be_bytes([u[0], u[1], u[2], u[3]]);
        let d2 = u16::from_be_bytes([u[4], u[5]]);
        let d3 = u16::from_be_bytes([u[6], u[7]]);
        Guid::new(
            d1,
            d2,
            d3,
            [u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]],
        )
    }
}

const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
        let d2 = u16::from_le_bytes([g[4], g[5]]);
        let d3 = u16::from_le_bytes([g[6], g[7]]);
        write!(
            f,
            "{d1:08x}-{d2:04x}-{d3:04x}-{}-{}",
            hex::encode(&g[8..10]),
            hex::encode(&g[10..])
        )
    }
}

/// `EFI_GLOBAL_VARIABLE`: vendor of PK and KEK.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: vendor of db and dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::parse("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// `EFI_CERT_X509_GUID`: signature list of DER certificates.
pub const EFI_CERT_X509: Guid = Guid::parse("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// `EFI_CERT_TYPE_PKCS7_GUID`: the AuthInfo certificate type.
pub const EFI_CERT_TYPE_PKCS7: Guid = Guid::parse("4aafd29d-68df-49ee-8aa9-347d375665a7");
/// Signature owner Talos records for the Microsoft certificates.
pub const MICROSOFT_OWNER: Guid = Guid::parse("77fa9abd-0359-4d32-bd60-28f4e78f784b");

/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
/// No APPEND_WRITE: each file replaces the whole variable.
pub const ATTRIBUTES: u32 = 0x0000_0027;

const WIN_CERT_REVISION_2_0: u16 = 0x0200;
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0EF1;

/// The well-known Microsoft certificates (assets/certs/README.md), in Talos's order.
pub const MICROSOFT_KEK_CERTS: [&[u8]; 2] = [
    include_bytes!("../../assets/certs/kek/microsoft-kek-ca-2011.der"),
    include_bytes!("../../assets/certs/kek/microsoft-kek-2k-ca-2023.der"),
];
/// Microsoft third-party UEFI CAs (shim, option ROMs) for db, in Talos's order.
pub const MICROSOFT_DB_CERTS: [&[u8]; 3] = [
    include_bytes!("../../assets/certs/db/microsoft-uefi-ca-2011.der"),
    include_bytes!("../../assets/certs/db/microsoft-option-rom-uefi-ca-2023.der"),
    include_bytes!("../../assets/certs/db/microsoft-uefi-ca-2023.der"),
];

/// The variables and what goes into each beside the enrolled certificate.
struct Variable {
    name: &'static str,
    vendor: Guid,
    well_known: &'static [&'static [u8]],
}

const PK: Variable = Variable {
    name: "PK",
    vendor: EFI_GLOBAL_VARIABLE,
    well_known: &[],
};
const KEK: Variable = Variable {
    name: "KEK",
    vendor: EFI_GLOBAL_VARIABLE,
    well_known: &MICROSOFT_KEK_CERTS,
};
const DB: Variable = Variable {
    name: "db",
    vendor: EFI_IMAGE_SECURITY_DATABASE,
    well_known: &MICROSOFT_DB_CERTS,
};

/// PK, KEK and db holding the signer's own certificate (plus, if asked, Microsoft's),
/// each signed by `signer`, stamped with `timestamp` (seconds since the epoch).
pub fn enrollment_db(
    signer: &Signer,
    include_well_known: bool,
    timestamp: u64,
) -> Result<EnrollmentDb> {
    enrollment_db_for(signer.cert_der(), signer, include_well_known, timestamp)
}

/// Like [`enrollment_db`], enrolling `enrolled_cert_der` instead of the signer's certificate.
pub fn enrollment_db_for(
    enrolled_cert_der: &[u8],
    signer: &Signer,
    include_well_known: bool,
    timestamp: u64,
) -> Result<EnrollmentDb> {
    let owner = owner_guid(enrolled_cert_der);
    let build = |var: &Variable| {
        let mut entries = vec![(owner, enrolled_cert_der)];
        if include_well_known {
            entries.extend(var.well_known.iter().map(|c| (MICROSOFT_OWNER, *c)));
        }
        authenticated_variable(
            var.name,
            var.vendor,
            timestamp,
            &signature_lists(&entries),
            signer,
        )
    };
    // Three signatures, made concurrently (a remote signer answers each in
    // milliseconds to seconds).
    let (pk, kek, db) = std::thread::scope(|s| {
        let kek = s.spawn(|| build(&KEK));
        let db = s.spawn(|| build(&DB));
        let pk = build(&PK);
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Vec<u8>>>| {
            h.join().expect("a signing thread panicked")
        };
        (pk, join(kek), join(db))
    });
    Ok(EnrollmentDb {
        pk: pk?,
        kek: kek?,
        db: db?,
    })
}

/// Signature owner for an enrolled certificate, derived as Talos does: SHA-256 over
/// the X.500 namespace UUID and the certificate's PEM text, truncated to 16 bytes,
/// marked as an RFC 4122 version-4 UUID. Deterministic per certificate.
pub fn owner_guid(cert_der: &[u8]) -> Guid {
    const NAMESPACE_X500: [u8; 16] = [
        0x6b, 0xa7, 0xb8, 0x14, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];
    let hash = Sha256::new()
        .chain_update(NAMESPACE_X500)
        .chain_update(der_to_pem("CERTIFICATE", cert_der))
        .finalize();
    let mut u: [u8; 16] = hash[..16].try_into().expect("16 bytes");
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    Guid::from_uuid_bytes(u)
}

/// EFI_SIGNATURE_LISTs of X.509 certificates. A certificate joins an earlier list of
/// the same entry size (all entries of a list have one size), else starts a new
/// list; lists keep insertion order.
pub fn signature_lists(entries: &[(Guid, &[u8])]) -> Vec<u8> {
    let mut lists: Vec<(usize, Vec<u8>)> = Vec::new();
    for (owner, cert) in entries {
        let size = 16 + cert.len();
        let list = match lists.iter_mut().position(|(s, _)| *s == size) {
            Some(i) => &mut lists[i].1,
            None => {
                lists.push((size, Vec::new()));
                &mut lists.last_mut().expect("just pushed").1
            }
        };
        list.extend_from_slice(&owner.0);
        list.extend_from_slice(cert);
    }
    let mut out = Vec::new();
    for (size, data) in lists {
        out.extend_from_slice(&EFI_CERT_X509.0);
        out.extend_from_slice(&((28 + data.len()) as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(size as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// EFI_TIME for `unix` seconds (UTC; Pad1, Nanosecond, TimeZone, Daylight, Pad2 zero).
pub fn efi_time(unix: u64) -> Result<[u8; 16]> {
    let t = der::DateTime::from_unix_duration(std::time::Duration::from_secs(unix))
        .map_err(|e| Error::invalid(format!("timestamp {unix} is out of range: {e}")))?;
    let mut out = [0u8; 16];
    out[..2].copy_from_slice(&t.year().to_le_bytes());
    out[2..7].copy_from_slice(&[t.month(), t.day(), t.hour(), t.minutes(), t.seconds()]);
    Ok(out)
}

/// The bytes the variable's signature covers: name (UTF-16LE, no NUL) ‖ vendor GUID ‖
/// attributes ‖ timestamp ‖ payload.
pub fn signed_bytes(name: &str, vendor: Guid, time: &[u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&vendor.0);
    out.extend_from_slice(&ATTRIBUTES.to_le_bytes());
    out.extend_from_slice(time);
    out.extend_from_slice(payload);
    out
}

/// EFI_VARIABLE_AUTHENTICATION_2 ‖ `payload`: the whole SetVariable data for a
/// time-based authenticated write of `name`. The PKCS#7 is a detached SignedData
/// (bare, not in a ContentInfo, as the UEFI Specification requires).
pub fn authenticated_variable(
    name: &str,
    vendor: Guid,
    timestamp: u64,
    payload: &[u8],
    signer: &Signer,
) -> Result<Vec<u8>> {
    use der::Encode;
    let time = efi_time(timestamp)?;
    let content = pkcs7::Content {
        content_type: oid::DATA,
        content: None,
        digest: Sha256::digest(signed_bytes(name, vendor, &time, payload)).into(),
    };
    let signed = pkcs7::signed_data(signer, content, timestamp)?
        .to_der()
        .map_err(|e| Error::invalid(format!("cannot encode the {name} signature: {e}")))?;
    let mut out = Vec::with_capacity(40 + signed.len() + payload.len());
    out.extend_from_slice(&time);
    out.extend_from_slice(&((24 + signed.len()) as u32).to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
    out.extend_from_slice(&EFI_CERT_TYPE_PKCS7.0);
    out.extend_from_slice(&signed);
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_parse_from_their_text() {
        let g = Guid::new(
            0x8be4df61,
            0x93ca,
            0x11d2,
            [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
        );
        assert_eq!(EFI_GLOBAL_VARIABLE, g);
        assert_eq!(g.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
    }

    #[test]
    fn guids_print_in_canonical_form() {
        assert_eq!(
            EFI_GLOBAL_VARIABLE.to_string(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
        assert_eq!(&EFI_CERT_X509.0[..4], &[0xa1, 0x59, 0xc0, 0xa5]);
    }

    #[test]
    fn owner_guid_is_a_version_4_uuid() {
        let g = owner_guid(b"not really a certificate").to_string();
        assert_eq!(&g[14..15], "4");
        assert!(matches!(&g[19..20], "8" | "9" | "a" | "b"), "{g}");
    }

    #[test]
    fn same_size_certificates_share_a_list() {
        let (a, b, c) = ([1u8; 10], [2u8; 10], [3u8; 12]);
        let esl = signature_lists(&[
            (MICROSOFT_OWNER, &a),
            (MICROSOFT_OWNER, &c),
            (MICROSOFT_OWNER, &b),
        ]);
        assert_eq!(esl.len(), (28 + 2 * 26) + (28 + 28));
        assert_eq!(u32::from_le_bytes(esl[16..20].try_into().unwrap()), 80);
        assert_eq!(u32::from_le_bytes(esl[24..28].try_into().unwrap()), 26);
    }

    #[test]
    fn efi_time_fields() {
        // 2024-02-29T13:14:15Z
        assert_eq!(
            efi_time(1_709_212_455).unwrap(),
            [0xe8, 0x07, 2, 29, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
