#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets cookie, path, session, config and keyring.

Each seed is a realistic input in the target's input format (see each target's `//!`
doc): cookie headers browsers send, request targets and Host headers, sessions of every
format (express cookies signed with the target's secrets, Django pickles from
corpus/pickle), the configuration examples of docs/configuration.md, and key records of
both stores (private keys sealed under the keyring target's KEK). The output is
deterministic: fixed keys, fixed nonces. Needs the `cryptography` package.

    python3 fuzz/gen_seeds.py
"""

import base64
import hashlib
import hmac
import json
import os
import re
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, name, data):
    path = os.path.join(HERE, "corpus", target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)


# === cookie: a byte picking the name, then header values separated by \n ===
# Names: 0 __Host-session, 1 connect.sid, 2 sessionid, 3 s, 4 (nameless).
COOKIES = {
    "browser": b"\x00theme=dark; __Host-session=abcdefghijklmnopqrstuvwxyz012345; _ga=GA1.2.3.4",
    "express": b"\x01connect.sid=s%3An9Vq0yX-mLrD1nOAZ5jWYdhfBNMO2Lbx.DGDUkGlIkCzPz%2BC0B064FNgHdEjox7ch8tOBGslZ5QI; lang=en",
    "django": b"\x02csrftoken=Yx3bq0aCk1; sessionid=0123456789abcdefghijklmnopqrstuv",
    "two_headers": b"\x00a=1; b=2\n__Host-session=in-the-second-header; c=3",
    "repeated": b"\x03s=first; s=second;s=third",
    "quoted": b'\x03s="quoted-value"; t=""',
    "not_utf8": b"\x00theme=\xff\xfe; __Host-session=abcdefghijklmnopqrstuvwxyz012345; x=caf\xc3\xa9",
    "unreadable": b"\x03s=\xff\xfe",
    "spaces": b"\x03\t s = xyz \t;novalue; =bare ;;",
    "nameless_smuggle": b"\x03s=real; =s=smuggled\n=s=x; a=1",
    "empty": b"\x00",
}

# === path: a request target, then Host header values separated by \n ===
PATHS = {
    "plain": "/api/orders/7\napp.example.com",
    "normalizes": "/api//orders/./7/../%7Ebob?q=1\nADMIN.example.com.:8443",
    "absolute": "http://admin.example.com/api/payments/x\nother.example",
    "absolute_v6": "http://[::1]:81/p?q",
    "encoded_slash": "/api/public/..%2Fadmin\nh",
    "dot_params": "/api/public/..;/admin\nh",
    "escapes_root": "/api/%2e%2e/%2e%2e/x\nh",
    "jwks": "/.well-known/jwks.json\nadmin.example.com",
    "params": "/api;v=1/orders;x/items\nh",
    "unicode": "/caf\u00e9/a b/%c3%a9\nh",
    "asterisk": "*\nh",
    "two_hosts": "/\na.example\nb.example",
    "no_host": "/x",
    "port_only": "/x\n:80",
}

# === session: a byte picking the format (0 native, 1 express, 2 django), the cookie, \n,
# the stored value ===
SECRETS = ["keyboard cat", "new secret"]
SID = "n9Vq0yX-mLrD1nOAZ5jWYdhfBNMO2Lbx"


def express_cookie(sid, secret):
    tag = hmac.new(secret.encode(), sid.encode(), hashlib.sha256).digest()
    return "s:" + sid + "." + base64.b64encode(tag).decode().rstrip("=")


CONNECT_REDIS = json.dumps(
    {
        "cookie": {
            "originalMaxAge": 86400000,
            "expires": "2026-01-01T00:00:00.000Z",
            "secure": True,
            "httpOnly": True,
            "path": "/",
            "sameSite": "lax",
        },
        "passport": {"user": "42"},
        "roles": ["admin", "ops"],
        "email": "a@example.com",
    },
    separators=(",", ":"),
)
NATIVE_COOKIE = "abcdefghijklmnopqrstuvwxyz012345"
SESSIONS = {
    "native": (0, NATIVE_COOKIE, '{"sub":"user-42","roles":["admin"],"email":"a@example.com","exp":1767225600}'),
    "native_raw_keys": (6, NATIVE_COOKIE, '{"sub":42,"roles":[],"exp":null}'),
    "native_anonymous": (0, NATIVE_COOKIE, '{"views":3}'),
    "native_bad_exp": (0, NATIVE_COOKIE, '{"sub":"u","exp":"soon"}'),
    "native_escapes": (3, NATIVE_COOKIE, '{"sub":"a\\"b\\u00e9","a/b":{"~":[1,2.5e300,-0]},"email":null}'),
    "express_old_secret": (1, express_cookie(SID, SECRETS[0]), CONNECT_REDIS),
    "express_new_secret": (1, urllib.parse.quote(express_cookie(SID, SECRETS[1]), safe=""), CONNECT_REDIS),
    "express_foreign": (1, express_cookie(SID, "someone else"), CONNECT_REDIS),
    "express_anonymous": (4, express_cookie("x", SECRETS[0]), '{"cookie":{"path":"/"}}'),
}

# === keyring: a byte picking the form (even: file JSON; odd: Redis hash field, \n, JSON) ===
KEK = bytes([7] * 32)


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def thumbprint(jwk):
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


def keys():
    ed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    ed_pub = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ec_key = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
    numbers = ec_key.public_key().public_numbers()
    ec_jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }
    pkcs8 = lambda k: k.private_bytes(  # noqa: E731
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return [
        ("EdDSA", thumbprint({"crv": "Ed25519", "kty": "OKP", "x": b64url(ed_pub)}), pkcs8(ed)),
        ("ES256", thumbprint(ec_jwk), pkcs8(ec_key)),
    ]


def keyring_seeds():
    seeds = {}
    for i, (alg, kid, der) in enumerate(keys()):
        times = {"created_at": 1767225600, "activate_at": 1767227400, "retired_at": None}
        stored = {"kid": kid, "alg": alg, **times, "private_key": base64.b64encode(der).decode()}
        seeds[f"file_{alg}"] = b"\x00" + json.dumps(stored, indent=2).encode() + b"\n"
        retired = dict(stored, retired_at=1767311800)
        seeds[f"file_{alg}_retired"] = b"\x02" + json.dumps(retired).encode()
        nonce = bytes([i + 1] * 12)
        sealed = nonce + AESGCM(KEK).encrypt(nonce, der, kid.encode())
        wire = {"kid": kid, "alg": alg, **times, "sealed_key": base64.b64encode(sealed).decode()}
        line = json.dumps(wire, separators=(",", ":")).encode()
        seeds[f"redis_{alg}"] = b"\x01" + kid.encode() + b"\n" + line
        wrong_field = b"\x03" + b"another-kid" + b"\n" + line
        seeds[f"redis_{alg}_other_field"] = wrong_field
    seeds["file_bad_alg"] = b'\x00{"kid":"a","alg":"RS256","created_at":1,"activate_at":1,"private_key":"AAAA"}'
    return seeds


def main():
    for name, data in COOKIES.items():
        write("cookie", name, data)
    for name, text in PATHS.items():
        write("path", name, text)
    for name, (pick, cookie, value) in SESSIONS.items():
        write("session", name, bytes([pick]) + cookie.encode() + b"\n" + value.encode())
    django_key = b"0123456789abcdefghijklmnopqrstuv"
    pickles = os.path.join(HERE, "corpus", "pickle")
    for name in ["session_p0", "session_p2", "session_p5", "scalars_p4", "model_p2"]:
        with open(os.path.join(pickles, name), "rb") as f:
            write("session", "django_" + name, b"\x02" + django_key + b"\n" + f.read())
    # config: a byte picking the mode (even: the text; odd: edits of a valid file).
    docs = open(os.path.join(ROOT, "docs", "configuration.md")).read()
    for i, block in enumerate(re.findall(r"\n```toml\n(.*?)\n```\n", docs, re.S)):
        write("config", f"docs_example_{i}", b"\x00" + block.encode())
    minimal = '[[route]]\nname = "orders"\npath_prefix = "/api/orders"\nupstreams = ["127.0.0.1:9001"]\n'
    write("config", "minimal", b"\x00" + minimal.encode())
    write("config", "syntax_error", b'\x00[server]\nlisten = \n[[route]]\nname = "a\n')
    write("config", "edits_valid", bytes([1, 0, 0, 0, 6, 1, 2, 2, 5, 3]))
    write("config", "edits_secret", bytes([1, 7, 0, 0, 4, 3, 1, 0, 2, 2]))
    for name, data in keyring_seeds().items():
        write("keyring", name, data)


if __name__ == "__main__":
    main()
