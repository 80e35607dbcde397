//! A writer of "new ASCII" (newc, `070701`) cpio archives, the format the Linux kernel
//! unpacks as an initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Entries are written the way GNU cpio 2.13 writes them with
//! `-H newc --create --reproducible -R +0:+0`: uid/gid 0, device numbers 0, check 0,
//! inode numbers counted from 0 in archive order, a `TRAILER!!!` entry (inode 0, mode
//! 0, one link, mtime 0), and the archive zero-padded to a multiple of 512 bytes. File
//! data is streamed from its reader.

use std::io::{self, Read, Write};

/// Mode type bits.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// One archive being written.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

/// The metadata of one entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryMeta {
    /// Type and permission bits (`S_IF*` | 0o7777).
    pub mode: u32,
    pub nlink: u32,
    pub mtime: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 0,
        }
    }

    /// The output, to act between entries (the archive's bytes so far are all in it).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, to: u64) -> io::Result<()> {
        let n = (to - self.written % to) % to;
        self.put(&vec![0; n as usize])
    }

    fn header(&mut self, name: &str, ino: u32, meta: EntryMeta, size: u64) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: newc cpio cannot hold files of 4 GiB or more"),
            )
        })?;
        let fields = [
            ino,
            meta.mode,
            0,
            0,
            meta.nlink,
            meta.mtime,
            size,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::with_capacity(110);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08X}"));
        }
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad(4)
    }

    fn ino(&mut self) -> u32 {
        let i = self.next_ino;
        self.next_ino += 1;
        i
    }

    /// A directory entry with `nlink` links (2 + its subdirectories).
    pub fn dir(&mut self, name: &str, perm: u32, nlink: u32, mtime: u32) -> io::Result<()> {
        let ino = self.ino();
        let meta = EntryMeta {
            mode: S_IFDIR | (perm & 0o7777),
            nlink,
            mtime,
        };
        self.header(name, ino, meta, 0)
    }

    /// A regular file of `size` bytes read from `data`; fails if `data` holds another length.
    pub fn file(
        &mut self,
        name: &str,
        perm: u32,
        mtime: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let ino = self.ino();
        let meta = EntryMeta {
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            mtime,
        };
        self.header(name, ino, meta, size)?;
        let mut counted = CountingWriter {
            inner: &mut self.out,
            n: 0,
        };
        io::copy(&mut data.take(size), &mut counted)?;
        let n = counted.n;
        self.written += n;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: the file changed while it was archived"),
            ));
        }
        self.pad(4)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str, mtime: u32) -> io::Result<()> {
        let ino = self.ino();
        let meta = EntryMeta {
            mode: S_IFLNK | 0o777,
            nlink: 1,
            mtime,
        };
        self.header(name, ino, meta, target.len() as u64)?;
        self.put(target.as_bytes())?;
        self.pad(4)
    }

    /// Writes the trailer and the padding to 512 bytes; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let meta = EntryMeta {
            mode: 0,
            nlink: 1,
            mtime: 0,
        };
        self.header("TRAILER!!!", 0, meta, 0)?;
        self.pad(512)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The bytes an entry named `name` with `data` bytes (file content or symlink target)
/// takes in the archive, padding included (entries start 4-byte aligned).
pub fn entry_len(name: &str, data: u64) -> u64 {
    align4(110 + name.len() as u64 + 1) + align4(data)
}

/// The bytes of the trailer and the final padding of an archive whose entries end at
/// `offset`.
pub fn trailer_len(offset: u64) -> u64 {
    let end = offset + entry_len("TRAILER!!!", 0);
    end.div_ceil(512) * 512 - offset
}

fn align4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_newc() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("kernel", 0o755, 3, 7).unwrap();
        w.file("kernel/a.bin", 0o644, 7, 3, &mut &b"abc"[..])
            .unwrap();
        w.symlink("l", "kernel", 7).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 512, 0);
        let first = std::str::from_utf8(&out[..110]).unwrap();
        let fields = [0u32, 0o40755, 0, 0, 3, 7, 0, 0, 0, 0, 0, 7, 0];
        let expected: String = std::iter::once("070701".to_string())
            .chain(fields.iter().map(|f| format!("{f:08X}")))
            .collect();
        assert_eq!(first, expected);
        // name "kernel\0" is 7 bytes: 110 + 7 = 117, padded to 120.
        assert_eq!(&out[110..117], b"kernel\0");
        assert_eq!(&out[120..126], b"070701");
        // second header: ino 1, regular 0644, size 3.
        let second = std::str::from_utf8(&out[120..230]).unwrap();
        assert_eq!(&second[6..14], "00000001");
        assert_eq!(&second[14..22], "000081A4");
        assert_eq!(&second[54..62], "00000003");
        // name "kernel/a.bin\0" = 13 bytes: 230 + 13 = 243 -> 244, data 3 bytes -> 248.
        assert_eq!(&out[244..247], b"abc");
        assert_eq!(&out[248..254], b"070701");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn entry_lengths_match_the_writer() {
        let mut w = CpioWriter::new(Vec::new());
        let mut at = 0;
        for (name, data) in [("a", &b""[..]), ("kernel/abc", b"xy"), ("0.sqsh", b"1234")] {
            w.file(name, 0o644, 0, data.len() as u64, &mut &data[..])
                .unwrap();
            at += entry_len(name, data.len() as u64);
            assert_eq!(w.get_mut().len() as u64, at, "{name}");
        }
        w.dir("usr", 0o755, 2, 0).unwrap();
        w.symlink("l", "usr", 0).unwrap();
        at += entry_len("usr", 0) + entry_len("l", 3);
        assert_eq!(w.get_mut().len() as u64, at);
        let out = w.finish().unwrap();
        assert_eq!(out.len() as u64, at + trailer_len(at));
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("f", 0o644, 0, 10, &mut &b"abc"[..]).is_err());
    }
}
