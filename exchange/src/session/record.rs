//! The Redis session schema: key derivation and the JSON value.
//!
//! Key: `key_prefix + lowercase hex(sha256(cookie))`, or `key_prefix + cookie` when
//! keys are not hashed. Value: a JSON object with a string subject field (default
//! `sub`), an optional integer `exp` (unix seconds) and any other fields, of which the
//! configured ones are copied into tokens. This module is the only place that knows
//! the format; docs/redis-schema.md documents it.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

use super::{Session, SessionSettings, Sid};
use crate::SessionToken;

/// Largest session value accepted from the store; larger values are corrupt.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The Redis key of a session.
pub fn redis_key(prefix: &str, token: &SessionToken, hashed: bool) -> String {
    let mut key = String::with_capacity(prefix.len() + 64);
    key.push_str(prefix);
    if hashed {
        push_hex(&mut key, token.digest());
    } else {
        key.push_str(token.expose());
    }
    key
}

/// The Redis key of a subject's session index (a set of session keys).
pub fn user_index_key(prefix: &str, subject: &str) -> String {
    format!("{prefix}user:{subject}")
}

/// The cookie digest a session key refers to, or `None` for keys outside the schema.
///
/// The inverse of [`redis_key`]: used to apply invalidations pushed by Redis.
pub fn key_digest(key: &str, prefix: &str, hashed: bool) -> Option<[u8; 32]> {
    let rest = key.strip_prefix(prefix)?;
    if hashed {
        if rest.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in rest.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(out)
    } else {
        SessionToken::parse(rest).ok().map(|t| *t.digest())
    }
}

/// Appends lowercase hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    // A table lookup per nibble: `write!("{b:02x}")` cost ~250 instructions a byte, and
    // every Redis read formats the 32-byte digest.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// What is wrong with a stored session value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The value is larger than [`MAX_VALUE_BYTES`].
    #[error("value is {0} bytes, more than the {MAX_VALUE_BYTES} allowed")]
    TooLarge(usize),
    /// The value is not a JSON object.
    #[error("value is not a JSON object: {0}")]
    NotObject(String),
    /// The subject field is missing.
    #[error("subject field `{0}` is missing")]
    MissingSubject(String),
    /// The subject field is not a non-empty string.
    #[error("subject field `{0}` is not a non-empty string")]
    BadSubject(String),
    /// `exp` is present but not a non-negative integer.
    #[error("`exp` is not a non-negative integer")]
    BadExp,
}

/// Decodes a stored value into a [`Session`] for `token`.
///
/// Only the subject, `exp` and the configured claim fields are kept; the claim values
/// are copied verbatim as JSON so that any JSON type survives.
///
/// # Errors
/// [`RecordError`] when the value does not follow the schema.
pub fn decode(
    value: &[u8],
    token: &SessionToken,
    settings: &SessionSettings,
) -> Result<Session, RecordError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(RecordError::TooLarge(value.len()));
    }
    let fields: HashMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(value).map_err(|e| RecordError::NotObject(e.to_string()))?;
    let subject_field = settings.subject_field.as_str();
    let raw_subject = fields
        .get(subject_field)
        .ok_or_else(|| RecordError::MissingSubject(subject_field.to_owned()))?;
    let subject: Cow<'_, str> = serde_json::from_str(raw_subject.get())
        .map_err(|_| RecordError::BadSubject(subject_field.to_owned()))?;
    if subject.is_empty() {
        return Err(RecordError::BadSubject(subject_field.to_owned()));
    }
    let exp = match fields.get("exp") {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(serde_json::from_str::<u64>(raw.get()).map_err(|_| RecordError::BadExp)?),
    };

    // The subject literal, then the claim pairs: one buffer, the session's only heap block.
    let mut json = json_string(&subject);
    let subject_end = json.len();
    for name in &settings.claims {
        if let Some(raw) = fields.get(name.as_str()) {
            json.push(',');
            // A claim name from the config is a plain string; serde_json escapes it.
            json.push_str(&json_string(name));
            json.push(':');
            json.push_str(raw.get());
        }
    }
    Ok(Session::new(json, subject_end, exp, Sid::derive(token)))
}

/// Serializes `s` as a JSON string literal (quoted and escaped).
pub(crate) fn json_string(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_hex_is_lowercase_two_digit_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut ours = String::from("p:");
        push_hex(&mut ours, &bytes);
        let theirs: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ours, format!("p:{theirs}"));
    }

    fn settings() -> SessionSettings {
        SessionSettings {
            claims: vec!["roles".into(), "email".into()],
            ..SessionSettings::default()
        }
    }

    fn token() -> SessionToken {
        SessionToken::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap()
    }

    #[test]
    fn redis_key_hashed_and_plain() {
        let t = token();
        let hashed = redis_key("sg:session:", &t, true);
        // sha256("abcdefghijklmnopqrstuvwxyz012345"), computed independently.
        assert_eq!(hashed.len(), "sg:session:".len() + 64);
        assert!(hashed.starts_with("sg:session:"));
        assert!(
            hashed["sg:session:".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            redis_key("p:", &t, false),
            "p:abcdefghijklmnopqrstuvwxyz012345"
        );
    }

    #[test]
    fn decode_table() {
        let s = settings();
        let t = token();
        type Expected = Result<(&'static str, Option<u64>, &'static str), RecordError>;
        let cases: &[(&str, Expected)] = &[
            (
                r#"{"sub":"user-42","exp":1767225600,"roles":["admin"],"email":"a@example.com"}"#,
                Ok((
                    "user-42",
                    Some(1767225600),
                    r#","roles":["admin"],"email":"a@example.com""#,
                )),
            ),
            (r#"{"sub":"u"}"#, Ok(("u", None, ""))),
            (r#"{"sub":"u","exp":null,"other":1}"#, Ok(("u", None, ""))),
            (
                r#"{"sub":"u\"q","roles":{"a":[1,2]}}"#,
                Ok(("u\"q", None, r#","roles":{"a":[1,2]}"#)),
            ),
            (
                r#"{"exp":1}"#,
                Err(RecordError::MissingSubject("sub".into())),
            ),
            (r#"{"sub":42}"#, Err(RecordError::BadSubject("sub".into()))),
            (r#"{"sub":""}"#, Err(RecordError::BadSubject("sub".into()))),
            (r#"{"sub":"u","exp":"soon"}"#, Err(RecordError::BadExp)),
            (r#"{"sub":"u","exp":-5}"#, Err(RecordError::BadExp)),
            (r#"{"sub":"u","exp":1.5}"#, Err(RecordError::BadExp)),
        ];
        for (input, expected) in cases {
            let got = decode(input.as_bytes(), &t, &s).map(|sess| {
                (
                    sess.subject().into_owned(),
                    sess.exp(),
                    sess.claims_json().to_owned(),
                )
            });
            let expected = expected
                .clone()
                .map(|(a, b, c)| (a.to_string(), b, c.to_string()));
            assert_eq!(got, expected, "input {input}");
        }
    }

    #[test]
    fn decode_rejects_non_objects_and_huge_values() {
        let s = settings();
        let t = token();
        for input in ["", "not json", "[1,2]", "\"sub\"", "null", "{\"sub\":\"u\""] {
            assert!(
                matches!(
                    decode(input.as_bytes(), &t, &s),
                    Err(RecordError::NotObject(_))
                ),
                "input {input:?}"
            );
        }
        let huge = format!(r#"{{"sub":"u","pad":"{}"}}"#, "x".repeat(MAX_VALUE_BYTES));
        assert!(matches!(
            decode(huge.as_bytes(), &t, &s),
            Err(RecordError::TooLarge(_))
        ));
    }

    #[test]
    fn key_digest_inverts_redis_key() {
        let t = token();
        assert_eq!(
            key_digest(&redis_key("p:", &t, true), "p:", true),
            Some(*t.digest())
        );
        assert_eq!(
            key_digest(&redis_key("p:", &t, false), "p:", false),
            Some(*t.digest())
        );
        for other in [
            "p:user:alice",
            "q:abc",
            "p:",
            "p:keyring",
            &format!("p:{}", "zz".repeat(32)),
        ] {
            assert_eq!(key_digest(other, "p:", true), None, "{other}");
        }
    }

    #[test]
    fn custom_subject_field() {
        let s = SessionSettings {
            subject_field: "user_id".into(),
            ..SessionSettings::default()
        };
        let sess = decode(br#"{"user_id":"u-7","sub":"ignored"}"#, &token(), &s).unwrap();
        assert_eq!(sess.subject(), "u-7");
    }
}
