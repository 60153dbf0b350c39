//! Long-lived connections (SPEC "Long-lived connections"): WebSockets and streamed
//! responses live under the session that opened them, and end when it does.
//!
//! [`ends`] is what they wait for: the session's watch ([`exchange::Exchange::watch`])
//! or the route's `max_connection_lifetime`. WebSockets run in the gateway's own tunnel
//! ([`crate::tunnel`]), which waits for it in its loop. Streamed responses (server-sent
//! events, downloads without a length) stay in Pingora's proxy loop, which waits only on
//! the two sockets — body filters run only when bytes flow, so nothing inside it can end
//! an idle stream. For those, [`Watched`] runs a task that, when [`ends`] resolves,
//! `shutdown(SHUT_RDWR)`s the client socket: Pingora's loop then reads end-of-stream,
//! finishes, and drops the upstream connection, so both sides close, and the response ends
//! without its final chunk (an abort, never a clean end). An HTTP/2 stream shares its
//! connection with others: it is ended at its next chunk instead.
//!
//! **The descriptor is never one of another connection.** The task acts on the socket's
//! descriptor number only under `Shared`'s lock and while it is armed; the request's
//! `logging` hook (which Pingora runs before it releases the connection) disarms it, and
//! dropping the request context does too. As a second guard the kernel's socket cookie
//! (`SO_COOKIE`, unique for the life of the system) is checked before acting.

use std::os::unix::io::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::Exchange;
use exchange::watch::{Bounds, Ended};
use nix::sys::socket::{MsgFlags, Shutdown, send, shutdown};
use parking_lot::Mutex;
use pingora::protocols::l4::ext::get_socket_cookie;
use tokio::task::JoinHandle;

/// Who ended a long-lived connection (a bounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its session was deleted or revoked.
    Revoked,
    /// Its session or its key expired.
    Expired,
    /// Redis could not confirm the session within the route's bound.
    Unavailable,
    /// `route.max_connection_lifetime` passed.
    Lifetime,
    /// The client closed it.
    Client,
    /// The upstream closed it.
    Upstream,
}

impl Reason {
    /// The metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Revoked => "revoked",
            Reason::Expired => "expired",
            Reason::Unavailable => "unavailable",
            Reason::Lifetime => "lifetime",
            Reason::Client => "client",
            Reason::Upstream => "upstream",
        }
    }

    /// The WebSocket Close code and reason sent when the gateway ends it.
    pub fn close(self) -> Option<(u16, &'static str)> {
        match self {
            Reason::Revoked | Reason::Expired => Some((1008, "session ended")),
            Reason::Unavailable => Some((1013, "try again later")),
            Reason::Lifetime => Some((1001, "connection lifetime")),
            Reason::Client | Reason::Upstream => None,
        }
    }
}

impl From<Ended> for Reason {
    fn from(ended: Ended) -> Self {
        match ended {
            Ended::Revoked => Reason::Revoked,
            Ended::Expired => Reason::Expired,
            Ended::Unavailable => Reason::Unavailable,
        }
    }
}

/// How long the upstream must have sent nothing before a Close frame may be written
/// between its frames: Pingora writes what a filter saw at once, so after this the last
/// frame has left the gateway.
const QUIET_BEFORE_CLOSE: Duration = Duration::from_millis(20);

/// A WebSocket Close frame with `code` and `reason`: unmasked (server to client), or
/// masked with `mask` (client to server, as RFC 6455 requires).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x88);
    // At most 125 bytes: a one-byte length.
    let len = u8::try_from(payload.len()).unwrap_or(125);
    match mask {
        None => frame.push(len),
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

/// Where the upstream's WebSocket byte stream is: at a frame boundary or inside a frame.
#[derive(Debug, Default)]
pub struct Frames {
    /// Bytes of the current frame's header seen so far (a header is at most 14 bytes).
    header: Vec<u8>,
    /// Bytes of the current frame's payload still to come.
    payload_left: u64,
}

impl Frames {
    /// Follows `bytes` sent to the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(payload) = header_complete(&self.header) {
                self.header.clear();
                self.payload_left = payload;
            }
        }
    }

    /// Whether the stream is between two frames.
    pub fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.payload_left == 0
    }
}

/// The payload length once `header` is a whole frame header, else `None`.
fn header_complete(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let masked = second & 0x80 != 0;
    let (len, ext) = match second & 0x7f {
        126 => (None, 2),
        127 => (None, 8),
        n => (Some(u64::from(n)), 0),
    };
    let need = 2 + ext + if masked { 4 } else { 0 };
    if header.len() < need {
        return None;
    }
    Some(len.unwrap_or_else(|| {
        header[2..2 + ext]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }))
}

/// What the watching task and the request share.
struct State {
    /// The task may act on the socket.
    armed: bool,
    /// The client socket and its kernel cookie (HTTP/1); `None` for an HTTP/2 stream.
    socket: Option<(RawFd, u64)>,
    /// Whether the client connection is TLS (no Close frame can be injected then).
    tls: bool,
    /// The upstream's frames, for a WebSocket.
    frames: Option<Frames>,
    /// When the upstream last sent bytes to the client.
    last_sent: Instant,
    /// Why the gateway ended it, if it did.
    ended: Option<Reason>,
    /// The upstream finished its side.
    upstream_done: bool,
}

/// Shared between a connection's request and its watching task.
struct Shared(Mutex<State>);

impl Shared {
    /// Ends the connection for `reason`, if the request still owns the socket.
    fn end(&self, reason: Reason) {
        let mut st = self.0.lock();
        if !st.armed {
            return;
        }
        st.armed = false;
        st.ended = Some(reason);
        let Some((fd, cookie)) = st.socket else {
            return;
        };
        // The same socket, not a later one that reused its number.
        if get_socket_cookie(fd).ok() != Some(cookie) {
            return;
        }
        if let (Some(frames), Some((code, text))) = (&st.frames, reason.close())
            && !st.tls
            && frames.at_boundary()
            && st.last_sent.elapsed() >= QUIET_BEFORE_CLOSE
        {
            // Best effort: a full send buffer drops it (MSG_DONTWAIT) and the close is cut.
            let _ = send(
                fd,
                &close_frame(code, text, None),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
        let _ = shutdown(fd, Shutdown::Both);
    }
}

/// Resolves when a long-lived connection must end: its session (`cookie`, when it has
/// one) stops being valid, or `lifetime` passes. Never resolves otherwise.
pub async fn ends(
    exchange: &Exchange,
    cookie: Option<&str>,
    bounds: Bounds,
    lifetime: Option<Duration>,
) -> Reason {
    let lifetime = async {
        match lifetime {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let session = async {
        match cookie {
            Some(cookie) => Reason::from(exchange.watch(cookie, bounds).await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        reason = session => reason,
        () = lifetime => Reason::Lifetime,
    }
}

/// A long-lived connection under watch, held by the request context.
pub struct Watched {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    started: Instant,
}

/// What a connection needs to be watched.
pub struct Watch<'a> {
    /// The session cookie it opened with.
    pub cookie: &'a str,
    /// The client socket's descriptor and kernel cookie (`None` for an HTTP/2 stream).
    pub socket: Option<(RawFd, u64)>,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Whether it is a WebSocket (after a 101).
    pub websocket: bool,
    /// The route's bounds.
    pub bounds: Bounds,
    /// `route.max_connection_lifetime`.
    pub lifetime: Option<Duration>,
}

impl Watched {
    /// Starts watching: a task that ends the connection when the session does, or when
    /// its lifetime passes.
    pub fn start(exchange: Arc<Exchange>, watch: Watch<'_>) -> Self {
        let shared = Arc::new(Shared(Mutex::new(State {
            armed: true,
            socket: watch.socket,
            tls: watch.tls,
            frames: watch.websocket.then(Frames::default),
            last_sent: Instant::now(),
            ended: None,
            upstream_done: false,
        })));
        let (task_shared, cookie, bounds, lifetime) = (
            shared.clone(),
            watch.cookie.to_owned(),
            watch.bounds,
            watch.lifetime,
        );
        let task = tokio::spawn(async move {
            let reason = ends(&exchange, Some(&cookie), bounds, lifetime).await;
            task_shared.end(reason);
        });
        Self {
            shared,
            task,
            started: Instant::now(),
        }
    }

    /// Why the gateway ended it, once it has.
    pub fn ended(&self) -> Option<Reason> {
        self.shared.0.lock().ended
    }

    /// Follows bytes the upstream sends to the client (`done`: its side ended).
    pub fn sent(&self, bytes: &[u8], done: bool) {
        let mut st = self.shared.0.lock();
        if let Some(frames) = &mut st.frames {
            frames.feed(bytes);
        }
        if !bytes.is_empty() {
            st.last_sent = Instant::now();
        }
        st.upstream_done |= done;
    }

    /// Stops watching (before Pingora releases the connection); says who ended it and
    /// how long it lived. `client_failed`: the request ended on a client-side error.
    pub fn finish(self, client_failed: bool) -> (Reason, Duration) {
        let reason = {
            let mut st = self.shared.0.lock();
            st.armed = false;
            match st.ended {
                Some(reason) => reason,
                None if st.upstream_done && !client_failed => Reason::Upstream,
                None => Reason::Client,
            }
        };
        self.task.abort();
        (reason, self.started.elapsed())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // A request that ends without `logging` (a panic, a cancelled task) still never
        // leaves an armed watch behind.
        self.shared.0.lock().armed = false;
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_followed_across_chunks() {
        let mut f = Frames::default();
        assert!(f.at_boundary());
        // A text frame "hi", then a 300-byte binary frame split oddly, then a masked one.
        f.feed(&[0x81, 0x02, b'h']);
        assert!(!f.at_boundary());
        f.feed(b"i");
        assert!(f.at_boundary());
        let mut big = vec![0x82, 126, 0x01];
        f.feed(&big);
        assert!(!f.at_boundary());
        big = vec![0x2c];
        big.extend(std::iter::repeat_n(7u8, 299));
        f.feed(&big);
        assert!(!f.at_boundary());
        f.feed(&[7]);
        assert!(f.at_boundary());
        f.feed(&[0x81, 0x83, 1, 2, 3, 4, 9, 9, 9]);
        assert!(f.at_boundary());
        let mut long = vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        long.extend(std::iter::repeat_n(0u8, 65_536));
        f.feed(&long);
        assert!(f.at_boundary());
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        assert_eq!(
            close_frame(1008, "session ended", None),
            [&[0x88, 15, 0x03, 0xf0][..], b"session ended"].concat()
        );
        assert_eq!(close_frame(1001, "", None).len(), 4);
        assert_eq!(close_frame(1001, &"x".repeat(500), None).len(), 127);
        let masked = close_frame(1008, "session ended", Some([1, 2, 3, 4]));
        assert_eq!(&masked[..6], &[0x88, 0x80 | 15, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, [&[0x03, 0xf0][..], b"session ended"].concat());
        assert_eq!(Reason::Unavailable.close(), Some((1013, "try again later")));
        assert_eq!(Reason::Client.close(), None);
    }
}
