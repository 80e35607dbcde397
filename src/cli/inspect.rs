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
