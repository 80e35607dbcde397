//! `imager verify IMAGE`: checks an image's cosign signature as `imager serve` checks
//! its inputs (sigstore bundle referrer, then legacy `.sig`; public key, then keyless
//! against a trusted-root file), and prints how it verified.

use std::path::PathBuf;

use clap::Args;

use imager::cosign::Options;

/// Image Factory's `containerSignature` options, as flags.
#[derive(Debug, Args, Clone)]
pub struct SignatureArgs {
    /// Accept images signed with this public key (PEM), offline, without a transparency log.
    #[arg(long, value_name = "FILE")]
    pub container_signature_pubkey: Option<PathBuf>,
    /// Keyless: the signing certificate's subject (e-mail or URI) must match this regexp
    /// (default: Sidero Labs' release signers).
    #[arg(long, value_name = "REGEXP")]
    pub container_signature_subject_regexp: Option<String>,
    /// Keyless: the OIDC issuer recorded in the certificate (default https://accounts.google.com).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "container_signature_issuer_regexp"
    )]
    pub container_signature_issuer: Option<String>,
    /// Keyless: a regexp the OIDC issuer must match instead.
    #[arg(long, value_name = "REGEXP")]
    pub container_signature_issuer_regexp: Option<String>,
    /// Keyless: the Sigstore trusted root (trusted_root.json: Fulcio CAs, Rekor and CT log keys).
    #[arg(long, value_name = "FILE")]
    pub container_signature_trusted_root: Option<PathBuf>,
}

impl SignatureArgs {
    pub fn options(&self, disabled: bool) -> Options {
        Options {
            disabled,
            public_key: self.container_signature_pubkey.clone(),
            subject_regexp: self.container_signature_subject_regexp.clone(),
            issuer: self.container_signature_issuer.clone(),
            issuer_regexp: self.container_signature_issuer_regexp.clone(),
            trusted_root: self.container_signature_trusted_root.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image: HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST].
    pub image: String,
    #[command(flatten)]
    pub signature: SignatureArgs,
    /// Talk to the registry over plain HTTP.
    #[arg(long)]
    pub insecure_registry: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let verification = args.signature.options(false).load()?;
    let (digest, how) =
        imager::cosign::verify_reference(&args.image, args.insecure_registry, &verification)?;
    println!(
        "{}@{digest}: signature verified ({})",
        args.image.split('@').next().unwrap_or(&args.image),
        how.map(|h| h.to_string()).unwrap_or_default()
    );
    Ok(())
}
