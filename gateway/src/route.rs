//! The route table: host and longest-prefix matching on normalized paths, and the
//! upstream pool of each route with round-robin and passive failure handling.
//!
//! **Connection reuse and trust.** Pingora pools upstream connections by address, SNI
//! and verification flags, not by the CA a connection was verified against. Each route
//! therefore tags its peers with a group key derived from its CA certificates
//! ([`Chosen::ca_group`]), so a route never reuses a TLS connection that another route
//! verified against a different CA (or against the system roots).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use exchange::Audience;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use prometheus::{Histogram, IntCounter};

use crate::config::{AuthMode, RouteConfig};
use crate::path::{NormalizedPath, matches_prefix};

/// How long an upstream that refused a connection is skipped.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// One configured route, ready to serve.
pub struct Route {
    /// Route name (a bounded metric label).
    pub name: Arc<str>,
    /// Path prefix, normalized.
    pub path_prefix: String,
    /// Exact host to match, lowercased, without port.
    pub host: Option<String>,
    /// JWT audience.
    pub audience: Audience,
    /// Authentication mode.
    pub auth: AuthMode,
    /// Whether every request re-checks the session in Redis.
    pub critical: bool,
    /// Lifetime of tokens minted for this route.
    pub token_ttl: Duration,
    /// How long an upstream connect may take (502 past it).
    pub connect_timeout: Duration,
    /// How long the upstream may stay silent while a response is awaited (504 past it).
    pub read_timeout: Duration,
    /// How long a WebSocket or stream on this route may stay open.
    pub max_connection_lifetime: Option<Duration>,
    /// Upstream pool.
    pub upstreams: Upstreams,
    /// Pre-resolved request duration histogram for this route.
    pub duration: Histogram,
    /// Pre-resolved `sessiongate_requests_total{status="200"}` of this route, the
    /// counter nearly every request increments.
    pub served_ok: IntCounter,
}

/// A route's upstreams: round-robin over backends, skipping ones that recently failed.
pub struct Upstreams {
    lb: LoadBalancer<RoundRobin>,
    /// What [`Upstreams::choose`] answers for each address.
    chosen: HashMap<SocketAddr, Chosen>,
    /// The answer when the route has exactly one address: whatever the health of that
    /// address, `choose` can only pick it, so it skips the balancer.
    only: Option<Chosen>,
    ejected_until: HashMap<SocketAddr, AtomicU64>,
    epoch: Instant,
}

/// A chosen upstream.
#[derive(Clone)]
pub struct Chosen {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Whether to speak TLS to it.
    pub tls: bool,
    /// SNI / Host name for TLS.
    pub sni: String,
    /// CA the upstream must chain to (system roots when `None`).
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// Connection-pool group of that trust: 0 for the system roots, else derived from
    /// the CA certificates. Peers with different groups never share connections.
    pub ca_group: u64,
    /// The address as text, formatted once (for the access log).
    pub label: Arc<str>,
}

/// Why a route table could not be built.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}`: upstream `{upstream}` does not resolve: {message}")]
pub struct RouteError {
    route: String,
    upstream: String,
    message: String,
}

impl Upstreams {
    fn new(route: &RouteConfig) -> Result<Self, RouteError> {
        let mut addrs = Vec::new();
        let mut tls = HashMap::new();
        for up in &route.upstreams {
            // Resolution happens once, when the table is built (start-up or reload).
            let resolved = up.addr.to_socket_addrs().map_err(|e| RouteError {
                route: route.name.clone(),
                upstream: up.addr.clone(),
                message: e.to_string(),
            })?;
            let host = up
                .addr
                .rsplit_once(':')
                .map_or(up.addr.as_str(), |(h, _)| h);
            for addr in resolved {
                addrs.push(addr);
                tls.insert(addr, (up.tls, host.trim_matches(['[', ']']).to_owned()));
            }
        }
        if addrs.is_empty() {
            return Err(RouteError {
                route: route.name.clone(),
                upstream: String::new(),
                message: "no addresses".into(),
            });
        }
        let lb = LoadBalancer::try_from_iter(addrs.iter().copied()).map_err(|e| RouteError {
            route: route.name.clone(),
            upstream: String::new(),
            message: e.to_string(),
        })?;
        let ejected_until: HashMap<SocketAddr, AtomicU64> =
            addrs.iter().map(|a| (*a, AtomicU64::new(0))).collect();
        let (ca, ca_group) = match &route.ca_file {
            Some(path) => {
                let (ca, group) = load_ca(path).map_err(|message| RouteError {
                    route: route.name.clone(),
                    upstream: path.display().to_string(),
                    message,
                })?;
                (Some(ca), group)
            }
            None => (None, 0),
        };
        let chosen: HashMap<SocketAddr, Chosen> = tls
            .into_iter()
            .map(|(addr, (tls, sni))| {
                let chosen = Chosen {
                    addr,
                    tls,
                    sni,
                    ca: ca.clone(),
                    ca_group,
                    label: addr.to_string().into(),
                };
                (addr, chosen)
            })
            .collect();
        let only = if ejected_until.len() == 1 {
            chosen.values().next().cloned()
        } else {
            None
        };
        Ok(Self {
            lb,
            chosen,
            only,
            ejected_until,
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Picks the next upstream, skipping ejected ones and `avoid` (the one that just
    /// failed). If every upstream is ejected, it picks one anyway rather than refuse.
    pub fn choose(&self, avoid: Option<SocketAddr>) -> Option<Chosen> {
        if let Some(only) = &self.only {
            return Some(only.clone());
        }
        let now = self.now_ms();
        let healthy = |b: &Backend, _health: bool| {
            b.addr.as_inet() != avoid.as_ref() && self.ejected(b).is_none_or(|until| until <= now)
        };
        let pick = self
            .lb
            .select_with(b"", 64, healthy)
            .or_else(|| self.lb.select(b"", 64))?;
        let addr = pick.addr.as_inet().copied()?;
        Some(self.chosen.get(&addr).cloned().unwrap_or_else(|| Chosen {
            addr,
            tls: false,
            sni: String::new(),
            ca: None,
            ca_group: 0,
            label: addr.to_string().into(),
        }))
    }

    fn ejected(&self, b: &Backend) -> Option<u64> {
        let addr = b.addr.as_inet()?;
        self.ejected_until
            .get(addr)
            .map(|a| a.load(Ordering::Relaxed))
    }

    /// Marks `addr` as failing: it is skipped for [`EJECT_FOR`].
    pub fn eject(&self, addr: SocketAddr) {
        if let Some(until) = self.ejected_until.get(&addr) {
            let ms = u64::try_from(EJECT_FOR.as_millis()).unwrap_or(u64::MAX);
            until.store(self.now_ms() + ms, Ordering::Relaxed);
        }
    }

    /// Number of distinct upstream addresses.
    pub fn len(&self) -> usize {
        self.ejected_until.len()
    }

    /// Whether the pool is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.ejected_until.is_empty()
    }
}

/// Loads every certificate of a PEM CA file for upstream TLS verification, with the
/// connection-pool group of that trust (from SHA-256 of the certificates, never 0).
fn load_ca(path: &std::path::Path) -> Result<(Arc<pingora::protocols::tls::CaType>, u64), String> {
    use pingora::utils::tls::{WrappedX509, parse_x509};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    use sha2::{Digest as _, Sha256};

    let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file: {e}"))?;
    let mut ders = Vec::new();
    let mut digest = Sha256::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("the CA file is not PEM certificates: {e}"))?;
        digest.update(cert.as_ref());
        ders.push(cert.to_vec());
    }
    if ders.is_empty() {
        return Err("no certificate in the CA file".into());
    }
    // Pingora's parser panics on bad DER; this runs only when the route table is built.
    let wrapped = std::panic::catch_unwind(|| {
        ders.into_iter()
            .map(|der| WrappedX509::new(der, parse_x509))
            .collect::<Vec<_>>()
    })
    .map_err(|_| "the CA file does not hold valid X.509 certificates".to_owned())?;
    let mut group = [0_u8; 8];
    group.copy_from_slice(&digest.finalize()[..8]);
    Ok((
        Arc::from(wrapped.into_boxed_slice()),
        u64::from_le_bytes(group).max(1),
    ))
}

/// All routes, ordered for matching. Immutable; replaced whole on reload.
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    audiences: HashMap<String, Arc<Route>>,
}

impl RouteTable {
    /// Builds the table from validated route configs.
    ///
    /// # Errors
    /// [`RouteError`] when an upstream does not resolve.
    pub fn build(
        configs: &[RouteConfig],
        metrics: &crate::metrics::Metrics,
    ) -> Result<Self, RouteError> {
        let mut routes = Vec::with_capacity(configs.len());
        for rc in configs {
            routes.push(Arc::new(Route {
                name: rc.name.as_str().into(),
                path_prefix: rc.path_prefix.clone(),
                host: rc.host.clone(),
                audience: Audience::new(&rc.audience),
                auth: rc.auth,
                critical: rc.critical,
                token_ttl: rc.token_ttl,
                connect_timeout: rc.connect_timeout,
                read_timeout: rc.read_timeout,
                max_connection_lifetime: rc.max_connection_lifetime,
                upstreams: Upstreams::new(rc)?,
                duration: metrics
                    .request_duration
                    .with_label_values(&[rc.name.as_str()]),
                served_ok: metrics
                    .requests
                    .with_label_values(&[rc.name.as_str(), "200"]),
            }));
        }
        // Host-specific routes first, then longer prefixes first: the first match wins.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        let mut audiences = HashMap::new();
        for r in &routes {
            // A critical route wins the audience, so the exchange endpoint is at least as strict.
            let entry = audiences
                .entry(r.audience.as_str().to_owned())
                .or_insert_with(|| r.clone());
            if r.critical && !entry.critical {
                *entry = r.clone();
            }
        }
        Ok(Self { routes, audiences })
    }

    /// The route for `host` (as [`crate::http::target`] normalizes it) and `path`.
    pub fn find(&self, host: Option<&str>, path: &NormalizedPath) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| {
            r.host.as_deref().is_none_or(|h| Some(h) == host)
                && matches_prefix(path, &r.path_prefix)
        })
    }

    /// The route that owns an audience (for the exchange endpoint).
    pub fn by_audience(&self, audience: &str) -> Option<&Arc<Route>> {
        self.audiences.get(audience)
    }

    /// Every route.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn ca_files_load_every_certificate_and_name_their_pool_group() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (a, b) = (ca_pem("a"), ca_pem("b"));
        let one = write("one.pem", &a);
        let bundle = write("bundle.pem", &format!("{a}\n{b}"));
        let same = write("same.pem", &format!("# a comment\n{a}"));

        let (ca_one, group_one) = load_ca(&one).unwrap();
        let (ca_bundle, group_bundle) = load_ca(&bundle).unwrap();
        let (_, group_same) = load_ca(&same).unwrap();
        assert_eq!(ca_one.len(), 1);
        assert_eq!(
            ca_bundle.len(),
            2,
            "every certificate of a bundle is trusted"
        );
        assert_ne!(group_one, 0, "0 is the system roots' group");
        assert_ne!(group_one, group_bundle, "different trust, different pool");
        assert_eq!(group_one, group_same, "the same certificates share a pool");

        for (name, text, why) in [
            ("empty.pem", "no PEM here\n", "no certificate"),
            (
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "valid X.509",
            ),
        ] {
            let err = load_ca(&write(name, text)).map(|_| ()).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
        let err = load_ca(&dir.path().join("missing.pem"))
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }

    // === properties ===

    use proptest::prelude::*;

    use crate::config::Upstream;
    use crate::path::normalize;

    fn route_config(i: usize, prefix: &str, host: Option<&str>) -> RouteConfig {
        RouteConfig {
            name: format!("r{i}"),
            path_prefix: prefix.to_owned(),
            host: host.map(str::to_owned),
            upstreams: vec![Upstream {
                addr: "127.0.0.1:1".into(),
                tls: false,
            }],
            audience: format!("r{i}"),
            auth: AuthMode::Required,
            critical: false,
            token_ttl: Duration::from_secs(60),
            max_connection_lifetime: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            ca_file: None,
        }
    }

    const SEGMENTS: &[&str] = &["a", "b", "api", "orders", "ordersX"];

    /// `/` and the prefixes made of [`SEGMENTS`], as validation leaves them.
    fn prefix() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..3)
            .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    fn host() -> impl Strategy<Value = Option<&'static str>> {
        prop::sample::select(vec![None, Some("a.example"), Some("b.example")])
    }

    /// The path's leading segments, without `;` parameters, are the prefix's.
    fn under(path: &str, prefix: &str) -> bool {
        let want: Vec<&str> = prefix[1..].split('/').filter(|s| !s.is_empty()).collect();
        let have: Vec<&str> = path[1..]
            .split('/')
            .map(|s| s.split(';').next().unwrap_or(s))
            .collect();
        have.len() >= want.len() && have[..want.len()] == want[..]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn the_route_found_is_the_most_specific_match(
            routes in prop::collection::vec((prefix(), host()), 1..6),
            segments in prop::collection::vec(
                prop::sample::select(vec!["a", "b", "api", "orders", "ordersX", "a;v=1", "x", "."]),
                0..4,
            ),
            trailing in any::<bool>(),
            request_host in prop::sample::select(vec![None, Some("a.example"), Some("c.example")]),
        ) {
            let configs: Vec<RouteConfig> = routes
                .iter()
                .enumerate()
                .map(|(i, (p, h))| route_config(i, p, *h))
                .collect();
            let metrics = crate::metrics::Metrics::register(&prometheus::Registry::new()).unwrap();
            let table = RouteTable::build(&configs, &metrics).unwrap();
            let raw = format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" });
            let path = normalize(&raw).unwrap();
            let matches = |r: &Route| {
                r.host.as_deref().is_none_or(|h| Some(h) == request_host)
                    && under(path.as_str(), &r.path_prefix)
            };
            let rank = |r: &Route| (r.host.is_some(), r.path_prefix.len());
            match table.find(request_host, &path) {
                None => prop_assert!(!table.routes().iter().any(|r| matches(r))),
                Some(found) => {
                    prop_assert!(matches(found), "{} is not under {}", path, found.path_prefix);
                    let best = table.routes().iter().filter(|r| matches(r)).map(|r| rank(r)).max();
                    prop_assert_eq!(Some(rank(found)), best);
                }
            }
        }
    }
}
