//! Critical routes read the session on the request's own connection to Redis (issue 16,
//! `exchange/src/store/direct.rs`): those connections are named `sessiongate-direct`,
//! authenticate and select the configured database like fred's, are replaced when Redis
//! drops them while idle without failing a request, and never exceed their bound (past
//! it, reads go through fred).

use crate::harness::scrape::value;
use crate::harness::{GatewayBuilder, RedisServer, Route, Stack, Upstream, client, cookie_header};
use crate::harness::{new_cookie, session_json, session_key};

/// `CLIENT LIST` lines of the gateway's direct-read connections.
pub(crate) fn direct_clients(list: &str) -> Vec<String> {
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == "name=sessiongate-direct"))
        .map(str::to_owned)
        .collect()
}

/// The `id=` of a `CLIENT LIST` line.
fn client_id(line: &str) -> String {
    line.split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .expect("an id")
        .to_owned()
}

fn redis_errors(s: &Stack) -> f64 {
    ["timeout", "error", "disconnected"]
        .iter()
        .map(|kind| {
            value(
                &s.gw,
                "sessiongate_redis_errors_total",
                &[("command", "GET"), ("kind", kind)],
            )
        })
        .sum()
}

#[test]
fn critical_reads_survive_their_connections_being_dropped_and_see_revocation_at_once() {
    let s = Stack::start(|b, up| {
        b.route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
    });
    let cookie = s.login("alice");
    for _ in 0..3 {
        assert_eq!(s.status("/api/billing/x", Some(&cookie)), 200);
    }
    let before = direct_clients(&s.redis.cli(&["CLIENT", "LIST"]));
    assert!(
        !before.is_empty(),
        "critical reads use named direct connections"
    );
    let errors = redis_errors(&s);

    // Redis drops every one of them (as on its idle `timeout`, or a proxy in between).
    for line in &before {
        s.redis.cli(&["CLIENT", "KILL", "ID", &client_id(line)]);
    }
    for _ in 0..3 {
        assert_eq!(
            s.status("/api/billing/x", Some(&cookie)),
            200,
            "a connection closed while idle is replaced, not a failed request"
        );
    }
    let after = direct_clients(&s.redis.cli(&["CLIENT", "LIST"]));
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|l| before.iter().all(|b| client_id(b) != client_id(l))),
        "the dropped connections were replaced"
    );
    assert_eq!(
        redis_errors(&s),
        errors,
        "no read failed while they were replaced"
    );

    s.redis.cli(&["DEL", &s.key(&cookie)]);
    assert_eq!(
        s.status("/api/billing/x", Some(&cookie)),
        401,
        "revoked at once"
    );
}

#[test]
fn critical_reads_authenticate_and_select_the_configured_database() {
    const PASSWORD: &str = "direct-s3cret";
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "requirepass", PASSWORD]);
    let auth = |args: &[&str]| {
        let mut all = vec!["-a", PASSWORD, "--no-auth-warning"];
        all.extend_from_slice(args);
        redis.cli(&all)
    };
    let up = Upstream::echo("echo");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/3", redis.port());
    let gw = GatewayBuilder::new(&url)
        .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
        .start();
    let http = client();
    let status = |cookie: &str| {
        http.get(gw.url("/api/billing/x"))
            .header("cookie", cookie_header(cookie))
            .send()
            .map_or(0, |r| r.status().as_u16())
    };
    let in_db3 = new_cookie();
    let key3 = session_key(gw.key_prefix(), &in_db3);
    auth(&["-n", "3", "SET", &key3, &session_json("bob"), "EX", "3600"]);
    let in_db0 = new_cookie();
    let key0 = session_key(gw.key_prefix(), &in_db0);
    auth(&["-n", "0", "SET", &key0, &session_json("eve"), "EX", "3600"]);

    assert_eq!(status(&in_db3), 200);
    assert_eq!(status(&in_db0), 401, "only database 3 is read");
    let direct = direct_clients(&auth(&["CLIENT", "LIST"]));
    assert!(!direct.is_empty());
    assert!(
        direct.iter().all(|l| l.split(' ').any(|f| f == "db=3")),
        "{direct:?}"
    );
    auth(&["-n", "3", "DEL", &key3]);
    assert_eq!(status(&in_db3), 401);
}

#[test]
fn concurrent_critical_reads_stay_within_the_bound_and_all_answer() {
    let s = Stack::start(|b, up| {
        b.route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
            .set("redis.pool_size", 1)
            .set("redis.timeout", "2s")
    });
    let cookie = s.login("carol");
    assert_eq!(s.status("/api/billing/x", Some(&cookie)), 200);
    // Hold every command for a moment so that the reads pile up.
    s.redis.cli(&["CLIENT", "PAUSE", "300", "ALL"]);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..48)
            .map(|_| scope.spawn(|| s.status("/api/billing/x", Some(&cookie))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&c| c == 200), "{statuses:?}");
    let direct = direct_clients(&s.redis.cli(&["CLIENT", "LIST"]));
    assert!(
        (1..=32).contains(&direct.len()),
        "at most 32 direct connections per pooled one: {}",
        direct.len()
    );
}
