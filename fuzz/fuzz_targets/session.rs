//! Fuzz target: every session format's decoder — `exchange::format::{native, express,
//! django}` and what they all share, `Document` and `Fields::extract`.
//!
//! Input: a byte that picks the format, a cookie value, `\n`, and a stored value. Nothing
//! may panic. A cookie names a session exactly when the format's syntax allows it; an
//! express cookie names one only when it is `s:<sid>.<signature>` with the HMAC-SHA256 of
//! a configured secret (checked here with an HMAC written on `sha2`, not the gateway's
//! aws-lc one); a session's key gives back its digest. A decoded session has a non-empty
//! subject, and `{"sub":<subject><claims>}` — what a token carries — is a JSON object by
//! RFC 8259's grammar (claims are copied verbatim, so a number like `1e400`, which the
//! grammar allows, stays as it is; serde_json's `Value` would refuse it).

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use exchange::format::django::Django;
use exchange::format::express::Express;
use exchange::format::native::Native;
use exchange::format::{Claim, Decoded, Document, Field, Fields, Secret, SessionFormat};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

/// The express secrets the format is configured with (the first seeds are signed with them).
const SECRETS: &[&str] = &["keyboard cat", "new secret"];

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `decodeURIComponent` as the `cookie` module applies it: only with a `%`, and the value
/// unchanged when it does not decode.
fn uri_decode(value: &str) -> String {
    if !value.contains('%') {
        return value.to_owned();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let Some(hex) = hex else {
                return value.to_owned();
            };
            out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

fn fields(subject: &str) -> Fields {
    let claim = |name: &str, pointer: &str| Claim {
        name: name.to_owned(),
        field: Field::parse(pointer).expect("a valid pointer"),
    };
    Fields {
        subject: Field::parse(subject).expect("a valid pointer"),
        claims: vec![
            claim("roles", "/roles"),
            claim("email", "email"),
            claim("first", "/roles/0"),
            claim("user", "/passport/user"),
            claim("odd \"name\"", "/a~1b/~0"),
        ],
    }
}

/// Reads `doc` as every format's default subject field would, with claims.
fn check_document(doc: &Document<'_>, exp: bool, id: &exchange::SessionId) {
    for subject in ["sub", "/passport/user", "/_auth_user_id"] {
        let Ok(Decoded::Session(s)) = fields(subject).extract(doc, exp, id) else {
            continue;
        };
        assert!(!s.subject().is_empty(), "an empty subject");
        let text = format!("{{\"sub\":{}{}}}", s.subject_json(), s.claims_json());
        // `IgnoredAny` reads the grammar only, as the decoder's `RawValue`s do.
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            panic!("{text}: {e}");
        }
        let sub: String = serde_json::from_str(s.subject_json()).expect("a string literal");
        assert_eq!(sub, s.subject());
    }
}

fn check_key(format: &dyn SessionFormat, id: &exchange::SessionId) {
    let mut key = String::new();
    id.push_key(&mut key);
    assert_eq!(format.digest_of_key(&key), Some(*id.digest()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (cookie, value) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let cookie = String::from_utf8_lossy(cookie);
    let fallback = exchange::SessionId::raw("fuzz");
    match pick % 3 {
        0 => {
            let format = Native::new(pick & 4 == 0);
            let valid = (16..=512).contains(&cookie.len())
                && cookie
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.~".contains(&b));
            let id = format.session_id(&cookie);
            assert_eq!(id.is_ok(), valid, "{cookie:?}");
            if let Ok(id) = &id {
                check_key(&format, id);
            }
            if let Ok(doc) = format.decode(value) {
                check_document(&doc, true, id.as_ref().unwrap_or(&fallback));
            }
        }
        1 => {
            let format = Express::new(SECRETS.iter().map(Secret::new).collect());
            if let Ok(id) = format.session_id(&cookie) {
                let decoded = uri_decode(&cookie);
                let signed = decoded.strip_prefix("s:").expect("a signed cookie");
                let (sid, _) = signed.rsplit_once('.').expect("a signature");
                let genuine = SECRETS.iter().any(|secret| {
                    let tag =
                        STANDARD_NO_PAD.encode(hmac_sha256(secret.as_bytes(), sid.as_bytes()));
                    signed == format!("{sid}.{tag}")
                });
                assert!(
                    genuine,
                    "{cookie:?} verified without a configured secret's signature"
                );
                assert_eq!(id, exchange::SessionId::raw(sid));
                check_key(&format, &id);
            }
            if let Ok(doc) = format.decode(value) {
                check_document(&doc, false, &fallback);
            }
        }
        _ => {
            let valid = cookie.len() == 32
                && cookie
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            let id = Django.session_id(&cookie);
            assert_eq!(id.is_ok(), valid, "{cookie:?}");
            if let Ok(id) = &id {
                check_key(&Django, id);
            }
            if let Ok(doc) = Django.decode(value) {
                assert!(matches!(doc, Document::Value(serde_json::Value::Object(_))));
                check_document(&doc, false, &fallback);
            }
        }
    }
});
