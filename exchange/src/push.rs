//! Server-pushed invalidation: Redis client-side caching (`CLIENT TRACKING ... BCAST
//! PREFIX key_prefix`) tells every replica within milliseconds that a session key was
//! deleted, overwritten or expired, and the replica drops its cached entry (and the
//! tokens minted for it).
//!
//! A dedicated RESP3 connection carries the push messages; sessions are still read
//! through the pool. Every cache entry is trusted for at most `cache_ttl` whatever
//! happens; on top of that, the cache answers from memory only while this channel
//! *vouches* for it ([`SessionCache::confirm_until`]), a lease the channel renews after
//! every heartbeat that proves:
//!
//! - the connection is the one tracking was armed on (`CLIENT ID` unchanged) and it still
//!   tracks the prefix (`CLIENT TRACKINGINFO`): no invalidation can have been lost to a
//!   reconnection (a new connection does not track until re-armed);
//! - every invalidation Redis wrote before the heartbeat's reply has been applied (they
//!   arrive in order on the same connection and are drained before the lease is renewed);
//! - the database was not flushed (the replica's canary key still exists): Redis's
//!   invalidation for `FLUSHALL`/`FLUSHDB` carries no keys and fred drops it.
//!
//! When the channel errors, reconnects, or its heartbeat fails or is late, the lease
//! lapses within [`LEASE`] and the cache is *bypassed*: lookups read Redis, and a cached
//! entry only answers while Redis is unreachable (SPEC's outage row). When tracking is
//! (re-)armed the cache is flushed first — anything cached before may have missed an
//! invalidation — and on a lagged broadcast (messages were dropped).
//!
//! In Redis Cluster, BCAST tracking is per node, so tracking is armed and checked on
//! every primary; the canary covers the node its key lives on only (docs/revocation.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{
    Builder, Client, ClientInterface, ClientLike, ClusterInterface, EventInterface, Expiration,
    KeysInterface, ReconnectPolicy, TrackingInterface,
};
use fred::types::client::Invalidation;
use fred::types::config::Server;
use fred::types::config::UnresponsiveConfig;
use fred::types::{RespVersion, Value};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Error;
use crate::cache::SessionCache;
use crate::metrics::Metrics;

/// How often the channel proves itself alive (and renews the cache's lease).
pub const HEARTBEAT: Duration = Duration::from_millis(100);

/// How long one heartbeat lets the cache answer from memory: if the channel goes
/// silently dead, the cache is bypassed at most this long after its last heartbeat.
pub const LEASE: Duration = Duration::from_millis(500);

/// How long a heartbeat may take before the channel is treated as down.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(400);

/// How long heartbeats may keep failing on one connection before it is replaced. fred's
/// own unresponsive check measures from the connection's latest write, which the
/// heartbeat renews every [`HEARTBEAT`], so it never fires on a blackholed connection.
const STUCK: Duration = Duration::from_secs(2);

/// How long the canary key lives; it is rewritten well before.
const CANARY_TTL: Duration = Duration::from_secs(3600);
/// How often the canary key is rewritten.
const CANARY_REFRESH: Duration = Duration::from_secs(600);

/// Settings of the invalidation channel.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The Redis URL (same server(s) as the session store).
    pub url: String,
    /// The session keys to track (their prefix) and how keys name sessions.
    pub keyspace: crate::Keyspace,
    /// Connection timeout.
    pub timeout: Duration,
    /// PEM CA for a `rediss://` URL (as [`crate::store::redis::RedisSettings::ca_file`]).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Capacity of the tracking client's broadcast channels. A lagged receiver flushes the
/// whole cache, so it must be far above any burst between two polls of the receiver; but
/// fred allocates every one of its nine per-client broadcast channels at this capacity up
/// front (about 90 bytes a slot), so 65,536 cost 55 MiB of idle RSS. 8,192 costs 7 MiB.
const BROADCAST_CAPACITY: usize = 8_192;

/// A running invalidation channel; dropping it does not stop it (call [`Push::stop`]).
pub struct Push {
    client: Client,
    stop: watch::Sender<bool>,
}

impl Push {
    /// Connects the tracking client and starts the task that applies invalidations to
    /// `cache`. The cache is bypassed from now until tracking is first armed. Must run
    /// inside the runtime that will own the connection.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL is invalid or the system has no randomness.
    pub fn start(
        settings: PushSettings,
        cache: Arc<dyn Invalidate>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let mut config =
            crate::store::redis::fred_config(&settings.url, settings.ca_file.as_deref())?;
        config.version = RespVersion::RESP3;
        config.fail_fast = false;
        let connect_timeout = settings.timeout.max(Duration::from_secs(1));
        let client = Builder::from_config(config)
            .with_performance_config(|perf| {
                perf.broadcast_channel_capacity = BROADCAST_CAPACITY;
                perf.default_command_timeout = HEARTBEAT_TIMEOUT;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = connect_timeout;
                conn.internal_command_timeout = connect_timeout;
                // A command never silently moves to a new connection: a heartbeat proves
                // something about the connection it was sent on, or fails.
                conn.max_command_attempts = 1;
                conn.tcp.nodelay = Some(true);
                // A connection that stops answering is closed and re-established (and
                // tracking re-armed) rather than trusted; see also [`STUCK`].
                conn.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(Duration::from_secs(2)),
                    interval: Duration::from_millis(500),
                };
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        metrics.push_connected.set(0);
        cache.suspend();
        let canary = settings
            .keyspace
            .canary_key(&crate::revocation::random_hex(8)?);
        let (stop, stop_rx) = watch::channel(false);
        let task = Tracker {
            client: client.clone(),
            settings,
            canary,
            cache,
            metrics,
            arm_failures: AtomicU32::new(0),
            late_beats: AtomicU32::new(0),
            last_good: parking_lot::Mutex::new(Instant::now()),
            replacing: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(task.run(stop_rx));
        Ok(Self { client, stop })
    }

    /// Whether the tracking connection is up.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Stops the channel and closes its connection; the cache stays bypassed.
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
    /// The channel cannot vouch for the cache: bypass it until [`Invalidate::confirm_until`].
    fn suspend(&self);
    /// The channel vouches for the cache until `until`.
    fn confirm_until(&self, until: Instant);
}

impl Invalidate for SessionCache {
    fn invalidate_digest(&self, digest: &[u8; 32]) -> bool {
        self.invalidate(digest)
    }

    fn flush(&self) {
        self.clear();
    }

    fn suspend(&self) {
        SessionCache::suspend(self);
    }

    fn confirm_until(&self, until: Instant) {
        SessionCache::confirm_until(self, until);
    }
}

struct Tracker {
    client: Client,
    settings: PushSettings,
    /// This replica's canary key: it disappears on `FLUSHALL`/`FLUSHDB`.
    canary: String,
    cache: Arc<dyn Invalidate>,
    metrics: Arc<Metrics>,
    /// Failed attempts to arm since the last success.
    arm_failures: AtomicU32,
    /// Heartbeats without proof since the last good one.
    late_beats: AtomicU32,
    /// When the channel last proved itself (armed, or a good heartbeat).
    last_good: parking_lot::Mutex<Instant>,
    /// A forced reconnection is under way.
    replacing: Arc<AtomicBool>,
}

/// What tracking was armed on.
struct Armed {
    /// Each tracked node (`None` for a non-clustered server) with the `CLIENT ID` of the
    /// connection tracking was turned on for.
    nodes: Vec<(Option<Server>, i64)>,
    /// Whether the canary key could be written (and so is checked).
    canary: bool,
    /// When the canary was last written.
    canary_written: Instant,
}

/// The outcome of a heartbeat.
enum Beat {
    /// The channel vouches for the cache again.
    Ok,
    /// No proof this time (slow or failed command on the same connection).
    Late,
    /// The connection changed or stopped tracking: re-arm.
    Broken,
}

/// Why a heartbeat check gave no proof.
enum Check {
    /// The connection is not the armed one, or it does not track the prefix.
    Broken(&'static str),
    /// A command failed or timed out.
    Failed,
}

impl From<fred::error::Error> for Check {
    fn from(e: fred::error::Error) -> Self {
        match e.kind() {
            fred::error::ErrorKind::IO | fred::error::ErrorKind::Canceled => {
                Check::Broken("the tracking connection failed")
            }
            _ => Check::Failed,
        }
    }
}

/// Why the channel went down.
#[derive(Clone, Copy)]
enum Down {
    Error,
    Reconnect,
    Heartbeat,
    Disconnected,
}

impl Down {
    fn as_str(self) -> &'static str {
        match self {
            Down::Error => "error",
            Down::Reconnect => "reconnect",
            Down::Heartbeat => "heartbeat",
            Down::Disconnected => "disconnected",
        }
    }
}

impl Tracker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut invalidations = self.client.invalidation_rx();
        let mut reconnects = self.client.reconnect_rx();
        let mut errors = self.client.error_rx();
        let _connection = self.client.connect();
        let mut armed: Option<Armed> = None;
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Biased: a pending error or reconnection is handled before any heartbeat
            // could renew the lease; the heartbeat (every 100 ms) comes before the
            // invalidations so that a flood of them cannot starve it (it drains them).
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                err = errors.recv() => {
                    match err {
                        Ok((e, _)) => warn!(error = %e, "Invalidation channel error; the session cache is bypassed until it is re-armed."),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    }
                    self.down(&mut armed, Down::Error);
                }
                event = reconnects.recv() => {
                    if matches!(event, Err(RecvError::Closed)) {
                        break;
                    }
                    // A new connection has no tracking state: re-arm it (and flush).
                    self.down(&mut armed, Down::Reconnect);
                    armed = self.arm(&mut invalidations).await;
                }
                _ = tick.tick() => {
                    let connected = self.client.is_connected();
                    match &mut armed {
                        Some(_) if !connected => self.down(&mut armed, Down::Disconnected),
                        Some(state) => match self.heartbeat(state, &mut invalidations).await {
                            Beat::Ok => {}
                            Beat::Late => self.late(),
                            Beat::Broken => self.down(&mut armed, Down::Heartbeat),
                        },
                        None if connected => armed = self.arm(&mut invalidations).await,
                        None => {}
                    }
                }
                msg = invalidations.recv() => match msg {
                    Ok(inv) => self.apply(&inv.keys),
                    Err(RecvError::Lagged(n)) => {
                        warn!(dropped = n, "Invalidation messages were dropped; flushing the session cache.");
                        self.flush("lagged");
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        self.cache.suspend();
        self.metrics.push_connected.set(0);
    }

    /// Stops vouching for the cache.
    fn down(&self, armed: &mut Option<Armed>, why: Down) {
        self.cache.suspend();
        if armed.take().is_some() {
            self.metrics.push_connected.set(0);
            self.metrics
                .push_down
                .with_label_values(&[why.as_str()])
                .inc();
        }
    }

    /// A heartbeat brought no proof: stop vouching until one does.
    fn late(&self) {
        let late = self.late_beats.fetch_add(1, Ordering::Relaxed) + 1;
        if late.is_power_of_two() {
            warn!(
                heartbeats = late,
                "Invalidation channel heartbeats are late or failing; the session cache is bypassed meanwhile."
            );
        }
        self.cache.suspend();
        self.metrics.push_connected.set(0);
        self.metrics
            .push_down
            .with_label_values(&["heartbeat_late"])
            .inc();
        self.replace_if_stuck();
    }

    /// Heartbeats have failed for [`STUCK`]: the connection is never trusted again. Force
    /// a reconnection (once at a time); the reconnection event re-arms tracking.
    fn replace_if_stuck(&self) {
        if self.last_good.lock().elapsed() < STUCK
            || !self.client.is_connected()
            || self.replacing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        warn!(
            stuck_for = ?STUCK,
            "The invalidation channel's connection stopped answering; replacing it."
        );
        let (client, replacing) = (self.client.clone(), self.replacing.clone());
        tokio::spawn(async move {
            let _ = client.force_reconnection().await;
            replacing.store(false, Ordering::Release);
        });
        *self.last_good.lock() = Instant::now();
    }

    /// Turns tracking on for the session prefix, writes the canary, flushes the cache,
    /// and starts vouching for it.
    async fn arm(&self, invalidations: &mut Receiver<Invalidation>) -> Option<Armed> {
        let started = Instant::now();
        let prefix = self.settings.keyspace.prefix();
        let nodes = match self.enable_tracking(prefix).await {
            Ok(nodes) => nodes,
            Err(e) => {
                // Retried every heartbeat: log the 1st, 2nd, 4th, 8th... failure in a row.
                let failures = self.arm_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures.is_power_of_two() {
                    warn!(error = %e, failures, "Could not arm the invalidation channel; the session cache is bypassed while retrying.");
                }
                return None;
            }
        };
        self.arm_failures.store(0, Ordering::Relaxed);
        let canary = if nodes.iter().all(|(node, _)| node.is_none()) {
            match self.write_canary().await {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "Could not write the canary key; FLUSHALL/FLUSHDB will only be noticed within cache_ttl.");
                    false
                }
            }
        } else {
            false
        };
        // Anything cached before now may have missed an invalidation.
        self.flush("rearmed");
        if !self.drain(invalidations) {
            return None;
        }
        self.cache.confirm_until(started + LEASE);
        self.metrics.push_connected.set(1);
        *self.last_good.lock() = Instant::now();
        info!(prefix, nodes = nodes.len(), "Invalidation channel armed.");
        Some(Armed {
            nodes,
            canary,
            canary_written: Instant::now(),
        })
    }

    /// Proves the channel still delivers every invalidation, then renews the lease.
    async fn heartbeat(
        &self,
        armed: &mut Armed,
        invalidations: &mut Receiver<Invalidation>,
    ) -> Beat {
        let started = Instant::now();
        let checked = self
            .while_applying(invalidations, HEARTBEAT_TIMEOUT, self.check(armed))
            .await;
        let canary_present = match checked {
            Ok(Ok(present)) => present,
            Ok(Err(Check::Broken(why))) => {
                warn!(why, "Invalidation channel heartbeat failed; re-arming.");
                return Beat::Broken;
            }
            Ok(Err(Check::Failed)) | Err(_) => {
                // Late or failed, but nothing shows the connection changed: stop vouching
                // until a heartbeat gets through. Invalidations in between are not lost
                // (same connection, in order), so that heartbeat needs no flush.
                return Beat::Late;
            }
        };
        // Redis wrote every invalidation preceding the replies on this connection before
        // them, and fred has queued them: apply them before vouching for the cache.
        if !self.drain(invalidations) {
            return Beat::Broken;
        }
        if armed.canary && !canary_present {
            warn!(
                "The canary key was gone (FLUSHALL, FLUSHDB or eviction); flushing the session cache."
            );
            self.flush("canary");
        }
        if armed.canary && armed.canary_written.elapsed() >= CANARY_REFRESH {
            if let Err(e) = self.write_canary().await {
                warn!(error = %e, "Could not rewrite the canary key; FLUSHALL/FLUSHDB will only be noticed within cache_ttl.");
                armed.canary = false;
            }
            armed.canary_written = Instant::now();
        }
        self.cache.confirm_until(started + LEASE);
        self.metrics.push_connected.set(1);
        self.late_beats.store(0, Ordering::Relaxed);
        *self.last_good.lock() = Instant::now();
        Beat::Ok
    }

    /// Runs `work` for at most `limit` while applying invalidations as they arrive, so a
    /// slow command never delays a revocation. `Err` on timeout, or when the
    /// invalidation stream closed.
    async fn while_applying<T>(
        &self,
        invalidations: &mut Receiver<Invalidation>,
        limit: Duration,
        work: impl Future<Output = T>,
    ) -> Result<T, ()> {
        let mut work = std::pin::pin!(work);
        let mut deadline = std::pin::pin!(tokio::time::sleep(limit));
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Ok(done),
                msg = invalidations.recv() => match msg {
                    Ok(inv) => self.apply(&inv.keys),
                    Err(RecvError::Lagged(_)) => self.flush("lagged"),
                    Err(RecvError::Closed) => return Err(()),
                },
                () = &mut deadline => return Err(()),
            }
        }
    }

    /// Checks every tracked connection; returns whether the canary still existed.
    async fn check(&self, armed: &Armed) -> Result<bool, Check> {
        if self.client.is_clustered() {
            // A primary that joined since arming is not tracked: re-arm on every node.
            let mut now: Vec<Server> = self
                .client
                .cached_cluster_state()
                .map(|state| state.unique_primary_nodes())
                .unwrap_or_default();
            let mut then: Vec<Server> = armed.nodes.iter().filter_map(|(n, _)| n.clone()).collect();
            now.sort();
            then.sort();
            if now != then {
                return Err(Check::Broken("the cluster's primaries changed"));
            }
        }
        for (node, id) in &armed.nodes {
            let target = self.target(node.as_ref());
            let now_id: i64 = target.client_id().await.map_err(Check::from)?;
            if now_id != *id {
                return Err(Check::Broken("the tracking connection was replaced"));
            }
            let info: HashMap<String, Value> =
                target.client_trackinginfo().await.map_err(Check::from)?;
            if !tracks(&info, self.settings.keyspace.prefix()) {
                return Err(Check::Broken(
                    "the connection no longer tracks the session prefix",
                ));
            }
        }
        if !armed.canary {
            return Ok(true);
        }
        // `SET NX` rather than `EXISTS`: a write-path lookup, so it neither counts as a
        // keyspace hit nor (while the key exists) writes anything. It answers OK only
        // when the key was gone, and then recreates it.
        let recreated: Option<String> = self
            .client
            .set(
                self.canary.as_str(),
                "1",
                Some(Expiration::EX(canary_ttl_secs())),
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await
            .map_err(Check::from)?;
        Ok(recreated.is_none())
    }

    fn target(&self, node: Option<&Server>) -> fred::clients::WithOptions<Client> {
        match node {
            Some(server) => self.client.with_cluster_node(server.clone()),
            None => self.client.with_options(&fred::prelude::Options::default()),
        }
    }

    async fn write_canary(&self) -> Result<(), fred::error::Error> {
        self.client
            .set::<(), _, _>(
                self.canary.as_str(),
                "1",
                Some(Expiration::EX(canary_ttl_secs())),
                None,
                false,
            )
            .await
    }

    /// `CLIENT TRACKING ON BCAST PREFIX p` on every connection of the client: in a
    /// cluster, BCAST tracking is per node and fred would send it to one node only, so it
    /// is sent to every primary explicitly. Each connection is switched off first, which
    /// makes arming idempotent (Redis refuses a prefix a connection already tracks); the
    /// caller flushes the cache afterwards, so nothing missed in between is trusted.
    /// Returns each node with the id of its tracking connection.
    async fn enable_tracking(
        &self,
        prefix: &str,
    ) -> Result<Vec<(Option<Server>, i64)>, fred::error::Error> {
        let nodes: Vec<Option<Server>> = if self.client.is_clustered() {
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
        let mut armed = Vec::with_capacity(nodes.len());
        for node in nodes {
            let target = self.target(node.as_ref());
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
            let id: i64 = target.client_id().await?;
            armed.push((node, id));
        }
        Ok(armed)
    }

    /// Applies every invalidation already received; false when the channel closed.
    fn drain(&self, invalidations: &mut Receiver<Invalidation>) -> bool {
        loop {
            match invalidations.try_recv() {
                Ok(inv) => self.apply(&inv.keys),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Lagged(_)) => self.flush("lagged"),
                Err(TryRecvError::Closed) => return false,
            }
        }
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
                .and_then(|k| self.settings.keyspace.digest_of_key(k))
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

fn canary_ttl_secs() -> i64 {
    i64::try_from(CANARY_TTL.as_secs()).unwrap_or(i64::MAX)
}

/// Whether a `CLIENT TRACKINGINFO` reply says tracking is on, in BCAST mode, for `prefix`.
fn tracks(info: &HashMap<String, Value>, prefix: &str) -> bool {
    let strings = |name: &str| -> Vec<String> {
        match info.get(name) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_string).collect(),
            _ => Vec::new(),
        }
    };
    let flags = strings("flags");
    flags.iter().any(|f| f == "on")
        && flags.iter().any(|f| f == "bcast")
        && strings("prefixes").iter().any(|p| p == prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(flags: &[&str], prefixes: &[&str]) -> HashMap<String, Value> {
        let list = |items: &[&str]| Value::Array(items.iter().map(|s| Value::from(*s)).collect());
        HashMap::from([
            ("flags".to_owned(), list(flags)),
            ("redirect".to_owned(), Value::Integer(-1)),
            ("prefixes".to_owned(), list(prefixes)),
        ])
    }

    #[test]
    fn trackinginfo_must_show_bcast_tracking_of_the_prefix() {
        for (flags, prefixes, expected) in [
            (&["on", "bcast"][..], &["sg:session:"][..], true),
            (&["on", "bcast", "noloop"], &["a:", "sg:session:"], true),
            (&["off"], &[], false),
            (&["on"], &["sg:session:"], false),
            (&["on", "bcast"], &["other:"], false),
            (&["on", "bcast"], &[], false),
        ] {
            assert_eq!(
                tracks(&info(flags, prefixes), "sg:session:"),
                expected,
                "{flags:?} {prefixes:?}"
            );
        }
        assert!(!tracks(&HashMap::new(), "sg:session:"));
    }
}
