//! The local session cache for non-critical routes, with the tokens minted for each session.
//!
//! Entries are keyed by the SHA-256 of the cookie (never the cookie itself) and are
//! trusted for at most `cache_ttl` after they were read from the store (`negative_cache_ttl`
//! for "no such session"). Tokens hang off the session entry, so evicting or
//! invalidating a session drops its tokens with it: a cached token is never handed
//! out for a session the cache no longer trusts.
//!
//! Memory is bounded by weight: each entry weighs its approximate size in bytes, but
//! at least `max_bytes / max_entries`, so neither the byte bound nor the entry bound can
//! be exceeded.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::IntCounter;
use quick_cache::sync::{Cache, PlaceholderGuard};
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use crate::mint::SignedJwt;
use crate::session::Session;

/// Default byte bound of the session cache.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// A cached store answer: a session, or the knowledge that there is none.
pub struct Entry {
    /// The session, or `None` for a negative entry.
    pub session: Option<Arc<Session>>,
    /// When the value was read from the store.
    pub fetched: Instant,
    /// When the store's key expires, if it has an expiry: never trusted past it.
    pub expires: Option<Instant>,
    /// Tokens minted for this session, by audience and lifetime.
    tokens: Mutex<Vec<CachedToken>>,
}

/// A token kept for reuse.
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub(crate) audience: Arc<str>,
    pub(crate) ttl: Duration,
    pub(crate) jwt: SignedJwt,
}

impl Entry {
    /// A fresh entry read at `fetched`.
    pub fn new(session: Option<Arc<Session>>, fetched: Instant) -> Self {
        Self {
            session,
            fetched,
            expires: None,
            tokens: Mutex::new(Vec::new()),
        }
    }

    /// The same entry, no longer trusted once the store's key expires at `expires`.
    #[must_use]
    pub fn expiring(mut self, expires: Option<Instant>) -> Self {
        self.expires = expires;
        self
    }

    /// How long ago it was read from the store.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched)
    }

    /// A reusable token for `audience` and `ttl`, if `reusable` accepts it.
    pub(crate) fn token(
        &self,
        audience: &str,
        ttl: Duration,
        reusable: impl Fn(&SignedJwt) -> bool,
    ) -> Option<SignedJwt> {
        let tokens = self.tokens.lock();
        tokens
            .iter()
            .find(|t| &*t.audience == audience && t.ttl == ttl && reusable(&t.jwt))
            .map(|t| t.jwt.clone())
    }

    /// Keeps `jwt` for reuse, replacing an older token of the same audience and ttl.
    pub(crate) fn keep_token(&self, audience: Arc<str>, ttl: Duration, jwt: SignedJwt) {
        let mut tokens = self.tokens.lock();
        tokens.retain(|t| !(t.audience == audience && t.ttl == ttl));
        // A session rarely talks to more than a few audiences; bound it anyway.
        if tokens.len() >= MAX_TOKENS_PER_ENTRY {
            tokens.remove(0);
        }
        // Grow one slot at a time: most sessions hold one token, and a first push would
        // otherwise allocate room for four (~300 bytes more per cached session).
        tokens.reserve_exact(1);
        tokens.push(CachedToken { audience, ttl, jwt });
    }
}

/// Weighs entries by approximate size, with a floor that enforces the entry bound.
#[derive(Clone)]
pub struct EntryWeighter {
    floor: u64,
}

impl Weighter<[u8; 32], Arc<Entry>> for EntryWeighter {
    fn weight(&self, _key: &[u8; 32], val: &Arc<Entry>) -> u64 {
        // The weight of an entry may not change while it is cached, but tokens are added
        // later: account for TOKENS_ACCOUNTED typical tokens up front (at most
        // MAX_TOKENS_PER_ENTRY can be held, so the byte bound is exceeded by at most 2x
        // in the worst case where every session talks to four audiences).
        let base = 32 + 16 + std::mem::size_of::<Entry>() as u64 + 64;
        let tokens = TOKENS_ACCOUNTED * TOKEN_BYTES;
        let session = val.session.as_ref().map_or(0, |s| s.weight() as u64);
        (base + tokens + session).max(self.floor)
    }
}

/// Tokens a cache entry may hold (one per audience and lifetime).
pub const MAX_TOKENS_PER_ENTRY: usize = 4;
/// Tokens accounted in an entry's weight.
const TOKENS_ACCOUNTED: u64 = 2;
/// Approximate bytes of one cached token (the JWT text and its bookkeeping).
const TOKEN_BYTES: u64 = 700;

/// Counts evictions (entries pushed out by the size bounds).
#[derive(Clone)]
pub struct EvictionCounter(IntCounter);

impl Lifecycle<[u8; 32], Arc<Entry>> for EvictionCounter {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, _key: [u8; 32], _val: Arc<Entry>) {
        self.0.inc();
    }
}

type Inner = Cache<[u8; 32], Arc<Entry>, EntryWeighter, DefaultHashBuilder, EvictionCounter>;
/// A claim on loading one key: other lookups of the same key wait for it.
pub type LoadGuard<'a> =
    PlaceholderGuard<'a, [u8; 32], Arc<Entry>, EntryWeighter, DefaultHashBuilder, EvictionCounter>;

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
    /// A cache holding at most `max_entries` entries and `max_bytes` bytes.
    /// A zero `ttl` disables it.
    pub fn new(
        ttl: Duration,
        negative_ttl: Duration,
        max_entries: usize,
        max_bytes: u64,
        evictions: IntCounter,
    ) -> Self {
        let inner = (!ttl.is_zero() && max_entries > 0).then(|| {
            let floor = (max_bytes / max_entries as u64).max(1);
            Cache::with(
                max_entries,
                max_bytes,
                EntryWeighter { floor },
                DefaultHashBuilder::default(),
                EvictionCounter(evictions),
            )
        });
        Self {
            inner,
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

    fn bucket(&self, key: &[u8; 32]) -> &AtomicU64 {
        &self.generations[usize::from(key[0]) % GENERATION_BUCKETS]
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
        entry.age(now) < self.trust(entry) && entry.expires.is_none_or(|at| now < at)
    }

    /// Looks `key` up. A trusted entry is a hit; otherwise the caller gets a guard to
    /// load it (other callers for the same key wait for that load), and the untrusted
    /// entry it replaces, if any.
    pub async fn probe(&self, key: &[u8; 32], now: Instant) -> Probe<'_> {
        let Some(inner) = &self.inner else {
            return Probe::Load(None, None);
        };
        if !self.push.allows(now) {
            return Probe::Bypass(inner.peek(key));
        }
        let mut stale = None;
        loop {
            match inner.get_value_or_guard_async(key).await {
                Ok(entry) if self.is_trusted(&entry, now) => return Probe::Hit(entry),
                Ok(entry) => {
                    // Drop the untrusted entry, then race to load it again.
                    inner.remove_if(key, |v| Arc::ptr_eq(v, &entry));
                    stale = Some(entry);
                }
                Err(guard) => return Probe::Load(Some(guard), stale),
            }
        }
    }

    /// The entry for `key` whatever its age (used to tell "revoked" from "missing").
    pub fn peek(&self, key: &[u8; 32]) -> Option<Arc<Entry>> {
        self.inner.as_ref().and_then(|c| c.peek(key))
    }

    /// Inserts or replaces an entry.
    pub fn insert(&self, key: [u8; 32], entry: Arc<Entry>) {
        if let Some(inner) = &self.inner {
            inner.insert(key, entry);
        }
    }

    /// Drops the entry for `key` and with it every token minted for it; loads of `key`
    /// already in flight will not be cached.
    pub fn invalidate(&self, key: &[u8; 32]) -> bool {
        self.bucket(key).fetch_add(1, Ordering::AcqRel);
        self.inner.as_ref().and_then(|c| c.remove(key)).is_some()
    }

    /// Drops everything; loads in flight will not be cached.
    pub fn clear(&self) {
        for g in self.generations.iter() {
            g.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(inner) = &self.inner {
            inner.clear();
        }
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, Cache::len)
    }

    /// Total weight of the cached entries: their approximate size in bytes (at least
    /// `max_bytes / max_entries` each).
    pub fn weight(&self) -> u64 {
        self.inner.as_ref().map_or(0, Cache::weight)
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
            evictions.clone(),
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
            counter(),
        );
        let now = Instant::now();
        for i in 0..1000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(key, Arc::new(Entry::new(None, now)));
        }
        let per_entry = 32 + 16 + std::mem::size_of::<Entry>() + 64 + 2 * 700;
        assert!(c.len() * per_entry <= 64 * 1024, "len {}", c.len());
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
