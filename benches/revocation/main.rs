//! Revocation latency under load: the time from `DEL` returning to the first refused
//! request, for a critical route and for a non-critical route (push invalidation on; and
//! off, the `cache_ttl` baseline), while client threads keep the gateway busy.
//!
//! Everything is real: `redis-server`, the echo upstream and the `sessiongate` binary
//! (built with the bench profile, i.e. optimized), through the integration harness. The
//! `DEL` goes over a plain RESP connection held open by this process, so "DEL returned"
//! is the moment its `:1` reply is read, with no process start in between. Each sample:
//! write a session, request it until its cached token is reused (so it is in the cache),
//! `DEL` it, then request it back to back (over a keep-alive connection) until the first
//! 401; the sample is the time from the `DEL` reply to that 401's arrival, and the number
//! of requests still served after the `DEL` is counted too.
//!
//! Then open connections ([`sockets`]): `REVOCATION_SOCKETS` idle WebSockets (default
//! 10,000) through the gateway, `REVOCATION_CLOSES` of them (default 1,000) revoked one
//! at a time, timed from the `DEL` reply to the client reading the Close frame.
//!
//! Run: `cargo bench -p gateway --bench revocation` (a few minutes once built).
//! `REVOCATION_SAMPLES=N` changes the number of samples per push-on row (default 200),
//! `REVOCATION_LOAD_THREADS=N` the number of load threads (default 4);
//! `REVOCATION_SOCKETS=0` skips the open-connection part.

#![allow(missing_docs)]

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../../tests/integration/harness/mod.rs"]
mod harness;
mod sockets;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::metrics::{Scrape, push_armed};
use harness::{GatewayBuilder, RedisServer, Route, Upstream, cookie_header, session_json};
use reqwest::blocking::Client;
use serde_json::Value;

/// A Redis connection speaking just enough RESP for `DEL` and `SET`.
struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    fn connect(redis: &RedisServer) -> Self {
        let addr = redis
            .url()
            .trim_start_matches("redis://")
            .trim_end_matches("/0")
            .to_owned();
        let stream = TcpStream::connect(&addr).expect("connect to redis");
        stream.set_nodelay(true).expect("nodelay");
        Resp {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// Sends one command and returns its reply line (simple replies only).
    fn command(&mut self, args: &[&str]) -> String {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(out.as_bytes()).expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read reply");
        line.trim_end().to_owned()
    }
}

/// A keep-alive HTTP client (unlike the harness's, which opens a connection per request).
fn keep_alive_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(4)
        .build()
        .expect("client")
}

struct Bench {
    gw: harness::Gateway,
    _up: Upstream,
    redis: RedisServer,
    probe: Client,
}

impl Bench {
    fn start(cache_ttl: &str, push: bool) -> Self {
        let redis = RedisServer::start();
        let up = Upstream::echo("echo");
        let gw = GatewayBuilder::new(&redis.url())
            .route(Route::new("orders", "/api/orders", &[up.addr()]))
            .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
            .cache_ttl(cache_ttl)
            .set("session.push_invalidation", push)
            .set("server.threads", 2)
            .set("redis.pool_size", 4)
            // Access logs off: this measures revocation, not logging.
            .set("log.filter", "warn")
            .start();
        if push {
            let armed = harness::eventually::poll(|| push_armed(&gw), Duration::from_secs(10));
            assert!(armed.is_ok(), "the push channel did not arm");
        }
        Bench {
            gw,
            _up: up,
            redis,
            probe: keep_alive_client(),
        }
    }

    fn key(&self, cookie: &str) -> String {
        harness::session_key(self.gw.key_prefix(), cookie)
    }

    /// Status and echoed bearer of `GET path` with the session cookie.
    fn get(&self, path: &str, cookie: &str) -> (u16, Option<String>) {
        let resp = self
            .probe
            .get(self.gw.url(path))
            .header("cookie", cookie_header(cookie))
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        if status != 200 {
            return (status, None);
        }
        let body: Value = resp.json().unwrap_or(Value::Null);
        let bearer = body["headers"]["authorization"][0]
            .as_str()
            .map(str::to_owned);
        (status, bearer)
    }

    /// Writes a session, makes sure the route has it cached (or, for the critical
    /// route, has served it), deletes it and measures until the first refusal.
    ///
    /// Returns the time to the refusal, the requests served after the `DEL`, and the
    /// round trip of one served request of the warm-up (the unit the first figure is
    /// counted in).
    fn sample(
        &self,
        redis: &mut Resp,
        path: &str,
        critical: bool,
        n: usize,
    ) -> (Duration, u32, Duration) {
        let cookie = harness::new_cookie();
        let key = self.key(&cookie);
        assert_eq!(
            redis.command(&[
                "SET",
                &key,
                &session_json(&format!("bench-{n}")),
                "EX",
                "600"
            ]),
            "+OK"
        );
        let rtt;
        if critical {
            assert_eq!(self.get(path, &cookie).0, 200, "warm-up");
            let started = Instant::now();
            assert_eq!(self.get(path, &cookie).0, 200, "warm-up");
            rtt = started.elapsed();
        } else {
            // Cached once the token is reused: the second of two requests was a hit.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let first = self.get(path, &cookie);
                let started = Instant::now();
                let second = self.get(path, &cookie);
                let took = started.elapsed();
                assert_eq!(first.0, 200, "warm-up");
                if first.1.is_some() && first.1 == second.1 {
                    rtt = took;
                    break;
                }
                assert!(Instant::now() < deadline, "the session never got cached");
            }
        }
        assert_eq!(redis.command(&["DEL", &key]), ":1");
        let deleted = Instant::now();
        let mut served = 0;
        loop {
            match self.get(path, &cookie).0 {
                401 => return (deleted.elapsed(), served, rtt),
                200 => served += 1,
                other => panic!("unexpected status {other} after DEL"),
            }
            assert!(
                deleted.elapsed() < Duration::from_secs(60),
                "not refused within 60 s"
            );
        }
    }
}

/// Client threads requesting both routes with their own sessions, as fast as they can.
struct Load<'a> {
    stop: &'a AtomicBool,
    sent: &'a AtomicU64,
    failed: &'a AtomicU64,
}

fn load_thread(b: &Bench, load: &Load<'_>, t: usize) {
    let cookie = harness::new_cookie();
    b.redis
        .set_session(&b.key(&cookie), &session_json(&format!("load-{t}")), 600);
    let http = keep_alive_client();
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        let path = if n.is_multiple_of(4) {
            "/api/billing/x"
        } else {
            "/api/orders/x"
        };
        let ok = http
            .get(b.gw.url(path))
            .header("cookie", cookie_header(&cookie))
            .send()
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false);
        n += 1;
        if !ok {
            load.failed.fetch_add(1, Ordering::Relaxed);
        }
        load.sent.fetch_add(1, Ordering::Relaxed);
    }
}

struct Row {
    kind: &'static str,
    push: &'static str,
    cache_ttl: &'static str,
    samples: Vec<Duration>,
    served_after_del: Vec<u32>,
    rtts: Vec<Duration>,
    push_down: f64,
    load_rps: f64,
    load_failed: u64,
    invalidations: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `samples` samples per `(kind, path, critical)` on one gateway under load.
fn run(
    cache_ttl: &'static str,
    push: bool,
    threads: usize,
    plan: &[(&'static str, &str, bool, usize)],
) -> Vec<Row> {
    let b = Bench::start(cache_ttl, push);
    let mut redis = Resp::connect(&b.redis);
    let (stop, sent, failed) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let load = Load {
        stop: &stop,
        sent: &sent,
        failed: &failed,
    };
    let mut rows = Vec::new();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (b, load) = (&b, &load);
            scope.spawn(move || load_thread(b, load, t));
        }
        // Let the load reach a steady state.
        harness::eventually::pause(Duration::from_millis(500));
        for &(kind, path, critical, samples) in plan {
            let before = Scrape::of(&b.gw).value("sessiongate_revocation_invalidations_total", &[]);
            let (sent0, failed0, started) = (
                sent.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                Instant::now(),
            );
            let mut row = Row {
                kind,
                push: if push { "on" } else { "off" },
                cache_ttl,
                samples: Vec::with_capacity(samples),
                served_after_del: Vec::with_capacity(samples),
                rtts: Vec::with_capacity(samples),
                push_down: 0.0,
                load_rps: 0.0,
                load_failed: 0,
                invalidations: 0.0,
            };
            for n in 0..samples {
                let (took, served, rtt) = b.sample(&mut redis, path, critical, n);
                row.samples.push(took);
                row.served_after_del.push(served);
                row.rtts.push(rtt);
            }
            row.load_rps =
                (sent.load(Ordering::Relaxed) - sent0) as f64 / started.elapsed().as_secs_f64();
            row.load_failed = failed.load(Ordering::Relaxed) - failed0;
            row.invalidations =
                Scrape::of(&b.gw).value("sessiongate_revocation_invalidations_total", &[]) - before;
            eprintln!("  {kind} (push {}): {samples} samples done", row.push);
            rows.push(row);
        }
        stop.store(true, Ordering::Relaxed);
    });
    rows
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing else we use.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--ws-upstream") {
        sockets::serve(args.get(at + 1).map_or("127.0.0.1:0", String::as_str));
        return;
    }
    let sockets = env_usize("REVOCATION_SOCKETS", 10_000);
    if sockets > 0 {
        sockets::run(sockets, env_usize("REVOCATION_CLOSES", 1_000).min(sockets));
    }
    let samples = env_usize("REVOCATION_SAMPLES", 200);
    let threads = env_usize("REVOCATION_LOAD_THREADS", 4);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "revocation bench: {samples} samples per push-on row, {threads} load threads, {cores} cores"
    );
    let mut rows = run(
        "30s",
        true,
        threads,
        &[
            ("critical", "/api/billing", true, samples),
            ("non-critical", "/api/orders", false, samples),
        ],
    );
    rows.extend(run(
        "1s",
        false,
        threads,
        &[(
            "non-critical (baseline)",
            "/api/orders",
            false,
            (samples / 10).max(10),
        )],
    ));

    println!();
    println!(
        "Time from DEL returning to the first refused request (gateway under load; {cores} cores)"
    );
    println!(
        "| route | push | cache_ttl | samples | p50 | p99 | max | samples with a request served after DEL | most served after DEL | one served request, p50 | load req/s | load failures | push-down events |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &mut rows {
        row.samples.sort();
        row.rtts.sort();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.0} |",
            row.kind,
            row.push,
            row.cache_ttl,
            row.samples.len(),
            ms(percentile(&row.samples, 0.50)),
            ms(percentile(&row.samples, 0.99)),
            ms(*row.samples.last().unwrap_or(&Duration::ZERO)),
            row.served_after_del.iter().filter(|&&n| n > 0).count(),
            row.served_after_del.iter().max().copied().unwrap_or(0),
            ms(percentile(&row.rtts, 0.50)),
            row.load_rps,
            row.load_failed,
            row.push_down,
        );
        eprintln!(
            "  {} (push {}): {:.0} invalidations received during the row",
            row.kind, row.push, row.invalidations
        );
    }
}
