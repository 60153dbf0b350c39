//! The TOML schema: serde DTOs that mirror SPEC's Configuration section key for key.
//!
//! These types only describe the file; they hold strings where the file holds strings.
//! [`super::validate`] checks them and builds the typed [`super::Config`]. Every struct
//! denies unknown keys and fills absent keys from its `Default`, whose values are the
//! documented defaults (docs/configuration.md). Keys marked *extension* are ours, beyond
//! SPEC.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigDto {
    /// `[server]`: listeners and process settings.
    pub server: ServerDto,
    /// `[redis]`: the session (and key) store.
    pub redis: RedisDto,
    /// `[session]`: the session cookie and its Redis schema.
    pub session: SessionDto,
    /// `[token]`: the JWTs minted for upstreams.
    pub token: TokenDto,
    /// `[keys]`: signing keys and their rotation.
    pub keys: KeysDto,
    /// `[exchange]`: the cookie-for-JWT endpoint and the Origin allow-list.
    pub exchange: ExchangeDto,
    /// `[log]` (*extension*): log format and filter.
    pub log: LogDto,
    /// `[[route]]`: the routes, at least one.
    #[serde(rename = "route")]
    pub routes: Vec<RouteDto>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerDto {
    /// Proxy listener address. Default `"0.0.0.0:8080"`.
    pub listen: String,
    /// Admin listener address (/metrics, /healthz, /readyz, JWKS). Default `"127.0.0.1:9090"`.
    pub admin_listen: String,
    /// Optional TLS on the proxy listener, `{ cert = "...", key = "..." }`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsDto>,
    /// Worker threads of the proxy service. Default `2`.
    pub threads: usize,
    /// *Extension.* How long a graceful shutdown waits for requests in flight. Default `"30s"`.
    #[serde(with = "duration")]
    pub grace_period: Duration,
    /// *Extension.* Requests whose `Cookie` header is larger get 400. Default `8192`.
    pub max_cookie_header_bytes: usize,
    /// *Extension.* `Strict-Transport-Security` value added to responses on a TLS
    /// listener, e.g. `"max-age=31536000; includeSubDomains"`. Default `""` (none).
    pub hsts: String,
    /// *Extension.* Unix socket used to hand listeners over in a graceful upgrade.
    /// Default `"/tmp/sessiongate-upgrade.sock"`.
    pub upgrade_sock: String,
}

/// `server.tls`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsDto {
    /// PEM certificate chain. Required.
    pub cert: String,
    /// PEM private key. Required.
    pub key: String,
}

/// `[redis]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisDto {
    /// Redis URL (fred's forms). Default `"redis://127.0.0.1:6379/0"`.
    pub url: String,
    /// Per-command timeout. Default `"250ms"`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Connections in the pool. Default `4`.
    pub pool_size: usize,
    /// *Extension.* PEM CA certificate(s) a `rediss://` server must chain to; `""`
    /// means the system roots. Default `""`.
    pub ca_file: String,
}

/// `[session]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionDto {
    /// Session cookie name. Default `"__Host-session"`.
    pub cookie: String,
    /// Redis key prefix of sessions. Default `"sg:session:"`.
    pub key_prefix: String,
    /// Whether the Redis key holds SHA-256 of the cookie rather than the cookie. Default `true`.
    pub hashed_keys: bool,
    /// The most a non-critical route trusts a cached session; `"0s"` disables. Default `"5s"`.
    #[serde(with = "duration")]
    pub cache_ttl: Duration,
    /// *Extension.* How long a missing session is remembered. Default `"1s"`.
    #[serde(with = "duration")]
    pub negative_cache_ttl: Duration,
    /// *Extension.* Most sessions held in the cache. Default `100000`.
    pub cache_max_entries: usize,
    /// *Extension.* Most bytes cached sessions hold, as bytes or a size like
    /// `"320MiB"`. Default `"256MiB"`.
    #[serde(with = "size")]
    pub cache_max_bytes: ByteSize,
    /// *Extension.* Most bytes tokens kept for reuse hold; `0` keeps none. Default
    /// `"64MiB"`.
    #[serde(with = "size")]
    pub token_cache_max_bytes: ByteSize,
    /// *Extension.* Whether Redis pushes session-key invalidations (`CLIENT TRACKING`),
    /// so revocations reach the cache in milliseconds. Default `true`.
    pub push_invalidation: bool,
    /// Session field that becomes the JWT `sub`. Default `"sub"`.
    pub subject_field: String,
    /// Session fields copied into the JWT. Default `["roles", "email"]`.
    pub claims: Vec<String>,
    /// Whether the session cookie is forwarded upstream. Default `false`.
    pub forward_cookie: bool,
    /// Where browsers without a session are redirected; `""` disables. Default `""`.
    pub login_url: String,
}

/// `[token]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenDto {
    /// JWT `iss`. Default `"https://gateway.internal"`.
    pub issuer: String,
    /// JWT lifetime. Default `"5m"`.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// `"ES256"` or `"EdDSA"`. Default `"ES256"`.
    pub algorithm: String,
}

/// `[keys]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysDto {
    /// `"redis"` or `"file"`. Default `"redis"`.
    pub store: String,
    /// Key directory for `store = "file"`. Default `""`.
    pub dir: String,
    /// How often a new signing key takes over. Default `"24h"`.
    #[serde(with = "duration")]
    pub rotate_every: Duration,
    /// How long a new key is published before it signs. Default `"30m"`.
    #[serde(with = "duration")]
    pub publish_ahead: Duration,
    /// Env var holding the key-encryption key for `store = "redis"`. Default `"SESSIONGATE_KEK"`.
    pub kek_env: String,
    /// *Extension.* Verifier clock skew a retired key stays published for. Default `"60s"`.
    #[serde(with = "duration")]
    pub clock_skew: Duration,
}

/// `[exchange]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangeDto {
    /// Path of the exchange endpoint; `""` disables. Default `"/auth/token"`.
    pub path: String,
    /// Origins allowed to exchange and to send unsafe cookie-carrying requests. Default `[]`.
    pub allowed_origins: Vec<String>,
}

/// `[log]` (*extension*).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogDto {
    /// `"human"` or `"json"`. Default `"human"`.
    pub format: String,
    /// `RUST_LOG`-style filter. Default `"warn,sessiongate=info,gateway=info,exchange=info,keys=info"`.
    pub filter: String,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteDto {
    /// Route name, a metric label. Required.
    pub name: String,
    /// Normalized path prefix, matched on segment boundaries. Required.
    pub path_prefix: String,
    /// Exact Host to match; `""` matches any. Default `""`.
    pub host: String,
    /// `"host:port"`, `"http://host:port"` or `"https://host:port"`. At least one required.
    pub upstreams: Vec<String>,
    /// JWT `aud`; `""` means the route's name. Default `""`.
    pub audience: String,
    /// `"required"`, `"optional"` or `"none"`. Default `"required"`.
    pub auth: String,
    /// Whether every request re-checks the session in Redis. Default `false`.
    pub critical: bool,
    /// Token lifetime override, at most `token.ttl`; `""` means `token.ttl`. Default `""`.
    pub token_ttl: String,
    /// *Extension.* PEM CA certificate that `https://` upstreams must chain to; `""`
    /// means the system roots. Default `""`.
    pub ca_file: String,
}

// === impl Default ===

impl Default for ServerDto {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            tls: None,
            threads: 2,
            grace_period: Duration::from_secs(30),
            max_cookie_header_bytes: 8192,
            hsts: String::new(),
            upgrade_sock: "/tmp/sessiongate-upgrade.sock".into(),
        }
    }
}

impl Default for RedisDto {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            timeout: Duration::from_millis(250),
            pool_size: 4,
            ca_file: String::new(),
        }
    }
}

impl Default for SessionDto {
    fn default() -> Self {
        Self {
            cookie: "__Host-session".into(),
            key_prefix: "sg:session:".into(),
            hashed_keys: true,
            cache_ttl: Duration::from_secs(5),
            negative_cache_ttl: Duration::from_secs(1),
            push_invalidation: true,
            cache_max_entries: 100_000,
            cache_max_bytes: ByteSize::b(exchange::cache::DEFAULT_MAX_BYTES),
            token_cache_max_bytes: ByteSize::b(exchange::cache::DEFAULT_TOKEN_MAX_BYTES),
            subject_field: "sub".into(),
            claims: vec!["roles".into(), "email".into()],
            forward_cookie: false,
            login_url: String::new(),
        }
    }
}

impl Default for TokenDto {
    fn default() -> Self {
        Self {
            issuer: "https://gateway.internal".into(),
            ttl: Duration::from_secs(5 * 60),
            algorithm: "ES256".into(),
        }
    }
}

impl Default for KeysDto {
    fn default() -> Self {
        Self {
            store: "redis".into(),
            dir: String::new(),
            rotate_every: Duration::from_secs(24 * 3600),
            publish_ahead: Duration::from_secs(30 * 60),
            kek_env: "SESSIONGATE_KEK".into(),
            clock_skew: Duration::from_secs(60),
        }
    }
}

impl Default for ExchangeDto {
    fn default() -> Self {
        Self {
            path: "/auth/token".into(),
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for LogDto {
    fn default() -> Self {
        Self {
            format: "human".into(),
            filter: "warn,sessiongate=info,gateway=info,exchange=info,keys=info".into(),
        }
    }
}

impl Default for RouteDto {
    fn default() -> Self {
        Self {
            name: String::new(),
            path_prefix: String::new(),
            host: String::new(),
            upstreams: Vec::new(),
            audience: String::new(),
            auth: "required".into(),
            critical: false,
            token_ttl: String::new(),
            ca_file: String::new(),
        }
    }
}

/// Formats a duration the way people write them in the file: the largest whole unit
/// among `h`, `m`, `s`, `ms` (`"24h"`, `"30m"`, `"250ms"`, `"0s"`), else humantime's form.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return humantime::format_duration(d).to_string();
    }
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde adapter: humantime strings in, [`format_duration`] strings out.
mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime_serde::deserialize(d)
    }

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

/// Byte sizes: an integer (bytes) or a string with a unit, like `"256MiB"`.
mod size {
    use bytesize::ByteSize;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serialize, Serializer};

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = ByteSize;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(r#"a size like "256MiB" or "1GiB" (KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000), or a number of bytes"#)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
            Ok(ByteSize::b(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
            u64::try_from(v)
                .map(ByteSize::b)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    pub(super) fn serialize<S: Serializer>(v: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        // IEC units, which parse back to the same number of bytes when it is a whole
        // number of them; otherwise the exact byte count.
        let text = v.display().iec().to_string();
        match text.parse::<ByteSize>() {
            Ok(back) if back == *v => s.serialize_str(&text),
            _ => v.as_u64().serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        #[derive(Deserialize, Serialize)]
        struct S {
            #[serde(with = "size")]
            v: ByteSize,
        }
        let cases: &[(&str, u64, &str)] = &[
            ("0", 0, r#"v = "0 B""#),
            ("1048576", 1 << 20, r#"v = "1.0 MiB""#),
            (r#""288MiB""#, 288 << 20, r#"v = "288.0 MiB""#),
            (r#""1 GiB""#, 1 << 30, r#"v = "1.0 GiB""#),
            (r#""64MB""#, 64_000_000, "v = 64000000"),
            ("1000001", 1_000_001, "v = 1000001"),
        ];
        for (input, bytes, printed) in cases {
            let s: S = toml::from_str(&format!("v = {input}")).unwrap();
            assert_eq!(s.v.as_u64(), *bytes, "{input}");
            let out = toml::to_string(&s).unwrap();
            assert_eq!(out.trim(), *printed, "{input}");
            let back: S = toml::from_str(&out).unwrap();
            assert_eq!(back.v, s.v, "{input}");
        }
        for bad in [r#""lots""#, "-1", r#""12 parsecs""#] {
            let err = toml::from_str::<S>(&format!("v = {bad}")).err().unwrap();
            assert!(
                err.to_string().contains(r#"a size like "256MiB""#),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn durations_format_and_parse_back() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(1800), "30m"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(7 * 86_400), "168h"),
            (Duration::from_micros(1500), "1ms 500us"),
        ];
        for &(d, s) in cases {
            assert_eq!(format_duration(d), s);
            assert_eq!(humantime::parse_duration(s), Ok(d), "{s}");
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let dto: ConfigDto = toml::from_str("").expect("empty parses");
        assert_eq!(dto, ConfigDto::default());
        assert_eq!(dto.server.listen, "0.0.0.0:8080");
        assert!(dto.routes.is_empty());
    }
}
