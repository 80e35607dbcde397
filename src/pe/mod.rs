//! One model of PE/COFF images, on `object`'s header structures: reading and checking
//! the headers ([`PeHeaders`]), laying out a UKI's appended sections ([`PeLayout`]),
//! the ranges the Authenticode digest covers ([`HashSpans`]) and the optional
//! header's CheckSum ([`PeChecksum`]).
//!
//! References: Microsoft's "PE Format" specification (PE/COFF) for the headers and
//! CheckSum, and "Windows Authenticode Portable Executable Signature Format" for the
//! hashed ranges and the certificate table.
//!
//! Only headers are held in memory; section data is streamed by the callers.

mod checksum;
mod headers;
mod layout;
mod spans;

pub use checksum::PeChecksum;
pub use headers::{Malformed, OptionalHeader, PeHeaders, SectionHeader};
pub use layout::{PeLayout, align_up};
pub use spans::{CertTable, HashSpans, Span};

/// `IMAGE_SCN_CNT_CODE`.
pub const SCN_CNT_CODE: u32 = object::pe::IMAGE_SCN_CNT_CODE.0;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const SCN_CNT_INITIALIZED_DATA: u32 = object::pe::IMAGE_SCN_CNT_INITIALIZED_DATA.0;
/// `IMAGE_SCN_MEM_READ`.
pub const SCN_MEM_READ: u32 = object::pe::IMAGE_SCN_MEM_READ.0;
/// Characteristics of appended UKI sections: read-only initialised data.
pub const SCN_UKI_DATA: u32 = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ;

/// `IMAGE_SUBSYSTEM_EFI_APPLICATION`.
pub const SUBSYSTEM_EFI_APPLICATION: u16 = object::pe::IMAGE_SUBSYSTEM_EFI_APPLICATION.0;
/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_X86_64: u16 = object::pe::IMAGE_FILE_MACHINE_AMD64.0;
/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = object::pe::IMAGE_FILE_MACHINE_ARM64.0;

/// What a PE machine type is, for messages: `an x86-64 image`, `an arm64 image`.
pub fn machine_description(machine: u16) -> &'static str {
    match machine {
        MACHINE_X86_64 => "an x86-64 image",
        MACHINE_ARM64 => "an arm64 image",
        m if m == object::pe::IMAGE_FILE_MACHINE_I386.0 => "a 32-bit x86 image",
        m if m == object::pe::IMAGE_FILE_MACHINE_ARMNT.0 => "a 32-bit ARM image",
        m if m == object::pe::IMAGE_FILE_MACHINE_RISCV64.0 => "a RISC-V 64 image",
        _ => "an image for another machine",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use object::LittleEndian as LE;
    use object::pe::{
        IMAGE_NT_OPTIONAL_HDR64_MAGIC, IMAGE_NUMBEROF_DIRECTORY_ENTRIES, ImageDataDirectory,
        ImageDosHeader, ImageFileHeader, ImageOptionalHeader64, ImageSectionHeader,
    };
    use object::pod::bytes_of;

    use super::*;

    /// A small PE32+ EFI application made here: headers of 0x400 bytes, `.text` and
    /// `.sdata` sections of 0x200 raw bytes each, data directory 4 empty.
    pub(crate) fn small_image() -> Vec<u8> {
        // Pod structures have no public constructor; start from zeros.
        fn zeroed<T: object::pod::Pod>() -> T {
            *object::pod::from_bytes::<T>(&[0u8; 512]).unwrap().0
        }
        let mut dos: ImageDosHeader = zeroed();
        dos.e_magic.set(LE, object::pe::IMAGE_DOS_SIGNATURE);
        dos.e_lfanew.set(LE, 0x40);
        let mut file: ImageFileHeader = zeroed();
        file.machine.set(LE, object::pe::IMAGE_FILE_MACHINE_AMD64);
        file.number_of_sections.set(LE, 2);
        file.time_date_stamp.set(LE, 0x1234_5678);
        file.size_of_optional_header.set(
            LE,
            (size_of::<ImageOptionalHeader64>()
                + IMAGE_NUMBEROF_DIRECTORY_ENTRIES * size_of::<ImageDataDirectory>())
                as u16,
        );
        let mut opt: ImageOptionalHeader64 = zeroed();
        opt.magic.set(LE, IMAGE_NT_OPTIONAL_HDR64_MAGIC);
        opt.major_linker_version = 2;
        opt.section_alignment.set(LE, 0x1000);
        opt.file_alignment.set(LE, 0x200);
        opt.size_of_image.set(LE, 0x3000);
        opt.size_of_headers.set(LE, 0x400);
        opt.check_sum.set(LE, 0xDEAD);
        opt.subsystem
            .set(LE, object::pe::IMAGE_SUBSYSTEM_EFI_APPLICATION);
        opt.number_of_rva_and_sizes
            .set(LE, IMAGE_NUMBEROF_DIRECTORY_ENTRIES as u32);
        let mut out = bytes_of(&dos).to_vec();
        out.resize(0x40, 0);
        out.extend_from_slice(b"PE\0\0");
        out.extend_from_slice(bytes_of(&file));
        out.extend_from_slice(bytes_of(&opt));
        out.resize(
            out.len() + IMAGE_NUMBEROF_DIRECTORY_ENTRIES * size_of::<ImageDataDirectory>(),
            0,
        );
        for (i, (name, flags)) in [
            (*b".text\0\0\0", SCN_CNT_CODE | SCN_MEM_READ),
            (*b".sdata\0\0", SCN_UKI_DATA),
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = ImageSectionHeader {
                name,
                ..Default::default()
            };
            s.virtual_size.set(LE, 0x180);
            s.virtual_address.set(LE, 0x1000 * (i as u32 + 1));
            s.size_of_raw_data.set(LE, 0x200);
            s.pointer_to_raw_data.set(LE, 0x400 + 0x200 * i as u32);
            s.characteristics.set(LE, object::pe::SectionFlags(flags));
            out.extend_from_slice(bytes_of(&s));
        }
        out.resize(0x400, 0);
        out.extend((0..0x400u32).map(|i| (i * 31 + 7) as u8));
        out
    }

    #[test]
    fn headers_of_a_small_image() {
        let h = PeHeaders::parse(&small_image()).unwrap();
        assert!(h.is_pe32_plus());
        assert_eq!(h.machine(), MACHINE_X86_64);
        assert_eq!(h.subsystem(), SUBSYSTEM_EFI_APPLICATION);
        assert_eq!((h.section_alignment(), h.file_alignment()), (0x1000, 0x200));
        assert_eq!(h.size_of_headers(), 0x400);
        assert_eq!(h.directories.len(), 16);
        assert_eq!(h.certificate_table(), None);
        assert_eq!(h.checksum_offset(), 0x40 + 24 + 64);
        assert_eq!(h.directory_offset(4), Some(0x40 + 24 + 112 + 32));
        assert_eq!(h.section_table_end(), 0x40 + 24 + 240 + 80);
        let names: Vec<_> = h.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".sdata"]);
        assert_eq!(h.section(".sdata").unwrap().pointer_to_raw_data, 0x600);
    }

    #[test]
    fn spans_skip_checksum_and_certificate_entry() {
        let image = small_image();
        let h = PeHeaders::parse(&image).unwrap();
        let spans = HashSpans::new(&h, image.len() as u64).unwrap();
        let cksum = h.checksum_offset();
        let dir = h.directory_offset(4).unwrap();
        let want = [
            (0, cksum),
            (cksum + 4, dir),
            (dir + 8, 0x400),
            (0x400, 0x600),
            (0x600, 0x800),
        ];
        let got: Vec<_> = spans.hashed.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(got, want);
        assert_eq!(spans.zero_pad, 0);
        assert!(spans.in_file_order());
        // Trailing data after the last section is hashed too, padded to 8 bytes.
        let spans = HashSpans::new(&h, image.len() as u64 + 3).unwrap();
        assert_eq!(
            spans.hashed.last().map(|s| (s.start, s.end)),
            Some((0x800, 0x803))
        );
        assert_eq!(spans.zero_pad, 5);
    }

    #[test]
    fn layout_appends_sections_after_the_stub() {
        let image = small_image();
        let h = PeHeaders::parse(&image).unwrap();
        let layout = h
            .lay_out(
                &[(".linux", 0x1234), (".osrel", 10)],
                77,
                std::path::Path::new("s"),
            )
            .unwrap();
        assert_eq!(layout.headers.len(), 0x400);
        assert_eq!(layout.stub_sections, 2);
        let again = PeHeaders::parse(&layout.headers).unwrap();
        assert_eq!(again.nt_offset, 0x80);
        assert_eq!(again.time_date_stamp(), 77);
        assert_eq!(again.sections, layout.sections);
        let linux = again.section(".linux").unwrap();
        assert_eq!(
            (
                linux.virtual_address,
                linux.virtual_size,
                linux.size_of_raw_data
            ),
            (0x3000, 0x1234, 0x1400)
        );
        assert_eq!(linux.pointer_to_raw_data, 0x800);
        let osrel = again.section(".osrel").unwrap();
        assert_eq!(
            (osrel.virtual_address, osrel.pointer_to_raw_data),
            (0x5000, 0x1C00)
        );
        assert_eq!(layout.image_len(), 0x1E00);
        assert_eq!(again.size_of_image(), 0x6000);
        // The optional header keeps the stub's fields but its CheckSum and linker version.
        let OptionalHeader::Pe32Plus(opt) = again.optional else {
            panic!("PE32+")
        };
        assert_eq!((opt.check_sum.get(LE), opt.major_linker_version), (0, 0));
        assert_eq!(opt.size_of_code.get(LE), 0x200);
        assert_eq!(opt.size_of_initialized_data.get(LE), 0x200 + 0x1400 + 0x200);
    }

    #[test]
    fn pe32_images_are_read_but_not_laid_out() {
        let mut image = small_image();
        // Turn the optional header into a PE32 one of the same length.
        image[0x40 + 24..0x40 + 26].copy_from_slice(&0x10bu16.to_le_bytes());
        image[0x40 + 24 + 92..0x40 + 24 + 96].copy_from_slice(&16u32.to_le_bytes());
        let h = PeHeaders::parse(&image).unwrap();
        assert!(!h.is_pe32_plus());
        assert!(HashSpans::new(&h, image.len() as u64).is_ok());
        let err = h
            .lay_out(&[], 0, std::path::Path::new("x.efi"))
            .unwrap_err();
        assert!(err.to_string().contains("PE32+"), "{err}");
    }
}
