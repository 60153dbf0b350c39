//! [`FaultProxy`]: a TCP proxy on a loopback port that a test puts between the gateway
//! and something it talks to (Redis, an upstream), to inject network faults on demand.
//!
//! It forwards bytes both ways, chunk by chunk, and can at any moment:
//!
//! - add latency: every chunk, in both directions and on every connection, is delivered
//!   that much later than it arrived (a delay line, like `netem delay`: chunks keep their
//!   order and are not serialized behind each other's delay);
//! - blackhole the existing connections: they stop forwarding anything, in either
//!   direction, but stay open (the peer sees a silent connection, as behind a dead NAT or
//!   a partition), while connections accepted afterwards pass normally;
//! - reset every existing connection (both sides get a TCP RST);
//! - treat new connections by a [`NewConns`] policy: pass them, refuse them (the listener
//!   is closed, so connecting fails with `ECONNREFUSED`), reset them at once, or accept
//!   them and never forward anything (a hung peer);
//! - trip on a byte pattern ([`FaultProxy::trip_on`]): when a client sends a chunk that
//!   contains it, that chunk is forwarded but the connection's replies are held back
//!   until [`FaultProxy::resume`], so a test can act (e.g. kill the client) at exactly the
//!   moment a command reached the server and before its client learned the answer.
//!
//! It runs on a current-thread tokio runtime in a background thread, and stops (every
//! connection closed) on [`Drop`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

/// What the proxy does with connections it accepts from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NewConns {
    /// Connect each one to the target and forward (the default).
    Pass,
    /// Close the listening socket: connecting fails with `ECONNREFUSED`.
    Refuse,
    /// Accept, then reset at once.
    Reset,
    /// Accept and read, but never connect to the target nor answer.
    Hang,
}

/// The request a client sent that tripped the wire.
#[derive(Clone, Debug)]
pub(crate) struct Trip {
    /// The chunk that contained the pattern.
    pub(crate) chunk: Vec<u8>,
}

/// A running fault proxy.
pub(crate) struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    policy: watch::Sender<NewConns>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One connection's controls, shared by its task and the proxy's handle.
struct Control {
    id: u64,
    /// Forward nothing more, either way (the connection stays open).
    blackholed: AtomicBool,
    /// Hold server-to-client data until resumed (a tripped wire).
    held: AtomicBool,
    /// Woken to reset the connection.
    reset: Notify,
    /// Woken when held data may flow again.
    resumed: Notify,
}

#[derive(Default)]
struct Shared {
    latency_us: AtomicU64,
    accepted: AtomicUsize,
    next_id: AtomicU64,
    conns: Mutex<Vec<Arc<Control>>>,
    trip_pattern: Mutex<Option<Vec<u8>>>,
    trips: Mutex<Vec<Trip>>,
}

impl FaultProxy {
    /// Starts a proxy to `target` on a free loopback port, passing everything.
    ///
    /// # Panics
    /// If it cannot bind or start its thread.
    pub(crate) fn start(target: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared::default());
        let (policy, policy_rx) = watch::channel(NewConns::Pass);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("faultproxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fault proxy runtime");
                rt.block_on(accept_loop(
                    listener,
                    addr,
                    target,
                    thread_shared,
                    policy_rx,
                    rx,
                ));
            })
            .expect("spawn fault proxy");
        FaultProxy {
            addr,
            shared,
            policy,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The address clients connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT/0` through the proxy, for a Redis target.
    pub(crate) fn redis_url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// How many connections it has accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Delivers every chunk, both ways, `latency` after it arrived (zero: at once).
    pub(crate) fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::SeqCst);
    }

    /// Sets what happens to connections accepted from now on.
    pub(crate) fn set_new(&self, policy: NewConns) {
        self.policy.send_replace(policy);
    }

    /// Stops forwarding on every connection open now, without closing any; connections
    /// accepted afterwards are not affected. Returns how many were blackholed.
    pub(crate) fn blackhole_existing(&self) -> usize {
        let conns = self.shared.conns.lock();
        for c in conns.iter() {
            c.blackholed.store(true, Ordering::SeqCst);
        }
        conns.len()
    }

    /// How many blackholed connections are still open (neither side closed them).
    pub(crate) fn blackholed_open(&self) -> usize {
        self.shared
            .conns
            .lock()
            .iter()
            .filter(|c| c.blackholed.load(Ordering::SeqCst))
            .count()
    }

    /// Resets every connection open now (both sides get an RST). Returns how many.
    pub(crate) fn reset_all(&self) -> usize {
        let conns = std::mem::take(&mut *self.shared.conns.lock());
        for c in &conns {
            c.reset.notify_one();
        }
        conns.len()
    }

    /// Passes new connections and removes the latency (blackholed connections stay so).
    pub(crate) fn heal(&self) {
        self.set_latency(Duration::ZERO);
        self.set_new(NewConns::Pass);
    }

    /// Arms the wire: the next chunks a client sends that contain `pattern` trip it (see
    /// the module docs). Replaces any earlier pattern.
    pub(crate) fn trip_on(&self, pattern: &[u8]) {
        *self.shared.trip_pattern.lock() = Some(pattern.to_vec());
    }

    /// Disarms the wire (trips already recorded stay held until [`FaultProxy::resume`]).
    pub(crate) fn disarm(&self) {
        *self.shared.trip_pattern.lock() = None;
    }

    /// Every trip so far.
    pub(crate) fn trips(&self) -> Vec<Trip> {
        self.shared.trips.lock().clone()
    }

    /// Lets the held replies of every tripped connection flow again.
    pub(crate) fn resume(&self) {
        for c in self.shared.conns.lock().iter() {
            if c.held.swap(false, Ordering::SeqCst) {
                c.resumed.notify_one();
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.reset_all();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    mut policy: watch::Receiver<NewConns>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let mut listener = Some(TcpListener::from_std(listener).expect("tokio listener"));
    loop {
        let now = *policy.borrow_and_update();
        if now == NewConns::Refuse {
            listener = None;
        } else if listener.is_none() {
            // Rebind the same port (std sets SO_REUSEADDR); retry briefly if it is busy.
            for _ in 0..100 {
                if let Ok(l) = TcpListener::bind(addr).await {
                    listener = Some(l);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            changed = policy.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = accept(listener.as_ref()) => {
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                match now {
                    NewConns::Reset | NewConns::Refuse => abort(&client),
                    NewConns::Hang => {
                        let ctl = register(&shared);
                        tokio::spawn(hang(client, ctl, Arc::clone(&shared)));
                    }
                    NewConns::Pass => {
                        let ctl = register(&shared);
                        tokio::spawn(proxy(client, target, ctl, Arc::clone(&shared)));
                    }
                }
            }
        }
    }
}

/// Accepts on `listener`, or never when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn register(shared: &Shared) -> Arc<Control> {
    let ctl = Arc::new(Control {
        id: shared.next_id.fetch_add(1, Ordering::SeqCst),
        blackholed: AtomicBool::new(false),
        held: AtomicBool::new(false),
        reset: Notify::new(),
        resumed: Notify::new(),
    });
    shared.conns.lock().push(Arc::clone(&ctl));
    ctl
}

fn unregister(shared: &Shared, ctl: &Control) {
    shared.conns.lock().retain(|c| c.id != ctl.id);
}

/// Sets SO_LINGER to zero, so that dropping the socket sends an RST.
fn abort(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn hang(mut client: TcpStream, ctl: Arc<Control>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            () = ctl.reset.notified() => {
                abort(&client);
                break;
            }
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    unregister(&shared, &ctl);
}

async fn proxy(mut client: TcpStream, target: SocketAddr, ctl: Arc<Control>, shared: Arc<Shared>) {
    let connected = tokio::select! {
        () = ctl.reset.notified() => None,
        c = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)) => c.ok().and_then(Result::ok),
    };
    let Some(mut server) = connected else {
        abort(&client);
        unregister(&shared, &ctl);
        return;
    };
    let _ = server.set_nodelay(true);
    let reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(cr, sw, &ctl, &shared, true);
        let down = pump(sr, cw, &ctl, &shared, false);
        tokio::select! {
            () = ctl.reset.notified() => true,
            _ = async { tokio::join!(up, down) } => false,
        }
    };
    if reset {
        abort(&client);
        abort(&server);
    }
    unregister(&shared, &ctl);
}

/// Forwards one direction through a delay line until EOF or an error. `upstream`: from
/// the client to the target (where the trip wire looks).
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    ctl: &Control,
    shared: &Shared,
    upstream: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            let due =
                Instant::now() + Duration::from_micros(shared.latency_us.load(Ordering::SeqCst));
            if n == 0 {
                let _ = tx.send((due, None));
                return;
            }
            if ctl.blackholed.load(Ordering::SeqCst) {
                continue;
            }
            let chunk = buf[..n].to_vec();
            if upstream && tripped(shared, &chunk) {
                // Hold the replies before the request can reach the server.
                ctl.held.store(true, Ordering::SeqCst);
                shared.trips.lock().push(Trip {
                    chunk: chunk.clone(),
                });
            }
            if tx.send((due, Some(chunk))).is_err() {
                return;
            }
        }
    };
    let writer = async {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let Some(chunk) = chunk else {
                let _ = to.shutdown().await;
                return;
            };
            if !upstream {
                while ctl.held.load(Ordering::SeqCst) {
                    let resumed = ctl.resumed.notified();
                    if !ctl.held.load(Ordering::SeqCst) {
                        break;
                    }
                    resumed.await;
                }
            }
            if ctl.blackholed.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

fn tripped(shared: &Shared, chunk: &[u8]) -> bool {
    shared
        .trip_pattern
        .lock()
        .as_deref()
        .is_some_and(|p| !p.is_empty() && chunk.windows(p.len()).any(|w| w == p))
}
