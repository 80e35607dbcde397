//! Signer backends, and [`open`]/[`open_key`]: the one place a backend is chosen from
//! the profile's signer fields, with Talos's precedence and errors
//! (`SigningKeyAndCertificate.GetSigner` / `SigningKey.GetSigner` in
//! `pkg/imager/profile/input.go`). No other module reads the key fields.

pub mod aws;
pub mod external;
pub mod file;
pub mod pkcs11;

use std::sync::Arc;

use super::signer::{KeySigner, Signer, load_certificate, parse_certificate};
use crate::error::{Error, Result};
use crate::inputs::require_file;
use crate::profile::{SigningKey, SigningKeyAndCertificate};

/// Which backend a SecureBoot signer block selects (Talos's precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    External,
    File,
    Azure,
    AwsAcm,
    AwsCertFile,
    /// The PCR signer's `awsKMSKeyID` (no certificate).
    AwsKms,
}

/// The backend `cfg` selects: `signerAddress` > `keyPath`+`certPath` >
/// `azureVaultURL`+`azureCertificateID` > `awsKMSKeyID`+`awsCertARN` >
/// `awsKMSKeyID`+`awsCertPath`, else `unsupported SecureBoot signer`.
pub fn choose(cfg: &SigningKeyAndCertificate) -> Result<Choice> {
    let set = |s: &str| !s.is_empty();
    Ok(if set(&cfg.signer_address) {
        Choice::External
    } else if set(&cfg.key_path) && set(&cfg.cert_path) {
        Choice::File
    } else if set(&cfg.azure_vault_url) && set(&cfg.azure_certificate_id) {
        Choice::Azure
    } else if set(&cfg.aws_kms_key_id) && set(&cfg.aws_cert_arn) {
        Choice::AwsAcm
    } else if set(&cfg.aws_kms_key_id) && set(&cfg.aws_cert_path) {
        Choice::AwsCertFile
    } else {
        return Err(Error::invalid(
            "input.secureboot.secureBootSigner: unsupported SecureBoot signer (set signerAddress, \
             keyPath + certPath, azureVaultURL + azureCertificateID, or awsKMSKeyID + awsCertARN or awsCertPath)",
        ));
    })
}

/// Which backend a PCR signer block selects: `signerAddress` > `keyPath` >
/// `azureVaultURL`+`azureKeyID` > `awsKMSKeyID`, else `unsupported PCR signer`.
pub fn choose_key(cfg: &SigningKey) -> Result<Choice> {
    let set = |s: &str| !s.is_empty();
    Ok(if set(&cfg.signer_address) {
        Choice::External
    } else if set(&cfg.key_path) {
        Choice::File
    } else if set(&cfg.azure_vault_url) && set(&cfg.azure_key_id) {
        Choice::Azure
    } else if set(&cfg.aws_kms_key_id) {
        Choice::AwsKms
    } else {
        return Err(Error::invalid(
            "input.secureboot.pcrSigner: unsupported PCR signer (set signerAddress, keyPath, \
             azureVaultURL + azureKeyID, or awsKMSKeyID)",
        ));
    })
}

/// Whether this build can use the backend `choice` (checked when the profile is
/// validated, before any work).
pub fn check_available(choice: Choice, role: &str) -> Result<()> {
    match choice {
        Choice::File | Choice::External | Choice::AwsAcm | Choice::AwsCertFile | Choice::AwsKms => {
            Ok(())
        }
        Choice::Azure => Err(not_built(role, "Azure Key Vault")),
    }
}

/// Checks what can be checked without reaching the key: the external signer's
/// address scheme and the syntax of PKCS#11 URIs (the profile check, before any work).
pub fn check_syntax(sb: &SigningKeyAndCertificate, pcr: &SigningKey) -> Result<()> {
    for (role, address) in [
        ("secureBootSigner", &sb.signer_address),
        ("pcrSigner", &pcr.signer_address),
    ] {
        if !address.is_empty() {
            external::socket_path(address)
                .map_err(|e| Error::invalid(format!("input.secureboot.{role}: {}", detail(e))))?;
        }
    }
    for (field, value) in [
        ("secureBootSigner.keyPath", &sb.key_path),
        ("secureBootSigner.certPath", &sb.cert_path),
        ("pcrSigner.keyPath", &pcr.key_path),
    ] {
        if pkcs11::is_uri(value) {
            pkcs11::parse_uri(value).map_err(|e| {
                Error::invalid(format!(
                    "input.secureboot.{field}: PKCS#11 URI {}: {e}",
                    pkcs11::redact(value)
                ))
            })?;
        }
    }
    Ok(())
}

fn detail(e: Error) -> String {
    match e {
        Error::Invalid(m) | Error::Unsupported(m) | Error::Dependency(m) => m,
        other => other.to_string(),
    }
}

fn not_built(role: &str, what: &str) -> Error {
    Error::unsupported(format!("{role}: {what} is not supported by this build"))
}

/// Opens the SecureBoot signer `cfg` names: its key and its certificate, checked
/// to belong together.
pub fn open(cfg: &SigningKeyAndCertificate) -> Result<Signer> {
    let choice = choose(cfg)?;
    check_available(choice, "input.secureboot.secureBootSigner")?;
    match choice {
        Choice::External => {
            let (key, cert) = external::ExternalKey::open_secureboot(&cfg.signer_address)?;
            let source = format!("from signer {}", cfg.signer_address);
            Signer::new(Arc::new(key), cert, &source)
        }
        Choice::AwsAcm | Choice::AwsCertFile => {
            let key = aws::KmsKey::open(&cfg.aws_kms_key_id, &cfg.aws_region)?;
            let (pem, source) = if choice == Choice::AwsAcm {
                (
                    key.acm_certificate(&cfg.aws_cert_arn)?,
                    cfg.aws_cert_arn.clone(),
                )
            } else {
                let path = require_file("awsCertPath", &cfg.aws_cert_path)?;
                let pem = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                (pem, path.display().to_string())
            };
            let (cert, _) =
                parse_certificate(&pem).map_err(|e| Error::invalid(format!("{source}: {e}")))?;
            Signer::new(Arc::new(key), cert, &source)
        }
        Choice::File => {
            let key: Arc<dyn KeySigner> = if pkcs11::is_uri(&cfg.key_path) {
                Arc::new(pkcs11::Pkcs11Key::open(&cfg.key_path)?)
            } else {
                let path = require_file("secureboot signing key", &cfg.key_path)?;
                Arc::new(file::FileKey::load(&path)?)
            };
            let (cert, source) = if pkcs11::is_uri(&cfg.cert_path) {
                let der = pkcs11::certificate(&cfg.cert_path)?;
                let source = pkcs11::redact(&cfg.cert_path);
                let (cert, _) = parse_certificate(&der)
                    .map_err(|e| Error::invalid(format!("{source}: {e}")))?;
                (cert, source)
            } else {
                let path = require_file("secureboot signing certificate", &cfg.cert_path)?;
                (load_certificate(&path)?.0, path.display().to_string())
            };
            Signer::new(key, cert, &source)
        }
        _ => unreachable!("refused by check_available"),
    }
}

/// Opens the PCR signer `cfg` names.
pub fn open_key(cfg: &SigningKey) -> Result<Arc<dyn KeySigner>> {
    let choice = choose_key(cfg)?;
    check_available(choice, "input.secureboot.pcrSigner")?;
    match choice {
        Choice::External => Ok(Arc::new(external::ExternalKey::open_pcr(
            &cfg.signer_address,
        )?)),
        Choice::AwsKms => Ok(Arc::new(aws::KmsKey::open(
            &cfg.aws_kms_key_id,
            &cfg.aws_region,
        )?)),
        Choice::File if pkcs11::is_uri(&cfg.key_path) => {
            Ok(Arc::new(pkcs11::Pkcs11Key::open(&cfg.key_path)?))
        }
        Choice::File => {
            let path = require_file("PCR signing key", &cfg.key_path)?;
            Ok(Arc::new(file::FileKey::load(&path)?))
        }
        _ => unreachable!("refused by check_available"),
    }
}
