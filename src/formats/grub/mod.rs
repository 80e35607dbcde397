//! GRUB boot images made without `grub-install` or `grub-mkimage`: the BIOS core image
//! and boot sector, the x86_64 and arm64 EFI images and the `grub.cfg` Talos writes on
//! a `grub` or `dual-boot` disk.
//!
//! The input is a GRUB directory as distributions install it (`/usr/lib/grub` with
//! `i386-pc/` and `x86_64-efi/` for amd64, `arm64-efi/` for arm64: `kernel.img`,
//! `*.mod`, `moddep.lst`, and for the PC `diskboot.img`, `lzma_decompress.img`,
//! `boot.img`). The images are what
//! `grub-mkimage -O i386-pc|x86_64-efi|arm64-efi -p '(hd0,gpt3)/grub' <modules>` writes; we
//! build them ourselves so the product runs no GRUB tool. The layout follows GRUB's
//! `util/mkimage.c` (image assembly), `util/grub-mkimagexx.c` (ELF loading, relocation,
//! PE fixups), `util/resolve.c` (module order), `include/grub/kernel.h` (module
//! headers), `include/grub/offsets.h` and `grub-core/boot/i386/pc/{boot,diskboot,
//! startup_raw}.S` (header fields and patch offsets).
//!
//! - [`GrubDir`] opens the directory and resolves the module closure.
//! - [`bios_core_image`], [`boot_image`], [`patch_for_disk`]: the BIOS path
//!   (`pc.rs`).
//! - [`efi_image`]: `BOOTX64.efi` or `BOOTAA64.efi` (`efi.rs`).
//! - [`config`]: `grub.cfg` (`config.rs`).

mod config;
mod efi;
mod elf;
mod pc;

pub use config::{ParsedConfig, ParsedEntry, check_config, config};
pub use efi::efi_image;
pub use pc::{bios_core_image, boot_image, patch_for_disk};

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Where Debian (and the Talos imager image) install GRUB's platform directories.
pub const DEFAULT_DIR: &str = "/usr/lib/grub";

/// The prefix baked into both images: GRUB's root is partition 3 (BOOT) of the boot
/// disk, where `grub/grub.cfg` lives.
pub const PREFIX: &str = "(hd0,gpt3)/grub";

/// The modules Talos embeds in both images (bootloader/grub/install.go), in its order.
pub const TALOS_MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "fat",
    "xfs",
    "normal",
    "configfile",
    "linux",
    "boot",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "ls",
    "cat",
    "echo",
    "test",
    "help",
    "reboot",
    "halt",
    "all_video",
];

/// What the BIOS image adds after [`TALOS_MODULES`].
pub const BIOS_EXTRA_MODULES: &[&str] = &["biosdisk", "part_msdos"];

/// The PC/BIOS platform directory name.
pub const PC: &str = "i386-pc";
/// The x86_64 UEFI platform directory name.
pub const EFI: &str = "x86_64-efi";
/// The arm64 UEFI platform directory name.
pub const EFI_ARM64: &str = "arm64-efi";

/// The CPU an EFI image is for: its platform directory, ELF and PE machine, and the
/// removable-media file name UEFI firmware looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EfiTarget {
    X86_64,
    Arm64,
}

impl EfiTarget {
    /// The platform directory under the GRUB directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            EfiTarget::X86_64 => EFI,
            EfiTarget::Arm64 => EFI_ARM64,
        }
    }

    /// The ESP path Talos gives the image (`efiutils.Name`, lower-case `boot`).
    pub fn esp_path(self) -> &'static str {
        match self {
            EfiTarget::X86_64 => "EFI/boot/BOOTX64.efi",
            EfiTarget::Arm64 => "EFI/boot/BOOTAA64.efi",
        }
    }

    /// ELF `e_machine` of `kernel.img` (EM_X86_64, EM_AARCH64).
    pub(crate) fn elf_machine(self) -> u16 {
        match self {
            EfiTarget::X86_64 => 62,
            EfiTarget::Arm64 => 183,
        }
    }

    /// PE/COFF machine (IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_MACHINE_ARM64).
    pub(crate) fn pe_machine(self) -> u16 {
        match self {
            EfiTarget::X86_64 => 0x8664,
            EfiTarget::Arm64 => 0xaa64,
        }
    }
}

/// A GRUB directory with the platforms of one architecture (amd64: i386-pc and
/// x86_64-efi; arm64: arm64-efi), and each platform's resolved module list.
#[derive(Debug, Clone)]
pub struct GrubDir {
    root: PathBuf,
    pc: Option<Platform>,
    efi: Platform,
    target: EfiTarget,
}

/// One platform directory (`i386-pc`, `x86_64-efi`) and the modules to embed, in
/// the order `grub-mkimage` embeds them.
#[derive(Debug, Clone)]
pub(crate) struct Platform {
    pub(crate) dir: PathBuf,
    pub(crate) modules: Vec<String>,
}

impl GrubDir {
    /// Opens `root` (normally [`DEFAULT_DIR`]): both platform directories must exist
    /// with their `kernel.img` (and for i386-pc `diskboot.img`, `lzma_decompress.img`,
    /// `boot.img`), their `moddep.lst` must parse, and every module of the Talos list
    /// and its dependencies must be there.
    pub fn open(root: &Path) -> Result<GrubDir> {
        let mut pc_list: Vec<&str> = TALOS_MODULES.to_vec();
        pc_list.extend_from_slice(BIOS_EXTRA_MODULES);
        let pc = Platform::open(root, PC, &pc_list)?;
        let efi = Platform::open(root, EFI, TALOS_MODULES)?;
        Ok(GrubDir {
            root: root.to_path_buf(),
            pc: Some(pc),
            efi,
            target: EfiTarget::X86_64,
        })
    }

    /// Opens `root` for arm64: only `arm64-efi/` is needed (arm64 has no BIOS), with
    /// its `kernel.img`, `moddep.lst` and the Talos module list's closure.
    pub fn open_arm64(root: &Path) -> Result<GrubDir> {
        let efi = Platform::open(root, EFI_ARM64, TALOS_MODULES)?;
        Ok(GrubDir {
            root: root.to_path_buf(),
            pc: None,
            efi,
            target: EfiTarget::Arm64,
        })
    }

    /// Opens `root` for `arch` (`amd64` or `arm64`).
    pub fn open_for(root: &Path, arm64: bool) -> Result<GrubDir> {
        if arm64 {
            Self::open_arm64(root)
        } else {
            Self::open(root)
        }
    }

    /// The CPU of the EFI image.
    pub fn efi_target(&self) -> EfiTarget {
        self.target
    }

    /// Whether this directory has the BIOS platform (amd64 only).
    pub fn has_bios(&self) -> bool {
        self.pc.is_some()
    }

    /// The directory this was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The i386-pc modules embedded in the core image, in image order (none for arm64).
    pub fn bios_modules(&self) -> &[String] {
        self.pc.as_ref().map_or(&[], |p| &p.modules)
    }

    /// The EFI platform's modules embedded in the EFI image, in image order.
    pub fn efi_modules(&self) -> &[String] {
        &self.efi.modules
    }

    pub(crate) fn pc(&self) -> Result<&Platform> {
        self.pc.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "GRUB directory {}: opened for arm64, which has no BIOS (i386-pc) image",
                self.root.display()
            ))
        })
    }

    pub(crate) fn efi(&self) -> &Platform {
        &self.efi
    }
}

impl Platform {
    fn open(root: &Path, name: &str, wanted: &[&str]) -> Result<Platform> {
        let dir = root.join(name);
        if !dir.is_dir() {
            let hint = if name == EFI_ARM64 {
                "install grub-efi-arm64-bin (Debian's arm64 package), or name a directory holding arm64-efi/"
            } else {
                "install grub-pc-bin and grub-efi-amd64-bin, or name a directory holding both"
            };
            return Err(Error::invalid(format!(
                "GRUB directory {}: no {name}/ platform directory ({hint})",
                root.display()
            )));
        }
        let mut needed = vec!["kernel.img", "moddep.lst"];
        if name == PC {
            needed.extend(["diskboot.img", "lzma_decompress.img", "boot.img"]);
        }
        if let Some(f) = needed.iter().find(|f| !dir.join(f).is_file()) {
            return Err(Error::invalid(format!(
                "GRUB file {f} is missing from {}",
                dir.display()
            )));
        }
        let moddep = dir.join("moddep.lst");
        let text = std::fs::read(&moddep).reading(&moddep)?;
        let deps = parse_moddep(&text).map_err(|msg| Error::format(&moddep, msg))?;
        let modules = resolve(&deps, wanted).map_err(|msg| Error::format(&moddep, msg))?;
        for m in &modules {
            let file = dir.join(format!("{m}.mod"));
            if !file.is_file() {
                return Err(Error::invalid(format!(
                    "GRUB module {m}.mod (needed by the Talos module list) is missing from {}",
                    dir.display()
                )));
            }
        }
        Ok(Platform { dir, modules })
    }

    /// The file `name` of this platform, read whole (GRUB's files are small).
    pub(crate) fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        if !path.is_file() {
            return Err(Error::invalid(format!(
                "GRUB file {name} is missing from {}",
                self.dir.display()
            )));
        }
        std::fs::read(&path).reading(&path)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Module header types (include/grub/kernel.h).
const OBJ_TYPE_ELF: u32 = 0;
const OBJ_TYPE_PREFIX: u32 = 3;
/// "gmim", the module-info magic.
const MODULE_MAGIC: u32 = 0x676d_696d;

/// The module area mkimage appends to the kernel: the module-info header (magic,
/// offset of the first module, total size including this header; 32- or 64-bit
/// fields by `word`), each module file behind a (type, size) header and padded to
/// `word` bytes, then the NUL-terminated prefix, padded likewise.
pub(crate) fn module_area(p: &Platform, word: usize, prefix: &str) -> Result<Vec<u8>> {
    let align = |n: usize| n.div_ceil(word) * word;
    let info = if word == 8 { 24 } else { 12 };
    let mods = p
        .modules
        .iter()
        .map(|m| p.read(&format!("{m}.mod")))
        .collect::<Result<Vec<_>>>()?;
    let prefix_size = align(prefix.len() + 1);
    let total = info + mods.iter().map(|m| align(m.len()) + 8).sum::<usize>() + prefix_size + 8;
    let total32 = u32::try_from(total)
        .map_err(|_| Error::invalid(format!("GRUB modules in {} exceed 4 GiB", p.dir.display())))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MODULE_MAGIC.to_le_bytes());
    if word == 8 {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(info as u64).to_le_bytes());
        out.extend_from_slice(&(total as u64).to_le_bytes());
    } else {
        out.extend_from_slice(&(info as u32).to_le_bytes());
        out.extend_from_slice(&total32.to_le_bytes());
    }
    let object = |out: &mut Vec<u8>, kind: u32, bytes: &[u8], size: usize| {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&((size + 8) as u32).to_le_bytes());
        let start = out.len();
        out.extend_from_slice(bytes);
        out.resize(start + size, 0);
    };
    for m in &mods {
        object(&mut out, OBJ_TYPE_ELF, m, align(m.len()));
    }
    object(&mut out, OBJ_TYPE_PREFIX, prefix.as_bytes(), prefix_size);
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// One `moddep.lst` line: a module and the modules it needs, as listed.
pub type ModDep = (String, Vec<String>);

/// Parses `moddep.lst` (`name: dep dep ...` a line). Blank lines are skipped; any
/// other line without `:` is an error, as in GRUB's `util/resolve.c`.
pub fn parse_moddep(text: &[u8]) -> std::result::Result<Vec<ModDep>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, deps)) = line.split_once(':') else {
            return Err(format!("line {}: no ':' in {line:?}", n + 1));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("line {}: bad module name {name:?}", n + 1));
        }
        out.push((
            name.to_string(),
            deps.split_whitespace().map(str::to_string).collect(),
        ));
    }
    Ok(out)
}

/// The closure of `wanted` over `deps`, in `grub-mkimage`'s order: each module after
/// its dependencies, which are visited in reverse of their listed order (resolve.c
/// builds its lists by prepending); when a module has several lines, the last wins.
/// A dependency cycle is an error (GRUB itself would recurse forever).
pub fn resolve(deps: &[ModDep], wanted: &[&str]) -> std::result::Result<Vec<String>, String> {
    use std::collections::{HashMap, HashSet};
    struct Walk<'a> {
        deps: HashMap<&'a str, &'a [String]>,
        done: HashSet<String>,
        out: Vec<String>,
        path: Vec<String>,
    }
    fn visit(w: &mut Walk<'_>, name: &str) -> std::result::Result<(), String> {
        if w.done.contains(name) {
            return Ok(());
        }
        if name.is_empty()
            || name.contains(['/', '\\'])
            || name.starts_with('.')
            || name.contains(char::is_whitespace)
        {
            return Err(format!("bad module name {name:?}"));
        }
        if w.path.iter().any(|m| m == name) {
            return Err(format!(
                "dependency cycle {} -> {name}",
                w.path.join(" -> ")
            ));
        }
        if w.path.len() >= 256 {
            return Err("dependency chain deeper than 256 modules".into());
        }
        w.path.push(name.to_string());
        if let Some(list) = w.deps.get(name).copied() {
            for d in list.iter().rev() {
                visit(w, d)?;
            }
        }
        w.path.pop();
        w.done.insert(name.to_string());
        w.out.push(name.to_string());
        Ok(())
    }
    // Later lines override earlier ones, as GRUB's lookup finds the last.
    let mut w = Walk {
        deps: deps
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect(),
        done: HashSet::new(),
        out: Vec::new(),
        path: Vec::new(),
    };
    for name in wanted {
        visit(&mut w, name.strip_suffix(".mod").unwrap_or(name))?;
    }
    Ok(w.out)
}

/// Runs each reader of GRUB-directory content over `data` (moddep.lst and the module
/// closure, the `kernel.img` loaders of i386-pc, x86_64-efi and arm64-efi and the PE
/// assembly, the grub.cfg parse-back), discarding the results: the fuzz target's entry
/// point.
#[doc(hidden)]
pub fn fuzz_readers(data: &[u8]) {
    if let Ok(deps) = parse_moddep(data) {
        let _ = resolve(&deps, TALOS_MODULES);
    }
    let _ = pc::load_kernel(data);
    for target in [EfiTarget::X86_64, EfiTarget::Arm64] {
        if let Ok(k) = efi::load_kernel(data, target) {
            let _ = efi::pe_image(&k, &[], target);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = check_config(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_orders_like_mkimage() {
        let deps = parse_moddep(b"a: b c\nb: d\nc:\nd:\n").unwrap();
        // a's deps visited c then b; b's dep d first.
        assert_eq!(resolve(&deps, &["a"]).unwrap(), ["c", "d", "b", "a"]);
        assert_eq!(resolve(&deps, &["d", "a"]).unwrap(), ["d", "c", "b", "a"]);
    }

    #[test]
    fn moddep_errors() {
        assert!(parse_moddep(b"a b\n").unwrap_err().contains("line 1"));
        let deps = parse_moddep(b"a: b\nb: a\n").unwrap();
        assert!(resolve(&deps, &["a"]).unwrap_err().contains("cycle"));
        let deps = parse_moddep(b"a: ../x\n").unwrap();
        assert!(resolve(&deps, &["a"]).is_err());
    }
}
