#!/usr/bin/env python3
"""Verify a sessiongate JWT with PyJWT, an independent JOSE implementation.

Fetches the signing key from the gateway's JWKS URL (jwt.PyJWKClient), checks the
signature, `aud`, `iss`, `exp`, `nbf` and the presence of the SPEC's claims, and the
header's `typ` (at+jwt). Prints {"sub": ..., "kid": ..., "alg": ...} on success and
exits 0; prints the reason on stderr and exits 1 otherwise.

Used by tests/integration/interop.rs, which creates a virtualenv with PyJWT[crypto].
"""

import argparse
import json
import sys

import jwt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--issuer", required=True)
    args = parser.parse_args()

    try:
        header = jwt.get_unverified_header(args.token)
        if header.get("typ") != "at+jwt":
            raise ValueError(f"typ must be at+jwt, got {header.get('typ')!r}")
        if header.get("alg") not in ("ES256", "EdDSA"):
            raise ValueError(f"alg must be ES256 or EdDSA, got {header.get('alg')!r}")
        client = jwt.PyJWKClient(args.jwks_url, cache_keys=False)
        signing_key = client.get_signing_key_from_jwt(args.token)
        claims = jwt.decode(
            args.token,
            signing_key.key,
            algorithms=[header["alg"]],
            audience=args.audience,
            issuer=args.issuer,
            leeway=5,
            options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]},
        )
    except Exception as exc:  # noqa: BLE001 - any failure is a verification failure
        print(f"verification failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    print(json.dumps({"sub": claims["sub"], "kid": header.get("kid"), "alg": header["alg"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
