//! [`RedisServer`]: a throwaway `redis-server` on a free loopback port, killed on drop.
//!
//! Modelled on redis-rs's `redis-test` server: no persistence (`--save ""`,
//! `--appendonly no`), its own temp dir, readiness by polling `PING`, kill + wait on
//! [`Drop`], and its log printed when the test thread panics. Commands go through
//! `redis-cli` so that the tests talk to Redis with nothing in common with the gateway's
//! client. Sessions are written as literal JSON, as the SPEC's schema says, so that a drift
//! in the gateway's DTO fails a test instead of agreeing with itself.
//! [`RedisServer::start_tls`] serves TLS only (`--port 0 --tls-port P`), for `rediss://`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use super::eventually::pause;
use super::ports::{free_port, hold};

/// The SPEC's default session key prefix.
pub(crate) const DEFAULT_PREFIX: &str = "sg:session:";

/// The Redis key of a session: `prefix + lowercase hex SHA-256(cookie value)` (SPEC,
/// "Session schema in Redis"), computed here independently of the gateway's code.
pub(crate) fn session_key(prefix: &str, cookie: &str) -> String {
    format!("{prefix}{}", sha256_hex(cookie.as_bytes()))
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A running `redis-server`.
pub(crate) struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// While stopped, the port held ([`hold`]): connecting is refused, as with no server
    /// at all, and the kernel gives the port to no one else (a test's free port, an
    /// outgoing connection's local one) before [`RedisServer::restart`].
    held: Option<socket2::Socket>,
    dir: TempDir,
    tls: Option<Tls>,
    extra: Vec<String>,
}

/// The PEM files of a TLS-only server: its certificate and key, and the CA that signed
/// them (which `redis-cli` trusts).
#[derive(Clone, Debug)]
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING` (at most 10 s).
    ///
    /// # Panics
    /// If no server could be started.
    pub(crate) fn start() -> Self {
        Self::start_inner(None, &[])
    }

    /// [`RedisServer::start`] with extra `redis-server` arguments (e.g.
    /// `["--cluster-enabled", "yes"]`, or `["--replicaof", "127.0.0.1", "6379"]`).
    ///
    /// # Panics
    /// If no server could be started.
    pub(crate) fn start_with(extra: &[&str]) -> Self {
        Self::start_inner(None, extra)
    }

    /// Starts a server that speaks only TLS, with `cert`/`key` (PEM, signed by `ca`);
    /// clients are not asked for certificates. Its [`RedisServer::url`] is `rediss://`.
    ///
    /// # Panics
    /// If no server could be started.
    pub(crate) fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        let tls = Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        };
        Self::start_inner(Some(tls), &[])
    }

    fn start_inner(tls: Option<Tls>, extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sg-redis")
            .tempdir()
            .expect("temp dir");
        let mut server = RedisServer {
            port: 0,
            child: None,
            held: None,
            dir,
            tls,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        let mut last_log = String::new();
        for _ in 0..5 {
            // A port taken between `free_port` and redis-server's bind: try another.
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) => {
                    last_log = log;
                    server.kill();
                }
            }
        }
        panic!("could not start redis-server; last log:\n{last_log}");
    }

    /// The port it listens on (loopback).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` for a TLS server).
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli -p PORT` (with `--tls --cacert CA` for a TLS server).
    fn redis_cli(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("-p").arg(self.port.to_string());
        if let Some(tls) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        cmd
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its stdout, trimmed.
    ///
    /// # Panics
    /// If redis-cli cannot run or exits non-zero.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = self
            .redis_cli()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `SET key '<json>' EX ttl_secs`, exactly the SPEC's way of writing a session.
    pub(crate) fn set_session(&self, key: &str, json: &str, ttl_secs: u64) {
        let reply = self.cli(&["SET", key, json, "EX", &ttl_secs.to_string()]);
        assert_eq!(reply, "OK", "SET {key} failed");
    }

    /// `SET key <value> EX ttl_secs` with the value sent on stdin (`redis-cli -x`), for
    /// values too large for one command-line argument.
    pub(crate) fn set_large(&self, key: &str, value: &[u8], ttl_secs: u64) {
        let mut child = self
            .redis_cli()
            .args(["-x", "SET", key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run redis-cli -x");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(value)
            .expect("write value");
        let out = child.wait_with_output().expect("redis-cli -x");
        assert!(
            out.status.success(),
            "redis-cli -x SET failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(self.cli(&["EXPIRE", key, &ttl_secs.to_string()]), "1");
    }

    /// `DEL key`.
    pub(crate) fn del(&self, key: &str) {
        self.cli(&["DEL", key]);
    }

    /// Whether `key` exists.
    pub(crate) fn exists(&self, key: &str) -> bool {
        self.cli(&["EXISTS", key]) == "1"
    }

    /// A numeric field of `INFO`, e.g. `info_u64("stats", "keyspace_misses")`.
    pub(crate) fn info_u64(&self, section: &str, field: &str) -> u64 {
        let info = self.cli(&["INFO", section]);
        info.lines()
            .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO {section} has no numeric {field}:\n{info}"))
    }

    /// How many key lookups the server has answered (`keyspace_hits + keyspace_misses`):
    /// every read of a session key, hit or miss, moves it.
    pub(crate) fn key_lookups(&self) -> u64 {
        self.info_u64("stats", "keyspace_hits") + self.info_u64("stats", "keyspace_misses")
    }

    /// The server's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `"STOP"`, `"CONT"`) to the server process.
    ///
    /// # Panics
    /// If the server is not running or `kill` fails.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.pid().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Stops the server (kill + wait), keeping the port for [`RedisServer::restart`].
    pub(crate) fn stop(&mut self) {
        self.kill();
        self.held = hold(self.port);
    }

    /// Starts the server again on the same port (with an empty dataset).
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.held = None;
        let mut result = self.spawn_and_wait();
        // A socket that took the port in the instant it was free (an outgoing
        // connection's ephemeral port) is gone within moments: try again.
        for _ in 0..20 {
            match &result {
                Err(log) if log.contains("Address already in use") => {
                    pause(Duration::from_millis(100));
                    result = self.spawn_and_wait();
                }
                _ => break,
            }
        }
        if let Err(log) = result {
            panic!("redis-server did not restart on port {}:\n{log}", self.port);
        }
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open redis log");
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "redis-server exited with {status}:\n{}",
                    self.log()
                ));
            }
            let pong = self
                .redis_cli()
                .arg("PING")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
                .unwrap_or(false);
            if pong {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server did not answer PING within 10 s:\n{}",
                    self.log()
                ));
            }
            pause(Duration::from_millis(15));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- redis-server log (port {}) -----\n{}",
                self.port,
                self.log()
            );
        }
    }
}
