//! Reading and checking a PE image's headers: the MS-DOS header, the PE signature,
//! the COFF file header, the optional header (PE32 or PE32+) with its data
//! directories, and the section table (Microsoft PE/COFF specification, "Overview"
//! through "Section Table").
//!
//! Both optional header formats are read: Authenticode covers PE32 images too. What
//! needs a PE32+ image (laying out a UKI) checks [`PeHeaders::is_pe32_plus`].

use std::io::{Read, Seek, SeekFrom};
use std::mem::{offset_of, size_of};
use std::path::Path;

use object::LittleEndian as LE;
use object::pe::{
    IMAGE_DOS_SIGNATURE, IMAGE_NT_OPTIONAL_HDR32_MAGIC, IMAGE_NT_OPTIONAL_HDR64_MAGIC,
    IMAGE_NT_SIGNATURE, ImageDataDirectory, ImageDosHeader, ImageFileHeader, ImageOptionalHeader32,
    ImageOptionalHeader64, ImageSectionHeader,
};
use object::pod::{self, Pod};
use object::read::pe::ImageOptionalHeader as _;

use crate::error::{Error, IoContext, Result};
use crate::io::le;

/// How much of a file is read first to find its headers (they nearly always end
/// well before this; more is read when the section table says so).
const FIRST_READ: u64 = 4096;
/// Headers are never this large; a larger claim means a corrupt file.
pub(crate) const MAX_HEADER_BYTES: u64 = 16 << 20;
/// `PE\0\0`.
const SIGNATURE_LEN: usize = 4;

/// Why some bytes are not (a usable) PE image. Callers add the file and what they
/// expected it to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Malformed {
    pub reason: String,
    /// The headers claim to continue past the bytes given: how many are needed.
    needed: Option<u64>,
}

impl Malformed {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Malformed {
            reason: reason.into(),
            needed: None,
        }
    }

    fn short(reason: &str, needed: usize) -> Self {
        Malformed {
            reason: reason.into(),
            needed: Some(needed as u64),
        }
    }

    /// The error for the file at `path`, which should have been `expected` (e.g.
    /// `PE image`): "not a PE image: no MZ header".
    pub fn not_a(self, path: &Path, expected: &str) -> Error {
        Error::format(path, format!("not a {expected}: {}", self.reason))
    }
}

/// The optional header's fixed fields, in the image's format.
#[derive(Debug, Clone, Copy)]
pub enum OptionalHeader {
    Pe32(ImageOptionalHeader32),
    Pe32Plus(ImageOptionalHeader64),
}

/// Dispatches an `object::read::pe::ImageOptionalHeader` accessor on either format.
macro_rules! optional_field {
    ($headers:expr, $field:ident) => {
        match &$headers.optional {
            OptionalHeader::Pe32(h) => h.$field(),
            OptionalHeader::Pe32Plus(h) => h.$field(),
        }
    };
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SectionHeader {
    /// Name with the NUL padding removed (lossy UTF-8).
    pub name: String,
    /// The 8 name bytes as stored, written back unchanged.
    #[serde(skip)]
    pub name_bytes: [u8; 8],
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

impl SectionHeader {
    fn from_table(h: &ImageSectionHeader) -> Self {
        let end = h.name.iter().position(|&c| c == 0).unwrap_or(8);
        SectionHeader {
            name: String::from_utf8_lossy(&h.name[..end]).into_owned(),
            name_bytes: h.name,
            virtual_size: h.virtual_size.get(LE),
            virtual_address: h.virtual_address.get(LE),
            size_of_raw_data: h.size_of_raw_data.get(LE),
            pointer_to_raw_data: h.pointer_to_raw_data.get(LE),
            characteristics: h.characteristics.get(LE).0,
        }
    }

    /// A new section named `name` (at most 8 bytes; checked by the caller).
    pub fn named(name: &str) -> Self {
        let mut name_bytes = [0u8; 8];
        name_bytes[..name.len()].copy_from_slice(name.as_bytes());
        SectionHeader {
            name: name.to_string(),
            name_bytes,
            virtual_size: 0,
            virtual_address: 0,
            size_of_raw_data: 0,
            pointer_to_raw_data: 0,
            characteristics: 0,
        }
    }

    /// The section table entry. Relocations and line numbers are always empty
    /// (images have neither; the specification says both are zero for images).
    pub fn to_table(&self) -> ImageSectionHeader {
        let mut h = ImageSectionHeader {
            name: self.name_bytes,
            ..Default::default()
        };
        h.virtual_size.set(LE, self.virtual_size);
        h.virtual_address.set(LE, self.virtual_address);
        h.size_of_raw_data.set(LE, self.size_of_raw_data);
        h.pointer_to_raw_data.set(LE, self.pointer_to_raw_data);
        h.characteristics
            .set(LE, object::pe::SectionFlags(self.characteristics));
        h
    }

    /// Bytes of the section that hold data in the file (the rest of VirtualSize is zeros).
    pub fn data_in_file(&self) -> u32 {
        self.virtual_size.min(self.size_of_raw_data)
    }

    /// File offset just past the section's raw data.
    pub fn raw_end(&self) -> u64 {
        u64::from(self.pointer_to_raw_data) + u64::from(self.size_of_raw_data)
    }
}

/// The headers of a PE image.
#[derive(Debug, Clone)]
pub struct PeHeaders {
    pub dos: ImageDosHeader,
    /// File offset of the PE signature (`e_lfanew`).
    pub nt_offset: u64,
    pub file_header: ImageFileHeader,
    pub optional: OptionalHeader,
    /// The whole optional header as stored (SizeOfOptionalHeader bytes: the fixed
    /// fields, the data directories and anything after them).
    optional_bytes: Vec<u8>,
    /// The data directories present: NumberOfRvaAndSizes entries, at most as many
    /// as fit in the optional header.
    pub directories: Vec<ImageDataDirectory>,
    pub sections: Vec<SectionHeader>,
}

/// The `T` at `offset` in `b`, or `None` when `b` is too short.
fn pod_at<T: Pod>(b: &[u8], offset: usize) -> Option<T> {
    let (value, _) = pod::from_bytes::<T>(b.get(offset..)?).ok()?;
    Some(*value)
}

impl PeHeaders {
    /// Reads the headers of the `file_len`-byte image at the start of `file` (named
    /// `path` in errors, which say the file is not a `expected`). Only the header
    /// bytes are read.
    pub fn read(
        file: &mut (impl Read + Seek),
        path: &Path,
        file_len: u64,
        expected: &str,
    ) -> Result<Self> {
        let limit = file_len.min(MAX_HEADER_BYTES);
        let mut want = limit.min(FIRST_READ);
        loop {
            let mut head = vec![0u8; want as usize];
            file.seek(SeekFrom::Start(0)).reading(path)?;
            file.read_exact(&mut head).reading(path)?;
            match Self::parse(&head) {
                Err(Malformed {
                    needed: Some(needed),
                    ..
                }) if needed > want && needed <= limit => want = needed,
                parsed => return parsed.map_err(|e| e.not_a(path, expected)),
            }
        }
    }

    /// Reads the headers of the file at `path`.
    pub fn read_file(path: &Path, expected: &str) -> Result<Self> {
        let mut file = std::fs::File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        Self::read(&mut file, path, len, expected)
    }

    /// Parses the headers at the start of `b`.
    pub fn parse(b: &[u8]) -> std::result::Result<Self, Malformed> {
        if b.starts_with(b"\x7fELF") {
            return Err(Malformed::new("it is an ELF file"));
        }
        let dos: ImageDosHeader = pod_at(b, 0)
            .filter(|d: &ImageDosHeader| d.e_magic.get(LE) == IMAGE_DOS_SIGNATURE)
            .ok_or_else(|| Malformed::new("no MZ header"))?;
        let nt_offset = dos.e_lfanew.get(LE) as usize;
        let no_signature = "no PE signature (an MS-DOS executable or a truncated file)";
        let file_at = nt_offset + SIGNATURE_LEN;
        let file_header: ImageFileHeader = pod_at(b, file_at).ok_or_else(|| {
            Malformed::short(no_signature, file_at + size_of::<ImageFileHeader>())
        })?;
        if le::u32_at(b, nt_offset) != Ok(IMAGE_NT_SIGNATURE) {
            return Err(Malformed::new(no_signature));
        }
        let opt_at = file_at + size_of::<ImageFileHeader>();
        let opt_len = file_header.size_of_optional_header.get(LE) as usize;
        let optional_bytes = b
            .get(opt_at..opt_at + opt_len)
            .filter(|o| o.len() >= 2)
            .ok_or_else(|| Malformed::short("truncated optional header", opt_at + opt_len))?;
        let (optional, fixed_len) = match le::u16_at(optional_bytes, 0) {
            Ok(IMAGE_NT_OPTIONAL_HDR64_MAGIC) => (
                pod_at(optional_bytes, 0).map(OptionalHeader::Pe32Plus),
                size_of::<ImageOptionalHeader64>(),
            ),
            Ok(IMAGE_NT_OPTIONAL_HDR32_MAGIC) => (
                pod_at(optional_bytes, 0).map(OptionalHeader::Pe32),
                size_of::<ImageOptionalHeader32>(),
            ),
            Ok(m) => {
                return Err(Malformed::new(format!(
                    "unknown optional header magic {m:#x}"
                )));
            }
            Err(_) => unreachable!("two bytes are there"),
        };
        let optional = optional.ok_or_else(|| {
            Malformed::new(if fixed_len == size_of::<ImageOptionalHeader64>() {
                "truncated PE32+ optional header"
            } else {
                "truncated PE32 optional header"
            })
        })?;
        let count = match &optional {
            OptionalHeader::Pe32(h) => h.number_of_rva_and_sizes(),
            OptionalHeader::Pe32Plus(h) => h.number_of_rva_and_sizes(),
        } as usize;
        let fit = (opt_len - fixed_len) / size_of::<ImageDataDirectory>();
        let (directories, _) = pod::slice_from_bytes::<ImageDataDirectory>(
            &optional_bytes[fixed_len..],
            count.min(fit),
        )
        .expect("the entries fit");
        let sections_count = file_header.number_of_sections.get(LE) as usize;
        let table_at = opt_at + opt_len;
        let table_len = sections_count * size_of::<ImageSectionHeader>();
        let table = b
            .get(table_at..table_at + table_len)
            .ok_or_else(|| Malformed::short("truncated section table", table_at + table_len))?;
        let (table, _) = pod::slice_from_bytes::<ImageSectionHeader>(table, sections_count)
            .expect("the table fits");
        Ok(PeHeaders {
            dos,
            nt_offset: nt_offset as u64,
            file_header,
            optional,
            optional_bytes: optional_bytes.to_vec(),
            directories: directories.to_vec(),
            sections: table.iter().map(SectionHeader::from_table).collect(),
        })
    }

    pub fn is_pe32_plus(&self) -> bool {
        matches!(self.optional, OptionalHeader::Pe32Plus(_))
    }

    /// Refuses a PE32 image where a PE32+ one is needed.
    pub fn require_pe32_plus(&self, path: &Path) -> Result<()> {
        if self.is_pe32_plus() {
            Ok(())
        } else {
            Err(Error::format(
                path,
                "a 32-bit PE32 image; a PE32+ (64-bit) image is needed",
            ))
        }
    }

    pub fn machine(&self) -> u16 {
        self.file_header.machine.get(LE).0
    }
    pub fn time_date_stamp(&self) -> u32 {
        self.file_header.time_date_stamp.get(LE)
    }
    /// `(PointerToSymbolTable, NumberOfSymbols)`.
    pub fn symbol_table(&self) -> (u32, u32) {
        (
            self.file_header.pointer_to_symbol_table.get(LE),
            self.file_header.number_of_symbols.get(LE),
        )
    }
    pub fn subsystem(&self) -> u16 {
        optional_field!(self, subsystem).0
    }
    pub fn section_alignment(&self) -> u32 {
        optional_field!(self, section_alignment)
    }
    pub fn file_alignment(&self) -> u32 {
        optional_field!(self, file_alignment)
    }
    pub fn size_of_image(&self) -> u32 {
        optional_field!(self, size_of_image)
    }
    pub fn size_of_headers(&self) -> u32 {
        optional_field!(self, size_of_headers)
    }

    /// The optional header as stored.
    pub fn optional_bytes(&self) -> &[u8] {
        &self.optional_bytes
    }

    /// File offset of the optional header.
    pub fn optional_offset(&self) -> u64 {
        self.nt_offset + (SIGNATURE_LEN + size_of::<ImageFileHeader>()) as u64
    }

    /// Length of the optional header's fixed fields (where the data directories start).
    pub fn optional_fixed_len(&self) -> usize {
        match self.optional {
            OptionalHeader::Pe32(_) => size_of::<ImageOptionalHeader32>(),
            OptionalHeader::Pe32Plus(_) => size_of::<ImageOptionalHeader64>(),
        }
    }

    /// File offset of the optional header's CheckSum field.
    pub fn checksum_offset(&self) -> u64 {
        let at = match self.optional {
            OptionalHeader::Pe32(_) => offset_of!(ImageOptionalHeader32, check_sum),
            OptionalHeader::Pe32Plus(_) => offset_of!(ImageOptionalHeader64, check_sum),
        };
        self.optional_offset() + at as u64
    }

    /// File offset of data directory entry `index`, if the header has it.
    pub fn directory_offset(&self, index: usize) -> Option<u64> {
        (index < self.directories.len()).then(|| {
            self.optional_offset()
                + (self.optional_fixed_len() + index * size_of::<ImageDataDirectory>()) as u64
        })
    }

    /// Data directory `index` as `(address, size)`, if the header has it.
    pub fn directory(&self, index: usize) -> Option<(u32, u32)> {
        self.directories
            .get(index)
            .map(|d| (d.virtual_address.get(LE), d.size.get(LE)))
    }

    /// The certificate table `(file offset, size)`, when the image is signed.
    pub fn certificate_table(&self) -> Option<(u32, u32)> {
        self.directory(object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY)
            .filter(|&(_, size)| size != 0)
    }

    /// File offset just past the section table.
    pub fn section_table_end(&self) -> u64 {
        self.optional_offset()
            + (self.optional_bytes.len() + self.sections.len() * size_of::<ImageSectionHeader>())
                as u64
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sits_at_the_same_offset_in_both_formats() {
        assert_eq!(offset_of!(ImageOptionalHeader32, check_sum), 64);
        assert_eq!(offset_of!(ImageOptionalHeader64, check_sum), 64);
        assert_eq!(size_of::<ImageOptionalHeader32>(), 96);
        assert_eq!(size_of::<ImageOptionalHeader64>(), 112);
    }

    #[test]
    fn non_pe_input_is_described() {
        let reason = |b: &[u8]| PeHeaders::parse(b).unwrap_err().reason;
        assert_eq!(reason(b"\x7fELF\x02\x01"), "it is an ELF file");
        assert_eq!(reason(&[b'M'; 100]), "no MZ header");
        let mut dos = vec![0u8; 0x40];
        dos[..2].copy_from_slice(b"MZ");
        dos[0x3C] = 0x40;
        let e = PeHeaders::parse(&dos).unwrap_err();
        assert!(e.reason.starts_with("no PE signature"), "{e}");
        assert_eq!(e.needed, Some(0x40 + 24));
    }
}
