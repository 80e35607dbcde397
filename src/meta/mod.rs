//! Talos META: key/value pairs (e.g. `0x0a` = platform network config) that reach
//! the machine in the META partition of a disk image ([`adv`]), or on the kernel
//! command line as `talos.environment=INSTALLER_META_BASE64=...` ([`cmdline_payload`]);
//! [`image`] finds them again in what `imager` wrote.

pub mod adv;
pub mod image;

use std::io::Write;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The key of the disk image bootloader marker: `dual-boot` on a fresh dual-boot image
/// tells Talos at first boot to remove the bootloader that did not boot.
pub const DUAL_BOOT_KEY: u8 = 0x11;

/// One META value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaValue {
    /// 8-bit tag (`0x0a` = network configuration).
    #[serde(deserialize_with = "de_key")]
    pub key: u8,
    pub value: String,
}

impl MetaValue {
    /// Parses the `--meta KEY=VALUE` form: KEY is decimal, `0x` hex, `0o` octal or
    /// `0b` binary and must fit in 8 bits; VALUE is everything after the first `=`.
    pub fn parse(arg: &str) -> Result<MetaValue> {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--meta {arg:?}: expected KEY=VALUE")))?;
        let key = parse_key(key).map_err(|why| Error::invalid(format!("--meta {arg:?}: {why}")))?;
        Ok(MetaValue {
            key,
            value: value.to_string(),
        })
    }

    /// The printed form, `0x0a=value`.
    pub fn display(&self) -> String {
        format!("0x{:02x}={}", self.key, self.value)
    }
}

/// Parses a META key with base auto-detection.
pub fn parse_key(text: &str) -> std::result::Result<u8, String> {
    let t = text.trim();
    let (digits, radix) = match t.get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("0x") => (&t[2..], 16),
        Some("0o") => (&t[2..], 8),
        Some("0b") => (&t[2..], 2),
        _ => (t, 10),
    };
    let n = u64::from_str_radix(digits, radix)
        .map_err(|_| format!("META key {text:?} is not a number"))?;
    u8::try_from(n).map_err(|_| format!("META key {text:?} is out of range (0..=255)"))
}

fn de_key<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u8, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Key {
        Int(u64),
        Text(String),
    }
    match Key::deserialize(d)? {
        Key::Int(n) => u8::try_from(n).map_err(|_| {
            serde::de::Error::custom(format!("META key {n} is out of range (0..=255)"))
        }),
        Key::Text(t) => parse_key(&t).map_err(serde::de::Error::custom),
    }
}

/// The `INSTALLER_META_BASE64` payload: `0x<key>=<value>` joined by `;`, gzipped
/// when longer than 256 bytes (if `gzip_large` — Talos >= 1.6.3), base64 with padding.
pub fn cmdline_payload(values: &[MetaValue], gzip_large: bool) -> String {
    let joined = values
        .iter()
        .map(MetaValue::display)
        .collect::<Vec<_>>()
        .join(";");
    let bytes = if gzip_large && joined.len() > 256 {
        let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
        gz.write_all(joined.as_bytes()).expect("writing to memory");
        gz.finish().expect("writing to memory")
    } else {
        joined.into_bytes()
    };
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes an `INSTALLER_META_BASE64` payload back into values (gzip detected by magic).
pub fn decode_cmdline_payload(payload: &str) -> Result<Vec<MetaValue>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| Error::invalid(format!("META payload is not base64: {e}")))?;
    let text = if bytes.len() >= 10 && bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .map_err(|e| Error::invalid(format!("META payload: bad gzip: {e}")))?;
        out
    } else {
        String::from_utf8(bytes).map_err(|_| Error::invalid("META payload is not UTF-8"))?
    };
    text.split(';')
        .filter(|s| !s.is_empty())
        .map(MetaValue::parse)
        .collect()
}

/// Reads the META values of a disk image (compressed or not), a META partition image
/// or an ISO/UKI/PXE command line ([`image`]).
pub fn read(path: &std::path::Path) -> Result<adv::Decoded> {
    image::read_path(path).map(|(decoded, _)| decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_in_every_base() {
        assert_eq!(
            MetaValue::parse("0x0a={\"a\":1}").unwrap(),
            MetaValue {
                key: 10,
                value: "{\"a\":1}".into()
            }
        );
        assert_eq!(MetaValue::parse("10=x=y").unwrap().value, "x=y");
        assert_eq!(MetaValue::parse("0o12=v").unwrap().key, 10);
        assert_eq!(MetaValue::parse("0b1010=v").unwrap().key, 10);
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(
            MetaValue::parse("0xzz=v")
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
        assert!(
            MetaValue::parse("300=v")
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(MetaValue::parse("novalue").is_err());
    }

    #[test]
    fn payload_round_trips_plain_and_gzipped() {
        let small = vec![MetaValue {
            key: 10,
            value: "{}".into(),
        }];
        let p = cmdline_payload(&small, true);
        assert_eq!(
            p,
            base64::engine::general_purpose::STANDARD.encode("0x0a={}")
        );
        assert_eq!(decode_cmdline_payload(&p).unwrap(), small);

        let big = vec![
            MetaValue {
                key: 10,
                value: "x".repeat(400),
            },
            MetaValue {
                key: 12,
                value: "y".into(),
            },
        ];
        let p = cmdline_payload(&big, true);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&p)
            .unwrap();
        assert_eq!(&raw[..2], &[0x1f, 0x8b]);
        assert_eq!(decode_cmdline_payload(&p).unwrap(), big);
        let plain = cmdline_payload(&big, false);
        assert!(
            !base64::engine::general_purpose::STANDARD
                .decode(&plain)
                .unwrap()
                .starts_with(&[0x1f, 0x8b])
        );
    }
}
