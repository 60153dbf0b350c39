//! Hostile or broken input: malformed session values in Redis, garbage on the wire,
//! and concurrent sessions that must never be mixed up.
//!
//! SPEC: a session needs a JSON object with a string `sub` (or `subject_field`) and an
//! optional numeric `exp`; anything else is not a valid session, so the request is
//! refused (401, or 503 where the gateway reports a store error) and never forwarded.

use std::io::{Read as _, Write as _};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    GatewayBuilder, Route, Stack, Upstream, assert_refusal, client, cookie_header, new_cookie, now,
    raw, verify,
};

fn routes(b: GatewayBuilder, up: &Upstream) -> GatewayBuilder {
    b.route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
        .route(Route::new("public", "/public", &[up.addr()]).auth("none"))
}

#[test]
fn malformed_session_values_are_refused_and_the_gateway_keeps_serving() {
    let mut s = Stack::start(routes);
    let future = now() + 600;
    let nested = format!(
        r#"{{"sub":"u","x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut huge = b"{\"sub\":\"u\",\"x\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 4 << 20)); // 4 MiB, never closed: not JSON
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello world".to_vec()),
        ("JSON array", br#"[1, 2, 3]"#.to_vec()),
        ("JSON string", br#""user-1""#.to_vec()),
        ("JSON null", b"null".to_vec()),
        ("empty", Vec::new()),
        ("truncated", br#"{"sub": "u""#.to_vec()),
        (
            "missing sub",
            format!(r#"{{"exp": {future}}}"#).into_bytes(),
        ),
        ("sub a float", br#"{"sub": 4.2}"#.to_vec()),
        ("sub null", br#"{"sub": null}"#.to_vec()),
        ("sub an object", br#"{"sub": {"id": "u"}}"#.to_vec()),
        (
            "exp a string",
            br#"{"sub": "u", "exp": "tomorrow"}"#.to_vec(),
        ),
        ("exp an object", br#"{"sub": "u", "exp": {}}"#.to_vec()),
        ("invalid UTF-8", b"{\"sub\": \"\xff\xfe\"}".to_vec()),
        ("deeply nested", nested.into_bytes()),
        ("4 MiB, unterminated", huge),
    ];
    for (what, value) in &cases {
        let cookie = new_cookie();
        let key = s.key(&cookie);
        s.redis.set_large(&key, value, 600);
        for path in ["/api/orders", "/api/billing"] {
            let resp = s.get(path, Some(&cookie));
            let status = resp.status().as_u16();
            assert!(
                status == 401 || status == 503,
                "{what} on {path}: got {status}, want 401 or 503"
            );
            let code = if status == 401 {
                "unauthenticated"
            } else {
                "unavailable"
            };
            assert_refusal(resp, status, code);
        }
        assert_eq!(s.up.count(), 0, "{what}: must not be forwarded");
    }

    // A key of another type (WRONGTYPE on GET).
    let cookie = new_cookie();
    s.redis.cli(&["HSET", &s.key(&cookie), "sub", "u"]);
    for path in ["/api/orders", "/api/billing"] {
        let resp = s.get(path, Some(&cookie));
        let status = resp.status().as_u16();
        assert!(
            status == 401 || status == 503,
            "hash key on {path}: got {status}"
        );
        let code = if status == 401 {
            "unauthenticated"
        } else {
            "unavailable"
        };
        assert_refusal(resp, status, code);
    }
    assert_eq!(s.up.count(), 0);

    assert!(s.gw.is_alive(), "the gateway died:\n{}", s.gw.logs());
    // SPEC: an integer subject is a subject, as its decimal string.
    let numeric = s.login_json(&format!(r#"{{"sub": 42, "exp": {future}}}"#));
    assert_eq!(s.status("/api/billing", Some(&numeric)), 200);
    assert_eq!(s.last_token("billing").str("sub"), "42");
    let valid = s.login("user-1");
    assert_eq!(
        s.status("/api/orders", Some(&valid)),
        200,
        "a valid session still works"
    );
    assert_eq!(s.status("/api/billing", Some(&valid)), 200);
}

#[test]
fn garbage_on_the_wire_does_not_take_the_gateway_down() {
    let mut s = Stack::start(routes);
    let big_header = format!(
        "GET /public HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let long_line = format!(
        "GET /public/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "p".repeat(100_000)
    );
    let inputs: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x00\x01\x02\xff\xfe\xfd binary\r\n\r\n".to_vec(),
        b"GET /public HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET /public HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n".to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            .to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n".to_vec(),
        b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort".to_vec(),
        b"GET /public HTTP/1.1\r\nHo".to_vec(),
        b"GET /api/orders HTTP/1.1\r\nHost: x\r\nCookie: __Host-session=\x01\x02\x03\r\n\r\n".to_vec(),
        b"\r\n\r\n\r\n\r\n".to_vec(),
        big_header.into_bytes(),
        long_line.into_bytes(),
    ];
    // All at once (each may wait up to 3 s for the gateway to give up on it).
    let senders: Vec<_> = [s.gw.addr(), s.gw.admin_addr()]
        .into_iter()
        .flat_map(|addr| inputs.iter().cloned().map(move |input| (addr, input)))
        .map(|(addr, input)| {
            std::thread::spawn(move || {
                let Ok(mut stream) = raw::connect(addr) else {
                    return;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = stream.write_all(&input);
                let _ = stream.shutdown(Shutdown::Write);
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            })
        })
        .collect();
    for t in senders {
        t.join().expect("sender thread");
    }

    assert!(s.gw.is_alive(), "the gateway died:\n{}", s.gw.logs());
    let http = client();
    let health = http
        .get(s.gw.admin_url("/healthz"))
        .send()
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(s.status("/public", None), 200);
    let valid = s.login("user-1");
    assert_eq!(s.status("/api/billing", Some(&valid)), 200);
}

#[test]
fn concurrent_sessions_are_never_mixed_up() {
    let s = Arc::new(Stack::start(|b, up| routes(b, up).cache_ttl("5s")));
    let users: Vec<(String, String)> = (0..6)
        .map(|i| (format!("user-{i}"), s.login(&format!("user-{i}"))))
        .collect();
    let jwks = Arc::new(s.jwks());
    let threads: Vec<_> = users
        .into_iter()
        .map(|(sub, cookie)| {
            let s = Arc::clone(&s);
            let jwks = Arc::clone(&jwks);
            std::thread::spawn(move || {
                let http = client();
                for i in 0..20 {
                    let (path, aud) = if i % 2 == 0 {
                        ("/api/orders", "orders")
                    } else {
                        ("/api/billing", "billing")
                    };
                    let resp = http
                        .get(s.gw.url(path))
                        .header("cookie", cookie_header(&cookie))
                        .send()
                        .expect("send");
                    assert_eq!(resp.status(), 200, "{sub} {path}");
                    let echo: Value = resp.json().expect("echo JSON");
                    let auth = echo["headers"]["authorization"][0]
                        .as_str()
                        .expect("authorization echoed");
                    let token = auth.strip_prefix("Bearer ").expect("Bearer");
                    let t = verify(token, &jwks, aud, s.gw.issuer());
                    assert_eq!(
                        t.str("sub"),
                        sub,
                        "a request of {sub} was forwarded with another user's token"
                    );
                }
                // Interleave refusals: an unknown cookie must never borrow a neighbour's session.
                let resp = http
                    .get(s.gw.url("/api/orders"))
                    .header("cookie", cookie_header(&new_cookie()))
                    .send();
                assert_refusal(resp.expect("send"), 401, "unauthenticated");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread panicked");
    }
    assert_eq!(s.up.count(), 6 * 20);
}

#[test]
fn keep_alive_connections_do_not_carry_sessions_between_requests() {
    let s = Stack::start(routes);
    let alice = s.login("alice");
    let bob = s.login("bob");
    let jwks = s.jwks();
    let addr = s.gw.addr();
    let mut stream = raw::connect(addr).expect("connect");
    let steps: [(&str, Option<&str>, u16, Option<&str>); 6] = [
        ("/api/orders", Some(&alice), 200, Some("alice")),
        ("/api/orders", None, 401, None),
        ("/api/billing", Some(&bob), 200, Some("bob")),
        ("/public", None, 200, None),
        ("/api/billing", Some(&new_cookie()), 401, None),
        ("/api/orders", Some(&alice), 200, Some("alice")),
    ];
    for (i, (path, cookie, want, sub)) in steps.into_iter().enumerate() {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        if let Some(c) = cookie {
            head.push_str(&format!("Cookie: {}\r\n", cookie_header(c)));
        }
        head.push_str("\r\n");
        let before = s.up.count();
        stream.write_all(head.as_bytes()).expect("write");
        let resp =
            raw::read_response(&mut stream).unwrap_or_else(|e| panic!("step {i} {path}: {e}"));
        assert_eq!(
            resp.status,
            want,
            "step {i}: {path} with cookie {}",
            cookie.is_some()
        );
        if want == 200 {
            assert_eq!(s.up.count(), before + 1, "step {i}");
            let rec = s.up.last();
            match sub {
                Some(sub) => {
                    let aud = if path == "/api/orders" {
                        "orders"
                    } else {
                        "billing"
                    };
                    assert_eq!(
                        verify(rec.bearer(), &jwks, aud, s.gw.issuer()).str("sub"),
                        sub,
                        "step {i}"
                    );
                }
                None => assert_eq!(
                    rec.header("authorization"),
                    None,
                    "step {i}: a token leaked from an earlier request"
                ),
            }
        } else {
            assert_refusal(&resp, want, "unauthenticated");
            assert_eq!(
                s.up.count(),
                before,
                "step {i}: refused requests are not forwarded"
            );
        }
    }
}
