//! FAT images judged by dosfstools and mtools.

use std::path::Path;
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
