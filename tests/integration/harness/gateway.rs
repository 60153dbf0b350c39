//! [`GatewayBuilder`] and [`Gateway`]: the real `sessiongate` binary on free ports.
//!
//! The builder writes a TOML config in the SPEC's schema into a temp dir (file key store
//! in the same dir, `server.grace_period = "1s"` so that shutdown is quick), spawns
//! `sessiongate run --config PATH` with stdout and stderr captured to files, and polls
//! the admin listener's `/readyz` until it answers 200 (at most 20 s; on timeout it
//! panics with the captured logs). On [`Drop`] the gateway gets SIGINT, then SIGKILL if
//! it is still alive 5 s later, and is waited for; the logs are printed when the test
//! thread is panicking. Dropping a gateway also checks its logs for every secret the
//! run has recorded so far (cookies, tokens, KEKs, its private keys: see `secrets`), so
//! every test doubles as a log-hygiene test. Each gateway has its own upgrade socket in
//! its temp dir; [`Gateway::upgrade`] replaces the process with a new one the way an
//! operator upgrades the binary.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::eventually::pause;
use super::ports::free_port;
use super::raw;
use super::redis::DEFAULT_PREFIX;
use super::secrets;

/// The path to the binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

/// The SPEC's default session cookie name.
pub(crate) const COOKIE_NAME: &str = "__Host-session";

/// The issuer every test config uses unless told otherwise.
pub(crate) const ISSUER: &str = "https://gateway.test";

/// The origin every test config allows unless told otherwise.
pub(crate) const ALLOWED_ORIGIN: &str = "https://app.example.com";

/// One `[[route]]`.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    name: String,
    path_prefix: String,
    host: Option<String>,
    upstreams: Vec<String>,
    audience: Option<String>,
    auth: String,
    critical: bool,
    token_ttl: Option<String>,
    ca_file: Option<String>,
    /// Other keys, written as given.
    extra: Vec<(String, toml::Value)>,
}

impl Route {
    /// A route with `auth = "required"`, not critical, audience defaulted (not written).
    pub(crate) fn new(name: &str, path_prefix: &str, upstreams: &[SocketAddr]) -> Self {
        Route {
            name: name.to_owned(),
            path_prefix: path_prefix.to_owned(),
            host: None,
            upstreams: upstreams.iter().map(ToString::to_string).collect(),
            audience: None,
            auth: "required".to_owned(),
            critical: false,
            token_ttl: None,
            ca_file: None,
            extra: Vec::new(),
        }
    }

    /// Sets any other route key (`connect_timeout`, `read_timeout`,
    /// `max_connection_lifetime`, …).
    pub(crate) fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.extra.push((key.to_owned(), value.into()));
        self
    }

    /// A route whose upstreams are written as given (e.g. `https://localhost:8443`).
    pub(crate) fn with_upstream_urls(name: &str, path_prefix: &str, upstreams: &[&str]) -> Self {
        let mut route = Route::new(name, path_prefix, &[]);
        route.upstreams = upstreams.iter().map(|u| (*u).to_owned()).collect();
        route
    }

    /// Sets `ca_file` (the CA its `https://` upstreams must chain to).
    pub(crate) fn ca_file(mut self, path: &Path) -> Self {
        self.ca_file = Some(path.display().to_string());
        self
    }

    /// Sets `auth` (`"required"`, `"optional"`, `"none"`).
    pub(crate) fn auth(mut self, auth: &str) -> Self {
        auth.clone_into(&mut self.auth);
        self
    }

    /// Sets `critical = true`.
    pub(crate) fn critical(mut self) -> Self {
        self.critical = true;
        self
    }

    /// Sets `audience`.
    pub(crate) fn audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Sets `host`.
    pub(crate) fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// Sets `token_ttl`.
    pub(crate) fn token_ttl(mut self, ttl: &str) -> Self {
        self.token_ttl = Some(ttl.to_owned());
        self
    }

    fn write_toml(&self, out: &mut String) {
        out.push_str("\n[[route]]\n");
        let _ = writeln!(out, "name = {}", q(&self.name));
        let _ = writeln!(out, "path_prefix = {}", q(&self.path_prefix));
        if let Some(host) = &self.host {
            let _ = writeln!(out, "host = {}", q(host));
        }
        let _ = writeln!(out, "upstreams = {}", list(&self.upstreams));
        if let Some(aud) = &self.audience {
            let _ = writeln!(out, "audience = {}", q(aud));
        }
        let _ = writeln!(out, "auth = {}", q(&self.auth));
        let _ = writeln!(out, "critical = {}", self.critical);
        if let Some(ttl) = &self.token_ttl {
            let _ = writeln!(out, "token_ttl = {}", q(ttl));
        }
        if let Some(ca) = &self.ca_file {
            let _ = writeln!(out, "ca_file = {}", q(ca));
        }
        for (key, value) in &self.extra {
            let _ = writeln!(out, "{key} = {value}");
        }
    }
}

/// SPEC's default `keys.redis_prefix`.
pub(crate) const KEYS_PREFIX: &str = "sg:keys:";

/// Builds a config and starts a gateway.
#[derive(Clone, Debug)]
pub(crate) struct GatewayBuilder {
    redis_url: String,
    routes: Vec<Route>,
    key_prefix: String,
    hashed_keys: bool,
    cache_ttl: String,
    subject_field: String,
    claims: Vec<String>,
    forward_cookie: bool,
    login_url: String,
    issuer: String,
    ttl: String,
    algorithm: String,
    publish_ahead: String,
    allowed_origins: Vec<String>,
    overrides: Vec<(String, toml::Value)>,
    /// Keys the builder writes by default that must not be in the file.
    unset: Vec<String>,
    env: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// A config pointing at `redis_url`, with SPEC defaults and no routes.
    pub(crate) fn new(redis_url: &str) -> Self {
        GatewayBuilder {
            redis_url: redis_url.to_owned(),
            routes: Vec::new(),
            key_prefix: DEFAULT_PREFIX.to_owned(),
            hashed_keys: true,
            cache_ttl: "5s".to_owned(),
            subject_field: "sub".to_owned(),
            claims: vec!["roles".to_owned(), "email".to_owned()],
            forward_cookie: false,
            login_url: String::new(),
            issuer: ISSUER.to_owned(),
            ttl: "5m".to_owned(),
            algorithm: "ES256".to_owned(),
            publish_ahead: "30m".to_owned(),
            allowed_origins: vec![ALLOWED_ORIGIN.to_owned()],
            overrides: Vec::new(),
            unset: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `session.format = format`, with the format's own defaults for `cookie`,
    /// `key_prefix` and `subject_field` (the builder's are not written, nor
    /// `hashed_keys`, which belongs to the `sessiongate` format).
    pub(crate) fn format(mut self, format: &str) -> Self {
        self.unset.extend(
            [
                "session.cookie",
                "session.key_prefix",
                "session.hashed_keys",
                "session.subject_field",
            ]
            .map(str::to_owned),
        );
        self.set("session.format", format)
    }

    /// Sets any config key by its dotted path (`"session.push_invalidation"`,
    /// `"keys.rotate_every"`, `"log.format"`), replacing what the builder would write.
    /// Applied after everything else, in call order.
    pub(crate) fn set(mut self, path: &str, value: impl Into<toml::Value>) -> Self {
        self.overrides.push((path.to_owned(), value.into()));
        self
    }

    /// Sets an environment variable of the gateway process.
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `keys.store = "redis"` with `kek` (base64 of 32 bytes) in `SESSIONGATE_KEK`.
    pub(crate) fn redis_keys(self, kek: &str) -> Self {
        self.set("keys.store", "redis")
            .set("keys.dir", "")
            .env("SESSIONGATE_KEK", kek)
    }

    /// Adds a route.
    pub(crate) fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Sets `session.key_prefix`.
    pub(crate) fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.key_prefix);
        self
    }

    /// Sets `session.hashed_keys`.
    pub(crate) fn hashed_keys(mut self, hashed: bool) -> Self {
        self.hashed_keys = hashed;
        self
    }

    /// Sets `session.cache_ttl`.
    pub(crate) fn cache_ttl(mut self, ttl: &str) -> Self {
        ttl.clone_into(&mut self.cache_ttl);
        self
    }

    /// Sets `session.subject_field`.
    pub(crate) fn subject_field(mut self, field: &str) -> Self {
        field.clone_into(&mut self.subject_field);
        self
    }

    /// Sets `session.claims`.
    pub(crate) fn claims(mut self, claims: &[&str]) -> Self {
        self.claims = claims.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// Sets `session.forward_cookie`.
    pub(crate) fn forward_cookie(mut self, forward: bool) -> Self {
        self.forward_cookie = forward;
        self
    }

    /// Sets `session.login_url`.
    pub(crate) fn login_url(mut self, url: &str) -> Self {
        url.clone_into(&mut self.login_url);
        self
    }

    /// Sets `token.ttl`.
    pub(crate) fn token_ttl(mut self, ttl: &str) -> Self {
        ttl.clone_into(&mut self.ttl);
        self
    }

    /// Sets `token.algorithm`.
    pub(crate) fn algorithm(mut self, alg: &str) -> Self {
        alg.clone_into(&mut self.algorithm);
        self
    }

    /// Sets `keys.publish_ahead`.
    pub(crate) fn publish_ahead(mut self, d: &str) -> Self {
        d.clone_into(&mut self.publish_ahead);
        self
    }

    /// Sets `exchange.allowed_origins`.
    pub(crate) fn allowed_origins(mut self, origins: &[&str]) -> Self {
        self.allowed_origins = origins.iter().map(|o| (*o).to_owned()).collect();
        self
    }

    /// The config text for the given listeners and key dir.
    pub(crate) fn toml(&self, listen: SocketAddr, admin: SocketAddr, key_dir: &Path) -> String {
        let mut out = String::new();
        // Each gateway gets its own upgrade socket, next to its key dir.
        let upgrade_sock = key_dir
            .parent()
            .unwrap_or(key_dir)
            .join("upgrade.sock")
            .display()
            .to_string();
        let _ = write!(
            out,
            r#"[server]
listen = {listen}
admin_listen = {admin}
threads = 1
grace_period = "1s"
upgrade_sock = {upgrade_sock}

[redis]
url = {redis}
timeout = "250ms"
pool_size = 2

[session]
cookie = {cookie}
key_prefix = {prefix}
hashed_keys = {hashed_keys}
cache_ttl = {cache_ttl}
subject_field = {subject_field}
claims = {claims}
forward_cookie = {forward_cookie}
login_url = {login_url}

[token]
issuer = {issuer}
ttl = {ttl}
algorithm = {algorithm}

[keys]
store = "file"
dir = {dir}
rotate_every = "24h"
publish_ahead = {publish_ahead}

[exchange]
path = "/auth/token"
allowed_origins = {origins}
"#,
            listen = q(&listen.to_string()),
            admin = q(&admin.to_string()),
            upgrade_sock = q(&upgrade_sock),
            redis = q(&self.redis_url),
            cookie = q(COOKIE_NAME),
            prefix = q(&self.key_prefix),
            hashed_keys = self.hashed_keys,
            cache_ttl = q(&self.cache_ttl),
            subject_field = q(&self.subject_field),
            claims = list(&self.claims),
            forward_cookie = self.forward_cookie,
            login_url = q(&self.login_url),
            issuer = q(&self.issuer),
            ttl = q(&self.ttl),
            algorithm = q(&self.algorithm),
            dir = q(&key_dir.display().to_string()),
            publish_ahead = q(&self.publish_ahead),
            origins = list(&self.allowed_origins),
        );
        for route in &self.routes {
            route.write_toml(&mut out);
        }
        if self.overrides.is_empty() && self.unset.is_empty() {
            return out;
        }
        let mut table: toml::Table = out.parse().expect("the builder writes valid TOML");
        for (path, value) in &self.overrides {
            let mut parts: Vec<&str> = path.split('.').collect();
            let last = parts.pop().expect("a non-empty key path");
            let mut at = &mut table;
            for part in parts {
                at = at
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .unwrap_or_else(|| panic!("{path}: {part} is not a table"));
            }
            at.insert(last.to_owned(), value.clone());
        }
        for path in &self.unset {
            let (section, key) = path.split_once('.').expect("section.key");
            if let Some(t) = table.get_mut(section).and_then(toml::Value::as_table_mut)
                && !self.overrides.iter().any(|(p, _)| p == path)
            {
                t.remove(key);
            }
        }
        toml::to_string(&table).expect("TOML serializes")
    }

    /// Writes the config (with fresh free ports) into `dir`, creating `dir/keys`, and
    /// returns its path and the two listener addresses.
    pub(crate) fn write_config(&self, dir: &Path) -> (PathBuf, SocketAddr, SocketAddr) {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        while admin == listen {
            admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        }
        let key_dir = dir.join("keys");
        std::fs::create_dir_all(&key_dir).expect("create key dir");
        let path = dir.join("sessiongate.toml");
        std::fs::write(&path, self.toml(listen, admin, &key_dir)).expect("write config");
        (path, listen, admin)
    }

    /// Starts the gateway and waits until `/readyz` answers 200.
    ///
    /// # Panics
    /// If it exits or is not ready within 20 s (with its logs in the message).
    pub(crate) fn start(&self) -> Gateway {
        self.start_until("/readyz")
    }

    /// Starts the gateway and waits only until `/healthz` answers 200 (for a gateway
    /// that cannot be ready, e.g. while Redis is down).
    ///
    /// # Panics
    /// If it exits or is not alive within 20 s (with its logs in the message).
    pub(crate) fn start_alive(&self) -> Gateway {
        self.start_until("/healthz")
    }

    fn start_until(&self, probe: &str) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("sg-gateway")
            .tempdir()
            .expect("temp dir");
        let (config_path, listen, admin) = self.write_config(dir.path());
        let mut gw = Gateway {
            child: None,
            generation: 0,
            env: self.env.clone(),
            listen,
            admin,
            config_path,
            issuer: self.issuer.clone(),
            key_prefix: self.key_prefix.clone(),
            keys_prefix: self
                .overrides
                .iter()
                .rev()
                .find(|(k, _)| k == "keys.redis_prefix")
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| KEYS_PREFIX.to_owned()),
            dir,
        };
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                // Someone took a port between free_port() and our bind: new ports.
                let (config_path, listen, admin) = self.write_config(gw.dir.path());
                (gw.config_path, gw.listen, gw.admin) = (config_path, listen, admin);
            }
            gw.spawn();
            match gw.wait_ready(probe, Duration::from_secs(20)) {
                Ready::Yes => return gw,
                Ready::PortTaken(logs) => {
                    last = logs;
                    gw.shutdown();
                }
                Ready::Failed(why) => {
                    gw.shutdown();
                    let logs = gw.logs();
                    // Dropped before the panic, so its Drop does not print the logs twice.
                    drop(gw);
                    panic!("gateway did not become ready: {why}\n----- gateway logs -----\n{logs}");
                }
            }
        }
        panic!("gateway could not bind its ports after 3 tries:\n{last}");
    }
}

enum Ready {
    Yes,
    PortTaken(String),
    Failed(String),
}

/// A running `sessiongate run`.
pub(crate) struct Gateway {
    child: Option<Child>,
    /// How many times the process was replaced by [`Gateway::upgrade`].
    generation: usize,
    env: Vec<(String, String)>,
    listen: SocketAddr,
    admin: SocketAddr,
    config_path: PathBuf,
    issuer: String,
    key_prefix: String,
    keys_prefix: String,
    dir: TempDir,
}

impl Gateway {
    /// `http://LISTEN{path}` on the proxy listener.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// The body of `GET path` on the admin listener (e.g. `/metrics`).
    ///
    /// # Panics
    /// If the admin listener does not answer.
    pub(crate) fn admin_get(&self, path: &str) -> String {
        super::client()
            .get(self.admin_url(path))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET {path} on the admin listener: {e}"))
    }

    /// `http://ADMIN{path}` on the admin listener.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The proxy listener's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin listener's address.
    pub(crate) fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The config file it runs with (for CLI commands against the same Redis).
    pub(crate) fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configured issuer.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The configured session key prefix.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Its `keys.redis_prefix`: where its keyring (and its canary) live in Redis.
    pub(crate) fn keys_prefix(&self) -> &str {
        &self.keys_prefix
    }

    /// The process id, while it runs (the load harness, benches/load, reads its memory).
    #[allow(dead_code)]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub(crate) fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Captured stdout and stderr so far (of every process, after an upgrade).
    pub(crate) fn logs(&self) -> String {
        let mut logs = String::new();
        for generation in 0..=self.generation {
            let (out, err) = self.log_paths(generation);
            let out = std::fs::read_to_string(out).unwrap_or_default();
            let err = std::fs::read_to_string(err).unwrap_or_default();
            if generation > 0 {
                let _ = writeln!(logs, "===== after upgrade {generation} =====");
            }
            let _ = write!(logs, "--- stdout ---\n{out}\n--- stderr ---\n{err}");
        }
        logs
    }

    /// [`Gateway::logs`] for a failure report: successful access lines are counted,
    /// not printed, so that a load test's thousands of them do not push the panic
    /// message (printed before this dump) out of what CI keeps of the output.
    fn failure_dump(&self) -> String {
        let mut dump = String::new();
        let mut omitted = 0usize;
        for line in self.logs().lines() {
            if line.contains("sessiongate::access") && line.contains(" status=200 ") {
                omitted += 1;
                continue;
            }
            if omitted > 0 {
                let _ = writeln!(dump, "[{omitted} access lines with status=200 omitted]");
                omitted = 0;
            }
            dump.push_str(line);
            dump.push('\n');
        }
        if omitted > 0 {
            let _ = writeln!(dump, "[{omitted} access lines with status=200 omitted]");
        }
        dump
    }

    /// The stderr lines containing `pattern`, once there are at least `count` of them
    /// (log lines reach stderr from the gateway's writer thread, a moment after the event
    /// that a test observed through a metric or a response). After 10 s, whatever there is.
    pub(crate) fn log_lines(&self, pattern: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self
                .stderr()
                .lines()
                .filter(|l| l.contains(pattern))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count || Instant::now() >= deadline {
                return lines;
            }
            pause(Duration::from_millis(10));
        }
    }

    /// Captured stderr (where the log lines go) of every process so far, in order.
    pub(crate) fn stderr(&self) -> String {
        (0..=self.generation)
            .map(|g| std::fs::read_to_string(self.log_paths(g).1).unwrap_or_default())
            .collect()
    }

    fn log_paths(&self, generation: usize) -> (PathBuf, PathBuf) {
        let suffix = if generation == 0 {
            String::new()
        } else {
            format!(".{generation}")
        };
        (
            self.dir.path().join(format!("stdout{suffix}.log")),
            self.dir.path().join(format!("stderr{suffix}.log")),
        )
    }

    /// The upgrade socket of this gateway (`server.upgrade_sock`).
    pub(crate) fn upgrade_sock(&self) -> PathBuf {
        self.dir.path().join("upgrade.sock")
    }

    /// Sends `signal` (e.g. `"HUP"`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the gateway is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// A zero-downtime upgrade, as an operator does it: starts `sessiongate run
    /// --upgrade` with the same config and environment, waits until it listens on the
    /// upgrade socket, sends SIGQUIT to the running process (which hands its listening
    /// sockets over and drains), and waits up to `timeout` for that process to exit. The
    /// new process is this gateway's process from then on. Returns the old one's exit
    /// status.
    ///
    /// # Panics
    /// If the new process exits early, never listens on the socket, or the old one does
    /// not exit within `timeout`.
    pub(crate) fn upgrade(&mut self, timeout: Duration) -> ExitStatus {
        use std::os::unix::fs::FileTypeExt as _;
        let mut old = self.child.take().expect("the gateway is running");
        self.generation += 1;
        let sock = self.upgrade_sock();
        let _ = std::fs::remove_file(&sock);
        self.spawn_process(true);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let _ = old.kill();
                let _ = old.wait();
                panic!(
                    "the upgraded sessiongate exited with {status} before taking over\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the upgraded sessiongate never listened on {}\n{}",
                sock.display(),
                self.logs()
            );
            pause(Duration::from_millis(10));
        }
        let _ = Command::new("kill")
            .args(["-QUIT", &old.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = old.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = old.kill();
                let _ = old.wait();
                panic!(
                    "the old sessiongate did not exit within {timeout:?} of SIGQUIT\n{}",
                    self.logs()
                );
            }
            pause(Duration::from_millis(15));
        }
    }

    fn spawn(&mut self) {
        self.spawn_process(false);
    }

    fn spawn_process(&mut self, upgrade: bool) {
        let (out, err) = self.log_paths(self.generation);
        let stdout = std::fs::File::create(out).expect("stdout log");
        let stderr = std::fs::File::create(err).expect("stderr log");
        let mut command = Command::new(BIN);
        command.arg("run");
        if upgrade {
            command.arg("--upgrade");
        }
        let child = command
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("SESSIONGATE_CONFIG")
            .env_remove("SESSIONGATE_KEK")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn sessiongate");
        self.child = Some(child);
    }

    fn wait_ready(&mut self, probe: &str, timeout: Duration) -> Ready {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let logs = self.logs();
                if logs.to_ascii_lowercase().contains("address already in use") {
                    return Ready::PortTaken(logs);
                }
                return Ready::Failed(format!("sessiongate exited with {status}"));
            }
            // Pingora retries a bind for 30 s while "in use": take new ports at once.
            let logs = self.logs();
            if logs.contains("is in use, will try again") {
                return Ready::PortTaken(logs);
            }
            // The admin listener can answer before Pingora has bound the proxy listener
            // (the proxy service starts after the key refresher): wait for both.
            if let Ok(resp) = raw::get(self.admin, probe, &[])
                && resp.status == 200
                && (probe != "/readyz"
                    || std::net::TcpStream::connect_timeout(&self.listen, Duration::from_secs(1))
                        .is_ok())
            {
                return Ready::Yes;
            }
            if Instant::now() >= deadline {
                return Ready::Failed(format!("{probe} was not 200 within {timeout:?}"));
            }
            pause(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `"TERM"`) and waits up to `timeout` for the process to exit;
    /// `None` if it is still running then (it is killed on drop).
    pub(crate) fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status();
        self.wait_exit(timeout)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            pause(Duration::from_millis(15));
        }
    }

    /// SIGINT, then SIGKILL after 5 s, then wait.
    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                pause(Duration::from_millis(15));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Gateway {
    /// Records the private keys in the gateway's key directory as secrets.
    fn record_private_keys(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("keys")) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str(&text) {
                for (field, value) in &doc {
                    if field.contains("private")
                        && let Some(key) = value.as_str()
                    {
                        secrets::record("private key", key);
                    }
                }
            }
        }
    }

    /// Panics if the logs so far contain any secret recorded in this test run.
    pub(crate) fn assert_logs_clean(&self) {
        self.record_private_keys();
        secrets::assert_clean(
            &format!("the logs of the gateway on {}", self.listen),
            &self.logs(),
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
        if std::thread::panicking() {
            eprintln!(
                "----- sessiongate logs ({}) -----\n{}",
                self.listen,
                self.failure_dump()
            );
        } else {
            self.assert_logs_clean();
        }
    }
}

/// A TOML basic string.
pub(crate) fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub(crate) fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}
