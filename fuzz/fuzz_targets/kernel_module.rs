//! Kernel modules from untrusted extensions: the `.ko` ELF reader behind depmod, and the
//! kmod index trie fed with what it returns.
#![no_main]
use imager::extensions::depmod::{elf, index::Index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = elf::read(data) else { return };
    let mut ix = Index::new();
    for (i, a) in info.aliases.iter().chain(&info.exports).enumerate() {
        let _ = ix.insert(a, b"m", i as u32);
    }
    for n in info.needs.iter().flatten() {
        let _ = ix.insert(b"symbol:", n, 0);
    }
    let mut out = Vec::new();
    ix.write(&mut out).unwrap();
});
