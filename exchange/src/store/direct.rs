//! Direct reads for critical routes: a `GET` written and answered on the request's own
//! task, over a connection it holds alone for the round trip.
//!
//! fred sends every command through its router task on the background runtime and
//! answers through a channel, so a read crosses threads twice and runs fred's
//! per-command machinery (frame, channel, timers, wakeups). A critical route reads Redis
//! on every request, and that machinery was a fifth of what the critical path costs on
//! top of proxying (docs/performance.md). Here a request takes an idle connection from
//! a small pool (or opens one), writes the command, waits for the reply on its own task
//! and gives the connection back. RESP replies are decoded by `redis-protocol`, the
//! codec fred itself uses.
//!
//! Scope: plain TCP to the one primary fred's pool is connected to (a standalone server,
//! or the primary Sentinel named, followed across failovers), with the URL's `AUTH` and
//! `SELECT`. TLS and Cluster deployments read through fred. The fault rules are fred's
//! path's: a read that times out condemns its connection, a connection that fails is
//! dropped, and only a connection that was idle in the pool and failed before any reply
//! (the server closed it meanwhile) is replaced for one retry of the idempotent `GET`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Why a direct read failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No reply within the timeout.
    Timeout,
    /// The connection failed, or Redis answered with an error.
    Error(String),
    /// Every connection the pool may open is busy: read through fred instead.
    Busy,
}

/// How to log in on a new connection.
#[derive(Clone, Default)]
pub(crate) struct Login {
    /// `AUTH` credentials: username (ACL) and password.
    pub auth: Option<(Option<String>, String)>,
    /// The database to `SELECT`, when not 0.
    pub database: Option<u8>,
    /// Behind Sentinel: a new connection must find a primary (`ROLE`), so that a read
    /// racing a failover never goes to a demoted server.
    pub primary_only: bool,
}

/// The server new connections go to, and the generation of connections made to it.
struct Server {
    host: String,
    port: u16,
    generation: u64,
}

/// A pool of connections for direct `GET`s.
pub(crate) struct Direct {
    login: Login,
    /// Where to connect: `None` until known (behind Sentinel, until fred has found the
    /// primary), and reads go through fred meanwhile.
    server: ArcSwapOption<Server>,
    /// The generation of [`Direct::server`]; connections of an older one are closed.
    generation: AtomicU64,
    timeout: Duration,
    idle: parking_lot::Mutex<Vec<Conn>>,
    /// Connections open (idle or in use).
    open: AtomicUsize,
    max: usize,
    /// [`IDLE_CLOSE`], shorter in tests.
    idle_close: Duration,
}

struct Conn {
    stream: TcpStream,
    /// Replies read and not yet decoded.
    buf: BytesMut,
    /// The request being written, kept between requests so that none allocates.
    out: Vec<u8>,
    /// When it was last given back to the pool.
    idle_since: Instant,
    /// The generation of the server it was opened to.
    generation: u64,
}

/// A connection idle this long is closed when the pool is next used: a burst's extra
/// connections do not stay open forever.
const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// The `CLIENT SETNAME` of direct-read connections.
pub(crate) const CLIENT_NAME: &str = "sessiongate-direct";

/// Room for a reply read in one go (a session value is usually a few hundred bytes).
const READ_CHUNK: usize = 4096;

impl Direct {
    /// A pool of at most `max` connections logging in with `login`, each read given
    /// `timeout`; it connects nowhere until [`Direct::point_at`] names a server.
    pub(crate) fn new(login: Login, timeout: Duration, max: usize) -> Self {
        Self {
            login,
            server: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            timeout,
            idle: parking_lot::Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            max: max.max(1),
            idle_close: IDLE_CLOSE,
        }
    }

    /// Sends new connections to `host:port` (the primary fred is connected to). When
    /// that is another server, every connection to the old one is closed: idle ones now,
    /// busy ones when their read ends.
    pub(crate) fn point_at(&self, host: &str, port: u16) {
        if let Some(current) = &*self.server.load()
            && current.host == host
            && current.port == port
        {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.server.store(Some(Arc::new(Server {
            host: host.to_owned(),
            port,
            generation,
        })));
        let closed = std::mem::take(&mut *self.idle.lock());
        self.open.fetch_sub(closed.len(), Ordering::AcqRel);
    }

    /// `GET key`, within the timeout.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, Failure> {
        match tokio::time::timeout(self.timeout, self.get_inner(key)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn get_inner(&self, key: &str) -> Result<Option<Bytes>, Failure> {
        let idle = match self.idle.lock().pop() {
            // Opened to a server fred has left (a race with `point_at`): closed.
            Some(c) if c.generation != self.generation.load(Ordering::Acquire) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                None
            }
            idle => idle,
        };
        if let Some(conn) = idle {
            let mut held = Held::new(self, conn);
            match held.conn_mut().round_trip(key).await {
                Ok(reply) => return held.finish(reply),
                // Unusable while it was idle (closed by the server, or its runtime
                // gone), and nothing was answered: once more on a new connection.
                Err(RoundTrip::Stale(_)) => drop(held),
                Err(RoundTrip::Failed(why)) => return Err(Failure::Error(why)),
            }
        }
        let mut held = self.open_new().await?;
        match held.conn_mut().round_trip(key).await {
            Ok(reply) => held.finish(reply),
            Err(RoundTrip::Stale(why) | RoundTrip::Failed(why)) => Err(Failure::Error(why)),
        }
    }

    /// Opens, authenticates and selects a new connection, if the pool may hold one more.
    async fn open_new(&self) -> Result<Held<'_>, Failure> {
        let Some(server) = self.server.load_full() else {
            return Err(Failure::Busy);
        };
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Failure::Busy);
        }
        // Counted from here: a failure below gives the slot back when `held` drops.
        let mut held = Held {
            direct: self,
            conn: None,
            counted: true,
        };
        let stream = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|e| Failure::Error(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(128),
            idle_since: Instant::now(),
            generation: server.generation,
        };
        conn.handshake(&self.login).await.map_err(Failure::Error)?;
        if self.login.primary_only {
            let role = conn.command(&[b"ROLE"]).await.map_err(Failure::Error)?;
            if !is_primary(&role) {
                // fred has not followed the failover yet: it reads instead.
                return Err(Failure::Busy);
            }
        }
        held.conn = Some(conn);
        Ok(held)
    }
}

/// A connection out of the pool, counted in `open` until it is closed or given back.
struct Held<'a> {
    direct: &'a Direct,
    conn: Option<Conn>,
    /// Whether this guard holds one count of `open` (given to the pool with the
    /// connection).
    counted: bool,
}

impl<'a> Held<'a> {
    fn new(direct: &'a Direct, conn: Conn) -> Self {
        Self {
            direct,
            conn: Some(conn),
            counted: true,
        }
    }

    fn conn_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a held connection")
    }

    /// The reply as a value; the connection goes back to the pool when nothing is left
    /// unread on it (else it is closed, when `self` drops).
    fn finish(mut self, reply: BytesFrame) -> Result<Option<Bytes>, Failure> {
        let result = match reply {
            BytesFrame::BulkString(value) => Ok(Some(value)),
            BytesFrame::Null => Ok(None),
            BytesFrame::Error(e) => Err(Failure::Error(e.to_string())),
            _ => Err(Failure::Error("unexpected reply to GET".into())),
        };
        let current = self.direct.generation.load(Ordering::Acquire);
        if let Some(mut conn) = self
            .conn
            .take_if(|c| c.buf.is_empty() && c.generation == current)
        {
            self.counted = false;
            let now = Instant::now();
            conn.idle_since = now;
            // Taken last in, first out: the first is the longest idle.
            let expired = {
                let mut idle = self.direct.idle.lock();
                idle.push(conn);
                match idle.first() {
                    Some(c) if now.duration_since(c.idle_since) >= self.direct.idle_close => {
                        Some(idle.remove(0))
                    }
                    _ => None,
                }
            };
            if let Some(expired) = expired {
                self.direct.open.fetch_sub(1, Ordering::AcqRel);
                drop(expired);
            }
        }
        result
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.direct.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

enum RoundTrip {
    /// The connection failed before any byte of a reply arrived.
    Stale(String),
    /// Anything else.
    Failed(String),
}

impl Conn {
    async fn handshake(&mut self, login: &Login) -> Result<(), String> {
        if let Some((user, password)) = &login.auth {
            let reply = match user {
                Some(user) => {
                    self.command(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                        .await?
                }
                None => self.command(&[b"AUTH", password.as_bytes()]).await?,
            };
            expect_ok(&reply, "AUTH")?;
        }
        if let Some(db) = login.database.filter(|&db| db != 0) {
            let reply = self
                .command(&[b"SELECT", db.to_string().as_bytes()])
                .await?;
            expect_ok(&reply, "SELECT")?;
        }
        // Named, so that `CLIENT LIST` tells them from fred's connections.
        let reply = self
            .command(&[b"CLIENT", b"SETNAME", CLIENT_NAME.as_bytes()])
            .await?;
        expect_ok(&reply, "CLIENT SETNAME")
    }

    async fn command(&mut self, args: &[&[u8]]) -> Result<BytesFrame, String> {
        self.request(args)
            .await
            .map_err(|(RoundTrip::Stale(why) | RoundTrip::Failed(why))| why)
    }

    async fn round_trip(&mut self, key: &str) -> Result<BytesFrame, RoundTrip> {
        self.request(&[b"GET", key.as_bytes()]).await
    }

    /// Writes `args` as one command in the connection's own buffer and reads the reply.
    async fn request(&mut self, args: &[&[u8]]) -> Result<BytesFrame, RoundTrip> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode(&mut out, args);
        let reply = self.exchange(&out).await;
        self.out = out;
        reply
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<BytesFrame, RoundTrip> {
        if let Err(e) = self.stream.write_all(request).await {
            return Err(RoundTrip::Stale(e.to_string()));
        }
        loop {
            match decode_bytes_mut(&mut self.buf) {
                Ok(Some((frame, _, _))) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(RoundTrip::Failed(format!("bad reply: {e}"))),
            }
            let before_reply = self.buf.is_empty();
            self.buf.reserve(READ_CHUNK);
            let why = match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => "connection closed".to_owned(),
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            return Err(if before_reply {
                RoundTrip::Stale(why)
            } else {
                RoundTrip::Failed(why)
            });
        }
    }
}

/// Whether a `ROLE` reply says `master`.
fn is_primary(reply: &BytesFrame) -> bool {
    matches!(reply, BytesFrame::Array(parts)
        if matches!(parts.first(), Some(BytesFrame::BulkString(role)) if role.as_ref() == b"master"))
}

fn expect_ok(reply: &BytesFrame, what: &str) -> Result<(), String> {
    match reply {
        BytesFrame::SimpleString(s) if s.as_ref() == b"OK" => Ok(()),
        BytesFrame::Error(e) => Err(format!("{what}: {e}")),
        _ => Err(format!("{what}: unexpected reply")),
    }
}

/// A RESP array of bulk strings, appended to `out`.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut digits = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(digits.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(digits.format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// How a scripted server answers.
    #[derive(Clone, Copy)]
    enum Script {
        /// Every command answered; `ROLE` says `master`.
        Primary,
        /// `ROLE` says `slave`.
        Replica,
        /// The connection is closed after each `GET` answered.
        CloseAfterGet,
        /// `GET` answered after 200 ms.
        Slow,
    }

    /// A server speaking just enough RESP for these tests (a real one cannot be made to
    /// close a connection while idle, or to answer late, on cue); counts the
    /// connections it accepted.
    async fn scripted(script: Script) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    loop {
                        let frame = loop {
                            if let Ok(Some((frame, _, _))) = decode_bytes_mut(&mut buf) {
                                break frame;
                            }
                            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                return;
                            }
                        };
                        let BytesFrame::Array(args) = frame else {
                            return;
                        };
                        let name = match args.first() {
                            Some(BytesFrame::BulkString(b)) => b.clone(),
                            _ => return,
                        };
                        let reply: &[u8] = match (&name[..], script) {
                            (b"ROLE", Script::Replica) => b"*3\r\n$5\r\nslave\r\n:0\r\n*0\r\n",
                            (b"ROLE", _) => b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n",
                            (b"GET", _) => b"$5\r\nvalue\r\n",
                            _ => b"+OK\r\n",
                        };
                        if name.as_ref() == b"GET" && matches!(script, Script::Slow) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                        if name.as_ref() == b"GET" && matches!(script, Script::CloseAfterGet) {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn pool(port: u16, max: usize, primary_only: bool) -> Direct {
        let login = Login {
            auth: Some((None, "pw".into())),
            database: Some(3),
            primary_only,
        };
        let direct = Direct::new(login, Duration::from_secs(2), max);
        direct.point_at("127.0.0.1", port);
        direct
    }

    fn value(read: Result<Option<Bytes>, Failure>) -> Bytes {
        match read {
            Ok(Some(v)) => v,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn connections_are_reused_and_closed_once_idle_too_long() {
        let (port, accepted) = scripted(Script::Primary).await;
        let mut direct = pool(port, 4, false);
        direct.idle_close = Duration::from_millis(50);
        let (a, b) = tokio::join!(direct.get("k"), direct.get("k"));
        assert_eq!(
            (value(a), value(b)),
            (Bytes::from("value"), Bytes::from("value"))
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(direct.open.load(Ordering::SeqCst), 2);
        value(direct.get("k").await);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "an idle connection is reused"
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        value(direct.get("k").await);
        assert_eq!(
            direct.open.load(Ordering::SeqCst),
            1,
            "the longest idle was closed"
        );
        assert_eq!(direct.idle.lock().len(), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_for_the_read() {
        let (port, accepted) = scripted(Script::CloseAfterGet).await;
        let direct = pool(port, 4, false);
        for n in 1..=3 {
            value(direct.get("k").await);
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
        assert_eq!(direct.open.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn another_primary_closes_the_connections_to_the_old_one() {
        let (old, old_accepted) = scripted(Script::Primary).await;
        let (new, new_accepted) = scripted(Script::Primary).await;
        let direct = pool(old, 4, false);
        value(direct.get("k").await);
        direct.point_at("127.0.0.1", new);
        assert_eq!(direct.open.load(Ordering::SeqCst), 0);
        value(direct.get("k").await);
        value(direct.get("k").await);
        assert_eq!(old_accepted.load(Ordering::SeqCst), 1);
        assert_eq!(new_accepted.load(Ordering::SeqCst), 1);
        direct.point_at("127.0.0.1", new);
        assert_eq!(
            direct.open.load(Ordering::SeqCst),
            1,
            "the same primary again: kept"
        );
    }

    #[tokio::test]
    async fn past_the_bound_a_read_is_left_to_fred() {
        let (port, _) = scripted(Script::Slow).await;
        let direct = pool(port, 1, false);
        let (a, b) = tokio::join!(direct.get("k"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            direct.get("k").await
        });
        value(a);
        assert!(matches!(b, Err(Failure::Busy)), "{b:?}");
    }

    #[tokio::test]
    async fn behind_sentinel_a_replica_is_never_read() {
        let (port, _) = scripted(Script::Replica).await;
        let direct = pool(port, 4, true);
        assert!(matches!(direct.get("k").await, Err(Failure::Busy)));
        assert_eq!(direct.open.load(Ordering::SeqCst), 0);
        let (port, _) = scripted(Script::Primary).await;
        let direct = pool(port, 4, true);
        value(direct.get("k").await);
    }

    #[tokio::test]
    async fn no_server_known_yet_means_fred_reads() {
        let direct = Direct::new(Login::default(), Duration::from_secs(1), 4);
        assert!(matches!(direct.get("k").await, Err(Failure::Busy)));
    }

    #[test]
    fn get_is_written_as_a_resp_array_of_bulk_strings() {
        let first: &[u8] = b"*2\r\n$3\r\nGET\r\n$13\r\nsg:session:ab\r\n";
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"sg:session:ab"]);
        assert_eq!(out, first);
        // Appended; a key of 300 bytes has a three-digit length.
        let key = [b'k'; 300];
        encode(&mut out, &[b"GET", &key]);
        let second = &out[first.len()..];
        assert!(second.starts_with(b"*2\r\n$3\r\nGET\r\n$300\r\nkkk"));
        assert!(second.ends_with(b"kkk\r\n"));
        assert_eq!(second.len(), 13 + 6 + 300 + 2);
    }

    #[test]
    fn only_a_master_role_is_a_primary() {
        let role = |name: &'static str| {
            BytesFrame::Array(vec![
                BytesFrame::BulkString(Bytes::from_static(name.as_bytes())),
                BytesFrame::Integer(0),
            ])
        };
        assert!(is_primary(&role("master")));
        assert!(!is_primary(&role("slave")));
        assert!(!is_primary(&role("sentinel")));
        assert!(!is_primary(&BytesFrame::Error("NOPERM".into())));
    }

    #[test]
    fn replies_other_than_ok_fail_the_handshake() {
        assert!(expect_ok(&BytesFrame::SimpleString("OK".into()), "AUTH").is_ok());
        let refused = expect_ok(&BytesFrame::Error("WRONGPASS invalid".into()), "AUTH");
        assert_eq!(refused.unwrap_err(), "AUTH: WRONGPASS invalid");
        assert!(expect_ok(&BytesFrame::Null, "SELECT").is_err());
    }
}
