//! The local session cache for non-critical routes, and the tokens kept for reuse.
//!
//! Entries are keyed by the cookie's SHA-256 (never the cookie itself; see [`Key`]) and
//! are trusted for at most `cache_ttl` after they were read from the store
//! (`negative_cache_ttl` for "no such session").
//!
//! Tokens live in a second cache under the same key, in their own byte bound, and belong
//! to the [`Entry`] they were minted for (its serial): invalidating a session drops its
//! tokens, and a token is never handed out with any other entry, so a token is never
//! given for a session the cache no longer trusts. Evicting a token leaves its session
//! cached (the next request mints).
//!
//! Memory is bounded by weight: each entry weighs its measured size in bytes (see
//! `SLOT_BYTES` and docs/performance.md), but at least `max_bytes / max_entries`, so
//! neither the byte bound nor the entry bound can be exceeded.
//!
//! An entry is also never trusted past the expiry of its Redis key (read with the value),
//! so a key that expires naturally stops being trusted at once rather than when Redis
//! gets round to expiring it and sending the invalidation.
//!
//! When a push channel is attached ([`SessionCache::suspend`]), the cache only answers
//! from memory while that channel vouches for it ([`SessionCache::confirm_until`]): while
//! it is down or unconfirmed, lookups *bypass* the cache and read the store, and a cached
//! entry is used only when the store cannot answer (a Redis outage), and then only
//! within its `cache_ttl`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use quick_cache::sync::{Cache, PlaceholderGuard};
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use crate::mint::SignedJwt;
use crate::session::Session;

/// Default byte bound of the cached sessions.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Default byte bound of the token cache.
pub const DEFAULT_TOKEN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What a token set with one ES256 or EdDSA token typically weighs (for sizing).
const TYPICAL_TOKEN_SET_BYTES: u64 = 800;

/// Share of the cache quick_cache keeps for the keys of recently evicted entries (its
/// default is 0.5). A ghost costs a slot; a quarter keeps the scan resistance they buy
/// (a key that comes back soon re-enters as hot) at half the memory.
const GHOST_ALLOCATION: f64 = 0.25;

/// quick_cache options for `items` entries weighing `weight` in all.
fn options(items: usize, weight: u64) -> quick_cache::Options {
    OptionsBuilder::new()
        .estimated_items_capacity(items)
        .weight_capacity(weight)
        .ghost_allocation(GHOST_ALLOCATION)
        .build()
        .unwrap_or_else(|e| unreachable!("constant cache options are valid: {e:?}"))
}

/// Source of [`Entry`] serials: unique per entry for the life of the process.
static SERIALS: AtomicU64 = AtomicU64::new(1);

/// A cached store answer: a session, or the knowledge that there is none.
///
/// One heap block with the session inline (the session's JSON text is the other):
/// a million cached sessions is a design point (docs/performance.md).
pub struct Entry {
    /// The session, or `None` for a negative entry.
    session: Option<Session>,
    /// When the value was read from the store, in nanoseconds after [`epoch`].
    fetched: u64,
    /// Milliseconds after `fetched` at which the store's key expires (never trusted past
    /// it); [`NO_EXPIRY`] when the key has none. Expiries further out than ~49 days are
    /// kept as ~49 days, which only makes the entry distrusted sooner.
    expires_ms: u32,
    /// Identifies this entry among every entry ever made: tokens are kept for an
    /// entry's serial, so a token minted for one store read is never handed out with
    /// another (for example after a revocation and a new session under the same key).
    serial: u64,
}

impl Entry {
    /// A fresh entry read at `fetched`.
    pub fn new(session: Option<Session>, fetched: Instant) -> Self {
        Self {
            session,
            fetched: since_epoch(fetched),
            expires_ms: NO_EXPIRY,
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The same entry, no longer trusted once the store's key expires at `expires`.
    #[must_use]
    pub fn expiring(mut self, expires: Option<Instant>) -> Self {
        self.expires_ms = expires.map_or(NO_EXPIRY, |at| {
            let ms = at.saturating_duration_since(self.fetched()).as_millis();
            u32::try_from(ms)
                .unwrap_or(NO_EXPIRY - 1)
                .min(NO_EXPIRY - 1)
        });
        self
    }

    /// The session, or `None` for "no such session".
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// When the store's key expires, if it has an expiry.
    pub fn expires(&self) -> Option<Instant> {
        (self.expires_ms != NO_EXPIRY)
            .then(|| self.fetched() + Duration::from_millis(u64::from(self.expires_ms)))
    }

    /// When the value was read from the store.
    pub fn fetched(&self) -> Instant {
        epoch() + Duration::from_nanos(self.fetched)
    }

    /// How long ago it was read from the store.
    pub fn age(&self, now: Instant) -> Duration {
        Duration::from_nanos(since_epoch(now).saturating_sub(self.fetched))
    }
}

/// The instant entry times count from (8 bytes a time instead of an `Instant`'s 16).
/// Set when the first cache is made, before any lookup reads the clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `t` (0 for an instant before it).
fn since_epoch(t: Instant) -> u64 {
    nanos(t.saturating_duration_since(epoch()))
}

/// [`Entry::expires_ms`] of a key without expiry.
const NO_EXPIRY: u32 = u32::MAX;

/// A valid session, shared with the cache entry it was read into (no copy, no extra
/// allocation per lookup).
#[derive(Clone)]
pub struct SessionRef(Arc<Entry>);

impl SessionRef {
    /// The session of `entry`, if it holds one.
    pub(crate) fn of(entry: &Arc<Entry>) -> Option<Self> {
        entry.session.is_some().then(|| Self(entry.clone()))
    }
}

impl std::ops::Deref for SessionRef {
    type Target = Session;

    fn deref(&self) -> &Session {
        // Built only from entries that hold a session (`SessionRef::of`).
        self.0
            .session
            .as_ref()
            .unwrap_or_else(|| unreachable!("SessionRef of an entry without a session"))
    }
}

impl std::fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// Tokens kept for one session entry, by audience and lifetime.
struct TokenSet {
    /// The [`Entry::serial`] they were minted for.
    serial: u64,
    tokens: Vec<CachedToken>,
}

/// A token kept for reuse.
#[derive(Clone)]
struct CachedToken {
    audience: Arc<str>,
    ttl: Duration,
    jwt: SignedJwt,
}

/// Bytes quick_cache spends on one cached item besides the key: its 40-byte slot (state,
/// links, the value's pointer), its share of the index and of the ghost list of recently
/// evicted keys, and allocator slack. Calibrated with benches/memory.rs, where a cached
/// session costs ~270 bytes of RSS and weighs 272 (docs/performance.md).
const SLOT_BYTES: u64 = 80;

/// The block `Bytes` allocates the first time a token is cloned (its shared count).
const SHARED_BYTES_BLOCK: u64 = 32;

/// What a token set costs beyond its slot and blocks (the token cache's own index and
/// ghosts are a larger share of its small entry count). Calibrated with
/// benches/memory.rs: a set with one EdDSA token costs ~935 bytes of RSS, weighs 944.
const TOKEN_SET_SLACK: u64 = 32;

/// Bytes a heap block of `n` requested bytes occupies: the allocator's size class.
/// mimalloc (the gateway's allocator) rounds to 8 bytes up to 64, then has four classes
/// per doubling (80, 96, 112, 128, 160, …, 512, 640, …): a 540-byte token takes 640.
const fn block(n: usize) -> u64 {
    let n = n as u64;
    if n <= 64 {
        return (n + 7) & !7;
    }
    let step = 1u64 << ((63 - (n - 1).leading_zeros()) - 2);
    (n + step - 1) & !(step - 1)
}

/// Weighs session entries by their size, with a floor that enforces the entry bound.
#[derive(Clone)]
pub struct EntryWeighter {
    floor: u64,
}

impl EntryWeighter {
    /// The bytes an entry holds: the cache slot and key, the entry, the session and its
    /// JSON text.
    fn bytes(val: &Entry) -> u64 {
        let session = val.session.as_ref().map_or(0, |s| block(s.heap_bytes()));
        SLOT_BYTES + 16 + block(16 + std::mem::size_of::<Entry>()) + session
    }
}

impl Weighter<Key, Arc<Entry>> for EntryWeighter {
    fn weight(&self, _key: &Key, val: &Arc<Entry>) -> u64 {
        Self::bytes(val).max(self.floor)
    }
}

/// Weighs token sets by their size.
#[derive(Clone)]
struct TokenWeighter;

impl Weighter<Key, Arc<TokenSet>> for TokenWeighter {
    fn weight(&self, _key: &Key, val: &Arc<TokenSet>) -> u64 {
        let tokens: u64 = val
            .tokens
            .iter()
            .map(|t| block(t.jwt.bearer().len()) + SHARED_BYTES_BLOCK)
            .sum();
        SLOT_BYTES
            + TOKEN_SET_SLACK
            + 16
            + block(16 + std::mem::size_of::<TokenSet>())
            + block(val.tokens.len() * std::mem::size_of::<CachedToken>())
            + tokens
    }
}

/// Tokens kept per session (one per audience and lifetime).
pub const MAX_TOKENS_PER_ENTRY: usize = 4;

/// Counts evictions (entries pushed out by the size bounds).
#[derive(Clone)]
pub struct EvictionCounter(IntCounter);

impl<V> Lifecycle<Key, V> for EvictionCounter {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, _key: Key, _val: V) {
        self.0.inc();
    }
}

/// The key entries are cached under: the first 128 bits of the cookie's SHA-256.
///
/// Half the digest halves what the key costs in every slot. 128 bits still make a
/// collision between two honest sessions negligible (~2^-89 among a million), and an
/// attacker who wants to be answered with someone else's session must find a cookie
/// whose digest shares a prefix with the victim's unknown one: a 2^128 search.
///
/// Two `u64`s rather than a `u128`: a `u128` is 16-byte aligned and would pad every
/// slot of the cache to 64 bytes instead of 40.
pub type Key = [u64; 2];

/// The cache key of a cookie digest.
pub fn key(digest: &[u8; 32]) -> Key {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&digest[i..i + 8]);
        u64::from_le_bytes(w)
    };
    [word(0), word(8)]
}

type Inner = Cache<Key, Arc<Entry>, EntryWeighter, DefaultHashBuilder, EvictionCounter>;
type Tokens = Cache<Key, Arc<TokenSet>, TokenWeighter, DefaultHashBuilder, EvictionCounter>;
/// A claim on loading one key: other lookups of the same key wait for it.
pub type LoadGuard<'a> =
    PlaceholderGuard<'a, Key, Arc<Entry>, EntryWeighter, DefaultHashBuilder, EvictionCounter>;

/// Number of invalidation generation buckets (indexed by the first digest byte).
const GENERATION_BUCKETS: usize = 256;

/// Bounded session cache with per-entry trust windows and lookup coalescing.
///
/// Invalidations (from the push channel or a live lookup) and store reads race: a
/// `GET` reply and the invalidation of a `DEL` that followed it arrive on different
/// connections. Each key maps to a generation counter that every invalidation bumps;
/// a load inserts only if its bucket's generation did not move while it was in flight.
pub struct SessionCache {
    inner: Option<Inner>,
    /// Tokens by session key, in their own byte bound: a session stays cached when its
    /// tokens are evicted (the next request re-mints).
    tokens: Option<Tokens>,
    /// Trust window of positive entries, in nanoseconds (changes on reload).
    ttl_nanos: AtomicU64,
    /// Trust window of negative entries, in nanoseconds.
    negative_ttl_nanos: AtomicU64,
    generations: Box<[AtomicU64]>,
    push: PushGate,
}

/// Whether the push channel currently vouches for the cache.
///
/// Without a channel attached the cache trusts entries for their trust window alone
/// (`session.push_invalidation = false`: revocation takes up to `cache_ttl`). With one
/// attached, entries are answered from memory only before `until`: the channel renews
/// that lease after each heartbeat proved that its connection is still the tracked one
/// and every invalidation Redis sent before the heartbeat's reply has been applied.
struct PushGate {
    /// A push channel is attached.
    attached: AtomicBool,
    /// The channel can never vouch again (it tracks a prefix the settings no longer use).
    retired: AtomicBool,
    /// Nanoseconds after `base` before which cached entries may be answered; 0 = never.
    until: AtomicU64,
    base: Instant,
}

impl PushGate {
    fn allows(&self, now: Instant) -> bool {
        if !self.attached.load(Ordering::Acquire) {
            return true;
        }
        let until = self.until.load(Ordering::Acquire);
        until != 0 && nanos(now.saturating_duration_since(self.base)) < until
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The result of asking the cache.
pub enum Probe<'a> {
    /// A trusted entry.
    Hit(Arc<Entry>),
    /// Not trusted or absent: the caller loads it and inserts through the guard.
    Load(Option<LoadGuard<'a>>, Option<Arc<Entry>>),
    /// The push channel does not vouch for the cache right now: read the store, and use
    /// the cached entry (if any, and if [`SessionCache::is_trusted`]) only when the
    /// store cannot answer.
    Bypass(Option<Arc<Entry>>),
}

impl SessionCache {
    /// A cache holding at most `max_entries` sessions in at most `max_bytes` bytes, and
    /// their tokens in at most `token_max_bytes` more. A zero `ttl` disables it.
    /// `evictions` and `token_evictions` count what each bound pushes out.
    pub fn new(
        ttl: Duration,
        negative_ttl: Duration,
        max_entries: usize,
        max_bytes: u64,
        token_max_bytes: u64,
        evictions: IntCounter,
        token_evictions: IntCounter,
    ) -> Self {
        // Entry times count from the epoch: fix it before any lookup reads the clock.
        epoch();
        let enabled = !ttl.is_zero() && max_entries > 0;
        let inner = enabled.then(|| {
            // Rounded up, so that max_bytes / floor never exceeds max_entries.
            let floor = max_bytes.div_ceil(max_entries as u64).max(1);
            Cache::with_options(
                options(max_entries, max_bytes),
                EntryWeighter { floor },
                DefaultHashBuilder::default(),
                EvictionCounter(evictions),
            )
        });
        let tokens = (enabled && token_max_bytes > 0).then(|| {
            let estimate = usize::try_from(token_max_bytes / TYPICAL_TOKEN_SET_BYTES)
                .unwrap_or(usize::MAX)
                .clamp(1, max_entries);
            Cache::with_options(
                options(estimate, token_max_bytes),
                TokenWeighter,
                DefaultHashBuilder::default(),
                EvictionCounter(token_evictions),
            )
        });
        Self {
            inner,
            tokens,
            ttl_nanos: AtomicU64::new(nanos(ttl)),
            negative_ttl_nanos: AtomicU64::new(nanos(negative_ttl.min(ttl))),
            generations: (0..GENERATION_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            push: PushGate {
                attached: AtomicBool::new(false),
                retired: AtomicBool::new(false),
                until: AtomicU64::new(0),
                base: Instant::now(),
            },
        }
    }

    /// Attaches a push channel, or reports it down: until the next
    /// [`SessionCache::confirm_until`], lookups bypass the cache.
    pub fn suspend(&self) {
        self.push.until.store(0, Ordering::Release);
        self.push.attached.store(true, Ordering::Release);
    }

    /// The push channel vouches for the cache until `until` (a lease it renews).
    pub fn confirm_until(&self, until: Instant) {
        if self.push.retired.load(Ordering::Acquire) {
            return;
        }
        let n = nanos(until.saturating_duration_since(self.push.base)).max(1);
        self.push.until.store(n, Ordering::Release);
    }

    /// The attached push channel can no longer vouch for the cache (for example, it
    /// tracks a key prefix that a reload changed): lookups bypass the cache from now on.
    pub fn retire_push(&self) {
        self.push.retired.store(true, Ordering::Release);
        self.suspend();
    }

    /// Whether a push channel is attached.
    pub fn push_attached(&self) -> bool {
        self.push.attached.load(Ordering::Acquire)
    }

    /// Whether the cache may answer from memory at `now`: no push channel is attached,
    /// or the attached one vouches for the cache.
    pub fn push_allows(&self, now: Instant) -> bool {
        self.push.allows(now)
    }

    fn bucket(&self, digest: &[u8; 32]) -> &AtomicU64 {
        &self.generations[usize::from(digest[0]) % GENERATION_BUCKETS]
    }

    /// The invalidation generation of `key`'s bucket; read it before a store read.
    pub fn generation(&self, key: &[u8; 32]) -> u64 {
        self.bucket(key).load(Ordering::Acquire)
    }

    /// Inserts `entry` through `guard` (or directly) unless `key` was invalidated since
    /// `generation` was read. Returns whether it was inserted.
    pub fn insert_if_current(
        &self,
        key: [u8; 32],
        entry: Arc<Entry>,
        generation: u64,
        guard: Option<LoadGuard<'_>>,
    ) -> bool {
        if self.generation(&key) != generation {
            // Dropping the guard wakes waiters, which load again themselves.
            return false;
        }
        match guard {
            Some(guard) => guard.insert(entry).is_ok(),
            None => {
                self.insert(key, entry);
                true
            }
        }
    }

    /// How long an entry is trusted.
    fn trust(&self, entry: &Entry) -> Duration {
        let n = if entry.session.is_some() {
            self.ttl_nanos.load(Ordering::Relaxed)
        } else {
            self.negative_ttl_nanos.load(Ordering::Relaxed)
        };
        Duration::from_nanos(n)
    }

    /// Changes the trust windows (hot reload). Shorter windows apply to cached entries
    /// at once; a zero `ttl` stops trusting anything without freeing the cache.
    pub fn set_ttls(&self, ttl: Duration, negative_ttl: Duration) {
        self.ttl_nanos.store(nanos(ttl), Ordering::Relaxed);
        self.negative_ttl_nanos
            .store(nanos(negative_ttl.min(ttl)), Ordering::Relaxed);
    }

    /// Whether `entry` may still be trusted at `now`: younger than its trust window and
    /// its store key not yet expired.
    pub fn is_trusted(&self, entry: &Entry, now: Instant) -> bool {
        entry.age(now) < self.trust(entry) && entry.expires().is_none_or(|at| now < at)
    }

    /// Looks `key` up. A trusted entry is a hit; otherwise the caller gets a guard to
    /// load it (other callers for the same key wait for that load), and the untrusted
    /// entry it replaces, if any.
    pub async fn probe(&self, digest: &[u8; 32], now: Instant) -> Probe<'_> {
        let Some(inner) = &self.inner else {
            return Probe::Load(None, None);
        };
        let key = key(digest);
        if !self.push.allows(now) {
            return Probe::Bypass(inner.peek(&key));
        }
        let mut stale = None;
        loop {
            match inner.get_value_or_guard_async(&key).await {
                Ok(entry) if self.is_trusted(&entry, now) => return Probe::Hit(entry),
                Ok(entry) => {
                    // Drop the untrusted entry, then race to load it again.
                    inner.remove_if(&key, |v| Arc::ptr_eq(v, &entry));
                    stale = Some(entry);
                }
                Err(guard) => return Probe::Load(Some(guard), stale),
            }
        }
    }

    /// The entry for `key` whatever its age (used to tell "revoked" from "missing").
    pub fn peek(&self, digest: &[u8; 32]) -> Option<Arc<Entry>> {
        self.inner.as_ref().and_then(|c| c.peek(&key(digest)))
    }

    /// Inserts or replaces an entry.
    pub fn insert(&self, digest: [u8; 32], entry: Arc<Entry>) {
        if let Some(inner) = &self.inner {
            inner.insert(key(&digest), entry);
        }
    }

    /// Drops the entry for `key` and with it every token minted for it; loads of `key`
    /// already in flight will not be cached.
    pub fn invalidate(&self, digest: &[u8; 32]) -> bool {
        self.bucket(digest).fetch_add(1, Ordering::AcqRel);
        let key = key(digest);
        if let Some(tokens) = &self.tokens {
            tokens.remove(&key);
        }
        self.inner.as_ref().and_then(|c| c.remove(&key)).is_some()
    }

    /// Drops everything; loads in flight will not be cached.
    pub fn clear(&self) {
        for g in self.generations.iter() {
            g.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(inner) = &self.inner {
            inner.clear();
        }
        if let Some(tokens) = &self.tokens {
            tokens.clear();
        }
    }

    /// Number of cached entries (sessions and negative entries).
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, Cache::len)
    }

    /// Number of sessions holding cached tokens.
    pub fn token_sets(&self) -> usize {
        self.tokens.as_ref().map_or(0, Cache::len)
    }

    /// Total weight of the cached sessions: their approximate size in bytes (an entry
    /// counts at least `max_bytes / max_entries`, see [`SessionCache::new`]).
    pub fn weight(&self) -> u64 {
        self.inner.as_ref().map_or(0, Cache::weight)
    }

    /// Total weight of the kept tokens, in bytes.
    pub fn token_weight(&self) -> u64 {
        self.tokens.as_ref().map_or(0, Cache::weight)
    }

    /// A reusable token kept for `entry` (cached under `digest`) for `audience` and `ttl`,
    /// if `reusable` accepts it.
    pub(crate) fn token(
        &self,
        digest: &[u8; 32],
        entry: &Entry,
        audience: &str,
        ttl: Duration,
        reusable: impl Fn(&SignedJwt) -> bool,
    ) -> Option<SignedJwt> {
        let set = self.tokens.as_ref()?.get(&key(digest))?;
        if set.serial != entry.serial {
            return None;
        }
        set.tokens
            .iter()
            .find(|t| &*t.audience == audience && t.ttl == ttl && reusable(&t.jwt))
            .map(|t| t.jwt.clone())
    }

    /// Keeps `jwt` for reuse with `entry`, replacing an older token of the same audience
    /// and ttl, if `entry` is still the one cached under `digest` (a revoked or replaced
    /// entry gets no tokens).
    pub(crate) fn keep_token(
        &self,
        digest: [u8; 32],
        entry: &Arc<Entry>,
        audience: Arc<str>,
        ttl: Duration,
        jwt: SignedJwt,
    ) {
        let (Some(inner), Some(tokens)) = (&self.inner, &self.tokens) else {
            return;
        };
        let key = key(&digest);
        if !inner
            .peek(&key)
            .is_some_and(|cached| Arc::ptr_eq(&cached, entry))
        {
            return;
        }
        let mut kept: Vec<CachedToken> = Vec::with_capacity(1);
        if let Some(set) = tokens.peek(&key).filter(|set| set.serial == entry.serial) {
            kept.extend(
                set.tokens
                    .iter()
                    .filter(|t| !(t.audience == audience && t.ttl == ttl))
                    .cloned(),
            );
            // A session rarely talks to more than a few audiences; bound it anyway.
            if kept.len() >= MAX_TOKENS_PER_ENTRY {
                kept.remove(0);
            }
        }
        kept.push(CachedToken { audience, ttl, jwt });
        kept.shrink_to_fit();
        tokens.insert(
            key,
            Arc::new(TokenSet {
                serial: entry.serial,
                tokens: kept,
            }),
        );
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether caching is enabled.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> IntCounter {
        IntCounter::new("evictions", "test").unwrap()
    }

    fn cache(ttl_ms: u64) -> SessionCache {
        SessionCache::new(
            Duration::from_millis(ttl_ms),
            Duration::from_millis(ttl_ms / 2),
            1000,
            DEFAULT_MAX_BYTES,
            DEFAULT_TOKEN_MAX_BYTES,
            counter(),
            counter(),
        )
    }

    #[tokio::test]
    async fn probe_hit_then_untrusted_after_ttl() {
        let c = cache(1000);
        let key = [7u8; 32];
        let t0 = Instant::now();
        match c.probe(&key, t0).await {
            Probe::Load(Some(guard), None) => {
                let _ = guard.insert(Arc::new(Entry::new(None, t0)));
            }
            _ => panic!("expected a load guard"),
        }
        assert!(matches!(
            c.probe(&key, t0 + Duration::from_millis(100)).await,
            Probe::Hit(_)
        ));
        // Negative entries are trusted for half the ttl here.
        assert!(matches!(
            c.probe(&key, t0 + Duration::from_millis(600)).await,
            Probe::Load(Some(_), Some(_))
        ));
    }

    #[tokio::test]
    async fn disabled_cache_never_hits() {
        let c = SessionCache::new(
            Duration::ZERO,
            Duration::ZERO,
            10,
            DEFAULT_MAX_BYTES,
            DEFAULT_TOKEN_MAX_BYTES,
            counter(),
            counter(),
        );
        assert!(!c.is_enabled());
        c.insert([1; 32], Arc::new(Entry::new(None, Instant::now())));
        assert!(matches!(
            c.probe(&[1; 32], Instant::now()).await,
            Probe::Load(None, None)
        ));
    }

    #[test]
    fn entry_bound_is_enforced() {
        let evictions = counter();
        let c = SessionCache::new(
            Duration::from_secs(5),
            Duration::from_secs(1),
            100,
            DEFAULT_MAX_BYTES,
            DEFAULT_TOKEN_MAX_BYTES,
            evictions.clone(),
            counter(),
        );
        let now = Instant::now();
        for i in 0..1000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(key, Arc::new(Entry::new(None, now)));
        }
        assert!(c.len() <= 100, "len {}", c.len());
        assert!(c.len() >= 50, "len {}", c.len());
        assert!(evictions.get() >= 900, "evictions {}", evictions.get());
    }

    #[test]
    fn byte_bound_is_enforced() {
        // 64 KiB for up to 10_000 entries: each entry weighs at least its real size.
        let c = SessionCache::new(
            Duration::from_secs(5),
            Duration::from_secs(1),
            10_000,
            64 * 1024,
            0,
            counter(),
            counter(),
        );
        let now = Instant::now();
        for i in 0..1000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(key, Arc::new(Entry::new(None, now)));
        }
        let per_entry = EntryWeighter::bytes(&Entry::new(None, now));
        assert!(c.len() as u64 * per_entry <= 64 * 1024, "len {}", c.len());
        assert!(c.weight() <= 64 * 1024, "weight {}", c.weight());
        assert!(c.len() as u64 * per_entry >= 32 * 1024, "len {}", c.len());
    }

    #[tokio::test]
    async fn invalidation_during_a_load_prevents_caching_it() {
        let c = cache(10_000);
        let key = [9u8; 32];
        let now = Instant::now();
        let Probe::Load(guard, _) = c.probe(&key, now).await else {
            panic!("expected load")
        };
        let generation = c.generation(&key);
        // The invalidation of a DEL arrives while the GET reply is in flight.
        c.invalidate(&key);
        assert!(!c.insert_if_current(key, Arc::new(Entry::new(None, now)), generation, guard));
        assert!(c.peek(&key).is_none());
        // A load that saw no invalidation is cached.
        let Probe::Load(guard, _) = c.probe(&key, now).await else {
            panic!("expected load")
        };
        let generation = c.generation(&key);
        assert!(c.insert_if_current(key, Arc::new(Entry::new(None, now)), generation, guard));
        assert!(c.peek(&key).is_some());
        c.clear();
        assert!(c.peek(&key).is_none());
    }

    #[tokio::test]
    async fn an_attached_push_channel_gates_hits_by_its_lease() {
        let c = cache(60_000);
        let key = [3u8; 32];
        let t0 = Instant::now();
        c.insert(key, Arc::new(Entry::new(None, t0)));
        assert!(
            matches!(c.probe(&key, t0).await, Probe::Hit(_)),
            "no channel"
        );
        // Attached but not yet armed: bypass, handing out the cached entry as a fallback.
        c.suspend();
        assert!(c.push_attached());
        assert!(matches!(c.probe(&key, t0).await, Probe::Bypass(Some(_))));
        // Vouched for until t0 + 500 ms.
        c.confirm_until(t0 + Duration::from_millis(500));
        assert!(matches!(
            c.probe(&key, t0 + Duration::from_millis(100)).await,
            Probe::Hit(_)
        ));
        // The lease lapses without a renewal: bypass again.
        assert!(matches!(
            c.probe(&key, t0 + Duration::from_millis(600)).await,
            Probe::Bypass(Some(_))
        ));
        c.confirm_until(t0 + Duration::from_secs(10));
        c.suspend();
        assert!(matches!(c.probe(&key, t0).await, Probe::Bypass(_)));
        // A retired channel can never vouch again.
        c.retire_push();
        c.confirm_until(t0 + Duration::from_secs(10));
        assert!(matches!(c.probe(&key, t0).await, Probe::Bypass(_)));
    }

    fn session() -> Session {
        let token = crate::SessionToken::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap();
        let settings = crate::SessionSettings::default();
        crate::session::record::decode(br#"{"sub":"u-1","roles":["a"]}"#, &token, &settings)
            .unwrap()
    }

    #[test]
    fn blocks_round_to_the_allocators_size_classes() {
        let cases = [
            (0, 0),
            (1, 8),
            (64, 64),
            (65, 80),
            (80, 80),
            (81, 96),
            (129, 160),
        ];
        for (n, class) in cases {
            assert_eq!(block(n), class, "{n}");
        }
        assert_eq!(block(512), 512);
        assert_eq!(block(513), 640);
        assert_eq!(block(542), 640);
        assert_eq!(block(1025), 1280);
    }

    #[test]
    fn an_entry_is_one_small_block() {
        // The layout a million cached sessions is sized by (docs/performance.md): keep
        // it from growing unnoticed.
        assert!(
            std::mem::size_of::<Entry>() <= 80,
            "{}",
            std::mem::size_of::<Entry>()
        );
        let t0 = Instant::now();
        let e = Entry::new(None, t0).expiring(Some(t0 + Duration::from_millis(1500)));
        assert_eq!(e.expires(), Some(e.fetched() + Duration::from_millis(1500)));
        assert!(e.fetched() <= t0 && t0 - e.fetched() < Duration::from_micros(1));
        let far = Entry::new(None, t0).expiring(Some(t0 + Duration::from_secs(100 * 86_400)));
        assert!(
            far.expires().unwrap() < t0 + Duration::from_secs(50 * 86_400),
            "kept as ~49 days"
        );
        assert_eq!(Entry::new(None, t0).expires(), None);
    }

    #[test]
    fn tokens_belong_to_the_entry_they_were_minted_for() {
        let c = cache(60_000);
        let key = [5u8; 32];
        let now = Instant::now();
        let any = |_: &SignedJwt| true;
        let keep = |e: &Arc<Entry>, aud: &str, ttl: u64, text: &str| {
            let jwt = SignedJwt::fake(text, 0, ttl);
            c.keep_token(key, e, aud.into(), Duration::from_secs(ttl), jwt);
        };
        let first = Arc::new(Entry::new(Some(session()), now));
        c.insert(key, first.clone());
        keep(&first, "orders", 300, "t1");
        keep(&first, "pay", 60, "t2");
        let got = |e: &Entry, aud: &str, ttl: u64| {
            c.token(&key, e, aud, Duration::from_secs(ttl), any)
                .map(|t| t.jwt().to_owned())
        };
        assert_eq!(got(&first, "orders", 300).as_deref(), Some("t1"));
        assert_eq!(got(&first, "pay", 60).as_deref(), Some("t2"));
        assert_eq!(got(&first, "orders", 60), None, "another lifetime");
        assert!(
            c.token(&key, &first, "orders", Duration::from_secs(300), |_| false)
                .is_none()
        );
        // Replacing one audience's token keeps the other.
        keep(&first, "orders", 300, "t3");
        assert_eq!(got(&first, "orders", 300).as_deref(), Some("t3"));
        assert_eq!(got(&first, "pay", 60).as_deref(), Some("t2"));
        assert_eq!(c.token_sets(), 1);

        // A new store read under the same key (a new session after a revocation) never
        // sees the old entry's tokens, and the old entry can no longer keep any.
        let second = Arc::new(Entry::new(Some(session()), now));
        c.insert(key, second.clone());
        assert_eq!(got(&second, "orders", 300), None);
        keep(&first, "orders", 300, "old");
        assert_eq!(got(&second, "orders", 300), None);
        assert_eq!(
            got(&first, "orders", 300).as_deref(),
            Some("t3"),
            "the set is untouched"
        );
        keep(&second, "orders", 300, "t4");
        assert_eq!(got(&second, "orders", 300).as_deref(), Some("t4"));
        assert_eq!(got(&first, "orders", 300), None);

        // Invalidation drops the tokens with the session.
        assert!(c.invalidate(&key));
        assert_eq!(c.token_sets(), 0);
        assert_eq!(got(&second, "orders", 300), None);
    }

    #[test]
    fn token_eviction_keeps_the_sessions() {
        // 1 MiB for 4 KiB tokens: ~250 fit.
        let token_evictions = counter();
        let c = SessionCache::new(
            Duration::from_secs(60),
            Duration::from_secs(1),
            10_000,
            4 * 1024 * 1024,
            1024 * 1024,
            counter(),
            token_evictions.clone(),
        );
        let now = Instant::now();
        let big = "x".repeat(4096);
        for i in 0..1000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            let entry = Arc::new(Entry::new(Some(session()), now));
            c.insert(key, entry.clone());
            c.keep_token(
                key,
                &entry,
                "a".into(),
                Duration::from_secs(300),
                SignedJwt::fake(&big, 0, 300),
            );
        }
        assert_eq!(c.len(), 1000, "every session stays cached");
        assert!(c.token_sets() < 300, "token sets {}", c.token_sets());
        assert!(c.token_sets() > 100, "token sets {}", c.token_sets());
        assert!(
            token_evictions.get() >= 700,
            "evictions {}",
            token_evictions.get()
        );
        assert!(
            c.token_weight() <= 1024 * 1024,
            "weight {}",
            c.token_weight()
        );
        assert!(
            c.token_weight() >= 900 * 1024,
            "weight {}",
            c.token_weight()
        );
    }

    #[test]
    fn an_entry_is_not_trusted_past_its_key_expiry() {
        let c = cache(60_000);
        let t0 = Instant::now();
        let entry = Entry::new(None, t0).expiring(Some(t0 + Duration::from_millis(200)));
        assert!(c.is_trusted(&entry, t0 + Duration::from_millis(100)));
        assert!(!c.is_trusted(&entry, t0 + Duration::from_millis(200)));
        let forever = Entry::new(None, t0).expiring(None);
        assert!(c.is_trusted(&forever, t0 + Duration::from_millis(200)));
        assert!(
            !c.is_trusted(&forever, t0 + Duration::from_secs(30)),
            "negative ttl"
        );
    }
}
