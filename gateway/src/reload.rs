//! Hot reload on SIGHUP: re-read the config, validate it, and swap routes, upstreams,
//! audiences, critical flags, claims, cache windows and allowed origins atomically.
//!
//! An invalid new config is refused, logged and counted; the running one stays. Settings
//! that need a restart (listeners, TLS, threads, Redis, keys, token issuer/algorithm)
//! are named in the log and left as they are: the reloader remembers the config as
//! *applied* (the new file with those settings as they run), so the next reload compares
//! against what really runs. A token lifetime longer than the longest one the gateway
//! started with is refused: signing keys stay published for that longest lifetime, and
//! longer-lived tokens would outlive their key in the JWKS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exchange::Exchange;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::ProxySettings;
use crate::route::RouteTable;
use crate::server::{GatewayHandles, format_settings, session_settings};

/// Reload metrics.
pub struct ReloadMetrics {
    /// `sessiongate_config_reloads_total{result}`: `ok` or `error`.
    pub reloads: IntCounterVec,
    /// `sessiongate_config_last_reload_success_timestamp_seconds`.
    pub last_success: IntGauge,
}

impl ReloadMetrics {
    /// Creates and registers the families.
    ///
    /// # Errors
    /// A prometheus error on duplicate registration.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "sessiongate_config_reloads_total",
                "Config reloads (SIGHUP) by result.",
            ),
            &["result"],
        )?;
        let last_success = IntGauge::new(
            "sessiongate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that was applied (start-up or reload).",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        last_success.set(i64::try_from(keys::unix_now()).unwrap_or(i64::MAX));
        Ok(Self {
            reloads,
            last_success,
        })
    }
}

/// What a successful reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys whose change was not applied because it needs a restart.
    pub needs_restart: Vec<String>,
}

/// Re-reads and applies the config file.
pub struct Reloader {
    path: PathBuf,
    current: Mutex<Config>,
    /// The longest token lifetime the keyring's retention was set up for at start.
    max_token_ttl: Duration,
    handles: GatewayHandles,
    exchange: Arc<Exchange>,
    metrics: Arc<Metrics>,
    reload_metrics: ReloadMetrics,
}

impl Reloader {
    /// A reloader for the running `config`, loaded from `path`.
    pub fn new(
        path: PathBuf,
        config: Config,
        handles: GatewayHandles,
        exchange: Arc<Exchange>,
        metrics: Arc<Metrics>,
        reload_metrics: ReloadMetrics,
    ) -> Self {
        Self {
            path,
            max_token_ttl: longest_token_ttl(&config),
            current: Mutex::new(config),
            handles,
            exchange,
            metrics,
            reload_metrics,
        }
    }

    /// Loads, validates and applies the config file. Blocking (file I/O and upstream
    /// name resolution): call it off the async runtime.
    ///
    /// # Errors
    /// Every problem found; nothing is applied then.
    pub fn reload(&self) -> Result<ReloadReport, Vec<String>> {
        let result = self.try_reload();
        match &result {
            Ok(report) => {
                self.reload_metrics.reloads.with_label_values(&["ok"]).inc();
                self.reload_metrics
                    .last_success
                    .set(i64::try_from(keys::unix_now()).unwrap_or(i64::MAX));
                if report.needs_restart.is_empty() {
                    info!(path = %self.path.display(), "Config reloaded.");
                } else {
                    warn!(
                        path = %self.path.display(),
                        needs_restart = %report.needs_restart.join(", "),
                        "Config reloaded; some changes need a restart and were not applied."
                    );
                }
            }
            Err(errors) => {
                self.reload_metrics
                    .reloads
                    .with_label_values(&["error"])
                    .inc();
                error!(
                    path = %self.path.display(),
                    errors = %errors.join("; "),
                    "Config reload refused; keeping the running config."
                );
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, Vec<String>> {
        let new = Config::load(&self.path)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let longest = longest_token_ttl(&new);
        if longest > self.max_token_ttl {
            return Err(vec![format!(
                "token lifetimes up to {} need a restart: signing keys stay published for the longest lifetime the gateway started with ({})",
                humantime::format_duration(longest),
                humantime::format_duration(self.max_token_ttl),
            )]);
        }
        let routes =
            RouteTable::build(&new.routes, &self.metrics).map_err(|e| vec![e.to_string()])?;
        let mut current = self.current.lock();
        let mut needs_restart: Vec<String> = restart_only_changes(&current, &new)
            .into_iter()
            .map(String::from)
            .collect();
        let applied = applied(&current, new);
        // Swap: routes, then settings, then session settings. Each swap is atomic; a
        // request sees either the old or the new value of each.
        self.handles.routes.store(Arc::new(routes));
        self.handles
            .settings
            .store(Arc::new(ProxySettings::from_config(&applied)));
        // The running format, its secrets read again from the (unchanged) environment.
        let format = format_settings(&applied).map_err(|e| vec![e.to_string()])?;
        needs_restart.extend(
            self.exchange
                .reconfigure(session_settings(&applied, format))
                .into_iter()
                .map(String::from),
        );
        *current = applied;
        Ok(ReloadReport { needs_restart })
    }
}

/// The longest lifetime of the tokens a config mints.
fn longest_token_ttl(config: &Config) -> Duration {
    config
        .routes
        .iter()
        .map(|r| r.token_ttl)
        .fold(config.token.ttl, Duration::max)
}

/// `new` with every restart-only setting (see [`restart_only_changes`]) as it runs in
/// `running`: the config the gateway really runs after a reload.
pub fn applied(running: &Config, new: Config) -> Config {
    let mut applied = new;
    let (s, r) = (&mut applied.server, &running.server);
    s.listen = r.listen;
    s.admin_listen = r.admin_listen;
    s.tls.clone_from(&r.tls);
    s.threads = r.threads;
    s.grace_period = r.grace_period;
    s.upgrade_sock.clone_from(&r.upgrade_sock);
    applied.redis.clone_from(&running.redis);
    applied.token.issuer.clone_from(&running.token.issuer);
    applied.token.algorithm = running.token.algorithm;
    applied.keys.clone_from(&running.keys);
    applied.log.clone_from(&running.log);
    applied.session.push_invalidation = running.session.push_invalidation;
    applied.session.cache_max_entries = running.session.cache_max_entries;
    applied.session.cache_max_bytes = running.session.cache_max_bytes;
    applied.session.token_cache_max_bytes = running.session.token_cache_max_bytes;
    applied.session.format = running.session.format;
    applied
        .session
        .secrets_env
        .clone_from(&running.session.secrets_env);
    applied
}

/// Config keys that differ between `old` and `new` and only take effect on restart.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let checks: [(&'static str, bool); 17] = [
        ("session.format", old.session.format != new.session.format),
        (
            "session.secrets_env",
            old.session.secrets_env != new.session.secrets_env,
        ),
        ("server.listen", old.server.listen != new.server.listen),
        (
            "server.admin_listen",
            old.server.admin_listen != new.server.admin_listen,
        ),
        ("server.tls", old.server.tls != new.server.tls),
        ("server.threads", old.server.threads != new.server.threads),
        (
            "server.grace_period",
            old.server.grace_period != new.server.grace_period,
        ),
        (
            "server.upgrade_sock",
            old.server.upgrade_sock != new.server.upgrade_sock,
        ),
        ("redis", old.redis != new.redis),
        ("token.issuer", old.token.issuer != new.token.issuer),
        (
            "token.algorithm",
            old.token.algorithm != new.token.algorithm,
        ),
        ("keys", old.keys != new.keys),
        ("log", old.log != new.log),
        (
            "session.push_invalidation",
            old.session.push_invalidation != new.session.push_invalidation,
        ),
        (
            "session.cache_max_entries",
            old.session.cache_max_entries != new.session.cache_max_entries,
        ),
        (
            "session.cache_max_bytes",
            old.session.cache_max_bytes != new.session.cache_max_bytes,
        ),
        (
            "session.token_cache_max_bytes",
            old.session.token_cache_max_bytes != new.session.token_cache_max_bytes,
        ),
    ];
    for (name, changed) in checks {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[keys]
store = "file"
dir = "/tmp/k"

[[route]]
name = "a"
path_prefix = "/a"
upstreams = ["127.0.0.1:1"]
"#;

    #[test]
    fn restart_only_changes_table() {
        let base = Config::parse(BASE).unwrap();
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            (
                "[server]\nlisten = \"127.0.0.1:1234\"\n",
                &["server.listen"],
            ),
            ("[token]\nissuer = \"other\"\n", &["token.issuer"]),
            ("[token]\nalgorithm = \"EdDSA\"\n", &["token.algorithm"]),
            ("[redis]\nurl = \"redis://10.0.0.1:6379/0\"\n", &["redis"]),
            ("[session]\ncache_ttl = \"1s\"\nclaims = [\"x\"]\n", &[]),
            (
                "[session]\ncache_max_entries = 7\n",
                &["session.cache_max_entries"],
            ),
            (
                "[session]\ncache_max_bytes = \"32MiB\"\ntoken_cache_max_bytes = 0\n",
                &["session.cache_max_bytes", "session.token_cache_max_bytes"],
            ),
            (
                "[exchange]\nallowed_origins = [\"https://x.example\"]\n",
                &[],
            ),
        ];
        for (extra, expected) in cases {
            let new = Config::parse(&format!("{extra}{BASE}")).unwrap();
            assert_eq!(restart_only_changes(&base, &new), *expected, "{extra}");
            // What a reload applies keeps every restart-only setting as it runs, and
            // takes everything else from the new file.
            let applied = applied(&base, new.clone());
            assert_eq!(
                restart_only_changes(&base, &applied),
                [] as [&str; 0],
                "{extra}"
            );
            assert_eq!(restart_only_changes(&applied, &new), *expected, "{extra}");
            assert_eq!(applied.session.claims, new.session.claims, "{extra}");
            assert_eq!(applied.exchange, new.exchange, "{extra}");
        }
    }

    #[test]
    fn longest_token_ttl_covers_routes_and_the_default() {
        let base = Config::parse(BASE).unwrap();
        assert_eq!(longest_token_ttl(&base), Duration::from_secs(300));
        let shorter = Config::parse(&format!("{BASE}token_ttl = \"1m\"\n")).unwrap();
        assert_eq!(longest_token_ttl(&shorter), Duration::from_secs(300));
        let longer = Config::parse(&format!("[token]\nttl = \"10m\"\n{BASE}")).unwrap();
        assert_eq!(longest_token_ttl(&longer), Duration::from_secs(600));
    }
}
