//! The parts of go-yaml v3 (`gopkg.in/yaml.v3`) that decide the bytes of the YAML files
//! Talos tools write with it: the plain-scalar resolver (`resolve.go`), the string style
//! choice (`encode.go` `stringv`), the map key order (`sorter.go`) and a block-style
//! emitter that keeps the libyaml emitter's state (column, whitespace, indention, indent
//! stack) the way `emitterc.go` does. Its users are an Image Factory schematic's
//! canonical bytes ([`crate::schematic`]) and the `extensions.yaml` and extension
//! `manifest.yaml` files of the initramfs rebuild ([`crate::extensions::manifest`]).
//!
//! Why not serde_yaml: its emitter (libyaml through `unsafe-libyaml`, with its own
//! settings: 2-space indent, indentless sequences, different quoting of `yes`/`on` and
//! numeric-looking strings) produces other bytes, and a schematic's ID is the SHA-256 of
//! exactly the bytes the factory's go-yaml writes. The schemas are fixed and small, so
//! the emitter below covers only block mappings, block sequences, the empty flow
//! collections `{}`/`[]` and the four scalar styles go-yaml picks from (plain,
//! single-quoted, double-quoted, literal), with best_width unlimited (no folding),
//! indent 4 and Unicode output, as `yaml.Marshal` and `yaml.NewEncoder` configure it.
//!
//! go-yaml's own output is not always a fixed point of its reader;
//! [`unstable_encoding`] names those cases for round-trip checks.
//!
//! [`marshal_v4`] writes what `go.yaml.in/yaml/v4`'s `Marshal` writes (its v3 defaults:
//! indent 4, legacy quoting, unlimited width), which Image Factory uses from v0.9.0;
//! it differs from v3 in the representer (`internal/libyaml/representer.go`
//! `stringv`: YAML 1.1 booleans, sexagesimal-looking strings and `<<` single-quoted; a
//! multi-line string literal only when it has two bytes or more and a non-space
//! character, else double-quoted) and in the emitter's block scalars (`emitter.go`
//! `writeBlockScalarHints`/`writeLiteralScalar`: an indentation indicator only before a
//! leading space, and the header always ends its line).

/// Whether `yaml` (this emitter's output) holds one of the encodings go-yaml writes
/// but does not read back as the same text: a `|4` block scalar (the indentation
/// indicator of a multi-line value starting with a space or a break is relative to the
/// wrong column inside a sequence item), raw tabs (in literal blocks, where a reader
/// may take them for indentation) and raw U+2028/U+2029 (copied into single quotes,
/// where a reader folds them as line breaks).
pub fn unstable_encoding(yaml: &str) -> bool {
    yaml.contains("|4") || yaml.contains(['\t', '\u{2028}', '\u{2029}'])
}

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
fn underscore_ok(s: &str) -> bool {
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
fn parse_digits(s: &str, radix: u32) -> Option<i128> {
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
fn go_parse_int_base0(s: &str) -> Option<i128> {
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

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go `strconv.ParseFloat(s, 64)` for the inputs the resolver hands it: decimal
/// syntax (checked by the caller or starting with `.`); out of range is an error.
/// Go also accepts `inf`/`nan` spellings and hex floats, none of which can reach here
/// except through the `.` path, where they do not parse either.
fn go_parse_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let body = s.trim_start_matches(['+', '-']);
    if body.len() + 1 < s.len() || body.is_empty() {
        return None;
    }
    // Decimal syntax only: digits, at most one '.', optional exponent.
    let ok = {
        let mut seen_digit = false;
        let mut i = b.len() - body.len();
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            seen_digit |= b[i].is_ascii_digit();
            i += 1;
        }
        let mantissa = &s[b.len() - body.len()..i];
        let mut ok = seen_digit && mantissa.matches('.').count() <= 1;
        if i < b.len() {
            ok &= matches!(b[i], b'e' | b'E');
            let mut j = i + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            ok &= j < b.len() && b[j..].iter().all(u8::is_ascii_digit);
        }
        ok
    };
    if !ok {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

/// go-yaml v3 `parseTimestamp`: `time.Parse` with one of four layouts.
fn is_timestamp(s: &str) -> bool {
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

struct Cursor<'a> {
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

fn days_in(month: u32, year: u32) -> u32 {
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
fn is_base60_float(s: &str) -> bool {
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

/// Go `strconv.FormatFloat(f, 'g', -1, 64)`, with go-yaml's `.inf`/`.nan` names.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let neg = f.is_sign_negative();
    let sign = if neg { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}`.
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let nd = digits.len() as i32;
    // strconv: shortest 'g' uses %e when the exponent is < -4 or >= 6.
    if !(-4..6).contains(&exp) {
        return fmt_e(sign, &digits, exp);
    }
    // %f with max(nd - dp, 0) decimals, dp = exp + 1.
    let dp = exp + 1;
    let mut out = String::from(sign);
    if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dp) as usize));
        out.push_str(&digits);
    } else if dp >= nd {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (dp - nd) as usize));
    } else {
        out.push_str(&digits[..dp as usize]);
        out.push('.');
        out.push_str(&digits[dp as usize..]);
    }
    out
}

fn fmt_e(sign: &str, digits: &str, exp: i32) -> String {
    let mut out = String::from(sign);
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", exp.abs()));
    out
}

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
fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit()
}

/// A node of the document to emit. Strings carry their text; `Raw` scalars (numbers,
/// booleans, null) are emitted plain as go-yaml does for non-string kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Str(String),
    Raw(String),
    Map(Vec<(String, Out)>),
    Seq(Vec<Out>),
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

#[derive(Clone, Copy, PartialEq)]
enum Parent {
    Root,
    SeqItem,
    MapValue,
    MapKey,
}

/// Which go-yaml writes the bytes.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    /// `gopkg.in/yaml.v3` (Talos's tools).
    V3,
    /// `go.yaml.in/yaml/v4` `Marshal` (Image Factory from v0.9.0).
    V4,
}

/// The emitter state of libyaml that the output depends on.
struct Emitter {
    dialect: Dialect,
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    indent: i64,
    /// The encoder's indentation (`SetIndent`; 4 unless set).
    best_indent: i64,
}

/// `yaml.Marshal` of the document rooted at `root` (a mapping), which is also what
/// `yaml.NewEncoder(w).Encode` writes for one document.
pub(crate) fn marshal(root: &Out) -> String {
    marshal_indent(root, 4)
}

/// `go.yaml.in/yaml/v4` `Marshal` of the document rooted at `root` (a mapping).
pub(crate) fn marshal_v4(root: &Out) -> String {
    emit(root, 4, Dialect::V4)
}

/// What an encoder with `SetIndent(indent)` writes for the document rooted at `root`.
pub(crate) fn marshal_indent(root: &Out, indent: u8) -> String {
    emit(root, indent, Dialect::V3)
}

fn emit(root: &Out, indent: u8, dialect: Dialect) -> String {
    let mut e = Emitter {
        dialect,
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
        indent: -1,
        // libyaml's emitter takes 2..=9 and falls back to 2.
        best_indent: if (2..=9).contains(&indent) {
            i64::from(indent)
        } else {
            2
        },
    };
    e.node(root, Parent::Root, false);
    // DOCUMENT-END (implicit): one indent at the root's level.
    e.indent = -1;
    e.write_indent();
    e.out
}

impl Emitter {
    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
        self.indention = true;
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
    }

    fn write_indicator(
        &mut self,
        ind: &str,
        need_whitespace: bool,
        is_whitespace: bool,
        is_indention: bool,
    ) {
        if need_whitespace && !self.whitespace {
            self.put(' ');
        }
        for c in ind.chars() {
            self.put(c);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
    }

    /// `yaml_emitter_increase_indent`; `flow` is only used at the root.
    fn increase_indent(&mut self, flow: bool, parent: Parent) -> i64 {
        let saved = self.indent;
        if self.indent < 0 {
            self.indent = if flow { self.best_indent } else { 0 };
        } else if parent == Parent::SeqItem {
            self.indent += 2;
        } else {
            self.indent = self.best_indent * ((self.indent + self.best_indent) / self.best_indent);
        }
        saved
    }

    fn node(&mut self, n: &Out, parent: Parent, simple_key: bool) {
        match n {
            Out::Str(s) => self.string(s, parent, simple_key),
            Out::Raw(s) => self.scalar(s, Style::Plain, parent, simple_key),
            Out::Map(m) if m.is_empty() => self.write_indicator("{}", true, false, false),
            Out::Seq(s) if s.is_empty() => self.write_indicator("[]", true, false, false),
            Out::Map(m) => {
                let saved = self.increase_indent(false, parent);
                for (k, v) in m {
                    self.write_indent();
                    self.string(k, Parent::MapKey, true);
                    self.write_indicator(":", false, false, false);
                    self.node(v, Parent::MapValue, false);
                }
                self.indent = saved;
            }
            Out::Seq(items) => {
                let saved = self.increase_indent(false, parent);
                for v in items {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(v, Parent::SeqItem, false);
                }
                self.indent = saved;
            }
        }
    }

    /// encode.go `stringv` (v4: representer.go `stringv`, then the desolver, which
    /// double-quotes a plain string that would not read back as a string).
    fn string(&mut self, s: &str, parent: Parent, simple_key: bool) {
        if self.dialect == Dialect::V4 {
            let style = if s.contains('\n') {
                // `shouldUseLiteralStyle`: Go's unicode.IsSpace is White_Space.
                if s.len() >= 2 && s.chars().any(|c| !c.is_whitespace()) {
                    Style::Literal
                } else {
                    Style::Double
                }
            } else if is_base60_float(s) || is_old_bool(s).is_some() || s == "<<" {
                Style::Single
            } else if resolve(s) == Resolved::Str {
                Style::Plain
            } else {
                Style::Double
            };
            return self.scalar(s, style, parent, simple_key);
        }
        let can_use_plain =
            resolve(s) == Resolved::Str && !(is_base60_float(s) || is_old_bool(s).is_some());
        let style = if s.contains('\n') {
            Style::Literal
        } else if can_use_plain {
            Style::Plain
        } else {
            Style::Double
        };
        self.scalar(s, style, parent, simple_key)
    }

    /// `yaml_emitter_emit_scalar`: select the style, then write.
    fn scalar(&mut self, s: &str, style: Style, parent: Parent, simple_key: bool) {
        let a = analyze(s);
        let mut style = style;
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain && (!a.block_plain_allowed || (s.is_empty() && simple_key)) {
            style = Style::Single;
        }
        if style == Style::Single && !a.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || simple_key) {
            style = Style::Double;
        }
        let saved = self.increase_indent(true, parent);
        match style {
            Style::Plain => self.write_plain(s),
            Style::Single => self.write_single(s),
            Style::Double => self.write_double(s),
            Style::Literal => self.write_literal(s),
        }
        self.indent = saved;
    }

    fn write_plain(&mut self, s: &str) {
        if !s.is_empty() && !self.whitespace {
            self.put(' ');
        }
        // Plain scalars here never hold breaks (multi-line strings are never plain).
        for c in s.chars() {
            self.put(c);
        }
        if !s.is_empty() {
            self.whitespace = false;
        }
        self.indention = false;
    }

    fn write_single(&mut self, s: &str) {
        self.write_indicator("'", true, false, false);
        let mut breaks = false;
        for c in s.chars() {
            if is_break(c) {
                // Only LS/PS can get here (a single-quoted scalar has no '\n', CR or
                // NEL: those make it multi-line or non-printable). write_break copies it.
                self.out.push(c);
                self.column = 0;
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double(&mut self, s: &str) {
        self.write_indicator("\"", true, false, false);
        // emitterc.go's is_bom looks at the first bytes of the value, not at `i`: a
        // value that starts with a BOM has every character escaped.
        let all = s.starts_with('\u{feff}');
        for c in s.chars() {
            if all || !is_printable(c) || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                let v = c as u32;
                match v {
                    0x00 => self.put('0'),
                    0x07 => self.put('a'),
                    0x08 => self.put('b'),
                    0x09 => self.put('t'),
                    0x0a => self.put('n'),
                    0x0b => self.put('v'),
                    0x0c => self.put('f'),
                    0x0d => self.put('r'),
                    0x1b => self.put('e'),
                    0x22 => self.put('"'),
                    0x5c => self.put('\\'),
                    0x85 => self.put('N'),
                    0xa0 => self.put('_'),
                    0x2028 => self.put('L'),
                    0x2029 => self.put('P'),
                    _ => {
                        let (ind, w) = if v <= 0xff {
                            ('x', 2)
                        } else if v <= 0xffff {
                            ('u', 4)
                        } else {
                            ('U', 8)
                        };
                        self.put(ind);
                        for c in format!("{v:0w$X}").chars() {
                            self.put(c);
                        }
                    }
                }
            } else {
                self.put(c);
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, s: &str) {
        self.write_indicator("|", true, false, false);
        // Block scalar hints: an indentation indicator when the text starts with a
        // space or a break, a chomping indicator from its trailing breaks.
        let first = s.chars().next();
        let hinted = match self.dialect {
            Dialect::V3 => first.is_some_and(|c| c == ' ' || is_break(c)),
            Dialect::V4 => first == Some(' '),
        };
        if hinted {
            let hint = self.best_indent.to_string();
            self.write_indicator(&hint, false, false, false);
        }
        let mut rev = s.chars().rev();
        let chomp = match (rev.next(), rev.next()) {
            (None, _) => Some("-"),
            (Some(l), _) if !is_break(l) => Some("-"),
            (Some(_), None) => Some("+"),
            (Some(_), Some(p)) if is_break(p) => Some("+"),
            _ => None,
        };
        if let Some(c) = chomp {
            self.write_indicator(c, false, false, false);
        }
        if self.dialect == Dialect::V4 {
            // `processLineCommentLinebreak(true)`: the header ends its line, so a
            // leading break of the text is a blank line of its own.
            self.put_break();
        }
        self.whitespace = true;
        let mut breaks = true;
        for c in s.chars() {
            if is_break(c) {
                if c == '\n' {
                    self.put_break();
                } else {
                    self.out.push(c);
                    self.column = 0;
                    self.indention = true;
                }
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// emitterc.go `is_printable`, per character.
fn is_printable(c: char) -> bool {
    let v = c as u32;
    v == 0x0a
        || (0x20..=0x7e).contains(&v)
        || (0xa0..=0xd7ff).contains(&v)
        || ((0xe000..=0xfffd).contains(&v) && v != 0xfeff)
    // Four-byte UTF-8 (U+10000 and up) is not printable to libyaml's byte test.
}

struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

/// `yaml_emitter_analyze_scalar` (block context: only the block-plain flag matters).
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut line_breaks, mut special, mut tabs) = (false, false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_whitespace = true;
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let followed_by_whitespace = next.is_none_or(|n| n == ' ' || n == '\t' || is_break(n));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_whitespace => block_indicators = true,
                '#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }
        if c == '\t' {
            tabs = true;
        } else if !is_printable(c) {
            special = true;
        }
        let last = i + 1 == chars.len();
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= last;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= last;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        // is_blankz: space, tab, break or NUL.
        preceded_by_whitespace = c == ' ' || c == '\t' || is_break(c) || c == '\0';
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || tabs || special {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special {
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.block_plain_allowed = false;
    }
    a
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

    #[test]
    fn string_styles() {
        let one = |s: &str| marshal(&Out::Map(vec![("k".into(), Out::Str(s.into()))]));
        for (s, want) in [
            ("20250211", "\"20250211\""),
            ("1.10", "\"1.10\""),
            ("1e3", "\"1e3\""),
            ("0x10", "\"0x10\""),
            ("012", "\"012\""),
            ("yes", "\"yes\""),
            ("on", "\"on\""),
            ("y", "\"y\""),
            ("true", "\"true\""),
            ("null", "\"null\""),
            ("~", "\"~\""),
            ("", "\"\""),
            ("a\tb", "\"a\\tb\""),
            ("'>= v1.0.0'", "'''>= v1.0.0'''"),
            ("a: b", "'a: b'"),
            ("- x", "'- x'"),
            ("1.10.0", "1.10.0"),
            ("v1.0.0", "v1.0.0"),
            ("-x", "-x"),
            ("x,y", "x,y"),
            ("6.12.9-talos", "6.12.9-talos"),
            ("2025-02-11", "\"2025-02-11\""),
            ("1:20", "\"1:20\""),
            ("a\u{2028}b", "'a\u{2028}    b'"),
            ("a\nb", "|-\n    a\n    b"),
            ("a\n\nb\n\n", "|+\n    a\n\n    b\n"),
            (" a\n", "|4\n     a"),
        ] {
            assert_eq!(one(s), format!("k: {want}\n"), "{s:?}");
        }
        assert!(unstable_encoding(&one("a\u{2028}b")) && unstable_encoding(&one(" a\n")));
        assert!(!unstable_encoding(&one("a\nb")));
    }

    #[test]
    fn set_indent_2_indents_sequences_as_go_yaml() {
        // go-yaml v3: NewEncoder, SetIndent(2), Encode of a struct with these fields.
        let entry = |fields: &[(&str, &str)]| {
            Out::Map(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), Out::Str(v.to_string())))
                    .collect(),
            )
        };
        let doc = Out::Map(vec![
            (
                "input".into(),
                Out::Map(vec![(
                    "systemExtensions".into(),
                    Out::Seq(vec![
                        entry(&[("imageRef", "ghcr.io/x/y:1")]),
                        entry(&[
                            ("imageRef", ""),
                            ("tarballPath", "/tmp/imager123/embedded-config.tar"),
                        ]),
                    ]),
                )]),
            ),
            ("args".into(), Out::Seq(vec![Out::Str("a".into())])),
            ("text".into(), Out::Str(" a\n".into())),
        ]);
        assert_eq!(
            marshal_indent(&doc, 2),
            "input:\n  systemExtensions:\n    - imageRef: ghcr.io/x/y:1\n    - imageRef: \"\"\n      tarballPath: /tmp/imager123/embedded-config.tar\nargs:\n  - a\ntext: |2\n   a\n"
        );
    }

    #[test]
    fn floats_format_like_strconv() {
        for (f, s) in [
            (1.5, "1.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-10, "-2.5e-10"),
            (0.0, "0"),
        ] {
            assert_eq!(format_float(f), s, "{f}");
        }
    }

    #[test]
    fn natural_key_order() {
        assert!(key_less("a2", "a10"));
        assert!(key_less("a", "b"));
        assert!(!key_less("b", "a"));
        assert!(key_less("a1", "a01"));
    }
}
