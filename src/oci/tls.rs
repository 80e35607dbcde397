//! The certificates HTTPS registries are checked against: the Mozilla roots built
//! into the binary (`webpki-roots`, so the FROM-scratch container needs no CA files),
//! plus the certificates of `SSL_CERT_FILE` (a PEM bundle) and of the files in
//! `SSL_CERT_DIR` (directories separated by `:`), the variables Go's `crypto/x509` —
//! and so the Talos imager and Image Factory — read. A registry behind an internal CA
//! is reached by pointing `SSL_CERT_FILE` at that CA; unlike Go, the built-in roots
//! stay trusted beside it, so public registries still work.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, IoContext, Result};

/// The client TLS configuration: TLS 1.2 and 1.3 on *ring*, as ureq's own default,
/// with the roots above. Made once per process (every registry session shares it); a
/// bad `SSL_CERT_FILE` is an error each time it is asked for.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let set = |name| std::env::var_os(name).filter(|v: &std::ffi::OsString| !v.is_empty());
    let file = set("SSL_CERT_FILE").map(PathBuf::from);
    let mut dir_files = Vec::new();
    for dir in set("SSL_CERT_DIR").iter().flat_map(std::env::split_paths) {
        dir_files.extend(pem_files_in(&dir)?);
    }
    let config = client_config_with(file.as_deref(), &dir_files)?;
    Ok(CONFIG.get_or_init(|| config).clone())
}

/// The configuration trusting the built-in roots, the certificates of `file` (which
/// must hold at least one usable CA certificate) and those of `dir_files` (where, as
/// Go does, files and certificates that are not usable are skipped).
fn client_config_with(
    file: Option<&Path>,
    dir_files: &[PathBuf],
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = file {
        let (added, _) = roots.add_parsable_certificates(read_certificates(path)?);
        if added == 0 {
            return Err(Error::format(
                path,
                "holds no PEM certificate usable as a CA (SSL_CERT_FILE names a bundle of CA certificates)",
            ));
        }
    }
    for path in dir_files {
        if let Ok(certs) = read_certificates(path) {
            roots.add_parsable_certificates(certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
    .expect("the ring provider supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The `CERTIFICATE` blocks of the PEM file at `path` (other blocks are skipped).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).op("reading", path)?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::format(path, format!("is not a PEM file: {e}")))
}

/// The regular files of `dir`, sorted (`SSL_CERT_DIR`: a directory such as
/// `/etc/ssl/certs`). A directory that does not exist is skipped, as Go does.
fn pem_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).op("reading", dir),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.op("reading", dir)?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throw-away CA certificate, PEM.
    fn ca_pem() -> String {
        crate::keys::generate::signer("imager test CA", 1024)
            .unwrap()
            .cert_pem()
    }

    #[test]
    fn a_file_without_certificates_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let key_only = dir.path().join("ca.pem");
        std::fs::write(&key_only, "not a certificate\n").unwrap();
        let e = client_config_with(Some(&key_only), &[]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("ca.pem: holds no PEM certificate"), "{text}");
        // In a directory, such a file is skipped.
        assert!(client_config_with(None, &[key_only]).is_ok());
    }

    #[test]
    fn a_missing_file_is_an_error_and_a_missing_directory_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let e = client_config_with(Some(&dir.path().join("absent.pem")), &[]).unwrap_err();
        assert!(e.to_string().contains("absent.pem"), "{e}");
        assert!(pem_files_in(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn pem_blocks_are_read_and_other_blocks_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(
            &bundle,
            format!(
                "# comment\n{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
                ca_pem(),
                ca_pem()
            ),
        )
        .unwrap();
        assert_eq!(read_certificates(&bundle).unwrap().len(), 2);
        assert!(client_config_with(Some(&bundle), &[]).is_ok());
    }
}
