//! The TOML schema: serde DTOs that mirror SPEC's Configuration section key for key.
//!
//! These types only describe the file. Values whose validity serde decides alone are
//! typed here (durations, sizes, listen addresses and the closed sets, whose error lists
//! the allowed names); everything else is the file's string, which [`super::validate`]
//! checks while it builds the typed [`super::Config`]. Every struct denies unknown keys
//! and fills absent keys from its `Default`, whose values are the documented defaults
//! (docs/configuration.md). Keys marked *extension* are ours, beyond SPEC.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Algorithm, AuthMode, LogFormat, SessionFormat};

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
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Admin listener address (/metrics, /healthz, /readyz, JWKS). Default `"127.0.0.1:9090"`.
    #[serde(deserialize_with = "socket_addr")]
    pub admin_listen: SocketAddr,
    /// Optional TLS on the proxy listener, `{ cert = "...", key = "..." }`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsDto>,
    /// Worker threads of the proxy service. Default `2`.
    pub threads: usize,
    /// CIDRs (or IPs) of proxies whose `X-Forwarded-For` is extended. Default `[]`.
    pub trusted_proxies: Vec<String>,
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

/// `[session]`. `cookie`, `key_prefix` and `subject_field` default by `format`
/// ([`SessionFormat::defaults`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionDto {
    /// Who writes the sessions. Default `"sessiongate"`.
    pub format: SessionFormat,
    /// Session cookie name. Default: the format's (`"__Host-session"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Redis key prefix of sessions. Default: the format's (`"sg:session:"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Whether the Redis key holds SHA-256 of the cookie; only for format `"sessiongate"`.
    /// Default `true` there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashed_keys: Option<bool>,
    /// Env var holding express's cookie secret(s); required for format `"express"` only.
    /// Default `""`.
    pub secrets_env: String,
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
    /// Session field (name or JSON Pointer) that becomes the JWT `sub`. Default: the
    /// format's (`"sub"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_field: Option<String>,
    /// Session fields copied into the JWT. Default `["roles", "email"]`.
    pub claims: ClaimsDto,
    /// Whether the session cookie is forwarded upstream. Default `false`.
    pub forward_cookie: bool,
    /// Where browsers without a session are redirected; `""` disables. Default `""`.
    pub login_url: String,
    /// Re-check of open WebSockets/streams while the push channel is down. Default `"1s"`.
    #[serde(with = "duration")]
    pub stream_recheck: Duration,
}

/// `session.claims`: field names or JSON Pointers (the claim is named after the last
/// segment), or a table of claim name to field.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "an array of field names or JSON Pointers, or a table of claim names to them"
)]
pub enum ClaimsDto {
    /// `["roles", "/passport/user"]`.
    List(Vec<String>),
    /// `{ uid = "/passport/user" }`.
    Table(BTreeMap<String, String>),
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
    pub algorithm: Algorithm,
}

/// `[keys]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysDto {
    /// `"redis"` or `"file"`. Default `"redis"`.
    pub store: StoreKind,
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
    /// Prefix of the keyring's Redis keys. Default `"sg:keys:"`.
    pub redis_prefix: String,
    /// *Extension.* Verifier clock skew a retired key stays published for. Default `"60s"`.
    #[serde(with = "duration")]
    pub clock_skew: Duration,
}

names! {
    /// `keys.store`.
    StoreKind {
        /// Keys in Redis, shared by every replica.
        Redis = "redis",
        /// Keys in `keys.dir`.
        File = "file",
    }
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
    pub format: LogFormat,
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
    pub auth: AuthMode,
    /// Whether every request re-checks the session in Redis. Default `false`.
    pub critical: bool,
    /// Token lifetime override, at most `token.ttl`; `""` means `token.ttl`. Default `""`.
    #[serde(with = "optional_duration")]
    pub token_ttl: Option<Duration>,
    /// WebSockets and streams end after this long; `""` means never. Default `""`.
    #[serde(with = "optional_duration")]
    pub max_connection_lifetime: Option<Duration>,
    /// Upstream connect timeout. Default `"2s"`.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Upstream silence allowed while a response is awaited. Default `"60s"`.
    #[serde(with = "duration")]
    pub read_timeout: Duration,
    /// *Extension.* PEM CA certificate that `https://` upstreams must chain to; `""`
    /// means the system roots. Default `""`.
    pub ca_file: String,
}

// === impl Default ===

impl Default for ServerDto {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            tls: None,
            threads: 2,
            trusted_proxies: Vec::new(),
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
            format: SessionFormat::Sessiongate,
            cookie: None,
            key_prefix: None,
            hashed_keys: None,
            secrets_env: String::new(),
            cache_ttl: Duration::from_secs(5),
            negative_cache_ttl: Duration::from_secs(1),
            push_invalidation: true,
            cache_max_entries: 100_000,
            cache_max_bytes: ByteSize::b(exchange::cache::DEFAULT_MAX_BYTES),
            token_cache_max_bytes: ByteSize::b(exchange::cache::DEFAULT_TOKEN_MAX_BYTES),
            subject_field: None,
            claims: ClaimsDto::List(vec!["roles".into(), "email".into()]),
            forward_cookie: false,
            login_url: String::new(),
            stream_recheck: Duration::from_secs(1),
        }
    }
}

impl Default for TokenDto {
    fn default() -> Self {
        Self {
            issuer: "https://gateway.internal".into(),
            ttl: Duration::from_secs(5 * 60),
            algorithm: Algorithm::Es256,
        }
    }
}

impl Default for KeysDto {
    fn default() -> Self {
        Self {
            store: StoreKind::Redis,
            dir: String::new(),
            rotate_every: Duration::from_secs(24 * 3600),
            publish_ahead: Duration::from_secs(30 * 60),
            kek_env: "SESSIONGATE_KEK".into(),
            redis_prefix: "sg:keys:".into(),
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
            format: LogFormat::Human,
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
            auth: AuthMode::Required,
            critical: false,
            token_ttl: None,
            max_connection_lifetime: None,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
            ca_file: String::new(),
        }
    }
}

/// Formats a duration the way people write them in the file: the largest whole unit
/// among `h`, `m`, `s`, `ms` (`"24h"`, `"30m"`, `"250ms"`, `"0s"`), else humantime's form.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match () {
        _ if d.is_zero() => "0s".to_owned(),
        _ if !d.subsec_nanos().is_multiple_of(1_000_000) => {
            humantime::format_duration(d).to_string()
        }
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// An IP address with a port, with an error that says so.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP address with a port, like `0.0.0.0:8080` or `[::]:8080`"
        ))
    })
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

/// Serde adapter: a duration, or `""` for none.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match String::deserialize(d)?.as_str() {
            "" => Ok(None),
            text => humantime::parse_duration(text).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration like \"2m\" (or \"\" for none): {e}"
                ))
            }),
        }
    }

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.map(super::format_duration).unwrap_or_default())
    }
}

/// Byte sizes: an integer (bytes) or a string with a unit, like `"256MiB"`.
mod size {
    use bytesize::ByteSize;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = r#"a size like "256MiB" or "1GiB" (KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000), or a number of bytes"#
    )]
    enum Size {
        Bytes(u64),
        Text(#[serde(deserialize_with = "text")] ByteSize),
    }

    fn text<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        Ok(match Size::deserialize(d)? {
            Size::Bytes(n) => ByteSize::b(n),
            Size::Text(size) => size,
        })
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
        assert_eq!(dto.server.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert!(dto.routes.is_empty());
    }
}
