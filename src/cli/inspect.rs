//! `imager inspect FILE.efi`: sections, stub version, PCR 11 recomputed from the
//! file, `.pcrsig` and Authenticode checks. Exits non-zero when a check fails.

use std::fmt::Write as _;

use clap::Args;

use imager::uki::inspect::{Authenticode, Inspection, inspect};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The EFI binary (UKI or systemd-boot) to inspect.
    pub file: std::path::PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    if let Some(what) = not_pe(&args.file) {
        return Err(imager::Error::invalid(format!(
            "{}: {what}, not an EFI binary: inspect the UKI itself (`imager secureboot-metal-uki` or `metal-uki` writes `*-uki.efi`)",
            args.file.display()
        ))
        .into());
    }
    let report = inspect(&args.file)?;
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        super::print_out(&text(&report))?;
    }
    if !report.ok() {
        anyhow::bail!(
            "{}: {} check(s) failed",
            args.file.display(),
            report.problems.len()
        );
    }
    Ok(())
}

/// What the file is when it is an image `imager` writes rather than a PE binary:
/// an ISO 9660 image (`CD001` at byte 0x8001), a GPT disk (`EFI PART` at 512 or
/// 4096), or a compressed disk image (zstd, xz, gzip magic).
fn not_pe(path: &std::path::Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(0x8006)
        .read_to_end(&mut head)
        .ok()?;
    if head.starts_with(b"MZ") {
        return None;
    }
    if head.get(0x8001..0x8006) == Some(b"CD001") {
        Some("an ISO image")
    } else if head.get(512..520) == Some(b"EFI PART") || head.get(4096..4104) == Some(b"EFI PART") {
        Some("a GPT disk image")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(&[0x1f, 0x8b])
    {
        Some("a compressed image")
    } else {
        None
    }
}

/// The human-readable report.
fn text(r: &Inspection) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", r.file.display());
    match &r.loader {
        Some(l) => _ = writeln!(o, "  {} {}", l.program, l.version),
        None => _ = writeln!(o, "  no systemd version (.sdmagic) found"),
    }
    let _ = writeln!(
        o,
        "\nsections:\n  {:<9} {:>10} {:>10} {:>10}  measured",
        "name", "offset", "size", "rva"
    );
    for s in &r.sections {
        let m = if s.measured { "yes" } else { "" };
        let _ = writeln!(
            o,
            "  {:<9} {:>#10x} {:>10} {:>#10x}  {m}",
            s.name, s.offset, s.size, s.rva
        );
    }
    for t in &r.pcr11 {
        match &t.profile {
            Some(p) => {
                _ = writeln!(
                    o,
                    "\nPCR 11, profile {p} (measured: {}):",
                    t.measured.join(" ")
                )
            }
            None => _ = writeln!(o, "\nPCR 11 (measured: {}):", t.measured.join(" ")),
        }
        for b in &t.banks {
            let _ = writeln!(o, "  {} after stub      {}", b.bank, b.after_stub);
            for (phase, v) in &b.phases {
                let _ = writeln!(o, "  {} {:<15} {v}", b.bank, phase);
            }
        }
        for c in &t.pcrsig {
            let verdict = if !c.checked {
                "bank not recomputed, not checked".to_string()
            } else {
                format!(
                    "signature {}, pkfp {}, {}",
                    if c.signature_valid { "ok" } else { "BAD" },
                    if c.pkfp_matches { "ok" } else { "BAD" },
                    c.matches_phase
                        .as_deref()
                        .map_or("matches no phase (BAD)".into(), |p| format!("matches {p}"))
                )
            };
            let _ = writeln!(o, "  .pcrsig {} pol {}: {verdict}", c.bank, c.pol);
        }
    }
    let _ = writeln!(o, "\nAuthenticode:");
    match &r.authenticode {
        Authenticode::Signatures(s) if s.is_empty() => _ = writeln!(o, "  not signed"),
        Authenticode::Signatures(sigs) => {
            for s in sigs {
                let _ = writeln!(
                    o,
                    "  signer {} (issuer {}, sha256 {}): digest {}, signature {}",
                    s.signer_subject,
                    s.signer_issuer,
                    s.signer_fingerprint,
                    if s.digest_matches { "ok" } else { "BAD" },
                    if s.signature_valid { "ok" } else { "BAD" }
                );
            }
        }
        Authenticode::Unavailable(e) => _ = writeln!(o, "  not signed / cannot verify: {e}"),
    }
    if r.problems.is_empty() {
        let _ = writeln!(o, "\nall checks passed");
    } else {
        let _ = writeln!(o, "\nFAILED:");
        for p in &r.problems {
            let _ = writeln!(o, "  {p}");
        }
    }
    o
}
