//! New SecureBoot key material, as `talosctl gen secureboot` makes it: RSA keys
//! (PKCS#1 PEM) and a self-signed signing certificate, plus writing them (and the
//! enrollment files) to a directory without ever clobbering existing keys.
//!
//! Randomness comes from the operating system (`getrandom`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::Encode;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::sha2::Sha512;
use spki::SubjectPublicKeyInfoRef;
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, spki::SubjectPublicKeyInfoOwned};

use crate::error::{Error, IoContext, Result};
use crate::sign::tlv::{self, tag};
use crate::sign::{RsaKey, Signer};

/// Output file names (Talos's constants).
pub const UKI_SIGNING_CERT_PEM: &str = "uki-signing-cert.pem";
pub const UKI_SIGNING_CERT_DER: &str = "uki-signing-cert.der";
pub const UKI_SIGNING_KEY: &str = "uki-signing-key.pem";
pub const PCR_SIGNING_KEY: &str = "pcr-signing-key.pem";

/// Key sizes: 4096 for the SecureBoot signer, 2048 for the PCR policy key (what
/// systemd-measure and the TPM accept).
pub const UKI_KEY_BITS: usize = 4096;
pub const PCR_KEY_BITS: usize = 2048;

/// Default subject of the signing certificate.
pub const DEFAULT_COMMON_NAME: &str = "Test UKI Signing Key";

/// Certificate lifetime: 87 600 hours, as Talos.
const VALIDITY: Duration = Duration::from_secs(87_600 * 3600);

/// A new RSA private key of `bits` bits.
pub fn rsa_key(bits: usize) -> Result<RsaKey> {
    RsaKey::new(&mut getrandom::SysRng, bits)
        .map_err(|e| Error::invalid(format!("RSA {bits} key generation failed: {e}")))
}

/// PKCS#1 PEM (`RSA PRIVATE KEY`) of `key`.
pub fn key_pem(key: &RsaKey) -> Result<String> {
    key.to_pkcs1_pem(der::pem::LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| Error::invalid(format!("cannot encode the private key: {e}")))
}

/// A self-signed CA certificate for `key` with the profile of Talos's
/// `NewSelfSignedCertificateAuthority`: subject and issuer `O=<name>` only, random
/// serial below 2^128, sha512WithRSAEncryption, valid from `not_before` for ten
/// years, BasicConstraints CA (critical), KeyUsage digitalSignature + keyCertSign
/// (critical), EKU codeSigning, random 20-byte subject key identifier.
///
/// One deliberate difference from Talos: its EKU is serverAuth + clientAuth. Firmware
/// ignores EKU, but with that EKU sbverify and osslsigncode reject every Authenticode
/// signature made with the certificate (osslsigncode: "Unsupported Signer's
/// certificate purpose"; sbverify accepts an EKU only if it is codeSigning alone or
/// includes emailProtection), so nobody could check a signed UKI with the standard
/// tools. codeSigning alone satisfies both.
pub fn self_signed_certificate(
    key: &RsaKey,
    name: &str,
    not_before: SystemTime,
) -> Result<Certificate> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::invalid(format!("cannot build the certificate ({what}): {e}"))
    };
    let subject = organization_name(name).map_err(|e| fail("subject", &e))?;
    let mut serial = [0u8; 16];
    let mut ski = [0u8; 20];
    getrandom::fill(&mut serial)
        .and_then(|()| getrandom::fill(&mut ski))
        .map_err(|e| fail("randomness", &e))?;
    let serial = SerialNumber::new(&serial).map_err(|e| fail("serial", &e))?;
    let time = |t: SystemTime| Time::try_from(t).map_err(|e| fail("validity", &e));
    let validity = Validity::new(time(not_before)?, time(not_before + VALIDITY)?);
    let spki = SubjectPublicKeyInfoOwned::from_key(&key.to_public_key())
        .map_err(|e| fail("public key", &e))?;
    let profile = CaProfile {
        subject,
        ski: ski.to_vec(),
    };
    let builder = CertificateBuilder::new(profile, serial, validity, spki)
        .map_err(|e| fail("builder", &e))?;
    builder
        .build::<_, rsa::pkcs1v15::Signature>(&SigningKey::<Sha512>::new(key.clone()))
        .map_err(|e| fail("signing", &e))
}

/// A fresh signer: an RSA key of `bits` bits and its self-signed certificate.
/// (The README demo and tests make throw-away signers this way.)
pub fn signer(name: &str, bits: usize) -> Result<Signer> {
    Ok(signing_pair(name, bits)?.1)
}

/// A fresh signer and its private key (to be written out).
pub fn signing_pair(name: &str, bits: usize) -> Result<(RsaKey, Signer)> {
    let key = rsa_key(bits)?;
    let cert = self_signed_certificate(&key, name, SystemTime::now())?;
    Ok((key.clone(), Signer::from_parts(key, cert)?))
}

/// The files of `gen secureboot uki` for `key` and its `signer`, in Talos's order.
pub fn uki_signing_files(key: &RsaKey, signer: &Signer) -> Result<Vec<OutputFile>> {
    Ok(vec![
        OutputFile::public(UKI_SIGNING_CERT_PEM, signer.cert_pem().into_bytes()),
        OutputFile::public(UKI_SIGNING_CERT_DER, signer.cert_der().to_vec()),
        OutputFile::private(UKI_SIGNING_KEY, key_pem(key)?.into_bytes()),
    ])
}

/// The file of `gen secureboot pcr`.
pub fn pcr_signing_files(key: &RsaKey) -> Result<Vec<OutputFile>> {
    Ok(vec![OutputFile::private(
        PCR_SIGNING_KEY,
        key_pem(key)?.into_bytes(),
    )])
}

/// The files of `gen secureboot database`.
pub fn enrollment_files(db: &super::efivar::EnrollmentDb) -> Vec<OutputFile> {
    db.files()
        .iter()
        .map(|(name, bytes)| OutputFile::public(name, bytes.to_vec()))
        .collect()
}

/// One file to write into the output directory.
#[derive(Debug, Clone)]
pub struct OutputFile {
    pub name: &'static str,
    pub contents: Vec<u8>,
    /// Private key material: mode 0600 from the moment it is created.
    pub private: bool,
}

impl OutputFile {
    pub fn public(name: &'static str, contents: Vec<u8>) -> Self {
        OutputFile {
            name,
            contents,
            private: false,
        }
    }

    pub fn private(name: &'static str, contents: Vec<u8>) -> Self {
        OutputFile {
            name,
            contents,
            private: true,
        }
    }
}

/// Writes `files` into `dir` (created with mode 0700 if missing). Unless `force`,
/// refuses before writing anything if any of them exists. Each file appears
/// atomically; private ones are mode 0600, public ones 0644. Calls `on_write` with
/// each path as it is written.
pub fn write_files(
    dir: &Path,
    files: &[OutputFile],
    force: bool,
    mut on_write: impl FnMut(&Path),
) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let names: Vec<&str> = files.iter().map(|f| f.name).collect();
    refuse_existing(dir, &names, force)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .at(dir)?;
    let mut written = Vec::with_capacity(files.len());
    for f in files {
        let path = dir.join(f.name);
        on_write(&path);
        let mut out = crate::io::AtomicFile::create(&path)?;
        let mode = if f.private { 0o600 } else { 0o644 };
        let tmp = out.temp_path().to_path_buf();
        out.file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .at(&tmp)?;
        out.file().write_all(&f.contents).at(&tmp)?;
        written.push(out.commit_durable()?);
    }
    Ok(written)
}

/// Unless `force`, fails naming the first of `names` that already exists in `dir`.
pub fn refuse_existing(dir: &Path, names: &[&str], force: bool) -> Result<()> {
    match names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| !force && p.exists())
    {
        Some(existing) => Err(Error::invalid(format!(
            "{} already exists (use --force to overwrite it)",
            existing.display()
        ))),
        None => Ok(()),
    }
}

/// `O=<name>`, built as DER so any character in the name is taken literally (a
/// string-parsed RFC 4514 name would treat `,` `+` `=` as syntax).
fn organization_name(name: &str) -> der::Result<Name> {
    const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0A]; // 2.5.4.10
    const UTF8_STRING: u8 = 0x0C;
    let atv = tlv::encode_all(
        tag::SEQUENCE,
        &[
            &tlv::encode(tag::OID, ORGANIZATION),
            &tlv::encode(UTF8_STRING, name.as_bytes()),
        ],
    );
    let name = tlv::encode(tag::SEQUENCE, &tlv::encode(tag::SET, &atv));
    der::Decode::from_der(&name)
}

/// Self-signed CA profile (subject = issuer) with the extensions listed on
/// [`self_signed_certificate`].
struct CaProfile {
    subject: Name,
    ski: Vec<u8>,
}

impl BuilderProfile for CaProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        use const_oid::AssociatedOid;
        use const_oid::db::rfc5280::ID_KP_CODE_SIGNING;
        fn ext<T: Encode + AssociatedOid>(critical: bool, value: &T) -> der::Result<Extension> {
            Ok(Extension {
                extn_id: T::OID,
                critical,
                extn_value: der::asn1::OctetString::new(value.to_der()?)?,
            })
        }
        Ok(vec![
            ext(
                true,
                &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyCertSign),
            )?,
            ext(false, &ExtendedKeyUsage(vec![ID_KP_CODE_SIGNING]))?,
            ext(
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: None,
                },
            )?,
            ext(
                false,
                &SubjectKeyIdentifier(der::asn1::OctetString::new(self.ski.clone())?),
            )?,
        ])
    }
}
