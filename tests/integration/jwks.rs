//! SPEC "JWKS": `/.well-known/jwks.json` on both listeners, key fields, caching headers
//! (`Cache-Control: public, max-age=N` with N ≤ `publish_ahead`, `ETag` and
//! `If-None-Match`).

use serde_json::Value;

use crate::harness::{Stack, Upstream};

const PATH: &str = "/.well-known/jwks.json";

fn start(alg: &str, publish_ahead: &str) -> Stack {
    Stack::start(|b, up: &Upstream| {
        b.algorithm(alg)
            .publish_ahead(publish_ahead)
            .route(crate::harness::Route::new(
                "orders",
                "/api/orders",
                &[up.addr()],
            ))
    })
}

fn urls(s: &Stack) -> [(&'static str, String); 2] {
    [("proxy", s.gw.url(PATH)), ("admin", s.gw.admin_url(PATH))]
}

#[test]
fn jwks_is_served_identically_on_both_listeners() {
    let s = start("ES256", "30m");
    let docs: Vec<Value> = urls(&s)
        .iter()
        .map(|(which, url)| {
            let resp = s.http.get(url).send().expect("send");
            assert_eq!(resp.status(), 200, "{which}");
            let ctype = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(ctype.contains("json"), "{which}: content-type {ctype:?}");
            resp.json().expect("JSON")
        })
        .collect();
    assert_eq!(docs[0], docs[1], "both listeners must serve the same JWKS");
    assert!(
        !docs[0]["keys"].as_array().expect("keys array").is_empty(),
        "{}",
        docs[0]
    );
}

#[test]
fn jwks_keys_carry_the_spec_fields_and_no_private_parts() {
    for (alg, kty, crv, has_y) in [
        ("ES256", "EC", "P-256", true),
        ("EdDSA", "OKP", "Ed25519", false),
    ] {
        let s = start(alg, "30m");
        let doc: Value = s
            .http
            .get(s.gw.admin_url(PATH))
            .send()
            .expect("send")
            .json()
            .expect("JSON");
        let keys = doc["keys"].as_array().expect("keys");
        assert!(!keys.is_empty(), "{alg}: {doc}");
        for key in keys {
            assert_eq!(key["kty"], kty, "{alg}: {key}");
            assert_eq!(key["alg"], alg, "{alg}: {key}");
            assert_eq!(key["use"], "sig", "{alg}: {key}");
            assert_eq!(key["crv"], crv, "{alg}: {key}");
            assert!(
                key["kid"].as_str().is_some_and(|k| !k.is_empty()),
                "{alg}: {key}"
            );
            assert!(
                key["x"].as_str().is_some_and(|x| !x.is_empty()),
                "{alg}: {key}"
            );
            assert_eq!(
                key["y"].as_str().is_some(),
                has_y,
                "{alg}: y present only for P-256: {key}"
            );
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(
                    key.get(private).is_none(),
                    "{alg}: private parameter {private} published: {key}"
                );
            }
        }
    }
}

#[test]
fn jwks_cache_control_max_age_is_at_most_publish_ahead() {
    let s = start("ES256", "10m");
    for (which, url) in urls(&s) {
        let resp = s.http.get(&url).send().expect("send");
        let cc = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let directives: Vec<String> = cc
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        assert!(
            directives.iter().any(|d| d == "public"),
            "{which}: Cache-Control {cc:?}"
        );
        let max_age: u64 = directives
            .iter()
            .find_map(|d| d.strip_prefix("max-age="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{which}: no max-age in Cache-Control {cc:?}"));
        assert!(
            max_age <= 600,
            "{which}: max-age {max_age} exceeds publish_ahead (600 s)"
        );
    }
}

#[test]
fn jwks_etag_is_honoured_by_if_none_match() {
    let s = start("EdDSA", "30m");
    for (which, url) in urls(&s) {
        let resp = s.http.get(&url).send().expect("send");
        assert_eq!(resp.status(), 200);
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{which}: no ETag"))
            .to_owned();

        let resp = s
            .http
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .expect("send");
        assert_eq!(resp.status(), 304, "{which}: If-None-Match {etag}");
        assert!(
            resp.bytes().expect("body").is_empty(),
            "{which}: 304 must have an empty body"
        );

        let resp = s
            .http
            .get(&url)
            .header("if-none-match", "\"some-other-etag\"")
            .send()
            .expect("send");
        assert_eq!(
            resp.status(),
            200,
            "{which}: a different ETag gets the document"
        );
        assert!(!resp.bytes().expect("body").is_empty());
    }
}
