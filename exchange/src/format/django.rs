//! The `django` format: Django's `cache` (or `cached_db`) session engine on Django's
//! Redis cache backend or django-redis, with their default pickle serializer.
//!
//! Cookie: `[a-z0-9]{32}`, as Django makes session keys. Key: the prefix
//! (`:1:django.contrib.sessions.cache`, i.e. `KEY_PREFIX:VERSION:` and the engine's own
//! prefix), then the cookie. Value: a pickle of the session dict, decoded as data only
//! ([`crate::pickle`]): nothing is imported or called. Expiry is the key's TTL.

use sha2::{Digest as _, Sha256};

use super::{Document, Malformed, SessionFormat, SessionId};
use crate::pickle;

/// The `django` format.
#[derive(Debug, Clone, Copy)]
pub struct Django;

/// Whether `key` is a session key as Django makes them.
fn is_session_key(key: &str) -> bool {
    key.len() == 32
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl SessionFormat for Django {
    fn session_id(&self, cookie: &str) -> Result<SessionId, Malformed> {
        if is_session_key(cookie) {
            Ok(SessionId::raw(cookie))
        } else {
            Err(Malformed::Cookie("not 32 characters of [a-z0-9]"))
        }
    }

    fn digest_of_key(&self, rest: &str) -> Option<[u8; 32]> {
        is_session_key(rest).then(|| Sha256::digest(rest.as_bytes()).into())
    }

    fn decode<'a>(&self, value: &'a [u8]) -> Result<Document<'a>, Malformed> {
        match pickle::decode(value, pickle::Limits::default()) {
            Ok(value @ serde_json::Value::Object(_)) => Ok(Document::Value(value)),
            Ok(_) => Err(Malformed::Value("the pickle is not a dict".into())),
            Err(e) => Err(Malformed::Value(format!("pickle: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_are_32_lowercase_alphanumerics() {
        let key = "0123456789abcdefghijklmnopqrstuv";
        assert!(Django.session_id(key).is_ok());
        assert_eq!(
            Django.digest_of_key(key),
            Some(*Django.session_id(key).unwrap().digest())
        );
        for bad in [
            "",
            "short",
            &key.to_uppercase(),
            &format!("{key}x"),
            "0123456789abcdefghijklmnopqrst-v",
        ] {
            assert!(Django.session_id(bad).is_err(), "{bad}");
            assert_eq!(Django.digest_of_key(bad), None, "{bad}");
        }
    }

    // === properties ===

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cookies_name_a_session_exactly_when_django_could_have_made_them(
            cookie in prop_oneof!["[a-z0-9]{32}", "[a-z0-9A-Z_-]{30,34}", any::<String>()],
        ) {
            let valid = cookie.len() == 32
                && cookie.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            let id = Django.session_id(&cookie);
            prop_assert_eq!(id.is_ok(), valid);
            prop_assert_eq!(Django.digest_of_key(&cookie), id.ok().map(|id| *id.digest()));
        }

        #[test]
        fn stored_values_decode_to_a_dict_or_fail(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            // Mostly errors; the pickle decoder's own properties are in pickle/tests.rs.
            let value = [&b"\x80\x04}"[..], &bytes].concat();
            for input in [&bytes[..], &value[..]] {
                if let Ok(doc) = Django.decode(input) {
                    prop_assert!(matches!(doc, Document::Value(serde_json::Value::Object(_))));
                }
            }
        }
    }
}
