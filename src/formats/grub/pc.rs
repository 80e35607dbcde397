//! The GRUB PC/BIOS boot path: `core.img` as `grub-mkimage -O i386-pc` writes it, the
//! MBR boot sector (`boot.img`), and the patches that point both at the BIOS boot
//! partition (what Talos's imager does instead of `grub-setup`).
//!
//! `core.img` = `diskboot.img` (one sector: loads the rest from its blocklist) +
//! `lzma_decompress.img` (real-mode startup and LZMA decoder; 0x08 compressed size,
//! 0x0C uncompressed size, 0x10/0x14 Reed-Solomon fields left as shipped, 0x18 boot
//! device 0xFFFFFF as shipped) + the LZMA-compressed payload: `kernel.img`'s sections
//! laid out from the link address 0x9000, a module-info header (`gmim`, offset, total
//! module size), each module behind an 8-byte (type, size) header, and the prefix.
//! Offsets: GRUB `include/grub/offsets.h`, `include/grub/kernel.h`,
//! `grub-core/boot/i386/pc/{boot,diskboot,startup_raw}.S`, `util/mkimage.c`.
//!
//! The LZMA stream is raw LZMA1 (lc 3, lp 0, pb 2, 64 KiB dictionary), as GRUB's own
//! encoder writes it. We encode with liblzma through `xz2`, whose 0.1 API has no raw
//! encoder (no `Stream::new_raw_encoder`); its `.lzma` ("alone") encoder writes a
//! 13-byte header (properties, dictionary size, unknown length)
//! followed by exactly that raw stream, so we drop the header. liblzma ends the
//! stream with an end-of-payload marker that GRUB's encoder omits; GRUB's decoder
//! stops after the uncompressed size from the header, so the marker is never read.
//! The compressed bytes differ from `grub-mkimage`'s (a different encoder); the
//! decompressed payload is the same.

use super::elf::{Elf, SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS, SHT_PROGBITS};
use super::{GrubDir, PREFIX};
use crate::error::{Error, Result};

const SECTOR: usize = 512;
/// Where the kernel is linked and loaded (GRUB_KERNEL_I386_PC_LINK_ADDR).
const LINK_ADDR: u64 = 0x9000;
/// The decompressor must fit between 0x8200 and the kernel.
const MAX_DECOMPRESSOR: usize = 0x9000 - 0x8200;
/// Offsets in `lzma_decompress.img`.
const COMPRESSED_SIZE: usize = 0x08;
const UNCOMPRESSED_SIZE: usize = 0x0c;
/// The first (and, as written here, only) blocklist entry of `diskboot.img`:
/// u64 start sector, u16 sector count, u16 load segment.
const BLOCK_START: usize = 0x1f4;
const BLOCK_LEN: usize = 0x1fc;
const BLOCK_SEGMENT: usize = 0x1fe;
const KERNEL_SEGMENT: u16 = 0x800 + (SECTOR as u16 >> 4);
/// `boot.img` fields (include/grub/i386/pc/boot.h).
const BOOT_KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE: usize = 0x64;
const BOOT_DRIVE_CHECK: usize = 0x66;
/// Boot code ends where the MBR disk signature and partition table begin.
pub const BOOT_CODE_LEN: usize = 446;
/// The BIOS boot partition Talos makes is 1 MiB.
pub const BIOS_PARTITION_BYTES: usize = 1 << 20;

/// The i386-pc `core.img` with the Talos module list plus `biosdisk part_msdos` and
/// the prefix `(hd0,gpt3)/grub`, exactly as laid out by `grub-mkimage`.
pub fn bios_core_image(dir: &GrubDir) -> Result<Vec<u8>> {
    let p = dir.pc()?;
    let kernel_path = p.path("kernel.img");
    let kernel = p.read("kernel.img")?;
    let (mut payload, bss) = load_kernel(&kernel).map_err(|m| Error::format(&kernel_path, m))?;
    let kernel_size = payload.len();
    if kernel_size as u64 + bss + LINK_ADDR > 0x68000 {
        return Err(Error::format(
            &kernel_path,
            format!(
                "kernel image is too big ({:#x} > 0x68000)",
                kernel_size as u64 + bss + LINK_ADDR
            ),
        ));
    }
    payload.extend_from_slice(&super::module_area(p, 4, PREFIX)?);
    let compressed = lzma_raw(&payload)?;

    let dec_path = p.path("lzma_decompress.img");
    let mut image = p.read("lzma_decompress.img")?;
    if image.len() > MAX_DECOMPRESSOR || image.len() < 0x1c {
        return Err(Error::format(
            &dec_path,
            format!(
                "{} bytes: a decompressor is 0x1c..{MAX_DECOMPRESSOR:#x} bytes",
                image.len()
            ),
        ));
    }
    put_u32(&mut image, COMPRESSED_SIZE, compressed.len());
    put_u32(&mut image, UNCOMPRESSED_SIZE, payload.len());
    drop(payload);
    image.extend_from_slice(&compressed);
    drop(compressed);
    if LINK_ADDR as usize + image.len() > 0x78000 || image.len() > 0xffff * SECTOR {
        return Err(Error::invalid(format!(
            "GRUB core image from {} is too big ({:#x} > 0x78000)",
            dir.root().display(),
            LINK_ADDR as usize + image.len()
        )));
    }

    let boot_path = p.path("diskboot.img");
    let mut core = p.read("diskboot.img")?;
    if core.len() != SECTOR {
        return Err(Error::format(
            &boot_path,
            format!("{} bytes, diskboot.img must be {SECTOR}", core.len()),
        ));
    }
    let segment = u16::from_le_bytes([core[BLOCK_SEGMENT], core[BLOCK_SEGMENT + 1]]);
    if segment != KERNEL_SEGMENT {
        return Err(Error::format(
            &boot_path,
            format!("blocklist load segment {segment:#x}, expected {KERNEL_SEGMENT:#x}"),
        ));
    }
    let sectors = image.len().div_ceil(SECTOR) as u16;
    core[BLOCK_LEN..BLOCK_LEN + 2].copy_from_slice(&sectors.to_le_bytes());
    core.extend_from_slice(&image);
    Ok(core)
}

/// GRUB's `boot.img`: the MBR boot sector, checked to be the one the patches expect.
pub fn boot_image(dir: &GrubDir) -> Result<[u8; 512]> {
    let p = dir.pc()?;
    let path = p.path("boot.img");
    let data = p.read("boot.img")?;
    let img: [u8; 512] = data
        .as_slice()
        .try_into()
        .map_err(|_| Error::format(&path, format!("{} bytes, boot.img must be 512", data.len())))?;
    if img[0] != 0xeb || img[BOOT_DRIVE_CHECK] != 0xeb || img[510..] != [0x55, 0xaa] {
        return Err(Error::format(
            &path,
            "not GRUB's boot.img (no jump at 0, no boot-drive check at 0x66 or no 55 AA)",
        ));
    }
    Ok(img)
}

/// Points `boot_img` and `core` at a BIOS boot partition starting at LBA
/// `first_lba` (512-byte sectors), as Talos's imager does: returns the MBR boot
/// code (bytes 0..446 of `boot.img` with 0x5C = `first_lba` as u64, 0x64 boot drive
/// 0xFF = "the drive the BIOS booted", 0x66/0x67 = two NOPs so a bogus DL is forced
/// to 0x80) and sets the core's first blocklist entry to start at `first_lba + 1`
/// (its sector count and load segment stay as `grub-mkimage` set them).
pub fn patch_for_disk(
    boot_img: &[u8; 512],
    core: &mut [u8],
    first_lba: u64,
) -> Result<[u8; BOOT_CODE_LEN]> {
    if core.len() > BIOS_PARTITION_BYTES {
        return Err(Error::invalid(format!(
            "GRUB core image of {} bytes does not fit in the {BIOS_PARTITION_BYTES}-byte BIOS boot partition",
            core.len()
        )));
    }
    if core.len() < 2 * SECTOR {
        return Err(Error::invalid(format!(
            "GRUB core image of {} bytes is too short",
            core.len()
        )));
    }
    let sectors = u16::from_le_bytes([core[BLOCK_LEN], core[BLOCK_LEN + 1]]) as usize;
    if sectors + 1 != core.len().div_ceil(SECTOR) {
        return Err(Error::invalid(format!(
            "GRUB core image: blocklist says {sectors} sectors after the first, the image has {}",
            core.len().div_ceil(SECTOR) - 1
        )));
    }
    let start = first_lba
        .checked_add(1)
        .ok_or_else(|| Error::invalid(format!("BIOS partition LBA {first_lba} out of range")))?;
    let mut code = [0u8; BOOT_CODE_LEN];
    code.copy_from_slice(&boot_img[..BOOT_CODE_LEN]);
    code[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&first_lba.to_le_bytes());
    code[BOOT_DRIVE] = 0xff;
    code[BOOT_DRIVE_CHECK] = 0x90;
    code[BOOT_DRIVE_CHECK + 1] = 0x90;
    core[BLOCK_START..BLOCK_START + 8].copy_from_slice(&start.to_le_bytes());
    Ok(code)
}

/// `kernel.img` (an ELF32 executable linked at 0x9000) as the flat image mkimage
/// makes: every allocated PROGBITS section at its address minus the link address.
/// Returns the image and the size of its bss (for the size check).
pub(crate) fn load_kernel(data: &[u8]) -> std::result::Result<(Vec<u8>, u64), String> {
    const EM_386: u16 = 3;
    let elf = Elf::parse(data, false, EM_386)?;
    let mask = SHF_ALLOC | SHF_EXECINSTR;
    let rel = |addr: u64| {
        addr.checked_sub(LINK_ADDR)
            .ok_or_else(|| format!("section at {addr:#x}, below the link address {LINK_ADDR:#x}"))
    };
    let mut size = 0u64;
    let mut placed = Vec::new();
    // .text first, then data, each in section-table order (locate_sections).
    for want_exec in [true, false] {
        for s in &elf.sections {
            if s.kind != SHT_PROGBITS {
                continue;
            }
            let f = s.flags & mask;
            let hit = if want_exec { f == mask } else { f == SHF_ALLOC };
            if !hit {
                continue;
            }
            if want_exec && s.addr != LINK_ADDR {
                return Err(format!(
                    "text section at {:#x} instead of the link address {LINK_ADDR:#x}",
                    s.addr
                ));
            }
            let at = rel(s.addr)?;
            size = at.checked_add(s.size).ok_or("section size overflow")?;
            placed.push((at, s));
        }
    }
    let mut bss_end = size;
    for s in elf.sections.iter().filter(|s| s.kind == SHT_NOBITS) {
        bss_end = rel(s.addr)?
            .checked_add(s.size)
            .ok_or("bss size overflow")?;
    }
    if size > 0x68000 {
        return Err(format!("kernel image is too big ({size:#x} bytes)"));
    }
    let mut img = vec![0u8; size as usize];
    for (at, s) in placed {
        let bytes = elf.section_data(s)?;
        let dst = img
            .get_mut(at as usize..at as usize + bytes.len())
            .ok_or_else(|| format!("section at {:#x} overlaps the end of the image", s.addr))?;
        dst.copy_from_slice(bytes);
    }
    Ok((img, bss_end.saturating_sub(size)))
}

fn put_u32(buf: &mut [u8], at: usize, v: usize) {
    buf[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
}

/// Raw LZMA1 (lc 3, lp 0, pb 2, 64 KiB dictionary, "normal" mode, nice length 32,
/// bt4: the LZMA SDK level-5 settings mkimage uses) of `data`.
fn lzma_raw(data: &[u8]) -> Result<Vec<u8>> {
    use xz2::stream::{Action, LzmaOptions, MatchFinder, Mode, Status, Stream};
    let lzma_err = |e: xz2::stream::Error| {
        Error::io_during("compressing the GRUB core image", std::io::Error::other(e))
    };
    let mut opts = LzmaOptions::new_preset(5).map_err(lzma_err)?;
    opts.dict_size(1 << 16)
        .literal_context_bits(3)
        .literal_position_bits(0)
        .position_bits(2)
        .mode(Mode::Normal)
        .nice_len(32)
        .match_finder(MatchFinder::BinaryTree4)
        .depth(0);
    let mut enc = Stream::new_lzma_encoder(&opts).map_err(lzma_err)?;
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        let consumed = enc.total_in() as usize;
        if out.capacity() - out.len() < 4096 {
            out.reserve(data.len() / 4 + 4096);
        }
        match enc
            .process_vec(&data[consumed..], &mut out, Action::Finish)
            .map_err(lzma_err)?
        {
            Status::StreamEnd => break,
            _ => continue,
        }
    }
    // (pb * 5 + lp) * 9 + lc
    const LZMA_PROPERTIES: u8 = (2 * 5) * 9 + 3;
    // The .lzma header: 1 byte properties, 4 bytes dictionary size, 8 bytes length.
    const ALONE_HEADER: usize = 13;
    if out.len() < ALONE_HEADER || out[0] != LZMA_PROPERTIES {
        return Err(Error::io_during(
            "compressing the GRUB core image",
            std::io::Error::other("unexpected .lzma header from liblzma"),
        ));
    }
    out.drain(..ALONE_HEADER);
    Ok(out)
}
