//! qcow2 (version 3) images, made from the raw image in one pass: non-zero 64 KiB
//! clusters are appended as they are read, and the metadata (L2 tables, L1 table,
//! refcounts) follows them; the header at cluster 0 points at it. A fresh image,
//! no backing file, no compression, 16-bit refcounts.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::io::sparse::SparseReader;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Clusters counted by one refcount block (16-bit refcounts).
const REFS_PER_BLOCK: u64 = CLUSTER / 2;
/// "Copied" flag: refcount is exactly 1, writable in place.
const COPIED: u64 = 1 << 63;

const OUT: &str = "<qcow2 image>";

/// Converts the raw image at `raw` into a qcow2 image written to `dest`.
pub fn convert(raw: &Path, dest: &mut File) -> Result<()> {
    let size = std::fs::metadata(raw).at(raw)?.len();
    let mut input = SparseReader::new(File::open(raw).at(raw)?).at(raw)?;
    let guest_clusters = size.div_ceil(CLUSTER);
    dest.set_len(0).at(OUT)?;

    // Data: host cluster 0 is the header; non-zero guest clusters follow in order.
    let mut map = vec![0u64; guest_clusters as usize];
    let mut next = 1u64;
    let mut buf = vec![0u8; CLUSTER as usize];
    dest.seek(SeekFrom::Start(CLUSTER)).at(OUT)?;
    for (g, slot) in map.iter_mut().enumerate() {
        let len = CLUSTER.min(size - g as u64 * CLUSTER) as usize;
        buf.fill(0);
        input.read_exact(&mut buf[..len]).at(raw)?;
        if buf.iter().any(|&b| b != 0) {
            dest.write_all(&buf).at(OUT)?;
            *slot = next;
            next += 1;
        }
    }

    // L2 tables for the L1 slots that map anything.
    let l1_size = guest_clusters.div_ceil(L2_ENTRIES).max(1);
    let mut l1 = vec![0u64; l1_size as usize];
    for (i, entry) in l1.iter_mut().enumerate() {
        let chunk = &map[(i as u64 * L2_ENTRIES) as usize
            ..((i as u64 + 1) * L2_ENTRIES).min(guest_clusters) as usize];
        if chunk.iter().all(|&c| c == 0) {
            continue;
        }
        let mut table = vec![0u8; CLUSTER as usize];
        for (j, &host) in chunk.iter().enumerate() {
            if host != 0 {
                table[j * 8..j * 8 + 8].copy_from_slice(&((host * CLUSTER) | COPIED).to_be_bytes());
            }
        }
        dest.write_all(&table).at(OUT)?;
        *entry = (next * CLUSTER) | COPIED;
        next += 1;
    }

    // L1 table.
    let l1_offset = next * CLUSTER;
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    let mut l1_bytes = vec![0u8; (l1_clusters * CLUSTER) as usize];
    for (i, e) in l1.iter().enumerate() {
        l1_bytes[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    dest.write_all(&l1_bytes).at(OUT)?;
    next += l1_clusters;

    // Refcount table and blocks cover every cluster, themselves included.
    let (mut blocks, mut table_clusters) = (1u64, 1u64);
    loop {
        let total = next + table_clusters + blocks;
        let b = total.div_ceil(REFS_PER_BLOCK);
        let t = (b * 8).div_ceil(CLUSTER);
        if b == blocks && t == table_clusters {
            break;
        }
        blocks = b;
        table_clusters = t;
    }
    let total = next + table_clusters + blocks;
    let table_offset = next * CLUSTER;
    let first_block = next + table_clusters;
    let mut table = vec![0u8; (table_clusters * CLUSTER) as usize];
    for b in 0..blocks {
        let at = (b * 8) as usize;
        table[at..at + 8].copy_from_slice(&((first_block + b) * CLUSTER).to_be_bytes());
    }
    dest.write_all(&table).at(OUT)?;
    for b in 0..blocks {
        let mut block = vec![0u8; CLUSTER as usize];
        for i in 0..REFS_PER_BLOCK {
            if b * REFS_PER_BLOCK + i < total {
                block[(i * 2) as usize..(i * 2 + 2) as usize].copy_from_slice(&1u16.to_be_bytes());
            }
        }
        dest.write_all(&block).at(OUT)?;
    }

    // Header.
    let mut h = vec![0u8; 112];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&table_offset.to_be_bytes());
    h[56..60].copy_from_slice(&(table_clusters as u32).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
    h[100..104].copy_from_slice(&104u32.to_be_bytes()); // header_length; an end-of-extensions marker follows
    dest.seek(SeekFrom::Start(0)).at(OUT)?;
    dest.write_all(&h).at(OUT)?;
    dest.set_len(total * CLUSTER).at(OUT)?;
    Ok(())
}
