//! SPEC "Long-lived connections": WebSockets and streamed responses opened under a
//! session end when it does — after a `DEL`, a `revoke-user`, the key's expiry, with the
//! push channel killed — on both sides; other sessions' connections stay; and
//! `max_connection_lifetime` ends any of them. Real processes: the gateway, Redis, a raw
//! WebSocket echo upstream and a raw server-sent-events upstream, and raw clients.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::harness::{GatewayBuilder, Route, Stack, assert_eventually, cookie_header, raw};

/// RFC 6455 section 1.3's sample `Sec-WebSocket-Key` and its `Sec-WebSocket-Accept`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What an upstream saw of one connection.
#[derive(Default)]
struct Seen {
    /// When the gateway closed the upstream side (a read returned end-of-stream).
    closed: Option<Instant>,
    /// Every byte the gateway sent after the request head.
    received: Vec<u8>,
}

/// A raw upstream: answers each connection's request head, then either echoes
/// (WebSocket, after a 101) or sends one server-sent event and stays silent (a stream).
struct LongUpstream {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<Seen>>>>>,
    _thread: JoinHandle<()>,
}

#[derive(Clone, Copy)]
enum Kind {
    WebSocket,
    Events,
}

impl LongUpstream {
    fn start(kind: Kind) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns: Arc<Mutex<Vec<Arc<Mutex<Seen>>>>> = Arc::default();
        let registry = conns.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = Arc::new(Mutex::new(Seen::default()));
                registry.lock().push(seen.clone());
                std::thread::spawn(move || serve(conn, kind, &seen));
            }
        });
        LongUpstream {
            addr,
            conns,
            _thread: thread,
        }
    }

    /// Whether every connection it got has been closed by the gateway.
    fn all_closed(&self) -> bool {
        let conns = self.conns.lock();
        !conns.is_empty() && conns.iter().all(|c| c.lock().closed.is_some())
    }

    /// Whether some connection got a masked Close frame with `code` as its last bytes.
    fn got_close(&self, code: u16) -> bool {
        self.conns.lock().iter().any(|c| {
            let got = &c.lock().received;
            got.len() >= 21 && {
                let tail = &got[got.len() - 2 - 4 - 2 - 13..];
                let key = [tail[2], tail[3], tail[4], tail[5]];
                tail[0] == 0x88
                    && tail[1] == 0x80 | 15
                    && u16::from_be_bytes([tail[6] ^ key[0], tail[7] ^ key[1]]) == code
            }
        })
    }

    fn open(&self) -> usize {
        self.conns
            .lock()
            .iter()
            .filter(|c| c.lock().closed.is_none())
            .count()
    }
}

fn serve(mut conn: TcpStream, kind: Kind, seen: &Mutex<Seen>) {
    if raw::read_head(&mut conn).is_err() {
        return;
    }
    let head = match kind {
        Kind::WebSocket => format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        ),
        Kind::Events => "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nd\r\ndata: hello\n\n\r\n".to_owned(),
    };
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => {
                seen.lock().closed = Some(Instant::now());
                return;
            }
            Ok(n) => {
                seen.lock().received.extend_from_slice(&buf[..n]);
                if matches!(kind, Kind::WebSocket) && conn.write_all(&buf[..n]).is_err() {
                    seen.lock().closed = Some(Instant::now());
                    return;
                }
            }
        }
    }
}

/// A client connection through the gateway, past its response head.
struct Client {
    stream: TcpStream,
    head: String,
}

impl Client {
    /// Opens `path` as a WebSocket (or a plain GET for a stream) with `cookie`.
    fn open(gw: SocketAddr, path: &str, cookie: &str, websocket: bool) -> Self {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {gw}\r\nCookie: {}\r\n",
            cookie_header(cookie)
        );
        if websocket {
            req.push_str(&format!(
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
            ));
        }
        req.push_str("\r\n");
        let mut stream = raw::connect(gw).expect("connect");
        stream.write_all(req.as_bytes()).expect("write");
        let head =
            String::from_utf8_lossy(&raw::read_head(&mut stream).expect("head")).into_owned();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client { stream, head }
    }

    /// Sends a masked text frame (a client's), and reads its echo.
    fn echo(&mut self, text: &str) -> Vec<u8> {
        let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).expect("short")];
        let mask = [1u8, 2, 3, 4];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("send frame");
        let mut echoed = vec![0u8; frame.len()];
        self.stream.read_exact(&mut echoed).expect("echo");
        echoed
    }

    /// Reads until end-of-stream; returns what came and when the end came.
    fn read_to_end(&mut self) -> (Vec<u8>, Instant) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return (got, Instant::now()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (got, Instant::now());
                }
                Err(e) => panic!("reading: {e} after {got:?}"),
            }
        }
    }

    /// Whether the connection is still open: nothing to read within `wait`.
    fn still_open(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 64];
        let open = matches!(self.stream.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        self.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        open
    }
}

/// The Close frame the gateway sends when a session ends.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut f = vec![0x88, u8::try_from(2 + reason.len()).expect("short")];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason.as_bytes());
    f
}

fn routes(
    ws: &LongUpstream,
    events: &LongUpstream,
) -> impl FnOnce(GatewayBuilder, &crate::harness::Upstream) -> GatewayBuilder {
    let (ws, events) = (ws.addr, events.addr);
    move |b, _| {
        b.set("session.stream_recheck", "300ms")
            .cache_ttl("2s")
            .route(Route::new("live", "/ws/live", &[ws]).critical())
            .route(Route::new("chat", "/ws/chat", &[ws]))
            .route(Route::new("feed", "/events", &[events]).critical())
            .route(Route::new("short", "/ws/short", &[ws]).set("max_connection_lifetime", "1s"))
    }
}

#[test]
fn a_revoked_session_closes_its_websockets_and_streams_on_both_sides() {
    let ws = LongUpstream::start(Kind::WebSocket);
    let events = LongUpstream::start(Kind::Events);
    let s = Stack::start(routes(&ws, &events));
    let (alice, bob) = (s.login("alice"), s.login("bob"));
    let gw = s.gw.addr();

    let mut idle = Client::open(gw, "/ws/live", &alice, true);
    assert!(idle.head.starts_with("HTTP/1.1 101"), "{}", idle.head);
    let mut busy = Client::open(gw, "/ws/chat", &alice, true);
    let mut feed = Client::open(gw, "/events", &alice, false);
    assert!(feed.head.starts_with("HTTP/1.1 200"), "{}", feed.head);
    let mut other = Client::open(gw, "/ws/live", &bob, true);
    assert_eq!(
        busy.echo("hello"),
        busy.echo("hello"),
        "the tunnel carries frames"
    );
    assert_eventually!(
        s.gw.admin_get("/metrics")
            .contains(r#"sessiongate_connections_open{route="live"} 2"#),
        Duration::from_secs(5)
    );

    // A busy one keeps talking while the session is deleted.
    let chatter = {
        let mut stream = busy.stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
            for _ in 0..200 {
                if stream.write_all(&frame).is_err() {
                    return;
                }
                crate::harness::eventually::pause(Duration::from_millis(5));
            }
        })
    };
    s.redis.del(&s.key(&alice));
    let deleted = Instant::now();

    let (got, closed) = idle.read_to_end();
    assert_eq!(
        got,
        close_frame(1008, "session ended"),
        "an idle socket gets a Close frame"
    );
    let after = closed - deleted;
    assert!(
        after < Duration::from_millis(500),
        "critical: closed {after:?} after the DEL"
    );
    let (_, closed) = busy.read_to_end();
    assert!(
        closed - deleted < Duration::from_secs(2),
        "non-critical: within cache_ttl"
    );
    let (got, closed) = feed.read_to_end();
    assert!(closed - deleted < Duration::from_millis(500));
    assert!(
        !String::from_utf8_lossy(&got).contains("0\r\n\r\n"),
        "a stream is aborted, never ended cleanly: {got:?}"
    );
    let _ = chatter.join();
    // The upstream sides are closed too, and bob's socket is untouched.
    assert_eventually!(events.all_closed(), Duration::from_secs(2));
    assert!(
        ws.got_close(1008),
        "the upstream got a (masked) Close frame too"
    );
    assert_eventually!(
        ws.open() == 1,
        Duration::from_secs(2),
        "only bob's stays open"
    );
    assert!(other.still_open(Duration::from_millis(300)));
    assert_eq!(other.echo("still"), other.echo("still"));
    for route in ["live", "chat", "feed"] {
        let line = format!(
            r#"sessiongate_connections_closed_total{{reason="revoked",route="{route}"}} 1"#
        );
        assert_eventually!(
            s.gw.admin_get("/metrics").contains(&line),
            Duration::from_secs(5),
            "{line}\n{}",
            s.gw.logs()
                .lines()
                .filter(|l| l.contains("connection") || l.contains("feed"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eventually!(
        s.gw.logs()
            .lines()
            .any(|l| l.contains("sessiongate::connection") && l.contains(r#"reason="revoked""#)),
        Duration::from_secs(5),
        "an access line when the connection ends"
    );
}

#[test]
fn revoke_user_expiry_and_a_dead_push_channel_all_end_connections() {
    let ws = LongUpstream::start(Kind::WebSocket);
    let events = LongUpstream::start(Kind::Events);
    let s = Stack::start(routes(&ws, &events));
    let gw = s.gw.addr();

    // The key's own expiry.
    let short = s.login_json(&crate::harness::session_json("carol"));
    s.redis.cli(&["EXPIRE", &s.key(&short), "2"]);
    let mut c = Client::open(gw, "/ws/live", &short, true);
    let opened = Instant::now();
    let (got, closed) = c.read_to_end();
    assert_eq!(got, close_frame(1008, "session ended"));
    let lived = closed - opened;
    assert!(
        lived > Duration::from_millis(1200) && lived < Duration::from_secs(4),
        "{lived:?}"
    );

    // revoke-user (sessions written by `session create` are indexed).
    let created = crate::harness::cli::sg_ok(
        &[
            "session",
            "create",
            "--config",
            s.gw.config_path().to_str().expect("path"),
            "--sub",
            "dave",
        ],
        &[],
    );
    let dave = created.trim().to_owned();
    crate::harness::secrets::record("cookie", &dave);
    let mut c = Client::open(gw, "/ws/chat", &dave, true);
    assert!(c.head.starts_with("HTTP/1.1 101"), "{}", c.head);
    crate::harness::cli::sg_ok(
        &[
            "session",
            "revoke-user",
            "--config",
            s.gw.config_path().to_str().expect("path"),
            "dave",
        ],
        &[],
    );
    let revoked = Instant::now();
    let (got, closed) = c.read_to_end();
    assert_eq!(got, close_frame(1008, "session ended"));
    assert!(closed - revoked < Duration::from_secs(2));

    // The push channel killed: connections still close, within stream_recheck.
    let erin = s.login("erin");
    let mut c = Client::open(gw, "/ws/live", &erin, true);
    // The tracking connection is the gateway's only RESP3 one.
    for line in s.redis.cli(&["CLIENT", "LIST"]).lines() {
        if line.contains("resp=3")
            && let Some(id) = line.split_whitespace().find_map(|f| f.strip_prefix("id="))
        {
            s.redis.cli(&["CLIENT", "KILL", "ID", id]);
        }
    }
    s.redis.del(&s.key(&erin));
    let deleted = Instant::now();
    let (got, closed) = c.read_to_end();
    assert_eq!(got, close_frame(1008, "session ended"));
    assert!(
        closed - deleted < Duration::from_millis(300 + 700),
        "{:?}",
        closed - deleted
    );
}

#[test]
fn without_push_invalidation_connections_poll_every_stream_recheck() {
    let ws = LongUpstream::start(Kind::WebSocket);
    let events = LongUpstream::start(Kind::Events);
    let s =
        Stack::start(|b, up| routes(&ws, &events)(b.set("session.push_invalidation", false), up));
    let grace = s.login("grace");
    let mut c = Client::open(s.gw.addr(), "/ws/chat", &grace, true);
    assert!(
        c.still_open(Duration::from_millis(700)),
        "nothing ends a live session"
    );
    s.redis.del(&s.key(&grace));
    let deleted = Instant::now();
    let (got, closed) = c.read_to_end();
    assert_eq!(got, close_frame(1008, "session ended"));
    // stream_recheck is 300 ms: the next poll sees it.
    assert!(
        closed - deleted < Duration::from_millis(300 + 500),
        "{:?}",
        closed - deleted
    );
}

#[test]
fn max_connection_lifetime_ends_any_connection() {
    let ws = LongUpstream::start(Kind::WebSocket);
    let events = LongUpstream::start(Kind::Events);
    let s = Stack::start(routes(&ws, &events));
    let frank = s.login("frank");
    let mut c = Client::open(s.gw.addr(), "/ws/short", &frank, true);
    let opened = Instant::now();
    let (got, closed) = c.read_to_end();
    assert_eq!(got, close_frame(1001, "connection lifetime"));
    let lived = closed - opened;
    assert!(
        lived >= Duration::from_millis(900) && lived < Duration::from_secs(3),
        "{lived:?}"
    );
    assert_eventually!(ws.all_closed(), Duration::from_secs(2));
    let metrics = s.gw.admin_get("/metrics");
    assert!(
        metrics
            .contains(r#"sessiongate_connections_closed_total{reason="lifetime",route="short"} 1"#),
        "{metrics}"
    );
}

#[test]
fn new_websockets_are_never_ended_right_after_their_101() {
    let ws = LongUpstream::start(Kind::WebSocket);
    let events = LongUpstream::start(Kind::Events);
    let s = Stack::start(routes(&ws, &events));
    let cookie = s.login("henry");
    let gw = s.gw.addr();
    let early = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for i in 0..60 {
                    let path = if i % 2 == 0 { "/ws/chat" } else { "/ws/live" };
                    let mut c = Client::open(gw, path, &cookie, true);
                    assert!(c.head.starts_with("HTTP/1.1 101"), "{}", c.head);
                    // Idle a little after the 101, as a browser often is.
                    crate::harness::eventually::pause(Duration::from_millis(30));
                    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
                    let mut echoed = [0u8; 8];
                    let ok = c.stream.write_all(&frame).is_ok()
                        && c.stream.read_exact(&mut echoed).is_ok()
                        && echoed == frame;
                    if !ok {
                        early.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(early.into_inner(), 0, "upgrades ended before any traffic");
}
