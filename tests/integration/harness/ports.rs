//! Free loopback ports and addresses nothing listens on.
//!
//! A port is found by binding `127.0.0.1:0`, reading the port the kernel chose and
//! dropping the listener. Another process may take it before we use it, so callers that
//! bind it (redis-server, the gateway) retry with a fresh port when it is in use.

use std::net::{SocketAddr, TcpListener};

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A loopback address that nothing listens on (connections to it are refused).
pub(crate) fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
