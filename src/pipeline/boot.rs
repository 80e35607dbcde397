//! The boot binaries of a UKI-based build: inputs and SecureBoot material loaded and
//! checked, systemd-boot signed, and the UKI planned once, then built either into a
//! scratch file (UKI and installer kinds) or straight into its place inside the ISO or
//! disk image.

use std::path::{Path, PathBuf};

use super::{Facts, WorkDir};
use crate::error::{Error, Result};
use crate::inputs::{BootInputs, SecureBootInputs};
use crate::io::{AtomicFile, Output};
use crate::pe::PeHeaders;
use crate::plan::{BootPlan, Plan};
use crate::report::{Pcr11Bank, Progress, SecureBootFacts};
use crate::uki::{self, UkiReport, UkiSpec};

/// systemd-boot and the UKI of one build.
pub struct Boot {
    pub inputs: BootInputs,
    pub secureboot: Option<SecureBootInputs>,
    /// systemd-boot, signed when SecureBoot is on (`None` for a bare UKI).
    sd_boot: Option<PathBuf>,
    uki: Uki,
    plan: uki::UkiPlan,
    /// SecureBoot facts now, PCR 11 once the UKI is built.
    pub facts: Facts,
}

/// Where the UKI is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Into a file of its own in the work directory (UKI and installer kinds).
    Scratch,
    /// Into the room the output writer reserves for it (ISO and disk image ESPs).
    InOutput,
}

/// Where the UKI is.
enum Uki {
    /// Built (and signed) into this file.
    File(PathBuf),
    /// To be built into the output, in the room reserved for it.
    InPlace,
}

impl Boot {
    /// Loads keys and inputs, signs systemd-boot and plans the UKI; then builds it
    /// into the work directory or, for [`Placement::InOutput`], leaves it to the output
    /// writer, which builds it into its place with [`Boot::write_uki`].
    pub fn prepare(
        plan: &Plan,
        boot: &BootPlan,
        work: &WorkDir,
        placement: Placement,
        initramfs: Option<&Path>,
    ) -> Result<Boot> {
        let secureboot = match plan.secureboot {
            true => Some(SecureBootInputs::load(&plan.profile)?),
            false => None,
        };
        let mut inputs = BootInputs::open(&plan.profile, boot.sd_boot)?;
        if let Some(sd_boot) = &inputs.sd_boot {
            let headers = PeHeaders::read_file(sd_boot, "PE/EFI image")?;
            plan.arch.require_pe_machine(sd_boot, headers.machine())?;
        }
        if let Some(rebuilt) = initramfs {
            inputs.initramfs = rebuilt.to_path_buf();
        }
        let mut facts = Facts::default();
        let mut sd_boot = inputs.sd_boot.clone();
        if let Some(sb) = &secureboot {
            if let Some(src) = &inputs.sd_boot {
                let signed = work.file("systemd-boot.efi.signed");
                let mut out = AtomicFile::create(&signed)?;
                crate::sign::authenticode::sign_to(
                    src,
                    out.file(),
                    &signed,
                    &sb.signer,
                    plan.epoch,
                )?;
                out.commit()?;
                sd_boot = Some(signed);
            }
            facts.secureboot = Some(SecureBootFacts {
                signer_cert_sha256: sb.signer.cert_fingerprint(),
                signer_subject: sb.signer.cert().tbs_certificate().subject().to_string(),
                pcr_key_fingerprint: crate::measure::policy::fingerprint(sb.pcr_key.public_key()),
            });
        }
        let spec = UkiSpec {
            arch: plan.arch,
            stub: inputs.sd_stub.clone(),
            kernel: inputs.kernel.clone(),
            initrd: inputs.initramfs.clone(),
            cmdline: plan.cmdline.clone(),
            os_release: uki::os_release(&plan.profile.name, &plan.profile.version),
            splash: None,
            dtb: None,
            profiles: boot.uki_profiles.clone(),
            pcr_key: secureboot.as_ref().map(|sb| sb.pcr_key.clone()),
            timestamp: plan.epoch as u32,
        };
        let uki_plan = uki::plan(spec, secureboot.as_ref().map(|sb| sb.signer.clone()))?;
        let mut this = Boot {
            inputs,
            secureboot,
            sd_boot,
            uki: Uki::InPlace,
            plan: uki_plan,
            facts,
        };
        if placement == Placement::Scratch {
            let path = work.file("vmlinuz.efi");
            let mut file = crate::io::create_rw(&path)?;
            this.uki = Uki::File(path.clone());
            this.build_uki(&mut file).map_err(|e| e.at_output(&path))?;
        }
        Ok(this)
    }

    /// systemd-boot (signed when SecureBoot is on).
    pub fn sd_boot(&self) -> Result<&Path> {
        self.sd_boot
            .as_deref()
            .ok_or_else(|| Error::invalid("input sdBoot is required"))
    }

    /// The built UKI's file, for the kinds that copy it.
    pub fn uki_file(&self) -> &Path {
        match &self.uki {
            Uki::File(path) => path,
            Uki::InPlace => unreachable!("the UKI of this kind is built in place"),
        }
    }

    /// The UKI's length when it is built in place, `None` when it is a file.
    pub fn reserved_uki_size(&self) -> Option<u64> {
        match self.uki {
            Uki::InPlace => Some(self.plan.size()),
            Uki::File(_) => None,
        }
    }

    /// Builds the UKI into the room reserved for it in the output.
    pub fn write_uki(&mut self, out: &mut dyn Output, progress: &dyn Progress) -> Result<()> {
        self.build_uki(out)?;
        progress.step("UKI ready");
        Ok(())
    }

    /// The facts for the manifest.
    pub fn take_facts(&mut self) -> Facts {
        std::mem::take(&mut self.facts)
    }

    /// Builds the UKI into `out` (signed when SecureBoot is on) and records its PCR 11
    /// prediction (of the main profile).
    fn build_uki(&mut self, out: &mut dyn Output) -> Result<UkiReport> {
        let report = self.plan.write(out)?;
        self.facts.pcr11 = report
            .pcr11
            .iter()
            .filter(|p| p.profile.as_deref().is_none_or(|id| id == "main"))
            .map(|p| Pcr11Bank {
                bank: p.bank.to_string(),
                after_stub: p.after_stub.clone(),
                enter_machined: p.enter_machined.clone(),
            })
            .collect();
        Ok(report)
    }
}
