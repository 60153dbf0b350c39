//! The Redis session store, over a pooled `fred` client.
//!
//! Build it on the tokio runtime it will live on: fred spawns its connection tasks on
//! the current runtime. Commands can then be sent from any runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::{
    Builder, ClientLike, Config, Expiration, KeysInterface, Pool, ReconnectPolicy, SetsInterface,
};

use super::SessionStore;
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
}

/// A [`SessionStore`] backed by a fred connection pool.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// Creates the pool and starts connecting in the background (reconnecting forever).
    ///
    /// Must run inside the tokio runtime that will own the connections.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL cannot be parsed.
    pub fn connect(settings: &RedisSettings, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let mut config =
            Config::from_url(&settings.url).map_err(|e| Error::Config(e.to_string()))?;
        // Keep reconnecting rather than failing start-up when Redis is briefly away:
        // /readyz reports the state and requests fail closed meanwhile.
        config.fail_fast = false;
        let pool = Builder::from_config(config)
            .with_performance_config(|perf| {
                perf.default_command_timeout = settings.timeout;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = settings.timeout.max(Duration::from_secs(1));
                conn.internal_command_timeout = settings.timeout.max(Duration::from_secs(1));
                conn.max_command_attempts = 1;
                conn.tcp.nodelay = Some(true);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build_pool(settings.pool_size.max(1))
            .map_err(|e| Error::Config(e.to_string()))?;
        let _handles = pool.connect_pool();
        Ok(Self { pool, metrics })
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

    fn client(&self, op: &'static str) -> Result<&fred::prelude::Client, Error> {
        let client = self.pool.next_connected();
        if client.is_connected() {
            Ok(client)
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

    /// Counts a failed command in `sessiongate_redis_errors_total` and converts the error.
    fn fail(&self, op: &'static str, e: &fred::error::Error) -> Error {
        let err = store_error(op, e);
        let kind = match &err {
            Error::Store { timeout: true, .. } => "timeout",
            _ => "error",
        };
        self.count_error(op, kind);
        err
    }

    fn count_error(&self, op: &'static str, kind: &'static str) {
        self.metrics
            .redis_errors
            .with_label_values(&[op, kind])
            .inc();
    }

    fn observe(&self, op: &'static str, started: Instant) {
        self.metrics
            .redis_command_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }
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
        let client = self.client("GET")?;
        let started = Instant::now();
        let result = client.get::<Option<Bytes>, _>(key).await;
        self.observe("GET", started);
        result.map_err(|e| self.fail("GET", &e))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let client = self.client("SET")?;
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
        result.map_err(|e| self.fail("SET", &e))
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let client = self.client("DEL")?;
        let started = Instant::now();
        let result = client.del::<i64, _>(key).await;
        self.observe("DEL", started);
        result.map(|n| n > 0).map_err(|e| self.fail("DEL", &e))
    }

    async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), Error> {
        let client = self.client("SADD")?;
        let started = Instant::now();
        let added = client.sadd::<i64, _, _>(index, member).await;
        self.observe("SADD", started);
        added.map_err(|e| self.fail("SADD", &e))?;
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

    async fn index_take(&self, index: &str) -> Result<Vec<String>, Error> {
        let client = self.client("SMEMBERS")?;
        let started = Instant::now();
        let members = client.smembers::<Vec<String>, _>(index).await;
        self.observe("SMEMBERS", started);
        let members = members.map_err(|e| self.fail("SMEMBERS", &e))?;
        client
            .del::<i64, _>(index)
            .await
            .map_err(|e| self.fail("DEL", &e))?;
        Ok(members)
    }

    async fn ping(&self) -> Result<(), Error> {
        let client = self.client("PING")?;
        let started = Instant::now();
        let result = client.ping::<String>(None).await;
        self.observe("PING", started);
        result.map(|_| ()).map_err(|e| self.fail("PING", &e))
    }
}
