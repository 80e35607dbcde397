//! PCR banks and the per-bank digests of measured data.
//!
//! The stub extends PCR 11 with `H(section)` in every active bank, so each measured
//! blob is hashed once per bank. Large sections (kernel, initramfs) are hashed while
//! they are copied into the UKI: [`copy_hashed`] writes and hashes SHA-256 on the
//! calling thread and hands the same buffers to one thread for SHA-384 and one for
//! SHA-512, so the three hashes spread over the cores and the file is read once.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::error::{Error, IoContext, Result};
use crate::io::BUFFER_SIZE;

/// A TPM PCR bank that is predicted and signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bank {
    Sha256,
    Sha384,
    Sha512,
}

/// The banks Talos predicts and signs, in `.pcrsig` order (no SHA-1).
pub const BANKS: [Bank; 3] = [Bank::Sha256, Bank::Sha384, Bank::Sha512];

impl Bank {
    /// Name used in `.pcrsig` and reports.
    pub fn name(self) -> &'static str {
        match self {
            Bank::Sha256 => "sha256",
            Bank::Sha384 => "sha384",
            Bank::Sha512 => "sha512",
        }
    }

    /// TPM_ALG_ID of the bank's hash (TPM 2.0 Part 2, table 9).
    pub fn alg_id(self) -> u16 {
        match self {
            Bank::Sha256 => 0x000B,
            Bank::Sha384 => 0x000C,
            Bank::Sha512 => 0x000D,
        }
    }

    /// Digest size in bytes (= PCR size in this bank).
    pub fn digest_len(self) -> usize {
        match self {
            Bank::Sha256 => 32,
            Bank::Sha384 => 48,
            Bank::Sha512 => 64,
        }
    }

    /// The bank's hash of `data`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Bank::Sha256 => Sha256::digest(data).to_vec(),
            Bank::Sha384 => Sha384::digest(data).to_vec(),
            Bank::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Position of this bank in [`BANKS`].
    fn index(self) -> usize {
        BANKS
            .iter()
            .position(|b| *b == self)
            .expect("every bank is listed")
    }
}

/// The digest of one blob in every bank of [`BANKS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests([Vec<u8>; 3]);

impl Digests {
    /// Hashes an in-memory blob in every bank.
    pub fn of(data: &[u8]) -> Self {
        Digests(BANKS.map(|b| b.hash(data)))
    }

    /// The digest in `bank`.
    pub fn get(&self, bank: Bank) -> &[u8] {
        &self.0[bank.index()]
    }
}

/// Copies exactly `len` bytes from `reader` (the file at `path`) to `writer` and
/// returns their digests in every bank. Fails, naming `path`, if the file is
/// shorter than `len` (it changed while the build ran).
pub fn copy_hashed(
    reader: &mut impl Read,
    writer: &mut impl Write,
    len: u64,
    path: &Path,
    out_path: &Path,
) -> Result<Digests> {
    let (tx384, rx384) = sync_channel::<Arc<Vec<u8>>>(4);
    let (tx512, rx512) = sync_channel::<Arc<Vec<u8>>>(4);
    std::thread::scope(|scope| {
        let wide = |rx: std::sync::mpsc::Receiver<Arc<Vec<u8>>>, alg| {
            scope.spawn(move || {
                let mut h = ring::digest::Context::new(alg);
                for chunk in rx {
                    h.update(&chunk[..]);
                }
                h.finish().as_ref().to_vec()
            })
        };
        let sha384 = wide(rx384, &ring::digest::SHA384);
        let sha512 = wide(rx512, &ring::digest::SHA512);
        let mut sha256 = Sha256::new();
        let mut left = len;
        let copied: Result<()> = (|| {
            while left > 0 {
                let want = left.min(BUFFER_SIZE as u64) as usize;
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    let n = reader.read(&mut buf[got..]).at(path)?;
                    if n == 0 {
                        return Err(Error::format(
                            path,
                            format!(
                                "file ended after {} of {len} bytes (did it change during the build?)",
                                len - left + got as u64
                            ),
                        ));
                    }
                    got += n;
                }
                writer.write_all(&buf).at(out_path)?;
                sha256.update(&buf);
                left -= want as u64;
                let buf = Arc::new(buf);
                if tx384.send(buf.clone()).is_err() || tx512.send(buf).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        drop((tx384, tx512));
        let sha384 = sha384.join().expect("hash thread does not panic");
        let sha512 = sha512.join().expect("hash thread does not panic");
        copied?;
        Ok(Digests([sha256.finalize().to_vec(), sha384, sha512]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_digests_equal_in_memory_digests() {
        let data: Vec<u8> = (0..(BUFFER_SIZE * 2 + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut out = Vec::new();
        let d = copy_hashed(
            &mut &data[..],
            &mut out,
            data.len() as u64,
            Path::new("in"),
            Path::new("out"),
        )
        .unwrap();
        assert_eq!(out, data);
        assert_eq!(d, Digests::of(&data));
    }

    #[test]
    fn short_input_names_the_file() {
        let err = copy_hashed(
            &mut &b"abc"[..],
            &mut Vec::new(),
            10,
            Path::new("/x/kernel"),
            Path::new("out"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/x/kernel"), "{err}");
    }
}
