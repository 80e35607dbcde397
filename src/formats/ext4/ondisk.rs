//! Encoders of ext4's on-disk structures: the superblock, 64-byte group descriptors,
//! inodes with extent trees, directory blocks (linear and htree), and their
//! metadata_csum checksums; and the directory name hashes (half-MD4, TEA) that order
//! an htree. Layouts and checksum coverage from e2fsprogs `lib/ext2fs/ext2_fs.h`,
//! `ext3_extents.h`, `csum.c` and `dirhash.c`. Everything is little-endian.

/// CRC32c as ext4 chains it: the raw register from `seed`, no final inversion
/// (`ext2fs_crc32c_le`). The `crc` crate's digests apply init/xorout around one
/// message; the checksums here chain several pieces from an arbitrary seed, so the
/// reflected Castagnoli table is applied directly.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

pub fn le16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn le32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub const S_IFDIR: u16 = 0o040000;
pub const S_IFREG: u16 = 0o100000;
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;

pub const INODE_SIZE: usize = 256;
/// `i_extra_isize`: the large inode's fields up to `i_projid`.
const EXTRA_ISIZE: u16 = 32;

pub const EXT4_EXTENTS_FL: u32 = 0x0008_0000;
pub const EXT4_INDEX_FL: u32 = 0x0000_1000;

// Feature bits (`ext2_fs.h`).
pub const COMPAT_EXT_ATTR: u32 = 0x0008;
pub const COMPAT_DIR_INDEX: u32 = 0x0020;
pub const INCOMPAT_FILETYPE: u32 = 0x0002;
pub const INCOMPAT_EXTENTS: u32 = 0x0040;
pub const INCOMPAT_64BIT: u32 = 0x0080;
pub const INCOMPAT_FLEX_BG: u32 = 0x0200;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
pub const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;

/// `s_flags`: names hash with unsigned characters (what mke2fs sets where `char` is
/// unsigned; the flag makes every reader hash the same way).
pub const FLAGS_UNSIGNED_HASH: u32 = 0x0002;

/// `bg_flags`: the inode table is zeroed.
pub const BG_INODE_ZEROED: u16 = 0x0004;

/// Directory hash versions (`s_def_hash_version`, `dx_root_info.hash_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashVersion {
    HalfMd4 = 1,
    Tea = 2,
}

/// Packs up to `num` words of `msg` as `str2hashbuf` does (unsigned characters).
fn str2hashbuf(msg: &[u8], num: usize) -> [u32; 8] {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let mut val = pad;
    let mut w = 0;
    for (i, &c) in msg.iter().take(num * 4).enumerate() {
        val = u32::from(c).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < num {
        out[w] = val;
    }
    out
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);
    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea(buf: &mut [u32; 4], x: &[u32; 8]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut sum, mut b0, mut b1) = (0u32, buf[0], buf[1]);
    let (a, b, c, d) = (x[0], x[1], x[2], x[3]);
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            ((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)),
        );
        b1 = b1.wrapping_add(
            ((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

/// The (major, minor) hash of a directory entry name (`ext2fs_dirhash`, unsigned
/// variant); the major hash has its low bit clear.
pub fn dirhash(version: HashVersion, name: &[u8], seed: &[u32; 4]) -> (u32, u32) {
    let mut buf = if seed.iter().any(|&w| w != 0) {
        *seed
    } else {
        [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
    };
    let (hash, minor) = match version {
        HashVersion::HalfMd4 => {
            for chunk in tails(name, 32) {
                half_md4(&mut buf, &str2hashbuf(chunk, 8));
            }
            (buf[1], buf[2])
        }
        HashVersion::Tea => {
            for chunk in tails(name, 16) {
                tea(&mut buf, &str2hashbuf(chunk, 4));
            }
            (buf[0], buf[1])
        }
    };
    (hash & !1, minor)
}

/// The remaining names from each `step`-byte offset, as `ext2fs_dirhash` loops
/// (`len` is the remaining length there, which `str2hashbuf` pads with).
fn tails(name: &[u8], step: usize) -> impl Iterator<Item = &[u8]> {
    (0..name.len()).step_by(step).map(move |i| &name[i..])
}

/// What `inode` encodes.
pub struct InodeInfo<'a> {
    pub ino: u32,
    pub mode: u16,
    pub links: u16,
    pub size: u64,
    /// 512-byte sectors in use (data and extent tree blocks).
    pub sectors: u64,
    pub flags: u32,
    pub epoch: i64,
    /// The 60-byte `i_block` area (extent tree root).
    pub i_block: &'a [u8; 60],
}

/// Seconds and the `_extra` epoch bits of a timestamp.
fn time_parts(epoch: i64) -> (u32, u32) {
    let lo = epoch as u32;
    let extra = ((epoch - i64::from(lo as i32)) >> 32) as u32 & 3;
    (lo, extra)
}

/// A 256-byte inode with its checksum (generation 0, uid/gid 0).
pub fn inode(csum_seed: u32, i: &InodeInfo) -> [u8; INODE_SIZE] {
    let mut b = [0u8; INODE_SIZE];
    le16(&mut b, 0x00, i.mode);
    le32(&mut b, 0x04, i.size as u32);
    let (t, extra) = time_parts(i.epoch);
    for off in [0x08, 0x0C, 0x10, 0x90] {
        le32(&mut b, off, t); // atime, ctime, mtime, crtime
    }
    for off in [0x84, 0x88, 0x8C, 0x94] {
        le32(&mut b, off, extra); // ctime, mtime, atime, crtime _extra
    }
    le16(&mut b, 0x1A, i.links);
    le32(&mut b, 0x1C, i.sectors as u32);
    le32(&mut b, 0x20, i.flags);
    b[0x28..0x64].copy_from_slice(i.i_block);
    le32(&mut b, 0x6C, (i.size >> 32) as u32);
    le16(&mut b, 0x74, (i.sectors >> 32) as u16);
    le16(&mut b, 0x80, EXTRA_ISIZE);
    let crc = crc32c(crc32c(crc32c(csum_seed, &i.ino.to_le_bytes()), &[0; 4]), &b);
    le16(&mut b, 0x7C, crc as u16);
    le16(&mut b, 0x82, (crc >> 16) as u16);
    b
}

/// An extent: `len` blocks of the file from `file_block`, on disk at `start`.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub file_block: u32,
    pub start: u64,
    pub len: u16,
}

const EXTENT_MAGIC: u16 = 0xF30A;

fn extent_header(b: &mut [u8], entries: u16, max: u16, depth: u16) {
    le16(b, 0, EXTENT_MAGIC);
    le16(b, 2, entries);
    le16(b, 4, max);
    le16(b, 6, depth);
}

fn put_extent(b: &mut [u8], e: &Extent) {
    le32(b, 0, e.file_block);
    le16(b, 4, e.len);
    le16(b, 6, (e.start >> 32) as u16);
    le32(b, 8, e.start as u32);
}

/// The inode's extent root holding the extents themselves (at most 4).
pub fn inline_extents(exts: &[Extent]) -> [u8; 60] {
    let mut b = [0u8; 60];
    extent_header(&mut b, exts.len() as u16, 4, 0);
    for (k, e) in exts.iter().enumerate() {
        put_extent(&mut b[12 + 12 * k..], e);
    }
    b
}

/// The inode's extent root pointing at leaf blocks: (first file block, leaf block).
pub fn index_root(leaves: &[(u32, u64)]) -> [u8; 60] {
    let mut b = [0u8; 60];
    extent_header(&mut b, leaves.len() as u16, 4, 1);
    for (k, &(first, leaf)) in leaves.iter().enumerate() {
        let o = 12 + 12 * k;
        le32(&mut b, o, first);
        le32(&mut b, o + 4, leaf as u32);
        le16(&mut b, o + 8, (leaf >> 32) as u16);
    }
    b
}

/// Extents one leaf block holds.
pub fn leaf_capacity(block_size: usize) -> usize {
    (block_size - 12) / 12
}

/// An extent leaf block of inode `ino`, with its tail checksum.
pub fn extent_leaf(block_size: usize, csum_seed: u32, ino: u32, exts: &[Extent]) -> Vec<u8> {
    let max = leaf_capacity(block_size);
    let mut b = vec![0u8; block_size];
    extent_header(&mut b, exts.len() as u16, max as u16, 0);
    for (k, e) in exts.iter().enumerate() {
        put_extent(&mut b[12 + 12 * k..], e);
    }
    let tail = 12 + 12 * max;
    let crc = crc32c(inode_seed(csum_seed, ino), &b[..tail]);
    le32(&mut b, tail, crc);
    b
}

/// The checksum seed of inode `ino`'s blocks (generation 0).
fn inode_seed(csum_seed: u32, ino: u32) -> u32 {
    crc32c(crc32c(csum_seed, &ino.to_le_bytes()), &[0; 4])
}

/// A directory entry: inode, file type, name.
#[derive(Debug, Clone)]
pub struct DirEntry<'a> {
    pub ino: u32,
    pub ftype: u8,
    pub name: &'a [u8],
}

/// Bytes an entry takes at its smallest.
pub fn rec_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// Length of the checksum tail of a leaf block.
pub const DIR_TAIL: usize = 12;

/// A directory leaf block of directory `dir_ino`: `entries` packed in order, the
/// last stretched to the checksum tail.
pub fn dir_leaf(block_size: usize, csum_seed: u32, dir_ino: u32, entries: &[DirEntry]) -> Vec<u8> {
    let mut b = vec![0u8; block_size];
    let end = block_size - DIR_TAIL;
    let mut off = 0;
    for (k, e) in entries.iter().enumerate() {
        let len = if k + 1 == entries.len() {
            end - off
        } else {
            rec_len(e.name.len())
        };
        le32(&mut b, off, e.ino);
        le16(&mut b, off + 4, len as u16);
        b[off + 6] = e.name.len() as u8;
        b[off + 7] = e.ftype;
        b[off + 8..off + 8 + e.name.len()].copy_from_slice(e.name);
        off += len;
    }
    if entries.is_empty() {
        le16(&mut b, 4, end as u16); // one empty entry spanning the block
    }
    // The tail: a zero-inode entry of 12 bytes, file type 0xDE, then the checksum.
    le16(&mut b, end + 4, DIR_TAIL as u16);
    b[end + 7] = 0xDE;
    let crc = crc32c(inode_seed(csum_seed, dir_ino), &b[..end]);
    le32(&mut b, end + 8, crc);
    b
}

/// Index entries an htree root block holds (with the checksum tail).
pub fn dx_root_limit(block_size: usize) -> usize {
    (block_size - 32 - 8) / 8
}

/// Index entries an htree interior node holds (with the checksum tail).
pub fn dx_node_limit(block_size: usize) -> usize {
    (block_size - 8 - 8) / 8
}

/// An htree interior node of directory `ino`: an empty entry spanning the block, then
/// the index of its leaves, the first hash implied by the parent's entry.
pub fn dx_node(block_size: usize, csum_seed: u32, ino: u32, index: &[(u32, u32)]) -> Vec<u8> {
    let mut b = vec![0u8; block_size];
    le16(&mut b, 4, block_size as u16);
    dx_entries(&mut b, 8, dx_node_limit(block_size), csum_seed, ino, index);
    b
}

/// Writes count/limit and the entries at `at` of an index block, and its checksum tail.
fn dx_entries(
    b: &mut [u8],
    at: usize,
    limit: usize,
    csum_seed: u32,
    ino: u32,
    index: &[(u32, u32)],
) {
    le16(b, at, limit as u16);
    le16(b, at + 2, index.len() as u16);
    for (k, &(hash, block)) in index.iter().enumerate() {
        if k > 0 {
            le32(b, at + 8 * k, hash);
        }
        le32(b, at + 8 * k + 4, block);
    }
    let tail = at + 8 * limit;
    let size = at + 8 * index.len();
    let crc = crc32c(inode_seed(csum_seed, ino), &b[..size]);
    let crc = crc32c(crc32c(crc, &b[tail..tail + 4]), &[0; 4]);
    le32(b, tail + 4, crc);
}

/// The htree root block of directory `ino` (parent `parent`): `.` and `..` and the
/// index of the leaves (`levels` 0) or of interior nodes (1), `(hash, block)` with the
/// first hash implied 0.
pub fn dx_root(
    block_size: usize,
    csum_seed: u32,
    ino: u32,
    parent: u32,
    version: HashVersion,
    levels: u8,
    index: &[(u32, u32)],
) -> Vec<u8> {
    let mut b = vec![0u8; block_size];
    le32(&mut b, 0, ino);
    le16(&mut b, 4, 12);
    b[6] = 1;
    b[7] = FT_DIR;
    b[8] = b'.';
    le32(&mut b, 12, parent);
    le16(&mut b, 16, (block_size - 12) as u16);
    b[18] = 2;
    b[19] = FT_DIR;
    b[20] = b'.';
    b[21] = b'.';
    // dx_root_info: reserved, hash version, info length 8, indirect levels.
    b[28] = version as u8;
    b[29] = 8;
    b[30] = levels;
    dx_entries(&mut b, 32, dx_root_limit(block_size), csum_seed, ino, index);
    b
}

/// The superblock's variable fields.
pub struct Super<'a> {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub free_inodes: u32,
    pub first_data_block: u32,
    pub log_block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub epoch: i64,
    pub uuid: &'a [u8; 16],
    pub label: &'a [u8],
    pub hash_seed: &'a [u8; 16],
    pub hash_version: HashVersion,
    pub group_nr: u16,
}

/// A 1024-byte superblock with its checksum.
pub fn superblock(s: &Super) -> [u8; 1024] {
    let mut b = [0u8; 1024];
    le32(&mut b, 0x00, s.inodes_count);
    le32(&mut b, 0x04, s.blocks_count as u32);
    le32(&mut b, 0x0C, s.free_blocks as u32);
    le32(&mut b, 0x10, s.free_inodes);
    le32(&mut b, 0x14, s.first_data_block);
    le32(&mut b, 0x18, s.log_block_size);
    le32(&mut b, 0x1C, s.log_block_size); // clusters are blocks
    le32(&mut b, 0x20, s.blocks_per_group);
    le32(&mut b, 0x24, s.blocks_per_group);
    le32(&mut b, 0x28, s.inodes_per_group);
    let (t, _) = time_parts(s.epoch);
    le32(&mut b, 0x30, t); // last write
    le16(&mut b, 0x36, 0xFFFF); // no mount-count check
    le16(&mut b, 0x38, 0xEF53);
    le16(&mut b, 0x3A, 1); // clean
    le16(&mut b, 0x3C, 1); // errors: continue
    le32(&mut b, 0x40, t); // last check
    le32(&mut b, 0x4C, 1); // dynamic revision
    le32(&mut b, 0x54, 11); // first non-reserved inode
    le16(&mut b, 0x58, INODE_SIZE as u16);
    le16(&mut b, 0x5A, s.group_nr);
    le32(&mut b, 0x5C, COMPAT_EXT_ATTR | COMPAT_DIR_INDEX);
    le32(
        &mut b,
        0x60,
        INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG,
    );
    le32(
        &mut b,
        0x64,
        RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE
            | RO_COMPAT_METADATA_CSUM,
    );
    b[0x68..0x78].copy_from_slice(s.uuid);
    b[0x78..0x78 + s.label.len()].copy_from_slice(s.label);
    b[0xEC..0xFC].copy_from_slice(s.hash_seed);
    b[0xFC] = s.hash_version as u8;
    le16(&mut b, 0xFE, 64); // group descriptor size
    le32(&mut b, 0x108, t); // mkfs time
    le32(&mut b, 0x150, (s.blocks_count >> 32) as u32);
    le32(&mut b, 0x158, (s.free_blocks >> 32) as u32);
    le16(&mut b, 0x15C, EXTRA_ISIZE);
    le16(&mut b, 0x15E, EXTRA_ISIZE);
    le32(&mut b, 0x160, FLAGS_UNSIGNED_HASH);
    b[0x174] = 4; // 16 groups per flex group
    b[0x175] = 1; // checksum type: crc32c
    let crc = crc32c(!0, &b[..0x3FC]);
    le32(&mut b, 0x3FC, crc);
    b
}

/// One group's descriptor fields.
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub itable_unused: u32,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

/// A 64-byte group descriptor of group `group` with its checksum.
pub fn group_desc(csum_seed: u32, group: u32, g: &GroupDesc) -> [u8; 64] {
    let mut b = [0u8; 64];
    le32(&mut b, 0x00, g.block_bitmap as u32);
    le32(&mut b, 0x04, g.inode_bitmap as u32);
    le32(&mut b, 0x08, g.inode_table as u32);
    le16(&mut b, 0x0C, g.free_blocks as u16);
    le16(&mut b, 0x0E, g.free_inodes as u16);
    le16(&mut b, 0x10, g.used_dirs as u16);
    le16(&mut b, 0x12, BG_INODE_ZEROED);
    le16(&mut b, 0x18, g.block_bitmap_csum as u16);
    le16(&mut b, 0x1A, g.inode_bitmap_csum as u16);
    le16(&mut b, 0x1C, g.itable_unused as u16);
    le32(&mut b, 0x20, (g.block_bitmap >> 32) as u32);
    le32(&mut b, 0x24, (g.inode_bitmap >> 32) as u32);
    le32(&mut b, 0x28, (g.inode_table >> 32) as u32);
    le16(&mut b, 0x2C, (g.free_blocks >> 16) as u16);
    le16(&mut b, 0x2E, (g.free_inodes >> 16) as u16);
    le16(&mut b, 0x30, (g.used_dirs >> 16) as u16);
    le16(&mut b, 0x32, (g.itable_unused >> 16) as u16);
    le16(&mut b, 0x38, (g.block_bitmap_csum >> 16) as u16);
    le16(&mut b, 0x3A, (g.inode_bitmap_csum >> 16) as u16);
    let crc = crc32c(crc32c(csum_seed, &group.to_le_bytes()), &b);
    le16(&mut b, 0x1E, crc as u16);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli_without_final_inversion() {
        let iscsi = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
        assert_eq!(crc32c(!0, b"123456789") ^ !0, iscsi.checksum(b"123456789"));
        // Chaining is the same as one pass.
        assert_eq!(
            crc32c(crc32c(!0, b"1234"), b"56789"),
            crc32c(!0, b"123456789")
        );
    }

    #[test]
    fn str2hashbuf_pads_with_the_length() {
        let w = str2hashbuf(b"abcde", 8);
        let pad = 0x0505_0505u32;
        assert_eq!(w[0], u32::from_be_bytes(*b"abcd"));
        assert_eq!(w[1], (pad << 8) | u32::from(b'e'));
        assert_eq!(w[2], pad);
        assert_eq!(w[7], pad);
    }

    #[test]
    fn hashes_have_the_low_bit_clear_and_depend_on_the_seed() {
        let seed = [1, 2, 3, 4];
        for v in [HashVersion::HalfMd4, HashVersion::Tea] {
            let (h, _) = dirhash(v, b"sha256-0123456789abcdef", &seed);
            assert_eq!(h & 1, 0);
            assert_ne!(h, dirhash(v, b"sha256-0123456789abcdef", &[5, 6, 7, 8]).0);
        }
    }
}
