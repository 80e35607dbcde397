//! PKCS#7 SignedData as UEFI firmware wants it, for both users: Authenticode (the
//! content is an `SpcIndirectDataContent`) and authenticated variables (detached
//! content). Built from `cms` types rather than its builder, because the builder
//! picks SignedData version 3 and the `sha256WithRSAEncryption` signature
//! algorithm, where sbsign, osslsigncode and go-uefi write version 1 and
//! `rsaEncryption`; and it has no notion of a fixed signing time.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Encode, Tag};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

use super::Signer;
use crate::error::{Error, Result};

/// Object identifiers used in the signatures.
pub mod oid {
    use const_oid::ObjectIdentifier as Oid;
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
    pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
    pub const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
    pub const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
    pub const SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
    /// `SPC_INDIRECT_DATA_OBJID`: the Authenticode content type.
    pub const SPC_INDIRECT_DATA: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.4");
    /// `SPC_PE_IMAGE_DATAOBJ`: the hashed object is a PE image.
    pub const SPC_PE_IMAGE_DATA: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.15");
}

/// What the signature covers.
pub struct Content {
    /// `eContentType`.
    pub content_type: ObjectIdentifier,
    /// The encapsulated content (a complete DER element), or `None` for a detached signature.
    pub content: Option<Any>,
    /// SHA-256 of what the signature covers: the encapsulated element's value octets
    /// (RFC 5652 5.4), or the detached data.
    pub digest: [u8; 32],
}

/// Builds a SignedData with one signer (issuer and serial of `signer`'s certificate),
/// the certificate itself, and the signed attributes contentType, signingTime
/// (`signing_time`, seconds since the epoch) and messageDigest.
pub fn signed_data(signer: &Signer, content: Content, signing_time: u64) -> Result<SignedData> {
    build(signer, content, signing_time, true)
}

/// [`signed_data`] with a zero signature of the right length: the same size, for
/// laying a file out before signing, without asking the (perhaps remote) key.
pub fn placeholder_signed_data(
    signer: &Signer,
    content: Content,
    signing_time: u64,
) -> Result<SignedData> {
    build(signer, content, signing_time, false)
}

fn build(signer: &Signer, content: Content, signing_time: u64, sign: bool) -> Result<SignedData> {
    let fail =
        |what: &str, e: der::Error| Error::invalid(format!("cannot encode the PKCS#7 {what}: {e}"));
    let attributes =
        signed_attributes(&content, signing_time).map_err(|e| fail("signed attributes", e))?;
    // The signature covers the attributes encoded as a DER SET (tag 0x31), not the
    // [0] IMPLICIT form they take inside SignerInfo.
    let attributes_der = attributes
        .to_der()
        .map_err(|e| fail("signed attributes", e))?;
    let signature = if sign {
        signer.sign_sha256_digest(&Sha256::digest(&attributes_der).into())?
    } else {
        use rsa::traits::PublicKeyParts;
        vec![0; signer.key().public_key().size()]
    };

    let tbs = signer.cert().tbs_certificate();
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: algorithm(oid::SHA256),
        signed_attrs: Some(attributes),
        signature_algorithm: algorithm(oid::RSA_ENCRYPTION),
        signature: OctetString::new(signature).map_err(|e| fail("signature", e))?,
        unsigned_attrs: None,
    };
    let one = |e| fail("SignedData", e);
    Ok(SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![algorithm(oid::SHA256)]).map_err(one)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: content.content_type,
            econtent: content.content,
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(signer.cert().clone())])
                .map_err(one)?,
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(one)?),
    })
}

/// DER of `SignedData` wrapped in a `ContentInfo` (the form Authenticode embeds).
pub fn content_info_der(signed: &SignedData) -> Result<Vec<u8>> {
    let inner = signed
        .to_der()
        .map_err(|e| Error::invalid(format!("cannot encode SignedData: {e}")))?;
    let info = ContentInfo {
        content_type: oid::SIGNED_DATA,
        content: der::Decode::from_der(&inner)
            .map_err(|e| Error::invalid(format!("cannot re-read SignedData: {e}")))?,
    };
    info.to_der()
        .map_err(|e| Error::invalid(format!("cannot encode ContentInfo: {e}")))
}

fn signed_attributes(content: &Content, signing_time: u64) -> der::Result<SetOfVec<Attribute>> {
    let time = der::DateTime::from_unix_duration(std::time::Duration::from_secs(signing_time))?;
    let time = x509_cert::time::Time::from(time).to_der()?;
    let attribute = |oid, value: Any| -> der::Result<Attribute> {
        Ok(Attribute {
            oid,
            values: SetOfVec::try_from(vec![value])?,
        })
    };
    SetOfVec::try_from(vec![
        attribute(
            oid::CONTENT_TYPE,
            Any::new(Tag::ObjectIdentifier, content.content_type.as_bytes())?,
        )?,
        attribute(oid::SIGNING_TIME, der::Decode::from_der(&time)?)?,
        attribute(
            oid::MESSAGE_DIGEST,
            Any::new(Tag::OctetString, content.digest.as_slice())?,
        )?,
    ])
}

/// An algorithm identifier with explicit NULL parameters, as every Authenticode tool writes.
fn algorithm(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}
