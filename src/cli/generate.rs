//! `imager gen secureboot uki|pcr|database`: the `talosctl gen secureboot` equivalents.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use imager::keys::{self, efivar, generate};
use imager::profile::SigningKeyAndCertificate;

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Generates SecureBoot signing keys and enrollment files.
    #[command(subcommand)]
    Secureboot(SecurebootCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecurebootCommand {
    /// RSA 4096 UKI signing key and self-signed certificate
    /// (uki-signing-key.pem, uki-signing-cert.pem, uki-signing-cert.der).
    Uki {
        /// Subject of the certificate (written as its organization, like talosctl).
        #[arg(long, default_value = generate::DEFAULT_COMMON_NAME)]
        common_name: String,
        #[command(flatten)]
        out: Output,
    },
    /// RSA 2048 PCR policy signing key (pcr-signing-key.pem).
    Pcr {
        #[command(flatten)]
        out: Output,
    },
    /// PK.auth, KEK.auth and db.auth for systemd-boot's automatic enrollment.
    Database {
        /// Certificate to enroll in PK, KEK and db [default: OUTPUT/uki-signing-cert.pem].
        #[arg(long, value_name = "FILE")]
        enrolled_certificate: Option<PathBuf>,
        /// Certificate of the signing key [default: OUTPUT/uki-signing-cert.pem].
        #[arg(long, alias = "signing-cert", value_name = "FILE")]
        signing_certificate: Option<PathBuf>,
        /// Key that signs the three files [default: OUTPUT/uki-signing-key.pem].
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        /// Also enroll Microsoft's KEK and third-party UEFI CAs (keeps option ROMs loadable).
        #[arg(long)]
        include_well_known_uefi_certs: bool,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Args)]
pub struct Output {
    /// Output directory.
    #[arg(short, long, default_value = "_out", value_name = "DIR")]
    output: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

impl Output {
    fn write(&self, files: &[generate::OutputFile]) -> anyhow::Result<()> {
        generate::write_files(&self.output, files, self.force, |p| {
            eprintln!("writing {}", p.display())
        })?;
        Ok(())
    }
}

pub fn run(cmd: GenCommand) -> anyhow::Result<()> {
    let GenCommand::Secureboot(cmd) = cmd;
    match cmd {
        SecurebootCommand::Uki { common_name, out } => {
            refuse_existing(
                &out,
                &[
                    generate::UKI_SIGNING_CERT_PEM,
                    generate::UKI_SIGNING_CERT_DER,
                    generate::UKI_SIGNING_KEY,
                ],
            )?;
            eprintln!(
                "generating an RSA {} key (this can take a few seconds)",
                generate::UKI_KEY_BITS
            );
            let (key, signer) = generate::signing_pair(&common_name, generate::UKI_KEY_BITS)?;
            out.write(&generate::uki_signing_files(&key, &signer)?)
        }
        SecurebootCommand::Pcr { out } => {
            refuse_existing(&out, &[generate::PCR_SIGNING_KEY])?;
            eprintln!("generating an RSA {} key", generate::PCR_KEY_BITS);
            out.write(&generate::pcr_signing_files(&generate::rsa_key(
                generate::PCR_KEY_BITS,
            )?)?)
        }
        SecurebootCommand::Database {
            enrolled_certificate,
            signing_certificate,
            signing_key,
            include_well_known_uefi_certs,
            out,
        } => {
            let default = |name: &str| out.output.join(name);
            let (cert_path, key_path) = match (signing_certificate, signing_key) {
                (Some(c), Some(k)) => (c, k),
                (None, None) => (
                    default(generate::UKI_SIGNING_CERT_PEM),
                    default(generate::UKI_SIGNING_KEY),
                ),
                (Some(_), None) => anyhow::bail!(
                    "--signing-certificate needs --signing-key (the key of that certificate)"
                ),
                (None, Some(_)) => anyhow::bail!(
                    "--signing-key needs --signing-certificate (the certificate of that key)"
                ),
            };
            let missing: Vec<String> = [&key_path, &cert_path]
                .iter()
                .filter(|p| !p.to_string_lossy().starts_with("pkcs11:") && !p.is_file())
                .map(|p| p.display().to_string())
                .collect();
            if !missing.is_empty() {
                return Err(imager::Error::invalid(format!(
                    "{} not found: run `imager gen secureboot uki --common-name NAME --output {}` first, or pass --signing-key/--signing-certificate",
                    missing.join(" and "),
                    out.output.display()
                ))
                .into());
            }
            // The signer is opened like a profile's SecureBoot signer (so the key may
            // be any backend the profile's keyPath can name).
            let signer = imager::sign::backends::open(&SigningKeyAndCertificate {
                key_path: key_path.to_string_lossy().into_owned(),
                cert_path: cert_path.to_string_lossy().into_owned(),
                ..Default::default()
            })?;
            let enrolled =
                enrolled_certificate.unwrap_or_else(|| default(generate::UKI_SIGNING_CERT_PEM));
            let (_, enrolled_der) = keys::load_certificate(&enrolled).with_context(|| {
                format!("reading the enrolled certificate {}", enrolled.display())
            })?;
            let db = efivar::enrollment_db_for(
                &enrolled_der,
                &signer,
                include_well_known_uefi_certs,
                imager::plan::epoch_from_env(),
            )?;
            out.write(&generate::enrollment_files(&db))
        }
    }
}

/// Fails early, before the slow key generation, if an output exists and `--force` is off,
/// or if the output directory cannot be made or written.
/// ([`generate::write_files`] checks again right before writing.)
fn refuse_existing(out: &Output, names: &[&str]) -> anyhow::Result<()> {
    generate::refuse_existing(&out.output, names, out.force)?;
    // Created now, private as writing would make it, so an unwritable place fails
    // before the RSA work.
    if !out.output.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&out.output)
            .map_err(|e| imager::Error::io_op("creating the output directory", &out.output, e))?;
    }
    let probe = out
        .output
        .join(format!(".imager-probe-{}", std::process::id()));
    std::fs::File::create(&probe)
        .map_err(|e| imager::Error::io_op("writing into", &out.output, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
