//! What a client or an operator hands `imager serve`'s access control: bearer tokens
//! (JWTs checked against a JWKS), JWKS files and policy files.
#![no_main]
use libfuzzer_sys::fuzz_target;

use imager::serve::jwt;

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fuzz_target!(|data: &[u8]| {
    let keys = jwt::Jwks::parse(JWKS.as_bytes()).unwrap();
    let expect = jwt::Expect {
        issuer: "https://idp.test".into(),
        audience: "imager".into(),
        identity_claim: "sub".into(),
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = jwt::looks_like_jwt(text);
        let _ = jwt::verify(text, &keys, &expect, 1_700_000_000);
        let _ = imager::serve::auth::glob(text, "init=/bin/sh");
    }
    let _ = jwt::Jwks::parse(data);
    let path = std::env::temp_dir().join(format!("imager-fuzz-policy-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = imager::serve::auth::Auth::load(&path);
});
