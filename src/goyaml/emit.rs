//! A block-style emitter that keeps the libyaml emitter's state (column, whitespace,
//! indention, indent stack) the way go-yaml's `emitterc.go` (v3) and
//! `internal/libyaml/emitter.go` (v4) do, with the string style choice of
//! `encode.go` `stringv` (v3) and `internal/libyaml/representer.go` (v4). It covers
//! block mappings, block sequences, the empty flow collections `{}`/`[]` and the four
//! scalar styles go-yaml picks from (plain, single-quoted, double-quoted, literal), with
//! best_width unlimited (no folding) and Unicode output.

use super::Out;
use super::resolve::{Resolved, is_base60_float, is_old_bool, resolve};

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Parent {
    Root,
    SeqItem,
    MapValue,
    MapKey,
}

/// Which go-yaml writes the bytes.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Dialect {
    /// `gopkg.in/yaml.v3` (Talos's tools).
    V3,
    /// `go.yaml.in/yaml/v4` `Marshal` (Image Factory from v0.9.0).
    V4,
}

/// The emitter state of libyaml that the output depends on.
pub(super) struct Emitter {
    dialect: Dialect,
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    indent: i64,
    /// The encoder's indentation (`SetIndent`; 4 unless set).
    best_indent: i64,
}

pub(super) fn emit(root: &Out, indent: u8, dialect: Dialect) -> String {
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

pub(super) fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// emitterc.go `is_printable`, per character.
pub(super) fn is_printable(c: char) -> bool {
    let v = c as u32;
    v == 0x0a
        || (0x20..=0x7e).contains(&v)
        || (0xa0..=0xd7ff).contains(&v)
        || ((0xe000..=0xfffd).contains(&v) && v != 0xfeff)
    // Four-byte UTF-8 (U+10000 and up) is not printable to libyaml's byte test.
}

pub(super) struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

/// `yaml_emitter_analyze_scalar` (block context: only the block-plain flag matters).
pub(super) fn analyze(s: &str) -> Analysis {
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
