//! Fixed VHD (Microsoft Virtual Hard Disk, the format Azure imports): the raw image
//! followed by a 512-byte footer. Talos makes it with `qemu-img convert -O vpc -o
//! subformat=fixed,force_size`; this writes the same layout directly.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z).
const VHD_EPOCH: u64 = 946_684_800;

/// CHS geometry of the VHD specification (appendix "CHS calculation").
fn geometry(size: u64) -> (u16, u8, u8) {
    let mut sectors = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cyl_x_heads);
    if sectors >= 65535 * 16 * 63 {
        sectors = sectors.min(65535 * 16 * 255);
        spt = 255u64;
        heads = 16u64;
        cyl_x_heads = sectors / spt;
    } else {
        let mut s = 17u64;
        let mut ch = sectors / s;
        let mut h = ch.div_ceil(1024).max(4);
        if ch >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            ch = sectors / s;
        }
        if ch >= h * 1024 {
            s = 63;
            h = 16;
            ch = sectors / s;
        }
        spt = s;
        heads = h;
        cyl_x_heads = ch;
    }
    ((cyl_x_heads / heads) as u16, heads as u8, spt as u8)
}

/// The 512-byte footer of a fixed VHD of `size` bytes. `epoch` (Unix seconds) sets the
/// timestamp; the unique id is derived from size and epoch, so builds are reproducible.
pub fn footer(size: u64, epoch: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none (fixed)
    f[24..28].copy_from_slice(&(epoch.saturating_sub(VHD_EPOCH) as u32).to_be_bytes());
    // "win ": readers take the size from the footer, not from the CHS geometry.
    f[28..32].copy_from_slice(b"win ");
    f[32..36].copy_from_slice(&0x000a_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = geometry(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&2u32.to_be_bytes()); // disk type: fixed
    let id = Sha256::digest([size.to_be_bytes(), epoch.to_be_bytes()].concat());
    f[68..84].copy_from_slice(&id[..16]);
    let sum: u32 = f.iter().map(|&b| u32::from(b)).sum();
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

/// Turns the raw image at `raw` into a fixed VHD at `dest` (raw bytes + footer); holes
/// of the raw image stay holes and are not read. Returns the VHD's size and SHA-256,
/// hashed on the way.
pub fn convert(
    raw: &Path,
    dest: &mut File,
    dest_path: &Path,
    epoch: u64,
) -> Result<(u64, [u8; 32])> {
    let input = File::open(raw).at(raw)?;
    let size = input.metadata().at(raw)?.len();
    let mut hasher = Sha256::new();
    dest.set_len(0).writing(dest_path)?;
    crate::io::copy_file_sparse(&input, raw, size, dest, dest_path, 0, &mut hasher)?;
    let footer = footer(size, epoch);
    dest.write_all_at(&footer, size).writing(dest_path)?;
    hasher.update(footer);
    Ok((size + footer.len() as u64, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_checksum_and_geometry() {
        let f = footer(1306525696, 1_700_000_000);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let mut g = f;
        g[64..68].fill(0);
        let sum: u32 = g.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(stored, !sum);
        let (c, h, s) = geometry(1306525696);
        assert!(u64::from(c) * u64::from(h) * u64::from(s) * 512 <= 1306525696);
    }
}
