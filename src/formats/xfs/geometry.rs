//! Where everything goes: block counts, allocation groups, the internal log and the
//! fixed blocks of each AG, chosen the way `mkfs.xfs` 6.1 chooses them for a single
//! device without stripe geometry (xfsprogs `libxfs/topology.c`
//! `calc_default_ag_geometry`, `mkfs/xfs_mkfs.c` `align_ag_geometry`,
//! `calculate_log_size`, `libxfs_prealloc_blocks`).

use crate::error::{Error, Result};

/// log2 of the block size: 4 KiB blocks, as mkfs picks on every Linux page size we build for.
pub const BLOCK_LOG: u32 = 12;
/// Filesystem block size in bytes.
pub const BLOCK_SIZE: u64 = 1 << BLOCK_LOG;
/// Inode size (mkfs's default for v5 filesystems).
pub const INODE_SIZE: u32 = 512;
/// Inodes per block.
pub const INODES_PER_BLOCK: u32 = (BLOCK_SIZE as u32) / INODE_SIZE;
/// Inodes per inode chunk (`XFS_INODES_PER_CHUNK`).
pub const INODES_PER_CHUNK: u32 = 64;
/// Blocks of one inode chunk, also the inode chunk alignment (`sb_inoalignmt`).
pub const CHUNK_BLOCKS: u32 = INODES_PER_CHUNK / INODES_PER_BLOCK;
/// Blocks mkfs moves to each AG's free list: the minimum free list of one-level
/// bnobt, cntbt and rmapbt trees (`xfs_alloc_min_freelist`: 2 each).
pub const AGFL_FILL: u32 = 6;
/// The smallest size accepted: below 300 MiB mkfs sizes the log from the log
/// reservations of the running code instead of the fixed rule followed here.
pub const MIN_SIZE: u64 = 300 << 20;
/// The largest size accepted: up to 4 TiB mkfs makes four AGs of equal size.
pub const MAX_SIZE: u64 = 4 << 40;
/// Default internal log size for filesystems of 300 MiB and more (`XFS_MIN_REALISTIC_LOG_BLOCKS`).
const REALISTIC_LOG_BLOCKS: u64 = (64 << 20) >> BLOCK_LOG;
/// Largest internal log (`XFS_MAX_LOG_BYTES`, 2 GiB).
const MAX_LOG_BLOCKS: u64 = (2 << 30) >> BLOCK_LOG;
/// The smallest AG (`XFS_AG_MIN_BYTES`, 16 MiB).
const AG_MIN_BLOCKS: u64 = (16 << 20) >> BLOCK_LOG;

/// The layout of one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub sector_size: u32,
    pub dblocks: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub agblklog: u32,
    pub logblocks: u32,
    /// The AG holding the log (the middle one) and the log's first block in it.
    pub log_ag: u32,
    pub log_agbno: u32,
    /// Blocks the AG headers (superblock, AGF, AGI, AGFL sectors) take.
    pub hdr_blocks: u32,
}

impl Geometry {
    /// The geometry of a filesystem of `size` bytes with `sector_size` sectors.
    pub fn new(size: u64, sector_size: u32) -> Result<Self> {
        if sector_size != 512 && sector_size != 4096 {
            return Err(Error::invalid(format!(
                "XFS sector size {sector_size}: must be 512 or 4096"
            )));
        }
        if size < MIN_SIZE {
            return Err(Error::invalid(format!(
                "XFS filesystem of {size} bytes: too small, the minimum is {MIN_SIZE} bytes (300 MiB)"
            )));
        }
        if size > MAX_SIZE {
            return Err(Error::unsupported(format!(
                "XFS filesystem of {size} bytes: larger than {MAX_SIZE} bytes (4 TiB)"
            )));
        }
        let mut dblocks = size >> BLOCK_LOG;
        // Four AGs, rounded up so that no block is lost (calc_default_ag_geometry).
        let mut agsize = dblocks >> 2;
        if dblocks & 3 != 0 {
            agsize += 1;
        }
        let mut agcount = dblocks.div_ceil(agsize);
        // A last AG smaller than the minimum is dropped (align_ag_geometry).
        if !dblocks.is_multiple_of(agsize) && dblocks % agsize < AG_MIN_BLOCKS {
            agcount -= 1;
            dblocks = agcount * agsize;
        }
        let agblocks = agsize as u32;
        let agblklog = 32 - (agblocks - 1).leading_zeros();
        let hdr_blocks = (4 * sector_size).div_ceil(BLOCK_SIZE as u32);
        let prealloc = hdr_blocks + 6;
        // 2048:1 data:log, at least 64 MiB, at most 2 GiB and what fits in an AG
        // (libxfs_alloc_ag_max_usable less one block).
        let ag_max_usable = agsize - u64::from(prealloc) - u64::from(AGFL_FILL);
        let logblocks = (dblocks / 2048)
            .max(REALISTIC_LOG_BLOCKS)
            .min(ag_max_usable - 1)
            .min(MAX_LOG_BLOCKS) as u32;
        let g = Geometry {
            sector_size,
            dblocks,
            agblocks,
            agcount: agcount as u32,
            agblklog,
            logblocks,
            log_ag: (agcount / 2) as u32,
            log_agbno: prealloc,
            hdr_blocks,
        };
        debug_assert!(g.log_ag != 0, "the log never shares AG 0 with the inodes");
        Ok(g)
    }

    /// Length of AG `agno` in blocks (the last one may be shorter).
    pub fn ag_len(&self, agno: u32) -> u32 {
        let start = u64::from(agno) * u64::from(self.agblocks);
        (self.dblocks - start).min(u64::from(self.agblocks)) as u32
    }

    /// First block after the fixed ones: headers and the six btree roots.
    pub fn prealloc_blocks(&self) -> u32 {
        self.hdr_blocks + 6
    }

    pub fn bno_root(&self) -> u32 {
        self.hdr_blocks
    }
    pub fn cnt_root(&self) -> u32 {
        self.hdr_blocks + 1
    }
    pub fn ino_root(&self) -> u32 {
        self.hdr_blocks + 2
    }
    pub fn fino_root(&self) -> u32 {
        self.hdr_blocks + 3
    }
    pub fn rmap_root(&self) -> u32 {
        self.hdr_blocks + 4
    }
    pub fn refc_root(&self) -> u32 {
        self.hdr_blocks + 5
    }

    /// First of the blocks given to AG `agno`'s free list: the first free blocks
    /// (after the log in the log's AG).
    pub fn agfl_start(&self, agno: u32) -> u32 {
        if agno == self.log_ag {
            self.log_agbno + self.logblocks
        } else {
            self.prealloc_blocks()
        }
    }

    /// First block of the inode chunks in AG 0: the first aligned free block.
    pub fn inode_start(&self) -> u32 {
        (self.prealloc_blocks() + AGFL_FILL).next_multiple_of(CHUNK_BLOCKS)
    }

    /// Filesystem block number (`XFS_AGB_TO_FSB`).
    pub fn fsbno(&self, agno: u32, agbno: u32) -> u64 {
        (u64::from(agno) << self.agblklog) | u64::from(agbno)
    }

    /// Byte offset of a block from the start of the filesystem.
    pub fn byte(&self, agno: u32, agbno: u32) -> u64 {
        (u64::from(agno) * u64::from(self.agblocks) + u64::from(agbno)) << BLOCK_LOG
    }

    /// 512-byte disk address of a block (btree blocks record their own).
    pub fn daddr(&self, agno: u32, agbno: u32) -> u64 {
        self.byte(agno, agbno) >> 9
    }

    /// Inode number of inode `index` counted from the first inode of AG 0's chunks.
    pub fn ino(&self, index: u32) -> u64 {
        u64::from(self.inode_start()) * u64::from(INODES_PER_BLOCK) + u64::from(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values read with `xfs_db -c 'sb 0' -c print` from `mkfs.xfs` 6.1.0 images of
    // the same sizes (4 KiB blocks, crc, finobt, rmapbt, reflink, sparse inodes).
    #[test]
    fn matches_mkfs_6_1() {
        for (mib, sector, agblocks, agblklog, logstart) in [
            (300u64, 512u32, 19200u32, 15u32, 65543u64),
            (1000, 512, 64000, 16, 131079),
            (1000, 4096, 64000, 16, 131082),
            (2000, 512, 128000, 17, 262151),
        ] {
            let g = Geometry::new(mib << 20, sector).unwrap();
            assert_eq!(g.agblocks, agblocks, "{mib} MiB");
            assert_eq!(g.agcount, 4);
            assert_eq!(g.agblklog, agblklog);
            assert_eq!(g.logblocks, 16384);
            assert_eq!(g.fsbno(g.log_ag, g.log_agbno), logstart);
            assert_eq!(g.ino(0), 128);
        }
    }

    #[test]
    fn rejects_odd_sizes() {
        assert!(Geometry::new(299 << 20, 512).is_err());
        assert!(Geometry::new(1 << 30, 1024).is_err());
    }
}
