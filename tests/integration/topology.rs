//! The distributed engines: Redis Cluster and Sentinel, through fred's URL forms
//! (SPEC "Configuration": `redis.url` takes cluster and sentinel forms).
//!
//! Sessions spread over every cluster master must authenticate and revoke like on a
//! single server, with the shared keyring in the cluster too; behind Sentinel the
//! gateway must find the master, and after a failover keep serving the same sessions
//! from the promoted replica.

use std::time::Duration;

use reqwest::blocking::{Client, Response};

use crate::critical_reads::direct_clients;
use crate::harness::topology::{RedisCluster, RedisSentinel};
use crate::harness::{
    GatewayBuilder, Route, Upstream, assert_eventually, assert_refusal, client, cookie_header,
    new_cookie, new_kek, session_json, session_key, verify,
};

/// `GET url` with the session cookie.
fn get(http: &Client, url: &str, cookie: &str) -> Response {
    http.get(url)
        .header("cookie", cookie_header(cookie))
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The status of `GET url` with the session cookie; 0 when the request fails.
fn status(http: &Client, url: &str, cookie: &str) -> u16 {
    http.get(url)
        .header("cookie", cookie_header(cookie))
        .send()
        .map_or(0, |r| r.status().as_u16())
}

#[test]
fn cluster_sessions_on_every_master_authenticate_and_revoke() {
    let cluster = RedisCluster::start();
    let up = Upstream::echo("echo");
    let gw = GatewayBuilder::new(&cluster.url())
        .redis_keys(&new_kek())
        .cache_ttl("30s")
        .route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("payments", "/api/payments", &[up.addr()]).critical())
        .start();
    let http = client();

    // Enough sessions that every master owns some (keys hash to slots).
    let mut sessions = Vec::new();
    let mut owners = [0usize; 3];
    while sessions.len() < 24 || owners.contains(&0) {
        assert!(sessions.len() < 200, "keys never reached every master");
        let cookie = new_cookie();
        let key = session_key(gw.key_prefix(), &cookie);
        let sub = format!("user-{}", sessions.len());
        cluster.set_session(&key, &session_json(&sub), 3600);
        let owner = cluster.owner_of(&key);
        owners[owner] += 1;
        sessions.push((cookie, key, sub, owner));
    }

    let jwks = crate::harness::fetch_jwks(&http, &gw.url("/.well-known/jwks.json"));
    assert_eq!(jwks.keys.len(), 1, "the keyring lives in the cluster");
    for (cookie, _, sub, _) in &sessions {
        assert_eq!(status(&http, &gw.url("/api/orders/1"), cookie), 200);
        assert_eq!(
            verify(up.last().bearer(), &jwks, "orders", gw.issuer()).str("sub"),
            sub
        );
        assert_eq!(status(&http, &gw.url("/api/payments/1"), cookie), 200);
    }

    for (cookie, key, _, owner) in &sessions {
        cluster.del(key);
        // The critical route refuses at once after the DEL.
        assert_refusal(
            get(&http, &gw.url("/api/payments/1"), cookie),
            401,
            "unauthenticated",
        );
        // cache_ttl is 30 s: only the push invalidation (armed on every master) can
        // make the cached route refuse this fast.
        assert_eventually!(
            status(&http, &gw.url("/api/orders/1"), cookie) == 401,
            Duration::from_secs(3),
            "non-critical route after DEL of a key on master {}",
            owner
        );
    }
}

#[test]
fn sentinel_finds_the_master_and_follows_a_failover() {
    let mut topo = RedisSentinel::start();
    let up = Upstream::echo("echo");
    let gw = GatewayBuilder::new(&topo.url())
        .route(Route::new("orders", "/api/orders", &[up.addr()]))
        .route(Route::new("payments", "/api/payments", &[up.addr()]).critical())
        .start();
    let http = client();

    let cookie = new_cookie();
    let key = session_key(gw.key_prefix(), &cookie);
    topo.master.set_session(&key, &session_json("alice"), 3600);
    // The session must be on the replica before the master goes away.
    assert_eq!(topo.master.cli(&["WAIT", "1", "5000"]), "1");
    assert_eq!(status(&http, &gw.url("/api/payments/1"), &cookie), 200);
    assert_eq!(status(&http, &gw.url("/api/orders/1"), &cookie), 200);
    assert!(
        !direct_clients(&topo.master.cli(&["CLIENT", "LIST"])).is_empty(),
        "the critical route reads the master found through Sentinel directly"
    );

    let old_master = topo.master.port();
    topo.master.stop();
    // Hold the dead master's port with a listener that never accepts: otherwise another
    // test's redis-server may start on it, answer the sentinel's PINGs and the gateway's
    // GETs, and stand in for the master it replaced (seen once in CI). Connections to it
    // now hang like connections to a crashed host.
    let _black_hole =
        std::net::TcpListener::bind(("127.0.0.1", old_master)).expect("hold the old master's port");
    // While no master answers, the critical route refuses rather than guesses.
    assert_eventually!(
        status(&http, &gw.url("/api/payments/1"), &cookie) == 503,
        Duration::from_secs(10)
    );
    assert_eventually!(
        topo.master_port() == Some(topo.replica.port()),
        Duration::from_secs(30),
        "sentinel did not promote the replica (old master {old_master})"
    );
    // The gateway finds the new master through the sentinel; the session survived.
    assert_eventually!(
        status(&http, &gw.url("/api/payments/1"), &cookie) == 200,
        Duration::from_secs(30),
        "the gateway did not follow the failover"
    );
    assert!(
        !direct_clients(&topo.replica.cli(&["CLIENT", "LIST"])).is_empty(),
        "direct reads followed the failover to the promoted replica"
    );
    assert_eq!(
        verify(
            up.last().bearer(),
            &crate::harness::fetch_jwks(&http, &gw.url("/.well-known/jwks.json")),
            "payments",
            gw.issuer()
        )
        .str("sub"),
        "alice"
    );
    topo.replica.del(&key);
    assert_refusal(
        get(&http, &gw.url("/api/payments/1"), &cookie),
        401,
        "unauthenticated",
    );
}

/// SPEC "Configuration": `sentinelPassword` in a sentinel URL is the sentinels' own
/// password. Without it a gateway cannot reach sentinels that require one, and says so
/// by not being ready rather than serving.
#[test]
fn sentinels_with_their_own_password_are_reached_with_sentinel_password() {
    let topo = RedisSentinel::start_with_password("sentinel-only-pw");
    let up = Upstream::echo("echo");
    let url = topo.url();
    assert!(url.contains("&sentinelPassword="), "{url}");
    let gw = GatewayBuilder::new(&url)
        .route(Route::new("payments", "/api/payments", &[up.addr()]).critical())
        .start();
    let http = client();
    let cookie = new_cookie();
    let key = session_key(gw.key_prefix(), &cookie);
    topo.master.set_session(&key, &session_json("alice"), 3600);
    assert_eq!(status(&http, &gw.url("/api/payments/1"), &cookie), 200);

    let without = url.split("&sentinelPassword=").next().unwrap().to_owned();
    let blind = GatewayBuilder::new(&without)
        .route(Route::new("payments", "/api/payments", &[up.addr()]).critical())
        .start_alive();
    crate::harness::eventually::pause(Duration::from_secs(2));
    let ready = http.get(blind.admin_url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(status(&http, &blind.url("/api/payments/1"), &cookie), 503);
}
