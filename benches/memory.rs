//! Memory of the session cache: the RSS of one process holding 1,000,000 cached sessions,
//! and the cache bound at work when twice as many distinct sessions arrive.
//!
//! Sessions go through the real [`Exchange`]: a cached lookup (a miss, so the store is
//! read, the value decoded and inserted in the cache) and, in the `tokens` scenario, a
//! token for one audience (minted and kept in the token cache), exactly what the
//! first request of a session does on a non-critical route. The store synthesizes a
//! realistic session value for any key and keeps nothing, so the RSS measured is the
//! cache's (plus the process's baseline). The two scenarios (`sessions`, `tokens`) run
//! in fresh processes (this binary re-executed with `--scenario`).
//!
//! Each fills `MEMORY_SESSIONS` (default 1,000,000) sessions into a cache configured
//! with `cache_max_entries` = that number, `cache_max_bytes` = 288 MiB (`MEMORY_MAX_MIB`)
//! and `token_cache_max_bytes` = 64 MiB (`MEMORY_TOKEN_MIB`), then sends as many new
//! ones again and shows that the entry count stays within the bound, evictions are
//! counted, and the RSS stops growing. RSS is `/proc/self/statm`'s resident pages; the
//! weight column is what the cache counts against its bounds, so the two side by side
//! show whether the weights are honest.
//!
//! A third scenario, `watches`, holds `MEMORY_WATCHES` (default 10,000) session watches
//! ([`Exchange::watch`], what every open WebSocket or stream under a session waits on)
//! as tokio tasks, each after its session's lookup, and reports what the watches
//! themselves cost: the RSS with them, against the same tasks and lookups without a watch.
//!
//! Run: `cargo bench -p gateway --bench memory` (about two minutes on two cores with
//! EdDSA, the default; `MEMORY_ALG=ES256` for P-256).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use exchange::store::SessionStore;
use exchange::{Audience, Exchange, Freshness, Metrics, Minter, SessionLookup, SessionSettings};
use keys::{Algorithm, KeySet, Keyring, RotationPolicy};

/// The allocator the `sessiongate` binary runs with (gateway/src/main.rs), so that the
/// RSS measured here is what a gateway would hold.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `session.cache_max_bytes` of the bench unless `MEMORY_MAX_MIB` says otherwise: what
/// 1,000,000 sessions need (docs/performance.md).
const SESSION_BOUND: u64 = 288 * 1024 * 1024;
/// `session.token_cache_max_bytes` of the bench unless `MEMORY_TOKEN_MIB` says otherwise.
const TOKEN_BOUND: u64 = 64 * 1024 * 1024;

/// A store that answers every key with a session value derived from the key.
struct SyntheticStore;

#[async_trait]
impl SessionStore for SyntheticStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, exchange::Error> {
        let tail = &key[key.len().saturating_sub(10)..];
        Ok(Some(Bytes::from(format!(
            r#"{{"sub":"user-{tail}","exp":4102444800,"roles":["reader","writer"],"email":"user-{tail}@example.com","theme":"dark"}}"#
        ))))
    }

    async fn put(&self, _: &str, _: &[u8], _: Duration) -> Result<(), exchange::Error> {
        Ok(())
    }

    async fn delete(&self, _: &str) -> Result<bool, exchange::Error> {
        Ok(false)
    }

    async fn index_add(&self, _: &str, _: &str, _: Duration) -> Result<(), exchange::Error> {
        Ok(())
    }

    async fn index_members(&self, _: &str) -> Result<Vec<String>, exchange::Error> {
        Ok(Vec::new())
    }

    async fn index_remove(&self, _: &str, _: &[String]) -> Result<(), exchange::Error> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), exchange::Error> {
        Ok(())
    }
}

/// Resident set size of this process in MiB, from `/proc/self/statm` (4 KiB pages).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages as f64 * 4096.0 / 1024.0 / 1024.0
}

/// A distinct, valid cookie value for `i` (43 characters of `[0-9a-z-]`).
fn cookie(i: u64) -> String {
    format!("bench-memory-session-{i:020}-x")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        match args.get(i + 1).map(String::as_str) {
            Some("watches") => watches(true),
            Some("idle-tasks") => watches(false),
            other => run(other == Some("tokens")),
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench binaries without `--bench`.
        println!("memory bench: run it with `cargo bench -p gateway --bench memory`");
        return;
    }
    // Each scenario in a fresh process, so that one's allocations do not count in the other.
    for scenario in ["sessions", "tokens", "idle-tasks", "watches"] {
        let exe = std::env::current_exe().expect("current exe");
        let status = std::process::Command::new(exe)
            .args(["--scenario", scenario])
            .status()
            .expect("run scenario");
        assert!(status.success(), "scenario {scenario} failed");
    }
}

/// Fills the cache with `MEMORY_SESSIONS` sessions, then as many again; with `tokens`,
/// each lookup is followed by a token for one audience, as on a non-critical route.
fn run(tokens: bool) {
    let n: u64 = std::env::var("MEMORY_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let alg = match std::env::var("MEMORY_ALG").as_deref() {
        Ok("ES256") => Algorithm::Es256,
        _ => Algorithm::EdDsa,
    };
    keys::install_crypto_provider();
    let now = keys::unix_now();
    let record = keys::generate(alg, now - 10, now - 10).expect("key");
    let policy = RotationPolicy {
        algorithm: alg,
        ..RotationPolicy::default()
    };
    let set = KeySet::build(std::slice::from_ref(&record), now, &policy).expect("key set");
    let metrics = Arc::new(Metrics::unregistered());
    let mib = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(default, |mib| mib * 1024 * 1024)
    };
    let max_bytes = mib("MEMORY_MAX_MIB", SESSION_BOUND);
    let token_max_bytes = mib("MEMORY_TOKEN_MIB", TOKEN_BOUND);
    let mut settings = SessionSettings::default();
    settings.cache.ttl = Duration::from_secs(3600);
    settings.cache.max_entries = usize::try_from(n).expect("fits");
    settings.cache.max_bytes = max_bytes;
    settings.cache.token_max_bytes = token_max_bytes;
    let ex = Exchange::new(
        Arc::new(SyntheticStore),
        settings,
        Minter::new(
            Arc::new(Keyring::new(set)),
            "https://gateway.internal",
            metrics.clone(),
        ),
        metrics.clone(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let audience = Audience::new("orders");
    let ttl = Duration::from_secs(300);
    let evictions = metrics.session_cache.with_label_values(&["eviction"]);
    let token_evictions = metrics.session_cache.with_label_values(&["token_eviction"]);
    let baseline = rss_mib();
    let what = if tokens {
        format!("each with one {} token", alg.as_str())
    } else {
        "sessions only, no token".to_owned()
    };
    println!("### Session cache memory: {n} sessions, {what}\n");
    println!(
        "- bounds: session.cache_max_entries = {n}, session.cache_max_bytes = {} MiB, session.token_cache_max_bytes = {} MiB",
        max_bytes / 1024 / 1024,
        token_max_bytes / 1024 / 1024
    );
    println!("- baseline RSS (process, key, empty cache): {baseline:.1} MiB\n");
    println!(
        "| sessions sent | cached sessions | with a token | evictions (sessions, tokens) | RSS MiB | (RSS − baseline) / cached session, bytes | weight MiB (sessions + tokens) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let started = Instant::now();
    let step = (n / 4).max(1);
    let mut after_first = 0.0;
    let mut phase2 = Vec::new();
    for i in 0..2 * n {
        let cookie = cookie(i);
        let SessionLookup::Valid(resolved) = rt.block_on(ex.lookup(&cookie, Freshness::Cached))
        else {
            panic!("every synthetic session is valid");
        };
        if tokens {
            ex.token(&resolved, &audience, ttl).expect("token");
        }
        if (i + 1) % step == 0 {
            let rss = rss_mib();
            let len = ex.cache().len();
            if i < n {
                after_first = rss;
            } else {
                phase2.push(rss);
            }
            println!(
                "| {} | {len} | {} | {}, {} | {rss:.1} | {:.0} | {:.1} + {:.1} |",
                i + 1,
                ex.cache().token_sets(),
                evictions.get(),
                token_evictions.get(),
                (rss - baseline) * 1024.0 * 1024.0 / len.max(1) as f64,
                ex.cache().weight() as f64 / 1024.0 / 1024.0,
                ex.cache().token_weight() as f64 / 1024.0 / 1024.0
            );
        }
    }
    let last = phase2.last().copied().unwrap_or(0.0);
    let max2 = phase2.iter().copied().fold(0.0, f64::max);
    println!(
        "\nAfter {n} sessions: {after_first:.1} MiB. While {n} more arrived: at most {max2:.1} MiB, last {last:.1} MiB; {} entries cached at the end (bound {n}), {} evictions. ({:.0} s)\n",
        ex.cache().len(),
        evictions.get(),
        started.elapsed().as_secs_f64()
    );
}

/// Holds `MEMORY_WATCHES` tasks, each after looking its session up; with `watch`, each
/// task then waits on the session's watch, else on nothing. Prints the RSS growth.
fn watches(watch: bool) {
    let n: u64 = std::env::var("MEMORY_WATCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    keys::install_crypto_provider();
    let now = keys::unix_now();
    let record = keys::generate(Algorithm::EdDsa, now - 10, now - 10).expect("key");
    let policy = RotationPolicy {
        algorithm: Algorithm::EdDsa,
        ..RotationPolicy::default()
    };
    let set = KeySet::build(std::slice::from_ref(&record), now, &policy).expect("key set");
    let metrics = Arc::new(Metrics::unregistered());
    let ex = Arc::new(Exchange::new(
        Arc::new(SyntheticStore),
        SessionSettings::default(),
        Minter::new(Arc::new(Keyring::new(set)), "iss", metrics.clone()),
        metrics,
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Vouching push channel: watches sleep until woken, as in production.
    ex.cache().suspend();
    ex.cache()
        .confirm_until(Instant::now() + Duration::from_secs(3600));
    let before = rss_mib();
    let bounds = exchange::watch::Bounds {
        unavailable_for: Duration::from_secs(5),
        recheck_every: Duration::from_secs(1),
    };
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let ex = ex.clone();
            rt.spawn(async move {
                let cookie = cookie(i);
                let _ = ex.lookup(&cookie, Freshness::Cached).await;
                if watch {
                    ex.watch(&cookie, bounds).await;
                } else {
                    std::future::pending::<()>().await;
                }
            })
        })
        .collect();
    // Let every task run to its wait.
    rt.block_on(async {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let after = rss_mib();
    println!(
        "### {} {n} tasks: RSS {before:.1} -> {after:.1} MiB ({:.0} bytes each); watches open: {}\n",
        if watch {
            "Watches:"
        } else {
            "Baseline, no watch:"
        },
        (after - before) * 1024.0 * 1024.0 / n as f64,
        ex.watches()
    );
    drop(tasks);
}
