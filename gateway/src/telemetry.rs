//! Logging: `tracing` with one env-filter, human or JSON output, and Pingora's `log` bridged in.
//!
//! Whatever the filter says, [`QUIET_TARGETS`] never print below INFO: Pingora's debug
//! and trace records dump whole request and response headers, which hold the minted
//! bearer token and the client's cookies. The gateway's own events never carry a
//! cookie, token or key at any level.
//!
//! Formatted lines are appended to an in-memory buffer and written to stderr in batches
//! by one writer thread, so request threads never block on stderr and never wake another
//! thread per access line (any other line, being rare, wakes the writer at once). (tracing-appender's non-blocking writer, used before, woke its worker
//! for every line; under load that worker spun and parked once per request and cost about
//! a tenth of the gateway's CPU; see docs/performance.md.)
//!
//! The access line (target `sessiongate::access`, one per request) is written by
//! [`access`] straight into that buffer when the human format is on without ANSI
//! styling: exactly what tracing-subscriber's default human format writes for the
//! equivalent event (a test compares the two byte for byte), without building an event
//! and visiting its fields one dynamic call at a time. Any line it cannot render
//! identically (a value the default would escape), and every line of the JSON format,
//! is an ordinary `tracing` event.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::fmt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};

/// Target prefixes whose DEBUG and TRACE events are always dropped, because they print
/// request or response headers (`Authorization: Bearer …`, `Cookie: …`).
pub const QUIET_TARGETS: &[&str] = &["pingora"];

/// How long a line may wait in the buffer before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Buffered bytes at which the writer thread is woken before `FLUSH_EVERY`.
const HIGH_WATER: usize = 64 * 1024;
/// Buffered bytes beyond which lines are dropped rather than stalling requests.
const LIMIT: usize = 4 * 1024 * 1024;

/// Keeps the log writer thread alive; dropping it writes what is buffered and stops it.
pub struct LogGuard {
    writer: Option<(Arc<Shared>, std::thread::JoinHandle<()>)>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some((shared, thread)) = self.writer.take() {
            shared.state.lock().closed = true;
            shared.wake.notify_one();
            let _ = thread.join();
        }
    }
}

/// Whether an event may be printed at all: everything at INFO and above, and the
/// debug/trace events of targets outside [`QUIET_TARGETS`].
pub fn may_print(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO || !QUIET_TARGETS.iter().any(|t| meta.target().starts_with(t))
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the config's filter.
/// Log lines are handed to a dedicated writer thread, so request threads never block on
/// stderr; if it falls behind, lines are dropped rather than stalling requests. Keep the
/// returned guard until exit. Safe to call more than once (later calls are ignored).
#[must_use = "dropping the guard stops the log writer"]
pub fn init(log: &LogConfig) -> LogGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&log.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: Vec::with_capacity(HIGH_WATER),
            closed: false,
        }),
        wake: Condvar::new(),
    });
    let output = fmt::layer()
        .with_writer(LogWriter(shared.clone()))
        .with_ansi(ansi);
    let output = match log.format {
        LogFormat::Json => output.json().flatten_event(true).boxed(),
        LogFormat::Human => output.with_timer(Clock).boxed(),
    };
    let direct = matches!(log.format, LogFormat::Human) && !ansi;
    // try_init also installs the `log` → tracing bridge (Pingora logs through `log`),
    // with `log`'s max level taken from the filter. It fails when a subscriber is
    // already installed (a second call); only then is this writer unused.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(FilterFn::new(may_print))
        .with(output)
        .try_init();
    if installed.is_err() {
        return LogGuard { writer: None };
    }
    if direct {
        let _ = ACCESS_WRITER.set(shared.clone());
    }
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("sessiongate-log".into())
        .spawn(move || write_batches(&thread_shared));
    LogGuard {
        writer: thread.ok().map(|t| (shared, t)),
    }
}

/// The buffer shared by request threads and the writer thread.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    buf: Vec<u8>,
    closed: bool,
}

/// The `MakeWriter` of the subscriber: every event is one `write` of one whole line.
struct LogWriter(Arc<Shared>);

/// One line's writer. Access lines (one per request) wait for the next batch; any other
/// line (start-up, reloads, warnings, errors: rare, and what an operator or a test reads
/// right after the event) wakes the writer thread at once.
struct LineWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.0,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            shared: &self.0,
            urgent: meta.target() != ACCESS_TARGET,
        }
    }
}

impl std::io::Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.state.lock();
        if state.buf.len() + line.len() <= LIMIT {
            let before = state.buf.len();
            state.buf.extend_from_slice(line);
            if self.urgent || (before < HIGH_WATER && state.buf.len() >= HIGH_WATER) {
                self.shared.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer thread: every `FLUSH_EVERY` (or at the high-water mark) swaps the buffer
/// out and writes it to stderr outside the lock; writes what is left when closed.
fn write_batches(shared: &Shared) {
    let mut out = Vec::with_capacity(HIGH_WATER);
    loop {
        let closed = {
            let mut state = shared.state.lock();
            if !state.closed && state.buf.len() < HIGH_WATER {
                shared.wake.wait_for(&mut state, FLUSH_EVERY);
            }
            std::mem::swap(&mut state.buf, &mut out);
            state.closed
        };
        if !out.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&out);
            let _ = stderr.flush();
            out.clear();
            if out.capacity() > LIMIT / 4 {
                // Give back what a burst took.
                out = Vec::with_capacity(HIGH_WATER);
            }
        }
        if closed {
            return;
        }
    }
}

/// tracing-subscriber's `SystemTime` timestamp (`2026-01-02T03:04:05.678901Z`, UTC,
/// microseconds), with the part up to the seconds formatted once per second per thread.
#[derive(Clone, Copy)]
struct Clock;

thread_local! {
    /// The last second formatted on this thread and its `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = std::time::SystemTime::now();
        let Ok(since) = now.duration_since(std::time::UNIX_EPOCH) else {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let secs = since.as_secs();
        SECOND.with(|cell| {
            let Ok(mut cached) = cell.try_borrow_mut() else {
                return tracing_subscriber::fmt::time::SystemTime.format_time(w);
            };
            if cached.0 != secs {
                let text = humantime::format_rfc3339_seconds(now).to_string();
                // `…THH:MM:SSZ`: keep everything before the `Z`.
                cached.1.clear();
                cached.1.push_str(text.trim_end_matches('Z'));
                cached.0 = secs;
            }
            w.write_str(&cached.1)?;
            let micros = since.subsec_micros();
            let mut digits = *b".000000Z";
            let mut n = micros;
            for d in digits[1..7].iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
            // Only ASCII digits, a dot and a Z were written.
            w.write_str(std::str::from_utf8(&digits).unwrap_or(".000000Z"))
        })
    }
}

/// The target of the one-line-per-request access log.
const ACCESS_TARGET: &str = "sessiongate::access";

/// The fields of one access line, in the order the line prints them.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The request method (printed as is, as `%method` prints it).
    pub method: &'a str,
    /// The route's name, or `none`.
    pub route: &'a str,
    /// The status answered.
    pub status: u16,
    /// From the request head to the end of the answer.
    pub latency_ms: f64,
    /// What the session lookup found.
    pub session: &'a str,
    /// The upstream the request went to, or `-`.
    pub upstream: &'a str,
    /// The signing key's id, or `-`.
    pub kid: &'a str,
    /// Who answered: the upstream or the gateway.
    pub answered_by: &'a str,
    /// The error type, or `-`.
    pub error: &'a str,
    /// The request's id.
    pub request_id: &'a str,
}

/// The installed writer's buffer, when access lines may be written without `tracing`
/// (the human format, without ANSI styling).
static ACCESS_WRITER: OnceLock<Arc<Shared>> = OnceLock::new();

thread_local! {
    static ACCESS_LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// Logs one access line, if the log filter lets target `sessiongate::access` print at
/// INFO: straight into the log buffer when it can (the human format without ANSI
/// styling, and nothing to escape), else as the equivalent `tracing` event.
pub fn access(line: &Access<'_>) {
    if tracing::enabled!(target: ACCESS_TARGET, Level::INFO) && !write_access(line) {
        access_event(line);
    }
}

/// The access line as a `tracing` event: target `sessiongate::access`, message
/// `request`, then the fields in [`Access`]'s order.
fn access_event(line: &Access<'_>) {
    tracing::info!(
        target: ACCESS_TARGET,
        method = %line.method,
        route = line.route,
        status = line.status,
        latency_ms = line.latency_ms,
        session = line.session,
        upstream = line.upstream,
        kid = line.kid,
        answered_by = line.answered_by,
        error = line.error,
        request_id = line.request_id,
        "request"
    );
}

/// Writes `line` into the log buffer exactly as the human format prints its
/// [`access_event`]. `false` when it cannot (no writer of ours, the JSON format, ANSI
/// styling, or a value the default format would escape).
fn write_access(line: &Access<'_>) -> bool {
    let Some(shared) = ACCESS_WRITER.get() else {
        return false;
    };
    ACCESS_LINE.with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return false;
        };
        buf.clear();
        if !render_access(&Clock, line, &mut buf) {
            return false;
        }
        let mut writer = LineWriter {
            shared,
            urgent: false,
        };
        writer.write(buf.as_bytes()).is_ok()
    })
}

/// Renders `line` as the default human format renders the access event (timestamp,
/// padded level, target, the message, then each field with `Debug` values); `false` when
/// a string the default quotes would need escaping.
fn render_access(timer: &impl FormatTime, line: &Access<'_>, out: &mut String) -> bool {
    let quoted = [
        line.route,
        line.session,
        line.upstream,
        line.kid,
        line.answered_by,
        line.error,
        line.request_id,
    ];
    // `%method` is written raw; a method is a token (no space, quote or control).
    if !quoted.iter().all(|s| debug_is_quoted(s))
        || !line.method.bytes().all(|b| b.is_ascii_graphic())
    {
        return false;
    }
    {
        let mut w = Writer::new(out);
        if timer.format_time(&mut w).is_err() && w.write_str("<unknown time>").is_err() {
            return false;
        }
    }
    let mut int = itoa::Buffer::new();
    out.push_str("  INFO ");
    out.push_str(ACCESS_TARGET);
    out.push_str(": request method=");
    out.push_str(line.method);
    push_quoted(out, " route=", line.route);
    out.push_str(" status=");
    out.push_str(int.format(line.status));
    out.push_str(" latency_ms=");
    push_f64_debug(out, line.latency_ms);
    push_quoted(out, " session=", line.session);
    push_quoted(out, " upstream=", line.upstream);
    push_quoted(out, " kid=", line.kid);
    push_quoted(out, " answered_by=", line.answered_by);
    push_quoted(out, " error=", line.error);
    push_quoted(out, " request_id=", line.request_id);
    out.push('\n');
    true
}

/// Appends `name` (with its leading space and `=`) and `value` between double quotes.
fn push_quoted(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push('"');
    out.push_str(value);
    out.push('"');
}

/// Whether `Debug` of `s` is `s` between double quotes (printable ASCII, no `"` or `\`).
fn debug_is_quoted(s: &str) -> bool {
    // Without short-circuits, so that the compiler checks many bytes at once.
    s.bytes().fold(true, |ok, b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    })
}

/// Appends what `{value:?}` writes. Between 1e-4 and 1e7 (every latency in
/// milliseconds) both write the shortest digits that read back as `value`, in plain
/// decimal notation, and ryu does it without `core::fmt`; elsewhere `{:?}` writes it.
fn push_f64_debug(out: &mut String, value: f64) {
    if (1e-4..1e7).contains(&value.abs()) {
        out.push_str(ryu::Buffer::new().format_finite(value));
    } else {
        let _ = write!(out, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt;

    /// A fixed clock, so that two formatters print the same timestamp.
    #[derive(Clone)]
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
            w.write_str("2026-01-02T03:04:05.678901Z")
        }
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the default human format (no ANSI, the fixed clock) prints for the access
    /// event of `line`.
    fn by_tracing(line: &Access<'_>) -> String {
        let buf = Buf::default();
        let writer = buf.clone();
        let sub = fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_timer(Fixed)
            .finish();
        tracing::subscriber::with_default(sub, || access_event(line));
        let bytes = buf.0.lock().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn rendered(line: &Access<'_>) -> Option<String> {
        let mut out = String::new();
        render_access(&Fixed, line, &mut out).then_some(out)
    }

    const LINE: Access<'static> = Access {
        method: "GET",
        route: "orders",
        status: 200,
        latency_ms: 1.25,
        session: "valid",
        upstream: "127.0.0.1:9001",
        kid: "roqMScaFn0MxBU6YjbIpMbxq1jR1rzc0S_Gz8pWWr4A",
        answered_by: "upstream",
        error: "-",
        request_id: "0f3a9c2e5b7d4e1f0000000000000001",
    };

    #[test]
    fn the_direct_access_line_is_what_the_default_format_writes() {
        let mut lines = vec![
            LINE,
            Access {
                method: "PROPFIND",
                route: "none",
                status: 0,
                latency_ms: 0.0,
                upstream: "-",
                kid: "-",
                answered_by: "gateway",
                error: "ConnectTimedout",
                request_id: "support-ticket-42 (retry) ~!#$%&'()*+,-./:;<=>?@[]^_`{|}",
                ..LINE
            },
            Access {
                status: 503,
                latency_ms: 1.0e-7,
                session: "",
                ..LINE
            },
            Access {
                latency_ms: 12_345_678.9,
                ..LINE
            },
        ];
        // Latencies over every magnitude a request can take, and beyond.
        lines.extend((0..2_000u64).map(|i| Access {
            latency_ms: Duration::from_nanos(i * i * 7_919).as_secs_f64() * 1000.0,
            status: u16::try_from(i % 600).unwrap_or(0),
            ..LINE
        }));
        for line in &lines {
            assert_eq!(
                rendered(line).as_deref(),
                Some(by_tracing(line).as_str()),
                "{line:?}"
            );
        }
        assert_eq!(
            rendered(&LINE).as_deref(),
            Some(
                "2026-01-02T03:04:05.678901Z  INFO sessiongate::access: request method=GET \
                 route=\"orders\" status=200 latency_ms=1.25 session=\"valid\" \
                 upstream=\"127.0.0.1:9001\" kid=\"roqMScaFn0MxBU6YjbIpMbxq1jR1rzc0S_Gz8pWWr4A\" \
                 answered_by=\"upstream\" error=\"-\" request_id=\"0f3a9c2e5b7d4e1f0000000000000001\"\n"
            )
        );
    }

    #[test]
    fn values_the_default_would_escape_are_left_to_tracing() {
        for line in [
            Access {
                request_id: "a\"b",
                ..LINE
            },
            Access {
                request_id: "back\\slash",
                ..LINE
            },
            Access {
                route: "ünïcode",
                ..LINE
            },
            Access {
                upstream: "line\nbreak",
                ..LINE
            },
            Access {
                kid: "\u{1b}[31m",
                ..LINE
            },
            Access {
                method: "GE T",
                ..LINE
            },
        ] {
            assert_eq!(rendered(&line), None, "{line:?}");
            // The event that goes instead escapes it.
            assert!(by_tracing(&line).contains("INFO sessiongate::access: request"));
        }
    }

    #[test]
    fn without_a_writer_of_ours_nothing_is_written_directly() {
        // Unit tests never call `init`, so no writer is installed: the caller must emit
        // the event.
        assert!(ACCESS_WRITER.get().is_none());
        assert!(!write_access(&LINE));
    }

    #[test]
    fn clock_prints_what_tracing_subscribers_system_time_prints() {
        fn stamp(t: &impl FormatTime) -> String {
            let mut s = String::new();
            t.format_time(&mut Writer::new(&mut s)).unwrap();
            s
        }
        let mut matched = false;
        for _ in 0..5 {
            let ours = stamp(&Clock);
            let theirs = stamp(&tracing_subscriber::fmt::time::SystemTime);
            assert_eq!(ours.len(), "2026-01-02T03:04:05.678901Z".len(), "{ours}");
            assert_eq!(theirs.len(), ours.len(), "{theirs}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
            // Equal up to the seconds unless a second boundary fell between the two.
            if ours[..20] == theirs[..20] {
                matched = true;
                break;
            }
        }
        assert!(matched, "the clocks disagree beyond a second boundary");
    }

    #[test]
    fn plain_rendering_refuses_what_it_cannot_render_identically() {
        assert!(debug_is_quoted("127.0.0.1:9001"));
        assert!(!debug_is_quoted("a\"b"));
        assert!(!debug_is_quoted("a\\b"));
        assert!(!debug_is_quoted("é"));
        assert!(!debug_is_quoted("\t"));
        assert!(!debug_is_quoted("\u{7f}") && !debug_is_quoted("\u{1f}"));
        assert!(debug_is_quoted(" ~") && debug_is_quoted(""));
    }
}

#[cfg(test)]
mod quiet_tests {
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    use super::*;

    struct Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not registered")
        }
    }
    static SITE: Site = Site;

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            0.1,
            0.5,
            1e-4,
            9.999e-5,
            1e-5,
            0.000123,
            1e15,
            9.99e15,
            1e16,
            1.5e16,
            123.456,
            0.30000000000000004,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -2.5,
        ];
        // Latencies as the access log computes them, and a spread over every magnitude.
        values
            .extend((0..20_000u64).map(|us| Duration::from_nanos(us * 997).as_secs_f64() * 1000.0));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..400_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every bit pattern, and then as many inside the range ryu writes.
            values.push(if i % 4 == 0 {
                f64::from_bits(x)
            } else {
                (x >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((i % 13) - 4)
            });
        }
        let mut out = String::new();
        for v in values {
            out.clear();
            push_f64_debug(&mut out, v);
            assert_eq!(out, format!("{v:?}"), "{:#x}", v.to_bits());
        }
    }

    #[test]
    fn pingora_below_info_never_prints() {
        let cases: &[(&str, Level, bool)] = &[
            ("pingora_proxy::proxy_h1", Level::DEBUG, false),
            ("pingora_core::apps::http_app", Level::TRACE, false),
            ("pingora_core::server", Level::INFO, true),
            ("pingora_core::server", Level::WARN, true),
            ("sessiongate::access", Level::INFO, true),
            ("gateway::reload", Level::DEBUG, true),
            ("fred::router", Level::TRACE, true),
        ];
        for &(target, level, printed) in cases {
            let meta = Metadata::new(
                "event",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::EVENT,
            );
            assert_eq!(may_print(&meta), printed, "{target} at {level}");
        }
    }
}
