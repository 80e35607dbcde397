//! qcow2 (version 3) images, made from the raw image in one pass: non-zero clusters
//! are appended as they are read (holes of the raw image are skipped without reading),
//! and the metadata (L2 tables, L1 table, refcounts) follows them; the header at
//! cluster 0 points at it. A fresh image, no backing file, no compression, 16-bit
//! refcounts; the cluster size is the profile's `cluster_size` (Talos's clouds ask for
//! 8 KiB), 64 KiB by default as with `qemu-img`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The cluster size `qemu-img create -f qcow2` picks.
pub const DEFAULT_CLUSTER_SIZE: u64 = 64 * 1024;
/// The cluster sizes qcow2 allows (powers of two).
pub const CLUSTER_SIZES: std::ops::RangeInclusive<u64> = 512..=2 * 1024 * 1024;
/// "Copied" flag: refcount is exactly 1, writable in place.
const COPIED: u64 = 1 << 63;

const OUT: &str = "<qcow2 image>";

/// Converts the raw image at `raw` into a qcow2 image written to `dest`, with clusters
/// of `cluster_size` bytes (a power of two in [`CLUSTER_SIZES`]).
pub fn convert(raw: &Path, dest: &mut File, cluster_size: u64) -> Result<()> {
    if !cluster_size.is_power_of_two() || !CLUSTER_SIZES.contains(&cluster_size) {
        return Err(Error::invalid(format!(
            "qcow2 cluster size {cluster_size} is not a power of two from 512 to 2 MiB"
        )));
    }
    let cluster_bits = cluster_size.trailing_zeros();
    let cluster = cluster_size;
    // L2 entries per table (8 bytes each); clusters counted by one refcount block (16 bits).
    let l2_entries = cluster / 8;
    let refs_per_block = cluster / 2;
    let input = File::open(raw).at(raw)?;
    let size = input.metadata().at(raw)?.len();
    let guest_clusters = size.div_ceil(cluster);
    dest.set_len(0).at(OUT)?;

    // Data: host cluster 0 is the header; non-zero guest clusters follow in order. Only
    // the clusters that meet the raw image's data are read.
    let mut map = vec![0u64; guest_clusters as usize];
    let mut next = 1u64;
    let mut buf = vec![0u8; cluster as usize];
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut *dest);
    out.seek(SeekFrom::Start(cluster)).at(OUT)?;
    let mut last = None;
    for (start, end) in crate::io::sparse::data_runs(&input, size).reading(raw)? {
        for g in start / cluster..end.div_ceil(cluster) {
            if last == Some(g) {
                continue;
            }
            last = Some(g);
            let len = cluster.min(size - g * cluster) as usize;
            buf[len..].fill(0);
            input
                .read_exact_at(&mut buf[..len], g * cluster)
                .reading(raw)?;
            if buf.iter().any(|&b| b != 0) {
                out.write_all(&buf).at(OUT)?;
                map[g as usize] = next;
                next += 1;
            }
        }
    }

    // L2 tables for the L1 slots that map anything.
    let l1_size = guest_clusters.div_ceil(l2_entries).max(1);
    let mut l1 = vec![0u64; l1_size as usize];
    for (i, entry) in l1.iter_mut().enumerate() {
        let chunk = &map[(i as u64 * l2_entries) as usize
            ..((i as u64 + 1) * l2_entries).min(guest_clusters) as usize];
        if chunk.iter().all(|&c| c == 0) {
            continue;
        }
        let mut table = vec![0u8; cluster as usize];
        for (j, &host) in chunk.iter().enumerate() {
            if host != 0 {
                table[j * 8..j * 8 + 8].copy_from_slice(&((host * cluster) | COPIED).to_be_bytes());
            }
        }
        out.write_all(&table).at(OUT)?;
        *entry = (next * cluster) | COPIED;
        next += 1;
    }

    // L1 table.
    let l1_offset = next * cluster;
    let l1_clusters = (l1_size * 8).div_ceil(cluster);
    let mut l1_bytes = vec![0u8; (l1_clusters * cluster) as usize];
    for (i, e) in l1.iter().enumerate() {
        l1_bytes[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    out.write_all(&l1_bytes).at(OUT)?;
    next += l1_clusters;

    // Refcount table and blocks cover every cluster, themselves included.
    let (mut blocks, mut table_clusters) = (1u64, 1u64);
    loop {
        let total = next + table_clusters + blocks;
        let b = total.div_ceil(refs_per_block);
        let t = (b * 8).div_ceil(cluster);
        if b == blocks && t == table_clusters {
            break;
        }
        blocks = b;
        table_clusters = t;
    }
    let total = next + table_clusters + blocks;
    let table_offset = next * cluster;
    let first_block = next + table_clusters;
    let mut table = vec![0u8; (table_clusters * cluster) as usize];
    for b in 0..blocks {
        let at = (b * 8) as usize;
        table[at..at + 8].copy_from_slice(&((first_block + b) * cluster).to_be_bytes());
    }
    out.write_all(&table).at(OUT)?;
    for b in 0..blocks {
        let mut block = vec![0u8; cluster as usize];
        for i in 0..refs_per_block {
            if b * refs_per_block + i < total {
                block[(i * 2) as usize..(i * 2 + 2) as usize].copy_from_slice(&1u16.to_be_bytes());
            }
        }
        out.write_all(&block).at(OUT)?;
    }

    out.flush().at(OUT)?;
    drop(out);

    // Header.
    let mut h = vec![0u8; 112];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&table_offset.to_be_bytes());
    h[56..60].copy_from_slice(&(table_clusters as u32).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
    h[100..104].copy_from_slice(&104u32.to_be_bytes()); // header_length; an end-of-extensions marker follows
    dest.write_all_at(&h, 0).at(OUT)?;
    dest.set_len(total * cluster).at(OUT)?;
    Ok(())
}
