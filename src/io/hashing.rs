//! SHA-256 on the way through: a writer and a reader that hash what passes, the
//! `sha256:<hex>` form OCI documents name blobs by, and the digest of a file.
//!
//! Outputs and base image blobs are hundreds of MiB; hashing them as they stream
//! avoids a second pass, and the digest string is spelled in one place.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// `sha256:<hex>` of `bytes`, as OCI descriptors and image configs name content.
pub fn sha256_digest(bytes: &[u8]) -> String {
    digest_string(Sha256::digest(bytes).into())
}

/// `sha256:<hex>` of a SHA-256 computed while streaming ([`HashingWriter::finish`],
/// [`HashingReader::finish`]).
pub fn digest_string(sum: [u8; 32]) -> String {
    format!("sha256:{}", hex::encode(sum))
}

/// Size and SHA-256 (hex, no `sha256:` prefix) of the file at `path`, streamed; holes
/// of sparse disk images are hashed as zeros without being read.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let file = File::open(path).at(path)?;
    let mut reader = super::sparse::SparseReader::new(file).at(path)?;
    let mut sink = HashingWriter::new(io::sink());
    super::copy(&mut reader, path, &mut sink, path)?;
    let (_, sum, size) = sink.finish();
    Ok((size, hex::encode(sum)))
}

/// Passes writes to `inner` and feeds the same bytes to a SHA-256, so an output's
/// digest is known the moment it is written, without reading it back.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Returns the inner writer, the SHA-256 and the byte count.
    pub fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads through from `inner` and feeds the bytes read to a SHA-256, so a
/// blob copied into an output is verified against its digest on the way.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Returns the inner reader, the SHA-256 of what was read and the byte count.
    pub fn finish(self) -> (R, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_WORLD: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_strings() {
        assert_eq!(
            sha256_digest(b"hello world"),
            format!("sha256:{HELLO_WORLD}")
        );
        assert_eq!(sha256_digest(b""), format!("sha256:{EMPTY}"));
        let (_, sum, _) = HashingWriter::new(io::sink()).finish();
        assert_eq!(digest_string(sum), format!("sha256:{EMPTY}"));
    }

    #[test]
    fn reader_hashes_only_what_was_read() {
        let mut r = HashingReader::new(&b"hello world, and more"[..]);
        let mut buf = [0u8; 11];
        r.read_exact(&mut buf).unwrap();
        let (rest, sum, n) = r.finish();
        assert_eq!(rest, b", and more");
        assert_eq!(n, 11);
        assert_eq!(hex::encode(sum), HELLO_WORLD);
    }

    #[test]
    fn file_digest_hashes_holes_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let f = File::create(&path).unwrap();
        f.set_len(3 << 20).unwrap();
        drop(f);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        io::Seek::seek(&mut f, io::SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"data").unwrap();
        drop(f);
        let bytes = std::fs::read(&path).unwrap();
        let (size, hex_sum) = sha256_file(&path).unwrap();
        assert_eq!(size, 3 << 20);
        assert_eq!(format!("sha256:{hex_sum}"), sha256_digest(&bytes));

        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        assert_eq!(sha256_file(&empty).unwrap(), (0, EMPTY.to_string()));
        let e = sha256_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn digest_matches_sha256_of_the_bytes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (out, digest, n) = w.finish();
        assert_eq!(out, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(
            hex::encode(digest),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
