//! The optional header's CheckSum.
//!
//! The PE/COFF specification leaves the algorithm to `IMAGEHLP.DLL`
//! (`CheckSumMappedFile`): a 16-bit one's-complement sum of the file's
//! little-endian words with the CheckSum field counted as zero, plus the file length.

/// Running PE checksum, fed with byte offsets so chunks may start at odd positions
/// and bytes can be added out of order (the sum is commutative).
///
/// Since 2^16 = 1 modulo 0xFFFF, adding 64-bit little-endian words (four 16-bit words
/// at once) into a wide accumulator and folding at the end gives the same result as
/// adding 16-bit words with end-around carry, at a quarter of the additions.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeChecksum {
    sum: u128,
}

impl PeChecksum {
    /// Adds `bytes`, found at file offset `offset`.
    pub fn add(&mut self, offset: u64, bytes: &[u8]) {
        let mut bytes = bytes;
        if offset % 2 == 1 && !bytes.is_empty() {
            self.sum += (bytes[0] as u128) << 8;
            bytes = &bytes[1..];
        }
        let mut quads = bytes.chunks_exact(8);
        for q in &mut quads {
            self.sum += u64::from_le_bytes(q.try_into().expect("8 bytes")) as u128;
        }
        let mut words = quads.remainder().chunks_exact(2);
        for w in &mut words {
            self.sum += u16::from_le_bytes([w[0], w[1]]) as u128;
        }
        if let [last] = words.remainder() {
            self.sum += *last as u128;
        }
    }

    /// The CheckSum value of a `file_len`-byte file whose bytes were all added.
    pub fn finish(self, file_len: u64) -> u32 {
        let mut sum = self.sum;
        while sum >> 16 != 0 {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        (sum as u32).wrapping_add(file_len as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_order_and_chunking_independent() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = PeChecksum::default();
        whole.add(0, &data);
        let mut parts = PeChecksum::default();
        parts.add(500, &data[500..]);
        parts.add(0, &data[..333]);
        parts.add(333, &data[333..500]);
        assert_eq!(whole.finish(1001), parts.finish(1001));
        // The plain definition: 16-bit words, end-around carry after each addition.
        let mut sum = 0u32;
        for w in data.chunks(2) {
            sum += u16::from_le_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        assert_eq!(whole.finish(1001), sum + 1001);
    }
}
