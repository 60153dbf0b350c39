//! Hot reload on SIGHUP: re-read the config, validate it, and swap routes, upstreams,
//! audiences, critical flags, claims, cache windows and allowed origins atomically.
//!
//! An invalid new config is refused, logged and counted; the running one stays. Settings
//! that need a restart (listeners, TLS, threads, Redis, keys, token issuer/algorithm)
//! are named in the log and left as they are.

use std::path::PathBuf;
use std::sync::Arc;

use exchange::Exchange;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::ProxySettings;
use crate::route::RouteTable;
use crate::server::{GatewayHandles, session_settings};

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
        let routes =
            RouteTable::build(&new.routes, &self.metrics).map_err(|e| vec![e.to_string()])?;
        let mut current = self.current.lock();
        let mut needs_restart: Vec<String> = restart_only_changes(&current, &new)
            .into_iter()
            .map(String::from)
            .collect();
        // Swap: routes, then settings, then session settings. Each swap is atomic; a
        // request sees either the old or the new value of each.
        self.handles.routes.store(Arc::new(routes));
        let mut settings = ProxySettings::from_config(&new);
        // TLS on the listener cannot change without a restart; keep reporting the truth.
        settings.tls = current.server.tls.is_some();
        self.handles.settings.store(Arc::new(settings));
        needs_restart.extend(
            self.exchange
                .reconfigure(session_settings(&new))
                .into_iter()
                .map(String::from),
        );
        *current = new;
        Ok(ReloadReport { needs_restart })
    }
}

/// Config keys that differ between `old` and `new` and only take effect on restart.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let checks: [(&'static str, bool); 12] = [
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
                "[exchange]\nallowed_origins = [\"https://x.example\"]\n",
                &[],
            ),
        ];
        for (extra, expected) in cases {
            let new = Config::parse(&format!("{extra}{BASE}")).unwrap();
            assert_eq!(restart_only_changes(&base, &new), *expected, "{extra}");
        }
    }
}
