//! The baseline: a bare Pingora proxy from the same `pingora` crate and version as the
//! gateway, forwarding every request to the same upstream, in its own process.
//!
//! No session, no token, no routing, no access log, no metrics: one `ProxyHttp` whose
//! `upstream_peer` names the upstream. It runs with the same number of worker threads as
//! the gateway under test, so the difference between the two is what sessiongate adds.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// Runs the bare proxy on `listen` until the process is killed.
pub(crate) fn serve(listen: SocketAddr, upstream: SocketAddr, threads: usize) {
    let conf = ServerConf {
        threads,
        pid_file: std::env::temp_dir()
            .join(format!("sg-bare-{}.pid", std::process::id()))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    server.run_forever();
}
