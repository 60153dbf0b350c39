//! SPEC "Responses of the gateway itself": one or more tests per row of the table, plus
//! the `auth = "none"` / `"optional"` behaviour of routes.
//!
//! Every refusal also checks that the upstream saw nothing: SPEC "The gateway never
//! forwards a request on an `auth = required` route without a session it has validated".

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::ports::dead_addr;
use crate::harness::{
    ALLOWED_ORIGIN, GatewayBuilder, RedisServer, Route, Stack, Upstream, assert_eventually,
    assert_refusal, client, cookie_header, new_cookie, now, raw, session_json, session_key,
};

/// `orders`: required, not critical; `billing`: required, critical; `public`: none.
fn standard(b: GatewayBuilder, up: &Upstream) -> GatewayBuilder {
    b.route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
        .route(Route::new("public", "/public", &[up.addr()]).auth("none"))
}

#[test]
fn required_route_without_cookie_is_401_json_and_never_forwarded() {
    let s = Stack::start(standard);
    assert_refusal(s.get("/api/orders/7", None), 401, "unauthenticated");
    assert_refusal(s.get("/api/billing", None), 401, "unauthenticated");
    // Other cookies are not a session.
    let resp = s
        .http
        .get(s.gw.url("/api/orders"))
        .header("cookie", "theme=dark; lang=en")
        .send()
        .expect("send");
    assert_refusal(resp, 401, "unauthenticated");
    // No login_url configured: a browser navigation gets the 401 too.
    let resp = s
        .http
        .get(s.gw.url("/api/orders"))
        .header("accept", "text/html")
        .send()
        .expect("send");
    assert_refusal(resp, 401, "unauthenticated");
    assert_eq!(
        s.up.count(),
        0,
        "the upstream must not see unauthenticated requests"
    );
}

#[test]
fn malformed_cookies_are_401_without_any_redis_lookup() {
    let s = Stack::start(standard);
    let too_long = "a".repeat(513);
    let malformed = [
        "",
        "abcdefghijklmno",            // 15 characters
        too_long.as_str(),            // 513 characters
        "abcdefghijklmnop+/==",       // standard base64, not base64url
        "abcdefghijklmnopqrs!",       // '!'
        "abcdefghijklmnop%41%41",     // percent-encoded
        "abcdefghij\"klmnopqrstuv\"", // quotes inside
    ];
    let before = s.redis.key_lookups();
    for value in malformed {
        let resp = s
            .http
            .get(s.gw.url("/api/orders"))
            .header("cookie", format!("__Host-session={value}"))
            .send()
            .expect("send");
        assert_refusal(resp, 401, "unauthenticated");
    }
    let after = s.redis.key_lookups();
    assert_eq!(
        before, after,
        "malformed cookies must be rejected before any Redis call"
    );
    assert_eq!(s.up.count(), 0);

    // Control: well-formed but unknown cookies at both length limits do reach Redis,
    // so the counter above would have moved.
    for value in ["a".repeat(16), "Zz09_-.~".repeat(64)] {
        assert!((16..=512).contains(&value.len()));
        assert_refusal(s.get("/api/billing", Some(&value)), 401, "unauthenticated");
    }
    assert!(
        s.redis.key_lookups() > after,
        "well-formed cookies must be looked up in Redis"
    );
}

#[test]
fn unknown_cookie_is_401() {
    let s = Stack::start(standard);
    assert_refusal(
        s.get("/api/orders", Some(&new_cookie())),
        401,
        "unauthenticated",
    );
    assert_refusal(
        s.get("/api/billing", Some(&new_cookie())),
        401,
        "unauthenticated",
    );
    assert_eq!(s.up.count(), 0);
}

#[test]
fn session_past_its_exp_is_401_while_the_key_still_exists() {
    let s = Stack::start(standard);
    let expired = s.login_json(&json!({"sub": "user-1", "exp": now() - 10}).to_string());
    assert!(s.redis.exists(&s.key(&expired)));
    assert_refusal(s.get("/api/orders", Some(&expired)), 401, "unauthenticated");
    assert_refusal(
        s.get("/api/billing", Some(&expired)),
        401,
        "unauthenticated",
    );
    assert_eq!(s.up.count(), 0);

    // Control: the same shape with a future exp, and without exp at all, is valid.
    let fresh = s.login_json(&json!({"sub": "user-1", "exp": now() + 600}).to_string());
    assert_eq!(s.status("/api/orders", Some(&fresh)), 200);
    let no_exp = s.login_json(r#"{"sub": "user-2"}"#);
    assert_eq!(s.status("/api/billing", Some(&no_exp)), 200);
}

#[test]
fn revoked_session_is_401_on_a_critical_route_at_once() {
    let s = Stack::start(|b, up| standard(b, up).cache_ttl("30s"));
    let cookie = s.login("user-1");
    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    s.redis.del(&s.key(&cookie));
    // No polling: a critical route re-checks Redis on every request.
    assert_refusal(s.get("/api/billing", Some(&cookie)), 401, "unauthenticated");
    assert_eq!(s.up.count(), 2);
}

#[test]
fn revoked_session_is_401_on_a_non_critical_route_within_cache_ttl() {
    let s = Stack::start(|b, up| standard(b, up).cache_ttl("1s"));
    let cookie = s.login("user-1");
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    s.redis.del(&s.key(&cookie));
    // Bound: cache_ttl (1 s) plus scheduling slack.
    assert_eventually!(
        s.status("/api/orders", Some(&cookie)) == 401,
        Duration::from_millis(2500)
    );
    assert_refusal(s.get("/api/orders", Some(&cookie)), 401, "unauthenticated");
}

#[test]
fn cache_ttl_zero_makes_revocation_immediate_on_non_critical_routes() {
    let s = Stack::start(|b, up| standard(b, up).cache_ttl("0s"));
    let cookie = s.login("user-1");
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    s.redis.del(&s.key(&cookie));
    // "0s" disables the cache, and a reused token must never outlive the session.
    assert_refusal(s.get("/api/orders", Some(&cookie)), 401, "unauthenticated");
}

#[test]
fn browser_navigation_without_session_is_redirected_to_login_url() {
    const LOGIN: &str = "https://login.example.com/start";
    let s = Stack::start(|b, up| standard(b, up).login_url(LOGIN));
    let nav = |cookie: Option<&str>| {
        let mut req = s.http.get(s.gw.url("/api/orders/7")).header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        );
        if let Some(c) = cookie {
            req = req.header("cookie", cookie_header(c));
        }
        req.send().expect("send")
    };
    for (what, resp) in [
        ("no cookie", nav(None)),
        ("unknown cookie", nav(Some(&new_cookie()))),
    ] {
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(location.as_deref(), Some(LOGIN), "{what}: Location");
        assert_refusal(resp, 302, "unauthenticated");
    }
    // Not a navigation: an API call and a POST get the 401.
    let resp = s
        .http
        .get(s.gw.url("/api/orders"))
        .header("accept", "application/json")
        .send()
        .expect("send");
    assert_refusal(resp, 401, "unauthenticated");
    let resp = s
        .http
        .post(s.gw.url("/api/orders"))
        .header("accept", "text/html")
        .send()
        .expect("send");
    assert_refusal(resp, 401, "unauthenticated");
    assert_eq!(s.up.count(), 0);
}

#[test]
fn unsafe_method_with_a_session_and_a_foreign_origin_is_403() {
    let s = Stack::start(standard);
    let cookie = s.login("user-1");
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        for origin in [
            "https://evil.example.com",
            "null",
            "https://app.example.com.evil.example",
            "http://app.example.com",
        ] {
            let resp = s
                .http
                .request(method.parse().expect("method"), s.gw.url("/api/orders/7"))
                .header("cookie", cookie_header(&cookie))
                .header("origin", origin)
                .body("{}")
                .send()
                .expect("send");
            assert_refusal(resp, 403, "forbidden");
        }
    }
    assert_eq!(
        s.up.count(),
        0,
        "refused requests must not reach the upstream"
    );
}

#[test]
fn unsafe_method_without_origin_but_cross_site_fetch_is_403() {
    let s = Stack::start(standard);
    let cookie = s.login("user-1");
    for method in ["POST", "DELETE"] {
        let resp = s
            .http
            .request(method.parse().expect("method"), s.gw.url("/api/orders"))
            .header("cookie", cookie_header(&cookie))
            .header("sec-fetch-site", "cross-site")
            .send()
            .expect("send");
        assert_refusal(resp, 403, "forbidden");
    }
    assert_eq!(s.up.count(), 0);
}

#[test]
fn unsafe_method_from_an_allowed_origin_or_without_browser_signals_is_forwarded() {
    const SECOND: &str = "https://admin.example.com";
    let s = Stack::start(|b, up| standard(b, up).allowed_origins(&[ALLOWED_ORIGIN, SECOND]));
    let cookie = s.login("user-1");
    let post = |headers: &[(&str, &str)]| {
        let mut req = s
            .http
            .post(s.gw.url("/api/orders"))
            .header("cookie", cookie_header(&cookie))
            .body("{}");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().expect("send")
    };
    assert_eq!(
        post(&[("origin", ALLOWED_ORIGIN)]).status(),
        200,
        "allowed Origin"
    );
    assert_eq!(
        post(&[("origin", SECOND)]).status(),
        200,
        "second allowed Origin"
    );
    // Control: a foreign Origin.
    assert_refusal(
        post(&[("origin", "https://evil.example.com")]),
        403,
        "forbidden",
    );
    assert_eq!(
        post(&[("origin", ALLOWED_ORIGIN), ("sec-fetch-site", "same-site")]).status(),
        200,
        "allowed Origin, same-site"
    );
    assert_eq!(
        post(&[]).status(),
        200,
        "no Origin, no Sec-Fetch-Site (a non-browser client)"
    );
    assert_eq!(
        post(&[("sec-fetch-site", "same-origin")]).status(),
        200,
        "no Origin, same-origin"
    );
    assert_eq!(s.up.count(), 5);
    assert_eq!(s.up.last().method, "POST");
    s.up.last().bearer();

    // Safe methods are not subject to the Origin check.
    let resp = s
        .http
        .get(s.gw.url("/api/orders"))
        .header("cookie", cookie_header(&cookie))
        .header("origin", "https://evil.example.com")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200, "GET with a foreign Origin");

    // The rule is about requests carrying the session cookie.
    let resp = s
        .http
        .post(s.gw.url("/public/form"))
        .header("origin", "https://evil.example.com")
        .send()
        .expect("send");
    assert_eq!(
        resp.status(),
        200,
        "POST without session cookie to an auth = none route"
    );
}

#[test]
fn paths_that_cannot_be_normalized_are_400_and_never_forwarded() {
    let redis = RedisServer::start();
    let up = Upstream::echo("catch-all");
    // A catch-all public route: anything not refused would reach the upstream.
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("all", "/", &[up.addr()]).auth("none"))
        .route(Route::new("orders", "/api/orders", &[up.addr()]))
        .start();
    for path in [
        "/api/orders/%2e%2e/%2e%2e/..",
        "/..",
        "/../api/orders",
        "/%2e%2e/etc/passwd",
        "/a/b/../../../c",
        "/a/%2Fb",
        "/a/%2fb",
    ] {
        let resp = raw::get(gw.addr(), path, &[]).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_refusal(&resp, 400, "bad_request");
    }
    assert_eq!(
        up.count(),
        0,
        "no such request may reach an upstream: {:#?}",
        up.requests()
    );

    // Control: a path that normalizes inside the root is fine.
    let resp = raw::get(gw.addr(), "/x/./y/../z", &[]).expect("request");
    assert_eq!(resp.status, 200);
}

#[test]
fn oversized_cookie_header_is_400() {
    let s = Stack::start(standard);
    let cookie = s.login("user-1");
    let filler = |n: usize| {
        (0..n)
            .map(|i| format!("pad{i}={}", "x".repeat(90)))
            .collect::<Vec<_>>()
            .join("; ")
    };

    // Control: a large but reasonable header (~4 KiB) works.
    let header = format!("{}; {}", filler(40), cookie_header(&cookie));
    assert!(header.len() < 8192);
    let resp = s
        .http
        .get(s.gw.url("/api/orders"))
        .header("cookie", header)
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200, "a ~4 KiB Cookie header");

    let header = format!("{}; {}", filler(100), cookie_header(&cookie));
    assert!(header.len() > 8192);
    for path in ["/api/orders", "/public"] {
        let resp = s
            .http
            .get(s.gw.url(path))
            .header("cookie", &header)
            .send()
            .expect("send");
        assert_refusal(resp, 400, "bad_request");
    }
    assert_eq!(
        s.up.count(),
        1,
        "only the control request reaches the upstream"
    );
}

#[test]
fn redis_outage_is_503_on_critical_routes_and_served_from_cache_on_others() {
    let mut s = Stack::start(|b, up| standard(b, up).cache_ttl("30s"));
    let seen = s.login("user-seen");
    let unseen = s.login("user-unseen");
    s.warm("/api/orders", &seen);
    assert_eq!(s.status("/api/billing", Some(&seen)), 200);

    s.redis.stop();
    let http = client();
    let readyz = || {
        http.get(s.gw.admin_url("/readyz"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(
        s.status("/api/orders", Some(&seen)),
        200,
        "non-critical: served from the cached session"
    );
    assert_eq!(s.last_token("orders").str("sub"), "user-seen");
    // Critical: Redis unreachable; non-critical with nothing cached.
    assert_refusal(s.get("/api/billing", Some(&seen)), 503, "unavailable");
    assert_refusal(s.get("/api/orders", Some(&unseen)), 503, "unavailable");
    assert_eq!(
        s.status("/public", None),
        200,
        "auth = none does not need Redis"
    );
    assert_eventually!(
        readyz() != 200,
        Duration::from_secs(5),
        "/readyz must fail while Redis is down"
    );
    let forwarded = s.up.count();

    s.redis.restart();
    let cookie = new_cookie();
    s.redis.set_session(
        &session_key(s.gw.key_prefix(), &cookie),
        &session_json("user-back"),
        60,
    );
    assert_eventually!(
        s.status("/api/billing", Some(&cookie)) == 200,
        Duration::from_secs(10),
        "after Redis is back"
    );
    assert_eventually!(readyz() == 200, Duration::from_secs(10));
    assert!(s.up.count() > forwarded);
}

#[test]
fn unmatched_path_is_404() {
    let redis = RedisServer::start();
    let up = Upstream::echo("orders");
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("orders", "/api/orders", &[up.addr()]))
        .start();
    let http = client();
    for path in ["/", "/api", "/api/order", "/nothing/here"] {
        let resp = http.get(gw.url(path)).send().expect("send");
        assert_refusal(resp, 404, "not_found");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn unreachable_upstream_is_502() {
    let redis = RedisServer::start();
    let dead = dead_addr();
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("open", "/open", &[dead]).auth("none"))
        .route(Route::new("closed", "/closed", &[dead]))
        .start();
    let http = client();
    let resp = http.get(gw.url("/open/x")).send().expect("send");
    assert_refusal(resp, 502, "bad_gateway");

    let cookie = new_cookie();
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &session_json("user-1"),
        60,
    );
    let resp = http
        .get(gw.url("/closed/x"))
        .header("cookie", cookie_header(&cookie))
        .send()
        .expect("send");
    assert_refusal(resp, 502, "bad_gateway");
}

#[test]
fn auth_none_route_forwards_without_session_and_without_authorization() {
    let s = Stack::start(standard);
    let resp = s.get("/public/page?x=1", None);
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().expect("echo JSON");
    assert_eq!(body["path"], "/public/page");
    assert_eq!(body["query"], "x=1");
    let rec = s.up.last();
    assert_eq!(
        rec.header("authorization"),
        None,
        "no token minted without a session"
    );
}

#[test]
fn auth_optional_route_adds_a_token_only_for_a_valid_session() {
    let s =
        Stack::start(|b, up| b.route(Route::new("feed", "/feed", &[up.addr()]).auth("optional")));

    assert_eq!(s.status("/feed", None), 200, "no cookie");
    assert_eq!(s.up.last().header("authorization"), None);

    assert_eq!(
        s.status("/feed", Some(&new_cookie())),
        200,
        "unknown cookie"
    );
    assert_eq!(s.up.last().header("authorization"), None);

    let expired = s.login_json(&json!({"sub": "user-1", "exp": now() - 5}).to_string());
    assert_eq!(s.status("/feed", Some(&expired)), 200, "expired session");
    assert_eq!(s.up.last().header("authorization"), None);

    let cookie = s.login("user-1");
    assert_eq!(s.status("/feed", Some(&cookie)), 200, "valid session");
    assert_eq!(s.last_token("feed").str("sub"), "user-1");
    assert_eq!(s.up.count(), 4);
}

#[test]
fn key_prefix_and_hashed_keys_select_the_redis_key() {
    // hashed_keys = false: the key is key_prefix + the cookie value itself.
    let s = Stack::start(|b, up| standard(b, up).key_prefix("app1:s:").hashed_keys(false));
    let cookie = new_cookie();
    s.redis
        .set_session(&format!("app1:s:{cookie}"), &session_json("user-raw"), 60);
    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    assert_eq!(s.last_token("billing").str("sub"), "user-raw");
    let hashed = new_cookie();
    s.redis.set_session(
        &session_key("app1:s:", &hashed),
        &session_json("user-hashed"),
        60,
    );
    assert_refusal(s.get("/api/billing", Some(&hashed)), 401, "unauthenticated");

    // hashed_keys = true with another prefix: prefix + sha256 hex; the default prefix is not read.
    let s = Stack::start(|b, up| standard(b, up).key_prefix("app2:"));
    let cookie = new_cookie();
    s.redis.set_session(
        &session_key("app2:", &cookie),
        &session_json("user-app2"),
        60,
    );
    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    let stray = new_cookie();
    s.redis.set_session(
        &session_key("sg:session:", &stray),
        &session_json("user-default"),
        60,
    );
    assert_refusal(s.get("/api/billing", Some(&stray)), 401, "unauthenticated");
}

#[test]
fn cached_session_is_refused_once_past_its_exp() {
    let s = Stack::start(|b, up| standard(b, up).cache_ttl("30s"));
    let cookie = s.login_json(&json!({"sub": "user-1", "exp": now() + 2}).to_string());
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    // The key lives on in Redis and the cache may keep the session 30 s, but exp wins.
    assert_eventually!(
        s.status("/api/orders", Some(&cookie)) == 401,
        Duration::from_secs(5)
    );
    assert_refusal(s.get("/api/orders", Some(&cookie)), 401, "unauthenticated");
    assert!(s.redis.exists(&s.key(&cookie)));
}

#[test]
fn gateway_started_while_redis_is_down_is_alive_not_ready_and_recovers() {
    let mut redis = RedisServer::start();
    redis.stop();
    let up = Upstream::echo("echo");
    let gw = standard(GatewayBuilder::new(&redis.url()), &up).start_alive();
    let http = client();
    let status = |url: String, cookie: Option<&str>| {
        let mut req = http.get(url);
        if let Some(c) = cookie {
            req = req.header("cookie", cookie_header(c));
        }
        req.send().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    let cookie = new_cookie();
    assert_ne!(
        status(gw.admin_url("/readyz"), None),
        200,
        "/readyz is 200 only when Redis answers"
    );
    let resp = http
        .get(gw.url("/api/billing"))
        .header("cookie", cookie_header(&cookie))
        .send()
        .expect("send");
    assert_refusal(resp, 503, "unavailable");
    assert_eq!(up.count(), 0);

    redis.restart();
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &session_json("user-late"),
        60,
    );
    assert_eventually!(
        status(gw.admin_url("/readyz"), None) == 200,
        Duration::from_secs(10)
    );
    assert_eventually!(
        status(gw.url("/api/billing"), Some(&cookie)) == 200,
        Duration::from_secs(10)
    );
}
