//! go-yaml's plain-scalar resolver (`resolve.go` `resolve`, with `resolveTable` as the
//! first-byte hint): which plain scalars are null, booleans, integers, floats,
//! timestamps or the merge key, and `isOldBool` (`encode.go`), the YAML 1.1 booleans
//! YAML 1.2 reads as strings. The emitter asks it whether a string must be quoted; the
//! schematic decoder asks it what a scalar is.

use super::float::{go_parse_float, is_yaml_style_float};

/// What a plain scalar resolves to under go-yaml v3's resolver (`resolve("", s)`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    /// Go `int`/`int64`/`uint64`: i128 holds all of them.
    Int(i128),
    Float(f64),
    Timestamp,
    /// A plain `<<` (the decoder's merge key; the resolver itself says string).
    Merge,
    Str,
}

/// go-yaml v3 `resolve("", s)`.
pub(crate) fn resolve(s: &str) -> Resolved {
    let hint = match s.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => 0,
    };
    if hint == 0 {
        return Resolved::Str;
    }
    match s {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match hint {
        b'.' => {
            // ParseFloat takes Go literal syntax, where `_` may separate digits.
            let f = if s.contains('_') {
                underscore_ok(s)
                    .then(|| go_parse_float(&s.replace('_', "")))
                    .flatten()
            } else {
                go_parse_float(s)
            };
            if let Some(f) = f {
                return Resolved::Float(f);
            }
        }
        b'D' | b'S' => {
            if is_timestamp(s) {
                return Resolved::Timestamp;
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(v) = go_parse_int_base0(&plain) {
                return Resolved::Int(v);
            }
            if is_yaml_style_float(&plain)
                && let Some(f) = go_parse_float(&plain)
            {
                return Resolved::Float(f);
            }
            for (prefix, radix) in [("0b", 2), ("0o", 8)] {
                if let Some(rest) = plain.strip_prefix(prefix) {
                    if let Some(v) = parse_digits(rest, radix).filter(|&v| v <= u64::MAX as i128) {
                        return Resolved::Int(v);
                    }
                } else if let Some(rest) =
                    plain.strip_prefix('-').and_then(|p| p.strip_prefix(prefix))
                    && let Some(v) = parse_digits(rest, radix)
                        .map(|v| -v)
                        .filter(|&v| v >= i64::MIN as i128)
                {
                    return Resolved::Int(v);
                }
            }
        }
        _ => {}
    }
    Resolved::Str
}

/// Go strconv `underscoreOK` for a decimal literal: each `_` between two digits.
pub(super) fn underscore_ok(s: &str) -> bool {
    let mut saw = '^';
    for c in s.trim_start_matches(['+', '-']).chars() {
        if c.is_ascii_digit() {
            saw = '0';
        } else if c == '_' {
            if saw != '0' {
                return false;
            }
            saw = '_';
        } else if saw == '_' {
            return false;
        } else {
            saw = '!';
        }
    }
    saw != '_'
}

/// Digits only (no sign, no prefix, no underscores), at least one.
pub(super) fn parse_digits(s: &str, radix: u32) -> Option<i128> {
    if s.is_empty() || s.len() > 70 {
        return None;
    }
    let mut v: i128 = 0;
    for c in s.chars() {
        let d = c.to_digit(radix)? as i128;
        v = v.checked_mul(radix as i128)?.checked_add(d)?;
        if v > u64::MAX as i128 {
            return None;
        }
    }
    Some(v)
}

/// Go `strconv.ParseInt(s, 0, 64)`, falling back to `ParseUint(s, 0, 64)` (the
/// resolver tries both). Underscores have been removed already.
pub(super) fn go_parse_int_base0(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r.to_string())
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r.to_string())
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower)
    };
    let v = parse_digits(&digits, radix)?;
    if neg {
        // ParseUint takes no sign; ParseInt's range is i64.
        (v <= 1i128 << 63).then_some(-v)
    } else if s.starts_with('+') {
        (v <= i64::MAX as i128).then_some(v)
    } else {
        Some(v)
    }
}

/// go-yaml v3 `parseTimestamp`: `time.Parse` with one of four layouts.
pub(super) fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let mut p = Cursor { b, i: 5 };
    let year: u32 = s[..4].parse().unwrap_or(0);
    let Some(month) = p.num12() else { return false };
    if !p.eat(b'-') {
        return false;
    }
    let Some(day) = p.num12() else { return false };
    if !(1..=12).contains(&month) || day < 1 || day > days_in(month, year) {
        return false;
    }
    if p.done() {
        return true;
    }
    // "T"/"t" + RFC 3339 time with zone, or " " + time without zone.
    let with_zone = match p.next() {
        Some(b'T' | b't') => true,
        Some(b' ') => false,
        _ => return false,
    };
    let Some(h) = p.num12() else { return false };
    if !p.eat(b':') {
        return false;
    }
    let Some(m) = p.num12() else { return false };
    if !p.eat(b':') {
        return false;
    }
    let Some(sec) = p.num12() else { return false };
    if h > 23 || m > 59 || sec > 59 {
        return false;
    }
    // Optional fraction of 1..=9 digits (Go: a '.' or ',' followed by a digit).
    if matches!(p.peek(), Some(b'.' | b',')) && p.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
        p.i += 1;
        let st = p.i;
        while p.peek().is_some_and(|c| c.is_ascii_digit()) {
            p.i += 1;
        }
        if p.i - st > 9 {
            return false;
        }
    }
    if !with_zone {
        return p.done();
    }
    match p.next() {
        Some(b'Z') => p.done(),
        Some(b'+' | b'-') => {
            let r = &b[p.i..];
            r.len() == 5
                && r[2] == b':'
                && r[..2].iter().chain(&r[3..]).all(u8::is_ascii_digit)
                && (r[0] - b'0') * 10 + (r[1] - b'0') <= 24
                && (r[3] - b'0') * 10 + (r[4] - b'0') <= 60
        }
        _ => false,
    }
}

pub(super) struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn peek_at(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }
    fn eat(&mut self, c: u8) -> bool {
        (self.peek() == Some(c)).then(|| self.i += 1).is_some()
    }
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
    /// Go's `getnum(value, false)`: one digit, or two.
    fn num12(&mut self) -> Option<u32> {
        let d0 = self.peek().filter(u8::is_ascii_digit)?;
        self.i += 1;
        match self.peek().filter(u8::is_ascii_digit) {
            Some(d1) => {
                self.i += 1;
                Some(((d0 - b'0') * 10 + (d1 - b'0')) as u32)
            }
            None => Some((d0 - b'0') as u32),
        }
    }
}

pub(super) fn days_in(month: u32, year: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `isBase60Float` in encode.go: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
pub(super) fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() && i - st < 2 {
            i += 1;
        }
        match i - st {
            1 => {}
            2 if b[st] <= b'5' => {}
            _ => return false,
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// `isOldBool` in encode.go: YAML 1.1 booleans that YAML 1.2 reads as strings.
pub(crate) fn is_old_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn resolver_matches_go_yaml() {
        for (s, r) in [
            ("10", Resolved::Int(10)),
            ("0x10", Resolved::Int(16)),
            ("0o17", Resolved::Int(15)),
            ("017", Resolved::Int(15)),
            ("0b101", Resolved::Int(5)),
            ("1_000", Resolved::Int(1000)),
            ("-0b11", Resolved::Int(-3)),
            ("08", Resolved::Float(8.0)),
            ("1.5", Resolved::Float(1.5)),
            (".5", Resolved::Float(0.5)),
            ("1e3", Resolved::Float(1000.0)),
            ("yes", Resolved::Str),
            ("true", Resolved::Bool(true)),
            ("~", Resolved::Null),
            ("", Resolved::Null),
            ("2024-01-31", Resolved::Timestamp),
            ("2024-02-30", Resolved::Str),
            ("1e400", Resolved::Str),
            ("ip=dhcp", Resolved::Str),
            ("-", Resolved::Str),
            ("<<", Resolved::Str),
        ] {
            assert_eq!(resolve(s), r, "{s:?}");
        }
    }
}
