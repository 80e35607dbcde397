#!/usr/bin/env python3
"""An AWS KMS + ACM + STS emulator for the tests: moto's server, in process, with the
two moto 5.2 quirks patched the way real KMS behaves, and keys imported.

  kms.py SB_KEY.pem SB_CERT.pem PCR_KEY.pem

moto quirks patched here: Sign ignores MessageType (a DIGEST is hashed again), and
GetPublicKey leaves out KeySpec. moto cannot import key material through the API, so
the keys are created and their private keys replaced in moto's backend.

Prints one JSON line {"endpoint", "sb", "pcr", "ec", "encrypt", "cert_arn",
"throttle"} and serves until killed. Key "throttle" answers its first two Sign calls
with ThrottlingException; the access key id "expired" gets ExpiredTokenException (403)."""

import base64
import json
import socket
import sys


def main():
    sb_key, sb_cert, pcr_key = sys.argv[1:4]
    import boto3
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, utils
    from moto.core.exceptions import JsonRESTError
    from moto.kms.models import kms_backends
    from moto.kms.responses import KmsResponse
    from moto.server import ThreadedMotoServer

    throttled = {"left": 2}
    names = {}

    def refuse_expired(self):
        # The access key id "expired" stands for credentials that have run out.
        if "Credential=expired/" in self.headers.get("Authorization", ""):
            e = JsonRESTError("ExpiredTokenException",
                              "The security token included in the request is expired")
            e.code = 403
            raise e

    def sign(self):
        refuse_expired(self)
        key_id = self._get_param("KeyId")
        self._validate_key_id(key_id)
        message = self._get_param("Message")  # moto base64-decodes it
        message_type = self._get_param("MessageType") or "RAW"
        alg = self._get_param("SigningAlgorithm")
        key = self.kms_backend.describe_key(key_id)
        if key.id == names.get("throttle") and throttled["left"] > 0:
            throttled["left"] -= 1
            raise JsonRESTError("ThrottlingException", "Rate exceeded")
        if message_type != "DIGEST":
            return original_sign(self)
        if not alg.startswith("RSASSA_PKCS1_V1_5_SHA_"):
            raise JsonRESTError("ValidationException", "only PKCS#1 v1.5 here")
        h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[-3:]]
        if len(message) != h.digest_size:
            raise JsonRESTError("ValidationException", "digest length")
        sig = key.private_key.private_key.sign(message, padding.PKCS1v15(), utils.Prehashed(h))
        return json.dumps({"KeyId": key.arn, "Signature": base64.b64encode(sig).decode(),
                           "SigningAlgorithm": alg})

    original_sign = KmsResponse.sign
    KmsResponse.sign = sign
    original_get_public_key = KmsResponse.get_public_key

    def get_public_key(self):
        refuse_expired(self)
        answer = json.loads(original_get_public_key(self))
        answer["KeySpec"] = answer["CustomerMasterKeySpec"]
        return json.dumps(answer)

    KmsResponse.get_public_key = get_public_key

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    session = dict(endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
    kms = boto3.client("kms", **session)
    acm = boto3.client("acm", **session)

    def create(spec, usage):
        return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]

    def load(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)

    out = {"endpoint": endpoint}
    for name, path, spec in (("sb", sb_key, "RSA_4096"), ("pcr", pcr_key, "RSA_2048"),
                             ("throttle", pcr_key, "RSA_2048")):
        key_id = create(spec, "SIGN_VERIFY")
        backend = kms_backends["123456789012"]["us-east-1"]
        backend.keys[key_id].private_key.private_key = load(path)
        out[name] = key_id
    names["throttle"] = out["throttle"]
    out["ec"] = create("ECC_NIST_P256", "SIGN_VERIFY")
    out["encrypt"] = create("RSA_2048", "ENCRYPT_DECRYPT")
    with open(sb_cert, "rb") as f:
        cert = f.read()
    with open(sb_key, "rb") as f:
        key_pem = f.read()
    out["cert_arn"] = acm.import_certificate(Certificate=cert, PrivateKey=key_pem)["CertificateArn"]
    print(json.dumps(out), flush=True)
    import threading
    threading.Event().wait()


if __name__ == "__main__":
    main()
