//! Assembling a UKI on systemd-stub and predicting its PCR 11 in the same pass.
//!
//! Sizes are known up front (files' lengths; `.pcrsig` has a fixed length for a key
//! size), so the whole layout is fixed first, then the file is written front to back:
//! kernel and initramfs are streamed from their files and hashed as they go, and the
//! `.pcrsig` placeholder is filled in last, once every measured byte is known.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};

use super::pe::MACHINE_X86_64;
use super::sections::{self, PROFILES_SINCE};
use super::stub::Stub;
use super::{Pcr11, UkiReport, UkiSpec, kernel};
use crate::error::{Error, IoContext, Result};
use crate::io::Output;
use crate::keys::Signer;
use crate::measure::{self, BANKS, BankPcr, Digests, Measured, policy};
use crate::sign::authenticode::ImageScan;

/// Where an appended section's bytes come from.
enum Content<'a> {
    Bytes(Vec<u8>),
    File(&'a Path, u64),
    /// The signed policy of measurement target `usize`, written last.
    PcrSig(usize),
}

/// One appended section. `block` 0 is the base; `i + 1` is profile `i`.
struct Planned<'a> {
    name: &'static str,
    content: Content<'a>,
    block: usize,
}

impl Planned<'_> {
    fn len(&self, pcrsig_len: u64) -> u64 {
        match &self.content {
            Content::Bytes(b) => b.len() as u64,
            Content::File(_, len) => *len,
            Content::PcrSig(_) => pcrsig_len,
        }
    }
}

/// Length of an input file, failing with its name when it is missing.
fn file_len(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).at(path)?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file"));
    }
    Ok(meta.len())
}

/// Refuses a kernel that is not an EFI-stub image (it would not boot from the stub).
fn check_efi_kernel(path: &Path) -> Result<()> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).at(path)?;
    if f.read(&mut magic).at(path)? < 2 || &magic != b"MZ" {
        return Err(Error::format(
            path,
            "not an EFI-stub kernel image (no MZ header)",
        ));
    }
    Ok(())
}

/// The sections of the build, in file order (spec 1.3).
fn plan<'a>(spec: &'a UkiSpec<'a>, stub: &Stub) -> Result<Vec<Planned<'a>>> {
    let x86 = stub.headers.machine() == MACHINE_X86_64;
    check_efi_kernel(spec.kernel)?;
    // On x86 the release comes from the bzImage header and a kernel without one is
    // refused; other architectures have no such header and go without `.uname`.
    let uname = if x86 {
        Some(kernel::uname(spec.kernel)?)
    } else {
        kernel::uname(spec.kernel).ok()
    };
    let mut out = Vec::new();
    let mut add = |name, content, block| {
        out.push(Planned {
            name,
            content,
            block,
        })
    };
    add(
        ".osrel",
        Content::Bytes(spec.os_release.clone().into_bytes()),
        0,
    );
    add(
        ".cmdline",
        Content::Bytes(spec.cmdline.as_bytes().to_vec()),
        0,
    );
    if let Some(u) = uname {
        add(".uname", Content::Bytes(u.into_bytes()), 0);
    }
    if let Some(p) = spec.splash {
        add(".splash", Content::File(p, file_len(p)?), 0);
    }
    if let Some(p) = spec.dtb {
        add(".dtb", Content::File(p, file_len(p)?), 0);
    }
    if let Some(key) = spec.pcr_key {
        let pem = policy::public_key_pem(&key.key.to_public_key());
        add(".pcrpkey", Content::Bytes(pem.into_bytes()), 0);
    }
    add(
        ".linux",
        Content::File(spec.kernel, file_len(spec.kernel)?),
        0,
    );
    add(
        ".initrd",
        Content::File(spec.initrd, file_len(spec.initrd)?),
        0,
    );
    for (i, p) in spec.profiles.iter().enumerate() {
        if p.id.is_empty() || p.id.contains(['\n', '\0']) {
            return Err(Error::invalid(format!(
                "UKI profile ID {:?} must be a non-empty single line",
                p.id
            )));
        }
        let mut text = format!("ID={}", p.id);
        if let Some(t) = &p.title {
            text.push_str(&format!("\nTITLE={t}"));
        }
        add(".profile", Content::Bytes(text.into_bytes()), i + 1);
        if let Some(c) = &p.cmdline {
            add(".cmdline", Content::Bytes(c.as_bytes().to_vec()), i + 1);
        }
        if spec.pcr_key.is_some() {
            add(".pcrsig", Content::PcrSig(i), i + 1);
        }
    }
    if spec.pcr_key.is_some() && spec.profiles.is_empty() {
        add(".pcrsig", Content::PcrSig(0), 0);
    }
    // An absent section is not measured; an empty one would be. Emit only content.
    out.retain(|p| p.len(1) > 0);
    Ok(out)
}

/// Builds the unsigned UKI described by `spec` into `out` (from its start).
pub fn build(spec: &UkiSpec, out: &mut impl Output) -> Result<UkiReport> {
    build_with(spec, out, None)
}

/// Builds the UKI described by `spec` into `out` and Authenticode-signs it with
/// `signer`: the signing hash and PE checksum are computed on another thread while
/// the file is written, so signing costs no second read.
pub fn build_signed(spec: &UkiSpec, out: &mut impl Output, signer: &Signer) -> Result<UkiReport> {
    build_with(spec, out, Some(signer))
}

/// The length of the UKI that [`build`] (no `signer`) or [`build_signed`] writes for
/// `spec`, known before any of it is written.
pub fn planned_size(spec: &UkiSpec, signer: Option<&Signer>) -> Result<u64> {
    let stub = Stub::load(spec.stub)?;
    let (_, _, layout) = lay_out(spec, &stub)?;
    let signature = match signer {
        Some(s) => crate::sign::authenticode::signature_len(s)?,
        None => 0,
    };
    Ok(image_size(&layout) + signature)
}

/// The sections of the build, the length of each `.pcrsig`, and the PE layout.
fn lay_out<'a>(
    spec: &'a UkiSpec<'a>,
    stub: &Stub,
) -> Result<(Vec<Planned<'a>>, u64, super::pe::Layout)> {
    let planned = plan(spec, stub)?;
    let pcrsig_len = spec
        .pcr_key
        .map_or(0, |k| policy::pcrsig_len(&k.key, &BANKS)) as u64;
    let appended: Vec<(&str, u64)> = planned
        .iter()
        .map(|p| (p.name, p.len(pcrsig_len)))
        .collect();
    let layout = stub.headers.layout(&appended, spec.timestamp, spec.stub)?;
    Ok((planned, pcrsig_len, layout))
}

/// The end of the last section: the unsigned image's length.
fn image_size(layout: &super::pe::Layout) -> u64 {
    layout
        .sections
        .iter()
        .map(|s| u64::from(s.pointer_to_raw_data) + u64::from(s.size_of_raw_data))
        .max()
        .unwrap_or(layout.headers.len() as u64)
}

fn build_with(spec: &UkiSpec, out: &mut impl Output, signer: Option<&Signer>) -> Result<UkiReport> {
    let stub = Stub::load(spec.stub)?;
    let version = stub.info.major;
    if !spec.profiles.is_empty() && version < PROFILES_SINCE {
        return Err(Error::format(
            spec.stub,
            format!(
                "systemd-stub {} does not support UKI profiles (needs {PROFILES_SINCE})",
                stub.info.version
            ),
        ));
    }
    let (planned, pcrsig_len, layout) = lay_out(spec, &stub)?;
    let out_path = Path::new("<UKI output>");

    // Write headers and stub sections, then the appended sections, hashing measured
    // content as it streams by. With a signer, every byte written before the first
    // `.pcrsig` also goes to the Authenticode scan; the rest (a few KiB, known only
    // once PCR 11 is) is read back at the end.
    out.set_len(0).at(out_path)?;
    out.seek(SeekFrom::Start(0)).at(out_path)?;
    let mut w = BufWriter::with_capacity(crate::io::BUFFER_SIZE, &mut *out);
    w.write_all(&layout.headers).at(out_path)?;
    for s in &stub.headers.sections {
        w.write_all(stub.raw(s)).at(out_path)?;
    }
    w.flush().at(out_path)?;
    drop(w);
    let written = out.stream_position().at(out_path)?;
    let appended_sections = &layout.sections[layout.stub_sections..];
    let size = image_size(&layout);
    let scan_stop = planned
        .iter()
        .zip(appended_sections)
        .find(|(p, _)| matches!(p.content, Content::PcrSig(_)))
        .map_or(size, |(_, h)| u64::from(h.pointer_to_raw_data));
    let mut scan = match signer {
        Some(_) => ImageScan::start(out, out_path, size)?,
        None => None,
    };
    out.seek(SeekFrom::Start(written)).at(out_path)?;
    if let Some(scan) = &mut scan {
        scan.update(&layout.headers);
        for s in &stub.headers.sections {
            scan.update(stub.raw(s));
        }
        debug_assert_eq!(scan.position(), written);
    }
    let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(8);
    let (digests, scan) = std::thread::scope(|scope| -> Result<_> {
        let scanner = scan.map(|mut scan| {
            scope.spawn(move || {
                for chunk in rx {
                    scan.update(&chunk);
                }
                scan
            })
        });
        let tee = ScanTee {
            file: &mut *out,
            tx: scanner.is_some().then_some(tx),
            at: written,
            stop: scan_stop,
        };
        let mut w = BufWriter::with_capacity(crate::io::BUFFER_SIZE, tee);
        let digests = write_sections(&mut w, &planned, appended_sections, pcrsig_len, out_path);
        let flushed = w.flush().at(out_path);
        drop(w);
        let scan = scanner.map(|t| t.join().expect("the signing scan does not panic"));
        let digests = digests?;
        flushed?;
        Ok((digests, scan))
    })?;

    // PCR 11 per measurement target: the base alone, or base + each profile.
    let sbat = stub.sbat().map(|b| Digests::of(&b));
    let targets: Vec<usize> = if spec.profiles.is_empty() {
        vec![0]
    } else {
        (1..=spec.profiles.len()).collect()
    };
    let mut pcr11 = Vec::new();
    for (t, &block) in targets.iter().enumerate() {
        let mut set: BTreeMap<&str, &Digests> = BTreeMap::new();
        if let Some(d) = &sbat {
            set.insert(".sbat", d);
        }
        for b in [0, block] {
            let mut seen_in_block = Vec::new();
            for (p, d) in planned.iter().zip(&digests) {
                if p.block == b
                    && let Some(d) = d
                    && !seen_in_block.contains(&p.name)
                {
                    seen_in_block.push(p.name);
                    set.insert(p.name, d);
                }
            }
        }
        let measured: Vec<Measured> = sections::measured_in(version)
            .filter_map(|name| set.get(name).map(|content| Measured { name, content }))
            .collect();
        let banks = measure::predict(&measured);
        let profile = spec
            .profiles
            .get(t)
            .filter(|_| block > 0)
            .map(|p| p.id.clone());
        let mut pols = vec![None; banks.len()];
        if let Some(key) = spec.pcr_key {
            let values: Vec<_> = banks.iter().map(|b| (b.bank, b.signed())).collect();
            let policies = policy::sign_all(&key.key, &values)?;
            let pkfp = policy::fingerprint(&key.key.to_public_key());
            let json = policy::pcrsig_json(&pkfp, &policies);
            if json.len() as u64 != pcrsig_len {
                // Cannot happen (every field has a fixed width); refuse rather than emit broken JSON.
                return Err(Error::invalid(format!(
                    ".pcrsig is {} bytes, {pcrsig_len} were reserved",
                    json.len()
                )));
            }
            let idx = planned
                .iter()
                .position(|p| matches!(p.content, Content::PcrSig(i) if i == t))
                .expect("every target has a .pcrsig");
            let at = layout.sections[layout.stub_sections + idx].pointer_to_raw_data as u64;
            out.seek(SeekFrom::Start(at)).at(out_path)?;
            out.write_all(json.as_bytes()).at(out_path)?;
            pols = policies.iter().map(|p| Some(hex::encode(p.pol))).collect();
        }
        pcr11.extend(
            banks
                .iter()
                .zip(pols)
                .map(|(b, pol)| report_entry(&profile, b, pol)),
        );
    }
    out.flush().at(out_path)?;
    let size = if let (Some(mut scan), Some(signer)) = (scan, signer) {
        let mut tail = vec![0u8; (size - scan_stop) as usize];
        out.seek(SeekFrom::Start(scan_stop)).at(out_path)?;
        out.read_exact(&mut tail).at(out_path)?;
        scan.update(&tail);
        scan.sign(out, out_path, signer)?
    } else if let Some(signer) = signer {
        // A stub whose layout one pass cannot hash: sign the written file.
        out.flush().at(out_path)?;
        crate::sign::authenticode::sign_file(out, out_path, size, signer)?
    } else {
        size
    };

    Ok(UkiReport {
        stub_version: stub.info.version.clone(),
        sections: layout
            .sections
            .iter()
            .map(|s| (s.name.clone(), s.virtual_size as u64))
            .collect(),
        pcr11,
        size,
    })
}

fn report_entry(profile: &Option<String>, b: &BankPcr, pol: Option<String>) -> Pcr11 {
    Pcr11 {
        profile: profile.clone(),
        bank: b.bank.name(),
        after_stub: hex::encode(&b.after_stub),
        enter_machined: hex::encode(b.signed()),
        pol,
    }
}

/// Writes the appended sections (zero-padded to their raw size) and returns the
/// digests of each measured one.
fn write_sections(
    w: &mut impl Write,
    planned: &[Planned],
    headers: &[super::pe::SectionHeader],
    pcrsig_len: u64,
    out_path: &Path,
) -> Result<Vec<Option<Digests>>> {
    let mut digests = Vec::with_capacity(planned.len());
    for (p, header) in planned.iter().zip(headers) {
        let len = p.len(pcrsig_len);
        let digest = match &p.content {
            Content::Bytes(b) => {
                w.write_all(b).at(out_path)?;
                Some(Digests::of(b))
            }
            Content::File(path, len) => {
                let mut f = File::open(path).at(path)?;
                Some(measure::copy_hashed(&mut f, w, *len, path, out_path)?)
            }
            Content::PcrSig(_) => {
                write_zeros(w, len, out_path)?;
                None
            }
        };
        write_zeros(w, header.size_of_raw_data as u64 - len, out_path)?;
        digests.push(digest);
    }
    Ok(digests)
}

/// The UKI file, with every byte written before `stop` also sent to the signing scan.
struct ScanTee<'a, W> {
    file: &'a mut W,
    tx: Option<SyncSender<Arc<Vec<u8>>>>,
    at: u64,
    stop: u64,
}

impl<W: Write> Write for ScanTee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        let wanted = self.stop.saturating_sub(self.at).min(n as u64) as usize;
        if wanted > 0
            && let Some(tx) = &self.tx
            && tx.send(Arc::new(buf[..wanted].to_vec())).is_err()
        {
            return Err(std::io::Error::other("the signing scan stopped"));
        }
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn write_zeros(w: &mut impl Write, mut n: u64, path: &Path) -> Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k]).at(path)?;
        n -= k as u64;
    }
    Ok(())
}
