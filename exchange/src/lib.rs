//! Session lookup, caching, claims and token minting for sessiongate.
//!
//! The gateway hands this crate the session cookie's value and gets back an
//! authentication answer ([`SessionLookup`]: only its valid arm carries a session), then
//! asks for a token for the route's [`Audience`]. Sessions may be written by sessiongate
//! or by a framework ([`mod@format`]). This crate never forwards anything and knows nothing
//! of HTTP.
//!
//! ```no_run
//! # async fn demo(exchange: exchange::Exchange) -> Result<(), exchange::Error> {
//! use exchange::{Audience, Freshness, SessionLookup};
//! if let SessionLookup::Valid(valid) = exchange.lookup("cookie-value-from-the-browser", Freshness::Cached).await {
//!     let jwt = exchange.token(&valid, &Audience::new("orders"), std::time::Duration::from_secs(300))?;
//!     println!("Authorization: Bearer {}", jwt.jwt());
//! }
//! # Ok(()) }
//! ```

pub mod cache;
pub mod cookie;
mod error;
pub mod format;
pub mod keyspace;
pub mod metrics;
pub mod mint;
pub mod pickle;
pub mod push;
pub mod revocation;
pub mod session;
pub mod store;
#[cfg(test)]
mod tests;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::warn;

pub use cookie::{InvalidCookie, SessionToken};
pub use error::Error;
pub use format::{Malformed, SessionId};
pub use keyspace::Keyspace;
pub use metrics::Metrics;
pub use mint::{Audience, Minter, SignedJwt};
pub use session::{Outcome, Session, SessionLookup, SessionSettings, Sid, Source, ValidSession};

pub use cache::SessionRef;
use cache::{Entry, Kind, Loaded, SessionCache, StoreFailure, Stored};
use format::{Decoded, MAX_VALUE_BYTES, SessionFormat};
use metrics::LookupCounters;
use store::SessionStore;

/// How fresh a lookup must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Confirm the session in the store now (critical routes).
    Live,
    /// A cached answer no older than `cache_ttl` will do.
    Cached,
}

/// The settings and what is built from them, swapped whole on reload.
struct View {
    settings: SessionSettings,
    format: Arc<dyn SessionFormat>,
    keyspace: Keyspace,
}

impl View {
    fn new(settings: SessionSettings) -> Self {
        let keyspace = settings.keyspace();
        let format = keyspace.format().clone();
        Self {
            settings,
            format,
            keyspace,
        }
    }
}

/// Session lookups and token issuance over a store, a cache and a minter.
pub struct Exchange {
    store: Arc<dyn SessionStore>,
    cache: Arc<SessionCache>,
    view: ArcSwap<View>,
    minter: Minter,
    metrics: Arc<Metrics>,
    lookups: LookupCounters,
}

impl Exchange {
    /// Wires a store, settings and a minter together.
    pub fn new(
        store: Arc<dyn SessionStore>,
        settings: SessionSettings,
        minter: Minter,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = SessionCache::new(&settings.cache, metrics.cache_events());
        Self {
            store,
            cache: Arc::new(cache),
            view: ArcSwap::from_pointee(View::new(settings)),
            minter,
            lookups: LookupCounters::new(&metrics),
            metrics,
        }
    }

    /// The session store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The current session settings.
    pub fn settings(&self) -> SessionSettings {
        self.view.load().settings.clone()
    }

    /// The current keyspace.
    pub fn keyspace(&self) -> Keyspace {
        self.view.load().keyspace.clone()
    }

    /// Applies new session settings (hot reload). Trust windows change at once; when the
    /// way sessions are keyed or decoded changes, the cache is flushed so nothing decoded
    /// under the old rules is reused. The cache's size bounds, and turning a disabled
    /// cache on, need a restart; the returned list names what was not applied. A new key
    /// prefix or format while a push channel is attached makes the cache bypassed until
    /// restart, since the channel still tracks the old keys.
    pub fn reconfigure(&self, new: SessionSettings) -> Vec<&'static str> {
        let old = self.view.load_full();
        let old = &old.settings;
        let mut not_applied = Vec::new();
        if new.cache.max_entries != old.cache.max_entries {
            not_applied.push("session.cache_max_entries");
        }
        if new.cache.max_bytes != old.cache.max_bytes {
            not_applied.push("session.cache_max_bytes");
        }
        if new.cache.token_max_bytes != old.cache.token_max_bytes {
            not_applied.push("session.token_cache_max_bytes");
        }
        if !self.cache.is_enabled() && !new.cache.ttl.is_zero() {
            not_applied.push("session.cache_ttl (the cache was disabled at start)");
        }
        let retargeted = new.key_prefix != old.key_prefix || new.format != old.format;
        if retargeted && self.cache.push_attached() {
            // The push channel tracks the old keys: it can no longer vouch for anything
            // cached under the new ones, so the cache is bypassed until restart.
            self.cache.retire_push();
            not_applied.push(
                "session.key_prefix / session.format / session.hashed_keys for push invalidation (the cache is bypassed until restart)",
            );
        }
        let rekeyed = retargeted || new.fields != old.fields || new.cookie != old.cookie;
        self.cache.set_ttls(new.cache.ttl, new.cache.negative_ttl);
        self.view.store(Arc::new(View::new(new)));
        if rekeyed {
            self.cache.clear();
        }
        not_applied
    }

    /// The session cache.
    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    /// A shared handle on the session cache (for the invalidation channel).
    pub fn shared_cache(&self) -> Arc<SessionCache> {
        self.cache.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The minter.
    pub fn minter(&self) -> &Minter {
        &self.minter
    }

    /// The session a cookie value names in the configured format, checked without I/O.
    ///
    /// # Errors
    /// [`Malformed`] when the value names no session (bad syntax or signature).
    pub fn session_id(&self, cookie: &str) -> Result<SessionId, Malformed> {
        self.view.load().format.session_id(cookie)
    }

    /// Looks up the session a cookie value names: the cookie is checked first (no Redis
    /// call for a malformed or badly signed one), then the session is read through the
    /// cache when `freshness` allows.
    pub async fn lookup(&self, cookie: &str, freshness: Freshness) -> SessionLookup {
        let view = self.view.load_full();
        match view.format.session_id(cookie) {
            Ok(id) => {
                let live = freshness == Freshness::Live;
                // A critical route's read skips the key's expiry (see `fetch`).
                self.lookup_id(&view, &id, freshness, live, !live).await
            }
            Err(malformed) => {
                self.lookups.count(None, "malformed");
                SessionLookup::Malformed(malformed)
            }
        }
    }

    /// The answer for a session cookie whose value is not text (refused before Redis,
    /// counted like any malformed cookie).
    pub fn unreadable_cookie(&self) -> SessionLookup {
        self.lookups.count(None, "malformed");
        SessionLookup::Malformed(Malformed::Cookie("not text"))
    }

    /// Watches the session a connection opened with (`cookie`, as it was valid then),
    /// resolving when it stops being valid: see [`watch`]. Cancel it by dropping it.
    pub async fn watch(&self, cookie: &str, bounds: watch::Bounds) -> watch::Ended {
        use watch::{Ended, Woken};
        let view = self.view.load_full();
        let Ok(id) = view.format.session_id(cookie) else {
            return Ended::Revoked;
        };
        let registration = self.cache.watches().register(cache::key(id.digest()));
        let mut push = registration.push_state();
        // What the last read said: the key's expiry and the session's own.
        let mut expires: Option<Instant> = None;
        let mut exp: Option<u64> = None;
        let mut failing_since: Option<Instant> = None;
        let mut woken = Woken::Changed;
        loop {
            let now = Instant::now();
            let due = match woken {
                Woken::Changed => true,
                // A deadline (an expiry, the periodic re-check, a retry) passed.
                Woken::Deadline => true,
                // The push channel went up or down: only the deadlines change.
                Woken::Push => false,
            };
            if due {
                let unix = unix_now();
                let by_expiry = expires.is_some_and(|at| now >= at);
                match self
                    .lookup_id(&view, &id, Freshness::Live, false, true)
                    .await
                {
                    SessionLookup::Valid(v) => {
                        expires = v.session.entry().expires();
                        exp = v.session.exp();
                        failing_since = None;
                        if v.session.is_expired(unix) {
                            return Ended::Expired;
                        }
                    }
                    SessionLookup::Expired => return Ended::Expired,
                    SessionLookup::Missing | SessionLookup::Revoked if by_expiry => {
                        return Ended::Expired;
                    }
                    SessionLookup::Unavailable(_) => {
                        let since = *failing_since.get_or_insert(now);
                        if now.duration_since(since) >= bounds.unavailable_for {
                            return Ended::Unavailable;
                        }
                    }
                    _ => return Ended::Revoked,
                }
            }
            let vouched = *push.borrow_and_update();
            let exp_at = exp.map(|e| now + Duration::from_secs(e.saturating_sub(unix_now())));
            let deadline = [
                expires,
                exp_at,
                (!vouched).then(|| now + bounds.recheck_every),
                failing_since.map(|_| now + watch::retry_after(&bounds)),
            ]
            .into_iter()
            .flatten()
            .min();
            woken = registration.wait(deadline, &mut push).await;
        }
    }

    /// How many watches are open.
    pub fn watches(&self) -> u64 {
        self.cache.watches().len()
    }

    async fn lookup_id(
        &self,
        view: &View,
        id: &SessionId,
        freshness: Freshness,
        critical: bool,
        expiry: bool,
    ) -> SessionLookup {
        let now = Instant::now();
        let loaded = self
            .cache
            .get_or_load(id.digest(), freshness, now, || {
                self.fetch(view, id, now, expiry)
            })
            .await;
        let live = freshness == Freshness::Live;
        let (source, lookup) = match loaded {
            Ok(loaded) => (Some(loaded.source), classify(id, loaded, unix_now(), live)),
            Err(failure) => (
                Some(Source::Redis),
                SessionLookup::Unavailable(Error::Store {
                    op: failure.op,
                    message: failure.message.to_string(),
                    timeout: failure.timeout,
                }),
            ),
        };
        self.lookups.count(source, lookup.label());
        if critical {
            self.lookups.critical(lookup.label());
        }
        lookup
    }

    /// Reads the session from the store into a fresh cache entry read at `now`, which is
    /// not trusted past the key's own expiry. Without `expiry` the read is a plain `GET`
    /// (a critical route's, on every request: `GET`+`PTTL` costs the Redis client twice
    /// the CPU), and the cache keeps the entry only with an expiry it already knew.
    async fn fetch(
        &self,
        view: &View,
        id: &SessionId,
        now: Instant,
        expiry: bool,
    ) -> Result<Entry, StoreFailure> {
        let key = view.keyspace.session_key(id);
        let read = if expiry {
            self.store.get_with_ttl(&key).await
        } else {
            self.store.get(&key).await.map(|v| v.map(|v| (v, None)))
        };
        let read = read.map_err(|e| match e {
            Error::Store {
                op,
                message,
                timeout,
            } => StoreFailure {
                op,
                message: message.into(),
                timeout,
            },
            other => StoreFailure {
                op: "GET",
                message: other.to_string().into(),
                timeout: false,
            },
        })?;
        let Some((value, ttl)) = read else {
            return Ok(Entry::new(Stored::Absent, now));
        };
        let decoded = if value.len() > MAX_VALUE_BYTES {
            Err(Malformed::Value(format!(
                "{} bytes, more than the {MAX_VALUE_BYTES} allowed",
                value.len()
            )))
        } else {
            view.format.decode(&value).and_then(|doc| {
                view.settings
                    .fields
                    .extract(&doc, view.format.honours_exp(), id)
            })
        };
        let stored = match decoded {
            Ok(Decoded::Session(session)) => Stored::Session(session),
            Ok(Decoded::Anonymous) => Stored::Anonymous,
            Err(malformed) => {
                warn!(
                    prefix = %view.keyspace.prefix(),
                    key_hint = %id.hint(),
                    format = view.settings.format.name(),
                    error = %malformed,
                    "Malformed session value; treating it as no session."
                );
                Stored::Malformed
            }
        };
        let entry = Entry::new(stored, now).expiring(ttl.map(|t| now + t));
        Ok(if expiry {
            entry
        } else {
            entry.expiry_unknown()
        })
    }

    /// A token for a valid session and `audience`: reused from the cache while more than
    /// half its lifetime remains and its key is still published, otherwise minted.
    /// Live lookups (critical routes) always get a fresh token carrying `chk`.
    ///
    /// # Errors
    /// [`Error::NoSigningKey`] or [`Error::Sign`].
    pub fn token(
        &self,
        valid: &ValidSession,
        audience: &Audience,
        ttl: Duration,
    ) -> Result<SignedJwt, Error> {
        if valid.live {
            return self.fresh_token(valid, audience, ttl);
        }
        let now = unix_now();
        let entry = valid.session.entry();
        let keyset = self.minter.keyring().load();
        let reusable = |jwt: &SignedJwt| {
            jwt.more_than_half_left(now) && keyset.is_published(jwt.kid().as_str())
        };
        if let Some(jwt) = self
            .cache
            .token(&valid.digest, entry, audience.as_str(), ttl, reusable)
        {
            self.lookups.token_hit.inc();
            return Ok(jwt);
        }
        let jwt = self.minter.mint(&valid.session, audience, ttl, now, None)?;
        self.lookups.token_miss.inc();
        self.cache
            .keep_token(valid.digest, entry, audience.shared(), ttl, jwt.clone());
        Ok(jwt)
    }

    /// A token minted now for `valid` and `audience`, never a kept one and not kept for
    /// reuse: its whole `ttl` lies ahead (with `chk` when the session was read live).
    ///
    /// # Errors
    /// [`Error::NoSigningKey`] or [`Error::Sign`].
    pub fn fresh_token(
        &self,
        valid: &ValidSession,
        audience: &Audience,
        ttl: Duration,
    ) -> Result<SignedJwt, Error> {
        self.minter.mint(
            &valid.session,
            audience,
            ttl,
            unix_now(),
            valid.confirmed_at,
        )
    }
}

/// The authentication answer of a store (or cache) answer.
fn classify(id: &SessionId, loaded: Loaded, unix: u64, live: bool) -> SessionLookup {
    let Loaded {
        entry,
        source,
        previous,
    } = loaded;
    match entry.kind() {
        Kind::Session => match SessionRef::of(&entry) {
            Some(session) if session.is_expired(unix) => SessionLookup::Expired,
            Some(session) => SessionLookup::Valid(ValidSession {
                session,
                digest: *id.digest(),
                source,
                confirmed_at: (source == Source::Redis).then_some(unix),
                live,
            }),
            None => SessionLookup::Missing,
        },
        Kind::Anonymous => SessionLookup::Anonymous,
        Kind::Malformed => SessionLookup::Malformed(Malformed::Value("undecodable".into())),
        Kind::Absent if previous.is_some_and(|p| p.kind() == Kind::Session) => {
            SessionLookup::Revoked
        }
        Kind::Absent => SessionLookup::Missing,
    }
}

/// The current unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
