//! Sessions: settings, the decoded session, the opaque `sid`, and lookup outcomes.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::cache::{CacheLimits, SessionRef};
use crate::format::{Claim, Field, Fields, FormatSettings, Malformed};

/// Session settings owned by this crate (converted from the gateway's config).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// Who writes the sessions, and how their cookies and values read.
    pub format: FormatSettings,
    /// Name of the session cookie.
    pub cookie: String,
    /// Prefix of every session key in Redis.
    pub key_prefix: String,
    /// Prefix of the gateway's own keys (`keys.redis_prefix`): the canary lives there.
    pub own_prefix: String,
    /// The subject and the claims copied into tokens.
    pub fields: Fields,
    /// Bounds and trust windows of the session cache.
    pub cache: CacheLimits,
    /// How often open connections re-check their session while the push channel is down.
    pub stream_recheck: Duration,
}

impl SessionSettings {
    /// The keyspace these settings describe (their format built).
    pub fn keyspace(&self) -> crate::Keyspace {
        crate::Keyspace::new(
            &self.key_prefix,
            &self.own_prefix,
            crate::format::build(&self.format),
        )
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        let field = |name: &str| Field::parse(name).unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            format: FormatSettings::Sessiongate { hashed_keys: true },
            cookie: "__Host-session".into(),
            key_prefix: "sg:session:".into(),
            own_prefix: "sg:keys:".into(),
            fields: Fields {
                subject: field("sub"),
                claims: ["roles", "email"]
                    .into_iter()
                    .map(|name| Claim {
                        name: name.into(),
                        field: field(name),
                    })
                    .collect(),
            },
            cache: CacheLimits::default(),
            stream_recheck: Duration::from_secs(1),
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
            // Values are at most crate::format::MAX_VALUE_BYTES, far below u32::MAX.
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

    /// The subject as a JSON string literal (what a token's `sub` is).
    pub fn subject_json(&self) -> &str {
        self.json
            .get(..self.subject_end as usize)
            .unwrap_or_default()
    }

    /// `,"name":value` pairs for the configured claims (empty when none are present):
    /// `{"sub":` [`Session::subject_json`], these, `}` is a JSON object.
    pub fn claims_json(&self) -> &str {
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
/// `sid = base64url(SHA-256("sessiongate/sid/v1" || 0x00 || digest))[..22]`, where the
/// digest is SHA-256 of the session id (for the `sessiongate` format, of the cookie: the
/// hashed Redis key). One more domain-separated hash means the `sid` cannot be turned
/// back into the key or the cookie, while every replica derives the same `sid` without a
/// shared secret. Kept inline (22 ASCII bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; SID_LEN]);

impl Sid {
    /// Derives the sid of the session whose digest ([`crate::SessionId::digest`]) is
    /// `digest`.
    pub fn derive(digest: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"sessiongate/sid/v1\0");
        h.update(digest);
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

/// The outcome of looking a session up: an authentication answer, never an error. Only
/// the valid arm carries a session, so nothing can mint for any other.
#[derive(Debug)]
pub enum SessionLookup {
    /// The session exists and is live.
    Valid(ValidSession),
    /// The session exists but has no subject (frameworks make one for every visitor).
    Anonymous,
    /// No session under this cookie.
    Missing,
    /// The session exists but is past its `exp`.
    Expired,
    /// The session was valid earlier and has since been deleted.
    Revoked,
    /// The cookie names no session of the format (refused before Redis), or the stored
    /// value cannot be decoded.
    Malformed(Malformed),
    /// The store cannot answer and nothing cached may stand in for it.
    Unavailable(Error),
}

impl SessionLookup {
    /// Which answer it is, without what it carries.
    pub fn outcome(&self) -> Outcome {
        match self {
            SessionLookup::Valid(_) => Outcome::Valid,
            SessionLookup::Anonymous => Outcome::Anonymous,
            SessionLookup::Missing => Outcome::Missing,
            SessionLookup::Expired => Outcome::Expired,
            SessionLookup::Revoked => Outcome::Revoked,
            SessionLookup::Malformed(_) => Outcome::Malformed,
            SessionLookup::Unavailable(_) => Outcome::Unavailable,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        self.outcome().label()
    }
}

/// The arms of [`SessionLookup`], without what they carry: what requests remember for
/// their access line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// [`SessionLookup::Valid`].
    Valid,
    /// [`SessionLookup::Anonymous`].
    Anonymous,
    /// [`SessionLookup::Missing`].
    Missing,
    /// [`SessionLookup::Expired`].
    Expired,
    /// [`SessionLookup::Revoked`].
    Revoked,
    /// [`SessionLookup::Malformed`].
    Malformed,
    /// [`SessionLookup::Unavailable`].
    Unavailable,
}

impl Outcome {
    /// A bounded label for metrics and logs (`error` for an unavailable store).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::Anonymous => "anonymous",
            Outcome::Missing => "missing",
            Outcome::Expired => "expired",
            Outcome::Revoked => "revoked",
            Outcome::Malformed => "malformed",
            Outcome::Unavailable => "error",
        }
    }
}

/// A session the store confirmed live within the caller's bound: what a token may be
/// minted for.
#[derive(Debug, Clone)]
pub struct ValidSession {
    pub(crate) session: SessionRef,
    pub(crate) digest: [u8; 32],
    pub(crate) source: Source,
    /// Unix time at which the store confirmed it (a live lookup), for `chk`.
    pub(crate) confirmed_at: Option<u64>,
    pub(crate) live: bool,
}

impl ValidSession {
    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Where the answer came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Unix time at which Redis confirmed the session for this request (critical routes).
    pub fn confirmed_at(&self) -> Option<u64> {
        self.confirmed_at
    }

    /// The digest naming the session (for watches and the cache).
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
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
    use crate::SessionId;
    use crate::format::{Decoded, Document, push_hex};

    #[test]
    fn sid_is_stable_opaque_and_distinct() {
        let a = SessionId::raw("abcdefghijklmnopqrstuvwxyz012345");
        let b = SessionId::raw("abcdefghijklmnopqrstuvwxyz012346");
        let sid = a.sid();
        assert_eq!(sid, Sid::derive(a.digest()));
        assert_ne!(sid, b.sid());
        assert_eq!(sid.as_str().len(), 22);
        let mut hex = String::new();
        push_hex(&mut hex, a.digest());
        assert!(!hex.contains(sid.as_str()));
        assert!(!sid.as_str().contains("abcdefghijklmnop"));
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
        let id = SessionId::raw("abcdefghijklmnopqrstuvwxyz012345");
        let fields = SessionSettings::default().fields;
        let decode = |value: &str| match fields
            .extract(&Document::json(value.as_bytes()).unwrap(), true, &id)
            .unwrap()
        {
            Decoded::Session(s) => s,
            Decoded::Anonymous => panic!("anonymous: {value}"),
        };
        for (value, subject) in [
            (r#"{"sub":"user-42","roles":["r"]}"#, "user-42"),
            (r#"{"sub":"a\"b\u00e9"}"#, "a\"b\u{e9}"),
        ] {
            let s = decode(value);
            assert_eq!(s.subject(), subject);
            assert_eq!(
                serde_json::from_str::<String>(s.subject_json()).unwrap(),
                subject
            );
        }
        let s = decode(r#"{"sub":"u","roles":["r"]}"#);
        assert_eq!(s.claims_json(), r#","roles":["r"]"#);
        assert_eq!(s.heap_bytes(), r#""u","roles":["r"]"#.len());
    }
}
