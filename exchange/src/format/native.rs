//! The `sessiongate` format: sessions written by `sessiongate session create` or a login
//! service following docs/redis-schema.md.
//!
//! Cookie: 16–512 characters of `[A-Za-z0-9_-.~]` ([`SessionToken`]). Key: the prefix,
//! then the lowercase hex SHA-256 of the cookie (or the cookie itself when keys are not
//! hashed). Value: a JSON object; a top-level `exp` (unix seconds) ends the session.

use sha2::{Digest as _, Sha256};

use super::{Document, Malformed, SessionFormat, SessionId, parse_hex32};
use crate::SessionToken;

/// The `sessiongate` format.
#[derive(Debug, Clone, Copy)]
pub struct Native {
    hashed_keys: bool,
}

impl Native {
    /// The format, with keys hashed (`true`, the default) or raw.
    pub fn new(hashed_keys: bool) -> Self {
        Self { hashed_keys }
    }

    /// The session a validated cookie names.
    pub fn id_of(&self, token: &SessionToken) -> SessionId {
        if self.hashed_keys {
            SessionId::hashed(*token.digest())
        } else {
            SessionId::raw(token.expose())
        }
    }
}

impl SessionFormat for Native {
    fn session_id(&self, cookie: &str) -> Result<SessionId, Malformed> {
        let token = SessionToken::parse(cookie).map_err(|e| Malformed::Cookie(e.reason()))?;
        Ok(self.id_of(&token))
    }

    fn digest_of_key(&self, rest: &str) -> Option<[u8; 32]> {
        if self.hashed_keys {
            parse_hex32(rest)
        } else {
            SessionToken::parse(rest).ok()?;
            Some(Sha256::digest(rest.as_bytes()).into())
        }
    }

    fn decode<'a>(&self, value: &'a [u8]) -> Result<Document<'a>, Malformed> {
        Document::json(value)
    }

    fn honours_exp(&self) -> bool {
        true
    }

    fn is_native(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &str = "abcdefghijklmnopqrstuvwxyz012345";

    fn key(format: &Native, cookie: &str) -> Option<String> {
        let id = format.session_id(cookie).ok()?;
        let mut key = String::new();
        id.push_key(&mut key);
        Some(key)
    }

    #[test]
    fn keys_are_the_cookie_or_its_hash_and_invert() {
        let hashed = Native::new(true);
        let raw = Native::new(false);
        // sha256("abcdefghijklmnopqrstuvwxyz012345"), as docs/redis-schema.md says.
        let hex = key(&hashed, COOKIE).unwrap();
        assert_eq!(hex.len(), 64);
        assert_eq!(key(&raw, COOKIE).as_deref(), Some(COOKIE));
        let digest = *hashed.session_id(COOKIE).unwrap().digest();
        assert_eq!(hashed.digest_of_key(&hex), Some(digest));
        assert_eq!(raw.digest_of_key(COOKIE), Some(digest));
        for other in ["user:alice", "canary:0123", "", &"zz".repeat(32)] {
            assert_eq!(hashed.digest_of_key(other), None, "{other}");
        }
        assert_eq!(raw.digest_of_key("user:alice"), None);
    }

    #[test]
    fn cookies_outside_the_alphabet_are_malformed() {
        let f = Native::new(true);
        for bad in [
            "short",
            "abcdefghijklmnop=",
            "abcdefghijklmnopé",
            &"a".repeat(513),
        ] {
            assert!(
                matches!(f.session_id(bad), Err(Malformed::Cookie(_))),
                "{bad}"
            );
        }
    }

    // === properties ===

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cookies_and_keys_invert(
            cookie in prop_oneof!["[A-Za-z0-9_.~-]{16,64}", "[A-Za-z0-9_.~=é -]{0,40}", any::<String>()],
            hashed in any::<bool>(),
        ) {
            let f = Native::new(hashed);
            let valid = (16..=512).contains(&cookie.len())
                && cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.~".contains(&b));
            let id = f.session_id(&cookie);
            prop_assert_eq!(id.is_ok(), valid);
            if let Ok(id) = id {
                let mut key = String::new();
                id.push_key(&mut key);
                prop_assert_eq!(f.digest_of_key(&key), Some(*id.digest()));
            }
        }
    }
}
