//! Tar helpers: reproducible headers, and reading image layers safely.
//!
//! Every tar this program writes (the installer image and its layer, `--tar-to-stdout`,
//! the `.tar.gz` disk format) must be byte-identical across builds of the same
//! inputs: GNU headers, owner root (uid/gid 0, no user or group names), the build
//! epoch as mtime, a fixed mode. The name and checksum are filled in by
//! `tar::Builder::append_data`.

/// Header of a regular file of `size` bytes.
pub fn file_header(size: u64, mode: u32, mtime: u64) -> tar::Header {
    header(size, mode, mtime, tar::EntryType::Regular)
}

/// Header of a directory.
pub fn dir_header(mode: u32, mtime: u64) -> tar::Header {
    header(0, mode, mtime, tar::EntryType::Directory)
}

fn header(size: u64, mode: u32, mtime: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

/// Opens an image layer: gzip (members concatenated, as `MultiGzDecoder` reads them),
/// zstd or plain tar, told apart by their magic bytes.
pub fn layer_decoder<'a>(
    r: impl std::io::Read + 'a,
) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
    let mut r = std::io::BufReader::new(r);
    let head = std::io::BufRead::fill_buf(&mut r)?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// A tar entry name that leaves the root it is unpacked into.
#[derive(Debug, PartialEq, Eq)]
pub struct EscapesRoot;

/// A tar entry's name made relative and lexically clean (`./a`, `/a` and `a` are the
/// same; `a/../b` is `b`): `Ok(None)` for the root itself, [`EscapesRoot`] for a name
/// that leaves the root (`../x`, `a/../../x`).
pub fn clean_name(name: &std::path::Path) -> Result<Option<std::path::PathBuf>, EscapesRoot> {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(EscapesRoot);
                }
            }
            Component::Prefix(_) => return Err(EscapesRoot),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &mut [(tar::Header, &str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (h, name, data) in entries.iter_mut() {
            tar.append_data(h, *name, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    #[test]
    fn headers_carry_only_what_is_given() {
        let bytes = archive(&mut [
            (dir_header(0o755, 1_700_000_000), "usr/", b""),
            (file_header(5, 0o644, 1_700_000_000), "usr/a", b"hello"),
        ]);
        let mut a = tar::Archive::new(&bytes[..]);
        let entries: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    h.entry_type(),
                    h.path().unwrap().to_string_lossy().into_owned(),
                    h.size().unwrap(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    (h.uid().unwrap(), h.gid().unwrap()),
                    h.as_gnu().is_some(),
                    h.username().unwrap().map(str::to_string),
                )
            })
            .collect();
        let none = Some(String::new());
        assert_eq!(
            entries,
            [
                (
                    tar::EntryType::Directory,
                    "usr/".into(),
                    0,
                    0o755,
                    1_700_000_000,
                    (0, 0),
                    true,
                    none.clone()
                ),
                (
                    tar::EntryType::Regular,
                    "usr/a".into(),
                    5,
                    0o644,
                    1_700_000_000,
                    (0, 0),
                    true,
                    none
                ),
            ]
        );
    }

    #[test]
    fn same_inputs_same_bytes() {
        let one = || archive(&mut [(file_header(3, 0o600, 0), "x", b"abc")]);
        assert_eq!(one(), one());
        // Header, one data block, two end blocks.
        assert_eq!(one().len(), 4 * 512);
        let other = archive(&mut [(file_header(3, 0o600, 1), "x", b"abc")]);
        assert_ne!(one(), other);
    }

    #[test]
    fn names_are_cleaned_and_escapes_refused() {
        use std::path::{Path, PathBuf};
        assert_eq!(
            clean_name(Path::new("./a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(
            clean_name(Path::new("/a/./b/../c")).unwrap(),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(clean_name(Path::new("./")).unwrap(), None);
        assert!(clean_name(Path::new("../etc/passwd")).is_err());
        assert!(clean_name(Path::new("a/../../x")).is_err());
    }
}
