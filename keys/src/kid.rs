//! [`Kid`]: the key id, cheap to clone and shared between the key, its JWK and metrics.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::Error;

/// Longest key id a store accepts.
const MAX_STORABLE_LEN: usize = 128;

/// A key id (`kid`). Keys generated here use the RFC 7638 SHA-256 thumbprint of the
/// public JWK, which is 43 base64url characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(Arc<str>);

impl Kid {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that the id can name a file or storage key: 1 to 128 characters of
    /// `A-Z a-z 0-9 - _` (the base64url alphabet), so no path separators or dots.
    ///
    /// # Errors
    /// [`Error::InvalidKid`] otherwise.
    pub fn check_storable(&self) -> Result<(), Error> {
        let ok = !self.0.is_empty()
            && self.0.len() <= MAX_STORABLE_LEN
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidKid {
                kid: self.0.to_string(),
            })
        }
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Kid").field(&&*self.0).finish()
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Kid {
    fn from(s: &str) -> Self {
        Kid(Arc::from(s))
    }
}

impl From<String> for Kid {
    fn from(s: String) -> Self {
        Kid(Arc::from(s))
    }
}

impl AsRef<str> for Kid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Kid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Kid {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Kid {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_ids() {
        let cases = [
            ("Zq3_-abc09", true),
            ("", false),
            ("../etc/passwd", false),
            ("a.json", false),
            ("a/b", false),
            ("..data", false),
            ("ä", false),
        ];
        for (kid, ok) in cases {
            assert_eq!(Kid::from(kid).check_storable().is_ok(), ok, "{kid:?}");
        }
        assert!(Kid::from("a".repeat(129)).check_storable().is_err());
    }

    #[test]
    fn display_debug_and_eq() {
        let kid = Kid::from("abc");
        assert_eq!(kid.to_string(), "abc");
        assert_eq!(format!("{kid:?}"), "Kid(\"abc\")");
        assert_eq!(kid, "abc");
        assert_eq!(kid, Kid::from(String::from("abc")));
    }
}
