//! The fault suite: every scenario of docs/reliability.md on real processes, under steady
//! load with probes that carry a revoked session and no session, printed as one markdown
//! table (requests sent, answers by status, wrong answers, seconds to recovery and the
//! promised bound) followed by every promise checked with its figure.
//!
//! `cargo bench -p gateway --bench chaos` runs it all (about four minutes once built; the
//! gateway is the optimized binary, as in production):
//!
//! 1. Redis SIGSTOP, then SIGCONT;
//! 2. Redis SIGKILL and a restart, empty, on the same port (the keyring lived in it);
//! 3. added latency below and above `redis.timeout`, and a blackhole of the existing
//!    connections while new ones pass, through the harness's fault proxy;
//! 4. Sentinel (three sentinels, one replica): the master killed;
//! 5. Cluster (three masters, three replicas): a master killed;
//! 6. two gateway replicas: SIGKILL of the one holding the rotation lease;
//! 7. SIGHUP reloads and a binary upgrade under load;
//! 8. the upstream refusing, resetting and hanging.
//!
//! The scenarios are `tests/integration/chaos/scenarios.rs`, shared with the CI subset
//! (`tests/integration/chaos.rs`: 1, 2, 3 and 8 with shorter phases). Knobs:
//! `CHAOS_ONLY=1,5` runs some scenarios; `CHAOS_FAULT=6s` changes how long a fault lasts.
//! The exit status is 1 when a promise was not met.

#![allow(missing_docs)]

#[path = "../../tests/integration/harness/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod harness;
#[path = "../../tests/integration/chaos/scenarios.rs"]
#[allow(dead_code)]
mod scenarios;

use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::time::Instant;

use scenarios::{Pace, Row};

type Scenario = fn(&Pace) -> Vec<Row>;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench binaries without `--bench`.
        println!("fault suite: run it with `cargo bench -p gateway --bench chaos`");
        return;
    }
    let mut pace = Pace::bench();
    if let Some(d) = std::env::var("CHAOS_FAULT").ok().filter(|v| !v.is_empty()) {
        pace.fault = humantime::parse_duration(&d).unwrap_or_else(|e| panic!("CHAOS_FAULT: {e}"));
    }
    let only: Vec<usize> = std::env::var("CHAOS_ONLY")
        .unwrap_or_default()
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let all: [(usize, &str, Scenario); 8] = [
        (1, "1 Redis SIGSTOP", |p| vec![scenarios::redis_sigstop(p)]),
        (2, "2 Redis SIGKILL and restart empty", |p| {
            vec![scenarios::redis_restart_empty(p)]
        }),
        (3, "3 latency and blackhole", scenarios::network),
        (4, "4 Sentinel failover", |p| {
            vec![scenarios::sentinel_failover(p)]
        }),
        (5, "5 Cluster failover", |p| {
            vec![scenarios::cluster_failover(p)]
        }),
        (6, "6 rotation lease holder killed", |p| {
            vec![scenarios::lease_holder_killed(p)]
        }),
        (7, "7 reload and upgrade", |p| {
            vec![scenarios::reload_and_upgrade(p)]
        }),
        (8, "8 upstream faults", scenarios::upstream_faults),
    ];
    let started = Instant::now();
    let load_before = load_average();
    let mut rows = Vec::new();
    for (n, name, run) in all {
        if !only.is_empty() && !only.contains(&n) {
            continue;
        }
        eprintln!("==> {name}");
        let t = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(|| run(&pace))) {
            Ok(done) => {
                for row in &done {
                    eprintln!(
                        "    {}: {} sent, {} wrong, recovery {} s, {}",
                        row.name,
                        row.sent,
                        row.wrong,
                        scenarios::secs(row.recovery),
                        if row.met() { "met" } else { "NOT MET" }
                    );
                }
                rows.extend(done);
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                eprintln!("    {name}: could not run: {why}");
                rows.push(Row::broken(name, &why));
            }
        }
        eprintln!("    ({:.0} s)", t.elapsed().as_secs_f64());
    }
    println!(
        "\nFault suite, {} — commit {} — {}; load average {} before, {} after; {:.0} s in all.\n",
        command(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        commit(),
        machine(),
        load_before,
        load_average(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", scenarios::table(&rows));
    println!("{}", scenarios::details(&rows));
    let unmet = rows.iter().filter(|r| !r.met()).count();
    if unmet > 0 {
        println!("{unmet} scenario(s) with a promise not met.");
        std::process::exit(1);
    }
}

/// The trimmed stdout of a command, or `?`.
fn command(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "?".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

/// The short commit, with `+changes` when the tree differs from it.
fn commit() -> String {
    let head = command(&["git", "rev-parse", "--short", "HEAD"]);
    let dirty = !command(&["git", "status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty {
        format!("{head}+changes")
    } else {
        head
    }
}

/// CPU model and count.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cores} × {model}")
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
