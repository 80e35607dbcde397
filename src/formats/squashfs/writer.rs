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
//! 3. data, then metadata, in depth-first order of the sorted tree. A file shorter than
//!    a block goes whole into the open fragment (which is stored when the next one
//!    does not fit); a longer one is stored in blocks, its last block short, and an
//!    all-zero block is not stored at all (size 0 in the block list). A file whose
//!    stored blocks equal an earlier file's points at them; a fragment-sized file equal
//!    to an earlier one shares its fragment. Inodes are written as they are met, a
//!    directory's after its entries, with the extended inode types where mksquashfs
//!    uses them (hard links, sparse files, files or offsets past 4 GiB, xattrs,
//!    directories of more than 256 entries or 8 KiB of names). Directory listings
//!    start a new header every 256 entries, when the inode block changes or the inode
//!    number is out of the header's i16 range, and add an index entry every 8 KiB.
//!
//! Data blocks are compressed by a pool of threads in sequence-numbered jobs and
//! written in sequence by one writer thread, so the bytes do not depend on the thread
//! count. A bounded number of blocks is in flight; no file is held in memory beyond
//! one fragment (less than a block) and the in-flight blocks.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::meta::{BLOCK_UNCOMPRESSED, Codec, Compressor, METADATA_SIZE, MetaTable, indexed_table};
use super::xattr::XattrTable;
use crate::error::{Error, IoContext, Result};
use crate::report::Bar;

const MAGIC: u32 = 0x7371_7368;
const SUPERBLOCK_SIZE: u64 = 96;
const INVALID_FRAG: u32 = 0xffff_ffff;
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

enum Kind {
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

struct Node {
    /// Path relative to the tree.
    rel: PathBuf,
    kind: Kind,
    mode: u16,
    /// For a later hard link: the node holding the inode.
    link: Option<usize>,
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

/// Where a file's data went.
#[derive(Clone)]
struct FileData {
    size: u64,
    start: u64,
    blocks: Arc<Vec<u32>>,
    fragment: (u32, u32),
    sparse: u64,
}

struct Tree {
    root: PathBuf,
    /// Where the image goes, for messages.
    dest: PathBuf,
    nodes: Vec<Node>,
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
    fn files_in_order(&self, dir: usize, out: &mut Vec<usize>) {
        for &c in self.children(dir) {
            match self.nodes[c].kind {
                Kind::File { .. } if self.nodes[c].link.is_none() => out.push(c),
                Kind::Dir { .. } => self.files_in_order(c, out),
                _ => {}
            }
        }
    }
}

// ---- the data pass ----

enum Job {
    Block {
        file: usize,
        index: u32,
        data: Vec<u8>,
        last: bool,
        zero: Option<bool>,
    },
    Fragment {
        index: u32,
        data: Vec<u8>,
    },
}

enum Stored {
    /// An all-zero block, not stored.
    Sparse(usize),
    Raw(Vec<u8>),
    Compressed(Vec<u8>),
}

impl Stored {
    fn size_field(&self) -> u32 {
        match self {
            Stored::Sparse(_) => 0,
            Stored::Raw(d) => d.len() as u32 | BLOCK_UNCOMPRESSED,
            Stored::Compressed(d) => d.len() as u32,
        }
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Stored::Sparse(_) => &[],
            Stored::Raw(d) | Stored::Compressed(d) => d,
        }
    }
}

enum Done {
    Block {
        file: usize,
        index: u32,
        last: bool,
        zero: Option<bool>,
        stored: Stored,
    },
    Fragment {
        index: u32,
        stored: Stored,
    },
}

fn compress_job(c: &mut Compressor, job: Job, block_size: u32) -> Result<Done> {
    let store = |c: &mut Compressor, data: Vec<u8>| -> Result<Stored> {
        Ok(match c.compress(&data, block_size as usize, block_size)? {
            Some(z) => Stored::Compressed(z),
            None => Stored::Raw(data),
        })
    };
    Ok(match job {
        Job::Block {
            file,
            index,
            data,
            last,
            zero,
        } => {
            let stored = if data.iter().all(|&b| b == 0) {
                Stored::Sparse(data.len())
            } else {
                store(c, data)?
            };
            Done::Block {
                file,
                index,
                last,
                zero,
                stored,
            }
        }
        Job::Fragment { index, data } => Done::Fragment {
            index,
            stored: store(c, data)?,
        },
    })
}

/// The output file and what the writer thread learnt while placing data.
struct Placed {
    out: File,
    pos: u64,
    files: HashMap<usize, FileData>,
    fragments: Vec<(u64, u32)>,
}

/// A block file being placed.
struct Open {
    start: u64,
    blocks: Vec<u32>,
    hash: Sha256,
    sparse: u64,
}

struct Placer<'t> {
    tree: &'t Tree,
    out: std::io::BufWriter<File>,
    pos: u64,
    open: Option<Open>,
    /// Stored block files by (block list, SHA-256 of the stored bytes).
    seen: HashMap<(Arc<Vec<u32>>, [u8; 32]), FileData>,
    /// All-zero files shorter than a block, in order.
    zeros: Vec<FileData>,
    files: HashMap<usize, FileData>,
    fragments: Vec<(u64, u32)>,
}

impl Placer<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).writing(&self.tree.dest)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn place(&mut self, done: Done) -> Result<()> {
        match done {
            Done::Fragment { index, stored } => {
                debug_assert_eq!(index as usize, self.fragments.len());
                self.fragments.push((self.pos, stored.size_field()));
                self.write(stored.bytes())?;
            }
            Done::Block {
                file,
                index,
                last,
                zero,
                stored,
            } => {
                if index == 0 {
                    self.open = Some(Open {
                        start: self.pos,
                        blocks: Vec::new(),
                        hash: Sha256::new(),
                        sparse: 0,
                    });
                }
                let mut open = self.open.take().expect("a file's blocks in order");
                open.blocks.push(stored.size_field());
                if let Stored::Sparse(n) = stored {
                    open.sparse += n as u64;
                }
                open.hash.update(stored.bytes());
                self.write(stored.bytes())?;
                if let Some(dup_path) = zero {
                    self.close_zero(file, open, dup_path);
                } else if last {
                    self.close(file, open)?;
                } else {
                    self.open = Some(open);
                }
            }
        }
        Ok(())
    }

    /// An all-zero file shorter than a block is complete. mksquashfs stores it as one
    /// sparse block rather than a fragment, and compares it only with earlier such
    /// files, and only when a fragment-only file of its size exists (`dup_path`).
    fn close_zero(&mut self, file: usize, open: Open, dup_path: bool) {
        let Kind::File { size, allocated } = self.tree.nodes[file].kind else {
            unreachable!("blocks of a regular file")
        };
        let sparse = if allocated >= size { 0 } else { size };
        let data = match self.zeros.last() {
            Some(earlier) if dup_path => {
                if earlier.size == size {
                    earlier.clone()
                } else {
                    FileData {
                        size,
                        sparse,
                        ..earlier.clone()
                    }
                }
            }
            _ => {
                let data = FileData {
                    size,
                    start: open.start,
                    blocks: Arc::new(open.blocks),
                    fragment: (INVALID_FRAG, 0),
                    sparse,
                };
                self.zeros.push(data.clone());
                data
            }
        };
        self.files.insert(file, data);
    }

    /// A block file is complete: keep it, or point it at an equal earlier one.
    fn close(&mut self, file: usize, open: Open) -> Result<()> {
        let Kind::File { size, allocated } = self.tree.nodes[file].kind else {
            unreachable!("blocks of a regular file")
        };
        // A file with all-zero blocks that is not sparse on disk is reported as not
        // sparse (mksquashfs: st_blocks covers its size).
        let sparse = if open.sparse > 0 && allocated >= size {
            0
        } else {
            open.sparse
        };
        let key = (Arc::new(open.blocks), open.hash.finalize().into());
        let data = match self.seen.get(&key) {
            Some(earlier) => {
                // Drop the blocks just written; the next data overwrites them.
                self.out.flush().writing(&self.tree.dest)?;
                self.out
                    .seek(SeekFrom::Start(open.start))
                    .writing(&self.tree.dest)?;
                self.pos = open.start;
                if earlier.size == size {
                    earlier.clone()
                } else {
                    FileData {
                        size,
                        sparse,
                        ..earlier.clone()
                    }
                }
            }
            None => {
                let data = FileData {
                    size,
                    start: open.start,
                    blocks: key.0.clone(),
                    fragment: (INVALID_FRAG, 0),
                    sparse,
                };
                self.seen.insert(key, data.clone());
                data
            }
        };
        self.files.insert(file, data);
        Ok(())
    }
}

/// Reads every regular file of the tree and places its data: blocks compressed on
/// `threads` threads, written in order at `start`.
fn place_data(
    tree: &Tree,
    out: File,
    start: u64,
    codec: Codec,
    block_size: u32,
    threads: usize,
    bar: &Bar,
) -> Result<(Placed, HashMap<usize, FileData>)> {
    let threads = threads.max(1);
    let in_flight = 4 * threads + 2;
    let (job_tx, job_rx) = sync_channel::<(u64, Job)>(in_flight);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = channel::<(u64, Result<Done>)>();
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        token_tx.send(()).expect("room for every token");
    }
    let mut files = Vec::new();
    tree.files_in_order(0, &mut files);

    std::thread::scope(|s| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            s.spawn(move || {
                let mut c = match Compressor::new(codec) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = done_tx.send((u64::MAX, Err(e)));
                        return;
                    }
                };
                loop {
                    let next = job_rx.lock().expect("job queue").recv();
                    let Ok((seq, job)) = next else { return };
                    if done_tx
                        .send((seq, compress_job(&mut c, job, block_size)))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let placer = s.spawn(move || place_in_order(tree, out, start, done_rx, token_tx));
        let produced = produce(tree, &files, block_size, bar, &job_tx, &token_rx);
        drop(job_tx);
        let placed = placer.join().expect("the squashfs writer thread");
        // The writer's error explains a producer stopped by it.
        let placed = placed?;
        Ok((placed, produced?))
    })
}

fn place_in_order(
    tree: &Tree,
    out: File,
    start: u64,
    done_rx: Receiver<(u64, Result<Done>)>,
    token_tx: SyncSender<()>,
) -> Result<Placed> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    out.seek(SeekFrom::Start(start)).writing(&tree.dest)?;
    let mut p = Placer {
        tree,
        out,
        pos: start,
        open: None,
        seen: HashMap::new(),
        zeros: Vec::new(),
        files: HashMap::new(),
        fragments: Vec::new(),
    };
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for (seq, done) in done_rx {
        waiting.insert(seq, done?);
        while let Some(done) = waiting.remove(&next) {
            p.place(done)?;
            next += 1;
            let _ = token_tx.send(());
        }
    }
    p.out.flush().writing(&tree.dest)?;
    let out = p
        .out
        .into_inner()
        .map_err(|e| e.into_error())
        .writing(&tree.dest)?;
    Ok(Placed {
        out,
        pos: p.pos,
        files: p.files,
        fragments: p.fragments,
    })
}

/// Reads the files in order and hands out jobs; fragment-sized files are packed
/// here. Returns the data of the files that have no blocks.
fn produce(
    tree: &Tree,
    files: &[usize],
    block_size: u32,
    bar: &Bar,
    jobs: &SyncSender<(u64, Job)>,
    tokens: &Receiver<()>,
) -> Result<HashMap<usize, FileData>> {
    let bs = block_size as usize;
    let mut seq = 0u64;
    let stopped = || Error::invalid("squashfs: the writer stopped");
    let mut send = |job: Job| -> Result<()> {
        tokens.recv().map_err(|_| stopped())?;
        jobs.send((seq, job)).map_err(|_| stopped())?;
        seq += 1;
        Ok(())
    };
    let mut small = HashMap::new();
    let mut frag_seen: HashMap<(usize, [u8; 32]), (u32, u32)> = HashMap::new();
    let mut frag_sizes = std::collections::HashSet::new();
    let mut frag: Vec<u8> = Vec::new();
    let mut frag_index = 0u32;
    let mut frag_open = false;
    for &f in files {
        let node = &tree.nodes[f];
        let Kind::File { size, .. } = node.kind else {
            continue;
        };
        let path = tree.root.join(&node.rel);
        if size == 0 {
            small.insert(
                f,
                FileData {
                    size: 0,
                    start: 0,
                    blocks: Arc::new(Vec::new()),
                    fragment: (INVALID_FRAG, 0),
                    sparse: 0,
                },
            );
            continue;
        }
        let mut file = File::open(&path).op("opening", &path)?;
        let changed = || Error::format(&path, "changed size while being read");
        if size < block_size as u64 {
            let mut data = vec![0u8; size as usize];
            file.read_exact(&mut data).map_err(|_| changed())?;
            bar.inc(size);
            if data.iter().all(|&b| b == 0) {
                let dup_path = frag_sizes.contains(&data.len());
                send(Job::Block {
                    file: f,
                    index: 0,
                    data,
                    last: true,
                    zero: Some(dup_path),
                })?;
                continue;
            }
            let key = (data.len(), Sha256::digest(&data).into());
            let fragment = match frag_seen.get(&key) {
                Some(&at) => at,
                None => {
                    if frag_open && frag.len() + data.len() > bs {
                        send(Job::Fragment {
                            index: frag_index,
                            data: std::mem::take(&mut frag),
                        })?;
                        frag_index += 1;
                    }
                    frag_open = true;
                    let at = (frag_index, frag.len() as u32);
                    frag.extend_from_slice(&data);
                    frag_seen.insert(key, at);
                    frag_sizes.insert(data.len());
                    at
                }
            };
            small.insert(
                f,
                FileData {
                    size,
                    start: 0,
                    blocks: Arc::new(Vec::new()),
                    fragment,
                    sparse: 0,
                },
            );
            continue;
        }
        let count = size.div_ceil(block_size as u64);
        for index in 0..count {
            let len = if index + 1 == count {
                (size - index * block_size as u64) as usize
            } else {
                bs
            };
            let mut data = vec![0u8; len];
            file.read_exact(&mut data).map_err(|_| changed())?;
            bar.inc(len as u64);
            let last = index + 1 == count;
            send(Job::Block {
                file: f,
                index: index as u32,
                data,
                last,
                zero: None,
            })?;
        }
    }
    if frag_open {
        send(Job::Fragment {
            index: frag_index,
            data: frag,
        })?;
    }
    Ok(small)
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
                    &tree.root.join(&node.rel),
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
