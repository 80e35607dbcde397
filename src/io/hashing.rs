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

/// Size and SHA-256 (hex, no `sha256:` prefix) of the file at `path`, streamed; only
/// its data runs are read (`SEEK_DATA`/`SEEK_HOLE`), holes are hashed as zeros from
/// memory ([`hash_zeros`]). For outputs written by regions (disk images, ISO, qcow2);
/// writers that write in order hash on the way instead ([`HashingWriter`]).
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; super::BUFFER_SIZE];
    let mut pos = 0u64;
    for (start, end) in super::sparse::data_runs(&file, len).at(path)? {
        hash_zeros(&mut hasher, start - pos);
        pos = start;
        while pos < end {
            let n = buf.len().min((end - pos) as usize);
            file.read_exact_at(&mut buf[..n], pos).at(path)?;
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
    }
    hash_zeros(&mut hasher, len - pos);
    Ok((len, hex::encode(hasher.finalize())))
}

/// Feeds `n` zero bytes to `hasher` from one shared, never written buffer: a hole of a
/// sparse output costs the SHA-256 rounds only, no reads, no buffer filling.
pub fn hash_zeros(hasher: &mut Sha256, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = ZEROS.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
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

    /// The inner writer, to seek over `n` zero bytes that it leaves as a hole; call
    /// [`HashingWriter::skipped_zeros`] with that count.
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Counts `n` zero bytes the inner writer skipped (a hole) into the hash and size.
    pub fn skipped_zeros(&mut self, n: u64) {
        hash_zeros(&mut self.hasher, n);
        self.written += n;
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

        // Data at both ends, a trailing hole, a file of only a hole, odd lengths.
        for (len, writes) in [
            (
                (5 << 20) + 3,
                vec![(0u64, &b"head"[..]), ((4 << 20) + 1, &b"tail"[..])],
            ),
            ((8 << 20) + 7, vec![(2 << 20, &b"middle"[..])]),
            (70_000, vec![]),
        ] {
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            for (at, data) in writes {
                std::os::unix::fs::FileExt::write_all_at(&f, data, at).unwrap();
            }
            drop(f);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                sha256_file(&path).unwrap(),
                (len, hex::encode(Sha256::digest(&bytes)))
            );
        }
    }

    #[test]
    fn skipped_zeros_hash_as_written_zeros() {
        let mut a = HashingWriter::new(Vec::new());
        a.write_all(b"x").unwrap();
        a.skipped_zeros(200_000);
        a.write_all(b"y").unwrap();
        let (inner, sum, n) = a.finish();
        assert_eq!((inner, n), (b"xy".to_vec(), 200_002));
        let mut want = vec![0u8; 200_002];
        (want[0], want[200_001]) = (b'x', b'y');
        assert_eq!(sum, <[u8; 32]>::from(Sha256::digest(&want)));
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
