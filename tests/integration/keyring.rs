//! The shared keyring (`keys.store = "redis"`): replicas on one Redis agree on the keys,
//! and private keys are sealed at rest (SPEC "JWKS", issue: rotating shared keys).

use crate::harness::{
    GatewayBuilder, RedisServer, Route, Upstream, client, cookie_header, fetch_jwks, new_cookie,
    new_kek, session_json, session_key, verify,
};

#[test]
fn two_replicas_on_one_redis_publish_the_same_jwks_and_verify_each_others_tokens() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let kek = new_kek();
    let builder = GatewayBuilder::new(&redis.url())
        .redis_keys(&kek)
        .route(Route::new("orders", "/api/orders", &[up.addr()]));
    let a = builder.start();
    let b = builder.start();
    let http = client();
    let jwks_a = fetch_jwks(&http, &a.admin_url("/.well-known/jwks.json"));
    let jwks_b = fetch_jwks(&http, &b.admin_url("/.well-known/jwks.json"));
    assert_eq!(
        jwks_a.keys.len(),
        1,
        "one bootstrap key shared by both replicas"
    );
    assert_eq!(
        serde_json::to_value(&jwks_a).expect("jwks json"),
        serde_json::to_value(&jwks_b).expect("jwks json"),
        "both replicas publish the same JWKS"
    );

    let cookie = new_cookie();
    redis.set_session(
        &session_key(a.key_prefix(), &cookie),
        &session_json("alice"),
        3600,
    );
    for (minted_by, verified_by) in [(&a, &jwks_b), (&b, &jwks_a)] {
        let resp = http
            .get(minted_by.url("/api/orders/1"))
            .header("cookie", cookie_header(&cookie))
            .send()
            .expect("GET through the gateway");
        assert_eq!(resp.status(), 200);
        let token = up.last();
        let v = verify(token.bearer(), verified_by, "orders", a.issuer());
        assert_eq!(v.str("sub"), "alice");
    }
}

#[test]
fn nothing_in_redis_holds_a_private_key_in_clear() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let kek = new_kek();
    let gw = GatewayBuilder::new(&redis.url())
        .redis_keys(&kek)
        .set("token.algorithm", "EdDSA")
        .route(Route::new("orders", "/api/orders", &[up.addr()]))
        .start();
    let ring = format!("{}keyring", gw.key_prefix());
    let dump = redis.cli(&["HGETALL", &ring]);
    assert!(
        dump.contains("sealed_key"),
        "the keyring is in Redis: {dump}"
    );
    // PKCS#8 DER of P-256 and Ed25519 keys starts with these bytes (base64: "MI", "MC4C").
    for line in dump.lines().filter(|l| l.contains("sealed_key")) {
        let record: serde_json::Value = serde_json::from_str(line).expect("record is JSON");
        let sealed = record["sealed_key"]
            .as_str()
            .expect("sealed_key is a string");
        assert!(
            !sealed.starts_with("MI") && !sealed.starts_with("MC4C"),
            "{sealed}"
        );
        assert!(record.get("private_key").is_none(), "{record}");
        assert!(record.get("d").is_none(), "{record}");
    }
}
