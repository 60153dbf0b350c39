//! Sessions: settings, the decoded session, the opaque `sid`, and lookup outcomes.

pub mod record;

use std::borrow::Cow;
use std::fmt;
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
    /// Upper bound on the bytes cached sessions hold.
    pub cache_max_bytes: u64,
    /// Upper bound on the bytes cached tokens hold; 0 keeps no tokens.
    pub token_cache_max_bytes: u64,
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
            cache_max_bytes: crate::cache::DEFAULT_MAX_BYTES,
            token_cache_max_bytes: crate::cache::DEFAULT_TOKEN_MAX_BYTES,
            subject_field: "sub".into(),
            claims: vec!["roles".into(), "email".into()],
        }
    }
}

/// A live session, decoded from the store.
///
/// The subject and claims are kept pre-serialized as JSON, in one allocation, so that
/// minting writes them without re-encoding and a cached session costs one small heap
/// block besides itself (docs/performance.md measures it).
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The subject as a JSON string literal, then `,"name":value` pairs for the
    /// configured claims (empty when none are present).
    json: Box<str>,
    /// Where the subject literal ends in `json`.
    subject_end: u32,
    /// Its own expiry (unix seconds); [`NO_EXP`] when it has none (8 bytes, not 16).
    exp: u64,
    pub(crate) sid: Sid,
}

/// [`Session::exp`] of a session without `exp` (a time no session reaches).
const NO_EXP: u64 = u64::MAX;

impl Session {
    /// A session from `json`: the subject as a JSON string literal (its first
    /// `subject_end` bytes), then the `,"name":value` pairs of the configured claims.
    pub(crate) fn new(json: String, subject_end: usize, exp: Option<u64>, sid: Sid) -> Self {
        Self {
            // A copy of exactly its length: shrinking `json` in place can leave the
            // allocator's larger block behind (mimalloc keeps a block that is at least
            // half used), which cost ~60 bytes a cached session.
            json: Box::from(json.as_str()),
            // Values are at most record::MAX_VALUE_BYTES, far below u32::MAX.
            subject_end: u32::try_from(subject_end).unwrap_or(u32::MAX),
            exp: exp.unwrap_or(NO_EXP),
            sid,
        }
    }

    /// The subject (`sub`).
    pub fn subject(&self) -> Cow<'_, str> {
        let literal = self.subject_json();
        match literal.get(1..literal.len().saturating_sub(1)) {
            // The common case: nothing was escaped, the literal is the text in quotes.
            Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
            _ => Cow::Owned(serde_json::from_str(literal).unwrap_or_default()),
        }
    }

    /// The subject as a JSON string literal.
    pub(crate) fn subject_json(&self) -> &str {
        self.json
            .get(..self.subject_end as usize)
            .unwrap_or_default()
    }

    /// `,"name":value` pairs for the configured claims (empty when none are present).
    pub(crate) fn claims_json(&self) -> &str {
        self.json
            .get(self.subject_end as usize..)
            .unwrap_or_default()
    }

    /// The session's own expiry (unix seconds), when it has one.
    pub fn exp(&self) -> Option<u64> {
        (self.exp != NO_EXP).then_some(self.exp)
    }

    /// The opaque session handle placed in tokens as `sid`.
    pub fn sid(&self) -> &Sid {
        &self.sid
    }

    /// Whether the session is past its `exp` at `now` (unix seconds).
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.exp
    }

    /// Heap bytes it holds beyond its own size (the JSON text).
    pub fn heap_bytes(&self) -> usize {
        self.json.len()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("sub", &self.subject())
            .field("exp", &self.exp())
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

/// Length of a [`Sid`] in characters.
const SID_LEN: usize = 22;

/// A stable, opaque handle for a session that reveals neither the cookie nor its Redis key.
///
/// `sid = base64url(SHA-256("sessiongate/sid/v1" || 0x00 || SHA-256(cookie)))[..22]`.
/// The Redis key holds `SHA-256(cookie)`; one more domain-separated hash means
/// the `sid` cannot be turned back into the key or the cookie, while every replica
/// derives the same `sid` without a shared secret. Kept inline (22 ASCII bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; SID_LEN]);

impl Sid {
    /// Derives the sid of a session token.
    pub fn derive(token: &SessionToken) -> Self {
        let mut h = Sha256::new();
        h.update(b"sessiongate/sid/v1\0");
        h.update(token.digest());
        let digest = h.finalize();
        // 22 base64 characters carry 132 bits: the first 17 bytes of the digest.
        let mut text = [0u8; 24];
        let written = URL_SAFE_NO_PAD
            .encode_slice(&digest[..17], &mut text)
            .unwrap_or(0);
        debug_assert_eq!(written, 23);
        let mut sid = [0u8; SID_LEN];
        sid.copy_from_slice(&text[..SID_LEN]);
        Sid(sid)
    }

    /// The sid text (URL-safe, no escaping needed in JSON).
    pub fn as_str(&self) -> &str {
        // Base64url output is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Sid").field(&self.as_str()).finish()
    }
}

/// The outcome of looking a session up: an authentication answer, never an error.
#[derive(Debug, Clone)]
pub enum SessionLookup {
    /// The session exists and is live.
    Valid(crate::cache::SessionRef),
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
        // The documented derivation, spelled out: the first 22 characters of the
        // base64url of the whole digest.
        let mut h = Sha256::new();
        h.update(b"sessiongate/sid/v1\0");
        h.update(a.digest());
        let full = URL_SAFE_NO_PAD.encode(h.finalize());
        assert_eq!(sid.as_str(), &full[..22]);
        assert_eq!(format!("{sid:?}"), format!("Sid({:?})", &full[..22]));
    }

    #[test]
    fn subject_reads_back_escaped_and_plain() {
        let t = SessionToken::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap();
        let settings = SessionSettings::default();
        for (value, subject) in [
            (r#"{"sub":"user-42","roles":["r"]}"#, "user-42"),
            (r#"{"sub":"a\"b\u00e9"}"#, "a\"b\u{e9}"),
        ] {
            let s = record::decode(value.as_bytes(), &t, &settings).unwrap();
            assert_eq!(s.subject(), subject);
            assert_eq!(
                serde_json::from_str::<String>(s.subject_json()).unwrap(),
                subject
            );
        }
        let s = record::decode(br#"{"sub":"u","roles":["r"]}"#, &t, &settings).unwrap();
        assert_eq!(s.claims_json(), r#","roles":["r"]"#);
        assert_eq!(s.heap_bytes(), r#""u","roles":["r"]"#.len());
    }
}
