//! The `sessiongate` format's cookie value, validated before it can reach Redis.

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

impl InvalidCookie {
    /// What is wrong, as a fixed phrase (for [`crate::format::Malformed::Cookie`]).
    pub fn reason(self) -> &'static str {
        match self {
            InvalidCookie::TooShort => "shorter than 16 characters",
            InvalidCookie::TooLong => "longer than 512 characters",
            InvalidCookie::BadCharacter => "a character outside [A-Za-z0-9_-.~]",
        }
    }
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
}
