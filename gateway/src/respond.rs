//! The one place that turns an outcome into an HTTP response the gateway makes itself.
//!
//! Every such answer is JSON (`{"error": "<code>"}`, with an optional fixed `detail`),
//! serialized with serde, with `Content-Type: application/json` and
//! `Cache-Control: no-store`. Bodies never carry internals or anything the client sent.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Serialize;

use crate::proxy::ExtraHeaders;

/// Why the gateway answers a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid session on a route that requires one.
    Unauthenticated,
    /// Same, for a browser navigation with a login URL configured.
    LoginRedirect(Arc<str>),
    /// Cross-site unsafe request carrying the session cookie, or a bad exchange origin.
    Forbidden,
    /// A request the gateway will not interpret; the detail is a fixed phrase.
    BadRequest(&'static str),
    /// No route matches.
    NotFound,
    /// The method is not allowed on a gateway-owned endpoint; the methods that are.
    MethodNotAllowed(&'static str),
    /// An exchange body over its limit.
    PayloadTooLarge,
    /// Redis (or the signing keyring) is unavailable.
    Unavailable,
    /// The upstream could not be reached or failed.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
}

/// The JSON body of every refusal.
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated => 401,
            Refusal::LoginRedirect(_) => 302,
            Refusal::Forbidden => 403,
            Refusal::BadRequest(_) => 400,
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed(_) => 405,
            Refusal::PayloadTooLarge => 413,
            Refusal::Unavailable => 503,
            Refusal::BadGateway => 502,
            Refusal::GatewayTimeout => 504,
        }
    }

    /// The body's `error` code (SPEC's list).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated | Refusal::LoginRedirect(_) => "unauthenticated",
            Refusal::Forbidden => "forbidden",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed(_) => "method_not_allowed",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::Unavailable => "unavailable",
            Refusal::BadGateway => "bad_gateway",
            Refusal::GatewayTimeout => "gateway_timeout",
        }
    }

    /// A bounded label for metrics and logs (the code, but `login_redirect` for a
    /// redirect).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::LoginRedirect(_) => "login_redirect",
            other => other.code(),
        }
    }

    /// The response header and body.
    ///
    /// # Errors
    /// Only if a header value is invalid (a login URL with control characters, which
    /// config validation rejects).
    pub fn response(&self) -> pingora::Result<(ResponseHeader, Bytes)> {
        let detail = match self {
            Refusal::BadRequest(detail) => Some(*detail),
            _ => None,
        };
        let (mut header, body) = json(
            self.status(),
            &ErrorBody {
                error: self.code(),
                detail,
            },
        )?;
        match self {
            Refusal::LoginRedirect(location) => {
                header.insert_header("location", &**location)?;
            }
            Refusal::Unauthenticated => {
                header.insert_header("www-authenticate", "Cookie")?;
            }
            Refusal::MethodNotAllowed(allow) => {
                header.insert_header("allow", *allow)?;
            }
            _ => {}
        }
        Ok((header, body))
    }
}

/// A JSON response: `body` serialized, `Content-Type`, `Content-Length` and
/// `Cache-Control: no-store`.
///
/// # Errors
/// Only if the status is invalid.
pub fn json(status: u16, body: &impl Serialize) -> pingora::Result<(ResponseHeader, Bytes)> {
    // Serializing these plain structs cannot fail.
    let body = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let mut header = ResponseHeader::build(status, Some(6))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    Ok((header, body))
}

/// Writes `refusal` to the client. Returns the status written.
///
/// # Errors
/// When the client connection fails.
pub async fn send(
    session: &mut Session,
    refusal: &Refusal,
    extra: &ExtraHeaders<'_>,
) -> pingora::Result<u16> {
    let (header, body) = refusal.response()?;
    write(session, header, body, extra).await?;
    Ok(refusal.status())
}

/// Writes a complete response with `extra` headers (HSTS, the request id).
///
/// # Errors
/// When the client connection fails.
pub async fn write(
    session: &mut Session,
    mut header: ResponseHeader,
    body: Bytes,
    extra: &ExtraHeaders<'_>,
) -> pingora::Result<()> {
    extra.insert_into(&mut header)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_json_with_a_code_from_the_list() {
        let cases: &[(Refusal, u16, &str)] = &[
            (
                Refusal::Unauthenticated,
                401,
                r#"{"error":"unauthenticated"}"#,
            ),
            (
                Refusal::LoginRedirect("/login".into()),
                302,
                r#"{"error":"unauthenticated"}"#,
            ),
            (Refusal::Forbidden, 403, r#"{"error":"forbidden"}"#),
            (
                Refusal::BadRequest("path"),
                400,
                r#"{"error":"bad_request","detail":"path"}"#,
            ),
            (
                Refusal::BadRequest("expected {\"audience\": \"...\"}"),
                400,
                r#"{"error":"bad_request","detail":"expected {\"audience\": \"...\"}"}"#,
            ),
            (Refusal::NotFound, 404, r#"{"error":"not_found"}"#),
            (
                Refusal::MethodNotAllowed("GET, HEAD"),
                405,
                r#"{"error":"method_not_allowed"}"#,
            ),
            (
                Refusal::PayloadTooLarge,
                413,
                r#"{"error":"payload_too_large"}"#,
            ),
            (Refusal::Unavailable, 503, r#"{"error":"unavailable"}"#),
            (Refusal::BadGateway, 502, r#"{"error":"bad_gateway"}"#),
            (
                Refusal::GatewayTimeout,
                504,
                r#"{"error":"gateway_timeout"}"#,
            ),
        ];
        let codes = [
            "unauthenticated",
            "forbidden",
            "bad_request",
            "not_found",
            "method_not_allowed",
            "payload_too_large",
            "unavailable",
            "bad_gateway",
            "gateway_timeout",
        ];
        for (refusal, status, body) in cases {
            let (header, got) = refusal.response().unwrap();
            assert_eq!(header.status.as_u16(), *status);
            assert_eq!(&got[..], body.as_bytes());
            let parsed: serde_json::Value = serde_json::from_slice(&got).unwrap();
            assert!(
                codes.contains(&parsed["error"].as_str().unwrap()),
                "{refusal:?}"
            );
            assert_eq!(
                header.headers.get("content-type").unwrap(),
                "application/json"
            );
            assert_eq!(header.headers.get("cache-control").unwrap(), "no-store");
            assert_eq!(
                header
                    .headers
                    .get("content-length")
                    .unwrap()
                    .to_str()
                    .unwrap(),
                got.len().to_string()
            );
        }
        let (header, _) = Refusal::LoginRedirect("https://login.example/".into())
            .response()
            .unwrap();
        assert_eq!(
            header.headers.get("location").unwrap(),
            "https://login.example/"
        );
        let (header, _) = Refusal::MethodNotAllowed("POST").response().unwrap();
        assert_eq!(header.headers.get("allow").unwrap(), "POST");
    }
}
