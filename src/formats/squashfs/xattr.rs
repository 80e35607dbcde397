//! The xattr table of a squashfs image.
//!
//! Layout (kernel `fs/squashfs/squashfs_fs.h`, `xattr_id.c`, `xattr.c`): a metadata
//! table of key/value lists, each key a `squashfs_xattr_entry` (u16 type = name
//! prefix index, `user.` 0, `trusted.` 1, `security.` 2, bit 8 = value out of line;
//! u16 length of the name without its prefix; the name), each value a
//! `squashfs_xattr_val` (u32 length; the value, or for an out-of-line value the u64
//! reference of the value stored earlier). Then the id table: one
//! `squashfs_xattr_id` per distinct list (u64 reference of the list, u32 count, u32
//! total of full name lengths + 1 + value lengths) in metadata blocks, then the
//! `squashfs_xattr_id_table` header (u64 start of the key/value table, u32 id count,
//! u32 unused) followed by the u64 offsets of the id blocks. The superblock points
//! at that header.
//!
//! Choices follow squashfs-tools (`xattr.c`, 4.6.1): lists are sorted by full name;
//! an identical list reuses its id; ids are handed out in inode creation order;
//! values longer than 128 bytes are stored out of line (halving that threshold
//! while a list exceeds 64 KiB); a value of 8 bytes or more equal to one stored
//! before points at it.

use std::collections::HashMap;

use super::meta::{Compressor, MetaTable};
use crate::error::{Error, Result};

const PREFIXES: [&str; 3] = ["user.", "trusted.", "security."];
const VALUE_OOL: u16 = 0x100;
const INLINE_MAX: usize = 128;
const TARGET_MAX: usize = 65536;
const OOL_SIZE: usize = 8;

/// The xattrs of an image as they are added.
pub struct XattrTable {
    kv: MetaTable,
    lists: HashMap<Vec<(String, Vec<u8>)>, u32>,
    /// Values of 8 bytes or more seen so far, with the reference of their stored
    /// `squashfs_xattr_val` once written.
    values: HashMap<Vec<u8>, Option<u64>>,
    ids: Vec<u8>,
    count: u32,
}

struct Item<'a> {
    prefix: u16,
    name: &'a str,
    value: &'a [u8],
    ool: bool,
    /// The reference of a value this one points at (or will point at once written).
    target: Option<u64>,
    /// This item registered its value as the one later duplicates point at.
    owner: bool,
}

impl XattrTable {
    pub fn new() -> Self {
        XattrTable {
            kv: MetaTable::new(),
            lists: HashMap::new(),
            values: HashMap::new(),
            ids: Vec::new(),
            count: 0,
        }
    }

    /// The number of distinct lists (xattr ids).
    pub fn len(&self) -> u32 {
        self.count
    }

    /// The xattr id of `list` (name, value pairs of one inode), adding it when new.
    pub fn id(&mut self, c: &mut Compressor, list: &[(String, Vec<u8>)]) -> Result<u32> {
        let mut sorted = list.to_vec();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for w in sorted.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::invalid(format!(
                    "squashfs: duplicate xattr {}",
                    w[0].0
                )));
            }
        }
        if let Some(&id) = self.lists.get(&sorted) {
            return Ok(id);
        }
        let mut items = Vec::with_capacity(sorted.len());
        for (full, value) in &sorted {
            let prefix = PREFIXES
                .iter()
                .position(|p| full.starts_with(p))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "squashfs: xattr {full:?} has no user., trusted. or security. prefix"
                    ))
                })?;
            let name = &full[PREFIXES[prefix].len()..];
            if name.len() > u16::MAX as usize || value.len() > u32::MAX as usize {
                return Err(Error::invalid(format!(
                    "squashfs: xattr {full:?} is too long"
                )));
            }
            items.push(Item {
                prefix: prefix as u16,
                name,
                value,
                ool: false,
                target: None,
                owner: false,
            });
        }
        // Inline or out of line.
        let mut max = INLINE_MAX;
        loop {
            let mut total = 0;
            for it in &mut items {
                it.ool = it.value.len() > max;
                total += 8 + it.name.len() + if it.ool { OOL_SIZE } else { it.value.len() };
            }
            if total <= TARGET_MAX || max == OOL_SIZE {
                break;
            }
            max = (max / 2).max(OOL_SIZE);
        }
        // Values equal to one stored before.
        for it in &mut items {
            if it.value.len() < OOL_SIZE {
                continue;
            }
            match self.values.get(it.value) {
                Some(at) => {
                    it.ool = true;
                    it.target = *at;
                }
                None => {
                    self.values.insert(it.value.to_vec(), None);
                    it.owner = true;
                }
            }
        }
        // Out-of-line values not stored yet.
        for it in &mut items {
            if it.ool && it.target.is_none() {
                let at = self.kv.reference();
                let mut v = (it.value.len() as u32).to_le_bytes().to_vec();
                v.extend_from_slice(it.value);
                self.kv.push(c, &v)?;
                it.target = Some(at);
                if it.owner {
                    self.values.insert(it.value.to_vec(), Some(at));
                }
            }
        }
        // The list.
        let list_ref = self.kv.reference();
        for it in &items {
            let ty = it.prefix | if it.ool { VALUE_OOL } else { 0 };
            let mut e = ty.to_le_bytes().to_vec();
            e.extend_from_slice(&(it.name.len() as u16).to_le_bytes());
            e.extend_from_slice(it.name.as_bytes());
            if it.ool {
                e.extend_from_slice(&(OOL_SIZE as u32).to_le_bytes());
                e.extend_from_slice(&it.target.expect("stored").to_le_bytes());
                self.kv.push(c, &e)?;
            } else {
                self.kv.push(c, &e)?;
                let at = self.kv.reference();
                let mut v = (it.value.len() as u32).to_le_bytes().to_vec();
                v.extend_from_slice(it.value);
                self.kv.push(c, &v)?;
                if it.owner {
                    self.values.insert(it.value.to_vec(), Some(at));
                }
            }
        }
        let size: usize = sorted.iter().map(|(n, v)| n.len() + 1 + v.len()).sum();
        self.ids.extend_from_slice(&list_ref.to_le_bytes());
        self.ids
            .extend_from_slice(&(sorted.len() as u32).to_le_bytes());
        self.ids.extend_from_slice(&(size as u32).to_le_bytes());
        let id = self.count;
        self.count += 1;
        self.lists.insert(sorted, id);
        Ok(id)
    }

    /// The table's bytes placed at image offset `at`, and the offset of its id table
    /// header (the superblock's `xattr_id_table_start`).
    pub fn finish(self, c: &mut Compressor, at: u64) -> Result<(Vec<u8>, u64)> {
        let mut out = self.kv.finish(c)?;
        let mut header = at.to_le_bytes().to_vec();
        header.extend_from_slice(&self.count.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let (ids, start) =
            super::meta::indexed_table(c, &self.ids, &header, at + out.len() as u64)?;
        out.extend_from_slice(&ids);
        Ok((out, start))
    }
}
