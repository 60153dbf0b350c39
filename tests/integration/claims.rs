//! SPEC "What upstreams receive": the JWT's header and claims, verified against the
//! gateway's own JWKS with an independent library (jsonwebtoken).

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::harness::{
    GatewayBuilder, Route, Stack, Upstream, assert_eventually, assert_refusal, now, sha256_hex,
    try_verify, verify,
};

fn routes(b: GatewayBuilder, up: &Upstream) -> GatewayBuilder {
    b.route(Route::new("orders", "/api/orders", &[up.addr()]).audience("orders-api"))
        .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
        .route(
            Route::new("reports", "/api/reports", &[up.addr()])
                .audience("reports-api")
                .token_ttl("60s"),
        )
}

#[test]
fn token_verifies_with_issuer_subject_and_the_routes_audience() {
    let s = Stack::start(routes);
    let cookie = s.login("user-42");

    assert_eq!(s.status("/api/orders/1", Some(&cookie)), 200);
    let orders = s.last_token("orders-api");
    assert_eq!(orders.str("iss"), crate::harness::ISSUER);
    assert_eq!(orders.str("sub"), "user-42");
    assert_eq!(orders.audiences(), vec!["orders-api".to_owned()]);

    // `audience` defaults to the route's name.
    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    let billing = s.last_token("billing");
    assert_eq!(billing.audiences(), vec!["billing".to_owned()]);
    assert_eq!(billing.str("sub"), "user-42");

    // A token for one audience is not valid for another.
    let token = s.up.requests()[0].bearer().to_owned();
    let jwks = s.jwks();
    assert!(
        try_verify(&token, &jwks, "billing", crate::harness::ISSUER).is_err(),
        "an orders-api token must not verify for audience billing"
    );
    assert!(
        try_verify(&token, &jwks, "orders-api", "https://other.issuer").is_err(),
        "wrong issuer"
    );
}

#[test]
fn time_claims_follow_token_ttl_and_the_route_override() {
    let s = Stack::start(|b, up| routes(b, up).token_ttl("10m"));
    for (path, aud, ttl) in [
        ("/api/orders", "orders-api", 600),
        ("/api/reports", "reports-api", 60),
    ] {
        let cookie = s.login("user-1");
        let before = now();
        assert_eq!(s.status(path, Some(&cookie)), 200, "{path}");
        let after = now();
        let t = s.last_token(aud);
        let (iat, nbf, exp) = (t.u64("iat"), t.u64("nbf"), t.u64("exp"));
        assert!(
            before.saturating_sub(5) <= iat && iat <= after + 5,
            "{path}: iat {iat} not near now {before}..{after}"
        );
        assert!(nbf <= iat, "{path}: nbf {nbf} after iat {iat}");
        assert_eq!(exp - iat, ttl, "{path}: exp - iat must be the token ttl");
    }
}

#[test]
fn jti_is_unique_and_sid_is_a_stable_handle_that_reveals_nothing() {
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    let other = s.login("user-1");

    let mut sids = Vec::new();
    let mut jtis = HashSet::new();
    for c in [&cookie, &cookie, &other] {
        assert_eq!(s.status("/api/billing", Some(c)), 200);
        let t = s.last_token("billing");
        let jti = t.str("jti");
        assert!(!jti.is_empty(), "jti must not be empty");
        assert!(
            jtis.insert(jti.to_owned()),
            "jti {jti} repeated on a critical route"
        );
        let sid = t.str("sid").to_owned();
        assert!(!sid.is_empty());
        for c in [&cookie, &other] {
            for secret in [c.to_string(), sha256_hex(c.as_bytes()), s.key(c)] {
                assert!(!sid.contains(&secret), "sid {sid:?} contains {secret:?}");
            }
        }
        sids.push(sid);
    }
    assert_eq!(sids[0], sids[1], "sid must be stable for one session");
    assert_ne!(
        sids[0], sids[2],
        "two sessions of one user must have different sids"
    );
}

#[test]
fn configured_session_claims_are_copied_and_other_fields_are_not() {
    let s = Stack::start(routes);
    let cookie = s.login_json(
        &json!({
            "sub": "user-9",
            "exp": now() + 600,
            "roles": ["admin", "ops"],
            "email": "a@example.com",
            "internal_note": "do not leak",
        })
        .to_string(),
    );
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    let t = s.last_token("orders-api");
    assert_eq!(t.claims["roles"], json!(["admin", "ops"]));
    assert_eq!(t.claims["email"], json!("a@example.com"));
    assert_eq!(
        t.claims.get("internal_note"),
        None,
        "only configured claims are copied: {}",
        t.claims
    );

    // A session without the optional claims still works and gets none.
    let bare = s.login("user-10");
    assert_eq!(s.status("/api/billing", Some(&bare)), 200);
    let t = s.last_token("billing");
    assert!(
        t.claims.get("roles").is_none_or(Value::is_null),
        "{}",
        t.claims
    );
}

#[test]
fn session_claims_follow_the_claims_setting() {
    let s = Stack::start(|b, up| routes(b, up).claims(&["email", "tenant"]));
    let cookie = s.login_json(
        r#"{"sub": "user-3", "roles": ["admin"], "email": "e@example.com", "tenant": {"id": 7}}"#,
    );
    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    let t = s.last_token("billing");
    assert_eq!(t.claims["email"], json!("e@example.com"));
    assert_eq!(
        t.claims["tenant"],
        json!({"id": 7}),
        "claim values are copied as JSON"
    );
    assert!(
        t.claims.get("roles").is_none(),
        "roles is not configured here: {}",
        t.claims
    );
}

#[test]
fn subject_field_names_the_session_field_that_becomes_sub() {
    let s = Stack::start(|b, up| routes(b, up).subject_field("uid"));
    let cookie = s.login_json(r#"{"uid": "user-7", "email": "u7@example.com"}"#);
    assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
    let t = s.last_token("billing");
    assert_eq!(t.str("sub"), "user-7");
    assert_eq!(t.str("email"), "u7@example.com");

    let both = s.login_json(r#"{"uid": "user-8", "sub": "not-this-one"}"#);
    assert_eq!(s.status("/api/billing", Some(&both)), 200);
    assert_eq!(s.last_token("billing").str("sub"), "user-8");

    // subject_field is required: a session with only `sub` lacks it.
    let only_sub = s.login_json(r#"{"sub": "user-9"}"#);
    assert_refusal(
        s.get("/api/billing", Some(&only_sub)),
        401,
        "unauthenticated",
    );
}

#[test]
fn critical_route_tokens_are_fresh_and_carry_chk() {
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    let mut jtis = HashSet::new();
    for _ in 0..4 {
        let before = now();
        assert_eq!(s.status("/api/billing", Some(&cookie)), 200);
        let t = s.last_token("billing");
        let chk = t.u64("chk");
        assert!(
            before.saturating_sub(2) <= chk && chk <= now() + 2,
            "chk {chk} not close to now {before}"
        );
        assert!(
            jtis.insert(t.str("jti").to_owned()),
            "critical routes always get a fresh token"
        );
    }
}

#[test]
fn non_critical_tokens_never_cross_audiences() {
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    let mut by_aud: Vec<(String, String)> = Vec::new();
    for _ in 0..3 {
        for (path, aud) in [
            ("/api/orders", "orders-api"),
            ("/api/reports", "reports-api"),
        ] {
            assert_eq!(s.status(path, Some(&cookie)), 200);
            let t = s.last_token(aud);
            assert_eq!(t.audiences(), vec![aud.to_owned()]);
            by_aud.push((aud.to_owned(), t.str("jti").to_owned()));
        }
    }
    // A jti may repeat within one audience (token reuse), never across two.
    for (aud_a, jti_a) in &by_aud {
        for (aud_b, jti_b) in &by_aud {
            if aud_a != aud_b {
                assert_ne!(jti_a, jti_b, "one jti used for {aud_a} and {aud_b}");
            }
        }
    }
}

#[test]
fn es256_and_eddsa_tokens_verify_with_matching_jwks_keys() {
    for (alg, expected, kty, crv) in [
        ("ES256", Algorithm::ES256, "EC", "P-256"),
        ("EdDSA", Algorithm::EdDSA, "OKP", "Ed25519"),
    ] {
        let s = Stack::start(|b, up| routes(b, up).algorithm(alg));
        let cookie = s.login("user-1");
        assert_eq!(s.status("/api/billing", Some(&cookie)), 200, "{alg}");
        let t = s.last_token("billing");
        assert_eq!(t.header.alg, expected, "{alg}: header alg");
        let kid = t.header.kid.clone().expect("kid");
        let jwks: Value = s
            .http
            .get(s.gw.url("/.well-known/jwks.json"))
            .send()
            .expect("jwks")
            .json()
            .expect("json");
        let key = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap_or_else(|| panic!("{alg}: kid {kid} not in {jwks}"))
            .clone();
        assert_eq!(key["kty"], kty, "{alg}: {key}");
        assert_eq!(key["crv"], crv, "{alg}: {key}");
        assert_eq!(key["alg"], alg, "{alg}: {key}");
    }
}

#[test]
fn reused_tokens_always_keep_more_than_half_their_lifetime() {
    // token.ttl = 4 s: a token may be reused for about 2 s, then a new one is minted.
    let s = Stack::start(|b, up: &Upstream| {
        b.token_ttl("4s")
            .route(Route::new("orders", "/api/orders", &[up.addr()]).audience("orders-api"))
    });
    let cookie = s.login("user-1");
    let jwks = s.jwks();
    let mut first_jti: Option<String> = None;
    assert_eventually!(
        {
            assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
            let t = verify(
                s.up.last().bearer(),
                &jwks,
                "orders-api",
                crate::harness::ISSUER,
            );
            let (iat, exp, now) = (t.u64("iat"), t.u64("exp"), now());
            assert_eq!(exp - iat, 4);
            // Second granularity: "more than half" of 4 s left is at least 1 s once rounded.
            assert!(
                exp > now,
                "a reused token with {}s of its 4s left was forwarded",
                exp.saturating_sub(now)
            );
            let jti = t.str("jti").to_owned();
            first_jti.get_or_insert_with(|| jti.clone()) != &jti
        },
        Duration::from_secs(5),
        "a new token must be minted before the first one passes half of its lifetime"
    );
}

#[test]
fn the_token_cache_bound_decides_reuse_and_is_reported() {
    use crate::harness::scrape::{metrics, sample};
    // Default bound: one token is minted, then reused; the gauges count it.
    let s = Stack::start(routes);
    let cookie = s.login("user-1");
    s.warm("/api/orders", &cookie);
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    let jti = s.last_token("orders-api").str("jti").to_owned();
    for _ in 0..3 {
        assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
        assert_eq!(s.last_token("orders-api").str("jti"), jti, "reused");
    }
    let text = metrics(&s.gw);
    assert_eq!(
        sample(&text, "sessiongate_token_cache_entries", &[]),
        Some(1.0)
    );
    let bytes = sample(&text, "sessiongate_token_cache_bytes", &[]).expect("token bytes");
    assert!(
        (400.0..4096.0).contains(&bytes),
        "one token weighs {bytes} bytes"
    );
    assert_eq!(
        sample(&text, "sessiongate_session_cache_entries", &[]),
        Some(1.0)
    );

    // token_cache_max_bytes = 0: the session is still cached, every request mints.
    let s = Stack::start(|b, up| routes(b, up).set("session.token_cache_max_bytes", 0));
    let cookie = s.login("user-1");
    let mut jtis = HashSet::new();
    for _ in 0..4 {
        assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
        assert!(jtis.insert(s.last_token("orders-api").str("jti").to_owned()));
    }
    assert_eventually!(
        {
            assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
            let text = metrics(&s.gw);
            assert_eq!(
                sample(&text, "sessiongate_token_cache_entries", &[]),
                Some(0.0)
            );
            sample(
                &text,
                "sessiongate_session_cache_events_total",
                &[("event", "hit")],
            )
            .is_some_and(|hits| hits > 0.0)
        },
        Duration::from_secs(5),
        "sessions stay cached without a token cache"
    );
    assert!(jtis.insert(s.last_token("orders-api").str("jti").to_owned()));
}
