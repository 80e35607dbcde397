//! The kernel release (`uname -r`) from an x86 bzImage header, for `.uname`.
//!
//! Linux boot protocol (Documentation/arch/x86/boot.rst): the setup header holds
//! `setup_sects` at 0x1F1, `syssize` (16-byte units) at 0x1F4, the magic `HdrS`
//! at 0x202 and a pointer to the version string at 0x20E (relative to 0x200).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

const SETUP_SECTS: usize = 0x1F1;
const SYSSIZE: usize = 0x1F4;
const MAGIC: usize = 0x202;
const KERNEL_VERSION: usize = 0x20E;

/// Reads the kernel release from the bzImage at `path` (only its setup code is read).
/// Fails naming the file if it is not a bzImage or is shorter than its header says.
pub fn uname(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let mut head = Vec::new();
    // setup_sects is one byte: the setup code is at most (255 + 1) * 512 bytes.
    file.take(256 * 512).read_to_end(&mut head).at(path)?;
    let bad = |msg: String| Error::format(path, msg);
    if head.len() < KERNEL_VERSION + 2 {
        return Err(bad(format!(
            "not a Linux bzImage: only {} bytes, too short for a boot header",
            head.len()
        )));
    }
    if &head[MAGIC..MAGIC + 4] != b"HdrS" {
        return Err(bad(
            "not an x86 Linux bzImage: boot header magic HdrS missing at 0x202".into(),
        ));
    }
    let setup_sects = match head[SETUP_SECTS] {
        0 => 4, // boot protocol: 0 means 4
        n => n as usize,
    };
    let syssize =
        u32::from_le_bytes(head[SYSSIZE..SYSSIZE + 4].try_into().expect("4 bytes")) as u64;
    let expected = (setup_sects as u64 + 1) * 512 + syssize * 16;
    if len < expected {
        return Err(bad(format!(
            "truncated kernel: its boot header says {expected} bytes, the file has {len}"
        )));
    }
    let ptr = u16::from_le_bytes([head[KERNEL_VERSION], head[KERNEL_VERSION + 1]]) as usize;
    if ptr == 0 || ptr >= setup_sects * 512 {
        return Err(bad(format!(
            "bzImage kernel_version pointer {ptr:#x} is outside the setup code"
        )));
    }
    let start = ptr + 0x200;
    let rest = head.get(start..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| bad("unterminated kernel version string".into()))?;
    let version = String::from_utf8_lossy(&rest[..end]);
    let release = version.split(' ').next().unwrap_or_default();
    if release.is_empty() {
        return Err(bad("empty kernel version string".into()));
    }
    Ok(release.to_string())
}
