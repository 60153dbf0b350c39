//! The session cookie value, validated before it can reach Redis.

use std::fmt;

use sha2::{Digest, Sha256};

/// Shortest accepted cookie value.
pub const MIN_LEN: usize = 16;
/// Longest accepted cookie value.
pub const MAX_LEN: usize = 512;

/// A syntactically valid session cookie value.
///
/// Only [`SessionToken::parse`] makes one, so holding a `SessionToken` proves the
/// value is 16–512 characters of `[A-Za-z0-9_-.~]`. `Debug` and `Display` never
/// print the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    value: Box<str>,
    digest: [u8; 32],
}

/// Why a cookie value was refused before any Redis call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCookie {
    /// Fewer than 16 characters.
    #[error("session cookie is shorter than {MIN_LEN} characters")]
    TooShort,
    /// More than 512 characters.
    #[error("session cookie is longer than {MAX_LEN} characters")]
    TooLong,
    /// A character outside `[A-Za-z0-9_-.~]`.
    #[error("session cookie contains a character outside [A-Za-z0-9_-.~]")]
    BadCharacter,
}

impl SessionToken {
    /// Validates a raw cookie value and computes its SHA-256 digest once.
    ///
    /// # Errors
    /// [`InvalidCookie`] when the length or alphabet is wrong.
    pub fn parse(raw: &str) -> Result<Self, InvalidCookie> {
        if raw.len() < MIN_LEN {
            return Err(InvalidCookie::TooShort);
        }
        if raw.len() > MAX_LEN {
            return Err(InvalidCookie::TooLong);
        }
        if !raw.bytes().all(is_token_byte) {
            return Err(InvalidCookie::BadCharacter);
        }
        let digest: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
        Ok(Self {
            value: raw.into(),
            digest,
        })
    }

    /// The SHA-256 digest of the cookie value; the cache key and the basis of the Redis key.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The raw cookie value. Callers must never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted session token>")
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~')
}

/// Finds the value of cookie `name` in a `Cookie` request header.
///
/// Returns the first occurrence; pairs are separated by `;` with optional spaces.
pub fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let pair = pair.trim_matches(' ');
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// Removes cookie `name` from a `Cookie` header, keeping every other pair in order.
///
/// Returns `None` when nothing is left.
pub fn strip_cookie(header: &str, name: &str) -> Option<String> {
    let mut out = String::with_capacity(header.len());
    strip_cookie_into(header, name, &mut out);
    (!out.is_empty()).then_some(out)
}

/// [`strip_cookie`] that appends the remaining pairs to `out`, separated from what `out`
/// already holds (and from each other) by `"; "`: calling it for every `Cookie` header
/// of a request builds the single header that joins them, without a buffer per header.
pub fn strip_cookie_into(header: &str, name: &str, out: &mut String) {
    for pair in header.split(';') {
        let trimmed = pair.trim_matches(' ');
        if trimmed.is_empty() {
            continue;
        }
        let is_session = trimmed.split_once('=').is_some_and(|(k, _)| k == name);
        if is_session {
            continue;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(trimmed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let long = "a".repeat(MAX_LEN + 1);
        let max = "a".repeat(MAX_LEN);
        let cases: &[(&str, Result<(), InvalidCookie>)] = &[
            ("", Err(InvalidCookie::TooShort)),
            ("abcdefghijklmno", Err(InvalidCookie::TooShort)),
            ("abcdefghijklmnop", Ok(())),
            ("abc-def_ghi.jkl~mno", Ok(())),
            (&max, Ok(())),
            (&long, Err(InvalidCookie::TooLong)),
            ("abcdefghijklmnop=", Err(InvalidCookie::BadCharacter)),
            ("abcdefghijklmnop ", Err(InvalidCookie::BadCharacter)),
            ("abcdefghijklmnop\0", Err(InvalidCookie::BadCharacter)),
            ("abcdefghijklmnopé", Err(InvalidCookie::BadCharacter)),
            ("abcdefgh/ijklmnop", Err(InvalidCookie::BadCharacter)),
        ];
        for (input, expected) in cases {
            let got = SessionToken::parse(input).map(|_| ());
            assert_eq!(&got, expected, "input {input:?}");
        }
    }

    #[test]
    fn debug_and_display_redact() {
        let t = SessionToken::parse("supersecretcookievalue").unwrap();
        assert!(!format!("{t:?}").contains("supersecret"));
        assert!(!format!("{t}").contains("supersecret"));
    }

    #[test]
    fn find_cookie_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("a=1; s=xyz; b=2", "s", Some("xyz")),
            ("s=xyz", "s", Some("xyz")),
            ("ss=1; s=2", "s", Some("2")),
            ("a=1;s=2", "s", Some("2")),
            ("a=1", "s", None),
            ("s=\"q\"", "s", Some("q")),
            ("s=first; s=second", "s", Some("first")),
            ("", "s", None),
        ];
        for (header, name, expected) in cases {
            assert_eq!(find_cookie(header, name), *expected, "header {header:?}");
        }
    }

    #[test]
    fn strip_cookie_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a=1; s=xyz; b=2", Some("a=1; b=2")),
            ("s=xyz", None),
            ("s=1; s=2; c=3", Some("c=3")),
            ("a=1;s=2;b=3", Some("a=1; b=3")),
            ("ss=1; s=2", Some("ss=1")),
        ];
        for (header, expected) in cases {
            assert_eq!(
                strip_cookie(header, "s").as_deref(),
                *expected,
                "header {header:?}"
            );
        }
    }

    #[test]
    fn strip_cookie_into_joins_headers_like_strip_then_join() {
        let headers = ["a=1; s=x", "s=y", "", "b=2;c=3", " s=z ; d=4"];
        let joined: Vec<String> = headers
            .iter()
            .filter_map(|h| strip_cookie(h, "s"))
            .collect();
        let mut out = String::new();
        for h in headers {
            strip_cookie_into(h, "s", &mut out);
        }
        assert_eq!(out, joined.join("; "));
        assert_eq!(out, "a=1; b=2; c=3; d=4");
    }
}
