//! Logs: one access line per request with route, status, latency, session outcome,
//! upstream and kid; human or JSON lines (`[log] format`); Pingora's `log` records
//! bridged into the same output; and never a cookie, a token or a key — not even at the
//! `trace` filter, on any path (success, refusals, the exchange endpoint, a critical
//! route, Redis down).
//!
//! Every gateway of the run is checked for leaks when it is dropped (harness `secrets`);
//! the test here drives one gateway through every path at `trace` so that check sees
//! everything the gateway and its libraries can print.

use std::cell::Cell;
use std::time::Duration;

use reqwest::blocking::Response;
use serde_json::{Value, json};

use crate::harness::ports::dead_addr;
use crate::harness::secrets;
use crate::harness::{
    ALLOWED_ORIGIN, Route, Stack, Upstream, assert_eventually, assert_refusal, cookie_header,
    new_cookie, new_kek, raw,
};

const ACCESS: &str = "sessiongate::access";

/// The access lines of a gateway's stderr.
fn access_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(ACCESS))
        .map(str::to_owned)
        .collect()
}

/// The value of `name=...` in a human-format line (quoted or not).
fn field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or_default().to_owned(),
        None => rest
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// The `kid` of a JWT's header (read without fetching the JWKS, which would be one
/// more request and one more access line).
fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt)
        .expect("JWT header")
        .kid
        .expect("kid")
}

fn routes(b: crate::harness::GatewayBuilder, up: &Upstream) -> crate::harness::GatewayBuilder {
    b.route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
        .route(Route::new("public", "/public", &[up.addr()]).auth("none"))
        .route(Route::new("gone", "/gone", &[dead_addr()]).auth("none"))
}

#[test]
fn no_cookie_token_or_key_reaches_the_logs_even_at_trace() {
    let mut s = Stack::start(|b, up: &Upstream| {
        routes(b, up)
            .redis_keys(&new_kek())
            .cache_ttl("60s")
            .set("log.filter", "trace")
            .env("RUST_LOG", "trace")
    });
    let cookie = s.login("user-logs");
    let client_secret = format!("client-credential-{}", new_cookie());
    secrets::record("client Authorization", &client_secret);
    let query_secret = format!("query-secret-{}", new_cookie());
    secrets::record("query string", &query_secret);
    let malformed = "not!a!valid!cookie!value!at!all";
    secrets::record("malformed cookie", malformed);

    let get = |path: &str, headers: &[(&str, String)]| {
        let mut req = s.http.get(s.gw.url(path));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    let with_cookie = |c: &str| vec![("cookie", format!("theme=dark; {}", cookie_header(c)))];
    // Every request below makes one access line.
    let expected = Cell::new(0);
    let ok = |resp: Response, what: &str| {
        assert_eq!(resp.status(), 200, "{what}");
        expected.set(expected.get() + 1);
    };
    let refused = |resp: Response, status: u16, code: &str| {
        assert_refusal(resp, status, code);
        expected.set(expected.get() + 1);
    };

    // Success: minted, then reused from the cache; a critical route; the client's own
    // Authorization header (dropped) and a query string.
    let mut headers = with_cookie(&cookie);
    headers.push(("authorization", format!("Bearer {client_secret}")));
    ok(get("/api/orders/1", &headers), "valid session");
    ok(
        get(&format!("/api/orders/2?token={query_secret}"), &headers),
        "valid session, cached",
    );
    ok(get("/api/billing", &with_cookie(&cookie)), "critical");
    ok(get("/public", &[]), "auth none");
    // Refusals: no cookie, an unknown one, a malformed one, a bad origin, no route, a
    // dead upstream, a path that cannot be normalized.
    refused(get("/api/orders", &[]), 401, "unauthenticated");
    refused(
        get("/api/orders", &with_cookie(&new_cookie())),
        401,
        "unauthenticated",
    );
    refused(
        get(
            "/api/orders",
            &[("cookie", format!("__Host-session={malformed}"))],
        ),
        401,
        "unauthenticated",
    );
    let post = s
        .http
        .post(s.gw.url("/api/orders"))
        .header("cookie", cookie_header(&cookie))
        .header("origin", "https://evil.example")
        .send()
        .expect("POST");
    refused(post, 403, "forbidden");
    refused(get("/nowhere", &[]), 404, "not_found");
    refused(get("/gone", &[]), 502, "bad_gateway");
    let bad_path = raw::get(
        s.gw.addr(),
        "/api/orders/%2Fx",
        &[("cookie", cookie_header(&cookie).as_str())],
    )
    .expect("raw GET");
    assert_refusal(&bad_path, 400, "bad_request");
    expected.set(expected.get() + 1);
    // The exchange endpoint: a token in the response body, and refusals (a bad origin,
    // an unknown audience).
    let exchange = |origin: &str, audience: &str| {
        s.http
            .post(s.gw.url("/auth/token"))
            .header("cookie", cookie_header(&cookie))
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(json!({ "audience": audience }).to_string())
            .send()
            .expect("POST /auth/token")
    };
    let resp = exchange(ALLOWED_ORIGIN, "orders");
    assert_eq!(resp.status(), 200, "exchange");
    expected.set(expected.get() + 1);
    let body: Value = resp.json().expect("JSON");
    let token = body["access_token"].as_str().expect("access_token");
    secrets::record("exchanged token", token);
    refused(exchange("https://evil.example", "orders"), 403, "forbidden");
    refused(exchange(ALLOWED_ORIGIN, "nobody"), 400, "bad_request");
    // Revoked on a critical route.
    let revoked = s.login("user-revoked");
    ok(get("/api/billing", &with_cookie(&revoked)), "critical");
    s.redis.del(&s.key(&revoked));
    refused(
        get("/api/billing", &with_cookie(&revoked)),
        401,
        "unauthenticated",
    );
    // Redis down: the critical route refuses, the cached session still serves (once it
    // really is cached), an unknown session is refused.
    s.warm("/api/orders", &cookie);
    s.redis.stop();
    refused(
        get("/api/billing", &with_cookie(&cookie)),
        503,
        "unavailable",
    );
    ok(
        get("/api/orders", &with_cookie(&cookie)),
        "Redis down, cached",
    );
    refused(
        get("/api/orders", &with_cookie(&new_cookie())),
        503,
        "unavailable",
    );
    let expected = expected.get();

    assert_eventually!(
        access_lines(&s.gw.stderr()).len() >= expected,
        Duration::from_secs(10),
        "{expected} access lines"
    );
    let unavailable = || -> Vec<String> {
        access_lines(&s.gw.stderr())
            .into_iter()
            .filter(|l| field(l, "status").as_deref() == Some("503"))
            .collect()
    };
    // Access lines reach stderr in batches; the last two requests were the 503s.
    assert_eventually!(unavailable().len() >= 2, Duration::from_secs(10));
    let unavailable = unavailable();
    assert_eq!(unavailable.len(), 2, "{unavailable:#?}");
    for line in &unavailable {
        assert_eq!(field(line, "session").as_deref(), Some("error"), "{line}");
    }
    let logs = s.gw.logs();
    for level in ["TRACE", "DEBUG"] {
        assert!(
            logs.lines().any(|l| l.contains(&format!(" {level} "))),
            "the gateway logged nothing at {level}: the filter did not apply"
        );
    }
    s.gw.assert_logs_clean();
    for needle in [
        cookie.as_str(),
        token,
        &client_secret,
        &query_secret,
        malformed,
    ] {
        assert!(!logs.contains(needle), "a secret in the logs");
    }
    // Pingora's debug and trace output dumps request headers; it is never printed.
    let pingora_debug: Vec<&str> = logs
        .lines()
        .filter(|l| (l.contains(" DEBUG ") || l.contains(" TRACE ")) && l.contains(" pingora"))
        .take(3)
        .collect();
    assert!(
        pingora_debug.is_empty(),
        "Pingora debug lines: {pingora_debug:#?}"
    );
    s.redis.restart();
}

#[test]
fn json_lines_parse_and_carry_the_access_fields() {
    let s = Stack::start(|b, up: &Upstream| {
        routes(b, up)
            .set("log.format", "json")
            .set("log.filter", "info")
            .env("RUST_LOG", "info")
    });
    let cookie = s.login("user-json");
    assert_eq!(s.status("/api/orders/7", Some(&cookie)), 200);
    let kid = kid_of(s.up.last().bearer());
    assert_refusal(
        s.get("/api/orders/7", Some(&new_cookie())),
        401,
        "unauthenticated",
    );

    let mut lines: Vec<Value> = Vec::new();
    assert_eventually!(
        {
            lines =
                s.gw.stderr()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| {
                        serde_json::from_str::<Value>(l)
                            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}"))
                    })
                    .collect();
            lines.iter().filter(|l| l["target"] == ACCESS).count() >= 2
        },
        Duration::from_secs(10)
    );
    for line in &lines {
        assert!(line.is_object(), "{line}");
        assert!(line["timestamp"].is_string(), "no timestamp: {line}");
        assert!(line["level"].is_string(), "no level: {line}");
        assert!(line["target"].is_string(), "no target: {line}");
    }
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == ACCESS).collect();
    assert_eq!(access.len(), 2, "{access:#?}");
    let ok = access[0];
    assert_eq!(ok["route"], "orders", "{ok}");
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["method"], "GET", "{ok}");
    assert_eq!(ok["session"], "valid", "{ok}");
    assert_eq!(ok["upstream"], s.up.addr().to_string(), "{ok}");
    assert_eq!(ok["kid"], kid.as_str(), "{ok}");
    assert!(
        ok["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{ok}"
    );
    let refused = access[1];
    assert_eq!(refused["status"], 401, "{refused}");
    assert_eq!(refused["session"], "missing", "{refused}");
    assert_eq!(refused["upstream"], "-", "{refused}");
    assert_eq!(refused["kid"], "-", "{refused}");
    // Pingora logs through `log`; the bridge puts its records in the same JSON stream.
    assert!(
        lines.iter().any(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("pingora"))),
        "no bridged Pingora line in {lines:#?}"
    );
}

#[test]
fn human_lines_give_one_access_line_per_request() {
    let mut s = Stack::start(routes);
    let cookie = s.login("user-human");
    assert_eq!(s.status("/api/orders/1", Some(&cookie)), 200);
    let kid = kid_of(s.up.last().bearer());
    assert_eq!(s.status("/api/billing/2", Some(&cookie)), 200);
    assert_refusal(s.get("/api/orders", None), 401, "unauthenticated");
    assert_refusal(s.get("/nowhere", None), 404, "not_found");
    assert_eq!(s.status("/.well-known/jwks.json", None), 200);
    assert_refusal(s.get("/gone", None), 502, "bad_gateway");
    // Request ids: one written as it came, one with quotes the line must escape (those
    // lines are formatted by tracing instead of the direct writer: still one each).
    let with_id = |id: &str| {
        s.http
            .get(s.gw.url("/api/orders/3"))
            .header("cookie", cookie_header(&cookie))
            .header("x-request-id", id)
            .send()
            .expect("send")
            .status()
    };
    assert_eq!(with_id("support-42"), 200);
    assert_eq!(with_id(r#"say-"hi"\o/"#), 200);
    let requests = 8;

    assert_eventually!(
        access_lines(&s.gw.stderr()).len() >= requests,
        Duration::from_secs(10)
    );
    // Stop the gateway (flushing its log writer) before counting: no request may add a
    // second line.
    let status =
        s.gw.signal_and_wait("INT", Duration::from_secs(10))
            .expect("exits on SIGINT");
    assert!(status.success(), "{status}");
    let lines = access_lines(&s.gw.stderr());
    assert_eq!(lines.len(), requests, "{lines:#?}");

    let ok = &lines[0];
    assert!(ok.contains(" INFO "), "{ok}");
    assert_eq!(field(ok, "route").as_deref(), Some("orders"), "{ok}");
    assert_eq!(field(ok, "status").as_deref(), Some("200"), "{ok}");
    assert_eq!(field(ok, "session").as_deref(), Some("valid"), "{ok}");
    assert_eq!(field(ok, "upstream"), Some(s.up.addr().to_string()), "{ok}");
    assert_eq!(field(ok, "kid").as_deref(), Some(kid.as_str()), "{ok}");
    assert!(
        field(ok, "latency_ms").is_some_and(|v| v.parse::<f64>().is_ok()),
        "{ok}"
    );
    let expect = [
        ("billing", "200", "valid"),
        ("orders", "401", "absent"),
        ("none", "404", "none"),
        ("none", "200", "none"),
        ("gone", "502", "skipped"),
    ];
    for (line, (route, status, session)) in lines[1..].iter().zip(expect) {
        assert_eq!(field(line, "route").as_deref(), Some(route), "{line}");
        assert_eq!(field(line, "status").as_deref(), Some(status), "{line}");
        assert_eq!(field(line, "session").as_deref(), Some(session), "{line}");
    }
    let (plain, escaped) = (&lines[6], &lines[7]);
    assert!(plain.ends_with(r#" request_id="support-42""#), "{plain}");
    assert!(
        escaped.ends_with(r#" request_id="say-\"hi\"\\o/""#),
        "{escaped}"
    );
    for line in [plain, escaped] {
        assert_eq!(field(line, "route").as_deref(), Some("orders"), "{line}");
        assert_eq!(field(line, "status").as_deref(), Some("200"), "{line}");
    }
}
