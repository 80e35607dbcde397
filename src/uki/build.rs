//! Assembling a UKI on systemd-stub and predicting its PCR 11 in the same pass.
//!
//! [`plan`] fixes everything up front: sizes are known before writing (files'
//! lengths; `.pcrsig` has a fixed length for a key size, the Authenticode signature
//! one for a signer), so the stub is loaded and checked and the PE layout made once.
//! [`UkiPlan::write`] then writes the file front to back: kernel and initramfs are
//! streamed from their files and hashed as they go, PCR 11 is predicted per boot
//! target, the `.pcrsig` placeholders are filled in once every measured byte is
//! known, and the image is Authenticode-signed from a hash computed while writing.
//!
//! The sections, their order and what the stub measures follow the UAPI Group's
//! Unified Kernel Image specification and systemd's `src/boot/` sources.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};

use super::sections::{self, PROFILES_SINCE};
use super::stub::Stub;
use super::{Pcr11, UkiReport, UkiSpec, kernel};
use crate::error::{Error, IoContext, Result};
use crate::io::Output;
use crate::measure::{self, BANKS, BankPcr, Digests, Measured, policy};
use crate::pe::{PeHeaders, PeLayout};
use crate::plan::Arch;
use crate::sign::Signer;
use crate::sign::authenticode::{self, ImageScan};

/// What errors while writing the UKI say is being done (the output has no path here).
const WRITING: &str = "writing the UKI";

/// Where an appended section's bytes come from.
enum Content {
    Bytes(Vec<u8>),
    File(PathBuf, u64),
    /// The signed policy of measurement target `usize`, written last.
    PcrSig(usize),
}

/// One appended section. `block` 0 is the base; `i + 1` is profile `i`.
struct Planned {
    name: &'static str,
    content: Content,
    block: usize,
}

impl Planned {
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

/// Refuses a kernel that is not an EFI-stub image for `arch` (it would not boot from
/// the stub). An amd64 kernel is further checked as a bzImage (for `.uname`); an
/// arm64 one has nothing else to check, so its PE header is required here.
fn check_efi_kernel(path: &Path, arch: Arch) -> Result<()> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).at(path)?;
    if f.read(&mut magic).at(path)? < 2 || &magic != b"MZ" {
        return Err(Error::format(
            path,
            "not an EFI-stub kernel image (no MZ header)",
        ));
    }
    let len = f.metadata().at(path)?.len();
    match PeHeaders::read(&mut f, path, len, "EFI-stub kernel image") {
        Ok(headers) => arch.require_pe_machine(path, headers.machine()),
        Err(e) if arch == Arch::Arm64 => Err(e),
        Err(_) => Ok(()),
    }
}

/// The sections appended to the stub, in file order (the order `ukify` writes them;
/// the UKI specification lists what each holds).
fn appended_sections(spec: &UkiSpec) -> Result<Vec<Planned>> {
    check_efi_kernel(&spec.kernel, spec.arch)?;
    // On amd64 the release comes from the bzImage header and a kernel without one is
    // refused; Talos writes no `.uname` for arm64 (its kernels have no such header).
    let uname = match spec.arch {
        Arch::Amd64 => Some(kernel::uname(&spec.kernel)?),
        Arch::Arm64 => None,
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
    if let Some(p) = &spec.splash {
        add(".splash", Content::File(p.clone(), file_len(p)?), 0);
    }
    if let Some(p) = &spec.dtb {
        add(".dtb", Content::File(p.clone(), file_len(p)?), 0);
    }
    if let Some(key) = &spec.pcr_key {
        let pem = policy::public_key_pem(key.public_key());
        add(".pcrpkey", Content::Bytes(pem.into_bytes()), 0);
    }
    add(
        ".linux",
        Content::File(spec.kernel.clone(), file_len(&spec.kernel)?),
        0,
    );
    add(
        ".initrd",
        Content::File(spec.initrd.clone(), file_len(&spec.initrd)?),
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

/// A UKI laid out and ready to be written: the stub loaded and checked, every
/// section's source and size known, the PE headers made.
pub struct UkiPlan {
    spec: UkiSpec,
    signer: Option<Signer>,
    stub: Stub,
    /// The appended sections, in file order.
    sections: Vec<Planned>,
    /// Length of each `.pcrsig`.
    pcrsig_len: u64,
    layout: PeLayout,
    /// Bytes the Authenticode signature adds (0 unsigned).
    signature_len: u64,
}

/// Plans the UKI described by `spec`, Authenticode-signed with `signer` if given:
/// loads and checks the stub and the inputs and lays the image out.
pub fn plan(spec: UkiSpec, signer: Option<Signer>) -> Result<UkiPlan> {
    let stub = Stub::load(&spec.stub)?;
    spec.arch
        .require_pe_machine(&spec.stub, stub.headers.machine())?;
    if !spec.profiles.is_empty() && stub.info.major < PROFILES_SINCE {
        return Err(Error::format(
            &spec.stub,
            format!(
                "systemd-stub {} does not support UKI profiles (needs {PROFILES_SINCE})",
                stub.info.version
            ),
        ));
    }
    let sections = appended_sections(&spec)?;
    let pcrsig_len = spec
        .pcr_key
        .as_ref()
        .map_or(0, |k| policy::pcrsig_len(k.signer(), &BANKS)) as u64;
    let sizes: Vec<(&str, u64)> = sections
        .iter()
        .map(|p| (p.name, p.len(pcrsig_len)))
        .collect();
    let layout = stub.headers.lay_out(&sizes, spec.timestamp, &spec.stub)?;
    let signature_len = match &signer {
        Some(s) => authenticode::signature_len(s, u64::from(spec.timestamp))?,
        None => 0,
    };
    Ok(UkiPlan {
        spec,
        signer,
        stub,
        sections,
        pcrsig_len,
        layout,
        signature_len,
    })
}

/// PCR 11 of one boot target: the base alone, or the base and one profile.
struct Target {
    /// Profile ID, `None` without profiles.
    profile: Option<String>,
    banks: Vec<BankPcr>,
}

impl UkiPlan {
    /// Length of the file [`UkiPlan::write`] makes, signature included.
    pub fn size(&self) -> u64 {
        self.layout.image_len() + self.signature_len
    }

    /// Writes the UKI into `out` (from its start; it is truncated first): headers and
    /// sections, PCR 11 predicted per boot target, the signed policies, and the
    /// Authenticode signature when there is a signer.
    pub fn write(&self, out: &mut dyn Output) -> Result<UkiReport> {
        let (digests, scan) = self.write_image(out)?;
        let targets = self.predict_pcr11(&digests);
        let pols = self.sign_policies(out, &targets)?;
        out.flush().during(WRITING)?;
        let size = self.sign_image(out, scan)?;
        if size != self.size() {
            return Err(Error::invalid(format!(
                "the UKI came out {size} bytes long, {} were planned",
                self.size()
            )));
        }
        Ok(UkiReport {
            stub_version: self.stub.info.version.clone(),
            sections: self
                .layout
                .sections
                .iter()
                .map(|s| (s.name.clone(), s.virtual_size as u64))
                .collect(),
            pcr11: targets
                .iter()
                .zip(pols)
                .flat_map(|(t, pols)| {
                    t.banks
                        .iter()
                        .zip(pols)
                        .map(|(b, pol)| report_entry(&t.profile, b, pol))
                })
                .collect(),
            size,
        })
    }

    /// File offset where the Authenticode scan stops while writing: the first
    /// `.pcrsig`, whose content is known only at the end (or the image's end).
    fn scan_stop(&self) -> u64 {
        self.sections
            .iter()
            .zip(self.layout.appended())
            .find(|(p, _)| matches!(p.content, Content::PcrSig(_)))
            .map_or(self.layout.image_len(), |(_, h)| {
                u64::from(h.pointer_to_raw_data)
            })
    }

    /// Writes the headers, the stub's sections and the appended ones (`.pcrsig` as
    /// zeros), hashing measured content as it streams by. With a signer, every byte
    /// before [`Self::scan_stop`] also goes to the Authenticode scan, on another
    /// thread. Returns the digests of each appended section and the scan.
    fn write_image(
        &self,
        out: &mut dyn Output,
    ) -> Result<(Vec<Option<Digests>>, Option<ImageScan>)> {
        let size = self.layout.image_len();
        let mut scan =
            match self.signer {
                Some(_) => Some(ImageScan::start(&self.layout.headers, size)?.ok_or_else(
                    || Error::invalid("the UKI's layout cannot be hashed for signing in one pass"),
                )?),
                None => None,
            };
        out.set_len(0).during(WRITING)?;
        out.seek(SeekFrom::Start(0)).during(WRITING)?;
        let mut w = BufWriter::with_capacity(crate::io::BUFFER_SIZE, &mut *out);
        w.write_all(&self.layout.headers).during(WRITING)?;
        for s in &self.stub.headers.sections {
            w.write_all(self.stub.raw(s)).during(WRITING)?;
        }
        w.flush().during(WRITING)?;
        drop(w);
        let written = out.stream_position().during(WRITING)?;
        if let Some(scan) = &mut scan {
            scan.update(&self.layout.headers);
            for s in &self.stub.headers.sections {
                scan.update(self.stub.raw(s));
            }
            debug_assert_eq!(scan.position(), written);
        }
        let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(8);
        std::thread::scope(|scope| -> Result<_> {
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
                stop: self.scan_stop(),
                failure: None,
            };
            let mut w = BufWriter::with_capacity(crate::io::BUFFER_SIZE, tee);
            let digests = self.write_sections(&mut w);
            let flushed = w.flush().during(WRITING);
            let failure = w.get_mut().failure.take();
            drop(w);
            let scan = scanner.map(|t| t.join().expect("the signing scan does not panic"));
            if let Some(e) = failure {
                return Err(Error::io_during(WRITING, e));
            }
            let digests = digests?;
            flushed?;
            Ok((digests, scan))
        })
    }

    /// Writes the appended sections (zero-padded to their raw size) and returns the
    /// digests of each measured one.
    fn write_sections(&self, w: &mut impl Write) -> Result<Vec<Option<Digests>>> {
        let mut digests = Vec::with_capacity(self.sections.len());
        for (p, header) in self.sections.iter().zip(self.layout.appended()) {
            let len = p.len(self.pcrsig_len);
            let digest = match &p.content {
                Content::Bytes(b) => {
                    w.write_all(b).during(WRITING)?;
                    Some(Digests::of(b))
                }
                Content::File(path, len) => {
                    let mut f = File::open(path).at(path)?;
                    // A failed write is reported from the writer's own record of it
                    // (see `ScanTee`), so the output name given here is not shown.
                    Some(measure::copy_hashed(&mut f, w, *len, path, path)?)
                }
                Content::PcrSig(_) => {
                    write_zeros(w, len)?;
                    None
                }
            };
            write_zeros(w, header.size_of_raw_data as u64 - len)?;
            digests.push(digest);
        }
        Ok(digests)
    }

    /// PCR 11 per measurement target (the base alone, or base + each profile) from
    /// the stub's `.sbat` and the appended sections' digests.
    fn predict_pcr11(&self, digests: &[Option<Digests>]) -> Vec<Target> {
        let sbat = self.stub.sbat().map(|b| Digests::of(&b));
        let profiles = &self.spec.profiles;
        let blocks: Vec<usize> = if profiles.is_empty() {
            vec![0]
        } else {
            (1..=profiles.len()).collect()
        };
        blocks
            .iter()
            .enumerate()
            .map(|(t, &block)| {
                let mut set: BTreeMap<&str, &Digests> = BTreeMap::new();
                if let Some(d) = &sbat {
                    set.insert(".sbat", d);
                }
                for b in [0, block] {
                    let mut seen_in_block = Vec::new();
                    for (p, d) in self.sections.iter().zip(digests) {
                        if p.block == b
                            && let Some(d) = d
                            && !seen_in_block.contains(&p.name)
                        {
                            seen_in_block.push(p.name);
                            set.insert(p.name, d);
                        }
                    }
                }
                let measured: Vec<Measured> = sections::measured_in(self.stub.info.major)
                    .filter_map(|name| set.get(name).map(|content| Measured { name, content }))
                    .collect();
                Target {
                    profile: profiles.get(t).filter(|_| block > 0).map(|p| p.id.clone()),
                    banks: measure::predict(&measured),
                }
            })
            .collect()
    }

    /// Signs each target's PCR 11 policy with the PCR key and writes it into the
    /// target's `.pcrsig`. Returns the signed PolicyPCR digests (hex) per target and
    /// bank; all `None` without a PCR key.
    fn sign_policies(
        &self,
        out: &mut dyn Output,
        targets: &[Target],
    ) -> Result<Vec<Vec<Option<String>>>> {
        let Some(key) = &self.spec.pcr_key else {
            return Ok(targets.iter().map(|t| vec![None; t.banks.len()]).collect());
        };
        let pkfp = policy::fingerprint(key.public_key());
        let mut pols = Vec::with_capacity(targets.len());
        for (t, target) in targets.iter().enumerate() {
            let values: Vec<_> = target.banks.iter().map(|b| (b.bank, b.signed())).collect();
            let policies = policy::sign_all(key.signer(), &values)?;
            let json = policy::pcrsig_json(&pkfp, &policies);
            if json.len() as u64 != self.pcrsig_len {
                // Cannot happen (every field has a fixed width); refuse rather than emit broken JSON.
                return Err(Error::invalid(format!(
                    ".pcrsig is {} bytes, {} were reserved",
                    json.len(),
                    self.pcrsig_len
                )));
            }
            let idx = self
                .sections
                .iter()
                .position(|p| matches!(p.content, Content::PcrSig(i) if i == t))
                .expect("every target has a .pcrsig");
            let at = self.layout.appended()[idx].pointer_to_raw_data as u64;
            out.seek(SeekFrom::Start(at)).during(WRITING)?;
            out.write_all(json.as_bytes()).during(WRITING)?;
            pols.push(policies.iter().map(|p| Some(hex::encode(p.pol))).collect());
        }
        Ok(pols)
    }

    /// Authenticode-signs the written image: the scan, fed while writing up to
    /// [`Self::scan_stop`], gets the rest (a few KiB, read back) and the signature is
    /// appended. Returns the file's length.
    fn sign_image(&self, out: &mut dyn Output, scan: Option<ImageScan>) -> Result<u64> {
        let size = self.layout.image_len();
        let (Some(mut scan), Some(signer)) = (scan, &self.signer) else {
            return Ok(size);
        };
        let stop = self.scan_stop();
        let mut tail = vec![0u8; (size - stop) as usize];
        out.seek(SeekFrom::Start(stop))
            .during("reading back the UKI")?;
        out.read_exact(&mut tail).during("reading back the UKI")?;
        scan.update(&tail);
        let patch = scan.finish(signer, u64::from(self.spec.timestamp))?;
        patch.write_to(&mut &mut *out).during("signing the UKI")
    }
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

/// The UKI file, with every byte written before `stop` also sent to the signing scan.
/// A failed write is kept in `failure`, so that it is reported as a failure to write
/// the UKI whichever step was writing.
struct ScanTee<'a, W: ?Sized> {
    file: &'a mut W,
    tx: Option<SyncSender<Arc<Vec<u8>>>>,
    at: u64,
    stop: u64,
    failure: Option<std::io::Error>,
}

impl<W: Write + ?Sized> Write for ScanTee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match self.file.write(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let kind = e.kind();
                self.failure = Some(e);
                return Err(std::io::Error::new(kind, "the UKI could not be written"));
            }
        };
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

fn write_zeros(w: &mut impl Write, mut n: u64) -> Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k]).during(WRITING)?;
        n -= k as u64;
    }
    Ok(())
}
