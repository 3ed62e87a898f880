#!/usr/bin/env python3
"""Mint an HS256 JWT for the benchmark, with the standard library only.

    mint_jwt.py SECRET [--exp-in SECONDS] [--sub k1] [--name k1] [--kid k1]

Prints the compact token. Claims follow CONTRACT.md section 3 for a token from another
issuer (no sid): iss "authgate", aud "legacy-app", sub, name, iat, exp, jti.
A negative --exp-in mints an already expired token (for the negative checks).
"""
import argparse
import base64
import hashlib
import hmac
import json
import time
import uuid


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("secret")
    p.add_argument("--exp-in", type=int, default=10 * 365 * 24 * 3600)
    p.add_argument("--sub", default="k1")
    p.add_argument("--name", default="k1")
    p.add_argument("--kid", default="k1")
    p.add_argument("--iss", default="authgate")
    p.add_argument("--aud", default="legacy-app")
    a = p.parse_args()

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": a.kid}
    claims = {
        "iss": a.iss,
        "aud": a.aud,
        "sub": a.sub,
        "name": a.name,
        "iat": now,
        "exp": now + a.exp_in,
        "jti": uuid.uuid4().hex,
    }
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = hmac.new(a.secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    print(signing_input + "." + b64url(sig))


if __name__ == "__main__":
    main()
