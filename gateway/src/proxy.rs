//! The Pingora proxy: `ProxyHttp` for sessiongate.
//!
//! Request path: normalize the path → gateway-owned endpoints (JWKS, exchange) →
//! route match → cookie-header bound and Origin check → session lookup (live on
//! critical routes, cached elsewhere) → token → forward with `Authorization: Bearer`.
//! Refusals are written in `request_filter`, which then returns `Ok(true)`; only
//! true failures reach `fail_to_proxy`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use exchange::{Exchange, Freshness, SessionLookup, SessionToken, cookie};
use http::header::{AUTHORIZATION, COOKIE, HOST};
use http::{HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use tracing::{info, warn};

use crate::config::{AuthMode, Config};
use crate::jwks;
use crate::metrics::Metrics;
use crate::path::{NormalizedPath, normalize};
use crate::respond::{self, Refusal};
use crate::route::{Route, RouteTable, host_of};

/// Settings the proxy reads per request, swapped whole on reload.
pub struct ProxySettings {
    /// Name of the session cookie.
    pub cookie: String,
    /// Whether the session cookie reaches upstreams.
    pub forward_cookie: bool,
    /// Where browsers without a session are sent.
    pub login_url: Option<String>,
    /// Origins allowed to make unsafe requests with the session cookie.
    pub allowed_origins: Vec<String>,
    /// Path of the token exchange endpoint.
    pub exchange_path: Option<String>,
    /// Largest accepted total `Cookie` header.
    pub max_cookie_header_bytes: usize,
    /// `Cache-Control` max-age of the JWKS.
    pub jwks_max_age: Duration,
    /// Whether the proxy listener speaks TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// `Strict-Transport-Security` for every response, on a TLS listener.
    pub hsts: Option<HeaderValue>,
}

impl ProxySettings {
    /// Extracts the proxy's settings from a validated config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            cookie: config.session.cookie.clone(),
            forward_cookie: config.session.forward_cookie,
            login_url: config.session.login_url.clone(),
            allowed_origins: config.exchange.allowed_origins.clone(),
            exchange_path: config.exchange.path.clone(),
            max_cookie_header_bytes: config.server.max_cookie_header_bytes,
            jwks_max_age: jwks::max_age(config.keys.publish_ahead),
            tls: config.server.tls.is_some(),
            hsts: config
                .server
                .hsts
                .as_deref()
                .filter(|_| config.server.tls.is_some())
                .and_then(|v| HeaderValue::from_str(v).ok()),
        }
    }
}

/// The proxy service state shared by every request.
pub struct Gateway {
    /// Routes, swapped whole on reload.
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// Per-request settings, swapped whole on reload.
    pub settings: Arc<ArcSwap<ProxySettings>>,
    /// Session lookups and minting.
    pub exchange: Arc<Exchange>,
    /// Gateway metrics.
    pub metrics: Arc<Metrics>,
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    route: Option<Arc<Route>>,
    /// The normalized path and original query, forwarded upstream.
    forward_uri: Option<http::Uri>,
    bearer: Option<Bytes>,
    kid: Option<keys::Kid>,
    session_outcome: &'static str,
    settings: Option<Arc<ProxySettings>>,
    upstream: Option<SocketAddr>,
    /// The chosen upstream's address as text, for the access log.
    upstream_label: Option<Arc<str>>,
    tries: usize,
    refused: Option<&'static str>,
}

impl RequestCtx {
    fn settings(&self) -> Result<&ProxySettings> {
        self.settings
            .as_deref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "settings not loaded"))
    }
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether an unsafe request carrying the session cookie comes from an allowed origin.
fn origin_allowed(req: &RequestHeader, allowed: &[String]) -> bool {
    match req.headers.get("origin") {
        Some(origin) => origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
        None => req
            .headers
            .get("sec-fetch-site")
            .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"cross-site")),
    }
}

/// Whether the request is a browser navigation that may be redirected to a login page.
fn is_navigation(req: &RequestHeader) -> bool {
    (req.method == Method::GET || req.method == Method::HEAD)
        && req
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// The session cookie as the request presents it: its validated value, or the session
/// outcome label saying why there is none (`"absent"`, `"malformed"`).
type Presented = std::result::Result<SessionToken, &'static str>;

fn presented(raw: Option<&str>) -> Presented {
    match raw {
        None => Err("absent"),
        Some(raw) => SessionToken::parse(raw).map_err(|_| "malformed"),
    }
}

/// The session cookie's value across every `Cookie` header, and the header's total size.
fn session_cookie<'a>(req: &'a RequestHeader, name: &str) -> (Option<&'a str>, usize) {
    let mut total = 0;
    let mut found = None;
    for value in req.headers.get_all(COOKIE) {
        total += value.len();
        if found.is_none() {
            found = value
                .to_str()
                .ok()
                .and_then(|v| cookie::find_cookie(v, name));
        }
    }
    (found, total)
}

impl Gateway {
    fn hsts(&self, ctx: &RequestCtx) -> Option<HeaderValue> {
        ctx.settings.as_ref().and_then(|s| s.hsts.clone())
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        ctx.refused = Some(refusal.reason());
        let route = ctx.route.as_ref().map_or("none", |r| &r.name);
        self.metrics
            .auth_refusals
            .with_label_values(&[route, refusal.reason()])
            .inc();
        respond::send(session, &refusal, self.hsts(ctx)).await?;
        Ok(true)
    }

    fn unauthenticated(&self, req: &RequestHeader, settings: &ProxySettings) -> Refusal {
        match &settings.login_url {
            Some(url) if is_navigation(req) => Refusal::LoginRedirect(url.clone()),
            _ => Refusal::Unauthenticated,
        }
    }

    /// Looks the session up for `route`. `Ok(None)` means no valid session.
    async fn authenticate(
        &self,
        presented: Presented,
        critical: bool,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Option<exchange::Resolved>, exchange::Error> {
        let token = match presented {
            Ok(token) => token,
            Err(outcome) => {
                // Absent or malformed: malformed cookies never reach Redis.
                ctx.session_outcome = outcome;
                return Ok(None);
            }
        };
        let freshness = if critical {
            Freshness::Live
        } else {
            Freshness::Cached
        };
        let resolved = match self.exchange.lookup(&token, freshness).await {
            Ok(resolved) => resolved,
            Err(e) => {
                // The access line says the lookup failed (e.g. Redis down), not "none".
                ctx.session_outcome = "error";
                return Err(e);
            }
        };
        ctx.session_outcome = resolved.lookup.result_label();
        Ok(matches!(resolved.lookup, SessionLookup::Valid(_)).then_some(resolved))
    }

    async fn serve_jwks(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let max_age = ctx.settings()?.jwks_max_age;
        let set = self.exchange.minter().keyring().load_full();
        let (header, body) = jwks::response(set.jwks(), session.req_header(), max_age)?;
        ctx.refused = Some("jwks");
        respond::write(session, header, body, self.hsts(ctx)).await?;
        Ok(true)
    }

    async fn serve_exchange(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let settings = ctx
            .settings
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no settings"))?;
        let req = session.req_header();
        let origin = req.headers.get("origin").cloned();
        if req.method == Method::OPTIONS {
            return self
                .exchange_preflight(session, ctx, &settings, origin)
                .await;
        }
        if req.method != Method::POST {
            return self.refuse(session, ctx, Refusal::MethodNotAllowed).await;
        }
        if !origin_allowed(req, &settings.allowed_origins) {
            return self.refuse(session, ctx, Refusal::Forbidden).await;
        }
        let (raw_cookie, total) = session_cookie(req, &settings.cookie);
        if total > settings.max_cookie_header_bytes {
            return self
                .refuse(session, ctx, Refusal::BadRequest("cookie header too large"))
                .await;
        }
        // Validated (and copied out of the request) before the body is read.
        let presented = presented(raw_cookie);
        let Some(body) = read_small_body(session, 4096).await? else {
            return self
                .refuse(session, ctx, Refusal::BadRequest("body too large"))
                .await;
        };
        let Some(audience) = parse_audience(&body) else {
            return self
                .refuse(
                    session,
                    ctx,
                    Refusal::BadRequest("expected {\"audience\": \"...\"}"),
                )
                .await;
        };
        let routes = self.routes.load();
        let Some(route) = routes.by_audience(&audience).cloned() else {
            return self
                .refuse(session, ctx, Refusal::BadRequest("unknown audience"))
                .await;
        };
        ctx.route = Some(route.clone());
        let resolved = match self.authenticate(presented, route.critical, ctx).await {
            Ok(Some(r)) => r,
            Ok(None) => return self.refuse(session, ctx, Refusal::Unauthenticated).await,
            Err(e) => return self.lookup_failed(session, ctx, &e).await,
        };
        let jwt = match self
            .exchange
            .token(&resolved, &route.audience, route.token_ttl)
        {
            Ok(jwt) => jwt,
            Err(e) => return self.lookup_failed(session, ctx, &e).await,
        };
        ctx.kid = Some(jwt.kid().clone());
        let expires_in = jwt.exp().saturating_sub(exchange::unix_now());
        let body = format!(
            r#"{{"access_token":"{}","token_type":"Bearer","expires_in":{expires_in}}}"#,
            jwt.jwt()
        );
        let mut header = ResponseHeader::build(200, Some(6))?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("cache-control", "no-store")?;
        header.insert_header("content-length", body.len().to_string())?;
        if let Some(origin) = origin {
            header.insert_header("access-control-allow-origin", origin)?;
            header.insert_header("access-control-allow-credentials", "true")?;
            header.insert_header("vary", "Origin")?;
        }
        ctx.refused = Some("exchange");
        respond::write(session, header, Bytes::from(body), self.hsts(ctx)).await?;
        Ok(true)
    }

    async fn exchange_preflight(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        settings: &ProxySettings,
        origin: Option<HeaderValue>,
    ) -> Result<bool> {
        let allowed = origin
            .as_ref()
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| {
                settings
                    .allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
            });
        let Some(origin) = origin.filter(|_| allowed) else {
            return self.refuse(session, ctx, Refusal::Forbidden).await;
        };
        let mut header = ResponseHeader::build(204, Some(6))?;
        header.insert_header("access-control-allow-origin", origin)?;
        header.insert_header("access-control-allow-credentials", "true")?;
        header.insert_header("access-control-allow-methods", "POST")?;
        header.insert_header("access-control-allow-headers", "content-type")?;
        header.insert_header("access-control-max-age", "600")?;
        header.insert_header("vary", "Origin")?;
        ctx.refused = Some("preflight");
        respond::write(session, header, Bytes::new(), self.hsts(ctx)).await?;
        Ok(true)
    }

    async fn lookup_failed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        e: &exchange::Error,
    ) -> Result<bool> {
        let route = ctx.route.as_ref().map_or("none", |r| &*r.name).to_owned();
        if e.is_unavailable()
            || matches!(
                e,
                exchange::Error::NoSigningKey | exchange::Error::Sign { .. }
            )
        {
            warn!(route = %route, error = %e, kind = e.kind(), "Session lookup or signing failed; refusing with 503.");
            self.refuse(session, ctx, Refusal::Unavailable).await
        } else {
            // A corrupt session value cannot be trusted: treat it as no session.
            warn!(route = %route, error = %e, kind = e.kind(), "Session value unusable; refusing with 401.");
            ctx.session_outcome = "error";
            self.refuse(session, ctx, Refusal::Unauthenticated).await
        }
    }
}

async fn read_small_body(session: &mut Session, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn parse_audience(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        audience: String,
    }
    serde_json::from_slice::<Req>(body).ok().map(|r| r.audience)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            route: None,
            forward_uri: None,
            bearer: None,
            kid: None,
            session_outcome: "none",
            settings: None,
            upstream: None,
            upstream_label: None,
            tries: 0,
            refused: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Instant::now();
        let settings = self.settings.load_full();
        ctx.settings = Some(settings.clone());
        let req = session.req_header();

        let uri = &req.uri;
        let path = match normalize(uri.path()) {
            Ok(p) => p,
            Err(_) => {
                return self
                    .refuse(
                        session,
                        ctx,
                        Refusal::BadRequest("path cannot be normalized"),
                    )
                    .await;
            }
        };
        if path.as_str() == jwks::PATH {
            return if matches!(req.method, Method::GET | Method::HEAD) {
                self.serve_jwks(session, ctx).await
            } else {
                self.refuse(session, ctx, Refusal::MethodNotAllowed).await
            };
        }
        if settings.exchange_path.as_deref() == Some(path.as_str()) {
            return self.serve_exchange(session, ctx).await;
        }

        let host = req
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.host())
            .map(host_of)
            .map(|h| {
                if h.bytes().any(|b| b.is_ascii_uppercase()) {
                    std::borrow::Cow::Owned(h.to_ascii_lowercase())
                } else {
                    std::borrow::Cow::Borrowed(h)
                }
            });
        let routes = self.routes.load();
        let Some(route) = routes.find(host.as_deref(), &path).cloned() else {
            return self.refuse(session, ctx, Refusal::NotFound).await;
        };
        ctx.route = Some(route.clone());
        // Forward the normalized path; rebuild the URI only when normalization changed it.
        if path.as_str() != uri.path() || uri.scheme().is_some() {
            ctx.forward_uri = Some(forward_uri(&path, uri.query())?);
        }

        let (raw_cookie, total) = session_cookie(req, &settings.cookie);
        if total > settings.max_cookie_header_bytes {
            return self
                .refuse(session, ctx, Refusal::BadRequest("cookie header too large"))
                .await;
        }
        if raw_cookie.is_some()
            && is_unsafe(&req.method)
            && !origin_allowed(req, &settings.allowed_origins)
        {
            return self.refuse(session, ctx, Refusal::Forbidden).await;
        }
        if route.auth == AuthMode::None {
            ctx.session_outcome = "skipped";
            return Ok(false);
        }

        let resolved = match self
            .authenticate(presented(raw_cookie), route.critical, ctx)
            .await
        {
            Ok(r) => r,
            Err(e) => return self.lookup_failed(session, ctx, &e).await,
        };
        let Some(resolved) = resolved else {
            if route.auth == AuthMode::Required {
                let refusal = self.unauthenticated(session.req_header(), &settings);
                return self.refuse(session, ctx, refusal).await;
            }
            return Ok(false);
        };
        match self
            .exchange
            .token(&resolved, &route.audience, route.token_ttl)
        {
            Ok(jwt) => {
                ctx.kid = Some(jwt.kid().clone());
                ctx.bearer = Some(jwt.bearer().clone());
                Ok(false)
            }
            Err(e) => self.lookup_failed(session, ctx, &e).await,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        let avoid = if ctx.tries > 0 { ctx.upstream } else { None };
        let chosen = route
            .upstreams
            .choose(avoid)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream"))?;
        ctx.upstream = Some(chosen.addr);
        ctx.upstream_label = Some(chosen.label);
        ctx.tries += 1;
        let mut peer = HttpPeer::new(chosen.addr, chosen.tls, chosen.sni);
        peer.options.ca = chosen.ca;
        // Pingora's pool does not key connections by CA: never reuse one verified
        // against another route's trust.
        peer.group_key = chosen.ca_group;
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.total_connection_timeout = Some(Duration::from_secs(5));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let settings = ctx.settings()?;
        // Never forward the client's own credentials: the bearer replaces every
        // Authorization header the client sent (insert replaces), or they are removed.
        // An error here fails the request, so nothing is forwarded with them.
        match &ctx.bearer {
            Some(bearer) => {
                let value = HeaderValue::from_maybe_shared(bearer.clone())
                    .map_err(|e| Error::because(ErrorType::InternalError, "bearer header", e))?;
                upstream.insert_header(AUTHORIZATION, value)?;
            }
            None => {
                upstream.remove_header(&AUTHORIZATION);
            }
        }
        if !settings.forward_cookie && upstream.headers.contains_key(COOKIE) {
            // Every Cookie header, the session cookie removed, joined into one.
            let mut stripped = String::new();
            let mut values = 0;
            for value in upstream.headers.get_all(COOKIE) {
                values += 1;
                if let Ok(v) = value.to_str() {
                    cookie::strip_cookie_into(v, &settings.cookie, &mut stripped);
                }
            }
            // One header the strip left as it was is not rewritten.
            let unchanged = values == 1
                && upstream
                    .headers
                    .get(COOKIE)
                    .is_some_and(|v| v.as_bytes() == stripped.as_bytes());
            if stripped.is_empty() {
                upstream.remove_header(&COOKIE);
            } else if !unchanged {
                // Replaces every Cookie header the client sent.
                upstream.insert_header(COOKIE, stripped)?;
            }
        }
        let mut ip_buf = [0u8; 64];
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .and_then(|a| display_in(&mut ip_buf, a.ip()));
        match client_ip {
            Some(ip) => upstream.insert_header("x-forwarded-for", ip)?,
            None => {
                upstream.remove_header("x-forwarded-for");
            }
        }
        upstream.insert_header(
            "x-forwarded-proto",
            if settings.tls { "https" } else { "http" },
        )?;
        if let Some(host) = session.req_header().headers.get(HOST).cloned() {
            upstream.insert_header("x-forwarded-host", host)?;
        } else {
            upstream.remove_header("x-forwarded-host");
        }
        if let Some(uri) = ctx.forward_uri.clone() {
            upstream.set_uri(uri);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(hsts) = self.hsts(ctx) {
            upstream_response.insert_header("strict-transport-security", hsts)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(route) = &ctx.route {
            if let Some(addr) = peer._address.as_inet() {
                route.upstreams.eject(*addr);
            }
            self.metrics
                .upstream_errors
                .with_label_values(&[&route.name, "connect"])
                .inc();
            // The request never reached an upstream: try another one, once per upstream.
            if ctx.tries < route.upstreams.len() {
                e.set_retry(true);
            }
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let refusal = match e.etype() {
            ErrorType::HTTPStatus(code) if *code == 400 => Refusal::BadRequest("malformed request"),
            _ => match e.esource() {
                ErrorSource::Upstream => Refusal::BadGateway,
                ErrorSource::Downstream => Refusal::BadRequest("malformed request"),
                _ => Refusal::BadGateway,
            },
        };
        // Connect failures (TLS handshakes and certificate checks included) were counted
        // in fail_to_connect; count the rest here.
        let connect_failure = matches!(
            e.etype(),
            ErrorType::ConnectRefused
                | ErrorType::ConnectTimedout
                | ErrorType::ConnectError
                | ErrorType::TLSWantX509Lookup
                | ErrorType::TLSHandshakeFailure
                | ErrorType::TLSHandshakeTimedout
                | ErrorType::InvalidCert
                | ErrorType::HandshakeError
                | ErrorType::SocketError
                | ErrorType::BindError
                | ErrorType::ConnectProxyFailure
        );
        if let Some(route) = ctx
            .route
            .as_ref()
            .filter(|_| matches!(e.esource(), ErrorSource::Upstream) && !connect_failure)
        {
            let kind = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                _ => "protocol",
            };
            self.metrics
                .upstream_errors
                .with_label_values(&[&route.name, kind])
                .inc();
        }
        let downstream_dead = matches!(e.esource(), ErrorSource::Downstream)
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        let code = if downstream_dead {
            0
        } else {
            let status = refusal.status();
            if let Err(write_err) = respond::send(session, &refusal, self.hsts(ctx)).await {
                warn!(error = %write_err, "Could not write the error response.");
            }
            status
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route: &str = ctx.route.as_ref().map_or("none", |r| &r.name);
        let elapsed = ctx.started.elapsed();
        self.metrics
            .requests
            .with_label_values(&[route, status_label(status)])
            .inc();
        match &ctx.route {
            Some(r) => r.duration.observe(elapsed.as_secs_f64()),
            None => self
                .metrics
                .request_duration
                .with_label_values(&["none"])
                .observe(elapsed.as_secs_f64()),
        }
        // One access line per request. Never a cookie, token, key or query string.
        let upstream = ctx.upstream_label.as_deref().unwrap_or("-");
        info!(
            target: "sessiongate::access",
            method = %session.req_header().method,
            route,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            session = ctx.session_outcome,
            upstream,
            kid = ctx.kid.as_ref().map_or("-", |k| k.as_str()),
            answered_by = ctx.refused.unwrap_or("upstream"),
            error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
            "request"
        );
    }
}

/// Formats `value` into `buf` without allocating; `None` if it does not fit (an address
/// always fits in 64 bytes).
fn display_in(buf: &mut [u8], value: impl std::fmt::Display) -> Option<&str> {
    use std::io::Write as _;
    let len = buf.len();
    let mut cursor = &mut buf[..];
    write!(cursor, "{value}").ok()?;
    let written = len - cursor.len();
    std::str::from_utf8(&buf[..written]).ok()
}

/// The URI forwarded upstream: the normalized path with the original query.
fn forward_uri(path: &NormalizedPath, query: Option<&str>) -> Result<http::Uri> {
    let pq = match query {
        Some(q) => format!("{}?{q}", path.as_str()),
        None => path.as_str().to_owned(),
    };
    http::Uri::builder()
        .path_and_query(pq)
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "forward uri", e))
}

fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|n| n.to_string()).collect());
    labels
        .get(usize::from(status))
        .map_or("other", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_in_formats_without_allocating_and_refuses_what_does_not_fit() {
        let mut buf = [0u8; 64];
        let v6: SocketAddr = "[2001:db8::ffff:1:2:3]:65535".parse().unwrap();
        assert_eq!(
            display_in(&mut buf, v6),
            Some("[2001:db8::ffff:1:2:3]:65535")
        );
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(display_in(&mut buf, v4.ip()), Some("127.0.0.1"));
        let mut small = [0u8; 4];
        assert_eq!(display_in(&mut small, v4), None);
    }
}
