//! Finding the META values in what `imager` writes, for `imager meta dump`: a disk
//! image (the GPT partition named `META`, 512- or 4096-byte sectors), possibly
//! compressed (zstd, xz or gzip, told by magic and decompressed as it is read), a bare
//! META partition image, or an ISO / UKI / PXE command line carrying
//! `talos.environment=INSTALLER_META_BASE64=...`.
//!
//! The input is read front to back once (a compressed stream cannot seek), keeping only
//! the first bytes (GPT header and partition entries) and the two META copies. Every
//! offset and length taken from the file is checked against the file's length (when it
//! is known) and against fixed limits before anything is allocated or read.
//! GPT layout: UEFI specification, "GUID Partition Table (GPT) Disk Layout".

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::adv;
use crate::error::{Error, IoContext, Result};
use crate::io::le;

/// The primary partition entries must end within this many bytes of the start (Talos
/// puts them at LBA 2; 1024 entries of 4096 bytes would still fit).
const PREFIX_LIMIT: u64 = 8 << 20;
/// Largest GPT partition entry accepted (the specification allows 128 * 2^n).
const MAX_ENTRY_SIZE: u32 = 4096;
/// Largest number of GPT partition entries read.
const MAX_ENTRIES: u32 = 1024;
/// The command-line marker of the META payload.
const MARKER: &[u8] = b"INSTALLER_META_BASE64=";
/// Longest payload accepted (kernel command lines are at most a few KiB).
const MAX_PAYLOAD: usize = 64 * 1024;

/// Where the values were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The GPT partition named META.
    Partition,
    /// The file is a META partition image.
    PartitionImage,
    /// `INSTALLER_META_BASE64` on a kernel command line (ISO, UKI, PXE command line).
    Cmdline,
}

/// The META values of the file at `path`.
pub fn read_path(path: &Path) -> Result<(adv::Decoded, Found)> {
    let mut file = std::fs::File::open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    if meta.is_dir() {
        return Err(Error::format(
            path,
            "a directory, not a disk image, META partition image or ISO",
        ));
    }
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut file, &mut magic).at(path)?;
    file.seek(SeekFrom::Start(0)).at(path)?;
    // A block device reports length 0: its size is not known here, reads stop at its end.
    let len = (meta.is_file()).then_some(meta.len());
    let fail = |e: ReadError| match e {
        ReadError::Io(e) => Error::io_op("reading", path, e),
        ReadError::Bad(msg) => Error::format(path, msg),
    };
    match Compression::of(&magic[..n]) {
        None => read_from(Seekable(file), len).map_err(fail),
        Some(c) => {
            let reader = io::BufReader::with_capacity(1 << 20, file);
            let stream: Box<dyn Read> = match c {
                Compression::Zstd => Box::new(
                    zstd::stream::read::Decoder::with_buffer(reader)
                        .map_err(|e| Error::io_op("reading", path, e))?,
                ),
                Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(reader)),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            };
            read_from(Stream(stream), None).map_err(|e| match e {
                ReadError::Bad(msg) => Error::format(path, format!("{} image: {msg}", c.name())),
                ReadError::Io(e) => Error::format(
                    path,
                    format!("{} image: cannot decompress it: {e}", c.name()),
                ),
            })
        }
    }
}

/// The compressions `imager` writes disk images with.
#[derive(Debug, Clone, Copy)]
enum Compression {
    Zstd,
    Xz,
    Gzip,
}

impl Compression {
    fn of(magic: &[u8]) -> Option<Compression> {
        if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if magic.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd-compressed",
            Compression::Xz => "xz-compressed",
            Compression::Gzip => "gzip-compressed",
        }
    }
}

/// Why reading failed: the reader itself, or what it held.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn bad<T>(msg: impl Into<String>) -> std::result::Result<T, ReadError> {
    Err(ReadError::Bad(msg.into()))
}

/// A reader that can move forward without handing over the bytes.
pub trait Skip: Read {
    /// Skips `n` bytes; returns how many were skipped (fewer at the end).
    fn skip(&mut self, n: u64) -> io::Result<u64>;
}

/// A seekable reader (a file): skipping seeks.
pub struct Seekable<R>(pub R);

impl<R: Read> Read for Seekable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + Seek> Skip for Seekable<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let delta = i64::try_from(n).map_err(|_| io::Error::other("offset out of range"))?;
        self.0.seek(SeekFrom::Current(delta))?;
        Ok(n)
    }
}

/// A stream (a decompressor): skipping reads and drops.
pub struct Stream<R>(pub R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Skip for Stream<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The front of the input, read once, plus the rest of the reader.
struct Front<S> {
    inner: S,
    /// Bytes `0..prefix.len()` of the input.
    prefix: Vec<u8>,
    /// The reader is at the end of `prefix`.
    eof: bool,
}

impl<S: Skip> Front<S> {
    /// Extends the prefix to `n` bytes (fewer at the end of the input).
    fn fill(&mut self, n: u64) -> io::Result<()> {
        let want = n.saturating_sub(self.prefix.len() as u64);
        if want > 0 && !self.eof {
            let got = (&mut self.inner).take(want).read_to_end(&mut self.prefix)?;
            self.eof = (got as u64) < want;
        }
        Ok(())
    }

    /// Bytes `offset..offset + n` of the input (`n` is small: at most 8 MiB).
    fn bytes_at(&mut self, offset: u64, n: usize) -> std::result::Result<Vec<u8>, ReadError> {
        let end = offset
            .checked_add(n as u64)
            .ok_or_else(|| ReadError::Bad(format!("offset {offset} is out of range")))?;
        let have = self.prefix.len() as u64;
        if end <= PREFIX_LIMIT || offset < have {
            self.fill(end)?;
            let start = usize::try_from(offset).expect("within the prefix");
            let rest = self.prefix.get(start..).unwrap_or_default();
            return Ok(rest[..rest.len().min(n)].to_vec());
        }
        // Past the prefix: skip to `offset`, read `n`.
        let skipped = self.inner.skip(offset - have)?;
        self.prefix.truncate(0);
        self.eof = true;
        if skipped < offset - have {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        (&mut self.inner).take(n as u64).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// The META values of an input read by `reader`, `len` bytes long when known.
pub fn read_from<S: Skip>(
    reader: S,
    len: Option<u64>,
) -> std::result::Result<(adv::Decoded, Found), ReadError> {
    let mut front = Front {
        inner: reader,
        prefix: Vec::new(),
        eof: false,
    };
    front.fill(8192)?;
    if let Some(offset) = meta_partition(&mut front, len)? {
        let copies = front.bytes_at(offset, 2 * adv::COPY_LEN)?;
        if copies.len() < 2 * adv::COPY_LEN {
            return bad(format!(
                "the META partition at byte {offset} runs past the end of the image"
            ));
        }
        return adv::decode(&copies)
            .map(|d| (d, Found::Partition))
            .map_err(|e| ReadError::Bad(format!("META partition at byte {offset}: {e}")));
    }
    if front.prefix.starts_with(&adv::MAGIC1.to_be_bytes()) {
        front.fill(2 * adv::COPY_LEN as u64)?;
        if front.prefix.len() < 2 * adv::COPY_LEN {
            return bad(format!(
                "a META partition image must hold two {} KiB copies; the file has {} bytes",
                adv::COPY_LEN / 1024,
                front.prefix.len()
            ));
        }
        return adv::decode(&front.prefix)
            .map(|d| (d, Found::PartitionImage))
            .map_err(ReadError::Bad);
    }
    match find_payload(front)? {
        Some(payload) => super::decode_cmdline_payload(&payload)
            .map(|values| {
                (
                    adv::Decoded {
                        values,
                        corrupt_copies: vec![],
                    },
                    Found::Cmdline,
                )
            })
            .map_err(|e| ReadError::Bad(format!("kernel command line: {e}"))),
        None => bad(
            "no META found: neither a GPT with a META partition, nor a META partition image, \
             nor a kernel command line with INSTALLER_META_BASE64",
        ),
    }
}

/// Byte offset of the GPT partition named `META`, if the input has a GPT.
fn meta_partition<S: Skip>(
    front: &mut Front<S>,
    len: Option<u64>,
) -> std::result::Result<Option<u64>, ReadError> {
    for sector in [512u64, 4096] {
        let at = sector as usize;
        let Some(header) = front.prefix.get(at..at + 92) else {
            continue;
        };
        if &header[..8] != b"EFI PART" {
            continue;
        }
        const IN_HEADER: &str = "inside the 92 bytes taken";
        // PartitionEntryLBA at 72, NumberOfPartitionEntries at 80, SizeOfPartitionEntry at 84.
        let entries_lba = le::u64_at(header, 72).expect(IN_HEADER);
        let count = le::u32_at(header, 80).expect(IN_HEADER);
        let size = le::u32_at(header, 84).expect(IN_HEADER);
        if !(128..=MAX_ENTRY_SIZE).contains(&size) || !size.is_multiple_of(8) {
            return bad(format!(
                "GPT header at byte {sector}: partition entry size {size} is not 128..={MAX_ENTRY_SIZE} bytes"
            ));
        }
        if count > MAX_ENTRIES {
            return bad(format!(
                "GPT header at byte {sector}: {count} partition entries (at most {MAX_ENTRIES} are read)"
            ));
        }
        let table_len = u64::from(count) * u64::from(size);
        let table_end = entries_lba
            .checked_mul(sector)
            .and_then(|start| start.checked_add(table_len).map(|end| (start, end)));
        let (table_start, table_end) = match table_end {
            Some((s, e)) if e <= PREFIX_LIMIT && s >= sector + 92 => (s, e),
            _ => {
                return bad(format!(
                    "GPT header at byte {sector}: partition entries at LBA {entries_lba} are not within the first {} MiB after the header",
                    PREFIX_LIMIT >> 20
                ));
            }
        };
        if let Some(len) = len
            && table_end > len
        {
            return bad(format!(
                "GPT partition entries end at byte {table_end}, past the end of the file ({len} bytes)"
            ));
        }
        let table = front.bytes_at(table_start, table_len as usize)?;
        if (table.len() as u64) < table_len {
            return bad(format!(
                "GPT partition entries end at byte {table_end}, past the end of the image"
            ));
        }
        // Each entry: StartingLBA at 32, PartitionName (36 UTF-16LE units) at 56.
        for entry in table.chunks(size as usize) {
            let name: Vec<u16> = (56..128)
                .step_by(2)
                .map(|at| le::u16_at(entry, at).expect("entries are at least 128 bytes"))
                .take_while(|&c| c != 0)
                .collect();
            if String::from_utf16_lossy(&name) != "META" {
                continue;
            }
            let first = le::u64_at(entry, 32).expect("entries are at least 128 bytes");
            let start = first.checked_mul(sector).filter(|&s| s >= table_end);
            let Some(start) = start else {
                return bad(format!(
                    "GPT: the META partition's first LBA {first} is not after the partition entries"
                ));
            };
            if let Some(len) = len
                && start.saturating_add(2 * adv::COPY_LEN as u64) > len
            {
                return bad(format!(
                    "GPT: the META partition at byte {start} runs past the end of the file ({len} bytes)"
                ));
            }
            return Ok(Some(start));
        }
        return Ok(None);
    }
    Ok(None)
}

/// The base64 payload after the first `INSTALLER_META_BASE64=` in the input.
fn find_payload<S: Skip>(mut front: Front<S>) -> std::result::Result<Option<String>, ReadError> {
    const CHUNK: usize = 1 << 20;
    let mut window = std::mem::take(&mut front.prefix);
    let mut eof = front.eof;
    loop {
        if let Some(at) = find(&window, MARKER) {
            let mut payload: Vec<u8> = window[at + MARKER.len()..].to_vec();
            loop {
                if let Some(end) = payload.iter().position(|&c| !is_base64(c)) {
                    payload.truncate(end);
                    break;
                }
                if payload.len() > MAX_PAYLOAD {
                    return bad(format!(
                        "INSTALLER_META_BASE64 payload longer than {MAX_PAYLOAD} bytes"
                    ));
                }
                if eof
                    || (&mut front.inner)
                        .take(CHUNK as u64)
                        .read_to_end(&mut payload)?
                        == 0
                {
                    break;
                }
            }
            if payload.len() > MAX_PAYLOAD {
                return bad(format!(
                    "INSTALLER_META_BASE64 payload longer than {MAX_PAYLOAD} bytes"
                ));
            }
            return Ok(Some(String::from_utf8(payload).expect("base64 is ASCII")));
        }
        if eof {
            return Ok(None);
        }
        // Keep the last bytes: the marker may straddle two chunks.
        let keep = window.len().min(MARKER.len() - 1);
        window.drain(..window.len() - keep);
        let got = (&mut front.inner)
            .take(CHUNK as u64)
            .read_to_end(&mut window)?;
        eof = got < CHUNK;
    }
}

fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&c| c == first) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaValue;

    fn values() -> Vec<MetaValue> {
        vec![MetaValue {
            key: 0x0a,
            value: "{\"externalIPs\":[\"1.2.3.4\"]}".into(),
        }]
    }

    /// A 512-byte-sector GPT disk: header at LBA 1, one entry at LBA 2, META at LBA 64.
    fn disk() -> Vec<u8> {
        let mut d = vec![0u8; 64 * 512 + adv::PARTITION_LEN];
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let e = 1024;
        d[e + 32..e + 40].copy_from_slice(&64u64.to_le_bytes());
        for (i, c) in "META".encode_utf16().enumerate() {
            d[e + 56 + 2 * i..e + 58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        d[64 * 512..].copy_from_slice(&adv::encode(&values()).unwrap());
        d
    }

    fn read(bytes: &[u8]) -> std::result::Result<(adv::Decoded, Found), ReadError> {
        read_from(Seekable(io::Cursor::new(bytes)), Some(bytes.len() as u64))
    }

    #[test]
    fn reads_gpt_disks_seekable_and_streamed() {
        let d = disk();
        assert_eq!(read(&d).unwrap().0.values, values());
        let (decoded, found) = read_from(Stream(&d[..]), None).unwrap();
        assert_eq!((decoded.values, found), (values(), Found::Partition));
    }

    #[test]
    fn reads_zstd_xz_and_gzip_files_by_magic() {
        use std::io::Write;
        let d = disk();
        let dir = tempfile::tempdir().unwrap();
        let zst = zstd::encode_all(&d[..], 1).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&d).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&d).unwrap();
        for (name, bytes) in [
            ("d.zst", zst),
            ("d.xz", xz.finish().unwrap()),
            ("d.gz", gz.finish().unwrap()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let (decoded, found) = read_path(&path).unwrap();
            assert_eq!(
                (decoded.values, found),
                (values(), Found::Partition),
                "{name}"
            );
        }
        // A truncated stream names the compression.
        let path = dir.path().join("cut.zst");
        std::fs::write(&path, &zstd::encode_all(&d[..], 1).unwrap()[..40]).unwrap();
        let err = read_path(&path).unwrap_err().to_string();
        assert!(err.contains("zstd-compressed"), "{err}");
    }

    #[test]
    fn reads_the_cmdline_payload_across_chunks() {
        let mut iso = vec![b'x'; (1 << 20) - 5];
        iso.extend_from_slice(b"talos.environment=INSTALLER_META_BASE64=");
        iso.extend_from_slice(super::super::cmdline_payload(&values(), true).as_bytes());
        iso.extend_from_slice(b" console=tty0\n");
        let (decoded, found) = read(&iso).unwrap();
        assert_eq!((decoded.values, found), (values(), Found::Cmdline));
    }

    #[test]
    fn lengths_from_the_gpt_are_bounded() {
        // SizeOfPartitionEntry 0xFFFFFFFF: refused without allocating.
        let mut d = disk();
        d[512 + 84..512 + 88].copy_from_slice(&u32::MAX.to_le_bytes());
        let ReadError::Bad(msg) = read(&d).unwrap_err() else {
            panic!()
        };
        assert!(msg.contains("entry size 4294967295"), "{msg}");
        // A PartitionEntryLBA that overflows when multiplied by the sector size.
        let mut d = disk();
        d[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(read(&d), Err(ReadError::Bad(_))));
        // A META partition past the end of the file.
        let mut d = disk();
        d[1024 + 32..1024 + 40].copy_from_slice(&(u64::MAX / 512).to_le_bytes());
        let ReadError::Bad(msg) = read(&d).unwrap_err() else {
            panic!()
        };
        assert!(msg.contains("past the end"), "{msg}");
        // 4 KiB crafted file.
        let mut small = d[..4096].to_vec();
        small[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        assert!(matches!(read(&small), Err(ReadError::Bad(_))));
    }
}
