//! SPEC "Configuration", routing paragraph: host first, then the longest `path_prefix` on
//! segment boundaries of the normalized path; path tricks cannot cross from a public
//! route into a protected one; several upstreams share the load and a dead one is
//! skipped.

use std::collections::HashMap;

use serde_json::Value;

use crate::harness::ports::dead_addr;
use crate::harness::{
    GatewayBuilder, RedisServer, Route, Upstream, assert_refusal, client, cookie_header,
    new_cookie, raw, session_key,
};

/// Which upstream answered: the echo's `"upstream"` field.
fn served_by(http: &reqwest::blocking::Client, url: &str, host: Option<&str>) -> (u16, String) {
    let mut req = http.get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, String::new());
    }
    let echo: Value = resp.json().expect("echo JSON");
    (
        status,
        echo["upstream"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn longest_prefix_wins_on_segment_boundaries() {
    let redis = RedisServer::start();
    let api = Upstream::echo("api");
    let orders = Upstream::echo("orders");
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("api", "/api", &[api.addr()]).auth("none"))
        .route(Route::new("orders", "/api/orders", &[orders.addr()]).auth("none"))
        .start();
    let http = client();
    for (path, want) in [
        ("/api/orders", "orders"),
        ("/api/orders/", "orders"),
        ("/api/orders/7", "orders"),
        ("/api/orders/7/items?x=1", "orders"),
        ("/api/ordersX", "api"),
        ("/api/orders-archive/1", "api"),
        ("/api", "api"),
        ("/api/users/1", "api"),
    ] {
        assert_eq!(
            served_by(&http, &gw.url(path), None),
            (200, want.to_owned()),
            "{path}"
        );
    }
    // These match no route.
    for path in ["/apix", "/ap", "/"] {
        let resp = http.get(gw.url(path)).send().expect("send");
        assert_refusal(resp, 404, "not_found");
    }
}

#[test]
fn matching_uses_the_normalized_path() {
    let redis = RedisServer::start();
    let api = Upstream::echo("api");
    let orders = Upstream::echo("orders");
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("api", "/api", &[api.addr()]).auth("none"))
        .route(Route::new("orders", "/api/orders", &[orders.addr()]).auth("none"))
        .start();
    for path in [
        "/api//orders/7",
        "/api/./orders/7",
        "/api/x/../orders/7",
        "/api/%6Frders/7",
        "//api/orders",
    ] {
        let resp = raw::get(gw.addr(), path, &[]).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status, 200, "{path}");
        let echo: Value = serde_json::from_slice(&resp.body).expect("echo JSON");
        assert_eq!(
            echo["upstream"], "orders",
            "{path} normalizes to /api/orders/7"
        );
    }
}

#[test]
fn host_specific_route_beats_the_hostless_one_for_its_host() {
    let redis = RedisServer::start();
    let generic = Upstream::echo("generic");
    let special = Upstream::echo("special");
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("generic", "/api/orders", &[generic.addr()]).auth("none"))
        .route(
            Route::new("special", "/api/orders", &[special.addr()])
                .auth("none")
                .host("special.example.com"),
        )
        .start();
    let http = client();
    let url = gw.url("/api/orders/1");
    assert_eq!(
        served_by(&http, &url, Some("special.example.com")),
        (200, "special".to_owned())
    );
    assert_eq!(
        served_by(&http, &url, Some("other.example.com")),
        (200, "generic".to_owned())
    );
    assert_eq!(served_by(&http, &url, None), (200, "generic".to_owned()));
}

#[test]
fn path_tricks_cannot_reach_a_protected_route_through_a_public_one() {
    let redis = RedisServer::start();
    let public = Upstream::echo("public");
    let admin = Upstream::echo("admin");
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("public", "/public", &[public.addr()]).auth("none"))
        .route(Route::new("admin", "/admin", &[admin.addr()]))
        .start();
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public//../admin",
        "/public/./../admin/users",
        "/public/x/../../admin",
        "/public/..%2fadmin",
        "/public/..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public/..;/admin",
        "/public/..\\admin",
    ] {
        let served_before = public.count();
        let resp = raw::get(gw.addr(), path, &[]).unwrap_or_else(|e| panic!("{path}: {e}"));
        let served_publicly = resp.status == 200 && public.count() == served_before + 1;
        assert!(
            resp.status == 401 || resp.status == 400 || served_publicly,
            "{path}: got {}",
            resp.status
        );
        if !served_publicly {
            assert_refusal(&resp, resp.status, refusal_code(resp.status));
        }
        assert_eq!(
            admin.count(),
            0,
            "{path}: the admin upstream saw an unauthenticated request: {:#?}",
            admin.requests()
        );
    }
    // Those that normalize to /admin are refused, not served by the public route.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public//../admin",
    ] {
        let resp = raw::get(gw.addr(), path, &[]).expect("request");
        assert!(
            resp.status == 401 || resp.status == 400,
            "{path}: got {}",
            resp.status
        );
        assert_refusal(&resp, resp.status, refusal_code(resp.status));
    }

    // Control: with a session the same trick lands on admin, authenticated.
    let cookie = new_cookie();
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &crate::harness::session_json("root"),
        60,
    );
    let resp = raw::get(
        gw.addr(),
        "/public/../admin",
        &[("Cookie", &cookie_header(&cookie))],
    )
    .expect("request");
    if resp.status == 200 {
        assert_eq!(admin.count(), 1);
        admin.last().bearer();
    } else {
        assert_refusal(&resp, 400, "bad_request");
    }
}

/// The code of a 400 or a 401.
fn refusal_code(status: u16) -> &'static str {
    if status == 401 {
        "unauthenticated"
    } else {
        "bad_request"
    }
}

#[test]
fn several_upstreams_on_one_route_share_requests_round_robin() {
    let redis = RedisServer::start();
    let a = Upstream::echo("a");
    let b = Upstream::echo("b");
    let c = Upstream::echo("c");
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("lb", "/lb", &[a.addr(), b.addr(), c.addr()]).auth("none"))
        .start();
    let http = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (status, by) = served_by(&http, &gw.url("/lb"), None);
        assert_eq!(status, 200);
        *counts.entry(by).or_default() += 1;
    }
    for up in [&a, &b, &c] {
        let n = up.count();
        assert!(
            (9..=11).contains(&n),
            "round-robin over 3 upstreams and 30 requests: {counts:?}"
        );
    }
}

#[test]
fn a_dead_upstream_among_live_ones_is_skipped() {
    let redis = RedisServer::start();
    let live = Upstream::echo("live");
    let dead = dead_addr();
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("lb", "/lb", &[dead, live.addr()]).auth("none"))
        .route(Route::new("lb2", "/lb2", &[live.addr(), dead]))
        .start();
    let http = client();
    for i in 0..8 {
        let (status, by) = served_by(&http, &gw.url("/lb"), None);
        assert_eq!((status, by.as_str()), (200, "live"), "request {i}");
    }
    let cookie = new_cookie();
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &crate::harness::session_json("user-1"),
        60,
    );
    for i in 0..8 {
        let resp = http
            .get(gw.url("/lb2"))
            .header("cookie", cookie_header(&cookie))
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200, "authenticated request {i}");
    }
    assert_eq!(live.count(), 16);
}
