//! Laying out a UKI: a stub's headers and sections with new sections appended.
//!
//! `object` reads PE images and writes new ones from scratch, but cannot take an
//! existing image and add sections that carry fresh data while keeping everything
//! else in place; that rewrite is done here with `object`'s header structures. Only
//! headers are produced; the callers stream the section data.

use std::mem::size_of;
use std::path::Path;

use object::LittleEndian as LE;
use object::pe::{IMAGE_DIRECTORY_ENTRY_SECURITY, IMAGE_NT_SIGNATURE, ImageDataDirectory};
use object::pod::bytes_of;

use super::headers::{OptionalHeader, PeHeaders, SectionHeader};
use super::{SCN_CNT_INITIALIZED_DATA, SCN_UKI_DATA};
use crate::error::{Error, Result};

/// Where the PE signature goes in a UKI (the MS-DOS stub program is dropped).
const NEW_NT_OFFSET: usize = 0x80;

/// `v` rounded up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// A UKI's header block and section table, ready to be written.
#[derive(Debug, Clone)]
pub struct PeLayout {
    /// The first SizeOfHeaders bytes of the file.
    pub headers: Vec<u8>,
    /// Final section table: stub sections, then appended ones.
    pub sections: Vec<SectionHeader>,
    /// How many of `sections` come from the stub.
    pub stub_sections: usize,
}

impl PeLayout {
    /// The sections appended to the stub's.
    pub fn appended(&self) -> &[SectionHeader] {
        &self.sections[self.stub_sections..]
    }

    /// Length of the unsigned image: the end of the last section's raw data.
    pub fn image_len(&self) -> u64 {
        self.sections
            .iter()
            .map(SectionHeader::raw_end)
            .max()
            .unwrap_or(self.headers.len() as u64)
    }
}

impl PeHeaders {
    /// Lays out a UKI on these (a stub's) headers: its sections re-packed right after
    /// the grown header area (RVAs unchanged), followed by `appended` sections
    /// `(name, size)` at the next aligned RVAs. The PE TimeDateStamp becomes
    /// `timestamp`. `path` names the stub in errors.
    pub fn lay_out(
        &self,
        appended: &[(&str, u64)],
        timestamp: u32,
        path: &Path,
    ) -> Result<PeLayout> {
        self.require_pe32_plus(path)?;
        let OptionalHeader::Pe32Plus(stub_optional) = self.optional else {
            unreachable!("checked above")
        };
        let sec_align = self.section_alignment() as u64;
        let file_align = self.file_alignment() as u64;
        if !sec_align.is_power_of_two() || !file_align.is_power_of_two() {
            return Err(Error::format(
                path,
                "section or file alignment is not a power of two",
            ));
        }
        let total = self.sections.len() + appended.len();
        let header_len = NEW_NT_OFFSET
            + size_of_val(&IMAGE_NT_SIGNATURE)
            + size_of_val(&self.file_header)
            + self.optional_bytes().len()
            + size_of::<object::pe::ImageSectionHeader>() * total;
        let size_of_headers = align_up(header_len as u64, file_align);
        // Headers are mapped at RVA 0; they must end before the first section.
        let first_rva = self
            .sections
            .iter()
            .map(|s| s.virtual_address as u64)
            .min()
            .unwrap_or(u64::MAX);
        if size_of_headers > first_rva {
            return Err(Error::format(
                path,
                format!(
                    "no room for {} more section headers before the first section (RVA {first_rva:#x})",
                    appended.len()
                ),
            ));
        }
        let too_big = |what: &str| Error::invalid(format!("the UKI would exceed 4 GiB ({what})"));
        let u32_of = |v: u64, what: &str| u32::try_from(v).map_err(|_| too_big(what));

        let mut sections = Vec::with_capacity(total);
        let mut file_at = size_of_headers;
        for s in &self.sections {
            sections.push(SectionHeader {
                pointer_to_raw_data: u32_of(file_at, &s.name)?,
                ..s.clone()
            });
            file_at += s.size_of_raw_data as u64;
        }
        let stub_end = self
            .sections
            .iter()
            .map(|s| s.virtual_address as u64 + s.virtual_size as u64)
            .max()
            .unwrap_or(0);
        let mut rva = align_up(stub_end, sec_align);
        for &(name, size) in appended {
            if name.len() > 8 {
                return Err(Error::invalid(format!(
                    "section name {name} is longer than 8 bytes"
                )));
            }
            let raw = align_up(size, file_align);
            sections.push(SectionHeader {
                virtual_size: u32_of(size, name)?,
                virtual_address: u32_of(rva, name)?,
                size_of_raw_data: u32_of(raw, name)?,
                pointer_to_raw_data: u32_of(file_at, name)?,
                characteristics: SCN_UKI_DATA,
                ..SectionHeader::named(name)
            });
            file_at += raw;
            rva = align_up(rva + size, sec_align);
        }
        let last = sections.last().expect("a stub has sections");
        let size_of_image = align_up(
            last.virtual_address as u64 + last.virtual_size as u64,
            sec_align,
        );
        let (mut code, mut init_data) = (0u64, 0u64);
        for s in &sections {
            if s.characteristics & SCN_CNT_INITIALIZED_DATA != 0 {
                init_data += s.size_of_raw_data as u64;
            } else {
                code += s.size_of_raw_data as u64;
            }
        }

        let mut dos = self.dos;
        dos.e_lfanew.set(LE, NEW_NT_OFFSET as u32);
        let mut file_header = self.file_header;
        file_header.number_of_sections.set(
            LE,
            u16::try_from(total).map_err(|_| Error::invalid("too many sections"))?,
        );
        file_header.time_date_stamp.set(LE, timestamp);
        // The stub's symbol table (if any) is not copied: no pointer to it remains.
        file_header.pointer_to_symbol_table.set(LE, 0);
        file_header.number_of_symbols.set(LE, 0);
        let mut optional = stub_optional;
        optional.major_linker_version = 0;
        optional.minor_linker_version = 0;
        optional.size_of_code.set(LE, u32_of(code, "code size")?);
        optional
            .size_of_initialized_data
            .set(LE, u32_of(init_data, "data size")?);
        optional
            .size_of_image
            .set(LE, u32_of(size_of_image, "image size")?);
        optional.size_of_headers.set(LE, size_of_headers as u32);
        optional.check_sum.set(LE, 0);
        // Data directories and whatever follows them, as in the stub, except that the
        // stub's own signature does not cover the UKI and is dropped.
        let mut rest = self.optional_bytes()[self.optional_fixed_len()..].to_vec();
        if self.directory(IMAGE_DIRECTORY_ENTRY_SECURITY).is_some() {
            let at = IMAGE_DIRECTORY_ENTRY_SECURITY * size_of::<ImageDataDirectory>();
            rest[at..at + size_of::<ImageDataDirectory>()].fill(0);
        }

        let mut out = Vec::with_capacity(size_of_headers as usize);
        out.extend_from_slice(bytes_of(&dos));
        out.resize(NEW_NT_OFFSET, 0);
        out.extend_from_slice(&IMAGE_NT_SIGNATURE.to_le_bytes());
        out.extend_from_slice(bytes_of(&file_header));
        out.extend_from_slice(bytes_of(&optional));
        out.extend_from_slice(&rest);
        for s in &sections {
            out.extend_from_slice(bytes_of(&s.to_table()));
        }
        out.resize(size_of_headers as usize, 0);
        Ok(PeLayout {
            headers: out,
            sections,
            stub_sections: self.sections.len(),
        })
    }
}
