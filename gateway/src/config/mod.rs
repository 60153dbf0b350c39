//! Configuration: the TOML file of SPEC's Configuration section, parsed and validated
//! into plain typed values.
//!
//! [`schema`] mirrors the file (serde DTOs with the documented defaults); [`validate`]
//! turns text into a [`Config`] or into every [`ConfigError`] at once, each with its key
//! path and line. The types here hold only validated values: addresses are parsed,
//! enums are enums, optional strings are `Option`s, and each route's token lifetime is
//! resolved. docs/configuration.md documents every key, and a test parses its examples.
//!
//! ```
//! # use gateway::config::Config;
//! let config = Config::parse(r#"
//! [[route]]
//! name = "orders"
//! path_prefix = "/api/orders"
//! upstreams = ["127.0.0.1:9001"]
//! "#).expect("valid");
//! assert_eq!(config.routes[0].audience, "orders");
//! assert_eq!(config.token.ttl, std::time::Duration::from_secs(300));
//! ```

pub mod schema;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::ConfigError;

use schema::{
    ConfigDto, ExchangeDto, KeysDto, LogDto, RedisDto, RouteDto, ServerDto, SessionDto, TlsDto,
    TokenDto, format_duration,
};

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listeners and process settings.
    pub server: ServerConfig,
    /// The Redis connection.
    pub redis: RedisConfig,
    /// The session cookie and its Redis schema.
    pub session: SessionConfig,
    /// The JWTs minted for upstreams.
    pub token: TokenConfig,
    /// Signing keys and their rotation.
    pub keys: KeysConfig,
    /// The exchange endpoint and the Origin allow-list.
    pub exchange: ExchangeConfig,
    /// The routes, in file order (at least one).
    pub routes: Vec<RouteConfig>,
    /// Logging.
    pub log: LogConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener (/metrics, /healthz, /readyz, JWKS).
    pub admin_listen: SocketAddr,
    /// TLS on the proxy listener, if any.
    pub tls: Option<TlsConfig>,
    /// Worker threads of the proxy service (at least 1).
    pub threads: usize,
    /// How long a graceful shutdown waits for requests in flight.
    pub grace_period: Duration,
    /// Requests with a larger `Cookie` header get 400.
    pub max_cookie_header_bytes: usize,
    /// `Strict-Transport-Security` value for responses on a TLS listener, if any.
    pub hsts: Option<String>,
    /// Unix socket used to hand listeners over in a graceful upgrade.
    pub upgrade_sock: PathBuf,
}

/// `server.tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[redis]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// Redis URL in one of fred's forms (scheme checked, not connected).
    pub url: String,
    /// Per-command timeout (greater than zero).
    pub timeout: Duration,
    /// Connections in the pool (1 to 64).
    pub pool_size: usize,
    /// CA certificate(s) a `rediss://` server must chain to (system roots when `None`);
    /// only set with a TLS scheme.
    pub ca_file: Option<PathBuf>,
}

/// `[session]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Session cookie name (a valid cookie-name token).
    pub cookie: String,
    /// Redis key prefix of sessions (non-empty).
    pub key_prefix: String,
    /// Whether Redis keys hold SHA-256 of the cookie value.
    pub hashed_keys: bool,
    /// The most a non-critical route trusts a cached session; zero disables the cache.
    pub cache_ttl: Duration,
    /// How long a missing session is remembered.
    pub negative_cache_ttl: Duration,
    /// Most sessions held in the cache (at least 1).
    pub cache_max_entries: usize,
    /// Most bytes cached sessions hold (at least 1 MiB).
    pub cache_max_bytes: u64,
    /// Most bytes cached tokens hold (0: none kept).
    pub token_cache_max_bytes: u64,
    /// Whether Redis pushes session-key invalidations to the cache.
    pub push_invalidation: bool,
    /// Session field that becomes the JWT `sub` (non-empty).
    pub subject_field: String,
    /// Session fields copied into the JWT (none reserved, no duplicates).
    pub claims: Vec<String>,
    /// Whether the session cookie is forwarded upstream.
    pub forward_cookie: bool,
    /// Where browsers without a session are redirected: an absolute path or http(s) URL.
    pub login_url: Option<String>,
}

/// `[token]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenConfig {
    /// JWT `iss` (non-empty).
    pub issuer: String,
    /// JWT lifetime (1 s to 24 h).
    pub ttl: Duration,
    /// Signing algorithm.
    pub algorithm: Algorithm,
}

/// JWT signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

/// Where signing keys are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStoreConfig {
    /// In Redis, private keys sealed with the KEK, shared by every replica.
    Redis,
    /// In a directory.
    File {
        /// The key directory.
        dir: PathBuf,
    },
}

/// `[keys]`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeysConfig {
    /// Where keys are kept.
    pub store: KeyStoreConfig,
    /// How often a new key takes over signing (longer than `publish_ahead`).
    pub rotate_every: Duration,
    /// How long a new key is published before it signs (greater than zero).
    pub publish_ahead: Duration,
    /// Env var holding the KEK (non-empty for the Redis store; not read here).
    pub kek_env: String,
    /// Verifier clock skew that retired keys stay published for.
    pub clock_skew: Duration,
}

/// `[exchange]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeConfig {
    /// Path of the exchange endpoint (normalized), or `None` when disabled.
    pub path: Option<String>,
    /// Allowed origins as browsers send them: `scheme://host[:port]`, lowercase, no default port.
    pub allowed_origins: Vec<String>,
}

/// How a route treats sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// A valid session is required (401 or a login redirect otherwise).
    Required,
    /// A valid session adds a token; requests without one pass without a token.
    Optional,
    /// No session lookup and no token.
    None,
}

/// One upstream of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` (IPv6 hosts in brackets).
    pub addr: String,
    /// Whether to speak TLS to it (`https://` in the file).
    pub tls: bool,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Route name, unique, `[A-Za-z0-9_.-]+` (a metric label).
    pub name: String,
    /// Normalized path prefix, matched on segment boundaries.
    pub path_prefix: String,
    /// Exact Host to match: lowercase, no port, IPv6 without brackets.
    pub host: Option<String>,
    /// Upstreams (at least one).
    pub upstreams: Vec<Upstream>,
    /// JWT `aud` (the route's name unless set).
    pub audience: String,
    /// How the route treats sessions.
    pub auth: AuthMode,
    /// Whether every request re-checks the session in Redis.
    pub critical: bool,
    /// Token lifetime: the route's override or `token.ttl`.
    pub token_ttl: Duration,
    /// CA certificate for `https://` upstreams (system roots when `None`).
    pub ca_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `RUST_LOG`-style filter (`RUST_LOG` overrides it at run time).
    pub filter: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

// === impl Config ===

impl Config {
    /// Parses and validates config text (never reads the environment).
    ///
    /// # Errors
    /// Every problem found, each with its key path and, when known, line and column.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        validate::parse(text)
    }

    /// Reads and validates a config file.
    ///
    /// # Errors
    /// One error (path: the file's path) when it cannot be read; else as [`Config::parse`].
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError::new(
                path.display().to_string(),
                format!("cannot read the config file: {e}"),
            )]
        })?;
        Self::parse(&text)
    }

    /// The effective config as TOML, every default filled in; it parses back to an equal
    /// `Config`, except that a password in `redis.url` is shown as `***` (see
    /// [`redact_url`]). Printed by `sessiongate config check`.
    pub fn to_effective_toml(&self) -> String {
        let mut dto = ConfigDto::from(self);
        dto.redis.url = redact_url(&dto.redis.url).into_owned();
        match toml::to_string(&dto) {
            Ok(text) => text,
            // Every field is a string, number, bool, array or table: this cannot fail.
            Err(e) => format!("# the effective config could not be rendered: {e}\n"),
        }
    }
}

impl Algorithm {
    /// The JOSE `alg` name: `"ES256"` or `"EdDSA"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

impl AuthMode {
    /// The name used in the file: `"required"`, `"optional"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Optional => "optional",
            AuthMode::None => "none",
        }
    }
}

impl LogFormat {
    /// The name used in the file: `"human"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

impl From<&Config> for ConfigDto {
    fn from(c: &Config) -> Self {
        let path_string = |p: &Path| p.to_string_lossy().into_owned();
        ConfigDto {
            server: ServerDto {
                listen: c.server.listen.to_string(),
                admin_listen: c.server.admin_listen.to_string(),
                tls: c.server.tls.as_ref().map(|t| TlsDto {
                    cert: path_string(&t.cert),
                    key: path_string(&t.key),
                }),
                threads: c.server.threads,
                grace_period: c.server.grace_period,
                max_cookie_header_bytes: c.server.max_cookie_header_bytes,
                hsts: c.server.hsts.clone().unwrap_or_default(),
                upgrade_sock: path_string(&c.server.upgrade_sock),
            },
            redis: RedisDto {
                url: c.redis.url.clone(),
                timeout: c.redis.timeout,
                pool_size: c.redis.pool_size,
                ca_file: c
                    .redis
                    .ca_file
                    .as_deref()
                    .map(path_string)
                    .unwrap_or_default(),
            },
            session: SessionDto {
                cookie: c.session.cookie.clone(),
                key_prefix: c.session.key_prefix.clone(),
                hashed_keys: c.session.hashed_keys,
                cache_ttl: c.session.cache_ttl,
                negative_cache_ttl: c.session.negative_cache_ttl,
                cache_max_entries: c.session.cache_max_entries,
                cache_max_bytes: bytesize::ByteSize::b(c.session.cache_max_bytes),
                token_cache_max_bytes: bytesize::ByteSize::b(c.session.token_cache_max_bytes),
                push_invalidation: c.session.push_invalidation,
                subject_field: c.session.subject_field.clone(),
                claims: c.session.claims.clone(),
                forward_cookie: c.session.forward_cookie,
                login_url: c.session.login_url.clone().unwrap_or_default(),
            },
            token: TokenDto {
                issuer: c.token.issuer.clone(),
                ttl: c.token.ttl,
                algorithm: c.token.algorithm.as_str().to_owned(),
            },
            keys: KeysDto {
                store: match c.keys.store {
                    KeyStoreConfig::Redis => "redis".to_owned(),
                    KeyStoreConfig::File { .. } => "file".to_owned(),
                },
                dir: match &c.keys.store {
                    KeyStoreConfig::Redis => String::new(),
                    KeyStoreConfig::File { dir } => path_string(dir),
                },
                rotate_every: c.keys.rotate_every,
                publish_ahead: c.keys.publish_ahead,
                kek_env: c.keys.kek_env.clone(),
                clock_skew: c.keys.clock_skew,
            },
            exchange: ExchangeDto {
                path: c.exchange.path.clone().unwrap_or_default(),
                allowed_origins: c.exchange.allowed_origins.clone(),
            },
            log: LogDto {
                format: c.log.format.as_str().to_owned(),
                filter: c.log.filter.clone(),
            },
            routes: c
                .routes
                .iter()
                .map(|r| RouteDto {
                    name: r.name.clone(),
                    path_prefix: r.path_prefix.clone(),
                    host: r.host.clone().unwrap_or_default(),
                    upstreams: r
                        .upstreams
                        .iter()
                        .map(|u| {
                            if u.tls {
                                format!("https://{}", u.addr)
                            } else {
                                u.addr.clone()
                            }
                        })
                        .collect(),
                    audience: r.audience.clone(),
                    auth: r.auth.as_str().to_owned(),
                    critical: r.critical,
                    token_ttl: format_duration(r.token_ttl),
                    ca_file: r
                        .ca_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// `url` with the password of its user info and any `sentinelPassword` query value
/// replaced by `***`, for output and error messages: `redis://app:s3cret@h:6379/0`
/// becomes `redis://app:***@h:6379/0`. A URL without secrets is returned as it is.
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("sentinelPassword") => {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    let redacted = format!("{scheme}://{authority}{tail}");
    if redacted == url {
        url.into()
    } else {
        redacted.into()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    /// SPEC's Configuration example, verbatim.
    const SPEC_EXAMPLE: &str = r#"
[server]
listen = "0.0.0.0:8080"            # proxy listener
admin_listen = "127.0.0.1:9090"    # /metrics /healthz /readyz and the JWKS
# tls = { cert = "cert.pem", key = "key.pem" }   # optional TLS on the proxy listener
threads = 2

[redis]
url = "redis://127.0.0.1:6379/0"   # also rediss:// (TLS), cluster and sentinel forms
timeout = "250ms"                  # per command
pool_size = 4

[session]
cookie = "__Host-session"
key_prefix = "sg:session:"
hashed_keys = true                 # Redis key = key_prefix + lowercase hex SHA-256(cookie value)
cache_ttl = "5s"                   # the most a non-critical route may trust a cached session; "0s" disables the cache
subject_field = "sub"              # field of the session object that becomes the JWT `sub`
claims = ["roles", "email"]        # fields of the session object copied into the JWT
forward_cookie = false             # the session cookie never reaches upstreams unless true
login_url = ""                     # optional: browsers (GET, Accept: text/html) without a session are redirected here

[token]
issuer = "https://gateway.internal"
ttl = "5m"
algorithm = "ES256"                # or "EdDSA"

[keys]
store = "redis"                    # "redis" (shared by every replica) or "file"
dir = ""                           # for store = "file"
rotate_every = "24h"
publish_ahead = "30m"              # a new key is in the JWKS at least this long before it signs
                                   # (verifiers cache JWKS: Envoy 10 min, Istio 20 min by default)
kek_env = "SESSIONGATE_KEK"        # env var holding the key-encryption key (base64 of 32 random bytes)
                                   # that encrypts private keys stored in Redis; required for store = "redis"

[exchange]
path = "/auth/token"               # POST: session cookie in, JWT out (for SPAs); "" disables
allowed_origins = ["https://app.example.com"]   # also the Origin allow-list for every unsafe
                                                  # request that carries the session cookie

[[route]]
name = "orders"
path_prefix = "/api/orders"
host = ""                          # optional exact Host match
upstreams = ["127.0.0.1:9001"]
audience = "orders"                # JWT aud; defaults to name
auth = "required"                  # "required" | "optional" | "none"
critical = false
token_ttl = ""                     # optional per-route override, at most token.ttl
"#;

    const MINIMAL: &str = r#"
[[route]]
name = "orders"
path_prefix = "/api/orders"
upstreams = ["127.0.0.1:9001"]
"#;

    fn parse_ok(text: &str) -> Config {
        match Config::parse(text) {
            Ok(c) => c,
            Err(errors) => panic!("expected a valid config, got {errors:#?}"),
        }
    }

    fn orders_route() -> RouteConfig {
        RouteConfig {
            name: "orders".into(),
            path_prefix: "/api/orders".into(),
            host: None,
            upstreams: vec![Upstream {
                addr: "127.0.0.1:9001".into(),
                tls: false,
            }],
            audience: "orders".into(),
            auth: AuthMode::Required,
            critical: false,
            token_ttl: Duration::from_secs(300),
            ca_file: None,
        }
    }

    /// The defaults, as documented, with the one route of [`MINIMAL`].
    fn defaults() -> Config {
        Config {
            server: ServerConfig {
                listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
                admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
                tls: None,
                threads: 2,
                grace_period: Duration::from_secs(30),
                max_cookie_header_bytes: 8192,
                hsts: None,
                upgrade_sock: PathBuf::from("/tmp/sessiongate-upgrade.sock"),
            },
            redis: RedisConfig {
                url: "redis://127.0.0.1:6379/0".into(),
                timeout: Duration::from_millis(250),
                pool_size: 4,
                ca_file: None,
            },
            session: SessionConfig {
                cookie: "__Host-session".into(),
                key_prefix: "sg:session:".into(),
                hashed_keys: true,
                cache_ttl: Duration::from_secs(5),
                negative_cache_ttl: Duration::from_secs(1),
                push_invalidation: true,
                cache_max_entries: 100_000,
                cache_max_bytes: exchange::cache::DEFAULT_MAX_BYTES,
                token_cache_max_bytes: exchange::cache::DEFAULT_TOKEN_MAX_BYTES,
                subject_field: "sub".into(),
                claims: vec!["roles".into(), "email".into()],
                forward_cookie: false,
                login_url: None,
            },
            token: TokenConfig {
                issuer: "https://gateway.internal".into(),
                ttl: Duration::from_secs(300),
                algorithm: Algorithm::Es256,
            },
            keys: KeysConfig {
                store: KeyStoreConfig::Redis,
                rotate_every: Duration::from_secs(86_400),
                publish_ahead: Duration::from_secs(1800),
                kek_env: "SESSIONGATE_KEK".into(),
                clock_skew: Duration::from_secs(60),
            },
            exchange: ExchangeConfig {
                path: Some("/auth/token".into()),
                allowed_origins: Vec::new(),
            },
            routes: vec![orders_route()],
            log: LogConfig {
                format: LogFormat::Human,
                filter: "warn,sessiongate=info,gateway=info,exchange=info,keys=info".into(),
            },
        }
    }

    #[test]
    fn spec_example_parses() {
        let config = parse_ok(SPEC_EXAMPLE);
        let mut expected = defaults();
        expected.exchange.allowed_origins = vec!["https://app.example.com".into()];
        assert_eq!(config, expected);
    }

    #[test]
    fn minimal_config_gets_every_default() {
        assert_eq!(parse_ok(MINIMAL), defaults());
    }

    #[test]
    fn every_key_set() {
        let config = parse_ok(
            r#"
[server]
listen = "[::]:8443"
admin_listen = "127.0.0.1:0"
tls = { cert = "/etc/sg/cert.pem", key = "/etc/sg/key.pem" }
threads = 8
grace_period = "5s"
max_cookie_header_bytes = 4096
upgrade_sock = "/run/sg/upgrade.sock"

[redis]
url = "rediss-cluster://redis-0:6379"
timeout = "1s"
pool_size = 64
ca_file = "/etc/sg/redis-ca.pem"

[session]
cookie = "sid"
key_prefix = "s:"
hashed_keys = false
cache_ttl = "0s"
negative_cache_ttl = "250ms"
cache_max_entries = 10
cache_max_bytes = "64MiB"
token_cache_max_bytes = 0
push_invalidation = false
subject_field = "user_id"
claims = []
forward_cookie = true
login_url = "https://id.example.com/login?next=1"

[token]
issuer = "gw"
ttl = "24h"
algorithm = "EdDSA"

[keys]
store = "file"
dir = "/var/lib/sg/keys"
rotate_every = "1h"
publish_ahead = "10m"
kek_env = ""
clock_skew = "0s"

[exchange]
path = ""
allowed_origins = ["HTTPS://App.Example.com:443", "http://localhost:3000"]

[log]
format = "json"
filter = "debug"

[[route]]
name = "pay.v2"
path_prefix = "/"
host = "Pay.Example.com"
upstreams = ["https://pay.internal:8443", "http://10.0.0.2:8080", "[::1]:9000"]
audience = "payments"
auth = "optional"
critical = true
token_ttl = "90s"

[[route]]
name = "static_files"
path_prefix = "/static"
upstreams = ["cdn:80"]
auth = "none"
"#,
        );
        let expected = Config {
            server: ServerConfig {
                listen: "[::]:8443".parse().expect("addr"),
                admin_listen: "127.0.0.1:0".parse().expect("addr"),
                tls: Some(TlsConfig {
                    cert: "/etc/sg/cert.pem".into(),
                    key: "/etc/sg/key.pem".into(),
                }),
                threads: 8,
                grace_period: Duration::from_secs(5),
                max_cookie_header_bytes: 4096,
                hsts: None,
                upgrade_sock: "/run/sg/upgrade.sock".into(),
            },
            redis: RedisConfig {
                url: "rediss-cluster://redis-0:6379".into(),
                timeout: Duration::from_secs(1),
                pool_size: 64,
                ca_file: Some("/etc/sg/redis-ca.pem".into()),
            },
            session: SessionConfig {
                cookie: "sid".into(),
                key_prefix: "s:".into(),
                hashed_keys: false,
                cache_ttl: Duration::ZERO,
                negative_cache_ttl: Duration::from_millis(250),
                cache_max_entries: 10,
                cache_max_bytes: 64 * 1024 * 1024,
                token_cache_max_bytes: 0,
                push_invalidation: false,
                subject_field: "user_id".into(),
                claims: vec![],
                forward_cookie: true,
                login_url: Some("https://id.example.com/login?next=1".into()),
            },
            token: TokenConfig {
                issuer: "gw".into(),
                ttl: Duration::from_secs(86_400),
                algorithm: Algorithm::EdDsa,
            },
            keys: KeysConfig {
                store: KeyStoreConfig::File {
                    dir: "/var/lib/sg/keys".into(),
                },
                rotate_every: Duration::from_secs(3600),
                publish_ahead: Duration::from_secs(600),
                kek_env: String::new(),
                clock_skew: Duration::ZERO,
            },
            exchange: ExchangeConfig {
                path: None,
                allowed_origins: vec![
                    "https://app.example.com".into(),
                    "http://localhost:3000".into(),
                ],
            },
            routes: vec![
                RouteConfig {
                    name: "pay.v2".into(),
                    path_prefix: "/".into(),
                    host: Some("pay.example.com".into()),
                    upstreams: vec![
                        Upstream {
                            addr: "pay.internal:8443".into(),
                            tls: true,
                        },
                        Upstream {
                            addr: "10.0.0.2:8080".into(),
                            tls: false,
                        },
                        Upstream {
                            addr: "[::1]:9000".into(),
                            tls: false,
                        },
                    ],
                    audience: "payments".into(),
                    auth: AuthMode::Optional,
                    critical: true,
                    token_ttl: Duration::from_secs(90),
                    ca_file: None,
                },
                RouteConfig {
                    name: "static_files".into(),
                    path_prefix: "/static".into(),
                    host: None,
                    upstreams: vec![Upstream {
                        addr: "cdn:80".into(),
                        tls: false,
                    }],
                    audience: "static_files".into(),
                    auth: AuthMode::None,
                    critical: false,
                    token_ttl: Duration::from_secs(86_400),
                    ca_file: None,
                },
            ],
            log: LogConfig {
                format: LogFormat::Json,
                filter: "debug".into(),
            },
        };
        assert_eq!(config, expected);
        assert_eq!(Config::parse(&config.to_effective_toml()), Ok(config));
    }

    /// Each case: the minimal config with `patch` applied (a TOML fragment placed before
    /// the route, or `ROUTE` to replace the route), and the path of the one error expected.
    #[test]
    fn each_rule_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nlisten = \"8080\"", "server.listen"),
            ("[server]\nlisten = \"localhost:8080\"", "server.listen"),
            ("[server]\nadmin_listen = \"\"", "server.admin_listen"),
            (
                "[server]\nadmin_listen = \"0.0.0.0:8080\"",
                "server.admin_listen",
            ),
            ("[server]\nthreads = 0", "server.threads"),
            ("[server]\nthreads = -1", "server.threads"),
            ("[server]\ntls = { cert = \"c.pem\" }", "server.tls.key"),
            (
                "[server]\ntls = { cert = \"c.pem\", key = \"k.pem\", ca = \"x\" }",
                "server.tls",
            ),
            ("[server]\ngrace_period = \"soon\"", "server.grace_period"),
            ("[redis]\nca_file = \"/etc/ca.pem\"", "redis.ca_file"),
            (
                "[redis]\nurl = \"redis://h:6379\"\nca_file = \"/etc/ca.pem\"",
                "redis.ca_file",
            ),
            (
                "[server]\nmax_cookie_header_bytes = 0",
                "server.max_cookie_header_bytes",
            ),
            (
                "[server]\nhsts = \"includeSubDomains\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }",
                "server.hsts",
            ),
            ("[server]\nhsts = \"max-age=60\"", "server.hsts"),
            ("[redis]\nurl = \"http://127.0.0.1:6379\"", "redis.url"),
            ("[redis]\nurl = \"127.0.0.1:6379\"", "redis.url"),
            ("[redis]\nurl = \"redis://\"", "redis.url"),
            ("[redis]\ntimeout = \"0s\"", "redis.timeout"),
            ("[redis]\ntimeout = 250", "redis.timeout"),
            ("[redis]\npool_size = 0", "redis.pool_size"),
            ("[redis]\npool_size = 65", "redis.pool_size"),
            ("[session]\ncookie = \"\"", "session.cookie"),
            ("[session]\ncookie = \"my session\"", "session.cookie"),
            ("[session]\ncookie = \"a=b\"", "session.cookie"),
            ("[session]\ncookie = \"a;b\"", "session.cookie"),
            ("[session]\nkey_prefix = \"\"", "session.key_prefix"),
            ("[session]\nsubject_field = \"\"", "session.subject_field"),
            (
                "[session]\ncache_max_entries = 0",
                "session.cache_max_entries",
            ),
            (
                "[session]\ncache_max_bytes = \"100KiB\"",
                "session.cache_max_bytes",
            ),
            (
                "[session]\ncache_max_bytes = \"lots\"",
                "session.cache_max_bytes",
            ),
            (
                "[session]\nclaims = [\"roles\", \"exp\"]",
                "session.claims[1]",
            ),
            ("[session]\nclaims = [\"sub\"]", "session.claims[0]"),
            ("[session]\nclaims = [\"chk\"]", "session.claims[0]"),
            (
                "[session]\nclaims = [\"roles\", \"roles\"]",
                "session.claims[1]",
            ),
            ("[session]\nclaims = [\"\"]", "session.claims[0]"),
            ("[session]\nclaims = \"roles\"", "session.claims"),
            ("[session]\nlogin_url = \"login\"", "session.login_url"),
            (
                "[session]\nlogin_url = \"//evil.example.com/\"",
                "session.login_url",
            ),
            (
                "[session]\nlogin_url = \"ftp://x/login\"",
                "session.login_url",
            ),
            ("[session]\nhashed_keys = \"yes\"", "session.hashed_keys"),
            ("[token]\nissuer = \"\"", "token.issuer"),
            ("[token]\nttl = \"500ms\"", "token.ttl"),
            ("[token]\nttl = \"25h\"", "token.ttl"),
            ("[token]\nalgorithm = \"RS256\"", "token.algorithm"),
            ("[token]\nalgorithm = \"es256\"", "token.algorithm"),
            ("[keys]\nstore = \"vault\"", "keys.store"),
            ("[keys]\nstore = \"file\"", "keys.dir"),
            ("[keys]\nkek_env = \"\"", "keys.kek_env"),
            ("[keys]\npublish_ahead = \"0s\"", "keys.publish_ahead"),
            ("[keys]\npublish_ahead = \"500ms\"", "keys.publish_ahead"),
            ("[keys]\npublish_ahead = \"1500ms\"", "keys.publish_ahead"),
            ("[keys]\nrotate_every = \"24h 500ms\"", "keys.rotate_every"),
            ("[keys]\nclock_skew = \"250ms\"", "keys.clock_skew"),
            ("[keys]\nrotate_every = \"30m\"", "keys.rotate_every"),
            (
                "[keys]\nrotate_every = \"1h\"\npublish_ahead = \"2h\"",
                "keys.rotate_every",
            ),
            ("[exchange]\npath = \"auth/token\"", "exchange.path"),
            ("[exchange]\npath = \"/auth//token\"", "exchange.path"),
            (
                "[exchange]\nallowed_origins = [\"*\"]",
                "exchange.allowed_origins[0]",
            ),
            (
                "[exchange]\nallowed_origins = [\"https://a.example\", \"https://b.example/app\"]",
                "exchange.allowed_origins[1]",
            ),
            (
                "[exchange]\nallowed_origins = [\"app.example.com\"]",
                "exchange.allowed_origins[0]",
            ),
            ("[log]\nformat = \"xml\"", "log.format"),
            (
                "[server]\nlisten = \"0.0.0.0:8080\"\nport = 80",
                "server.port",
            ),
            ("[session]\ncookie_name = \"x\"", "session.cookie_name"),
            ("listen = \"0.0.0.0:8080\"", "listen"),
            ("[metrics]\nenabled = true", "metrics"),
            ("server = 1", "server"),
            ("route = 1\n#", "route"),
        ];
        for (patch, path) in cases {
            let text = if patch.starts_with("route") {
                patch.to_string()
            } else {
                format!("{patch}\n{MINIMAL}")
            };
            let errors = Config::parse(&text).expect_err(patch);
            let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, [*path], "{patch:?}: {errors:#?}");
            assert!(!errors[0].message.is_empty());
        }
    }

    #[test]
    fn route_rules_name_their_key() {
        let route = |body: &str| format!("[[route]]\n{body}\n");
        let ok =
            "name = \"orders\"\npath_prefix = \"/api/orders\"\nupstreams = [\"127.0.0.1:9001\"]";
        let with = |extra: &str| route(&format!("{ok}\n{extra}"));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "route"),
            (
                route("path_prefix = \"/a\"\nupstreams = [\"h:1\"]"),
                "route[0].name",
            ),
            (
                route("name = \"a b\"\npath_prefix = \"/a\"\nupstreams = [\"h:1\"]"),
                "route[0].name",
            ),
            (
                route("name = \"ordérs\"\npath_prefix = \"/a\"\nupstreams = [\"h:1\"]"),
                "route[0].name",
            ),
            (
                format!(
                    "{}{}",
                    route(ok),
                    route("name = \"orders\"\npath_prefix = \"/b\"\nupstreams = [\"h:1\"]")
                ),
                "route[1].name",
            ),
            (
                route("name = \"a\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"api\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/api/\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/api//x\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/api/./x\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/api/../x\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/%61pi\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/a%2fb\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/a;v=1\"\nupstreams = [\"h:1\"]"),
                "route[0].path_prefix",
            ),
            (
                format!(
                    "{}{}",
                    route(ok),
                    route("name = \"b\"\npath_prefix = \"/api/orders\"\nupstreams = [\"h:1\"]")
                ),
                "route[1].path_prefix",
            ),
            (
                format!(
                    "{}{}",
                    route(&format!("{ok}\nhost = \"A.example\"")),
                    route(
                        "name = \"b\"\npath_prefix = \"/api/orders\"\nhost = \"a.EXAMPLE\"\nupstreams = [\"h:1\"]"
                    )
                ),
                "route[1].path_prefix",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/a\""),
                "route[0].upstreams",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/a\"\nupstreams = []"),
                "route[0].upstreams",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/a\"\nupstreams = [\"h:1\", \"h\"]"),
                "route[0].upstreams[1]",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/a\"\nupstreams = [\"ftp://h:1\"]"),
                "route[0].upstreams[0]",
            ),
            (
                route("name = \"a\"\npath_prefix = \"/a\"\nupstreams = [\"http://h:1/x\"]"),
                "route[0].upstreams[0]",
            ),
            (with("host = \"a.example:8080\""), "route[0].host"),
            (with("host = \"https://a.example\""), "route[0].host"),
            (with("auth = \"maybe\""), "route[0].auth"),
            (with("auth = true"), "route[0].auth"),
            (with("critical = \"yes\""), "route[0].critical"),
            (with("token_ttl = \"10m\""), "route[0].token_ttl"),
            (with("token_ttl = \"500ms\""), "route[0].token_ttl"),
            (with("token_ttl = \"soon\""), "route[0].token_ttl"),
            (with("upstream = [\"h:1\"]"), "route[0].upstream"),
            ("[route]\nname = \"a\"".to_owned(), "route"),
        ];
        for (text, path) in &cases {
            let errors = Config::parse(text).expect_err(text);
            let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, [*path], "{text}\n{errors:#?}");
        }
    }

    #[test]
    fn reports_every_error_at_once() {
        let text = r#"
[server]
listen = "nope"
threads = 0

[redis]
url = "memcached://x"
pool_size = 100

[token]
algorithm = "HS256"

[[route]]
name = "a"
path_prefix = "/a/"
upstreams = ["h"]

[[route]]
name = "a"
path_prefix = "/b"
upstreams = ["h:1"]
auth = "sometimes"
"#;
        let errors = Config::parse(text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.listen",
                "server.threads",
                "redis.url",
                "redis.pool_size",
                "token.algorithm",
                "route[0].path_prefix",
                "route[0].upstreams[0]",
                "route[1].name",
                "route[1].auth",
            ]
        );
        let lines: Vec<usize> = errors
            .iter()
            .filter_map(|e| e.location.map(|(l, _)| l))
            .collect();
        assert_eq!(lines, [3, 4, 7, 8, 11, 15, 16, 19, 22]);
        assert_eq!(
            errors[0].to_string(),
            "server.listen: `nope` is not an IP address with a port, like `0.0.0.0:8080` or `[::]:8080` (line 3, column 10)"
        );
    }

    #[test]
    fn reports_every_shape_error_at_once() {
        let text = "bogus = 1\n[server]\nthreads = \"two\"\ncolour = \"blue\"\n[[route]]\nname = 7\nupstreams = [\"h:1\", 2]\n";
        let errors = Config::parse(text).expect_err("invalid");
        let got: Vec<(&str, Option<(usize, usize)>)> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.location))
            .collect();
        assert_eq!(
            got,
            [
                ("bogus", Some((1, 9))),
                ("server.threads", Some((3, 11))),
                ("server.colour", Some((4, 10))),
                // A rule error: the route has no path_prefix (located at its table).
                ("route[0].path_prefix", Some((5, 1))),
                // The rules skip keys that failed to deserialize (no "name must not be
                // empty", no "at least one upstream").
                ("route[0].name", Some((6, 8))),
                ("route[0].upstreams", Some((7, 13))),
            ]
        );
        assert!(
            errors[2].message.contains("unknown key `colour`"),
            "{}",
            errors[2].message
        );
        assert!(
            errors[2].message.contains("listen"),
            "lists the known keys: {}",
            errors[2].message
        );
    }

    #[test]
    fn shape_errors_do_not_hide_rule_errors() {
        let text = format!("[server]\nlisten = \"nope\"\ncolour = 1\nthreads = 0\n{MINIMAL}");
        let errors = Config::parse(&text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["server.listen", "server.colour", "server.threads"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let top = Config::parse(&format!("colour = \"blue\"\n{MINIMAL}")).expect_err("unknown key");
        assert_eq!(top[0].path, "colour");
        assert_eq!(top[0].location, Some((1, 10)));
        let in_route =
            Config::parse(&format!("{MINIMAL}pathprefix = \"/x\"\n")).expect_err("unknown key");
        assert_eq!(in_route[0].path, "route[0].pathprefix");
        assert!(
            in_route[0].message.contains("`pathprefix`"),
            "{}",
            in_route[0].message
        );
        assert_eq!(in_route[0].location, Some((6, 14)));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let errors = Config::parse("[server]\nthreads = = 2\n").expect_err("syntax");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "server.threads");
        assert_eq!(errors[0].location.map(|(l, _)| l), Some(2));
        assert!(
            errors[0].message.starts_with("invalid TOML"),
            "{}",
            errors[0].message
        );
        let dup = Config::parse("[server]\nthreads = 1\nthreads = 2\n").expect_err("duplicate key");
        assert_eq!(dup[0].location.map(|(l, _)| l), Some(3));
    }

    #[test]
    fn durations_accept_documented_forms() {
        for (s, d) in [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("5m", Duration::from_secs(300)),
            ("24h", Duration::from_secs(86_400)),
            ("0s", Duration::ZERO),
            ("1h 30m", Duration::from_secs(5400)),
        ] {
            let config = parse_ok(&format!("[session]\ncache_ttl = \"{s}\"\n{MINIMAL}"));
            assert_eq!(config.session.cache_ttl, d, "{s}");
        }
    }

    #[test]
    fn accelerated_key_rotation_is_accepted() {
        // The integration tests rotate every few seconds; the validator must allow it.
        for (rotate_every, publish_ahead) in [("3s", "2s"), ("2s", "1s"), ("1h", "59m59s")] {
            let config = parse_ok(&format!(
                "[keys]\nrotate_every = \"{rotate_every}\"\npublish_ahead = \"{publish_ahead}\"\n{MINIMAL}"
            ));
            assert!(config.keys.publish_ahead < config.keys.rotate_every);
        }
    }

    #[test]
    fn cookie_names() {
        for (name, ok) in [
            ("__Host-session", true),
            ("__Secure-sid", true),
            ("sid", true),
            ("s.i_d-1~", true),
            ("", false),
            ("a b", false),
            ("a,b", false),
            ("a\"b", false),
            ("sessión", false),
        ] {
            let result = Config::parse(&format!("[session]\ncookie = \"{name}\"\n{MINIMAL}"));
            assert_eq!(result.is_ok(), ok, "{name:?}: {result:?}");
        }
    }

    #[test]
    fn redis_schemes() {
        for scheme in validate::REDIS_SCHEMES {
            parse_ok(&format!("[redis]\nurl = \"{scheme}://h:6379\"\n{MINIMAL}"));
        }
    }

    #[test]
    fn effective_toml_round_trips() {
        for text in [SPEC_EXAMPLE, MINIMAL] {
            let config = parse_ok(text);
            let effective = config.to_effective_toml();
            assert_eq!(Config::parse(&effective), Ok(config), "{effective}");
        }
        let effective = parse_ok(MINIMAL).to_effective_toml();
        for line in [
            "rotate_every = \"24h\"",
            "timeout = \"250ms\"",
            "[[route]]",
            "audience = \"orders\"",
            "token_ttl = \"5m\"",
        ] {
            assert!(effective.contains(line), "missing {line:?} in\n{effective}");
        }
    }

    #[test]
    fn load_reports_unreadable_file() {
        let errors =
            Config::load(Path::new("/nonexistent/sessiongate.toml")).expect_err("missing file");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "/nonexistent/sessiongate.toml");
        assert!(
            errors[0].message.contains("cannot read"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn docs_examples_parse() {
        let doc = include_str!("../../../docs/configuration.md");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in doc.lines() {
            match (&mut current, line.trim_end()) {
                (None, "```toml") => current = Some(String::new()),
                (Some(block), "```") => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                (Some(block), l) => {
                    block.push_str(l);
                    block.push('\n');
                }
                (None, _) => {}
            }
        }
        assert!(current.is_none(), "unterminated ```toml block");
        assert!(
            blocks.len() >= 2,
            "docs/configuration.md has a full and a minimal example"
        );
        for block in &blocks {
            if let Err(errors) = Config::parse(block) {
                panic!(
                    "a ```toml block of docs/configuration.md does not parse: {errors:#?}\n{block}"
                );
            }
        }
    }

    #[test]
    fn docs_name_every_key() {
        let doc = include_str!("../../../docs/configuration.md");
        let effective: toml::Table =
            toml::from_str(&parse_ok(MINIMAL).to_effective_toml()).expect("toml");
        for (section, value) in &effective {
            let table = match value {
                toml::Value::Array(routes) => routes[0].as_table().expect("route table"),
                other => other.as_table().expect("section table"),
            };
            for key in table.keys() {
                let name = format!("`{section}.{key}`");
                assert!(
                    doc.contains(&name),
                    "docs/configuration.md does not document {name}"
                );
            }
        }
        assert!(
            doc.contains("`server.tls`"),
            "docs/configuration.md does not document `server.tls`"
        );
    }

    #[test]
    fn redact_url_hides_passwords_and_nothing_else() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://app:s3cret@h:6380", "rediss://app:***@h:6380"),
            ("redis://app@h:6379", "redis://app@h:6379"),
            ("redis://a:p@ss@h/0", "redis://a:***@h/0"),
            (
                "redis-sentinel://u:p@s1:26379/0?sentinelServiceName=m&sentinelPassword=x&node=s2:26379",
                "redis-sentinel://u:***@s1:26379/0?sentinelServiceName=m&sentinelPassword=***&node=s2:26379",
            ),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let config = Config::parse(
            "[redis]\nurl = \"redis://app:s3cret@redis:6379/0\"\n[keys]\nstore = \"file\"\ndir = \"/k\"\n[[route]]\nname = \"a\"\npath_prefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\n",
        )
        .expect("valid");
        let effective = config.to_effective_toml();
        assert!(!effective.contains("s3cret"), "{effective}");
        assert!(
            effective.contains("redis://app:***@redis:6379/0"),
            "{effective}"
        );
    }
}
