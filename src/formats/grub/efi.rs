//! The GRUB EFI images (`BOOTX64.efi` of Talos's amd64 `grub` layout, `BOOTAA64.efi`
//! of its arm64 one), as `grub-mkimage -O x86_64-efi|arm64-efi` writes them:
//! `kernel.img` (an ELF64 relocatable object) linked at RVA 0x1000 into one `.text` and
//! one `.data` (with bss), its absolute relocations turned into PE base relocations,
//! the module area in a `mods` section, and a PE32+ header with four sections
//! (`.text`, `.data`, `mods`, `.reloc`). The two targets differ only in the machine
//! fields and in the relocation types `kernel.img` uses.
//!
//! Rules followed (GRUB 2.06 `util/grub-mkimagexx.c` `locate_sections`,
//! `relocate_symbols`, `relocate_addrs`, `translate_relocation`, `add_fixup_entry`,
//! `grub-core/kern/arm64/dl_helper.c` for the AArch64 instruction fields, and
//! `util/mkimage.c` for the PE header): code sections (alloc + exec) first, the text
//! size rounded to 4 KiB; then data sections (alloc, not exec, with contents), then
//! bss; each at its own alignment; the whole rounded to 4 KiB. Symbols are moved to
//! their RVA; `__bss_start`/`_end` are defined by the layout; `_start` is the entry.
//! x86_64: `R_X86_64_64` relocations are applied against RVA 0 and listed as DIR64
//! fixups, the PC-relative ones are resolved. AArch64: `R_AARCH64_ABS64` likewise;
//! branches (`CALL26`/`JUMP26`), `PREL32` and the page-relative pair
//! (`ADR_PREL_PG_HI21` with `ADD_ABS_LO12_NC`/`LDST64_ABS_LO12_NC`) are resolved in
//! place and need no fixup, since the image is loaded page-aligned; `ADR_GOT_PAGE` /
//! `LD64_GOT_LO12_NC` pairs (position-independent code) get a slot each in a GOT placed
//! after the bss, every slot listed as a DIR64 fixup after the relocations' own.
//! Fixup blocks follow the relocation order (a
//! block ends when an address leaves its 4 KiB page, padded to 8 bytes; the last
//! block is padded so the table ends on a 4 KiB boundary). The COFF time stamp is
//! GRUB's fixed 2015-01-01, so the image is reproducible.

use super::elf::{
    Elf, SHF_ALLOC, SHF_EXECINSTR, SHN_ABS, SHN_UNDEF, SHT_NOBITS, SHT_REL, SHT_RELA, SHT_SYMTAB,
};
use super::{EfiTarget, GrubDir, PREFIX};
use crate::error::{Error, Result};

/// The PE header is one 4 KiB page, so the image's first section is at RVA 0x1000.
const HEADER_SIZE: u64 = 0x1000;
/// EFI page size: section and file alignment.
const PAGE: u64 = 0x1000;
/// GRUB's stock COFF time stamp (2015-01-01T00:00:00Z).
const TIMESTAMP: u32 = 1_420_070_400;
/// No kernel.img is anywhere near this; a bound so a corrupt one cannot make us
/// allocate gigabytes.
const MAX_KERNEL: u64 = 16 << 20;

/// GRUB's MS-DOS stub (include/grub/efi/pe32.h): the `MZ` header pointing at the PE
/// header at 0x80, and the "This program cannot be run in DOS mode." program.
const MSDOS_STUB: [u8; 0x80] = {
    let mut s = [0u8; 0x80];
    let head: [u8; 16] = [
        0x4d, 0x5a, 0x90, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0xff, 0xff, 0, 0,
    ];
    let mut i = 0;
    while i < 16 {
        s[i] = head[i];
        i += 1;
    }
    s[0x10] = 0xb8;
    s[0x18] = 0x40;
    s[0x3c] = 0x80;
    let code: [u8; 14] = [
        0x0e, 0x1f, 0xba, 0x0e, 0x00, 0xb4, 0x09, 0xcd, 0x21, 0xb8, 0x01, 0x4c, 0xcd, 0x21,
    ];
    let mut i = 0;
    while i < 14 {
        s[0x40 + i] = code[i];
        i += 1;
    }
    let text = b"This program cannot be run in DOS mode.\r\r\n$";
    let mut i = 0;
    while i < text.len() {
        s[0x4e + i] = text[i];
        i += 1;
    }
    s
};

/// The EFI GRUB image of the directory's architecture (x86_64-efi or arm64-efi) with
/// the Talos module list and the prefix `(hd0,gpt3)/grub`.
pub fn efi_image(dir: &GrubDir) -> Result<Vec<u8>> {
    let p = dir.efi();
    let target = dir.efi_target();
    let kernel_path = p.path("kernel.img");
    let kernel = p.read("kernel.img")?;
    let k = load_kernel(&kernel, target).map_err(|m| Error::format(&kernel_path, m))?;
    drop(kernel);
    let mods = super::module_area(p, 8, PREFIX)?;
    Ok(pe_image(&k, &mods, target))
}

/// `kernel.img` linked for the PE image.
pub(crate) struct Linked {
    /// `.text` + `.data` + bss, `kernel_size` bytes.
    pub image: Vec<u8>,
    pub exec_size: u64,
    pub entry: u64,
    /// The `.reloc` contents.
    pub reloc: Vec<u8>,
}

fn align_up(v: u64, a: u64) -> std::result::Result<u64, String> {
    if a == 0 {
        return Ok(v);
    }
    if !a.is_power_of_two() {
        return Err(format!("alignment {a:#x} is not a power of two"));
    }
    v.checked_add(a - 1)
        .map(|x| x & !(a - 1))
        .ok_or_else(|| "address overflow".to_string())
}

/// Links the ELF64 relocatable `kernel.img` at RVA [`HEADER_SIZE`] the way
/// grub-mkimage does.
pub(crate) fn load_kernel(data: &[u8], target: EfiTarget) -> std::result::Result<Linked, String> {
    const VOFF: u64 = HEADER_SIZE;
    let elf = Elf::parse(data, true, target.elf_machine())?;
    let secs = &elf.sections;
    let n = secs.len();
    let mask = SHF_ALLOC | SHF_EXECINSTR;
    let is_text = |i: usize| secs[i].flags & mask == mask;
    let is_data = |i: usize| secs[i].flags & mask == SHF_ALLOC && secs[i].kind != SHT_NOBITS;
    let is_bss = |i: usize| secs[i].flags & mask == SHF_ALLOC && secs[i].kind == SHT_NOBITS;
    let is_kept = |i: usize| is_text(i) || is_data(i) || is_bss(i);
    // A relocation section is kept when the section its name points at is.
    let is_kept_reloc = |i: usize| -> std::result::Result<bool, String> {
        let name = elf.section_name(&secs[i])?;
        let wanted = if let Some(rest) = name.strip_prefix(b".rela") {
            if !rest.starts_with(b".") {
                return Ok(true);
            }
            rest
        } else if let Some(rest) = name.strip_prefix(b".rel") {
            if !rest.starts_with(b".") {
                return Ok(true);
            }
            rest
        } else {
            return Ok(true);
        };
        for (j, s) in secs.iter().enumerate() {
            if elf.section_name(s)? == wanted {
                return Ok(is_kept(j));
            }
        }
        Ok(false)
    };

    let mut addrs = vec![0u64; n];
    let mut put = |i: usize, cur: u64| -> std::result::Result<u64, String> {
        let s = &secs[i];
        let at = align_up(cur + VOFF, s.align)? - VOFF;
        addrs[i] = at;
        at.checked_add(s.size)
            .filter(|&e| e <= MAX_KERNEL)
            .ok_or_else(|| format!("section {i} ends past {MAX_KERNEL:#x}"))
    };
    let mut size = 0;
    for i in (0..n).filter(|&i| is_text(i)) {
        size = put(i, size)?;
    }
    size = align_up(size + VOFF, PAGE)? - VOFF;
    let exec_size = size;
    for i in (0..n).filter(|&i| is_data(i)) {
        size = put(i, size)?;
    }
    let bss_start = size;
    let mut end = size;
    for i in (0..n).filter(|&i| is_bss(i)) {
        end = put(i, end)?;
    }
    let vaddrs: Vec<u64> = addrs.iter().map(|a| a + VOFF).collect();
    let end = align_up(end + VOFF, PAGE)? - VOFF;
    // AArch64: a GOT for ADR_GOT_PAGE relocations after the bss, one slot per such
    // relocation in any relocation section (grub_arm64_dl_get_tramp_got_size).
    let got_off = align_up(end, 16)?;
    let got_slots = if target == EfiTarget::Arm64 {
        let mut n = 0u64;
        for s in secs
            .iter()
            .filter(|s| s.kind == SHT_REL || s.kind == SHT_RELA)
        {
            n += elf
                .relocs(s)?
                .iter()
                .filter(|r| r.kind == R_AARCH64_ADR_GOT_PAGE)
                .count() as u64;
        }
        n
    } else {
        0
    };
    let kernel_size = align_up(got_off + align_up(8 * got_slots, 16)?, PAGE)?;
    if kernel_size > MAX_KERNEL {
        return Err(format!("kernel image ends past {MAX_KERNEL:#x}"));
    }
    let mut got = Vec::with_capacity(got_slots as usize);
    // ADR_GOT_PAGE relocations whose LD64_GOT_LO12_NC has not been seen yet.
    let mut unmatched_got_pages = 0u64;

    // Symbols at their RVAs.
    let symtab = secs
        .iter()
        .find(|s| s.kind == SHT_SYMTAB)
        .ok_or("no symbol table")?;
    let strtab = secs
        .get(symtab.link as usize)
        .ok_or_else(|| format!("symbol string table index {} out of range", symtab.link))?
        .offset;
    let syms = elf.symbols(symtab)?;
    let mut values = Vec::with_capacity(syms.len());
    let mut entry = None;
    for sym in &syms {
        let value = match sym.shndx {
            SHN_ABS => {
                values.push(sym.value);
                continue;
            }
            SHN_UNDEF if sym.name == 0 => {
                values.push(sym.value);
                continue;
            }
            SHN_UNDEF => match elf.string(strtab, sym.name)? {
                b"__bss_start" => bss_start,
                b"_end" => end,
                name => {
                    return Err(format!(
                        "undefined symbol {}",
                        String::from_utf8_lossy(name)
                    ));
                }
            },
            i if usize::from(i) >= n => return Err(format!("section {i} does not exist")),
            i => sym.value.wrapping_add(vaddrs[usize::from(i)]),
        };
        values.push(value);
        if entry.is_none() {
            let name = elf.string(strtab, sym.name)?;
            if name == b"_start" || name == b"start" {
                entry = Some(value);
            }
        }
    }
    let entry = entry.ok_or("start symbol is not defined")?;

    // Resolve relocations in a copy of the file, then gather the fixups.
    let mut buf = data.to_vec();
    let mut fixups = Fixups::default();
    for i in 0..n {
        let s = &secs[i];
        if s.kind != SHT_REL && s.kind != SHT_RELA {
            continue;
        }
        let kept_reloc = is_kept_reloc(i)?;
        if !kept_reloc && !is_kept(i) {
            continue;
        }
        let ti = s.info as usize;
        let target_sec = secs
            .get(ti)
            .ok_or_else(|| format!("relocation target section {ti} does not exist"))?;
        let taddr = addrs[ti];
        let relocs = elf.relocs(s)?;
        for (j, r) in relocs.iter().enumerate() {
            let sym = *values
                .get(r.sym as usize)
                .ok_or_else(|| format!("relocation symbol {} does not exist", r.sym))?;
            let a = (r.addend as u64).wrapping_add(sym);
            let Some(width) = reloc_width(target, r.kind)? else {
                continue;
            };
            if r.offset
                .checked_add(width)
                .is_none_or(|e| e > target_sec.size)
            {
                return Err(format!(
                    "relocation at {:#x} outside its section {ti}",
                    r.offset
                ));
            }
            let field_at = |len: usize,
                            offset: u64|
             -> std::result::Result<std::ops::Range<usize>, String> {
                target_sec
                    .offset
                    .checked_add(offset)
                    .and_then(|p| usize::try_from(p).ok())
                    .and_then(|p| Some(p..p.checked_add(width as usize)?))
                    .filter(|range| range.end <= len)
                    .ok_or_else(|| {
                        format!("relocation at {offset:#x} of section {ti} past the end of file")
                    })
            };
            let range = field_at(buf.len(), r.offset)?;
            let field = &mut buf[range];
            // Where the field ends up, as an RVA.
            let place = taddr.wrapping_add(r.offset).wrapping_add(VOFF);
            match (target, r.kind) {
                (EfiTarget::X86_64, _) => apply_x86_64(field, r.kind, a, place),
                (EfiTarget::Arm64, R_AARCH64_ADR_GOT_PAGE) => {
                    // The next slot holds the address; ADRP points at its page and the
                    // matching LDR (same symbol and addend, later in the table) at its
                    // offset in the page.
                    let slot = got_off + VOFF + 8 * got.len() as u64;
                    got.push(a);
                    let off = ((slot & !0xfff).wrapping_sub(place & !0xfff)) as i64;
                    if off != i64::from(off as i32) {
                        return Err("HI21 out of range".into());
                    }
                    set_hi21(field, off);
                    let ld = relocs[j + 1..]
                        .iter()
                        .find(|q| {
                            q.kind == R_AARCH64_LD64_GOT_LO12_NC
                                && q.sym == r.sym
                                && q.addend == r.addend
                        })
                        .ok_or("ADR_GOT_PAGE without matching LD64_GOT_LO12_NC")?;
                    if ld.offset.checked_add(4).is_none_or(|e| e > target_sec.size) {
                        return Err(format!(
                            "relocation at {:#x} outside its section {ti}",
                            ld.offset
                        ));
                    }
                    let range = field_at(buf.len(), ld.offset)?;
                    apply_aarch64(&mut buf[range], R_AARCH64_LDST64_ABS_LO12_NC, slot, 0)?;
                    unmatched_got_pages += 1;
                }
                (EfiTarget::Arm64, R_AARCH64_LD64_GOT_LO12_NC) => {
                    if unmatched_got_pages == 0 {
                        return Err("LD64_GOT_LO12_NC without matching ADR_GOT_PAGE".into());
                    }
                    unmatched_got_pages -= 1;
                }
                (EfiTarget::Arm64, _) => apply_aarch64(field, r.kind, a, place)?,
            }
        }
        if kept_reloc {
            let base = vaddrs[ti];
            for r in &relocs {
                if needs_fixup(target, r.kind)? {
                    fixups.add(base.wrapping_add(r.offset))?;
                }
            }
        }
    }
    // Every GOT slot is an absolute address.
    for i in 0..got_slots {
        fixups.add(got_off + VOFF + 8 * i)?;
    }
    let reloc = fixups.finish();

    let mut image = vec![0u8; kernel_size as usize];
    for (i, v) in got.iter().enumerate() {
        let at = got_off as usize + 8 * i;
        image[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    for i in (0..n).filter(|&i| is_kept(i) && secs[i].kind != SHT_NOBITS) {
        let s = &secs[i];
        let src = buf
            .get(s.offset as usize..)
            .and_then(|b| b.get(..s.size as usize))
            .ok_or_else(|| format!("section {i} past the end of file"))?;
        image[addrs[i] as usize..][..src.len()].copy_from_slice(src);
    }
    Ok(Linked {
        image,
        exec_size,
        entry,
        reloc,
    })
}

/// x86_64 relocation types grub-mkimage handles for EFI.
const R_X86_64_NONE: u32 = 0;
const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_32: u32 = 10;
const R_X86_64_32S: u32 = 11;
const R_X86_64_PC64: u32 = 24;
/// AArch64 relocation types (ELF for the Arm 64-bit Architecture, table 5-x).
const R_AARCH64_ABS64: u32 = 257;
const R_AARCH64_PREL32: u32 = 261;
const R_AARCH64_ADR_PREL_PG_HI21: u32 = 275;
const R_AARCH64_ADD_ABS_LO12_NC: u32 = 277;
const R_AARCH64_JUMP26: u32 = 282;
const R_AARCH64_CALL26: u32 = 283;
const R_AARCH64_LDST64_ABS_LO12_NC: u32 = 286;
const R_AARCH64_ADR_GOT_PAGE: u32 = 311;
const R_AARCH64_LD64_GOT_LO12_NC: u32 = 312;

fn not_implemented(kind: u32) -> String {
    format!("relocation {kind:#x} is not implemented yet")
}

/// The width of the field relocation `kind` patches, `None` for one that patches
/// nothing; an error for a type grub-mkimage does not handle either.
fn reloc_width(target: EfiTarget, kind: u32) -> std::result::Result<Option<u64>, String> {
    Ok(Some(match (target, kind) {
        (EfiTarget::X86_64, R_X86_64_NONE) => return Ok(None),
        (EfiTarget::X86_64, R_X86_64_64 | R_X86_64_PC64) => 8,
        (EfiTarget::X86_64, R_X86_64_PC32 | R_X86_64_PLT32 | R_X86_64_32 | R_X86_64_32S) => 4,
        (EfiTarget::Arm64, R_AARCH64_ABS64) => 8,
        (
            EfiTarget::Arm64,
            R_AARCH64_PREL32
            | R_AARCH64_ADR_PREL_PG_HI21
            | R_AARCH64_ADD_ABS_LO12_NC
            | R_AARCH64_JUMP26
            | R_AARCH64_CALL26
            | R_AARCH64_LDST64_ABS_LO12_NC
            | R_AARCH64_ADR_GOT_PAGE
            | R_AARCH64_LD64_GOT_LO12_NC,
        ) => 4,
        (_, k) => return Err(not_implemented(k)),
    }))
}

/// Whether relocation `kind` becomes a PE base relocation (DIR64).
fn needs_fixup(target: EfiTarget, kind: u32) -> std::result::Result<bool, String> {
    match (target, kind) {
        (EfiTarget::X86_64, R_X86_64_32 | R_X86_64_32S) => {
            Err("can't add fixup entry for R_X86_64_32(S)".into())
        }
        (EfiTarget::X86_64, R_X86_64_64) | (EfiTarget::Arm64, R_AARCH64_ABS64) => Ok(true),
        _ => Ok(false),
    }
}

fn get32(field: &[u8]) -> u32 {
    u32::from_le_bytes(field[..4].try_into().unwrap())
}
fn get64(field: &[u8]) -> u64 {
    u64::from_le_bytes(field[..8].try_into().unwrap())
}

/// Applies an x86_64 relocation: `a` = symbol RVA + addend, `place` = the field's RVA.
fn apply_x86_64(field: &mut [u8], kind: u32, a: u64, place: u64) {
    let pc = a.wrapping_sub(place);
    match kind {
        R_X86_64_64 => field.copy_from_slice(&get64(field).wrapping_add(a).to_le_bytes()),
        R_X86_64_PC64 => field.copy_from_slice(&get64(field).wrapping_add(pc).to_le_bytes()),
        R_X86_64_PC32 | R_X86_64_PLT32 => {
            field.copy_from_slice(&get32(field).wrapping_add(pc as u32).to_le_bytes())
        }
        // R_X86_64_32, R_X86_64_32S
        _ => field.copy_from_slice(&get32(field).wrapping_add(a as u32).to_le_bytes()),
    }
}

/// ADRP's 21-bit page offset (immlo in bits 29..30, immhi in bits 5..23) for the byte
/// distance `off` between two pages.
fn set_hi21(field: &mut [u8], off: i64) {
    let pages = off >> 12;
    let v = (((pages & 3) << 29) | (((pages >> 2) & 0x7ffff) << 5)) as u32;
    let keep = 0x9f00_001f;
    let v = (get32(field) & keep) | (v & !keep);
    field.copy_from_slice(&v.to_le_bytes());
}

/// Applies an AArch64 relocation the way grub-mkimage does (dl_helper.c's field
/// setters: keep the instruction bits outside the immediate, or in the new value).
fn apply_aarch64(
    field: &mut [u8],
    kind: u32,
    a: u64,
    place: u64,
) -> std::result::Result<(), String> {
    let set = |field: &mut [u8], keep: u32, value: u32| {
        let v = (get32(field) & keep) | (value & !keep);
        field.copy_from_slice(&v.to_le_bytes());
    };
    match kind {
        R_AARCH64_ABS64 => field.copy_from_slice(&get64(field).wrapping_add(a).to_le_bytes()),
        R_AARCH64_PREL32 => {
            let v = get32(field).wrapping_add(a.wrapping_sub(place) as u32);
            field.copy_from_slice(&v.to_le_bytes());
        }
        R_AARCH64_ADD_ABS_LO12_NC => set(field, 0xffc0_03ff, (a << 10) as u32),
        R_AARCH64_LDST64_ABS_LO12_NC => set(field, 0xfff8_03ff, (a << 7) as u32),
        R_AARCH64_JUMP26 | R_AARCH64_CALL26 => {
            let off = a.wrapping_sub(place) as i64;
            if !(-(1 << 27)..(1 << 27)).contains(&off) {
                return Err("CALL26 Relocation out of range".into());
            }
            set(field, 0xfc00_0000, (off >> 2) as u32);
        }
        R_AARCH64_ADR_PREL_PG_HI21 => {
            let off = ((a & !0xfff).wrapping_sub(place & !0xfff)) as i64;
            if off != i64::from(off as i32) {
                return Err("ADR_PREL_PG_HI21 relocation out of range".into());
            }
            set_hi21(field, off);
        }
        k => return Err(not_implemented(k)),
    }
    Ok(())
}

/// PE base-relocation blocks, built in relocation order (add_fixup_entry).
#[derive(Default)]
struct Fixups {
    out: Vec<u8>,
    /// The open block: page RVA and entries.
    block: Option<(u32, Vec<u16>)>,
}

impl Fixups {
    const DIR64: u16 = 10;

    fn flush(&mut self, final_block: bool) {
        let Some((page, mut entries)) = self.block.take() else {
            return;
        };
        if final_block {
            let next = self.out.len() as u64 + 8 + 2 * entries.len() as u64;
            let pad = (next.div_ceil(PAGE) * PAGE - next) / 2;
            entries.extend(std::iter::repeat_n(0, pad as usize));
        } else {
            while (8 + 2 * entries.len()) % 8 != 0 {
                entries.push(0);
            }
        }
        self.out.extend_from_slice(&page.to_le_bytes());
        self.out
            .extend_from_slice(&(8 + 2 * entries.len() as u32).to_le_bytes());
        for e in entries {
            self.out.extend_from_slice(&e.to_le_bytes());
        }
    }

    fn add(&mut self, addr: u64) -> std::result::Result<(), String> {
        if let Some((page, _)) = &self.block {
            let page = u64::from(*page);
            if addr < page || page + PAGE <= addr {
                self.flush(false);
            }
        }
        let (page, entries) = self
            .block
            .get_or_insert_with(|| ((addr & !(PAGE - 1)) as u32, Vec::new()));
        if entries.len() >= 0x1000 {
            return Err("too many fixup entries".into());
        }
        entries.push((Self::DIR64 << 12) | (addr.wrapping_sub(u64::from(*page)) as u16 & 0xfff));
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.flush(true);
        self.out
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The PE32+ file: header page, `.text`, `.data`, `mods` (module area), `.reloc`.
pub(crate) fn pe_image(k: &Linked, mods: &[u8], target: EfiTarget) -> Vec<u8> {
    let page = |v: u64| v.div_ceil(PAGE) * PAGE;
    let kernel_size = k.image.len() as u64;
    let core_size = kernel_size + mods.len() as u64;
    let reloc_size = k.reloc.len() as u64;
    let pe_size = page(HEADER_SIZE + core_size) + page(reloc_size);
    let mut pe = vec![0u8; pe_size as usize];
    let h = HEADER_SIZE as usize;
    pe[h..h + k.image.len()].copy_from_slice(&k.image);
    pe[h + k.image.len()..h + k.image.len() + mods.len()].copy_from_slice(mods);

    pe[..0x80].copy_from_slice(&MSDOS_STUB);
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    // COFF header.
    let c = 0x84;
    put16(&mut pe, c, target.pe_machine());
    put16(&mut pe, c + 2, 4);
    put32(&mut pe, c + 4, TIMESTAMP.into());
    put16(&mut pe, c + 16, 240);
    // executable, line numbers / local symbols / debug info stripped
    put16(&mut pe, c + 18, 0x0002 | 0x0004 | 0x0008 | 0x0200);
    // PE32+ optional header.
    let o = c + 20;
    let data_size = page(kernel_size - k.exec_size);
    put16(&mut pe, o, 0x20b);
    put32(&mut pe, o + 4, k.exec_size);
    put32(&mut pe, o + 8, data_size + page(mods.len() as u64));
    put32(&mut pe, o + 16, k.entry);
    put32(&mut pe, o + 20, HEADER_SIZE);
    put32(&mut pe, o + 32, PAGE);
    put32(&mut pe, o + 36, PAGE);
    put32(&mut pe, o + 56, pe_size);
    put32(&mut pe, o + 60, HEADER_SIZE);
    put16(&mut pe, o + 68, 10); // EFI application
    for f in 0..4 {
        put64(&mut pe, o + 72 + 8 * f, 0x10000);
    }
    put32(&mut pe, o + 108, 16);
    // Sections.
    let mut vma = HEADER_SIZE;
    let mut rda = HEADER_SIZE;
    let mut at = o + 240;
    let mut section = |pe: &mut [u8], name: &[u8], size: u64, flags: u32| -> (u64, u64) {
        pe[at..at + name.len()].copy_from_slice(name);
        put32(pe, at + 8, size);
        put32(pe, at + 12, vma);
        put32(pe, at + 16, size);
        put32(pe, at + 20, rda);
        put32(pe, at + 36, flags.into());
        let placed = (vma, rda);
        vma = page(vma + size);
        rda = page(rda + size);
        at += 40;
        placed
    };
    const CODE: u32 = 0x20;
    const DATA: u32 = 0x40;
    const DISCARDABLE: u32 = 0x0200_0000;
    const EXEC: u32 = 0x2000_0000;
    const READ: u32 = 0x4000_0000;
    const WRITE: u32 = 0x8000_0000;
    section(&mut pe, b".text", k.exec_size, CODE | EXEC | READ);
    section(&mut pe, b".data", data_size, DATA | READ | WRITE);
    let mods_size = pe_size - reloc_size - (HEADER_SIZE + page(k.exec_size) + data_size);
    section(&mut pe, b"mods", mods_size, DATA | READ | WRITE);
    let (reloc_rva, reloc_off) = section(&mut pe, b".reloc", reloc_size, DATA | DISCARDABLE | READ);
    put32(&mut pe, o + 112 + 5 * 8, reloc_rva);
    put32(&mut pe, o + 112 + 5 * 8 + 4, reloc_size);
    pe[reloc_off as usize..][..k.reloc.len()].copy_from_slice(&k.reloc);
    pe
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `insn` with relocation `kind` applied for symbol+addend `a` at RVA `place`.
    fn reloc(insn: u32, kind: u32, a: u64, place: u64) -> std::result::Result<u32, String> {
        let mut f = insn.to_le_bytes();
        apply_aarch64(&mut f, kind, a, place)?;
        Ok(u32::from_le_bytes(f))
    }

    #[test]
    fn aarch64_fields_match_the_architecture_encodings() {
        // bl +8, bl -4 (imm26 = offset / 4, two's complement).
        assert_eq!(
            reloc(0x9400_0000, R_AARCH64_CALL26, 0x1008, 0x1000),
            Ok(0x9400_0002)
        );
        assert_eq!(
            reloc(0x1400_0000, R_AARCH64_JUMP26, 0x0ffc, 0x1000),
            Ok(0x17ff_ffff)
        );
        // adrp x0, four pages on (0x1ffc's page to 0x5123's): immlo = 0, immhi = 1;
        // five pages: immlo = 1.
        assert_eq!(
            reloc(0x9000_0000, R_AARCH64_ADR_PREL_PG_HI21, 0x5123, 0x1ffc),
            Ok(0x9000_0020)
        );
        assert_eq!(
            reloc(0x9000_0000, R_AARCH64_ADR_PREL_PG_HI21, 0x6000, 0x1000),
            Ok(0x9000_0000 | (1 << 29) | (1 << 5))
        );
        // add x0, x0, #0xabc; ldr x0, [x1, #0x18] (imm12 scaled by 8).
        assert_eq!(
            reloc(0x9100_0000, R_AARCH64_ADD_ABS_LO12_NC, 0x7abc, 0),
            Ok(0x912a_f000)
        );
        assert_eq!(
            reloc(0xf940_0020, R_AARCH64_LDST64_ABS_LO12_NC, 0x3018, 0),
            Ok(0xf940_0c20)
        );
        // A branch beyond +-128 MiB is GRUB's error, not a wrapped offset.
        assert!(reloc(0x9400_0000, R_AARCH64_CALL26, 0x1000 + (1 << 27), 0x1000).is_err());
        // Types grub-mkimage does not handle either are refused by number.
        assert_eq!(
            reloc_width(EfiTarget::Arm64, 260),
            Err("relocation 0x104 is not implemented yet".into())
        );
        assert_eq!(
            reloc_width(EfiTarget::X86_64, R_AARCH64_ABS64),
            Err(not_implemented(257))
        );
    }
}
