//! SPEC "Admin listener": `/healthz`, `/readyz`, and `/metrics` in Prometheus text format
//! with the SPEC's metric names and bounded labels (never a subject, session or path).

use crate::harness::ports::dead_addr;
use crate::harness::{Route, Stack, Upstream, assert_refusal, new_cookie, sha256_hex};

#[test]
fn healthz_and_readyz_are_200_on_the_admin_listener() {
    let s =
        Stack::start(|b, up: &Upstream| b.route(Route::new("orders", "/api/orders", &[up.addr()])));
    for path in ["/healthz", "/readyz"] {
        let resp = s.http.get(s.gw.admin_url(path)).send().expect("send");
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[test]
fn unknown_admin_paths_get_the_json_not_found_of_every_gateway_answer() {
    let s =
        Stack::start(|b, up: &Upstream| b.route(Route::new("orders", "/api/orders", &[up.addr()])));
    let resp = s.http.get(s.gw.admin_url("/nope")).send().expect("send");
    assert_refusal(resp, 404, "not_found");
}

#[test]
fn metrics_have_the_spec_names_and_never_leak_subjects_sessions_or_paths() {
    let s = Stack::start(|b, up: &Upstream| {
        b.route(Route::new("orders", "/api/orders", &[up.addr()]))
            .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
            .route(Route::new("gone", "/gone", &[dead_addr()]).auth("none"))
    });
    let sub = "subject-that-must-not-leak-4242";
    let cookie = s.login(sub);
    let unknown = new_cookie();
    assert_eq!(s.status("/api/orders/98765431", Some(&cookie)), 200);
    assert_eq!(s.status("/api/billing/98765431", Some(&cookie)), 200);
    assert_refusal(
        s.get("/api/orders/98765431", Some(&unknown)),
        401,
        "unauthenticated",
    );
    assert_refusal(s.get("/gone/98765431", None), 502, "bad_gateway");

    let resp = s.http.get(s.gw.admin_url("/metrics")).send().expect("send");
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        ctype.starts_with("text/plain"),
        "Prometheus text format, got content-type {ctype:?}"
    );
    let text = resp.text().expect("body");

    for name in [
        "sessiongate_requests_total",
        "sessiongate_request_duration_seconds",
        "sessiongate_session_lookups_total",
        "sessiongate_redis_command_duration_seconds",
        "sessiongate_tokens_minted_total",
        "sessiongate_jwks_keys",
        "sessiongate_key_rotation_age_seconds",
        "sessiongate_upstream_errors_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "/metrics lacks {name}:\n{text}"
        );
    }
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sessiongate_requests_total{"))
        .collect();
    assert!(
        requests
            .iter()
            .any(|l| l.contains(r#"route="orders""#) && l.contains(r#"status="200""#)),
        "sessiongate_requests_total needs route and status labels: {requests:#?}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sessiongate_upstream_errors_total{")
                && l.contains(r#"route="gone""#)),
        "the 502 must be counted in sessiongate_upstream_errors_total{{route=\"gone\"}}:\n{text}"
    );
    let lookups: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sessiongate_session_lookups_total{"))
        .collect();
    for result in ["valid", "missing"] {
        assert!(
            lookups
                .iter()
                .any(|l| l.contains(r#"source="redis""#)
                    && l.contains(&format!("result=\"{result}\""))),
            "sessiongate_session_lookups_total needs source=\"redis\", result=\"{result}\": {lookups:#?}"
        );
    }
    for secret in [
        sub,
        cookie.as_str(),
        unknown.as_str(),
        &sha256_hex(cookie.as_bytes()),
        "98765431",
    ] {
        assert!(
            !text.contains(secret),
            "/metrics contains {secret:?}, labels must be bounded:\n{text}"
        );
    }
}
