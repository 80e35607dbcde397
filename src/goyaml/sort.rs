//! go-yaml's map key order (`sorter.go` `keyList.Less`) for string keys: the order
//! `yaml.Marshal` writes a Go map's keys in.

/// go-yaml v3 `keyList.Less` for string keys ("natural" order: digit runs compare as
/// numbers, letters before other characters after a non-digit).
pub(crate) fn key_less(a: &str, b: &str) -> bool {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut digits = false;
    let n = ar.len().min(br.len());
    for i in 0..n {
        if ar[i] == br[i] {
            digits = ar[i].is_numeric() && is_go_digit(ar[i]);
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return if digits { al } else { bl };
        }
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && is_go_digit(ar[j - 1]) {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && is_go_digit(ar[ai]) {
            an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && is_go_digit(br[bi]) {
            bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// Go `unicode.IsDigit`: decimal digits (Nd). Rust has no Nd test in std; the ASCII
/// digits are what keys hold in practice, and other Nd digits are treated alike by
/// `char::to_digit` only for ASCII, so non-ASCII digits are rejected at parse time.
pub(super) fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn natural_key_order() {
        assert!(key_less("a2", "a10"));
        assert!(key_less("a", "b"));
        assert!(!key_less("b", "a"));
        assert!(key_less("a1", "a01"));
    }
}
