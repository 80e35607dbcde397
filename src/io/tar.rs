//! Reproducible tar headers.
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
}
