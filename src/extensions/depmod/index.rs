//! The `.bin` index files of kmod (`modules.dep.bin`, `modules.alias.bin`,
//! `modules.symbols.bin`, `modules.builtin.bin`, `modules.builtin.alias.bin`): a
//! path-compressed trie over 7-bit keys that libkmod searches without parsing the
//! text files.
//!
//! Written here because no crate writes them. The layout follows kmod 34.2
//! (`tools/depmod.c`, `index_*`; the reader is `libkmod/libkmod-index.c`), all integers
//! big-endian:
//! - header: magic `0xB007F457`, version `0x00020001`, then the root node's offset
//!   (12) or-ed with its flags;
//! - a node, written in pre-order: its prefix (if any) and a NUL; if it has children
//!   the first and last child character (one byte each) and one offset per character
//!   in that range (0 where there is no child); if it has values their count, then for
//!   each its priority and the NUL-terminated value, sorted by priority (a value
//!   inserted with the priority of existing ones goes before them, as kmod's list
//!   insertion does);
//! - an offset's high nibble says what the node holds: `0x80000000` prefix,
//!   `0x40000000` values, `0x20000000` children; the low 28 bits are the file offset.
//!
//! Insertion splits prefixes exactly as kmod does, so the same key/value sequence
//! gives the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

const MAGIC: u32 = 0xB007_F457;
const VERSION: u32 = 0x0002_0001;
const FLAG_PREFIX: u32 = 0x8000_0000;
const FLAG_VALUES: u32 = 0x4000_0000;
const FLAG_CHILDREN: u32 = 0x2000_0000;
const OFFSET_MASK: u32 = 0x0FFF_FFFF;

#[derive(Default)]
struct Node {
    prefix: Vec<u8>,
    /// (priority, value), kept sorted by priority.
    values: Vec<(u32, Vec<u8>)>,
    children: BTreeMap<u8, Node>,
    /// Own size plus the subtree's, set by `compute_totals`.
    total: u64,
}

impl Node {
    fn flags(&self) -> u32 {
        let mut f = 0;
        if !self.children.is_empty() {
            f |= FLAG_CHILDREN;
        }
        if !self.prefix.is_empty() {
            f |= FLAG_PREFIX;
        }
        if !self.values.is_empty() {
            f |= FLAG_VALUES;
        }
        f
    }

    /// The node's own size in the file.
    fn size(&self) -> u64 {
        let mut n = 0u64;
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            n += 2 + 4 * (u64::from(last - first) + 1);
        }
        if !self.prefix.is_empty() {
            n += self.prefix.len() as u64 + 1;
        }
        if !self.values.is_empty() {
            n += 4;
            n += self
                .values
                .iter()
                .map(|(_, v)| 4 + v.len() as u64 + 1)
                .sum::<u64>();
        }
        n
    }

    /// Sets `total` of this node and its subtree; returns it.
    fn compute_totals(&mut self) -> u64 {
        let mut t = self.size();
        for c in self.children.values_mut() {
            t += c.compute_totals();
        }
        self.total = t;
        t
    }
}

/// An index being built.
#[derive(Default)]
pub struct Index {
    root: Node,
}

/// A key or value holds a byte kmod's index cannot (only 7-bit ASCII, no NUL).
#[derive(Debug)]
pub struct BadChar(pub Vec<u8>);

fn check(s: &[u8]) -> Result<(), BadChar> {
    if s.iter().any(|&c| c == 0 || c >= 128) {
        return Err(BadChar(s.to_vec()));
    }
    Ok(())
}

impl Index {
    pub fn new() -> Self {
        Index::default()
    }

    /// Adds `value` under `key`; true if the key already held the same value.
    pub fn insert(&mut self, key: &[u8], value: &[u8], priority: u32) -> Result<bool, BadChar> {
        check(key)?;
        check(value)?;
        let mut node = &mut self.root;
        let mut i = 0;
        loop {
            let rest = &key[i..];
            let j = node
                .prefix
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if j < node.prefix.len() {
                // Split: the node keeps prefix[..j]; a child at prefix[j] takes the rest.
                let ch = node.prefix[j];
                let child = Node {
                    prefix: node.prefix[j + 1..].to_vec(),
                    values: std::mem::take(&mut node.values),
                    children: std::mem::take(&mut node.children),
                    total: 0,
                };
                node.prefix.truncate(j);
                node.children.insert(ch, child);
            }
            i += j;
            if i == key.len() {
                return Ok(add_value(&mut node.values, value, priority));
            }
            let ch = key[i];
            match node.children.entry(ch) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Node {
                        prefix: key[i + 1..].to_vec(),
                        values: vec![(priority, value.to_vec())],
                        children: BTreeMap::new(),
                        total: 0,
                    });
                    return Ok(false);
                }
                std::collections::btree_map::Entry::Occupied(o) => node = o.into_mut(),
            }
            i += 1;
        }
    }

    /// Writes the index file.
    pub fn write(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let total = self.root.compute_totals();
        if 12 + total > u64::from(OFFSET_MASK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the module index is larger than 256 MiB, which its 28-bit offsets cannot address",
            ));
        }
        out.write_all(&MAGIC.to_be_bytes())?;
        out.write_all(&VERSION.to_be_bytes())?;
        out.write_all(&(12 | self.root.flags()).to_be_bytes())?;
        write_node(&self.root, 12, out)
    }
}

fn add_value(values: &mut Vec<(u32, Vec<u8>)>, value: &[u8], priority: u32) -> bool {
    let duplicate = values.iter().any(|(_, v)| v == value);
    let pos = values
        .iter()
        .position(|(p, _)| *p >= priority)
        .unwrap_or(values.len());
    values.insert(pos, (priority, value.to_vec()));
    duplicate
}

/// Writes `node` at file offset `offset`, then its subtrees in character order.
fn write_node(node: &Node, offset: u64, out: &mut dyn Write) -> io::Result<()> {
    if !node.prefix.is_empty() {
        out.write_all(&node.prefix)?;
        out.write_all(&[0])?;
    }
    let mut child_at = Vec::with_capacity(node.children.len());
    if let (Some((&first, _)), Some((&last, _))) = (
        node.children.first_key_value(),
        node.children.last_key_value(),
    ) {
        out.write_all(&[first, last])?;
        let mut next = offset + node.size();
        for ch in first..=last {
            match node.children.get(&ch) {
                Some(c) => {
                    out.write_all(&((next as u32) | c.flags()).to_be_bytes())?;
                    child_at.push(next);
                    next += c.total;
                }
                None => out.write_all(&0u32.to_be_bytes())?,
            }
        }
    }
    if !node.values.is_empty() {
        out.write_all(&(node.values.len() as u32).to_be_bytes())?;
        for (p, v) in &node.values {
            out.write_all(&p.to_be_bytes())?;
            out.write_all(v)?;
            out.write_all(&[0])?;
        }
    }
    for (c, off) in node.children.values().zip(child_at) {
        write_node(c, off, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(ix: &mut Index) -> Vec<u8> {
        let mut v = Vec::new();
        ix.write(&mut v).unwrap();
        v
    }

    #[test]
    fn empty_index_is_twelve_bytes() {
        assert_eq!(
            bytes(&mut Index::new()),
            [0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1, 0, 0, 0, 12]
        );
    }

    #[test]
    fn one_key_then_a_split() {
        let mut ix = Index::new();
        ix.insert(b"ab", b"x", 0).unwrap();
        // root: children 'a'..'a' -> child with prefix "b" and one value.
        let b = bytes(&mut ix);
        assert_eq!(&b[8..12], &(12 | FLAG_CHILDREN).to_be_bytes());
        assert_eq!(&b[12..14], b"aa");
        assert_eq!(&b[14..18], &(18 | FLAG_PREFIX | FLAG_VALUES).to_be_bytes());
        assert_eq!(&b[18..20], b"b\0");
        assert_eq!(&b[20..24], &1u32.to_be_bytes());
        assert_eq!(&b[24..28], &0u32.to_be_bytes());
        assert_eq!(&b[28..], b"x\0");
        // "ac" splits the "b" prefix: child 'a' now has no prefix and children b, c.
        ix.insert(b"ac", b"y", 0).unwrap();
        let b = bytes(&mut ix);
        assert_eq!(&b[14..18], &(18 | FLAG_CHILDREN).to_be_bytes());
        assert_eq!(&b[18..20], b"bc");
    }

    #[test]
    fn equal_priorities_insert_in_front() {
        let mut v = Vec::new();
        assert!(!add_value(&mut v, b"a", 0));
        assert!(!add_value(&mut v, b"b", 0));
        add_value(&mut v, b"c", 1);
        assert!(add_value(&mut v, b"a", 2));
        let order: Vec<&[u8]> = v.iter().map(|(_, x)| x.as_slice()).collect();
        assert_eq!(order, [&b"b"[..], b"a", b"c", b"a"]);
    }

    #[test]
    fn eight_bit_keys_are_refused() {
        assert!(Index::new().insert(b"caf\xc3\xa9", b"x", 0).is_err());
    }
}
