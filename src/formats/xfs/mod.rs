//! A write-once XFS filesystem: Talos's BOOT partition (the kernel, the initramfs and
//! GRUB's configuration, read by GRUB at boot and mounted by Talos for upgrades).
//!
//! No Rust crate writes XFS, and the product must not run `mkfs.xfs`, so the
//! filesystem is laid out here in one pass: every structure's final content is known
//! before the first byte is written. What is made is what Talos's imager gets from
//! `mkfs.xfs -n ftype=1` with the `lts_6.6`/`lts_6.12` configurations — a v5
//! filesystem with CRCs, free inode btree, inode btree counters, reflink (refcount
//! btree), reverse mapping btree, sparse inodes, 64-bit extent counters, bigtime and
//! directory file types — with the geometry `mkfs.xfs` 6.1 picks for the same size:
//! 4 KiB blocks, 512-byte inodes, four AGs, a 64 MiB internal log in the middle AG,
//! clean (one unmount record), six blocks on each AG's free list.
//!
//! For an empty tree the superblocks, AG headers, btree roots and log are byte for
//! byte what `mkfs.xfs` 6.1 writes with the same UUID (the tests compare them).
//!
//! Contents: directories and regular files, owned by root, every timestamp the given
//! epoch. Where `mkfs -p` would spread directories over the AGs, all inodes here live
//! in the first inode chunk(s) of AG 0 (inode 128 is the root, 129/130 the empty
//! realtime inodes mkfs always makes, then the entries in order); file data is laid
//! out in entry order as contiguous extents after them, continuing into the next AGs
//! (a file larger than the rest of an AG spans several extents). Directories are
//! short-form (in the inode) or a single directory block. File contents are streamed
//! from their paths; all-zero blocks are left as holes. Nothing is random (mkfs's
//! random inode generations are 0 in xfsprogs too): the same inputs give the same
//! bytes.
//!
//! On-disk reference: "XFS Algorithms & Data Structures", 3rd edition
//! (`xfs-documentation.git`, `design/XFS_Filesystem_Structure`: superblocks, AG
//! headers, btrees, inodes, directories, the log) and xfsprogs 6.1 (`libxfs/xfs_format.h`,
//! `xfs_da_format.h`, `xfs_log_format.h`, `libxfs/util.c` `libxfs_log_header`,
//! `mkfs/xfs_mkfs.c`, `libxfs/topology.c`); checked against `mkfs.xfs` 6.1.0 output
//! with `xfs_db`, `xfs_repair -n` and GRUB's reader (`grub-fstest`).
//!
//! Limits (an error says so): 300 MiB to 4 TiB; one btree leaf per AG for each btree
//! (at most 168 reverse mappings per AG, which is about 150 files); directories of one
//! block; at most 21 extents a file.

mod geometry;
mod ondisk;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use crate::error::{Error, Result};
use geometry::{
    AGFL_FILL, BLOCK_LOG, BLOCK_SIZE, CHUNK_BLOCKS, Geometry, INODE_SIZE, INODES_PER_CHUNK,
};
use ondisk::{DirEntry, Fork, InodeInfo};

/// Where the file system goes: a range of the output file.
type Out<'f> = crate::io::FsImage<'f>;

/// Where a file's content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A host file, streamed.
    File(PathBuf),
    /// Bytes in memory (small files: `grub.cfg`).
    Bytes(Vec<u8>),
}

/// A directory or regular file to create. `path` is relative and `/`-separated
/// (`A`, `A/vmlinuz`); parents come before their children; `mode` is the permission
/// bits only.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        source: Source,
    },
}

/// What identifies the filesystem.
#[derive(Debug, Clone)]
pub struct XfsOptions {
    /// Volume label, at most 12 bytes (`BOOT`).
    pub label: String,
    pub uuid: uuid::Uuid,
    /// Every inode timestamp, seconds since 1970.
    pub epoch: u64,
    /// 512 or 4096.
    pub sector_size: u32,
}

/// Smallest filesystem size `write` accepts for files totalling `entries_bytes`:
/// 300 MiB, or more so that the files, rounded to blocks with room for 256 files'
/// partial blocks, fit in the free space. A MiB multiple.
pub fn minimum_size(entries_bytes: u64) -> u64 {
    let needed = entries_bytes.div_ceil(BLOCK_SIZE) + 256;
    let mut size = geometry::MIN_SIZE;
    loop {
        match Geometry::new(size, 512) {
            Ok(g) if file_space(&g) >= needed => return size,
            Ok(g) => {
                let short = (needed - file_space(&g)) << BLOCK_LOG;
                size = (size + short.max(1 << 20)).next_multiple_of(1 << 20);
            }
            Err(_) => return size,
        }
    }
}

/// Blocks available to file data in a filesystem with one inode chunk.
fn file_space(g: &Geometry) -> u64 {
    (0..g.agcount)
        .map(|ag| {
            let start = if ag == 0 {
                g.inode_start() + CHUNK_BLOCKS
            } else {
                g.agfl_start(ag) + AGFL_FILL
            };
            u64::from(g.ag_len(ag) - start)
        })
        .sum()
}

/// Writes a whole XFS filesystem of `size` bytes into `out` at byte `offset`. The
/// range is first made a hole (zeros) where the file system allows it, so what was
/// there does not show through; otherwise only the log is zeroed.
pub fn write(
    out: &File,
    offset: u64,
    size: u64,
    opts: &XfsOptions,
    entries: &[Entry],
) -> Result<()> {
    let plan = Plan::new(size, opts, entries)?;
    plan.write(out, offset, opts)
}

const MAX_NAME: usize = 255;
/// The latest bigtime second (2486-07-02).
const MAX_EPOCH: u64 = u64::MAX / 1_000_000_000 - (1 << 31);

enum Kind<'a> {
    Dir {
        children: Vec<usize>,
        block: Option<(u32, u32)>,
    },
    File {
        source: &'a Source,
        len: u64,
        extents: Vec<Extent>,
    },
}

struct Node<'a> {
    name: &'a str,
    parent: usize,
    mode: u32,
    kind: Kind<'a>,
}

/// A run of blocks: in the file (`file_block`), on disk (`agno`, `agbno`).
#[derive(Clone, Copy)]
struct Extent {
    file_block: u64,
    agno: u32,
    agbno: u32,
    len: u32,
}

/// One reverse mapping: blocks `start..start+len` of an AG belong to `owner`
/// (an inode, or one of the special owners) at `offset` in it.
#[derive(Clone, Copy, Debug)]
struct Rmap {
    start: u32,
    len: u32,
    owner: u64,
    offset: u64,
}

struct AgPlan {
    rmaps: Vec<Rmap>,
    free: Vec<(u32, u32)>,
    agfl: Vec<u32>,
}

struct Plan<'a> {
    g: Geometry,
    label: Vec<u8>,
    nodes: Vec<Node<'a>>,
    chunks: u32,
    ags: Vec<AgPlan>,
}

/// Hands out blocks in order from a list of free runs.
struct Allocator {
    runs: Vec<(u32, u32, u32)>, // agno, start, len
    next: usize,
}

impl Allocator {
    fn alloc(&mut self, mut blocks: u64, what: &str) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        let mut file_block = 0;
        while blocks > 0 {
            let Some(run) = self.runs.get_mut(self.next) else {
                return Err(Error::invalid(format!(
                    "XFS {what}: does not fit in the free space ({blocks} more 4 KiB blocks needed)"
                )));
            };
            if run.2 == 0 {
                self.next += 1;
                continue;
            }
            let take = blocks.min(u64::from(run.2)).min(ondisk::MAX_EXTENT_BLOCKS) as u32;
            out.push(Extent {
                file_block,
                agno: run.0,
                agbno: run.1,
                len: take,
            });
            run.1 += take;
            run.2 -= take;
            blocks -= u64::from(take);
            file_block += u64::from(take);
        }
        Ok(out)
    }
}

fn invalid_path(path: &str, rule: &str) -> Error {
    Error::invalid(format!("XFS entry {path:?}: {rule}"))
}

impl<'a> Plan<'a> {
    fn new(size: u64, opts: &XfsOptions, entries: &'a [Entry]) -> Result<Self> {
        let g = Geometry::new(size, opts.sector_size)?;
        let label = opts.label.as_bytes().to_vec();
        if label.len() > 12 || label.contains(&0) {
            return Err(Error::invalid(format!(
                "XFS label {:?}: at most 12 bytes, no NUL",
                opts.label
            )));
        }
        if opts.epoch > MAX_EPOCH {
            return Err(Error::invalid(format!(
                "XFS timestamp {}: later than the last bigtime second {MAX_EPOCH}",
                opts.epoch
            )));
        }
        let mut nodes = vec![Node {
            name: "",
            parent: 0,
            mode: 0o755,
            kind: Kind::Dir {
                children: Vec::new(),
                block: None,
            },
        }];
        let mut by_path: HashMap<&str, usize> = HashMap::new();
        by_path.insert("", 0);
        for e in entries {
            let (path, mode) = match e {
                Entry::Dir { path, mode } | Entry::File { path, mode, .. } => {
                    (path.as_str(), *mode)
                }
            };
            if mode & !0o7777 != 0 {
                return Err(invalid_path(
                    path,
                    &format!("mode {mode:#o} has more than permission bits"),
                ));
            }
            let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path));
            if name.is_empty() || name == "." || name == ".." || path.starts_with('/') {
                return Err(invalid_path(
                    path,
                    "must be a relative path of non-empty names other than . and ..",
                ));
            }
            if name.len() > MAX_NAME || name.contains('\0') {
                return Err(invalid_path(
                    path,
                    "a name is longer than 255 bytes or holds NUL",
                ));
            }
            let Some(&parent) = by_path.get(parent_path) else {
                return Err(invalid_path(
                    path,
                    "its parent directory is not listed before it",
                ));
            };
            if by_path.contains_key(path) {
                return Err(invalid_path(path, "listed twice"));
            }
            let kind = match e {
                Entry::Dir { .. } => Kind::Dir {
                    children: Vec::new(),
                    block: None,
                },
                Entry::File { source, .. } => {
                    let len = match source {
                        Source::Bytes(b) => b.len() as u64,
                        Source::File(p) => {
                            let md =
                                std::fs::metadata(p).map_err(|e| Error::io_op("reading", p, e))?;
                            if !md.is_file() {
                                return Err(Error::format(p, "not a regular file"));
                            }
                            md.len()
                        }
                    };
                    Kind::File {
                        source,
                        len,
                        extents: Vec::new(),
                    }
                }
            };
            let idx = nodes.len();
            match &mut nodes[parent].kind {
                Kind::Dir { children, .. } => children.push(idx),
                Kind::File { .. } => return Err(invalid_path(path, "its parent is a file")),
            }
            nodes.push(Node {
                name,
                parent,
                mode,
                kind,
            });
            by_path.insert(path, idx);
        }

        // Inodes: root, the two realtime inodes, then the entries.
        let inodes = nodes.len() as u32 + 2;
        let chunks = inodes.div_ceil(INODES_PER_CHUNK);
        let chunk_end = g.inode_start() + chunks * CHUNK_BLOCKS;
        if chunk_end > g.ag_len(0) {
            return Err(Error::invalid(format!(
                "{} XFS entries: too many",
                entries.len()
            )));
        }
        let mut plan = Plan {
            g,
            label,
            nodes,
            chunks,
            ags: Vec::new(),
        };

        let g = &plan.g;
        let mut runs = vec![(0, chunk_end, g.ag_len(0) - chunk_end)];
        for ag in 1..g.agcount {
            let start = g.agfl_start(ag) + AGFL_FILL;
            runs.push((ag, start, g.ag_len(ag) - start));
        }
        let mut alloc = Allocator { runs, next: 0 };
        // Directory blocks first (rarely any), then file data in entry order.
        for i in 0..plan.nodes.len() {
            if matches!(plan.nodes[i].kind, Kind::Dir { .. }) && plan.shortform(i).is_none() {
                let ext = alloc.alloc(1, &format!("directory {:?}", plan.path(i)))?;
                if let Kind::Dir { block, .. } = &mut plan.nodes[i].kind {
                    *block = Some((ext[0].agno, ext[0].agbno));
                }
            }
        }
        for i in 0..plan.nodes.len() {
            let path = plan.path(i);
            if let Kind::File { len, extents, .. } = &mut plan.nodes[i].kind {
                *extents = alloc.alloc(
                    len.div_ceil(BLOCK_SIZE),
                    &format!("file {path:?} of {len} bytes"),
                )?;
                if extents.len() > ondisk::MAX_INLINE_EXTENTS {
                    return Err(Error::unsupported(format!(
                        "XFS file {path:?}: needs {} extents, at most {} are supported",
                        extents.len(),
                        ondisk::MAX_INLINE_EXTENTS
                    )));
                }
            }
        }
        plan.ags = (0..plan.g.agcount)
            .map(|ag| plan.ag_plan(ag))
            .collect::<Result<_>>()?;
        Ok(plan)
    }

    fn ino(&self, node: usize) -> u64 {
        if node == 0 {
            self.g.ino(0)
        } else {
            self.g.ino(node as u32 + 2)
        }
    }

    fn path(&self, mut node: usize) -> String {
        let mut parts = Vec::new();
        while node != 0 {
            parts.push(self.nodes[node].name);
            node = self.nodes[node].parent;
        }
        parts.reverse();
        parts.join("/")
    }

    fn dir_entries(&self, node: usize) -> Vec<DirEntry<'_>> {
        let Kind::Dir { children, .. } = &self.nodes[node].kind else {
            return Vec::new();
        };
        children
            .iter()
            .map(|&c| DirEntry {
                name: self.nodes[c].name.as_bytes(),
                ino: self.ino(c),
                ftype: match self.nodes[c].kind {
                    Kind::Dir { .. } => ondisk::FT_DIR,
                    Kind::File { .. } => ondisk::FT_REG_FILE,
                },
            })
            .collect()
    }

    fn shortform(&self, node: usize) -> Option<Vec<u8>> {
        ondisk::shortform_dir(self.ino(self.nodes[node].parent), &self.dir_entries(node))
    }

    /// The reverse mappings, free runs and free list of one AG.
    fn ag_plan(&self, ag: u32) -> Result<AgPlan> {
        let g = &self.g;
        let special = |start, len, owner| Rmap {
            start,
            len,
            owner,
            offset: 0,
        };
        let mut rmaps = vec![
            special(0, g.hdr_blocks, ondisk::OWN_FS),
            special(g.bno_root(), 2, ondisk::OWN_AG),
            special(g.ino_root(), 2, ondisk::OWN_INOBT),
            special(g.rmap_root(), 1, ondisk::OWN_AG),
            special(g.refc_root(), 1, ondisk::OWN_REFC),
            special(g.agfl_start(ag), AGFL_FILL, ondisk::OWN_AG),
        ];
        if ag == g.log_ag {
            rmaps.push(special(g.log_agbno, g.logblocks, ondisk::OWN_LOG));
        }
        if ag == 0 {
            rmaps.push(special(
                g.inode_start(),
                self.chunks * CHUNK_BLOCKS,
                ondisk::OWN_INODES,
            ));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let ino = self.ino(i);
            match &n.kind {
                Kind::Dir {
                    block: Some((a, b)),
                    ..
                } if *a == ag => {
                    rmaps.push(Rmap {
                        start: *b,
                        len: 1,
                        owner: ino,
                        offset: 0,
                    });
                }
                Kind::File { extents, .. } => {
                    for e in extents.iter().filter(|e| e.agno == ag) {
                        rmaps.push(Rmap {
                            start: e.agbno,
                            len: e.len,
                            owner: ino,
                            offset: e.file_block,
                        });
                    }
                }
                _ => {}
            }
        }
        rmaps.sort_by_key(|r| r.start);
        // Adjacent runs of one owner (contiguous in the file) are one record.
        let mut merged: Vec<Rmap> = Vec::with_capacity(rmaps.len());
        for r in rmaps {
            if let Some(last) = merged.last_mut() {
                let contiguous_offset =
                    r.owner >= ondisk::OWN_REFC || last.offset + u64::from(last.len) == r.offset;
                if last.owner == r.owner && last.start + last.len == r.start && contiguous_offset {
                    last.len += r.len;
                    continue;
                }
            }
            merged.push(r);
        }
        let mut free = Vec::new();
        let mut at = 0;
        for r in &merged {
            debug_assert!(r.start >= at, "overlapping extents in AG {ag}: {merged:?}");
            if r.start > at {
                free.push((at, r.start - at));
            }
            at = r.start + r.len;
        }
        if g.ag_len(ag) > at {
            free.push((at, g.ag_len(ag) - at));
        }
        if merged.len() > ondisk::leaf_capacity(24) || free.len() > ondisk::leaf_capacity(8) {
            return Err(Error::unsupported(format!(
                "XFS: {} files or extents in allocation group {ag}; at most {} are supported",
                merged.len(),
                ondisk::leaf_capacity(24)
            )));
        }
        let agfl = (0..AGFL_FILL).map(|i| g.agfl_start(ag) + i).collect();
        Ok(AgPlan {
            rmaps: merged,
            free,
            agfl,
        })
    }

    fn inode_count(&self) -> u32 {
        self.nodes.len() as u32 + 2
    }

    fn write(&self, file: &File, offset: u64, opts: &XfsOptions) -> Result<()> {
        let g = &self.g;
        let out = Out::new(file, offset, "writing the XFS filesystem");
        let zeroed = out.prepare(g.dblocks << BLOCK_LOG)?;
        let log_byte = g.byte(g.log_ag, g.log_agbno);
        if !zeroed {
            out.zero(log_byte, u64::from(g.logblocks) << BLOCK_LOG)?;
        }
        for n in &self.nodes {
            if let Kind::File {
                source,
                len,
                extents,
            } = &n.kind
            {
                self.write_data(&out, source, *len, extents, zeroed)?;
            }
        }
        self.write_dir_blocks(&out, opts)?;
        self.write_inodes(&out, opts)?;
        for (ag, a) in (0..g.agcount).zip(&self.ags) {
            self.write_ag(&out, opts, ag, a)?;
        }
        out.at(log_byte, &ondisk::log_record(&opts.uuid, g.sector_size))
    }

    /// The blocks of the directories too large to live in their inode.
    fn write_dir_blocks(&self, out: &Out, opts: &XfsOptions) -> Result<()> {
        let g = &self.g;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Kind::Dir {
                block: Some((ag, bno)),
                ..
            } = n.kind
            {
                let entries = self.dir_entries(i);
                let parent = self.ino(n.parent);
                let b =
                    ondisk::block_dir(&opts.uuid, g.daddr(ag, bno), self.ino(i), parent, &entries)
                        .ok_or_else(|| {
                            Error::unsupported(format!(
                                "XFS directory {:?}: its entries need more than one 4 KiB block",
                                self.path(i)
                            ))
                        })?;
                out.at(g.byte(ag, bno), &b)?;
            }
        }
        Ok(())
    }

    /// The inode chunks: the root, the two (empty) realtime inodes mkfs always makes,
    /// the entries, then free inodes.
    fn write_inodes(&self, out: &Out, opts: &XfsOptions) -> Result<()> {
        let g = &self.g;
        let mut chunk = Vec::with_capacity((self.chunks * INODES_PER_CHUNK * INODE_SIZE) as usize);
        for idx in 0..self.chunks * INODES_PER_CHUNK {
            let ino = g.ino(idx);
            let b = match idx {
                0 => self.node_inode(0, opts),
                1 | 2 => ondisk::inode(
                    &opts.uuid,
                    &InodeInfo {
                        ino,
                        mode: ondisk::S_IFREG,
                        nlink: 1,
                        size: 0,
                        nblocks: 0,
                        flags: if idx == 1 { 1 << 2 } else { 0 }, // NEWRTBM on the bitmap
                        epoch: opts.epoch,
                        fork: Fork::Empty,
                    },
                ),
                i if i < self.inode_count() => self.node_inode(i as usize - 2, opts),
                _ => ondisk::free_inode(&opts.uuid, ino),
            };
            chunk.extend_from_slice(&b);
        }
        out.at(g.byte(0, g.inode_start()), &chunk)
    }

    /// One AG's superblock, AGF, AGI, AGFL and btree roots.
    fn write_ag(&self, out: &Out, opts: &XfsOptions, ag: u32, a: &AgPlan) -> Result<()> {
        let g = &self.g;
        let uuid = &opts.uuid;
        let used_inodes = self.inode_count();
        let total_inodes = self.chunks * INODES_PER_CHUNK;
        let fdblocks: u64 = self
            .ags
            .iter()
            .map(|a| a.free.iter().map(|f| u64::from(f.1)).sum::<u64>() + a.agfl.len() as u64)
            .sum();
        let counts = ondisk::SbCounts {
            rootino: g.ino(0),
            icount: u64::from(total_inodes),
            ifree: u64::from(total_inodes - used_inodes),
            fdblocks,
        };
        let allocated: u64 = self
            .nodes
            .iter()
            .map(|n| match &n.kind {
                Kind::File { extents, .. } => extents.iter().map(|e| u64::from(e.len)).sum(),
                Kind::Dir { block: Some(_), .. } => 1,
                Kind::Dir { .. } => 0,
            })
            .sum::<u64>()
            + u64::from(self.chunks * CHUNK_BLOCKS);

        let base = g.byte(ag, 0);
        let ss = u64::from(g.sector_size);
        let sb = ondisk::superblock(g, uuid, &self.label, &counts, ag == 0, fdblocks + allocated);
        out.at(base, &sb)?;
        let agf = ondisk::AgfInfo {
            freeblks: a.free.iter().map(|f| f.1).sum(),
            longest: a.free.iter().map(|f| f.1).max().unwrap_or(0),
            agfl_count: a.agfl.len() as u32,
        };
        out.at(base + ss, &ondisk::agf(g, uuid, ag, &agf))?;
        let agi = if ag == 0 {
            ondisk::AgiInfo {
                count: total_inodes,
                freecount: total_inodes - used_inodes,
                newino: g.ino((self.chunks - 1) * INODES_PER_CHUNK) as u32,
            }
        } else {
            ondisk::AgiInfo {
                count: 0,
                freecount: 0,
                newino: ondisk::NULL32,
            }
        };
        out.at(base + 2 * ss, &ondisk::agi(g, uuid, ag, &agi))?;
        out.at(base + 3 * ss, &ondisk::agfl(g, uuid, ag, &a.agfl))?;

        // Free space by block and by size.
        let pairs = |v: &[(u32, u32)]| -> Vec<u8> {
            v.iter()
                .flat_map(|&(s, l)| [s.to_be_bytes(), l.to_be_bytes()])
                .flatten()
                .collect()
        };
        let bno = pairs(&a.free);
        let mut by_size = a.free.clone();
        by_size.sort_by_key(|&(s, l)| (l, s));
        let cnt = pairs(&by_size);
        // Inode chunks (all in AG 0), all of them and those with free inodes.
        let (mut ino_recs, mut fino_recs) = (Vec::new(), Vec::new());
        if ag == 0 {
            for c in 0..self.chunks {
                let first = c * INODES_PER_CHUNK;
                let used = used_inodes.saturating_sub(first).min(INODES_PER_CHUNK);
                let free_mask = if used == INODES_PER_CHUNK {
                    0
                } else {
                    u64::MAX << used
                };
                let mut rec = Vec::with_capacity(16);
                rec.extend_from_slice(&(g.ino(first) as u32).to_be_bytes());
                rec.extend_from_slice(&0u16.to_be_bytes()); // holemask: no sparse chunk
                rec.push(INODES_PER_CHUNK as u8);
                rec.push((INODES_PER_CHUNK - used) as u8);
                rec.extend_from_slice(&free_mask.to_be_bytes());
                if used < INODES_PER_CHUNK {
                    fino_recs.extend_from_slice(&rec);
                }
                ino_recs.extend_from_slice(&rec);
            }
        }
        let mut rmap = Vec::with_capacity(24 * a.rmaps.len());
        for r in &a.rmaps {
            rmap.extend_from_slice(&r.start.to_be_bytes());
            rmap.extend_from_slice(&r.len.to_be_bytes());
            rmap.extend_from_slice(&r.owner.to_be_bytes());
            rmap.extend_from_slice(&r.offset.to_be_bytes());
        }
        for (bno_, magic, size, recs) in [
            (g.bno_root(), ondisk::BNO_MAGIC, 8, &bno[..]),
            (g.cnt_root(), ondisk::CNT_MAGIC, 8, &cnt),
            (g.ino_root(), ondisk::INO_MAGIC, 16, &ino_recs),
            (g.fino_root(), ondisk::FINO_MAGIC, 16, &fino_recs),
            (g.rmap_root(), ondisk::RMAP_MAGIC, 24, &rmap),
            (g.refc_root(), ondisk::REFC_MAGIC, 12, &[]), // nothing is shared
        ] {
            out.at(
                g.byte(ag, bno_),
                &ondisk::btree_leaf(g, uuid, ag, bno_, magic, size, recs),
            )?;
        }
        Ok(())
    }

    /// The inode of node `i` (the root or an entry).
    fn node_inode(&self, i: usize, opts: &XfsOptions) -> Vec<u8> {
        let g = &self.g;
        let n = &self.nodes[i];
        let ino = self.ino(i);
        let mode = n.mode as u16;
        let exts: Vec<(u64, u64, u64)>;
        let sf;
        let info = match &n.kind {
            Kind::Dir { children, block } => {
                let subdirs = children
                    .iter()
                    .filter(|&&c| matches!(self.nodes[c].kind, Kind::Dir { .. }))
                    .count() as u32;
                let (size, nblocks, fork) = match block {
                    None => {
                        sf = self.shortform(i).expect("short-form checked when planning");
                        (sf.len() as u64, 0, Fork::Local(&sf))
                    }
                    Some((ag, bno)) => {
                        exts = vec![(0, g.fsbno(*ag, *bno), 1)];
                        (BLOCK_SIZE, 1, Fork::Extents(&exts))
                    }
                };
                InodeInfo {
                    ino,
                    mode: ondisk::S_IFDIR | mode,
                    nlink: 2 + subdirs,
                    size,
                    nblocks,
                    flags: 0,
                    epoch: opts.epoch,
                    fork,
                }
            }
            Kind::File { len, extents, .. } => {
                exts = extents
                    .iter()
                    .map(|e| (e.file_block, g.fsbno(e.agno, e.agbno), u64::from(e.len)))
                    .collect();
                let nblocks = exts.iter().map(|e| e.2).sum();
                let fork = if exts.is_empty() {
                    Fork::Empty
                } else {
                    Fork::Extents(&exts)
                };
                InodeInfo {
                    ino,
                    mode: ondisk::S_IFREG | mode,
                    nlink: 1,
                    size: *len,
                    nblocks,
                    flags: 0,
                    epoch: opts.epoch,
                    fork,
                }
            }
        };
        ondisk::inode(&opts.uuid, &info)
    }

    /// Streams one file's content into its extents; the last block's tail is zero.
    fn write_data(
        &self,
        out: &Out,
        source: &Source,
        len: u64,
        extents: &[Extent],
        zeroed: bool,
    ) -> Result<()> {
        let g = &self.g;
        let runs = extents
            .iter()
            .map(|e| (g.byte(e.agno, e.agbno), u64::from(e.len) << BLOCK_LOG));
        match source {
            Source::Bytes(b) => out.copy_into(&mut &b[..], len, runs, zeroed, None),
            Source::File(p) => {
                let mut f = File::open(p).map_err(|e| Error::io_op("reading", p, e))?;
                out.copy_into(&mut f, len, runs, zeroed, Some(p))
            }
        }
    }
}
