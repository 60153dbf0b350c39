//! Session lookup, caching, claims and token minting for sessiongate.
//!
//! The gateway hands this crate a validated [`SessionToken`] and gets back an
//! authentication answer ([`SessionLookup`]) or an infrastructure [`Error`], then asks
//! for a token for the route's [`Audience`]. This crate never forwards anything and
//! knows nothing of HTTP.
//!
//! ```no_run
//! # async fn demo(exchange: exchange::Exchange) -> Result<(), exchange::Error> {
//! use exchange::{Audience, Freshness, SessionLookup, SessionToken};
//! let token = SessionToken::parse("cookie-value-from-the-browser").expect("valid cookie");
//! let resolved = exchange.lookup(&token, Freshness::Cached).await?;
//! if let SessionLookup::Valid(_) = resolved.lookup {
//!     let jwt = exchange.token(&resolved, &Audience::new("orders"), std::time::Duration::from_secs(300))?;
//!     println!("Authorization: {}", std::str::from_utf8(jwt.bearer()).unwrap_or_default());
//! }
//! # Ok(()) }
//! ```

pub mod cache;
pub mod cookie;
mod error;
pub mod metrics;
pub mod mint;
pub mod push;
pub mod revocation;
pub mod session;
pub mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use cookie::{InvalidCookie, SessionToken};
pub use error::Error;
pub use metrics::Metrics;
pub use mint::{Audience, Minter, SignedJwt};
pub use session::{Session, SessionLookup, SessionSettings, Sid, Source};

pub use cache::SessionRef;
use cache::{Entry, Probe, SessionCache};
use session::record::{self, redis_key};
use store::SessionStore;

/// How fresh a lookup must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Confirm the session in the store now (critical routes).
    Live,
    /// A cached answer no older than `cache_ttl` will do.
    Cached,
}

/// The answer to a lookup, with what is needed to issue a token for it.
pub struct Resolved {
    /// The authentication outcome.
    pub lookup: SessionLookup,
    /// Where it came from.
    pub source: Source,
    /// Unix time at which the session was confirmed live in the store, for `chk`.
    pub confirmed_at: Option<u64>,
    entry: Option<Arc<Entry>>,
    /// The cache key (the cookie's digest) the entry belongs to.
    key: [u8; 32],
    live: bool,
}

/// Session lookups and token issuance over a store, a cache and a minter.
pub struct Exchange {
    store: Arc<dyn SessionStore>,
    cache: Arc<SessionCache>,
    settings: ArcSwap<SessionSettings>,
    minter: Minter,
    metrics: Arc<Metrics>,
}

impl Exchange {
    /// Wires a store, settings and a minter together.
    pub fn new(
        store: Arc<dyn SessionStore>,
        settings: SessionSettings,
        minter: Minter,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = SessionCache::new(
            settings.cache_ttl,
            settings.negative_cache_ttl,
            settings.cache_max_entries,
            settings.cache_max_bytes,
            settings.token_cache_max_bytes,
            metrics.session_cache.with_label_values(&["eviction"]),
            metrics.session_cache.with_label_values(&["token_eviction"]),
        );
        Self {
            store,
            cache: Arc::new(cache),
            settings: ArcSwap::from_pointee(settings),
            minter,
            metrics,
        }
    }

    /// The session store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The current session settings.
    pub fn settings(&self) -> Arc<SessionSettings> {
        self.settings.load_full()
    }

    /// Applies new session settings (hot reload). Trust windows change at once; when the
    /// way sessions are keyed or decoded changes, the cache is flushed so nothing decoded
    /// under the old rules is reused. `cache_max_entries`, and turning a disabled cache
    /// on, need a restart; the returned list names what was not applied. A new key prefix
    /// (or hashing) while a push channel is attached makes the cache bypassed until
    /// restart, since the channel still tracks the old prefix.
    pub fn reconfigure(&self, new: SessionSettings) -> Vec<&'static str> {
        let old = self.settings.load_full();
        let mut not_applied = Vec::new();
        if new.cache_max_entries != old.cache_max_entries {
            not_applied.push("session.cache_max_entries");
        }
        if new.cache_max_bytes != old.cache_max_bytes {
            not_applied.push("session.cache_max_bytes");
        }
        if new.token_cache_max_bytes != old.token_cache_max_bytes {
            not_applied.push("session.token_cache_max_bytes");
        }
        if !self.cache.is_enabled() && !new.cache_ttl.is_zero() {
            not_applied.push("session.cache_ttl (the cache was disabled at start)");
        }
        let retargeted = new.key_prefix != old.key_prefix || new.hashed_keys != old.hashed_keys;
        if retargeted && self.cache.push_attached() {
            // The push channel tracks the old key prefix: it can no longer vouch for
            // anything cached under the new one, so the cache is bypassed until restart.
            self.cache.retire_push();
            not_applied.push(
                "session.key_prefix / session.hashed_keys for push invalidation (the cache is bypassed until restart)",
            );
        }
        let rekeyed = retargeted
            || new.subject_field != old.subject_field
            || new.claims != old.claims
            || new.cookie != old.cookie;
        self.cache.set_ttls(new.cache_ttl, new.negative_cache_ttl);
        self.settings.store(Arc::new(new));
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

    /// Looks a session up, from the cache when `freshness` allows.
    ///
    /// # Errors
    /// [`Error::Store`] when the store cannot answer and no trusted cache entry exists;
    /// [`Error::Corrupt`] when the stored value breaks the schema.
    pub async fn lookup(
        &self,
        token: &SessionToken,
        freshness: Freshness,
    ) -> Result<Resolved, Error> {
        let now = Instant::now();
        let unix = unix_now();
        let result = match freshness {
            Freshness::Cached => self.lookup_cached(token, now, unix).await,
            Freshness::Live => self.lookup_live(token, now, unix).await,
        };
        match &result {
            Ok(r) => self
                .metrics
                .session_lookups
                .with_label_values(&[r.source.as_str(), r.lookup.result_label()])
                .inc(),
            Err(_) => self
                .metrics
                .session_lookups
                .with_label_values(&[Source::Redis.as_str(), "error"])
                .inc(),
        }
        result
    }

    async fn lookup_cached(
        &self,
        token: &SessionToken,
        now: Instant,
        unix: u64,
    ) -> Result<Resolved, Error> {
        let key = token.digest();
        match self.cache.probe(key, now).await {
            Probe::Hit(entry) => {
                self.metrics.session_cache.with_label_values(&["hit"]).inc();
                self.metrics
                    .cached_session_age
                    .observe(entry.age(now).as_secs_f64());
                Ok(classify(*key, entry, None, Source::Cache, unix, false))
            }
            Probe::Load(guard, stale) => {
                if self.cache.is_enabled() {
                    self.metrics
                        .session_cache
                        .with_label_values(&["miss"])
                        .inc();
                }
                let generation = self.cache.generation(key);
                let entry = Arc::new(self.fetch(token, now).await?);
                self.insert_fetched(*key, &entry, generation, guard);
                Ok(classify(*key, entry, stale, Source::Redis, unix, false))
            }
            Probe::Bypass(cached) => self.lookup_bypassing(token, cached, now, unix).await,
        }
    }

    /// A lookup while the push channel does not vouch for the cache: the store answers,
    /// and the cached entry only stands in for it while the store is unreachable (and
    /// then only within its trust window).
    async fn lookup_bypassing(
        &self,
        token: &SessionToken,
        cached: Option<Arc<Entry>>,
        now: Instant,
        unix: u64,
    ) -> Result<Resolved, Error> {
        let key = token.digest();
        self.metrics
            .session_cache
            .with_label_values(&["bypass"])
            .inc();
        let generation = self.cache.generation(key);
        match self.fetch(token, now).await {
            Ok(entry) => {
                let entry = Arc::new(entry);
                self.insert_fetched(*key, &entry, generation, None);
                Ok(classify(*key, entry, cached, Source::Redis, unix, false))
            }
            Err(e) if e.is_unavailable() => {
                // Redis is unreachable: SPEC lets a cached session no older than
                // cache_ttl answer.
                let Some(entry) = cached.filter(|c| self.cache.is_trusted(c, now)) else {
                    return Err(e);
                };
                self.metrics
                    .session_cache
                    .with_label_values(&["outage_fallback"])
                    .inc();
                self.metrics
                    .cached_session_age
                    .observe(entry.age(now).as_secs_f64());
                Ok(classify(*key, entry, None, Source::Cache, unix, false))
            }
            Err(e) => {
                self.cache.invalidate(key);
                Err(e)
            }
        }
    }

    async fn lookup_live(
        &self,
        token: &SessionToken,
        now: Instant,
        unix: u64,
    ) -> Result<Resolved, Error> {
        let key = token.digest();
        let previous = self.cache.peek(key);
        let generation = self.cache.generation(key);
        let entry = match self.fetch(token, now).await {
            Ok(entry) => entry,
            Err(e) => {
                self.metrics
                    .critical_checks
                    .with_label_values(&["error"])
                    .inc();
                if matches!(e, Error::Corrupt { .. }) {
                    self.cache.invalidate(key);
                }
                return Err(e);
            }
        };
        let entry = Arc::new(entry);
        // Refresh the cache with what the store just said; a deleted session takes its
        // cached tokens with it.
        self.insert_fetched(*key, &entry, generation, None);
        let resolved = classify(*key, entry, previous, Source::Redis, unix, true);
        self.metrics
            .critical_checks
            .with_label_values(&[resolved.lookup.result_label()])
            .inc();
        Ok(resolved)
    }

    fn insert_fetched(
        &self,
        key: [u8; 32],
        entry: &Arc<Entry>,
        generation: u64,
        guard: Option<cache::LoadGuard<'_>>,
    ) {
        if !self.cache.is_enabled() {
            return;
        }
        if !self
            .cache
            .insert_if_current(key, entry.clone(), generation, guard)
        {
            // An invalidation raced this read: answer with it, but do not cache it.
            // Whatever is cached for the key is older than that invalidation: drop it.
            self.metrics
                .session_cache
                .with_label_values(&["raced_invalidation"])
                .inc();
            self.cache.invalidate(&key);
        }
    }

    /// Reads the session from the store into a fresh cache entry read at `now`, which is
    /// not trusted past the key's own expiry.
    async fn fetch(&self, token: &SessionToken, now: Instant) -> Result<Entry, Error> {
        let settings = self.settings.load();
        let key = redis_key(&settings.key_prefix, token, settings.hashed_keys);
        let Some((value, ttl)) = self.store.get_with_ttl(&key).await? else {
            return Ok(Entry::new(None, now));
        };
        match record::decode(&value, token, &settings) {
            Ok(session) => Ok(Entry::new(Some(session), now).expiring(ttl.map(|t| now + t))),
            Err(e) => Err(Error::Corrupt {
                key_hint: format!("{}{}…", settings.key_prefix, &key_hint(token)),
                reason: e.to_string(),
            }),
        }
    }

    /// A token for a valid session and `audience`: reused from the cache while more than
    /// half its lifetime remains and its key is still published, otherwise minted.
    /// Live lookups (critical routes) always get a fresh token carrying `chk`.
    ///
    /// # Errors
    /// [`Error::NoSigningKey`] or [`Error::Sign`]; also [`Error::Corrupt`] if called for a
    /// lookup that is not valid.
    pub fn token(
        &self,
        resolved: &Resolved,
        audience: &Audience,
        ttl: Duration,
    ) -> Result<SignedJwt, Error> {
        let SessionLookup::Valid(session) = &resolved.lookup else {
            return Err(Error::Corrupt {
                key_hint: String::from("-"),
                reason: "token requested for a session that is not valid".into(),
            });
        };
        let now = unix_now();
        if resolved.live {
            return self
                .minter
                .mint(session, audience, ttl, now, resolved.confirmed_at);
        }
        if let Some(entry) = &resolved.entry {
            let keyset = self.minter.keyring().load();
            let reusable = |jwt: &SignedJwt| {
                jwt.more_than_half_left(now) && keyset.is_published(jwt.kid().as_str())
            };
            if let Some(jwt) =
                self.cache
                    .token(&resolved.key, entry, audience.as_str(), ttl, reusable)
            {
                self.metrics.token_cache.with_label_values(&["hit"]).inc();
                return Ok(jwt);
            }
        }
        let jwt = self.minter.mint(session, audience, ttl, now, None)?;
        self.metrics.token_cache.with_label_values(&["miss"]).inc();
        if let Some(entry) = &resolved.entry {
            self.cache
                .keep_token(resolved.key, entry, audience.shared(), ttl, jwt.clone());
        }
        Ok(jwt)
    }
}

fn classify(
    key: [u8; 32],
    entry: Arc<Entry>,
    previous: Option<Arc<Entry>>,
    source: Source,
    unix: u64,
    live: bool,
) -> Resolved {
    let lookup = match (entry.session(), SessionRef::of(&entry)) {
        (Some(s), _) if s.is_expired(unix) => SessionLookup::Expired,
        (_, Some(s)) => SessionLookup::Valid(s),
        _ if previous.is_some_and(|p| p.session().is_some()) => SessionLookup::Revoked,
        _ => SessionLookup::Missing,
    };
    let confirmed_at = (source == Source::Redis).then_some(unix);
    Resolved {
        lookup,
        source,
        confirmed_at,
        entry: Some(entry),
        key,
        live,
    }
}

/// First 8 hex characters of the cookie digest: enough to find a key in logs, too
/// little to use it.
fn key_hint(token: &SessionToken) -> String {
    let mut s = String::with_capacity(8);
    record::push_hex(&mut s, &token.digest()[..4]);
    s
}

/// The current unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
