//! What the GRUB image builder reads from a GRUB directory: `moddep.lst` and the module
//! closure, `kernel.img` as the i386-pc ELF32 executable and as the x86_64-efi and
//! arm64-efi ELF64 objects (linked and wrapped in PE), and grub.cfg read back with
//! Talos's rules.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imager::formats::grub::fuzz_readers(data);
});
