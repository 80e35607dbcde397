//! The tarball of a virtual system extension: one written here, not pulled, and then
//! unpacked and rebuilt like any other. Two exist: the embedded machine configuration
//! ([`super::embedded`], Talos's `pkg/imager/embed.go`) and Image Factory's `schematic`
//! extension ([`super::schematic`], `internal/artifacts/schematic.go`). Both write the
//! same shape, in the same order: `manifest.yaml` (0644), then the directories leading
//! to the files under `rootfs/` (0755, parents first), then the files, each with its
//! optional SELinux label as a PAX `SCHILY.xattr.security.selinux` record. Every entry
//! is owned by root and timed at `epoch`.

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// One file of a virtual extension.
pub struct File<'a> {
    /// Path under `rootfs/`, e.g. `usr/local/etc/talos/config.yaml`.
    pub path: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
    /// SELinux label stored as the file's `security.selinux` xattr.
    pub selinux: Option<&'a str>,
}

/// Writes the extension with `manifest` and `files` to `dest` (renamed into place when
/// complete).
pub fn write(manifest: &str, files: &[File<'_>], epoch: u64, dest: &Path) -> Result<()> {
    let mut out = crate::io::AtomicFile::create(dest)?;
    {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out.file()));
        let mut h = crate::io::tar::file_header(manifest.len() as u64, 0o644, epoch);
        tar.append_data(&mut h, "manifest.yaml", manifest.as_bytes())
            .writing(dest)?;
        for dir in directories(files) {
            let mut h = crate::io::tar::dir_header(0o755, epoch);
            tar.append_data(&mut h, dir, std::io::empty())
                .writing(dest)?;
        }
        for f in files {
            if let Some(label) = f.selinux {
                tar.append_pax_extensions([("SCHILY.xattr.security.selinux", label.as_bytes())])
                    .writing(dest)?;
            }
            let mut h = crate::io::tar::file_header(f.data.len() as u64, f.mode, epoch);
            tar.append_data(&mut h, format!("rootfs/{}", f.path), f.data)
                .writing(dest)?;
        }
        tar.into_inner().and_then(|mut w| w.flush()).writing(dest)?;
    }
    out.commit()?;
    Ok(())
}

/// `rootfs/` and every directory above a file, parents first, each once.
fn directories(files: &[File<'_>]) -> Vec<String> {
    let mut dirs = vec!["rootfs/".to_string()];
    for f in files {
        let mut dir = String::from("rootfs/");
        let parts: Vec<&str> = f.path.split('/').collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            dir = format!("{dir}{p}/");
            if !dirs.contains(&dir) {
                dirs.push(dir.clone());
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_in_order_with_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.tar");
        let files = [File {
            path: "usr/local/share/x/id",
            mode: 0o644,
            data: b"",
            selinux: None,
        }];
        write("m: 1\n", &files, 7, &dest).unwrap();
        let mut a = tar::Archive::new(std::fs::File::open(&dest).unwrap());
        let got: Vec<(String, u32, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        let want = [
            ("manifest.yaml", 0o644),
            ("rootfs/", 0o755),
            ("rootfs/usr/", 0o755),
            ("rootfs/usr/local/", 0o755),
            ("rootfs/usr/local/share/", 0o755),
            ("rootfs/usr/local/share/x/", 0o755),
            ("rootfs/usr/local/share/x/id", 0o644),
        ];
        let want: Vec<(String, u32, u64)> =
            want.iter().map(|(p, m)| (p.to_string(), *m, 7)).collect();
        assert_eq!(got, want);
    }
}
