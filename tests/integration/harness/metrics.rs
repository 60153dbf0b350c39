//! Reading the gateway's `/metrics` (Prometheus text format) on its admin listener, and
//! finding the gateway's Redis push-invalidation (`CLIENT TRACKING`) connection.
//!
//! The parser is deliberately small: one sample per line, `name{labels} value` or
//! `name value`; a query names the metric and the labels that must be present and sums
//! every sample that matches, so a counter split by other labels still adds up.

use std::time::Duration;

use super::eventually::assert_eventually;
use super::gateway::Gateway;
use super::raw;
use super::redis::RedisServer;

/// One scrape of `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct Scrape {
    text: String,
}

impl Scrape {
    /// `GET /metrics` on the admin listener.
    ///
    /// # Panics
    /// If the scrape is not a 200.
    pub(crate) fn of(gw: &Gateway) -> Self {
        let resp = raw::get(gw.admin_addr(), "/metrics", &[])
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(resp.status, 200, "GET /metrics");
        Scrape {
            text: String::from_utf8_lossy(&resp.body).into_owned(),
        }
    }

    /// The whole text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The sum of every sample of `name` that carries all of `labels` (0 when none).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).iter().sum()
    }

    /// Whether at least one sample of `name` carries all of `labels`.
    pub(crate) fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        !self.samples(name, labels).is_empty()
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let present: Vec<&str> = label_text.split(',').collect();
                if !wanted.iter().all(|w| present.contains(&w.as_str())) {
                    return None;
                }
                value.parse::<f64>().ok()
            })
            .collect()
    }
}

/// The gauge `sessiongate_revocation_push_connected` is 1: the push channel is armed
/// and vouches for the cache.
pub(crate) fn push_armed(gw: &Gateway) -> bool {
    Scrape::of(gw).value("sessiongate_revocation_push_connected", &[]) == 1.0
}

/// Waits up to `within` for [`push_armed`].
///
/// # Panics
/// If the push channel is not armed by then.
#[track_caller]
pub(crate) fn wait_armed(gw: &Gateway, within: Duration) {
    assert_eventually!(push_armed(gw), within, "the push channel must arm");
}

/// The ids of the connections with client-side caching on (`CLIENT LIST` flag `t`).
pub(crate) fn tracking_clients(redis: &RedisServer) -> Vec<String> {
    redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}
