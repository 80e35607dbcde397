//! The META partition's on-disk format ("Talos ADV"): two identical 256 KiB copies
//! at the start of the partition, each `magic1 | records | ... | sha256 | magic2`,
//! big-endian, records `tag u32 | length u32 | value`, the list ending at tag 0.
//! Readers take the first copy whose magics and checksum hold.

use sha2::{Digest, Sha256};

use super::MetaValue;
use crate::error::{Error, Result};

/// Size of one copy.
pub const COPY_LEN: usize = 256 * 1024;
/// Size of the META partition Talos creates.
pub const PARTITION_LEN: usize = 1024 * 1024;
/// The first magic of a copy (big-endian at its start).
pub const MAGIC1: u32 = 0x5a4b3c2d;
const MAGIC2: u32 = 0xa5b4c3d2;
/// Bytes of a copy available to records: all but magic1, the checksum and magic2.
pub const CAPACITY: usize = COPY_LEN - 4 - 32 - 4;

/// Encodes `values` as a META partition image of [`PARTITION_LEN`] bytes.
pub fn encode(values: &[MetaValue]) -> Result<Vec<u8>> {
    let needed: usize = values.iter().map(|v| 8 + v.value.len()).sum();
    if needed > CAPACITY {
        let largest = values
            .iter()
            .max_by_key(|v| v.value.len())
            .expect("values exceed capacity");
        return Err(Error::invalid(format!(
            "META values need {needed} bytes but the META partition holds {CAPACITY} (largest: key 0x{:02x}, {} bytes)",
            largest.key,
            largest.value.len()
        )));
    }
    let mut copy = vec![0u8; COPY_LEN];
    copy[..4].copy_from_slice(&MAGIC1.to_be_bytes());
    let mut at = 4;
    for v in values {
        copy[at..at + 4].copy_from_slice(&u32::from(v.key).to_be_bytes());
        copy[at + 4..at + 8].copy_from_slice(&(v.value.len() as u32).to_be_bytes());
        copy[at + 8..at + 8 + v.value.len()].copy_from_slice(v.value.as_bytes());
        at += 8 + v.value.len();
    }
    copy[COPY_LEN - 4..].copy_from_slice(&MAGIC2.to_be_bytes());
    let sum = Sha256::digest(&copy);
    copy[COPY_LEN - 36..COPY_LEN - 4].copy_from_slice(&sum);
    let mut partition = vec![0u8; PARTITION_LEN];
    partition[..COPY_LEN].copy_from_slice(&copy);
    partition[COPY_LEN..2 * COPY_LEN].copy_from_slice(&copy);
    Ok(partition)
}

/// What [`decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub values: Vec<MetaValue>,
    /// Copies (1-based) whose magics or checksum did not hold.
    pub corrupt_copies: Vec<u8>,
}

/// Decodes a META partition image (at least two copies long).
pub fn decode(partition: &[u8]) -> std::result::Result<Decoded, String> {
    let mut corrupt = Vec::new();
    for (i, copy) in partition.chunks(COPY_LEN).take(2).enumerate() {
        match decode_copy(copy) {
            Ok(values) => {
                return Ok(Decoded {
                    values,
                    corrupt_copies: corrupt,
                });
            }
            Err(_) => corrupt.push(i as u8 + 1),
        }
    }
    Err("no valid META copy (bad magic or checksum in both)".into())
}

fn decode_copy(copy: &[u8]) -> std::result::Result<Vec<MetaValue>, String> {
    if copy.len() != COPY_LEN {
        return Err("short copy".into());
    }
    let be = |at: usize| u32::from_be_bytes(copy[at..at + 4].try_into().unwrap());
    if be(0) != MAGIC1 || be(COPY_LEN - 4) != MAGIC2 {
        return Err("bad magic".into());
    }
    let mut zeroed = copy.to_vec();
    zeroed[COPY_LEN - 36..COPY_LEN - 4].fill(0);
    if Sha256::digest(&zeroed)[..] != copy[COPY_LEN - 36..COPY_LEN - 4] {
        return Err("bad checksum".into());
    }
    let mut values = Vec::new();
    let mut at = 4;
    while at + 8 <= COPY_LEN - 36 {
        let tag = be(at);
        if tag == 0 {
            break;
        }
        let len = be(at + 4) as usize;
        let end = at + 8 + len;
        if end > COPY_LEN - 36 {
            return Err(format!("record 0x{tag:x} runs past the data area"));
        }
        let key =
            u8::try_from(tag).map_err(|_| format!("tag 0x{tag:x} is not an 8-bit META key"))?;
        let value = String::from_utf8_lossy(&copy[at + 8..end]).into_owned();
        values.push(MetaValue { key, value });
        at = end;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<MetaValue> {
        vec![
            MetaValue {
                key: 0x0a,
                value: "{\"externalIPs\":[\"1.2.3.4\"]}".into(),
            },
            MetaValue {
                key: 0x0c,
                value: "x".into(),
            },
        ]
    }

    #[test]
    fn round_trips_and_falls_back_to_the_second_copy() {
        let mut p = encode(&values()).unwrap();
        assert_eq!(p.len(), PARTITION_LEN);
        assert_eq!(
            decode(&p).unwrap(),
            Decoded {
                values: values(),
                corrupt_copies: vec![]
            }
        );
        p[10] ^= 1;
        assert_eq!(
            decode(&p).unwrap(),
            Decoded {
                values: values(),
                corrupt_copies: vec![1]
            }
        );
        p[COPY_LEN + 10] ^= 1;
        assert!(decode(&p).is_err());
    }

    #[test]
    fn refuses_values_larger_than_the_partition() {
        let big = vec![MetaValue {
            key: 0x0a,
            value: "x".repeat(CAPACITY),
        }];
        let err = encode(&big).unwrap_err().to_string();
        assert!(
            err.contains("key 0x0a") && err.contains(&CAPACITY.to_string()),
            "{err}"
        );
        let fits = vec![MetaValue {
            key: 0x0a,
            value: "x".repeat(CAPACITY - 8),
        }];
        assert!(encode(&fits).is_ok());
    }
}
