#!/usr/bin/env python3
"""A static identity provider for case (h), with the standard library and the openssl CLI.

    idp.py DIR PRIVATE_PEM PUBLIC_PEM ISSUER [--kid i1] [--sub k1] [--exp-in SECONDS]

Writes DIR/.well-known/openid-configuration ({"issuer", "jwks_uri": ISSUER/jwks}) and
DIR/jwks (the RSA public key as a JWK, use "sig", alg RS256), for `python3 -m http.server`
to serve with DIR as its root; then prints an RS256 access token of that issuer (aud
"legacy-app", sub and preferred_username k1), signed with `openssl dgst -sha256 -sign`.
"""
import argparse
import base64
import json
import os
import subprocess
import time
import uuid


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def modulus(public_pem: str) -> bytes:
    out = subprocess.run(
        ["openssl", "rsa", "-pubin", "-in", public_pem, "-noout", "-modulus"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    return bytes.fromhex(out.split("=", 1)[1])


def exponent(public_pem: str) -> bytes:
    out = subprocess.run(
        ["openssl", "rsa", "-pubin", "-in", public_pem, "-noout", "-text"],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Exponent:"):
            n = int(line.split()[1])
            return n.to_bytes((n.bit_length() + 7) // 8, "big")
    raise SystemExit("no exponent in the public key")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("private_pem")
    p.add_argument("public_pem")
    p.add_argument("issuer")
    p.add_argument("--kid", default="i1")
    p.add_argument("--sub", default="k1")
    p.add_argument("--exp-in", type=int, default=10 * 365 * 24 * 3600)
    a = p.parse_args()

    os.makedirs(os.path.join(a.dir, ".well-known"), exist_ok=True)
    with open(os.path.join(a.dir, ".well-known", "openid-configuration"), "w") as f:
        json.dump({"issuer": a.issuer, "jwks_uri": a.issuer + "/jwks"}, f)
    jwk = {
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": a.kid,
        "n": b64url(modulus(a.public_pem)), "e": b64url(exponent(a.public_pem)),
    }
    with open(os.path.join(a.dir, "jwks"), "w") as f:
        json.dump({"keys": [jwk]}, f)

    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": a.kid}
    claims = {
        "iss": a.issuer, "aud": "legacy-app", "sub": a.sub, "preferred_username": a.sub,
        "iat": now, "exp": now + a.exp_in, "jti": uuid.uuid4().hex,
    }
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", a.private_pem],
        input=signing_input.encode(), check=True, capture_output=True,
    ).stdout
    print(signing_input + "." + b64url(sig))


if __name__ == "__main__":
    main()
