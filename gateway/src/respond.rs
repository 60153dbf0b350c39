//! The one place that turns a refusal into an HTTP response. Bodies never carry internals.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Why the gateway answers a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid session on a route that requires one.
    Unauthenticated,
    /// Same, for a browser navigation with a login URL configured.
    LoginRedirect(String),
    /// Cross-site unsafe request carrying the session cookie.
    Forbidden,
    /// A request the gateway will not interpret (bad path, oversized cookie header, bad body).
    BadRequest(&'static str),
    /// No route matches.
    NotFound,
    /// The method is not allowed on a gateway-owned endpoint.
    MethodNotAllowed,
    /// Redis (or the signing keyring) is unavailable.
    Unavailable,
    /// The upstream could not be reached or failed.
    BadGateway,
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
            Refusal::MethodNotAllowed => 405,
            Refusal::Unavailable => 503,
            Refusal::BadGateway => 502,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::LoginRedirect(_) => "login_redirect",
            Refusal::Forbidden => "forbidden",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::Unavailable => "unavailable",
            Refusal::BadGateway => "bad_gateway",
        }
    }

    fn body(&self) -> Bytes {
        match self {
            Refusal::LoginRedirect(_) => Bytes::new(),
            Refusal::BadRequest(detail) => {
                Bytes::from(format!(r#"{{"error":"bad_request","detail":"{detail}"}}"#))
            }
            other => Bytes::from(format!(r#"{{"error":"{}"}}"#, other.reason())),
        }
    }

    /// Builds the response header and body.
    ///
    /// # Errors
    /// Only if a header value is invalid (a login URL with control characters, which
    /// config validation rejects).
    pub fn response(&self) -> pingora::Result<(ResponseHeader, Bytes)> {
        let body = self.body();
        let mut header = ResponseHeader::build(self.status(), Some(4))?;
        if let Refusal::LoginRedirect(location) = self {
            header.insert_header("location", location.as_str())?;
        } else {
            header.insert_header("content-type", "application/json")?;
        }
        if matches!(self, Refusal::Unauthenticated) {
            header.insert_header("www-authenticate", "Cookie")?;
        }
        header.insert_header("content-length", body.len().to_string())?;
        header.insert_header("cache-control", "no-store")?;
        Ok((header, body))
    }
}

/// Writes `refusal` to the client. Returns the status written.
///
/// # Errors
/// When the client connection fails.
pub async fn send(
    session: &mut Session,
    refusal: &Refusal,
    hsts: Option<HeaderValue>,
) -> pingora::Result<u16> {
    let (header, body) = refusal.response()?;
    write(session, header, body, hsts).await?;
    Ok(refusal.status())
}

/// Writes a complete response, with `Strict-Transport-Security` when given.
///
/// # Errors
/// When the client connection fails.
pub async fn write(
    session: &mut Session,
    mut header: ResponseHeader,
    body: Bytes,
    hsts: Option<HeaderValue>,
) -> pingora::Result<()> {
    if let Some(hsts) = hsts {
        header.insert_header("strict-transport-security", hsts)?;
    }
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
    fn status_and_body_table() {
        let cases: &[(Refusal, u16, &str)] = &[
            (
                Refusal::Unauthenticated,
                401,
                r#"{"error":"unauthenticated"}"#,
            ),
            (Refusal::LoginRedirect("/login".into()), 302, ""),
            (Refusal::Forbidden, 403, r#"{"error":"forbidden"}"#),
            (
                Refusal::BadRequest("path"),
                400,
                r#"{"error":"bad_request","detail":"path"}"#,
            ),
            (Refusal::NotFound, 404, r#"{"error":"not_found"}"#),
            (Refusal::Unavailable, 503, r#"{"error":"unavailable"}"#),
            (Refusal::BadGateway, 502, r#"{"error":"bad_gateway"}"#),
        ];
        for (refusal, status, body) in cases {
            let (header, got) = refusal.response().unwrap();
            assert_eq!(header.status.as_u16(), *status);
            assert_eq!(&got[..], body.as_bytes());
            assert_eq!(header.headers.get("cache-control").unwrap(), "no-store");
        }
        let (header, _) = Refusal::LoginRedirect("https://login.example/".into())
            .response()
            .unwrap();
        assert_eq!(
            header.headers.get("location").unwrap(),
            "https://login.example/"
        );
    }
}
