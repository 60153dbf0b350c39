//! The Redis session store, over a pooled `fred` client.
//!
//! Build it on the tokio runtime it will live on: fred spawns its connection tasks on
//! the current runtime. Commands can then be sent from any runtime.
//!
//! For `rediss://` URLs [`fred_config`] builds the TLS client itself: it trusts the CA
//! file of the settings (a private CA, as most managed and in-cluster Redis TLS uses)
//! or else the system's roots, and it names its crypto provider explicitly rather than
//! depend on a process-wide default.

use std::path::{Path, PathBuf};
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
}

impl RedisStore {
    /// Creates the pool and starts connecting in the background (reconnecting forever).
    ///
    /// Must run inside the tokio runtime that will own the connections.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL cannot be parsed.
    pub fn connect(settings: &RedisSettings, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let mut config = fred_config(&settings.url, settings.ca_file.as_deref())?;
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

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Option<Duration>)>, Error> {
        let client = self.client("GET")?;
        let started = Instant::now();
        // One round trip: GET and PTTL pipelined on the same connection.
        let pipeline = client.pipeline();
        let queued: Result<(), _> = pipeline.get::<(), _>(key).await;
        let queued = queued.and(pipeline.pttl::<(), _>(key).await);
        let result = match queued {
            Ok(()) => pipeline.all::<(Option<Bytes>, i64)>().await,
            Err(e) => Err(e),
        };
        self.observe("GET", started);
        let (value, pttl) = result.map_err(|e| self.fail("GET", &e))?;
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

    async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        let client = self.client("SMEMBERS")?;
        let started = Instant::now();
        let members = client.smembers::<Vec<String>, _>(index).await;
        self.observe("SMEMBERS", started);
        members.map_err(|e| self.fail("SMEMBERS", &e))
    }

    async fn index_remove(&self, index: &str, members: &[String]) -> Result<(), Error> {
        if members.is_empty() {
            return Ok(());
        }
        let client = self.client("SREM")?;
        let started = Instant::now();
        let removed = client.srem::<i64, _, _>(index, members.to_vec()).await;
        self.observe("SREM", started);
        removed.map(|_| ()).map_err(|e| self.fail("SREM", &e))
    }

    async fn ping(&self) -> Result<(), Error> {
        let client = self.client("PING")?;
        let started = Instant::now();
        let result = client.ping::<String>(None).await;
        self.observe("PING", started);
        result.map(|_| ()).map_err(|e| self.fail("PING", &e))
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
    fn plain_urls_have_no_tls_and_refuse_a_ca_file() {
        let config = fred_config("redis://127.0.0.1:6379/0", None).unwrap();
        assert!(config.tls.is_none());
        let message = config_error("redis://127.0.0.1:6379/0", Some(Path::new("/ca.pem")));
        assert!(message.contains("only to rediss://"), "{message}");
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
