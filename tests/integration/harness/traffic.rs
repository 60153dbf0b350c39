//! [`Traffic`]: steady load and probes against one or more gateways while a test injects
//! faults, with every answer recorded (who asked, on which route, when it was sent, how
//! long it took, its status), so that a test can count wrong answers and measure how long
//! the gateway took to recover; and [`ReadyWatch`], which records `/readyz` over time.
//!
//! Load threads send requests with valid sessions, round robin over the sessions, and
//! alternate between a cached (non-critical) and a critical route, both `auth =
//! "required"`. Probe threads do the same with cookies that must never be let through: a
//! revoked session (deleted before the traffic starts), no session at all, and optionally
//! a session *lost* at a known moment (by a Redis restart), which is refused past its
//! bound. Every thread is paced (one request per `interval`), so the offered load stays
//! steady whatever the gateway does, and sends to the gateways still marked alive in turn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::blocking::Client;

use super::eventually::pause;
use super::{cookie_header, raw};

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Who {
    /// Load: a valid session.
    Valid,
    /// Probe: a session deleted before the traffic started.
    Revoked,
    /// Probe: no session cookie at all.
    Missing,
    /// Probe: a session lost with Redis at a moment the test sets ([`Traffic::lost_at`]).
    Lost,
}

/// Which route a request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Path {
    /// The non-critical route (sessions may come from the cache).
    Cached,
    /// The critical route (every request reads Redis).
    Critical,
}

/// One answered (or failed) request.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// Who sent it.
    pub(crate) who: Who,
    /// Which route.
    pub(crate) path: Path,
    /// For [`Who::Valid`], the index of its session in [`Plan::sessions`].
    pub(crate) session: usize,
    /// The gateway it went to (index in [`Plan::gateways`]).
    pub(crate) gateway: usize,
    /// When it was sent.
    pub(crate) sent: Instant,
    /// When the answer (or the failure) came.
    pub(crate) done: Instant,
    /// The status; 0 when no HTTP answer came (refused, reset, timed out).
    pub(crate) status: u16,
}

impl Sample {
    /// How long it took.
    pub(crate) fn took(&self) -> Duration {
        self.done.duration_since(self.sent)
    }

    /// Whether it was answered 2xx.
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What to send, where and how fast.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The gateways' proxy listeners.
    pub(crate) gateways: Vec<SocketAddr>,
    /// The path on the non-critical route.
    pub(crate) cached_path: String,
    /// The path on the critical route.
    pub(crate) critical_path: String,
    /// Cookie values of valid sessions, shared by the load threads.
    pub(crate) sessions: Vec<String>,
    /// A revoked session's cookie value.
    pub(crate) revoked: Option<String>,
    /// Whether a probe sends no session cookie.
    pub(crate) missing: bool,
    /// A session that will be lost (its probe counts as wrong past [`Traffic::lost_at`]).
    pub(crate) lost: Option<String>,
    /// Load threads.
    pub(crate) load_threads: usize,
    /// Pause between two requests of one thread.
    pub(crate) interval: Duration,
    /// Keep connections alive (false: a new connection per request, and a request
    /// closed before any answer is retried once and counted in [`Record::retried`]).
    pub(crate) keep_alive: bool,
    /// Keep every `n`th bearer token the load's 200s carry (0: none), to verify later.
    pub(crate) keep_tokens: usize,
}

impl Plan {
    /// A plan with the given gateways and sessions: 3 load threads, one request per 10 ms
    /// each, keep-alive, revoked and missing probes when given, no tokens kept.
    pub(crate) fn new(gateways: &[SocketAddr], sessions: Vec<String>) -> Self {
        Plan {
            gateways: gateways.to_vec(),
            cached_path: "/api/orders/1".to_owned(),
            critical_path: "/api/payments/1".to_owned(),
            sessions,
            revoked: None,
            missing: true,
            lost: None,
            load_threads: 3,
            interval: Duration::from_millis(10),
            keep_alive: true,
            keep_tokens: 0,
        }
    }
}

/// A bearer token a load request's upstream received, and when its answer came.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    /// When the answer carrying it arrived.
    pub(crate) at: Instant,
    /// The route it was minted for.
    pub(crate) path: Path,
    /// The JWT.
    pub(crate) jwt: String,
}

#[derive(Default)]
struct Shared {
    samples: Mutex<Vec<Sample>>,
    tokens: Mutex<Vec<Token>>,
    retried: Mutex<Vec<String>>,
    stop: AtomicBool,
    next_gateway: AtomicUsize,
    lost_at: Mutex<Option<Instant>>,
    ids: AtomicU64,
}

/// Running load and probes.
pub(crate) struct Traffic {
    plan: Plan,
    alive: Arc<Vec<AtomicBool>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Everything recorded by a [`Traffic`] once stopped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Record {
    /// Every request, in completion order per thread.
    pub(crate) samples: Vec<Sample>,
    /// The kept bearer tokens.
    pub(crate) tokens: Vec<Token>,
    /// The `x-load-id` of requests closed before any answer and retried (connection per
    /// request only).
    pub(crate) retried: Vec<String>,
    /// When the lost session was lost, if it was.
    pub(crate) lost_at: Option<Instant>,
}

impl Traffic {
    /// Starts the load and probe threads.
    pub(crate) fn start(plan: Plan) -> Self {
        let alive = Arc::new(
            plan.gateways
                .iter()
                .map(|_| AtomicBool::new(true))
                .collect::<Vec<_>>(),
        );
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for t in 0..plan.load_threads {
            threads.push(spawn(&plan, &alive, &shared, Who::Valid, None, t));
        }
        if let Some(c) = &plan.revoked {
            threads.push(spawn(
                &plan,
                &alive,
                &shared,
                Who::Revoked,
                Some(c.clone()),
                0,
            ));
        }
        if plan.missing {
            threads.push(spawn(&plan, &alive, &shared, Who::Missing, None, 0));
        }
        if let Some(c) = &plan.lost {
            threads.push(spawn(&plan, &alive, &shared, Who::Lost, Some(c.clone()), 0));
        }
        Traffic {
            plan,
            alive,
            shared,
            threads,
        }
    }

    /// Stops sending to gateway `i` (e.g. before killing it).
    pub(crate) fn mark_dead(&self, i: usize) {
        self.alive[i].store(false, Ordering::SeqCst);
    }

    /// Records that the lost session was lost now.
    pub(crate) fn lost_at(&self, at: Instant) {
        *self.shared.lost_at.lock() = Some(at);
    }

    /// The bearer tokens kept so far.
    pub(crate) fn tokens(&self) -> Vec<Token> {
        self.shared.tokens.lock().clone()
    }

    /// Waits until a request sent at or after `since` by the load on `path` is answered
    /// 200 (and `filter` accepts it), at most `limit`; returns how long after `since`
    /// that answer came, or `None`.
    pub(crate) fn wait_ok(
        &self,
        since: Instant,
        path: Path,
        limit: Duration,
        filter: impl Fn(&Sample) -> bool,
    ) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = first_ok(&self.shared.samples.lock(), since, path, &filter) {
                return Some(at);
            }
            if Instant::now() >= deadline {
                return None;
            }
            pause(Duration::from_millis(10));
        }
    }

    /// Waits until at least `n` more load requests have been answered 200 (at most
    /// `limit`); false if they were not.
    pub(crate) fn wait_more_ok(&self, n: usize, limit: Duration) -> bool {
        let ok = |s: &Shared| {
            s.samples
                .lock()
                .iter()
                .filter(|x| x.who == Who::Valid && x.status == 200)
                .count()
        };
        let start = ok(&self.shared);
        let deadline = Instant::now() + limit;
        while ok(&self.shared) < start + n {
            if Instant::now() >= deadline {
                return false;
            }
            pause(Duration::from_millis(10));
        }
        true
    }

    /// Stops every thread and returns what was recorded.
    pub(crate) fn stop(self) -> Record {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let _ = &self.plan;
        Record {
            samples: std::mem::take(&mut *self.shared.samples.lock()),
            tokens: std::mem::take(&mut *self.shared.tokens.lock()),
            retried: std::mem::take(&mut *self.shared.retried.lock()),
            lost_at: *self.shared.lost_at.lock(),
        }
    }
}

/// The first 200 of the load on `path` sent at or after `since` that `filter` accepts:
/// how long after `since` it was answered.
fn first_ok(
    samples: &[Sample],
    since: Instant,
    path: Path,
    filter: &impl Fn(&Sample) -> bool,
) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| {
            s.who == Who::Valid && s.path == path && s.status == 200 && s.sent >= since && filter(s)
        })
        .map(|s| s.done.duration_since(since))
        .min()
}

impl Record {
    /// [`Traffic::wait_ok`] on the record: the first 200 of the load on `path` sent at or
    /// after `since`.
    pub(crate) fn recovery(&self, since: Instant, path: Path) -> Option<Duration> {
        first_ok(&self.samples, since, path, &|_| true)
    }

    /// The answers that must not have been 2xx: any 2xx to the revoked or missing probe,
    /// and to the lost probe when sent after it was lost plus its route's bound
    /// (`cached_bound` on the cached route, nothing on the critical one).
    pub(crate) fn wrong(&self, cached_bound: Duration) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.ok())
            .filter(|s| match s.who {
                Who::Valid => false,
                Who::Revoked | Who::Missing => true,
                Who::Lost => self.lost_at.is_some_and(|at| {
                    let bound = match s.path {
                        Path::Cached => cached_bound,
                        Path::Critical => Duration::ZERO,
                    };
                    s.sent > at + bound
                }),
            })
            .collect()
    }
}

fn spawn(
    plan: &Plan,
    alive: &Arc<Vec<AtomicBool>>,
    shared: &Arc<Shared>,
    who: Who,
    cookie: Option<String>,
    thread: usize,
) -> JoinHandle<()> {
    let (plan, alive, shared) = (plan.clone(), Arc::clone(alive), Arc::clone(shared));
    std::thread::Builder::new()
        .name(format!("traffic-{who:?}-{thread}"))
        .spawn(move || run(&plan, &alive, &shared, who, cookie.as_deref(), thread))
        .expect("spawn traffic thread")
}

fn client(keep_alive: bool) -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(if keep_alive { 4 } else { 0 })
        .build()
        .expect("reqwest client")
}

fn run(
    plan: &Plan,
    alive: &[AtomicBool],
    shared: &Shared,
    who: Who,
    cookie: Option<&str>,
    thread: usize,
) {
    let http = client(plan.keep_alive);
    let mut n = thread;
    let mut oks = 0usize;
    while !shared.stop.load(Ordering::SeqCst) {
        n += 1;
        let path = if n.is_multiple_of(2) {
            Path::Cached
        } else {
            Path::Critical
        };
        let session = if plan.sessions.is_empty() {
            0
        } else {
            (n / 2) % plan.sessions.len()
        };
        let cookie = match who {
            Who::Valid => plan.sessions.get(session).map(String::as_str),
            Who::Missing => None,
            Who::Revoked | Who::Lost => cookie,
        };
        let Some(gateway) = pick(alive, &shared.next_gateway) else {
            pause(plan.interval);
            continue;
        };
        let url = format!(
            "http://{}{}",
            plan.gateways[gateway],
            match path {
                Path::Cached => &plan.cached_path,
                Path::Critical => &plan.critical_path,
            }
        );
        let sent = Instant::now();
        let keep = who == Who::Valid && plan.keep_tokens > 0;
        let (status, body) = send(&http, plan.keep_alive, shared, &url, cookie, keep);
        let done = Instant::now();
        if status == 200
            && keep
            && let Some(jwt) = body.as_deref().and_then(bearer_of)
        {
            oks += 1;
            if oks % plan.keep_tokens == 1 || plan.keep_tokens == 1 {
                shared.tokens.lock().push(Token {
                    at: done,
                    path,
                    jwt,
                });
            }
        }
        shared.samples.lock().push(Sample {
            who,
            path,
            session,
            gateway,
            sent,
            done,
            status,
        });
        pause(plan.interval);
    }
}

/// The next live gateway, round robin; `None` when none is alive.
fn pick(alive: &[AtomicBool], next: &AtomicUsize) -> Option<usize> {
    for _ in 0..alive.len() {
        let i = next.fetch_add(1, Ordering::Relaxed) % alive.len();
        if alive[i].load(Ordering::SeqCst) {
            return Some(i);
        }
    }
    None
}

/// Sends one GET; returns the status (0 for no answer) and, when asked, the body.
fn send(
    http: &Client,
    keep_alive: bool,
    shared: &Shared,
    url: &str,
    cookie: Option<&str>,
    body: bool,
) -> (u16, Option<String>) {
    let attempt = |id: &str| {
        let mut req = http.get(url).header("x-load-id", id);
        if let Some(c) = cookie {
            req = req.header("cookie", cookie_header(c));
        }
        req.send()
    };
    let id = format!("chaos-{}", shared.ids.fetch_add(1, Ordering::Relaxed));
    let result = match attempt(&id) {
        // A new connection closed before any answer (the old process of an upgrade
        // stopped accepting): such a request never reached the gateway's code; retry
        // once, as a client or load balancer does (docs/operations.md).
        Err(e) if !keep_alive && closed_unanswered(&e) => {
            shared.retried.lock().push(id);
            let id = format!("chaos-{}", shared.ids.fetch_add(1, Ordering::Relaxed));
            attempt(&id)
        }
        other => other,
    };
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = if body { resp.text().ok() } else { None };
            (status, text)
        }
        Err(_) => (0, None),
    }
}

/// Whether `e` is a connection the server closed before any byte of an answer.
fn closed_unanswered(e: &reqwest::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("IncompleteMessage") || text.contains("ConnectionReset")
}

/// The bearer token in the echo upstream's JSON answer.
fn bearer_of(body: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    doc["headers"]["authorization"][0]
        .as_str()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// `/readyz` of one admin listener, polled every 25 ms in a thread of its own.
pub(crate) struct ReadyWatch {
    seen: Arc<Mutex<Vec<(Instant, u16)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReadyWatch {
    /// Starts polling `GET /readyz` on `admin`.
    pub(crate) fn start(admin: SocketAddr) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("readyz-watch".into())
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    let status = raw::get(admin, "/readyz", &[]).map_or(0, |r| r.status);
                    s.lock().push((Instant::now(), status));
                    pause(Duration::from_millis(25));
                }
            })
            .expect("spawn readyz watch");
        ReadyWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// How long after `since` `/readyz` first answered `status`.
    pub(crate) fn first(&self, since: Instant, status: u16) -> Option<Duration> {
        self.seen
            .lock()
            .iter()
            .find(|(at, s)| *at >= since && *s == status)
            .map(|(at, _)| at.duration_since(since))
    }

    /// How many polls were answered `status`.
    pub(crate) fn count(&self, status: u16) -> usize {
        self.seen
            .lock()
            .iter()
            .filter(|(_, s)| *s == status)
            .count()
    }

    /// Waits until `/readyz` answers `status` after `since` (at most `limit`); how long
    /// after `since` it did.
    pub(crate) fn wait(&self, since: Instant, status: u16, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(d) = self.first(since, status) {
                return Some(d);
            }
            if Instant::now() >= deadline {
                return None;
            }
            pause(Duration::from_millis(10));
        }
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One poll of a JWKS: when, and the kids it published.
type KidsAt = (Instant, std::collections::BTreeSet<String>);

/// The kids a gateway's JWKS (on its admin listener) publishes over time, polled every
/// 100 ms in a thread of its own.
pub(crate) struct JwksWatch {
    seen: Arc<Mutex<Vec<KidsAt>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JwksWatch {
    /// Starts polling `GET /.well-known/jwks.json` on `admin`.
    pub(crate) fn start(admin: SocketAddr) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("jwks-watch".into())
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    if let Some(kids) = kids_at(admin) {
                        s.lock().push((Instant::now(), kids));
                    }
                    pause(Duration::from_millis(100));
                }
            })
            .expect("spawn jwks watch");
        JwksWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// When `kid` was first seen published, if it was.
    pub(crate) fn first_seen(&self, kid: &str) -> Option<Instant> {
        self.seen
            .lock()
            .iter()
            .find(|(_, kids)| kids.contains(kid))
            .map(|(at, _)| *at)
    }

    /// The kids of the last answer at or before `at`.
    pub(crate) fn first_seen_set(&self, at: Instant) -> Option<std::collections::BTreeSet<String>> {
        self.seen
            .lock()
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map(|(_, k)| k.clone())
    }

    /// The kids of the latest answer.
    pub(crate) fn latest(&self) -> Option<std::collections::BTreeSet<String>> {
        self.seen.lock().last().map(|(_, k)| k.clone())
    }

    /// The kids of the first answer.
    pub(crate) fn initial(&self) -> std::collections::BTreeSet<String> {
        self.seen
            .lock()
            .first()
            .map(|(_, k)| k.clone())
            .unwrap_or_default()
    }

    /// Every answer after `since` that lacked `kid`.
    pub(crate) fn missing_after(&self, since: Instant, kid: &str) -> usize {
        self.seen
            .lock()
            .iter()
            .filter(|(at, kids)| *at >= since && !kids.contains(kid))
            .count()
    }

    /// How many answers were recorded.
    pub(crate) fn answers(&self) -> usize {
        self.seen.lock().len()
    }

    /// Stops polling.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for JwksWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kids of the JWKS on an admin listener, or `None` when it does not answer 200.
fn kids_at(admin: SocketAddr) -> Option<std::collections::BTreeSet<String>> {
    let resp = raw::get(admin, "/.well-known/jwks.json", &[]).ok()?;
    if resp.status != 200 {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    Some(
        doc["keys"]
            .as_array()?
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect(),
    )
}
