//! SPEC "Exchange endpoint": `POST /auth/token` turns a session cookie into a JWT for a
//! configured audience (for SPAs): 200 with `access_token`, `token_type`, `expires_in`
//! and `Cache-Control: no-store`; 401 without a valid session; 403 for a bad origin;
//! 400 for an unknown audience.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    ALLOWED_ORIGIN, Route, Stack, Upstream, assert_eventually, assert_refusal, cookie_header,
    new_cookie, verify,
};

const PATH: &str = "/auth/token";

fn start() -> Stack {
    Stack::start(|b, up: &Upstream| {
        b.route(Route::new("orders", "/api/orders", &[up.addr()]).audience("orders-api"))
            .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
    })
}

fn exchange(
    s: &Stack,
    cookie: Option<&str>,
    origin: Option<&str>,
    body: &Value,
) -> reqwest::blocking::Response {
    let mut req = s
        .http
        .post(s.gw.url(PATH))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(c) = cookie {
        req = req.header("cookie", cookie_header(c));
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().expect("send")
}

#[test]
fn exchange_returns_a_verifiable_token_for_a_configured_audience() {
    let s = start();
    let cookie = s.login("user-spa");
    for (aud, _route) in [("orders-api", "orders"), ("billing", "billing")] {
        let resp = exchange(
            &s,
            Some(&cookie),
            Some(ALLOWED_ORIGIN),
            &json!({"audience": aud}),
        );
        assert_eq!(resp.status(), 200, "{aud}");
        let cc = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            cc.to_ascii_lowercase().contains("no-store"),
            "Cache-Control must be no-store, got {cc:?}"
        );
        let body: Value = resp.json().expect("JSON");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        assert_eq!(body["expires_in"], 300, "{body}");
        let token = body["access_token"].as_str().expect("access_token");
        let t = verify(token, &s.jwks(), aud, s.gw.issuer());
        assert_eq!(t.str("sub"), "user-spa");
        assert_eq!(t.u64("exp") - t.u64("iat"), 300);
    }
    assert_eq!(
        s.up.count(),
        0,
        "the exchange endpoint answers itself, it does not forward"
    );
}

/// The exchange endpoint mints for the request, even when the proxy keeps a token for
/// the same session and audience: `expires_in` is the whole lifetime, and the token is
/// not the one forwarded upstream a second earlier.
#[test]
fn exchange_mints_a_fresh_token_even_when_one_is_kept() {
    let s = start();
    let cookie = s.login("user-kept");
    // Not the first answer: a read that raced the invalidation of the login's own `SET`
    // is answered but not kept, and the next request mints again.
    s.warm("/api/orders/1", &cookie);
    let forwarded = s
        .echoed_bearer("/api/orders/1", &cookie)
        .expect("the cached route forwards a token");
    assert_eq!(
        s.echoed_bearer("/api/orders/2", &cookie).as_deref(),
        Some(forwarded.as_str()),
        "the cached route reuses its token"
    );
    // Into the next second, so that a reused token would have less than 300 s left.
    crate::harness::eventually::pause(Duration::from_millis(1100));
    let resp = exchange(
        &s,
        Some(&cookie),
        Some(ALLOWED_ORIGIN),
        &json!({"audience": "orders-api"}),
    );
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().expect("JSON");
    assert_eq!(body["expires_in"], 300, "{body}");
    let kept = forwarded.strip_prefix("Bearer ").expect("a bearer header");
    assert_ne!(body["access_token"].as_str(), Some(kept));
}

#[test]
fn exchange_refuses_missing_sessions_bad_origins_and_unknown_audiences() {
    let s = start();
    let cookie = s.login("user-spa");
    let body = json!({"audience": "orders-api"});
    // No cookie.
    assert_refusal(
        exchange(&s, None, Some(ALLOWED_ORIGIN), &body),
        401,
        "unauthenticated",
    );
    // Unknown session.
    assert_refusal(
        exchange(&s, Some(&new_cookie()), Some(ALLOWED_ORIGIN), &body),
        401,
        "unauthenticated",
    );
    // Foreign origin.
    assert_refusal(
        exchange(&s, Some(&cookie), Some("https://evil.example.com"), &body),
        403,
        "forbidden",
    );
    // Unknown audience.
    assert_refusal(
        exchange(
            &s,
            Some(&cookie),
            Some(ALLOWED_ORIGIN),
            &json!({"audience": "nobody"}),
        ),
        400,
        "bad_request",
    );
    s.redis.del(&s.key(&cookie));
    // Revocation reaches the exchange within the cache bound (cache_ttl 5 s).
    assert_eventually!(
        exchange(&s, Some(&cookie), Some(ALLOWED_ORIGIN), &body).status() == 401,
        Duration::from_secs(7),
        "revoked session"
    );
    assert_eq!(s.up.count(), 0);
}
