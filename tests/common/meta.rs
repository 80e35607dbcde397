//! Talos META read by the tests' own parser, written from the format description
//! (not imager's code).

/// META values read straight from the partition bytes, following the spec (not imager's code):
/// copy at offset 0, magic 0x5a4b3c2d, big-endian tag/len records until tag 0,
/// SHA-256 over the copy with its checksum zeroed at [len-36, len-4), magic 0xa5b4c3d2 last.
pub fn parse_meta(part: &[u8]) -> Vec<(u32, String)> {
    use sha2::{Digest, Sha256};
    let copy = &part[..256 * 1024];
    let be = |at: usize| u32::from_be_bytes(copy[at..at + 4].try_into().unwrap());
    assert_eq!(be(0), 0x5a4b3c2d, "magic1");
    assert_eq!(be(copy.len() - 4), 0xa5b4c3d2, "magic2");
    let mut zeroed = copy.to_vec();
    zeroed[copy.len() - 36..copy.len() - 4].fill(0);
    assert_eq!(
        &Sha256::digest(&zeroed)[..],
        &copy[copy.len() - 36..copy.len() - 4],
        "checksum"
    );
    assert_eq!(copy, &part[256 * 1024..512 * 1024], "second copy identical");
    let mut out = Vec::new();
    let mut at = 4;
    while be(at) != 0 {
        let len = be(at + 4) as usize;
        out.push((
            be(at),
            String::from_utf8(copy[at + 8..at + 8 + len].to_vec()).unwrap(),
        ));
        at += 8 + len;
    }
    out
}
