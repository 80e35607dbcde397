//! Authenticode: PE image hash, PKCS#7 SignedData over SpcIndirectDataContent,
//! WIN_CERTIFICATE table, PE checksum ("Windows Authenticode Portable Executable
//! Signature Format"; the ranges hashed are [`crate::pe::HashSpans`]).
//!
//! The file is read once, front to back, in [`crate::io::BUFFER_SIZE`] chunks: the
//! same pass feeds the Authenticode hash, the PE checksum and (for [`sign_to`]) the
//! copy, so a UKI of hundreds of MiB costs one read and constant memory. The
//! headers (a few KiB) are read on their own first to learn the layout.
//!
//! Already-signed input: the new signature is *appended* to the existing
//! certificate table, as go-uefi (and so Talos) does. A vendor signature (e.g.
//! Microsoft's on a distribution's systemd-boot) therefore stays valid next to ours,
//! and firmware accepts the image if any one signature is trusted. The hash excludes
//! the existing table, so both signatures cover the same image digest.
//!
//! The signing time (PKCS#9 signingTime, seconds since the epoch) is always a
//! parameter: reproducible builds pass their build epoch.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Signer;
use super::pkcs7::{self, oid};
use super::tlv::{self, Reader, tag};
use crate::error::{Error, IoContext, Result};
use crate::io::{Output, le};
use crate::pe::{HashSpans, PeChecksum, PeHeaders, Span};

/// One embedded signature, as found and checked by [`verify`].
#[derive(Debug, Clone)]
pub struct SignatureInfo {
    /// Subject of the signer certificate (RFC 4514 string).
    pub signer_subject: String,
    /// Issuer of the signer certificate.
    pub signer_issuer: String,
    /// SHA-256 fingerprint (hex) of the signer certificate's DER.
    pub signer_fingerprint: String,
    /// The PE image digest recorded in the signature.
    pub signed_digest: Vec<u8>,
    /// The PE image digest recomputed from the file.
    pub image_digest: Vec<u8>,
    /// `signed_digest == image_digest`.
    pub digest_matches: bool,
    /// The RSA signature over the signed attributes verifies with the signer
    /// certificate, and the messageDigest attribute matches the signed content.
    pub signature_valid: bool,
}

/// Signs the PE file at `path` in place: appends the certificate table and patches
/// the headers (data directory 4 and CheckSum). The file is read once. If writing
/// fails, the file is restored to its previous length and header bytes.
pub fn sign_in_place(path: &Path, signer: &Signer, signing_time: u64) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .at(path)?;
    let size = file.metadata().at(path)?.len();
    let spans = read_spans(&mut file, path, size)?;
    let scan = scan(&mut file, path, &spans, None)?;
    let patch = SignaturePatch::new(&spans, scan, signer, signing_time)?;
    let original_header = read_at(&mut file, path, 0, spans.header_patch_end())?;
    let result = patch.write_to(&mut file).writing(path);
    if result.is_err() {
        let _ = file.set_len(spans.file_size);
        let _ = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&original_header));
    }
    result.map(|_| ())
}

/// Writes a signed copy of the PE file `input` to `output` (from offset 0; the file is
/// truncated first; `output_path` names it in errors). `input` is read once; the copy
/// is written as it is read.
pub fn sign_to(
    input: &Path,
    output: &mut File,
    output_path: &Path,
    signer: &Signer,
    signing_time: u64,
) -> Result<()> {
    let mut file = File::open(input).at(input)?;
    let spans = read_file_spans(&mut file, input)?;
    output.set_len(0).writing(output_path)?;
    output.seek(SeekFrom::Start(0)).writing(output_path)?;
    let scan = scan(&mut file, input, &spans, Some((output, output_path)))?;
    SignaturePatch::new(&spans, scan, signer, signing_time)?
        .write_to(output)
        .writing(output_path)
        .map(|_| ())
}

/// Authenticode SHA-256 digest of the PE file at `path`.
pub fn image_digest(path: &Path) -> Result<[u8; 32]> {
    let mut file = File::open(path).at(path)?;
    let spans = read_file_spans(&mut file, path)?;
    Ok(scan(&mut file, path, &spans, None)?.digest)
}

/// Lists and checks the signatures embedded in the PE file at `path`. An unsigned
/// file gives an empty list. Only SHA-256 signatures can match the recomputed digest.
pub fn verify(path: &Path) -> Result<Vec<SignatureInfo>> {
    let mut file = File::open(path).at(path)?;
    let spans = read_file_spans(&mut file, path)?;
    let Some(table) = spans.cert_table else {
        return Ok(Vec::new());
    };
    if table.size > MAX_CERT_TABLE_BYTES {
        return Err(Error::format(
            path,
            format!(
                "certificate table of {} bytes is implausibly large",
                table.size
            ),
        ));
    }
    let image = scan(&mut file, path, &spans, None)?.digest;
    let bytes = read_at(&mut file, path, table.offset, table.size)?;
    let mut signatures = Vec::new();
    for entry in WinCertificates::new(&bytes) {
        let (cert_type, blob) = entry.map_err(|msg| Error::format(path, msg))?;
        if cert_type == WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            let info = check_signature(blob, &image).map_err(|e| {
                Error::format(path, format!("unreadable Authenticode signature: {e}"))
            })?;
            signatures.push(info);
        }
    }
    Ok(signatures)
}

const WIN_CERT_REVISION_2_0: u16 = 0x0200;
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// Certificate tables are never this large; a larger claim means a corrupt file.
const MAX_CERT_TABLE_BYTES: u64 = 16 << 20;

fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// The hash spans of the image in `file` taken to be `file_size` bytes long (it may
/// still be being written; only its headers are read).
fn read_spans(file: &mut (impl Read + Seek), path: &Path, file_size: u64) -> Result<HashSpans> {
    let headers = PeHeaders::read(file, path, file_size, "PE image")?;
    HashSpans::new(&headers, file_size).map_err(|e| Error::format(path, e.to_string()))
}

/// The hash spans of the whole file.
fn read_file_spans(file: &mut File, path: &Path) -> Result<HashSpans> {
    let file_size = file.seek(SeekFrom::End(0)).at(path)?;
    read_spans(file, path, file_size)
}

/// What one pass over the input yields.
struct Scan {
    digest: [u8; 32],
    /// Checksum state over the whole input, with CheckSum and the certificate
    /// directory entry counted as zero.
    checksum: PeChecksum,
}

/// The Authenticode hash and PE checksum of an image fed front to back.
struct Scanner {
    hasher: Sha256,
    checksum: PeChecksum,
    next_span: usize,
    offset: u64,
    /// The two header fields the checksum counts as zero.
    zeroed: [Span; 2],
}

impl Scanner {
    fn new(spans: &HashSpans) -> Self {
        Scanner {
            hasher: Sha256::new(),
            checksum: PeChecksum::default(),
            next_span: 0,
            offset: 0,
            zeroed: [
                Span {
                    start: spans.checksum_offset,
                    end: spans.checksum_offset + 4,
                },
                Span {
                    start: spans.cert_dir_offset,
                    end: spans.cert_dir_offset + 8,
                },
            ],
        }
    }

    /// Feeds the next bytes of the image. `hash` is false when the hashed ranges are
    /// not in file order (they are then hashed separately).
    fn update(&mut self, spans: &HashSpans, chunk: &[u8], hash: bool) {
        let offset = self.offset;
        let chunk_end = offset + chunk.len() as u64;
        while hash && self.next_span < spans.hashed.len() {
            let span = spans.hashed[self.next_span];
            let (start, end) = (span.start.max(offset), span.end.min(chunk_end));
            if start < end {
                self.hasher
                    .update(&chunk[(start - offset) as usize..(end - offset) as usize]);
            }
            if span.end > chunk_end {
                break;
            }
            self.next_span += 1;
        }
        let overlaps = |z: &Span| z.start < chunk_end && offset < z.end;
        if self.zeroed.iter().any(overlaps) {
            // Only the header chunk: count it with the two fields zeroed.
            let mut copy = chunk.to_vec();
            for z in self.zeroed.iter().filter(|z| overlaps(z)) {
                let (start, end) = (z.start.max(offset), z.end.min(chunk_end));
                copy[(start - offset) as usize..(end - offset) as usize].fill(0);
            }
            self.checksum.add(offset, &copy);
        } else {
            self.checksum.add(offset, chunk);
        }
        self.offset = chunk_end;
    }

    fn finish(mut self, spans: &HashSpans) -> Scan {
        self.hasher.update(&[0u8; 8][..spans.zero_pad as usize]);
        Scan {
            digest: self.hasher.finalize().into(),
            checksum: self.checksum,
        }
    }
}

/// Reads `file` once, front to back: hashes the Authenticode ranges, sums the PE
/// checksum and copies every byte to `copy` (a file and its name) if given.
fn scan(
    file: &mut (impl Read + Seek),
    path: &Path,
    spans: &HashSpans,
    mut copy: Option<(&mut File, &Path)>,
) -> Result<Scan> {
    let in_order = spans.in_file_order();
    let mut scanner = Scanner::new(spans);
    let mut buf = vec![0u8; crate::io::BUFFER_SIZE];
    let mut offset = 0u64;
    file.seek(SeekFrom::Start(0)).at(path)?;
    while offset < spans.file_size {
        let want = (spans.file_size - offset).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..want];
        file.read_exact(chunk)
            .map_err(|e| Error::format(path, format!("read failed at {offset:#x}: {e}")))?;
        if let Some((out, out_path)) = copy.as_mut() {
            out.write_all(chunk).writing(out_path)?;
        }
        scanner.update(spans, chunk, in_order);
        offset += want as u64;
    }
    if !in_order {
        // Sections overlap, or leave gaps before the trailing data: hash span by span.
        hash_spans(file, path, &spans.hashed, &mut scanner.hasher, &mut buf)?;
    }
    Ok(scanner.finish(spans))
}

/// Signing folded into writing: a PE image fed to [`ImageScan::update`] front to
/// back while it is written, then signed by [`ImageScan::finish`] without reading it
/// again. For writers that know the image's headers and final size up front.
pub struct ImageScan {
    spans: HashSpans,
    scanner: Scanner,
}

impl ImageScan {
    /// Starts a scan of the image whose header block is `headers` and whose unsigned
    /// size will be `size`. `None` when the image's hashed ranges are not in file
    /// order (sign it with [`sign_in_place`] instead). `headers` are the writer's
    /// own, so a problem with them is an invalid-input error.
    pub fn start(headers: &[u8], size: u64) -> Result<Option<Self>> {
        let own = |e: crate::pe::Malformed| {
            Error::invalid(format!("the image being signed has bad headers: {e}"))
        };
        let spans = HashSpans::new(&PeHeaders::parse(headers).map_err(own)?, size).map_err(own)?;
        if spans.cert_table.is_some() || !spans.in_file_order() {
            return Ok(None);
        }
        let scanner = Scanner::new(&spans);
        Ok(Some(ImageScan { spans, scanner }))
    }

    /// Feeds the next bytes of the image, in file order from byte 0.
    pub fn update(&mut self, bytes: &[u8]) {
        self.scanner.update(&self.spans, bytes, true);
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.scanner.offset
    }

    /// Signs the image (fed whole) with `signer` at `signing_time`: the bytes to
    /// append and patch, for [`SignaturePatch::write_to`].
    pub fn finish(self, signer: &Signer, signing_time: u64) -> Result<SignaturePatch> {
        if self.scanner.offset != self.spans.file_size {
            return Err(Error::invalid(format!(
                "{} of {} bytes were hashed for signing",
                self.scanner.offset, self.spans.file_size
            )));
        }
        let scan = self.scanner.finish(&self.spans);
        SignaturePatch::new(&self.spans, scan, signer, signing_time)
    }
}

/// Hashes `spans` in order, seeking to each (the fallback for unusual layouts).
fn hash_spans(
    file: &mut (impl Read + Seek),
    path: &Path,
    spans: &[Span],
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> Result<()> {
    for span in spans {
        let mut at = span.start;
        file.seek(SeekFrom::Start(at)).at(path)?;
        while at < span.end {
            let n = (span.end - at).min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..n]).at(path)?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(())
}

/// The bytes signing appends and patches.
pub struct SignaturePatch {
    /// Length of the image before signing; `appended` goes here.
    file_size: u64,
    /// Appended at the current end of the file: zero padding, then the new WIN_CERTIFICATE.
    appended: Vec<u8>,
    cert_dir_offset: u64,
    cert_dir: [u8; 8],
    checksum_offset: u64,
    checksum: u32,
}

impl SignaturePatch {
    fn new(spans: &HashSpans, scan: Scan, signer: &Signer, signing_time: u64) -> Result<Self> {
        let entry = win_certificate(&signature_blob(&scan.digest, signer, signing_time, true)?);
        let (table_offset, table_used) = match spans.cert_table {
            Some(t) => (t.offset, t.size),
            None => (align8(spans.file_size), 0),
        };
        let entry_offset = table_offset + align8(table_used);
        let mut appended = vec![0u8; (entry_offset - spans.file_size) as usize];
        appended.extend_from_slice(&entry);
        let table_size = entry_offset + entry.len() as u64 - table_offset;
        let too_big = |what: &str| {
            Error::invalid(format!(
                "the signed image is too large for PE ({what} over 4 GiB)"
            ))
        };
        let mut cert_dir = [0u8; 8];
        cert_dir[..4].copy_from_slice(
            &u32::try_from(table_offset)
                .map_err(|_| too_big("table offset"))?
                .to_le_bytes(),
        );
        cert_dir[4..].copy_from_slice(
            &u32::try_from(table_size)
                .map_err(|_| too_big("table size"))?
                .to_le_bytes(),
        );

        let mut checksum = scan.checksum;
        checksum.add(spans.file_size, &appended);
        checksum.add(spans.cert_dir_offset, &cert_dir);
        let total = spans.file_size + appended.len() as u64;
        Ok(SignaturePatch {
            file_size: spans.file_size,
            appended,
            cert_dir_offset: spans.cert_dir_offset,
            cert_dir,
            checksum_offset: spans.checksum_offset,
            checksum: checksum.finish(total),
        })
    }

    /// Length of the signed image.
    pub fn signed_len(&self) -> u64 {
        self.file_size + self.appended.len() as u64
    }

    /// Appends the certificate table to the image in `out` and patches its headers;
    /// returns the signed length.
    pub fn write_to(&self, out: &mut (impl Write + Seek)) -> std::io::Result<u64> {
        out.seek(SeekFrom::Start(self.file_size))?;
        out.write_all(&self.appended)?;
        out.seek(SeekFrom::Start(self.cert_dir_offset))?;
        out.write_all(&self.cert_dir)?;
        out.seek(SeekFrom::Start(self.checksum_offset))?;
        out.write_all(&self.checksum.to_le_bytes())?;
        out.flush()?;
        Ok(self.signed_len())
    }
}

/// Bytes that signing appends to an unsigned image whose length is a multiple of 8
/// (every UKI): the certificate table, signed at `signing_time`. It depends on the
/// digest's value not at all and on the time only through its encoding (a UTCTime
/// before 2050, a longer GeneralizedTime from then on).
pub fn signature_len(signer: &Signer, signing_time: u64) -> Result<u64> {
    let blob = signature_blob(&[0; 32], signer, signing_time, false)?;
    Ok(win_certificate(&blob).len() as u64)
}

/// WIN_CERTIFICATE (revision 2.0, PKCS#7) around `blob`, zero-padded to 8 bytes.
/// dwLength counts the unpadded entry, like sbsign and go-uefi.
fn win_certificate(blob: &[u8]) -> Vec<u8> {
    let len = 8 + blob.len();
    let mut entry = Vec::with_capacity(align8(len as u64) as usize);
    entry.extend_from_slice(&(len as u32).to_le_bytes());
    entry.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    entry.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    entry.extend_from_slice(blob);
    entry.resize(align8(len as u64) as usize, 0);
    entry
}

/// Steps through a certificate table: `(wCertificateType, bCertificate)` per entry.
struct WinCertificates<'a> {
    rest: &'a [u8],
}

impl<'a> WinCertificates<'a> {
    fn new(table: &'a [u8]) -> Self {
        WinCertificates { rest: table }
    }
}

impl<'a> Iterator for WinCertificates<'a> {
    type Item = std::result::Result<(u16, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        // Trailing zero padding (osslsigncode pads the table) ends the walk.
        if self.rest.len() < 8 || self.rest.iter().all(|b| *b == 0) {
            return None;
        }
        let len = le::u32_at(self.rest, 0).expect("8 bytes are there") as usize;
        if len < 8 || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(format!(
                "corrupt certificate table entry (dwLength {len})"
            )));
        }
        let cert_type = le::u16_at(self.rest, 6).expect("8 bytes are there");
        let item = (cert_type, &self.rest[8..len]);
        self.rest = &self.rest[(align8(len as u64) as usize).min(self.rest.len())..];
        Some(Ok(item))
    }
}

/// DER ContentInfo(SignedData) over the SpcIndirectDataContent for `digest`.
/// Deterministic for a given signing time (RSA PKCS#1 v1.5 has no randomness).
/// With `sign` false, the signature is zeros of the same length (for [`signature_len`]).
fn signature_blob(
    digest: &[u8; 32],
    signer: &Signer,
    signing_time: u64,
    sign: bool,
) -> Result<Vec<u8>> {
    let spc = spc_indirect_data_content(digest);
    // messageDigest covers the value octets of the content (RFC 5652 5.4).
    let value = Reader::new(&spc).any().expect("encoded just above").content;
    let content = pkcs7::Content {
        content_type: oid::SPC_INDIRECT_DATA,
        content: Some(
            der::Decode::from_der(&spc)
                .map_err(|e| Error::invalid(format!("SpcIndirectDataContent: {e}")))?,
        ),
        digest: Sha256::digest(value).into(),
    };
    let signed = if sign {
        pkcs7::signed_data(signer, content, signing_time)?
    } else {
        pkcs7::placeholder_signed_data(signer, content, signing_time)?
    };
    pkcs7::content_info_der(&signed)
}

/// SpcIndirectDataContent { SpcAttributeTypeAndOptionalValue { SPC_PE_IMAGE_DATAOBJ,
/// SpcPeImageData { flags '', file [0] { [2] { [0] "<<<Obsolete>>>" } } } },
/// DigestInfo { sha256, digest } } — the form sbsign, osslsigncode and go-uefi share.
fn spc_indirect_data_content(digest: &[u8; 32]) -> Vec<u8> {
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    let link = tlv::encode(
        tag::CONTEXT_0,
        &tlv::encode(
            tag::CONTEXT_2,
            &tlv::encode(tag::CONTEXT_0_PRIMITIVE, &obsolete),
        ),
    );
    let pe_image_data =
        tlv::encode_all(tag::SEQUENCE, &[&tlv::encode(tag::BIT_STRING, &[0]), &link]);
    let data = tlv::encode_all(
        tag::SEQUENCE,
        &[
            &tlv::encode(tag::OID, oid::SPC_PE_IMAGE_DATA.as_bytes()),
            &pe_image_data,
        ],
    );
    let sha256 = tlv::encode_all(
        tag::SEQUENCE,
        &[
            &tlv::encode(tag::OID, oid::SHA256.as_bytes()),
            &tlv::encode(tag::NULL, &[]),
        ],
    );
    let digest_info = tlv::encode_all(
        tag::SEQUENCE,
        &[&sha256, &tlv::encode(tag::OCTET_STRING, digest)],
    );
    tlv::encode_all(tag::SEQUENCE, &[&data, &digest_info])
}

/// Checks one PKCS#7 signature blob against the recomputed image digest.
fn check_signature(blob: &[u8], image: &[u8; 32]) -> std::result::Result<SignatureInfo, String> {
    use der::{Decode, Encode};
    let e = |e: tlv::DerError| e.to_string();
    let info = Reader::new(blob)
        .expect(tag::SEQUENCE, "ContentInfo")
        .map_err(e)?;
    let mut info = info.children();
    info.expect(tag::OID, "contentType").map_err(e)?;
    let signed = info
        .expect(tag::CONTEXT_0, "[0] content")
        .map_err(e)?
        .children()
        .expect(tag::SEQUENCE, "SignedData")
        .map_err(e)?;
    let mut signed = signed.children();
    signed.expect(tag::INTEGER, "version").map_err(e)?;
    signed.expect(tag::SET, "digestAlgorithms").map_err(e)?;
    let mut encap = signed
        .expect(tag::SEQUENCE, "contentInfo")
        .map_err(e)?
        .children();
    encap.expect(tag::OID, "contentType").map_err(e)?;
    let spc = encap
        .expect(tag::CONTEXT_0, "content")
        .map_err(e)?
        .children()
        .expect(tag::SEQUENCE, "SpcIndirectDataContent")
        .map_err(e)?;
    let mut spc_fields = spc.children();
    spc_fields
        .expect(tag::SEQUENCE, "SpcAttributeTypeAndOptionalValue")
        .map_err(e)?;
    let mut digest_info = spc_fields
        .expect(tag::SEQUENCE, "DigestInfo")
        .map_err(e)?
        .children();
    digest_info
        .expect(tag::SEQUENCE, "digestAlgorithm")
        .map_err(e)?;
    let signed_digest = digest_info
        .expect(tag::OCTET_STRING, "digest")
        .map_err(e)?
        .content
        .to_vec();

    let certs: Vec<x509_cert::Certificate> = match signed.optional(tag::CONTEXT_0).map_err(e)? {
        Some(set) => {
            let mut r = set.children();
            let mut v = Vec::new();
            while !r.is_empty() {
                let raw = r.any().map_err(e)?.raw;
                v.push(
                    x509_cert::Certificate::from_der(raw)
                        .map_err(|err| format!("embedded certificate: {err}"))?,
                );
            }
            v
        }
        None => Vec::new(),
    };
    signed.optional(tag::CONTEXT_1).map_err(e)?;
    let signer_info = signed
        .expect(tag::SET, "signerInfos")
        .map_err(e)?
        .children()
        .expect(tag::SEQUENCE, "SignerInfo")
        .map_err(e)?;
    let mut si = signer_info.children();
    si.expect(tag::INTEGER, "version").map_err(e)?;
    let sid = si
        .expect(tag::SEQUENCE, "issuerAndSerialNumber")
        .map_err(e)?;
    si.expect(tag::SEQUENCE, "digestAlgorithm").map_err(e)?;
    let attrs = si.expect(tag::CONTEXT_0, "signed attributes").map_err(e)?;
    si.expect(tag::SEQUENCE, "signatureAlgorithm").map_err(e)?;
    let signature = si
        .expect(tag::OCTET_STRING, "signature")
        .map_err(e)?
        .content;

    let cert = certs
        .iter()
        .find(|c| {
            let tbs = c.tbs_certificate();
            let id = [
                tbs.issuer().to_der().unwrap_or_default(),
                tbs.serial_number().to_der().unwrap_or_default(),
            ]
            .concat();
            id == sid.content
        })
        .ok_or("the signer's certificate is not embedded")?;

    let message_digest = attribute(attrs.content, oid::MESSAGE_DIGEST).map_err(e)?;
    let content_digest: [u8; 32] = Sha256::digest(spc.content).into();
    let attrs_set = tlv::encode(tag::SET, attrs.content);
    let signature_valid = message_digest.as_deref() == Some(&content_digest[..])
        && verify_rsa(cert, &Sha256::digest(&attrs_set).into(), signature);

    let tbs = cert.tbs_certificate();
    Ok(SignatureInfo {
        signer_subject: tbs.subject().to_string(),
        signer_issuer: tbs.issuer().to_string(),
        signer_fingerprint: hex::encode(Sha256::digest(cert.to_der().unwrap_or_default())),
        digest_matches: signed_digest == image,
        signed_digest,
        image_digest: image.to_vec(),
        signature_valid,
    })
}

/// The OCTET STRING value of the signed attribute `wanted`, if present.
fn attribute(
    attrs: &[u8],
    wanted: const_oid::ObjectIdentifier,
) -> std::result::Result<Option<Vec<u8>>, tlv::DerError> {
    let mut r = Reader::new(attrs);
    while !r.is_empty() {
        let mut attr = r.expect(tag::SEQUENCE, "Attribute")?.children();
        let oid = attr.expect(tag::OID, "attribute type")?;
        if oid.content == wanted.as_bytes() {
            let value = attr
                .expect(tag::SET, "attribute values")?
                .children()
                .expect(tag::OCTET_STRING, "messageDigest")?;
            return Ok(Some(value.content.to_vec()));
        }
    }
    Ok(None)
}

/// RSA PKCS#1 v1.5 check of `signature` over a SHA-256 `digest` with `cert`'s key.
pub(crate) fn verify_rsa(
    cert: &x509_cert::Certificate,
    digest: &[u8; 32],
    signature: &[u8],
) -> bool {
    use der::Encode;
    use rsa::pkcs8::DecodePublicKey;
    let Ok(spki) = cert.tbs_certificate().subject_public_key_info().to_der() else {
        return false;
    };
    let Ok(key) = rsa::PublicKey::from_public_key_der(&spki) else {
        return false;
    };
    key.verify(
        rsa::pkcs1v15::Pkcs1v15Sign::new::<Sha256>(),
        digest,
        signature,
    )
    .is_ok()
}

fn read_at(file: &mut (impl Read + Seek), path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset)).at(path)?;
    file.read_exact(&mut buf).map_err(|e| {
        Error::format(
            path,
            format!("truncated: cannot read {len} bytes at {offset:#x}: {e}"),
        )
    })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn test_signer() -> Signer {
        crate::keys::generate::signer("reproducible", 2048).unwrap()
    }

    #[test]
    fn sequential_pass_and_span_by_span_hashing_agree() {
        let image = crate::pe::tests::small_image();
        let path = Path::new("small.efi");
        let mut file = Cursor::new(image.clone());
        let spans = read_spans(&mut file, path, image.len() as u64).unwrap();
        assert!(spans.in_file_order());
        let streamed = scan(&mut file, path, &spans, None).unwrap().digest;
        let mut hasher = Sha256::new();
        hash_spans(&mut file, path, &spans.hashed, &mut hasher, &mut [0u8; 100]).unwrap();
        hasher.update(&[0u8; 8][..spans.zero_pad as usize]);
        assert_eq!(streamed, <[u8; 32]>::from(hasher.finalize()));
        // The digest skips CheckSum and the certificate directory entry.
        let mut changed = image.clone();
        changed[spans.checksum_offset as usize] ^= 0xFF;
        changed[spans.cert_dir_offset as usize + 7] ^= 0xFF;
        let mut file = Cursor::new(changed);
        assert_eq!(
            scan(&mut file, path, &spans, None).unwrap().digest,
            streamed
        );
    }

    #[test]
    fn signing_while_writing_equals_signing_after() {
        let signer = test_signer();
        let image = crate::pe::tests::small_image();
        let size = image.len() as u64;
        let mut after = Cursor::new(image.clone());
        let spans = read_spans(&mut after, Path::new("a"), size).unwrap();
        let scanned = scan(&mut after, Path::new("a"), &spans, None).unwrap();
        let patch = SignaturePatch::new(&spans, scanned, &signer, 1_700_000_000).unwrap();
        let signed_len = patch.write_to(&mut after).unwrap();

        let headers = &image[..0x400];
        let mut while_writing = ImageScan::start(headers, size).unwrap().unwrap();
        for chunk in image.chunks(77) {
            while_writing.update(chunk);
        }
        assert_eq!(while_writing.position(), size);
        let mut streamed = Cursor::new(image.clone());
        let patch = while_writing.finish(&signer, 1_700_000_000).unwrap();
        assert_eq!(patch.write_to(&mut streamed).unwrap(), signed_len);
        assert_eq!(streamed.into_inner(), after.into_inner());
        assert_eq!(
            signed_len,
            size + signature_len(&signer, 1_700_000_000).unwrap()
        );
    }

    #[test]
    fn signature_length_is_known_before_signing() {
        let signer = test_signer();
        for time in [
            0,
            1,
            1_700_000_000,
            2_524_607_999,
            2_524_608_000,
            4_102_444_800,
        ] {
            let blob = signature_blob(&[9; 32], &signer, time, true).unwrap();
            let len = signature_len(&signer, time).unwrap();
            assert_eq!(win_certificate(&blob).len() as u64, len, "at {time}");
        }
        // Up to the last second of 2049 the signingTime is a UTCTime of fixed width.
        assert_eq!(
            signature_len(&signer, 0).unwrap(),
            signature_len(&signer, 2_524_607_999).unwrap()
        );
    }

    #[test]
    fn signatures_depend_only_on_inputs_and_signing_time() {
        let signer = test_signer();
        let digest = [7u8; 32];
        let a = signature_blob(&digest, &signer, 1_700_000_000, true).unwrap();
        assert_eq!(
            a,
            signature_blob(&digest, &signer, 1_700_000_000, true).unwrap()
        );
        assert_ne!(
            a,
            signature_blob(&digest, &signer, 1_700_000_001, true).unwrap()
        );
        let info = check_signature(&a, &digest).unwrap();
        assert!(info.digest_matches && info.signature_valid);
        // SignedData version 1, like sbsign and go-uefi (the cms builder would say 3).
        let version = [0x02, 0x01, 0x01, 0x31];
        assert!(
            a[..40].windows(4).any(|w| w == version),
            "{:02x?}",
            &a[..40]
        );
    }

    #[test]
    fn spc_link_matches_the_bytes_every_tool_writes() {
        let spc = spc_indirect_data_content(&[0; 32]);
        let pattern = [0xA0, 0x20, 0xA2, 0x1E, 0x80, 0x1C, 0x00, b'<'];
        assert!(spc.windows(pattern.len()).any(|w| w == pattern));
    }

    #[test]
    fn win_certificate_is_padded_but_length_is_not() {
        let entry = win_certificate(&[1, 2, 3]);
        assert_eq!(entry.len(), 16);
        assert_eq!(&entry[..8], &[11, 0, 0, 0, 0x00, 0x02, 0x02, 0x00]);
    }
}
