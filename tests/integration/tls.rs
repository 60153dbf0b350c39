//! TLS everywhere the gateway talks: the proxy listener (`server.tls`, verified by a
//! client that trusts only a test CA, HSTS when configured, certificate reload without a
//! restart), `rediss://` to Redis with a private CA (`redis.ca_file`), and `https://`
//! upstreams verified against `route.ca_file` with SNI — where a certificate that does
//! not verify gives 502 and the request never reaches the upstream.
//!
//! Certificates are made in each test with rcgen (harness `certs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::certs::{Resolver, TestCa, https_client, server_config_with};
use crate::harness::scrape::value;
use crate::harness::{
    GatewayBuilder, RedisServer, Route, Stack, Upstream, assert_eventually, assert_refusal,
    cookie_header, new_kek, session_json,
};

const HOST: &str = "gateway.test";
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// `server.tls = { cert, key }`.
fn tls_table(cert: &Path, key: &Path) -> toml::Value {
    let mut table = toml::Table::new();
    table.insert("cert".into(), cert.display().to_string().into());
    table.insert("key".into(), key.display().to_string().into());
    toml::Value::Table(table)
}

/// `https://gateway.test:PORT{path}` on the gateway's proxy listener.
fn https_url(s: &Stack, path: &str) -> String {
    format!("https://{HOST}:{}{path}", s.gw.addr().port())
}

/// A Stack whose proxy listener serves `dir/gw.crt` / `dir/gw.key` (issued by `ca`).
fn tls_stack(ca: &TestCa, dir: &Path, hsts: bool) -> Stack {
    let (cert, key) = ca.issue(&[HOST]).write(dir, "gw");
    Stack::start(|b, up: &Upstream| {
        let b = b
            .route(Route::new("orders", "/api/orders", &[up.addr()]))
            .set("server.tls", tls_table(&cert, &key));
        if hsts { b.set("server.hsts", HSTS) } else { b }
    })
}

/// Whether a GET of `url` from a new client that trusts only `ca_pem` (and resolves
/// `host` to `addr`) gets any HTTP answer: the TLS handshake verified. A new client each
/// time, so no TLS session is resumed from an earlier handshake.
fn handshake_ok(ca_pem: &str, host: &str, addr: std::net::SocketAddr, url: &str) -> bool {
    https_client(ca_pem, host, addr).get(url).send().is_ok()
}

#[test]
fn the_proxy_listener_speaks_tls_that_a_verifying_client_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("sessiongate test CA");
    let s = tls_stack(&ca, dir.path(), true);
    let client = https_client(ca.pem(), HOST, s.gw.addr());
    let cookie = s.login("user-tls");

    let resp = client
        .get(https_url(&s, "/api/orders/1"))
        .header("cookie", cookie_header(&cookie))
        .send()
        .expect("HTTPS request verified against the test CA");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some(HSTS),
        "HSTS on a proxied response"
    );
    let rec = s.up.last();
    assert_eq!(rec.header("x-forwarded-proto"), Some("https"));
    assert!(!rec.bearer().is_empty());

    // The gateway's own answers carry HSTS too, and the JWKS is served over TLS.
    let refused = client
        .get(https_url(&s, "/api/orders/1"))
        .send()
        .expect("send");
    assert_eq!(
        refused
            .headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some(HSTS),
        "HSTS on a refusal"
    );
    assert_refusal(refused, 401, "unauthenticated");
    let jwks = client
        .get(https_url(&s, "/.well-known/jwks.json"))
        .send()
        .expect("send");
    assert_eq!(jwks.status(), 200);

    // Verification is real: another CA, or another name, fails the handshake.
    let other_ca = TestCa::new("another CA");
    let url = https_url(&s, "/api/orders");
    assert!(!handshake_ok(other_ca.pem(), HOST, s.gw.addr(), &url));
    let url = format!("https://other.test:{}/api/orders", s.gw.addr().port());
    assert!(!handshake_ok(ca.pem(), "other.test", s.gw.addr(), &url));
    // No plaintext on the TLS listener.
    let plain = s.http.get(s.gw.url("/api/orders")).send();
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
}

#[test]
fn without_hsts_configured_no_hsts_header_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("sessiongate test CA");
    let s = tls_stack(&ca, dir.path(), false);
    let client = https_client(ca.pem(), HOST, s.gw.addr());
    let cookie = s.login("user-tls");
    let resp = client
        .get(https_url(&s, "/api/orders"))
        .header("cookie", cookie_header(&cookie))
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("strict-transport-security").is_none());
}

#[test]
fn a_new_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let mut s = tls_stack(&old_ca, dir.path(), false);
    let url = https_url(&s, "/.well-known/jwks.json");
    let addr = s.gw.addr();
    let trusts = |ca: &TestCa| handshake_ok(ca.pem(), HOST, addr, &url);
    assert!(trusts(&old_ca));
    assert!(!trusts(&new_ca), "the new CA is not in use yet");

    // Replace the files: the watcher installs the new pair, no signal needed.
    new_ca.issue(&[HOST]).write(dir.path(), "gw");
    assert_eventually!(
        trusts(&new_ca),
        Duration::from_secs(20),
        "the new certificate was not picked up"
    );
    assert!(!trusts(&old_ca), "the old certificate is gone");
    assert!(s.gw.is_alive(), "no restart");
    assert!(
        value(
            &s.gw,
            "sessiongate_tls_cert_reloads_total",
            &[("result", "ok")]
        ) >= 1.0
    );

    // A broken certificate is refused and counted; the running one keeps serving.
    std::fs::write(
        dir.path().join("gw.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .expect("write");
    assert_eventually!(
        value(
            &s.gw,
            "sessiongate_tls_cert_reloads_total",
            &[("result", "error")]
        ) >= 1.0,
        Duration::from_secs(20)
    );
    assert!(trusts(&new_ca), "still the new certificate");

    // SIGHUP re-reads the files even when their size and mtime did not change (which
    // the watcher alone would not notice). Pad the files (after the PEM block, where
    // parsers ignore it) so that the next pair fits in the same sizes.
    let third_ca = TestCa::new("third CA");
    let leaf = new_ca.issue(&[HOST]);
    let pad = "\n".repeat(512);
    std::fs::write(dir.path().join("gw.key"), format!("{}{pad}", leaf.key_pem)).expect("write");
    std::fs::write(dir.path().join("gw.crt"), format!("{}{pad}", leaf.cert_pem)).expect("write");
    assert_eventually!(
        value(
            &s.gw,
            "sessiongate_tls_cert_reloads_total",
            &[("result", "ok")]
        ) >= 2.0,
        Duration::from_secs(20)
    );
    let third = third_ca.issue(&[HOST]);
    replace_keeping_stamp(&dir.path().join("gw.crt"), &third.cert_pem);
    replace_keeping_stamp(&dir.path().join("gw.key"), &third.key_pem);
    s.gw.signal("HUP");
    assert_eventually!(
        trusts(&third_ca),
        Duration::from_secs(20),
        "SIGHUP did not reload the certificate"
    );
}

/// Replaces `path` with `text` padded with newlines to the file's old length and with
/// its old mtime, in one rename: the file's size and mtime never change.
fn replace_keeping_stamp(path: &Path, text: &str) {
    let old = std::fs::metadata(path).expect("metadata");
    let old_len = usize::try_from(old.len()).expect("len");
    assert!(
        text.len() <= old_len,
        "the new PEM does not fit the old size"
    );
    let padded = format!("{text}{}", "\n".repeat(old_len - text.len()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, padded).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .expect("open")
        .set_modified(old.modified().expect("mtime"))
        .expect("set mtime");
    std::fs::rename(&tmp, path).expect("rename");
    let new = std::fs::metadata(path).expect("metadata");
    assert_eq!(new.len(), old.len(), "same size");
    assert_eq!(new.modified().ok(), old.modified().ok(), "same mtime");
}

#[test]
fn https_upstreams_are_verified_against_the_route_ca_with_sni() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("upstream CA");
    let ca_file = ca.write(dir.path(), "upstream-ca.pem");
    let other_ca_file = TestCa::new("some other CA").write(dir.path(), "other-ca.pem");
    let resolver = Arc::new(Resolver::new(&ca.issue(&["localhost"])));
    let up = Upstream::echo_tls("secure", server_config_with(resolver.clone()));
    let port = up.addr().port();
    let by_name = format!("https://localhost:{port}");
    let by_ip = format!("https://127.0.0.1:{port}");

    let redis = RedisServer::start();
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::with_upstream_urls("secure", "/secure", &[&by_name]).ca_file(&ca_file))
        .route(
            Route::with_upstream_urls("wrong-ca", "/wrong-ca", &[&by_name]).ca_file(&other_ca_file),
        )
        .route(Route::with_upstream_urls(
            "system-roots",
            "/system-roots",
            &[&by_name],
        ))
        .route(Route::with_upstream_urls("wrong-name", "/wrong-name", &[&by_ip]).ca_file(&ca_file))
        .start();
    let cookie = crate::harness::new_cookie();
    redis.set_session(
        &crate::harness::session_key(gw.key_prefix(), &cookie),
        &session_json("user-upstream-tls"),
        3600,
    );
    let http = crate::harness::client();
    let get = |path: &str| {
        http.get(gw.url(path))
            .header("cookie", cookie_header(&cookie))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };

    assert_eq!(get("/secure/1").status(), 200);
    assert_eq!(up.count(), 1);
    assert!(!up.last().bearer().is_empty(), "the token travels over TLS");
    assert!(
        resolver.seen.lock().iter().any(|sni| sni == "localhost"),
        "SNI sent: {:?}",
        resolver.seen.lock()
    );

    // A certificate that does not verify is a 502; the request never reaches the upstream.
    for path in ["/wrong-ca/1", "/system-roots/1", "/wrong-name/1"] {
        let failures = up.handshake_failures();
        assert_refusal(get(path), 502, "bad_gateway");
        assert_eq!(up.count(), 1, "{path} reached the upstream");
        // The upstream notices the aborted handshake a moment after the gateway answered.
        assert_eventually!(
            up.handshake_failures() > failures,
            Duration::from_secs(5),
            "{path}: the gateway did not attempt and abort a handshake"
        );
    }
    assert_eq!(
        get("/secure/2").status(),
        200,
        "the verified route still works"
    );
    assert_eq!(up.count(), 2);
    // Each refusal is counted once, as a connect error of its route.
    let text = crate::harness::scrape::metrics(&gw);
    for route in ["wrong-ca", "system-roots", "wrong-name"] {
        let count = |kind| {
            crate::harness::scrape::sample(
                &text,
                "sessiongate_upstream_errors_total",
                &[("route", route), ("kind", kind)],
            )
        };
        assert_eq!(count("connect"), Some(1.0), "{route}:\n{text}");
        assert_eq!(count("protocol"), None, "{route} counted twice:\n{text}");
    }
}

#[test]
fn rediss_with_a_private_ca_serves_sessions_keys_and_revocation_pushes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("redis CA");
    let ca_file = ca.write(dir.path(), "redis-ca.pem");
    let (cert, key) = ca.issue(&["127.0.0.1"]).write(dir.path(), "redis");
    let redis = RedisServer::start_tls(&cert, &key, &ca_file);
    assert!(redis.url().starts_with("rediss://"));
    let up = Upstream::echo("echo");
    let gw = GatewayBuilder::new(&redis.url())
        .set("redis.ca_file", ca_file.display().to_string())
        .redis_keys(&new_kek())
        .cache_ttl("60s")
        .route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
        .start();
    let http = crate::harness::client();
    let cookie = crate::harness::new_cookie();
    let key = crate::harness::session_key(gw.key_prefix(), &cookie);
    redis.set_session(&key, &session_json("user-rediss"), 3600);
    let get = |path: &str| {
        http.get(gw.url(path))
            .header("cookie", cookie_header(&cookie))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    assert_eq!(
        get("/api/orders").status(),
        200,
        "session looked up over TLS"
    );
    assert_eq!(get("/api/billing").status(), 200, "live lookup over TLS");
    assert!(
        redis.exists(&format!("{}keyring", gw.keys_prefix())),
        "the keyring lives in the TLS Redis"
    );
    // Revocation: the critical route sees it at once, the cached route through the
    // invalidation push (also over TLS) well before cache_ttl (60 s).
    redis.del(&key);
    assert_refusal(get("/api/billing"), 401, "unauthenticated");
    assert_eventually!(get("/api/orders").status() == 401, Duration::from_secs(10));
    assert_refusal(get("/api/orders"), 401, "unauthenticated");
}

#[test]
fn rediss_with_the_wrong_ca_never_connects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("redis CA");
    let ca_file = ca.write(dir.path(), "redis-ca.pem");
    let (cert, key) = ca.issue(&["127.0.0.1"]).write(dir.path(), "redis");
    let redis = RedisServer::start_tls(&cert, &key, &ca_file);
    let wrong = TestCa::new("not the redis CA").write(dir.path(), "wrong-ca.pem");
    let up = Upstream::echo("echo");
    let gw = GatewayBuilder::new(&redis.url())
        .set("redis.ca_file", wrong.display().to_string())
        .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
        .start_alive();
    let cookie = crate::harness::new_cookie();
    redis.set_session(
        &crate::harness::session_key(gw.key_prefix(), &cookie),
        &session_json("user-wrong-ca"),
        3600,
    );
    let ready = crate::harness::raw::get(gw.admin_addr(), "/readyz", &[]).expect("readyz");
    assert_eq!(ready.status, 503, "ready without a verified Redis");
    // Not a session read over an unverified connection: Redis is unavailable.
    let resp = crate::harness::client()
        .get(gw.url("/api/billing"))
        .header("cookie", cookie_header(&cookie))
        .send()
        .expect("send");
    assert_refusal(resp, 503, "unavailable");
    assert_eq!(up.count(), 0);
}
