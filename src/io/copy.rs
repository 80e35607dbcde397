//! Streaming copies whose errors say which side failed.
//!
//! `std::io::copy` reports a failed read and a failed write the same way; a build
//! that runs out of space must say which file it was writing. These copies use
//! [`BUFFER_SIZE`] chunks and name the source on read errors and the destination on
//! write errors. [`copy_sparse`] also leaves holes where the source has zero blocks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::BUFFER_SIZE;
use crate::error::{Error, IoContext, Result};

/// Copies `from` to `to` until `from` ends; returns the byte count. Errors are
/// `reading FROM_PATH: ...` or `writing TO_PATH: ...`.
pub fn copy(
    from: &mut impl Read,
    from_path: &Path,
    to: &mut impl Write,
    to_path: &Path,
) -> Result<u64> {
    copy_loop(from, from_path, to, |e| Error::io_op("writing", to_path, e))
}

/// [`copy`] to something that is not a file: write errors are `OP: ...`, e.g.
/// `writing to stdout: Broken pipe`.
pub fn copy_during(
    from: &mut impl Read,
    from_path: &Path,
    to: &mut impl Write,
    op: &'static str,
) -> Result<u64> {
    copy_loop(from, from_path, to, |e| Error::io_during(op, e))
}

fn copy_loop(
    from: &mut impl Read,
    from_path: &Path,
    to: &mut impl Write,
    write_error: impl Fn(std::io::Error) -> Error,
) -> Result<u64> {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io_op("reading", from_path, e)),
        };
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).map_err(&write_error)?;
        total += n as u64;
    }
}

/// Copies exactly `len` bytes of `from` into `to` at its current position, seeking
/// over blocks that are all zeros instead of writing them, so a mostly empty disk
/// image stays sparse. `to` ends up `len` bytes longer than the position it started
/// at (its length is set, so trailing zeros still count), positioned at that end.
/// A source shorter than `len` fails as `reading FROM_PATH: ...`.
pub fn copy_sparse(
    from: &mut impl Read,
    from_path: &Path,
    to: &mut File,
    to_path: &Path,
    len: u64,
) -> Result<()> {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let start = to.stream_position().writing(to_path)?;
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        from.read_exact(&mut buf[..want]).reading(from_path)?;
        if buf[..want].iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(want as i64)).writing(to_path)?;
        } else {
            to.write_all(&buf[..want]).writing(to_path)?;
        }
        done += want as u64;
    }
    to.set_len(start + len).writing(to_path)?;
    to.seek(SeekFrom::Start(start + len)).writing(to_path)?;
    Ok(())
}

/// Copies the `len` bytes of the file `from` to `to` at `to_at`, reading only the data
/// runs `SEEK_DATA`/`SEEK_HOLE` report and writing only the non-zero blocks among them,
/// so holes stay holes and are never read; `to` is extended to `to_at + len`. The bytes
/// (holes as zeros) go through `hasher` in order, so the copy's digest comes free.
pub fn copy_file_sparse(
    from: &File,
    from_path: &Path,
    len: u64,
    to: &File,
    to_path: &Path,
    to_at: u64,
    hasher: &mut sha2::Sha256,
) -> Result<()> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut pos = 0u64;
    for (start, end) in super::sparse::data_runs(from, len).reading(from_path)? {
        super::hashing::hash_zeros(hasher, start - pos);
        pos = start;
        while pos < end {
            let n = buf.len().min((end - pos) as usize);
            from.read_exact_at(&mut buf[..n], pos).reading(from_path)?;
            hasher.update(&buf[..n]);
            if buf[..n].iter().any(|&b| b != 0) {
                to.write_all_at(&buf[..n], to_at + pos).writing(to_path)?;
            }
            pos += n as u64;
        }
    }
    super::hashing::hash_zeros(hasher, len - pos);
    if to.metadata().writing(to_path)?.len() < to_at + len {
        to.set_len(to_at + len).writing(to_path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A writer that accepts `room` bytes, then fails as a full disk would.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn copies_more_than_one_buffer_and_counts() {
        let data: Vec<u8> = (0..BUFFER_SIZE * 2 + 17).map(|i| i as u8).collect();
        let mut out = Vec::new();
        let n = copy(&mut &data[..], Path::new("in"), &mut out, Path::new("out")).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        let n = copy(&mut &[][..], Path::new("in"), &mut out, Path::new("out")).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn errors_name_the_side_that_failed() {
        let e = copy(
            &mut &[1u8; 10][..],
            Path::new("in"),
            &mut Full { room: 4 },
            Path::new("disk.raw"),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("writing disk.raw: "), "{e}");
        let e = copy_during(
            &mut &[1u8; 10][..],
            Path::new("in"),
            &mut Full { room: 0 },
            "writing to stdout",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("writing to stdout: "), "{e}");

        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("bad sector"))
            }
        }
        let e = copy(
            &mut Broken,
            Path::new("kernel"),
            &mut Vec::new(),
            Path::new("o"),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "reading kernel: bad sector");
    }

    #[test]
    fn sparse_copy_leaves_holes_and_sets_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut to = File::create(&path).unwrap();
        to.write_all(b"head").unwrap();
        // Data, then 4 MiB of zeros, then data, then zeros up to the end.
        let mut src = vec![7u8; 100];
        src.resize(100 + (4 << 20), 0);
        src.extend_from_slice(&[9u8; BUFFER_SIZE]);
        src.resize(src.len() + BUFFER_SIZE * 3, 0);
        copy_sparse(
            &mut &src[..],
            Path::new("src"),
            &mut to,
            &path,
            src.len() as u64,
        )
        .unwrap();
        assert_eq!(to.stream_position().unwrap(), 4 + src.len() as u64);
        drop(to);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..], &src[..]);
        // Far fewer blocks than the length: the zero runs were not written.
        let meta = std::fs::metadata(&path).unwrap();
        assert!(
            meta.blocks() * 512 < meta.len() / 2,
            "{} blocks",
            meta.blocks()
        );
    }

    #[test]
    fn file_sparse_copy_keeps_holes_and_hashes_every_byte() {
        use sha2::Digest;
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let (src_path, dst_path) = (dir.path().join("src"), dir.path().join("dst"));
        let src = File::create(&src_path).unwrap();
        let len = (16 << 20) + 5;
        src.set_len(len).unwrap();
        src.write_all_at(&[7u8; 100], 3).unwrap();
        // Written zeros (data on disk, zero content) and data near the end.
        src.write_all_at(&vec![0u8; 2 * BUFFER_SIZE], 8 << 20)
            .unwrap();
        src.write_all_at(b"tail", len - 4).unwrap();
        drop(src);
        let src = File::open(&src_path).unwrap();
        let dst = File::create(&dst_path).unwrap();
        dst.write_all_at(b"head", 0).unwrap();
        let mut hasher = sha2::Sha256::default();
        copy_file_sparse(&src, &src_path, len, &dst, &dst_path, 4, &mut hasher).unwrap();
        let want = std::fs::read(&src_path).unwrap();
        assert_eq!(hasher.finalize(), sha2::Sha256::digest(&want));
        let got = std::fs::read(&dst_path).unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..] == want[..]);
        let meta = std::fs::metadata(&dst_path).unwrap();
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    }

    #[test]
    fn sparse_copy_of_a_short_source_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut to = File::create(&path).unwrap();
        let e = copy_sparse(
            &mut &[1u8; 10][..],
            Path::new("esp.img"),
            &mut to,
            &path,
            20,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("reading esp.img: "), "{e}");
    }
}
