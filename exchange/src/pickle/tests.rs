//! Tests for the pickle decoder: pickles CPython wrote, hand-made edge cases, hostile
//! inputs (calls, memo bombs, deep nesting, lying lengths, truncation) and properties.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Limit, Limits, PickleError, decode};

/// What the hostile fixtures would `touch` if anything ran them.
const PWNED: &str = "/tmp/sessiongate-pickle-test-pwned";

fn check(name: &str, bytes: &[u8], expected: Result<Value, PickleError>) {
    check_with(name, bytes, Limits::default(), expected);
}

fn check_with(name: &str, bytes: &[u8], limits: Limits, expected: Result<Value, PickleError>) {
    assert_eq!(decode(bytes, limits), expected, "{name}");
}

fn limit(which: Limit) -> Result<Value, PickleError> {
    Err(PickleError::LimitExceeded(which))
}

// === pickles written by CPython 3.11 ===

/// The session dict of fuzz/gen_pickle_fixtures.py, as protocol `proto` decodes it.
fn session(proto: u8) -> Value {
    json!({
        "_auth_user_id": "42",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": "0f2c3b9d6c1e8a7b5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f",
        "roles": ["admin", "ops"],
        "email": "a@example.com",
        "n": 7,
        "big": null,
        "f": 1.5,
        "t": [1, 2],
        // Sets are calls before protocol 4, bytes before protocol 3.
        "s": if proto >= 4 { json!([1]) } else { Value::Null },
        "b": if proto >= 3 { json!("xy") } else { Value::Null },
        "none": null,
        "nested": {"a": [1, {"b": true}]},
    })
}

/// The scalars dict of fuzz/gen_pickle_fixtures.py, as protocol `proto` decodes it.
fn scalars(proto: u8) -> Value {
    json!({
        "neg": -5,
        "i32max": 2_147_483_647,
        "past_i32": 2_147_483_648_i64,
        "i64min": i64::MIN,
        "u64max": u64::MAX,
        "negbig": null,
        "huge": null,
        "unicode": "h\u{e9}llo \u{2603} \u{1f600}",
        "escapes": "a\\b\n\r\u{0}\u{1a}\"'",
        "long_text": "x".repeat(300),
        "long_bytes": if proto >= 3 { json!("y".repeat(300)) } else { Value::Null },
        "nan": null,
        "inf": null,
        "tiny": 5e-324,
        "empty_list": [],
        "empty_dict": {},
        "empty_tuple": [],
        "one": [1],
        "three": [1, 2, 3],
        "four": [1, 2, 3, 4],
        "frozen": if proto >= 4 { json!([1]) } else { Value::Null },
        "bytearray": if proto >= 5 { json!("ab") } else { Value::Null },
        "bad_utf8_bytes": null,
        "f": false,
        // Int keys become decimal strings; tuple, None and bytes keys are skipped.
        "7": "int key",
        "-8": "negative int key",
    })
}

#[test]
fn decodes_sessions_cpython_wrote() {
    let cases: [(&str, &[u8], u8); 6] = [
        ("protocol 0", SESSION_P0, 0),
        ("protocol 1", SESSION_P1, 1),
        ("protocol 2", SESSION_P2, 2),
        ("protocol 3", SESSION_P3, 3),
        ("protocol 4", SESSION_P4, 4),
        ("protocol 5", SESSION_P5, 5),
    ];
    for (name, bytes, proto) in cases {
        check(name, bytes, Ok(session(proto)));
    }
}

#[test]
fn decodes_scalars_cpython_wrote() {
    let cases: [(&str, &[u8], u8); 6] = [
        ("protocol 0", SCALARS_P0, 0),
        ("protocol 1", SCALARS_P1, 1),
        ("protocol 2", SCALARS_P2, 2),
        ("protocol 3", SCALARS_P3, 3),
        ("protocol 4", SCALARS_P4, 4),
        ("protocol 5", SCALARS_P5, 5),
    ];
    for (name, bytes, proto) in cases {
        check(name, bytes, Ok(scalars(proto)));
    }
}

#[test]
fn objects_built_by_calls_decode_to_null() {
    let model = json!({"_auth_user_id": "5", "obj": null, "ex": null});
    let datetime = json!({"_auth_user_id": "1", "last_login": null, "day": null});
    let shared = json!({"x": ["a", "b"], "y": ["a", "b"], "n": {"z": ["a", "b"]}});
    let cases: [(&str, &[u8], Value); 11] = [
        ("model p0 (copyreg._reconstructor)", MODEL_P0, model.clone()),
        ("model p2 (NEWOBJ, BUILD)", MODEL_P2, model.clone()),
        ("model p3", MODEL_P3, model.clone()),
        ("model p4 (NEWOBJ_EX)", MODEL_P4, model.clone()),
        ("model p5", MODEL_P5, model),
        ("datetime p0", DATETIME_P0, datetime.clone()),
        ("datetime p2", DATETIME_P2, datetime.clone()),
        ("datetime p5", DATETIME_P5, datetime),
        ("shared list p0 (PUT/GET)", SHARED_P0, shared.clone()),
        ("shared list p2 (BINPUT/BINGET)", SHARED_P2, shared.clone()),
        ("shared list p5 (MEMOIZE/BINGET)", SHARED_P5, shared),
    ];
    for (name, bytes, expected) in cases {
        check(name, bytes, Ok(expected));
    }
}

#[test]
fn hostile_calls_are_never_made() {
    let nested = json!({"_auth_user_id": "42", "x": null});
    let cases: [(&str, &[u8], Result<Value, PickleError>); 10] = [
        (
            "top level p0 (GLOBAL, REDUCE)",
            EVIL_TOP_P0,
            Err(PickleError::NotADict),
        ),
        ("top level p2", EVIL_TOP_P2, Err(PickleError::NotADict)),
        ("top level p3", EVIL_TOP_P3, Err(PickleError::NotADict)),
        (
            "top level p4 (STACK_GLOBAL)",
            EVIL_TOP_P4,
            Err(PickleError::NotADict),
        ),
        ("top level p5", EVIL_TOP_P5, Err(PickleError::NotADict)),
        ("nested p0", EVIL_NESTED_P0, Ok(nested.clone())),
        ("nested p2", EVIL_NESTED_P2, Ok(nested.clone())),
        ("nested p3", EVIL_NESTED_P3, Ok(nested.clone())),
        ("nested p4", EVIL_NESTED_P4, Ok(nested.clone())),
        ("nested p5", EVIL_NESTED_P5, Ok(nested)),
    ];
    for (name, bytes, expected) in cases {
        let result = decode(bytes, Limits::default());
        if let Err(error) = &result {
            assert!(!error.to_string().contains("touch"), "{name}: {error}");
        }
        assert_eq!(result, expected, "{name}");
        assert!(
            !std::path::Path::new(PWNED).exists(),
            "{name}: {PWNED} exists"
        );
    }
}

#[test]
fn every_truncated_prefix_is_an_error() {
    for (name, bytes) in all_fixtures() {
        for len in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..len], Limits::default()),
                Err(PickleError::Truncated),
                "{name}[..{len}]"
            );
        }
    }
}

#[test]
fn recursive_structures_hit_the_depth_limit() {
    for (name, bytes) in [
        ("p0", RECURSIVE_P0),
        ("p2", RECURSIVE_P2),
        ("p5", RECURSIVE_P5),
    ] {
        check(name, bytes, limit(Limit::Depth));
    }
}

fn all_fixtures() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("SESSION_P0", SESSION_P0),
        ("SESSION_P1", SESSION_P1),
        ("SESSION_P2", SESSION_P2),
        ("SESSION_P3", SESSION_P3),
        ("SESSION_P4", SESSION_P4),
        ("SESSION_P5", SESSION_P5),
        ("SCALARS_P0", SCALARS_P0),
        ("SCALARS_P1", SCALARS_P1),
        ("SCALARS_P2", SCALARS_P2),
        ("SCALARS_P3", SCALARS_P3),
        ("SCALARS_P4", SCALARS_P4),
        ("SCALARS_P5", SCALARS_P5),
        ("EVIL_TOP_P0", EVIL_TOP_P0),
        ("EVIL_TOP_P2", EVIL_TOP_P2),
        ("EVIL_TOP_P3", EVIL_TOP_P3),
        ("EVIL_TOP_P4", EVIL_TOP_P4),
        ("EVIL_TOP_P5", EVIL_TOP_P5),
        ("EVIL_NESTED_P0", EVIL_NESTED_P0),
        ("EVIL_NESTED_P2", EVIL_NESTED_P2),
        ("EVIL_NESTED_P3", EVIL_NESTED_P3),
        ("EVIL_NESTED_P4", EVIL_NESTED_P4),
        ("EVIL_NESTED_P5", EVIL_NESTED_P5),
        ("MODEL_P0", MODEL_P0),
        ("MODEL_P2", MODEL_P2),
        ("MODEL_P3", MODEL_P3),
        ("MODEL_P4", MODEL_P4),
        ("MODEL_P5", MODEL_P5),
        ("SHARED_P0", SHARED_P0),
        ("SHARED_P2", SHARED_P2),
        ("SHARED_P5", SHARED_P5),
        ("DATETIME_P0", DATETIME_P0),
        ("DATETIME_P2", DATETIME_P2),
        ("DATETIME_P5", DATETIME_P5),
        ("RECURSIVE_P0", RECURSIVE_P0),
        ("RECURSIVE_P2", RECURSIVE_P2),
        ("RECURSIVE_P5", RECURSIVE_P5),
    ]
}

// === hand-made pickles ===

/// `{'k': <value>}` in protocol 2 opcodes, with the value's opcodes given.
fn in_dict(value: &[u8]) -> Vec<u8> {
    [b"\x80\x02}U\x01k".as_slice(), value, b"s."].concat()
}

#[test]
fn scalar_opcodes() {
    let cases: [(&str, &[u8], Result<Value, PickleError>); 33] = [
        ("NONE", b"N", Ok(json!(null))),
        ("NEWTRUE", b"\x88", Ok(json!(true))),
        ("NEWFALSE", b"\x89", Ok(json!(false))),
        ("INT 01 is True", b"I01\n", Ok(json!(true))),
        ("INT 00 is False", b"I00\n", Ok(json!(false))),
        ("INT", b"I-12\n", Ok(json!(-12))),
        ("INT +", b"I+12\n", Ok(json!(12))),
        ("INT garbage", b"I1x\n", Err(PickleError::BadArgument { offset: 6 })),
        ("INT empty", b"I\n", Err(PickleError::BadArgument { offset: 6 })),
        ("LONG", b"L18446744073709551615L\n", Ok(json!(u64::MAX))),
        ("LONG beyond u64", b"L18446744073709551616L\n", Ok(json!(null))),
        ("LONG below i64", b"L-9223372036854775809\n", Ok(json!(null))),
        ("BININT", b"J\xff\xff\xff\xff", Ok(json!(-1))),
        ("BININT1", b"K\xff", Ok(json!(255))),
        ("BININT2", b"M\xff\xff", Ok(json!(65535))),
        ("LONG1 empty is 0", b"\x8a\x00", Ok(json!(0))),
        ("LONG1 sign-extended -1", b"\x8a\x03\xff\xff\xff", Ok(json!(-1))),
        ("LONG1 128", b"\x8a\x02\x80\x00", Ok(json!(128))),
        ("LONG1 2**64", b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01", Ok(json!(null))),
        (
            "LONG1 long zero padding",
            b"\x8a\x14\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            Ok(json!(7)),
        ),
        ("LONG4", b"\x8b\x01\x00\x00\x00\x05", Ok(json!(5))),
        ("LONG4 negative length", b"\x8b\xff\xff\xff\xff", Err(PickleError::BadArgument { offset: 6 })),
        ("FLOAT", b"F1e3\n", Ok(json!(1000.0))),
        ("FLOAT nan", b"Fnan\n", Ok(json!(null))),
        ("FLOAT garbage", b"F1.5x\n", Err(PickleError::BadArgument { offset: 6 })),
        ("BINFLOAT", b"G\x3f\xf8\x00\x00\x00\x00\x00\x00", Ok(json!(1.5))),
        ("BINFLOAT inf", b"G\x7f\xf0\x00\x00\x00\x00\x00\x00", Ok(json!(null))),
        ("STRING", b"S'a\\x41\\n\\101\\q\"'\n", Ok(json!("aA\nA\\q\""))),
        ("STRING double quotes", b"S\"it's\"\n", Ok(json!("it's"))),
        ("STRING unquoted", b"Sabc\n", Err(PickleError::BadArgument { offset: 6 })),
        ("STRING mismatched quotes", b"S'abc\"\n", Err(PickleError::BadArgument { offset: 6 })),
        ("STRING bad \\x", b"S'\\x4'\n", Err(PickleError::BadArgument { offset: 6 })),
        ("STRING trailing backslash", b"S'\\'\n", Err(PickleError::BadArgument { offset: 6 })),
    ];
    for (name, value, expected) in cases {
        check(name, &in_dict(value), expected.map(|v| json!({ "k": v })));
    }
}

#[test]
fn text_and_bytes_opcodes() {
    let cases: [(&str, &[u8], Result<Value, PickleError>); 20] = [
        ("BINSTRING", b"T\x02\x00\x00\x00hi", Ok(json!("hi"))),
        (
            "BINSTRING negative length",
            b"T\xfe\xff\xff\xff",
            Err(PickleError::BadArgument { offset: 6 }),
        ),
        ("SHORT_BINSTRING not UTF-8", b"U\x01\xff", Ok(json!(null))),
        ("SHORT_BINBYTES", b"C\x02xy", Ok(json!("xy"))),
        ("BINBYTES", b"B\x02\x00\x00\x00xy", Ok(json!("xy"))),
        (
            "BINBYTES8",
            b"\x8e\x02\x00\x00\x00\x00\x00\x00\x00xy",
            Ok(json!("xy")),
        ),
        (
            "BYTEARRAY8",
            b"\x96\x02\x00\x00\x00\x00\x00\x00\x00ab",
            Ok(json!("ab")),
        ),
        (
            "UNICODE",
            b"Vh\xe9\\u2603\\U0001f600\n",
            Ok(json!("h\u{e9}\u{2603}\u{1f600}")),
        ),
        (
            "UNICODE paired backslashes",
            b"V\\\\u0041\n",
            Ok(json!("\\\\u0041")),
        ),
        ("UNICODE other escape kept", b"V\\n\n", Ok(json!("\\n"))),
        ("UNICODE trailing backslash", b"Va\\\n", Ok(json!("a\\"))),
        (
            "UNICODE short \\u",
            b"V\\u41\n",
            Err(PickleError::InvalidUtf8 { offset: 6 }),
        ),
        (
            "UNICODE surrogate",
            b"V\\ud800\n",
            Err(PickleError::InvalidUtf8 { offset: 6 }),
        ),
        (
            "UNICODE beyond U+10FFFF",
            b"V\\U00110000\n",
            Err(PickleError::InvalidUtf8 { offset: 6 }),
        ),
        (
            "BINUNICODE",
            b"X\x03\x00\x00\x00\xe2\x98\x83",
            Ok(json!("\u{2603}")),
        ),
        (
            "BINUNICODE not UTF-8",
            b"X\x01\x00\x00\x00\xff",
            Err(PickleError::InvalidUtf8 { offset: 6 }),
        ),
        (
            "BINUNICODE surrogate (surrogatepass)",
            b"X\x03\x00\x00\x00\xed\xa0\x80",
            Err(PickleError::InvalidUtf8 { offset: 6 }),
        ),
        ("SHORT_BINUNICODE", b"\x8c\x02ok", Ok(json!("ok"))),
        (
            "BINUNICODE8",
            b"\x8d\x02\x00\x00\x00\x00\x00\x00\x00ok",
            Ok(json!("ok")),
        ),
        (
            "SHORT_BINUNICODE past the end",
            b"\x8c\x09ok",
            Err(PickleError::Truncated),
        ),
    ];
    for (name, value, expected) in cases {
        check(name, &in_dict(value), expected.map(|v| json!({ "k": v })));
    }
}

#[test]
fn lying_lengths_fail_before_allocating() {
    let cases: [(&str, Vec<u8>); 7] = [
        (
            "BINUNICODE8 2**60",
            [b"}U\x01k\x8d".as_slice(), &(1_u64 << 60).to_le_bytes()].concat(),
        ),
        (
            "BINUNICODE8 u64::MAX",
            [b"}U\x01k\x8d".as_slice(), &u64::MAX.to_le_bytes()].concat(),
        ),
        (
            "BINBYTES8 2**60",
            [b"}U\x01k\x8e".as_slice(), &(1_u64 << 60).to_le_bytes()].concat(),
        ),
        (
            "BYTEARRAY8 2**63",
            [b"}U\x01k\x96".as_slice(), &(1_u64 << 63).to_le_bytes()].concat(),
        ),
        ("BINUNICODE 4 GiB", b"}U\x01kX\xff\xff\xff\xff".to_vec()),
        ("LONG4 2 GiB", b"}U\x01k\x8b\xff\xff\xff\x7f".to_vec()),
        (
            "FRAME 2**60",
            [
                b"\x80\x04\x95".as_slice(),
                &(1_u64 << 60).to_le_bytes(),
                b"}.",
            ]
            .concat(),
        ),
    ];
    for (name, bytes) in cases {
        check(name, &bytes, Err(PickleError::Truncated));
    }
}

#[test]
fn structure_opcodes() {
    let cases: [(&str, &[u8], Result<Value, PickleError>); 37] = [
        ("empty dict", b"}.", Ok(json!({}))),
        ("protocol 5", b"\x80\x05}.", Ok(json!({}))),
        ("protocol 6", b"\x80\x06}.", Err(PickleError::UnsupportedProtocol { offset: 0 })),
        ("empty input", b"", Err(PickleError::Truncated)),
        ("no STOP", b"}", Err(PickleError::Truncated)),
        ("STOP on an empty stack", b".", Err(PickleError::StackUnderflow { offset: 0 })),
        ("bytes after STOP", b"}..", Err(PickleError::TrailingBytes { offset: 2 })),
        ("list at the top", b"].", Err(PickleError::NotADict)),
        ("None at the top", b"N.", Err(PickleError::NotADict)),
        ("unknown opcode", b"}\xff.", Err(PickleError::UnknownOpcode { offset: 1 })),
        ("NEXT_BUFFER", b"}\x97.", Err(PickleError::OutOfBandBuffer { offset: 1 })),
        ("READONLY_BUFFER", b"}\x98.", Err(PickleError::OutOfBandBuffer { offset: 1 })),
        ("DICT", b"(U\x01kU\x01vd.", Ok(json!({"k": "v"}))),
        ("DICT odd items", b"(U\x01kd.", Err(PickleError::WrongType { offset: 4, expected: "key and value pairs" })),
        ("SETITEMS odd items", b"}(U\x01ku.", Err(PickleError::WrongType { offset: 5, expected: "key and value pairs" })),
        ("duplicate key: last wins", b"}(U\x01kK\x01U\x01kK\x02u.", Ok(json!({"k": 2}))),
        (
            "keys: int as decimal, others skipped",
            b"}(NK\x01K\x02K\x03\x88K\x04G\x3f\xf8\x00\x00\x00\x00\x00\x00K\x05\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00K\x06)K\x07u.",
            Ok(json!({"2": 3, "9223372036854775808": 6})),
        ),
        ("LIST", b"}U\x01k(K\x01K\x02ls.", Ok(json!({"k": [1, 2]}))),
        ("TUPLE", b"}U\x01k(K\x01ts.", Ok(json!({"k": [1]}))),
        ("TUPLE3", b"}U\x01kK\x01K\x02K\x03\x87s.", Ok(json!({"k": [1, 2, 3]}))),
        ("TUPLE2 across a mark", b"}U\x01kK\x01(K\x02\x86s.", Err(PickleError::StackUnderflow { offset: 9 })),
        ("EMPTY_SET ADDITEMS", b"}U\x01k\x8f(K\x01K\x02\x90s.", Ok(json!({"k": [1, 2]}))),
        ("FROZENSET", b"}U\x01k(K\x01\x91s.", Ok(json!({"k": [1]}))),
        ("APPEND to a dict", b"}K\x01a.", Err(PickleError::WrongType { offset: 3, expected: "a list" })),
        ("APPEND to a tuple", b"})K\x01a.", Err(PickleError::WrongType { offset: 4, expected: "a list" })),
        ("SETITEM on a list", b"]K\x01K\x02s.", Err(PickleError::WrongType { offset: 5, expected: "a dict" })),
        ("ADDITEMS on a list", b"](\x90.", Err(PickleError::WrongType { offset: 2, expected: "a set" })),
        ("SETITEM below a mark", b"}(U\x01ks.", Err(PickleError::StackUnderflow { offset: 5 })),
        ("POP pops the mark on an empty frame", b"}(0.", Ok(json!({}))),
        ("POP_MARK", b"}(K\x01K\x021.", Ok(json!({}))),
        ("POP_MARK without a mark", b"}1.", Err(PickleError::StackUnderflow { offset: 1 })),
        ("DUP shares the object", b"}U\x01k]2K\x01a0s.", Ok(json!({"k": [1]}))),
        ("DUP on an empty stack", b"2.", Err(PickleError::StackUnderflow { offset: 0 })),
        ("PUT and GET lines", b"}p0\n0g0\n.", Ok(json!({}))),
        ("PUT negative", b"}p-1\n.", Err(PickleError::BadArgument { offset: 1 })),
        ("LONG_BINPUT and LONG_BINGET", b"}r\x05\x00\x00\x000j\x05\x00\x00\x00.", Ok(json!({}))),
        ("BINGET of nothing", b"}h\x00.", Err(PickleError::MissingMemo { offset: 1 })),
    ];
    for (name, bytes, expected) in cases {
        check(name, bytes, expected);
    }
}

#[test]
fn call_opcodes_leave_markers() {
    let cases: [(&str, &[u8], Result<Value, PickleError>); 14] = [
        ("GLOBAL", b"cos\nsystem\n", Ok(json!(null))),
        (
            "GLOBAL truncated",
            b"cos\nsystem",
            Err(PickleError::Truncated),
        ),
        (
            "STACK_GLOBAL",
            b"\x8c\x02os\x8c\x06system\x93",
            Ok(json!(null)),
        ),
        ("REDUCE", b"cos\nsystem\n\x8c\x02ls\x85R", Ok(json!(null))),
        (
            "BUILD on a marker keeps it",
            b"cm\nC\n)\x81}b",
            Ok(json!(null)),
        ),
        ("BUILD on data makes it a marker", b"}}b", Ok(json!(null))),
        (
            "APPENDS on a marker is dropped",
            b"cm\nf\n(K\x01eK\x02a",
            Ok(json!(null)),
        ),
        (
            "SETITEMS on a marker is dropped",
            b"cm\nf\n(K\x01K\x02uK\x03K\x04s",
            Ok(json!(null)),
        ),
        ("INST", b"(K\x01im\nf\n", Ok(json!(null))),
        ("OBJ", b"(cm\nf\nK\x01o", Ok(json!(null))),
        ("NEWOBJ_EX", b"cm\nf\n)}\x92", Ok(json!(null))),
        (
            "EXT1, EXT2, EXT4",
            b"\x82\x01\x83\x01\x00\x84\x01\x00\x00\x00\x87",
            Ok(json!([null, null, null])),
        ),
        ("PERSID", b"Pid\n", Ok(json!(null))),
        ("BINPERSID", b"K\x01Q", Ok(json!(null))),
    ];
    for (name, value, expected) in cases {
        check(name, &in_dict(value), expected.map(|v| json!({ "k": v })));
    }
    check(
        "OBJ without a class",
        b"}(o.",
        Err(PickleError::StackUnderflow { offset: 2 }),
    );
    check(
        "BUILD on the top-level dict",
        b"}}b.",
        Err(PickleError::NotADict),
    );
}

// === limits ===

/// `{'k': L30}` where `L0 = []` and `Ln` is a list of ten references to `L(n-1)`:
/// 10**30 values once expanded, from a few hundred bytes. With `dup`, each level holds
/// one memo read and nine `DUP`s instead.
fn memo_bomb(levels: u32, dup: bool) -> Vec<u8> {
    let mut bytes = b"\x80\x04}\x8c\x01k]\x940".to_vec();
    for level in 1..=levels {
        bytes.push(b'(');
        let previous = u8::try_from(level - 1).expect("under 256 levels");
        if dup {
            bytes.extend([b'h', previous]);
            bytes.extend([b'2'; 9]);
        } else {
            for _ in 0..10 {
                bytes.extend([b'h', previous]);
            }
        }
        bytes.extend(b"l\x94");
        if level < levels {
            bytes.push(b'0');
        }
    }
    bytes.extend(b"s.");
    bytes
}

#[test]
fn memo_bombs_hit_the_values_limit() {
    let deep = Limits {
        max_depth: 128,
        ..Limits::default()
    };
    let cases = [
        (
            "30 levels of memo reads",
            memo_bomb(30, false),
            Limits::default(),
        ),
        ("30 levels of DUP", memo_bomb(30, true), Limits::default()),
        ("30 levels, depth 128", memo_bomb(30, false), deep),
        ("10 levels", memo_bomb(10, false), Limits::default()),
    ];
    for (name, bytes, limits) in cases {
        assert!(bytes.len() < 1024, "{name}: {} bytes", bytes.len());
        check_with(name, &bytes, limits, limit(Limit::Values));
    }
    // One 20 000-item list read back 20 000 times: 400 million values from 60 KB.
    let mut quadratic = b"\x80\x04}\x8c\x01k(".to_vec();
    quadratic.extend([b'N'; 20_000]);
    quadratic.extend(b"l\x940(");
    quadratic.extend(b"h\x00".repeat(20_000));
    quadratic.extend(b"ls.");
    let many = Limits {
        max_values: 1 << 20,
        ..Limits::default()
    };
    check("quadratic memo reads", &quadratic, limit(Limit::Values));
    check_with(
        "quadratic memo reads, 1M objects",
        &quadratic,
        many,
        limit(Limit::Values),
    );
    // `DUP` and `APPEND` share the list rather than copy it: the list contains itself.
    let doubling = [b"\x80\x04}\x8c\x01k]".as_slice(), &b"2a".repeat(40), b"s."].concat();
    check("DUP doubling", &doubling, limit(Limit::Depth));
    // Three levels expand to the dict, its entry, L3, 10 L2, 100 L1 and 1000 L0.
    let small = memo_bomb(3, false);
    let values = |max_values| Limits {
        max_values,
        ..Limits::default()
    };
    let decoded = decode(&small, values(1113)).expect("1113 values fit");
    assert_eq!(
        decoded["k"][9][9],
        json!([[], [], [], [], [], [], [], [], [], []])
    );
    check_with(
        "one value short",
        &small,
        values(1112),
        limit(Limit::Values),
    );
}

#[test]
fn deep_nesting_fails_without_recursion() {
    const N: usize = 100_000;
    let many = Limits {
        max_values: 10 * N,
        ..Limits::default()
    };
    let nested_lists = [b"}U\x01k".as_slice(), &[b']'; N], &[b'a'; N - 1], b"s."].concat();
    let nested_dicts = [b"}".as_slice(), &b"U\x01k}".repeat(N), &[b's'; N], b"."].concat();
    let marks = [b"}".as_slice(), &[b'('; N]].concat();
    let cases = [
        (
            "100k nested lists",
            &nested_lists,
            many,
            limit(Limit::Depth),
        ),
        (
            "100k nested lists, default limits",
            &nested_lists,
            Limits::default(),
            limit(Limit::Values),
        ),
        (
            "100k nested dicts",
            &nested_dicts,
            many,
            limit(Limit::Depth),
        ),
        ("100k marks", &marks, many, limit(Limit::Depth)),
    ];
    for (name, bytes, limits, expected) in cases {
        check_with(name, bytes, limits, expected);
    }
}

#[test]
fn limits_are_exact() {
    // {'k': 'abcdef'}: 3 values (the dict, the entry, the string) and 7 bytes.
    let bytes = b"}U\x01kU\x06abcdefs.";
    let ok = Ok(json!({"k": "abcdef"}));
    let with = |max_depth, max_values, max_bytes| Limits {
        max_depth,
        max_values,
        max_bytes,
    };
    let cases = [
        ("at every limit", with(1, 3, 7), ok.clone()),
        ("depth 0", with(0, 3, 7), limit(Limit::Depth)),
        ("one value short", with(1, 2, 7), limit(Limit::Values)),
        ("one byte short", with(1, 3, 6), limit(Limit::Bytes)),
        ("depth clamped to the ceiling", with(usize::MAX, 3, 7), ok),
    ];
    for (name, limits, expected) in cases {
        check_with(name, bytes, limits, expected);
    }
    let nested = b"}U\x01k]s.";
    check_with(
        "a list needs depth 2",
        nested,
        with(1, 10, 10),
        limit(Limit::Depth),
    );
    check_with("depth 2", nested, with(2, 10, 10), Ok(json!({"k": []})));
}

#[test]
fn error_kinds_are_distinct() {
    let errors = [
        PickleError::Truncated,
        PickleError::UnknownOpcode { offset: 0 },
        PickleError::UnsupportedProtocol { offset: 0 },
        PickleError::OutOfBandBuffer { offset: 0 },
        PickleError::StackUnderflow { offset: 0 },
        PickleError::MissingMemo { offset: 0 },
        PickleError::BadArgument { offset: 0 },
        PickleError::WrongType {
            offset: 0,
            expected: "a list",
        },
        PickleError::InvalidUtf8 { offset: 0 },
        PickleError::TrailingBytes { offset: 0 },
        PickleError::LimitExceeded(Limit::Depth),
        PickleError::LimitExceeded(Limit::Values),
        PickleError::LimitExceeded(Limit::Bytes),
        PickleError::NotADict,
    ];
    let kinds: std::collections::HashSet<_> = errors.iter().map(PickleError::kind).collect();
    assert_eq!(kinds.len(), errors.len());
}

// === properties ===

/// A small pickle writer for the round-trip property: protocol 2 (`BINPUT`, `BINGET`,
/// `BINUNICODE`, lists only) or protocol 4 (`FRAME`, `MEMOIZE`, `SHORT_BINUNICODE`,
/// short arrays as tuples). Repeated strings are written once and read from the memo.
struct Encoder {
    proto: u8,
    out: Vec<u8>,
    strings: HashMap<String, u32>,
    memo_len: u32,
}

impl Encoder {
    fn encode(value: &Value, proto: u8) -> Vec<u8> {
        let mut encoder = Self {
            proto,
            out: Vec::new(),
            strings: HashMap::new(),
            memo_len: 0,
        };
        encoder.value(value);
        encoder.out.push(b'.');
        let mut bytes = vec![0x80, proto];
        if proto >= 4 {
            bytes.push(0x95);
            bytes.extend((encoder.out.len() as u64).to_le_bytes());
        }
        bytes.extend(encoder.out);
        bytes
    }

    fn memoize(&mut self) -> u32 {
        let index = self.memo_len;
        self.memo_len += 1;
        if self.proto >= 4 {
            self.out.push(0x94);
        } else if let Ok(short) = u8::try_from(index) {
            self.out.extend([b'q', short]);
        } else {
            self.out.push(b'r');
            self.out.extend(index.to_le_bytes());
        }
        index
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.out.push(b'N'),
            Value::Bool(true) => self.out.push(0x88),
            Value::Bool(false) => self.out.push(0x89),
            Value::Number(number) => self.number(number),
            Value::String(text) => self.string(text),
            Value::Array(items) if self.proto >= 4 && items.len() <= 3 => {
                if items.is_empty() {
                    self.out.push(b')');
                } else {
                    items.iter().for_each(|item| self.value(item));
                    self.out.push(0x84 + items.len() as u8);
                }
                self.memoize();
            }
            Value::Array(items) => {
                self.out.push(b']');
                self.memoize();
                match items.as_slice() {
                    [] => {}
                    [item] => {
                        self.value(item);
                        self.out.push(b'a');
                    }
                    items => {
                        self.out.push(b'(');
                        items.iter().for_each(|item| self.value(item));
                        self.out.push(b'e');
                    }
                }
            }
            Value::Object(map) => {
                self.out.push(b'}');
                self.memoize();
                if !map.is_empty() {
                    self.out.push(b'(');
                    for (key, value) in map {
                        self.string(key);
                        self.value(value);
                    }
                    self.out.push(b'u');
                }
            }
        }
    }

    fn number(&mut self, number: &serde_json::Number) {
        if let Some(int) = number.as_i64() {
            if let Ok(small) = u8::try_from(int) {
                self.out.extend([b'K', small]);
            } else if let Ok(medium) = u16::try_from(int) {
                self.out.push(b'M');
                self.out.extend(medium.to_le_bytes());
            } else if let Ok(word) = i32::try_from(int) {
                self.out.push(b'J');
                self.out.extend(word.to_le_bytes());
            } else {
                self.long1(i128::from(int));
            }
        } else if let Some(int) = number.as_u64() {
            self.long1(i128::from(int));
        } else if let Some(float) = number.as_f64() {
            self.out.push(b'G');
            self.out.extend(float.to_be_bytes());
        }
    }

    /// `LONG1` with the fewest two's complement bytes, as CPython writes it.
    fn long1(&mut self, int: i128) {
        let bytes = int.to_le_bytes();
        let mut len = bytes.len();
        while len > 1 {
            let (last, next) = (bytes[len - 1], bytes[len - 2]);
            if (last == 0 && next & 0x80 == 0) || (last == 0xff && next & 0x80 != 0) {
                len -= 1;
            } else {
                break;
            }
        }
        self.out.extend([0x8a, len as u8]);
        self.out.extend(&bytes[..len]);
    }

    fn string(&mut self, text: &str) {
        if let Some(&index) = self.strings.get(text) {
            match u8::try_from(index) {
                Ok(short) => self.out.extend([b'h', short]),
                Err(_) => {
                    self.out.push(b'j');
                    self.out.extend(index.to_le_bytes());
                }
            }
            return;
        }
        match u8::try_from(text.len()) {
            Ok(short) if self.proto >= 4 => self.out.extend([0x8c, short]),
            _ => {
                self.out.push(b'X');
                self.out.extend((text.len() as u32).to_le_bytes());
            }
        }
        self.out.extend(text.as_bytes());
        let index = self.memoize();
        self.strings.insert(text.to_owned(), index);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof!["[a-c]{0,2}", ".{0,20}", "[x]{250,300}"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 200, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            json_object(inner),
        ]
    })
}

fn json_object(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    let key = prop_oneof!["[a-c]{1,2}", ".{0,12}"];
    prop::collection::btree_map(key, values, 0..8)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// Opcode bytes, so random input gets past the first byte more often.
const OPCODES: &[u8] = b"(.0124FIJKLMNPQRSTUVXabcd}eghijl]opqrst)uGBC\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98";

fn pickle_ish() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![prop::sample::select(OPCODES), any::<u8>()];
    prop::collection::vec(byte, 0..512)
}

proptest! {
    #[test]
    fn round_trips_through_protocol_2_and_4(value in json_object(json_value())) {
        for proto in [2, 4] {
            let bytes = Encoder::encode(&value, proto);
            let limits = Limits { max_values: 1 << 20, max_bytes: 1 << 24, ..Limits::default() };
            prop_assert_eq!(decode(&bytes, limits), Ok(value.clone()), "protocol {}", proto);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, Limits::default());
    }

    #[test]
    fn opcode_soup_never_panics(bytes in pickle_ish()) {
        let _ = decode(&bytes, Limits::default());
        let _ = decode(&[b"\x80\x04}".as_slice(), &bytes].concat(), Limits::default());
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3_u8), 1..8),
    ) {
        let fixtures = all_fixtures();
        let mut bytes = fixtures[which.index(fixtures.len())].1.to_vec();
        for (at, byte, how) in edits {
            let at = at.index(bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        let _ = decode(&bytes, Limits::default());
    }
}

// === fixtures ===
//
// Written by `python3 fuzz/gen_pickle_fixtures.py` (CPython 3.11), which also seeds
// fuzz/corpus/pickle/. Tests never run Python.

const SESSION_P0: &[u8] = b"\
    (dp0\x0aV_auth_user_id\x0ap1\x0aV42\x0ap2\x0asV_auth_user_backend\x0ap3\x0aVdjango.c\
    ontrib.auth.backends.ModelBackend\x0ap4\x0asV_auth_user_hash\x0ap5\x0aV0f2c3b9d6c1e8\
    a7b5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f\x0ap6\x0asVroles\x0ap7\x0a(lp8\
    \x0aVadmin\x0ap9\x0aaVops\x0ap10\x0aasVemail\x0ap11\x0aVa@example.com\x0ap12\x0asVn\
    \x0ap13\x0aI7\x0asVbig\x0ap14\x0aL1180591620717411303424L\x0asVf\x0ap15\x0aF1.5\x0as\
    Vt\x0ap16\x0a(I1\x0aI2\x0atp17\x0asVs\x0ap18\x0ac__builtin__\x0aset\x0ap19\x0a((lp20\
    \x0aI1\x0aatp21\x0aRp22\x0asVb\x0ap23\x0ac_codecs\x0aencode\x0ap24\x0a(Vxy\x0ap25\
    \x0aVlatin1\x0ap26\x0atp27\x0aRp28\x0asVnone\x0ap29\x0aNsVnested\x0ap30\x0a(dp31\x0a\
    Va\x0ap32\x0a(lp33\x0aI1\x0aa(dp34\x0ag23\x0aI01\x0asass.";
const SCALARS_P0: &[u8] = b"\
    (dp0\x0aVneg\x0ap1\x0aI-5\x0asVi32max\x0ap2\x0aI2147483647\x0asVpast_i32\x0ap3\x0aL2\
    147483648L\x0asVi64min\x0ap4\x0aL-9223372036854775808L\x0asVu64max\x0ap5\x0aL1844674\
    4073709551615L\x0asVnegbig\x0ap6\x0aL-1180591620717411303424L\x0asVhuge\x0ap7\x0aL14\
    554285650048630936189023844933064972880944205921705634594558765474935687622524125920\
    961121874445691118538159955887574637547510391404866929774571892177342782343315841912\
    076553661019821384015759855485389225649975402490196641168318999150104247608845967972\
    798198694541804320274866124821174833982509190335174467627930429399116544304369172677\
    070020697287955090819664042533892157129331656855987084512113332806713217070123996799\
    583521268238416888147139508172082937617498945082597196649465706489934027614076979408\
    177779637114354728780748374038537533465966842488213314066139444305874765548360314414\
    1890006567217223554270198636103730385125376L\x0asVunicode\x0ap8\x0aVh\xe9llo \\u2603\
    \x20\\U0001f600\x0ap9\x0asVescapes\x0ap10\x0aVa\\u005cb\\u000a\\u000d\\u0000\\u001a\
    \"'\x0ap11\x0asVlong_text\x0ap12\x0aVxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    x\x0ap13\x0asVlong_bytes\x0ap14\x0ac_codecs\x0aencode\x0ap15\x0a(Vyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x0ap16\x0aVlatin1\x0ap17\x0atp18\x0aRp19\x0asVnan\x0a\
    p20\x0aFnan\x0asVinf\x0ap21\x0aF-inf\x0asVtiny\x0ap22\x0aF5e-324\x0asVempty_list\x0a\
    p23\x0a(lp24\x0asVempty_dict\x0ap25\x0a(dp26\x0asVempty_tuple\x0ap27\x0a(tsVone\x0ap\
    28\x0a(I1\x0atp29\x0asVthree\x0ap30\x0a(I1\x0aI2\x0aI3\x0atp31\x0asVfour\x0ap32\x0a(\
    I1\x0aI2\x0aI3\x0aI4\x0atp33\x0asVfrozen\x0ap34\x0ac__builtin__\x0afrozenset\x0ap35\
    \x0a((lp36\x0aI1\x0aatp37\x0aRp38\x0asVbytearray\x0ap39\x0ac__builtin__\x0abytearray\
    \x0ap40\x0a(g15\x0a(Vab\x0ap41\x0ag17\x0atp42\x0aRp43\x0atp44\x0aRp45\x0asVbad_utf8_\
    bytes\x0ap46\x0ag15\x0a(V\xff\xfe\x0ap47\x0ag17\x0atp48\x0aRp49\x0asVf\x0ap50\x0aI00\
    \x0asI7\x0aVint key\x0ap51\x0asI-8\x0aVnegative int key\x0ap52\x0as(I1\x0aI2\x0atp53\
    \x0aVtuple key\x0ap54\x0asNVnone key\x0ap55\x0asg15\x0a(Vk\x0ap56\x0ag17\x0atp57\x0a\
    Rp58\x0aVbytes key\x0ap59\x0as.";
const SESSION_P1: &[u8] = b"\
    }q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x02\x00\x00\x0042q\x02X\x12\x00\x00\x00_\
    auth_user_backendq\x03X)\x00\x00\x00django.contrib.auth.backends.ModelBackendq\x04X\
    \x0f\x00\x00\x00_auth_user_hashq\x05X@\x00\x00\x000f2c3b9d6c1e8a7b5f4d3c2b1a0f9e8d7c\
    6b5a4f3e2d1c0b9a8f7e6d5c4b3a2fq\x06X\x05\x00\x00\x00rolesq\x07]q\x08(X\x05\x00\x00\
    \x00adminq\x09X\x03\x00\x00\x00opsq\x0aeX\x05\x00\x00\x00emailq\x0bX\x0d\x00\x00\x00\
    a@example.comq\x0cX\x01\x00\x00\x00nq\x0dK\x07X\x03\x00\x00\x00bigq\x0eL118059162071\
    7411303424L\x0aX\x01\x00\x00\x00fq\x0fG?\xf8\x00\x00\x00\x00\x00\x00X\x01\x00\x00\
    \x00tq\x10(K\x01K\x02tq\x11X\x01\x00\x00\x00sq\x12c__builtin__\x0aset\x0aq\x13(]q\
    \x14K\x01atq\x15Rq\x16X\x01\x00\x00\x00bq\x17c_codecs\x0aencode\x0aq\x18(X\x02\x00\
    \x00\x00xyq\x19X\x06\x00\x00\x00latin1q\x1atq\x1bRq\x1cX\x04\x00\x00\x00noneq\x1dNX\
    \x06\x00\x00\x00nestedq\x1e}q\x1fX\x01\x00\x00\x00aq ]q!(K\x01}q\"h\x17I01\x0asesu.";
const SCALARS_P1: &[u8] = b"\
    }q\x00(X\x03\x00\x00\x00negq\x01J\xfb\xff\xff\xffX\x06\x00\x00\x00i32maxq\x02J\xff\
    \xff\xff\x7fX\x08\x00\x00\x00past_i32q\x03L2147483648L\x0aX\x06\x00\x00\x00i64minq\
    \x04L-9223372036854775808L\x0aX\x06\x00\x00\x00u64maxq\x05L18446744073709551615L\x0a\
    X\x06\x00\x00\x00negbigq\x06L-1180591620717411303424L\x0aX\x04\x00\x00\x00hugeq\x07L\
    145542856500486309361890238449330649728809442059217056345945587654749356876225241259\
    209611218744456911185381599558875746375475103914048669297745718921773427823433158419\
    120765536610198213840157598554853892256499754024901966411683189991501042476088459679\
    727981986945418043202748661248211748339825091903351744676279304293991165443043691726\
    770700206972879550908196640425338921571293316568559870845121133328067132170701239967\
    995835212682384168881471395081720829376174989450825971966494657064899340276140769794\
    081777796371143547287807483740385375334659668424882133140661394443058747655483603144\
    141890006567217223554270198636103730385125376L\x0aX\x07\x00\x00\x00unicodeq\x08X\x0f\
    \x00\x00\x00h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80q\x09X\x07\x00\x00\x00escapesq\
    \x0aX\x09\x00\x00\x00a\\b\x0a\x0d\x00\x1a\"'q\x0bX\x09\x00\x00\x00long_textq\x0cX,\
    \x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x0dX\x0a\x00\x00\x00lo\
    ng_bytesq\x0ec_codecs\x0aencode\x0aq\x0f(X,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyq\x10X\x06\x00\x00\x00latin1q\x11tq\x12Rq\x13X\x03\x00\x00\x00nan\
    q\x14G\x7f\xf8\x00\x00\x00\x00\x00\x00X\x03\x00\x00\x00infq\x15G\xff\xf0\x00\x00\x00\
    \x00\x00\x00X\x04\x00\x00\x00tinyq\x16G\x00\x00\x00\x00\x00\x00\x00\x01X\x0a\x00\x00\
    \x00empty_listq\x17]q\x18X\x0a\x00\x00\x00empty_dictq\x19}q\x1aX\x0b\x00\x00\x00empt\
    y_tupleq\x1b)X\x03\x00\x00\x00oneq\x1c(K\x01tq\x1dX\x05\x00\x00\x00threeq\x1e(K\x01K\
    \x02K\x03tq\x1fX\x04\x00\x00\x00fourq (K\x01K\x02K\x03K\x04tq!X\x06\x00\x00\x00froze\
    nq\"c__builtin__\x0afrozenset\x0aq#(]q$K\x01atq%Rq&X\x09\x00\x00\x00bytearrayq'c__bu\
    iltin__\x0abytearray\x0aq((h\x0f(X\x02\x00\x00\x00abq)h\x11tq*Rq+tq,Rq-X\x0e\x00\x00\
    \x00bad_utf8_bytesq.h\x0f(X\x04\x00\x00\x00\xc3\xbf\xc3\xbeq/h\x11tq0Rq1X\x01\x00\
    \x00\x00fq2I00\x0aK\x07X\x07\x00\x00\x00int keyq3J\xf8\xff\xff\xffX\x10\x00\x00\x00n\
    egative int keyq4(K\x01K\x02tq5X\x09\x00\x00\x00tuple keyq6NX\x08\x00\x00\x00none ke\
    yq7h\x0f(X\x01\x00\x00\x00kq8h\x11tq9Rq:X\x09\x00\x00\x00bytes keyq;u.";
const SESSION_P2: &[u8] = b"\
    \x80\x02}q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x02\x00\x00\x0042q\x02X\x12\x00\
    \x00\x00_auth_user_backendq\x03X)\x00\x00\x00django.contrib.auth.backends.ModelBacke\
    ndq\x04X\x0f\x00\x00\x00_auth_user_hashq\x05X@\x00\x00\x000f2c3b9d6c1e8a7b5f4d3c2b1a\
    0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2fq\x06X\x05\x00\x00\x00rolesq\x07]q\x08(X\x05\
    \x00\x00\x00adminq\x09X\x03\x00\x00\x00opsq\x0aeX\x05\x00\x00\x00emailq\x0bX\x0d\x00\
    \x00\x00a@example.comq\x0cX\x01\x00\x00\x00nq\x0dK\x07X\x03\x00\x00\x00bigq\x0e\x8a\
    \x09\x00\x00\x00\x00\x00\x00\x00\x00@X\x01\x00\x00\x00fq\x0fG?\xf8\x00\x00\x00\x00\
    \x00\x00X\x01\x00\x00\x00tq\x10K\x01K\x02\x86q\x11X\x01\x00\x00\x00sq\x12c__builtin_\
    _\x0aset\x0aq\x13]q\x14K\x01a\x85q\x15Rq\x16X\x01\x00\x00\x00bq\x17c_codecs\x0aencod\
    e\x0aq\x18X\x02\x00\x00\x00xyq\x19X\x06\x00\x00\x00latin1q\x1a\x86q\x1bRq\x1cX\x04\
    \x00\x00\x00noneq\x1dNX\x06\x00\x00\x00nestedq\x1e}q\x1fX\x01\x00\x00\x00aq ]q!(K\
    \x01}q\"h\x17\x88sesu.";
const SCALARS_P2: &[u8] = b"\
    \x80\x02}q\x00(X\x03\x00\x00\x00negq\x01J\xfb\xff\xff\xffX\x06\x00\x00\x00i32maxq\
    \x02J\xff\xff\xff\x7fX\x08\x00\x00\x00past_i32q\x03\x8a\x05\x00\x00\x00\x80\x00X\x06\
    \x00\x00\x00i64minq\x04\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80X\x06\x00\x00\x00u64m\
    axq\x05\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00X\x06\x00\x00\x00negbigq\x06\x8a\
    \x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0X\x04\x00\x00\x00hugeq\x07\x8b\x07\x01\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10X\x07\x00\x00\x00unicodeq\x08X\x0f\
    \x00\x00\x00h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80q\x09X\x07\x00\x00\x00escapesq\
    \x0aX\x09\x00\x00\x00a\\b\x0a\x0d\x00\x1a\"'q\x0bX\x09\x00\x00\x00long_textq\x0cX,\
    \x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x0dX\x0a\x00\x00\x00lo\
    ng_bytesq\x0ec_codecs\x0aencode\x0aq\x0fX,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyq\x10X\x06\x00\x00\x00latin1q\x11\x86q\x12Rq\x13X\x03\x00\x00\x00n\
    anq\x14G\x7f\xf8\x00\x00\x00\x00\x00\x00X\x03\x00\x00\x00infq\x15G\xff\xf0\x00\x00\
    \x00\x00\x00\x00X\x04\x00\x00\x00tinyq\x16G\x00\x00\x00\x00\x00\x00\x00\x01X\x0a\x00\
    \x00\x00empty_listq\x17]q\x18X\x0a\x00\x00\x00empty_dictq\x19}q\x1aX\x0b\x00\x00\x00\
    empty_tupleq\x1b)X\x03\x00\x00\x00oneq\x1cK\x01\x85q\x1dX\x05\x00\x00\x00threeq\x1eK\
    \x01K\x02K\x03\x87q\x1fX\x04\x00\x00\x00fourq (K\x01K\x02K\x03K\x04tq!X\x06\x00\x00\
    \x00frozenq\"c__builtin__\x0afrozenset\x0aq#]q$K\x01a\x85q%Rq&X\x09\x00\x00\x00bytea\
    rrayq'c__builtin__\x0abytearray\x0aq(h\x0fX\x02\x00\x00\x00abq)h\x11\x86q*Rq+\x85q,R\
    q-X\x0e\x00\x00\x00bad_utf8_bytesq.h\x0fX\x04\x00\x00\x00\xc3\xbf\xc3\xbeq/h\x11\x86\
    q0Rq1X\x01\x00\x00\x00fq2\x89K\x07X\x07\x00\x00\x00int keyq3J\xf8\xff\xff\xffX\x10\
    \x00\x00\x00negative int keyq4K\x01K\x02\x86q5X\x09\x00\x00\x00tuple keyq6NX\x08\x00\
    \x00\x00none keyq7h\x0fX\x01\x00\x00\x00kq8h\x11\x86q9Rq:X\x09\x00\x00\x00bytes keyq\
    ;u.";
const SESSION_P3: &[u8] = b"\
    \x80\x03}q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x02\x00\x00\x0042q\x02X\x12\x00\
    \x00\x00_auth_user_backendq\x03X)\x00\x00\x00django.contrib.auth.backends.ModelBacke\
    ndq\x04X\x0f\x00\x00\x00_auth_user_hashq\x05X@\x00\x00\x000f2c3b9d6c1e8a7b5f4d3c2b1a\
    0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2fq\x06X\x05\x00\x00\x00rolesq\x07]q\x08(X\x05\
    \x00\x00\x00adminq\x09X\x03\x00\x00\x00opsq\x0aeX\x05\x00\x00\x00emailq\x0bX\x0d\x00\
    \x00\x00a@example.comq\x0cX\x01\x00\x00\x00nq\x0dK\x07X\x03\x00\x00\x00bigq\x0e\x8a\
    \x09\x00\x00\x00\x00\x00\x00\x00\x00@X\x01\x00\x00\x00fq\x0fG?\xf8\x00\x00\x00\x00\
    \x00\x00X\x01\x00\x00\x00tq\x10K\x01K\x02\x86q\x11X\x01\x00\x00\x00sq\x12cbuiltins\
    \x0aset\x0aq\x13]q\x14K\x01a\x85q\x15Rq\x16X\x01\x00\x00\x00bq\x17C\x02xyq\x18X\x04\
    \x00\x00\x00noneq\x19NX\x06\x00\x00\x00nestedq\x1a}q\x1bX\x01\x00\x00\x00aq\x1c]q\
    \x1d(K\x01}q\x1eh\x17\x88sesu.";
const SCALARS_P3: &[u8] = b"\
    \x80\x03}q\x00(X\x03\x00\x00\x00negq\x01J\xfb\xff\xff\xffX\x06\x00\x00\x00i32maxq\
    \x02J\xff\xff\xff\x7fX\x08\x00\x00\x00past_i32q\x03\x8a\x05\x00\x00\x00\x80\x00X\x06\
    \x00\x00\x00i64minq\x04\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80X\x06\x00\x00\x00u64m\
    axq\x05\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00X\x06\x00\x00\x00negbigq\x06\x8a\
    \x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0X\x04\x00\x00\x00hugeq\x07\x8b\x07\x01\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10X\x07\x00\x00\x00unicodeq\x08X\x0f\
    \x00\x00\x00h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80q\x09X\x07\x00\x00\x00escapesq\
    \x0aX\x09\x00\x00\x00a\\b\x0a\x0d\x00\x1a\"'q\x0bX\x09\x00\x00\x00long_textq\x0cX,\
    \x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x0dX\x0a\x00\x00\x00lo\
    ng_bytesq\x0eB,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq\x0fX\
    \x03\x00\x00\x00nanq\x10G\x7f\xf8\x00\x00\x00\x00\x00\x00X\x03\x00\x00\x00infq\x11G\
    \xff\xf0\x00\x00\x00\x00\x00\x00X\x04\x00\x00\x00tinyq\x12G\x00\x00\x00\x00\x00\x00\
    \x00\x01X\x0a\x00\x00\x00empty_listq\x13]q\x14X\x0a\x00\x00\x00empty_dictq\x15}q\x16\
    X\x0b\x00\x00\x00empty_tupleq\x17)X\x03\x00\x00\x00oneq\x18K\x01\x85q\x19X\x05\x00\
    \x00\x00threeq\x1aK\x01K\x02K\x03\x87q\x1bX\x04\x00\x00\x00fourq\x1c(K\x01K\x02K\x03\
    K\x04tq\x1dX\x06\x00\x00\x00frozenq\x1ecbuiltins\x0afrozenset\x0aq\x1f]q K\x01a\x85q\
    !Rq\"X\x09\x00\x00\x00bytearrayq#cbuiltins\x0abytearray\x0aq$C\x02abq%\x85q&Rq'X\x0e\
    \x00\x00\x00bad_utf8_bytesq(C\x02\xff\xfeq)X\x01\x00\x00\x00fq*\x89K\x07X\x07\x00\
    \x00\x00int keyq+J\xf8\xff\xff\xffX\x10\x00\x00\x00negative int keyq,K\x01K\x02\x86q\
    -X\x09\x00\x00\x00tuple keyq.NX\x08\x00\x00\x00none keyq/C\x01kq0X\x09\x00\x00\x00by\
    tes keyq1u.";
const SESSION_P4: &[u8] = b"\
    \x80\x04\x95G\x01\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x0242\
    \x94\x8c\x12_auth_user_backend\x94\x8c)django.contrib.auth.backends.ModelBackend\x94\
    \x8c\x0f_auth_user_hash\x94\x8c@0f2c3b9d6c1e8a7b5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f\
    7e6d5c4b3a2f\x94\x8c\x05roles\x94]\x94(\x8c\x05admin\x94\x8c\x03ops\x94e\x8c\x05emai\
    l\x94\x8c\x0da@example.com\x94\x8c\x01n\x94K\x07\x8c\x03big\x94\x8a\x09\x00\x00\x00\
    \x00\x00\x00\x00\x00@\x8c\x01f\x94G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x01t\x94K\x01K\
    \x02\x86\x94\x8c\x01s\x94\x8f\x94(K\x01\x90\x8c\x01b\x94C\x02xy\x94\x8c\x04none\x94N\
    \x8c\x06nested\x94}\x94\x8c\x01a\x94]\x94(K\x01}\x94h\x14\x88sesu.";
const SCALARS_P4: &[u8] = b"\
    \x80\x04\x95]\x05\x00\x00\x00\x00\x00\x00}\x94(\x8c\x03neg\x94J\xfb\xff\xff\xff\x8c\
    \x06i32max\x94J\xff\xff\xff\x7f\x8c\x08past_i32\x94\x8a\x05\x00\x00\x00\x80\x00\x8c\
    \x06i64min\x94\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8c\x06u64max\x94\x8a\x09\xff\
    \xff\xff\xff\xff\xff\xff\xff\x00\x8c\x06negbig\x94\x8a\x09\x00\x00\x00\x00\x00\x00\
    \x00\x00\xc0\x8c\x04huge\x94\x8b\x07\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x10\x8c\x07unicode\x94\x8c\x0fh\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\x94\
    \x8c\x07escapes\x94\x8c\x09a\\b\x0a\x0d\x00\x1a\"'\x94\x8c\x09long_text\x94X,\x01\
    \x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94\x8c\x0along_bytes\x94B,\
    \x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x94\x8c\x03nan\x94G\x7f\
    \xf8\x00\x00\x00\x00\x00\x00\x8c\x03inf\x94G\xff\xf0\x00\x00\x00\x00\x00\x00\x8c\x04\
    tiny\x94G\x00\x00\x00\x00\x00\x00\x00\x01\x8c\x0aempty_list\x94]\x94\x8c\x0aempty_di\
    ct\x94}\x94\x8c\x0bempty_tuple\x94)\x8c\x03one\x94K\x01\x85\x94\x8c\x05three\x94K\
    \x01K\x02K\x03\x87\x94\x8c\x04four\x94(K\x01K\x02K\x03K\x04t\x94\x8c\x06frozen\x94(K\
    \x01\x91\x94\x8c\x09bytearray\x94\x8c\x08builtins\x94\x8c\x09bytearray\x94\x93\x94C\
    \x02ab\x94\x85\x94R\x94\x8c\x0ebad_utf8_bytes\x94C\x02\xff\xfe\x94\x8c\x01f\x94\x89K\
    \x07\x8c\x07int key\x94J\xf8\xff\xff\xff\x8c\x10negative int key\x94K\x01K\x02\x86\
    \x94\x8c\x09tuple key\x94N\x8c\x08none key\x94C\x01k\x94\x8c\x09bytes key\x94u.";
const SESSION_P5: &[u8] = b"\
    \x80\x05\x95G\x01\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x0242\
    \x94\x8c\x12_auth_user_backend\x94\x8c)django.contrib.auth.backends.ModelBackend\x94\
    \x8c\x0f_auth_user_hash\x94\x8c@0f2c3b9d6c1e8a7b5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f\
    7e6d5c4b3a2f\x94\x8c\x05roles\x94]\x94(\x8c\x05admin\x94\x8c\x03ops\x94e\x8c\x05emai\
    l\x94\x8c\x0da@example.com\x94\x8c\x01n\x94K\x07\x8c\x03big\x94\x8a\x09\x00\x00\x00\
    \x00\x00\x00\x00\x00@\x8c\x01f\x94G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x01t\x94K\x01K\
    \x02\x86\x94\x8c\x01s\x94\x8f\x94(K\x01\x90\x8c\x01b\x94C\x02xy\x94\x8c\x04none\x94N\
    \x8c\x06nested\x94}\x94\x8c\x01a\x94]\x94(K\x01}\x94h\x14\x88sesu.";
const SCALARS_P5: &[u8] = b"\
    \x80\x05\x95G\x05\x00\x00\x00\x00\x00\x00}\x94(\x8c\x03neg\x94J\xfb\xff\xff\xff\x8c\
    \x06i32max\x94J\xff\xff\xff\x7f\x8c\x08past_i32\x94\x8a\x05\x00\x00\x00\x80\x00\x8c\
    \x06i64min\x94\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8c\x06u64max\x94\x8a\x09\xff\
    \xff\xff\xff\xff\xff\xff\xff\x00\x8c\x06negbig\x94\x8a\x09\x00\x00\x00\x00\x00\x00\
    \x00\x00\xc0\x8c\x04huge\x94\x8b\x07\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x10\x8c\x07unicode\x94\x8c\x0fh\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\x94\
    \x8c\x07escapes\x94\x8c\x09a\\b\x0a\x0d\x00\x1a\"'\x94\x8c\x09long_text\x94X,\x01\
    \x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
    xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94\x8c\x0along_bytes\x94B,\
    \x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\
    yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x94\x8c\x03nan\x94G\x7f\
    \xf8\x00\x00\x00\x00\x00\x00\x8c\x03inf\x94G\xff\xf0\x00\x00\x00\x00\x00\x00\x8c\x04\
    tiny\x94G\x00\x00\x00\x00\x00\x00\x00\x01\x8c\x0aempty_list\x94]\x94\x8c\x0aempty_di\
    ct\x94}\x94\x8c\x0bempty_tuple\x94)\x8c\x03one\x94K\x01\x85\x94\x8c\x05three\x94K\
    \x01K\x02K\x03\x87\x94\x8c\x04four\x94(K\x01K\x02K\x03K\x04t\x94\x8c\x06frozen\x94(K\
    \x01\x91\x94\x8c\x09bytearray\x94\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94\x8c\x0eb\
    ad_utf8_bytes\x94C\x02\xff\xfe\x94\x8c\x01f\x94\x89K\x07\x8c\x07int key\x94J\xf8\xff\
    \xff\xff\x8c\x10negative int key\x94K\x01K\x02\x86\x94\x8c\x09tuple key\x94N\x8c\x08\
    none key\x94C\x01k\x94\x8c\x09bytes key\x94u.";
const EVIL_TOP_P0: &[u8] = b"\
    cposix\x0asystem\x0ap0\x0a(Vtouch /tmp/sessiongate-pickle-test-pwned\x0ap1\x0atp2\
    \x0aRp3\x0a.";
const EVIL_NESTED_P0: &[u8] = b"\
    (dp0\x0aV_auth_user_id\x0ap1\x0aV42\x0ap2\x0asVx\x0ap3\x0acposix\x0asystem\x0ap4\x0a\
    (Vtouch /tmp/sessiongate-pickle-test-pwned\x0ap5\x0atp6\x0aRp7\x0as.";
const MODEL_P0: &[u8] = b"\
    (dp0\x0aV_auth_user_id\x0ap1\x0aV5\x0ap2\x0asVobj\x0ap3\x0accopy_reg\x0a_reconstruct\
    or\x0ap4\x0a(c__main__\x0aModel\x0ap5\x0ac__builtin__\x0aobject\x0ap6\x0aNtp7\x0aRp8\
    \x0a(dp9\x0aVpk\x0ap10\x0aI3\x0asVname\x0ap11\x0aVthing\x0ap12\x0asbsVex\x0ap13\x0ag\
    4\x0a(c__main__\x0aWithNewArgsEx\x0ap14\x0ag6\x0aNtp15\x0aRp16\x0as.";
const EVIL_TOP_P2: &[u8] = b"\
    \x80\x02cposix\x0asystem\x0aq\x00X(\x00\x00\x00touch /tmp/sessiongate-pickle-test-pw\
    nedq\x01\x85q\x02Rq\x03.";
const EVIL_NESTED_P2: &[u8] = b"\
    \x80\x02}q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x02\x00\x00\x0042q\x02X\x01\x00\
    \x00\x00xq\x03cposix\x0asystem\x0aq\x04X(\x00\x00\x00touch /tmp/sessiongate-pickle-t\
    est-pwnedq\x05\x85q\x06Rq\x07u.";
const MODEL_P2: &[u8] = b"\
    \x80\x02}q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x01\x00\x00\x005q\x02X\x03\x00\
    \x00\x00objq\x03c__main__\x0aModel\x0aq\x04)\x81q\x05}q\x06(X\x02\x00\x00\x00pkq\x07\
    K\x03X\x04\x00\x00\x00nameq\x08X\x05\x00\x00\x00thingq\x09ubX\x02\x00\x00\x00exq\x0a\
    cfunctools\x0apartial\x0aq\x0bc__builtin__\x0agetattr\x0aq\x0cc__main__\x0aWithNewAr\
    gsEx\x0aq\x0dX\x07\x00\x00\x00__new__q\x0e\x86q\x0fRq\x10\x85q\x11Rq\x12(h\x10h\x0dK\
    \x01\x86q\x13}q\x14X\x01\x00\x00\x00kq\x15K\x02sNtq\x16b)Rq\x17u.";
const EVIL_TOP_P3: &[u8] = b"\
    \x80\x03cposix\x0asystem\x0aq\x00X(\x00\x00\x00touch /tmp/sessiongate-pickle-test-pw\
    nedq\x01\x85q\x02Rq\x03.";
const EVIL_NESTED_P3: &[u8] = b"\
    \x80\x03}q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x02\x00\x00\x0042q\x02X\x01\x00\
    \x00\x00xq\x03cposix\x0asystem\x0aq\x04X(\x00\x00\x00touch /tmp/sessiongate-pickle-t\
    est-pwnedq\x05\x85q\x06Rq\x07u.";
const MODEL_P3: &[u8] = b"\
    \x80\x03}q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x01\x00\x00\x005q\x02X\x03\x00\
    \x00\x00objq\x03c__main__\x0aModel\x0aq\x04)\x81q\x05}q\x06(X\x02\x00\x00\x00pkq\x07\
    K\x03X\x04\x00\x00\x00nameq\x08X\x05\x00\x00\x00thingq\x09ubX\x02\x00\x00\x00exq\x0a\
    cfunctools\x0apartial\x0aq\x0bcbuiltins\x0agetattr\x0aq\x0cc__main__\x0aWithNewArgsE\
    x\x0aq\x0dX\x07\x00\x00\x00__new__q\x0e\x86q\x0fRq\x10\x85q\x11Rq\x12(h\x10h\x0dK\
    \x01\x86q\x13}q\x14X\x01\x00\x00\x00kq\x15K\x02sNtq\x16b)Rq\x17u.";
const EVIL_TOP_P4: &[u8] = b"\
    \x80\x04\x95C\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\
    \x8c(touch /tmp/sessiongate-pickle-test-pwned\x94\x85\x94R\x94.";
const EVIL_NESTED_P4: &[u8] = b"\
    \x80\x04\x95`\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x0242\
    \x94\x8c\x01x\x94\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c(touch /tmp/sessiong\
    ate-pickle-test-pwned\x94\x85\x94R\x94u.";
const MODEL_P4: &[u8] = b"\
    \x80\x04\x95z\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x015\
    \x94\x8c\x03obj\x94\x8c\x08__main__\x94\x8c\x05Model\x94\x93\x94)\x81\x94}\x94(\x8c\
    \x02pk\x94K\x03\x8c\x04name\x94\x8c\x05thing\x94ub\x8c\x02ex\x94h\x04\x8c\x0dWithNew\
    ArgsEx\x94\x93\x94K\x01\x85\x94}\x94\x8c\x01k\x94K\x02s\x92\x94u.";
const EVIL_TOP_P5: &[u8] = b"\
    \x80\x05\x95C\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\
    \x8c(touch /tmp/sessiongate-pickle-test-pwned\x94\x85\x94R\x94.";
const EVIL_NESTED_P5: &[u8] = b"\
    \x80\x05\x95`\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x0242\
    \x94\x8c\x01x\x94\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c(touch /tmp/sessiong\
    ate-pickle-test-pwned\x94\x85\x94R\x94u.";
const MODEL_P5: &[u8] = b"\
    \x80\x05\x95z\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x015\
    \x94\x8c\x03obj\x94\x8c\x08__main__\x94\x8c\x05Model\x94\x93\x94)\x81\x94}\x94(\x8c\
    \x02pk\x94K\x03\x8c\x04name\x94\x8c\x05thing\x94ub\x8c\x02ex\x94h\x04\x8c\x0dWithNew\
    ArgsEx\x94\x93\x94K\x01\x85\x94}\x94\x8c\x01k\x94K\x02s\x92\x94u.";
const SHARED_P0: &[u8] = b"\
    (dp0\x0aVx\x0ap1\x0a(lp2\x0aVa\x0ap3\x0aaVb\x0ap4\x0aasVy\x0ap5\x0ag2\x0asVn\x0ap6\
    \x0a(dp7\x0aVz\x0ap8\x0ag2\x0ass.";
const DATETIME_P0: &[u8] = b"\
    (dp0\x0aV_auth_user_id\x0ap1\x0aV1\x0ap2\x0asVlast_login\x0ap3\x0acdatetime\x0adatet\
    ime\x0ap4\x0a(c_codecs\x0aencode\x0ap5\x0a(V\x07\xe8\x01\x02\x03\x04\x05\\u0000\\u00\
    00\x06\x0ap6\x0aVlatin1\x0ap7\x0atp8\x0aRp9\x0atp10\x0aRp11\x0asVday\x0ap12\x0acdate\
    time\x0adate\x0ap13\x0a(g5\x0a(V\x07\xe8\x01\x02\x0ap14\x0ag7\x0atp15\x0aRp16\x0atp1\
    7\x0aRp18\x0as.";
const RECURSIVE_P0: &[u8] = b"\
    (dp0\x0aVl\x0ap1\x0a(lp2\x0ag2\x0aas.";
const SHARED_P2: &[u8] = b"\
    \x80\x02}q\x00(X\x01\x00\x00\x00xq\x01]q\x02(X\x01\x00\x00\x00aq\x03X\x01\x00\x00\
    \x00bq\x04eX\x01\x00\x00\x00yq\x05h\x02X\x01\x00\x00\x00nq\x06}q\x07X\x01\x00\x00\
    \x00zq\x08h\x02su.";
const DATETIME_P2: &[u8] = b"\
    \x80\x02}q\x00(X\x0d\x00\x00\x00_auth_user_idq\x01X\x01\x00\x00\x001q\x02X\x0a\x00\
    \x00\x00last_loginq\x03cdatetime\x0adatetime\x0aq\x04c_codecs\x0aencode\x0aq\x05X\
    \x0b\x00\x00\x00\x07\xc3\xa8\x01\x02\x03\x04\x05\x00\x00\x06q\x06X\x06\x00\x00\x00la\
    tin1q\x07\x86q\x08Rq\x09\x85q\x0aRq\x0bX\x03\x00\x00\x00dayq\x0ccdatetime\x0adate\
    \x0aq\x0dh\x05X\x05\x00\x00\x00\x07\xc3\xa8\x01\x02q\x0eh\x07\x86q\x0fRq\x10\x85q\
    \x11Rq\x12u.";
const RECURSIVE_P2: &[u8] = b"\
    \x80\x02}q\x00X\x01\x00\x00\x00lq\x01]q\x02h\x02as.";
const SHARED_P5: &[u8] = b"\
    \x80\x05\x95(\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01x\x94]\x94(\x8c\x01a\x94\x8c\
    \x01b\x94e\x8c\x01y\x94h\x02\x8c\x01n\x94}\x94\x8c\x01z\x94h\x02su.";
const DATETIME_P5: &[u8] = b"\
    \x80\x05\x95k\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x011\
    \x94\x8c\x0alast_login\x94\x8c\x08datetime\x94\x8c\x08datetime\x94\x93\x94C\x0a\x07\
    \xe8\x01\x02\x03\x04\x05\x00\x00\x06\x94\x85\x94R\x94\x8c\x03day\x94h\x04\x8c\x04dat\
    e\x94\x93\x94C\x04\x07\xe8\x01\x02\x94\x85\x94R\x94u.";
const RECURSIVE_P5: &[u8] = b"\
    \x80\x05\x95\x0d\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01l\x94]\x94h\x02as.";
