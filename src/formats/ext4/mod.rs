//! A write-once ext4 filesystem: Talos's IMAGECACHE partition (the image cache, a
//! registry laid out as files, served by Talos's registryd at boot).
//!
//! Talos makes it with `mkfs.ext4 -L IMAGECACHE -U <guid> -E hash_seed=<guid> -d <tree>`
//! (`pkg/makefs/ext4.go`); the product must not run `mkfs.ext4`, and no Rust crate
//! writes ext4, so the filesystem is laid out here in one pass from a host directory:
//! every structure's final content is known before the first byte is written, file
//! contents are streamed from their paths straight into their blocks, and all-zero
//! blocks are left as holes.
//!
//! What is made: features `ext_attr dir_index filetype extents 64bit flex_bg
//! sparse_super large_file huge_file dir_nlink extra_isize metadata_csum` (mke2fs's
//! ext4 defaults without the journal and the resize inode, which a filesystem that is
//! written once and mounted read-only does not use), 256-byte inodes, the block size
//! mke2fs.conf picks (1 KiB below 512 MiB, else 4 KiB) unless one is given, all group
//! bitmaps and inode tables packed after the group descriptors (flex_bg), superblock
//! backups in groups 0, 1 and the powers of 3, 5 and 7. Directories larger than one
//! block are htrees (one or two index levels) hashed with the given seed. The root, a
//! `lost+found` (inode 11, as e2fsck expects) and the tree's directories and regular
//! files, owned by 0:0, every timestamp the given epoch, generation 0: the same inputs
//! give the same bytes.
//!
//! On-disk reference: e2fsprogs (`lib/ext2fs/ext2_fs.h`, `ext3_extents.h`, `csum.c`,
//! `dirhash.c`, `misc/mke2fs.c`, `misc/mke2fs.conf.in`) and the kernel's
//! `Documentation/filesystems/ext4/`; checked with `e2fsck -fn`, `dumpe2fs`,
//! `debugfs` and a loop mount (tests/ext4.rs).
//!
//! Limits (an error says so): group metadata within the first block group (about
//! 1 TiB with 4 KiB blocks), directories of two htree levels (about 12 million blob
//! entries with 4 KiB blocks, 180 000 with 1 KiB), files of at most four extent leaf
//! blocks (170 GiB with 4 KiB blocks).

mod ondisk;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Where the file system goes: a range of the output file.
type Out<'f> = crate::io::FsImage<'f>;
pub use ondisk::HashVersion;
use ondisk::{DirEntry, Extent, InodeInfo};

/// What identifies the filesystem.
#[derive(Debug, Clone)]
pub struct Ext4Options {
    /// Volume label, at most 16 bytes (`IMAGECACHE`).
    pub label: String,
    pub uuid: uuid::Uuid,
    /// The directory hash seed (`-E hash_seed=`).
    pub hash_seed: uuid::Uuid,
    /// Every timestamp, seconds since 1970.
    pub epoch: i64,
    /// 1024, 2048 or 4096; `None`: what mke2fs.conf picks for the size.
    pub block_size: Option<u32>,
}

/// The block size mke2fs picks for a filesystem of `size` bytes (mke2fs.conf: the
/// "small" and "floppy" types below 512 MiB use 1 KiB blocks).
pub fn default_block_size(size: u64) -> u32 {
    if size < 512 << 20 { 1024 } else { 4096 }
}

const LOST_FOUND: &[u8] = b"lost+found";
const ROOT_INO: u32 = 2;
const LOST_FOUND_INO: u32 = 11;
/// Longest extent of initialized blocks.
const MAX_EXTENT: u64 = 1 << 15;

enum Kind {
    Dir { children: Vec<usize> },
    File { path: PathBuf, len: u64 },
}

struct Node {
    name: Vec<u8>,
    parent: usize,
    ino: u32,
    mode: u16,
    kind: Kind,
}

/// The files and directories under a host directory, pre-order, names byte-sorted.
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn scan(root: &Path) -> Result<Tree> {
        let mut t = Tree {
            nodes: vec![
                Node {
                    name: Vec::new(),
                    parent: 0,
                    ino: ROOT_INO,
                    mode: 0o755,
                    kind: Kind::Dir { children: vec![1] },
                },
                Node {
                    name: LOST_FOUND.to_vec(),
                    parent: 0,
                    ino: LOST_FOUND_INO,
                    mode: 0o700,
                    kind: Kind::Dir {
                        children: Vec::new(),
                    },
                },
            ],
        };
        t.scan_dir(root, 0)?;
        Ok(t)
    }

    fn scan_dir(&mut self, dir: &Path, node: usize) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .at(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .at(dir)?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let bytes = name.as_bytes().to_vec();
            if bytes.len() > 255 {
                return Err(Error::format(&path, "name longer than 255 bytes"));
            }
            if node == 0 && bytes == LOST_FOUND {
                return Err(Error::format(
                    &path,
                    "lost+found is the filesystem's own directory",
                ));
            }
            let md = std::fs::symlink_metadata(&path).at(&path)?;
            let mode = (md.permissions().mode() & 0o7777) as u16;
            let kind = if md.is_dir() {
                Kind::Dir {
                    children: Vec::new(),
                }
            } else if md.is_file() {
                Kind::File {
                    path: path.clone(),
                    len: md.len(),
                }
            } else {
                return Err(Error::format(
                    &path,
                    "neither a regular file nor a directory (the filesystem holds only those)",
                ));
            };
            let idx = self.nodes.len();
            let ino = u32::try_from(idx + 10)
                .map_err(|_| Error::format(dir, "too many files for one filesystem"))?;
            let is_dir = md.is_dir();
            self.nodes.push(Node {
                name: bytes,
                parent: node,
                ino,
                mode,
                kind,
            });
            if let Kind::Dir { children } = &mut self.nodes[node].kind {
                children.push(idx);
            }
            if is_dir {
                self.scan_dir(&path, idx)?;
            }
        }
        if node == 0 {
            // lost+found among the root's entries in name order.
            let mut children = match &self.nodes[0].kind {
                Kind::Dir { children } => children.clone(),
                Kind::File { .. } => unreachable!("the root is a directory"),
            };
            children.sort_by(|&a, &b| self.nodes[a].name.cmp(&self.nodes[b].name));
            self.nodes[0].kind = Kind::Dir { children };
        }
        Ok(())
    }

    /// The highest inode number in use.
    fn last_ino(&self) -> u32 {
        self.nodes.len() as u32 + 9
    }
}

/// The sum of the regular files' sizes under `root` (Talos's image cache size rule).
pub fn files_size(root: &Path) -> Result<u64> {
    let t = Tree::scan(root)?;
    Ok(t.nodes
        .iter()
        .map(|n| match n.kind {
            Kind::File { len, .. } => len,
            Kind::Dir { .. } => 0,
        })
        .sum())
}

/// Where the groups' metadata goes.
struct Geometry {
    bs: u64,
    log_bs: u32,
    /// First block of group 0 (1 with 1 KiB blocks: block 0 is the boot block).
    fdb: u64,
    blocks: u64,
    bpg: u64,
    groups: u32,
    ipg: u32,
    gdt_blocks: u64,
    itable_blocks: u64,
}

impl Geometry {
    fn new(size: u64, bs: u32, inodes: u32) -> Result<Geometry> {
        if ![1024, 2048, 4096].contains(&bs) {
            return Err(Error::unsupported(format!(
                "ext4 block size {bs}: only 1024, 2048 and 4096 are written"
            )));
        }
        let bs64 = u64::from(bs);
        let fdb = u64::from(bs == 1024);
        let bpg = bs64 * 8;
        let mut blocks = size / bs64;
        if blocks < 64 {
            return Err(Error::invalid(format!(
                "an ext4 filesystem of {size} bytes is too small"
            )));
        }
        // A last group too short for its own metadata is left out, as mke2fs does.
        let rem = (blocks - fdb) % bpg;
        if rem != 0 && rem < 64 && blocks - fdb > bpg {
            blocks -= rem;
        }
        let groups = u32::try_from((blocks - fdb).div_ceil(bpg))
            .map_err(|_| Error::unsupported("ext4 filesystem too large"))?;
        let per_block = (bs / ondisk::INODE_SIZE as u32).max(1);
        // Room for more files (a read-write mount, Talos's copy of an ISO's cache): an
        // inode per 16 blocks (mke2fs: one per 4 or 16 KiB), at least those in use.
        let spare = u32::try_from(blocks / 16).unwrap_or(u32::MAX);
        let ipg = inodes
            .max(spare)
            .div_ceil(groups)
            .next_multiple_of(16.max(per_block))
            .max(16);
        if u64::from(ipg) > bpg {
            return Err(Error::unsupported(format!(
                "{inodes} files and directories are more than an ext4 filesystem of {size} bytes holds"
            )));
        }
        let gdt_blocks = (u64::from(groups) * 64).div_ceil(bs64);
        let itable_blocks = u64::from(ipg) * ondisk::INODE_SIZE as u64 / bs64;
        let g = Geometry {
            bs: bs64,
            log_bs: bs.trailing_zeros() - 10,
            fdb,
            blocks,
            bpg,
            groups,
            ipg,
            gdt_blocks,
            itable_blocks,
        };
        if groups > 1 && g.meta_end() > fdb + bpg {
            return Err(Error::unsupported(format!(
                "ext4 filesystem of {size} bytes: its group metadata does not fit in the first group"
            )));
        }
        if g.meta_end() >= blocks {
            return Err(Error::invalid(format!(
                "an ext4 filesystem of {size} bytes is too small"
            )));
        }
        Ok(g)
    }

    fn group_start(&self, g: u32) -> u64 {
        self.fdb + u64::from(g) * self.bpg
    }
    fn group_len(&self, g: u32) -> u64 {
        (self.blocks - self.group_start(g)).min(self.bpg)
    }
    fn block_bitmap(&self, g: u32) -> u64 {
        self.fdb + 1 + self.gdt_blocks + u64::from(g)
    }
    fn inode_bitmap(&self, g: u32) -> u64 {
        self.block_bitmap(0) + u64::from(self.groups) + u64::from(g)
    }
    fn inode_table(&self, g: u32) -> u64 {
        self.inode_bitmap(0) + u64::from(self.groups) + u64::from(g) * self.itable_blocks
    }
    /// First block after group 0's metadata.
    fn meta_end(&self) -> u64 {
        self.inode_table(0) + u64::from(self.groups) * self.itable_blocks
    }
    /// Groups with a superblock and descriptor backup (sparse_super).
    fn has_super(&self, g: u32) -> bool {
        let power_of = |mut n: u32, b: u32| {
            while n.is_multiple_of(b) {
                n /= b;
            }
            n == 1
        };
        g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }
    /// The blocks at a group's start holding a superblock backup and descriptors.
    fn backup_blocks(&self, g: u32) -> u64 {
        if g > 0 && self.has_super(g) {
            1 + self.gdt_blocks
        } else {
            0
        }
    }
}

/// Hands out blocks in order, skipping the superblock backups.
struct Allocator<'g> {
    g: &'g Geometry,
    next: u64,
}

impl Allocator<'_> {
    /// `n` blocks as runs of at most `MAX_EXTENT`, in order.
    fn alloc(&mut self, mut n: u64, what: &dyn Fn() -> String) -> Result<Vec<(u64, u64)>> {
        let g = self.g;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        while n > 0 {
            if self.next >= g.blocks {
                return Err(Error::invalid(format!(
                    "{} does not fit in the {}-byte ext4 filesystem",
                    what(),
                    g.blocks * g.bs
                )));
            }
            let group = ((self.next - g.fdb) / g.bpg) as u32;
            let start = g.group_start(group);
            let skip = start + g.backup_blocks(group);
            if self.next < skip {
                self.next = skip;
                continue;
            }
            let end = start + g.group_len(group);
            let take = n.min(end - self.next);
            let (mut at, mut left) = (self.next, take);
            while left > 0 {
                match runs.last_mut() {
                    Some(r) if r.0 + r.1 == at && r.1 < MAX_EXTENT => {
                        let l = left.min(MAX_EXTENT - r.1);
                        r.1 += l;
                        at += l;
                        left -= l;
                    }
                    _ => {
                        let l = left.min(MAX_EXTENT);
                        runs.push((at, l));
                        at += l;
                        left -= l;
                    }
                }
            }
            self.next += take;
            n -= take;
        }
        Ok(runs)
    }
}

/// An inode's blocks: the extents and the extent leaf blocks.
#[derive(Default)]
struct Mapping {
    extents: Vec<Extent>,
    /// Leaf blocks of a depth-1 tree with their first file block.
    leaves: Vec<(u32, u64)>,
}

impl Mapping {
    fn blocks(&self) -> u64 {
        self.extents.iter().map(|e| u64::from(e.len)).sum::<u64>() + self.leaves.len() as u64
    }
}

struct Plan {
    g: Geometry,
    tree: Tree,
    csum_seed: u32,
    seed: [u32; 4],
    /// Per node: its blocks.
    maps: Vec<Mapping>,
    /// Per directory node: its blocks' content and whether it is an htree.
    dirs: Vec<Option<(Vec<Vec<u8>>, bool)>>,
    /// First block not handed out.
    used_end: u64,
}

fn node_path(tree: &Tree, mut i: usize) -> String {
    let mut parts = Vec::new();
    while i != 0 {
        parts.push(String::from_utf8_lossy(&tree.nodes[i].name).into_owned());
        i = tree.nodes[i].parent;
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}

impl Plan {
    fn new(size: u64, opts: &Ext4Options, root: &Path) -> Result<Plan> {
        if opts.label.len() > 16 {
            return Err(Error::invalid(format!(
                "ext4 label {:?}: longer than 16 bytes",
                opts.label
            )));
        }
        let tree = Tree::scan(root)?;
        let bs = opts.block_size.unwrap_or_else(|| default_block_size(size));
        let g = Geometry::new(size, bs, tree.last_ino())?;
        let csum_seed = ondisk::crc32c(!0, opts.uuid.as_bytes());
        let hb = opts.hash_seed.as_bytes();
        let seed = std::array::from_fn(|k| {
            u32::from_le_bytes(hb[4 * k..4 * k + 4].try_into().expect("4 bytes"))
        });
        let mut plan = Plan {
            g,
            tree,
            csum_seed,
            seed,
            maps: Vec::new(),
            dirs: Vec::new(),
            used_end: 0,
        };
        for i in 0..plan.tree.nodes.len() {
            let d = plan.dir_blocks(i)?;
            plan.dirs.push(d);
        }
        let mut alloc = Allocator {
            g: &plan.g,
            next: plan.g.meta_end(),
        };
        let bs = plan.g.bs;
        let leaf_cap = ondisk::leaf_capacity(bs as usize);
        for (i, n) in plan.tree.nodes.iter().enumerate() {
            let blocks = match (&n.kind, &plan.dirs[i]) {
                (Kind::File { len, .. }, _) => len.div_ceil(bs),
                (Kind::Dir { .. }, Some((b, _))) => b.len() as u64,
                (Kind::Dir { .. }, None) => unreachable!("directories have blocks"),
            };
            let what = || format!("{:?}", node_path(&plan.tree, i));
            let runs = alloc.alloc(blocks, &what)?;
            let mut file_block = 0u64;
            let mut extents = Vec::with_capacity(runs.len());
            for (start, len) in runs {
                extents.push(Extent {
                    file_block: u32::try_from(file_block).map_err(|_| {
                        Error::unsupported(format!("{}: file too large for ext4", what()))
                    })?,
                    start,
                    len: len as u16,
                });
                file_block += len;
            }
            let mut map = Mapping {
                extents,
                leaves: Vec::new(),
            };
            if map.extents.len() > 4 {
                let n_leaves = map.extents.len().div_ceil(leaf_cap);
                if n_leaves > 4 {
                    return Err(Error::unsupported(format!(
                        "{}: more than {} extents",
                        what(),
                        4 * leaf_cap
                    )));
                }
                for chunk in map.extents.chunks(leaf_cap) {
                    let r = alloc.alloc(1, &what)?;
                    map.leaves.push((chunk[0].file_block, r[0].0));
                }
            }
            plan.maps.push(map);
        }
        plan.used_end = alloc.next;
        Ok(plan)
    }

    /// The blocks of directory `i` (None for files).
    fn dir_blocks(&self, i: usize) -> Result<Option<(Vec<Vec<u8>>, bool)>> {
        let n = &self.tree.nodes[i];
        let Kind::Dir { children } = &n.kind else {
            return Ok(None);
        };
        let bs = self.g.bs as usize;
        let ino = n.ino;
        let parent = self.tree.nodes[n.parent].ino;
        let entry = |c: usize| {
            let c = &self.tree.nodes[c];
            DirEntry {
                ino: c.ino,
                ftype: match c.kind {
                    Kind::Dir { .. } => ondisk::FT_DIR,
                    Kind::File { .. } => ondisk::FT_REG_FILE,
                },
                name: &c.name,
            }
        };
        let mut linear = vec![
            DirEntry {
                ino,
                ftype: ondisk::FT_DIR,
                name: b".",
            },
            DirEntry {
                ino: parent,
                ftype: ondisk::FT_DIR,
                name: b"..",
            },
        ];
        linear.extend(children.iter().map(|&c| entry(c)));
        let room = bs - ondisk::DIR_TAIL;
        let total: usize = linear.iter().map(|e| ondisk::rec_len(e.name.len())).sum();
        if total <= room {
            let b = ondisk::dir_leaf(bs, self.csum_seed, ino, &linear);
            return Ok(Some((vec![b], false)));
        }
        // An htree: leaves of entries in hash order, indexed by the root block.
        let version = HashVersion::HalfMd4;
        let mut hashed: Vec<(u32, u32, DirEntry)> = children
            .iter()
            .map(|&c| {
                let e = entry(c);
                let (h, m) = ondisk::dirhash(version, e.name, &self.seed);
                (h, m, e)
            })
            .collect();
        hashed.sort_by(|a, b| (a.0, a.1, a.2.name).cmp(&(b.0, b.1, b.2.name)));
        let mut leaves: Vec<Vec<DirEntry>> = Vec::new();
        let mut index: Vec<(u32, u32)> = Vec::new();
        let mut used = room;
        let mut last_hash = None;
        for (h, _, e) in hashed {
            let len = ondisk::rec_len(e.name.len());
            if used + len > room {
                // A leaf that continues the previous leaf's hash is marked (low bit).
                let mark = u32::from(last_hash == Some(h));
                index.push((h | mark, leaves.len() as u32 + 1));
                leaves.push(Vec::new());
                used = 0;
            }
            used += len;
            last_hash = Some(h);
            leaves.last_mut().expect("a leaf").push(e);
        }
        let (root_limit, node_limit) = (ondisk::dx_root_limit(bs), ondisk::dx_node_limit(bs));
        if index.len() <= root_limit {
            let mut blocks = vec![ondisk::dx_root(
                bs,
                self.csum_seed,
                ino,
                parent,
                version,
                0,
                &index,
            )];
            for l in &leaves {
                blocks.push(ondisk::dir_leaf(bs, self.csum_seed, ino, l));
            }
            return Ok(Some((blocks, true)));
        }
        // Two levels: the root indexes interior nodes (blocks 1..=n), each indexing up to
        // a node's worth of leaves (the blocks after them).
        let nodes = index.len().div_ceil(node_limit);
        if nodes > root_limit {
            return Err(Error::unsupported(format!(
                "ext4 directory {:?}: {} entries need a third htree level",
                node_path(&self.tree, i),
                children.len()
            )));
        }
        let shifted: Vec<(u32, u32)> = index.iter().map(|&(h, b)| (h, b + nodes as u32)).collect();
        let groups: Vec<&[(u32, u32)]> = shifted.chunks(node_limit).collect();
        let root_index: Vec<(u32, u32)> = groups
            .iter()
            .enumerate()
            .map(|(k, g)| (g[0].0, k as u32 + 1))
            .collect();
        let mut blocks = vec![ondisk::dx_root(
            bs,
            self.csum_seed,
            ino,
            parent,
            version,
            1,
            &root_index,
        )];
        for g in &groups {
            blocks.push(ondisk::dx_node(bs, self.csum_seed, ino, g));
        }
        for l in &leaves {
            blocks.push(ondisk::dir_leaf(bs, self.csum_seed, ino, l));
        }
        Ok(Some((blocks, true)))
    }

    fn inode(&self, i: usize, epoch: i64) -> [u8; ondisk::INODE_SIZE] {
        let n = &self.tree.nodes[i];
        let map = &self.maps[i];
        let i_block = if map.leaves.is_empty() {
            ondisk::inline_extents(&map.extents)
        } else {
            ondisk::index_root(&map.leaves)
        };
        let sectors = map.blocks() * (self.g.bs / 512);
        let (mode, links, size, flags) = match (&n.kind, &self.dirs[i]) {
            (Kind::Dir { children }, Some((blocks, htree))) => {
                let subdirs = children
                    .iter()
                    .filter(|&&c| matches!(self.tree.nodes[c].kind, Kind::Dir { .. }))
                    .count();
                let links = u16::try_from(2 + subdirs).unwrap_or(1); // dir_nlink: 1 = many
                let flags =
                    ondisk::EXT4_EXTENTS_FL | if *htree { ondisk::EXT4_INDEX_FL } else { 0 };
                (
                    ondisk::S_IFDIR | n.mode,
                    links,
                    blocks.len() as u64 * self.g.bs,
                    flags,
                )
            }
            (Kind::File { len, .. }, _) => {
                (ondisk::S_IFREG | n.mode, 1, *len, ondisk::EXT4_EXTENTS_FL)
            }
            (Kind::Dir { .. }, None) => unreachable!("directories have blocks"),
        };
        ondisk::inode(
            self.csum_seed,
            &InodeInfo {
                ino: n.ino,
                mode,
                links,
                size,
                sectors,
                flags,
                epoch,
                i_block: &i_block,
            },
        )
    }

    fn write(&self, file: &File, offset: u64, opts: &Ext4Options) -> Result<()> {
        let g = &self.g;
        let bs = g.bs;
        let out = Out::new(file, offset, "writing the ext4 filesystem");
        let zeroed = out.prepare(g.blocks * bs)?;
        // Nothing of an earlier filesystem's signature shows through.
        out.at(0, &[0u8; 1024])?;
        for (i, n) in self.tree.nodes.iter().enumerate() {
            let map = &self.maps[i];
            match (&n.kind, &self.dirs[i]) {
                (Kind::File { path, len }, _) => {
                    self.write_data(&out, path, *len, &map.extents, zeroed)?
                }
                (Kind::Dir { .. }, Some((blocks, _))) => {
                    let mut k = 0;
                    for e in &map.extents {
                        for b in 0..u64::from(e.len) {
                            out.at((e.start + b) * bs, &blocks[k])?;
                            k += 1;
                        }
                    }
                }
                (Kind::Dir { .. }, None) => unreachable!("directories have blocks"),
            }
            let cap = ondisk::leaf_capacity(bs as usize);
            for (chunk, &(_, leaf)) in map.extents.chunks(cap).zip(&map.leaves) {
                let b = ondisk::extent_leaf(bs as usize, self.csum_seed, n.ino, chunk);
                out.at(leaf * bs, &b)?;
            }
        }

        // Inode tables: the used inodes, group by group (the rest stays zero).
        let last = self.tree.last_ino();
        let ipg = g.ipg;
        let mut table = vec![0u8; (ipg as usize) * ondisk::INODE_SIZE];
        let by_ino: std::collections::HashMap<u32, usize> = self
            .tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.ino, i))
            .collect();
        let mut descs = Vec::with_capacity(g.groups as usize * 64);
        let mut free_blocks_total = 0u64;
        let mut free_inodes_total = 0u64;
        for grp in 0..g.groups {
            let first = grp * ipg + 1;
            let used_inodes = last.saturating_sub(first - 1).min(ipg);
            table.fill(0);
            let mut dirs = 0u32;
            for k in 0..used_inodes {
                if let Some(&i) = by_ino.get(&(first + k)) {
                    let b = self.inode(i, opts.epoch);
                    let o = k as usize * ondisk::INODE_SIZE;
                    table[o..o + ondisk::INODE_SIZE].copy_from_slice(&b);
                    if matches!(self.tree.nodes[i].kind, Kind::Dir { .. }) {
                        dirs += 1;
                    }
                }
            }
            let write_len = if zeroed {
                used_inodes as usize * ondisk::INODE_SIZE
            } else {
                table.len()
            };
            out.at(g.inode_table(grp) * bs, &table[..write_len])?;

            // Inode bitmap: the used inodes, then padding bits set to the block's end.
            let mut ib = vec![0u8; bs as usize];
            set_bits(&mut ib, 0, u64::from(used_inodes));
            set_bits(&mut ib, u64::from(ipg), bs * 8);
            let ib_csum = ondisk::crc32c(self.csum_seed, &ib[..ipg as usize / 8]);
            out.at(g.inode_bitmap(grp) * bs, &ib)?;

            // Block bitmap: metadata and everything handed out, and the backups.
            let start = g.group_start(grp);
            let len = g.group_len(grp);
            let mut bb = vec![0u8; bs as usize];
            let used_to = self.used_end.clamp(start, start + len) - start;
            set_bits(&mut bb, 0, used_to);
            set_bits(&mut bb, 0, g.backup_blocks(grp));
            set_bits(&mut bb, len, bs * 8);
            let used_blocks = used_to.max(g.backup_blocks(grp));
            let bb_csum = ondisk::crc32c(self.csum_seed, &bb[..(g.bpg / 8) as usize]);
            out.at(g.block_bitmap(grp) * bs, &bb)?;

            let free_blocks = len - used_blocks;
            let free_inodes = ipg - used_inodes;
            free_blocks_total += free_blocks;
            free_inodes_total += u64::from(free_inodes);
            descs.extend_from_slice(&ondisk::group_desc(
                self.csum_seed,
                grp,
                &ondisk::GroupDesc {
                    block_bitmap: g.block_bitmap(grp),
                    inode_bitmap: g.inode_bitmap(grp),
                    inode_table: g.inode_table(grp),
                    free_blocks: free_blocks as u32,
                    free_inodes,
                    used_dirs: dirs,
                    itable_unused: free_inodes,
                    block_bitmap_csum: bb_csum,
                    inode_bitmap_csum: ib_csum,
                },
            ));
        }
        descs.resize((g.gdt_blocks * bs) as usize, 0);

        let uuid = *opts.uuid.as_bytes();
        let seed = *opts.hash_seed.as_bytes();
        let inodes_count = u32::try_from(u64::from(ipg) * u64::from(g.groups))
            .map_err(|_| Error::unsupported("too many ext4 inodes"))?;
        for grp in 0..g.groups {
            if !g.has_super(grp) {
                continue;
            }
            let sb = ondisk::superblock(&ondisk::Super {
                inodes_count,
                blocks_count: g.blocks,
                free_blocks: free_blocks_total,
                free_inodes: free_inodes_total as u32,
                first_data_block: g.fdb as u32,
                log_block_size: g.log_bs,
                blocks_per_group: g.bpg as u32,
                inodes_per_group: ipg,
                epoch: opts.epoch,
                uuid: &uuid,
                label: opts.label.as_bytes(),
                hash_seed: &seed,
                hash_version: HashVersion::HalfMd4,
                group_nr: grp as u16,
            });
            let block = g.group_start(grp);
            let sb_at = if grp == 0 { 1024 } else { block * bs };
            out.at(sb_at, &sb)?;
            out.at((block + 1) * bs, &descs)?;
        }
        Ok(())
    }

    /// Streams one file's content into its extents; the last block's tail is zero.
    fn write_data(
        &self,
        out: &Out,
        path: &Path,
        len: u64,
        extents: &[Extent],
        zeroed: bool,
    ) -> Result<()> {
        let bs = self.g.bs;
        let mut reader = File::open(path).map_err(|e| Error::io_op("reading", path, e))?;
        let runs = extents
            .iter()
            .map(|e| (e.start * bs, u64::from(e.len) * bs));
        out.copy_into(&mut reader, len, runs, zeroed, Some(path))
    }
}

/// Sets bits `from..to` of a bitmap.
fn set_bits(b: &mut [u8], from: u64, to: u64) {
    let mut k = from;
    while k < to {
        if k.is_multiple_of(8) && k + 8 <= to {
            b[(k / 8) as usize] = 0xFF;
            k += 8;
        } else {
            b[(k / 8) as usize] |= 1 << (k % 8);
            k += 1;
        }
    }
}

/// Writes an ext4 filesystem of (at most) `size` bytes holding the tree under `root`
/// into `out` at byte `offset`. The range is first made a hole where the file system
/// allows it, so what was there does not show through.
pub fn write(out: &File, offset: u64, size: u64, opts: &Ext4Options, root: &Path) -> Result<()> {
    let plan = Plan::new(size, opts, root)?;
    plan.write(out, offset, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let g = Geometry::new(8 << 30, 4096, 100).unwrap();
        let with: Vec<u32> = (0..g.groups).filter(|&k| g.has_super(k)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn set_bits_ranges() {
        let mut b = [0u8; 4];
        set_bits(&mut b, 3, 20);
        assert_eq!(b, [0xF8, 0xFF, 0x0F, 0]);
    }
}
