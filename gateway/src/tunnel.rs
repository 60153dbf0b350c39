//! WebSocket upgrades, tunnelled by the gateway itself rather than by Pingora's proxy
//! loop.
//!
//! For an upgrade request that may be forwarded, `request_filter` hands over here: the
//! gateway connects to the route's upstream (the same peer choice, timeouts, TLS and
//! request rewriting as any request), relays the handshake, and after a `101` runs its
//! own duplex loop — which can also wait for the end of the session that opened it
//! ([`crate::stream::ends`]). When the session ends, the gateway writes a Close frame to
//! each side that is between frames (RFC 6455 frames are followed in both directions;
//! code 1008 `session ended`, 1013 `try again later`, 1001 `connection lifetime`) and
//! closes both. An upstream that does not upgrade has its answer relayed as is.
//!
//! Owning the tunnel also avoids a race in Pingora 0.9.1's own upgrade path: its
//! upstream half can read the `101` before the request's end-of-body task and then ends
//! the connection 1–20 ms after the `101` (about 1 in 150 upgrades here). docs/
//! ARCHITECTURE.md has the reasoning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::TransportConnector;
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use tracing::info;

use crate::config::AuthMode;
use crate::http::cookie::{self, Presented};
use crate::proxy::{Answer, Gateway, RequestCtx};
use crate::respond::Refusal;
use crate::stream::{Frames, Reason, close_frame, ends};

/// How long a Close frame may take to write before the connection is just closed.
const CLOSE_WRITE: Duration = Duration::from_millis(500);

/// Decrements `sessiongate_connections_open` however the tunnel ends (even if its task
/// is dropped).
struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A masking key for the Close frame the gateway sends upstream as a client.
fn mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    // Masking is not a secret (RFC 6455 §10.3 is about caches); any bytes do.
    let _ = aws_lc_rs::rand::fill(&mut key);
    key
}

/// Serves an upgrade request end to end. Returns `Ok(true)`: the request is answered.
///
/// # Errors
/// When the client connection fails before anything was answered.
pub async fn serve(
    gw: &Gateway,
    connector: &TransportConnector,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let route = ctx
        .route
        .clone()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
    let mut request = session.req_header().clone();
    gw.prepare_upstream_request(session, &mut request, ctx)?;
    let mut up = loop {
        let peer = gw.choose_peer(ctx)?;
        let connected =
            tokio::time::timeout(route.connect_timeout, connector.new_stream(&*peer)).await;
        match connected {
            Ok(Ok(stream)) => break Upstream::new_with_options(stream, &*peer),
            Ok(Err(_)) | Err(_) => {
                if let Some(addr) = peer._address.as_inet() {
                    route.upstreams.eject(*addr);
                }
                gw.metrics
                    .upstream_errors
                    .with_label_values(&[&route.name, "connect"])
                    .inc();
                if ctx.tries() >= route.upstreams.len() {
                    gw.refuse(session, ctx, Refusal::BadGateway).await?;
                    return Ok(true);
                }
            }
        }
    };
    // The handshake answers within the route's read timeout.
    up.read_timeout = Some(route.read_timeout);
    let handshake = async {
        up.write_request_header(Box::new(request)).await?;
        loop {
            up.read_response().await?;
            let status = up.resp_header().map_or(0, |r| r.status.as_u16());
            if status == 101 || !(100..200).contains(&status) {
                return Ok::<_, Box<Error>>(());
            }
        }
    };
    if let Err(e) = handshake.await {
        let (kind, refusal) = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                ("timeout", Refusal::GatewayTimeout)
            }
            _ => ("protocol", Refusal::BadGateway),
        };
        gw.metrics
            .upstream_errors
            .with_label_values(&[&route.name, kind])
            .inc();
        gw.refuse(session, ctx, refusal).await?;
        return Ok(true);
    }
    let Some(mut response) = up.resp_header().cloned() else {
        gw.refuse(session, ctx, Refusal::BadGateway).await?;
        return Ok(true);
    };
    ctx.extra_headers().insert_into(&mut response)?;
    ctx.answer = Answer::Upstream;
    if !up.was_upgraded() {
        // The upstream declined the upgrade: relay its answer.
        session
            .write_response_header(Box::new(response), false)
            .await?;
        while let Some(body) = up.read_body_bytes().await.map_err(|e| e.into_up())? {
            session.write_response_body(Some(body), false).await?;
        }
        session.write_response_body(None, true).await?;
        return Ok(true);
    }
    // Idle tunnels are legitimate: no read timeout on either side from here.
    up.read_timeout = None;
    session.as_downstream_mut().set_read_timeout(None);
    session
        .write_response_header(Box::new(response), false)
        .await?;
    up.maybe_upgrade_body_writer();

    let open = gw
        .metrics
        .connections_open
        .with_label_values(&[&route.name]);
    open.inc();
    let _open = OpenGuard(open);
    let started = Instant::now();
    // The session the tunnel lives under (none on `auth = "none"`, or without one).
    let cookie = (ctx.session_valid() && route.auth != AuthMode::None)
        .then(|| {
            let settings = ctx.settings().ok()?;
            match cookie::find(
                session
                    .req_header()
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter(),
                &settings.cookie,
            )
            .0
            {
                Presented::Value(v) => Some(v.to_owned()),
                _ => None,
            }
        })
        .flatten();
    let bounds = ctx.watch_bounds(&route)?;
    let ended = ends(
        &gw.exchange,
        cookie.as_deref(),
        bounds,
        route.max_connection_lifetime,
    );
    let mut ended = std::pin::pin!(ended);
    let (mut to_client, mut to_server) = (Frames::default(), Frames::default());
    // A write abandoned part-way: the stream is mid-frame, no Close frame can follow.
    let mut cut = false;
    let reason = loop {
        tokio::select! {
            biased;
            reason = &mut ended => break reason,
            read = session.as_downstream_mut().read_request_body() => match read {
                Ok(Some(bytes)) => {
                    to_server.feed(&bytes);
                    tokio::select! {
                        biased;
                        reason = &mut ended => { cut = true; break reason }
                        written = up.write_body(&bytes) => if written.is_err() { break Reason::Upstream },
                    }
                }
                Ok(None) | Err(_) => break Reason::Client,
            },
            read = up.read_body_bytes() => match read {
                Ok(Some(bytes)) => {
                    to_client.feed(&bytes);
                    let write = session.as_downstream_mut().write_response_body(bytes, false);
                    tokio::select! {
                        biased;
                        reason = &mut ended => { cut = true; break reason }
                        written = write => if written.is_err() { break Reason::Client },
                    }
                }
                Ok(None) | Err(_) => break Reason::Upstream,
            },
        }
    };
    if let (Some((code, text)), false) = (reason.close(), cut) {
        if to_client.at_boundary() {
            let frame = Bytes::from(close_frame(code, text, None));
            let _ = tokio::time::timeout(
                CLOSE_WRITE,
                session
                    .as_downstream_mut()
                    .write_response_body(frame, false),
            )
            .await;
        }
        if to_server.at_boundary() {
            let frame = close_frame(code, text, Some(mask_key()));
            let _ = tokio::time::timeout(CLOSE_WRITE, up.write_body(&frame)).await;
        }
    }
    up.shutdown().await;
    drop(up);
    gw.metrics
        .connections_closed
        .with_label_values(&[&route.name, reason.label()])
        .inc();
    info!(
        target: "sessiongate::connection",
        route = &*route.name,
        reason = reason.label(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = ctx.request_id_str(),
        "connection ended"
    );
    // Pingora now runs `logging`, then closes the client connection (keep-alive is off
    // after a 101).
    Ok(true)
}

/// The shared connector of owned tunnels (Pingora's own, without a pool: a tunnel's
/// connection is never reused).
pub fn connector() -> Arc<TransportConnector> {
    Arc::new(TransportConnector::new(None))
}
