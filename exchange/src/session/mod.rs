//! Sessions: settings, the decoded session, the opaque `sid`, and lookup outcomes.

pub mod record;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::SessionToken;

/// Session settings owned by this crate (converted from the gateway's config).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// Name of the session cookie.
    pub cookie: String,
    /// Prefix of every session key in Redis.
    pub key_prefix: String,
    /// Whether the Redis key is the SHA-256 of the cookie (true) or the cookie itself.
    pub hashed_keys: bool,
    /// The longest a non-critical route may trust a cached session; zero disables the cache.
    pub cache_ttl: Duration,
    /// How long "no such session" is remembered.
    pub negative_cache_ttl: Duration,
    /// Upper bound on cached sessions.
    pub cache_max_entries: usize,
    /// Field of the session object that becomes `sub`.
    pub subject_field: String,
    /// Fields of the session object copied into tokens.
    pub claims: Vec<String>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            cookie: "__Host-session".into(),
            key_prefix: "sg:session:".into(),
            hashed_keys: true,
            cache_ttl: Duration::from_secs(5),
            negative_cache_ttl: Duration::from_secs(1),
            cache_max_entries: 100_000,
            subject_field: "sub".into(),
            claims: vec!["roles".into(), "email".into()],
        }
    }
}

/// A live session, decoded from the store.
///
/// The subject and claims are kept pre-serialized as JSON so that minting writes
/// them without re-encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub(crate) subject: Box<str>,
    pub(crate) subject_json: Box<str>,
    pub(crate) exp: Option<u64>,
    pub(crate) sid: Sid,
    /// `,"name":value` pairs for the configured claims (empty when none are present).
    pub(crate) claims_json: Box<str>,
}

impl Session {
    /// The subject (`sub`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The session's own expiry (unix seconds), when it has one.
    pub fn exp(&self) -> Option<u64> {
        self.exp
    }

    /// The opaque session handle placed in tokens as `sid`.
    pub fn sid(&self) -> &Sid {
        &self.sid
    }

    /// Whether the session is past its `exp` at `now` (unix seconds).
    pub fn is_expired(&self, now: u64) -> bool {
        self.exp.is_some_and(|exp| now >= exp)
    }

    /// Approximate heap size, for the cache's byte bound.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.subject.len()
            + self.subject_json.len()
            + self.claims_json.len()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("sub", &self.subject)
            .field("exp", &self.exp)
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

/// A stable, opaque handle for a session that reveals neither the cookie nor its Redis key.
///
/// `sid = base64url(SHA-256("sessiongate/sid/v1" || 0x00 || SHA-256(cookie)))[..22]`.
/// The Redis key holds `SHA-256(cookie)`; one more domain-separated hash means
/// the `sid` cannot be turned back into the key or the cookie, while every replica
/// derives the same `sid` without a shared secret.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Sid(Box<str>);

impl Sid {
    /// Derives the sid of a session token.
    pub fn derive(token: &SessionToken) -> Self {
        let mut h = Sha256::new();
        h.update(b"sessiongate/sid/v1\0");
        h.update(token.digest());
        let digest = h.finalize();
        let mut s = URL_SAFE_NO_PAD.encode(digest);
        s.truncate(22);
        Sid(s.into_boxed_str())
    }

    /// The sid text (URL-safe, no escaping needed in JSON).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The outcome of looking a session up: an authentication answer, never an error.
#[derive(Debug, Clone)]
pub enum SessionLookup {
    /// The session exists and is live.
    Valid(Arc<Session>),
    /// No session under this cookie.
    Missing,
    /// The session exists but is past its `exp`.
    Expired,
    /// The session was valid earlier and has since been deleted.
    Revoked,
}

impl SessionLookup {
    /// A bounded label for metrics.
    pub fn result_label(&self) -> &'static str {
        match self {
            SessionLookup::Valid(_) => "valid",
            SessionLookup::Missing => "missing",
            SessionLookup::Expired => "expired",
            SessionLookup::Revoked => "revoked",
        }
    }
}

/// Where a lookup was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The local cache.
    Cache,
    /// A Redis round trip.
    Redis,
}

impl Source {
    /// A bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Redis => "redis",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_is_stable_opaque_and_distinct() {
        let a = SessionToken::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap();
        let b = SessionToken::parse("abcdefghijklmnopqrstuvwxyz012346").unwrap();
        let sid = Sid::derive(&a);
        assert_eq!(sid, Sid::derive(&a));
        assert_ne!(sid, Sid::derive(&b));
        assert_eq!(sid.as_str().len(), 22);
        let mut hex = String::new();
        record::push_hex(&mut hex, a.digest());
        assert!(!hex.contains(sid.as_str()));
        assert!(!sid.as_str().contains(a.expose()));
    }
}
