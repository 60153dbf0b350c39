//! Server-pushed invalidation: Redis client-side caching (`CLIENT TRACKING ... BCAST
//! PREFIX key_prefix`) tells every replica within milliseconds that a session key was
//! deleted, overwritten or expired, and the replica drops its cached entry (and the
//! tokens minted for it).
//!
//! A dedicated RESP3 connection carries the push messages; sessions are still read
//! through the pool. The channel's state is a gauge. The safety argument does not depend
//! on the channel: every cache entry is trusted for at most `cache_ttl` whatever
//! happens, so a lost invalidation can delay a revocation by at most `cache_ttl`. To
//! keep the usual delay at milliseconds, the cache is flushed whenever tracking is
//! (re)armed — anything cached while the channel was down may have missed an
//! invalidation — and on a lagged broadcast (messages were dropped).
//!
//! Known limits (docs/revocation.md): in Redis Cluster, BCAST tracking is per node, so
//! the channel is armed on every node fred reconnects to; `FLUSHALL`/`FLUSHDB` send an
//! invalidation fred does not surface (use `DEL`/`UNLINK` to revoke); natural expiry of
//! a key is noticed when Redis expires it (up to ~100–200 ms late), which the cache's
//! own check of the session's `exp` covers.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientInterface, ClientLike, ClusterInterface, EventInterface,
    ReconnectPolicy, TrackingInterface,
};
use fred::types::RespVersion;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Error;
use crate::cache::SessionCache;
use crate::metrics::Metrics;
use crate::session::record::key_digest;

/// Settings of the invalidation channel.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The Redis URL (same server(s) as the session store).
    pub url: String,
    /// The session key prefix to track.
    pub key_prefix: String,
    /// Whether keys are hashed (`prefix + hex(sha256(cookie))`) or plain.
    pub hashed_keys: bool,
    /// Connection timeout.
    pub timeout: Duration,
    /// PEM CA for a `rediss://` URL (as [`crate::store::redis::RedisSettings::ca_file`]).
    pub ca_file: Option<std::path::PathBuf>,
}

/// A running invalidation channel; dropping it does not stop it (call [`Push::stop`]).
pub struct Push {
    client: Client,
    stop: watch::Sender<bool>,
}

impl Push {
    /// Connects the tracking client and starts the task that applies invalidations to
    /// `cache`. Must run inside the runtime that will own the connection.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL is invalid.
    pub fn start(
        settings: PushSettings,
        cache: Arc<dyn Invalidate>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let mut config =
            crate::store::redis::fred_config(&settings.url, settings.ca_file.as_deref())?;
        config.version = RespVersion::RESP3;
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|perf| {
                // A lagged receiver flushes the whole cache; make that rare.
                perf.broadcast_channel_capacity = 65_536;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = settings.timeout.max(Duration::from_secs(1));
                conn.internal_command_timeout = settings.timeout.max(Duration::from_secs(1));
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        metrics.push_connected.set(0);
        let (stop, stop_rx) = watch::channel(false);
        let task = Tracker {
            client: client.clone(),
            settings,
            cache,
            metrics,
        };
        tokio::spawn(task.run(stop_rx));
        Ok(Self { client, stop })
    }

    /// Whether the tracking connection is up.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Stops the channel and closes its connection.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let _ = self.client.quit().await;
    }
}

/// What the push channel needs from a cache.
pub trait Invalidate: Send + Sync + 'static {
    /// Drops one entry (by cookie digest); returns whether one was cached.
    fn invalidate_digest(&self, digest: &[u8; 32]) -> bool;
    /// Drops everything.
    fn flush(&self);
}

impl Invalidate for SessionCache {
    fn invalidate_digest(&self, digest: &[u8; 32]) -> bool {
        self.invalidate(digest)
    }

    fn flush(&self) {
        self.clear();
    }
}

struct Tracker {
    client: Client,
    settings: PushSettings,
    cache: Arc<dyn Invalidate>,
    metrics: Arc<Metrics>,
}

impl Tracker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut invalidations = self.client.invalidation_rx();
        let mut reconnects = self.client.reconnect_rx();
        let mut errors = self.client.error_rx();
        let _connection = self.client.connect();
        let mut armed = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                msg = invalidations.recv() => match msg {
                    Ok(inv) => self.apply(&inv.keys),
                    Err(RecvError::Lagged(n)) => {
                        warn!(dropped = n, "Invalidation messages were dropped; flushing the session cache.");
                        self.flush("lagged");
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = reconnects.recv() => {
                    // A new connection has no tracking state: re-arm it (and flush).
                    armed = self.arm().await;
                }
                err = errors.recv() => {
                    if let Ok((e, _)) = err {
                        warn!(error = %e, "Invalidation channel error; revocation falls back to the cache_ttl bound until it is re-armed.");
                    }
                    self.metrics.push_connected.set(0);
                    armed = false;
                }
                _ = tick.tick() => {
                    let connected = self.client.is_connected();
                    if armed && !connected {
                        self.metrics.push_connected.set(0);
                        armed = false;
                    } else if !armed && connected {
                        armed = self.arm().await;
                    }
                }
            }
        }
        self.metrics.push_connected.set(0);
    }

    /// Turns tracking on for the session prefix, then flushes the cache.
    async fn arm(&self) -> bool {
        let prefix = self.settings.key_prefix.as_str();
        match self.enable_tracking(prefix).await {
            Ok(nodes) => {
                // Anything cached before now may have missed an invalidation.
                self.flush("rearmed");
                self.metrics.push_connected.set(1);
                info!(prefix, nodes, "Invalidation channel armed.");
                true
            }
            Err(e) => {
                warn!(error = %e, "Could not arm the invalidation channel; retrying.");
                self.metrics.push_connected.set(0);
                false
            }
        }
    }

    /// `CLIENT TRACKING ON BCAST PREFIX p` on every connection of the client: in a
    /// cluster, BCAST tracking is per node and fred would send it to one node only, so it
    /// is sent to every primary explicitly. Each connection is switched off first, which
    /// makes arming idempotent (Redis refuses a prefix a connection already tracks); the
    /// caller flushes the cache afterwards, so nothing missed in between is trusted.
    /// Returns the number of nodes armed.
    async fn enable_tracking(&self, prefix: &str) -> Result<usize, fred::error::Error> {
        let nodes = if self.client.is_clustered() {
            let nodes = self
                .client
                .cached_cluster_state()
                .map(|state| state.unique_primary_nodes())
                .unwrap_or_default();
            if nodes.is_empty() {
                return Err(fred::error::Error::new(
                    fred::error::ErrorKind::Cluster,
                    "no cluster nodes known yet",
                ));
            }
            nodes.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        for node in &nodes {
            let target = match node {
                Some(server) => self.client.with_cluster_node(server.clone()),
                None => self.client.with_options(&fred::prelude::Options::default()),
            };
            let _ = target
                .client_tracking::<(), _, _>(
                    "OFF",
                    None,
                    Vec::<String>::new(),
                    false,
                    false,
                    false,
                    false,
                )
                .await;
            target
                .client_tracking::<(), _, _>("ON", None, prefix, true, false, false, false)
                .await?;
        }
        Ok(nodes.len())
    }

    fn flush(&self, why: &'static str) {
        self.cache.flush();
        self.metrics
            .session_cache
            .with_label_values(&["flush"])
            .inc();
        self.metrics
            .revocation_events
            .with_label_values(&[why])
            .inc();
    }

    fn apply(&self, keys: &[fred::types::Key]) {
        if keys.is_empty() {
            // A null key list means "everything" (FLUSHDB); flush to be safe.
            self.flush("flushdb");
            return;
        }
        for key in keys {
            self.metrics.invalidations.inc();
            let Some(digest) = key
                .as_str()
                .and_then(|k| key_digest(k, &self.settings.key_prefix, self.settings.hashed_keys))
            else {
                continue;
            };
            if self.cache.invalidate_digest(&digest) {
                self.metrics
                    .session_cache
                    .with_label_values(&["invalidation"])
                    .inc();
            }
        }
    }
}
