//! System extensions: the initramfs rebuild of `pkg/imager/extensions` (Talos).
//!
//! Each `input.systemExtensions[j]` is unpacked into `<scratch>/unpacked/<j>` (from
//! `tarballPath`, else `ociPath`, else `imageRef`), checked and validated; the
//! directories are then processed in byte-sorted name order (`0, 1, 10, 11, 2, ...`
//! past ten extensions, as Talos does), which is also the `extensions.yaml` order.
//! Per extension: CPU microcode is cut out into `kernel/x86/microcode/*.bin` for the
//! uncompressed early cpio, the firmware directory is moved into the initramfs, and
//! the rest becomes `<j>.sqsh` ([`crate::formats::squashfs`]). The result is
//! `[early cpio, if any microcode] + [the base initramfs, byte for byte] +
//! [a newc cpio with the .sqsh files, extensions.yaml and the firmware tree, as
//! concatenated zstd frames]`. Talos pipes that cpio through `zstd -18` as one frame;
//! here each `.sqsh` entry (header, name, image, padding) is one *stored* frame (raw
//! blocks: the image is zstd-compressed already; level 18 spent 35 s and ~350 MiB on
//! 150 MiB of images to make them ~1% smaller), and each run of the other entries,
//! the trailer last, one level-18 frame ([`crate::formats::zstd_frames`]). The kernel
//! unpacks concatenated frames (`unpack_to_rootfs` continues after each one) provided
//! each ends between cpio entries, which they do; decompressed, the stream is the same
//! cpio, byte for byte. Profiles before Talos 1.8 get xz squashfs images and xz
//! streams instead of zstd frames, laid out the same way (a stored stream per image,
//! `xz -0e` streams for the rest; [`crate::formats::xz_streams`]). Every entry of both
//! cpios is timed at the plan's epoch (Talos records the files' fresh mtimes, so its
//! output is not reproducible; ours is).
//!
//! The embedded machine configuration (`customization.embeddedMachineConfiguration`,
//! `--embedded-config-path`, Talos >= 1.12) is the virtual extension Talos's
//! `pkg/imager/embed.go` appends as the last `systemExtensions` entry: a tarball
//! written into the scratch directory, with its manifest (`embedded-config`, version
//! the SHA-256 of the configuration) and `rootfs/usr/local/etc/talos/config.yaml`.
//!
//! Kernel modules: when an extension carries a modules tree, the regenerated depmod
//! files become the last layer, `modules.dep.sqsh` ([`modules`], [`depmod`]).

pub mod embedded;
pub mod schematic;
pub mod virtual_ext;

pub mod depmod;
pub mod manifest;
pub mod modules;
pub mod unpack;

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::formats::chunked::{Chunk, ChunkWriter, Codec};
use crate::formats::cpio::{self, CpioWriter};
use crate::formats::xz_streams::{StreamWriter, Xz};
use crate::formats::zstd_frames::{FrameWriter, Zstd};
use crate::profile::{ContainerAsset, Profile};
use crate::report::Progress;
use manifest::{Layer, Metadata};

pub use crate::report::ExtensionRecord;

/// The rebuilt initramfs and what went into it.
pub struct Rebuilt {
    pub initramfs: PathBuf,
    pub extensions: Vec<ExtensionRecord>,
}

/// The firmware directory inside an extension and the initramfs.
fn firmware_dir(profile: &Profile) -> &'static str {
    if profile.quirks().usr_lib() {
        "usr/lib/firmware"
    } else {
        "lib/firmware"
    }
}

/// Talos compresses squashfs images and the appended cpio with xz before 1.8, zstd since.
fn uses_xz(profile: &Profile) -> bool {
    profile.quirks().xz_extensions()
}

fn modules_dir(profile: &Profile) -> &'static str {
    if profile.quirks().usr_lib() {
        "usr/lib/modules"
    } else {
        "lib/modules"
    }
}

/// The profile-level refusals of what this rebuild does not do (checked before any work).
pub fn validate_profile(profile: &Profile) -> Result<()> {
    embedded::validate(profile)?;
    if profile.input.system_extensions.is_empty() {
        return Ok(());
    }
    for (j, e) in profile.input.system_extensions.iter().enumerate() {
        if e.tarball_path.is_empty() && e.oci_path.is_empty() && e.image_ref.is_empty() {
            return Err(Error::invalid(format!(
                "input.systemExtensions[{j}]: set one of imageRef, ociPath or tarballPath"
            )));
        }
    }
    Ok(())
}

fn source_name(e: &ContainerAsset) -> String {
    if !e.tarball_path.is_empty() {
        e.tarball_path.clone()
    } else if !e.oci_path.is_empty() {
        format!("oci:{}", e.oci_path)
    } else {
        e.image_ref.clone()
    }
}

/// Unpacks extension `e` into `dest`.
fn unpack_one(
    profile: &Profile,
    e: &ContainerAsset,
    source: &str,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let source = source.to_string();
    if !e.tarball_path.is_empty() {
        detail(progress, &format!("extracting {}...", e.tarball_path));
        return unpack::tarball(Path::new(&e.tarball_path), dest, &source);
    }
    let image = if !e.oci_path.is_empty() {
        detail(progress, &format!("using OCI image from {}...", e.oci_path));
        crate::oci::Reference::Layout {
            dir: PathBuf::from(&e.oci_path),
            tag: None,
        }
        .open(&profile.arch, false)?
    } else {
        detail(progress, &format!("pulling {}...", e.image_ref));
        crate::oci::Reference::parse(&e.image_ref)?
            .open(&profile.arch, e.force_insecure)
            .map_err(|err| match err {
                Error::Dependency(m) => {
                    Error::Dependency(format!("error pulling image {}: {m}", e.image_ref))
                }
                other => other,
            })?
    };
    unpack::Unpacker::new(dest, &source)?.layers(&image.layers)
}

/// One indented line under the heading [`rebuild`] prints once.
fn detail(progress: &dyn Progress, line: &str) {
    progress.step(&format!("    {line}"));
}

/// The `NAME VERSION AUTHOR` table as Go's tabwriter prints it (padding 3).
fn table(rows: &[[&str; 3]]) -> Vec<String> {
    let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0) + 3;
    let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0) + 3;
    rows.iter()
        .map(|r| {
            let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w - s.chars().count()));
            format!("{}{}{}", pad(r[0], w0), pad(r[1], w1), r[2])
        })
        .collect()
}

/// Where one rebuild works and what it keeps fixed: the profile, the scratch
/// directories, the base initramfs and the entries' mtime.
struct Work<'a> {
    profile: &'a Profile,
    progress: &'a dyn Progress,
    scratch: &'a Path,
    /// `<scratch>/unpacked/<j>`: extension `j` unpacked.
    unpacked: PathBuf,
    /// `<scratch>/initramfs-tree`: what goes into the appended cpio.
    tree: PathBuf,
    base: PathBuf,
    mtime: u32,
}

/// One extension, unpacked and its manifest read.
struct Loaded {
    /// Its directory under `unpacked/` (the profile index), also its image name.
    dir: String,
    metadata: Metadata,
    /// Where it came from, for messages and the build manifest.
    source: String,
}

/// Rebuilds the profile's initramfs with its extensions inside `scratch`; `None`
/// (and the skip line) when there are no extensions. The steps of Talos's
/// `extensions.Builder.Build`: unpack, validate (and depmod), compress, write.
pub fn rebuild(
    profile: &Profile,
    scratch: &Path,
    epoch: u64,
    progress: &dyn Progress,
) -> Result<Option<Rebuilt>> {
    let config = &profile.customization.embedded_machine_configuration;
    if profile.input.system_extensions.is_empty() && config.is_empty() {
        progress.step("skipped initramfs rebuild (no system extensions)");
        return Ok(None);
    }
    let base = crate::inputs::require_file("initramfs", &profile.input.initramfs.path)?;
    let mtime = u32::try_from(epoch).map_err(|_| {
        Error::invalid(format!("SOURCE_DATE_EPOCH {epoch} does not fit in 32 bits"))
    })?;
    let w = Work {
        profile,
        progress,
        scratch,
        unpacked: scratch.join("unpacked"),
        tree: scratch.join("initramfs-tree"),
        base,
        mtime,
    };
    std::fs::create_dir_all(&w.tree).op("creating", &w.tree)?;
    progress.step("rebuilding initramfs with system extensions...");
    let out_path = scratch.join("initramfs.xz");
    detail(
        progress,
        &format!("copying {} to {}", w.base.display(), out_path.display()),
    );
    let loaded = unpack_all(&w)?;
    let modules_layer = validate_all(&w, &loaded)?;
    let records = build_images(&w, &loaded, modules_layer.as_ref())?;
    write_initramfs(&w, &out_path)?;
    progress.step("initramfs ready");
    Ok(Some(Rebuilt {
        initramfs: out_path,
        extensions: records,
    }))
}

/// Unpacks the profile's extensions, then the embedded configuration as the last one,
/// into directories named by index, and reads their manifests in byte-sorted directory
/// order (`0, 1, 10, 2, ...`, as Talos lists them).
fn unpack_all(w: &Work) -> Result<Vec<Loaded>> {
    let profile = w.profile;
    let config = &profile.customization.embedded_machine_configuration;
    let mut exts = profile.input.system_extensions.clone();
    let mut sources: Vec<String> = exts.iter().map(source_name).collect();
    if !config.is_empty() {
        let tar = w.scratch.join(embedded::TARBALL);
        embedded::write_tarball(config.as_bytes(), &tar)?;
        exts.push(ContainerAsset {
            tarball_path: tar.to_string_lossy().into_owned(),
            ..Default::default()
        });
        sources.push(embedded::SOURCE.to_string());
    }
    for (j, e) in exts.iter().enumerate() {
        let dest = w.unpacked.join(j.to_string());
        unpack_one(profile, e, &sources[j], &dest, w.progress)?;
    }
    let mut names: Vec<String> = (0..exts.len()).map(|j| j.to_string()).collect();
    names.sort();
    let mut loaded = Vec::new();
    for dir in names {
        let j: usize = dir.parse().expect("an index");
        let source = sources[j].clone();
        let m = manifest::load(&w.unpacked.join(&dir)).map_err(|cause| {
            Error::invalid(format!(
                "error listing extensions: error loading extension {source}: {cause}"
            ))
        })?;
        loaded.push(Loaded {
            dir,
            metadata: m.metadata,
            source,
        });
    }
    detail(w.progress, "discovered system extensions:");
    let mut rows = vec![["NAME", "VERSION", "AUTHOR"]];
    rows.extend(loaded.iter().map(|l| {
        let m = &l.metadata;
        [m.name.as_str(), m.version.as_str(), m.author.as_str()]
    }));
    for line in table(&rows) {
        detail(w.progress, &line);
    }
    Ok(loaded)
}

/// Checks each extension's Talos version constraint and, when some carry kernel
/// modules, runs depmod over the base initramfs's modules and theirs.
fn validate_all(w: &Work, loaded: &[Loaded]) -> Result<Option<modules::ModulesLayer>> {
    detail(w.progress, "validating system extensions");
    let talos = w.profile.quirks().version();
    let modules = modules_dir(w.profile);
    let mut module_exts = Vec::new();
    for l in loaded {
        let m = &l.metadata;
        if let Some(v) = talos {
            manifest::check_constraint(&m.compatibility.talos.version, v).map_err(|cause| {
                Error::invalid(format!("error validating extension {:?}: {cause}", m.name))
            })?;
        }
        let rootfs = w.unpacked.join(&l.dir).join("rootfs");
        if modules::carries_modules(&rootfs, modules) {
            module_exts.push((m.name.clone(), rootfs));
        }
    }
    if module_exts.is_empty() {
        return Ok(None);
    }
    detail(
        w.progress,
        "preparing to run depmod to generate kernel modules dependency tree",
    );
    let on_depmod = || {
        detail(
            w.progress,
            "running depmod to generate kernel modules dependency tree",
        )
    };
    let layer = modules::build_layer(&w.base, w.scratch, modules, &module_exts, &on_depmod)?;
    Ok(Some(layer))
}

/// Moves microcode and firmware into the tree, compresses each extension's rootfs (and
/// the depmod layer) into `<dir>.sqsh`, and writes `extensions.yaml`.
fn build_images(
    w: &Work,
    loaded: &[Loaded],
    modules_layer: Option<&modules::ModulesLayer>,
) -> Result<Vec<ExtensionRecord>> {
    use crate::formats::squashfs::{self, Compression};
    detail(w.progress, "compressing system extensions");
    let fw = firmware_dir(w.profile);
    let compression = if uses_xz(w.profile) {
        Compression::Xz
    } else {
        Compression::Zstd18
    };
    let mut records = Vec::new();
    for l in loaded {
        let rootfs = w.unpacked.join(&l.dir).join("rootfs");
        let wrap = |e: Error| {
            let name = &l.metadata.name;
            Error::invalid(format!(
                "error compressing extension {name:?}: {}",
                plain(&e)
            ))
        };
        microcode(&rootfs, fw, &w.tree).map_err(wrap)?;
        move_firmware(&rootfs, fw, &w.tree).map_err(wrap)?;
        let image = format!("{}.sqsh", l.dir);
        let sqsh = w.tree.join(&image);
        let xattrs = unpack::squashfs_xattrs(&rootfs, w.profile).map_err(wrap)?;
        squashfs::write_tree(&rootfs, &sqsh, w.mtime, compression, &xattrs).map_err(wrap)?;
        let (_, digest) = crate::io::sha256_file(&sqsh)?;
        records.push(ExtensionRecord {
            image,
            name: l.metadata.name.clone(),
            version: l.metadata.version.clone(),
            author: l.metadata.author.clone(),
            source: l.source.clone(),
            digest: format!("sha256:{digest}"),
        });
    }
    let modules_meta = match modules_layer {
        Some(l) => {
            let sqsh = w.tree.join(modules::IMAGE);
            let none = squashfs::Xattrs::new();
            squashfs::write_tree(&l.rootfs, &sqsh, w.mtime, compression, &none)?;
            Some(modules::metadata(&l.kver))
        }
        None => None,
    };
    write_extensions_yaml(w, loaded, modules_meta.as_ref())?;
    Ok(records)
}

/// `extensions.yaml`: the extensions in directory order, then the depmod layer.
fn write_extensions_yaml(w: &Work, loaded: &[Loaded], modules: Option<&Metadata>) -> Result<()> {
    let mut layers: Vec<Layer> = loaded
        .iter()
        .map(|l| Layer {
            image: format!("{}.sqsh", l.dir),
            metadata: &l.metadata,
        })
        .collect();
    layers.extend(modules.map(|m| Layer {
        image: modules::IMAGE.into(),
        metadata: m,
    }));
    let yaml = w.tree.join("extensions.yaml");
    std::fs::write(&yaml, manifest::extensions_yaml(&layers)).writing(&yaml)?;
    std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o644)).at(&yaml)?;
    Ok(())
}

/// Writes `[early cpio] + [base initramfs] + [compressed cpio of the tree]` to
/// `out_path`: the listing is pre-order, byte-sorted, `kernel` and below uncompressed
/// first.
fn write_initramfs(w: &Work, out_path: &Path) -> Result<()> {
    let mut listing = Vec::new();
    crate::io::walk(&w.tree, &w.tree, &mut listing)?;
    let (early, rest): (Vec<_>, Vec<_>) =
        listing.into_iter().partition(|p| p.starts_with("kernel"));
    let (tree, mtime) = (&w.tree, w.mtime);
    let mut out = crate::io::AtomicFile::create(out_path)?;
    {
        let mut wr = BufWriter::new(out.file());
        if !early.is_empty() {
            detail(w.progress, "creating uncompressed initramfs archive");
            write_cpio(tree, &early, mtime, &mut wr).writing(out_path)?;
        }
        let mut from = File::open(&w.base).at(&w.base)?;
        std::io::copy(&mut from, &mut wr).writing(out_path)?;
        detail(
            w.progress,
            "creating system extensions initramfs archive and compressing it",
        );
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        if uses_xz(w.profile) {
            let streams = StreamWriter::new(&mut wr, Xz { threads });
            write_cpio_chunks(tree, &rest, mtime, streams)
                .and_then(|s| s.finish())
                .writing(out_path)?;
        } else {
            let zstd = Zstd {
                level: ZSTD_LEVEL,
                threads,
            };
            let frames = FrameWriter::new(&mut wr, zstd);
            write_cpio_chunks(tree, &rest, mtime, frames)
                .and_then(|f| f.finish())
                .writing(out_path)?;
        }
        wr.flush().writing(out_path)?;
    }
    out.commit()?;
    Ok(())
}

/// An error's message without the category prefix (for wrapping).
fn plain(e: &Error) -> String {
    match e {
        Error::Invalid(m) | Error::Unsupported(m) | Error::Dependency(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Cuts the microcode of `rootfs` into `tree/kernel/x86/microcode/` (appending).
fn microcode(rootfs: &Path, fw: &str, tree: &Path) -> Result<()> {
    /// (directory under the firmware dir, which names in it are microcode, the blob).
    type Job = (&'static str, fn(&str) -> bool, &'static str);
    let jobs: [Job; 2] = [
        ("intel-ucode", |_| true, "GenuineIntel.bin"),
        (
            "amd-ucode",
            |n| n.starts_with("microcode_amd") && n.ends_with(".bin"),
            "AuthenticAMD.bin",
        ),
    ];
    for (sub, matches, blob) in jobs {
        let dir = rootfs.join(fw).join(sub);
        if !dir.is_dir() {
            continue;
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .at(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .at(&dir)?;
        names.retain(|n| matches(n));
        names.sort();
        if names.is_empty() {
            continue;
        }
        let target_dir = tree.join("kernel/x86/microcode");
        for d in ["kernel", "kernel/x86", "kernel/x86/microcode"] {
            let p = tree.join(d);
            if !p.is_dir() {
                std::fs::create_dir(&p).op("creating", &p)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).at(&p)?;
            }
        }
        let target = target_dir.join(blob);
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target)
            .op("creating", &target)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).at(&target)?;
        for n in names {
            let src = dir.join(&n);
            if std::fs::metadata(&src).at(&src)?.is_dir() {
                return Err(Error::invalid(format!(
                    "microcode /{fw}/{sub}/{n} is a directory, not a file"
                )));
            }
            let mut from = File::open(&src).at(&src)?;
            std::io::copy(&mut from, &mut out).writing(&target)?;
            std::fs::remove_file(&src).op("removing", &src)?;
        }
    }
    Ok(())
}

/// Moves `rootfs/<fw>` into `tree/<fw>`: symlinks followed, files overwritten, modes
/// kept minus the group/other write bits, the emptied source removed.
fn move_firmware(rootfs: &Path, fw: &str, tree: &Path) -> Result<()> {
    let src = rootfs.join(fw);
    if std::fs::symlink_metadata(&src).is_err() {
        return Ok(());
    }
    let mode = std::fs::metadata(&src).at(&src)?.permissions().mode() & 0o755;
    let mut p = tree.to_path_buf();
    for c in Path::new(fw).components() {
        p.push(c);
        if !p.is_dir() {
            std::fs::create_dir(&p).op("creating", &p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).at(&p)?;
        }
    }
    copy_tree(&src, &tree.join(fw))?;
    std::fs::remove_dir_all(&src).op("removing", &src)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .at(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .at(src)?;
    names.sort();
    for n in names {
        let (s, d) = (src.join(&n), dst.join(&n));
        let meta = std::fs::metadata(&s).at(&s)?;
        let mode = meta.permissions().mode() & 0o755;
        if meta.is_dir() {
            if !d.is_dir() {
                std::fs::create_dir(&d).op("creating", &d)?;
            }
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).at(&d)?;
            copy_tree(&s, &d)?;
        } else {
            let mut from = File::open(&s).at(&s)?;
            let mut to = File::create(&d).op("creating", &d)?;
            std::io::copy(&mut from, &mut to).writing(&d)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).at(&d)?;
        }
    }
    Ok(())
}

/// One entry of a cpio listing, as found on disk.
struct Item {
    name: String,
    path: PathBuf,
    kind: ItemKind,
}

enum ItemKind {
    Dir { perm: u32, nlink: u32 },
    Symlink { target: String },
    File { perm: u32, len: u64 },
}

impl Item {
    /// Its bytes in the archive.
    fn len(&self) -> u64 {
        let data = match &self.kind {
            ItemKind::Dir { .. } => 0,
            ItemKind::Symlink { target } => target.len() as u64,
            ItemKind::File { len, .. } => *len,
        };
        cpio::entry_len(&self.name, data)
    }

    /// A squashfs image at the top of the tree: already compressed, stored as is.
    fn is_image(&self) -> bool {
        matches!(self.kind, ItemKind::File { .. })
            && !self.name.contains('/')
            && self.name.ends_with(".sqsh")
    }
}

/// Reads the listing's metadata from `root` (once: the frame sizes are planned from it).
fn scan(root: &Path, entries: &[PathBuf]) -> std::io::Result<Vec<Item>> {
    entries
        .iter()
        .map(|rel| {
            let path = root.join(rel);
            let name = rel.to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            let perm = meta.permissions().mode() & 0o7777;
            let kind = if meta.is_dir() {
                let subdirs = std::fs::read_dir(&path)?
                    .filter(|e| {
                        e.as_ref()
                            .is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    })
                    .count() as u32;
                ItemKind::Dir {
                    perm,
                    nlink: 2 + subdirs,
                }
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                ItemKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                }
            } else {
                ItemKind::File {
                    perm,
                    len: meta.len(),
                }
            };
            Ok(Item { name, path, kind })
        })
        .collect()
}

fn write_item<W: Write>(w: &mut CpioWriter<W>, item: &Item, mtime: u32) -> std::io::Result<()> {
    match &item.kind {
        ItemKind::Dir { perm, nlink } => w.dir(&item.name, *perm, *nlink, mtime),
        ItemKind::Symlink { target } => w.symlink(&item.name, target, mtime),
        ItemKind::File { perm, len } => {
            let mut f = File::open(&item.path)?;
            w.file(&item.name, *perm, mtime, *len, &mut f as &mut dyn Read)
        }
    }
}

/// One newc cpio of `entries` (relative to `root`) into `out`.
fn write_cpio(
    root: &Path,
    entries: &[PathBuf],
    mtime: u32,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut w = CpioWriter::new(out);
    for item in scan(root, entries)? {
        write_item(&mut w, &item, mtime)?;
    }
    w.finish()?;
    Ok(())
}

/// The zstd level of the compressed frames, as Talos's `zstd -18`.
const ZSTD_LEVEL: i32 = 18;

/// One newc cpio of `entries` as a sequence of compressed chunks (zstd frames,
/// [`crate::formats::zstd_frames`], or xz streams, [`crate::formats::xz_streams`]):
/// each squashfs image one stored chunk holding its whole entry (header, name, data,
/// padding); each run of other entries, and the trailer with the final padding, one
/// compressed chunk. Chunks begin and end on entry boundaries, which the kernel needs:
/// `unpack_to_rootfs` (`init/initramfs.c`) decompresses one frame or stream per call,
/// then requires its cpio parser between entries and continues with the next one at
/// the consumed offset, counting the 4-byte alignment from the chunk's start.
/// Decompressed, the stream is the same cpio as [`write_cpio`] writes. Returns `out`
/// with its last chunk still open.
fn write_cpio_chunks<W: Write, C: Codec>(
    root: &Path,
    entries: &[PathBuf],
    mtime: u32,
    out: ChunkWriter<W, C>,
) -> std::io::Result<ChunkWriter<W, C>> {
    let items = scan(root, entries)?;
    // Chunks as (first item, items, stored, bytes); the trailer joins the last
    // compressed run (or is one of its own after an image).
    let mut chunks: Vec<(usize, usize, bool, u64)> = Vec::new();
    let mut offset = 0u64;
    for (i, item) in items.iter().enumerate() {
        let len = item.len();
        let stored = item.is_image();
        match chunks.last_mut() {
            Some((_, n, false, size)) if !stored => {
                *n += 1;
                *size += len;
            }
            _ => chunks.push((i, 1, stored, len)),
        }
        offset += len;
    }
    let trailer = cpio::trailer_len(offset);
    match chunks.last_mut() {
        Some((_, _, false, size)) => *size += trailer,
        _ => chunks.push((items.len(), 0, false, trailer)),
    }
    let mut w = CpioWriter::new(out);
    for &(first, n, stored, size) in &chunks {
        let chunk = if stored {
            Chunk::Stored
        } else {
            Chunk::Compressed
        };
        w.get_mut().begin(chunk, size)?;
        for item in &items[first..first + n] {
            write_item(&mut w, item, mtime)?;
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decompressed, the frames are the single cpio [`write_cpio`] writes, wherever the
    /// images sit in the listing (first, between other entries, last).
    #[test]
    fn frames_hold_the_same_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let files: [(&str, usize); 6] = [
            ("0.sqsh", 300_001),
            ("1.sqsh", 4096),
            ("extensions.yaml", 77),
            ("lib/firmware/a", 5000),
            ("modules.dep.sqsh", 131_072),
            ("usr/x", 3),
        ];
        for (name, len) in files {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + i / 7) as u8).collect();
            std::fs::write(&p, bytes).unwrap();
        }
        std::os::unix::fs::symlink("a", root.join("lib/firmware/b")).unwrap();
        let mut listing = Vec::new();
        crate::io::walk(root, root, &mut listing).unwrap();
        for entries in [&listing[..], &listing[1..], &listing[..listing.len() - 2]] {
            let mut single = Vec::new();
            write_cpio(root, entries, 7, &mut single).unwrap();
            let framed = write_cpio_chunks(
                root,
                entries,
                7,
                FrameWriter::new(
                    Vec::new(),
                    Zstd {
                        level: ZSTD_LEVEL,
                        threads: 2,
                    },
                ),
            )
            .and_then(|f| f.finish())
            .unwrap();
            assert_eq!(zstd::stream::decode_all(&framed[..]).unwrap(), single);
            let xz = write_cpio_chunks(
                root,
                entries,
                7,
                StreamWriter::new(Vec::new(), Xz { threads: 2 }),
            )
            .and_then(|s| s.finish())
            .unwrap();
            let mut plain = Vec::new();
            xz2::read::XzDecoder::new_multi_decoder(&xz[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, single);
            let frames = crate::formats::zstd_frames::frames(&framed).unwrap();
            let images = entries
                .iter()
                .filter(|p| p.to_string_lossy().ends_with(".sqsh"))
                .count();
            assert_eq!(frames.iter().filter(|f| f.stored).count(), images);
        }
    }
}
