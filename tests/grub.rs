//! GRUB images judged by Debian's `grub-mkimage` (same payload for i386-pc, same bytes
//! for x86_64-efi and arm64-efi), independent PE readers (goblin, pefile, sbverify), the boot.img /
//! core.img patch offsets of GRUB's boot.S and diskboot.S, Talos's grub.cfg text, and a
//! real SeaBIOS boot through our core image.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::boot::{Media, SecureBoot, boot};
use common::{demo_dir, python, require_tool, run_ok};
use imager::formats::grub::{
    self, BIOS_EXTRA_MODULES, DEFAULT_DIR, GrubDir, PREFIX, TALOS_MODULES,
};

const SECTOR: usize = 512;
/// lzma_decompress.img's header fields (include/grub/offsets.h).
const COMPRESSED_SIZE: usize = 0x08;
const UNCOMPRESSED_SIZE: usize = 0x0c;

fn dir() -> GrubDir {
    GrubDir::open(Path::new(DEFAULT_DIR)).expect("GRUB directory (grub-pc-bin, grub-efi-amd64-bin)")
}

/// The arm64 GRUB directory: Debian 12's grub-efi-arm64-bin (an arm64-only package,
/// unpacked by scripts/demo-inputs into the demo tree's `grub/`).
fn arm64_dir() -> GrubDir {
    GrubDir::open_arm64(&common::grub_dir())
        .expect("GRUB arm64-efi directory (grub-efi-arm64-bin: run scripts/demo-inputs)")
}

/// Debian's grub-mkimage output for `format` with the Talos module list.
fn mkimage(format: &str, tmp: &Path) -> Vec<u8> {
    mkimage_from(Path::new(DEFAULT_DIR), format, tmp)
}

/// [`mkimage`] with the platform directory taken from `root`.
fn mkimage_from(root: &Path, format: &str, tmp: &Path) -> Vec<u8> {
    let out = tmp.join(format!("{format}.img"));
    let mut mods: Vec<&str> = TALOS_MODULES.to_vec();
    if format == "i386-pc" {
        mods.extend_from_slice(BIOS_EXTRA_MODULES);
    }
    run_ok(
        Command::new(require_tool("grub-mkimage"))
            .args(["-d"])
            .arg(root.join(format))
            .args(["-O", format, "-p", PREFIX, "-o"])
            .arg(&out)
            .args(&mods),
    );
    std::fs::read(out).unwrap()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// A core.img split as GRUB's boot code reads it: diskboot sector, decompressor (its
/// length is that of lzma_decompress.img), and the payload decoded with liblzma's
/// LZMA1 decoder. GRUB's encoder ends the stream at the uncompressed size from the
/// header; ours (liblzma) adds an end-of-payload marker after it, which GRUB's decoder
/// never reads, so ours is decoded up to that marker (and must then have that size).
fn split_core(core: &[u8], end_marker: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dec_len = std::fs::metadata(Path::new(DEFAULT_DIR).join("i386-pc/lzma_decompress.img"))
        .unwrap()
        .len() as usize;
    let dec = &core[SECTOR..SECTOR + dec_len];
    let compressed = &core[SECTOR + dec_len..];
    assert_eq!(
        u32_at(dec, COMPRESSED_SIZE) as usize,
        compressed.len(),
        "compressed size field"
    );
    let size = u32_at(dec, UNCOMPRESSED_SIZE) as u64;
    // An .lzma header (lc 3 lp 0 pb 2, 64 KiB dictionary, known length) before the raw stream.
    let mut alone = vec![0x5d];
    alone.extend_from_slice(&(1u32 << 16).to_le_bytes());
    alone.extend_from_slice(&if end_marker { u64::MAX } else { size }.to_le_bytes());
    alone.extend_from_slice(compressed);
    let mut stream = xz2::stream::Stream::new_lzma_decoder(u64::MAX).unwrap();
    let mut out = Vec::with_capacity(size as usize + 16);
    let status = stream
        .process_vec(&alone, &mut out, xz2::stream::Action::Finish)
        .expect("the payload decodes as LZMA1");
    assert_eq!(status, xz2::stream::Status::StreamEnd, "the stream ends");
    assert_eq!(
        out.len() as u64,
        size,
        "decoded payload length = uncompressed size field"
    );
    (core[..SECTOR].to_vec(), dec.to_vec(), out)
}

#[test]
fn bios_core_decodes_to_grub_mkimage_payload() {
    let tmp = tempfile::tempdir().unwrap();
    let theirs = mkimage("i386-pc", tmp.path());
    let ours = grub::bios_core_image(&dir()).unwrap();
    assert!(
        grub::bios_core_image(&dir()).unwrap() == ours,
        "reproducible"
    );
    let (our_boot, our_dec, our_payload) = split_core(&ours, true);
    let (their_boot, their_dec, their_payload) = split_core(&theirs, false);

    // diskboot.img: identical, including the blocklist mkimage presets (start sector 2,
    // count = sectors after the first, segment 0x820).
    assert_eq!(our_boot, their_boot, "diskboot sector");
    let count = u16::from_le_bytes([ours[0x1fc], ours[0x1fd]]) as usize;
    assert_eq!(
        count,
        ours.len().div_ceil(SECTOR) - 1,
        "blocklist sector count"
    );
    assert_eq!(
        u64::from_le_bytes(ours[0x1f4..0x1fc].try_into().unwrap()),
        2,
        "blocklist start"
    );
    assert_eq!(
        &ours[0x1fe..0x200],
        &[0x20, 0x08],
        "blocklist segment 0x820"
    );
    // Decompressor header: only the compressed size may differ (another LZMA encoder).
    let mut a = our_dec.clone();
    let mut b = their_dec.clone();
    a[COMPRESSED_SIZE..COMPRESSED_SIZE + 4].fill(0);
    b[COMPRESSED_SIZE..COMPRESSED_SIZE + 4].fill(0);
    assert_eq!(
        a, b,
        "decompressor and its header apart from the compressed size"
    );
    assert_eq!(
        &our_dec[0x18..0x1b],
        &[0xff, 0xff, 0xff],
        "boot device 0xFFFFFF"
    );
    assert_eq!(u32_at(&our_dec, 0x10), 0, "no Reed-Solomon redundancy");
    // The decompressed kernel + module info + modules + prefix: byte-identical.
    assert_eq!(our_payload.len(), their_payload.len());
    assert!(our_payload == their_payload, "decompressed payloads differ");
    // ... and laid out as include/grub/kernel.h says: "gmim" header with the total
    // module size running to the end of the payload, the prefix last.
    // (the kernel's own code holds the magic too, so look for the whole header)
    let info = (0..our_payload.len() - 12)
        .find(|&i| {
            &our_payload[i..i + 4] == b"mimg"
                && u32_at(&our_payload, i + 4) == 12
                && i + u32_at(&our_payload, i + 8) as usize == our_payload.len()
        })
        .expect("module info header (magic, offset 12, total size to the end)");
    // The first module follows it: an ELF object behind its (type 0, size) header.
    assert_eq!(u32_at(&our_payload, info + 12), 0, "module object type");
    assert_eq!(&our_payload[info + 20..info + 24], b"\x7fELF");
    let tail = &our_payload[our_payload.len() - 24..];
    assert_eq!(u32_at(tail, 0), 3, "prefix object type");
    assert_eq!(
        &tail[8..8 + PREFIX.len() + 1],
        format!("{PREFIX}\0").as_bytes()
    );
    eprintln!(
        "core.img: ours {} bytes ({} sectors), grub-mkimage {} bytes; payload {} bytes",
        ours.len(),
        ours.len().div_ceil(SECTOR),
        theirs.len(),
        our_payload.len()
    );
}

#[test]
fn efi_image_is_grub_mkimage_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let theirs = mkimage("x86_64-efi", tmp.path());
    let ours = grub::efi_image(&dir()).unwrap();
    assert_eq!(ours.len(), theirs.len(), "size");
    let diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(diff, None, "first differing byte");

    // Independent readers.
    let pe = goblin::pe::PE::parse(&ours).expect("goblin parses it");
    assert!(pe.is_64);
    let names: Vec<_> = pe
        .sections
        .iter()
        .map(|s| s.name().unwrap().to_string())
        .collect();
    assert_eq!(names, [".text", ".data", "mods", ".reloc"]);
    let opt = pe.header.optional_header.unwrap();
    assert_eq!(opt.windows_fields.subsystem, 10, "EFI application");
    assert_eq!(pe.header.coff_header.machine, 0x8664);
    let path = tmp.path().join("BOOTX64.efi");
    std::fs::write(&path, &ours).unwrap();
    let out = run_ok(
        python()
            .arg("-c")
            .arg(
                "import pefile,sys\n\
         p=pefile.PE(sys.argv[1])\n\
         n=sum(len(b.entries) for b in p.DIRECTORY_ENTRY_BASERELOC)\n\
         mods=[s for s in p.sections if s.Name.rstrip(b'\\0')==b'mods'][0]\n\
         print(n, mods.get_data().find(b'mimg'), p.OPTIONAL_HEADER.AddressOfEntryPoint)",
            )
            .arg(&path),
    );
    let fields: Vec<u64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert!(fields[0] > 1000, "pefile walks the base relocations: {out}");
    assert_eq!(fields[1], 0, "mods begins with the module info header");
    assert_eq!(fields[2], 0x1000, "entry at the start of .text");
    let sb = Command::new(require_tool("sbverify"))
        .arg("--list")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        sb.status.success(),
        "sbverify --list: {}",
        String::from_utf8_lossy(&sb.stderr)
    );
}

/// Debian's grub-mkimage (an amd64 binary that writes any target) makes the arm64-efi
/// image from the same arm64-efi directory: ours must be the same bytes, and its
/// AArch64 relocations must really have been resolved (the branch and page-address
/// instructions of kernel.img differ from their unrelocated form).
#[test]
fn arm64_efi_image_is_grub_mkimage_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let theirs = mkimage_from(&common::grub_dir(), "arm64-efi", tmp.path());
    let d = arm64_dir();
    assert_eq!(d.efi_target(), grub::EfiTarget::Arm64);
    assert!(!d.has_bios(), "arm64 has no BIOS image");
    let ours = grub::efi_image(&d).unwrap();
    assert!(grub::efi_image(&d).unwrap() == ours, "reproducible");
    assert_eq!(ours.len(), theirs.len(), "size");
    // Section by section, then the whole file.
    let pe = goblin::pe::PE::parse(&ours).expect("goblin parses it");
    let their_pe = goblin::pe::PE::parse(&theirs).expect("goblin parses grub-mkimage's");
    assert!(pe.is_64);
    assert_eq!(
        pe.header.coff_header.machine, 0xaa64,
        "IMAGE_FILE_MACHINE_ARM64"
    );
    let names: Vec<_> = pe
        .sections
        .iter()
        .map(|s| s.name().unwrap().to_string())
        .collect();
    assert_eq!(names, [".text", ".data", "mods", ".reloc"]);
    for (a, b) in pe.sections.iter().zip(&their_pe.sections) {
        let name = a.name().unwrap();
        assert_eq!(
            (a.virtual_address, a.virtual_size, a.size_of_raw_data),
            (b.virtual_address, b.virtual_size, b.size_of_raw_data),
            "section {name} placement"
        );
        let range = |s: &goblin::pe::section_table::SectionTable| {
            s.pointer_to_raw_data as usize..(s.pointer_to_raw_data + s.size_of_raw_data) as usize
        };
        let (x, y) = (&ours[range(a)], &theirs[range(b)]);
        let diff = x.iter().zip(y).position(|(p, q)| p != q);
        assert_eq!(diff, None, "section {name}: first differing byte");
    }
    let diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(diff, None, "first differing byte (headers)");
    let opt = pe.header.optional_header.unwrap();
    assert_eq!(opt.windows_fields.subsystem, 10, "EFI application");
    assert_eq!(opt.standard_fields.address_of_entry_point, 0x1000);

    // The relocations were applied: .text differs from kernel.img's raw .text in
    // the instructions CALL26/ADRP relocations patch.
    let kernel = std::fs::read(common::grub_dir().join("arm64-efi/kernel.img")).unwrap();
    let elf = goblin::elf::Elf::parse(&kernel).unwrap();
    let text = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".text"))
        .unwrap();
    let raw = &kernel[text.sh_offset as usize..][..text.sh_size as usize];
    let linked = &ours[0x1000..0x1000 + raw.len()];
    let changed = raw
        .chunks(4)
        .zip(linked.chunks(4))
        .filter(|(a, b)| a != b)
        .count();
    assert!(changed > 1000, "{changed} instructions relocated");

    let path = tmp.path().join("BOOTAA64.efi");
    std::fs::write(&path, &ours).unwrap();
    let out = run_ok(
        python()
            .arg("-c")
            .arg(
                "import pefile,sys\n\
         p=pefile.PE(sys.argv[1])\n\
         n=sum(len(b.entries) for b in p.DIRECTORY_ENTRY_BASERELOC)\n\
         print(n, hex(p.FILE_HEADER.Machine))",
            )
            .arg(&path),
    );
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert!(
        fields[0].parse::<u64>().unwrap() > 800,
        "pefile walks the base relocations (one per R_AARCH64_ABS64): {out}"
    );
    assert_eq!(fields[1], "0xaa64");
    let sb = Command::new(require_tool("sbverify"))
        .arg("--list")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        sb.status.success(),
        "sbverify --list: {}",
        String::from_utf8_lossy(&sb.stderr)
    );
    eprintln!(
        "arm64-efi image: {} bytes, same as grub-mkimage",
        ours.len()
    );
}

/// GRUB's GOT path, judged by grub-mkimage: Debian's arm64 kernel.img with its first
/// ADRP + 64-bit load pairs (same symbol and addend) retyped as ADR_GOT_PAGE +
/// LD64_GOT_LO12_NC, what position-independent code has, gives the same bytes from
/// grub-mkimage and from us (the GOT page after the bss, its slots' fixups, the
/// patched ADRP and LDR instructions).
#[test]
fn arm64_got_relocations_match_grub_mkimage() {
    const R_AARCH64_ADR_PREL_PG_HI21: u64 = 275;
    const R_AARCH64_LDST64_ABS_LO12_NC: u64 = 286;
    const R_AARCH64_ADR_GOT_PAGE: u64 = 311;
    const R_AARCH64_LD64_GOT_LO12_NC: u64 = 312;
    let tmp = tempfile::tempdir().unwrap();
    let src = common::grub_dir().join("arm64-efi");
    let root = tmp.path().join("grub");
    let dir = root.join("arm64-efi");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "kernel.img" {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let mut kernel = std::fs::read(src.join("kernel.img")).unwrap();
    let (table, count) = {
        let elf = goblin::elf::Elf::parse(&kernel).unwrap();
        let s = elf
            .section_headers
            .iter()
            .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".rela.text"))
            .expect(".rela.text");
        assert_eq!(s.sh_entsize, 24);
        (s.sh_offset as usize, (s.sh_size / 24) as usize)
    };
    let u64_at = |k: &[u8], at: usize| u64::from_le_bytes(k[at..at + 8].try_into().unwrap());
    let entry = |k: &[u8], i: usize| {
        let at = table + 24 * i;
        (u64_at(k, at + 8), u64_at(k, at + 16))
    };
    let mut pairs = Vec::new();
    let mut used = std::collections::HashSet::new();
    for i in 0..count {
        let (info, addend) = entry(&kernel, i);
        if info & 0xffff_ffff != R_AARCH64_ADR_PREL_PG_HI21 || pairs.len() == 4 {
            continue;
        }
        let partner = (i + 1..count).find(|&j| {
            let (info2, addend2) = entry(&kernel, j);
            info2 & 0xffff_ffff == R_AARCH64_LDST64_ABS_LO12_NC
                && info2 >> 32 == info >> 32
                && addend2 == addend
                && !used.contains(&j)
        });
        if let Some(j) = partner {
            used.insert(j);
            pairs.push((i, j));
        }
    }
    assert_eq!(pairs.len(), 4, "ADRP + LDR pairs in kernel.img");
    for &(i, j) in &pairs {
        for (n, kind) in [(i, R_AARCH64_ADR_GOT_PAGE), (j, R_AARCH64_LD64_GOT_LO12_NC)] {
            let at = table + 24 * n + 8;
            let info = (u64_at(&kernel, at) & !0xffff_ffff) | kind;
            kernel[at..at + 8].copy_from_slice(&info.to_le_bytes());
        }
    }
    std::fs::write(dir.join("kernel.img"), &kernel).unwrap();

    let theirs = mkimage_from(&root, "arm64-efi", tmp.path());
    let ours = grub::efi_image(&GrubDir::open_arm64(&root).unwrap()).unwrap();
    let plain = grub::efi_image(&arm64_dir()).unwrap();
    assert_eq!(ours.len(), theirs.len(), "size");
    let diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(diff, None, "first differing byte");
    assert_eq!(
        ours.len(),
        plain.len() + 4096,
        "one GOT page more than without"
    );
}

#[test]
fn patch_for_disk_sets_mbr_code_and_core_fields() {
    let d = dir();
    let boot_img = grub::boot_image(&d).unwrap();
    let mut core = grub::bios_core_image(&d).unwrap();
    let before = core.clone();
    let lba = 206_848u64;
    let code = grub::patch_for_disk(&boot_img, &mut core, lba).unwrap();
    assert_eq!(code.len(), 446);
    // boot.S: kernel_sector at 0x5C, boot_drive 0x64 = 0xFF, boot_drive_check jump NOPped.
    assert_eq!(
        u64::from_le_bytes(code[0x5c..0x64].try_into().unwrap()),
        lba
    );
    assert_eq!(code[0x64], 0xff);
    assert_eq!(&code[0x66..0x68], &[0x90, 0x90]);
    for (i, (a, b)) in code.iter().zip(&boot_img[..446]).enumerate() {
        if !(0x5c..0x64).contains(&i) && !(0x66..0x68).contains(&i) {
            assert_eq!(a, b, "boot.img byte {i:#x} untouched");
        }
    }
    // diskboot.S: first blocklist entry start = LBA + 1; nothing else changes.
    assert_eq!(
        u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
        lba + 1
    );
    for (i, (a, b)) in core.iter().zip(&before).enumerate() {
        if !(0x1f4..0x1fc).contains(&i) {
            assert_eq!(a, b, "core.img byte {i:#x} untouched");
        }
    }
    // A core larger than the 1 MiB BIOS partition is refused.
    let mut big = before.clone();
    big.resize(1024 * 1024 + 1, 0);
    let err = grub::patch_for_disk(&boot_img, &mut big, lba)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not fit in the 1048576-byte BIOS boot partition"),
        "{err}"
    );
}

#[test]
fn grub_cfg_is_talos_text() {
    let cmdline = r#"talos.platform=metal console=ttyS0 x={a}&$b|c;<d>"e"\f"#;
    let want = concat!(
        "set default=\"A - Talos v1.9.2\"\n",
        "\n",
        "set timeout=3\n",
        "\n",
        "insmod all_video\n",
        "\n",
        "terminal_input console\n",
        "terminal_output console\n",
        "\n",
        "menuentry \"A - Talos v1.9.2\" {\n",
        "  set gfxmode=auto\n",
        "  set gfxpayload=text\n",
        "  linux /A/vmlinuz talos.platform=metal console=ttyS0 x=\\{a\\}\\&\\$b\\|c\\;\\<d\\>\\\"e\\\"\\\\f\n",
        "  initrd /A/initramfs.xz\n",
        "}\n",
        "menuentry \"Reset Talos installation and return to maintenance mode\" {\n",
        "  set gfxmode=auto\n",
        "  set gfxpayload=text\n",
        "  linux /A/vmlinuz talos.platform=metal console=ttyS0 x=\\{a\\}\\&\\$b\\|c\\;\\<d\\>\\\"e\\\"\\\\f talos.experimental.wipe=system:EPHEMERAL,STATE\n",
        "  initrd /A/initramfs.xz\n",
        "}\n",
    );
    let text = grub::config("v1.9.2", cmdline);
    // GRUB's own parser first: every character GRUB's lexer treats specially, quotes,
    // backslashes, a trailing backslash, a lone `'`, `[[` and `]]` as whole words (GRUB
    // reserves them), a word starting with `#` (a comment unless escaped).
    common::grub_script_check(&text, "grub.cfg");
    for odd in [
        r#"a"b "c d" e\"#,
        "a'b",
        "'",
        "[[ x ]]",
        "x ]] [[",
        r#"x="$(reboot)" y=`id` z=${a} {} [a] b[ # comment"#,
        "tab\there !~*? \\\" \t#x",
        r"\[[ \]] \' \# \\",
    ] {
        let cfg = grub::config("v1.9.2", odd);
        common::grub_script_check(&cfg, &format!("grub.cfg for {odd:?}"));
        // Nothing read as a comment, and the words come back as written.
        assert!(!cfg.contains(" #"), "{cfg}");
        let parsed = grub::check_config(&cfg).unwrap();
        assert_eq!(parsed.entries[0].cmdline, odd, "read back");
    }
    assert_eq!(text, want);
    let parsed = grub::check_config(&text).unwrap();
    assert_eq!(
        parsed.entries[0].cmdline, cmdline,
        "Talos reads the command line back"
    );
}

/// A copy of /usr/lib/grub (symlinks to the files) without one module.
fn grub_dir_without(tmp: &Path, platform: &str, module: &str) -> PathBuf {
    let root = tmp.join("grub");
    for p in ["i386-pc", "x86_64-efi"] {
        std::fs::create_dir_all(root.join(p)).unwrap();
        for e in std::fs::read_dir(Path::new(DEFAULT_DIR).join(p)).unwrap() {
            let e = e.unwrap();
            if p == platform && e.file_name() == *format!("{module}.mod").as_str() {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), root.join(p).join(e.file_name())).unwrap();
        }
    }
    root
}

#[test]
fn missing_grub_module_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = grub_dir_without(tmp.path(), "i386-pc", "fshelp");
    let err = GrubDir::open(&root).unwrap_err().to_string();
    let pc = root.join("i386-pc");
    assert_eq!(
        err,
        format!(
            "invalid input: GRUB module fshelp.mod (needed by the Talos module list) is missing from {}",
            pc.display()
        )
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = GrubDir::open(&empty).unwrap_err().to_string();
    assert!(err.contains("no i386-pc/ platform directory"), "{err}");
}

/// A Talos-style `grub` disk (GPT by sgdisk): 1 = ESP (FAT by mkfs.vfat, our EFI image
/// as `EFI/boot/BOOTX64.efi`), 2 = BIOS boot (our patched core image, attribute bit 2),
/// 3 = BOOT (Debian's mkfs.xfs with nrext64, a protofile holding our grub.cfg and the
/// demo kernel + initramfs), MBR boot code = our patched boot.img.
fn grub_disk(t: &Path) -> PathBuf {
    let demo = demo_dir().join("amd64");
    let d = dir();
    let mib = 1024 * 1024u64;
    let disk = t.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(400 * mib)
        .unwrap();
    run_ok(
        Command::new(require_tool("sgdisk"))
            .args([
                "-n",
                "1:2048:+40M",
                "-t",
                "1:ef00",
                "-c",
                "1:EFI",
                "-n",
                "2:0:+1M",
                "-t",
                "2:ef02",
                "-c",
                "2:BIOS",
                "-A",
                "2:set:2",
                "-n",
                "3:0:+320M",
                "-t",
                "3:8300",
                "-c",
                "3:BOOT",
            ])
            .arg(&disk),
    );
    let start = |n: &str| -> u64 {
        let out = run_ok(Command::new("sgdisk").args(["-i", n]).arg(&disk));
        let line = out
            .lines()
            .find(|l| l.starts_with("First sector:"))
            .unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let (esp_lba, bios_lba, boot_lba) = (start("1"), start("2"), start("3"));

    let esp = t.join("esp.fat");
    std::fs::File::create(&esp)
        .unwrap()
        .set_len(40 * mib)
        .unwrap();
    run_ok(
        Command::new(require_tool("mkfs.vfat"))
            .args(["-n", "EFI"])
            .arg(&esp),
    );
    let efi = t.join("BOOTX64.efi");
    std::fs::write(&efi, grub::efi_image(&d).unwrap()).unwrap();
    let mmd = require_tool("mmd");
    run_ok(
        Command::new(&mmd)
            .arg("-i")
            .arg(&esp)
            .args(["::/EFI", "::/EFI/boot"]),
    );
    run_ok(
        Command::new(require_tool("mcopy"))
            .arg("-i")
            .arg(&esp)
            .arg(&efi)
            .arg("::/EFI/boot/BOOTX64.efi"),
    );

    let cfg = t.join("grub.cfg");
    std::fs::write(
        &cfg,
        grub::config("v1.9.2", "console=ttyS0 talos.platform=metal"),
    )
    .unwrap();
    let proto = t.join("proto");
    std::fs::write(
        &proto,
        format!(
            "/dev/null\n0 0\nd--755 0 0\ngrub d--700 0 0\ngrub.cfg ---600 0 0 {}\n$\nA d--755 0 0\nvmlinuz ---644 0 0 {}\ninitramfs.xz ---644 0 0 {}\n$\n$\n",
            cfg.display(),
            demo.join("vmlinuz").display(),
            demo.join("initramfs.xz").display()
        ),
    )
    .unwrap();
    let xfs = t.join("boot.xfs");
    std::fs::File::create(&xfs)
        .unwrap()
        .set_len(320 * mib)
        .unwrap();
    run_ok(
        Command::new(require_tool("mkfs.xfs"))
            .args([
                "-q",
                "-L",
                "BOOT",
                "-n",
                "ftype=1",
                "-i",
                "sparse=1,nrext64=1",
                "-p",
            ])
            .arg(&proto)
            .arg(&xfs),
    );

    let boot_img = grub::boot_image(&d).unwrap();
    let mut core = grub::bios_core_image(&d).unwrap();
    let code = grub::patch_for_disk(&boot_img, &mut core, bios_lba).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all(&code).unwrap();
        f.seek(SeekFrom::Start(bios_lba * 512)).unwrap();
        f.write_all(&core).unwrap();
        for (lba, file) in [(esp_lba, &esp), (boot_lba, &xfs)] {
            f.seek(SeekFrom::Start(lba * 512)).unwrap();
            std::io::copy(&mut std::fs::File::open(file).unwrap(), &mut f).unwrap();
        }
    }
    // sgdisk still reads the same table: the boot code left the MBR partition entry alone.
    let verify = run_ok(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(verify.contains("No problems found"), "{verify}");
    disk
}

/// GRUB itself writes to the screen only; the kernel's command line line shows GRUB
/// loaded /A/vmlinuz from BOOT with grub.cfg's arguments, the marker that the
/// initramfs ran.
fn assert_booted_entry_a(log: &common::boot::BootLog) {
    assert!(
        log.contains("Command line: BOOT_IMAGE=/A/vmlinuz console=ttyS0 talos.platform=metal"),
        "GRUB loaded the kernel from BOOT with grub.cfg's command line: {}",
        log.path.display()
    );
    assert!(
        log.marker,
        "kernel + initramfs booted: {}",
        log.path.display()
    );
}

/// SeaBIOS → our boot code → our core.img → (hd0,gpt3)/grub/grub.cfg on XFS → kernel.
#[test]
fn bios_boot_through_our_core_image() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = grub_disk(tmp.path());
    assert_booted_entry_a(&boot(Media::Disk(disk), SecureBoot::Bios, false, 150));
}

/// OVMF → our BOOTX64.efi from the ESP → the same grub.cfg → kernel.
#[test]
fn uefi_boot_through_our_efi_image() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = grub_disk(tmp.path());
    assert_booted_entry_a(&boot(Media::Disk(disk), SecureBoot::Off, false, 150));
}
