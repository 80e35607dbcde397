//! FAT images judged by dosfstools and mtools.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{require_tool, run_ok};

/// `fsck.fat -n`: panics unless it finds the file system clean; returns what it printed.
pub fn fsck(image: &Path) -> String {
    let o = Command::new(require_tool("fsck.fat"))
        .arg("-n")
        .arg(image)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "fsck.fat -n {}: {text}",
        image.display()
    );
    text
}

/// Every path in the image, one a line (`mdir -/ -b`), e.g. `::/EFI/BOOT/BOOTX64.EFI`.
pub fn files(image: &Path) -> String {
    run_ok(
        Command::new(require_tool("mdir"))
            .arg("-i")
            .arg(image)
            .args(["-/", "-b", "::/"]),
    )
}

/// A text file of the image (`mtype`), e.g. `::/loader/loader.conf`.
pub fn read_text(image: &Path, path: &str) -> String {
    run_ok(
        Command::new(require_tool("mtype"))
            .arg("-i")
            .arg(image)
            .arg(path),
    )
}

/// Copies `path` out of the image to `to` (`mcopy`).
pub fn copy_out(image: &Path, path: &str, to: &Path) {
    run_ok(
        Command::new(require_tool("mcopy"))
            .arg("-i")
            .arg(image)
            .arg(path)
            .arg(to),
    );
}

/// The appended ESP, cut out of the ISO by its MBR entry (type 0xEF).
pub fn iso_esp(iso: &Path, dir: &Path) -> PathBuf {
    let bytes = std::fs::read(iso).unwrap();
    let esp = (0..4)
        .map(|i| &bytes[446 + 16 * i..462 + 16 * i])
        .find(|e| e[4] == 0xef)
        .expect("an MBR partition of type 0xEF");
    let start = u32::from_le_bytes(esp[8..12].try_into().unwrap()) as usize * 512;
    let count = u32::from_le_bytes(esp[12..16].try_into().unwrap()) as usize * 512;
    let out = dir.join("esp.img");
    std::fs::write(&out, &bytes[start..start + count]).unwrap();
    out
}
