#!/usr/bin/env python3
"""Regenerates the pickle fixtures of exchange/src/pickle/tests.rs and the fuzz seeds.

Prints Rust `const` items (paste them between the FIXTURES markers in
exchange/src/pickle/tests.rs) and writes each pickle to fuzz/corpus/pickle/<name>.
The tests never run Python: the bytes are embedded. Nothing here unpickles anything.
"""

import datetime
import os
import pickle
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus", "pickle")
# The hostile payload's command. The tests assert this file never appears.
PWNED = "/tmp/sessiongate-pickle-test-pwned"


class Evil:
    """Unpickling this with CPython would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch " + PWNED,))


class Model:
    """Stands for a Django model instance: NEWOBJ (or copyreg) plus BUILD."""

    def __init__(self):
        self.pk = 3
        self.name = "thing"


class WithNewArgsEx:
    """Pickled with NEWOBJ_EX under protocol 4 and later."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __getnewargs_ex__(self):
        return ((1,), {"k": 2})


SESSION = {
    "_auth_user_id": "42",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "0f2c3b9d6c1e8a7b5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f",
    "roles": ["admin", "ops"],
    "email": "a@example.com",
    "n": 7,
    "big": 2**70,
    "f": 1.5,
    "t": (1, 2),
    "s": {1},
    "b": b"xy",
    "none": None,
    "nested": {"a": [1, {"b": True}]},
}

SHARED_LIST = ["a", "b"]
SHARED = {"x": SHARED_LIST, "y": SHARED_LIST, "n": {"z": SHARED_LIST}}

SCALARS = {
    "neg": -5,
    "i32max": 2**31 - 1,
    "past_i32": 2**31,
    "i64min": -(2**63),
    "u64max": 2**64 - 1,
    "negbig": -(2**70),
    "huge": 2**2100,
    "unicode": "h\u00e9llo \u2603 \U0001f600",
    "escapes": "a\\b\n\r\x00\x1a\"'",
    "long_text": "x" * 300,
    "long_bytes": b"y" * 300,
    "nan": float("nan"),
    "inf": float("-inf"),
    "tiny": 5e-324,
    "empty_list": [],
    "empty_dict": {},
    "empty_tuple": (),
    "one": (1,),
    "three": (1, 2, 3),
    "four": (1, 2, 3, 4),
    "frozen": frozenset([1]),
    "bytearray": bytearray(b"ab"),
    "bad_utf8_bytes": b"\xff\xfe",
    "f": False,
    7: "int key",
    -8: "negative int key",
    (1, 2): "tuple key",
    None: "none key",
    b"k": "bytes key",
}

MODEL = {"_auth_user_id": "5", "obj": Model(), "ex": WithNewArgsEx()}

RECURSIVE_LIST = []
RECURSIVE_LIST.append(RECURSIVE_LIST)
RECURSIVE = {"l": RECURSIVE_LIST}

DATETIME = {
    "_auth_user_id": "1",
    "last_login": datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
    "day": datetime.date(2024, 1, 2),
}

FIXTURES = []
for proto in range(0, 6):
    FIXTURES.append((f"SESSION_P{proto}", SESSION, proto))
    FIXTURES.append((f"SCALARS_P{proto}", SCALARS, proto))
for proto in (0, 2, 3, 4, 5):
    FIXTURES.append((f"EVIL_TOP_P{proto}", Evil(), proto))
    FIXTURES.append((f"EVIL_NESTED_P{proto}", {"_auth_user_id": "42", "x": Evil()}, proto))
    FIXTURES.append((f"MODEL_P{proto}", MODEL, proto))
for proto in (0, 2, 5):
    FIXTURES.append((f"SHARED_P{proto}", SHARED, proto))
    FIXTURES.append((f"DATETIME_P{proto}", DATETIME, proto))
    FIXTURES.append((f"RECURSIVE_P{proto}", RECURSIVE, proto))


def rust_bytes(data, indent="    "):
    tokens = []
    for b in data:
        c = chr(b)
        if c == "\\":
            tokens.append("\\\\")
        elif c == '"':
            tokens.append('\\"')
        elif 0x20 <= b < 0x7F:
            tokens.append(c)
        else:
            tokens.append(f"\\x{b:02x}")
    lines, line = [], ""
    for tok in tokens:
        if len(line) + len(tok) > 84:
            lines.append(line)
            line = ""
        if not line and tok == " ":
            tok = "\\x20"  # a continuation line's leading whitespace is skipped
        line += tok
    lines.append(line)
    return ("\\\n" + indent).join(lines)


def memo_bomb(levels):
    """`{'k': L30}`, Ln being ten references to L(n-1): the tests build the same bytes."""
    data = bytearray(b"\x80\x04}\x8c\x01k]\x940")
    for level in range(1, levels + 1):
        data += b"(" + bytes([ord("h"), level - 1]) * 10 + b"l\x94"
        if level < levels:
            data += b"0"
    return bytes(data + b"s.")


def main():
    os.makedirs(CORPUS, exist_ok=True)
    with open(os.path.join(CORPUS, "memo_bomb"), "wb") as f:
        f.write(memo_bomb(30))
    out = []
    for name, value, proto in FIXTURES:
        data = pickle.dumps(value, protocol=proto)
        with open(os.path.join(CORPUS, name.lower()), "wb") as f:
            f.write(data)
        out.append(f'const {name}: &[u8] = b"\\\n    {rust_bytes(data)}";\n')
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
