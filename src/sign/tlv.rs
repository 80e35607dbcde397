//! Minimal DER TLV reading and writing.
//!
//! The `cms` crate models CMS, but not Microsoft's `SpcIndirectDataContent`, and
//! decoding then re-encoding a signature would hide how it was really encoded
//! (signatures cover the exact bytes). So the Authenticode-specific parts are written
//! and read here, on raw bytes, in a few lines.

/// Universal and context tags used by Authenticode and CMS.
pub mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0]` constructed (EXPLICIT, or IMPLICIT over a constructed type).
    pub const CONTEXT_0: u8 = 0xA0;
    /// `[1]` constructed.
    pub const CONTEXT_1: u8 = 0xA1;
    /// `[2]` constructed.
    pub const CONTEXT_2: u8 = 0xA2;
    /// `[0]` primitive (IMPLICIT over a primitive type).
    pub const CONTEXT_0_PRIMITIVE: u8 = 0x80;
}

/// Encodes one TLV with a definite DER length.
pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed TLV from already-encoded children.
pub fn encode_all(tag: u8, children: &[&[u8]]) -> Vec<u8> {
    encode(tag, &children.concat())
}

/// One element read from DER bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    /// The value octets.
    pub content: &'a [u8],
    /// The whole element, tag and length included.
    pub raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Iterates over the children of a constructed element.
    pub fn children(&self) -> Reader<'a> {
        Reader { rest: self.content }
    }
}

/// Reads consecutive TLVs from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

/// A malformed or unexpected DER element; the message says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub String);

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads the next element, whatever its tag.
    pub fn any(&mut self) -> Result<Tlv<'a>, DerError> {
        let bytes = self.rest;
        let err = |what: &str| DerError(format!("malformed DER: {what}"));
        let (&tag, after_tag) = bytes.split_first().ok_or_else(|| err("unexpected end"))?;
        if tag & 0x1F == 0x1F {
            return Err(err("multi-byte tags are not used here"));
        }
        let (&first, after_len0) = after_tag
            .split_first()
            .ok_or_else(|| err("missing length"))?;
        let (len, header) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7F) as usize;
            if n == 0 || n > 4 || after_len0.len() < n {
                return Err(err("unsupported length encoding"));
            }
            let len = after_len0[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + n)
        };
        let end = header
            .checked_add(len)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| err("length past the end"))?;
        self.rest = &bytes[end..];
        Ok(Tlv {
            tag,
            content: &bytes[header..end],
            raw: &bytes[..end],
        })
    }

    /// Reads the next element and checks its tag.
    pub fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, DerError> {
        let tlv = self.any()?;
        if tlv.tag != tag {
            return Err(DerError(format!(
                "expected {what} (tag {tag:#04x}), found tag {:#04x}",
                tlv.tag
            )));
        }
        Ok(tlv)
    }

    /// Reads the next element if it has `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DerError> {
        match self.rest.first() {
            Some(t) if *t == tag => self.any().map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![0xAB; len];
            let enc = encode(tag::OCTET_STRING, &content);
            let tlv = Reader::new(&enc).any().unwrap();
            assert_eq!(
                (tlv.tag, tlv.content.len(), tlv.raw.len()),
                (tag::OCTET_STRING, len, enc.len())
            );
        }
        assert_eq!(encode(tag::NULL, &[]), [0x05, 0x00]);
        assert_eq!(
            &encode(tag::OCTET_STRING, &[0; 200])[..3],
            &[0x04, 0x81, 200]
        );
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(Reader::new(&[0x30, 0x05, 0x00]).any().is_err());
        assert!(Reader::new(&[0x30]).any().is_err());
    }
}
