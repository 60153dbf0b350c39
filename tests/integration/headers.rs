//! SPEC "What upstreams receive": the Bearer token replaces any client `Authorization`,
//! the session cookie is stripped (other cookies stay) unless `forward_cookie = true`,
//! forwarding headers are set, and bodies pass through both ways unchanged.

use std::io::Cursor;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::harness::{
    GatewayBuilder, RedisServer, Route, Stack, Upstream, client, cookie_header, new_cookie, raw,
    session_key,
};

/// `n` bytes that do not repeat with a short period (SHA-256 counter stream).
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&Sha256::digest(i.to_le_bytes()));
        i += 1;
    }
    out.truncate(n);
    out
}

fn routes(b: GatewayBuilder, up: &Upstream) -> GatewayBuilder {
    b.route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("feed", "/feed", &[up.addr()]).auth("optional"))
        .route(Route::new("public", "/public", &[up.addr()]).auth("none"))
}

#[test]
fn upstream_gets_the_gateways_bearer_token_and_never_the_clients_authorization() {
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let resp = s
        .http
        .get(s.gw.url("/api/orders"))
        .header("cookie", cookie_header(&cookie))
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rec = s.up.last();
    assert_eq!(
        rec.header_values("authorization").len(),
        1,
        "exactly one Authorization: {rec:#?}"
    );
    assert_ne!(rec.bearer(), forged);
    assert_eq!(s.last_token("orders").str("sub"), "user-1");

    // SPEC: "any Authorization header sent by the client is removed", also where the
    // gateway adds none (optional route without a session, auth = none route).
    for path in ["/feed", "/public"] {
        let resp = s
            .http
            .get(s.gw.url(path))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .header("authorization", format!("Bearer {forged}"))
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200, "{path}");
        let rec = s.up.last();
        assert_eq!(
            rec.header_values("authorization"),
            Vec::<&str>::new(),
            "{path}: client Authorization must be removed"
        );
    }
}

#[test]
fn session_cookie_is_stripped_and_other_cookies_stay() {
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    for path in ["/api/orders", "/feed", "/public"] {
        let resp = s
            .http
            .get(s.gw.url(path))
            .header(
                "cookie",
                format!("theme=dark; {}; lang=en", cookie_header(&cookie)),
            )
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200, "{path}");
        let rec = s.up.last();
        let cookies = rec.header_values("cookie").join("; ");
        assert!(
            cookies.contains("theme=dark"),
            "{path}: other cookies stay: {cookies:?}"
        );
        assert!(
            cookies.contains("lang=en"),
            "{path}: other cookies stay: {cookies:?}"
        );
        let all = rec.all_header_text();
        assert!(
            !all.contains(&cookie),
            "{path}: the session cookie value reached the upstream:\n{all}"
        );
        assert!(
            !all.contains("__Host-session"),
            "{path}: the session cookie name reached the upstream:\n{all}"
        );
    }

    // Two Cookie header lines (HTTP/1.1 clients may send them): stripped from either.
    for order in [
        ["a=1".to_owned(), cookie_header(&cookie)],
        [cookie_header(&cookie), "b=2".to_owned()],
    ] {
        let head = format!(
            "GET /api/orders HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            order[0],
            order[1],
            addr = s.gw.addr()
        );
        let resp = raw::send(s.gw.addr(), head.as_bytes()).expect("response");
        assert_eq!(resp.status, 200, "{order:?}");
        let all = s.up.last().all_header_text();
        assert!(
            !all.contains(&cookie),
            "two Cookie lines {order:?}: the session cookie reached the upstream:\n{all}"
        );
    }

    // The session cookie alone: nothing of it is left.
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    let all = s.up.last().all_header_text();
    assert!(
        !all.contains(&cookie) && !all.contains("__Host-session"),
        "{all}"
    );
}

#[test]
fn forward_cookie_true_keeps_the_session_cookie() {
    let s = Stack::start(|b, up| routes(b, up).forward_cookie(true));
    let cookie = s.login("user-1");
    let resp = s
        .http
        .get(s.gw.url("/api/orders"))
        .header("cookie", format!("theme=dark; {}", cookie_header(&cookie)))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rec = s.up.last();
    let cookies = rec.header_values("cookie").join("; ");
    assert!(
        cookies.contains(&cookie_header(&cookie)),
        "session cookie forwarded: {cookies:?}"
    );
    assert!(cookies.contains("theme=dark"), "{cookies:?}");
    rec.bearer();
}

/// Not in SPEC's list, but required by the lead's brief: the usual forwarding headers.
#[test]
fn forwarding_headers_are_set() {
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    let rec = s.up.last();
    let xff = rec.header_values("x-forwarded-for").join(", ");
    assert_eq!(
        xff.rsplit(',').next().map(str::trim),
        Some("127.0.0.1"),
        "X-Forwarded-For: {xff:?}"
    );
    assert_eq!(rec.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        rec.header("x-forwarded-host"),
        Some(s.gw.addr().to_string().as_str())
    );
}

#[test]
fn request_bodies_stream_through_byte_exact() {
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    let body = pseudo_random(1 << 20);

    // With Content-Length.
    let resp = s
        .http
        .post(s.gw.url("/api/orders/upload"))
        .header("cookie", cookie_header(&cookie))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().expect("echo JSON");
    assert_eq!(echo["body_len"], body.len());
    let rec = s.up.last();
    assert_eq!(rec.body.len(), body.len());
    assert!(
        rec.body == body,
        "the upstream must receive the body byte for byte"
    );

    // Chunked (length unknown to the client).
    let resp = s
        .http
        .put(s.gw.url("/api/orders/upload"))
        .header("cookie", cookie_header(&cookie))
        .body(reqwest::blocking::Body::new(Cursor::new(body.clone())))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rec = s.up.last();
    assert_eq!(rec.method, "PUT");
    assert!(
        rec.body == body,
        "chunked body: got {} bytes",
        rec.body.len()
    );
}

#[test]
fn responses_pass_through_unchanged() {
    let redis = RedisServer::start();
    let big = pseudo_random(2 << 20);
    let ok = Upstream::fixed_with(
        "ok",
        201,
        &[("x-custom", "kept"), ("content-type", "application/x-test")],
        big.clone(),
    );
    let teapot = Upstream::fixed_with("teapot", 418, &[], b"short and stout".to_vec());
    let broken = Upstream::fixed("broken", 500);
    let missing = Upstream::fixed("missing", 404);
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("ok", "/ok", &[ok.addr()]))
        .route(Route::new("teapot", "/teapot", &[teapot.addr()]).auth("none"))
        .route(Route::new("broken", "/broken", &[broken.addr()]).auth("none"))
        .route(Route::new("missing", "/missing", &[missing.addr()]).auth("none"))
        .start();
    let http = client();
    let cookie = new_cookie();
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &crate::harness::session_json("user-1"),
        60,
    );

    let resp = http
        .get(gw.url("/ok"))
        .header("cookie", cookie_header(&cookie))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers().get("x-custom").and_then(|v| v.to_str().ok()),
        Some("kept")
    );
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-test")
    );
    let got = resp.bytes().expect("body");
    assert!(
        got.as_ref() == big.as_slice(),
        "2 MiB response body: got {} bytes",
        got.len()
    );

    let resp = http.get(gw.url("/teapot")).send().expect("send");
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.text().expect("body"), "short and stout");
    // An upstream's own error status is the upstream's answer, not a gateway 502/404.
    assert_eq!(
        http.get(gw.url("/broken")).send().expect("send").status(),
        500
    );
    assert_eq!(
        http.get(gw.url("/missing")).send().expect("send").status(),
        404
    );
    assert_eq!(missing.count(), 1);
}

#[test]
fn content_encoding_is_left_to_the_upstream_both_ways() {
    // The gateway neither compresses nor decompresses: Accept-Encoding reaches the
    // upstream as sent, a plain body comes back plain to a client that accepts gzip, br
    // and zstd, and an encoded body comes back with its Content-Encoding, byte for byte,
    // whatever the client accepts.
    let redis = RedisServer::start();
    let text = "compressible text, repeated. ".repeat(4096).into_bytes();
    let encoded = pseudo_random(64 << 10);
    let plain = Upstream::fixed_with(
        "plain",
        200,
        &[("content-type", "text/plain")],
        text.clone(),
    );
    let gzip = Upstream::fixed_with(
        "gzip",
        200,
        &[("content-type", "text/plain"), ("content-encoding", "gzip")],
        encoded.clone(),
    );
    let echo = Upstream::echo("echo");
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("plain", "/plain", &[plain.addr()]).auth("none"))
        .route(Route::new("gzip", "/gzip", &[gzip.addr()]).auth("none"))
        .route(Route::new("echo", "/echo", &[echo.addr()]).auth("none"))
        .start();
    let accepts = "gzip, deflate, br, zstd";

    let resp = raw::get(gw.addr(), "/plain", &[("Accept-Encoding", accepts)]).expect("plain");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), None, "not compressed");
    assert!(
        resp.body == text,
        "plain body: got {} bytes",
        resp.body.len()
    );

    for accept in [Some(accepts), Some("identity"), None] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let resp = raw::get(gw.addr(), "/gzip", &headers).expect("gzip");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-encoding"), Some("gzip"), "{accept:?}");
        assert!(resp.body == encoded, "{accept:?}: encoded body changed");
    }

    let resp = raw::get(gw.addr(), "/echo", &[("Accept-Encoding", accepts)]).expect("echo");
    assert_eq!(resp.status, 200);
    assert_eq!(echo.last().header("accept-encoding"), Some(accepts));
}
