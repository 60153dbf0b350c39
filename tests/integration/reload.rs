//! Hot reload on SIGHUP: routes, upstreams, audiences, critical flags, claims, the
//! cache window and the allowed origins swap in without a restart; an invalid file is
//! refused, logged and counted (`sessiongate_config_reloads_total{result}`) and the
//! running config kept; changes that need a restart are named in the log and not
//! applied. Observed through requests, tokens, metrics and logs, polling.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use reqwest::blocking::Response;
use serde_json::{Value, json};

use crate::harness::ports::free_port;
use crate::harness::scrape::value;
use crate::harness::{
    Gateway, GatewayBuilder, RedisServer, Route, Upstream, assert_eventually, assert_refusal,
    client, cookie_header, fetch_jwks, new_cookie, now, session_key, verify,
};

const ORIGIN_A: &str = "https://a.example";
const ORIGIN_B: &str = "https://b.example";

/// The config every test starts from: push invalidation off (so the cache window is
/// what a test observes), one route `orders` → `up`.
fn base(redis: &RedisServer) -> GatewayBuilder {
    GatewayBuilder::new(&redis.url())
        .set("session.push_invalidation", false)
        .cache_ttl("60s")
}

/// Writes `next` as the running gateway's config file (same listeners and key dir)
/// and sends SIGHUP; waits until the reload with `result` has been counted.
fn reload(gw: &Gateway, next: &GatewayBuilder, result: &str) {
    reload_listening_on(gw, next, gw.addr(), result);
}

fn reload_listening_on(gw: &Gateway, next: &GatewayBuilder, listen: SocketAddr, result: &str) {
    let before = reloads(gw, result);
    std::fs::write(
        gw.config_path(),
        next.toml(listen, gw.admin_addr(), &key_dir(gw)),
    )
    .expect("write config");
    hup_and_wait(gw, result, before);
}

fn hup_and_wait(gw: &Gateway, result: &str, before: f64) {
    gw.signal("HUP");
    assert_eventually!(
        reloads(gw, result) > before,
        Duration::from_secs(10),
        "no {result} reload counted:\n{}",
        gw.logs()
    );
}

fn reloads(gw: &Gateway, result: &str) -> f64 {
    value(
        gw,
        "sessiongate_config_reloads_total",
        &[("result", result)],
    )
}

fn key_dir(gw: &Gateway) -> PathBuf {
    gw.config_path().parent().expect("config dir").join("keys")
}

/// Writes a session with roles and email; returns its cookie.
fn login(redis: &RedisServer, gw: &Gateway, sub: &str) -> String {
    let cookie = new_cookie();
    let session = json!({
        "sub": sub, "exp": now() + 3600, "roles": ["admin"], "email": "u@example.com"
    });
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &session.to_string(),
        3600,
    );
    cookie
}

fn get(gw: &Gateway, path: &str, cookie: &str) -> Response {
    client()
        .get(gw.url(path))
        .header("cookie", cookie_header(cookie))
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn post(gw: &Gateway, path: &str, cookie: &str, origin: &str) -> Response {
    client()
        .post(gw.url(path))
        .header("cookie", cookie_header(cookie))
        .header("origin", origin)
        .send()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// The claims of the last token `up` received, verified against the gateway's JWKS.
fn last_claims(gw: &Gateway, up: &Upstream, aud: &str) -> Value {
    let jwks = fetch_jwks(&client(), &gw.admin_url("/.well-known/jwks.json"));
    verify(up.last().bearer(), &jwks, aud, gw.issuer()).claims
}

#[test]
fn a_valid_reload_swaps_routes_upstreams_audiences_flags_claims_origins_and_cache_ttl() {
    let redis = RedisServer::start();
    let (one, two) = (Upstream::echo("one"), Upstream::echo("two"));
    let v1 = base(&redis)
        .claims(&["roles"])
        .allowed_origins(&[ORIGIN_A])
        .route(Route::new("orders", "/api/orders", &[one.addr()]).audience("orders-v1"));
    let gw = v1.start();
    let cookie = login(&redis, &gw, "user-reload");

    assert_eq!(get(&gw, "/api/orders", &cookie).status(), 200);
    assert_eq!((one.count(), two.count()), (1, 0));
    let claims = last_claims(&gw, &one, "orders-v1");
    assert_eq!(claims["roles"], json!(["admin"]));
    assert!(claims.get("email").is_none() && claims.get("chk").is_none());
    assert_refusal(
        post(&gw, "/api/orders", &cookie, ORIGIN_B),
        403,
        "forbidden",
    );
    assert_refusal(get(&gw, "/api/new", &cookie), 404, "not_found");

    let v2 = base(&redis)
        .claims(&["email"])
        .allowed_origins(&[ORIGIN_B])
        .route(
            Route::new("orders", "/api/orders", &[two.addr()])
                .audience("orders-v2")
                .critical(),
        )
        .route(Route::new("new", "/api/new", &[one.addr()]));
    reload(&gw, &v2, "ok");

    assert_eq!(get(&gw, "/api/orders", &cookie).status(), 200);
    assert_eq!(
        (one.count(), two.count()),
        (1, 1),
        "the new upstream serves"
    );
    let claims = last_claims(&gw, &two, "orders-v2");
    assert_eq!(claims["email"], "u@example.com", "the new claims");
    assert!(claims.get("roles").is_none(), "the old claims are gone");
    assert!(claims.get("chk").is_some(), "the route is critical now");
    assert_eq!(post(&gw, "/api/orders", &cookie, ORIGIN_B).status(), 200);
    assert_refusal(
        post(&gw, "/api/orders", &cookie, ORIGIN_A),
        403,
        "forbidden",
    );
    assert_eq!(get(&gw, "/api/new", &cookie).status(), 200, "the new route");
    assert_eq!(one.count(), 2);
    assert!(gw.stderr().contains("Config reloaded."), "{}", gw.logs());

    // cache_ttl: a revoked session stays trusted from the cache for up to 60 s, until a
    // reload shortens the window to 1 s, which applies to cached entries at once.
    let cached = login(&redis, &gw, "user-cached");
    assert_eq!(get(&gw, "/api/new", &cached).status(), 200);
    redis.del(&session_key(gw.key_prefix(), &cached));
    assert_eq!(
        get(&gw, "/api/new", &cached).status(),
        200,
        "trusted from the cache"
    );
    reload(&gw, &v2.cache_ttl("1s"), "ok");
    assert_eventually!(
        get(&gw, "/api/new", &cached).status() == 401,
        Duration::from_secs(10),
        "the shorter cache window did not apply"
    );
    assert_refusal(get(&gw, "/api/new", &cached), 401, "unauthenticated");
}

#[test]
fn an_invalid_config_is_refused_logged_counted_and_the_running_one_kept() {
    let redis = RedisServer::start();
    let (one, two) = (Upstream::echo("one"), Upstream::echo("two"));
    let v1 = base(&redis).route(Route::new("orders", "/api/orders", &[one.addr()]));
    let gw = v1.start();
    let cookie = login(&redis, &gw, "user-invalid");
    let started_at = value(
        &gw,
        "sessiongate_config_last_reload_success_timestamp_seconds",
        &[],
    );
    let good = v1.toml(gw.addr(), gw.admin_addr(), &key_dir(&gw));
    let to_two = base(&redis).route(Route::new("orders", "/api/orders", &[two.addr()]));

    let invalid: [(&str, String); 4] = [
        (
            "an unknown key",
            to_two.clone().set("metrics.enabled", true).toml(
                gw.addr(),
                gw.admin_addr(),
                &key_dir(&gw),
            ),
        ),
        ("bad TOML", format!("{good}\n[[route]\n")),
        (
            "an upstream that does not resolve",
            to_two
                .clone()
                .route(Route::with_upstream_urls(
                    "x",
                    "/x",
                    &["nowhere.invalid:80"],
                ))
                .toml(gw.addr(), gw.admin_addr(), &key_dir(&gw)),
        ),
        (
            "a longer token lifetime than at start",
            to_two
                .clone()
                .token_ttl("10m")
                .toml(gw.addr(), gw.admin_addr(), &key_dir(&gw)),
        ),
    ];
    for (n, (what, text)) in invalid.iter().enumerate() {
        std::fs::write(gw.config_path(), text).expect("write config");
        hup_and_wait(&gw, "error", n as f64);
        assert_eq!(get(&gw, "/api/orders", &cookie).status(), 200, "{what}");
        assert_eq!(two.count(), 0, "{what}: the refused config was applied");
    }
    assert_eq!(reloads(&gw, "ok"), 0.0);
    assert_eq!(
        value(
            &gw,
            "sessiongate_config_last_reload_success_timestamp_seconds",
            &[]
        ),
        started_at
    );
    let refused = gw.log_lines("Config reload refused", invalid.len());
    let logs = gw.stderr();
    assert_eq!(refused.len(), invalid.len(), "{logs}");
    assert!(
        refused[0].contains("metrics"),
        "names the key: {}",
        refused[0]
    );
    assert!(refused[2].contains("nowhere.invalid"), "{}", refused[2]);
    assert!(refused[3].contains("need a restart"), "{}", refused[3]);

    // A valid file afterwards is applied.
    reload(&gw, &to_two, "ok");
    assert_eq!(get(&gw, "/api/orders", &cookie).status(), 200);
    assert_eq!(two.count(), 1);
}

#[test]
fn changes_that_need_a_restart_are_named_and_the_rest_applied() {
    let redis = RedisServer::start();
    let (one, two) = (Upstream::echo("one"), Upstream::echo("two"));
    let v1 = base(&redis).route(Route::new("orders", "/api/orders", &[one.addr()]));
    let gw = v1.start();
    let cookie = login(&redis, &gw, "user-restart");
    let new_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let v2 = base(&redis)
        .set("server.threads", 2)
        .set("token.issuer", "https://other-issuer.test")
        .route(Route::new("orders", "/api/orders", &[two.addr()]));
    reload_listening_on(&gw, &v2, new_listen, "ok");

    let lines = gw.log_lines("need a restart", 1);
    assert_eq!(lines.len(), 1, "{}", gw.logs());
    for key in ["server.listen", "server.threads", "token.issuer"] {
        assert!(lines[0].contains(key), "{key} not named: {}", lines[0]);
    }
    // The hot part applied; the listener and the issuer did not change.
    assert_eq!(get(&gw, "/api/orders", &cookie).status(), 200);
    assert_eq!(two.count(), 1);
    let jwks = fetch_jwks(&client(), &gw.admin_url("/.well-known/jwks.json"));
    verify(two.last().bearer(), &jwks, "orders", gw.issuer());
    assert!(
        std::net::TcpStream::connect(new_listen).is_err(),
        "the new listener must wait for a restart"
    );
    // Reloading the same file again still names them: they still do not run.
    hup_and_wait(&gw, "ok", 1.0);
    let lines = gw.log_lines("need a restart", 2);
    assert_eq!(lines.len(), 2, "{}", gw.logs());
    assert!(lines[1].contains("server.listen"), "{}", lines[1]);
}

/// The audience in a JWT's payload (not verified: only which config minted it).
fn audience_of(jwt: &str) -> String {
    let payload = jwt.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["aud"].as_str().expect("aud").to_owned()
}

#[test]
fn every_request_during_reloads_sees_one_whole_route() {
    let redis = RedisServer::start();
    let (one, two) = (Upstream::echo("one"), Upstream::echo("two"));
    let config = |up: &Upstream, aud: &str| {
        base(&redis).route(Route::new("orders", "/api/orders", &[up.addr()]).audience(aud))
    };
    let (x, y) = (config(&one, "aud-one"), config(&two, "aud-two"));
    let gw = x.start();
    let cookie = login(&redis, &gw, "user-flip");

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
        let url = gw.url("/api/orders");
        let cookie = cookie_header(&cookie);
        std::thread::spawn(move || {
            let http = client();
            while !stop.load(Ordering::SeqCst) {
                match http.get(&url).header("cookie", &cookie).send() {
                    Ok(r) if r.status() == 200 => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.lock().push(r.status().to_string()),
                    Err(e) => failures.lock().push(e.to_string()),
                }
            }
        })
    };
    for round in 0..10 {
        let next = if round % 2 == 0 { &y } else { &x };
        let before = served.load(Ordering::SeqCst);
        reload(&gw, next, "ok");
        assert_eventually!(served.load(Ordering::SeqCst) > before + 3);
    }
    stop.store(true, Ordering::SeqCst);
    load.join().expect("load thread");

    assert!(failures.lock().is_empty(), "{:?}", failures.lock());
    assert!(one.count() > 10 && two.count() > 10, "both configs served");
    for (up, aud) in [(&one, "aud-one"), (&two, "aud-two")] {
        for rec in up.requests() {
            assert_eq!(
                audience_of(rec.bearer()),
                aud,
                "a mixed route at {}",
                up.name()
            );
        }
    }
}
