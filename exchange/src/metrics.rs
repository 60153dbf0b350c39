//! Prometheus metrics owned by the exchange crate.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Metric families for session lookups, Redis commands and minting.
pub struct Metrics {
    /// `sessiongate_session_lookups_total{source,result}`.
    pub session_lookups: IntCounterVec,
    /// `sessiongate_redis_command_duration_seconds{command}`.
    pub redis_command_duration: HistogramVec,
    /// `sessiongate_tokens_minted_total{alg,kid}`.
    pub tokens_minted: IntCounterVec,
    /// `sessiongate_token_cache_total{result}`: token reuse (hit) or mint (miss).
    pub token_cache: IntCounterVec,
    /// `sessiongate_revocation_events_total{kind}`.
    pub revocation_events: IntCounterVec,
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
        registry.register(Box::new(m.tokens_minted.clone()))?;
        registry.register(Box::new(m.token_cache.clone()))?;
        registry.register(Box::new(m.revocation_events.clone()))?;
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
        }
    }
}
