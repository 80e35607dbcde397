//! The squashfs writer: a directory tree in, an image laid out as mksquashfs 4.5.1
//! lays it out with `-all-root -noappend` and the default options (fragments,
//! duplicate detection, sparse blocks, NFS export table, 4 KiB padding).
//!
//! Order of the image (squashfs-tools `mksquashfs.c`, `write_filesystem_tables`):
//! superblock, compressor options, data blocks and fragment blocks as the files are
//! met, inode table, directory table, fragment table, export (inode lookup) table,
//! id table, xattr table, zero padding to 4 KiB.
//!
//! Three passes over the tree, as mksquashfs's directory scans do it:
//! 1. the scan: every directory's entries sorted by name bytes (`strcmp`), hard links
//!    (non-directories sharing device and inode) counted and kept as one inode;
//! 2. numbering: inode numbers in depth-first pre-order of the sorted tree, from 1,
//!    the root last;
//! 3. data ([`super::data`]), then metadata, in depth-first order of the sorted tree.
//!    Inodes are written as they are met, a directory's after its entries, with the
//!    extended inode types where mksquashfs uses them (hard links, sparse files, files
//!    or offsets past 4 GiB, xattrs, directories of more than 256 entries or 8 KiB of
//!    names). Directory listings start a new header every 256 entries, when the inode
//!    block changes or the inode number is out of the header's i16 range, and add an
//!    index entry every 8 KiB.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::data::{FileData, Placed, place_data};
use super::meta::{Codec, Compressor, METADATA_SIZE, MetaTable, indexed_table};
use super::xattr::XattrTable;
use crate::error::{Error, IoContext, Result};
use crate::report::Bar;

const MAGIC: u32 = 0x7371_7368;
const SUPERBLOCK_SIZE: u64 = 96;
pub(super) const INVALID_FRAG: u32 = 0xffff_ffff;
const INVALID_XATTR: u32 = 0xffff_ffff;
const INVALID_TABLE: u64 = u64::MAX;

// Inode types (squashfs_fs.h).
const DIR: u16 = 1;
const REG: u16 = 2;
const SYMLINK: u16 = 3;
const BLKDEV: u16 = 4;
const CHRDEV: u16 = 5;
const FIFO: u16 = 6;
const SOCKET: u16 = 7;
const LDIR: u16 = 8;
const LREG: u16 = 9;
const EXTENDED: u16 = 7;

// Superblock flags.
const NOI: u16 = 1;
const NOD: u16 = 1 << 1;
const NOF: u16 = 1 << 3;
const DUPLICATES: u16 = 1 << 6;
const EXPORTABLE: u16 = 1 << 7;
const NOX: u16 = 1 << 8;
const COMP_OPT: u16 = 1 << 10;

/// What [`write`] needs besides the tree.
pub struct Settings<'a> {
    /// The image's final path, for messages.
    pub dest: &'a Path,
    pub codec: Codec,
    /// The superblock's compression id.
    pub compression_id: u16,
    /// Compressor options stored after the superblock (none for defaults).
    pub options: Option<Vec<u8>>,
    pub block_size: u32,
    /// Every inode's mtime and the superblock's mkfs time.
    pub epoch: u32,
    /// xattrs by path relative to the tree (empty path for the root).
    pub xattrs: &'a BTreeMap<PathBuf, Vec<(String, Vec<u8>)>>,
    /// Compressing threads.
    pub threads: usize,
    pub bar: Bar,
}

pub(super) enum Kind {
    Dir {
        children: Vec<usize>,
        subdirs: u32,
        long: bool,
    },
    File {
        size: u64,
        allocated: u64,
    },
    Symlink(Vec<u8>),
    Dev {
        char: bool,
        rdev: u64,
    },
    Fifo,
    Socket,
}

pub(super) struct Node {
    /// Path relative to the tree.
    pub(super) rel: PathBuf,
    pub(super) kind: Kind,
    mode: u16,
    /// For a later hard link: the node holding the inode.
    pub(super) link: Option<usize>,
    nlink: u32,
    number: u32,
    /// Inode reference once written.
    iref: u64,
}

impl Node {
    fn name(&self) -> &[u8] {
        self.rel
            .file_name()
            .map(|n| n.as_bytes())
            .unwrap_or_default()
    }
    fn base_type(&self) -> u16 {
        match self.kind {
            Kind::Dir { .. } => DIR,
            Kind::File { .. } => REG,
            Kind::Symlink(_) => SYMLINK,
            Kind::Dev { char: false, .. } => BLKDEV,
            Kind::Dev { char: true, .. } => CHRDEV,
            Kind::Fifo => FIFO,
            Kind::Socket => SOCKET,
        }
    }
}

pub(super) struct Tree {
    pub(super) root: PathBuf,
    /// Where the image goes, for messages.
    pub(super) dest: PathBuf,
    pub(super) nodes: Vec<Node>,
}

fn mode_bits(m: &std::fs::Metadata) -> u16 {
    (m.mode() & 0o7777) as u16
}

impl Tree {
    fn scan(root: &Path, dest: &Path) -> Result<Tree> {
        let meta = std::fs::metadata(root).at(root)?;
        if !meta.is_dir() {
            return Err(Error::invalid(format!(
                "{}: not a directory to make a squashfs image of",
                root.display()
            )));
        }
        let mut t = Tree {
            root: root.to_path_buf(),
            dest: PathBuf::new(),
            nodes: vec![Node {
                rel: PathBuf::new(),
                kind: Kind::Dir {
                    children: Vec::new(),
                    subdirs: 0,
                    long: false,
                },
                mode: mode_bits(&meta),
                link: None,
                nlink: 1,
                number: 0,
                iref: 0,
            }],
        };
        t.dest = dest.to_path_buf();
        let mut links = HashMap::new();
        t.scan_dir(0, &mut links)?;
        Ok(t)
    }

    fn scan_dir(&mut self, dir: usize, links: &mut HashMap<(u64, u64), usize>) -> Result<()> {
        let path = self.root.join(&self.nodes[dir].rel);
        let mut names = Vec::new();
        for e in std::fs::read_dir(&path).op("reading", &path)? {
            names.push(e.op("reading", &path)?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut children = Vec::with_capacity(names.len());
        let mut subdirs = 0;
        let mut name_bytes = 0usize;
        for name in names {
            let rel = self.nodes[dir].rel.join(&name);
            let full = self.root.join(&rel);
            let m = std::fs::symlink_metadata(&full).at(&full)?;
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                subdirs += 1;
                Kind::Dir {
                    children: Vec::new(),
                    subdirs: 0,
                    long: false,
                }
            } else if ft.is_file() {
                Kind::File {
                    size: m.len(),
                    allocated: m.blocks() * 512,
                }
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&full).at(&full)?;
                Kind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else if ft.is_char_device() || ft.is_block_device() {
                Kind::Dev {
                    char: ft.is_char_device(),
                    rdev: m.rdev(),
                }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_socket() {
                Kind::Socket
            } else {
                return Err(Error::format(&full, "not a file type squashfs stores"));
            };
            if name.len() > 256 {
                return Err(Error::format(&full, "name longer than 256 bytes"));
            }
            name_bytes += name.len() + 8;
            let id = self.nodes.len();
            let mut link = None;
            if !ft.is_dir() && m.nlink() > 1 {
                match links.get(&(m.dev(), m.ino())) {
                    Some(&first) => {
                        link = Some(first);
                        self.nodes[first].nlink += 1;
                    }
                    None => {
                        links.insert((m.dev(), m.ino()), id);
                    }
                }
            }
            self.nodes.push(Node {
                rel,
                kind,
                mode: mode_bits(&m),
                link,
                nlink: 1,
                number: 0,
                iref: 0,
            });
            children.push(id);
            if ft.is_dir() {
                self.scan_dir(id, links)?;
            }
        }
        let count = children.len();
        self.nodes[dir].kind = Kind::Dir {
            children,
            subdirs,
            long: !(count < 257 && name_bytes < METADATA_SIZE),
        };
        Ok(())
    }

    fn children(&self, dir: usize) -> &[usize] {
        match &self.nodes[dir].kind {
            Kind::Dir { children, .. } => children,
            _ => &[],
        }
    }

    /// Inode numbers: depth-first pre-order from 1, the root last. Returns the count.
    fn number(&mut self) -> u32 {
        let mut next = 1;
        self.number_dir(0, &mut next);
        self.nodes[0].number = next;
        next
    }

    fn number_dir(&mut self, dir: usize, next: &mut u32) {
        let children = self.children(dir).to_vec();
        for c in children {
            if self.nodes[c].link.is_none() {
                self.nodes[c].number = *next;
                *next += 1;
            }
            if matches!(self.nodes[c].kind, Kind::Dir { .. }) {
                self.number_dir(c, next);
            }
        }
    }

    /// Regular files holding their own inode, in the order their data is written.
    pub(super) fn files_in_order(&self, dir: usize, out: &mut Vec<usize>) {
        for &c in self.children(dir) {
            match self.nodes[c].kind {
                Kind::File { .. } if self.nodes[c].link.is_none() => out.push(c),
                Kind::Dir { .. } => self.files_in_order(c, out),
                _ => {}
            }
        }
    }
}

// ---- the metadata pass ----

/// One directory's listing being built (mksquashfs's `struct directory`).
struct Listing {
    buf: Vec<u8>,
    count: u32,
    header: Option<usize>,
    start_block: u32,
    number: u32,
    index_from: usize,
    /// (offset in the listing, name) of each index entry.
    index: Vec<(u32, Vec<u8>)>,
}

impl Listing {
    fn new() -> Self {
        Listing {
            buf: Vec::new(),
            count: 256,
            header: None,
            start_block: 0,
            number: 0,
            index_from: 0,
            index: Vec::new(),
        }
    }

    fn seal(&mut self) {
        if let Some(h) = self.header {
            self.buf[h..h + 4].copy_from_slice(&(self.count - 1).to_le_bytes());
            self.buf[h + 4..h + 8].copy_from_slice(&self.start_block.to_le_bytes());
            self.buf[h + 8..h + 12].copy_from_slice(&self.number.to_le_bytes());
        }
    }

    fn add(&mut self, iref: u64, number: u32, name: &[u8], ty: u16) {
        let start_block = (iref >> 16) as u32;
        let offset = (iref & 0xffff) as u16;
        let p = self.buf.len();
        let too_far = p + 8 + name.len() - self.index_from > METADATA_SIZE;
        let delta = number as i64 - self.number as i64;
        if self.count == 256
            || start_block != self.start_block
            || (self.header.is_some() && too_far)
            || !(-32768..=32767).contains(&delta)
        {
            if self.header.is_some() {
                if too_far {
                    self.index.push((p as u32, name.to_vec()));
                    self.index_from = p;
                }
                self.seal();
            }
            self.header = Some(p);
            self.start_block = start_block;
            self.count = 0;
            self.number = number;
            self.buf.extend_from_slice(&[0; 12]);
        }
        let delta = (number as i64 - self.number as i64) as i16;
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf.extend_from_slice(&delta.to_le_bytes());
        self.buf.extend_from_slice(&ty.to_le_bytes());
        self.buf
            .extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
        self.buf.extend_from_slice(name);
        self.count += 1;
    }
}

struct Meta<'a> {
    c: Compressor,
    inodes: MetaTable,
    dirs: MetaTable,
    xattrs: XattrTable,
    epoch: u32,
    inode_count: u32,
    files: HashMap<usize, FileData>,
    wanted: &'a BTreeMap<PathBuf, Vec<(String, Vec<u8>)>>,
}

impl Meta<'_> {
    fn base(&self, ty: u16, node: &Node) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&node.mode.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // uid index (-all-root: id 0)
        b.extend_from_slice(&0u16.to_le_bytes()); // gid index
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(&node.number.to_le_bytes());
        b
    }

    fn xattr(&mut self, node: &Node) -> Result<u32> {
        match self.wanted.get(&node.rel) {
            Some(list) if !list.is_empty() => self.xattrs.id(&mut self.c, list),
            _ => Ok(INVALID_XATTR),
        }
    }

    fn put(&mut self, tree: &mut Tree, id: usize, bytes: &[u8]) -> Result<u64> {
        let iref = self.inodes.reference();
        self.inodes.push(&mut self.c, bytes)?;
        tree.nodes[id].iref = iref;
        self.inode_count += 1;
        Ok(iref)
    }

    fn leaf(&mut self, tree: &mut Tree, id: usize) -> Result<u64> {
        let xattr = self.xattr(&tree.nodes[id])?;
        let has_x = xattr != INVALID_XATTR;
        let node = &tree.nodes[id];
        let u32le = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
        let bytes = match &node.kind {
            Kind::File { .. } => {
                let d = self.files.get(&id).cloned().expect("every file placed");
                let long = node.nlink > 1
                    || d.size >= 1 << 32
                    || d.start >= 1 << 32
                    || d.sparse != 0
                    || has_x;
                if long {
                    let mut b = self.base(LREG, node);
                    b.extend_from_slice(&d.start.to_le_bytes());
                    b.extend_from_slice(&d.size.to_le_bytes());
                    let sparse = if d.sparse != 0 && d.sparse >= d.size {
                        d.size - 1
                    } else {
                        d.sparse
                    };
                    b.extend_from_slice(&sparse.to_le_bytes());
                    u32le(&mut b, node.nlink);
                    u32le(&mut b, d.fragment.0);
                    u32le(&mut b, d.fragment.1);
                    u32le(&mut b, xattr);
                    for &s in d.blocks.iter() {
                        u32le(&mut b, s);
                    }
                    b
                } else {
                    let mut b = self.base(REG, node);
                    u32le(&mut b, d.start as u32);
                    u32le(&mut b, d.fragment.0);
                    u32le(&mut b, d.fragment.1);
                    u32le(&mut b, d.size as u32);
                    for &s in d.blocks.iter() {
                        u32le(&mut b, s);
                    }
                    b
                }
            }
            Kind::Symlink(target) => {
                let mut b = self.base(if has_x { SYMLINK + EXTENDED } else { SYMLINK }, node);
                u32le(&mut b, node.nlink);
                u32le(&mut b, target.len() as u32);
                b.extend_from_slice(target);
                if has_x {
                    u32le(&mut b, xattr);
                }
                b
            }
            Kind::Dev { char, rdev } => {
                let ty = if *char { CHRDEV } else { BLKDEV };
                let mut b = self.base(if has_x { ty + EXTENDED } else { ty }, node);
                let (major, minor) = (libc::major(*rdev) & 0xfff, libc::minor(*rdev) & 0xfffff);
                u32le(&mut b, node.nlink);
                u32le(
                    &mut b,
                    (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12),
                );
                if has_x {
                    u32le(&mut b, xattr);
                }
                b
            }
            Kind::Fifo | Kind::Socket => {
                let ty = node.base_type();
                let mut b = self.base(if has_x { ty + EXTENDED } else { ty }, node);
                u32le(&mut b, node.nlink);
                if has_x {
                    u32le(&mut b, xattr);
                }
                b
            }
            Kind::Dir { .. } => unreachable!("directories are written by dir()"),
        };
        self.put(tree, id, &bytes)
    }

    /// Writes the inodes below `id`, its listing and its inode.
    fn dir(&mut self, tree: &mut Tree, id: usize, parent: u32) -> Result<u64> {
        let children = tree.children(id).to_vec();
        let number = tree.nodes[id].number;
        let mut l = Listing::new();
        for c in children {
            let (iref, ty, num) = match tree.nodes[c].link {
                Some(first) => {
                    let f = &tree.nodes[first];
                    (f.iref, f.base_type(), f.number)
                }
                None => {
                    let iref = if matches!(tree.nodes[c].kind, Kind::Dir { .. }) {
                        self.dir(tree, c, number)?
                    } else {
                        self.leaf(tree, c)?
                    };
                    (iref, tree.nodes[c].base_type(), tree.nodes[c].number)
                }
            };
            let name = tree.nodes[c].name().to_vec();
            l.add(iref, num, &name, ty);
        }
        l.seal();
        let size = l.buf.len();
        let (block, offset) = self.dirs.position();
        let stored_before = self.dirs.blocks();
        self.dirs.push(&mut self.c, &l.buf)?;
        let index: Vec<(u32, u64, Vec<u8>)> = l
            .index
            .into_iter()
            .map(|(at, name)| {
                let k = (offset + at as usize) / METADATA_SIZE;
                let start = if k == 0 {
                    block
                } else {
                    self.dirs.start_after(stored_before + k)
                };
                (at, start, name)
            })
            .collect();

        let xattr = self.xattr(&tree.nodes[id])?;
        let node = &tree.nodes[id];
        let Kind::Dir { subdirs, long, .. } = node.kind else {
            unreachable!()
        };
        let nlink = subdirs + 2;
        let file_size = size as u64 + 3;
        let mut b;
        if long || xattr != INVALID_XATTR {
            if file_size >= 1 << 32 {
                return Err(Error::format(
                    tree.root.join(&node.rel),
                    "directory listing over 4 GiB",
                ));
            }
            b = self.base(LDIR, node);
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&(file_size as u32).to_le_bytes());
            b.extend_from_slice(&(block as u32).to_le_bytes());
            b.extend_from_slice(&parent.to_le_bytes());
            b.extend_from_slice(&(index.len() as u16).to_le_bytes());
            b.extend_from_slice(&(offset as u16).to_le_bytes());
            b.extend_from_slice(&xattr.to_le_bytes());
            for (at, start, name) in &index {
                b.extend_from_slice(&at.to_le_bytes());
                b.extend_from_slice(&(*start as u32).to_le_bytes());
                b.extend_from_slice(&(name.len() as u32 - 1).to_le_bytes());
                b.extend_from_slice(name);
            }
        } else {
            b = self.base(DIR, node);
            b.extend_from_slice(&(block as u32).to_le_bytes());
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&(file_size as u16).to_le_bytes());
            b.extend_from_slice(&(offset as u16).to_le_bytes());
            b.extend_from_slice(&parent.to_le_bytes());
        }
        self.put(tree, id, &b)
    }
}

/// Writes the tree at `root` as a squashfs image into `out` (an empty file open for
/// writing).
pub fn write(root: &Path, out: File, s: &Settings) -> Result<()> {
    let mut tree = Tree::scan(root, s.dest)?;
    let inodes = tree.number();
    let mut total = 0;
    for n in &tree.nodes {
        if let (Kind::File { size, .. }, None) = (&n.kind, n.link) {
            total += size;
        }
    }
    s.bar.set_total(total);

    let mut head = Vec::new();
    if let Some(opts) = &s.options {
        head.extend_from_slice(&(opts.len() as u16 | super::meta::META_UNCOMPRESSED).to_le_bytes());
        head.extend_from_slice(opts);
    }
    let data_start = SUPERBLOCK_SIZE + head.len() as u64;
    let (placed, small) = place_data(
        &tree,
        out,
        data_start,
        s.codec,
        s.block_size,
        s.threads,
        &s.bar,
    )?;
    let Placed {
        mut out,
        pos,
        mut files,
        fragments,
    } = placed;
    files.extend(small);

    let mut m = Meta {
        c: Compressor::new(s.codec)?,
        inodes: MetaTable::new(),
        dirs: MetaTable::new(),
        xattrs: XattrTable::new(),
        epoch: s.epoch,
        inode_count: 0,
        files,
        wanted: s.xattrs,
    };
    let root_ref = m.dir(&mut tree, 0, inodes + 1)?;
    debug_assert_eq!(m.inode_count, inodes);
    let Meta {
        mut c,
        inodes: itab,
        dirs,
        xattrs,
        inode_count,
        ..
    } = m;

    let mut tables = Vec::new();
    let inode_table_start = pos;
    tables.extend_from_slice(&itab.finish(&mut c)?);
    let directory_table_start = pos + tables.len() as u64;
    tables.extend_from_slice(&dirs.finish(&mut c)?);

    let mut frag_bytes = Vec::with_capacity(fragments.len() * 16);
    for (start, size) in &fragments {
        frag_bytes.extend_from_slice(&start.to_le_bytes());
        frag_bytes.extend_from_slice(&size.to_le_bytes());
        frag_bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    let (t, fragment_table_start) =
        indexed_table(&mut c, &frag_bytes, &[], pos + tables.len() as u64)?;
    tables.extend_from_slice(&t);

    let mut lookup = vec![0u8; inode_count as usize * 8];
    for n in &tree.nodes {
        if n.link.is_none() {
            let i = (n.number - 1) as usize * 8;
            lookup[i..i + 8].copy_from_slice(&n.iref.to_le_bytes());
        }
    }
    let (t, lookup_table_start) = indexed_table(&mut c, &lookup, &[], pos + tables.len() as u64)?;
    tables.extend_from_slice(&t);

    let (t, id_table_start) =
        indexed_table(&mut c, &0u32.to_le_bytes(), &[], pos + tables.len() as u64)?;
    tables.extend_from_slice(&t);

    let xattr_id_table_start = if xattrs.len() == 0 {
        INVALID_TABLE
    } else {
        let (t, start) = xattrs.finish(&mut c, pos + tables.len() as u64)?;
        tables.extend_from_slice(&t);
        start
    };
    let bytes_used = pos + tables.len() as u64;
    let padded = bytes_used.div_ceil(4096) * 4096;
    tables.resize(tables.len() + (padded - bytes_used) as usize, 0);

    let mut flags = DUPLICATES | EXPORTABLE;
    if s.options.is_some() {
        flags |= COMP_OPT;
    }
    if s.codec == Codec::Stored {
        flags |= NOI | NOD | NOF | NOX;
    }
    let mut sb = Vec::with_capacity(SUPERBLOCK_SIZE as usize);
    for v in [
        MAGIC,
        inode_count,
        s.epoch,
        s.block_size,
        fragments.len() as u32,
    ] {
        sb.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        s.compression_id,
        s.block_size.trailing_zeros() as u16,
        flags,
        1,
        4,
        0,
    ] {
        sb.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        root_ref,
        bytes_used,
        id_table_start,
        xattr_id_table_start,
        inode_table_start,
        directory_table_start,
        fragment_table_start,
        lookup_table_start,
    ] {
        sb.extend_from_slice(&v.to_le_bytes());
    }
    out.seek(SeekFrom::Start(pos)).writing(s.dest)?;
    out.write_all(&tables).writing(s.dest)?;
    out.set_len(padded).writing(s.dest)?;
    out.seek(SeekFrom::Start(0)).writing(s.dest)?;
    out.write_all(&sb).writing(s.dest)?;
    out.write_all(&head).writing(s.dest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_headers_hold_at_most_256_entries() {
        let mut l = Listing::new();
        for i in 0..600u32 {
            l.add(0, i + 1, format!("f{i:04}").as_bytes(), REG);
        }
        l.seal();
        // 3 headers (256 + 256 + 88), each 12 bytes, entries 8 + 5 bytes.
        assert_eq!(l.buf.len(), 3 * 12 + 600 * (8 + 5));
        assert_eq!(&l.buf[0..4], &255u32.to_le_bytes());
        let second = 12 + 256 * 13;
        assert_eq!(&l.buf[second..second + 4], &255u32.to_le_bytes());
        assert_eq!(&l.buf[second + 8..second + 12], &257u32.to_le_bytes());
    }
}
