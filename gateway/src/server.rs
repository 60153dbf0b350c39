//! Assembling the process: the background runtime (Redis connections), the keyring,
//! the exchange, and the Pingora server with its proxy, admin and key-refresh services.
//!
//! fred's connection tasks live on a dedicated background tokio runtime created here,
//! before Pingora starts its own per-service runtimes; requests on Pingora's runtimes
//! send commands to those tasks over channels. The keyring is loaded (and a first key
//! created if needed) before any listener opens, so the proxy never serves keyless.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use exchange::cache::CacheLimits;
use exchange::format::{Claim, Field, Fields, FormatSettings, Secret};
use exchange::store::SessionStore;
use exchange::store::memory::MemoryStore;
use exchange::store::redis::{RedisSettings, RedisStore};
use exchange::{Exchange, Minter, SessionSettings};
use keys::{KeyManager, KeySet, KeyStore, Keyring, RotationPolicy};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use prometheus::Registry;
use tracing::{error, info, warn};

use crate::admin::Admin;
use crate::config::{Config, KeyStoreConfig, SessionFormat};
use crate::metrics::Metrics;
use crate::proxy::{Gateway, ProxySettings};
use crate::route::RouteTable;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The background runtime could not be created.
    #[error("cannot start the background runtime")]
    Runtime(#[source] std::io::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    /// The session store could not be configured.
    #[error("session store")]
    Store(#[from] exchange::Error),
    /// The keyring could not be loaded or initialised.
    #[error("keyring")]
    Keys(#[from] keys::Error),
    /// A route could not be built.
    #[error("routes")]
    Route(#[from] crate::route::RouteError),
    /// A secret the config names in the environment is missing or unusable.
    #[error("{0}")]
    Secret(String),
    /// A listener could not be set up.
    #[error("listener {addr}: {message}")]
    Listener {
        /// The address.
        addr: String,
        /// What went wrong.
        message: String,
    },
}

/// Which session store to use.
pub enum SessionBackend {
    /// Redis, from `[redis]` in the config.
    Redis,
    /// An in-process store (for `sessiongate dev`).
    Memory(Arc<MemoryStore>),
}

/// A fully assembled gateway, ready to run.
pub struct Assembly {
    /// The Pingora server with every service added.
    pub server: Server,
    /// The runtime that owns Redis connections and start-up work.
    pub background: tokio::runtime::Runtime,
    /// The revocation push channel, when enabled.
    pub push: Option<exchange::push::Push>,
    /// The exchange (for `dev` to create its demo session).
    pub exchange: Arc<Exchange>,
    /// The keyring manager.
    pub keys: Arc<KeyManager>,
    /// Handles for swapping routes and settings on reload.
    pub gateway: GatewayHandles,
}

/// The swappable parts of a running gateway.
#[derive(Clone)]
pub struct GatewayHandles {
    /// The route table.
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// The per-request settings.
    pub settings: Arc<ArcSwap<ProxySettings>>,
}

/// The rotation policy a config implies.
pub fn rotation_policy(config: &Config) -> RotationPolicy {
    let longest_ttl = config
        .routes
        .iter()
        .map(|r| r.token_ttl)
        .chain(std::iter::once(config.token.ttl))
        .max()
        .unwrap_or(config.token.ttl);
    RotationPolicy {
        algorithm: algorithm(config),
        rotate_every: config.keys.rotate_every,
        publish_ahead: config.keys.publish_ahead,
        retain_after: longest_ttl + config.keys.clock_skew,
    }
}

/// The signing algorithm of a config.
pub fn algorithm(config: &Config) -> keys::Algorithm {
    match config.token.algorithm {
        crate::config::Algorithm::Es256 => keys::Algorithm::Es256,
        crate::config::Algorithm::EdDsa => keys::Algorithm::EdDsa,
    }
}

/// The session format a config names, with express's cookie secrets read from the
/// environment variable `session.secrets_env` (one secret, or a JSON array of secrets,
/// newest first).
///
/// # Errors
/// [`StartError::Secret`] naming the variable when it is missing, empty, or not a
/// non-empty array of non-empty strings.
pub fn format_settings(config: &Config) -> Result<FormatSettings, StartError> {
    Ok(match config.session.format {
        SessionFormat::Sessiongate => FormatSettings::Sessiongate {
            hashed_keys: config.session.hashed_keys,
        },
        SessionFormat::Django => FormatSettings::Django,
        SessionFormat::Express => {
            let name = config.session.secrets_env.as_deref().unwrap_or_default();
            let value = std::env::var(name).unwrap_or_default();
            FormatSettings::Express {
                secrets: express_secrets(name, &value)?,
            }
        }
    })
}

/// Parses the value of `session.secrets_env`: a JSON array of strings, or one secret.
fn express_secrets(name: &str, value: &str) -> Result<Vec<Secret>, StartError> {
    let missing = || {
        StartError::Secret(format!(
            "session.format = \"express\" needs the cookie-signing secret(s) in the environment variable {name} (one secret, or a JSON array of secrets, newest first); it is not set or empty"
        ))
    };
    if value.trim().is_empty() {
        return Err(missing());
    }
    if value.trim_start().starts_with('[') {
        let list: Vec<String> = serde_json::from_str(value).map_err(|_| {
            StartError::Secret(format!(
                "the environment variable {name} starts with '[' but is not a JSON array of strings"
            ))
        })?;
        if list.is_empty() || list.iter().any(String::is_empty) {
            return Err(StartError::Secret(format!(
                "the environment variable {name} must list at least one secret, none of them empty"
            )));
        }
        return Ok(list.iter().map(Secret::new).collect());
    }
    Ok(vec![Secret::new(value)])
}

/// The exchange crate's session settings from a config, in `format`.
///
/// # Errors
/// Never for a validated config (its fields are checked pointers).
pub fn session_settings(config: &Config, format: FormatSettings) -> SessionSettings {
    let field = |pointer: &str| {
        Field::parse(pointer)
            .unwrap_or_else(|_| Field::parse("/").unwrap_or_else(|e| unreachable!("{e}")))
    };
    let s = &config.session;
    SessionSettings {
        format,
        cookie: s.cookie.clone(),
        key_prefix: s.key_prefix.clone(),
        own_prefix: config.keys.redis_prefix.clone(),
        fields: Fields {
            subject: field(&s.subject_field),
            claims: s
                .claims
                .iter()
                .map(|c| Claim {
                    name: c.name.clone(),
                    field: field(&c.pointer),
                })
                .collect(),
        },
        cache: CacheLimits {
            ttl: s.cache_ttl,
            negative_ttl: s.negative_cache_ttl,
            max_entries: s.cache_max_entries,
            max_bytes: s.cache_max_bytes,
            token_max_bytes: s.token_cache_max_bytes,
            negative_max_entries: CacheLimits::negative_bound(s.cache_max_entries),
        },
        stream_recheck: s.stream_recheck,
    }
}

/// The Redis settings of a config.
pub fn redis_settings(config: &Config) -> RedisSettings {
    RedisSettings {
        url: config.redis.url.clone(),
        timeout: config.redis.timeout,
        pool_size: config.redis.pool_size,
        ca_file: config.redis.ca_file.clone(),
    }
}

/// Builds the key store a config names. A Redis keyring left under the session prefix
/// by an older release is moved to `keys.redis_prefix` first (once).
///
/// # Errors
/// [`StartError`] when the store cannot be opened or the KEK is missing.
pub async fn key_store(
    config: &Config,
    redis: Option<&RedisStore>,
) -> Result<Arc<dyn KeyStore>, StartError> {
    match &config.keys.store {
        KeyStoreConfig::File { dir } => Ok(Arc::new(keys::FileStore::new(dir.clone()))),
        KeyStoreConfig::Redis => {
            let redis = redis.ok_or_else(|| StartError::Listener {
                addr: crate::config::redact_url(&config.redis.url).into_owned(),
                message: "keys.store = \"redis\" needs the Redis session store".into(),
            })?;
            let kek = crate::keystore::kek_from_env(&config.keys.kek_env)?;
            let store = crate::keystore::redis_key_store(redis, &config.keys.redis_prefix, kek);
            let moved = store.migrate_from(&config.session.key_prefix).await?;
            if moved > 0 {
                info!(
                    records = moved,
                    from = %config.session.key_prefix,
                    to = %config.keys.redis_prefix,
                    "Moved the keyring to keys.redis_prefix; the old keys stay for older replicas (docs/redis-schema.md)."
                );
            }
            Ok(Arc::new(store))
        }
    }
}

/// A private background runtime for Redis connections and start-up work.
///
/// # Errors
/// When the OS refuses to create threads.
pub fn background_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sessiongate-bg")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

/// Assembles everything `config` describes. With `config_path`, SIGHUP reloads it.
///
/// # Errors
/// [`StartError`] naming what could not be set up.
pub fn assemble(
    config: &Config,
    config_path: Option<&std::path::Path>,
    sessions: SessionBackend,
    upgrade: bool,
) -> Result<Assembly, StartError> {
    keys::install_crypto_provider();
    // Fails at once, naming the variable, when express's secrets are missing.
    let format = format_settings(config)?;
    if !upgrade {
        // Pingora retries a busy port for 30 s and then panics in a service thread while
        // the process lives on without a proxy listener. Check both addresses first and
        // fail start-up (exit 1) instead. With --upgrade the sockets come from the old
        // process, which still holds them.
        for addr in [config.server.listen, config.server.admin_listen] {
            std::net::TcpListener::bind(addr).map_err(|e| StartError::Listener {
                addr: addr.to_string(),
                message: e.to_string(),
            })?;
        }
    }
    let registry = Registry::new();
    let metrics = Arc::new(Metrics::register(&registry)?);
    let exchange_metrics = Arc::new(exchange::Metrics::register(&registry)?);
    let reload_metrics = crate::reload::ReloadMetrics::register(&registry)?;
    let cert_reloads = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "sessiongate_tls_cert_reloads_total",
            "Reloads of the proxy listener's TLS certificate, by result.",
        ),
        &["result"],
    )?;
    registry.register(Box::new(cert_reloads.clone()))?;
    let background = background_runtime()?;

    let (store, redis): (Arc<dyn SessionStore>, Option<RedisStore>) = match sessions {
        SessionBackend::Redis => {
            let redis = background.block_on(async {
                let store = RedisStore::connect(&redis_settings(config), exchange_metrics.clone())?;
                if let Err(e) = store.wait_connected(Duration::from_secs(5)).await {
                    warn!(error = %e, "Redis is not reachable yet; starting unready and reconnecting.");
                }
                Ok::<_, exchange::Error>(store)
            })?;
            (Arc::new(redis.clone()), Some(redis))
        }
        SessionBackend::Memory(store) => (store, None),
    };

    let policy = rotation_policy(config);
    let keyring = Arc::new(Keyring::new(KeySet::empty()));
    let manager = Arc::new(KeyManager::new(
        background.block_on(key_store(config, redis.as_ref()))?,
        keyring.clone(),
        policy,
    ));
    let outcome = background.block_on(manager.refresh(keys::unix_now()))?;
    for kid in &outcome.created {
        info!(kid = %kid, "Created signing key.");
    }
    metrics.observe_keys(&keyring.load(), keys::unix_now());
    metrics
        .key_rotation_interval
        .set(i64::try_from(config.keys.rotate_every.as_secs()).unwrap_or(i64::MAX));

    let minter = Minter::new(
        keyring.clone(),
        &config.token.issuer,
        exchange_metrics.clone(),
    )
    .framed(crate::http::BEARER);
    let exchange = Arc::new(Exchange::new(
        store.clone(),
        session_settings(config, format),
        minter,
        exchange_metrics,
    ));
    registry.register(Box::new(exchange::metrics::CacheSize::new(
        exchange.shared_cache(),
    )))?;
    let push = match (
        &redis,
        config.session.push_invalidation && config.session.cache_ttl > Duration::ZERO,
    ) {
        (Some(_), true) => {
            let settings = exchange::push::PushSettings {
                url: config.redis.url.clone(),
                keyspace: exchange.keyspace(),
                timeout: config.redis.timeout,
                ca_file: config.redis.ca_file.clone(),
            };
            let cache: Arc<dyn exchange::push::Invalidate> = exchange.shared_cache();
            let metrics = exchange.metrics().clone();
            metrics.push_enabled.set(1);
            Some(
                background
                    .block_on(async { exchange::push::Push::start(settings, cache, metrics) })?,
            )
        }
        _ => None,
    };
    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::build(
        &config.routes,
        &metrics,
    )?));
    let settings = Arc::new(ArcSwap::from_pointee(ProxySettings::from_config(config)));
    let gateway = Gateway {
        routes: routes.clone(),
        settings: settings.clone(),
        exchange: exchange.clone(),
        metrics: metrics.clone(),
        request_ids: crate::http::forwarding::RequestIds::default(),
        tunnels: crate::tunnel::connector(),
    };

    // SIGHUP also re-reads the TLS certificate (when there is one).
    let cert_check = Arc::new(tokio::sync::Notify::new());
    if let Some(path) = config_path {
        let reloader = Arc::new(crate::reload::Reloader::new(
            path.to_path_buf(),
            config.clone(),
            GatewayHandles {
                routes: routes.clone(),
                settings: settings.clone(),
            },
            exchange.clone(),
            metrics.clone(),
            reload_metrics,
        ));
        // Registering the handler here also replaces SIGHUP's default action (exit).
        let mut hangups = background
            .block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            })
            .map_err(StartError::Runtime)?;
        let cert_check = cert_check.clone();
        background.spawn(async move {
            while hangups.recv().await.is_some() {
                let reloader = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                cert_check.notify_one();
            }
        });
    }

    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.grace_period.as_secs().max(1)),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: std::env::temp_dir()
            .join(format!("sessiongate-{}.pid", std::process::id()))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "sessiongate proxy",
    );
    let listen = config.server.listen.to_string();
    match &config.server.tls {
        Some(tls) => {
            let resolver = Arc::new(crate::tls::CertReloader::load(&tls.cert, &tls.key).map_err(
                |e| StartError::Listener {
                    addr: listen.clone(),
                    message: e.to_string(),
                },
            )?);
            let mut settings =
                pingora::listeners::tls::TlsSettings::intermediate("", "").map_err(|e| {
                    StartError::Listener {
                        addr: listen.clone(),
                        message: e.to_string(),
                    }
                })?;
            settings.set_cert_resolver(resolver.clone());
            settings.enable_h2();
            proxy.add_tls_with_settings(&listen, None, settings);
            let reloads = cert_reloads;
            background.spawn(async move {
                loop {
                    let forced = tokio::select! {
                        () = tokio::time::sleep(crate::tls::CHECK_EVERY) => false,
                        () = cert_check.notified() => true,
                    };
                    let r = resolver.clone();
                    let check = move || {
                        if forced {
                            r.reload().map(|()| true)
                        } else {
                            r.reload_if_changed()
                        }
                    };
                    match tokio::task::spawn_blocking(check).await {
                        Ok(Ok(true)) => {
                            reloads.with_label_values(&["ok"]).inc();
                            info!("TLS certificate reloaded.");
                        }
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => {
                            reloads.with_label_values(&["error"]).inc();
                            error!(error = %e, "TLS certificate reload failed; keeping the current certificate.");
                        }
                        Err(_) => break,
                    }
                }
            });
        }
        None => proxy.add_tcp(&listen),
    }

    let admin = Admin {
        registry,
        metrics: metrics.clone(),
        keyring,
        store,
        ready_timeout: config.redis.timeout.max(Duration::from_millis(100)) * 4,
        jwks_max_age: crate::jwks::max_age(config.keys.publish_ahead),
        proxy_listener: crate::admin::ListenerProbe::new(config.server.listen),
    };
    let mut admin_service = Service::new("sessiongate admin".to_owned(), admin);
    admin_service.add_tcp(&config.server.admin_listen.to_string());
    admin_service.threads = Some(1);

    let refresher = background_service(
        "sessiongate keyring",
        KeyRefresher {
            manager: manager.clone(),
            metrics,
            first_due: outcome.next_due,
        },
    );
    let refresher_handle = server.add_service(refresher);
    let proxy_handle = server.add_service(proxy);
    proxy_handle.add_dependency(&refresher_handle);
    server.add_service(admin_service);

    Ok(Assembly {
        server,
        background,
        push,
        exchange,
        keys: manager,
        gateway: GatewayHandles { routes, settings },
    })
}

/// Runs an assembled gateway until a shutdown signal (SIGINT fast, SIGTERM graceful,
/// SIGQUIT graceful upgrade), then stops the background runtime.
pub fn run(assembly: Assembly) {
    let Assembly {
        server, background, ..
    } = assembly;
    server.run(RunArgs::default());
    background.shutdown_timeout(Duration::from_secs(2));
}

/// Keeps the keyring current: applies the rotation plan when due and picks up changes
/// made by other replicas or by hand (the store's version changes).
///
/// It wakes every [`KEY_POLL`] to compare the store's version with the one seen before
/// its last successful refresh, and exactly at the instant the last refresh said the
/// next change is due (a key activating, a previous key expiring, a rotation), so
/// replicas whose clocks agree switch keys together and race for the rotation lease
/// together. A failed refresh keeps the current keys, is counted in
/// `sessiongate_key_rotation_failures_total`, and is retried with a backoff from
/// [`RETRY_MIN`] to [`RETRY_MAX`] (at once when the store's version changes again).
struct KeyRefresher {
    manager: Arc<KeyManager>,
    metrics: Arc<Metrics>,
    /// When the start-up refresh said to refresh next.
    first_due: Option<u64>,
}

/// How often the key store's version is polled for changes made elsewhere: the bound on
/// how long a replica takes to see another replica's rotation or a `keys` command.
pub const KEY_POLL: Duration = Duration::from_millis(250);

/// The first retry delay after a failed keyring refresh.
pub const RETRY_MIN: Duration = Duration::from_secs(1);

/// The longest retry delay after repeated keyring refresh failures.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long to sleep from now until `due` (Unix seconds), at most `cap`.
fn until_due(due: Option<u64>, cap: Duration) -> Duration {
    let Some(due) = due else {
        return cap;
    };
    let at = std::time::UNIX_EPOCH + Duration::from_secs(due);
    at.duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .min(cap)
}

/// How long the refresher sleeps: until the next due instant, at most [`KEY_POLL`]; while
/// backing off after a failure, until the retry, at most [`KEY_POLL`] (the version is
/// still polled), so a due instant that has passed never makes it spin.
fn sleep_for(until_due: Duration, retry_in: Option<Duration>) -> Duration {
    retry_in.unwrap_or(until_due).min(KEY_POLL)
}

#[async_trait]
impl BackgroundService for KeyRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let store = self.manager.store().clone();
        let mut seen = store.version().await.ok();
        let mut next_due = self.first_due;
        // After a failure: when to retry, the delay, and the version at the failure.
        let mut retry: Option<(tokio::time::Instant, Duration, Option<String>)> = None;
        loop {
            let retry_in = retry
                .as_ref()
                .map(|(at, _, _)| at.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = shutdown.changed() => break,
                () = tokio::time::sleep(sleep_for(until_due(next_due, KEY_POLL), retry_in)) => {}
            }
            let now = keys::unix_now();
            // Read before refreshing, so a change landing during the refresh is seen
            // on the next tick rather than hidden.
            let version = store.version().await.ok();
            let changed = version.is_some() && version != seen;
            let due = next_due.is_some_and(|t| now >= t);
            if !changed && !due {
                continue;
            }
            if let Some((at, _, failed_at)) = &retry
                && *failed_at == version
                && tokio::time::Instant::now() < *at
            {
                continue;
            }
            match self.manager.refresh(now).await {
                Ok(outcome) => {
                    for kid in &outcome.created {
                        info!(kid = %kid, "Created signing key.");
                    }
                    for kid in &outcome.removed {
                        info!(kid = %kid, "Removed signing key.");
                    }
                    next_due = outcome.next_due;
                    seen = version;
                    retry = None;
                    self.metrics
                        .observe_keys(&self.manager.keyring().load(), now);
                }
                Err(e) => {
                    self.metrics.key_rotation_failures.inc();
                    let delay = retry
                        .as_ref()
                        .map_or(RETRY_MIN, |(_, d, _)| (*d * 2).min(RETRY_MAX));
                    // `seen` stays as it was, so the change is retried; a further change
                    // retries before the delay is up.
                    retry = Some((tokio::time::Instant::now() + delay, delay, version));
                    error!(error = %e, kind = e.kind(), retry_in = ?delay, "Keyring refresh failed; keeping the current keys.");
                    // What can still be learned: a key retired elsewhere stops signing
                    // and is unpublished here too.
                    match self.manager.drop_retired_elsewhere(now).await {
                        Ok(dropped) if !dropped.is_empty() => {
                            for kid in &dropped {
                                warn!(kid = %kid, "A key was retired by another replica or an operator; stopped using it although the keyring cannot be refreshed.");
                            }
                            self.metrics
                                .observe_keys(&self.manager.keyring().load(), now);
                        }
                        Ok(_) | Err(_) => {}
                    }
                }
            }
        }
    }
}

/// The default upgrade socket path.
pub fn default_upgrade_sock() -> PathBuf {
    PathBuf::from("/tmp/sessiongate-upgrade.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresher_sleeps() {
        let ms = Duration::from_millis;
        let cases = [
            // (until due, retry in, sleep)
            (ms(100), None, ms(100)),
            (Duration::from_secs(60), None, KEY_POLL),
            (Duration::ZERO, None, Duration::ZERO),
            // Backing off after a failure while the due instant has passed: no spinning.
            (Duration::ZERO, Some(Duration::from_secs(8)), KEY_POLL),
            (Duration::ZERO, Some(ms(40)), ms(40)),
            (ms(10), Some(Duration::ZERO), Duration::ZERO),
        ];
        for (due, retry, expected) in cases {
            assert_eq!(sleep_for(due, retry), expected, "{due:?} {retry:?}");
        }
    }

    #[test]
    fn until_due_is_capped_and_never_negative() {
        let now = keys::unix_now();
        assert_eq!(until_due(None, KEY_POLL), KEY_POLL);
        assert_eq!(
            until_due(Some(now.saturating_sub(5)), KEY_POLL),
            Duration::ZERO
        );
        assert_eq!(until_due(Some(now + 3600), KEY_POLL), KEY_POLL);
        let soon = until_due(Some(now + 2), Duration::from_secs(10));
        assert!(
            soon > Duration::from_secs(1) && soon <= Duration::from_secs(2),
            "{soon:?}"
        );
    }
}
