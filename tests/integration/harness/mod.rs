//! The integration harness: real `redis-server`, real upstreams, the real binary.
//!
//! [`redis::RedisServer`], [`upstream::Upstream`] and [`gateway::Gateway`] are RAII
//! processes/threads on free loopback ports that stop on drop and print their logs when
//! a test panics. This module adds the client side: an HTTP client that never follows
//! redirects nor keeps cookies, fresh valid cookie values, the JWKS, and JWT verification
//! with an independent library (jsonwebtoken) against that JWKS. [`Stack`] bundles the
//! usual trio for one test. The rest of the kit: [`GatewayBuilder`] writes every config a
//! test needs, [`cli`] runs the `sessiongate` CLI, and [`assert_refusal`] checks every
//! answer the gateway makes itself.

pub(crate) mod apps;
pub(crate) mod certs;
pub(crate) mod cli;
pub(crate) mod eventually;
pub(crate) mod faultproxy;
pub(crate) mod gateway;
pub(crate) mod held;
pub(crate) mod keyring;
pub(crate) mod metrics;
pub(crate) mod ports;
pub(crate) mod prometheus;
pub(crate) mod python;
pub(crate) mod raw;
pub(crate) mod redis;
pub(crate) mod refusal;
pub(crate) mod scrape;
pub(crate) mod secrets;
pub(crate) mod topology;
pub(crate) mod traffic;
pub(crate) mod upstream;

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use reqwest::blocking::{Client, Response};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub(crate) use eventually::assert_eventually;
pub(crate) use gateway::{ALLOWED_ORIGIN, COOKIE_NAME, Gateway, GatewayBuilder, ISSUER, Route};
pub(crate) use redis::{RedisServer, session_key, sha256_hex};
pub(crate) use refusal::assert_refusal;
pub(crate) use upstream::Upstream;

/// A blocking HTTP client: no redirects followed, no cookie store, 10 s timeout.
pub(crate) fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A fresh, valid cookie value: 43 characters of base64url (SHA-256 of a counter, the
/// time, the process id and the thread), so every call differs.
pub(crate) fn new_cookie() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let cookie = URL_SAFE_NO_PAD.encode(h.finalize());
    secrets::record("cookie", &cookie);
    cookie
}

/// A fresh key-encryption key: standard base64 of 32 bytes that differ on every call.
pub(crate) fn new_kek() -> String {
    let seed = new_cookie();
    let kek = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(seed.as_bytes()));
    secrets::record("KEK", &kek);
    kek
}

/// `token` with one character in the middle of its signature flipped.
///
/// # Panics
/// If `token` has no `.`.
pub(crate) fn tamper(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').expect("three parts");
    let mut sig: Vec<char> = sig.chars().collect();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == 'A' { 'B' } else { 'A' };
    format!("{rest}.{}", sig.into_iter().collect::<String>())
}

/// `__Host-session=<value>`, a `Cookie` header value carrying only the session cookie.
pub(crate) fn cookie_header(value: &str) -> String {
    secrets::record("cookie", value);
    format!("{COOKIE_NAME}={value}")
}

/// A session object as JSON text: `{"sub": sub, "exp": now + 1 h}`.
pub(crate) fn session_json(sub: &str) -> String {
    serde_json::json!({ "sub": sub, "exp": now() + 3600 }).to_string()
}

/// Installs jsonwebtoken's aws-lc-rs provider once per process.
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// The JWKS served at `url`.
///
/// # Panics
/// If it is not 200 or not a JWKS.
pub(crate) fn fetch_jwks(http: &Client, url: &str) -> JwkSet {
    let resp = http
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json()
        .unwrap_or_else(|e| panic!("{url} is not a JWKS: {e}"))
}

/// A verified token.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// The JOSE header.
    pub(crate) header: Header,
    /// The claims.
    pub(crate) claims: Value,
}

impl Verified {
    /// A string claim.
    ///
    /// # Panics
    /// If absent or not a string.
    pub(crate) fn str(&self, name: &str) -> &str {
        self.claims[name]
            .as_str()
            .unwrap_or_else(|| panic!("claim {name} is not a string: {}", self.claims))
    }

    /// An integer claim.
    ///
    /// # Panics
    /// If absent or not an unsigned integer.
    pub(crate) fn u64(&self, name: &str) -> u64 {
        self.claims[name]
            .as_u64()
            .unwrap_or_else(|| panic!("claim {name} is not an integer: {}", self.claims))
    }

    /// The `aud` claim as a list (it may be a string or an array).
    pub(crate) fn audiences(&self) -> Vec<String> {
        match &self.claims["aud"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Verifies `token` against `jwks` with jsonwebtoken: signature by the key named by
/// `kid`, header `typ` = `at+jwt`, `alg` ES256 or EdDSA, and `aud`, `iss`, `exp`, `nbf`
/// (present and valid, 5 s leeway) plus `sub` present.
///
/// # Panics
/// On any failure, naming it.
pub(crate) fn verify(token: &str, jwks: &JwkSet, aud: &str, iss: &str) -> Verified {
    try_verify(token, jwks, aud, iss).unwrap_or_else(|e| panic!("{e}"))
}

/// [`verify`] that returns the failure instead of panicking.
///
/// # Errors
/// A description of the first check that failed.
pub(crate) fn try_verify(
    token: &str,
    jwks: &JwkSet,
    aud: &str,
    iss: &str,
) -> Result<Verified, String> {
    install_crypto();
    secrets::record("token", token);
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| format!("bad JWT header: {e}: {token}"))?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(format!("JWT typ must be at+jwt, got {:?}", header.typ));
    }
    if !matches!(header.alg, Algorithm::ES256 | Algorithm::EdDSA) {
        return Err(format!(
            "JWT alg must be ES256 or EdDSA, got {:?}",
            header.alg
        ));
    }
    let kid = header
        .kid
        .clone()
        .ok_or_else(|| format!("JWT header has no kid: {header:?}"))?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK {kid} unusable: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = 5;
    validation.validate_nbf = true;
    validation.set_audience(&[aud]);
    validation.set_issuer(&[iss]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("JWT does not verify (aud {aud}, iss {iss}): {e:?}"))?;
    Ok(Verified {
        header: data.header,
        claims: data.claims,
    })
}

/// Redis, one echo upstream, a gateway, and a client, for one test. Dropped in that
/// order: gateway first.
pub(crate) struct Stack {
    /// The gateway.
    pub(crate) gw: Gateway,
    /// The echo upstream (named "echo").
    pub(crate) up: Upstream,
    /// Redis.
    pub(crate) redis: RedisServer,
    /// An HTTP client.
    pub(crate) http: Client,
}

impl Stack {
    /// Starts Redis and an echo upstream, then a gateway configured by `configure`
    /// (which adds routes pointing at the upstream), and returns once it is ready and,
    /// when it has a push channel, that channel is armed.
    ///
    /// `/readyz` can answer before the channel arms. Until then lookups bypass the cache
    /// and keep the session's tokens, and arming flushes the cache: a test that
    /// compares two answers across that moment would see a token reused or re-minted
    /// by chance. Tests of the unarmed state break the channel after the start.
    pub(crate) fn start(
        configure: impl FnOnce(GatewayBuilder, &Upstream) -> GatewayBuilder,
    ) -> Self {
        let redis = RedisServer::start();
        let up = Upstream::echo("echo");
        let gw = configure(GatewayBuilder::new(&redis.url()), &up).start();
        let stack = Stack {
            gw,
            up,
            redis,
            http: client(),
        };
        stack.wait_armed_if_pushed(Duration::from_secs(10));
        stack
    }

    /// When the gateway has a push channel, waits up to `within` for it to be armed.
    #[track_caller]
    fn wait_armed_if_pushed(&self, within: Duration) {
        let scrape = metrics::Scrape::of(&self.gw);
        if scrape.value("sessiongate_revocation_push_enabled", &[]) == 1.0 {
            metrics::wait_armed(&self.gw, within);
        }
    }

    /// Writes a session `{"sub": sub, "exp": now + 1 h}` (TTL 1 h) and returns its cookie.
    pub(crate) fn login(&self, sub: &str) -> String {
        self.login_json(&session_json(sub))
    }

    /// Writes a session with the given literal JSON (TTL 1 h) and returns its cookie.
    pub(crate) fn login_json(&self, json: &str) -> String {
        let cookie = new_cookie();
        self.redis.set_session(&self.key(&cookie), json, 3600);
        cookie
    }

    /// The Redis key of a cookie.
    pub(crate) fn key(&self, cookie: &str) -> String {
        session_key(self.gw.key_prefix(), cookie)
    }

    /// `GET path` on the proxy listener, with the session cookie when given.
    pub(crate) fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut req = self.http.get(self.gw.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", cookie_header(c));
        }
        req.send().unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with a cookie and return the status.
    pub(crate) fn status(&self, path: &str, cookie: Option<&str>) -> u16 {
        self.get(path, cookie).status().as_u16()
    }

    /// The bearer token the echo upstream saw for a `GET path` with `cookie`, read from
    /// its JSON answer (so it is this request's, whatever else runs concurrently), or
    /// `None` when the answer is not a 200.
    pub(crate) fn echoed_bearer(&self, path: &str, cookie: &str) -> Option<String> {
        let resp = self.get(path, Some(cookie));
        if resp.status() != 200 {
            return None;
        }
        let body: Value = resp.json().ok()?;
        body["headers"]["authorization"][0]
            .as_str()
            .map(str::to_owned)
    }

    /// Requests `path` (a non-critical route to this stack's upstream) with `cookie`
    /// until two answers in a row carry the same bearer, i.e. the session and its token
    /// are cached. With a push channel, it first waits for the channel to be armed
    /// (again: a test may have broken it since [`Stack::start`]). A single request is
    /// not enough either: a read that raced the invalidation of the session's own `SET`
    /// is answered but not kept.
    #[track_caller]
    pub(crate) fn warm(&self, path: &str, cookie: &str) {
        self.wait_armed_if_pushed(Duration::from_secs(5));
        assert_eventually!(
            {
                let first = self.echoed_bearer(path, cookie);
                first.is_some() && self.echoed_bearer(path, cookie) == first
            },
            Duration::from_secs(5),
            "the session must end up in the cache"
        );
    }

    /// The JWKS on the proxy listener.
    pub(crate) fn jwks(&self) -> JwkSet {
        fetch_jwks(&self.http, &self.gw.url("/.well-known/jwks.json"))
    }

    /// Verifies the bearer token of the upstream's last request for `aud`.
    pub(crate) fn last_token(&self, aud: &str) -> Verified {
        let rec = self.up.last();
        verify(rec.bearer(), &self.jwks(), aud, self.gw.issuer())
    }
}
