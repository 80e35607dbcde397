//! Encoders of the on-disk structures: superblock, AG headers (AGF, AGI, AGFL),
//! short-format btree blocks, v3 inodes, short-form and single-block directories and
//! the log's unmount record. Layouts from xfsprogs 6.1 `libxfs/xfs_format.h`,
//! `xfs_da_format.h` and `xfs_log_format.h`; the log record as `libxfs_log_header`
//! (`libxfs/util.c`) writes it. Everything is big-endian except the CRCs (CRC32c,
//! stored little-endian, computed with the CRC field zeroed).

use uuid::Uuid;

use super::geometry::{BLOCK_LOG, BLOCK_SIZE, Geometry, INODE_SIZE};

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// "Null" AG block / AG inode number.
pub const NULL32: u32 = u32::MAX;
/// Null filesystem inode number.
pub const NULL64: u64 = u64::MAX;

pub const OWN_FS: u64 = -3i64 as u64;
pub const OWN_LOG: u64 = -4i64 as u64;
pub const OWN_AG: u64 = -5i64 as u64;
pub const OWN_INOBT: u64 = -6i64 as u64;
pub const OWN_INODES: u64 = -7i64 as u64;
pub const OWN_REFC: u64 = -8i64 as u64;

pub const S_IFDIR: u16 = 0o040000;
pub const S_IFREG: u16 = 0o100000;
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;

const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
/// Size of the v3 inode core; the data fork starts here.
pub const INODE_CORE: usize = 176;
/// Extent records that fit in an inode's data fork.
pub const MAX_INLINE_EXTENTS: usize = (INODE_SIZE as usize - INODE_CORE) / 16;
/// Largest extent (`XFS_MAX_BMBT_EXTLEN`).
pub const MAX_EXTENT_BLOCKS: u64 = (1 << 21) - 1;

const SB_CRC_OFF: usize = 224;
const AGF_CRC_OFF: usize = 216;
const AGI_CRC_OFF: usize = 312;
const AGFL_CRC_OFF: usize = 32;
const BTREE_CRC_OFF: usize = 52;
const INODE_CRC_OFF: usize = 100;
const DIR3_CRC_OFF: usize = 4;
/// Header of a v5 short-format btree block.
pub const BTREE_HDR: usize = 56;

pub fn be16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
pub fn be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
pub fn be64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Stores the CRC32c of `b` (whose CRC field at `off` is zero) at `off`.
fn seal(b: &mut [u8], off: usize) {
    b[off..off + 4].fill(0);
    let crc = CRC32C.checksum(b);
    b[off..off + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Superblock counters and root inodes.
pub struct SbCounts {
    pub rootino: u64,
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
}

/// The superblock sector. `primary` is AG 0's; the others are the copies mkfs
/// leaves: marked in progress, without realtime inodes and counters, free blocks as
/// before any inode or file was allocated (`fdblocks_before`).
pub fn superblock(
    g: &Geometry,
    uuid: &Uuid,
    label: &[u8],
    counts: &SbCounts,
    primary: bool,
    fdblocks_before: u64,
) -> Vec<u8> {
    let mut b = vec![0u8; g.sector_size as usize];
    be32(&mut b, 0, 0x5846_5342); // XFSB
    be32(&mut b, 4, BLOCK_SIZE as u32);
    be64(&mut b, 8, g.dblocks);
    b[32..48].copy_from_slice(uuid.as_bytes());
    be64(&mut b, 48, g.fsbno(g.log_ag, g.log_agbno));
    be64(&mut b, 56, counts.rootino);
    let (rbm, rsum) = if primary {
        (counts.rootino + 1, counts.rootino + 2)
    } else {
        (NULL64, NULL64)
    };
    be64(&mut b, 64, rbm);
    be64(&mut b, 72, rsum);
    be32(&mut b, 80, 1); // rextsize
    be32(&mut b, 84, g.agblocks);
    be32(&mut b, 88, g.agcount);
    be32(&mut b, 96, g.logblocks);
    // Version 5 with NLINK, ALIGN, LOGV2, EXTFLG, DIRV2, MOREBITS (+ SECTOR when the
    // sectors are not 512 bytes).
    let sector_bit = if g.sector_size != 512 { 0x0800 } else { 0 };
    be16(&mut b, 100, 0xb4a5 | sector_bit);
    be16(&mut b, 102, g.sector_size as u16);
    be16(&mut b, 104, INODE_SIZE as u16);
    be16(&mut b, 106, (BLOCK_SIZE as u32 / INODE_SIZE) as u16);
    b[108..108 + label.len()].copy_from_slice(label);
    b[120] = BLOCK_LOG as u8;
    b[121] = g.sector_size.trailing_zeros() as u8;
    b[122] = INODE_SIZE.trailing_zeros() as u8;
    b[123] = (BLOCK_LOG - INODE_SIZE.trailing_zeros()) as u8;
    b[124] = g.agblklog as u8;
    b[126] = u8::from(!primary); // inprogress
    b[127] = 25; // imax_pct
    if primary {
        be64(&mut b, 128, counts.icount);
        be64(&mut b, 136, counts.ifree);
        be64(&mut b, 144, counts.fdblocks);
    } else {
        be64(&mut b, 144, fdblocks_before);
    }
    be32(&mut b, 180, super::geometry::CHUNK_BLOCKS); // inoalignmt
    if g.sector_size != 512 {
        b[193] = g.sector_size.trailing_zeros() as u8; // logsectlog
        be16(&mut b, 194, g.sector_size as u16);
        be32(&mut b, 196, g.sector_size); // logsunit: one log sector
    } else {
        be32(&mut b, 196, 1);
    }
    // LAZYSBCOUNT | ATTR2 | PROJID32 | CRC
    be32(&mut b, 200, 0x18a);
    be32(&mut b, 204, 0x18a);
    be32(&mut b, 212, 0xf); // ro_compat: FINOBT | RMAPBT | REFLINK | INOBTCNT
    be32(&mut b, 216, 0x2b); // incompat: FTYPE | SPINODES | BIGTIME | NREXT64
    be32(&mut b, 228, super::geometry::CHUNK_BLOCKS / 2); // spino_align
    seal(&mut b, SB_CRC_OFF);
    b
}

/// What the AGF records of an AG's free space.
pub struct AgfInfo {
    pub freeblks: u32,
    pub longest: u32,
    pub agfl_count: u32,
}

pub fn agf(g: &Geometry, uuid: &Uuid, agno: u32, info: &AgfInfo) -> Vec<u8> {
    let mut b = vec![0u8; g.sector_size as usize];
    be32(&mut b, 0, 0x5841_4746); // XAGF
    be32(&mut b, 4, 1);
    be32(&mut b, 8, agno);
    be32(&mut b, 12, g.ag_len(agno));
    be32(&mut b, 16, g.bno_root());
    be32(&mut b, 20, g.cnt_root());
    be32(&mut b, 24, g.rmap_root());
    be32(&mut b, 28, 1);
    be32(&mut b, 32, 1);
    be32(&mut b, 36, 1);
    // The free list as mkfs leaves it: slots 1..=count.
    be32(&mut b, 40, 1);
    be32(&mut b, 44, info.agfl_count);
    be32(&mut b, 48, info.agfl_count);
    be32(&mut b, 52, info.freeblks);
    be32(&mut b, 56, info.longest);
    b[64..80].copy_from_slice(uuid.as_bytes());
    be32(&mut b, 80, 1); // rmap_blocks
    be32(&mut b, 84, 1); // refcount_blocks
    be32(&mut b, 88, g.refc_root());
    be32(&mut b, 92, 1);
    seal(&mut b, AGF_CRC_OFF);
    b
}

pub struct AgiInfo {
    pub count: u32,
    pub freecount: u32,
    pub newino: u32,
}

pub fn agi(g: &Geometry, uuid: &Uuid, agno: u32, info: &AgiInfo) -> Vec<u8> {
    let mut b = vec![0u8; g.sector_size as usize];
    be32(&mut b, 0, 0x5841_4749); // XAGI
    be32(&mut b, 4, 1);
    be32(&mut b, 8, agno);
    be32(&mut b, 12, g.ag_len(agno));
    be32(&mut b, 16, info.count);
    be32(&mut b, 20, g.ino_root());
    be32(&mut b, 24, 1);
    be32(&mut b, 28, info.freecount);
    be32(&mut b, 32, info.newino);
    be32(&mut b, 36, NULL32); // dirino
    for i in 0..64 {
        be32(&mut b, 40 + 4 * i, NULL32);
    }
    b[296..312].copy_from_slice(uuid.as_bytes());
    be32(&mut b, 328, g.fino_root());
    be32(&mut b, 332, 1);
    be32(&mut b, 336, 1); // iblocks
    be32(&mut b, 340, 1); // fblocks
    seal(&mut b, AGI_CRC_OFF);
    b
}

/// The AG free list sector, holding `blocks` from slot 1 on.
pub fn agfl(g: &Geometry, uuid: &Uuid, agno: u32, blocks: &[u32]) -> Vec<u8> {
    let mut b = vec![0xffu8; g.sector_size as usize];
    b[..36].fill(0);
    be32(&mut b, 0, 0x5841_464c); // XAFL
    be32(&mut b, 4, agno);
    b[8..24].copy_from_slice(uuid.as_bytes());
    for (i, &bno) in blocks.iter().enumerate() {
        be32(&mut b, 36 + 4 * (i + 1), bno);
    }
    seal(&mut b, AGFL_CRC_OFF);
    b
}

/// Magic numbers of the v5 short-format btrees.
pub const BNO_MAGIC: u32 = 0x4142_3342; // AB3B
pub const CNT_MAGIC: u32 = 0x4142_3343; // AB3C
pub const INO_MAGIC: u32 = 0x4941_4233; // IAB3
pub const FINO_MAGIC: u32 = 0x4649_4233; // FIB3
pub const RMAP_MAGIC: u32 = 0x524d_4233; // RMB3
pub const REFC_MAGIC: u32 = 0x5233_4643; // R3FC

/// A btree leaf that is also the root: records of `rec_size` bytes, already encoded.
pub fn btree_leaf(
    g: &Geometry,
    uuid: &Uuid,
    agno: u32,
    agbno: u32,
    magic: u32,
    rec_size: usize,
    recs: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    be32(&mut b, 0, magic);
    be16(&mut b, 6, (recs.len() / rec_size) as u16);
    be32(&mut b, 8, NULL32);
    be32(&mut b, 12, NULL32);
    be64(&mut b, 16, g.daddr(agno, agbno));
    b[32..48].copy_from_slice(uuid.as_bytes());
    be32(&mut b, 48, agno);
    b[BTREE_HDR..BTREE_HDR + recs.len()].copy_from_slice(recs);
    seal(&mut b, BTREE_CRC_OFF);
    b
}

/// Records a leaf of `rec_size`-byte records holds.
pub fn leaf_capacity(rec_size: usize) -> usize {
    (BLOCK_SIZE as usize - BTREE_HDR) / rec_size
}

/// A bigtime timestamp: nanoseconds since 1901-12-13 (`XFS_BIGTIME_EPOCH_OFFSET`).
pub fn bigtime(epoch: u64) -> u64 {
    (epoch + (1u64 << 31)) * 1_000_000_000
}

/// The data fork of an inode.
pub enum Fork<'a> {
    /// Nothing (the realtime inodes, empty files).
    Empty,
    /// Short-form directory bytes.
    Local(&'a [u8]),
    /// File extents: (file block, filesystem block, length).
    Extents(&'a [(u64, u64, u64)]),
}

/// Fields of an allocated inode.
pub struct InodeInfo<'a> {
    pub ino: u64,
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    pub nblocks: u64,
    pub flags: u16,
    pub epoch: u64,
    pub fork: Fork<'a>,
}

/// An unallocated inode of a chunk as mkfs initializes it.
pub fn free_inode(uuid: &Uuid, ino: u64) -> Vec<u8> {
    let mut b = vec![0u8; INODE_SIZE as usize];
    be16(&mut b, 0, 0x494e); // IN
    b[4] = 3;
    be32(&mut b, 96, NULL32); // next_unlinked
    be64(&mut b, 152, ino);
    b[160..176].copy_from_slice(uuid.as_bytes());
    seal(&mut b, INODE_CRC_OFF);
    b
}

pub fn inode(uuid: &Uuid, i: &InodeInfo) -> Vec<u8> {
    let mut b = free_inode(uuid, i.ino);
    be16(&mut b, 2, i.mode);
    be32(&mut b, 16, i.nlink);
    let t = bigtime(i.epoch);
    for off in [32, 40, 48, 144] {
        be64(&mut b, off, t); // atime, mtime, ctime, crtime
    }
    be64(&mut b, 56, i.size);
    be64(&mut b, 64, i.nblocks);
    b[83] = FMT_EXTENTS; // attr fork format, as mkfs leaves it
    be16(&mut b, 90, i.flags);
    be64(&mut b, 104, 1); // change count
    be64(&mut b, 120, 0x18); // flags2: BIGTIME | NREXT64
    match i.fork {
        Fork::Empty => b[5] = FMT_EXTENTS,
        Fork::Local(data) => {
            b[5] = FMT_LOCAL;
            b[INODE_CORE..INODE_CORE + data.len()].copy_from_slice(data);
        }
        Fork::Extents(exts) => {
            b[5] = FMT_EXTENTS;
            be64(&mut b, 24, exts.len() as u64); // big_nextents
            for (n, &(off, start, len)) in exts.iter().enumerate() {
                // bmbt record: 1 bit unwritten, 54 bits file offset, 52 bits block, 21 bits length.
                let rec: u128 =
                    (u128::from(off) << 73) | (u128::from(start) << 21) | u128::from(len);
                let p = INODE_CORE + 16 * n;
                b[p..p + 16].copy_from_slice(&rec.to_be_bytes());
            }
        }
    }
    seal(&mut b, INODE_CRC_OFF);
    b
}

/// One entry of a directory as encoded: name, inode, file type.
pub struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: u64,
    pub ftype: u8,
}

/// Size of a data-block entry (`xfs_dir2_data_entsize` with file types).
fn data_entsize(namelen: usize) -> usize {
    (8 + 1 + namelen + 1 + 2).next_multiple_of(8)
}
/// Offset of the first entry after `.` and `..` in a v3 directory block.
const DIR3_FIRST_OFFSET: usize = 64 + 2 * 16;

/// The short-form directory (inode inline data), or `None` when it does not fit in
/// the inode. Inode numbers are all below 2^32 (AG 0), so 4-byte numbers.
pub fn shortform_dir(parent: u64, entries: &[DirEntry]) -> Option<Vec<u8>> {
    let mut b = vec![entries.len() as u8, 0];
    b.extend_from_slice(&(parent as u32).to_be_bytes());
    let mut offset = DIR3_FIRST_OFFSET;
    for e in entries {
        b.push(e.name.len() as u8);
        b.extend_from_slice(&(offset as u16).to_be_bytes());
        b.extend_from_slice(e.name);
        b.push(e.ftype);
        b.extend_from_slice(&(e.ino as u32).to_be_bytes());
        offset += data_entsize(e.name.len());
    }
    (entries.len() < 256 && b.len() <= INODE_SIZE as usize - INODE_CORE).then_some(b)
}

/// `xfs_da_hashname`: the hash that orders directory leaf entries.
pub fn da_hashname(name: &[u8]) -> u32 {
    let rol = |x: u32, n: u32| x.rotate_left(n);
    let mut hash: u32 = 0;
    let mut chunks = name.chunks_exact(4);
    for c in &mut chunks {
        hash = (u32::from(c[0]) << 21)
            ^ (u32::from(c[1]) << 14)
            ^ (u32::from(c[2]) << 7)
            ^ u32::from(c[3])
            ^ rol(hash, 7 * 4);
    }
    let r = chunks.remainder();
    match r.len() {
        3 => (u32::from(r[0]) << 14) ^ (u32::from(r[1]) << 7) ^ u32::from(r[2]) ^ rol(hash, 7 * 3),
        2 => (u32::from(r[0]) << 7) ^ u32::from(r[1]) ^ rol(hash, 7 * 2),
        1 => u32::from(r[0]) ^ rol(hash, 7),
        _ => hash,
    }
}

/// A single-block directory ("XDB3"): entries, free space, the hash-sorted leaf and
/// the tail, or `None` when it needs more than one block.
pub fn block_dir(
    uuid: &Uuid,
    daddr: u64,
    ino: u64,
    parent: u64,
    entries: &[DirEntry],
) -> Option<Vec<u8>> {
    let bs = BLOCK_SIZE as usize;
    let mut b = vec![0u8; bs];
    be32(&mut b, 0, 0x5844_4233); // XDB3
    be64(&mut b, 8, daddr);
    b[24..40].copy_from_slice(uuid.as_bytes());
    be64(&mut b, 40, ino);
    let mut leaf: Vec<(u32, u32)> = Vec::with_capacity(entries.len() + 2);
    let mut p = 64;
    let dot = DirEntry {
        name: b".",
        ino,
        ftype: FT_DIR,
    };
    let dotdot = DirEntry {
        name: b"..",
        ino: parent,
        ftype: FT_DIR,
    };
    for e in [&dot, &dotdot].into_iter().chain(entries.iter()) {
        let size = data_entsize(e.name.len());
        if p + size > bs {
            return None;
        }
        be64(&mut b, p, e.ino);
        b[p + 8] = e.name.len() as u8;
        b[p + 9..p + 9 + e.name.len()].copy_from_slice(e.name);
        b[p + 9 + e.name.len()] = e.ftype;
        be16(&mut b, p + size - 2, p as u16);
        leaf.push((da_hashname(e.name), (p / 8) as u32));
        p += size;
    }
    let tail = bs - 8;
    let leaf_start = tail.checked_sub(8 * leaf.len())?;
    if leaf_start < p {
        return None;
    }
    leaf.sort();
    for (n, (hash, addr)) in leaf.iter().enumerate() {
        be32(&mut b, leaf_start + 8 * n, *hash);
        be32(&mut b, leaf_start + 8 * n + 4, *addr);
    }
    be32(&mut b, tail, leaf.len() as u32);
    // The free space between the last entry and the leaf, if any, is one unused
    // entry and the only best-free record.
    let free = leaf_start - p;
    if free >= 8 {
        be16(&mut b, p, 0xffff);
        be16(&mut b, p + 2, free as u16);
        be16(&mut b, leaf_start - 2, p as u16);
        be16(&mut b, 48, p as u16);
        be16(&mut b, 50, free as u16);
    } else if free > 0 {
        return None;
    }
    seal(&mut b, DIR3_CRC_OFF);
    Some(b)
}

/// The log's first record as `libxfs_log_clear` writes it for a fresh filesystem:
/// cycle 1, a record header and one unmount record, so the log is clean; the
/// record fills one log sector (`log_sector` bytes, at least two 512-byte blocks).
pub fn log_record(uuid: &Uuid, log_sector: u32) -> Vec<u8> {
    let len = (log_sector as usize).max(1024);
    let mut b = vec![0u8; len];
    let cycle: u32 = 1;
    let lsn: u64 = u64::from(cycle) << 32;
    be32(&mut b, 0, 0xfeed_babe);
    be32(&mut b, 4, cycle);
    be32(&mut b, 8, 2); // log version
    be32(&mut b, 12, (len - 512) as u32); // h_len: the record less its header
    be64(&mut b, 16, lsn);
    be64(&mut b, 24, lsn); // tail lsn
    be32(&mut b, 36, NULL32); // prev block
    be32(&mut b, 40, 1); // num logops
    be32(&mut b, 0x12c, 1); // XLOG_FMT_LINUX_LE
    b[0x130..0x140].copy_from_slice(uuid.as_bytes());
    be32(&mut b, 0x140, log_sector.max(32768)); // h_size
    // The unmount record's op header and data; its first word (the transaction id)
    // moves into the header's cycle data and the block starts with the cycle.
    let tid: u32 = 0xb0c0_d0d0;
    be32(&mut b, 0x2c, tid);
    let u = 512;
    be32(&mut b, u, cycle);
    be32(&mut b, u + 4, 8); // oh_len
    b[u + 8] = 0xaa; // XFS_LOG client
    b[u + 9] = 0x20; // XLOG_UNMOUNT_TRANS
    b[u + 12..u + 14].copy_from_slice(&0x556eu16.to_le_bytes()); // XLOG_UNMOUNT_TYPE, host order of x86 mkfs
    for blk in (1024..len).step_by(512) {
        be32(&mut b, blk, cycle);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashname_matches_xfs() {
        // xfs_db -c 'hash NAME' on Debian 12's xfsprogs 6.1.
        assert_eq!(da_hashname(b"."), 0x2e);
        assert_eq!(da_hashname(b".."), 0x172e);
        assert_eq!(da_hashname(b"grub.cfg"), 0x2517_38c9);
    }

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
    }
}
