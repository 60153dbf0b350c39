#!/usr/bin/env python3
"""Verify a sessiongate token in a Python microservice with PyJWT (docs/verifying.md).

    pip install "PyJWT[crypto]>=2.8"
    python3 verify_pyjwt.py --jwks-url http://gateway:9090/.well-known/jwks.json \
        --issuer https://gateway.internal --audience orders --token "$JWT"

Prints the verified claims as JSON; exits 1 when the token does not verify.
"""
import argparse
import json
import sys

import jwt  # PyJWT

# One client per process: it caches the JWKS and refetches when it sees an unknown kid.
_jwks_client = None


def verifier(jwks_url: str) -> jwt.PyJWKClient:
    global _jwks_client
    if _jwks_client is None:
        # lifespan: keep the JWKS cached for less than the gateway's keys.publish_ahead
        # (PyJWT ignores Cache-Control). Leave cache_keys off: that per-kid cache never
        # expires and would keep accepting a retired key.
        _jwks_client = jwt.PyJWKClient(jwks_url, lifespan=300)
    return _jwks_client


def verify(token: str, jwks_url: str, issuer: str, audience: str) -> dict:
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("typ must be at+jwt")
    # get_signing_key_from_jwt refetches the JWKS when the kid is unknown, at most once
    # per cooldown_duration (30 s by default).
    key = verifier(jwks_url).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key,
        algorithms=["ES256", "EdDSA"],  # never "none" or HMAC
        audience=audience,
        issuer=issuer,
        leeway=30,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jwks-url", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--token", required=True)
    a = p.parse_args()
    try:
        claims = verify(a.token, a.jwks_url, a.issuer, a.audience)
    except jwt.PyJWTError as e:
        print(f"invalid token: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
