//! The admin listener: `/metrics`, `/healthz`, `/readyz` and the JWKS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::Registry;

use crate::jwks;
use crate::metrics::Metrics;
use exchange::store::SessionStore;

/// Serves the admin endpoints.
pub struct Admin {
    /// Every metric family of the process.
    pub registry: Registry,
    /// Gateway metrics (key gauges are refreshed on scrape).
    pub metrics: Arc<Metrics>,
    /// The keyring whose JWKS is published.
    pub keyring: Arc<keys::Keyring>,
    /// The session store whose health decides readiness.
    pub store: Arc<dyn SessionStore>,
    /// How long a readiness probe waits for Redis.
    pub ready_timeout: Duration,
    /// `Cache-Control` max-age of the JWKS.
    pub jwks_max_age: Duration,
    /// Whether the proxy listener accepts connections yet.
    pub proxy_listener: ListenerProbe,
}

/// Tells whether the proxy listener accepts connections.
///
/// Pingora reports a listening service ready before it binds, and the admin listener
/// may open first, so `/readyz` could say 200 while connections to the proxy port are
/// still refused (a load balancer would send traffic to a pod that drops it). The probe
/// connects to the proxy listener until one connection succeeds, then remembers it: a
/// listener, once bound, stays bound for the life of the process.
pub struct ListenerProbe {
    addr: SocketAddr,
    up: AtomicBool,
}

impl ListenerProbe {
    /// A probe of the listener bound to `listen` (an unspecified address such as
    /// `0.0.0.0` or `[::]` is probed on loopback).
    pub fn new(listen: SocketAddr) -> Self {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            addr: SocketAddr::new(ip, listen.port()),
            up: AtomicBool::new(false),
        }
    }

    /// Whether the listener accepts connections, waiting at most `timeout` to find out.
    pub async fn is_up(&self, timeout: Duration) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        let connected = matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(self.addr)).await,
            Ok(Ok(_))
        );
        if connected {
            self.up.store(true, Ordering::Relaxed);
        }
        connected
    }
}

fn text(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

impl Admin {
    /// Whether the gateway can serve: the proxy listener accepts connections, Redis
    /// answers and a signing key is loaded. The answer is also kept in `sessiongate_ready`.
    pub async fn readiness(&self) -> Result<(), &'static str> {
        let result = self.check_ready().await;
        self.metrics.ready.set(i64::from(result.is_ok()));
        result
    }

    async fn check_ready(&self) -> Result<(), &'static str> {
        if self.keyring.load().current().is_none() {
            return Err("no signing key loaded");
        }
        if !self.proxy_listener.is_up(self.ready_timeout).await {
            return Err("proxy listener not accepting yet");
        }
        match tokio::time::timeout(self.ready_timeout, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("redis unavailable"),
            Err(_) => Err("redis timed out"),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        match path.as_str() {
            "/healthz" => text(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.readiness().await {
                Ok(()) => text(200, "text/plain", b"ready\n".to_vec()),
                Err(why) => text(
                    503,
                    "text/plain",
                    format!("not ready: {why}\n").into_bytes(),
                ),
            },
            "/metrics" => {
                self.metrics
                    .observe_keys(&self.keyring.load(), keys::unix_now());
                // Refresh `sessiongate_ready` so that a scrape sees readiness even where
                // nothing probes /readyz (systemd, compose).
                let _ = self.readiness().await;
                text(
                    200,
                    "text/plain; version=0.0.4",
                    crate::metrics::render(&self.registry),
                )
            }
            jwks::PATH => {
                let set = self.keyring.load_full();
                match jwks::response(set.jwks(), session.req_header(), self.jwks_max_age) {
                    Ok((header, body)) => {
                        let mut resp = Response::builder().status(header.status);
                        for (name, value) in header.headers.iter() {
                            resp = resp.header(name, value);
                        }
                        resp.body(body.to_vec())
                            .unwrap_or_else(|_| Response::new(Vec::new()))
                    }
                    Err(_) => text(500, "text/plain", b"jwks unavailable\n".to_vec()),
                }
            }
            _ => {
                // The proxy's one response map makes the body here too.
                let refusal = crate::respond::Refusal::NotFound;
                let body = refusal.response().map(|(_, b)| b.to_vec());
                text(
                    refusal.status(),
                    "application/json",
                    body.unwrap_or_default(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listener_probe_is_up_only_once_something_listens_and_remembers_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let probe = ListenerProbe::new(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()));
        assert_eq!(probe.addr, addr, "0.0.0.0 is probed on loopback");
        assert!(
            !probe.is_up(Duration::from_millis(200)).await,
            "nothing listens yet"
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind again");
        assert!(probe.is_up(Duration::from_millis(200)).await);
        drop(listener);
        assert!(probe.is_up(Duration::from_millis(200)).await, "remembered");
    }
}
