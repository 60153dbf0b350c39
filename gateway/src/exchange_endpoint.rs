//! The token exchange endpoint (`POST {exchange.path}`): a session cookie in, a JWT for
//! one route's audience out, for single-page apps that call services themselves.
//!
//! The same decision as a proxied request to that route ([`crate::decide`]), with the
//! route's `auth` taken as `required`: a critical route checks Redis live. The `Origin`
//! must be allowed (CORS preflights are answered here); the body must be a JSON object
//! with a string `audience` and nothing else, at most 4 KiB.

use http::Method;
use http::header::COOKIE;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use serde::Serialize;

use crate::config::AuthMode;
use crate::decide;
use crate::http::cookie;
use crate::proxy::{Answer, Authorized, Gateway, RequestCtx, origin_allowed};
use crate::respond::{self, Refusal};

/// Largest accepted body.
pub const MAX_BODY: usize = 4096;

/// What a refused body is told.
const EXPECTED: &str = "expected {\"audience\": \"...\"}";

/// The answer to a successful exchange.
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
}

/// Serves one request to the exchange endpoint.
///
/// # Errors
/// When the client connection fails.
pub async fn serve(gw: &Gateway, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let settings = ctx.settings()?.clone();
    let req = session.req_header();
    let origin = req.headers.get("origin").cloned();
    if req.method == Method::OPTIONS {
        return preflight(gw, session, ctx, origin, &settings.allowed_origins).await;
    }
    if req.method != Method::POST {
        return gw
            .refuse(session, ctx, Refusal::MethodNotAllowed("POST, OPTIONS"))
            .await;
    }
    if !origin_allowed(req, &settings.allowed_origins) {
        return gw.refuse(session, ctx, Refusal::Forbidden).await;
    }
    let (presented, total) = cookie::find(req.headers.get_all(COOKIE).iter(), &settings.cookie);
    if total > settings.max_cookie_header_bytes {
        return gw
            .refuse(session, ctx, Refusal::BadRequest("cookie header too large"))
            .await;
    }
    // Copied out of the request before the body is read.
    let presented = presented.map(str::to_owned);
    let Some(body) = read_body(session, MAX_BODY).await? else {
        return gw.refuse(session, ctx, Refusal::PayloadTooLarge).await;
    };
    let Some(audience) = parse_audience(&body) else {
        return gw.refuse(session, ctx, Refusal::BadRequest(EXPECTED)).await;
    };
    let route = gw.routes.load().by_audience(&audience).cloned();
    let Some(route) = route else {
        return gw
            .refuse(session, ctx, Refusal::BadRequest("unknown audience"))
            .await;
    };
    ctx.route = Some(route.clone());
    let request = decide::Request {
        auth: AuthMode::Required,
        critical: route.critical,
        cross_site: false,
        login: None,
    };
    // Always a fresh token: the client asked for one, and `expires_in` is then the
    // route's whole token lifetime, as SPEC shows it.
    let jwt = match gw
        .authorize(ctx, &route, request, presented.as_ref(), true)
        .await
    {
        Authorized::Refuse(refusal) => return gw.refuse(session, ctx, refusal).await,
        Authorized::Forward(Some(jwt)) => jwt,
        Authorized::Forward(None) => {
            return Err(Error::explain(
                ErrorType::InternalError,
                "exchange without a token",
            ));
        }
    };
    let body = TokenResponse {
        access_token: jwt.jwt(),
        token_type: "Bearer",
        // Minted just now for the route's lifetime: exactly that, even if a second
        // boundary passed since.
        expires_in: route.token_ttl.as_secs(),
    };
    let (mut header, body) = respond::json(200, &body)?;
    if let Some(origin) = origin {
        header.insert_header("access-control-allow-origin", origin)?;
        header.insert_header("access-control-allow-credentials", "true")?;
        header.insert_header("vary", "Origin")?;
    }
    respond::write(session, header, body, &ctx.extra_headers()).await?;
    ctx.answer = Answer::Exchange;
    Ok(true)
}

/// Answers a CORS preflight: 204 for an allowed origin, else 403.
async fn preflight(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    origin: Option<http::HeaderValue>,
    allowed: &[String],
) -> Result<bool> {
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
    let Some(origin) = origin.filter(|_| allowed) else {
        return gw.refuse(session, ctx, Refusal::Forbidden).await;
    };
    let mut header = pingora::http::ResponseHeader::build(204, Some(6))?;
    header.insert_header("access-control-allow-origin", origin)?;
    header.insert_header("access-control-allow-credentials", "true")?;
    header.insert_header("access-control-allow-methods", "POST")?;
    header.insert_header("access-control-allow-headers", "content-type")?;
    header.insert_header("access-control-max-age", "600")?;
    header.insert_header("vary", "Origin")?;
    respond::write(session, header, bytes::Bytes::new(), &ctx.extra_headers()).await?;
    ctx.answer = Answer::Preflight;
    Ok(true)
}

/// The request body, or `None` when it is longer than `limit`.
async fn read_body(session: &mut Session, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The audience of a body that is exactly `{"audience": "<string>"}`.
fn parse_audience(body: &[u8]) -> Option<String> {
    // A map, not a derived struct: serde's derive also accepts `["orders"]` for a struct.
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    if object.len() != 1 {
        return None;
    }
    match object.remove("audience")? {
        serde_json::Value::String(audience) => Some(audience),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_object_with_a_string_audience_is_accepted() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"audience":"orders"}"#, Some("orders")),
            (r#" { "audience" : "a\"b" } "#, Some("a\"b")),
            (r#"["orders"]"#, None),
            (r#""orders""#, None),
            (r#"{"audience":["orders"]}"#, None),
            (r#"{"audience":7}"#, None),
            (r#"{"audience":null}"#, None),
            (r#"{"audience":"orders","extra":1}"#, None),
            (r#"{"aud":"orders"}"#, None),
            (r#"{}"#, None),
            ("", None),
            ("{", None),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse_audience(body.as_bytes()).as_deref(),
                *expected,
                "{body}"
            );
        }
    }
}
