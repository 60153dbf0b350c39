//! An open-loop load generator: requests are sent on a fixed schedule whatever the
//! answers do, so every target is measured at the same offered load.
//!
//! Debian's `wrk` is closed-loop (a connection waits for its answer before sending
//! again), so a slower target is offered less load and its latency hides the queue it
//! built ("coordinated omission"). Here `rate` requests per second are spread evenly over
//! `connections` keep-alive HTTP/1.1 connections: connection `j` sends its `k`-th request
//! at `start + j/rate + k*connections/rate`. Latency is taken the way wrk2 takes it, from
//! the scheduled time, whenever the connection was still busy with an earlier answer at
//! that time (the delay is the target's fault); when the connection was idle and the
//! generator slept until the scheduled time, latency is taken from the actual send, so the
//! tokio timer's wake-up lateness (up to a millisecond) is not charged to the target.
//!
//! All connections run on one current-thread tokio runtime (one core at most).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// What one open-loop run measured (latencies in microseconds).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OpenResult {
    /// Requests answered 200 within the measured window.
    pub(crate) ok: u64,
    /// Failed requests (connection errors and non-200 answers).
    pub(crate) errors: u64,
    /// Answered requests per second in the measured window.
    pub(crate) achieved_rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
}

/// Prepared requests, cycled through by every connection (each from its own offset).
pub(crate) type Requests = Arc<Vec<Vec<u8>>>;

/// `GET path HTTP/1.1` with `Cookie: NAME=VALUE`, one per cookie.
pub(crate) fn requests(
    addr: SocketAddr,
    paths: &[&str],
    cookie_name: &str,
    cookies: &[String],
) -> Requests {
    let mut out = Vec::with_capacity(cookies.len() * paths.len());
    for (i, cookie) in cookies.iter().enumerate() {
        let path = paths[i % paths.len()];
        out.push(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sg-open-loop\r\nAccept: */*\r\nCookie: {cookie_name}={cookie}\r\n\r\n"
            )
            .into_bytes(),
        );
    }
    Arc::new(out)
}

/// Offers `rate` requests/s to `addr` over `connections` connections for `warmup` (not
/// measured) plus `duration`.
///
/// # Panics
/// If the runtime cannot be built or a connection cannot be opened at the start.
pub(crate) fn run(
    addr: SocketAddr,
    requests: &Requests,
    rate: f64,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Samples {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("generator runtime");
    rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(100);
        let measure_from = start + warmup;
        let end = measure_from + duration;
        let mut tasks = Vec::with_capacity(connections);
        for j in 0..connections {
            let requests = requests.clone();
            let stream = connect(addr).await.expect("open-loop connect");
            tasks.push(tokio::spawn(connection(
                addr,
                stream,
                requests,
                Schedule {
                    start,
                    measure_from,
                    end,
                    phase_ns: (j as f64 * 1e9 / rate) as u64,
                    interval_ns: (connections as f64 * 1e9 / rate) as u64,
                },
                j,
            )));
        }
        let mut samples = Samples::default();
        for task in tasks {
            let (lat, err) = task.await.expect("connection task");
            samples.latencies_ns.extend(lat);
            samples.errors += err;
        }
        samples.duration = duration;
        samples
    })
}

/// Raw latencies of one or more runs, to be merged and summarized.
#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) latencies_ns: Vec<u64>,
    pub(crate) errors: u64,
    pub(crate) duration: Duration,
}

impl Samples {
    /// Adds another run's samples.
    pub(crate) fn merge(&mut self, other: Samples) {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        self.duration += other.duration;
    }

    /// Percentiles of everything collected.
    pub(crate) fn summary(self) -> OpenResult {
        summarize(self.latencies_ns, self.errors, self.duration)
    }
}

/// Percentiles over the collected latencies (nanoseconds).
fn summarize(mut latencies: Vec<u64>, errors: u64, duration: Duration) -> OpenResult {
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[idx.clamp(1, latencies.len()) - 1] as f64 / 1000.0
    };
    OpenResult {
        ok: latencies.len() as u64,
        errors,
        achieved_rps: latencies.len() as f64 / duration.as_secs_f64(),
        p50_us: pct(50.0),
        p99_us: pct(99.0),
        p999_us: pct(99.9),
        max_us: latencies.last().map_or(0.0, |&n| n as f64 / 1000.0),
    }
}

#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    phase_ns: u64,
    interval_ns: u64,
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connection(
    addr: SocketAddr,
    mut stream: TcpStream,
    requests: Requests,
    s: Schedule,
    offset: usize,
) -> (Vec<u64>, u64) {
    let expected = (s.end.saturating_duration_since(s.measure_from).as_nanos() as u64)
        / s.interval_ns.max(1)
        + 1;
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut errors = 0;
    let mut buf = Vec::with_capacity(8192);
    let mut k: u64 = 0;
    loop {
        let intended = s.start + Duration::from_nanos(s.phase_ns + k * s.interval_ns);
        if intended >= s.end {
            break;
        }
        let req = &requests[(offset + k as usize) % requests.len()];
        k += 1;
        let from = if Instant::now() < intended {
            tokio::time::sleep_until(intended.into()).await;
            Instant::now()
        } else {
            intended
        };
        let ok = match exchange(&mut stream, req, &mut buf).await {
            Ok(200) => true,
            Ok(_) => false,
            Err(_) => {
                buf.clear();
                match connect(addr).await {
                    Ok(s) => stream = s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
                false
            }
        };
        if intended < s.measure_from {
            continue;
        }
        if ok {
            latencies.push(from.elapsed().as_nanos() as u64);
        } else {
            errors += 1;
        }
    }
    (latencies, errors)
}

/// Writes one request and reads one `Content-Length` response; returns its status.
async fn exchange(stream: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    stream.write_all(req).await?;
    buf.clear();
    let (head_len, status, body_len) = loop {
        if let Some(parsed) = parse_head(buf)? {
            break parsed;
        }
        read_more(stream, buf).await?;
    };
    while buf.len() < head_len + body_len {
        read_more(stream, buf).await?;
    }
    Ok(status)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// `(head length, status, Content-Length)` once the head is complete.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(usize, u16, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body_len = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                body_len = v.trim().parse().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked answers are not supported"));
            }
        }
    }
    let body_len = body_len.ok_or_else(|| bad("no content-length"))?;
    Ok(Some((end + 4, status, body_len)))
}

fn bad(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}
