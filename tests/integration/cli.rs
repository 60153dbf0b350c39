//! SPEC "Binary and CLI": `config check`, `session create|revoke|revoke-user`,
//! `token inspect`, and exit codes (0 ok, 1 runtime failure, 2 bad usage or config).

use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;

use crate::harness::cli::{assert_exit, sg, sg_within, stderr, stdout};
use crate::harness::ports::dead_addr;
use crate::harness::{
    GatewayBuilder, RedisServer, Route, Stack, Upstream, assert_eventually, assert_refusal,
    session_key,
};

/// A config file (not started) in a temp dir, with one route `orders` and whatever
/// `configure` adds; returns (dir guard, path text, listen addr).
fn config_with(
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let builder = GatewayBuilder::new("redis://127.0.0.1:6399/0").route(Route::new(
        "orders",
        "/api/orders",
        &[dead_addr()],
    ));
    let (path, listen, _) = configure(builder).write_config(dir.path());
    (dir, path.display().to_string(), listen.to_string())
}

fn cli_stack(cache_ttl: &str) -> Stack {
    Stack::start(|b, up: &Upstream| {
        b.cache_ttl(cache_ttl)
            .route(Route::new("orders", "/api/orders", &[up.addr()]))
            .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
    })
}

fn create_session(s: &Stack, sub: &str, extra: &[&str]) -> String {
    let config = s.gw.config_path().display().to_string();
    let mut args = vec!["session", "create", "--config", &config, "--sub", sub];
    args.extend_from_slice(extra);
    let out = sg(&args, None, &[]);
    assert_exit(&out, 0, "session create");
    let cookie = stdout(&out).trim().to_owned();
    assert!(
        (16..=512).contains(&cookie.len())
            && cookie
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~')),
        "session create must print a valid cookie value, got {cookie:?}"
    );
    cookie
}

#[test]
fn config_check_accepts_a_valid_config_and_prints_the_effective_config() {
    let (_dir, path, listen) = config_with(|b| b);
    let out = sg(&["config", "check", "--config", &path], None, &[]);
    assert_exit(&out, 0, "config check, valid");
    let printed = stdout(&out);
    assert!(
        printed.contains(&listen),
        "effective config should show server.listen {listen}:\n{printed}"
    );
    assert!(
        printed.contains("/api/orders"),
        "effective config should show the route:\n{printed}"
    );

    // --config may come from SESSIONGATE_CONFIG.
    let out = sg(&["config", "check"], None, &[("SESSIONGATE_CONFIG", &path)]);
    assert_exit(&out, 0, "config check via SESSIONGATE_CONFIG");
}

#[test]
fn config_check_rejects_an_unknown_key_with_exit_2() {
    let (_dir, path, _) = config_with(|b| b.set("server.bogus_knob", 1_i64));
    let out = sg(&["config", "check", "--config", &path], None, &[]);
    assert_exit(&out, 2, "unknown key");
    assert!(
        stderr(&out).contains("bogus_knob"),
        "stderr must name the unknown key:\n{}",
        stderr(&out)
    );
}

#[test]
fn config_check_reports_every_error_with_its_key_path() {
    let (_dir, path, _) = config_with(|b| {
        b.set("keys.dir", "")
            .route(Route::new("long", "/long", &[dead_addr()]).token_ttl("10m"))
    });
    let text = std::fs::read_to_string(&path).expect("config");
    let config: toml::Table = text.parse().expect("TOML");
    assert_eq!(config["keys"]["dir"].as_str(), Some(""), "{text}");
    assert_eq!(
        config["route"][1]["token_ttl"].as_str(),
        Some("10m"),
        "{text}"
    );
    let out = sg(&["config", "check", "--config", &path], None, &[]);
    assert_exit(&out, 2, "two errors");
    let err = stderr(&out);
    assert!(
        err.contains("keys.dir"),
        "stderr must name keys.dir (empty with store = \"file\"):\n{err}"
    );
    assert!(
        err.contains("route") && err.contains("token_ttl"),
        "stderr must name the route's token_ttl (longer than token.ttl):\n{err}"
    );
}

#[test]
fn config_check_rejects_a_bad_duration() {
    let (_dir, path, _) = config_with(|b| b.cache_ttl("banana"));
    let out = sg(&["config", "check", "--config", &path], None, &[]);
    assert_exit(&out, 2, "bad duration");
    assert!(stderr(&out).contains("cache_ttl"), "{}", stderr(&out));
}

#[test]
fn bad_usage_exits_2() {
    assert_exit(&sg(&["frobnicate"], None, &[]), 2, "unknown command");
    assert_exit(&sg(&["run"], None, &[]), 2, "run without --config");
    assert_exit(
        &sg(&["session", "create"], None, &[]),
        2,
        "session create without --sub",
    );
}

#[test]
fn session_create_writes_the_spec_schema_and_prints_a_working_cookie() {
    let s = cli_stack("5s");
    let cookie = create_session(
        &s,
        "alice",
        &["--claim", "email=alice@example.com", "--ttl", "1h"],
    );

    // SPEC schema: key_prefix + sha256 hex of the cookie, a JSON object, `SET ... EX`.
    let key = session_key(s.gw.key_prefix(), &cookie);
    let value: Value =
        serde_json::from_str(&s.redis.cli(&["GET", &key])).expect("the session is JSON");
    assert_eq!(value["sub"], "alice", "{value}");
    assert_eq!(value["email"], "alice@example.com", "{value}");
    let ttl: i64 = s.redis.cli(&["TTL", &key]).parse().expect("TTL");
    assert!(
        (3500..=3600).contains(&ttl),
        "--ttl 1h gives a TTL of {ttl}"
    );

    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    let t = s.last_token("billing");
    assert_eq!(t.str("sub"), "alice");
    assert_eq!(t.str("email"), "alice@example.com");
}

#[test]
fn session_revoke_takes_the_token_from_stdin_or_the_argument() {
    let s = cli_stack("1s");
    let config = s.gw.config_path().display().to_string();
    let via_stdin = s.login("user-1");
    let via_arg = s.login("user-2");
    for c in [&via_stdin, &via_arg] {
        assert_eq!(s.status("/api/orders", Some(c)), 200);
        assert_eq!(s.status("/api/billing", Some(c)), 200);
    }

    let out = sg(
        &["session", "revoke", "--config", &config, "-"],
        Some(&format!("{via_stdin}\n")),
        &[],
    );
    assert_exit(&out, 0, "session revoke -");
    assert!(
        !stdout(&out).contains(&via_stdin) && !stderr(&out).contains(&via_stdin),
        "the token must not be echoed"
    );
    let out = sg(
        &["session", "revoke", "--config", &config, &via_arg],
        None,
        &[],
    );
    assert_exit(&out, 0, "session revoke TOKEN");

    for c in [&via_stdin, &via_arg] {
        assert!(!s.redis.exists(&s.key(c)), "the session key must be gone");
        // Critical: revoked at once.
        assert_refusal(s.get("/api/billing", Some(c)), 401, "unauthenticated");
        assert_eventually!(
            s.status("/api/orders", Some(c)) == 401,
            Duration::from_millis(2500)
        );
    }
}

#[test]
fn session_revoke_user_revokes_every_session_of_that_user_only() {
    let s = cli_stack("1s");
    let config = s.gw.config_path().display().to_string();
    let bob = [
        create_session(&s, "bob", &[]),
        create_session(&s, "bob", &[]),
    ];
    let carol = create_session(&s, "carol", &[]);
    for c in bob.iter().chain([&carol]) {
        assert_eq!(s.status("/api/orders", Some(c)), 200);
        assert_eq!(s.status("/api/billing", Some(c)), 200);
    }

    let out = sg(
        &["session", "revoke-user", "--config", &config, "bob"],
        None,
        &[],
    );
    assert_exit(&out, 0, "session revoke-user");

    for c in &bob {
        // Critical: same bound as one revocation (immediate).
        assert_refusal(s.get("/api/billing", Some(c)), 401, "unauthenticated");
        assert_eventually!(
            s.status("/api/orders", Some(c)) == 401,
            Duration::from_millis(2500)
        );
    }
    assert_eq!(
        s.status("/api/billing", Some(&carol)),
        200,
        "another user's session is untouched"
    );
    assert_eq!(s.status("/api/orders", Some(&carol)), 200);
}

#[test]
fn token_inspect_prints_header_and_claims() {
    let s = cli_stack("5s");
    let cookie = s.login("user-inspect");
    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    let rec = s.up.last();
    let jwt = rec.bearer();
    let t = s.last_token("billing");
    let kid = t.header.kid.clone().expect("kid");

    for (args, stdin) in [
        (vec!["token", "inspect", jwt], None),
        (vec!["token", "inspect", "-"], Some(jwt)),
    ] {
        let out = sg(&args, stdin, &[]);
        assert_exit(&out, 0, "token inspect");
        let printed = stdout(&out);
        for needle in [
            "at+jwt",
            kid.as_str(),
            "user-inspect",
            "billing",
            t.str("jti"),
            crate::harness::ISSUER,
        ] {
            assert!(
                printed.contains(needle),
                "token inspect output lacks {needle:?}:\n{printed}"
            );
        }
    }

    let out = sg(&["token", "inspect", "not-a-jwt"], None, &[]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a malformed JWT must not exit 0"
    );
}

#[test]
fn commands_needing_redis_fail_with_exit_1_when_it_is_down() {
    // A runtime failure (Redis unreachable) is exit 1, not a usage error.
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let builder = GatewayBuilder::new(&redis.url()).route(Route::new(
        "orders",
        "/api/orders",
        &[dead_addr()],
    ));
    let (path, _, _) = builder.write_config(dir.path());
    redis.stop();
    let config = path.display().to_string();
    let out = sg(
        &["session", "create", "--config", &config, "--sub", "x"],
        None,
        &[],
    );
    assert_exit(&out, 1, "session create with Redis down");
}

#[test]
fn run_with_a_bad_config_exits_2() {
    let (_dir, path, _) = config_with(|b| b.set("server.bogus_knob", 1_i64));
    assert_exit(
        &sg(&["run", "--config", &path], None, &[]),
        2,
        "run with a bad config",
    );
}

#[test]
fn run_exits_1_when_its_listen_address_is_taken() {
    let redis = RedisServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let builder = GatewayBuilder::new(&redis.url())
        .route(Route::new("orders", "/api/orders", &[dead_addr()]))
        .set("server.listen", taken_addr.as_str());
    let (path, _, _) = builder.write_config(dir.path());
    // A runtime failure is reported promptly, not after retrying for half a minute.
    let out = sg_within(
        &["run", "--config", &path.display().to_string()],
        None,
        &[],
        Duration::from_secs(15),
    );
    assert_exit(
        &out,
        1,
        "run with its listen address in use (a runtime failure)",
    );
    drop(taken);
}

#[test]
fn run_exits_0_on_sigterm_within_the_grace_period() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let mut gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("open", "/open", &[up.addr()]).auth("none"))
        .start();
    assert_eq!(
        crate::harness::client()
            .get(gw.url("/open"))
            .send()
            .expect("send")
            .status(),
        200
    );
    // grace_period = "1s" in every test config.
    let status = gw
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}
