//! The rules a complete profile must satisfy before anything is built, in two sets:
//! [`validate`], what makes it a profile at all (checked when it is resolved, so
//! `--dry-run` can print it), and [`supported`], what this imager does not build
//! (checked by [`crate::plan::Plan::new`], after `--dry-run` printed the profile).

use super::Profile;
use crate::error::{Error, Result};

use super::platforms::known_platform;

/// Checks `profile` (after defaults) is a valid profile. The first violated rule is
/// the error. What this imager refuses to build is [`supported`]'s; the rules of the
/// output kind and its options are the plan's ([`crate::plan::Plan::new`]).
pub fn validate(profile: &Profile) -> Result<()> {
    if profile.arch != "amd64" && profile.arch != "arm64" {
        return Err(Error::invalid(format!(
            "arch {:?} is not supported: use amd64 or arm64",
            profile.arch
        )));
    }
    if profile.platform.is_empty() {
        return Err(Error::invalid("platform is not set"));
    }
    if !known_platform(&profile.platform) {
        return Err(Error::invalid(format!(
            "unknown platform {:?}",
            profile.platform
        )));
    }
    crate::extensions::validate_profile(profile)?;
    if let Some(o) = &profile.overlay {
        let i = &o.image;
        if i.image_ref.is_empty() && i.oci_path.is_empty() && i.tarball_path.is_empty() {
            return Err(Error::invalid(
                "overlay.image: set one of imageRef, ociPath or tarballPath",
            ));
        }
    }
    validate_secureboot(profile)?;
    Ok(())
}

/// Checks this imager builds the valid `profile`: the first thing it does not is the
/// error ([`Error::unsupported`]).
pub fn supported(profile: &Profile) -> Result<()> {
    if profile.secureboot() && !profile.quirks().supports_uki() {
        return Err(Error::unsupported(format!(
            "SecureBoot needs Talos >= 1.5 (version {})",
            profile.version
        )));
    }
    if profile.overlay.is_some() {
        match profile.output.kind {
            Some(super::OutputKind::Image)
                if profile
                    .output
                    .image_options
                    .as_ref()
                    .and_then(|o| o.bootloader)
                    .is_some_and(|b| b != super::Bootloader::Grub) =>
            {
                return Err(Error::unsupported(
                    "overlays: a disk image with an overlay uses the grub bootloader (Talos runs the overlay installer only there)",
                ));
            }
            _ => {}
        }
    }
    supported_signers(profile)
}

fn validate_secureboot(profile: &Profile) -> Result<()> {
    let Some(sb) = profile.input.secureboot.as_ref() else {
        return Ok(());
    };
    if !profile.secureboot() {
        return Ok(());
    }
    let dbs = [
        ("platformKeyPath", &sb.platform_key_path),
        ("keyExchangeKeyPath", &sb.key_exchange_key_path),
        ("signatureKeyPath", &sb.signature_key_path),
    ];
    let set = dbs.iter().filter(|(_, p)| !p.is_empty()).count();
    if set != 0 && set != dbs.len() {
        let missing: Vec<&str> = dbs
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(n, _)| *n)
            .collect();
        return Err(Error::invalid(format!(
            "partial SecureBoot pre-built database configuration: missing {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// The signer backends the profile names (Talos's precedence decides which) are built
/// into this imager, and their addresses and URIs parse.
fn supported_signers(profile: &Profile) -> Result<()> {
    let Some(sb) = profile.input.secureboot.as_ref() else {
        return Ok(());
    };
    if !profile.secureboot() {
        return Ok(());
    }
    use crate::sign::backends;
    let signer = sb.secure_boot_signer.clone().unwrap_or_default();
    backends::check_available(
        backends::choose(&signer)?,
        "input.secureboot.secureBootSigner",
    )?;
    let pcr = sb.pcr_signer.clone().unwrap_or_default();
    backends::check_available(backends::choose_key(&pcr)?, "input.secureboot.pcrSigner")?;
    backends::check_syntax(&signer, &pcr)?;
    Ok(())
}
