//! Software emulation of PCR 11 as systemd-stub and Talos' init extend it.
//!
//! For each measured section (in canonical order) the stub extends the section
//! name with its NUL, then the section content; Talos' init later extends the
//! boot-phase words. Every extend is `pcr = H(pcr || H(data))`, starting from zeros.

use super::digest::{BANKS, Bank, Digests};

/// The boot phases Talos extends into PCR 11 after the stub, in order. The policy
/// is signed for the state after the last one (`enter-machined`): disk unlock
/// happens there.
pub const PHASES: [&str; 3] = ["enter-initrd", "leave-initrd", "enter-machined"];

/// One measured section: its canonical name and the digests of its content.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    pub name: &'a str,
    pub content: &'a Digests,
}

/// PCR 11 of one bank: right after the stub, and after each phase of [`PHASES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankPcr {
    pub bank: Bank,
    pub after_stub: Vec<u8>,
    /// `(phase, value after extending it)`, in [`PHASES`] order.
    pub phases: Vec<(&'static str, Vec<u8>)>,
}

impl BankPcr {
    /// The value the signed policy is for (after the last phase).
    pub fn signed(&self) -> &[u8] {
        &self.phases.last().expect("PHASES is not empty").1
    }
}

/// `pcr = H(pcr || digest)`.
pub fn extend(bank: Bank, pcr: &mut Vec<u8>, digest: &[u8]) {
    let mut buf = Vec::with_capacity(pcr.len() + digest.len());
    buf.extend_from_slice(pcr);
    buf.extend_from_slice(digest);
    *pcr = bank.hash(&buf);
}

/// Predicts PCR 11 in every bank. `sections` must already be the measured ones
/// (absent and never-measured sections left out), in canonical order.
pub fn predict(sections: &[Measured]) -> Vec<BankPcr> {
    BANKS
        .iter()
        .map(|&bank| {
            let mut pcr = vec![0u8; bank.digest_len()];
            for s in sections {
                let mut name = s.name.as_bytes().to_vec();
                name.push(0);
                extend(bank, &mut pcr, &bank.hash(&name));
                extend(bank, &mut pcr, s.content.get(bank));
            }
            let after_stub = pcr.clone();
            let phases = PHASES
                .iter()
                .map(|phase| {
                    extend(bank, &mut pcr, &bank.hash(phase.as_bytes()));
                    (*phase, pcr.clone())
                })
                .collect();
            BankPcr {
                bank,
                after_stub,
                phases,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec 4.1 (Talos' measure test): the 13 sections of systemd 257, each file
    /// holding its own name; PCR 11 after `enter-machined` in every bank.
    #[test]
    fn golden_vector_of_talos_measure_test() {
        let names = [
            ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname",
            ".sbat", ".pcrpkey", ".profile", ".dtbauto", ".hwids",
        ];
        let digests: Vec<Digests> = names.iter().map(|n| Digests::of(n.as_bytes())).collect();
        let measured: Vec<Measured> = names
            .iter()
            .zip(&digests)
            .map(|(name, content)| Measured { name, content })
            .collect();
        let got: Vec<String> = predict(&measured)
            .iter()
            .map(|b| hex::encode(b.signed()))
            .collect();
        assert_eq!(
            got,
            [
                "535f91bd7887cccefedd0b0344b3ce7d4fc390f356b276960547502657258839",
                "07a81a45b36a54296527f424360e376e6cf74ab4681c035079832ea68525bc02926fd793151665408ecc182bd32b5b03",
                "3521e1c6a94931d1cdd17de5141bb8d6ef6fa88d5eb5d069e1dc321d649ac601087d0613fedcf05e67f7508683f40fecaabbfb994a8876d8d7bd3ebbeb8bdf28",
            ]
        );
    }
}
