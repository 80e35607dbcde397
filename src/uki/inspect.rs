//! Reading a UKI (or any EFI binary) back and checking it: sections, stub version,
//! PCR 11 recomputed from the file itself per profile, each `.pcrsig` entry against
//! `.pcrpkey` and the recomputation, and the Authenticode signatures.
//!
//! Section contents are streamed from the file (the image may be hundreds of MiB);
//! only the small text sections are held in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::Engine;
use rsa::pkcs8::DecodePublicKey;

use super::sections::{self, MIN_STUB_VERSION};
use super::stub::LoaderInfo;
use crate::error::{Error, IoContext, Result};
use crate::measure::{self, Bank, BankPcr, Digests, Measured, policy};
use crate::pe::{PeHeaders, SectionHeader};

/// Small sections (`.pcrsig`, `.pcrpkey`, `.profile`) larger than this are refused.
const MAX_TEXT_SECTION: u32 = 1024 * 1024;

/// Everything `imager inspect` reports about one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub file: PathBuf,
    /// From `.sdmagic`, when present.
    pub loader: Option<LoaderInfo>,
    pub sections: Vec<SectionInfo>,
    /// One per boot target: the whole UKI, or each profile.
    pub pcr11: Vec<TargetPcr>,
    pub authenticode: Authenticode,
    /// Failed checks; empty when everything checks out.
    pub problems: Vec<String>,
}

impl Inspection {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One section header, as found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SectionInfo {
    pub name: String,
    /// File offset of its data.
    pub offset: u32,
    /// VirtualSize: the payload length (measured length).
    pub size: u32,
    pub raw_size: u32,
    pub rva: u32,
    /// Whether this file's stub measures a section of this name.
    pub measured: bool,
}

/// PCR 11 for one boot target and the check of its `.pcrsig`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetPcr {
    /// Profile `ID=`; `None` for a UKI without profiles.
    pub profile: Option<String>,
    /// Sections measured, in measurement order.
    pub measured: Vec<String>,
    pub banks: Vec<BankValues>,
    /// Entries of the `.pcrsig` that applies to this target.
    pub pcrsig: Vec<PolicyCheck>,
}

/// PCR 11 values of one bank.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BankValues {
    pub bank: &'static str,
    pub after_stub: String,
    /// `(phase, hex value after it)`.
    pub phases: Vec<(String, String)>,
}

/// One `.pcrsig` entry, checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyCheck {
    pub bank: String,
    pub pol: String,
    /// The phase whose recomputed PCR 11 gives this `pol` (`None`: matches nothing).
    pub matches_phase: Option<String>,
    /// Signature verifies with `.pcrpkey`.
    pub signature_valid: bool,
    /// `pkfp` is the fingerprint of `.pcrpkey`.
    pub pkfp_matches: bool,
    /// False for banks this tool cannot recompute (e.g. sha1): reported, not judged.
    pub checked: bool,
}

/// Authenticode signatures, or why they could not be read.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Authenticode {
    Signatures(Vec<Signature>),
    Unavailable(String),
}

/// One Authenticode signature.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signature {
    pub signer_subject: String,
    pub signer_issuer: String,
    pub signer_fingerprint: String,
    pub digest_matches: bool,
    pub signature_valid: bool,
}

/// Reads `path` and runs every check. Fails only when the file cannot be read or is
/// not a PE image; failed checks are listed in [`Inspection::problems`].
pub fn inspect(path: &Path) -> Result<Inspection> {
    let mut file = File::open(path).at(path)?;
    let file_len = file.metadata().at(path)?.len();
    let headers = PeHeaders::read(&mut file, path, file_len, "PE/EFI image")?;
    // What a UKI is built on; a PE32 image is refused as the builder refuses it.
    headers.require_pe32_plus(path)?;
    let mut problems = Vec::new();
    for s in &headers.sections {
        if s.pointer_to_raw_data as u64 + s.data_in_file() as u64 > file_len {
            problems.push(format!("section {} runs past the end of the file", s.name));
        }
    }
    if !problems.is_empty() {
        return Err(Error::format(path, problems.join("; ")));
    }
    let loader = match headers.section(".sdmagic") {
        Some(s) => LoaderInfo::parse(&read_small(&mut file, s, path)?),
        None => None,
    };
    let is_uki = headers.section(".linux").is_some();
    let version = match &loader {
        Some(l) => l.major,
        None if is_uki => {
            problems.push(
                "no readable .sdmagic: cannot tell which sections the stub measures; assuming 257"
                    .into(),
            );
            257
        }
        None => 0,
    };
    let sections = headers
        .sections
        .iter()
        .map(|s| SectionInfo {
            name: s.name.clone(),
            offset: s.pointer_to_raw_data,
            size: s.virtual_size,
            raw_size: s.size_of_raw_data,
            rva: s.virtual_address,
            measured: is_uki && sections::is_measured(&s.name, version),
        })
        .collect();
    if is_uki && version < MIN_STUB_VERSION {
        problems.push(format!(
            "stub version {version} is older than {MIN_STUB_VERSION}"
        ));
    }
    let pcr11 = if is_uki {
        check_pcrs(&headers, version, &mut file, path, &mut problems)?
    } else {
        Vec::new()
    };
    let authenticode = match crate::sign::authenticode::verify(path) {
        Ok(sigs) => {
            for (i, s) in sigs.iter().enumerate() {
                if !s.digest_matches {
                    problems.push(format!(
                        "Authenticode signature {i}: image digest does not match the file"
                    ));
                }
                if !s.signature_valid {
                    problems.push(format!(
                        "Authenticode signature {i}: signature does not verify"
                    ));
                }
            }
            Authenticode::Signatures(
                sigs.into_iter()
                    .map(|s| Signature {
                        signer_subject: s.signer_subject,
                        signer_issuer: s.signer_issuer,
                        signer_fingerprint: s.signer_fingerprint,
                        digest_matches: s.digest_matches,
                        signature_valid: s.signature_valid,
                    })
                    .collect(),
            )
        }
        Err(e) => Authenticode::Unavailable(e.to_string()),
    };
    Ok(Inspection {
        file: path.into(),
        loader,
        sections,
        pcr11,
        authenticode,
        problems,
    })
}

/// Reads a small section's payload into memory.
fn read_small(file: &mut File, s: &SectionHeader, path: &Path) -> Result<Vec<u8>> {
    if s.virtual_size > MAX_TEXT_SECTION {
        return Err(Error::format(
            path,
            format!(
                "section {} is implausibly large ({} bytes)",
                s.name, s.virtual_size
            ),
        ));
    }
    let mut buf = vec![0u8; s.virtual_size as usize];
    file.seek(SeekFrom::Start(s.pointer_to_raw_data as u64))
        .at(path)?;
    file.read_exact(&mut buf[..s.data_in_file() as usize])
        .at(path)?;
    Ok(buf)
}

/// Hashes a section's payload in every bank, streaming it (zeros beyond the raw data,
/// as the loader would map them).
fn hash_section(file: &mut File, s: &SectionHeader, path: &Path) -> Result<Digests> {
    file.seek(SeekFrom::Start(s.pointer_to_raw_data as u64))
        .at(path)?;
    let in_file = s.data_in_file() as u64;
    let mut reader = (&mut *file)
        .take(in_file)
        .chain(std::io::repeat(0).take(s.virtual_size as u64 - in_file));
    measure::copy_hashed(
        &mut reader,
        &mut std::io::sink(),
        s.virtual_size as u64,
        path,
        path,
    )
}

/// Recomputes PCR 11 for every boot target and checks the `.pcrsig` that applies.
fn check_pcrs(
    headers: &PeHeaders,
    version: u32,
    file: &mut File,
    path: &Path,
    problems: &mut Vec<String>,
) -> Result<Vec<TargetPcr>> {
    // Blocks: everything before the first `.profile` is the base; each `.profile`
    // opens a block that runs to the next one. Within a block the first section of a
    // name wins (that is the one the stub finds).
    let mut blocks: Vec<BTreeMap<&str, &SectionHeader>> = vec![BTreeMap::new()];
    for s in &headers.sections {
        if s.name == ".profile" {
            blocks.push(BTreeMap::new());
        }
        blocks
            .last_mut()
            .expect("one block at least")
            .entry(s.name.as_str())
            .or_insert(s);
    }
    let mut digests: BTreeMap<u32, Digests> = BTreeMap::new(); // by file offset
    let mut targets = Vec::new();
    let target_blocks: Vec<usize> = if blocks.len() == 1 {
        vec![0]
    } else {
        (1..blocks.len()).collect()
    };
    for b in target_blocks {
        let mut set = blocks[0].clone();
        if b > 0 {
            set.extend(blocks[b].iter().map(|(k, v)| (*k, *v)));
        }
        let profile = match set.get(".profile") {
            Some(s) if b > 0 => {
                let text = read_small(file, s, path)?;
                let text = String::from_utf8_lossy(&text).into_owned();
                Some(
                    text.lines()
                        .find_map(|l| l.strip_prefix("ID="))
                        .unwrap_or(&text)
                        .to_string(),
                )
            }
            _ => None,
        };
        let names: Vec<&'static str> = sections::measured_in(version)
            .filter(|n| set.contains_key(n))
            .collect();
        for n in &names {
            let s = set[n];
            if let std::collections::btree_map::Entry::Vacant(e) =
                digests.entry(s.pointer_to_raw_data)
            {
                e.insert(hash_section(file, s, path)?);
            }
        }
        let measured: Vec<Measured> = names
            .iter()
            .map(|n| Measured {
                name: n,
                content: &digests[&set[n].pointer_to_raw_data],
            })
            .collect();
        let banks = measure::predict(&measured);
        let label = profile
            .as_deref()
            .map(|p| format!("profile {p}: "))
            .unwrap_or_default();
        let pcrsig = match set.get(".pcrsig") {
            Some(s) => {
                let json = read_small(file, s, path)?;
                let pem = match set.get(".pcrpkey") {
                    Some(k) => Some(read_small(file, k, path)?),
                    None => None,
                };
                check_pcrsig(&json, pem.as_deref(), &banks, &label, problems)
            }
            None => Vec::new(),
        };
        targets.push(TargetPcr {
            profile,
            measured: names.iter().map(|n| n.to_string()).collect(),
            banks: banks.iter().map(bank_values).collect(),
            pcrsig,
        });
    }
    Ok(targets)
}

fn bank_values(b: &BankPcr) -> BankValues {
    BankValues {
        bank: b.bank.name(),
        after_stub: hex::encode(&b.after_stub),
        phases: b
            .phases
            .iter()
            .map(|(p, v)| (p.to_string(), hex::encode(v)))
            .collect(),
    }
}

/// Checks every entry of a `.pcrsig` against `.pcrpkey` and the recomputed values.
fn check_pcrsig(
    json: &[u8],
    pem: Option<&[u8]>,
    banks: &[BankPcr],
    label: &str,
    problems: &mut Vec<String>,
) -> Vec<PolicyCheck> {
    let entries = match policy::parse_pcrsig(json) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("{label}.pcrsig: {e}"));
            return Vec::new();
        }
    };
    let key = match pem.map(|p| rsa::PublicKey::from_public_key_pem(&String::from_utf8_lossy(p))) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            problems.push(format!("{label}.pcrpkey is not a PEM RSA public key: {e}"));
            None
        }
        None => {
            problems.push(format!("{label}.pcrsig present but no .pcrpkey"));
            None
        }
    };
    let pkfp = key.as_ref().map(policy::fingerprint);
    let mut checks = Vec::new();
    for (bank_name, list) in entries {
        let bank = policy::bank_by_name(&bank_name);
        for e in list {
            let pol = hex::decode(&e.pol)
                .ok()
                .and_then(|p| <[u8; 32]>::try_from(p).ok());
            let sig = base64::engine::general_purpose::STANDARD
                .decode(&e.sig)
                .ok();
            let mut check = PolicyCheck {
                bank: bank_name.clone(),
                pol: e.pol.clone(),
                matches_phase: None,
                signature_valid: false,
                pkfp_matches: pkfp.as_deref() == Some(e.pkfp.as_str()),
                checked: bank.is_some(),
            };
            let Some(bank) = bank else {
                checks.push(check);
                continue;
            };
            if let (Some(pol), Some(sig), Some(key)) = (pol, &sig, &key) {
                check.signature_valid = policy::verify(key, bank, &pol, sig);
                check.matches_phase = phase_of(bank, &pol, banks);
            }
            let what = format!("{label}.pcrsig {bank_name} entry (pol {})", e.pol);
            if e.pcrs != [policy::PCR_INDEX] {
                problems.push(format!("{what}: covers PCRs {:?}, expected [11]", e.pcrs));
            }
            if check.matches_phase.is_none() {
                problems.push(format!("{what}: matches no recomputed PCR 11 value"));
            }
            if !check.signature_valid {
                problems.push(format!("{what}: signature does not verify with .pcrpkey"));
            }
            if !check.pkfp_matches {
                problems.push(format!("{what}: pkfp is not the fingerprint of .pcrpkey"));
            }
            checks.push(check);
        }
    }
    checks
}

/// Which recomputed state (after the stub, or after a phase) `pol` authorises.
fn phase_of(bank: Bank, pol: &[u8; 32], banks: &[BankPcr]) -> Option<String> {
    let b = banks.iter().find(|b| b.bank == bank)?;
    if &policy::policy_digest(bank, &b.after_stub) == pol {
        return Some("after-stub".into());
    }
    let mut path = Vec::new();
    for (phase, value) in &b.phases {
        path.push(*phase);
        if &policy::policy_digest(bank, value) == pol {
            return Some(path.join(":"));
        }
    }
    None
}
