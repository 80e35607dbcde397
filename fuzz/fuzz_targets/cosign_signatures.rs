//! Sigstore bundles, simple-signing payloads, signature manifests, certificates,
//! public keys and trusted roots as an untrusted registry or file hands them over:
//! parsing and verifying must refuse, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

use imager::cosign::{self, Identity, IssuerRule, Policy, TrustedRoot};

fuzz_target!(|data: &[u8]| {
    let root = std::sync::Arc::new(TrustedRoot::from_json(cosign::EMBEDDED_ROOT).unwrap());
    let keyless = Policy::Keyless {
        root,
        identity: Identity {
            subject: regex::Regex::new(cosign::DEFAULT_SUBJECT_REGEXP).unwrap(),
            issuer: IssuerRule::Exact(cosign::DEFAULT_ISSUER.into()),
        },
    };
    let digest = "sha256:35b6021450b858574e182bbee95d6b9c8ab95f3623fdcc38e62997f763af631e";
    if let Ok(b) = cosign::bundle::Bundle::parse(data) {
        let _ = b.verify(digest, &keyless);
    }
    if let Ok(layers) = cosign::legacy::layers(data) {
        for l in &layers {
            let _ = cosign::legacy::verify_layer(l, data, digest, &keyless);
        }
    }
    let _ = cosign::der::Certificate::parse(data).map(|c| (c.san_identities(), c.fulcio_issuer()));
    let _ = cosign::PublicKey::from_pem(data);
    let _ = cosign::PublicKey::from_spki(data);
    let _ = TrustedRoot::from_json(data);
    let _ = cosign::SigningKey::from_pem(data);
});
