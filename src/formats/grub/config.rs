//! Talos's `grub.cfg` for a fresh disk image (one `A` entry and the reset entry), and
//! the rules Talos uses to read it back on upgrade.
//!
//! Text as Talos's `bootloader/grub/encode.go` writes it (no fallback on a fresh
//! image); the command line is escaped by putting a backslash before each of
//! `\ { } & $ | ; < > "` (quote.go), and, where Talos's list falls short of GRUB's
//! lexer, before `'`, a word-leading `#` and a whole-word `[[` or `]]`. [`check_config`] applies `decode.go`'s rules:
//! exactly one `set default="…"` line, at most one `set fallback`, blocks
//! `menuentry "<name>" {…}` ending at the first `}` not preceded by a backslash,
//! names starting with `A`, `B` or `Reset`, and in each block (unescaped) exactly one
//! `linux <path> <args>` and one `initrd <path>` line.

/// The kernel and initramfs of boot entry A, relative to the BOOT partition.
const KERNEL: &str = "/A/vmlinuz";
const INITRD: &str = "/A/initramfs.xz";
const RESET_NAME: &str = "Reset Talos installation and return to maintenance mode";
const RESET_ARG: &str = "talos.experimental.wipe=system:EPHEMERAL,STATE";

/// `grub.cfg` booting `A - Talos <version>` with `cmdline`, plus the reset entry.
pub fn config(version: &str, cmdline: &str) -> String {
    let name = format!("A - Talos {version}");
    let args = quote(cmdline);
    let entry = |title: &str, extra: &str| {
        format!(
            "menuentry \"{title}\" {{\n  set gfxmode=auto\n  set gfxpayload=text\n  linux {KERNEL} {args}{extra}\n  initrd {INITRD}\n}}\n"
        )
    };
    let mut out = format!(
        "set default=\"{name}\"\n\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n"
    );
    out.push_str(&entry(&name, ""));
    out.push_str(&entry(RESET_NAME, &format!(" {RESET_ARG}")));
    out
}

const SPECIAL: &str = "\\{}&$|;<>\"'";

/// Talos's `Quote` (a backslash before each of its special characters), plus what
/// its list misses and GRUB's lexer (grub-core/script/yylex.l) would still read as
/// syntax: a `'` (it opens a quoted string), a `#` starting a word (a comment: the
/// rest of the line would be lost), and `[[` or `]]` as a whole word (reserved
/// words, refused as arguments). GRUB drops the backslash of `\c` for any `c`, so
/// the kernel gets the command line as written. Talos itself leaves these three, so
/// its grub.cfg for such a command line is refused or cut by GRUB.
fn quote(s: &str) -> String {
    let blank = |c: char| c == ' ' || c == '\t';
    let mut out = String::with_capacity(s.len() + 8);
    let mut word_start = true;
    for (i, c) in s.char_indices() {
        if word_start && !blank(c) {
            let word = s[i..].split(blank).next().unwrap_or_default();
            if word == "[[" || word == "]]" || c == '#' {
                out.push('\\');
            }
        }
        if SPECIAL.contains(c) {
            out.push('\\');
        }
        out.push(c);
        word_start = blank(c);
    }
    out
}

/// The inverse of [`quote`]: a backslash before one of the characters it escapes is
/// dropped, left to right (what Talos's Unquote does for its own characters, without
/// its pass-per-character order mixing up `\\` followed by one of them).
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && (SPECIAL.contains(next) || matches!(next, '#' | '[' | ']'))
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

/// A boot entry as Talos reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEntry {
    pub name: String,
    pub linux: String,
    pub cmdline: String,
    pub initrd: String,
}

/// What Talos's decoder gets from a `grub.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedConfig {
    pub default: String,
    pub fallback: Option<String>,
    /// The A/B entries (the reset entry is only noted).
    pub entries: Vec<ParsedEntry>,
    pub has_reset: bool,
}

fn boot_label(name: &str) -> Result<&'static str, String> {
    if name.starts_with('A') {
        Ok("A")
    } else if name.starts_with('B') {
        Ok("B")
    } else if name.starts_with("Reset") {
        Ok("Reset")
    } else {
        Err(format!("could not parse boot entry from name: {name}"))
    }
}

/// Values of `set <key>="…"` lines (`^\s*set key="(.*)"\s*$`).
fn set_lines(text: &str, key: &str) -> Vec<String> {
    let head = format!("set {key}=\"");
    text.lines()
        .filter_map(|l| {
            let t = l.trim_start().strip_prefix(&head)?.trim_end();
            t.strip_suffix('"').map(str::to_string)
        })
        .collect()
}

/// Parses `text` with Talos's upgrade-time rules; an error says which rule failed.
pub fn check_config(text: &str) -> Result<ParsedConfig, String> {
    let defaults = set_lines(text, "default");
    if defaults.len() != 1 {
        return Err(format!(
            "failed to find default ({} set default lines)",
            defaults.len()
        ));
    }
    boot_label(&defaults[0])?;
    let fallbacks = set_lines(text, "fallback");
    if fallbacks.len() > 1 {
        return Err("found multiple fallback entries".into());
    }
    if let Some(f) = fallbacks.first() {
        boot_label(f)?;
    }
    let mut entries = Vec::new();
    let mut has_reset = false;
    let mut rest = text;
    let mut at_line_start = true;
    while !rest.is_empty() {
        // `^menuentry\s+"(.+?)" {(.+?)[^\\]}` with (?ms).
        if at_line_start && let Some(after) = rest.strip_prefix("menuentry") {
            let trimmed = after.trim_start();
            let first = trimmed
                .strip_prefix('"')
                .and_then(|q| q.chars().next().map(|c| (q, c.len_utf8())));
            if trimmed.len() < after.len()
                && let Some((q, first)) = first
                && let Some(end) = q[first..].find("\" {").map(|i| i + first)
            {
                let name = &q[..end];
                let body_start = &q[end + 3..];
                // Body: at least one char, then a non-backslash char, then `}`.
                let bytes = body_start.as_bytes();
                let close = (1..bytes.len()).find_map(|i| {
                    if bytes[i] != b'}' || bytes[i - 1] == b'\\' {
                        return None;
                    }
                    let prev = body_start[..i].chars().next_back()?.len_utf8();
                    (i > prev).then_some((i, prev))
                });
                if let Some((close, prev)) = close {
                    let block = &body_start[..close - prev];
                    let label = boot_label(name)?;
                    let (linux, cmdline, initrd) = parse_block(block)?;
                    if label == "Reset" {
                        has_reset = true;
                    } else {
                        entries.push(ParsedEntry {
                            name: name.to_string(),
                            linux,
                            cmdline,
                            initrd,
                        });
                    }
                    rest = &body_start[close + 1..];
                    at_line_start = false;
                    continue;
                }
            }
        }
        let c = rest.chars().next().unwrap();
        at_line_start = c == '\n';
        rest = &rest[c.len_utf8()..];
    }
    Ok(ParsedConfig {
        default: defaults[0].clone(),
        fallback: fallbacks.into_iter().next(),
        entries,
        has_reset,
    })
}

/// One unescaped `linux <path> <args>` and one `initrd <path>` line.
fn parse_block(block: &str) -> Result<(String, String, String), String> {
    let block = unquote(block);
    let linux: Vec<(String, String)> = block
        .lines()
        .filter_map(|l| {
            let t = l.trim_start().strip_prefix("linux")?;
            let t2 = t.trim_start();
            if t2.len() == t.len() {
                return None;
            }
            // `(.+?)\s+(.*)$`: the path is the shortest run before whitespace.
            let ws = t2
                .char_indices()
                .skip(1)
                .find(|(_, c)| c.is_whitespace())?
                .0;
            Some((t2[..ws].to_string(), t2[ws..].trim_start().to_string()))
        })
        .collect();
    if linux.len() != 1 {
        return Err(format!("linux: expected 1 match, got {}", linux.len()));
    }
    let initrd: Vec<String> = block
        .lines()
        .filter_map(|l| {
            let t = l.trim_start().strip_prefix("initrd")?;
            let t2 = t.trim_start();
            (t2.len() < t.len() && !t2.is_empty()).then(|| t2.to_string())
        })
        .collect();
    if initrd.len() != 1 {
        return Err(format!("initrd: expected 1 match, got {}", initrd.len()));
    }
    let (path, args) = linux.into_iter().next().unwrap();
    Ok((path, args, initrd.into_iter().next().unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Talos's own golden file (testdata/grub_write_test.cfg), with our names.
    #[test]
    fn matches_talos_layout() {
        let want = "set default=\"A - Talos v1.9.2\"\n\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\nmenuentry \"A - Talos v1.9.2\" {\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /A/vmlinuz cmdline A\n  initrd /A/initramfs.xz\n}\nmenuentry \"Reset Talos installation and return to maintenance mode\" {\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /A/vmlinuz cmdline A talos.experimental.wipe=system:EPHEMERAL,STATE\n  initrd /A/initramfs.xz\n}\n";
        assert_eq!(config("v1.9.2", "cmdline A"), want);
    }

    #[test]
    fn escapes_and_parses_back() {
        let cmdline = r#"talos.platform=metal console=ttyS0 a={x}&$y|z;<w>"q" back\slash"#;
        let text = config("v1.10.0", cmdline);
        assert!(text.contains(
            r#"linux /A/vmlinuz talos.platform=metal console=ttyS0 a=\{x\}\&\$y\|z\;\<w\>\"q\" back\\slash"#
        ));
        let parsed = check_config(&text).unwrap();
        assert_eq!(parsed.default, "A - Talos v1.10.0");
        assert_eq!(parsed.fallback, None);
        assert!(parsed.has_reset);
        assert_eq!(
            parsed.entries,
            [ParsedEntry {
                name: "A - Talos v1.10.0".into(),
                linux: KERNEL.into(),
                cmdline: cmdline.into(),
                initrd: INITRD.into(),
            }]
        );
    }

    #[test]
    fn quotes_what_grub_would_read_as_syntax() {
        let cmdline = "a 'b [[ ]] #c d#e x[[ \\[ \\'";
        let text = config("v1.10.0", cmdline);
        assert!(
            text.contains(r"linux /A/vmlinuz a \'b \[[ \]] \#c d#e x[[ \\[ \\\'"),
            "{text}"
        );
        assert_eq!(check_config(&text).unwrap().entries[0].cmdline, cmdline);
    }

    #[test]
    fn parse_back_rules_reject() {
        let good = config("v1.9.2", "a b");
        assert!(check_config(&good.replace("set default", "#")).is_err());
        let two = format!("{good}set default=\"A\"\n");
        assert!(check_config(&two).is_err());
        let bad_name = good.replace("menuentry \"A - Talos", "menuentry \"C - Talos");
        assert!(
            check_config(&bad_name)
                .unwrap_err()
                .contains("could not parse boot entry")
        );
        let no_initrd = good.replacen("  initrd /A/initramfs.xz\n", "", 1);
        assert!(check_config(&no_initrd).unwrap_err().contains("initrd"));
    }
}
