//! The fault suite's scenarios, shared by the CI subset (`tests/integration/chaos.rs`)
//! and the whole suite (`benches/chaos/main.rs`): each starts real processes, runs steady
//! load with valid sessions and probes that must be refused ([`Traffic`]), injects one
//! fault, and returns a [`Row`]: requests sent, answers by status, wrong answers, seconds
//! to recovery, and each promise of SPEC "Behaviour under faults" it exercised, judged
//! against its bound (plus [`Pace::slack`]) with the figure measured.
//!
//! Recovery is the time from the fault's end (Redis answering again, the failover done,
//! the network path restored) to the first 200 on the *critical* route for a request sent
//! after it: the cached route may answer from the cache through an outage, so only the
//! critical route shows when Redis is really being read again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::eventually::{pause, poll};
use crate::harness::faultproxy::{FaultProxy, NewConns};
use crate::harness::gateway::KEYS_PREFIX;
use crate::harness::metrics::Scrape;
use crate::harness::topology::{RedisCluster, RedisSentinel};
use crate::harness::traffic::{JwksWatch, Path, Plan, ReadyWatch, Record, Sample, Traffic, Who};
use crate::harness::{
    Gateway, GatewayBuilder, ISSUER, RedisServer, Route, Upstream, client, cookie_header,
    fetch_jwks, new_cookie, new_kek, session_json, session_key, try_verify,
};

/// `redis.timeout` of every gateway here (the harness's config).
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// `session.cache_ttl` of every gateway here (the harness's config): the bound of the
/// cached route.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(5);

/// SPEC: serving again within `2 × redis.timeout + 1s` of Redis being reachable again.
pub(crate) fn recovery_bound() -> Duration {
    REDIS_TIMEOUT * 2 + Duration::from_secs(1)
}

/// SPEC: `/readyz` follows Redis within `2 × redis.timeout`.
pub(crate) fn ready_bound() -> Duration {
    REDIS_TIMEOUT * 2
}

/// How long each phase of a scenario lasts, and how strictly bounds are judged.
#[derive(Clone, Debug)]
pub(crate) struct Pace {
    /// Steady traffic before the fault.
    pub(crate) warm: Duration,
    /// How long a fault lasts (a stop, an outage, added latency).
    pub(crate) fault: Duration,
    /// Steady traffic after recovery.
    pub(crate) after: Duration,
    /// The longest wait for a recovery or a failover before giving up.
    pub(crate) limit: Duration,
    /// Added to every promised bound before judging it (0: the promise as written).
    pub(crate) slack: Duration,
}

impl Pace {
    /// The whole suite's pace: the promises judged as written.
    pub(crate) fn bench() -> Self {
        Pace {
            warm: Duration::from_secs(2),
            fault: Duration::from_secs(4),
            after: Duration::from_secs(3),
            limit: Duration::from_secs(30),
            slack: Duration::ZERO,
        }
    }

    /// CI's pace: shorter phases, and bounds given room for a loaded 2-core machine
    /// (every figure is still printed as measured).
    pub(crate) fn ci() -> Self {
        Pace {
            warm: Duration::from_secs(1),
            fault: Duration::from_secs(3),
            after: Duration::from_secs(2),
            limit: Duration::from_secs(30),
            slack: Duration::from_millis(1500),
        }
    }
}

/// One promise checked in a scenario.
#[derive(Clone, Debug)]
pub(crate) struct Check {
    /// The promise, briefly.
    pub(crate) promise: String,
    /// What was measured.
    pub(crate) measured: String,
    /// Whether it held.
    pub(crate) ok: bool,
}

/// The outcome of one scenario: one line of the table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Row {
    /// `1 Redis SIGSTOP 4 s`.
    pub(crate) name: String,
    /// Requests sent (load and probes).
    pub(crate) sent: usize,
    /// Answers 200, 401, 503, other 5xx, anything else, and no answer at all.
    pub(crate) by_status: [usize; 6],
    /// 2xx answers to a probe that had to be refused.
    pub(crate) wrong: usize,
    /// Seconds from the fault's end to the first good answer.
    pub(crate) recovery: Option<Duration>,
    /// The promised bound of [`Row::recovery`], if any.
    pub(crate) bound: Option<Duration>,
    /// Every promise exercised.
    pub(crate) checks: Vec<Check>,
    /// Figures worth reporting that promise nothing.
    pub(crate) notes: Vec<String>,
}

impl Row {
    fn new(name: impl Into<String>, record: &Record) -> Self {
        let mut row = Row {
            name: name.into(),
            sent: record.samples.len(),
            ..Row::default()
        };
        for s in &record.samples {
            let i = match s.status {
                200 => 0,
                401 => 1,
                503 => 2,
                500..=599 => 3,
                0 => 5,
                _ => 4,
            };
            row.by_status[i] += 1;
        }
        row
    }

    /// Records the wrong answers (and a check that there are none).
    fn wrong(&mut self, record: &Record) {
        let wrong = record.wrong(CACHE_TTL);
        self.wrong = wrong.len();
        let first = wrong
            .first()
            .map(|s| format!(" (first: {:?} on {:?}, status {})", s.who, s.path, s.status))
            .unwrap_or_default();
        self.check(
            "no 2xx for a revoked, missing or lost session past its bound",
            format!("{} wrong answers{first}", wrong.len()),
            wrong.is_empty(),
        );
    }

    fn check(&mut self, promise: impl Into<String>, measured: impl Into<String>, ok: bool) {
        self.checks.push(Check {
            promise: promise.into(),
            measured: measured.into(),
            ok,
        });
    }

    /// A check that `measured` is within `bound` (plus the pace's slack).
    fn within(&mut self, promise: &str, measured: Option<Duration>, bound: Duration, pace: &Pace) {
        let ok = measured.is_some_and(|m| m <= bound + pace.slack);
        self.check(
            format!("{promise} (≤ {})", secs(Some(bound))),
            measured.map_or_else(|| "never".to_owned(), |m| secs(Some(m))),
            ok,
        );
    }

    /// The recovery column and its check.
    fn recovered(
        &mut self,
        promise: &str,
        measured: Option<Duration>,
        bound: Duration,
        pace: &Pace,
    ) {
        self.recovery = measured;
        self.bound = Some(bound);
        self.within(promise, measured, bound, pace);
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Whether every promise held.
    pub(crate) fn met(&self) -> bool {
        self.wrong == 0 && self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks, for an assertion message.
    pub(crate) fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.promise, c.measured))
            .collect()
    }

    /// A row for a scenario that could not run.
    pub(crate) fn broken(name: &str, why: &str) -> Self {
        let mut row = Row {
            name: name.to_owned(),
            ..Row::default()
        };
        row.check("the scenario runs", why.to_owned(), false);
        row
    }
}

/// Seconds with two decimals, or `—`.
pub(crate) fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// The markdown table of `rows`.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | sent | 200 | 401 | 503 | other 5xx | other | no answer | wrong | recovery (s) | bound (s) | promises |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let met = r.checks.iter().filter(|c| c.ok).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.sent,
            r.by_status[0],
            r.by_status[1],
            r.by_status[2],
            r.by_status[3],
            r.by_status[4],
            r.by_status[5],
            r.wrong,
            secs(r.recovery),
            secs(r.bound),
            if r.met() {
                format!("{met}/{} met", r.checks.len())
            } else {
                format!("**{met}/{} met**", r.checks.len())
            },
        );
    }
    out
}

/// Every check and note of `rows`, as a markdown list per scenario.
pub(crate) fn details(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let _ = writeln!(out, "**{}**\n", r.name);
        for c in &r.checks {
            let mark = if c.ok { "met" } else { "**NOT MET**" };
            let _ = writeln!(out, "- {mark}: {} — {}", c.promise, c.measured);
        }
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
        out.push('\n');
    }
    out
}

// === Common set-up ===

/// Where sessions are written: straight to Redis, never through a gateway or a proxy.
enum Store<'a> {
    Single(&'a RedisServer),
    Cluster(&'a RedisCluster),
    Sentinel(&'a RedisSentinel),
}

impl Store<'_> {
    fn set(&self, key: &str, json: &str) {
        match self {
            Store::Single(r) => r.set_session(key, json, 3600),
            Store::Cluster(c) => c.set_session(key, json, 3600),
            Store::Sentinel(s) => {
                s.master.set_session(key, json, 3600);
                // On the replica too before anything can fail over.
                assert_eq!(s.master.cli(&["WAIT", "1", "5000"]), "1");
            }
        }
    }

    fn del(&self, key: &str) {
        match self {
            Store::Single(r) => r.del(key),
            Store::Cluster(c) => c.del(key),
            Store::Sentinel(s) => {
                s.master.del(key);
                assert_eq!(s.master.cli(&["WAIT", "1", "5000"]), "1");
            }
        }
    }

    /// Writes a session for `sub`; returns its cookie value.
    fn login(&self, sub: &str) -> String {
        let cookie = new_cookie();
        self.set(&key(&cookie), &session_json(sub));
        cookie
    }
}

/// The Redis key of a session (the harness's default prefix).
fn key(cookie: &str) -> String {
    session_key(crate::harness::redis::DEFAULT_PREFIX, cookie)
}

/// The gateway's two `auth = "required"` routes to `up`: `orders` (cached) and
/// `payments` (critical).
fn routes(b: GatewayBuilder, up: SocketAddr) -> GatewayBuilder {
    b.set("server.threads", 2)
        .route(Route::new("orders", "/api/orders", &[up]))
        .route(Route::new("payments", "/api/payments", &[up]).critical())
}

/// The status of `GET path` on `gw` with `cookie` (0: no answer).
fn status(gw: SocketAddr, path: &str, cookie: &str) -> u16 {
    client()
        .get(format!("http://{gw}{path}"))
        .header("cookie", cookie_header(cookie))
        .send()
        .map_or(0, |r| r.status().as_u16())
}

/// A session that every gateway has served (so it was cached, with a token) and that
/// was then deleted and is refused on both routes by every gateway: from now on any 2xx
/// for it is a wrong answer.
fn revoked_session(store: &Store<'_>, gateways: &[SocketAddr]) -> String {
    let cookie = store.login("revoked-user");
    for &gw in gateways {
        for path in ["/api/orders/1", "/api/payments/1"] {
            crate::harness::assert_eventually!(
                status(gw, path, &cookie) == 200,
                Duration::from_secs(10),
                "the session to revoke is served on {path}"
            );
        }
    }
    store.del(&key(&cookie));
    for &gw in gateways {
        for path in ["/api/orders/1", "/api/payments/1"] {
            crate::harness::assert_eventually!(
                status(gw, path, &cookie) == 401,
                Duration::from_secs(10),
                "the revoked session is refused on {path}"
            );
        }
    }
    cookie
}

/// Sessions for the load, served once on both routes by every gateway.
fn sessions(store: &Store<'_>, gateways: &[SocketAddr], n: usize) -> Vec<String> {
    let cookies: Vec<String> = (0..n).map(|i| store.login(&format!("user-{i}"))).collect();
    for c in &cookies {
        for &gw in gateways {
            crate::harness::assert_eventually!(
                status(gw, "/api/orders/1", c) == 200 && status(gw, "/api/payments/1", c) == 200,
                Duration::from_secs(10),
                "a load session is served"
            );
        }
    }
    cookies
}

/// With `CHAOS_LOGS=1`, prints what `gw` logged (access lines left out), to diagnose a
/// scenario.
fn dump_logs(gw: &Gateway) {
    if std::env::var("CHAOS_LOGS").is_ok_and(|v| v == "1") {
        let lines: Vec<String> = gw
            .stderr()
            .lines()
            .filter(|l| !l.contains("sessiongate::access"))
            .map(str::to_owned)
            .collect();
        eprintln!("----- gateway {} -----\n{}", gw.addr(), lines.join("\n"));
    }
}

/// Waits until the load is served, then lets it run for `pace.warm`.
fn warm(traffic: &Traffic, pace: &Pace) {
    assert!(
        traffic.wait_more_ok(20, Duration::from_secs(20)),
        "the load was not served before the fault"
    );
    pause(pace.warm);
}

/// The ids of `redis`'s client connections that neither track (the push channel) nor are
/// this `CLIENT LIST` itself: the gateway's pooled connections.
fn pool_clients(redis: &RedisServer) -> HashSet<String> {
    redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .filter(|l| {
            !l.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

/// The longest any request sent in `[from, to)` took.
fn slowest(record: &Record, from: Instant, to: Instant) -> Option<Duration> {
    record
        .samples
        .iter()
        .filter(|s| s.sent >= from && s.sent < to)
        .map(Sample::took)
        .max()
}

/// The load's answers sent in `[from, to)`, by status.
fn statuses(record: &Record, from: Instant, to: Instant) -> String {
    summary(
        record
            .samples
            .iter()
            .filter(|s| s.who == Who::Valid && s.sent >= from && s.sent < to),
    )
}

/// Answers by status: `200 ×12, 503 ×3`.
fn summary<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    let mut by: std::collections::BTreeMap<u16, usize> = std::collections::BTreeMap::new();
    for s in samples {
        *by.entry(s.status).or_default() += 1;
    }
    if by.is_empty() {
        return "none".to_owned();
    }
    by.iter()
        .map(|(s, n)| {
            if *s == 0 {
                format!("no answer ×{n}")
            } else {
                format!("{s} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `/readyz` following Redis both ways: 503 within the bound of `down`, 200 within the
/// bound of `up`.
fn readiness(row: &mut Row, ready: &ReadyWatch, down: Instant, up: Instant, pace: &Pace) {
    let to_503 = ready.first(down, 503);
    row.within(
        "/readyz turns 503 after Redis stops answering",
        to_503.filter(|d| d <= &up.duration_since(down)),
        ready_bound(),
        pace,
    );
    let _ = ready.wait(up, 200, pace.limit);
    row.within(
        "/readyz turns 200 once Redis answers again",
        ready.first(up, 200),
        ready_bound(),
        pace,
    );
}

fn plan(gateways: &[SocketAddr], sessions: Vec<String>, revoked: String) -> Plan {
    let mut plan = Plan::new(gateways, sessions);
    plan.revoked = Some(revoked);
    plan
}

// === 1. SIGSTOP ===

/// Redis stopped (SIGSTOP) for `pace.fault`, then continued: every connection with a
/// command in flight hangs, and new connections are accepted by the kernel but never
/// answered.
pub(crate) fn redis_sigstop(pace: &Pace) -> Row {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let gw = routes(GatewayBuilder::new(&redis.url()), up.addr()).start();
    let store = Store::Single(&redis);
    // Few sessions, many threads: concurrent lookups of one key while Redis hangs.
    let sessions = sessions(&store, &[gw.addr()], 2);
    let revoked = revoked_session(&store, &[gw.addr()]);
    let ready = ReadyWatch::start(gw.admin_addr());
    let mut plan = plan(&[gw.addr()], sessions, revoked);
    plan.load_threads = 4;
    let traffic = Traffic::start(plan);
    warm(&traffic, pace);
    let before = pool_clients(&redis);

    let stop = Instant::now();
    redis.signal("STOP");
    pause(pace.fault);
    redis.signal("CONT");
    let cont = Instant::now();
    let _ = traffic.wait_ok(cont, Path::Critical, pace.limit, |_| true);
    pause(pace.after);
    let record = traffic.stop();
    let after = pool_clients(&redis);

    let mut row = Row::new(
        format!("1 Redis SIGSTOP {} s", pace.fault.as_secs()),
        &record,
    );
    row.wrong(&record);
    row.recovered(
        "serves again after SIGCONT",
        record.recovery(cont, Path::Critical),
        recovery_bound(),
        pace,
    );
    row.within(
        "no request queues behind another's timeout (slowest answer while stopped)",
        slowest(&record, stop, cont),
        REDIS_TIMEOUT * 2,
        pace,
    );
    let reused: Vec<&String> = before.intersection(&after).collect();
    row.check(
        "a connection whose command timed out is closed and replaced",
        format!(
            "{} pooled connections before, {} after, {} reused",
            before.len(),
            after.len(),
            reused.len()
        ),
        reused.is_empty() && !before.is_empty(),
    );
    readiness(&mut row, &ready, stop, cont, pace);
    row.note(format!(
        "load while stopped: {}",
        statuses(&record, stop, cont)
    ));
    row
}

// === 2. SIGKILL and restart empty ===

/// Redis killed (SIGKILL), down for `pace.fault`, restarted empty on the same port; the
/// keyring lived in it (`keys.store = "redis"`). The load's sessions are written again
/// (a login service would); one cached session (the *lost* probe) is not.
pub(crate) fn redis_restart_empty(pace: &Pace) -> Row {
    let mut redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let gw = routes(
        GatewayBuilder::new(&redis.url()).redis_keys(&new_kek()),
        up.addr(),
    )
    .start();
    let gws = [gw.addr()];
    let (cookies, lost, revoked) = {
        let store = Store::Single(&redis);
        (
            sessions(&store, &gws, 4),
            sessions(&store, &gws, 1).remove(0),
            revoked_session(&store, &gws),
        )
    };
    let ready = ReadyWatch::start(gw.admin_addr());
    let mut jwks = JwksWatch::start(gw.admin_addr());
    let mut plan = plan(&gws, cookies.clone(), revoked);
    plan.lost = Some(lost);
    plan.keep_tokens = 10;
    let traffic = Traffic::start(plan);
    warm(&traffic, pace);
    let http = client();
    let kids_before: BTreeSet<String> = fetch_jwks(&http, &gw.admin_url("/.well-known/jwks.json"))
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();

    let kill = Instant::now();
    redis.stop();
    traffic.lost_at(kill);
    pause(pace.fault);
    redis.restart();
    let restarted = Instant::now();
    for c in &cookies {
        redis.set_session(&key(c), &session_json("user-again"), 3600);
    }
    let rewritten = Instant::now();
    let _ = traffic.wait_ok(rewritten, Path::Critical, pace.limit, |_| true);
    let ring = format!("{KEYS_PREFIX}keyring");
    let restored = poll(
        || {
            let stored: BTreeSet<String> = redis
                .cli(&["HKEYS", &ring])
                .lines()
                .map(str::to_owned)
                .collect();
            kids_before.is_subset(&stored)
        },
        pace.limit,
    )
    .ok();
    pause(pace.after);
    let record = traffic.stop();
    jwks.stop();
    let final_jwks = fetch_jwks(&http, &gw.admin_url("/.well-known/jwks.json"));

    let mut row = Row::new(
        format!(
            "2 Redis SIGKILL, {} s down, restart empty",
            pace.fault.as_secs()
        ),
        &record,
    );
    row.wrong(&record);
    row.recovered(
        "serves again once Redis answers (sessions written again)",
        record.recovery(rewritten, Path::Critical),
        recovery_bound(),
        pace,
    );
    readiness(&mut row, &ready, kill, restarted, pace);
    row.check(
        "the keyring is written back to the empty Redis from memory",
        restored.map_or_else(
            || "never".to_owned(),
            |d| format!("{} s after the restart", secs(Some(d))),
        ),
        restored.is_some(),
    );
    let gaps: usize = kids_before
        .iter()
        .map(|k| jwks.missing_after(kill, k))
        .sum();
    row.check(
        "every key that signed stays published throughout",
        format!(
            "{} JWKS answers polled, {gaps} lacked a key published before the kill",
            jwks.answers()
        ),
        gaps == 0,
    );
    let (mut before, mut after, mut failed) = (0usize, 0usize, Vec::new());
    let mut new_kids = BTreeSet::new();
    for t in &record.tokens {
        let aud = match t.path {
            Path::Cached => "orders",
            Path::Critical => "payments",
        };
        if t.at < kill {
            before += 1;
        } else if t.at > rewritten {
            after += 1;
            if let Ok(h) = jsonwebtoken::decode_header(&t.jwt)
                && let Some(kid) = h.kid
                && !kids_before.contains(&kid)
            {
                new_kids.insert(kid);
            }
        }
        if let Err(e) = try_verify(&t.jwt, &final_jwks, aud, ISSUER) {
            failed.push(e);
        }
    }
    row.check(
        "tokens minted before and after the restart verify against the JWKS after it",
        format!(
            "{before} before, {after} after, {} failed{}",
            failed.len(),
            failed
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ),
        failed.is_empty() && before > 0 && after > 0,
    );
    row.check(
        "no token is signed by a key that was not published before",
        format!("kids signing after the restart that were not published before: {new_kids:?}"),
        new_kids.is_empty(),
    );
    row
}

// === 3. Latency and blackhole ===

/// Through a [`FaultProxy`] between the gateway and Redis: added latency below and above
/// `redis.timeout`, then a blackhole of every existing connection while new ones pass.
pub(crate) fn network(pace: &Pace) -> Vec<Row> {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())));
    let up = Upstream::echo("echo");
    let gw = routes(GatewayBuilder::new(&proxy.redis_url()), up.addr()).start();
    let store = Store::Single(&redis);
    let gws = [gw.addr()];
    let sessions = sessions(&store, &gws, 4);
    let revoked = revoked_session(&store, &gws);
    let plan = plan(&gws, sessions, revoked);
    let mut rows = Vec::new();

    for latency in [Duration::from_millis(100), Duration::from_millis(400)] {
        let traffic = Traffic::start(plan.clone());
        warm(&traffic, pace);
        let from = Instant::now();
        proxy.set_latency(latency);
        pause(pace.fault);
        proxy.set_latency(Duration::ZERO);
        let healed = Instant::now();
        let _ = traffic.wait_ok(healed, Path::Critical, pace.limit, |_| true);
        pause(pace.after);
        let record = traffic.stop();
        let below = latency < REDIS_TIMEOUT;
        let mut row = Row::new(
            format!(
                "3{} +{} ms latency ({} redis.timeout), {} s",
                if below { 'a' } else { 'b' },
                latency.as_millis(),
                if below { "below" } else { "above" },
                pace.fault.as_secs()
            ),
            &record,
        );
        row.wrong(&record);
        row.recovered(
            "serves again once the latency is gone",
            record.recovery(healed, Path::Critical),
            recovery_bound(),
            pace,
        );
        row.note(format!(
            "load during the latency: {}; slowest answer {} s",
            statuses(&record, from, healed),
            secs(slowest(&record, from, healed))
        ));
        rows.push(row);
    }

    let ready = ReadyWatch::start(gw.admin_addr());
    let traffic = Traffic::start(plan);
    warm(&traffic, pace);
    let cut = Instant::now();
    let blackholed = proxy.blackhole_existing();
    // The path for new connections works at once: recovery counts from the cut.
    let _ = traffic.wait_ok(cut, Path::Critical, pace.limit, |_| true);
    let closed = poll(|| proxy.blackholed_open() == 0, pace.limit)
        .ok()
        .map(|_| cut.elapsed());
    pause(pace.after);
    let record = traffic.stop();
    let mut row = Row::new(
        "3c blackhole of existing connections, new ones pass",
        &record,
    );
    row.wrong(&record);
    row.recovered(
        "serves again on fresh connections while the old ones hang",
        record.recovery(cut, Path::Critical),
        recovery_bound(),
        pace,
    );
    row.check(
        "the hanging connections are closed, never reused",
        format!(
            "{blackholed} blackholed; all closed by the gateway {}",
            closed.map_or_else(
                || "never".to_owned(),
                |d| format!("{} s after the cut", secs(Some(d)))
            )
        ),
        closed.is_some(),
    );
    row.note(format!(
        "the gateway opened {} fresh connections through the proxy in all; /readyz: first 503 {} s after the cut, {} answers 503 in all; load in the first {} s: {}",
        proxy.accepted(),
        secs(ready.first(cut, 503)),
        ready.count(503),
        secs(Some(recovery_bound())),
        statuses(&record, cut, cut + recovery_bound())
    ));
    rows.push(row);
    rows
}

// === 4. Sentinel ===

/// Three sentinels (quorum 2) and one replica; the master is killed.
pub(crate) fn sentinel_failover(pace: &Pace) -> Row {
    let topo = RedisSentinel::start_with(3, 2);
    let up = Upstream::echo("echo");
    let gw = routes(GatewayBuilder::new(&topo.url()), up.addr()).start();
    let store = Store::Sentinel(&topo);
    let gws = [gw.addr()];
    let sessions = sessions(&store, &gws, 4);
    let revoked = revoked_session(&store, &gws);
    let traffic = Traffic::start(plan(&gws, sessions, revoked));
    warm(&traffic, pace);
    let mut topo = topo;

    let kill = Instant::now();
    topo.master.stop();
    let promoted = poll(
        || topo.master_port() == Some(topo.replica.port()),
        pace.limit,
    )
    .ok()
    .map(|_| Instant::now());
    let mut row;
    if let Some(promoted) = promoted {
        let _ = traffic.wait_ok(promoted, Path::Critical, pace.limit, |_| true);
        pause(pace.after);
        let record = traffic.stop();
        row = Row::new("4 Sentinel: master killed", &record);
        row.wrong(&record);
        row.recovered(
            "follows the promoted replica without a restart",
            record.recovery(promoted, Path::Critical),
            recovery_bound(),
            pace,
        );
        row.note(format!(
            "the sentinels promoted the replica {} s after the kill; load meanwhile: {}",
            secs(Some(promoted.duration_since(kill))),
            statuses(&record, kill, promoted)
        ));
    } else {
        let record = traffic.stop();
        row = Row::new("4 Sentinel: master killed", &record);
        row.wrong(&record);
        row.check("the sentinels promote the replica", "never", false);
    }
    row
}

// === 5. Cluster ===

/// Three masters with a replica each; the master owning some of the load's sessions is
/// killed. Requests for sessions on the other masters must keep being served.
pub(crate) fn cluster_failover(pace: &Pace) -> Row {
    // Without this (Redis's default is yes) every node answers CLUSTERDOWN to every key
    // from the moment the failed master is marked FAIL until its replica takes over:
    // nothing a client does can keep the other masters' keys served then.
    let cluster = RedisCluster::start_with(1, 2000, &["--cluster-require-full-coverage", "no"]);
    let up = Upstream::echo("echo");
    let gw = routes(GatewayBuilder::new(&cluster.url()), up.addr()).start();
    let store = Store::Cluster(&cluster);
    let gws = [gw.addr()];
    // Sessions on every master, at least two each.
    let mut cookies = Vec::new();
    let mut owner = Vec::new();
    while owner.len() < 9 || (0..3).any(|m| owner.iter().filter(|&&o| o == m).count() < 2) {
        assert!(cookies.len() < 200, "keys never spread over the masters");
        let c = store.login(&format!("user-{}", cookies.len()));
        let o = cluster.owner_of(&key(&c));
        owner.push(o);
        cookies.push(c);
    }
    for c in &cookies {
        crate::harness::assert_eventually!(
            status(gw.addr(), "/api/payments/1", c) == 200,
            Duration::from_secs(10),
            "a load session is served"
        );
    }
    let revoked = revoked_session(&store, &gws);
    let victim = owner[0];
    let replica = cluster
        .replica_of(victim)
        .expect("every master has a replica");
    let mut plan = plan(&gws, cookies, revoked);
    plan.load_threads = 3;
    let traffic = Traffic::start(plan);
    warm(&traffic, pace);
    let mut cluster = cluster;

    let kill = Instant::now();
    cluster.nodes[victim].stop();
    let promoted = poll(
        || {
            cluster.is_master(replica)
                && cluster.nodes[replica]
                    .cli(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
        },
        pace.limit,
    )
    .ok()
    .map(|_| Instant::now());
    let on_victim = |s: &Sample| owner[s.session] == victim;
    let promoted_at = promoted.unwrap_or_else(Instant::now);
    let _ = traffic.wait_ok(promoted_at, Path::Critical, pace.limit, on_victim);
    pause(pace.after);
    let record = traffic.stop();
    dump_logs(&gw);

    let mut row = Row::new(
        "5 Cluster (3 masters + 3 replicas): a master killed",
        &record,
    );
    row.wrong(&record);
    row.recovered(
        "follows the failover without a restart (keys of the failed master)",
        promoted.and_then(|p| {
            record
                .samples
                .iter()
                .filter(|s| {
                    s.who == Who::Valid
                        && s.path == Path::Critical
                        && s.status == 200
                        && s.sent >= p
                        && on_victim(s)
                })
                .map(|s| s.done.duration_since(p))
                .min()
        }),
        recovery_bound(),
        pace,
    );
    let healthy: Vec<&Sample> = record
        .samples
        .iter()
        .filter(|s| s.who == Who::Valid && s.sent >= kill && !on_victim(s) && s.status != 200)
        .collect();
    let span = healthy
        .iter()
        .map(|s| s.sent)
        .min()
        .zip(healthy.iter().map(|s| s.done).max())
        .map(|(a, b)| b.duration_since(a));
    let mut by = HashMap::<u16, usize>::new();
    for s in &healthy {
        *by.entry(s.status).or_default() += 1;
    }
    let when = healthy
        .first()
        .map(|s| {
            format!(
                ", from {} s to {} s after the kill, slowest {} s",
                secs(Some(s.sent.duration_since(kill))),
                secs(healthy.last().map(|l| l.done.duration_since(kill))),
                secs(healthy.iter().map(|s| s.took()).max())
            )
        })
        .unwrap_or_default();
    row.check(
        "only requests whose keys live in the failed master's slots are refused",
        if healthy.is_empty() {
            let served = record
                .samples
                .iter()
                .filter(|s| s.who == Who::Valid && s.sent >= kill && !on_victim(s))
                .count();
            format!("0 of {served} requests for sessions on healthy masters refused")
        } else {
            format!(
                "{} refusals of sessions on healthy masters ({by:?}) over {} s{when}",
                healthy.len(),
                secs(span)
            )
        },
        healthy.is_empty(),
    );
    row.note(format!(
        "the replica took over {} s after the kill; load on the failed master's keys meanwhile: {}",
        secs(promoted.map(|p| p.duration_since(kill))),
        summary(record.samples.iter().filter(|s| {
            s.who == Who::Valid && on_victim(s) && s.sent >= kill && s.sent < promoted_at
        }))
    ));
    row
}

// === 6. Two replicas, one killed holding the rotation lease ===

/// A RESP connection for `GET`, fast enough to read the lease within a millisecond.
struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        stream.set_nodelay(true).expect("nodelay");
        Resp {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// `GET key`: the value, or `None` for nil.
    fn get(&mut self, key: &str) -> Option<String> {
        let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        self.writer.write_all(cmd.as_bytes()).expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read");
        if line.starts_with("$-1") {
            return None;
        }
        let mut value = String::new();
        self.reader.read_line(&mut value).expect("read");
        Some(value.trim_end().to_owned())
    }
}

/// The holder id in a `SET <lease> <holder> NX PX ttl` command.
fn lease_holder(chunk: &[u8], lease: &str) -> Option<String> {
    let text = String::from_utf8_lossy(chunk);
    let at = text.find(&format!("{lease}\r\n"))? + lease.len() + 2;
    let mut lines = text[at..].split("\r\n");
    let _len = lines.next()?;
    lines.next().map(str::to_owned)
}

/// Two replicas sharing a Redis keyring with accelerated rotations (every 4 s, published
/// 2 s ahead), each through its own [`FaultProxy`]; the one that takes the rotation lease
/// is killed (SIGKILL) the moment its `SET … NX` reached Redis, before it learned it won.
pub(crate) fn lease_holder_killed(pace: &Pace) -> Row {
    const NAME: &str = "6 two replicas: SIGKILL of the rotation lease holder";
    let publish_ahead = Duration::from_secs(2);
    let redis = RedisServer::start();
    let target = SocketAddr::from(([127, 0, 0, 1], redis.port()));
    let proxies = [FaultProxy::start(target), FaultProxy::start(target)];
    let up = Upstream::echo("echo");
    let kek = new_kek();
    let start = |proxy: &FaultProxy| {
        routes(
            GatewayBuilder::new(&proxy.redis_url()).redis_keys(&kek),
            up.addr(),
        )
        .publish_ahead("2s")
        .set("keys.rotate_every", "4s")
        .start()
    };
    let gws: Vec<Gateway> = proxies.iter().map(start).collect();
    let addrs: Vec<SocketAddr> = gws.iter().map(Gateway::addr).collect();
    let store = Store::Single(&redis);
    let sessions = sessions(&store, &addrs, 4);
    let revoked = revoked_session(&store, &addrs);
    let watches: Vec<JwksWatch> = gws
        .iter()
        .map(|g| JwksWatch::start(g.admin_addr()))
        .collect();
    let mut plan = plan(&addrs, sessions, revoked);
    plan.keep_tokens = 3;
    let traffic = Traffic::start(plan);
    warm(&traffic, pace);

    let lease = format!("{KEYS_PREFIX}keyring:lease");
    let pattern = format!("SET\r\n${}\r\n{lease}\r\n", lease.len());
    let mut resp = Resp::connect(redis.port());
    let mut killed: Option<(usize, Instant)> = None;
    let deadline = Instant::now() + pace.limit;
    while killed.is_none() && Instant::now() < deadline {
        for p in &proxies {
            p.trip_on(pattern.as_bytes());
        }
        let tripped = poll(
            || proxies.iter().any(|p| !p.trips().is_empty()),
            Duration::from_secs(10),
        );
        if tripped.is_err() {
            continue;
        }
        let holder = resp.get(&lease);
        let who = proxies.iter().position(|p| {
            p.trips()
                .iter()
                .any(|t| lease_holder(&t.chunk, &lease) == holder)
        });
        if let (Some(i), Some(_)) = (who, &holder) {
            traffic.mark_dead(i);
            gws[i].signal("KILL");
            killed = Some((i, Instant::now()));
        }
        for p in &proxies {
            p.disarm();
            p.resume();
        }
        if killed.is_none() {
            // The lease was already released (a trip on another command): next rotation.
            pause(Duration::from_millis(500));
            for p in &proxies {
                let _ = p.trips();
            }
        }
    }
    let Some((dead, kill)) = killed else {
        let record = traffic.stop();
        let mut row = Row::new(NAME, &record);
        row.wrong(&record);
        row.check(
            "a replica is killed holding the lease",
            "never caught",
            false,
        );
        return row;
    };
    let survivor = 1 - dead;
    let kids_at_kill = watches[survivor].first_seen_set(kill).unwrap_or_default();
    // The lease lapses (LEASE_TTL) and the survivor creates the successor.
    let handed_over = poll(
        || {
            watches[survivor]
                .latest()
                .is_some_and(|k| k.difference(&kids_at_kill).next().is_some())
        },
        keys::LEASE_TTL + pace.limit,
    )
    .ok();
    // Until the new key signs (publish_ahead after it was published) and a bit more.
    let _ = poll(
        || {
            traffic.tokens().iter().any(|t| {
                t.at > kill
                    && jsonwebtoken::decode_header(&t.jwt)
                        .ok()
                        .and_then(|h| h.kid)
                        .is_some_and(|k| !kids_at_kill.contains(&k))
            })
        },
        publish_ahead + pace.limit,
    );
    pause(pace.after);
    let record = traffic.stop();
    let http = client();
    let final_jwks = fetch_jwks(&http, &gws[survivor].admin_url("/.well-known/jwks.json"));

    let mut row = Row::new(NAME, &record);
    row.wrong(&record);
    let bound = keys::LEASE_TTL + Duration::from_secs(2);
    row.recovered(
        "the lease passes on: the survivor publishes the next key",
        handed_over,
        bound,
        pace,
    );
    let survivor_failures: Vec<&Sample> = record
        .samples
        .iter()
        .filter(|s| s.who == Who::Valid && s.gateway == survivor && s.status != 200)
        .collect();
    row.check(
        "the survivor serves throughout (it needs nothing from the killed replica)",
        format!(
            "{} of its load answers were not 200",
            survivor_failures.len()
        ),
        survivor_failures.is_empty(),
    );
    let initial: BTreeSet<String> = watches.iter().flat_map(JwksWatch::initial).collect();
    let (mut early, mut failed, mut new_signed) = (Vec::new(), Vec::new(), BTreeSet::new());
    for t in &record.tokens {
        let aud = match t.path {
            Path::Cached => "orders",
            Path::Critical => "payments",
        };
        if let Err(e) = try_verify(&t.jwt, &final_jwks, aud, ISSUER) {
            failed.push(e);
        }
        let Some(kid) = jsonwebtoken::decode_header(&t.jwt).ok().and_then(|h| h.kid) else {
            continue;
        };
        if t.at > kill && !kids_at_kill.contains(&kid) {
            new_signed.insert(kid.clone());
        }
        if initial.contains(&kid) {
            continue;
        }
        // Published by every replica alive then at least publish_ahead before it signed
        // (the JWKS is polled every 100 ms).
        for (r, w) in watches.iter().enumerate() {
            if r == dead && t.at >= kill {
                continue;
            }
            let ok = w
                .first_seen(&kid)
                .is_some_and(|seen| seen + publish_ahead <= t.at + Duration::from_millis(150));
            if !ok {
                early.push(format!("{kid} on replica {r}"));
            }
        }
    }
    row.check(
        "no token is signed by a key published less than publish_ahead before, on any replica",
        format!(
            "{} tokens, {} signed too early{}",
            record.tokens.len(),
            early.len(),
            early
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ),
        early.is_empty(),
    );
    row.check(
        "every token verifies against the survivor's JWKS",
        format!(
            "{} tokens, {} failed; keys first signing after the kill: {}",
            record.tokens.len(),
            failed.len(),
            new_signed.len()
        ),
        failed.is_empty() && !new_signed.is_empty(),
    );
    row.note(format!(
        "replica {dead} killed holding the lease; {} requests to it in flight or after failed",
        record
            .samples
            .iter()
            .filter(|s| s.gateway == dead && s.status == 0)
            .count()
    ));
    row
}

// === 7. Reload and upgrade ===

/// SIGHUP reloads (three, each changing `session.cache_ttl`) and a binary upgrade under
/// load, with a new connection per request (an accepted request is never lost to a
/// keep-alive race, and a connection the old process closed unread is retried once).
pub(crate) fn reload_and_upgrade(pace: &Pace) -> Row {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let mut gw = routes(
        GatewayBuilder::new(&redis.url()).set("server.grace_period", "5s"),
        up.addr(),
    )
    .start();
    let store = Store::Single(&redis);
    let gws = [gw.addr()];
    let sessions = sessions(&store, &gws, 4);
    let revoked = revoked_session(&store, &gws);
    let mut plan = plan(&gws, sessions, revoked);
    plan.keep_alive = false;
    let traffic = Traffic::start(plan);
    warm(&traffic, pace);

    let reloads = |gw: &Gateway| {
        Scrape::of(gw).value("sessiongate_config_reloads_total", &[("result", "ok")])
    };
    let mut reloaded = 0;
    for ttl in ["4s", "5s", "4s"] {
        let text = std::fs::read_to_string(gw.config_path()).expect("read config");
        let next = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("cache_ttl") {
                    format!("cache_ttl = \"{ttl}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(gw.config_path(), next).expect("write config");
        let before = reloads(&gw);
        gw.signal("HUP");
        if poll(|| reloads(&gw) > before, Duration::from_secs(10)).is_ok() {
            reloaded += 1;
        }
        assert!(traffic.wait_more_ok(20, Duration::from_secs(10)));
    }
    let upgrade = Instant::now();
    let old = gw.upgrade(Duration::from_secs(40));
    let old_exited = Instant::now();
    assert!(traffic.wait_more_ok(30, Duration::from_secs(20)));
    pause(pace.after);
    let record = traffic.stop();

    let mut row = Row::new("7 SIGHUP reload ×3 and binary upgrade under load", &record);
    row.wrong(&record);
    row.check(
        "every reload applied",
        format!("{reloaded} of 3 counted ok"),
        reloaded == 3,
    );
    let dropped: Vec<&Sample> = record
        .samples
        .iter()
        .filter(|s| s.who == Who::Valid && s.status != 200)
        .collect();
    let forwarded: HashSet<String> = up
        .requests()
        .iter()
        .filter_map(|r| r.header("x-load-id").map(str::to_owned))
        .collect();
    let retried_forwarded = record
        .retried
        .iter()
        .filter(|id| forwarded.contains(*id))
        .count();
    row.check(
        "reload and upgrade drop no request",
        format!(
            "{} of the load's requests failed ({}); {} closed unread by the old process and retried, {retried_forwarded} of those had reached the upstream; old process exit {old}",
            dropped.len(),
            summary(dropped.iter().copied()),
            record.retried.len()
        ),
        dropped.is_empty() && retried_forwarded == 0 && old.success(),
    );
    row.note(format!(
        "the old process drained and exited {} s after the upgrade began",
        secs(Some(old_exited.duration_since(upgrade)))
    ));
    row
}

// === 8. Upstream refusing, resetting, hanging ===

/// The routes' upstream behind a [`FaultProxy`]: refusing (its connections reset and new
/// ones refused, as when its process dies), resetting every connection, and hanging
/// (accepting and never answering; `read_timeout = "1s"`).
pub(crate) fn upstream_faults(pace: &Pace) -> Vec<Row> {
    let redis = RedisServer::start();
    let echo = Upstream::echo("echo");
    let proxy = FaultProxy::start(echo.addr());
    let gw = GatewayBuilder::new(&redis.url())
        .set("server.threads", 2)
        .route(
            Route::new("orders", "/api/orders", &[proxy.addr()])
                .set("connect_timeout", "1s")
                .set("read_timeout", "1s"),
        )
        .route(
            Route::new("payments", "/api/payments", &[proxy.addr()])
                .critical()
                .set("connect_timeout", "1s")
                .set("read_timeout", "1s"),
        )
        .start();
    let store = Store::Single(&redis);
    let gws = [gw.addr()];
    let sessions = sessions(&store, &gws, 4);
    let revoked = revoked_session(&store, &gws);
    let plan = plan(&gws, sessions, revoked);
    let mut rows = Vec::new();
    for (name, expect) in [
        ("8a upstream refusing", 502),
        ("8b upstream resetting", 502),
        ("8c upstream hanging", 504),
    ] {
        let traffic = Traffic::start(plan.clone());
        warm(&traffic, pace);
        let from = Instant::now();
        match expect {
            504 => {
                proxy.set_new(NewConns::Hang);
                proxy.blackhole_existing();
            }
            _ if name.contains("refusing") => {
                proxy.set_new(NewConns::Refuse);
                proxy.reset_all();
            }
            _ => {
                proxy.set_new(NewConns::Reset);
                proxy.reset_all();
            }
        }
        pause(pace.fault);
        proxy.heal();
        let healed = Instant::now();
        let _ = traffic.wait_ok(healed, Path::Critical, pace.limit, |_| true);
        pause(pace.after);
        let record = traffic.stop();
        let mut row = Row::new(format!("{name}, {} s", pace.fault.as_secs()), &record);
        row.wrong(&record);
        // Requests sent once the fault is in place (those in flight when it began may
        // still have been answered) until it ends.
        let settled = from + Duration::from_millis(100);
        let wrong_status: Vec<&Sample> = record
            .samples
            .iter()
            .filter(|s| {
                s.who == Who::Valid && s.sent >= settled && s.done < healed && s.status != expect
            })
            .collect();
        row.check(
            format!("a valid session's request gets {expect} while the upstream fails"),
            format!(
                "load during the fault: {}",
                statuses(&record, settled, healed)
            ),
            wrong_status.is_empty(),
        );
        row.recovery = record.recovery(healed, Path::Critical);
        row.check(
            "serves again once the upstream is back",
            secs(row.recovery),
            row.recovery.is_some(),
        );
        rows.push(row);
    }
    rows
}
