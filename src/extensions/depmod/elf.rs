//! What depmod reads from a kernel module (`.ko`, an ELF relocatable object): the
//! symbols it exports, the symbols it needs, and its `alias=`, `softdep=` and
//! `weakdep=` modinfo strings.
//!
//! Headers, section headers and symbols are parsed with the `object` crate; which
//! sections are used and how follows libkmod 34.2 (`libkmod/libkmod-elf.c`), so that
//! the dependency graph and the order of everything derived from it is kmod's:
//! - sections are found by name (`.symtab`, `.strtab`, `.modinfo`, `__versions`,
//!   `__ksymtab_strings`), the first one of each name whose range lies in the file;
//! - exports are the `.symtab` entries named `__crc_<symbol>` (kernels with
//!   `CONFIG_MODVERSIONS`), or, when there are none, the strings of
//!   `__ksymtab_strings`;
//! - needed symbols are the undefined `.symtab` entries with a name, in table order
//!   (SPARC register symbols skipped), then the `__versions` entries (64-byte records:
//!   CRC, NUL-terminated name) no undefined symbol named, such as `module_layout`;
//! - modinfo is `.modinfo` split on runs of NUL bytes, each `key=value`.

use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::{Endianness, ReadRef, elf};

/// What one module provides and needs.
#[derive(Debug, Default, Clone)]
pub struct ModuleInfo {
    pub exports: Vec<Vec<u8>>,
    /// `None` when the module has no usable symbol table (kmod then records no
    /// dependencies for it).
    pub needs: Option<Vec<Vec<u8>>>,
    pub aliases: Vec<Vec<u8>>,
    pub softdeps: Vec<Vec<u8>>,
    pub weakdeps: Vec<Vec<u8>>,
}

/// Why a file is not a readable module.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotAModule(pub String);

fn bad(m: impl Into<String>) -> NotAModule {
    NotAModule(m.into())
}

/// Reads `data`, the (decompressed) bytes of a `.ko` file.
pub fn read(data: &[u8]) -> Result<ModuleInfo, NotAModule> {
    if data.len() <= 16 || &data[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    match data[4] {
        c if c == elf::ELFCLASS64.0 => read_as::<elf::FileHeader64<Endianness>>(data),
        c if c == elf::ELFCLASS32.0 => read_as::<elf::FileHeader32<Endianness>>(data),
        c => Err(bad(format!("unknown ELF class {c}"))),
    }
}

/// A section's file range.
#[derive(Clone, Copy, Default)]
struct Range {
    offset: u64,
    size: u64,
}

impl Range {
    fn bytes<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.offset as usize..(self.offset + self.size) as usize]
    }
}

#[derive(Default)]
struct Sections {
    ksymtab_strings: Option<Range>,
    modinfo: Option<Range>,
    strtab: Option<Range>,
    symtab: Option<Range>,
    versions: Option<Range>,
}

/// The NUL-terminated string at `at` (to the end of the file when unterminated).
fn cstr(data: &[u8], at: u64) -> &[u8] {
    let Some(rest) = usize::try_from(at).ok().and_then(|a| data.get(a..)) else {
        return &[];
    };
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    &rest[..end]
}

fn read_as<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ModuleInfo, NotAModule> {
    let header = Elf::parse(data).map_err(|e| bad(format!("ELF header: {e}")))?;
    let endian = header
        .endian()
        .map_err(|e| bad(format!("ELF header: {e}")))?;
    let shoff: u64 = header.e_shoff(endian).into();
    let shnum = usize::from(header.e_shnum(endian));
    if usize::from(header.e_shentsize(endian)) != size_of::<Elf::SectionHeader>() {
        return Err(bad("unexpected ELF section header size"));
    }
    let shdrs: &[Elf::SectionHeader] = data
        .read_slice_at(shoff, shnum)
        .map_err(|_| bad("section headers outside the file"))?;
    let len = data.len() as u64;
    let range_of = |s: &Elf::SectionHeader| -> Option<Range> {
        let offset: u64 = s.sh_offset(endian).into();
        let size: u64 = s.sh_size(endian).into();
        (offset.checked_add(size)? <= len).then_some(Range { offset, size })
    };
    let shstrndx = usize::from(header.e_shstrndx(endian).0);
    let names = shdrs
        .get(shstrndx)
        .filter(|_| shstrndx != 0)
        .and_then(range_of)
        .filter(|r| r.size > 0 && data[(r.offset + r.size - 1) as usize] == 0)
        .ok_or_else(|| bad("no valid section name table"))?;

    let mut secs = Sections::default();
    for s in shdrs.iter().skip(1) {
        let Some(r) = range_of(s) else { continue };
        let name_off = u64::from(s.sh_name(endian));
        if name_off >= names.size {
            continue;
        }
        let slot = match cstr(data, names.offset + name_off) {
            b"__ksymtab_strings" => &mut secs.ksymtab_strings,
            b".modinfo" => &mut secs.modinfo,
            b".strtab" => &mut secs.strtab,
            b".symtab" => &mut secs.symtab,
            b"__versions" => &mut secs.versions,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(r);
        }
    }

    let symbols: Option<&[Elf::Sym]> = match (secs.symtab, secs.strtab) {
        (Some(sym), Some(_)) if sym.size % size_of::<Elf::Sym>() as u64 == 0 => data
            .read_slice_at(
                sym.offset,
                (sym.size / size_of::<Elf::Sym>() as u64) as usize,
            )
            .ok(),
        _ => None,
    };
    let strtab = secs.strtab.unwrap_or_default();
    // The 64-byte __versions records (name field 56 bytes with a 64-bit CRC, 60 with 32).
    let (verlen, crclen) = if header.is_type_64() {
        (64u64, 8u64)
    } else {
        (64, 4)
    };
    let versions = secs
        .versions
        .filter(|v| v.size % verlen == 0)
        .map(|v| v.bytes(data))
        .unwrap_or(&[]);
    let version_name = |rec: &[u8]| -> Option<Vec<u8>> {
        let field = &rec[crclen as usize..];
        field
            .iter()
            .position(|&b| b == 0)
            .map(|end| field[..end].to_vec())
    };

    let mut info = ModuleInfo {
        exports: exports(data, symbols, strtab, endian, secs.ksymtab_strings),
        ..ModuleInfo::default()
    };

    // Needed symbols.
    if let Some(syms) = symbols {
        let sparc = matches!(header.e_machine(endian), elf::EM_SPARC | elf::EM_SPARCV9);
        let mut needs = Vec::new();
        let mut visited = vec![false; versions.len() / verlen as usize];
        // The first record of each name (kmod searches the records in order).
        let mut by_name: std::collections::HashMap<Vec<u8>, usize> =
            std::collections::HashMap::new();
        for (k, rec) in versions.chunks_exact(verlen as usize).enumerate() {
            if let Some(n) = version_name(rec) {
                by_name.entry(n).or_insert(k);
            }
        }
        let mut ok = true;
        for s in syms.iter().skip(1) {
            if s.st_shndx(endian) != elf::SHN_UNDEF {
                continue;
            }
            if sparc && s.st_type() == elf::STT_SPARC_REGISTER {
                continue;
            }
            let name_off = u64::from(s.st_name(endian));
            if name_off >= strtab.size {
                ok = false;
                break;
            }
            let name = cstr(data, strtab.offset + name_off);
            if name.is_empty() {
                continue;
            }
            if let Some(&k) = by_name.get(name) {
                visited[k] = true;
            }
            needs.push(name.to_vec());
        }
        if ok {
            for (k, rec) in versions.chunks_exact(verlen as usize).enumerate() {
                if visited[k] {
                    continue;
                }
                match version_name(rec) {
                    Some(n) => needs.push(n),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
        }
        info.needs = ok.then_some(needs);
    }

    // modinfo.
    if let Some(m) = secs.modinfo {
        for s in m.bytes(data).split(|&b| b == 0).filter(|s| !s.is_empty()) {
            let (key, value) = match s.iter().position(|&b| b == b'=') {
                Some(eq) => (&s[..eq], &s[eq + 1..]),
                None => (s, &[][..]),
            };
            let list = match key {
                b"alias" => &mut info.aliases,
                b"softdep" => &mut info.softdeps,
                b"weakdep" => &mut info.weakdeps,
                _ => continue,
            };
            list.push(value.to_vec());
        }
    }
    Ok(info)
}

fn exports<S: Sym<Endian = Endianness>>(
    data: &[u8],
    symbols: Option<&[S]>,
    strtab: Range,
    endian: Endianness,
    ksymtab_strings: Option<Range>,
) -> Vec<Vec<u8>> {
    if let Some(syms) = symbols {
        let mut out = Vec::new();
        let mut valid = true;
        for s in syms.iter().skip(1) {
            let off = u64::from(s.st_name(endian));
            if off >= strtab.size {
                valid = false;
                break;
            }
            if let Some(name) = cstr(data, strtab.offset + off).strip_prefix(b"__crc_") {
                out.push(name.to_vec());
            }
        }
        if valid && !out.is_empty() {
            return out;
        }
    }
    // Fallback: __ksymtab_strings (must end with a NUL; leading NULs skipped).
    let Some(r) = ksymtab_strings else {
        return Vec::new();
    };
    let bytes = r.bytes(data);
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len())
        .min(bytes.len().saturating_sub(1));
    let bytes = &bytes[start..];
    if bytes.len() <= 1 || bytes.last() != Some(&0) {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_module() {
        assert!(read(b"").is_err());
        assert!(read(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0").is_err());
        assert!(read(&[0u8; 100]).is_err());
    }
}
