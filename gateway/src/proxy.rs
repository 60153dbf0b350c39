//! The Pingora proxy: `ProxyHttp` for sessiongate.
//!
//! Request path: the request target (host, normalized path) → gateway-owned endpoints
//! (JWKS, token exchange) → route match → the session cookie → [`mod@decide`] (origin check,
//! auth mode, session lookup: live on critical routes, cached elsewhere) → a token →
//! forward with `Authorization: Bearer`. Every answer the gateway makes itself goes
//! through [`respond`]; `request_filter` writes it and returns `Ok(true)`, and only true
//! failures reach `fail_to_proxy`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use exchange::{Exchange, Outcome, SessionLookup};
use http::header::{AUTHORIZATION, COOKIE, HOST};
use http::{HeaderValue, Method};
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use tracing::{info, warn};

use crate::config::{AuthMode, Config};
use crate::decide::{self, Step, decide};
use crate::http::cookie::{self, Presented, Stripped};
use crate::http::forwarding::{self, RequestIds};
use crate::http::target;
use crate::jwks;
use crate::metrics::Metrics;
use crate::respond::{self, Refusal};
use crate::route::{Route, RouteTable};
use crate::telemetry;

/// Settings the proxy reads per request, swapped whole on reload.
pub struct ProxySettings {
    /// Name of the session cookie.
    pub cookie: String,
    /// Whether the session cookie reaches upstreams.
    pub forward_cookie: bool,
    /// Where browsers without a session are sent.
    pub login_url: Option<Arc<str>>,
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
    /// Peers whose forwarding headers are extended rather than replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// `session.stream_recheck`: how often open connections re-check without push.
    pub stream_recheck: Duration,
    /// `session.cache_ttl`: the bound of open connections on non-critical routes.
    pub cache_ttl: Duration,
}

impl ProxySettings {
    /// Extracts the proxy's settings from a validated config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            cookie: config.session.cookie.clone(),
            forward_cookie: config.session.forward_cookie,
            login_url: config.session.login_url.as_deref().map(Arc::from),
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
            trusted_proxies: config.server.trusted_proxies.clone(),
            stream_recheck: config.session.stream_recheck,
            cache_ttl: config.session.cache_ttl,
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
    /// Fresh `X-Request-Id`s.
    pub request_ids: RequestIds,
    /// Connects the WebSocket tunnels the gateway owns ([`crate::tunnel`]).
    pub tunnels: Arc<pingora::connectors::TransportConnector>,
}

/// What the request's session turned out to be, for the access line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Not looked at (no route, or a gateway endpoint answered first).
    NotLooked,
    /// The route does not authenticate (`auth = "none"`).
    Skipped,
    /// No session cookie.
    Absent,
    /// The lookup's outcome.
    Looked(Outcome),
}

impl SessionState {
    /// A bounded label for logs.
    pub fn label(self) -> &'static str {
        match self {
            SessionState::NotLooked => "none",
            SessionState::Skipped => "skipped",
            SessionState::Absent => "absent",
            SessionState::Looked(outcome) => outcome.label(),
        }
    }
}

/// The end of [`Gateway::authorize`].
pub(crate) enum Authorized {
    /// Refuse the request.
    Refuse(Refusal),
    /// Forward it, with this token if any.
    Forward(Option<exchange::SignedJwt>),
}

/// Who answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The upstream (or it was meant to).
    Upstream,
    /// The gateway refused it.
    Refused(Refusal),
    /// The gateway served the JWKS.
    Jwks,
    /// The gateway's token exchange endpoint answered.
    Exchange,
    /// The gateway answered a CORS preflight.
    Preflight,
}

impl Answer {
    /// A bounded label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Answer::Upstream => "upstream",
            Answer::Refused(refusal) => refusal.label(),
            Answer::Jwks => "jwks",
            Answer::Exchange => "exchange",
            Answer::Preflight => "preflight",
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) settings: Option<Arc<ProxySettings>>,
    /// The origin-form target to forward, when not the request's own.
    forward_uri: Option<http::Uri>,
    /// The `Host` to forward, when not the request's own.
    forward_host: Option<HeaderValue>,
    /// The authority the route was chosen by (for `X-Forwarded-Host`).
    host: Option<HeaderValue>,
    bearer: Option<Bytes>,
    pub(crate) kid: Option<keys::Kid>,
    pub(crate) session: SessionState,
    pub(crate) answer: Answer,
    request_id: Option<HeaderValue>,
    upstream: Option<SocketAddr>,
    /// The chosen upstream's address as text, for the access log.
    upstream_label: Option<Arc<str>>,
    tries: usize,
    /// The WebSocket or stream being watched.
    watched: Option<crate::stream::Watched>,
}

impl RequestCtx {
    pub(crate) fn settings(&self) -> Result<&Arc<ProxySettings>> {
        self.settings
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "settings not loaded"))
    }

    /// Upstream connection attempts so far.
    pub(crate) fn tries(&self) -> usize {
        self.tries
    }

    /// Whether a valid session was found for the request (a long-lived response then
    /// lives under it).
    pub(crate) fn session_valid(&self) -> bool {
        matches!(self.session, SessionState::Looked(Outcome::Valid))
    }

    /// The request id, for logs.
    pub(crate) fn request_id_str(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// How long a connection on `route` may outlive Redis, and how often it re-checks
    /// while the push channel is down (SPEC "Long-lived connections").
    pub(crate) fn watch_bounds(&self, route: &Route) -> Result<exchange::watch::Bounds> {
        let settings = self.settings()?;
        Ok(if route.critical {
            exchange::watch::Bounds {
                unavailable_for: settings.stream_recheck,
                recheck_every: settings.stream_recheck,
            }
        } else {
            exchange::watch::Bounds {
                unavailable_for: settings.cache_ttl,
                recheck_every: settings.stream_recheck.min(settings.cache_ttl),
            }
        })
    }

    /// Headers every answer carries, the gateway's own and the upstream's: HSTS and the
    /// request id. An array, not a list: the proxy asks for it on every response.
    pub(crate) fn extra_headers(&self) -> ExtraHeaders<'_> {
        let hsts = self.settings.as_ref().and_then(|s| s.hsts.as_ref());
        ExtraHeaders {
            headers: [
                (forwarding::wire::STRICT_TRANSPORT_SECURITY, hsts),
                (forwarding::wire::X_REQUEST_ID, self.request_id.as_ref()),
            ],
        }
    }
}

/// The headers every response gets besides its own: HSTS and the request id.
pub struct ExtraHeaders<'a> {
    headers: [(&'static str, Option<&'a HeaderValue>); 2],
}

impl ExtraHeaders<'_> {
    /// Sets each header that has a value on `response` (replacing one of the same name).
    ///
    /// # Errors
    /// If Pingora refuses a header (it does not for these names and values).
    pub fn insert_into(&self, response: &mut ResponseHeader) -> Result<()> {
        for &(name, value) in &self.headers {
            if let Some(value) = value {
                response.insert_header(name, value.clone())?;
            }
        }
        Ok(())
    }
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether an unsafe request carrying the session cookie comes from an allowed origin.
pub(crate) fn origin_allowed(req: &RequestHeader, allowed: &[String]) -> bool {
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

impl Gateway {
    /// Writes `refusal`, counts it, and ends the request.
    pub(crate) async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        let route = ctx.route.as_ref().map_or("none", |r| &r.name);
        self.metrics
            .auth_refusals
            .with_label_values(&[route, refusal.label()])
            .inc();
        respond::send(session, &refusal, &ctx.extra_headers()).await?;
        ctx.answer = Answer::Refused(refusal);
        Ok(true)
    }

    /// Looks the session up and decides, until the request is to be forwarded (with the
    /// token minted for it, if any) or refused. Writes nothing: the caller answers.
    /// `fresh`: the token is minted for this request even where one may be reused.
    pub(crate) async fn authorize(
        &self,
        ctx: &mut RequestCtx,
        route: &Route,
        request: decide::Request<'_>,
        presented: Presented<'_>,
        fresh: bool,
    ) -> Authorized {
        let mut state = match presented {
            Presented::Absent => decide::Session::Absent,
            _ => decide::Session::Presented,
        };
        ctx.session = match (route.auth, presented) {
            (AuthMode::None, _) => SessionState::Skipped,
            (_, Presented::Absent) => SessionState::Absent,
            _ => SessionState::NotLooked,
        };
        loop {
            match decide(&request, &state) {
                Step::Lookup(freshness) => {
                    let lookup = match presented {
                        Presented::Value(cookie) => self.exchange.lookup(cookie, freshness).await,
                        _ => self.exchange.unreadable_cookie(),
                    };
                    ctx.session = SessionState::Looked(lookup.outcome());
                    if let SessionLookup::Unavailable(e) = &lookup {
                        warn!(route = %route.name, error = %e, kind = e.kind(), "Session lookup failed; refusing with 503.");
                    }
                    state = decide::Session::Looked(lookup);
                }
                Step::Forward { token: false } => return Authorized::Forward(None),
                Step::Forward { token: true } => {
                    let decide::Session::Looked(SessionLookup::Valid(valid)) = &state else {
                        // decide() forwards with a token only for a valid session.
                        return Authorized::Refuse(Refusal::Unauthenticated);
                    };
                    let minted = if fresh {
                        self.exchange
                            .fresh_token(valid, &route.audience, route.token_ttl)
                    } else {
                        self.exchange.token(valid, &route.audience, route.token_ttl)
                    };
                    return match minted {
                        Ok(jwt) => {
                            ctx.kid = Some(jwt.kid().clone());
                            Authorized::Forward(Some(jwt))
                        }
                        Err(e) => {
                            warn!(route = %route.name, error = %e, kind = e.kind(), "Signing failed; refusing with 503.");
                            Authorized::Refuse(Refusal::Unavailable)
                        }
                    };
                }
                Step::Refuse(refusal) => return Authorized::Refuse(refusal),
            }
        }
    }

    async fn serve_jwks(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if !matches!(session.req_header().method, Method::GET | Method::HEAD) {
            return self
                .refuse(session, ctx, Refusal::MethodNotAllowed("GET, HEAD"))
                .await;
        }
        let max_age = ctx.settings()?.jwks_max_age;
        let set = self.exchange.minter().keyring().load_full();
        let (header, body) = jwks::response(set.jwks(), session.req_header(), max_age)?;
        respond::write(session, header, body, &ctx.extra_headers()).await?;
        ctx.answer = Answer::Jwks;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            route: None,
            settings: None,
            forward_uri: None,
            forward_host: None,
            host: None,
            bearer: None,
            kid: None,
            session: SessionState::NotLooked,
            answer: Answer::Upstream,
            request_id: None,
            upstream: None,
            upstream_label: None,
            tries: 0,
            watched: None,
        }
    }

    /// No downstream modules. Pingora's default installs its response compression
    /// module, disabled, which still builds a context for every request and runs its
    /// header filters (three allocations a request); the gateway never compresses: bodies
    /// pass through byte for byte.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Instant::now();
        let settings = self.settings.load_full();
        ctx.settings = Some(settings.clone());
        let req = session.req_header();
        ctx.request_id = Some(
            forwarding::client_request_id(req)
                .cloned()
                .unwrap_or_else(|| self.request_ids.next()),
        );

        let target = match target::parse(req) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .refuse(session, ctx, Refusal::BadRequest(e.detail()))
                    .await;
            }
        };
        // The rare paths are boxed: their futures would otherwise make every request's
        // future larger, and it is allocated and copied on each request.
        if target.path.as_str() == jwks::PATH {
            return Box::pin(self.serve_jwks(session, ctx)).await;
        }
        if settings.exchange_path.as_deref() == Some(target.path.as_str()) {
            return Box::pin(crate::exchange_endpoint::serve(self, session, ctx)).await;
        }
        let routes = self.routes.load();
        let Some(route) = routes.find(target.host.as_deref(), &target.path).cloned() else {
            return self.refuse(session, ctx, Refusal::NotFound).await;
        };
        ctx.route = Some(route.clone());
        // X-Forwarded-Host: the authority the route was chosen by, as the client sent it
        // (its port included) unless normalizing changed it.
        ctx.host = target
            .forward_host
            .clone()
            .or_else(|| req.headers.get(HOST).cloned());
        ctx.forward_uri = target.forward_uri;
        ctx.forward_host = target.forward_host;

        let (presented, total) = cookie::find(req.headers.get_all(COOKIE).iter(), &settings.cookie);
        if total > settings.max_cookie_header_bytes {
            return self
                .refuse(session, ctx, Refusal::BadRequest("cookie header too large"))
                .await;
        }
        let request = decide::Request {
            auth: route.auth,
            critical: route.critical,
            cross_site: is_unsafe(&req.method) && !origin_allowed(req, &settings.allowed_origins),
            login: settings.login_url.as_ref().filter(|_| is_navigation(req)),
        };
        // WebSocket upgrades run through the gateway's own tunnel (crate::tunnel).
        let upgrade = forwarding::is_upgrade(req)
            && req
                .headers
                .get(http::header::UPGRADE)
                .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        match self.authorize(ctx, &route, request, presented, false).await {
            Authorized::Refuse(refusal) => self.refuse(session, ctx, refusal).await,
            Authorized::Forward(jwt) => {
                ctx.bearer = jwt.map(|jwt| jwt.framed().clone());
                if upgrade {
                    let tunnels = self.tunnels.clone();
                    return Box::pin(crate::tunnel::serve(self, &tunnels, session, ctx)).await;
                }
                Ok(false)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.choose_peer(ctx)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.prepare_upstream_request(session, upstream, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.extra_headers().insert_into(upstream_response)?;
        if ctx.session_valid() {
            self.watch_if_long_lived(session, upstream_response, ctx);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(watched) = &ctx.watched {
            if let Some(reason) = watched.ended() {
                // A stream whose connection could not be shut from outside (HTTP/2) ends
                // here, at its next chunk: an abort, never a clean end.
                return Err(Error::explain(ErrorType::ConnectionClosed, reason.label()));
            }
            watched.sent(body.as_deref().unwrap_or_default(), end_of_stream);
        }
        Ok(None)
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
        let refusal = failure_refusal(e);
        // Connect failures (TLS handshakes and certificate checks included) were counted
        // in fail_to_connect; count the rest here.
        if let Some(route) = ctx
            .route
            .as_ref()
            .filter(|_| matches!(e.esource(), ErrorSource::Upstream) && !is_connect_failure(e))
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
        let code = if downstream_dead || session.response_written().is_some() {
            0
        } else {
            let status = refusal.status();
            // The connection is not reused after this answer (below): say so with
            // `Connection: close`, or a keep-alive client races the close with its next
            // request, which then fails unanswered (found by the fault suite, 8c).
            session.set_keepalive(None);
            if let Err(write_err) = respond::send(session, &refusal, &ctx.extra_headers()).await {
                warn!(error = %write_err, "Could not write the error response.");
            }
            ctx.answer = Answer::Refused(refusal);
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
        if let Some(watched) = ctx.watched.take() {
            // Before Pingora releases the connection: the watch can no longer touch it.
            let client_failed = e.is_some_and(|e| matches!(e.esource(), ErrorSource::Downstream));
            let (reason, lived) = watched.finish(client_failed);
            self.metrics
                .connections_open
                .with_label_values(&[route])
                .dec();
            self.metrics
                .connections_closed
                .with_label_values(&[route, reason.label()])
                .inc();
            info!(
                target: "sessiongate::connection",
                route,
                reason = reason.label(),
                duration_ms = lived.as_secs_f64() * 1000.0,
                request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                "connection ended"
            );
        }
        let elapsed = ctx.started.elapsed();
        match &ctx.route {
            Some(r) if status == 200 => r.served_ok.inc(),
            _ => self
                .metrics
                .requests
                .with_label_values(&[route, status_label(status)])
                .inc(),
        }
        match &ctx.route {
            Some(r) => r.duration.observe(elapsed.as_secs_f64()),
            None => self
                .metrics
                .request_duration
                .with_label_values(&["none"])
                .observe(elapsed.as_secs_f64()),
        }
        // One access line per request. Never a cookie, token, key or query string.
        telemetry::access(&telemetry::Access {
            method: session.req_header().method.as_str(),
            route,
            status,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            session: ctx.session.label(),
            upstream: ctx.upstream_label.as_deref().unwrap_or("-"),
            kid: ctx.kid.as_ref().map_or("-", |k| k.as_str()),
            answered_by: ctx.answer.label(),
            error: e.map(|e| e.etype().as_str()).unwrap_or("-"),
            request_id: ctx
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
        });
    }
}

impl Gateway {
    /// The next upstream of the request's route, with the route's timeouts and trust.
    pub(crate) fn choose_peer(&self, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
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
        peer.options.connection_timeout = Some(route.connect_timeout);
        peer.options.total_connection_timeout = Some(route.connect_timeout);
        peer.options.read_timeout = Some(route.read_timeout);
        Ok(Box::new(peer))
    }

    /// The request as the upstream gets it: hop-by-hop and forwarding headers replaced,
    /// the client's credentials replaced by the bearer, the session cookie stripped, the
    /// request id, the origin-form target and the `Host` the route was chosen by.
    pub(crate) fn prepare_upstream_request(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let settings = ctx.settings()?.clone();
        // First, so that no header the client names in `Connection` can remove ours.
        forwarding::strip_hop_by_hop(upstream);
        // The session cookie goes before the bearer comes: a header removed leaves room
        // in the map for those added.
        if !settings.forward_cookie {
            match cookie::strip(upstream.headers.get_all(COOKIE).iter(), &settings.cookie) {
                Stripped::Unchanged => {}
                Stripped::Empty => {
                    upstream.remove_header(&COOKIE);
                }
                // Replaces every Cookie header the client sent.
                Stripped::Joined(value) => {
                    upstream.insert_header(forwarding::wire::COOKIE, value)?
                }
            }
        }
        // Never forward the client's own credentials: the bearer replaces every
        // Authorization header the client sent (insert replaces), or they are removed.
        // An error here fails the request, so nothing is forwarded with them.
        match &ctx.bearer {
            Some(bearer) => {
                let value = HeaderValue::from_maybe_shared(bearer.clone())
                    .map_err(|e| Error::because(ErrorType::InternalError, "bearer header", e))?;
                upstream.insert_header(forwarding::wire::AUTHORIZATION, value)?;
            }
            None => {
                upstream.remove_header(&AUTHORIZATION);
            }
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(SocketAddr::ip);
        let origin = forwarding::Origin {
            peer,
            trusted: forwarding::is_trusted(peer, &settings.trusted_proxies),
            tls: settings.tls,
            host: ctx.host.as_ref(),
        };
        forwarding::set_forwarding(upstream, &origin)?;
        if let Some(id) = &ctx.request_id {
            upstream.insert_header(forwarding::wire::X_REQUEST_ID, id.clone())?;
        }
        if let Some(uri) = ctx.forward_uri.take() {
            upstream.set_uri(uri);
        }
        if let Some(host) = ctx.forward_host.clone() {
            upstream.insert_header(HOST, host)?;
        }
        Ok(())
    }

    /// Starts watching a WebSocket (after its 101) or a streamed response opened under a
    /// valid session, so that it ends when the session does (see [`crate::stream`]).
    fn watch_if_long_lived(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) {
        let req = session.req_header();
        let websocket = response.status.as_u16() == 101;
        let streamed = !websocket
            && req.method != Method::HEAD
            && !matches!(response.status.as_u16(), 204 | 304)
            && (response
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
                || !response.headers.contains_key(http::header::CONTENT_LENGTH));
        let (Some(route), Some(settings)) = (ctx.route.clone(), ctx.settings.clone()) else {
            return;
        };
        if !(websocket || streamed) || route.auth == AuthMode::None {
            return;
        }
        let (Presented::Value(cookie), _) =
            cookie::find(req.headers.get_all(COOKIE).iter(), &settings.cookie)
        else {
            return;
        };
        let downstream = session.as_downstream();
        // HTTP/1: the client socket. HTTP/2 streams share a connection: none (the stream
        // is ended at its next chunk instead).
        let socket = downstream
            .stream()
            .map(|s| s.as_ref().id())
            .and_then(|fd| Some((fd, pingora::protocols::l4::ext::get_socket_cookie(fd).ok()?)));
        let tls = downstream.digest().is_some_and(|d| d.ssl_digest.is_some());
        let Ok(bounds) = ctx.watch_bounds(&route) else {
            return;
        };
        self.metrics
            .connections_open
            .with_label_values(&[&route.name])
            .inc();
        ctx.watched = Some(crate::stream::Watched::start(
            self.exchange.clone(),
            crate::stream::Watch {
                cookie,
                socket,
                tls,
                websocket,
                bounds,
                lifetime: route.max_connection_lifetime,
            },
        ));
    }
}

/// Whether an error happened while connecting to the upstream.
fn is_connect_failure(e: &Error) -> bool {
    matches!(
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
    )
}

/// What a proxying failure answers: 504 when the upstream did not answer in time, 502
/// for any other upstream failure (a connect timeout included), 400 for a request the
/// HTTP layer could not read.
fn failure_refusal(e: &Error) -> Refusal {
    match (e.esource(), e.etype()) {
        (_, ErrorType::HTTPStatus(400)) => Refusal::BadRequest("malformed request"),
        (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
            Refusal::GatewayTimeout
        }
        (ErrorSource::Downstream, _) => Refusal::BadRequest("malformed request"),
        _ => Refusal::BadGateway,
    }
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
    fn failures_map_to_502_504_or_400() {
        let cases = [
            (ErrorSource::Upstream, ErrorType::ReadTimedout, 504),
            (ErrorSource::Upstream, ErrorType::WriteTimedout, 504),
            (ErrorSource::Upstream, ErrorType::ConnectTimedout, 502),
            (ErrorSource::Upstream, ErrorType::ConnectRefused, 502),
            (ErrorSource::Upstream, ErrorType::ConnectionClosed, 502),
            (ErrorSource::Upstream, ErrorType::InvalidHTTPHeader, 502),
            (ErrorSource::Downstream, ErrorType::InvalidHTTPHeader, 400),
            (ErrorSource::Internal, ErrorType::HTTPStatus(400), 400),
            (ErrorSource::Internal, ErrorType::InternalError, 502),
        ];
        for (source, etype, status) in cases {
            let e = Error::create(etype.clone(), source.clone(), None, None);
            assert_eq!(failure_refusal(&e).status(), status, "{source:?} {etype:?}");
        }
    }

    #[test]
    fn labels_come_from_the_types() {
        assert_eq!(SessionState::Looked(Outcome::Unavailable).label(), "error");
        assert_eq!(SessionState::Absent.label(), "absent");
        assert_eq!(
            Answer::Refused(Refusal::LoginRedirect("/l".into())).label(),
            "login_redirect"
        );
        assert_eq!(
            Answer::Refused(Refusal::GatewayTimeout).label(),
            "gateway_timeout"
        );
        assert_eq!(Answer::Upstream.label(), "upstream");
    }
}
