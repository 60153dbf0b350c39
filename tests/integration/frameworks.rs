//! SPEC "Sessions in Redis: formats", against the real frameworks: users log in and out
//! of a real Express app (express-session, connect-redis, Passport) and a real Django
//! project (its `cache` and `cached_db` engines on Django's Redis backend and
//! django-redis), and requests go through the real gateway reading those sessions.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::apps::{
    DjangoApp, DjangoCache, DjangoEngine, DjangoOptions, ExpressApp, ExpressOptions,
    new_express_secret,
};
use crate::harness::{
    Gateway, GatewayBuilder, RedisServer, Route, Upstream, assert_eventually, client, fetch_jwks,
    verify,
};
use crate::harness::{cli, scrape};

/// The environment variable the gateway reads Express secrets from.
const SECRETS_ENV: &str = "SG_TEST_EXPRESS_SECRETS";

/// `orders` (required), `payments` (required, critical), `public` (optional).
fn routes(b: GatewayBuilder, up: &Upstream) -> GatewayBuilder {
    b.route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("payments", "/api/payments", &[up.addr()]).critical())
        .route(Route::new("public", "/public", &[up.addr()]).auth("optional"))
}

fn express_gateway(redis: &RedisServer, up: &Upstream, secrets_json: &str) -> Gateway {
    routes(GatewayBuilder::new(&redis.url()), up)
        .format("express")
        .set("session.secrets_env", SECRETS_ENV)
        .cache_ttl("2s")
        .env(SECRETS_ENV, secrets_json)
        .start()
}

/// `GET path` through the gateway with `name=value` as the only cookie.
fn get(gw: &Gateway, path: &str, cookie: Option<(&str, &str)>) -> reqwest::blocking::Response {
    let mut req = client().get(gw.url(path));
    if let Some((name, value)) = cookie {
        req = req.header("cookie", format!("{name}={value}"));
    }
    req.send().unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The claims of the bearer token the echo upstream got for its last request.
fn last_claims(gw: &Gateway, up: &Upstream, aud: &str) -> crate::harness::Verified {
    let jwks = fetch_jwks(&client(), &gw.admin_url("/.well-known/jwks.json"));
    verify(up.last().bearer(), &jwks, aud, gw.issuer())
}

/// `sessiongate_session_lookups_total{result, source}`.
fn lookups_total(gw: &Gateway, result: &str, source: &str) -> f64 {
    scrape::value(
        gw,
        "sessiongate_session_lookups_total",
        &[("result", result), ("source", source)],
    )
}

#[test]
fn express_logins_get_tokens_and_logouts_revoke_them() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let app = ExpressApp::start(&redis.url(), ExpressOptions::default());
    let gw = express_gateway(&redis, &up, &app.secrets_json());
    let name = app.cookie_name().to_owned();

    let alice = app.login_with_roles("alice", &["admin"]);
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &alice))).status(),
        200
    );
    let claims = last_claims(&gw, &up, "payments");
    assert_eq!(claims.str("sub"), "alice");
    assert_eq!(claims.claims["roles"], serde_json::json!(["admin"]));
    // Passport's integer ids become strings.
    let numeric = app.login_int(42);
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &numeric))).status(),
        200
    );
    assert_eq!(last_claims(&gw, &up, "payments").str("sub"), "42");
    // The unencoded form express also reads.
    let plain = alice
        .replace("%3A", ":")
        .replace("%2B", "+")
        .replace("%2F", "/");
    assert_eq!(
        get(&gw, "/api/orders/1", Some((&name, &plain))).status(),
        200
    );

    // Logging out through the app: the critical route refuses at once, the other within
    // cache_ttl.
    assert_eq!(
        get(&gw, "/api/orders/1", Some((&name, &alice))).status(),
        200
    );
    app.logout(&alice);
    let out = Instant::now();
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &alice))).status(),
        401
    );
    assert_eventually!(
        get(&gw, "/api/orders/1", Some((&name, &alice))).status() == 401,
        Duration::from_secs(3)
    );
    assert!(out.elapsed() < Duration::from_secs(3));
}

#[test]
fn express_anonymous_sessions_and_bad_signatures_get_no_token() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let app = ExpressApp::start(&redis.url(), ExpressOptions::default());
    let mut gw = express_gateway(&redis, &up, &app.secrets_json());
    let name = app.cookie_name().to_owned();

    let anonymous = app.anonymous();
    assert_eq!(
        get(&gw, "/api/orders/1", Some((&name, &anonymous))).status(),
        401
    );
    assert_eq!(
        get(&gw, "/public/1", Some((&name, &anonymous))).status(),
        200
    );
    assert!(
        up.last().header("authorization").is_none(),
        "optional: no token"
    );
    assert!(
        ["cache", "redis"]
            .map(|source| lookups_total(&gw, "anonymous", source))
            .iter()
            .sum::<f64>()
            >= 1.0
    );

    // Badly signed, unsigned and foreign-secret cookies: 401, refused before Redis.
    let alice = app.login("alice");
    let (rest, sig) = alice.rsplit_once('.').expect("signed");
    let mut flipped: Vec<char> = sig.chars().collect();
    flipped[3] = if flipped[3] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{rest}.{}", flipped.into_iter().collect::<String>());
    let sid = crate::harness::apps::express_sid(&alice).expect("sid");
    let foreign_app = ExpressApp::start(&redis.url(), ExpressOptions::default());
    let foreign = foreign_app.login("mallory");
    let lookups = redis.key_lookups();
    for bad in [tampered.as_str(), &sid, &format!("s%3A{sid}"), &foreign] {
        let resp = get(&gw, "/api/payments/1", Some((&name, bad)));
        assert_eq!(resp.status(), 401, "{bad}");
    }
    assert_eq!(
        redis.key_lookups(),
        lookups,
        "no Redis call for a bad signature"
    );
    assert!(lookups_total(&gw, "malformed", "cookie") >= 4.0);
    assert!(gw.is_alive());
}

#[test]
fn express_secret_rotation_and_stale_cookie_expires() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let (old, new) = (new_express_secret(), new_express_secret());
    let before = ExpressApp::start(
        &redis.url(),
        ExpressOptions {
            secrets: vec![old.clone()],
            ..ExpressOptions::default()
        },
    );
    let after = ExpressApp::start(
        &redis.url(),
        ExpressOptions {
            secrets: vec![new.clone(), old],
            ..ExpressOptions::default()
        },
    );
    let name = before.cookie_name().to_owned();
    let signed_old = before.login("old-user");
    let signed_new = after.login("new-user");
    // The gateway with the rotated array accepts both, as express-session does.
    let gw = express_gateway(&redis, &up, &after.secrets_json());
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &signed_old))).status(),
        200
    );
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &signed_new))).status(),
        200
    );
    drop(gw);
    // Once the old secret is dropped, its cookies are no session.
    let gw = express_gateway(&redis, &up, &serde_json::json!([new]).to_string());
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &signed_old))).status(),
        401
    );
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &signed_new))).status(),
        200
    );

    // A rolling session's key lives on while its stored cookie.expires is long past:
    // the key's TTL decides.
    let key = after.redis_key(&signed_new);
    let value: Value = serde_json::from_str(&redis.cli(&["GET", &key])).expect("JSON");
    let mut stale = value;
    stale["cookie"]["expires"] = "2001-01-01T00:00:00.000Z".into();
    redis.set_session(&key, &stale.to_string(), 600);
    assert_eq!(
        get(&gw, "/api/payments/1", Some((&name, &signed_new))).status(),
        200
    );
}

#[test]
fn express_start_revoke_and_create_on_the_command_line() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let app = ExpressApp::start(&redis.url(), ExpressOptions::default());
    let builder = routes(GatewayBuilder::new(&redis.url()), &up)
        .format("express")
        .set("session.secrets_env", SECRETS_ENV);
    // Without its secret the gateway refuses to start, naming the variable.
    let dir = tempfile::tempdir().expect("dir");
    let (config, _, _) = builder.write_config(dir.path());
    let config = config.to_str().expect("path").to_owned();
    let out = cli::sg(&["run", "--config", &config], None, &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(SECRETS_ENV),
        "{out:?}"
    );
    let env = [(SECRETS_ENV, app.secrets_json())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // revoke-user without an index: a scan of `sess:`, deleting only that user's.
    let alices: Vec<String> = (0..3).map(|_| app.login("alice")).collect();
    let bob = app.login("bob");
    let anonymous = app.anonymous();
    let out = cli::sg(
        &["session", "revoke-user", "--config", &config, "alice"],
        None,
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("revoked 3 session(s)") && said.contains("scan"),
        "{said}"
    );
    for cookie in &alices {
        assert!(!redis.exists(&app.redis_key(cookie)));
    }
    assert!(redis.exists(&app.redis_key(&bob)));
    assert!(redis.exists(&app.redis_key(&anonymous)));

    // revoke takes the cookie as the browser sends it; a badly signed one deletes nothing.
    let (rest, _) = bob.rsplit_once('.').expect("signed");
    let out = cli::sg(
        &[
            "session",
            "revoke",
            "--config",
            &config,
            &format!("{rest}.AAAA"),
        ],
        None,
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(redis.exists(&app.redis_key(&bob)));
    let out = cli::sg(
        &["session", "revoke", "--config", &config, &bob],
        None,
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    assert!(!redis.exists(&app.redis_key(&bob)));

    // create writes only sessiongate sessions.
    let out = cli::sg(
        &["session", "create", "--config", &config, "--sub", "x"],
        None,
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Express"),
        "{out:?}"
    );
}

#[test]
fn django_logins_get_tokens_on_every_engine_and_backend() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    for (engine, cache) in [
        (DjangoEngine::Cache, DjangoCache::Django),
        (DjangoEngine::Cache, DjangoCache::DjangoRedis),
        (DjangoEngine::CachedDb, DjangoCache::Django),
    ] {
        let app = DjangoApp::start(&redis.url(), DjangoOptions::new(engine, cache));
        let gw = routes(GatewayBuilder::new(&redis.url()), &up)
            .format("django")
            .set("session.key_prefix", app.key_prefix())
            .cache_ttl("2s")
            .start();
        let name = app.cookie_name().to_owned();
        let what = format!("{engine:?} on {cache:?}");
        let alice = app.login_with_roles("alice", &["admin"]);
        assert_eq!(
            get(&gw, "/api/payments/1", Some((&name, &alice))).status(),
            200,
            "{what}"
        );
        let claims = last_claims(&gw, &up, "payments");
        assert_eq!(
            claims.str("sub"),
            app.user_id(&alice),
            "{what}: the pk as a string"
        );
        assert_eq!(
            claims.claims["roles"],
            serde_json::json!(["admin"]),
            "{what}"
        );
        // A datetime the app stored is data the decoder will not build: null, session kept.
        let dated = app.login_with_datetime("bob");
        assert_eq!(
            get(&gw, "/api/payments/1", Some((&name, &dated))).status(),
            200,
            "{what}"
        );
        // Anonymous sessions.
        let anonymous = app.anonymous();
        assert_eq!(
            get(&gw, "/api/orders/1", Some((&name, &anonymous))).status(),
            401,
            "{what}"
        );
        assert_eq!(
            get(&gw, "/public/1", Some((&name, &anonymous))).status(),
            200,
            "{what}"
        );
        // Logout through Django.
        app.logout(&alice);
        assert_eq!(
            get(&gw, "/api/payments/1", Some((&name, &alice))).status(),
            401,
            "{what}"
        );
        assert_eventually!(
            get(&gw, "/api/orders/1", Some((&name, &alice))).status() == 401,
            Duration::from_secs(3)
        );
        // revoke-user without an index.
        let bob2 = app.login("bob");
        let dir = tempfile::tempdir().expect("dir");
        let builder = routes(GatewayBuilder::new(&redis.url()), &up)
            .format("django")
            .set("session.key_prefix", app.key_prefix());
        let (config, _, _) = builder.write_config(dir.path());
        let user = app.user_id(&bob2);
        let out = cli::sg(
            &[
                "session",
                "revoke-user",
                "--config",
                config.to_str().expect("path"),
                &user,
            ],
            None,
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
        assert_eq!(
            get(&gw, "/api/payments/1", Some((&name, &bob2))).status(),
            401,
            "{what}"
        );
        assert_eq!(
            get(&gw, "/api/payments/1", Some((&name, &dated))).status(),
            401,
            "{what}: bob's older session too"
        );
    }
}

#[test]
fn hostile_and_truncated_pickles_are_malformed_and_run_nothing() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let mut gw = routes(GatewayBuilder::new(&redis.url()), &up)
        .format("django")
        .start();
    let prefix = ":1:django.contrib.sessions.cache";
    let marker = std::env::temp_dir().join(format!("sg-pwned-{}", std::process::id()));
    // pickle.dumps of an object whose __reduce__ is (os.system, ('touch <marker>',)),
    // made by hand: PROTO 2, GLOBAL 'posix system', the command, TUPLE1, REDUCE, STOP.
    let command = format!("touch {}", marker.display());
    let mut reduce = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    reduce.extend_from_slice(&u32::try_from(command.len()).expect("short").to_le_bytes());
    reduce.extend_from_slice(command.as_bytes());
    reduce.extend_from_slice(b"\x85R.");
    // The same, as the value of a session key, and a truncated valid session.
    let mut in_dict = b"\x80\x04}(\x8c\r_auth_user_id\x8c\x011\x8c\x01xcposix\nsystem\n".to_vec();
    in_dict.extend_from_slice(b"X");
    in_dict.extend_from_slice(&u32::try_from(command.len()).expect("short").to_le_bytes());
    in_dict.extend_from_slice(command.as_bytes());
    in_dict.extend_from_slice(b"\x85Ru.");
    let truncated =
        b"\x80\x05\x95\x13\x01\x00\x00\x00\x00\x00\x00}\x94(\x8c\r_auth_user_id".to_vec();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a reduce at the top level", reduce, 401),
        ("a reduce as one value", in_dict, 200),
        ("a truncated pickle", truncated, 401),
        ("not a pickle", b"hello".to_vec(), 401),
    ];
    for (i, (what, value, status)) in cases.into_iter().enumerate() {
        let cookie = format!("{}{i}", "a".repeat(31));
        redis.set_large(&format!("{prefix}{cookie}"), &value, 600);
        let got = get(&gw, "/api/payments/1", Some(("sessionid", &cookie))).status();
        assert_eq!(got, status, "{what}");
    }
    assert!(!marker.exists(), "nothing was executed");
    assert!(gw.is_alive());
    assert!(lookups_total(&gw, "malformed", "redis") >= 3.0);
}
