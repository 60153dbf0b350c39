//! Real framework applications that write the sessions the gateway reads in its
//! `express` and `django` session formats: [`ExpressApp`] (tests/apps/express:
//! express-session + connect-redis + Passport on Node.js) and [`DjangoApp`]
//! (tests/apps/django: django.contrib.auth with the `cache` or `cached_db` session engine
//! on Django's Redis cache backend or django-redis).
//!
//! Both are RAII processes like the other harness servers: a free loopback port (retried
//! when another process takes it first), their own temp dir and log, readiness by polling
//! the log for `listening on 127.0.0.1:PORT` (no fixed sleep), kill + wait on [`Drop`], and
//! the log printed when the test thread panics. Every secret they are given or hand out
//! (signing secrets, `SECRET_KEY`, cookie values, Express session ids) is recorded with
//! [`super::secrets::record`], so no gateway log may contain one.
//!
//! Installing is done once per test process and reused across runs through a stamp file,
//! like [`super::python::venv`]: `npm ci` of tests/apps/express (its committed
//! package-lock.json) into `$CARGO_TARGET_TMPDIR/express-app`, and a virtualenv with
//! tests/apps/django/requirements.txt at `$CARGO_TARGET_TMPDIR/django-venv`. Without
//! Node.js/npm, `python3 -m venv`, or access to the npm registry and PyPI, the test fails
//! and says why: nothing is skipped.
//!
//! What the frameworks write (seen with redis-cli; the SPEC's "Sessions in Redis: formats"):
//! - Express: key `<prefix><sid>` (`sess:` by default; the sid is 32 characters of
//!   base64url), a JSON string such as `{"cookie":{"originalMaxAge":600000,"expires":
//!   "...Z","secure":false,"httpOnly":true,"path":"/"},"passport":{"user":"alice"},
//!   "roles":["admin"],"email":"alice@example.com"}`, `SET ... EX <ttl>`. The cookie is
//!   `s%3A<sid>.<sig>` (`s:<sid>.<sig>` percent-encoded; the signature is standard base64
//!   without padding, so `+` and `/` appear as `%2B` and `%2F`). Every request that
//!   loads the session without changing it `EXPIRE`s the key again (connect-redis
//!   `touch`), with or without `rolling`; the stored `cookie.expires` is only rewritten
//!   when the session itself is saved. `rolling` only re-sends the Set-Cookie.
//! - Django: key `<KEY_PREFIX>:<VERSION>:django.contrib.sessions.cache<cookie>`
//!   (`.cached_db` for that engine; `:1:django.contrib.sessions.cache...` by default), a
//!   pickle of the session dict (`_auth_user_id` is the user's pk as a string), TTL
//!   `SESSION_COOKIE_AGE` (two weeks unless [`DjangoOptions::ttl_secs`]), not refreshed
//!   by reads. Django's RedisCache pickles with protocol 5, django-redis 7 with
//!   `pickle.DEFAULT_PROTOCOL` (4 on Python 3.11).

// A harness API: each test uses the part it needs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::eventually::pause;
use super::ports::free_port;
use super::python::{run, venv};
use super::secrets;

/// The Express app's sources (package.json, package-lock.json, app.js).
const EXPRESS_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/apps/express");
/// The Django project (manage.py, serve.py, sgapp/, requirements.txt).
const DJANGO_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/apps/django");
/// How long an app may take to listen (Django migrates a fresh SQLite database first).
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Installing

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The directory holding the Express app and its `node_modules`, installed on first use
/// (once per test process).
fn express_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(install_express)
        .clone()
        .unwrap_or_else(|e| panic!("cannot install the Express test app: {e}"))
}

fn install_express() -> Result<PathBuf, String> {
    run(Command::new("node").arg("--version"))
        .map_err(|e| format!("Node.js is needed (apt-get install nodejs npm): {e}"))?;
    run(Command::new("npm").arg("--version"))
        .map_err(|e| format!("npm is needed (apt-get install npm): {e}"))?;
    let src = Path::new(EXPRESS_SRC);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("express-app");
    let stamp = dir.join(".sessiongate-ready");
    let manifest = read(&src.join("package.json"))?;
    let lock = read(&src.join("package-lock.json"))?;
    let wanted = format!("{manifest}\n{lock}");
    let ready = std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)
        && dir.join("node_modules").is_dir();
    if !ready {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("removing a stale {}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("package.json"), &manifest).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("package-lock.json"), &lock).map_err(|e| e.to_string())?;
        run(Command::new("npm")
            .args([
                "ci",
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir))
        .map_err(|e| format!("npm ci failed (no access to the npm registry?): {e}"))?;
        std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    }
    // Always refreshed, so that an edit of app.js needs no reinstall.
    std::fs::copy(src.join("app.js"), dir.join("app.js"))
        .map_err(|e| format!("copying app.js: {e}"))?;
    Ok(dir)
}

/// The pinned lines of tests/apps/django/requirements.txt.
fn django_requirements() -> Result<Vec<String>, String> {
    Ok(read(&Path::new(DJANGO_SRC).join("requirements.txt"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// The Django virtualenv's python, made on first use (once per test process).
fn django_python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let requirements = django_requirements()?;
            let refs: Vec<&str> = requirements.iter().map(String::as_str).collect();
            let python = venv("django-venv", &refs)?.join("python");
            run(Command::new(&python).args(["-c", "import django, redis, django_redis"]))?;
            Ok(python)
        })
        .clone()
        .unwrap_or_else(|e| panic!("cannot set up the Django test app's virtualenv: {e}"))
}

// ---------------------------------------------------------------------------------------
// The process

/// A framework app's process on a loopback port, with its log in its own temp dir.
struct Proc {
    what: &'static str,
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Proc {
    /// Spawns `command(port)` on free ports until one attempt prints its ready line.
    fn start(what: &'static str, dir: TempDir, command: impl Fn(u16) -> Command) -> Proc {
        let mut proc = Proc {
            what,
            port: 0,
            child: None,
            dir,
        };
        let mut last = String::new();
        for _ in 0..5 {
            proc.port = free_port();
            match proc.spawn_and_wait(command(proc.port)) {
                Ok(()) => return proc,
                Err((retry, log)) => {
                    proc.kill();
                    if !retry {
                        panic!("{what} did not start:\n{log}");
                    }
                    last = log;
                }
            }
        }
        panic!("{what} could not bind a port; last log:\n{last}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("app.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `Err((retry, log))`: `retry` when the port was taken.
    fn spawn_and_wait(&mut self, mut command: Command) -> Result<(), (bool, String)> {
        let log = std::fs::File::create(self.log_path()).expect("create app log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        self.child = Some(child);
        let ready = format!("listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if log.lines().any(|l| l.trim() == ready) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = self.log();
                let taken = log.contains("EADDRINUSE") || log.contains("Address already in use");
                return Err((taken, format!("exited with {status}:\n{log}")));
            }
            if Instant::now() >= deadline {
                return Err((
                    false,
                    format!("not listening within {START_TIMEOUT:?}:\n{log}"),
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

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log (port {}) -----\n{}",
                self.what,
                self.port,
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// What both apps answer

/// The value of the `name` cookie set by `resp` (the text between `name=` and the first
/// `;` of its `Set-Cookie`, as the browser would send it back), `None` when it sets none.
/// A cookie being cleared has an empty value.
pub(crate) fn set_cookie_value(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (n, value) = pair.split_once('=')?;
            (n.trim() == name).then(|| value.trim().to_owned())
        })
}

/// A running framework app: the endpoints both apps have (`POST /login`, `POST /logout`,
/// `GET /anon`, `GET /whoami`). [`ExpressApp`] and [`DjangoApp`] dereference to it.
pub(crate) struct App {
    proc: Proc,
    cookie_name: String,
    http: Client,
    /// Extra secrets to record for a cookie value (Express: its decoded form and sid).
    derived: fn(&str) -> Vec<String>,
}

impl App {
    /// The port it listens on (loopback).
    pub(crate) fn port(&self) -> u16 {
        self.proc.port
    }

    /// `127.0.0.1:PORT`, e.g. for a gateway route's upstream.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.proc.port))
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proc.port)
    }

    /// The session cookie's name (`connect.sid`, `sessionid` by default).
    pub(crate) fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// `<cookie name>=<value>`, a `Cookie` header with only the session cookie.
    pub(crate) fn cookie_header(&self, value: &str) -> String {
        self.record(value);
        format!("{}={value}", self.cookie_name)
    }

    /// The app's log so far.
    pub(crate) fn log(&self) -> String {
        self.proc.log()
    }

    fn record(&self, cookie: &str) {
        secrets::record("cookie", cookie);
        for s in (self.derived)(cookie) {
            secrets::record("session id", &s);
        }
    }

    /// `GET path` straight to the app, with the session cookie when given.
    pub(crate) fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut req = self.http.get(self.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", self.cookie_header(c));
        }
        req.send()
            .unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.proc.what))
    }

    /// `POST path` straight to the app with a JSON body, with the session cookie when given.
    pub(crate) fn post_json(&self, path: &str, cookie: Option<&str>, body: &Value) -> Response {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(c) = cookie {
            req = req.header("cookie", self.cookie_header(c));
        }
        req.send()
            .unwrap_or_else(|e| panic!("{} POST {path}: {e}", self.proc.what))
    }

    /// The session cookie `resp` sets; panics unless it is a 200 that sets one.
    fn session_cookie(&self, what: &str, resp: Response) -> String {
        let status = resp.status();
        let cookie = set_cookie_value(&resp, &self.cookie_name);
        let body = resp.text().unwrap_or_default();
        assert_eq!(status, 200, "{} {what}: {body}", self.proc.what);
        let cookie = cookie.filter(|c| !c.is_empty()).unwrap_or_else(|| {
            panic!(
                "{} {what} set no {} cookie",
                self.proc.what, self.cookie_name
            )
        });
        self.record(&cookie);
        cookie
    }

    /// Logs `user` in and returns the session cookie's value exactly as the browser
    /// sends it back.
    pub(crate) fn login(&self, user: &str) -> String {
        self.login_json(&json!({ "user": user }))
    }

    /// [`App::login`] with `roles` stored in the session.
    pub(crate) fn login_with_roles(&self, user: &str, roles: &[&str]) -> String {
        self.login_json(&json!({ "user": user, "roles": roles }))
    }

    /// `POST /login` with this JSON body (`user`, and optionally `roles`, `email`, and
    /// `extra`: an object whose entries are stored at the session's top level); returns
    /// the session cookie.
    pub(crate) fn login_json(&self, body: &Value) -> String {
        self.login_at("/login", body)
    }

    fn login_at(&self, path: &str, body: &Value) -> String {
        let resp = self.post_json(path, None, body);
        self.session_cookie(&format!("POST {path} {body}"), resp)
    }

    /// Logs out through the framework (which deletes the session's Redis key).
    pub(crate) fn logout(&self, cookie: &str) {
        let resp = self.post_json("/logout", Some(cookie), &json!({}));
        let status = resp.status();
        assert_eq!(
            status,
            200,
            "{} POST /logout: {}",
            self.proc.what,
            resp.text().unwrap_or_default()
        );
    }

    /// A fresh anonymous session (data saved, nobody logged in); its cookie.
    pub(crate) fn anonymous(&self) -> String {
        let resp = self.get("/anon", None);
        self.session_cookie("GET /anon", resp)
    }

    /// `GET /whoami` with the cookie: `{"user", "roles", "email"}` (and Django's `"id"`,
    /// the `_auth_user_id`), `user` null when nobody is logged in. A request to the app
    /// like any other: Express `touch`es the session (its key TTL starts again).
    pub(crate) fn whoami(&self, cookie: &str) -> Value {
        let resp = self.get("/whoami", Some(cookie));
        assert_eq!(resp.status(), 200, "{} GET /whoami", self.proc.what);
        resp.json().expect("whoami JSON")
    }
}

// ---------------------------------------------------------------------------------------
// Express

/// How to configure the Express app.
#[derive(Clone, Debug)]
pub(crate) struct ExpressOptions {
    /// express-session's `secret` array, newest first (the first signs). The default is
    /// one fresh random secret.
    pub(crate) secrets: Vec<String>,
    /// connect-redis's key prefix (`sess:`).
    pub(crate) prefix: String,
    /// The session cookie's name (`connect.sid`).
    pub(crate) cookie_name: String,
    /// express-session's `rolling`.
    pub(crate) rolling: bool,
    /// Cookie `maxAge` and connect-redis `ttl`, in seconds. `None`: a browser-session
    /// cookie and connect-redis's default key TTL of one day.
    pub(crate) ttl_secs: Option<u64>,
}

/// A fresh random Express signing secret (recorded).
pub(crate) fn new_express_secret() -> String {
    let secret = format!("xs-{}", super::new_cookie());
    secrets::record("Express secret", &secret);
    secret
}

impl Default for ExpressOptions {
    fn default() -> Self {
        ExpressOptions {
            secrets: vec![new_express_secret()],
            prefix: "sess:".to_owned(),
            cookie_name: "connect.sid".to_owned(),
            rolling: false,
            ttl_secs: None,
        }
    }
}

/// The session id inside an Express cookie value: `s%3A<sid>.<sig>` (or unencoded) →
/// `<sid>`; `None` when it is not of that shape.
pub(crate) fn express_sid(cookie: &str) -> Option<String> {
    let decoded = percent_decode(cookie)?;
    let signed = decoded.strip_prefix("s:")?;
    let (sid, _sig) = signed.rsplit_once('.')?;
    Some(sid.to_owned())
}

/// `%XX` decoding (UTF-8), as express-session's cookie parser does.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn express_derived(cookie: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(decoded) = percent_decode(cookie) {
        out.push(decoded);
    }
    out.extend(express_sid(cookie));
    out
}

/// The Express app (express-session + connect-redis + Passport) on a loopback port.
pub(crate) struct ExpressApp {
    app: App,
    opts: ExpressOptions,
}

impl ExpressApp {
    /// Installs the app if needed and starts it against `redis_url`.
    ///
    /// # Panics
    /// If it cannot be installed or does not start.
    pub(crate) fn start(redis_url: &str, opts: ExpressOptions) -> Self {
        assert!(
            !opts.secrets.is_empty(),
            "Express needs at least one secret"
        );
        for s in &opts.secrets {
            secrets::record("Express secret", s);
        }
        let dir = express_dir();
        let tmp = tempfile::Builder::new()
            .prefix("sg-express")
            .tempdir()
            .expect("temp dir");
        let secrets_json = Value::from(opts.secrets.clone()).to_string();
        let proc = Proc::start("express app", tmp, |port| {
            let mut cmd = Command::new("node");
            cmd.arg(dir.join("app.js"))
                .current_dir(&dir)
                .env("PORT", port.to_string())
                .env("REDIS_URL", redis_url)
                .env("SESSION_SECRETS", &secrets_json)
                .env("SESSION_PREFIX", &opts.prefix)
                .env("COOKIE_NAME", &opts.cookie_name)
                .env("ROLLING", if opts.rolling { "1" } else { "0" })
                .env_remove("NODE_OPTIONS");
            match opts.ttl_secs {
                Some(ttl) => cmd.env("SESSION_TTL_SECONDS", ttl.to_string()),
                None => cmd.env_remove("SESSION_TTL_SECONDS"),
            };
            cmd
        });
        ExpressApp {
            app: App {
                proc,
                cookie_name: opts.cookie_name.clone(),
                http: super::client(),
                derived: express_derived,
            },
            opts,
        }
    }

    /// Its options.
    pub(crate) fn options(&self) -> &ExpressOptions {
        &self.opts
    }

    /// The secrets as a JSON array (newest first), the value the gateway's `secrets_env`
    /// variable takes.
    pub(crate) fn secrets_json(&self) -> String {
        Value::from(self.opts.secrets.clone()).to_string()
    }

    /// connect-redis's key prefix.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.opts.prefix
    }

    /// The Redis key of a cookie value: prefix + session id.
    ///
    /// # Panics
    /// If the cookie is not `s:<sid>.<sig>` (percent-encoded or not).
    pub(crate) fn redis_key(&self, cookie: &str) -> String {
        let sid = express_sid(cookie)
            .unwrap_or_else(|| panic!("not an express-session cookie: {cookie}"));
        format!("{}{sid}", self.opts.prefix)
    }

    /// Logs in a user whose Passport id is an integer (JSON number), not a string.
    pub(crate) fn login_int(&self, user: i64) -> String {
        self.app.login_json(&json!({ "user": user }))
    }
}

impl Deref for ExpressApp {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

// ---------------------------------------------------------------------------------------
// Django

/// Django's `SESSION_ENGINE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DjangoEngine {
    /// `django.contrib.sessions.backends.cache`.
    Cache,
    /// `django.contrib.sessions.backends.cached_db` (the database holds a copy too).
    CachedDb,
}

impl DjangoEngine {
    /// The setting's value.
    pub(crate) fn setting(self) -> &'static str {
        match self {
            DjangoEngine::Cache => "django.contrib.sessions.backends.cache",
            DjangoEngine::CachedDb => "django.contrib.sessions.backends.cached_db",
        }
    }

    /// The engine's cache key prefix (its `KEY_PREFIX`).
    pub(crate) fn key_prefix(self) -> &'static str {
        match self {
            DjangoEngine::Cache => "django.contrib.sessions.cache",
            DjangoEngine::CachedDb => "django.contrib.sessions.cached_db",
        }
    }
}

/// The cache backend under the sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DjangoCache {
    /// Django's own `django.core.cache.backends.redis.RedisCache` (pickle protocol 5).
    Django,
    /// django-redis's `django_redis.cache.RedisCache` (pickle.DEFAULT_PROTOCOL: 4).
    DjangoRedis,
}

impl DjangoCache {
    /// The `BACKEND` setting's value.
    pub(crate) fn setting(self) -> &'static str {
        match self {
            DjangoCache::Django => "django.core.cache.backends.redis.RedisCache",
            DjangoCache::DjangoRedis => "django_redis.cache.RedisCache",
        }
    }
}

/// How to configure the Django app.
#[derive(Clone, Debug)]
pub(crate) struct DjangoOptions {
    /// `SESSION_ENGINE`.
    pub(crate) engine: DjangoEngine,
    /// The cache `BACKEND`.
    pub(crate) cache: DjangoCache,
    /// The cache's `KEY_PREFIX` (empty).
    pub(crate) cache_key_prefix: String,
    /// The cache's `VERSION` (1).
    pub(crate) cache_version: u32,
    /// The pickle protocol of the cache's serializer; `None`: the backend's default.
    pub(crate) pickle_protocol: Option<u8>,
    /// `SESSION_COOKIE_AGE` (the key TTL), in seconds; `None`: Django's two weeks.
    pub(crate) ttl_secs: Option<u64>,
}

impl Default for DjangoOptions {
    fn default() -> Self {
        DjangoOptions {
            engine: DjangoEngine::Cache,
            cache: DjangoCache::Django,
            cache_key_prefix: String::new(),
            cache_version: 1,
            pickle_protocol: None,
            ttl_secs: None,
        }
    }
}

impl DjangoOptions {
    /// The defaults with this engine and cache backend.
    pub(crate) fn new(engine: DjangoEngine, cache: DjangoCache) -> Self {
        DjangoOptions {
            engine,
            cache,
            ..Self::default()
        }
    }
}

fn no_derived(_: &str) -> Vec<String> {
    Vec::new()
}

/// The Django app (django.contrib.auth, cache or cached_db sessions on Redis) on a
/// loopback port, with its own SQLite database.
pub(crate) struct DjangoApp {
    app: App,
    opts: DjangoOptions,
}

impl DjangoApp {
    /// Sets up the virtualenv if needed, then migrates a fresh database and serves the
    /// app against `redis_url`.
    ///
    /// # Panics
    /// If it cannot be installed or does not start.
    pub(crate) fn start(redis_url: &str, opts: DjangoOptions) -> Self {
        let python = django_python();
        let tmp = tempfile::Builder::new()
            .prefix("sg-django")
            .tempdir()
            .expect("temp dir");
        let db = tmp.path().join("db.sqlite3");
        let secret_key = format!("dj-{}", super::new_cookie());
        secrets::record("Django SECRET_KEY", &secret_key);
        let proc = Proc::start("django app", tmp, |port| {
            let mut cmd = Command::new(&python);
            cmd.arg("serve.py")
                .current_dir(DJANGO_SRC)
                .env("PORT", port.to_string())
                .env("REDIS_URL", redis_url)
                .env("SESSION_ENGINE", opts.engine.setting())
                .env("CACHE_BACKEND", opts.cache.setting())
                .env("CACHE_KEY_PREFIX", &opts.cache_key_prefix)
                .env("CACHE_VERSION", opts.cache_version.to_string())
                .env("DJANGO_DB_PATH", &db)
                .env("DJANGO_SECRET_KEY", &secret_key)
                .env("DJANGO_SETTINGS_MODULE", "sgapp.settings")
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONUNBUFFERED", "1");
            match opts.pickle_protocol {
                Some(p) => cmd.env("PICKLE_PROTOCOL", p.to_string()),
                None => cmd.env_remove("PICKLE_PROTOCOL"),
            };
            match opts.ttl_secs {
                Some(ttl) => cmd.env("SESSION_TTL_SECONDS", ttl.to_string()),
                None => cmd.env_remove("SESSION_TTL_SECONDS"),
            };
            cmd
        });
        DjangoApp {
            app: App {
                proc,
                cookie_name: "sessionid".to_owned(),
                http: super::client(),
                derived: no_derived,
            },
            opts,
        }
    }

    /// Its options.
    pub(crate) fn options(&self) -> &DjangoOptions {
        &self.opts
    }

    /// The Redis key prefix of its sessions, the gateway's `key_prefix`:
    /// `<KEY_PREFIX>:<VERSION>:django.contrib.sessions.cache` (`.cached_db`).
    pub(crate) fn key_prefix(&self) -> String {
        format!(
            "{}:{}:{}",
            self.opts.cache_key_prefix,
            self.opts.cache_version,
            self.opts.engine.key_prefix()
        )
    }

    /// The Redis key of a cookie value: [`DjangoApp::key_prefix`] + the value.
    pub(crate) fn redis_key(&self, cookie: &str) -> String {
        format!("{}{cookie}", self.key_prefix())
    }

    /// [`App::login`] that also stores `last_seen = datetime.datetime.now()` in the
    /// session (a pickled global + reduce the gateway must decode to null).
    pub(crate) fn login_with_datetime(&self, user: &str) -> String {
        self.app
            .login_at("/login?datetime=1", &json!({ "user": user }))
    }

    /// The `_auth_user_id` of a logged-in session (the user's pk as a string), as Django
    /// reads it.
    ///
    /// # Panics
    /// If nobody is logged in with this cookie.
    pub(crate) fn user_id(&self, cookie: &str) -> String {
        let who = self.app.whoami(cookie);
        who["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no user logged in: {who}"))
            .to_owned()
    }
}

impl Deref for DjangoApp {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

// ---------------------------------------------------------------------------------------
// The apps themselves: they write what the SPEC says the frameworks write.

/// The whole value of `key` as lowercase hex (read by a Lua script, so binary pickles
/// survive redis-cli).
fn value_hex(redis: &super::RedisServer, key: &str) -> String {
    redis.cli(&[
        "EVAL",
        "local v = redis.call('GET', KEYS[1]) if not v then return '' end \
         return (v:gsub('.', function(c) return string.format('%02x', string.byte(c)) end))",
        "1",
        key,
    ])
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104), written out so that the check shares nothing with the gateway.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |x: u8| block.iter().map(|b| b ^ x).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[test]
fn express_app_writes_signed_cookies_and_json_sessions() {
    use base64::Engine as _;

    let redis = super::RedisServer::start();
    let old = new_express_secret();
    let opts = ExpressOptions {
        secrets: vec![new_express_secret(), old.clone()],
        ttl_secs: Some(600),
        ..ExpressOptions::default()
    };
    let app = ExpressApp::start(&redis.url(), opts.clone());

    let cookie = app.login_with_roles("alice", &["admin", "dev"]);
    assert!(cookie.starts_with("s%3A"), "{cookie}");
    let decoded = percent_decode(&cookie).expect("percent-encoded");
    let (sid, sig) = decoded[2..].rsplit_once('.').expect("s:<sid>.<sig>");
    let want = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(hmac_sha256(opts.secrets[0].as_bytes(), sid.as_bytes()));
    assert_eq!(
        sig, want,
        "signed by the newest secret, standard base64 unpadded"
    );

    let key = app.redis_key(&cookie);
    assert_eq!(key, format!("sess:{sid}"));
    assert_eq!(redis.cli(&["TYPE", &key]), "string");
    let ttl: u64 = redis.cli(&["TTL", &key]).parse().expect("TTL");
    assert!((590..=600).contains(&ttl), "TTL {ttl}");
    let stored: Value = serde_json::from_str(&redis.cli(&["GET", &key])).expect("JSON");
    assert_eq!(stored["passport"]["user"], "alice", "{stored}");
    assert_eq!(stored["roles"], json!(["admin", "dev"]), "{stored}");
    assert_eq!(stored["email"], "alice@example.com", "{stored}");
    assert!(stored["cookie"]["expires"].is_string(), "{stored}");
    assert_eq!(app.whoami(&cookie)["user"], "alice");

    // A cookie signed by the older secret, percent-encoded or not, is Express's too.
    let old_sig = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(hmac_sha256(old.as_bytes(), sid.as_bytes()));
    let by_old = format!("s:{sid}.{old_sig}");
    assert_eq!(app.whoami(&by_old)["user"], "alice");
    assert_eq!(app.whoami(&format!("{decoded}x"))["user"], Value::Null);

    // Touching re-arms the key TTL but leaves the stored cookie.expires alone.
    let pttl = || -> u64 { redis.cli(&["PTTL", &key]).parse().expect("PTTL") };
    super::assert_eventually!(pttl() < 599_900, Duration::from_secs(5));
    let before = pttl();
    let resp = app.get("/whoami", Some(&cookie));
    assert_eq!(set_cookie_value(&resp, "connect.sid"), None, "not rolling");
    assert!(pttl() > before, "touch re-arms the TTL");
    let again: Value = serde_json::from_str(&redis.cli(&["GET", &key])).expect("JSON");
    assert_eq!(again["cookie"]["expires"], stored["cookie"]["expires"]);

    let numeric = app.login_int(42);
    let stored: Value =
        serde_json::from_str(&redis.cli(&["GET", &app.redis_key(&numeric)])).expect("JSON");
    assert_eq!(stored["passport"]["user"], 42, "{stored}");

    let anon = app.anonymous();
    let stored: Value =
        serde_json::from_str(&redis.cli(&["GET", &app.redis_key(&anon)])).expect("JSON");
    assert!(stored.get("passport").is_none(), "{stored}");
    assert_eq!(app.whoami(&anon)["user"], Value::Null);

    app.logout(&cookie);
    assert!(!redis.exists(&key), "logout deletes the key");
    assert_eq!(app.whoami(&cookie)["user"], Value::Null);
}

#[test]
fn express_app_options_prefix_cookie_rolling_and_default_ttl() {
    let redis = super::RedisServer::start();
    let app = ExpressApp::start(
        &redis.url(),
        ExpressOptions {
            prefix: "app:s:".to_owned(),
            cookie_name: "sid".to_owned(),
            rolling: true,
            ..ExpressOptions::default()
        },
    );
    let cookie = app.login("bob");
    let key = app.redis_key(&cookie);
    assert!(key.starts_with("app:s:"), "{key}");
    let ttl: u64 = redis.cli(&["TTL", &key]).parse().expect("TTL");
    assert!(
        (86_390..=86_400).contains(&ttl),
        "connect-redis's default: {ttl}"
    );
    let stored: Value = serde_json::from_str(&redis.cli(&["GET", &key])).expect("JSON");
    assert_eq!(stored["cookie"]["expires"], Value::Null, "{stored}");
    let resp = app.get("/whoami", Some(&cookie));
    assert_eq!(
        set_cookie_value(&resp, "sid").as_deref(),
        Some(cookie.as_str()),
        "rolling re-sends the cookie"
    );
}

#[test]
fn django_app_writes_pickled_sessions_for_every_engine_and_backend() {
    let redis = super::RedisServer::start();
    for engine in [DjangoEngine::Cache, DjangoEngine::CachedDb] {
        for cache in [DjangoCache::Django, DjangoCache::DjangoRedis] {
            let what = format!("{engine:?} on {cache:?}");
            let app = DjangoApp::start(&redis.url(), DjangoOptions::new(engine, cache));
            let cookie = app.login_with_roles("alice", &["admin"]);
            assert!(
                cookie.len() == 32
                    && cookie
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{what}: {cookie}"
            );
            let key = app.redis_key(&cookie);
            assert_eq!(key, format!(":1:{}{cookie}", engine.key_prefix()), "{what}");
            let ttl: u64 = redis.cli(&["TTL", &key]).parse().expect("TTL");
            assert!((1_209_590..=1_209_600).contains(&ttl), "{what}: TTL {ttl}");
            let value = value_hex(&redis, &key);
            let protocol = &value[2..4];
            match cache {
                DjangoCache::Django => assert_eq!(protocol, "05", "{what}: {value}"),
                // pickle.DEFAULT_PROTOCOL: 4 up to Python 3.13, 5 from 3.14.
                DjangoCache::DjangoRedis => {
                    assert!(protocol == "04" || protocol == "05", "{what}: {value}");
                }
            }
            assert!(value.starts_with("80"), "{what}: {value}");
            let id = app.user_id(&cookie);
            assert!(value.contains(&hex("_auth_user_id")), "{what}: {value}");
            // The pk as a string: SHORT_BINUNICODE (0x8c), its length, its digits.
            let id_op = format!("8c{:02x}{}", id.len(), hex(&id));
            assert!(value.contains(&id_op), "{what}: {id} in {value}");
            assert!(value.contains(&hex("admin")), "{what}: {value}");

            let dated = app.login_with_datetime("bob");
            let value = value_hex(&redis, &app.redis_key(&dated));
            assert!(value.contains(&hex("datetime")), "{what}: {value}");
            assert_eq!(app.whoami(&dated)["user"], "bob", "{what}");

            let anon = app.anonymous();
            let value = value_hex(&redis, &app.redis_key(&anon));
            assert!(value.contains(&hex("views")), "{what}: {value}");
            assert!(!value.contains(&hex("_auth_user_id")), "{what}: {value}");

            if engine == DjangoEngine::CachedDb {
                // The database copy brings a deleted cache key back on the next request.
                redis.del(&key);
                assert_eq!(app.whoami(&cookie)["user"], "alice", "{what}");
                assert!(redis.exists(&key), "{what}: reloaded from the database");
            }
            app.logout(&cookie);
            assert!(!redis.exists(&key), "{what}: logout deletes the key");
            assert_eq!(app.whoami(&cookie)["user"], Value::Null, "{what}");
        }
    }
}

#[test]
fn django_app_options_prefix_version_protocol_and_ttl() {
    let redis = super::RedisServer::start();
    for cache in [DjangoCache::Django, DjangoCache::DjangoRedis] {
        let app = DjangoApp::start(
            &redis.url(),
            DjangoOptions {
                cache_key_prefix: "shop".to_owned(),
                cache_version: 3,
                pickle_protocol: Some(2),
                ttl_secs: Some(600),
                ..DjangoOptions::new(DjangoEngine::Cache, cache)
            },
        );
        let cookie = app.login("carol");
        let key = app.redis_key(&cookie);
        assert_eq!(key, format!("shop:3:django.contrib.sessions.cache{cookie}"));
        let ttl: u64 = redis.cli(&["TTL", &key]).parse().expect("TTL");
        assert!((590..=600).contains(&ttl), "{cache:?}: TTL {ttl}");
        let value = value_hex(&redis, &key);
        assert!(value.starts_with("8002"), "{cache:?}: {value}");
    }
}
