//! Monitoring (deploy/prometheus, deploy/grafana): the alert rules pass `promtool check
//! rules` and their unit tests, and every alert has a firing and a non-firing case; every
//! metric (and label) named by an alert or a dashboard query is really exported by a
//! running gateway that was driven through the cases that make each family appear; and
//! a real Prometheus server scrapes a gateway, answers queries about it, evaluates the
//! rules without error and raises no alert for a healthy gateway.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (scripts/test.sh
//! installs it). Without them these tests fail and say so: they do not skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::ports::dead_addr;
use crate::harness::prometheus::PrometheusServer;
use crate::harness::python::run;
use crate::harness::{Route, Stack, Upstream, assert_eventually, assert_refusal, new_cookie};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Series that Prometheus itself makes for every target; the Prometheus test checks them.
const SYNTHETIC: &[&str] = &["up"];

/// Labels every scraped series has (target labels) or that aggregations make (`le`).
const TARGET_LABELS: &[&str] = &["job", "instance", "le"];

// === The rule files ===

/// One alerting rule: its name and expression.
struct Alert {
    name: String,
    expr: String,
}

fn alerts() -> Vec<Alert> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("alerts.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_owned();
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            out.push(Alert { name, expr });
        }
    }
    out
}

/// Every PromQL query of the dashboard: panel targets and template variables, with the
/// panel title for messages.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/sessiongate.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    let panels = dash["panels"].as_array().expect("panels");
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            out.push((title.clone(), expr.to_owned()));
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().expect("variable query");
            // label_values(SELECTOR, label): the selector is what must exist.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_owned())
                .unwrap_or_else(|| panic!("unexpected variable query {q}"));
            out.push((format!("variable {}", var["name"]), inner));
        }
    }
    assert!(out.len() >= 20, "the dashboard should query most families");
    out
}

/// The dashboard's Grafana variables replaced by concrete values.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", "sessiongate")
        .replace("$instance", ".*")
        .replace("$route", ".*")
}

// === Reading PromQL (just enough) ===

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names in `expr`: identifiers starting with `sessiongate_`, plus the
/// synthetic series named as `up{`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut in_string = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            in_string = !in_string;
            i += 1;
            continue;
        }
        if in_string || !is_ident(c) || (i > 0 && is_ident(chars[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if word.starts_with("sessiongate_")
            || (SYNTHETIC.contains(&word.as_str()) && next == Some(&'{'))
        {
            out.insert(word);
        }
    }
    out
}

/// Label names used by `expr`: in selectors (`name{a="x", b=~"y"}`) and in `by`, `on`,
/// `without`, `ignoring` and `group_left/right` clauses.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                let end = expr[i..].find('}').map_or(expr.len(), |e| i + e);
                for matcher in split_matchers(&expr[i + 1..end]) {
                    let name: String = matcher
                        .trim()
                        .chars()
                        .take_while(|c| is_ident(*c))
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
                i = end;
            }
            b'(' => {
                let before = expr[..i].trim_end();
                let word: String = before
                    .chars()
                    .rev()
                    .take_while(|c| is_ident(*c))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                if matches!(
                    word.as_str(),
                    "by" | "on" | "without" | "ignoring" | "group_left" | "group_right"
                ) {
                    let end = expr[i..].find(')').map_or(expr.len(), |e| i + e);
                    for name in expr[i + 1..end].split(',') {
                        let name = name.trim();
                        if !name.is_empty() {
                            out.insert(name.to_owned());
                        }
                    }
                    i = end;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Splits `a="x,y", b=~"z"` on the commas outside quotes.
fn split_matchers(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_string = !in_string,
            ',' if !in_string => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[test]
fn metric_and_label_names_are_read_from_promql() {
    let expr = r#"sum by (job, route) (rate(sessiongate_requests_total{status=~"5..", x="a,b"}[5m])) / on (job) up{job="sessiongate"} and sessiongate_ready == 0"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        ["sessiongate_ready", "sessiongate_requests_total", "up"]
    );
    let labels: Vec<String> = label_names(expr).into_iter().collect();
    assert_eq!(labels, ["job", "route", "status", "x"]);
    // A word inside a label value is not a metric.
    assert!(metric_names(r#"foo{a="sessiongate_not_a_metric"}"#).is_empty());
}

// === Reading the exposition format ===

/// What a scrape exports: for each sample name (`x_bucket`, `x_total`, `x`), the label
/// names seen on it.
#[derive(Debug, Default)]
struct Exported {
    samples: BTreeMap<String, BTreeSet<String>>,
    values: BTreeMap<String, f64>,
}

impl Exported {
    fn parse(text: &str) -> Self {
        let mut out = Exported::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let entry = out.samples.entry(name.to_owned()).or_default();
            for matcher in split_matchers(labels) {
                if let Some((label, _)) = matcher.split_once('=') {
                    entry.insert(label.trim().to_owned());
                }
            }
            if let Ok(v) = value.parse::<f64>() {
                out.values.insert(series.to_owned(), v);
            }
        }
        out
    }

    /// The labels of `name` (or of its `_bucket` series, for a histogram).
    fn labels(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.samples
            .get(name)
            .or_else(|| self.samples.get(&format!("{name}_bucket")))
    }
}

/// Checks that every metric `expr` names is in `exported`, and every label it uses is a
/// label of one of those metrics or a target label. Returns the problems.
fn check_expr(what: &str, expr: &str, exported: &Exported) -> Vec<String> {
    let mut problems = Vec::new();
    let names = metric_names(expr);
    if names.is_empty() {
        problems.push(format!("{what}: names no metric: {expr}"));
    }
    let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|s| (*s).to_owned()).collect();
    for name in &names {
        if SYNTHETIC.contains(&name.as_str()) {
            continue;
        }
        match exported.labels(name) {
            Some(labels) => known.extend(labels.iter().cloned()),
            None => problems.push(format!("{what}: `{name}` is not exported")),
        }
    }
    for label in label_names(expr) {
        if !known.contains(&label) {
            problems.push(format!("{what}: label `{label}` is on none of {names:?}"));
        }
    }
    problems
}

// === Tests ===

#[test]
fn alert_rules_pass_promtool_and_every_alert_fires_and_stays_quiet_in_its_tests() {
    let dir = deploy("prometheus");
    run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(dir.join("alerts.yml")))
    .unwrap_or_else(|e| panic!("promtool check rules (apt-get install prometheus): {e}"));
    run(Command::new("promtool")
        .current_dir(&dir)
        .args(["test", "rules", "alerts.test.yml"]))
    .unwrap_or_else(|e| panic!("promtool test rules: {e}"));

    // Coverage: each alert has a case expecting it to fire and one expecting silence.
    let text = std::fs::read_to_string(dir.join("alerts.test.yml")).expect("alerts.test.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in doc["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"]
            .as_sequence()
            .expect("alert_rule_test")
        {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    let alerts = alerts();
    assert!(alerts.len() >= 9, "the issue's alerts are all there");
    for alert in &alerts {
        assert!(
            fires.contains(&alert.name),
            "no test where {} fires",
            alert.name
        );
        assert!(
            quiet.contains(&alert.name),
            "no test where {} stays quiet",
            alert.name
        );
    }
    for alert in [
        "SessiongateRedisErrors",
        "SessiongateNotReady",
        "SessiongateKeyRotationOverdue",
        "SessiongateKeyRotationFailing",
        "SessiongateRevocationPushDown",
        "SessiongateHigh5xxRate",
        "SessiongateHighLatencyP99",
    ] {
        assert!(
            alerts.iter().any(|a| a.name == alert),
            "the issue asks for {alert}"
        );
    }
    // Every alert has a runbook section under its own name.
    let runbook = std::fs::read_to_string(deploy("../docs/operations.md")).expect("runbook");
    for alert in &alerts {
        assert!(
            runbook.contains(&format!("### {}\n", alert.name)),
            "docs/operations.md has no \"### {}\" section",
            alert.name
        );
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool checks PromQL syntax for recording rules: one rule per query.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = concrete(expr);
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("JSON string")
        ));
    }
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, rules).expect("write");
    run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path))
    .unwrap_or_else(|e| panic!("a dashboard query is not valid PromQL: {e}"));
}

/// A gateway driven through the cases that make every family appear: cache and Redis
/// lookups, a critical route, an auth refusal, an upstream failure, a revocation, a
/// SIGHUP reload and a Redis outage. Returns its scrape after all that.
fn scrape_after_everything() -> (Exported, String) {
    let mut s = Stack::start(|b, up: &Upstream| {
        b.route(Route::new("orders", "/api/orders", &[up.addr()]))
            .route(Route::new("payments", "/api/payments", &[up.addr()]).critical())
            .route(Route::new("gone", "/gone", &[dead_addr()]).auth("none"))
    });
    let alice = s.login("metrics-alice");
    let bob = s.login("metrics-bob");
    for _ in 0..3 {
        assert_eq!(s.status("/api/orders/1", Some(&alice)), 200);
    }
    assert_eq!(s.status("/api/payments/1", Some(&alice)), 200);
    assert_refusal(
        s.get("/api/orders/1", Some(&new_cookie())),
        401,
        "unauthenticated",
    );
    assert_refusal(s.get("/gone/1", None), 502, "bad_gateway");
    let metrics_url = s.gw.admin_url("/metrics");
    let scrape = |s: &Stack| {
        s.http
            .get(&metrics_url)
            .send()
            .and_then(|r| r.text())
            .expect("scrape")
    };
    // A revocation: the push channel invalidates the cached session. The channel must be
    // armed first (on a loaded machine it may still be arming, and the cache_ttl bound
    // alone would refuse the session without any revocation event to export).
    assert_eventually!(
        scrape(&s).contains("sessiongate_revocation_push_connected 1"),
        Duration::from_secs(15)
    );
    s.redis.del(&s.key(&alice));
    assert_eventually!(
        s.status("/api/orders/1", Some(&alice)) == 401,
        Duration::from_secs(15)
    );
    assert_eventually!(
        scrape(&s).contains("sessiongate_revocation_events_total{"),
        Duration::from_secs(5)
    );
    // A reload (same file, so it succeeds).
    assert!(
        s.gw.signal_and_wait("HUP", Duration::ZERO).is_none(),
        "SIGHUP must not stop it"
    );
    assert_eventually!(scrape(&s).contains(r#"sessiongate_config_reloads_total{result="ok"} 1"#));
    // A Redis outage: the critical route answers 503 and Redis errors are counted.
    s.redis.stop();
    assert_eventually!(s.status("/api/payments/1", Some(&bob)) == 503);
    // A command already sent when Redis went is counted as `error` or `timeout`; once
    // the pool knows it is down, commands fail at once as `disconnected` (each scrape
    // checks readiness with a `PING`). How soon depends on the machine's load.
    assert_eventually!(
        scrape(&s)
            .lines()
            .any(|l| l.starts_with("sessiongate_redis_errors_total{")
                && l.contains(r#"kind="disconnected""#)),
        Duration::from_secs(10),
        "a stopped Redis is counted as disconnected"
    );
    let text = scrape(&s);
    (Exported::parse(&text), text)
}

#[test]
fn every_metric_in_the_alerts_and_the_dashboard_is_exported_by_a_running_gateway() {
    let (exported, text) = scrape_after_everything();

    // The metrics added for the alerts say what they should after the outage.
    assert_eq!(
        exported.values.get("sessiongate_ready"),
        Some(&0.0),
        "{text}"
    );
    assert_eq!(
        exported
            .values
            .get("sessiongate_key_rotation_interval_seconds"),
        Some(&86_400.0),
        "the builder's keys.rotate_every is 24h"
    );
    assert_eq!(
        exported.values.get("sessiongate_revocation_push_enabled"),
        Some(&1.0)
    );

    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    for alert in alerts() {
        named.extend(metric_names(&alert.expr));
        problems.extend(check_expr(
            &format!("alert {}", alert.name),
            &alert.expr,
            &exported,
        ));
    }
    for (title, expr) in dashboard_queries() {
        named.extend(metric_names(&expr));
        problems.extend(check_expr(&format!("panel {title:?}"), &expr, &exported));
    }
    assert!(
        problems.is_empty(),
        "{}\n----- scrape -----\n{text}",
        problems.join("\n")
    );
    // Not vacuous: the checks covered the SPEC's families and the alert-only ones.
    for name in [
        "sessiongate_requests_total",
        "sessiongate_request_duration_seconds_bucket",
        "sessiongate_redis_errors_total",
        "sessiongate_ready",
        "sessiongate_key_rotation_age_seconds",
        "sessiongate_key_rotation_failures_total",
        "sessiongate_revocation_push_connected",
        "sessiongate_auth_refusals_total",
        "sessiongate_critical_checks_total",
    ] {
        assert!(named.contains(name), "no alert or panel uses {name}");
    }
}

#[test]
fn a_real_prometheus_scrapes_the_gateway_evaluates_the_rules_and_raises_nothing() {
    let s =
        Stack::start(|b, up: &Upstream| b.route(Route::new("orders", "/api/orders", &[up.addr()])));
    let cookie = s.login("prometheus-user");
    for _ in 0..5 {
        assert_eq!(s.status("/api/orders/1", Some(&cookie)), 200);
    }
    let alerts_file = deploy("prometheus/alerts.yml");
    let prom = PrometheusServer::start(&[s.gw.admin_addr().to_string()], &[&alerts_file]);

    // A counter read back through the query API, with the value the requests made.
    let value_of = |q: &str| -> Option<String> {
        prom.query(q)
            .first()
            .and_then(|r| r["value"][1].as_str().map(str::to_owned))
    };
    let q = r#"sessiongate_requests_total{job="sessiongate", route="orders", status="200"}"#;
    assert_eventually!(
        value_of(q).as_deref() == Some("5"),
        Duration::from_secs(30),
        "{q} = {:?}\n{}",
        value_of(q),
        prom.log()
    );
    assert_eq!(value_of(r#"up{job="sessiongate"}"#).as_deref(), Some("1"));
    assert_eq!(value_of("sessiongate_ready").as_deref(), Some("1"));

    // Every rule loaded and evaluated without error.
    let rules_ok = || {
        let rules = prom.api("/api/v1/rules");
        let all: Vec<Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        all.len() == alerts().len() && all.iter().all(|r| r["health"] == "ok")
    };
    assert_eventually!(
        rules_ok(),
        Duration::from_secs(20),
        "rules: {}",
        prom.api("/api/v1/rules")
    );
    // Every dashboard query runs.
    for (_, expr) in dashboard_queries() {
        prom.query(&concrete(&expr));
    }
    // A healthy gateway raises no alert, not even a pending one. The two latency alerts
    // are left out: how fast a loaded test machine answers is not under test here.
    let alerts = prom.api("/api/v1/alerts");
    let raised: Vec<&str> = alerts["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .filter(|name| !matches!(*name, "SessiongateHighLatencyP99" | "SessiongateRedisSlow"))
        .collect();
    assert!(
        raised.is_empty(),
        "alerts against a healthy gateway: {alerts}"
    );
}

#[test]
fn redis_failures_are_counted_by_command_and_kind() {
    let mut s = Stack::start(|b, up: &Upstream| {
        b.route(Route::new("payments", "/api/payments", &[up.addr()]).critical())
    });
    let cookie = s.login("redis-kinds");
    assert_eq!(s.status("/api/payments/1", Some(&cookie)), 200);
    let errors = |s: &Stack, kind: &str| -> f64 {
        let text = s
            .http
            .get(s.gw.admin_url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("scrape");
        Exported::parse(&text)
            .values
            .iter()
            .filter(|(series, _)| {
                series.starts_with("sessiongate_redis_errors_total{")
                    && series.contains(r#"command="GET""#)
                    && series.contains(&format!("kind=\"{kind}\""))
            })
            .map(|(_, v)| *v)
            .sum()
    };
    assert_eq!(errors(&s, "timeout"), 0.0, "no error before the faults");

    // Redis holds every command for 5 s: the critical route's GET passes redis.timeout
    // (250 ms), answers 503 and is counted as a timeout.
    s.redis.cli(&["CLIENT", "PAUSE", "5000"]);
    assert_refusal(s.get("/api/payments/1", Some(&cookie)), 503, "unavailable");
    assert!(errors(&s, "timeout") >= 1.0, "a paused Redis is a timeout");

    // Redis gone: commands fail at once as disconnected.
    s.redis.stop();
    assert_eventually!(
        s.status("/api/payments/1", Some(&cookie)) == 503 && errors(&s, "disconnected") >= 1.0
    );
}
