//! Serving the JWKS over HTTP: `Cache-Control`, a strong `ETag`, and 304 on `If-None-Match`.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};

/// Where the JWKS is served, on both listeners.
pub const PATH: &str = "/.well-known/jwks.json";

/// Upper bound on the JWKS `max-age`, whatever `publish_ahead` is.
pub const MAX_AGE_CAP: Duration = Duration::from_secs(300);

/// The `max-age` for a given `publish_ahead`: at most half of it (so a verifier's cached
/// copy is refreshed at least once while a new key waits to sign) and at most 5 minutes.
pub fn max_age(publish_ahead: Duration) -> Duration {
    (publish_ahead / 2).min(MAX_AGE_CAP)
}

/// Whether an `If-None-Match` value matches `etag` (strong or weak comparison, lists, `*`).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// Builds the JWKS response for `req`.
///
/// # Errors
/// Only on an invalid header value, which cannot happen for the values built here.
pub fn response(
    jwks: &keys::Jwks,
    req: &RequestHeader,
    max_age: Duration,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let not_modified = req
        .headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, jwks.etag()));
    let body = if not_modified {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(jwks.body())
    };
    let mut header = ResponseHeader::build(if not_modified { 304 } else { 200 }, Some(5))?;
    header.insert_header("etag", jwks.etag())?;
    header.insert_header(
        "cache-control",
        format!("public, max-age={}", max_age.as_secs()),
    )?;
    if !not_modified {
        header.insert_header("content-type", "application/json")?;
        header.insert_header("content-length", body.len().to_string())?;
    }
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching_table() {
        let etag = "\"abc\"";
        let cases = [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"abd\"", false),
            ("abc", false),
            ("", false),
        ];
        for (header, expected) in cases {
            assert_eq!(etag_matches(header, etag), expected, "{header}");
        }
    }

    #[test]
    fn max_age_never_exceeds_publish_ahead() {
        for secs in [1u64, 2, 60, 600, 1800, 86_400] {
            let ahead = Duration::from_secs(secs);
            assert!(max_age(ahead) <= ahead);
            assert!(max_age(ahead) <= MAX_AGE_CAP);
        }
    }
}
