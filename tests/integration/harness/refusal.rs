//! [`assert_refusal`]: SPEC "Responses of the gateway itself", checked on any answer the
//! gateway makes itself, whether it came through reqwest or was read off a raw socket.
//!
//! Such an answer has the expected status, `Content-Type: application/json`, and a body
//! that parses as a JSON object with `error` equal to one of SPEC's codes and at most a
//! string `detail` beside it. (Bytes that are not HTTP at all get Pingora's empty 400
//! instead: tests of those check the status only.)

use reqwest::blocking::Response;
use serde_json::Value;

use super::raw::RawResponse;

/// The codes SPEC lists for the gateway's own answers.
pub(crate) const CODES: [&str; 9] = [
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

/// An HTTP answer as [`assert_refusal`] reads it.
pub(crate) trait Answer {
    /// What was asked, when the answer knows it (for failure messages).
    fn request(&self) -> Option<String>;

    /// The status, the `Content-Type` header (if any) and the body.
    fn into_parts(self) -> (u16, Option<String>, Vec<u8>);
}

impl Answer for Response {
    fn request(&self) -> Option<String> {
        Some(self.url().to_string())
    }

    fn into_parts(self) -> (u16, Option<String>, Vec<u8>) {
        let status = self.status().as_u16();
        let content_type = self
            .headers()
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = self
            .bytes()
            .unwrap_or_else(|e| panic!("reading the body of a {status}: {e}"));
        (status, content_type, body.to_vec())
    }
}

impl Answer for &RawResponse {
    fn request(&self) -> Option<String> {
        None
    }

    fn into_parts(self) -> (u16, Option<String>, Vec<u8>) {
        (
            self.status,
            self.header("content-type").map(str::to_owned),
            self.body.clone(),
        )
    }
}

/// Asserts a refusal: `status`, `Content-Type: application/json`, and a body that parses
/// as JSON with `error` = `code` (one of SPEC's) and nothing but a string `detail` beside.
/// Returns the parsed body.
///
/// # Panics
/// If any of that does not hold, with the body in the message.
#[track_caller]
pub(crate) fn assert_refusal(resp: impl Answer, status: u16, code: &str) -> Value {
    assert!(CODES.contains(&code), "{code} is not one of SPEC's codes");
    let of = resp
        .request()
        .map(|r| format!(" of {r}"))
        .unwrap_or_default();
    let (got, content_type, body) = resp.into_parts();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(got, status, "the status{of}; body {body:?}");
    assert!(
        content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "a {status}{of} with content-type {content_type:?}; body {body:?}"
    );
    let parsed: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the body of a {status}{of}, {body:?}, is not JSON: {e}"));
    assert_eq!(parsed["error"], code, "the code{of}; body {body}");
    let object = parsed.as_object().expect("an object");
    assert!(
        object.keys().all(|k| k == "error" || k == "detail"),
        "only error and detail{of}; body {body}"
    );
    if let Some(detail) = object.get("detail") {
        assert!(detail.is_string(), "a string detail{of}; body {body}");
    }
    parsed
}
