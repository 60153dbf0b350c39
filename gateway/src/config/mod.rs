//! Configuration: the TOML file of SPEC's Configuration section, parsed and validated
//! into plain typed values.
//!
//! [`schema`] mirrors the file (serde DTOs with the documented defaults); [`validate`]
//! turns text into a [`Config`] or into every [`ConfigError`] at once, each with its key
//! path and line. The types here hold only validated values: addresses are parsed,
//! enums are enums, optional strings are `Option`s, the session format's defaults and
//! each route's token lifetime are resolved. docs/configuration.md documents every key,
//! and a test parses its examples.
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
//! assert_eq!(config.session.subject_field, "/sub");
//! assert_eq!(config.token.ttl, std::time::Duration::from_secs(300));
//! ```

/// A closed set of names: an enum whose serde form and `as_str` are the names in the file.
macro_rules! names {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// The name used in the file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }
    };
}

pub mod schema;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use validate::{ConfigError, redact_url};

use schema::{
    ClaimsDto, ConfigDto, ExchangeDto, KeysDto, LogDto, RedisDto, RouteDto, ServerDto, SessionDto,
    StoreKind, TlsDto, TokenDto,
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
    /// Peers whose `X-Forwarded-For` is extended (and `X-Forwarded-Proto`/`-Host` kept):
    /// networks without host bits (a bare IP in the file is a /32 or /128).
    pub trusted_proxies: Vec<IpNet>,
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
    /// Redis URL as written, in one of fred's forms (parsed and checked, not connected).
    /// It may hold passwords: print it only through [`redact_url`].
    pub url: String,
    /// Per-command timeout (greater than zero).
    pub timeout: Duration,
    /// Connections in the pool (1 to 64).
    pub pool_size: usize,
    /// CA certificate(s) a `rediss://` server must chain to (system roots when `None`);
    /// only set with a TLS scheme.
    pub ca_file: Option<PathBuf>,
}

/// `[session]`, with the format's defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Who writes the sessions.
    pub format: SessionFormat,
    /// Session cookie name (a valid cookie-name token).
    pub cookie: String,
    /// Redis key prefix of sessions (non-empty, disjoint from `keys.redis_prefix`).
    pub key_prefix: String,
    /// Whether Redis keys hold SHA-256 of the cookie value (only ever true for
    /// [`SessionFormat::Sessiongate`]).
    pub hashed_keys: bool,
    /// Name of the env var holding express's cookie secret(s): `Some` (non-empty) exactly
    /// when the format is [`SessionFormat::Express`]. Not read here.
    pub secrets_env: Option<String>,
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
    /// The field that becomes the JWT `sub`, as an RFC 6901 JSON Pointer (`/sub`,
    /// `/passport/user`; escapes checked, the last segment non-empty).
    pub subject_field: String,
    /// Session fields copied into the JWT (names unique, none reserved).
    pub claims: Vec<ClaimConfig>,
    /// Whether the session cookie is forwarded upstream.
    pub forward_cookie: bool,
    /// Where browsers without a session are redirected: an absolute path or http(s) URL.
    pub login_url: Option<String>,
    /// How often open WebSockets and streams re-check their session while the push
    /// channel is down (greater than zero).
    pub stream_recheck: Duration,
}

names! {
    /// Who writes the sessions in Redis (SPEC "Sessions in Redis: formats").
    SessionFormat {
        /// sessiongate's own JSON sessions (`session create`, or a login service).
        Sessiongate = "sessiongate",
        /// express-session with connect-redis: signed cookie, JSON value.
        Express = "express",
        /// Django's `cache`/`cached_db` session engines: a pickled dict.
        Django = "django",
    }
}

/// One claim copied from the session into the JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimConfig {
    /// The claim's name in the JWT (non-empty, not one of [`validate::RESERVED_CLAIMS`]).
    pub name: String,
    /// Where it is read in the session, as an RFC 6901 JSON Pointer (`/roles`).
    pub pointer: String,
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

names! {
    /// JWT signing algorithm; its name is the JOSE `alg`.
    Algorithm {
        /// ECDSA P-256 with SHA-256.
        Es256 = "ES256",
        /// Ed25519.
        EdDsa = "EdDSA",
    }
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
    /// Prefix of the keyring's Redis keys: non-empty, neither a prefix of
    /// `session.key_prefix` nor starting with it.
    pub redis_prefix: String,
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

names! {
    /// How a route treats sessions.
    AuthMode {
        /// A valid session is required (401 or a login redirect otherwise).
        Required = "required",
        /// A valid session adds a token; requests without one pass without a token.
        Optional = "optional",
        /// No session lookup and no token.
        None = "none",
    }
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
    /// Exact Host to match: lowercase, no port, no trailing dot, IPv6 without brackets.
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
    /// WebSockets and streams on this route end after this long (greater than zero).
    pub max_connection_lifetime: Option<Duration>,
    /// Upstream connect timeout (greater than zero): past it, 502.
    pub connect_timeout: Duration,
    /// How long an upstream may stay silent while a response is awaited (greater than
    /// zero): past it, 504.
    pub read_timeout: Duration,
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

names! {
    /// Log output format.
    LogFormat {
        /// Human-readable lines.
        Human = "human",
        /// One JSON object per line.
        Json = "json",
    }
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
    /// `Config`, except that secrets in `redis.url` are shown as `***` (see
    /// [`redact_url`]). Printed by `sessiongate config check`.
    pub fn to_effective_toml(&self) -> String {
        let mut dto = ConfigDto::from(self);
        dto.redis.url = redact_url(&dto.redis.url).into_owned();
        toml::to_string(&dto).unwrap_or_else(|e| {
            // Every field is a string, number, bool, array or table: this cannot fail.
            format!("# the effective config could not be rendered: {e}\n")
        })
    }
}

impl SessionFormat {
    /// This format's defaults of `cookie`, `key_prefix` and `subject_field`, in that order.
    pub fn defaults(self) -> [&'static str; 3] {
        match self {
            SessionFormat::Sessiongate => ["__Host-session", "sg:session:", "sub"],
            SessionFormat::Express => ["connect.sid", "sess:", "/passport/user"],
            SessionFormat::Django => [
                "sessionid",
                ":1:django.contrib.sessions.cache",
                "/_auth_user_id",
            ],
        }
    }
}

impl From<&Config> for ConfigDto {
    fn from(c: &Config) -> Self {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let opt_text = |p: &Option<PathBuf>| p.as_deref().map(text).unwrap_or_default();
        let (s, k) = (&c.session, &c.keys);
        // A claim is written as a list entry when its name is the one the entry implies.
        let listed = |cl: &ClaimConfig| {
            let entry = validate::field_text(&cl.pointer);
            (validate::field(entry).is_ok_and(|(_, name)| name == cl.name))
                .then(|| entry.to_owned())
        };
        let claims = match s.claims.iter().map(listed).collect::<Option<Vec<_>>>() {
            Some(list) => ClaimsDto::List(list),
            None => ClaimsDto::Table(
                s.claims
                    .iter()
                    .map(|cl| (cl.name.clone(), cl.pointer.clone()))
                    .collect(),
            ),
        };
        ConfigDto {
            server: ServerDto {
                listen: c.server.listen,
                admin_listen: c.server.admin_listen,
                tls: c.server.tls.as_ref().map(|t| TlsDto {
                    cert: text(&t.cert),
                    key: text(&t.key),
                }),
                threads: c.server.threads,
                grace_period: c.server.grace_period,
                max_cookie_header_bytes: c.server.max_cookie_header_bytes,
                hsts: c.server.hsts.clone().unwrap_or_default(),
                upgrade_sock: text(&c.server.upgrade_sock),
                trusted_proxies: c
                    .server
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            redis: RedisDto {
                url: c.redis.url.clone(),
                timeout: c.redis.timeout,
                pool_size: c.redis.pool_size,
                ca_file: opt_text(&c.redis.ca_file),
            },
            session: SessionDto {
                format: s.format,
                cookie: Some(s.cookie.clone()),
                key_prefix: Some(s.key_prefix.clone()),
                hashed_keys: (s.format == SessionFormat::Sessiongate).then_some(s.hashed_keys),
                secrets_env: s.secrets_env.clone().unwrap_or_default(),
                cache_ttl: s.cache_ttl,
                negative_cache_ttl: s.negative_cache_ttl,
                cache_max_entries: s.cache_max_entries,
                cache_max_bytes: bytesize::ByteSize::b(s.cache_max_bytes),
                token_cache_max_bytes: bytesize::ByteSize::b(s.token_cache_max_bytes),
                push_invalidation: s.push_invalidation,
                subject_field: Some(validate::field_text(&s.subject_field).to_owned()),
                claims,
                forward_cookie: s.forward_cookie,
                login_url: s.login_url.clone().unwrap_or_default(),
                stream_recheck: s.stream_recheck,
            },
            token: TokenDto {
                issuer: c.token.issuer.clone(),
                ttl: c.token.ttl,
                algorithm: c.token.algorithm,
            },
            keys: KeysDto {
                store: match k.store {
                    KeyStoreConfig::Redis => StoreKind::Redis,
                    KeyStoreConfig::File { .. } => StoreKind::File,
                },
                dir: match &k.store {
                    KeyStoreConfig::Redis => String::new(),
                    KeyStoreConfig::File { dir } => text(dir),
                },
                rotate_every: k.rotate_every,
                publish_ahead: k.publish_ahead,
                kek_env: k.kek_env.clone(),
                redis_prefix: k.redis_prefix.clone(),
                clock_skew: k.clock_skew,
            },
            exchange: ExchangeDto {
                path: c.exchange.path.clone().unwrap_or_default(),
                allowed_origins: c.exchange.allowed_origins.clone(),
            },
            log: LogDto {
                format: c.log.format,
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
                        .map(|u| format!("{}{}", if u.tls { "https://" } else { "" }, u.addr))
                        .collect(),
                    audience: r.audience.clone(),
                    auth: r.auth,
                    critical: r.critical,
                    token_ttl: Some(r.token_ttl),
                    max_connection_lifetime: r.max_connection_lifetime,
                    connect_timeout: r.connect_timeout,
                    read_timeout: r.read_timeout,
                    ca_file: opt_text(&r.ca_file),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use url::Url;

    use super::*;

    /// SPEC's Configuration example, verbatim.
    const SPEC_EXAMPLE: &str = r#"
[server]
listen = "0.0.0.0:8080"            # proxy listener
admin_listen = "127.0.0.1:9090"    # /metrics /healthz /readyz and the JWKS
# tls = { cert = "cert.pem", key = "key.pem" }   # optional TLS on the proxy listener
threads = 2
trusted_proxies = []               # CIDRs of load balancers whose X-Forwarded-For is extended, not replaced

[redis]
url = "redis://127.0.0.1:6379/0"   # also rediss:// (TLS), cluster and sentinel forms
timeout = "250ms"                  # per command
pool_size = 4

[session]
format = "sessiongate"             # who writes the sessions: "sessiongate" | "express" | "django" (below)
cookie = "__Host-session"
key_prefix = "sg:session:"
hashed_keys = true                 # Redis key = key_prefix + lowercase hex SHA-256(cookie value)
cache_ttl = "5s"                   # the most a non-critical route may trust a cached session; "0s" disables the cache
subject_field = "sub"              # field of the session object that becomes the JWT `sub`
claims = ["roles", "email"]        # fields of the session object copied into the JWT
forward_cookie = false             # the session cookie never reaches upstreams unless true
login_url = ""                     # optional: browsers (GET, Accept: text/html) without a session are redirected here
stream_recheck = "1s"              # re-check of open WebSockets/streams while the push channel is down

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
redis_prefix = "sg:keys:"          # prefix of the keyring's Redis keys (store = "redis"); never under session.key_prefix

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
max_connection_lifetime = ""       # optional: WebSockets and streams on this route end after this long
connect_timeout = "2s"             # upstream connect; past it 502
read_timeout = "60s"               # upstream silent this long while a response is awaited: 504
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

    /// `patch` (TOML before the route) and [`MINIMAL`].
    fn with(patch: &str) -> String {
        format!("{patch}\n{MINIMAL}")
    }

    /// A `[[route]]` with `keys` (`;`-separated TOML lines), and name `a`, path_prefix
    /// `/a` and upstreams `["h:1"]` unless `keys` sets them or drops them (`!name`).
    fn route(keys: &str) -> String {
        let mut text = String::from("[[route]]\n");
        for (key, value) in [
            ("name", r#""a""#),
            ("path_prefix", r#""/a""#),
            ("upstreams", r#"["h:1"]"#),
        ] {
            if !keys.contains(&format!("{key} =")) && !keys.contains(&format!("!{key}")) {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        for line in keys
            .split("; ")
            .filter(|l| !l.is_empty() && !l.starts_with('!'))
        {
            text.push_str(&format!("{line}\n"));
        }
        text
    }

    fn claim(name: &str, pointer: &str) -> ClaimConfig {
        ClaimConfig {
            name: name.into(),
            pointer: pointer.into(),
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
            max_connection_lifetime: None,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
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
                trusted_proxies: Vec::new(),
            },
            redis: RedisConfig {
                url: "redis://127.0.0.1:6379/0".into(),
                timeout: Duration::from_millis(250),
                pool_size: 4,
                ca_file: None,
            },
            session: SessionConfig {
                format: SessionFormat::Sessiongate,
                cookie: "__Host-session".into(),
                key_prefix: "sg:session:".into(),
                hashed_keys: true,
                secrets_env: None,
                cache_ttl: Duration::from_secs(5),
                negative_cache_ttl: Duration::from_secs(1),
                push_invalidation: true,
                cache_max_entries: 100_000,
                cache_max_bytes: exchange::cache::DEFAULT_MAX_BYTES,
                token_cache_max_bytes: exchange::cache::DEFAULT_TOKEN_MAX_BYTES,
                subject_field: "/sub".into(),
                claims: vec![claim("roles", "/roles"), claim("email", "/email")],
                forward_cookie: false,
                login_url: None,
                stream_recheck: Duration::from_secs(1),
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
                redis_prefix: "sg:keys:".into(),
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
trusted_proxies = ["10.0.0.0/8", "fd00::/8", "192.168.1.7"]
grace_period = "5s"
max_cookie_header_bytes = 4096
upgrade_sock = "/run/sg/upgrade.sock"

[redis]
url = "rediss-cluster://redis-0:6379"
timeout = "1s"
pool_size = 64
ca_file = "/etc/sg/redis-ca.pem"

[session]
format = "sessiongate"
cookie = "sid"
key_prefix = "s:"
hashed_keys = false
secrets_env = ""
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
stream_recheck = "250ms"

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
redis_prefix = "gw:keys:"
clock_skew = "0s"

[exchange]
path = ""
allowed_origins = ["HTTPS://App.Example.com:443", "http://localhost:3000", "https://app.example.com"]

[log]
format = "json"
filter = "debug"

[[route]]
name = "pay.v2"
path_prefix = "/"
host = "Pay.Example.com."
upstreams = ["https://pay.internal:8443", "http://10.0.0.2:8080", "[::1]:9000"]
audience = "payments"
auth = "optional"
critical = true
token_ttl = "90s"
max_connection_lifetime = "1h"
connect_timeout = "500ms"
read_timeout = "5m"
ca_file = "/etc/sg/pay-ca.pem"

[[route]]
name = "static_files"
path_prefix = "/static"
upstreams = ["cdn:80"]
auth = "none"
"#,
        );
        let ip = |s: &str| s.parse::<IpNet>().expect("cidr");
        let up = |addr: &str, tls| Upstream {
            addr: addr.into(),
            tls,
        };
        let secs = Duration::from_secs;
        let mut expected = defaults();
        let s = &mut expected.server;
        s.listen = "[::]:8443".parse().expect("addr");
        s.admin_listen = "127.0.0.1:0".parse().expect("addr");
        let (cert, key) = ("/etc/sg/cert.pem".into(), "/etc/sg/key.pem".into());
        s.tls = Some(TlsConfig { cert, key });
        s.threads = 8;
        s.grace_period = secs(5);
        s.max_cookie_header_bytes = 4096;
        s.upgrade_sock = "/run/sg/upgrade.sock".into();
        s.trusted_proxies = vec![ip("10.0.0.0/8"), ip("fd00::/8"), ip("192.168.1.7/32")];
        let r = &mut expected.redis;
        r.url = "rediss-cluster://redis-0:6379".into();
        r.timeout = secs(1);
        r.pool_size = 64;
        r.ca_file = Some("/etc/sg/redis-ca.pem".into());
        let s = &mut expected.session;
        s.cookie = "sid".into();
        s.key_prefix = "s:".into();
        s.hashed_keys = false;
        s.cache_ttl = Duration::ZERO;
        s.negative_cache_ttl = Duration::from_millis(250);
        s.cache_max_entries = 10;
        s.cache_max_bytes = 64 << 20;
        s.token_cache_max_bytes = 0;
        s.push_invalidation = false;
        s.subject_field = "/user_id".into();
        s.claims = vec![];
        s.forward_cookie = true;
        s.login_url = Some("https://id.example.com/login?next=1".into());
        s.stream_recheck = Duration::from_millis(250);
        let t = &mut expected.token;
        t.issuer = "gw".into();
        t.ttl = secs(86_400);
        t.algorithm = Algorithm::EdDsa;
        let k = &mut expected.keys;
        k.store = KeyStoreConfig::File {
            dir: "/var/lib/sg/keys".into(),
        };
        k.rotate_every = secs(3600);
        k.publish_ahead = secs(600);
        k.kek_env = String::new();
        k.redis_prefix = "gw:keys:".into();
        k.clock_skew = Duration::ZERO;
        expected.exchange.path = None;
        expected.exchange.allowed_origins = vec![
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ];
        expected.log.format = LogFormat::Json;
        expected.log.filter = "debug".into();
        let p = &mut expected.routes[0];
        p.name = "pay.v2".into();
        p.path_prefix = "/".into();
        p.host = Some("pay.example.com".into());
        p.upstreams = vec![
            up("pay.internal:8443", true),
            up("10.0.0.2:8080", false),
            up("[::1]:9000", false),
        ];
        p.audience = "payments".into();
        p.auth = AuthMode::Optional;
        p.critical = true;
        p.token_ttl = secs(90);
        p.max_connection_lifetime = Some(secs(3600));
        p.connect_timeout = Duration::from_millis(500);
        p.read_timeout = secs(300);
        p.ca_file = Some("/etc/sg/pay-ca.pem".into());
        let mut files = orders_route();
        files.name = "static_files".into();
        files.path_prefix = "/static".into();
        files.upstreams = vec![up("cdn:80", false)];
        files.audience = "static_files".into();
        files.auth = AuthMode::None;
        files.token_ttl = secs(86_400);
        expected.routes.push(files);
        assert_eq!(config, expected);
        assert_eq!(Config::parse(&config.to_effective_toml()), Ok(config));
    }

    /// Each line: the key path of the one error expected, `|`, and the file: a patch put
    /// before [`MINIMAL`] (`\n` is a line break), `route:` and routes built by [`route`]
    /// (`+` between two), or `=` and the whole file.
    const ONE_ERROR: &str = r#"
server.listen | [server]\nlisten = "8080"
server.listen | [server]\nlisten = "localhost:8080"
server.admin_listen | [server]\nadmin_listen = ""
server.admin_listen | [server]\nadmin_listen = "0.0.0.0:8080"
server.threads | [server]\nthreads = 0
server.threads | [server]\nthreads = -1
server.tls.key | [server]\ntls = { cert = "c.pem" }
server.tls.cert | [server]\ntls = { key = "k.pem" }
server.tls | [server]\ntls = { cert = "c.pem", key = "k.pem", ca = "x" }
server.grace_period | [server]\ngrace_period = "soon"
server.max_cookie_header_bytes | [server]\nmax_cookie_header_bytes = 0
server.upgrade_sock | [server]\nupgrade_sock = ""
server.hsts | [server]\nhsts = "includeSubDomains"\ntls = { cert = "c.pem", key = "k.pem" }
server.hsts | [server]\nhsts = "max-age=60"
server.trusted_proxies[1] | [server]\ntrusted_proxies = ["10.0.0.0/8", "10.0.0.0/33"]
server.trusted_proxies[0] | [server]\ntrusted_proxies = ["10.0.0.1/8"]
server.trusted_proxies[0] | [server]\ntrusted_proxies = ["lb.internal"]
server.trusted_proxies | [server]\ntrusted_proxies = "10.0.0.0/8"
redis.ca_file | [redis]\nca_file = "/etc/ca.pem"
redis.ca_file | [redis]\nurl = "redis://h:6379"\nca_file = "/etc/ca.pem"
redis.url | [redis]\nurl = "http://127.0.0.1:6379"
redis.url | [redis]\nurl = "127.0.0.1:6379"
redis.url | [redis]\nurl = "redis://"
redis.url | [redis]\nurl = "redis://h:6379/0/1"
redis.url | [redis]\nurl = "redis://h:6379/x"
redis.url | [redis]\nurl = "redis://h:6379/0#x"
redis.url | [redis]\nurl = "redis://h:6379/0?sentinelUsername=a@b"
redis.timeout | [redis]\ntimeout = "0s"
redis.timeout | [redis]\ntimeout = 250
redis.pool_size | [redis]\npool_size = 0
redis.pool_size | [redis]\npool_size = 65
session.format | [session]\nformat = "rails"
session.format | [session]\nformat = "expres"\nsecrets_env = "S"\nhashed_keys = false
session.cookie | [session]\ncookie = ""
session.cookie | [session]\ncookie = "my session"
session.cookie | [session]\ncookie = "a=b"
session.cookie | [session]\ncookie = "a;b"
session.key_prefix | [session]\nkey_prefix = ""
session.hashed_keys | [session]\nhashed_keys = "yes"
session.hashed_keys | [session]\nformat = "django"\nhashed_keys = false
session.hashed_keys | [session]\nformat = "express"\nsecrets_env = "S"\nhashed_keys = true
session.secrets_env | [session]\nformat = "express"
session.secrets_env | [session]\nformat = "express"\nsecrets_env = "A=B"
session.secrets_env | [session]\nsecrets_env = "SG_SECRETS"
session.secrets_env | [session]\nformat = "django"\nsecrets_env = "SG_SECRETS"
session.subject_field | [session]\nsubject_field = ""
session.subject_field | [session]\nsubject_field = "/a~2b"
session.subject_field | [session]\nsubject_field = "/"
session.cache_max_entries | [session]\ncache_max_entries = 0
session.cache_max_bytes | [session]\ncache_max_bytes = "100KiB"
session.cache_max_bytes | [session]\ncache_max_bytes = "lots"
session.claims[1] | [session]\nclaims = ["roles", "exp"]
session.claims[0] | [session]\nclaims = ["sub"]
session.claims[0] | [session]\nclaims = ["chk"]
session.claims[0] | [session]\nclaims = ["/passport/exp"]
session.claims[1] | [session]\nclaims = ["roles", "roles"]
session.claims[1] | [session]\nclaims = ["roles", "/app/roles"]
session.claims[0] | [session]\nclaims = [""]
session.claims[0] | [session]\nclaims = ["/a/"]
session.claims[0] | [session]\nclaims = ["/a~"]
session.claims | [session]\nclaims = "roles"
session.claims.sub | [session]\nclaims = { uid = "/u", sub = "/user" }
session.claims.uid | [session]\nclaims = { uid = "" }
session.claims. | [session]\nclaims = { "" = "/u" }
session.claims | [session]\nclaims = { uid = 5 }
session.login_url | [session]\nlogin_url = "login"
session.login_url | [session]\nlogin_url = "//evil.example.com/"
session.login_url | [session]\nlogin_url = "ftp://x/login"
session.stream_recheck | [session]\nstream_recheck = "0s"
token.issuer | [token]\nissuer = ""
token.ttl | [token]\nttl = "500ms"
token.ttl | [token]\nttl = "25h"
token.algorithm | [token]\nalgorithm = "RS256"
token.algorithm | [token]\nalgorithm = "es256"
keys.store | [keys]\nstore = "vault"
keys.dir | [keys]\nstore = "file"
keys.kek_env | [keys]\nkek_env = ""
keys.kek_env | [keys]\nkek_env = "A=B"
keys.publish_ahead | [keys]\npublish_ahead = "0s"
keys.publish_ahead | [keys]\npublish_ahead = "500ms"
keys.publish_ahead | [keys]\npublish_ahead = "1500ms"
keys.rotate_every | [keys]\nrotate_every = "24h 500ms"
keys.clock_skew | [keys]\nclock_skew = "250ms"
keys.rotate_every | [keys]\nrotate_every = "30m"
keys.rotate_every | [keys]\nrotate_every = "1h"\npublish_ahead = "2h"
keys.redis_prefix | [keys]\nredis_prefix = ""
keys.redis_prefix | [keys]\nredis_prefix = "sg:session:keys:"
keys.redis_prefix | [keys]\nredis_prefix = "sg:"
keys.redis_prefix | [session]\nkey_prefix = "sg:keys:s:"
exchange.path | [exchange]\npath = "auth/token"
exchange.path | [exchange]\npath = "/auth//token"
exchange.allowed_origins[0] | [exchange]\nallowed_origins = ["*"]
exchange.allowed_origins[1] | [exchange]\nallowed_origins = ["https://a.example", "https://b.example/app"]
exchange.allowed_origins[0] | [exchange]\nallowed_origins = ["app.example.com"]
log.format | [log]\nformat = "xml"
server.port | [server]\nlisten = "0.0.0.0:8080"\nport = 80
session.cookie_name | [session]\ncookie_name = "x"
listen | listen = "0.0.0.0:8080"
metrics | [metrics]\nenabled = true
server | server = 1
route | = route = 1\n#
route | = [route]\nname = "a"
route | =
route[0].name | route: !name
route[0].name | route: name = "a b"
route[0].name | route: name = "ordérs"
route[0].name | route: name = 7
route[1].name | route:  + path_prefix = "/b"
route[0].path_prefix | route: !path_prefix
route[0].path_prefix | route: path_prefix = "api"
route[0].path_prefix | route: path_prefix = "/api/"
route[0].path_prefix | route: path_prefix = "/api//x"
route[0].path_prefix | route: path_prefix = "/api/./x"
route[0].path_prefix | route: path_prefix = "/api/../x"
route[0].path_prefix | route: path_prefix = "/%61pi"
route[0].path_prefix | route: path_prefix = "/a%2fb"
route[0].path_prefix | route: path_prefix = "/a;v=1"
route[1].path_prefix | route:  + name = "b"
route[1].path_prefix | route: host = "A.example" + name = "b"; host = "a.EXAMPLE."
route[0].upstreams | route: !upstreams
route[0].upstreams | route: upstreams = []
route[0].upstreams | route: upstreams = ["h:1", 2]
route[0].upstreams[1] | route: upstreams = ["h:1", "h"]
route[0].upstreams[0] | route: upstreams = ["ftp://h:1"]
route[0].upstreams[0] | route: upstreams = ["http://h:1/x"]
route[0].host | route: host = "a.example:8080"
route[0].host | route: host = "https://a.example"
route[0].host | route: host = "a.."
route[0].auth | route: auth = "maybe"
route[0].auth | route: auth = true
route[0].critical | route: critical = "yes"
route[0].token_ttl | route: token_ttl = "10m"
route[0].token_ttl | route: token_ttl = "500ms"
route[0].token_ttl | route: token_ttl = "soon"
route[0].max_connection_lifetime | route: max_connection_lifetime = "0s"
route[0].max_connection_lifetime | route: max_connection_lifetime = "forever"
route[0].connect_timeout | route: connect_timeout = "0s"
route[0].connect_timeout | route: connect_timeout = ""
route[0].read_timeout | route: read_timeout = "0s"
route[0].upstream | route: upstream = ["h:1"]
"#;

    #[test]
    fn each_rule_names_its_key() {
        for case in ONE_ERROR.lines().filter(|l| !l.is_empty()) {
            let (path, file) = case.split_once(" | ").expect("path | file");
            let file = file.replace("\\n", "\n");
            let text = match (file.strip_prefix("route:"), file.strip_prefix('=')) {
                (Some(routes), _) => routes.split(" + ").map(|keys| route(keys.trim())).collect(),
                (None, Some(whole)) => whole.trim_start().to_owned(),
                (None, None) => with(&file),
            };
            let errors = Config::parse(&text).expect_err(case);
            let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, [path], "{case}\n{text}\n{errors:#?}");
            assert!(!errors[0].message.is_empty());
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
        assert!(
            errors[4].message.contains("`ES256`, `EdDSA`")
                || errors[4].message.contains("`ES256` or `EdDSA`"),
            "{}",
            errors[4].message
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
        let text =
            with("[server]\nlisten = \"nope\"\ncolour = 1\nthreads = 0\ntrusted_proxies = [\"x\"]");
        let errors = Config::parse(&text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        let expected = [
            "server.listen",
            "server.colour",
            "server.threads",
            "server.trusted_proxies[0]",
        ];
        assert_eq!(paths, expected);
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
            let config = parse_ok(&with(&format!("[session]\ncache_ttl = \"{s}\"")));
            assert_eq!(config.session.cache_ttl, d, "{s}");
        }
    }

    #[test]
    fn accelerated_key_rotation_is_accepted() {
        // The integration tests rotate every few seconds; the validator must allow it.
        for (rotate_every, publish_ahead) in [("3s", "2s"), ("2s", "1s"), ("1h", "59m59s")] {
            let keys = format!(
                "[keys]\nrotate_every = \"{rotate_every}\"\npublish_ahead = \"{publish_ahead}\""
            );
            let config = parse_ok(&with(&keys));
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
            let result = Config::parse(&with(&format!("[session]\ncookie = {name:?}")));
            assert_eq!(result.is_ok(), ok, "{name:?}: {result:?}");
        }
    }

    #[test]
    fn redis_schemes() {
        for scheme in validate::REDIS_SCHEMES {
            parse_ok(&with(&format!("[redis]\nurl = \"{scheme}://h:6379\"")));
        }
        for db in ["", "/", "/0", "/15", "/255"] {
            parse_ok(&with(&format!("[redis]\nurl = \"redis://u:p@h:6379{db}\"")));
        }
    }

    #[test]
    fn session_formats_set_their_defaults() {
        // [session] patch | format | cookie | key_prefix | subject_field | hashed_keys | secrets_env
        let cases = r#"
| sessiongate | __Host-session | sg:session: | /sub | true |
format = "express"\nsecrets_env = "SG_S" | express | connect.sid | sess: | /passport/user | false | SG_S
format = "django" | django | sessionid | :1:django.contrib.sessions.cache | /_auth_user_id | false |
format = "django"\ncookie = "sid"\nkey_prefix = "dj:"\nsubject_field = "uid" | django | sid | dj: | /uid | false |
hashed_keys = false\nsubject_field = "/user/id" | sessiongate | __Host-session | sg:session: | /user/id | false |
"#;
        for case in cases.lines().filter(|l| !l.is_empty()) {
            let [patch, format, cookie, key_prefix, subject, hashed, secrets] =
                <[&str; 7]>::try_from(case.split('|').map(str::trim).collect::<Vec<_>>())
                    .expect(case);
            let config = parse_ok(&with(&format!("[session]\n{}", patch.replace("\\n", "\n"))));
            let s = &config.session;
            let got = (
                s.format.as_str(),
                s.cookie.as_str(),
                s.key_prefix.as_str(),
                s.subject_field.as_str(),
            );
            assert_eq!(got, (format, cookie, key_prefix, subject), "{case}");
            assert_eq!(s.hashed_keys.to_string(), hashed, "{case}");
            assert_eq!(
                s.secrets_env.as_deref().unwrap_or_default(),
                secrets,
                "{case}"
            );
            let effective = config.to_effective_toml();
            assert_eq!(
                effective.contains("hashed_keys"),
                format == "sessiongate",
                "{effective}"
            );
            assert_eq!(Config::parse(&effective), Ok(config), "{effective}");
        }
    }

    #[test]
    fn claims_are_fields_pointers_or_a_table() {
        let (roles, user) = (claim("roles", "/roles"), claim("user", "/passport/user"));
        let cases = [
            (
                r#"["roles", "/passport/user", "/a~1b/c~0d", "x/y"]"#,
                vec![
                    roles.clone(),
                    user.clone(),
                    claim("c~d", "/a~1b/c~0d"),
                    claim("x/y", "/x~1y"),
                ],
            ),
            (
                r#"{ uid = "/passport/user", roles = "roles" }"#,
                vec![roles.clone(), claim("uid", "/passport/user")],
            ),
            (
                r#"{ roles = "/roles", user = "/passport/user" }"#,
                vec![roles, user],
            ),
            ("[]", vec![]),
        ];
        for (claims, expected) in cases {
            let config = parse_ok(&with(&format!("[session]\nclaims = {claims}")));
            assert_eq!(config.session.claims, expected, "{claims}");
            let effective = config.to_effective_toml();
            assert_eq!(Config::parse(&effective), Ok(config), "{effective}");
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
            "subject_field = \"sub\"",
            "claims = [\"roles\", \"email\"]",
            "max_connection_lifetime = \"\"",
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
        let blocks: Vec<&str> = doc.split("\n```toml\n").skip(1).collect();
        assert!(
            blocks.len() >= 5,
            "docs/configuration.md has its five examples"
        );
        for block in blocks {
            let (block, _) = block.split_once("\n```\n").expect("a ```toml block ends");
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
        for name in ["`server.tls`", "`session.secrets_env`"] {
            assert!(
                doc.contains(name),
                "docs/configuration.md does not document {name}"
            );
        }
        // The table of the formats' defaults.
        for format in [
            SessionFormat::Sessiongate,
            SessionFormat::Express,
            SessionFormat::Django,
        ] {
            let [cookie, key_prefix, subject] = format.defaults();
            let row = format!(
                "| `{}` | `{cookie}` | `{key_prefix}` | `{subject}` |",
                format.as_str()
            );
            assert!(
                doc.contains(&row),
                "docs/configuration.md lacks the defaults row {row}"
            );
        }
    }

    #[test]
    fn redact_url_hides_passwords_and_nothing_else() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://app:s3cret@h:6380", "rediss://app:***@h:6380"),
            ("redis://app@h:6379", "redis://app@h:6379"),
            ("redis://a:p@ss@h/0", "redis://a:***@h/0"),
            ("redis://a:p%2Fss@h/0", "redis://a:***@h/0"),
            (
                "redis-sentinel://u:p@s1:26379/0?sentinelServiceName=m&sentinelPassword=x&node=s2:26379",
                "redis-sentinel://u:***@s1:26379/0?sentinelServiceName=m&sentinelPassword=***&node=s2:26379",
            ),
            (
                "redis-sentinel://s1/0?sentinel%50assword=x",
                "redis-sentinel://s1/0?sentinel%50assword=***",
            ),
            (
                "redis-sentinel://r/0?sentinelServiceName=\u{e9}sentinelPassword=x",
                "redis-sentinel://r/0?sentinelServiceName=***",
            ),
            ("redis://u:p/ss@h/0", "redis://***"),
            ("redis://u:12#34@h/0", "redis://***"),
            ("u:p@h", "***"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let config = parse_ok(&with(
            "[redis]\nurl = \"redis://app:s3cret@redis:6379/0\"\n[keys]\nstore = \"file\"\ndir = \"/k\"",
        ));
        let effective = config.to_effective_toml();
        assert!(!effective.contains("s3cret"), "{effective}");
        assert!(
            effective.contains("redis://app:***@redis:6379/0"),
            "{effective}"
        );
    }

    /// SPEC: no Redis password is ever printed, whatever its encoding; a URL that cannot be
    /// parsed is refused without being echoed.
    #[test]
    fn no_output_shows_a_redis_password() {
        // (url, its secret, whether it is refused)
        let cases = [
            ("redis://:Zs3cr/et@redis.internal:6379/0", "Zs3cr", true),
            ("redis://u:Zs3?cret@redis.internal/0", "Zs3", true),
            ("redis://u:Zs3#cret@redis.internal/0", "Zs3", true),
            ("redis://u:1234/5678@redis.internal", "5678", true),
            ("redis://u:1234#5678@redis.internal", "5678", true),
            ("redis://u:4321?Zx@redis.internal/0", "4321", true),
            ("redis://u:Zs3cret@", "Zs3cret", true),
            ("redis://u:Zs3cret@redis.internal:99999", "Zs3cret", true),
            ("redis://u:Zs3cret@redis.internal:6379/0/1", "Zs3cret", true),
            ("redis://u:Zs3cret@redis.internal/0#x", "Zs3cret", true),
            ("memcached://u:Zs3cret@redis.internal", "Zs3cret", true),
            ("redis://u:Zp@ss:w0rd@redis.internal/0", "w0rd", false),
            ("redis://u:Zs3cr%2Fet@redis.internal/0", "Zs3cr", false),
            ("redis://u:%5As3cret@redis.internal/0", "%5As3cret", false),
            ("redis://:Zs3cret@redis.internal/0?x=1", "Zs3cret", true),
            (
                "redis-sentinel://redis.internal/0?sentinelServiceName=m&sentinelPasword=Zs3",
                "Zs3",
                true,
            ),
            (
                "redis-sentinel://redis.internal/0?sentinelServiceName=msentinelPassword=Zs3",
                "Zs3",
                false,
            ),
            (
                "redis-sentinel://redis.internal/0?sentinelServiceName=m&sentinelPassword=Zs3",
                "Zs3",
                false,
            ),
            (
                "redis-sentinel://redis.internal/0?sentinel%50assword=Zs3&sentinelServiceName=m",
                "Zs3",
                false,
            ),
            (
                "redis-sentinel://redis.internal/0?sentinelPassword=Zs3/c?r@t",
                "Zs3",
                true,
            ),
        ];
        for (url, secret, refused) in cases {
            let text = with(&format!(
                "[redis]\nurl = \"{url}\"\n[keys]\nstore = \"file\"\ndir = \"/k\""
            ));
            let output = match Config::parse(&text) {
                Ok(config) => config.to_effective_toml(),
                Err(errors) => errors.iter().map(|e| format!("{e}\n")).collect(),
            };
            assert_eq!(
                output.starts_with("redis.url: "),
                refused,
                "{url}: {output}"
            );
            assert!(!output.contains(secret), "{url}: {output}");
            assert!(
                !redact_url(url).contains(secret),
                "{url}: {}",
                redact_url(url)
            );
            if refused && Url::parse(url).is_err() {
                assert!(
                    !output.contains("redis.internal"),
                    "{url} is echoed: {output}"
                );
            }
        }
        // Nor does a syntax error on its line.
        let errors = Config::parse("[redis]\nurl = \"redis://:Zs3cret@h\n").expect_err("syntax");
        assert!(!errors[0].to_string().contains("Zs3cret"), "{}", errors[0]);
    }

    // === properties ===

    use proptest::prelude::*;

    /// Values the generated files assign to the real keys: valid and invalid ones of
    /// every type a key takes (shared with fuzz/fuzz_targets/config.rs).
    static VALUES: std::sync::LazyLock<Vec<&'static str>> =
        std::sync::LazyLock::new(|| sample_values(include_str!("sample-values.txt")));

    /// The lines of `text` that are neither empty nor comments.
    fn sample_values(text: &'static str) -> Vec<&'static str> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    fn value(i: usize) -> toml::Value {
        let table: toml::Table = toml::from_str(&format!("v = {}", VALUES[i])).unwrap();
        table["v"].clone()
    }

    /// One change to a valid file.
    #[derive(Debug, Clone)]
    enum Edit {
        /// Set a key of a section (or of a route) to one of [`VALUES`].
        Set(prop::sample::Index, prop::sample::Index, usize),
        /// Remove a key.
        Remove(prop::sample::Index, prop::sample::Index),
        /// Add a key no section has.
        Unknown(prop::sample::Index),
        /// Add a copy of the first route, renamed, under another prefix.
        Route(usize, &'static str),
        /// Set `redis.url` to one with a password (`Zs3cret`, which no output may show).
        Password(&'static str),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let i = any::<prop::sample::Index>;
        prop_oneof![
            6 => (i(), i(), 0..VALUES.len()).prop_map(|(s, k, v)| Edit::Set(s, k, v)),
            1 => (i(), i()).prop_map(|(s, k)| Edit::Remove(s, k)),
            1 => i().prop_map(Edit::Unknown),
            1 => (0..3_usize, prop::sample::select(vec!["/", "/b", "/a/b", "/api/orders"]))
                .prop_map(|(n, p)| Edit::Route(n, p)),
            1 => prop::sample::select(vec![
                "redis://app:Zs3cret@r:6379/0",
                "rediss://:Zs3cret@r",
                "redis://u:Zs3cret/x@r",
                "redis-sentinel://r/0?sentinelServiceName=m&sentinelPassword=Zs3cret",
            ])
            .prop_map(Edit::Password),
        ]
    }

    /// The effective file of [`MINIMAL`] (every key of every section, one route) with
    /// `edits` applied, as TOML text.
    fn edited(edits: &[Edit]) -> String {
        let mut file: toml::Table = toml::from_str(&parse_ok(MINIMAL).to_effective_toml()).unwrap();
        let sections: Vec<String> = file.keys().cloned().collect();
        for e in edits {
            let table = |file: &mut toml::Table, s: &prop::sample::Index| -> Option<toml::Table> {
                let name = s.get(&sections);
                match file.get(name)? {
                    toml::Value::Table(t) => Some(t.clone()),
                    toml::Value::Array(routes) => routes.first()?.as_table().cloned(),
                    _ => None,
                }
            };
            let put = |file: &mut toml::Table, s: &prop::sample::Index, t: toml::Table| {
                let name = s.get(&sections).clone();
                match file.get_mut(&name) {
                    Some(toml::Value::Array(routes)) if !routes.is_empty() => routes[0] = t.into(),
                    _ => {
                        file.insert(name, t.into());
                    }
                }
            };
            match e {
                Edit::Set(s, k, v) => {
                    if let Some(mut t) = table(&mut file, s) {
                        if let Some(key) = t.keys().nth(k.index(t.len().max(1))).cloned() {
                            t.insert(key, value(*v));
                        }
                        put(&mut file, s, t);
                    }
                }
                Edit::Remove(s, k) => {
                    if let Some(mut t) = table(&mut file, s) {
                        if let Some(key) = t.keys().nth(k.index(t.len().max(1))).cloned() {
                            t.remove(&key);
                        }
                        put(&mut file, s, t);
                    }
                }
                Edit::Unknown(s) => {
                    if let Some(mut t) = table(&mut file, s) {
                        t.insert("unknown_key".into(), 1.into());
                        put(&mut file, s, t);
                    }
                }
                Edit::Password(url) => {
                    if let Some(toml::Value::Table(redis)) = file.get_mut("redis") {
                        redis.insert("url".into(), (*url).into());
                    }
                }
                Edit::Route(n, prefix) => {
                    if let Some(toml::Value::Array(routes)) = file.get_mut("route")
                        && let Some(mut route) = routes.first().and_then(|r| r.as_table()).cloned()
                    {
                        route.insert("name".into(), format!("r{n}").into());
                        route.insert("audience".into(), format!("r{n}").into());
                        route.insert("path_prefix".into(), (*prefix).into());
                        routes.push(route.into());
                    }
                }
            }
        }
        toml::to_string(&file).unwrap()
    }

    /// What holds of every parse: errors name where they are; a config that parses
    /// prints an effective file that parses back to it (the Redis password shown as
    /// `***`); no output shows the Redis password.
    fn check_parse(text: &str) -> Result<(), TestCaseError> {
        match Config::parse(text) {
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                let lines = text.split('\n').count();
                for e in &errors {
                    prop_assert!(!e.path.is_empty(), "an error without a path: {:?}", e);
                    prop_assert!(!e.to_string().contains("Zs3cret"), "{}", e);
                    if let Some((line, col)) = e.location {
                        prop_assert!(line >= 1 && line <= lines && col >= 1, "{:?}", e);
                    }
                }
            }
            Ok(config) => {
                let effective = config.to_effective_toml();
                prop_assert!(!effective.contains("Zs3cret"), "{}", effective);
                let mut expected = config.clone();
                expected.redis.url = redact_url(&config.redis.url).into_owned();
                prop_assert_eq!(Config::parse(&effective), Ok(expected), "{}", effective);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn edited_files_parse_or_name_every_error(edits in prop::collection::vec(edit(), 0..6)) {
            check_parse(&edited(&edits))?;
        }

        #[test]
        fn arbitrary_text_never_panics(
            text in prop_oneof![
                any::<String>(),
                "([\\[\\]a-z_. =\"'{}0-9,\n#-]|route|server|session|redis){0,40}",
            ],
        ) {
            check_parse(&text)?;
        }

        #[test]
        fn damaged_files_never_panic(
            edits in prop::collection::vec(edit(), 0..3),
            at in any::<prop::sample::Index>(),
            insert in prop::sample::select(vec!["\"", "'", "[", "]", "=", "\n", "#", "\\", "\u{e9}", "{", ",", ""]),
            cut in 0..3_usize,
        ) {
            let text = edited(&edits);
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let end = (at + cut).min(text.len());
            let end = (end..=text.len()).find(|&e| text.is_char_boundary(e)).unwrap_or(text.len());
            check_parse(&format!("{}{insert}{}", &text[..at], &text[end..]))?;
        }
    }
}
