//! The pre-rendered JWKS document (`{"keys":[...]}`, a `jsonwebtoken::jwk::JwkSet`) and
//! its strong ETag.
//!
//! The body is rendered once per [`KeySet`](crate::KeySet) from keys ordered by
//! activation time then kid, so the same published keys always give the same bytes and
//! the ETag changes only when the published set does.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use jsonwebtoken::jwk::JwkSet;
use sha2::{Digest as _, Sha256};

use crate::{Error, Kid, SigningKey};

/// A rendered JWKS document with its ETag.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwks {
    body: Bytes,
    etag: Box<str>,
}

impl Jwks {
    /// The JSON body, ready to serve. Cloning the `Bytes` is cheap.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The strong ETag, quoted: `"` + the first 32 hex digits of SHA-256(body) + `"`.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// Renders `keys` in the order given.
    pub(crate) fn render(keys: &[Arc<SigningKey>]) -> Result<Jwks, Error> {
        let set = JwkSet {
            keys: keys.iter().map(|k| k.jwk().clone()).collect(),
        };
        let body = serde_json::to_vec(&set).map_err(|e| Error::Jwk {
            kid: keys
                .first()
                .map_or_else(|| Kid::from(""), |k| k.kid().clone()),
            reason: e.to_string(),
        })?;
        Ok(Self::from_body(body))
    }

    /// The document with no keys.
    pub(crate) fn empty() -> Jwks {
        Self::from_body(br#"{"keys":[]}"#.to_vec())
    }

    fn from_body(body: Vec<u8>) -> Jwks {
        let digest = Sha256::digest(&body);
        let mut etag = String::with_capacity(34);
        etag.push('"');
        for byte in &digest[..16] {
            // Writing to a String cannot fail.
            let _ = write!(etag, "{byte:02x}");
        }
        etag.push('"');
        Jwks {
            body: Bytes::from(body),
            etag: etag.into_boxed_str(),
        }
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("etag", &self.etag)
            .field("len", &self.body.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document() {
        let jwks = Jwks::empty();
        assert_eq!(&jwks.body()[..], br#"{"keys":[]}"#);
        assert_eq!(Jwks::render(&[]).unwrap(), jwks);
        let etag = jwks.etag();
        assert_eq!(etag.len(), 34);
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert!(etag[1..33].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
