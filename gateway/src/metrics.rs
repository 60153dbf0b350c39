//! Prometheus metrics of the gateway itself, and the registry every crate registers into.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Metric families owned by the gateway crate.
pub struct Metrics {
    /// `sessiongate_requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `sessiongate_request_duration_seconds{route}`.
    pub request_duration: HistogramVec,
    /// `sessiongate_upstream_errors_total{route,kind}`.
    pub upstream_errors: IntCounterVec,
    /// `sessiongate_jwks_keys{state}`.
    pub jwks_keys: IntGaugeVec,
    /// `sessiongate_key_rotation_age_seconds`.
    pub key_rotation_age: IntGauge,
    /// `sessiongate_key_rotation_interval_seconds`: the configured `keys.rotate_every`,
    /// so that alerts compare the key age with the schedule without repeating it.
    pub key_rotation_interval: IntGauge,
    /// `sessiongate_key_rotation_failures_total`.
    pub key_rotation_failures: IntCounter,
    /// `sessiongate_ready`: 1 when the last readiness check (a `/readyz` probe or a
    /// scrape) passed, else 0.
    pub ready: IntGauge,
    /// `sessiongate_auth_refusals_total{route,reason}`.
    pub auth_refusals: IntCounterVec,
    /// `sessiongate_connections_open{route}`: WebSockets and streams under a session.
    pub connections_open: IntGaugeVec,
    /// `sessiongate_connections_closed_total{route,reason}`.
    pub connections_closed: IntCounterVec,
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    ///
    /// # Errors
    /// A prometheus error when a family is already registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "sessiongate_requests_total",
                "Requests answered, by route and HTTP status.",
            ),
            &["route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sessiongate_request_duration_seconds",
                "Time from the request header to the end of the response, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "sessiongate_upstream_errors_total",
                "Failures talking to upstreams, by route and kind (connect, timeout, protocol, other).",
            ),
            &["route", "kind"],
        )?;
        let jwks_keys = IntGaugeVec::new(
            Opts::new(
                "sessiongate_jwks_keys",
                "Published signing keys by state (next, current, previous).",
            ),
            &["state"],
        )?;
        let key_rotation_age = IntGauge::new(
            "sessiongate_key_rotation_age_seconds",
            "Seconds since the current signing key became current.",
        )?;
        let key_rotation_interval = IntGauge::new(
            "sessiongate_key_rotation_interval_seconds",
            "The configured rotation schedule (keys.rotate_every) in seconds.",
        )?;
        let ready = IntGauge::new(
            "sessiongate_ready",
            "1 when the gateway can serve (Redis answers and a signing key is loaded), else 0; checked on every /readyz probe and scrape.",
        )?;
        let key_rotation_failures = IntCounter::new(
            "sessiongate_key_rotation_failures_total",
            "Keyring refreshes or rotations that failed.",
        )?;
        let auth_refusals = IntCounterVec::new(
            Opts::new(
                "sessiongate_auth_refusals_total",
                "Requests refused by the gateway, by route and reason.",
            ),
            &["route", "reason"],
        )?;
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "sessiongate_connections_open",
                "WebSockets and streamed responses open under a session, by route.",
            ),
            &["route"],
        )?;
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "sessiongate_connections_closed_total",
                "WebSockets and streamed responses that ended, by route and who ended them (revoked, expired, unavailable, lifetime, client, upstream).",
            ),
            &["route", "reason"],
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_closed.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(jwks_keys.clone()))?;
        registry.register(Box::new(key_rotation_age.clone()))?;
        registry.register(Box::new(key_rotation_interval.clone()))?;
        registry.register(Box::new(key_rotation_failures.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(auth_refusals.clone()))?;
        Ok(Self {
            requests,
            request_duration,
            upstream_errors,
            jwks_keys,
            key_rotation_age,
            key_rotation_interval,
            key_rotation_failures,
            ready,
            auth_refusals,
            connections_open,
            connections_closed,
        })
    }

    /// Updates the key gauges from a key set at `now`.
    pub fn observe_keys(&self, set: &keys::KeySet, now: u64) {
        for state in [
            keys::KeyState::Next,
            keys::KeyState::Current,
            keys::KeyState::Previous,
        ] {
            self.jwks_keys
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(set.count(state)).unwrap_or(i64::MAX));
        }
        let age = set.last_rotation().map_or(0, |at| now.saturating_sub(at));
        self.key_rotation_age
            .set(i64::try_from(age).unwrap_or(i64::MAX));
    }
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding to a Vec only fails on malformed metric families, which we never build.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}
