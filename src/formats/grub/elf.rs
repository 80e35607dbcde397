//! The little of ELF that `grub-mkimage` reads from `kernel.img`: the file header,
//! the section headers with their raw fields, symbols and relocations, little-endian
//! only (every GRUB platform we build for is).
//!
//! Written here rather than through `object`'s typed API because mkimage works on raw
//! header values (section indices such as `SHN_ABS`, in-place relocation of section
//! bytes, the section-name table taken as is), and every read is bounds-checked so a
//! corrupt `kernel.img` is an error, never a panic. Reference: the System V ABI
//! (ELF-64 Object File Format 1.5) and GRUB's `util/grub-mkimagexx.c`.

pub(crate) const SHT_PROGBITS: u32 = 1;
pub(crate) const SHT_SYMTAB: u32 = 2;
pub(crate) const SHT_RELA: u32 = 4;
pub(crate) const SHT_NOBITS: u32 = 8;
pub(crate) const SHT_REL: u32 = 9;
pub(crate) const SHF_EXECINSTR: u64 = 0x4;
pub(crate) const SHF_ALLOC: u64 = 0x2;
pub(crate) const SHN_UNDEF: u16 = 0;
pub(crate) const SHN_ABS: u16 = 0xfff1;

/// A section header, widened to 64 bits.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub name: u32,
    pub kind: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub align: u64,
    pub entsize: u64,
}

/// A symbol, widened.
#[derive(Debug, Clone)]
pub(crate) struct Symbol {
    pub name: u32,
    pub shndx: u16,
    pub value: u64,
}

/// A relocation (REL entries have addend 0).
#[derive(Debug, Clone)]
pub(crate) struct Reloc {
    pub offset: u64,
    pub sym: u32,
    pub kind: u32,
    pub addend: i64,
}

/// A parsed ELF file of one class.
pub(crate) struct Elf<'a> {
    pub data: &'a [u8],
    pub is64: bool,
    pub sections: Vec<Section>,
    /// Offset of the section-name string table.
    shstr: u64,
}

fn rd(data: &[u8], off: u64, n: usize) -> Result<&[u8], String> {
    let o = usize::try_from(off).map_err(|_| "offset out of range".to_string())?;
    data.get(o..o.checked_add(n).ok_or("offset overflow")?)
        .ok_or_else(|| format!("truncated: {n} bytes at {off:#x} past the end"))
}
fn u16_at(d: &[u8], o: u64) -> Result<u16, String> {
    Ok(u16::from_le_bytes(rd(d, o, 2)?.try_into().unwrap()))
}
fn u32_at(d: &[u8], o: u64) -> Result<u32, String> {
    Ok(u32::from_le_bytes(rd(d, o, 4)?.try_into().unwrap()))
}
fn u64_at(d: &[u8], o: u64) -> Result<u64, String> {
    Ok(u64::from_le_bytes(rd(d, o, 8)?.try_into().unwrap()))
}

impl<'a> Elf<'a> {
    /// Parses the header and section table; `want64` is the class the platform needs
    /// and `machine` its `e_machine`.
    pub fn parse(data: &'a [u8], want64: bool, machine: u16) -> Result<Elf<'a>, String> {
        let id = rd(data, 0, 16).map_err(|_| "not an ELF file (too short)".to_string())?;
        if &id[..4] != b"\x7fELF" {
            return Err("not an ELF file".into());
        }
        let is64 = match id[4] {
            1 => false,
            2 => true,
            c => return Err(format!("bad ELF class {c}")),
        };
        if is64 != want64 {
            return Err(format!(
                "ELF class {} where GRUB's platform needs {}",
                if is64 { 64 } else { 32 },
                if want64 { 64 } else { 32 }
            ));
        }
        if id[5] != 1 {
            return Err("not a little-endian ELF file".into());
        }
        if id[6] != 1 || u32_at(data, 20)? != 1 {
            return Err("bad ELF version".into());
        }
        let m = u16_at(data, 18)?;
        if m != machine {
            return Err(format!("ELF machine {m:#x}, expected {machine:#x}"));
        }
        let (shoff, shentsize, shnum, shstrndx) = if is64 {
            (
                u64_at(data, 0x28)?,
                u16_at(data, 0x3a)?,
                u16_at(data, 0x3c)?,
                u16_at(data, 0x3e)?,
            )
        } else {
            (
                u64::from(u32_at(data, 0x20)?),
                u16_at(data, 0x2e)?,
                u16_at(data, 0x30)?,
                u16_at(data, 0x32)?,
            )
        };
        let min = if is64 { 64 } else { 40 };
        if usize::from(shentsize) < min {
            return Err(format!("section header size {shentsize} < {min}"));
        }
        let mut sections = Vec::with_capacity(shnum.into());
        for i in 0..u64::from(shnum) {
            let o = shoff
                .checked_add(i * u64::from(shentsize))
                .ok_or("section table offset overflow")?;
            rd(data, o, min)
                .map_err(|_| "premature end of file in the section table".to_string())?;
            let s = if is64 {
                Section {
                    name: u32_at(data, o)?,
                    kind: u32_at(data, o + 4)?,
                    flags: u64_at(data, o + 8)?,
                    addr: u64_at(data, o + 16)?,
                    offset: u64_at(data, o + 24)?,
                    size: u64_at(data, o + 32)?,
                    link: u32_at(data, o + 40)?,
                    info: u32_at(data, o + 44)?,
                    align: u64_at(data, o + 48)?,
                    entsize: u64_at(data, o + 56)?,
                }
            } else {
                Section {
                    name: u32_at(data, o)?,
                    kind: u32_at(data, o + 4)?,
                    flags: u32_at(data, o + 8)?.into(),
                    addr: u32_at(data, o + 12)?.into(),
                    offset: u32_at(data, o + 16)?.into(),
                    size: u32_at(data, o + 20)?.into(),
                    link: u32_at(data, o + 24)?,
                    info: u32_at(data, o + 28)?,
                    align: u32_at(data, o + 32)?.into(),
                    entsize: u32_at(data, o + 36)?.into(),
                }
            };
            sections.push(s);
        }
        let shstr = sections
            .get(usize::from(shstrndx))
            .ok_or_else(|| format!("section-name table index {shstrndx} out of range"))?
            .offset;
        Ok(Elf {
            data,
            is64,
            sections,
            shstr,
        })
    }

    /// A NUL-terminated string at `off` of the table starting at `table`.
    pub fn string(&self, table: u64, off: u32) -> Result<&'a [u8], String> {
        let start = table
            .checked_add(off.into())
            .and_then(|s| usize::try_from(s).ok())
            .ok_or("string offset overflow")?;
        let rest = self
            .data
            .get(start..)
            .ok_or("string past the end of file")?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string")?;
        Ok(&rest[..end])
    }

    /// The name of section `s`.
    pub fn section_name(&self, s: &Section) -> Result<&'a [u8], String> {
        self.string(self.shstr, s.name)
    }

    /// The file bytes of section `s` (not for NOBITS sections).
    pub fn section_data(&self, s: &Section) -> Result<&'a [u8], String> {
        let n = usize::try_from(s.size).map_err(|_| "section too large")?;
        rd(self.data, s.offset, n)
    }

    fn entries(&self, s: &Section, min: u64) -> Result<(u64, u64), String> {
        if s.entsize < min {
            return Err(format!("table entry size {} < {min}", s.entsize));
        }
        self.section_data(s)?;
        Ok((s.size / s.entsize, s.entsize))
    }

    /// The symbols of symbol table `s`.
    pub fn symbols(&self, s: &Section) -> Result<Vec<Symbol>, String> {
        let (n, es) = self.entries(s, if self.is64 { 24 } else { 16 })?;
        (0..n)
            .map(|i| {
                let o = s.offset + i * es;
                Ok(if self.is64 {
                    Symbol {
                        name: u32_at(self.data, o)?,
                        shndx: u16_at(self.data, o + 6)?,
                        value: u64_at(self.data, o + 8)?,
                    }
                } else {
                    Symbol {
                        name: u32_at(self.data, o)?,
                        shndx: u16_at(self.data, o + 14)?,
                        value: u32_at(self.data, o + 4)?.into(),
                    }
                })
            })
            .collect()
    }

    /// The entries of relocation section `s` (REL or RELA).
    pub fn relocs(&self, s: &Section) -> Result<Vec<Reloc>, String> {
        let rela = s.kind == SHT_RELA;
        let min = match (self.is64, rela) {
            (true, true) => 24,
            (true, false) => 16,
            (false, true) => 12,
            (false, false) => 8,
        };
        let (n, es) = self.entries(s, min)?;
        (0..n)
            .map(|i| {
                let o = s.offset + i * es;
                Ok(if self.is64 {
                    let info = u64_at(self.data, o + 8)?;
                    Reloc {
                        offset: u64_at(self.data, o)?,
                        sym: (info >> 32) as u32,
                        kind: info as u32,
                        addend: if rela {
                            u64_at(self.data, o + 16)? as i64
                        } else {
                            0
                        },
                    }
                } else {
                    let info = u32_at(self.data, o + 4)?;
                    Reloc {
                        offset: u32_at(self.data, o)?.into(),
                        sym: info >> 8,
                        kind: info & 0xff,
                        addend: if rela {
                            i64::from(u32_at(self.data, o + 8)? as i32)
                        } else {
                            0
                        },
                    }
                })
            })
            .collect()
    }
}
