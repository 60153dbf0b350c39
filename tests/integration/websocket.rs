//! WebSocket upgrades through the gateway: the upgrade request is authenticated like any
//! other (Bearer token added, 401 without a session), and after `101 Switching
//! Protocols` bytes flow both ways through the tunnel.
//!
//! The upstream is a raw TCP server that reads the request head, answers 101 only when
//! it carries `Authorization: Bearer`, then echoes every byte. The client speaks raw
//! HTTP/1.1 over a `TcpStream`, with RFC 6455's sample key and accept value.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::harness::{
    GatewayBuilder, RedisServer, Route, assert_refusal, cookie_header, new_cookie, raw,
    session_key, verify,
};

/// RFC 6455 section 1.3's sample `Sec-WebSocket-Key` and its `Sec-WebSocket-Accept`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A raw upgrade-and-echo upstream.
struct WsUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WsUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (Arc::clone(&heads), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let h = Arc::clone(&h);
                std::thread::spawn(move || serve(conn, &h));
            }
        });
        WsUpstream {
            addr,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().clone()
    }
}

fn serve(mut conn: TcpStream, heads: &Mutex<Vec<String>>) {
    let Ok(head) = raw::read_head(&mut conn) else {
        return;
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    heads.lock().push(head.clone());
    let lower = head.to_ascii_lowercase();
    let authorized = lower
        .lines()
        .any(|l| l.starts_with("authorization: bearer "));
    if !authorized || !lower.contains("upgrade: websocket") {
        let _ = conn.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
    );
    if conn.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn upgrade_request(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: {}\r\n",
        crate::harness::ALLOWED_ORIGIN
    );
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {}\r\n", cookie_header(c)));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[test]
fn websocket_upgrade_is_authenticated_and_then_tunnels_bytes() {
    let redis = RedisServer::start();
    let ws = WsUpstream::start();
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("chat", "/ws", &[ws.addr]))
        .start();
    let cookie = new_cookie();
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &crate::harness::session_json("user-ws"),
        60,
    );

    let mut stream = raw::connect(gw.addr()).expect("connect");
    stream
        .write_all(&upgrade_request(gw.addr(), "/ws/chat", Some(&cookie)))
        .expect("write");
    let head = raw::read_head(&mut stream).expect("response head");
    let (status, headers) = raw::parse_head(&head).expect("parse head");
    assert_eq!(status, 101, "{}", String::from_utf8_lossy(&head));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "upgrade" && v.eq_ignore_ascii_case("websocket")),
        "{headers:?}"
    );

    for payload in [
        b"hello over the tunnel".to_vec(),
        (0..=255u8).cycle().take(64 * 1024).collect::<Vec<u8>>(),
    ] {
        stream.write_all(&payload).expect("write payload");
        let mut back = vec![0u8; payload.len()];
        stream.read_exact(&mut back).expect("read echo");
        assert!(back == payload, "tunnelled bytes must come back unchanged");
    }

    let heads = ws.heads();
    assert_eq!(heads.len(), 1, "{heads:#?}");
    let token = heads[0]
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: Bearer ")
                .or_else(|| l.strip_prefix("Authorization: Bearer "))
        })
        .expect("Bearer on the upgrade request")
        .trim()
        .to_owned();
    let jwks =
        crate::harness::fetch_jwks(&crate::harness::client(), &gw.url("/.well-known/jwks.json"));
    assert_eq!(
        verify(&token, &jwks, "chat", gw.issuer()).str("sub"),
        "user-ws"
    );
    assert!(
        !heads[0].contains(&cookie),
        "the session cookie must not reach the upstream"
    );
}

#[test]
fn websocket_upgrade_without_session_is_401_and_never_reaches_the_upstream() {
    let redis = RedisServer::start();
    let ws = WsUpstream::start();
    let gw = GatewayBuilder::new(&redis.url())
        .route(Route::new("chat", "/ws", &[ws.addr]))
        .start();
    for cookie in [None, Some(new_cookie())] {
        let resp = raw::send(
            gw.addr(),
            &upgrade_request(gw.addr(), "/ws/chat", cookie.as_deref()),
        )
        .expect("response");
        assert_refusal(&resp, 401, "unauthenticated");
    }
    assert!(ws.heads().is_empty(), "the upstream saw: {:#?}", ws.heads());
}
