#!/usr/bin/env python3
"""A Talos external signer (signerapi.SignerService) for the tests: grpcio server on a
Unix socket, stubs generated from signer.proto with grpcio-tools at start, signing with
a PEM key through pyca/cryptography.

  signerd.py SOCKET KEY.pem [CERT.pem] [--mode good|wrong|rehash|unavailable]

Modes: good signs the digest as given; wrong signs a different digest (the imager
must refuse the signature); rehash signs the hash of the digest (the moto bug);
unavailable answers every Sign with UNAVAILABLE. Each Sign is counted in
SOCKET.calls (one line per call: hash name)."""

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))


def stubs():
    out = tempfile.mkdtemp(prefix="signerd-stubs-")
    from grpc_tools import protoc
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main([
        "protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out}",
        f"--grpc_python_out={out}", os.path.join(HERE, "signer.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import signer_pb2, signer_pb2_grpc  # noqa: E401

    return signer_pb2, signer_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("key")
    ap.add_argument("cert", nargs="?")
    ap.add_argument("--mode", default="good")
    args = ap.parse_args()

    import grpc
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    pb, pb_grpc = stubs()
    with open(args.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    cert = open(args.cert, "rb").read() if args.cert else None
    algs = {pb.HASH_SHA256: hashes.SHA256(), pb.HASH_SHA384: hashes.SHA384(),
            pb.HASH_SHA512: hashes.SHA512()}
    calls = open(args.socket + ".calls", "a", buffering=1)

    class Service(pb_grpc.SignerServiceServicer):
        def GetCertificate(self, request, context):
            if cert is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "no certificate configured")
            return pb.CertificateResponse(cert_pem=cert)

        def GetPublicKey(self, request, context):
            pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            return pb.PublicKeyResponse(pub_key_pem=pem)

        def Sign(self, request, context):
            alg = algs.get(request.hash)
            if alg is None or request.scheme != pb.SCHEME_RSA_PKCS1V15:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unsupported hash or scheme")
            if len(request.digest) != alg.digest_size:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "digest length")
            calls.write(alg.name + "\n")
            if args.mode == "unavailable":
                context.abort(grpc.StatusCode.UNAVAILABLE, "HSM offline")
            digest = request.digest
            if args.mode == "wrong":
                digest = bytes(alg.digest_size)
            if args.mode == "rehash":
                sig = key.sign(digest, padding.PKCS1v15(), alg)
            else:
                sig = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(alg))
            return pb.SignResponse(signature=sig)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_SignerServiceServicer_to_server(Service(), server)
    server.add_insecure_port("unix://" + os.path.abspath(args.socket))
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
