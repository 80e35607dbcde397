//! The input files a profile names, checked before any work starts, so a missing
//! or empty file is reported by its role and path.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::keys::{PcrKey, Signer};
use crate::profile::Profile;
use crate::sign::backends;

/// Checks that `path` (the profile's `role` input) is a readable, non-empty file.
pub fn require_file(role: &str, path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::invalid(format!("input {role}: no path given")));
    }
    let p = Path::new(path);
    let meta =
        std::fs::metadata(p).map_err(|e| Error::invalid(format!("input {role} {path}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "input {role} {path}: not a regular file"
        )));
    }
    if meta.len() == 0 {
        return Err(Error::invalid(format!(
            "input {role} {path}: the file is empty"
        )));
    }
    std::fs::File::open(p).map_err(|e| Error::invalid(format!("input {role} {path}: {e}")))?;
    Ok(p.to_path_buf())
}

/// The boot inputs of a UKI build.
#[derive(Debug, Clone)]
pub struct BootInputs {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub sd_stub: PathBuf,
    /// systemd-boot; `None` when the output does not need it (a bare UKI).
    pub sd_boot: Option<PathBuf>,
}

impl BootInputs {
    /// Checks kernel, initramfs, systemd-stub and, if `with_sd_boot`, systemd-boot.
    pub fn open(profile: &Profile, with_sd_boot: bool) -> Result<Self> {
        let input = &profile.input;
        let path_of = |a: &Option<crate::profile::FileAsset>| {
            a.as_ref().map(|a| a.path.clone()).unwrap_or_default()
        };
        Ok(BootInputs {
            kernel: require_file("kernel", &input.kernel.path)?,
            initramfs: require_file("initramfs", &input.initramfs.path)?,
            sd_stub: require_file("sdStub", &path_of(&input.sd_stub))?,
            sd_boot: match with_sd_boot {
                true => Some(require_file("sdBoot", &path_of(&input.sd_boot))?),
                false => None,
            },
        })
    }
}

/// SecureBoot material named by the profile, loaded and cross-checked.
#[derive(Debug, Clone)]
pub struct SecureBootInputs {
    pub signer: Signer,
    pub pcr_key: PcrKey,
    /// Pre-built `PK.auth`, `KEK.auth`, `db.auth`, when the profile names them.
    pub enrollment: Option<[PathBuf; 3]>,
    pub include_well_known_certs: bool,
}

impl SecureBootInputs {
    /// Loads the signer, the PCR key and the optional enrollment files.
    pub fn load(profile: &Profile) -> Result<Self> {
        let sb =
            profile.input.secureboot.as_ref().ok_or_else(|| {
                Error::invalid("SecureBoot is on but input.secureboot is not set")
            })?;
        let signer = backends::open(&sb.secure_boot_signer.clone().unwrap_or_default())?;
        let pcr_key = PcrKey::new(backends::open_key(
            &sb.pcr_signer.clone().unwrap_or_default(),
        )?);
        let enrollment = if sb.platform_key_path.is_empty() {
            None
        } else {
            Some([
                require_file("platformKeyPath", &sb.platform_key_path)?,
                require_file("keyExchangeKeyPath", &sb.key_exchange_key_path)?,
                require_file("signatureKeyPath", &sb.signature_key_path)?,
            ])
        };
        Ok(SecureBootInputs {
            signer,
            pcr_key,
            enrollment,
            include_well_known_certs: sb.include_well_known_certs,
        })
    }
}

/// One input a build would read that is not there (or not a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The input's role as errors name it (`kernel`, `PCR signing key`, ...).
    pub role: &'static str,
    pub path: PathBuf,
    /// Why it cannot be read (`not found`, `a directory`, ...).
    pub why: String,
}

/// Every file the build of `plan` would open, by role: found up front so a first run
/// hears of all that is missing at once, not one file per run. Checks existence and
/// type only; contents are checked by the build (and by `--dry-run`).
pub fn missing(plan: &crate::plan::Plan) -> Vec<Missing> {
    missing_files(wanted(plan))
}

/// Every file the build of `plan` would open: (role, path), in the order it reads them.
pub fn wanted(plan: &crate::plan::Plan) -> Vec<(&'static str, String)> {
    use crate::plan::{InstallerContents, KindPlan};
    let input = &plan.profile.input;
    let mut wanted: Vec<(&'static str, String)> = Vec::new();
    let boot = match &plan.kind {
        KindPlan::Cmdline => None,
        KindPlan::Kernel => {
            wanted.push(("kernel", input.kernel.path.clone()));
            None
        }
        KindPlan::Initramfs => {
            wanted.push(("initramfs", input.initramfs.path.clone()));
            None
        }
        KindPlan::Uki(b) => Some(b),
        KindPlan::Iso(iso) => Some(&iso.boot),
        KindPlan::Disk(disk) if disk.bootloader != crate::profile::Bootloader::Grub => {
            Some(&disk.boot)
        }
        KindPlan::Disk(_) => None,
        KindPlan::Installer(i) => match &i.contents {
            InstallerContents::Uki { boot, .. } => Some(boot),
            InstallerContents::KernelAndInitramfs => None,
        },
    };
    if !matches!(
        plan.kind,
        KindPlan::Cmdline | KindPlan::Kernel | KindPlan::Initramfs
    ) {
        wanted.push(("kernel", input.kernel.path.clone()));
        wanted.push(("initramfs", input.initramfs.path.clone()));
    }
    let path_of = |a: &Option<crate::profile::FileAsset>| {
        a.as_ref().map(|a| a.path.clone()).unwrap_or_default()
    };
    if let Some(boot) = boot {
        wanted.push(("sdStub", path_of(&input.sd_stub)));
        if boot.sd_boot {
            wanted.push(("sdBoot", path_of(&input.sd_boot)));
        }
        if plan.secureboot
            && let Some(sb) = &input.secureboot
        {
            // Files only: a remote signer, or a PKCS#11 URI, is opened (and checked) by
            // its backend.
            use crate::sign::backends::{Choice, choose, choose_key, pkcs11::is_uri};
            let mut want = |role, path: String| {
                if !is_uri(&path) {
                    wanted.push((role, path));
                }
            };
            let signer = sb.secure_boot_signer.clone().unwrap_or_default();
            match choose(&signer) {
                Ok(Choice::AwsCertFile) => {
                    want("secureboot signing certificate", signer.aws_cert_path)
                }
                Ok(Choice::File) | Err(_) => {
                    want("secureboot signing key", signer.key_path);
                    want("secureboot signing certificate", signer.cert_path);
                }
                Ok(_) => {}
            }
            let pcr = sb.pcr_signer.clone().unwrap_or_default();
            if matches!(choose_key(&pcr), Ok(Choice::File) | Err(_)) {
                want("PCR signing key", pcr.key_path);
            }
        }
    }
    wanted
}

/// The files of `wanted` (role, path) that are not there or not regular files.
pub fn missing_files(wanted: Vec<(&'static str, String)>) -> Vec<Missing> {
    wanted
        .into_iter()
        .filter_map(|(role, path)| {
            let why = match std::fs::metadata(&path) {
                _ if path.is_empty() => "no path given".to_string(),
                Ok(m) if m.is_file() => return None,
                Ok(_) => "not a regular file".to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "not found".to_string(),
                Err(e) => e.to_string(),
            };
            Some(Missing {
                role,
                path: PathBuf::from(path),
                why,
            })
        })
        .collect()
}
