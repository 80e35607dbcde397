//! Little-endian integers read from byte slices at an offset, with bounds checks:
//! the one reader for on-disk structures (PE headers, certificate tables, GPT).

/// A read that would go past the end of the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at offset {offset:#x} are past the end of {available} bytes")]
pub struct OutOfBounds {
    pub offset: usize,
    pub len: usize,
    pub available: usize,
}

/// The `N` bytes of `b` at `offset`.
pub fn array_at<const N: usize>(b: &[u8], offset: usize) -> Result<[u8; N], OutOfBounds> {
    offset
        .checked_add(N)
        .and_then(|end| b.get(offset..end))
        .map(|s| s.try_into().expect("slice of N bytes"))
        .ok_or(OutOfBounds {
            offset,
            len: N,
            available: b.len(),
        })
}

/// The little-endian `u16` at `offset`.
pub fn u16_at(b: &[u8], offset: usize) -> Result<u16, OutOfBounds> {
    array_at(b, offset).map(u16::from_le_bytes)
}

/// The little-endian `u32` at `offset`.
pub fn u32_at(b: &[u8], offset: usize) -> Result<u32, OutOfBounds> {
    array_at(b, offset).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `offset`.
pub fn u64_at(b: &[u8], offset: usize) -> Result<u64, OutOfBounds> {
    array_at(b, offset).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_values_inside_the_slice() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&b, 0), Ok(0x0201));
        assert_eq!(u32_at(&b, 1), Ok(0x0504_0302));
        assert_eq!(u64_at(&b, 1), Ok(0x0908_0706_0504_0302));
        assert_eq!(u16_at(&b, 7), Ok(0x0908));
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let b = [0u8; 4];
        assert_eq!(
            u32_at(&b, 1),
            Err(OutOfBounds {
                offset: 1,
                len: 4,
                available: 4
            })
        );
        assert!(u64_at(&b, 0).is_err());
        assert!(u16_at(&b, usize::MAX).is_err());
        assert!(u16_at(&[], 0).is_err());
        assert_eq!(
            u32_at(&b, 1).unwrap_err().to_string(),
            "4 bytes at offset 0x1 are past the end of 4 bytes"
        );
    }
}
