#!/usr/bin/env python3
"""Verify a stream of sessiongate JWTs with PyJWT, caching the JWKS as PyJWT documents.

One long-lived jwt.PyJWKClient(jwks_url, lifespan=...) is used for every token, with
PyJWT's JWK-set cache: the whole set is cached for `lifespan` seconds (default 300;
PyJWT does not read Cache-Control, so pass the gateway's max-age), and a token whose
`kid` is not in the cached set triggers one refetch, at most once per
`cooldown_duration` (default 30 s, kept). That is the verifier a microservice runs
across key rotations.

Reads one token per line on stdin and answers each with one JSON line on stdout:
{"ok": true, "kid": ..., "alg": ..., "sub": ..., "fetches": N} or
{"ok": false, "error": ..., "fetches": N}, where N counts the JWKS fetches so far.
Exits 0 at end of input.

Used by tests/integration/keyring.rs, which creates a virtualenv with PyJWT[crypto].
"""

import argparse
import json
import sys

import jwt


class CountingJWKClient(jwt.PyJWKClient):
    """PyJWKClient that counts how often it fetches the JWKS (nothing else changes)."""

    fetches = 0

    def fetch_data(self):
        CountingJWKClient.fetches += 1
        return super().fetch_data()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--lifespan", type=float, default=300.0)
    args = parser.parse_args()

    client = CountingJWKClient(args.jwks_url, lifespan=args.lifespan)
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != "at+jwt":
                raise ValueError(f"typ must be at+jwt, got {header.get('typ')!r}")
            signing_key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=["ES256", "EdDSA"],
                audience=args.audience,
                issuer=args.issuer,
                leeway=5,
                options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]},
            )
            answer = {
                "ok": True,
                "kid": header.get("kid"),
                "alg": header.get("alg"),
                "sub": claims["sub"],
            }
        except Exception as exc:  # noqa: BLE001 - any failure is a verification failure
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answer["fetches"] = CountingJWKClient.fetches
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
