"""Independent judges for tests/cosign.rs and tests/serve_trust.rs.

  sigstore BUNDLE SUBJECT ISSUER DIGEST  sigstore-python (offline, embedded trust root)
                                         verifies the DSSE bundle for that identity; the
                                         statement must be cosign's signing predicate naming
                                         DIGEST. Exit 0 and "ok", else exit 1 and the reason.
  genkey PRIV PUB                        an ECDSA P-256 key (SEC 1 PEM) and its public key
  sign PRIV FILE                         base64 ECDSA-SHA256 signature of FILE's bytes
  verify PUB FILE SIG_B64                exit 0 when the signature verifies
  jwks PUB KID                           a JWKS holding the P-256 public key PUB
  jwt PRIV KID ISS AUD SUB EXP           an ES256 ID token (EXP: seconds from now)
"""
import base64
import json
import sys


def sigstore_verify(bundle_path, subject, issuer, digest):
    from sigstore.models import Bundle
    from sigstore.verify import Verifier, policy

    bundle = Bundle.from_json(open(bundle_path, "rb").read())
    verifier = Verifier.production(offline=True)
    try:
        ptype, payload = verifier.verify_dsse(
            bundle, policy.Identity(identity=subject, issuer=issuer)
        )
    except Exception as e:  # noqa: BLE001 - any refusal is a refusal
        print(f"refused: {e}")
        return 1
    statement = json.loads(payload)
    if ptype != "application/vnd.in-toto+json":
        print(f"refused: payload type {ptype}")
        return 1
    if statement.get("predicateType") != "https://sigstore.dev/cosign/sign/v1":
        print("refused: predicate type")
        return 1
    hexd = digest.split(":", 1)[1]
    if not any(s.get("digest", {}).get("sha256") == hexd for s in statement.get("subject", [])):
        print("refused: statement does not name the digest")
        return 1
    print("ok")
    return 0


def main():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cmd = sys.argv[1]
    if cmd == "sigstore":
        return sigstore_verify(*sys.argv[2:6])
    if cmd == "genkey":
        key = ec.generate_private_key(ec.SECP256R1())
        open(sys.argv[2], "wb").write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        open(sys.argv[3], "wb").write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
        return 0
    if cmd == "sign":
        key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
        sig = key.sign(open(sys.argv[3], "rb").read(), ec.ECDSA(hashes.SHA256()))
        print(base64.b64encode(sig).decode())
        return 0
    if cmd == "verify":
        pub = serialization.load_pem_public_key(open(sys.argv[2], "rb").read())
        try:
            pub.verify(
                base64.b64decode(sys.argv[4]),
                open(sys.argv[3], "rb").read(),
                ec.ECDSA(hashes.SHA256()),
            )
        except Exception as e:  # noqa: BLE001
            print(f"refused: {e}")
            return 1
        print("ok")
        return 0
    if cmd == "jwks":
        pub = serialization.load_pem_public_key(open(sys.argv[2], "rb").read())
        n = pub.public_numbers()
        b64 = lambda i: base64.urlsafe_b64encode(i.to_bytes(32, "big")).rstrip(b"=").decode()
        print(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": sys.argv[3], "alg": "ES256",
                                    "x": b64(n.x), "y": b64(n.y)}]}))
        return 0
    if cmd == "jwt":
        import time
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
        enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT", "kid": sys.argv[3]}
        claims = {"iss": sys.argv[4], "aud": sys.argv[5], "sub": sys.argv[6],
                  "iat": now, "exp": now + int(sys.argv[7])}
        signing_input = enc(json.dumps(header).encode()) + "." + enc(json.dumps(claims).encode())
        r, s_ = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        print(signing_input + "." + enc(r.to_bytes(32, "big") + s_.to_bytes(32, "big")))
        return 0
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
