//! Kernel modules of system extensions: the synthetic last layer `modules.dep.sqsh`
//! (Talos `internal/pkg/extensions/kernel_modules.go`).
//!
//! When an extension carries `<modules dir>` (`usr/lib/modules`, `lib/modules` before
//! Talos 1.10), the base initramfs's `rootfs.sqsh` is read for its module tree: the
//! initramfs is xz (magic `FD 37 7A 58 5A 00`) or zstd compressed newc cpio, streamed
//! until the member `rootfs.sqsh`, which is copied to a scratch file (never held in
//! memory) and read with `backhand`; its `<modules dir>` must hold exactly one entry,
//! a directory named by the kernel release. That tree is copied out, each module
//! extension's `<modules dir>/<release>/` is copied over it in extension order (files
//! overwritten, symlinks followed), [`super::depmod`] regenerates the index files,
//! and every regular file directly in `<release>/` whose name starts with `modules.`
//! becomes the layer (`<modules dir>/<release>/modules.*`, directories 0755). The
//! `.ko` files stay in their own extension's image. An extension built for another
//! kernel release is an error naming both releases.
//!
//! `backhand` is built without its xz feature (its liblzma would clash with `xz2`'s),
//! so the reader's decompressor here handles xz (Talos builds `rootfs.sqsh` with
//! `mksquashfs -comp xz -Xdict-size 100%`) with `xz2`, gzip with `flate2`, and the
//! rest (zstd) as backhand does. Its "parallel" reader is left out: it prefetches half
//! as many blocks as rayon has threads, none on one CPU, and every file then read as
//! empty; each extracted file's length is checked against its inode.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use backhand::{FilesystemReader, InnerNode};

use super::depmod;
use super::manifest::{Compatibility, Metadata, TalosCompat};
use crate::error::{Error, IoContext, Result};

/// The layer's image name in the initramfs.
pub const IMAGE: &str = "modules.dep.sqsh";

/// The member of the base initramfs that holds the root file system.
const ROOTFS: &str = "rootfs.sqsh";

/// Whether the extension rootfs carries a modules directory at all (any type).
pub fn carries_modules(rootfs: &Path, modules_dir: &str) -> bool {
    std::fs::symlink_metadata(rootfs.join(modules_dir)).is_ok()
}

/// The metadata of the `modules.dep` layer in `extensions.yaml`.
pub fn metadata(kver: &str) -> Metadata {
    Metadata {
        name: "modules.dep".into(),
        version: kver.into(),
        author: "Talos Machinery".into(),
        description: "Combined modules.dep for all extensions".into(),
        compatibility: Compatibility {
            talos: TalosCompat {
                version: String::new(),
            },
        },
        extra_info: String::new(),
    }
}

/// The layer built by [`build_layer`].
pub struct ModulesLayer {
    /// The root of the layer's tree (`<modules dir>/<release>/modules.*` inside).
    pub rootfs: PathBuf,
    /// The base kernel's release.
    pub kver: String,
    pub modules: usize,
}

/// Builds the `modules.dep` layer inside `scratch` from the base initramfs and the
/// module extensions (`(name, rootfs)`, in extension order); `on_depmod` is called
/// when the merged tree is ready and depmod starts.
pub fn build_layer(
    base: &Path,
    scratch: &Path,
    modules_dir: &str,
    extensions: &[(String, PathBuf)],
    on_depmod: &dyn Fn(),
) -> Result<ModulesLayer> {
    let work = scratch.join("modules");
    std::fs::create_dir_all(&work).op("creating", &work)?;
    let kver = base_modules(base, modules_dir, &work)?;
    let tree = work.join("tree").join(&kver);
    for (name, rootfs) in extensions {
        let from = rootfs.join(modules_dir);
        let mut releases: Vec<String> = std::fs::read_dir(&from)
            .map_err(|e| {
                Error::invalid(format!(
                    "system extension {name}: /{modules_dir} is not a readable directory: {e}"
                ))
            })?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()
            .at(&from)?;
        releases.sort();
        if let Some(other) = releases.iter().find(|r| **r != kver) {
            return Err(Error::invalid(format!(
                "system extension {name} carries kernel modules for kernel release {other} (/{modules_dir}/{other}), but the base initramfs's kernel is release {kver}"
            )));
        }
        if !releases.is_empty() {
            copy_over(&from.join(&kver), &tree)?;
        }
    }
    on_depmod();
    let summary = depmod::run(&tree, &tree, &depmod::Config::talos())?;

    let rootfs = work.join("layer");
    let mut dest = rootfs.clone();
    std::fs::create_dir_all(&rootfs).op("creating", &rootfs)?;
    set_mode(&rootfs, 0o755)?;
    for part in Path::new(modules_dir).join(&kver).components() {
        dest.push(part);
        std::fs::create_dir_all(&dest).op("creating", &dest)?;
        set_mode(&dest, 0o755)?;
    }
    let mut names: Vec<_> = std::fs::read_dir(&tree)
        .at(&tree)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .at(&tree)?;
    names.sort();
    for n in names {
        let src = tree.join(&n);
        if n.to_string_lossy().starts_with("modules.")
            && std::fs::symlink_metadata(&src).at(&src)?.is_file()
        {
            let to = dest.join(&n);
            std::fs::rename(&src, &to).op("moving", &src)?;
        }
    }
    Ok(ModulesLayer {
        rootfs,
        kver,
        modules: summary.modules,
    })
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).at(p)
}

/// Copies `src` over `dst` recursively: files replaced (symlinks followed), modes
/// kept without group/other write.
fn copy_over(src: &Path, dst: &Path) -> Result<()> {
    if !dst.is_dir() {
        std::fs::create_dir_all(dst).op("creating", dst)?;
    }
    let mut names: Vec<_> = std::fs::read_dir(src)
        .at(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .at(src)?;
    names.sort();
    for n in names {
        let (s, d) = (src.join(&n), dst.join(&n));
        let meta = std::fs::metadata(&s).at(&s)?;
        let mode = meta.permissions().mode() & 0o755;
        if meta.is_dir() {
            if std::fs::symlink_metadata(&d).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&d).op("replacing", &d)?;
            }
            copy_over(&s, &d)?;
            set_mode(&d, mode)?;
        } else if meta.is_file() {
            if std::fs::symlink_metadata(&d).is_ok() {
                if d.is_dir() && !d.is_symlink() {
                    std::fs::remove_dir_all(&d).op("replacing", &d)?;
                } else {
                    std::fs::remove_file(&d).op("replacing", &d)?;
                }
            }
            let mut from = File::open(&s).at(&s)?;
            let mut to = File::create(&d).op("creating", &d)?;
            io::copy(&mut from, &mut to).writing(&d)?;
            set_mode(&d, mode)?;
        }
    }
    Ok(())
}

/// Extracts the module tree of the base initramfs `base` into `work/tree/<release>`;
/// returns the release.
pub fn base_modules(base: &Path, modules_dir: &str, work: &Path) -> Result<String> {
    let sqsh = work.join(ROOTFS);
    let found = {
        let file = File::open(base).at(base)?;
        let mut out = File::create(&sqsh).op("creating", &sqsh)?;
        find_member(BufReader::new(file), ROOTFS, &mut out)
            .map_err(|m| Error::format(base, format!("base initramfs: {m}")))?
    };
    if !found {
        return Err(Error::format(
            base,
            format!(
                "base initramfs: no {ROOTFS} in it, so it has no kernel modules to merge the extensions' with"
            ),
        ));
    }
    let kver = extract_modules(&sqsh, modules_dir, &work.join("tree"))
        .map_err(|m| Error::format(base, format!("base initramfs: {ROOTFS}: {m}")))?;
    std::fs::remove_file(&sqsh).op("removing", &sqsh)?;
    Ok(kver)
}

/// Decompresses an initramfs by magic (xz, else zstd) and copies the data of the
/// newc member `name` to `out`; false when there is none. Errors are messages.
pub fn find_member<R: io::BufRead>(
    mut input: R,
    name: &str,
    out: &mut dyn Write,
) -> std::result::Result<bool, String> {
    let magic = input.fill_buf().map_err(|e| format!("reading: {e}"))?;
    let reader: Box<dyn Read + '_> = if magic.starts_with(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) {
        Box::new(xz2::bufread::XzDecoder::new_multi_decoder(input))
    } else if magic.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(|e| format!("zstd: {e}"))?)
    } else {
        return Err("neither xz nor zstd compressed (bad magic)".into());
    };
    scan_cpio(reader, name, out)
}

/// Reads newc (`070701`/`070702`) archives, concatenated and NUL-padded as the
/// kernel accepts them, until the member `name`, whose data goes to `out`.
fn scan_cpio(
    mut r: impl Read,
    name: &str,
    out: &mut dyn Write,
) -> std::result::Result<bool, String> {
    let mut pos: u64 = 0;
    let err = |e: io::Error| format!("decompressing: {e}");
    loop {
        // Skip NUL padding between archives; the end of the stream is the end.
        let mut first = [0u8; 1];
        loop {
            match r.read(&mut first) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    pos += 1;
                    if first[0] != 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(e)),
            }
        }
        let mut header = [0u8; 110];
        header[0] = first[0];
        r.read_exact(&mut header[1..]).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!(
                "not a newc cpio archive (the data ends inside a header at byte {})",
                pos - 1
            ),
            _ => format!("decompressing: {e}"),
        })?;
        let at = pos - 1;
        pos += 109;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(format!(
                "not a newc cpio archive (at byte {at} of the decompressed data)"
            ));
        }
        let field = |i: usize| -> std::result::Result<u64, String> {
            let s = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| "bad cpio header".to_string())?;
            u64::from_str_radix(s, 16)
                .map_err(|_| format!("bad cpio header field {s:?} at byte {at}"))
        };
        let size = field(6)?;
        let namesize = field(11)?;
        if namesize == 0 || namesize > 4096 {
            return Err(format!("bad cpio name size {namesize} at byte {at}"));
        }
        let mut n = vec![0u8; namesize as usize];
        r.read_exact(&mut n)
            .map_err(|e| format!("cpio name at byte {at}: {e}"))?;
        pos += namesize;
        skip(&mut r, (4 - pos % 4) % 4).map_err(err)?;
        pos += (4 - pos % 4) % 4;
        let n = &n[..n.iter().position(|&b| b == 0).unwrap_or(n.len())];
        let n = n.strip_prefix(b"./").unwrap_or(n);
        if n == name.as_bytes() {
            let copied = io::copy(&mut (&mut r).take(size), out)
                .map_err(|e| format!("copying {name}: {e}"))?;
            if copied != size {
                return Err(format!("{name} is cut short ({copied} of {size} bytes)"));
            }
            return Ok(true);
        }
        let skipped = skip(&mut r, size).map_err(err)?;
        if skipped != size {
            return Err(format!(
                "archive cut short inside {:?}",
                String::from_utf8_lossy(n)
            ));
        }
        pos += size;
        skip(&mut r, (4 - pos % 4) % 4).map_err(err)?;
        pos += (4 - pos % 4) % 4;
    }
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<u64> {
    io::copy(&mut r.take(n), &mut io::sink())
}

/// Extracts `<modules dir>/<release>/` of the squashfs image `sqsh` into
/// `dest/<release>`; returns the release. Errors are messages.
pub fn extract_modules(
    sqsh: &Path,
    modules_dir: &str,
    dest: &Path,
) -> std::result::Result<String, String> {
    let file = File::open(sqsh).map_err(|e| format!("opening: {e}"))?;
    let kind = crate::formats::squashfs::read_kind();
    let fs = FilesystemReader::from_reader_with_offset_and_kind(BufReader::new(file), 0, kind)
        .map_err(|e| format!("not a readable squashfs image: {e}"))?;
    let base = Path::new("/").join(modules_dir);
    let mut entries = Vec::new();
    let mut seen_dir = false;
    for node in fs.files() {
        if node.fullpath == base {
            if !matches!(node.inner, InnerNode::Dir(_)) {
                return Err(format!("/{modules_dir} is not a directory"));
            }
            seen_dir = true;
        }
        if let Ok(rel) = node.fullpath.strip_prefix(&base)
            && rel.components().count() == 1
        {
            entries.push((rel.to_path_buf(), matches!(node.inner, InnerNode::Dir(_))));
        }
    }
    if !seen_dir {
        return Err(format!("no /{modules_dir} in it"));
    }
    let kver = match entries.as_slice() {
        [(rel, true)] => rel.to_string_lossy().into_owned(),
        _ => {
            return Err(format!(
                "invalid kernel modules path: /{modules_dir} must hold exactly one directory, the kernel release (found {})",
                entries
                    .iter()
                    .map(|(p, _)| p.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    };
    let top = base.join(&kver);
    for node in fs.files() {
        let Ok(rel) = node.fullpath.strip_prefix(&top) else {
            continue;
        };
        let to = dest.join(&kver).join(rel);
        let mode = u32::from(node.header.permissions) & 0o7777;
        let fail = |e: io::Error| format!("extracting {}: {e}", node.fullpath.display());
        match &node.inner {
            InnerNode::Dir(_) => {
                std::fs::create_dir_all(&to).map_err(fail)?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode | 0o700))
                    .map_err(fail)?;
            }
            InnerNode::File(f) => {
                let mut out = File::create(&to).map_err(fail)?;
                let mut reader = fs.file(f).reader();
                let copied = io::copy(&mut reader, &mut out).map_err(fail)?;
                // The reader ends early instead of failing when it runs out of blocks:
                // a short copy is an error, never a truncated module.
                if copied != f.file_len() as u64 {
                    return Err(format!(
                        "extracting {}: {copied} of its {} bytes read",
                        node.fullpath.display(),
                        f.file_len()
                    ));
                }
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                    .map_err(fail)?;
            }
            InnerNode::Symlink(l) => {
                std::os::unix::fs::symlink(&l.link, &to).map_err(fail)?;
            }
            _ => {} // devices, fifos, sockets: not part of a module tree
        }
    }
    Ok(kver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cpio::CpioWriter;

    #[test]
    fn finds_a_member_in_concatenated_zstd_cpio() {
        let mut a = CpioWriter::new(Vec::new());
        a.file("init", 0o755, 0, 3, &mut &b"abc"[..]).unwrap();
        let mut bytes = a.finish().unwrap();
        let mut b = CpioWriter::new(Vec::new());
        b.dir(".", 0o755, 2, 0).unwrap();
        b.file("./rootfs.sqsh", 0o644, 0, 5, &mut &b"hello"[..])
            .unwrap();
        bytes.extend(b.finish().unwrap());
        let z = zstd::encode_all(&bytes[..], 3).unwrap();
        let mut out = Vec::new();
        assert!(find_member(&z[..], ROOTFS, &mut out).unwrap());
        assert_eq!(out, b"hello");
        let mut out = Vec::new();
        assert!(!find_member(&z[..], "nothing", &mut out).unwrap());
    }

    #[test]
    fn garbage_is_a_message() {
        let mut out = Vec::new();
        assert!(
            find_member(&b"plain text"[..], ROOTFS, &mut out)
                .unwrap_err()
                .contains("magic")
        );
        let z = zstd::encode_all(&b"070701zzzz"[..], 3).unwrap();
        assert!(find_member(&z[..], ROOTFS, &mut out).is_err());
    }
}
