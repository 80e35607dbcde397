//! The systemd-stub a UKI is built on: loading and checking it, and its version.
//!
//! The version decides which sections the stub measures, so it is read from the
//! stub itself (`.sdmagic`: `#### LoaderInfo: systemd-stub 257.13 ####`).

use std::path::{Path, PathBuf};

use super::sections::{self, MIN_STUB_VERSION};
use crate::error::{Error, IoContext, Result};
use crate::pe::{PeHeaders, SUBSYSTEM_EFI_APPLICATION, SectionHeader};

/// A stub is a few hundred KiB; anything far larger is not one (and is not read).
const MAX_STUB_SIZE: u64 = 16 * 1024 * 1024;

/// The systemd version a stub or boot loader was built from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoaderInfo {
    /// `systemd-stub` or `systemd-boot`.
    pub program: String,
    /// Full version text, e.g. `257.13-1~deb13u1`.
    pub version: String,
    /// Major version, e.g. 257.
    pub major: u32,
}

impl LoaderInfo {
    /// Parses the content of a `.sdmagic` section.
    pub fn parse(sdmagic: &[u8]) -> Option<Self> {
        let end = sdmagic
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(sdmagic.len());
        let text = std::str::from_utf8(&sdmagic[..end]).ok()?;
        let inner = text
            .trim()
            .strip_prefix("#### LoaderInfo:")?
            .strip_suffix("####")?
            .trim();
        let (program, version) = inner.split_once(' ')?;
        let major = version
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        Some(LoaderInfo {
            program: program.into(),
            version: version.into(),
            major,
        })
    }
}

/// A checked systemd-stub, held in memory (it is small).
#[derive(Debug, Clone)]
pub struct Stub {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub headers: PeHeaders,
    pub info: LoaderInfo,
}

impl Stub {
    /// Reads the stub at `path` and refuses anything a UKI cannot be built on.
    pub fn load(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path).at(path)?.len();
        if len > MAX_STUB_SIZE {
            return Err(Error::format(
                path,
                format!("{len} bytes is too large for a systemd-stub"),
            ));
        }
        let bytes = std::fs::read(path).at(path)?;
        let headers = PeHeaders::parse(&bytes).map_err(|e| e.not_a(path, "PE/EFI image"))?;
        headers.require_pe32_plus(path)?;
        let bad = |msg: String| Error::format(path, msg);
        if headers.subsystem() != SUBSYSTEM_EFI_APPLICATION {
            return Err(bad(format!(
                "not an EFI application (PE subsystem {}, expected {SUBSYSTEM_EFI_APPLICATION})",
                headers.subsystem()
            )));
        }
        // A COFF symbol table is debug data outside every section; the UKI layout
        // drops it (like `strip`). Only section names kept in its string table
        // (`/123`) would be lost, so those stubs are refused.
        if let Some(s) = headers.sections.iter().find(|s| s.name.starts_with('/')) {
            return Err(bad(format!(
                "section name {} lives in the COFF string table; only 8-byte section names are supported",
                s.name
            )));
        }
        for s in &headers.sections {
            let end = s.pointer_to_raw_data as u64 + s.size_of_raw_data as u64;
            if end > len {
                return Err(bad(format!(
                    "section {} runs past the end of the file (truncated?)",
                    s.name
                )));
            }
        }
        let sdmagic = headers
            .section(".sdmagic")
            .ok_or_else(|| bad("no .sdmagic section: not a systemd-stub".into()))?;
        let info = LoaderInfo::parse(section_data(&bytes, sdmagic)).ok_or_else(|| {
            bad(
                "unreadable .sdmagic (expected `#### LoaderInfo: systemd-stub VERSION ####`)"
                    .into(),
            )
        })?;
        if info.program != "systemd-stub" {
            return Err(bad(format!(
                "is {} {}, not systemd-stub",
                info.program, info.version
            )));
        }
        if info.major < MIN_STUB_VERSION {
            return Err(bad(format!(
                "systemd-stub {} is too old (need {MIN_STUB_VERSION} or later)",
                info.version
            )));
        }
        if let Some(s) = headers
            .sections
            .iter()
            .find(|s| s.name != ".sbat" && sections::kind(&s.name).is_some())
        {
            return Err(bad(format!(
                "already has a {} section: a UKI, not a bare stub",
                s.name
            )));
        }
        Ok(Stub {
            path: path.into(),
            bytes,
            headers,
            info,
        })
    }

    /// The raw bytes of stub section `s` (SizeOfRawData long).
    pub fn raw(&self, s: &SectionHeader) -> &[u8] {
        let at = s.pointer_to_raw_data as usize;
        &self.bytes[at..at + s.size_of_raw_data as usize]
    }

    /// What the stub's `.sbat` contributes to PCR 11 (VirtualSize bytes), if it has one.
    pub fn sbat(&self) -> Option<Vec<u8>> {
        self.headers.section(".sbat").map(|s| {
            let mut v = section_data(&self.bytes, s).to_vec();
            v.resize(s.virtual_size as usize, 0);
            v
        })
    }
}

/// The bytes of `s` present in the file (at most VirtualSize, without padding).
fn section_data<'a>(bytes: &'a [u8], s: &SectionHeader) -> &'a [u8] {
    let at = s.pointer_to_raw_data as usize;
    &bytes[at..at + s.data_in_file() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_info_from_sdmagic() {
        let i =
            LoaderInfo::parse(b"#### LoaderInfo: systemd-stub 257.13-1~deb13u1 ####\0\0").unwrap();
        assert_eq!(
            (i.program.as_str(), i.version.as_str(), i.major),
            ("systemd-stub", "257.13-1~deb13u1", 257)
        );
        let i = LoaderInfo::parse(b"#### LoaderInfo: systemd-boot 252 ####").unwrap();
        assert_eq!((i.program.as_str(), i.major), ("systemd-boot", 252));
        assert!(LoaderInfo::parse(b"hello").is_none());
    }
}
