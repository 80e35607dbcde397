//! What signer backends read from outside: KMS JSON answers, the external signer's protobuf responses
//! and gRPC framing, PKCS#11 URIs, a token's modulus and exponent bytes, and the
//! certificates signers hand back.
#![no_main]
use imager::sign::backends::{aws, external::proto, pkcs11};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = proto::bytes_field_1(data);
    let _ = aws::parse_answer(data);
    if let Ok(msg) = proto::unframe(data) {
        let _ = proto::bytes_field_1(msg);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pkcs11::parse_uri(text);
        let _ = pkcs11::redact(text);
    }
    let (n, e) = data.split_at(data.len() / 2);
    let _ = pkcs11::public_key_from_parts(n, e);
    let _ = imager::sign::parse_certificate(data);
});
