//! The Redis session store, over a pooled `fred` client.
//!
//! Build it on the tokio runtime it will live on: fred spawns its connection tasks on
//! the current runtime. Commands can then be sent from any runtime.
//!
//! Faults (SPEC "Behaviour under faults", docs/reliability.md):
//!
//! - A command that times out condemns its connection: the store forces that client to
//!   reconnect at once. fred's own `UnresponsiveConfig` is kept, but it measures from the
//!   connection's *latest* write, so under steady load a blackholed connection never looks
//!   unresponsive and would time out every command sent on it.
//! - Reconnection backs off from 50 ms to `redis.timeout` (at least 100 ms), so that the
//!   pool is serving again well within `2 × redis.timeout + 1s` of Redis answering.
//! - In a cluster, fred resynchronizes the whole client when one node's connection
//!   fails, and that resync cannot complete while a master is down, so every key would be
//!   refused until the failover ends. While the cluster client is not connected, session
//!   reads go instead to a plain client of the key's primary (by the last known slot map);
//!   only keys of an unreachable primary fail. Those clients are closed once the cluster
//!   client has been connected for a while.
//!
//! For `rediss://` URLs [`fred_config`] builds the TLS client itself: it trusts the CA
//! file of the settings (a private CA, as most managed and in-cluster Redis TLS uses)
//! or else the system's roots, and it names its crypto provider explicitly rather than
//! depend on a process-wide default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fred::interfaces::EventInterface as _;
use fred::prelude::{
    Builder, Client, ClientLike, ClusterInterface, Config, Expiration, KeysInterface, Pool,
    ReconnectPolicy, SetsInterface,
};
use fred::types::config::{Server, ServerConfig, UnresponsiveConfig};
use futures::StreamExt as _;
use futures::stream::BoxStream;

use super::SessionStore;
use super::direct::{self, Direct};
use crate::Error;
use crate::metrics::Metrics;

/// Settings for the Redis connection pool.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://`, `rediss://`, `redis-cluster://` or `redis-sentinel://` URL (fred's forms).
    pub url: String,
    /// Per-command timeout.
    pub timeout: Duration,
    /// Number of pooled connections.
    pub pool_size: usize,
    /// PEM CA certificate(s) a `rediss://` server must chain to; the system's roots
    /// when `None`. Only valid with a TLS URL.
    pub ca_file: Option<PathBuf>,
}

/// fred's config for `url`, with the TLS client built here for the `rediss` schemes
/// (trusting `ca_file`, or the system's roots when it is `None`).
///
/// # Errors
/// [`Error::Config`] when the URL does not parse, `ca_file` is given for a URL without
/// TLS, or the CA file cannot be read or holds no certificate.
pub fn fred_config(url: &str, ca_file: Option<&Path>) -> Result<Config, Error> {
    let mut config = parse_url(url, ca_file)?;
    // Sentinels share the servers' credentials unless `sentinelUsername` /
    // `sentinelPassword` give them their own.
    if let ServerConfig::Sentinel {
        username, password, ..
    } = &mut config.server
        && username.is_none()
        && password.is_none()
    {
        username.clone_from(&config.username);
        password.clone_from(&config.password);
    }
    Ok(config)
}

fn parse_url(url: &str, ca_file: Option<&Path>) -> Result<Config, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Config(format!("`{url}` is not a Redis URL")))?;
    let Some(plain_scheme) = scheme
        .to_ascii_lowercase()
        .strip_prefix("rediss")
        .map(|suffix| format!("redis{suffix}"))
    else {
        if ca_file.is_some() {
            return Err(Error::Config(
                "redis.ca_file applies only to rediss:// URLs".into(),
            ));
        }
        return Config::from_url(url).map_err(|e| Error::Config(e.to_string()));
    };
    // Parse the URL as its plain form (fred would build a default TLS client from the
    // process-wide provider), then attach our own TLS client.
    let mut config = Config::from_url(&format!("{plain_scheme}://{rest}"))
        .map_err(|e| Error::Config(e.to_string()))?;
    config.tls = Some(fred::types::config::TlsConfig::from(tls_client(ca_file)?));
    Ok(config)
}

/// A rustls client trusting `ca_file` (or the system's roots).
fn tls_client(ca_file: Option<&Path>) -> Result<fred::rustls::ClientConfig, Error> {
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject as _;
    use fred::rustls::{ClientConfig, RootCertStore, crypto};

    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let err =
                |why: String| Error::Config(format!("redis.ca_file {}: {why}", path.display()));
            let pem = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| err(format!("not PEM certificates: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err("no certificate in the file".into()));
            }
        }
        None => {
            let native = fred::rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(Error::Config(
                    "rediss:// without redis.ca_file needs the system's root certificates, and none were found".into(),
                ));
            }
        }
    }
    let provider = crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(crypto::aws_lc_rs::default_provider()));
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS to Redis: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A [`SessionStore`] backed by a fred connection pool.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    metrics: Arc<Metrics>,
    /// Per pooled client: when it was last forced to reconnect (ms since `epoch`), so that
    /// a stuck connection is replaced once, not once per command that timed out on it.
    forced: Arc<[AtomicU64]>,
    epoch: Instant,
    /// The runtime that owns the connections.
    runtime: tokio::runtime::Handle,
    /// Cluster only: plain clients of the primaries, for reads while the cluster client
    /// resynchronizes.
    nodes: Option<Arc<Nodes>>,
    /// Standalone servers over plain TCP: the connections of direct session reads
    /// ([`direct`]).
    direct: Option<Arc<Direct>>,
    /// `sessiongate_redis_command_duration_seconds{command="GET"}`, resolved once: a
    /// session read is the one command of every critical request.
    get_duration: prometheus::Histogram,
}

/// Direct-read connections allowed per pooled fred connection.
const DIRECT_PER_POOLED: usize = 32;

/// Direct reads for `config`, over plain TCP to a standalone server or a Sentinel's
/// primary; `None` for TLS and Cluster. A standalone server is known at once; behind
/// Sentinel the pool is pointed at each primary fred connects to ([`follow_primary`]).
fn direct_reads(config: &Config, settings: &RedisSettings) -> Option<Arc<Direct>> {
    if config.tls.is_some() {
        return None;
    }
    let login = direct::Login {
        auth: config
            .password
            .clone()
            .map(|password| (config.username.clone(), password)),
        database: config.database,
        primary_only: matches!(config.server, ServerConfig::Sentinel { .. }),
    };
    let direct = match &config.server {
        ServerConfig::Centralized { .. } | ServerConfig::Sentinel { .. } => Direct::new(
            login,
            settings.timeout,
            settings.pool_size.max(1) * DIRECT_PER_POOLED,
        ),
        _ => return None,
    };
    if let ServerConfig::Centralized { server } = &config.server {
        direct.point_at(&server.host, server.port);
    }
    Some(Arc::new(direct))
}

/// Points `direct` at every server `client` (re)connects to: behind Sentinel, the
/// primary it found. Runs until the client is dropped.
fn follow_primary(client: &Client, direct: &Arc<Direct>) {
    let mut connected = client.reconnect_rx();
    let direct = Arc::downgrade(direct);
    tokio::spawn(async move {
        loop {
            match connected.recv().await {
                Ok(server) => match direct.upgrade() {
                    Some(direct) => direct.point_at(&server.host, server.port),
                    None => return,
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// A client of the pool, or of one cluster node, picked for one command.
struct Picked {
    client: Client,
    /// The index of the pooled client (`None` for a node client).
    pooled: Option<usize>,
}

/// Plain (non-cluster) clients of a cluster's primaries, created when the cluster client
/// is not connected and a key's primary is needed, and closed once it has been connected
/// again for [`NODES_IDLE`].
struct Nodes {
    config: Config,
    settings: RedisSettings,
    clients: parking_lot::Mutex<HashMap<Server, Client>>,
    /// How many clients `clients` holds (read without the lock on every command).
    count: AtomicUsize,
    /// When a node client was last used (ms since the store's epoch).
    last_used: AtomicU64,
}

/// How long node clients are kept after their last use while the cluster client is up.
const NODES_IDLE: Duration = Duration::from_secs(10);

/// fred's client builder with the store's timeouts, failure detection and reconnection.
fn builder(config: Config, settings: &RedisSettings) -> Builder {
    let timeout = settings.timeout;
    // Back off from 50 ms up to redis.timeout (at least 100 ms) between attempts: the
    // pool serves again within one step of Redis answering.
    let max_delay =
        u32::try_from(timeout.max(Duration::from_millis(100)).as_millis()).unwrap_or(u32::MAX);
    let mut b = Builder::from_config(config);
    b.with_performance_config(|perf| {
        perf.default_command_timeout = timeout;
    })
    .with_connection_config(|conn| {
        conn.connection_timeout = timeout.max(Duration::from_secs(1));
        conn.internal_command_timeout = timeout.max(Duration::from_secs(1));
        conn.max_command_attempts = 1;
        conn.tcp.nodelay = Some(true);
        // A connection with a command unanswered past the command timeout is never
        // trusted again: fred closes it and connects anew when nothing else was written
        // to it since; [`RedisStore::condemn`] covers a connection under steady load.
        conn.unresponsive = UnresponsiveConfig {
            max_timeout: Some(timeout),
            interval: (timeout / 2).max(Duration::from_millis(10)),
        };
    })
    .set_policy(ReconnectPolicy::new_exponential(0, 50, max_delay, 2));
    b
}

impl RedisStore {
    /// Creates the pool and starts connecting in the background (reconnecting forever).
    ///
    /// Must run inside the tokio runtime that will own the connections.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL cannot be parsed.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn connect(settings: &RedisSettings, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let mut config = fred_config(&settings.url, settings.ca_file.as_deref())?;
        // Keep reconnecting rather than failing start-up when Redis is briefly away:
        // /readyz reports the state and requests fail closed meanwhile.
        config.fail_fast = false;
        let nodes = config.server.is_clustered().then(|| {
            Arc::new(Nodes {
                config: config.clone(),
                settings: settings.clone(),
                clients: parking_lot::Mutex::new(HashMap::new()),
                count: AtomicUsize::new(0),
                last_used: AtomicU64::new(0),
            })
        });
        let direct = direct_reads(&config, settings);
        let sentinel = matches!(config.server, ServerConfig::Sentinel { .. });
        let pool = builder(config, settings)
            .build_pool(settings.pool_size.max(1))
            .map_err(|e| Error::Config(e.to_string()))?;
        if let Some(direct) = direct.as_ref().filter(|_| sentinel) {
            // Subscribed before connecting: the first primary found is not missed.
            for client in pool.clients() {
                follow_primary(client, direct);
            }
        }
        let _handles = pool.connect_pool();
        let forced = (0..pool.size()).map(|_| AtomicU64::new(0)).collect();
        Ok(Self {
            pool,
            forced,
            epoch: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
            nodes,
            direct,
            get_duration: metrics.redis_command_duration.with_label_values(&["GET"]),
            metrics,
        })
    }

    /// Waits until every pooled connection is up, or `within` elapses.
    ///
    /// # Errors
    /// [`Error::Store`] on timeout or connection failure.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), Error> {
        match tokio::time::timeout(within, self.pool.wait_for_connect()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(store_error("CONNECT", &e)),
            Err(_) => Err(Error::Store {
                op: "CONNECT",
                message: format!("not connected within {within:?}"),
                timeout: true,
            }),
        }
    }

    /// The underlying pool, for commands this store does not wrap.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether at least one pooled connection is up.
    pub fn is_connected(&self) -> bool {
        self.pool.clients().iter().any(|c| c.is_connected())
    }

    /// A connected pooled client, failing at once when there is none.
    fn client(&self, op: &'static str) -> Result<Picked, Error> {
        let client = self.pool.next_connected();
        if client.is_connected() {
            self.retire_nodes();
            let pooled = self
                .pool
                .clients()
                .iter()
                .position(|c| std::ptr::eq(c, client));
            Ok(Picked {
                client: client.clone(),
                pooled,
            })
        } else {
            // Fail at once rather than queue behind a reconnect: callers answer 503 or
            // fall back to the cache, and the connection task keeps reconnecting.
            self.count_error(op, "disconnected");
            Err(Error::Store {
                op,
                message: "not connected".into(),
                timeout: false,
            })
        }
    }

    /// [`client`](Self::client) for a command on `key`: in a cluster whose client is
    /// resynchronizing, a connected client of the key's primary instead.
    async fn client_for(&self, op: &'static str, key: &str) -> Result<Picked, Error> {
        let pooled = self.client(op);
        match &self.nodes {
            // Boxed: connecting a node client is a large future that every command's
            // own future would otherwise carry (and copy) on the common path.
            Some(nodes) if pooled.is_err() => Box::pin(self.node_for(nodes, key, pooled)).await,
            _ => pooled,
        }
    }

    /// A connected client of `key`'s primary, or `pooled` when there is none.
    async fn node_for(
        &self,
        nodes: &Nodes,
        key: &str,
        pooled: Result<Picked, Error>,
    ) -> Result<Picked, Error> {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let Some(server) = self
            .pool
            .next()
            .cached_cluster_state()
            .and_then(|state| state.get_server(slot).cloned())
        else {
            return pooled;
        };
        match self.node_client(nodes, &server).await {
            Some(client) => Ok(Picked {
                client,
                pooled: None,
            }),
            None => pooled,
        }
    }

    /// The connected node client of `server` (created and given up to `redis.timeout`
    /// to connect the first time), or `None`.
    async fn node_client(&self, nodes: &Nodes, server: &Server) -> Option<Client> {
        nodes.last_used.store(self.now_ms(), Ordering::Relaxed);
        let (client, fresh) = {
            let mut clients = nodes.clients.lock();
            match clients.get(server) {
                Some(c) => (c.clone(), false),
                None => {
                    let mut config = nodes.config.clone();
                    config.server = ServerConfig::Centralized {
                        server: server.clone(),
                    };
                    let client = builder(config, &nodes.settings).build().ok()?;
                    {
                        // The connection task lives on the store's runtime.
                        let _runtime = self.runtime.enter();
                        let _handle = client.connect();
                    }
                    clients.insert(server.clone(), client.clone());
                    nodes.count.store(clients.len(), Ordering::Relaxed);
                    (client, true)
                }
            }
        };
        if fresh {
            let _ = tokio::time::timeout(nodes.settings.timeout, client.wait_for_connect()).await;
        }
        client.is_connected().then_some(client)
    }

    /// Closes the node clients once the cluster client has served alone for
    /// [`NODES_IDLE`].
    fn retire_nodes(&self) {
        let Some(nodes) = &self.nodes else {
            return;
        };
        if nodes.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let idle = self
            .now_ms()
            .saturating_sub(nodes.last_used.load(Ordering::Relaxed));
        if u128::from(idle) < NODES_IDLE.as_millis() {
            return;
        }
        let retired: Vec<Client> = {
            let mut clients = nodes.clients.lock();
            nodes.count.store(0, Ordering::Relaxed);
            clients.drain().map(|(_, c)| c).collect()
        };
        self.runtime.spawn(async move {
            for client in retired {
                let _ = client.quit().await;
            }
        });
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A command sent at `started` on `picked` timed out: unless the client is already
    /// reconnecting, or was forced to since the command was sent, force it to reconnect
    /// now. Its connection is never trusted again.
    fn condemn(&self, picked: &Picked, started: Instant) {
        let Some(index) = picked.pooled else {
            // A node client: fred's unresponsive check replaces it; it is short-lived.
            return;
        };
        if !picked.client.is_connected() {
            return;
        }
        let Some(forced) = self.forced.get(index) else {
            return;
        };
        let sent = u64::try_from(started.duration_since(self.epoch).as_millis()).unwrap_or(0);
        let last = forced.load(Ordering::Acquire);
        if sent < last
            || forced
                .compare_exchange(
                    last,
                    self.now_ms().max(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
        {
            return;
        }
        let client = picked.client.clone();
        self.runtime.spawn(async move {
            let _ = client.force_reconnection().await;
        });
    }

    /// Counts a failed command in `sessiongate_redis_errors_total` and converts the error;
    /// a timeout condemns the connection the command was sent on.
    fn fail(
        &self,
        op: &'static str,
        e: &fred::error::Error,
        picked: &Picked,
        started: Instant,
    ) -> Error {
        let err = store_error(op, e);
        if matches!(err, Error::Store { timeout: true, .. }) {
            self.condemn(picked, started);
        }
        self.count_failed(op, &err);
        err
    }

    /// Counts `err`, a failed `op`, as a timeout or an error.
    fn count_failed(&self, op: &'static str, err: &Error) {
        let kind = match err {
            Error::Store { timeout: true, .. } => "timeout",
            _ => "error",
        };
        self.count_error(op, kind);
    }

    fn count_error(&self, op: &'static str, kind: &'static str) {
        self.metrics
            .redis_errors
            .with_label_values(&[op, kind])
            .inc();
    }

    fn observe(&self, op: &'static str, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        if op == "GET" {
            self.get_duration.observe(seconds);
        } else {
            self.metrics
                .redis_command_duration
                .with_label_values(&[op])
                .observe(seconds);
        }
    }

    /// A read of `key` on `picked` failed with `e`. In a cluster whose pooled client
    /// started resynchronizing while the read waited in its queue (a timeout, the client
    /// no longer connected), the read is tried once more on the key's primary; otherwise
    /// (and when the retry fails) the error is counted and returned.
    async fn retry_or_fail(
        &self,
        op: &'static str,
        key: &str,
        e: &fred::error::Error,
        picked: &Picked,
        started: Instant,
    ) -> Result<Picked, Error> {
        let stalled = self.nodes.is_some()
            && picked.pooled.is_some()
            && matches!(e.kind(), fred::error::ErrorKind::Timeout)
            && !picked.client.is_connected();
        let err = self.fail(op, e, picked, started);
        if stalled && let Ok(retry) = self.client_for(op, key).await {
            return Ok(Picked {
                pooled: None,
                ..retry
            });
        }
        Err(err)
    }

    /// `PING` through every known primary's node client; fine when any answers.
    async fn ping_nodes(&self, nodes: &Nodes) -> Result<(), Error> {
        let primaries = self
            .pool
            .next()
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default();
        for server in primaries {
            if let Some(client) = self.node_client(nodes, &server).await
                && client.ping::<String>(None).await.is_ok()
            {
                return Ok(());
            }
        }
        Err(Error::Store {
            op: "PING",
            message: "no cluster primary answers".into(),
            timeout: false,
        })
    }
}

/// The `SCAN MATCH` pattern of every key starting with `prefix`: its glob characters
/// escaped, then `*`.
fn glob_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

fn store_error(op: &'static str, e: &fred::error::Error) -> Error {
    Error::Store {
        op,
        message: e.to_string(),
        timeout: matches!(e.kind(), fred::error::ErrorKind::Timeout),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        if let Some(direct) = &self.direct {
            // fred's view of the server decides whether it is reachable: while its
            // connections are down a read fails at once, as through fred.
            self.client("GET")?;
            let started = Instant::now();
            let result = direct.get(key).await;
            match result {
                Ok(value) => {
                    self.observe("GET", started);
                    return Ok(value);
                }
                Err(direct::Failure::Busy) => {}
                Err(failure) => {
                    self.observe("GET", started);
                    let (message, timeout) = match failure {
                        direct::Failure::Error(why) => (why, false),
                        _ => ("timed out".to_owned(), true),
                    };
                    let err = Error::Store {
                        op: "GET",
                        message,
                        timeout,
                    };
                    self.count_failed("GET", &err);
                    return Err(err);
                }
            }
        }
        let mut picked = self.client_for("GET", key).await?;
        loop {
            let started = Instant::now();
            let result = picked.client.get::<Option<Bytes>, _>(key).await;
            self.observe("GET", started);
            match result {
                Ok(value) => return Ok(value),
                Err(e) => picked = self.retry_or_fail("GET", key, &e, &picked, started).await?,
            }
        }
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Option<Duration>)>, Error> {
        let mut picked = self.client_for("GET", key).await?;
        let (value, pttl) = loop {
            let started = Instant::now();
            // One round trip: GET and PTTL pipelined on the same connection.
            let pipeline = picked.client.pipeline();
            let queued: Result<(), _> = pipeline.get::<(), _>(key).await;
            let queued = queued.and(pipeline.pttl::<(), _>(key).await);
            let result = match queued {
                Ok(()) => pipeline.all::<(Option<Bytes>, i64)>().await,
                Err(e) => Err(e),
            };
            self.observe("GET", started);
            match result {
                Ok(read) => break read,
                Err(e) => picked = self.retry_or_fail("GET", key, &e, &picked, started).await?,
            }
        };
        Ok(value.map(|v| {
            // -1: no expiry. -2: the key expired between the two commands; trust it for
            // no time at all.
            let ttl = match pttl {
                -1 => None,
                ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            };
            (v, ttl)
        }))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let picked = self.client("SET")?;
        let client = &picked.client;
        let started = Instant::now();
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let result = client
            .set::<(), _, _>(
                key,
                Bytes::copy_from_slice(value),
                Some(Expiration::EX(secs)),
                None,
                false,
            )
            .await;
        self.observe("SET", started);
        result.map_err(|e| self.fail("SET", &e, &picked, started))
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let picked = self.client("DEL")?;
        let client = &picked.client;
        let started = Instant::now();
        let result = client.del::<i64, _>(key).await;
        self.observe("DEL", started);
        result
            .map(|n| n > 0)
            .map_err(|e| self.fail("DEL", &e, &picked, started))
    }

    async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), Error> {
        let picked = self.client("SADD")?;
        let client = &picked.client;
        let started = Instant::now();
        let added = client.sadd::<i64, _, _>(index, member).await;
        self.observe("SADD", started);
        added.map_err(|e| self.fail("SADD", &e, &picked, started))?;
        // Keep the index at least as long as its longest session. `GT` only extends.
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let extended = client
            .expire::<i64, _>(index, secs, Some(fred::types::ExpireOptions::GT))
            .await;
        // EXPIRE ... GT does not set a TTL on a key without one; set it plainly then.
        if matches!(extended, Ok(0)) {
            let _ = client
                .expire::<i64, _>(index, secs, Some(fred::types::ExpireOptions::NX))
                .await;
        }
        Ok(())
    }

    async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        let picked = self.client("SMEMBERS")?;
        let client = &picked.client;
        let started = Instant::now();
        let members = client.smembers::<Vec<String>, _>(index).await;
        self.observe("SMEMBERS", started);
        members.map_err(|e| self.fail("SMEMBERS", &e, &picked, started))
    }

    async fn index_remove(&self, index: &str, members: &[String]) -> Result<(), Error> {
        if members.is_empty() {
            return Ok(());
        }
        let picked = self.client("SREM")?;
        let client = &picked.client;
        let started = Instant::now();
        let removed = client.srem::<i64, _, _>(index, members.to_vec()).await;
        self.observe("SREM", started);
        removed
            .map(|_| ())
            .map_err(|e| self.fail("SREM", &e, &picked, started))
    }

    fn scan<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<Vec<String>, Error>> {
        let picked = match self.client("SCAN") {
            Ok(picked) => picked,
            Err(e) => return Box::pin(futures::stream::once(async { Err(e) })),
        };
        let client = picked.client.clone();
        let started = Instant::now();
        let pattern = glob_prefix(prefix);
        // Every primary of a cluster; pages of about 1,000 keys. Dropping a page asks for
        // the next one.
        let pages = if client.is_clustered() {
            client.scan_cluster(pattern, Some(1000), None).boxed()
        } else {
            client.scan(pattern, Some(1000), None).boxed()
        };
        Box::pin(pages.map(move |page| {
            use fred::types::scan::Scanner as _;
            let mut page = page.map_err(|e| self.fail("SCAN", &e, &picked, started))?;
            Ok(page
                .take_results()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|k| k.into_string())
                .collect())
        }))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let picked = self.client("GET")?;
        let client = &picked.client;
        let started = Instant::now();
        // One pipeline of GETs rather than MGET: in a cluster the keys of a page may live
        // in different slots.
        let pipeline = client.pipeline();
        let mut queued = Ok(());
        for key in keys {
            queued = queued.and(pipeline.get::<(), _>(key.as_str()).await);
        }
        let result = match queued {
            Ok(()) => pipeline.all::<Vec<Option<Bytes>>>().await,
            Err(e) => Err(e),
        };
        self.observe("GET", started);
        result.map_err(|e| self.fail("GET", &e, &picked, started))
    }

    async fn unlink(&self, keys: &[String]) -> Result<usize, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let picked = self.client("UNLINK")?;
        let client = &picked.client;
        let started = Instant::now();
        let pipeline = client.pipeline();
        let mut queued = Ok(());
        for key in keys {
            queued = queued.and(pipeline.unlink::<(), _>(key.as_str()).await);
        }
        let result = match queued {
            Ok(()) => pipeline.all::<Vec<i64>>().await,
            Err(e) => Err(e),
        };
        self.observe("UNLINK", started);
        let counts = result.map_err(|e| self.fail("UNLINK", &e, &picked, started))?;
        Ok(counts.into_iter().filter(|n| *n > 0).count())
    }

    async fn ping(&self) -> Result<(), Error> {
        let picked = match (self.client("PING"), &self.nodes) {
            (Ok(picked), _) => picked,
            // A cluster resynchronizing: ready while any primary answers (the other
            // replicas could not serve the keys of a primary that does not either).
            (Err(_), Some(nodes)) => return self.ping_nodes(nodes).await,
            (Err(e), None) => return Err(e),
        };
        let client = &picked.client;
        let started = Instant::now();
        let result = client.ping::<String>(None).await;
        self.observe("PING", started);
        result
            .map(|_| ())
            .map_err(|e| self.fail("PING", &e, &picked, started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(url: &str, ca_file: Option<&Path>) -> String {
        match fred_config(url, ca_file) {
            Err(Error::Config(message)) => message,
            Err(other) => panic!("{url}: not a config error: {other}"),
            Ok(_) => panic!("{url} with {ca_file:?} was accepted"),
        }
    }

    #[test]
    fn scan_patterns_escape_the_prefix() {
        assert_eq!(glob_prefix("sess:"), "sess:*");
        assert_eq!(
            glob_prefix(":1:django.contrib.sessions.cache"),
            ":1:django.contrib.sessions.cache*"
        );
        assert_eq!(glob_prefix("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:*");
    }

    #[test]
    fn plain_urls_have_no_tls_and_refuse_a_ca_file() {
        let config = fred_config("redis://127.0.0.1:6379/0", None).unwrap();
        assert!(config.tls.is_none());
        let message = config_error("redis://127.0.0.1:6379/0", Some(Path::new("/ca.pem")));
        assert!(message.contains("only to rediss://"), "{message}");
    }

    #[test]
    fn sentinels_use_their_own_credentials_or_the_servers() {
        let sentinel_auth = |url: &str| match fred_config(url, None).unwrap().server {
            ServerConfig::Sentinel {
                username, password, ..
            } => (username, password),
            other => panic!("{url}: not a sentinel config: {other:?}"),
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            sentinel_auth("redis-sentinel://app:pw@s1:26379/0?sentinelServiceName=m"),
            (some("app"), some("pw"))
        );
        assert_eq!(
            sentinel_auth(
                "redis-sentinel://app:pw@s1/0?sentinelServiceName=m\
                 &sentinelUsername=watch&sentinelPassword=spw"
            ),
            (some("watch"), some("spw"))
        );
        assert_eq!(
            sentinel_auth("redis-sentinel://s1/0?sentinelServiceName=m&sentinelPassword=spw"),
            (None, some("spw"))
        );
        assert_eq!(
            sentinel_auth("redis-sentinel://s1/0?sentinelServiceName=m"),
            (None, None)
        );
    }

    #[test]
    fn a_bad_ca_file_is_a_config_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("sg-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let cases = [
            (dir.join("missing.pem"), "cannot read"),
            (empty, "no certificate"),
        ];
        for (path, why) in &cases {
            for url in ["rediss://h:6380/0", "rediss-cluster://h:6380"] {
                let message = config_error(url, Some(path));
                assert!(message.contains(why), "{url}: {message}");
                assert!(message.contains(&path.display().to_string()), "{message}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
