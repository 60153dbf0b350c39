//! The local session cache for non-critical routes, and the tokens kept for reuse.
//!
//! One read-through path, [`SessionCache::get_or_load`], answers every lookup: a trusted
//! entry from memory, or one store read shared by every concurrent lookup of the same
//! session (single flight: its answer, or its failure, is everyone's, so a hung Redis
//! costs one timeout per key rather than one per waiting request).
//!
//! Entries are keyed by the session's digest (never the cookie itself; see [`Key`]) and
//! are trusted for at most `cache_ttl` after they were read from the store
//! (`negative_cache_ttl` for "no such session" and undecodable values, which live in a
//! bound of their own so that a flood of random cookies cannot evict real sessions).
//!
//! Tokens live in a second cache under the same key, in their own byte bound, and belong
//! to the [`Entry`] they were minted for (its serial): invalidating a session drops its
//! tokens, and a token is never handed out with any other entry, so a token is never
//! given for a session the cache no longer trusts. A read that finds the cached session
//! unchanged keeps its entry's serial, and so its tokens. Evicting a token leaves its
//! session cached (the next request mints).
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{Histogram, IntCounter};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, UnitWeighter, Weighter};

use crate::Freshness;
use crate::mint::SignedJwt;
use crate::session::{Session, Source};

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

/// The session cache's bounds and trust windows, in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLimits {
    /// The longest a session is trusted after its store read; zero disables the cache.
    pub ttl: Duration,
    /// The longest "no such session" (or an undecodable value) is trusted.
    pub negative_ttl: Duration,
    /// Most sessions held.
    pub max_entries: usize,
    /// Most bytes the sessions hold.
    pub max_bytes: u64,
    /// Most bytes the kept tokens hold; 0 keeps none.
    pub token_max_bytes: u64,
    /// Most "no such session" entries held, apart from the sessions.
    pub negative_max_entries: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(1),
            max_entries: 100_000,
            max_bytes: DEFAULT_MAX_BYTES,
            token_max_bytes: DEFAULT_TOKEN_MAX_BYTES,
            negative_max_entries: 10_000,
        }
    }
}

impl CacheLimits {
    /// The negative bound that goes with `max_entries` sessions: a tenth, at least 1,024.
    pub fn negative_bound(max_entries: usize) -> usize {
        (max_entries / 10).max(1024)
    }
}

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
    /// The session, when the store held one with a subject.
    session: Option<Session>,
    /// What the store held.
    kind: Kind,
    /// When the value was read from the store, in nanoseconds after [`epoch`].
    fetched: u64,
    /// Milliseconds after `fetched` at which the store's key expires (never trusted past
    /// it); [`NO_EXPIRY`] when the key has none. Expiries further out than ~49 days are
    /// kept as ~49 days, which only makes the entry distrusted sooner.
    expires_ms: u32,
    /// Whether the read learnt the key's expiry. A critical route's read does not (a
    /// plain `GET`, half the Redis client's work of `GET`+`PTTL`); such an entry is
    /// cached only with the expiry of the entry it replaces.
    expiry_known: bool,
    /// Identifies this entry among every entry ever made: tokens are kept for an
    /// entry's serial, so a token minted for one store read is never handed out with
    /// another (for example after a revocation and a new session under the same key).
    serial: u64,
}

/// What the store held under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A session with a subject.
    Session,
    /// A session without a usable subject.
    Anonymous,
    /// Nothing.
    Absent,
    /// A value that cannot be decoded.
    Malformed,
}

impl Kind {
    /// Whether the entry belongs to the bound and trust window of negative answers.
    fn is_negative(self) -> bool {
        matches!(self, Kind::Absent | Kind::Malformed)
    }
}

/// A store answer, to be cached.
#[derive(Debug)]
pub enum Stored {
    /// A session with a subject.
    Session(Session),
    /// A session without a usable subject.
    Anonymous,
    /// Nothing under the key.
    Absent,
    /// A value that cannot be decoded.
    Malformed,
}

impl Entry {
    /// A fresh entry read at `fetched`.
    pub fn new(stored: Stored, fetched: Instant) -> Self {
        let (kind, session) = match stored {
            Stored::Session(s) => (Kind::Session, Some(s)),
            Stored::Anonymous => (Kind::Anonymous, None),
            Stored::Absent => (Kind::Absent, None),
            Stored::Malformed => (Kind::Malformed, None),
        };
        Self {
            session,
            kind,
            fetched: since_epoch(fetched),
            expires_ms: NO_EXPIRY,
            expiry_known: true,
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The same entry, read without learning when the store's key expires.
    #[must_use]
    pub fn expiry_unknown(mut self) -> Self {
        self.expiry_known = false;
        self
    }

    /// Whether this entry may be cached as it is: it holds no value, or the read that
    /// made it learnt the key's expiry.
    fn expiry_settled(&self) -> bool {
        self.expiry_known || self.kind.is_negative()
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

    /// The session, when the store held one with a subject.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// What the store held.
    pub fn kind(&self) -> Kind {
        self.kind
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

    /// The cache entry it was read into.
    pub(crate) fn entry(&self) -> &Arc<Entry> {
        &self.0
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
            .map(|t| block(t.jwt.framed().len()) + SHARED_BYTES_BLOCK)
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
type Negatives = Cache<Key, Arc<Entry>, UnitWeighter, DefaultHashBuilder, EvictionCounter>;
type Tokens = Cache<Key, Arc<TokenSet>, TokenWeighter, DefaultHashBuilder, EvictionCounter>;

/// Number of invalidation generation buckets (indexed by the first digest byte).
const GENERATION_BUCKETS: usize = 256;

/// Bounded session cache with per-entry trust windows and single-flight loads.
///
/// Invalidations (from the push channel or a live lookup) and store reads race: a
/// `GET` reply and the invalidation of a `DEL` that followed it arrive on different
/// connections. Each key maps to a generation counter that every invalidation bumps;
/// a load inserts only if its bucket's generation did not move while it was in flight,
/// and a lookup joins a load in flight only if no invalidation happened since it began.
pub struct SessionCache {
    inner: Option<Inner>,
    /// "No such session" and undecodable values, in a bound of their own.
    negatives: Option<Negatives>,
    /// Tokens by session key, in their own byte bound: a session stays cached when its
    /// tokens are evicted (the next request re-mints).
    tokens: Option<Tokens>,
    /// Trust window of positive entries, in nanoseconds (changes on reload).
    ttl_nanos: AtomicU64,
    /// Trust window of negative entries, in nanoseconds.
    negative_ttl_nanos: AtomicU64,
    generations: Box<[AtomicU64]>,
    /// Loads in flight, by key.
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    push: PushGate,
    events: CacheEvents,
    /// Watches of open connections' sessions, woken by invalidations.
    watches: Arc<crate::watch::Registry>,
}

/// Counters of what the cache does, resolved once (no label lookup per request).
#[derive(Clone)]
pub struct CacheEvents {
    /// A trusted entry answered.
    pub hit: IntCounter,
    /// Nothing trusted: the store was read.
    pub miss: IntCounter,
    /// The push channel could not vouch: the store was read.
    pub bypass: IntCounter,
    /// A cached entry answered while the store was unreachable.
    pub outage_fallback: IntCounter,
    /// A load raced an invalidation and was not cached.
    pub raced_invalidation: IntCounter,
    /// A lookup shared a load already in flight.
    pub coalesced: IntCounter,
    /// A session pushed out by the size bounds.
    pub eviction: IntCounter,
    /// A negative entry pushed out by its own bound.
    pub negative_eviction: IntCounter,
    /// A kept token pushed out by the token bound.
    pub token_eviction: IntCounter,
    /// Age of the cached entries that answered.
    pub age: Histogram,
}

impl CacheEvents {
    /// Counters that count nowhere (tests, benches).
    pub fn detached() -> Self {
        let counter =
            |name: &str| IntCounter::new(name, name).unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            hit: counter("hit"),
            miss: counter("miss"),
            bypass: counter("bypass"),
            outage_fallback: counter("outage_fallback"),
            raced_invalidation: counter("raced_invalidation"),
            coalesced: counter("coalesced"),
            eviction: counter("eviction"),
            negative_eviction: counter("negative_eviction"),
            token_eviction: counter("token_eviction"),
            age: Histogram::with_opts(prometheus::HistogramOpts::new("age", "age"))
                .unwrap_or_else(|e| unreachable!("{e}")),
        }
    }
}

/// One store read in flight, shared by every lookup of its key that began before an
/// invalidation of that key.
struct Flight {
    /// The invalidation generation when the read began.
    generation: u64,
    result: tokio::sync::OnceCell<Result<Arc<Entry>, StoreFailure>>,
}

/// Why the store could not answer: shared by every lookup of a failed load.
#[derive(Debug, Clone)]
pub struct StoreFailure {
    /// The command that failed.
    pub op: &'static str,
    /// The store's error text (never a key or a value).
    pub message: Arc<str>,
    /// Whether it timed out.
    pub timeout: bool,
}

/// A lookup's answer: the entry, where it came from, and what was cached before.
pub struct Loaded {
    /// The store's answer (possibly from memory).
    pub entry: Arc<Entry>,
    /// Where it came from.
    pub source: Source,
    /// The entry cached before the store was read, if any: a session that was there and
    /// is gone now was revoked.
    pub previous: Option<Arc<Entry>>,
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

impl SessionCache {
    /// A cache within `limits`; a zero `ttl` (or no entries) disables it. `events` counts
    /// what it does.
    pub fn new(limits: &CacheLimits, events: CacheEvents) -> Self {
        // Entry times count from the epoch: fix it before any lookup reads the clock.
        epoch();
        let enabled = !limits.ttl.is_zero() && limits.max_entries > 0;
        let inner = enabled.then(|| {
            // Rounded up, so that max_bytes / floor never exceeds max_entries.
            let floor = limits.max_bytes.div_ceil(limits.max_entries as u64).max(1);
            Cache::with_options(
                options(limits.max_entries, limits.max_bytes),
                EntryWeighter { floor },
                DefaultHashBuilder::default(),
                EvictionCounter(events.eviction.clone()),
            )
        });
        let negatives = enabled.then(|| {
            let n = limits.negative_max_entries.max(1);
            Cache::with_options(
                options(n, n as u64),
                UnitWeighter,
                DefaultHashBuilder::default(),
                EvictionCounter(events.negative_eviction.clone()),
            )
        });
        let tokens = (enabled && limits.token_max_bytes > 0).then(|| {
            let estimate = usize::try_from(limits.token_max_bytes / TYPICAL_TOKEN_SET_BYTES)
                .unwrap_or(usize::MAX)
                .clamp(1, limits.max_entries);
            Cache::with_options(
                options(estimate, limits.token_max_bytes),
                TokenWeighter,
                DefaultHashBuilder::default(),
                EvictionCounter(events.token_eviction.clone()),
            )
        });
        Self {
            inner,
            negatives,
            tokens,
            ttl_nanos: AtomicU64::new(nanos(limits.ttl)),
            negative_ttl_nanos: AtomicU64::new(nanos(limits.negative_ttl.min(limits.ttl))),
            generations: (0..GENERATION_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            flights: Mutex::new(HashMap::new()),
            push: PushGate {
                attached: AtomicBool::new(false),
                retired: AtomicBool::new(false),
                until: AtomicU64::new(0),
                base: Instant::now(),
            },
            events,
            watches: Arc::new(crate::watch::Registry::new()),
        }
    }

    /// The watches of open connections' sessions.
    pub(crate) fn watches(&self) -> &Arc<crate::watch::Registry> {
        &self.watches
    }

    /// The one read-through path. `Cached`: a trusted entry answers from memory;
    /// otherwise `load` reads the store, once for every concurrent lookup of the key, and
    /// its answer is cached. While the push channel does not vouch for the cache the
    /// store is read even for trusted entries, and they answer only when the store cannot
    /// (then only within their trust window). `Live`: the store is read for this lookup
    /// alone (a read that began before the lookup may predate a revocation), and its
    /// answer replaces the cached one.
    ///
    /// # Errors
    /// The store's failure, when nothing may stand in for it.
    pub async fn get_or_load<F, Fut>(
        &self,
        digest: &[u8; 32],
        freshness: Freshness,
        now: Instant,
        load: F,
    ) -> Result<Loaded, StoreFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, StoreFailure>>,
    {
        if self.inner.is_none() {
            let entry = Arc::new(load().await?);
            return Ok(Loaded {
                entry,
                source: Source::Redis,
                previous: None,
            });
        }
        let cached = self.peek(digest);
        if freshness == Freshness::Live {
            let generation = self.generation(digest);
            let mut entry = Self::refreshing(cached.as_deref(), load().await?);
            if !entry.expiry_settled() {
                // A value read without its key's expiry: it keeps the expiry of the
                // same kind of entry it replaces (a key's TTL does not shrink without a
                // write, which invalidates), or it is not cached and the next cached
                // lookup reads the expiry itself.
                match cached
                    .as_ref()
                    .filter(|c| c.kind == entry.kind && c.expiry_known)
                {
                    Some(c) => {
                        entry = entry.expiring(c.expires());
                        entry.expiry_known = true;
                    }
                    None => self.forget(digest),
                }
            }
            let entry = Arc::new(entry);
            if entry.expiry_known || entry.kind.is_negative() {
                self.insert_if_current(*digest, &entry, generation);
            }
            return Ok(Loaded {
                entry,
                source: Source::Redis,
                previous: cached,
            });
        }
        let vouched = self.push.allows(now);
        if let Some(entry) = cached
            .as_ref()
            .filter(|e| vouched && self.is_trusted(e, now))
        {
            self.events.hit.inc();
            self.events.age.observe(entry.age(now).as_secs_f64());
            return Ok(Loaded {
                entry: entry.clone(),
                source: Source::Cache,
                previous: None,
            });
        }
        if vouched {
            &self.events.miss
        } else {
            &self.events.bypass
        }
        .inc();
        match self.load_shared(digest, load).await {
            Ok(entry) => Ok(Loaded {
                entry,
                source: Source::Redis,
                previous: cached,
            }),
            Err(failure) => {
                // Redis is unreachable: SPEC lets a cached session no older than
                // cache_ttl answer.
                let entry = cached.filter(|c| self.is_trusted(c, now)).ok_or(failure)?;
                self.events.outage_fallback.inc();
                self.events.age.observe(entry.age(now).as_secs_f64());
                Ok(Loaded {
                    entry,
                    source: Source::Cache,
                    previous: None,
                })
            }
        }
    }

    /// Runs `load` for `digest` unless a load of it that began after its last
    /// invalidation is in flight, whose answer is then shared; caches the answer.
    async fn load_shared<F, Fut>(
        &self,
        digest: &[u8; 32],
        load: F,
    ) -> Result<Arc<Entry>, StoreFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, StoreFailure>>,
    {
        let key = key(digest);
        let generation = self.generation(digest);
        let flight = {
            let mut flights = self.flights.lock();
            match flights.get(&key) {
                Some(f) if f.generation == generation => {
                    self.events.coalesced.inc();
                    f.clone()
                }
                _ => {
                    let f = Arc::new(Flight {
                        generation,
                        result: tokio::sync::OnceCell::new(),
                    });
                    flights.insert(key, f.clone());
                    f
                }
            }
        };
        // Whoever gets here first loads; the others wait for its answer. If the loading
        // lookup is dropped mid-read, a waiting one loads instead.
        let result = flight
            .result
            .get_or_init(|| async {
                let result = load()
                    .await
                    .map(|entry| Arc::new(Self::refreshing(self.peek(digest).as_deref(), entry)));
                if let Ok(entry) = &result {
                    self.insert_if_current(*digest, entry, flight.generation);
                }
                result
            })
            .await
            .clone();
        let mut flights = self.flights.lock();
        if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&key);
        }
        result
    }

    /// Attaches a push channel, or reports it down: until the next
    /// [`SessionCache::confirm_until`], lookups bypass the cache.
    pub fn suspend(&self) {
        self.push.until.store(0, Ordering::Release);
        self.push.attached.store(true, Ordering::Release);
        self.watches.set_push_up(false);
    }

    /// The push channel vouches for the cache until `until` (a lease it renews).
    pub fn confirm_until(&self, until: Instant) {
        if self.push.retired.load(Ordering::Acquire) {
            return;
        }
        let n = nanos(until.saturating_duration_since(self.push.base)).max(1);
        self.push.until.store(n, Ordering::Release);
        self.watches.set_push_up(true);
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

    /// `entry`, read again from the store, as a refresh of `cached`: when the store still
    /// holds the same session it keeps `cached`'s serial, so the tokens minted for it stay
    /// reusable (otherwise a session read again every `cache_ttl` is signed again for
    /// every audience each time). A changed session gets its own serial, and a revoked
    /// one is no longer cached to refresh (invalidation drops it and its tokens).
    fn refreshing(cached: Option<&Entry>, mut entry: Entry) -> Entry {
        if let Some(cached) = cached
            && entry.kind == Kind::Session
            && cached.kind == Kind::Session
            && cached.session == entry.session
        {
            entry.serial = cached.serial;
        }
        entry
    }

    /// Caches `entry` unless `digest` was invalidated since `generation` was read, in
    /// which case whatever is cached is older than that invalidation and is dropped.
    /// Returns whether it was cached.
    fn insert_if_current(&self, digest: [u8; 32], entry: &Arc<Entry>, generation: u64) -> bool {
        if self.generation(&digest) != generation {
            self.events.raced_invalidation.inc();
            self.invalidate(&digest);
            return false;
        }
        self.insert(digest, entry.clone());
        true
    }

    /// How long an entry is trusted.
    fn trust(&self, entry: &Entry) -> Duration {
        let n = if !entry.kind.is_negative() {
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

    /// The entry for `digest` whatever its age (used to tell "revoked" from "missing").
    pub fn peek(&self, digest: &[u8; 32]) -> Option<Arc<Entry>> {
        let key = key(digest);
        self.inner
            .as_ref()
            .and_then(|c| c.peek(&key))
            .or_else(|| self.negatives.as_ref().and_then(|c| c.peek(&key)))
    }

    /// Inserts or replaces an entry (a session in the weighted bound, a negative answer
    /// in its own).
    pub fn insert(&self, digest: [u8; 32], entry: Arc<Entry>) {
        let (Some(inner), Some(negatives)) = (&self.inner, &self.negatives) else {
            return;
        };
        let key = key(&digest);
        if entry.kind.is_negative() {
            inner.remove(&key);
            negatives.insert(key, entry);
        } else {
            negatives.remove(&key);
            inner.insert(key, entry);
        }
    }

    /// Drops what is cached for `digest` (session and negative entry), without counting
    /// an invalidation: a newer read replaces it but cannot itself be cached.
    fn forget(&self, digest: &[u8; 32]) {
        let key = key(digest);
        if let Some(c) = &self.negatives {
            c.remove(&key);
        }
        if let Some(c) = &self.inner {
            c.remove(&key);
        }
    }

    /// Drops the entry for `key` and with it every token minted for it; loads of `key`
    /// already in flight will not be cached.
    pub fn invalidate(&self, digest: &[u8; 32]) -> bool {
        self.bucket(digest).fetch_add(1, Ordering::AcqRel);
        let key = key(digest);
        self.watches.wake(&key);
        if let Some(tokens) = &self.tokens {
            tokens.remove(&key);
        }
        let negative = self
            .negatives
            .as_ref()
            .and_then(|c| c.remove(&key))
            .is_some();
        self.inner.as_ref().and_then(|c| c.remove(&key)).is_some() || negative
    }

    /// Drops everything; loads in flight will not be cached.
    pub fn clear(&self) {
        for g in self.generations.iter() {
            g.fetch_add(1, Ordering::AcqRel);
        }
        self.watches.wake_all();
        if let Some(inner) = &self.inner {
            inner.clear();
        }
        if let Some(negatives) = &self.negatives {
            negatives.clear();
        }
        if let Some(tokens) = &self.tokens {
            tokens.clear();
        }
    }

    /// Number of cached entries (sessions and negative entries).
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, Cache::len) + self.negatives.as_ref().map_or(0, Cache::len)
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
    use std::sync::atomic::AtomicU64;

    fn limits(ttl_ms: u64) -> CacheLimits {
        CacheLimits {
            ttl: Duration::from_millis(ttl_ms),
            negative_ttl: Duration::from_millis(ttl_ms / 2),
            max_entries: 1000,
            ..CacheLimits::default()
        }
    }

    fn cache(ttl_ms: u64) -> SessionCache {
        SessionCache::new(&limits(ttl_ms), CacheEvents::detached())
    }

    fn failure() -> StoreFailure {
        StoreFailure {
            op: "GET",
            message: "down".into(),
            timeout: true,
        }
    }

    type Make = Result<fn() -> Stored, ()>;

    /// A lookup whose load answers `stored` (or fails) and counts its calls.
    async fn lookup(
        c: &SessionCache,
        digest: [u8; 32],
        freshness: Freshness,
        now: Instant,
        loads: &AtomicU64,
        stored: Make,
    ) -> Result<Loaded, StoreFailure> {
        c.get_or_load(&digest, freshness, now, || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            match stored {
                Ok(make) => Ok(Entry::new(make(), now)),
                Err(()) => Err(failure()),
            }
        })
        .await
    }

    fn digest(i: u32, tag: u8) -> [u8; 32] {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_le_bytes());
        key[8] = tag;
        key
    }

    const ABSENT: Make = Ok(|| Stored::Absent);
    const ANON: Make = Ok(|| Stored::Anonymous);

    #[tokio::test]
    async fn hits_until_the_trust_window_ends_then_reloads() {
        let c = cache(1000);
        let loads = AtomicU64::new(0);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let at = |t| lookup(&c, [7; 32], Freshness::Cached, t, &loads, ABSENT);
        let first = at(t0).await.unwrap();
        assert_eq!(
            (first.source, loads.load(Ordering::SeqCst)),
            (Source::Redis, 1)
        );
        let hit = at(t0 + ms(100)).await.unwrap();
        assert_eq!(
            (hit.source, loads.load(Ordering::SeqCst)),
            (Source::Cache, 1)
        );
        // Negative entries are trusted for half the ttl here.
        let later = at(t0 + ms(600)).await.unwrap();
        assert_eq!(
            (later.source, loads.load(Ordering::SeqCst)),
            (Source::Redis, 2)
        );
        assert!(later.previous.is_some(), "the stale entry is reported");
        // Live lookups always read, and refresh the cache.
        let live = lookup(&c, [7; 32], Freshness::Live, t0 + ms(700), &loads, ABSENT)
            .await
            .unwrap();
        assert_eq!(
            (live.source, loads.load(Ordering::SeqCst)),
            (Source::Redis, 3)
        );
    }

    /// A critical route's read (no expiry learnt) is cached only with the expiry of the
    /// entry it replaces; with nothing to inherit it is not cached, and it still
    /// replaces a negative entry, which would otherwise refuse a session that exists.
    #[tokio::test]
    async fn a_live_read_without_expiry_inherits_it_or_is_not_cached() {
        let c = cache(10_000);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let live = |digest: &'static [u8; 32], now: Instant| {
            c.get_or_load(digest, Freshness::Live, now, move || async move {
                Ok(Entry::new(Stored::Anonymous, now).expiry_unknown())
            })
        };
        // Nothing cached: not cached either.
        live(&[1; 32], t0).await.unwrap();
        assert!(c.peek(&[1; 32]).is_none(), "cached without an expiry");

        // A cached entry that expires at t0 + 2 s: the live read keeps that expiry.
        c.insert(
            [2; 32],
            Arc::new(Entry::new(Stored::Anonymous, t0).expiring(Some(t0 + ms(2000)))),
        );
        live(&[2; 32], t0 + ms(500)).await.unwrap();
        let kept = c.peek(&[2; 32]).expect("the live read is cached");
        assert_eq!(
            kept.fetched(),
            t0 + ms(500),
            "the newer read replaced the old"
        );
        assert_eq!(kept.expires(), Some(t0 + ms(2000)));

        // A negative entry is dropped by a live read that found a value.
        c.insert([3; 32], Arc::new(Entry::new(Stored::Absent, t0)));
        assert!(c.peek(&[3; 32]).is_some());
        live(&[3; 32], t0 + ms(100)).await.unwrap();
        assert!(
            c.peek(&[3; 32]).is_none(),
            "the stale negative answer survived"
        );

        // A live read that finds nothing is cached as usual.
        c.get_or_load(&[4; 32], Freshness::Live, t0, || async move {
            Ok(Entry::new(Stored::Absent, t0).expiry_unknown())
        })
        .await
        .unwrap();
        assert!(c.peek(&[4; 32]).is_some());
    }

    #[tokio::test]
    async fn a_disabled_cache_always_loads() {
        let limits = CacheLimits {
            ttl: Duration::ZERO,
            ..CacheLimits::default()
        };
        let c = SessionCache::new(&limits, CacheEvents::detached());
        assert!(!c.is_enabled());
        let loads = AtomicU64::new(0);
        let now = Instant::now();
        for _ in 0..3 {
            let l = lookup(&c, [1; 32], Freshness::Cached, now, &loads, ANON)
                .await
                .unwrap();
            assert_eq!(l.source, Source::Redis);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        c.insert([1; 32], Arc::new(Entry::new(Stored::Absent, now)));
        assert!(c.peek(&[1; 32]).is_none());
    }

    /// Spawns lookups of one key whose load waits for `gate`, and waits until one of
    /// them is loading and the rest have had time to queue behind it.
    async fn spawn_waiting(
        c: &Arc<SessionCache>,
        loads: &Arc<AtomicU64>,
        gate: &Arc<tokio::sync::Notify>,
        fail: bool,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<Source, StoreFailure>>> {
        let before = loads.load(Ordering::SeqCst);
        let now = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (c, loads, gate) = (c.clone(), loads.clone(), gate.clone());
                tokio::spawn(async move {
                    c.get_or_load(&[2; 32], Freshness::Cached, now, || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        if fail {
                            Err(failure())
                        } else {
                            Ok(Entry::new(Stored::Anonymous, now))
                        }
                    })
                    .await
                    .map(|l| l.source)
                })
            })
            .collect();
        while loads.load(Ordering::SeqCst) == before {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tasks
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_read_and_its_failure() {
        let c = Arc::new(cache(60_000));
        let loads = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        // Ten lookups while Redis hangs: one read, one failure for all.
        let waiting = spawn_waiting(&c, &loads, &gate, true, 10).await;
        gate.notify_waiters();
        for w in waiting {
            assert!(w.await.unwrap().is_err());
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one timeout, not one per waiter"
        );
        // Then a successful shared read, cached for everyone after.
        let waiting = spawn_waiting(&c, &loads, &gate, false, 10).await;
        gate.notify_waiters();
        for w in waiting {
            assert_eq!(w.await.unwrap().unwrap(), Source::Redis);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert!(c.peek(&[2; 32]).is_some());
        assert!(c.flights.lock().is_empty());
    }

    #[tokio::test]
    async fn a_lookup_never_joins_a_read_older_than_an_invalidation() {
        let c = Arc::new(cache(60_000));
        let gate = Arc::new(tokio::sync::Notify::new());
        let now = Instant::now();
        let (c2, gate2) = (c.clone(), gate.clone());
        let before = tokio::spawn(async move {
            c2.get_or_load(&[4; 32], Freshness::Cached, now, || async move {
                gate2.notified().await;
                Ok(Entry::new(Stored::Anonymous, now))
            })
            .await
            .map(|l| l.entry.kind())
        });
        while c.flights.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        // A DEL's invalidation arrives while that read is in flight.
        c.invalidate(&[4; 32]);
        let loads = AtomicU64::new(0);
        let after = lookup(&c, [4; 32], Freshness::Cached, now, &loads, ABSENT)
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1, "its own read");
        assert_eq!(after.entry.kind(), Kind::Absent);
        gate.notify_waiters();
        assert_eq!(before.await.unwrap().unwrap(), Kind::Anonymous);
        // The raced read is not cached, and takes the newer answer out with it.
        assert!(c.peek(&[4; 32]).is_none());
    }

    #[tokio::test]
    async fn the_store_failing_falls_back_only_to_a_trusted_entry() {
        let c = cache(1000);
        let loads = AtomicU64::new(0);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        c.insert(
            [6; 32],
            Arc::new(Entry::new(Stored::Session(session()), t0)),
        );
        c.suspend(); // a push channel attached but not vouching: bypass
        let l = lookup(
            &c,
            [6; 32],
            Freshness::Cached,
            t0 + ms(500),
            &loads,
            Err(()),
        )
        .await
        .unwrap();
        assert_eq!(l.source, Source::Cache, "outage fallback within cache_ttl");
        let late = lookup(
            &c,
            [6; 32],
            Freshness::Cached,
            t0 + ms(1500),
            &loads,
            Err(()),
        )
        .await;
        assert!(late.is_err(), "not past cache_ttl");
        let live = lookup(&c, [6; 32], Freshness::Live, t0, &loads, Err(())).await;
        assert!(live.is_err(), "never for live lookups");
    }

    #[test]
    fn entry_bound_is_enforced() {
        let events = CacheEvents::detached();
        let evictions = events.eviction.clone();
        let limits = CacheLimits {
            max_entries: 100,
            ..CacheLimits::default()
        };
        let c = SessionCache::new(&limits, events);
        let now = Instant::now();
        for i in 0..1000u32 {
            c.insert(digest(i, 0), Arc::new(Entry::new(Stored::Anonymous, now)));
        }
        assert!(c.len() <= 100, "len {}", c.len());
        assert!(c.len() >= 50, "len {}", c.len());
        assert!(evictions.get() >= 900, "evictions {}", evictions.get());
    }

    #[test]
    fn a_flood_of_unknown_cookies_evicts_no_session() {
        let events = CacheEvents::detached();
        let evictions = events.eviction.clone();
        let negative_evictions = events.negative_eviction.clone();
        let limits = CacheLimits {
            max_entries: 1000,
            negative_max_entries: 100,
            ..CacheLimits::default()
        };
        let c = SessionCache::new(&limits, events);
        let now = Instant::now();
        for i in 0..500 {
            c.insert(
                digest(i, 1),
                Arc::new(Entry::new(Stored::Session(session()), now)),
            );
        }
        for i in 0..100_000 {
            c.insert(digest(i, 2), Arc::new(Entry::new(Stored::Absent, now)));
        }
        assert_eq!(evictions.get(), 0);
        assert!(
            negative_evictions.get() >= 99_000,
            "{}",
            negative_evictions.get()
        );
        assert!((0..500).all(|i| {
            c.peek(&digest(i, 1))
                .is_some_and(|e| e.kind() == Kind::Session)
        }));
        assert!(c.len() <= 600, "{}", c.len());
    }

    #[test]
    fn byte_bound_is_enforced() {
        // 64 KiB for up to 10_000 entries: each entry weighs at least its real size.
        let limits = CacheLimits {
            max_entries: 10_000,
            max_bytes: 64 * 1024,
            token_max_bytes: 0,
            ..CacheLimits::default()
        };
        let c = SessionCache::new(&limits, CacheEvents::detached());
        let now = Instant::now();
        for i in 0..1000u32 {
            c.insert(digest(i, 0), Arc::new(Entry::new(Stored::Anonymous, now)));
        }
        let per_entry = EntryWeighter::bytes(&Entry::new(Stored::Anonymous, now));
        assert!(c.len() as u64 * per_entry <= 64 * 1024, "len {}", c.len());
        assert!(c.weight() <= 64 * 1024, "weight {}", c.weight());
        assert!(c.len() as u64 * per_entry >= 32 * 1024, "len {}", c.len());
    }

    #[tokio::test]
    async fn an_attached_push_channel_gates_hits_by_its_lease() {
        let c = cache(60_000);
        let loads = AtomicU64::new(0);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        c.insert([3; 32], Arc::new(Entry::new(Stored::Anonymous, t0)));
        let (c, loads) = (&c, &loads);
        let source = move |t| async move {
            lookup(c, [3; 32], Freshness::Cached, t, loads, ANON)
                .await
                .unwrap()
                .source
        };
        assert_eq!(source(t0).await, Source::Cache, "no channel");
        // Attached but not yet armed: the store answers.
        c.suspend();
        assert!(c.push_attached());
        assert_eq!(source(t0).await, Source::Redis);
        // Vouched for until t0 + 500 ms.
        c.confirm_until(t0 + ms(500));
        assert_eq!(source(t0 + ms(100)).await, Source::Cache);
        // The lease lapses without a renewal: bypass again.
        assert_eq!(source(t0 + ms(600)).await, Source::Redis);
        c.confirm_until(t0 + Duration::from_secs(10));
        c.suspend();
        assert!(!c.push_allows(t0));
        // A retired channel can never vouch again.
        c.retire_push();
        c.confirm_until(t0 + Duration::from_secs(10));
        assert!(!c.push_allows(t0));
    }

    fn session() -> Session {
        let id = crate::SessionId::raw("abcdefghijklmnopqrstuvwxyz012345");
        let doc = crate::format::Document::json(br#"{"sub":"u-1","roles":["a"]}"#).unwrap();
        match crate::SessionSettings::default()
            .fields
            .extract(&doc, true, &id)
            .unwrap()
        {
            crate::format::Decoded::Session(s) => s,
            crate::format::Decoded::Anonymous => unreachable!(),
        }
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
        let e = Entry::new(Stored::Absent, t0).expiring(Some(t0 + Duration::from_millis(1500)));
        assert_eq!(e.expires(), Some(e.fetched() + Duration::from_millis(1500)));
        assert!(e.fetched() <= t0 && t0 - e.fetched() < Duration::from_micros(1));
        let far =
            Entry::new(Stored::Absent, t0).expiring(Some(t0 + Duration::from_secs(100 * 86_400)));
        assert!(
            far.expires().unwrap() < t0 + Duration::from_secs(50 * 86_400),
            "kept as ~49 days"
        );
        assert_eq!(Entry::new(Stored::Absent, t0).expires(), None);
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
        let first = Arc::new(Entry::new(Stored::Session(session()), now));
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
        let second = Arc::new(Entry::new(Stored::Session(session()), now));
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
        let events = CacheEvents::detached();
        let token_evictions = events.token_eviction.clone();
        let limits = CacheLimits {
            ttl: Duration::from_secs(60),
            max_entries: 10_000,
            max_bytes: 4 * 1024 * 1024,
            token_max_bytes: 1024 * 1024,
            ..CacheLimits::default()
        };
        let c = SessionCache::new(&limits, events);
        let now = Instant::now();
        let big = "x".repeat(4096);
        for i in 0..1000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            let entry = Arc::new(Entry::new(Stored::Session(session()), now));
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
        let entry = Entry::new(Stored::Absent, t0).expiring(Some(t0 + Duration::from_millis(200)));
        assert!(c.is_trusted(&entry, t0 + Duration::from_millis(100)));
        assert!(!c.is_trusted(&entry, t0 + Duration::from_millis(200)));
        let forever = Entry::new(Stored::Absent, t0).expiring(None);
        assert!(c.is_trusted(&forever, t0 + Duration::from_millis(200)));
        assert!(
            !c.is_trusted(&forever, t0 + Duration::from_secs(30)),
            "negative ttl"
        );
    }
}
