//! Soak mode (`SOAK=10m`): one production-configured gateway (ES256) under a steady
//! open-loop load for the given time, its RSS sampled every 10 s.
//!
//! The traffic mixes the cached path (9 requests in 10) and the critical path (1 in 10)
//! over `SOAK_SESSIONS` sessions (default 10,000), so the session cache turns over every
//! `cache_ttl` (5 s), tokens are reused and re-minted, and Redis is read on every critical
//! request. The rate is `LOAD_RATE`, or half the mix's closed-loop capacity measured with
//! wrk just before. "No growth" means the RSS after the first minute (allocator and
//! caches warm) stays flat to the end; the table prints one sample per minute.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::harness::COOKIE_NAME;
use crate::procs::{self, Rss};
use crate::wrk::Wrk;
use crate::{Base, Knobs, check, ms, open_loop, production_log_filter};

/// Runs the soak for `length` and prints the RSS series.
pub(crate) fn run(knobs: &Knobs, length: Duration) {
    let load_before = procs::loadavg();
    let base = Base::start(knobs.threads);
    let gw = base.gateway("ES256", knobs.threads, &production_log_filter());
    let pid = gw.pid().expect("gateway running");
    let sessions = std::env::var("SOAK_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let cookies = base.sessions(sessions);
    check(gw.addr(), "/cached/item", &cookies[0], true);
    check(gw.addr(), "/critical/item", &cookies[0], true);

    let rate = knobs.rate.unwrap_or_else(|| {
        let tmp = tempfile::tempdir().expect("temp dir");
        let wrk = Wrk::new(tmp.path(), COOKIE_NAME, &cookies, 2);
        let probe = Duration::from_secs(5);
        let cached = wrk
            .run(gw.addr(), "/cached/item", knobs.connections, probe)
            .rps;
        let critical = wrk
            .run(gw.addr(), "/critical/item", knobs.connections, probe)
            .rps;
        let mix = 1.0 / (0.9 / cached + 0.1 / critical);
        ((mix * 0.5) / 100.0).floor().max(1.0) * 100.0
    });
    let paths = [
        "/cached/item",
        "/cached/item",
        "/cached/item",
        "/cached/item",
        "/cached/item",
        "/cached/item",
        "/cached/item",
        "/cached/item",
        "/cached/item",
        "/critical/item",
    ];
    let requests = open_loop::requests(gw.addr(), &paths, COOKIE_NAME, &cookies);
    let addr = gw.addr();
    let connections = knobs.connections;
    eprintln!("soak: {rate:.0} req/s for {length:?}");
    let started = Instant::now();
    let generator = std::thread::spawn(move || {
        open_loop::run(addr, &requests, rate, connections, Duration::ZERO, length)
    });
    let mut samples = vec![(0u64, Rss::of(pid))];
    let every = Duration::from_secs(10);
    let mut next = every;
    while !generator.is_finished() {
        crate::harness::eventually::pause(Duration::from_millis(200));
        if started.elapsed() >= next {
            samples.push((next.as_secs(), Rss::of(pid)));
            next += every;
        }
    }
    let result = generator.join().expect("generator").summary();
    samples.push((started.elapsed().as_secs(), Rss::of(pid)));
    let load_after = procs::loadavg();

    let mut out = procs::report_header("Soak", &load_before, &load_after);
    let _ = writeln!(
        out,
        "- {rate:.0} req/s offered over {connections} connections for {}s, 90% cached / 10% critical, {sessions} sessions, ES256",
        length.as_secs()
    );
    let _ = writeln!(
        out,
        "- answered {} ({:.0} req/s), errors {}, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms\n",
        result.ok,
        result.achieved_rps,
        result.errors,
        ms(result.p50_us),
        ms(result.p99_us),
        ms(result.p999_us),
        ms(result.max_us)
    );
    let _ = writeln!(out, "| elapsed s | RSS MiB | peak RSS MiB |");
    let _ = writeln!(out, "|---:|---:|---:|");
    for (i, (t, rss)) in samples.iter().enumerate() {
        if t % 60 == 0 || i + 1 == samples.len() {
            let _ = writeln!(
                out,
                "| {t} | {:.1} | {:.1} |",
                rss.mib(),
                rss.hwm_kib as f64 / 1024.0
            );
        }
    }
    let after_warm = samples
        .iter()
        .find(|(t, _)| *t >= 60)
        .map_or(samples[0].1, |(_, r)| *r);
    let last = samples.last().map_or(after_warm, |(_, r)| *r);
    let max_after_warm = samples
        .iter()
        .filter(|(t, _)| *t >= 60)
        .map(|(_, r)| r.mib())
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\nRSS at 60 s {:.1} MiB, at the end {:.1} MiB (change {:+.1} MiB), highest sample after 60 s {:.1} MiB.",
        after_warm.mib(),
        last.mib(),
        last.mib() - after_warm.mib(),
        max_after_warm
    );
    println!("{out}");
}
