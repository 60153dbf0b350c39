//! [`HeldUpstream`]: an HTTP/1.1 upstream that holds every request until the test
//! releases it, so a test can keep a request in flight across a signal (graceful
//! shutdown) for exactly as long as it needs, without sleeping.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The body every released request gets.
pub(crate) const HELD_BODY: &str = "released";

/// The longest a request is held if the test never releases it.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    arrived: AtomicUsize,
    answered: AtomicUsize,
    stop: AtomicBool,
}

/// A running held upstream on a loopback port.
pub(crate) struct HeldUpstream {
    addr: SocketAddr,
    gate: Arc<Gate>,
    thread: Option<JoinHandle<()>>,
}

impl HeldUpstream {
    /// Starts the upstream; requests are held until [`HeldUpstream::release`].
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind held upstream");
        let addr = listener.local_addr().expect("local_addr");
        let gate = Arc::new(Gate::default());
        let thread_gate = Arc::clone(&gate);
        let thread = std::thread::Builder::new()
            .name("held-upstream".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if thread_gate.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let gate = Arc::clone(&thread_gate);
                    std::thread::spawn(move || serve(conn, &gate));
                }
            })
            .expect("spawn held upstream");
        HeldUpstream {
            addr,
            gate,
            thread: Some(thread),
        }
    }

    /// Its address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests have arrived (held or answered).
    pub(crate) fn arrived(&self) -> usize {
        self.gate.arrived.load(Ordering::SeqCst)
    }

    /// How many requests were answered.
    pub(crate) fn answered(&self) -> usize {
        self.gate.answered.load(Ordering::SeqCst)
    }

    /// Lets every held request (and every later one) through.
    pub(crate) fn release(&self) {
        *self.gate.open.lock() = true;
        self.gate.opened.notify_all();
    }
}

impl Drop for HeldUpstream {
    fn drop(&mut self) {
        self.gate.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut conn: TcpStream, gate: &Gate) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    gate.arrived.fetch_add(1, Ordering::SeqCst);
    {
        let mut open = gate.open.lock();
        if !*open {
            let _ = gate
                .opened
                .wait_while_for(&mut open, |open| !*open, HOLD_AT_MOST);
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{HELD_BODY}",
        HELD_BODY.len()
    );
    if conn.write_all(response.as_bytes()).is_ok() {
        gate.answered.fetch_add(1, Ordering::SeqCst);
    }
}
