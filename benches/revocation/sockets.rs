//! Revocation of open connections: with `SOCKETS` idle WebSockets open through the
//! gateway (each under its own session, on a critical and on a non-critical route), the
//! sessions are revoked one at a time, and the time from the `DEL` reply to the client
//! reading the gateway's Close frame is recorded; plus what the open connections cost
//! the gateway in memory (RSS before and after opening them).
//!
//! The upstream is a tokio WebSocket echo (a raw `101`, then echo) in a child process
//! (this binary, re-run with `--ws-upstream ADDR`); clients are raw tokio sockets here.
//! The gateway holds two descriptors per connection, so the number of connections is
//! capped by the open-file limit: `(hard limit − 1,000) / 2` when that is below the
//! number asked for (the machines here have a hard limit of 20,000 that not even root
//! may raise, so 9,500).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::harness::{self, GatewayBuilder, RedisServer, Route};
use super::{Resp, ms, percentile};

const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The gateway's Close frame for a revoked session.
const CLOSE_1008: &[u8] = b"\x88\x0f\x03\xf0session ended";

/// Raises the open-file limit of this process and its children as far as allowed;
/// returns the limit now.
fn raise_fd_limit(want: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft >= want {
        return soft;
    }
    // As root the hard limit may rise too (where the sandbox allows); else up to it.
    if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_ok() {
        return want;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    hard
}

/// The gateway's resident memory, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The child process: a WebSocket echo upstream on `addr`, until killed.
pub(crate) fn serve(addr: &str) {
    raise_fd_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        serve_upstream(listener).await;
    });
}

async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
            );
            if conn.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn open(gw: std::net::SocketAddr, path: &str, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(gw).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {gw}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nCookie: {}={cookie}\r\n\r\n",
        harness::COOKIE_NAME
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.expect("read"),
            1,
            "closed during the handshake"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Runs the measurement and prints its table. `sockets` connections, `revocations` of
/// them revoked one at a time (half on each route).
pub(crate) fn run(asked: usize, revocations: usize) {
    let limit = raise_fd_limit(2 * asked as u64 + 1000);
    let sockets = asked.min(usize::try_from(limit.saturating_sub(1000) / 2).unwrap_or(asked));
    if sockets < asked {
        eprintln!(
            "open-file limit {limit}: {sockets} connections instead of {asked} (the gateway holds two descriptors each)"
        );
    }
    let revocations = revocations.min(sockets);
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let up = harness::ports::dead_addr();
    let mut upstream = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--ws-upstream")
        .arg(up.to_string())
        .spawn()
        .expect("start the upstream");
    assert!(
        harness::eventually::poll(
            || std::net::TcpStream::connect(up).is_ok(),
            Duration::from_secs(10)
        )
        .is_ok(),
        "the upstream did not listen"
    );
    // Baseline: the same tunnels on a route without sessions (no watch), in a gateway of
    // their own: what Pingora and the tunnel cost per connection, without the watch.
    let (base_idle, base_open) = {
        let gw = GatewayBuilder::new(&redis.url())
            .route(Route::new("open", "/ws/open", &[up]).auth("none"))
            .set("server.threads", 2)
            .set("log.filter", "warn")
            .start();
        let pid = gw.pid().expect("pid");
        let idle = rss_mib(pid);
        let addr = gw.addr();
        let conns: Vec<TcpStream> = rt.block_on(async {
            let mut conns = Vec::with_capacity(sockets);
            for n in (0..sockets).step_by(200) {
                let batch = (n..(n + 200).min(sockets)).map(|_| open(addr, "/ws/open", "-"));
                conns.extend(futures::future::join_all(batch).await);
            }
            conns
        });
        harness::eventually::pause(Duration::from_secs(2));
        let open_rss = rss_mib(pid);
        drop(conns);
        (idle, open_rss)
    };
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("live", "/ws/live", &[up]).critical())
        .route(Route::new("chat", "/ws/chat", &[up]))
        .cache_ttl("5s")
        .set("server.threads", 2)
        .set("redis.pool_size", 4)
        .set("log.filter", "warn")
        .start();
    assert!(
        harness::eventually::poll(
            || harness::metrics::push_armed(&gw),
            Duration::from_secs(10)
        )
        .is_ok(),
        "the push channel did not arm"
    );
    let pid = gw.pid().expect("pid");
    // Sessions, written over one RESP connection.
    let mut resp = Resp::connect(&redis);
    let cookies: Vec<String> = (0..sockets)
        .map(|i| {
            let cookie = format!("revocation-socket-{i:012}-{:08x}", std::process::id());
            let key = harness::session_key(harness::redis::DEFAULT_PREFIX, &cookie);
            assert_eq!(
                resp.command(&[
                    "SET",
                    &key,
                    &harness::session_json(&format!("u{i}")),
                    "EX",
                    "3600"
                ]),
                "+OK"
            );
            cookie
        })
        .collect();
    let idle_rss = rss_mib(pid);
    let started = Instant::now();
    let gw_addr = gw.addr();
    let mut conns: Vec<TcpStream> = rt.block_on(async {
        let mut conns = Vec::with_capacity(sockets);
        for chunk in cookies.chunks(200).enumerate() {
            let (n, chunk) = chunk;
            let opened = futures::future::join_all(chunk.iter().enumerate().map(|(i, c)| {
                let path = if (n * 200 + i) % 2 == 0 {
                    "/ws/live"
                } else {
                    "/ws/chat"
                };
                open(gw_addr, path, c)
            }))
            .await;
            conns.extend(opened);
        }
        conns
    });
    let open_secs = started.elapsed().as_secs_f64();
    // Let the gateway settle, then read its memory with everything open and idle.
    harness::eventually::pause(Duration::from_secs(2));
    let open_rss = rss_mib(pid);

    let mut critical = Vec::new();
    let mut other = Vec::new();
    for (i, conn) in conns.iter_mut().enumerate().take(revocations) {
        let key = harness::session_key(harness::redis::DEFAULT_PREFIX, &cookies[i]);
        assert_eq!(resp.command(&["DEL", &key]), ":1");
        let deleted = Instant::now();
        let got = rt.block_on(async {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < CLOSE_1008.len() {
                match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        let took = deleted.elapsed();
        assert_eq!(got, CLOSE_1008, "connection {i}: no Close frame");
        if i % 2 == 0 {
            &mut critical
        } else {
            &mut other
        }
        .push(took);
    }
    let still_open = rss_mib(pid);
    drop(conns);
    let _ = upstream.kill();
    let _ = upstream.wait();
    critical.sort();
    other.sort();
    println!();
    println!(
        "{sockets} idle WebSockets open through the gateway ({open_secs:.1} s to open); sessions revoked one at a time: time from DEL returning to the client reading the Close frame"
    );
    println!("| route | revocations | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, samples) in [
        ("critical", &critical),
        ("non-critical (cache_ttl 5s, push on)", &other),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            samples.len(),
            ms(percentile(samples, 0.50)),
            ms(percentile(samples, 0.99)),
            ms(*samples.last().unwrap_or(&Duration::ZERO)),
        );
    }
    println!();
    let per = |idle: f64, open: f64| (open - idle) * 1024.0 / sockets as f64;
    println!("| gateway RSS, MiB | idle | {sockets} open | per connection |");
    println!("|---|---:|---:|---:|");
    println!(
        "| tunnels without a session (`auth = \"none\"`, no watch) | {base_idle:.1} | {base_open:.1} | {:.1} KiB |",
        per(base_idle, base_open)
    );
    println!(
        "| tunnels under a session (watched) | {idle_rss:.1} | {open_rss:.1} | {:.1} KiB |",
        per(idle_rss, open_rss)
    );
    println!(
        "\nThe watches: {:.1} KiB per connection ({:.1} MiB for {sockets}), the difference of the two. After {revocations} revocations: {still_open:.1} MiB.",
        per(idle_rss, open_rss) - per(base_idle, base_open),
        (per(idle_rss, open_rss) - per(base_idle, base_open)) * sockets as f64 / 1024.0
    );
}
