//! Prometheus metrics owned by the exchange crate.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::cache::SessionCache;

/// Metric families for session lookups, Redis commands and minting.
pub struct Metrics {
    /// `sessiongate_session_lookups_total{source,result}`.
    pub session_lookups: IntCounterVec,
    /// `sessiongate_redis_command_duration_seconds{command}`.
    pub redis_command_duration: HistogramVec,
    /// `sessiongate_redis_errors_total{command,kind}`: failed session-store commands;
    /// `kind` is `timeout`, `disconnected` (no pooled connection was up) or `error`.
    pub redis_errors: IntCounterVec,
    /// `sessiongate_tokens_minted_total{alg,kid}`.
    pub tokens_minted: IntCounterVec,
    /// `sessiongate_token_cache_total{result}`: token reuse (hit) or mint (miss).
    pub token_cache: IntCounterVec,
    /// `sessiongate_revocation_events_total{kind}`.
    pub revocation_events: IntCounterVec,
    /// `sessiongate_session_cache_events_total{event}`: hit, miss, bypass, outage_fallback,
    /// eviction, invalidation, flush, raced_invalidation.
    pub session_cache: IntCounterVec,
    /// `sessiongate_session_cache_age_seconds`: age of a cached session when it is used.
    pub cached_session_age: Histogram,
    /// `sessiongate_revocation_push_connected`: 1 while the invalidation channel is armed.
    pub push_connected: IntGauge,
    /// `sessiongate_revocation_push_enabled`: 1 when the config asks for the invalidation
    /// channel (so that a 0 in `push_connected` means "down", not "off").
    pub push_enabled: IntGauge,
    /// `sessiongate_revocation_invalidations_total`: invalidation messages received.
    pub invalidations: IntCounter,
    /// `sessiongate_critical_checks_total{result}`: live session checks on critical routes.
    pub critical_checks: IntCounterVec,
    /// `sessiongate_revocation_push_down_total{reason}`: times the invalidation channel
    /// stopped vouching for the cache (error, reconnect, heartbeat, heartbeat_late, disconnected).
    pub push_down: IntCounterVec,
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    ///
    /// # Errors
    /// A prometheus error when a family with the same name is already registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::unregistered();
        registry.register(Box::new(m.session_lookups.clone()))?;
        registry.register(Box::new(m.redis_command_duration.clone()))?;
        registry.register(Box::new(m.redis_errors.clone()))?;
        registry.register(Box::new(m.tokens_minted.clone()))?;
        registry.register(Box::new(m.token_cache.clone()))?;
        registry.register(Box::new(m.revocation_events.clone()))?;
        registry.register(Box::new(m.session_cache.clone()))?;
        registry.register(Box::new(m.cached_session_age.clone()))?;
        registry.register(Box::new(m.push_connected.clone()))?;
        registry.register(Box::new(m.push_enabled.clone()))?;
        registry.register(Box::new(m.invalidations.clone()))?;
        registry.register(Box::new(m.critical_checks.clone()))?;
        registry.register(Box::new(m.push_down.clone()))?;
        Ok(m)
    }

    /// Creates the families without registering them (tests, benches, CLI).
    #[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
    pub fn unregistered() -> Self {
        // The names and labels below are constants; construction cannot fail.
        Self {
            session_lookups: IntCounterVec::new(
                Opts::new(
                    "sessiongate_session_lookups_total",
                    "Session lookups by where they were answered and their outcome.",
                ),
                &["source", "result"],
            )
            .unwrap(),
            redis_command_duration: HistogramVec::new(
                HistogramOpts::new(
                    "sessiongate_redis_command_duration_seconds",
                    "Time from sending a Redis command to its reply.",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ]),
                &["command"],
            )
            .unwrap(),
            redis_errors: IntCounterVec::new(
                Opts::new(
                    "sessiongate_redis_errors_total",
                    "Session-store Redis commands that failed, by command and kind (timeout, disconnected, error).",
                ),
                &["command", "kind"],
            )
            .unwrap(),
            tokens_minted: IntCounterVec::new(
                Opts::new(
                    "sessiongate_tokens_minted_total",
                    "Tokens signed, by algorithm and key id.",
                ),
                &["alg", "kid"],
            )
            .unwrap(),
            token_cache: IntCounterVec::new(
                Opts::new(
                    "sessiongate_token_cache_total",
                    "Token requests answered by reusing a cached token (hit) or by minting (miss).",
                ),
                &["result"],
            )
            .unwrap(),
            revocation_events: IntCounterVec::new(
                Opts::new(
                    "sessiongate_revocation_events_total",
                    "Revocations seen or performed, by kind.",
                ),
                &["kind"],
            )
            .unwrap(),
            session_cache: IntCounterVec::new(
                Opts::new(
                    "sessiongate_session_cache_events_total",
                    "Session cache events: hit, miss, bypass (the push channel could not vouch for the cache), outage_fallback (a cached session answered while Redis was unreachable), eviction, token_eviction (a kept token pushed out by the token bound), invalidation, flush, raced_invalidation.",
                ),
                &["event"],
            )
            .unwrap(),
            cached_session_age: Histogram::with_opts(
                HistogramOpts::new(
                    "sessiongate_session_cache_age_seconds",
                    "Age of a cached session when a non-critical request used it.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 30.0, 60.0]),
            )
            .unwrap(),
            push_connected: IntGauge::new(
                "sessiongate_revocation_push_connected",
                "1 while the Redis invalidation (CLIENT TRACKING) channel is armed, else 0.",
            )
            .unwrap(),
            push_enabled: IntGauge::new(
                "sessiongate_revocation_push_enabled",
                "1 when the config enables the Redis invalidation channel, else 0.",
            )
            .unwrap(),
            invalidations: IntCounter::new(
                "sessiongate_revocation_invalidations_total",
                "Session key invalidations received from Redis.",
            )
            .unwrap(),
            critical_checks: IntCounterVec::new(
                Opts::new(
                    "sessiongate_critical_checks_total",
                    "Live session checks on critical routes, by outcome.",
                ),
                &["result"],
            )
            .unwrap(),
            push_down: IntCounterVec::new(
                Opts::new(
                    "sessiongate_revocation_push_down_total",
                    "Times the invalidation channel stopped vouching for the session cache, by reason.",
                ),
                &["reason"],
            )
            .unwrap(),
        }
    }
}

impl Metrics {
    /// The session cache's event counters, resolved once.
    pub fn cache_events(&self) -> crate::cache::CacheEvents {
        let event = |name: &str| self.session_cache.with_label_values(&[name]);
        crate::cache::CacheEvents {
            hit: event("hit"),
            miss: event("miss"),
            bypass: event("bypass"),
            outage_fallback: event("outage_fallback"),
            raced_invalidation: event("raced_invalidation"),
            coalesced: event("coalesced"),
            eviction: event("eviction"),
            negative_eviction: event("negative_eviction"),
            token_eviction: event("token_eviction"),
            age: self.cached_session_age.clone(),
        }
    }
}

/// Lookup outcomes a lookup can count, in [`LookupCounters`]' order.
const RESULTS: [&str; 7] = [
    "valid",
    "anonymous",
    "missing",
    "expired",
    "revoked",
    "malformed",
    "error",
];

/// `sessiongate_session_lookups_total`, `sessiongate_critical_checks_total` and
/// `sessiongate_token_cache_total`, resolved once per label set, so that counting a
/// lookup costs no label hashing.
pub(crate) struct LookupCounters {
    /// By source (cache, redis, cookie) then result.
    lookups: [[IntCounter; 7]; 3],
    critical: [IntCounter; 7],
    /// A token reused.
    pub(crate) token_hit: IntCounter,
    /// A token minted.
    pub(crate) token_miss: IntCounter,
}

impl LookupCounters {
    pub(crate) fn new(m: &Metrics) -> Self {
        let row = |vec: &IntCounterVec, prefix: &[&str]| {
            RESULTS.map(|r| {
                let mut labels = prefix.to_vec();
                labels.push(r);
                vec.with_label_values(&labels)
            })
        };
        Self {
            lookups: [
                row(&m.session_lookups, &["cache"]),
                row(&m.session_lookups, &["redis"]),
                row(&m.session_lookups, &["cookie"]),
            ],
            critical: row(&m.critical_checks, &[]),
            token_hit: m.token_cache.with_label_values(&["hit"]),
            token_miss: m.token_cache.with_label_values(&["miss"]),
        }
    }

    fn index(result: &str) -> usize {
        RESULTS
            .iter()
            .position(|r| *r == result)
            .unwrap_or(RESULTS.len() - 1)
    }

    /// Counts a lookup answered from `source` (`None`: the cookie was refused before any
    /// lookup).
    pub(crate) fn count(&self, source: Option<crate::Source>, result: &str) {
        let row = match source {
            Some(crate::Source::Cache) => 0,
            Some(crate::Source::Redis) => 1,
            None => 2,
        };
        self.lookups[row][Self::index(result)].inc();
    }

    /// Counts a live check (critical route).
    pub(crate) fn critical(&self, result: &str) {
        self.critical[Self::index(result)].inc();
    }
}

/// The session cache's size, read when metrics are scraped:
/// `sessiongate_session_cache_entries`, `sessiongate_session_cache_bytes`,
/// `sessiongate_token_cache_entries` and `sessiongate_token_cache_bytes`.
pub struct CacheSize {
    cache: Arc<SessionCache>,
    entries: IntGauge,
    bytes: IntGauge,
    token_entries: IntGauge,
    token_bytes: IntGauge,
}

impl CacheSize {
    /// A collector for `cache`; register it with [`Registry::register`].
    #[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
    pub fn new(cache: Arc<SessionCache>) -> Self {
        // The names are constants; construction cannot fail.
        Self {
            cache,
            entries: IntGauge::new(
                "sessiongate_session_cache_entries",
                "Sessions (and negative entries) held in the session cache.",
            )
            .unwrap(),
            bytes: IntGauge::new(
                "sessiongate_session_cache_bytes",
                "Approximate bytes held by cached sessions, as counted against session.cache_max_bytes.",
            )
            .unwrap(),
            token_entries: IntGauge::new(
                "sessiongate_token_cache_entries",
                "Sessions holding tokens kept for reuse.",
            )
            .unwrap(),
            token_bytes: IntGauge::new(
                "sessiongate_token_cache_bytes",
                "Bytes held by tokens kept for reuse, as counted against session.token_cache_max_bytes.",
            )
            .unwrap(),
        }
    }
}

impl Collector for CacheSize {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.entries.desc();
        d.extend(self.bytes.desc());
        d.extend(self.token_entries.desc());
        d.extend(self.token_bytes.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
        self.bytes
            .set(i64::try_from(self.cache.weight()).unwrap_or(i64::MAX));
        self.token_entries
            .set(i64::try_from(self.cache.token_sets()).unwrap_or(i64::MAX));
        self.token_bytes
            .set(i64::try_from(self.cache.token_weight()).unwrap_or(i64::MAX));
        let mut families = self.entries.collect();
        families.extend(self.bytes.collect());
        families.extend(self.token_entries.collect());
        families.extend(self.token_bytes.collect());
        families
    }
}
