//! SPEC "Responses of the gateway itself" and its "Request hygiene at the edge"
//! paragraph, against the real binary: every answer the gateway makes itself is JSON with
//! a listed code; host routes cannot be skipped (absolute-form targets, odd `Host`
//! spellings); one undecodable cookie hides no other; forwarding headers are the
//! gateway's own; `X-Request-Id` is kept or made; upstream timeouts answer 502 and 504.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::held::HeldUpstream;
use crate::harness::raw::{self, RawResponse};
use crate::harness::{
    ALLOWED_ORIGIN, COOKIE_NAME, Route, Stack, Upstream, assert_eventually, assert_refusal,
    cookie_header,
};

/// A raw `POST path` with `headers` and `body`.
fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw::send(addr, &bytes).expect("POST")
}

#[test]
fn every_answer_of_the_gateways_own_is_json_with_a_listed_code() {
    let s = Stack::start(|b, up| b.route(Route::new("orders", "/api/orders", &[up.addr()])));
    let cookie = s.login("alice");
    let addr = s.gw.addr();
    let session = cookie_header(&cookie);
    let exchange = |body: &[u8]| {
        post(
            addr,
            "/auth/token",
            &[
                ("origin", ALLOWED_ORIGIN),
                ("cookie", &session),
                ("content-type", "application/json"),
            ],
            body,
        )
    };
    // The exchange endpoint: an unknown audience, a JSON array, other shapes, a body
    // over 4 KiB.
    for body in [
        &br#"{"audience":"nope"}"#[..],
        br#"["orders"]"#,
        br#""orders""#,
        br#"{"audience":7}"#,
        br#"{"audience":"orders","also":1}"#,
        b"{not json",
        b"",
    ] {
        let resp = exchange(body);
        assert_refusal(&resp, 400, "bad_request");
    }
    let resp = exchange(&vec![b' '; 5000]);
    assert_refusal(&resp, 413, "payload_too_large");
    // The good body still works, and its answer is JSON too.
    let ok = exchange(br#"{"audience":"orders"}"#);
    assert_eq!(ok.status, 200);
    let token: Value = serde_json::from_slice(&ok.body).expect("JSON");
    assert_eq!(token["token_type"], "Bearer");
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );

    // Wrong methods on the gateway's endpoints.
    let resp = raw::get(addr, "/auth/token", &[]).expect("GET");
    assert_refusal(&resp, 405, "method_not_allowed");
    assert_eq!(resp.header("allow"), Some("POST, OPTIONS"));
    let resp = post(addr, "/.well-known/jwks.json", &[], b"");
    assert_refusal(&resp, 405, "method_not_allowed");
    assert_eq!(resp.header("allow"), Some("GET, HEAD"));
    // No route; a path that cannot be normalized; an HTTP/1.1 request without Host; two
    // Hosts; a Host that is not one.
    assert_refusal(
        &raw::get(addr, "/nowhere", &[]).expect("GET"),
        404,
        "not_found",
    );
    assert_refusal(
        &raw::get(addr, "/%2e%2e/etc", &[]).expect("GET"),
        400,
        "bad_request",
    );
    // (Two Host headers never get this far: Pingora's HTTP/1 reader refuses them with
    // its own empty 400, as it does bytes that are not HTTP.)
    let twice = b"GET /api/orders HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw::send(addr, twice).expect("send").status, 400);
    for request in [
        &b"GET /api/orders HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /api/orders HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n",
        b"GET ftp://a.example/api/orders HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let resp = raw::send(addr, request).expect("send");
        assert_refusal(&resp, 400, "bad_request");
    }
    // Unauthenticated and cross-site.
    assert_refusal(
        &raw::get(addr, "/api/orders", &[]).expect("GET"),
        401,
        "unauthenticated",
    );
    let resp = post(
        addr,
        "/api/orders",
        &[("origin", "https://evil.example"), ("cookie", &session)],
        b"{}",
    );
    assert_refusal(&resp, 403, "forbidden");
    assert_eq!(s.up.count(), 0, "none of these reached the upstream");
}

#[test]
fn host_routes_cannot_be_skipped() {
    let admin = Upstream::echo("admin");
    let s = Stack::start(|b, up| {
        b.route(Route::new("payments", "/api/payments", &[admin.addr()]).host("admin.example.com"))
            .route(Route::new("open", "/api", &[up.addr()]).auth("none"))
    });
    let addr = s.gw.addr();
    let send = |request: &str| raw::send(addr, request.as_bytes()).expect("send");
    // Each of these is for the admin host, whose route requires a session: 401, and
    // nothing reaches either upstream.
    for request in [
        "GET http://admin.example.com/api/payments/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET http://admin.example.com/api/payments/x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
        "GET http://ADMIN.Example.COM.:8080/api/payments/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /api/payments/x HTTP/1.1\r\nHost: admin.example.com.\r\nConnection: close\r\n\r\n",
        "GET /api/payments/x HTTP/1.1\r\nHost: ADMIN.EXAMPLE.COM\r\nConnection: close\r\n\r\n",
        "GET /api/payments/x HTTP/1.1\r\nHost: admin.example.com.:443\r\nConnection: close\r\n\r\n",
    ] {
        let resp = send(request);
        assert_refusal(&resp, 401, "unauthenticated");
    }
    // A Host that differs from the absolute-form authority is refused outright (400) by
    // the HTTP layer: stricter than RFC 9112 §3.2.2, and no way around the host route.
    let resp = send(
        "GET http://admin.example.com/api/payments/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    assert_eq!((admin.count(), s.up.count()), (0, 0), "nothing forwarded");

    // With a session: forwarded to the admin upstream with an origin-form target and the
    // Host the route was chosen by.
    let cookie = s.login("alice");
    let resp = send(&format!(
        "GET http://admin.example.com/api/payments/x/../y?q=1 HTTP/1.1\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        cookie_header(&cookie)
    ));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let seen = admin.last();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/api/payments/y", Some("q=1"))
    );
    assert_eq!(seen.header("host"), Some("admin.example.com"));
    let resp = send(&format!(
        "GET /api/payments/z HTTP/1.1\r\nHost: Admin.Example.com.\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        cookie_header(&cookie)
    ));
    assert_eq!(resp.status, 200);
    assert_eq!(admin.last().header("host"), Some("admin.example.com"));
    // An absolute-form request for another host reaches the host-less route, origin-form.
    let resp = send("GET http://anything.example/api/open HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 200);
    let seen = s.up.last();
    assert_eq!(seen.path, "/api/open");
    assert_eq!(seen.header("host"), Some("anything.example"));
}

#[test]
fn one_undecodable_cookie_hides_no_other() {
    let s = Stack::start(|b, up| b.route(Route::new("orders", "/api/orders", &[up.addr()])));
    let cookie = s.login("alice");
    let addr = s.gw.addr();
    let mut request =
        b"GET /api/orders HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nCookie: theme=\xff\xfe; "
            .to_vec();
    request.extend_from_slice(format!("{COOKIE_NAME}={cookie}").as_bytes());
    request.extend_from_slice(b"; name=caf\xc3\xa9\r\n\r\n");
    let resp = raw::send(addr, &request).expect("send");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    // The upstream gets the other cookies, byte for byte, and never the session cookie.
    let seen = s.up.last();
    let forwarded = seen.header("cookie").expect("the other cookies");
    assert!(
        !forwarded.contains(&cookie),
        "the session cookie was forwarded"
    );
    assert!(
        forwarded.starts_with("theme=") && forwarded.contains("; name=caf"),
        "{forwarded}"
    );
    assert_eq!(s.last_token("orders").str("sub"), "alice");

    // A session cookie whose own value is not text is no session (401), refused before
    // Redis.
    let before = s.redis.key_lookups();
    let request = format!(
        "GET /api/orders HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nCookie: {COOKIE_NAME}="
    );
    let mut request = request.into_bytes();
    request.extend_from_slice(
        b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0\r\n\r\n",
    );
    let resp = raw::send(addr, &request).expect("send");
    assert_refusal(&resp, 401, "unauthenticated");
    assert_eq!(s.redis.key_lookups(), before);
}

#[test]
fn forwarding_headers_are_the_gateways_own_and_request_ids_are_kept_or_made() {
    let s = Stack::start(|b, up| b.route(Route::new("open", "/open", &[up.addr()]).auth("none")));
    let spoofed = [
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "1"),
        ("x-forwarded-prefix", "/admin"),
        ("x-real-ip", "6.6.6.6"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("connection", "x-secret"),
        ("x-secret", "hop-by-hop"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic eDp5"),
        ("x-request-id", "req-abc.123"),
    ];
    let resp = raw::get(s.gw.addr(), "/open", &spoofed).expect("GET");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-request-id"), Some("req-abc.123"));
    let seen = s.up.last();
    for gone in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert_eq!(
            seen.header_values(gone),
            Vec::<&str>::new(),
            "{gone} reached the upstream"
        );
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(s.gw.addr().to_string().as_str())
    );
    assert_eq!(seen.header("x-request-id"), Some("req-abc.123"));
    assert_eventually!(
        s.gw.logs().lines().any(|l| l.contains("sessiongate::access")
            && l.contains(r#"request_id="req-abc.123""#)),
        Duration::from_secs(5),
        "the access line carries the request id"
    );

    // An id that is not 1-128 visible ASCII characters is replaced by a fresh one, as is
    // a missing one; the client sees the id the upstream got.
    let long = "x".repeat(129);
    for headers in [
        &[("x-request-id", long.as_str())][..],
        &[("x-request-id", "has space")],
        &[],
    ] {
        let resp = raw::get(s.gw.addr(), "/open", headers).expect("GET");
        let id =
            s.up.last()
                .header("x-request-id")
                .expect("an id")
                .to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(resp.header("x-request-id"), Some(id.as_str()));
    }
}

#[test]
fn a_trusted_proxys_forwarding_headers_are_extended_not_replaced() {
    let s = Stack::start(|b, up| {
        b.set(
            "server.trusted_proxies",
            toml::Value::Array(vec!["127.0.0.0/8".into()]),
        )
        .route(Route::new("open", "/open", &[up.addr()]).auth("none"))
    });
    let resp = raw::get(
        s.gw.addr(),
        "/open",
        &[
            ("x-forwarded-for", "203.0.113.7, 198.51.100.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-prefix", "/admin"),
            ("x-real-ip", "6.6.6.6"),
        ],
    )
    .expect("GET");
    assert_eq!(resp.status, 200);
    let seen = s.up.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.2, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.example.com"));
    assert_eq!(
        seen.header("x-forwarded-prefix"),
        None,
        "only the three are kept"
    );
    assert_eq!(seen.header("x-real-ip"), None);
}

/// A listener whose accept queue is full: a connect to it hangs (its SYNs are dropped),
/// as an upstream behind a black hole would. Holds the connections that fill it.
struct Unaccepting {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _filling: Vec<TcpStream>,
}

impl Unaccepting {
    fn start() -> Self {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        // Fill the queue: connects complete until it is full, then hang.
        let mut filling = Vec::new();
        while filling.len() < 16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(c) => filling.push(c),
                Err(_) => break,
            }
        }
        assert!(filling.len() < 16, "the accept queue never filled");
        Unaccepting {
            addr,
            _listener: socket,
            _filling: filling,
        }
    }
}

#[test]
fn upstreams_that_never_answer_get_504_and_unreachable_ones_502() {
    let held = HeldUpstream::start();
    let hole = Unaccepting::start();
    let s = Stack::start(|b, _| {
        b.route(
            Route::new("slow", "/slow", &[held.addr()])
                .auth("none")
                .set("read_timeout", "500ms"),
        )
        .route(
            Route::new("hole", "/hole", &[hole.addr])
                .auth("none")
                .set("connect_timeout", "300ms"),
        )
    });
    // Keep-alive requests: the answer must say the connection will not be kept.
    let keep_alive = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", s.gw.addr());
        raw::send(s.gw.addr(), req.as_bytes()).expect("GET")
    };
    let started = Instant::now();
    let resp = keep_alive("/slow");
    let waited = started.elapsed();
    assert_refusal(&resp, 504, "gateway_timeout");
    // The gateway closes the connection after such an answer, and says so: a client
    // that reused it would see its next request fail unanswered.
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(held.arrived(), 1, "the upstream had the request");
    assert!(
        waited >= Duration::from_millis(450),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");

    let started = Instant::now();
    let resp = keep_alive("/hole");
    let waited = started.elapsed();
    assert_refusal(&resp, 502, "bad_gateway");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(
        waited >= Duration::from_millis(250),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
}
