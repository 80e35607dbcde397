//! Just enough PE32+ to read a stub's headers and lay out a UKI.
//!
//! Written by hand because neither goblin nor object can add sections with new data
//! to an existing image (see the crates notes): goblin re-serialises only the input
//! buffer and object only builds images from scratch. Only headers are read here;
//! section data is streamed by the callers.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// `IMAGE_SCN_CNT_CODE`.
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_READ`.
pub const SCN_MEM_READ: u32 = 0x4000_0000;
/// Characteristics of appended UKI sections: read-only initialised data.
pub const SCN_UKI_DATA: u32 = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ;

/// `IMAGE_SUBSYSTEM_EFI_APPLICATION`.
pub const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_X86_64: u16 = 0x8664;
/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = 0xAA64;

/// Where the PE signature goes in a UKI (the DOS stub program is dropped).
const NEW_LFANEW: usize = 0x80;
const COFF_LEN: usize = 20;
const SECTION_HEADER_LEN: usize = 40;
/// How much of a file is read to find its headers (they end well before this).
const HEADER_READ_LIMIT: u64 = 64 * 1024;

// Field offsets inside the PE32+ optional header.
const OPT_MAGIC: usize = 0;
const OPT_LINKER_MAJOR: usize = 2;
const OPT_SIZE_OF_CODE: usize = 4;
const OPT_SIZE_OF_INIT_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
const OPT_SUBSYSTEM: usize = 68;
const OPT_NUMBER_OF_RVA_AND_SIZES: usize = 108;
const OPT_DATA_DIRECTORIES: usize = 112;
/// Data directory 4: the certificate table (Authenticode signatures).
const DIR_SECURITY: usize = 4;

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SectionHeader {
    /// Name with the NUL padding removed.
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

impl SectionHeader {
    fn parse(b: &[u8]) -> Self {
        let name_end = b[..8].iter().position(|&c| c == 0).unwrap_or(8);
        SectionHeader {
            name: String::from_utf8_lossy(&b[..name_end]).into_owned(),
            virtual_size: le32(b, 8),
            virtual_address: le32(b, 12),
            size_of_raw_data: le32(b, 16),
            pointer_to_raw_data: le32(b, 20),
            characteristics: le32(b, 36),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut name = [0u8; 8];
        name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        out.extend_from_slice(&name);
        for v in [
            self.virtual_size,
            self.virtual_address,
            self.size_of_raw_data,
            self.pointer_to_raw_data,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0u8; 12]); // relocations, line numbers and their counts
        out.extend_from_slice(&self.characteristics.to_le_bytes());
    }

    /// Bytes of the section that hold data in the file (the rest of VirtualSize is zeros).
    pub fn data_in_file(&self) -> u32 {
        self.virtual_size.min(self.size_of_raw_data)
    }
}

/// The headers of a PE32+ image.
#[derive(Debug, Clone)]
pub struct PeHeaders {
    dos: Vec<u8>,
    coff: Vec<u8>,
    optional: Vec<u8>,
    pub sections: Vec<SectionHeader>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// `v` rounded up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

impl PeHeaders {
    /// Reads the headers of the PE file at `path` (only its first bytes).
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).at(path)?;
        let mut buf = Vec::new();
        file.take(HEADER_READ_LIMIT)
            .read_to_end(&mut buf)
            .at(path)?;
        Self::parse(&buf, path)
    }

    /// Parses the headers at the start of `b` (the file at `path`, for errors).
    pub fn parse(b: &[u8], path: &Path) -> Result<Self> {
        let not_pe = |what: &str| Error::format(path, format!("not a PE/EFI image: {what}"));
        if b.starts_with(b"\x7fELF") {
            return Err(not_pe("it is an ELF file"));
        }
        if b.len() < 0x40 || &b[..2] != b"MZ" {
            return Err(not_pe("no MZ header"));
        }
        let lfanew = le32(b, 0x3C) as usize;
        let coff_at = lfanew + 4;
        if b.len() < coff_at + COFF_LEN || &b[lfanew..coff_at] != b"PE\0\0" {
            return Err(not_pe(
                "no PE signature (an MS-DOS executable or a truncated file)",
            ));
        }
        let coff = &b[coff_at..coff_at + COFF_LEN];
        let sections_count = le16(coff, 2) as usize;
        let opt_len = le16(coff, 16) as usize;
        let opt_at = coff_at + COFF_LEN;
        if opt_len < 2 || b.len() < opt_at + opt_len {
            return Err(not_pe("truncated optional header"));
        }
        let optional = &b[opt_at..opt_at + opt_len];
        match le16(optional, OPT_MAGIC) {
            0x20b if opt_len >= OPT_DATA_DIRECTORIES => {}
            0x20b => return Err(not_pe("truncated PE32+ optional header")),
            0x10b => {
                return Err(Error::format(
                    path,
                    "a 32-bit PE32 image; a PE32+ (64-bit) image is needed",
                ));
            }
            m => return Err(not_pe(&format!("unknown optional header magic {m:#x}"))),
        }
        let table_at = opt_at + opt_len;
        let table_end = table_at + sections_count * SECTION_HEADER_LEN;
        if b.len() < table_end {
            return Err(not_pe("truncated section table"));
        }
        let sections = b[table_at..table_end]
            .chunks(SECTION_HEADER_LEN)
            .map(SectionHeader::parse)
            .collect();
        Ok(PeHeaders {
            dos: b[..0x40].to_vec(),
            coff: coff.to_vec(),
            optional: optional.to_vec(),
            sections,
        })
    }

    pub fn machine(&self) -> u16 {
        le16(&self.coff, 0)
    }
    pub fn time_date_stamp(&self) -> u32 {
        le32(&self.coff, 4)
    }
    /// `(PointerToSymbolTable, NumberOfSymbols)`.
    pub fn symbol_table(&self) -> (u32, u32) {
        (le32(&self.coff, 8), le32(&self.coff, 12))
    }
    pub fn subsystem(&self) -> u16 {
        le16(&self.optional, OPT_SUBSYSTEM)
    }
    pub fn section_alignment(&self) -> u32 {
        le32(&self.optional, OPT_SECTION_ALIGNMENT)
    }
    pub fn file_alignment(&self) -> u32 {
        le32(&self.optional, OPT_FILE_ALIGNMENT)
    }
    pub fn size_of_image(&self) -> u32 {
        le32(&self.optional, OPT_SIZE_OF_IMAGE)
    }
    pub fn size_of_headers(&self) -> u32 {
        le32(&self.optional, OPT_SIZE_OF_HEADERS)
    }

    /// The data directory `index` as `(address, size)`, if the header has it.
    fn directory(&self, index: usize) -> Option<(u32, u32)> {
        let count = le32(&self.optional, OPT_NUMBER_OF_RVA_AND_SIZES) as usize;
        let at = OPT_DATA_DIRECTORIES + index * 8;
        (index < count && self.optional.len() >= at + 8)
            .then(|| (le32(&self.optional, at), le32(&self.optional, at + 4)))
    }

    /// The certificate table `(file offset, size)`, when the image is signed.
    pub fn certificate_table(&self) -> Option<(u32, u32)> {
        self.directory(DIR_SECURITY).filter(|&(_, size)| size != 0)
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Lays out a UKI: these headers' sections (re-packed right after the grown
    /// header area, RVAs unchanged) followed by `appended` sections `(name, size)`.
    /// Returns the complete header block (SizeOfHeaders bytes) and the final
    /// section table. Talos' native assembler, spec section 1.5.
    pub fn layout(&self, appended: &[(&str, u64)], timestamp: u32, path: &Path) -> Result<Layout> {
        let sec_align = self.section_alignment() as u64;
        let file_align = self.file_alignment() as u64;
        if !sec_align.is_power_of_two() || !file_align.is_power_of_two() {
            return Err(Error::format(
                path,
                "section or file alignment is not a power of two",
            ));
        }
        let total = self.sections.len() + appended.len();
        let header_len =
            NEW_LFANEW + 4 + COFF_LEN + self.optional.len() + SECTION_HEADER_LEN * total;
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
                name: name.to_string(),
                virtual_size: u32_of(size, name)?,
                virtual_address: u32_of(rva, name)?,
                size_of_raw_data: u32_of(raw, name)?,
                pointer_to_raw_data: u32_of(file_at, name)?,
                characteristics: SCN_UKI_DATA,
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

        let mut out = Vec::with_capacity(size_of_headers as usize);
        out.extend_from_slice(&self.dos);
        put32(&mut out, 0x3C, NEW_LFANEW as u32);
        out.resize(NEW_LFANEW, 0);
        out.extend_from_slice(b"PE\0\0");
        let mut coff = self.coff.clone();
        put16(
            &mut coff,
            2,
            u16::try_from(total).map_err(|_| Error::invalid("too many sections"))?,
        );
        put32(&mut coff, 4, timestamp);
        // The stub's symbol table (if any) is not copied: no pointer to it remains.
        put32(&mut coff, 8, 0);
        put32(&mut coff, 12, 0);
        out.extend_from_slice(&coff);
        let mut opt = self.optional.clone();
        opt[OPT_LINKER_MAJOR] = 0;
        opt[OPT_LINKER_MAJOR + 1] = 0;
        put32(&mut opt, OPT_SIZE_OF_CODE, u32_of(code, "code size")?);
        put32(
            &mut opt,
            OPT_SIZE_OF_INIT_DATA,
            u32_of(init_data, "data size")?,
        );
        put32(
            &mut opt,
            OPT_SIZE_OF_IMAGE,
            u32_of(size_of_image, "image size")?,
        );
        put32(&mut opt, OPT_SIZE_OF_HEADERS, size_of_headers as u32);
        put32(&mut opt, OPT_CHECKSUM, 0);
        if self.directory(DIR_SECURITY).is_some() {
            // A stub's own signature does not cover the UKI; it is dropped.
            let at = OPT_DATA_DIRECTORIES + DIR_SECURITY * 8;
            opt[at..at + 8].fill(0);
        }
        out.extend_from_slice(&opt);
        for s in &sections {
            s.write(&mut out);
        }
        out.resize(size_of_headers as usize, 0);
        Ok(Layout {
            headers: out,
            sections,
            stub_sections: self.sections.len(),
        })
    }
}

/// A UKI's header block and section table, ready to be written.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The first SizeOfHeaders bytes of the file.
    pub headers: Vec<u8>,
    /// Final section table: stub sections, then appended ones.
    pub sections: Vec<SectionHeader>,
    /// How many of `sections` come from the stub.
    pub stub_sections: usize,
}

impl Layout {
    /// Total file length.
    pub fn file_len(&self) -> u64 {
        self.sections
            .iter()
            .map(|s| s.pointer_to_raw_data as u64 + s.size_of_raw_data as u64)
            .max()
            .unwrap_or(self.headers.len() as u64)
    }
}
