//! The byte ranges of a PE image that its Authenticode digest covers ("Windows
//! Authenticode Portable Executable Signature Format", "Calculating the PE Image
//! Hash"): the headers without the CheckSum field and the certificate table's data
//! directory entry, then every section's raw data in file order, then any data after
//! the last section up to the certificate table, zero-padded to a multiple of 8.

use object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY;

use super::headers::{Malformed, PeHeaders};

/// A byte range `[start, end)` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

/// The certificate table (the attribute certificates) of a signed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertTable {
    pub offset: u64,
    pub size: u64,
}

/// Where the fields Authenticode cares about are, and what its digest covers.
#[derive(Debug, Clone)]
pub struct HashSpans {
    /// Length of the image (signature included, if any).
    pub file_size: u64,
    /// File offset of the optional header's CheckSum.
    pub checksum_offset: u64,
    /// File offset of the certificate table's data directory entry.
    pub cert_dir_offset: u64,
    /// Ranges hashed, in hashing order.
    pub hashed: Vec<Span>,
    /// Zero bytes hashed after them (to a multiple of 8).
    pub zero_pad: u64,
    /// The existing certificate table, which the digest excludes.
    pub cert_table: Option<CertTable>,
}

fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

impl HashSpans {
    /// The spans of the `file_size`-byte image with `headers`.
    pub fn new(headers: &PeHeaders, file_size: u64) -> Result<Self, Malformed> {
        let bad = |msg: String| Malformed::new(msg);
        let cert_dir_offset = headers
            .directory_offset(IMAGE_DIRECTORY_ENTRY_SECURITY)
            .ok_or_else(|| {
                bad(format!(
                    "no certificate table entry ({} data directories)",
                    headers.directories.len()
                ))
            })?;
        let checksum_offset = headers.checksum_offset();
        let table_end = headers.section_table_end();
        let size_of_headers = headers.size_of_headers() as u64;
        if size_of_headers < table_end || size_of_headers > file_size {
            return Err(bad(format!(
                "SizeOfHeaders {size_of_headers:#x} does not cover the section table"
            )));
        }
        let cert_table = match headers
            .directory(IMAGE_DIRECTORY_ENTRY_SECURITY)
            .expect("the entry exists")
        {
            (_, 0) => None,
            (offset, size) => {
                let (offset, size) = (offset as u64, size as u64);
                if offset + size != file_size || offset < size_of_headers {
                    return Err(bad(format!(
                        "the certificate table ({offset:#x}+{size:#x}) is not at the end of the file ({file_size:#x})"
                    )));
                }
                Some(CertTable { offset, size })
            }
        };
        let image_end = cert_table.map_or(file_size, |t| t.offset);

        let mut hashed = vec![
            Span {
                start: 0,
                end: checksum_offset,
            },
            Span {
                start: checksum_offset + 4,
                end: cert_dir_offset,
            },
            Span {
                start: cert_dir_offset + 8,
                end: size_of_headers,
            },
        ];
        let mut raw: Vec<Span> = headers
            .sections
            .iter()
            .map(|s| Span {
                start: s.pointer_to_raw_data as u64,
                end: s.raw_end(),
            })
            .filter(|s| s.end > s.start)
            .collect();
        raw.sort_by_key(|s| s.start);
        let mut sum = size_of_headers;
        for s in &raw {
            if s.end > image_end {
                return Err(bad(format!(
                    "truncated: a section's raw data ({:#x}..{:#x}) extends past the image end ({image_end:#x})",
                    s.start, s.end
                )));
            }
            sum += s.end - s.start;
        }
        hashed.extend(raw);
        if image_end > sum {
            hashed.push(Span {
                start: sum,
                end: image_end,
            });
        }
        Ok(HashSpans {
            file_size,
            checksum_offset,
            cert_dir_offset,
            hashed,
            zero_pad: align8(image_end) - image_end,
            cert_table,
        })
    }

    /// End of the header bytes that signing patches.
    pub fn header_patch_end(&self) -> u64 {
        self.checksum_offset.max(self.cert_dir_offset) + 8
    }

    /// True if the hashed ranges come in file order without overlap, so one
    /// sequential pass can hash them.
    pub fn in_file_order(&self) -> bool {
        self.hashed.windows(2).all(|w| w[0].end <= w[1].start)
    }
}
