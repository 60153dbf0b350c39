//! Parsing and validation: TOML text to a typed [`Config`], or every error at once.
//!
//! Parsing happens in three steps, each of which reports every problem it finds:
//! 1. TOML syntax (one error: the parser stops at the first).
//! 2. Shape: each key of each section is deserialized on its own, so every unknown key
//!    and every wrongly typed value is reported, each with its key path; such a key
//!    takes its default for the next step.
//! 3. Meaning: [`validate`] checks every rule of docs/configuration.md and builds the
//!    typed config. Errors about keys that already failed step 2 are dropped.
//!
//! Errors carry the key path (`route[2].upstreams[0]`) and, when the key is in the file,
//! its line and column, found through a span index of the document.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::schema::{ConfigDto, RouteDto};
use super::{
    Algorithm, AuthMode, Config, ExchangeConfig, KeyStoreConfig, KeysConfig, LogConfig, LogFormat,
    RedisConfig, RouteConfig, ServerConfig, SessionConfig, TlsConfig, TokenConfig, Upstream,
};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `redis.url` or `route[2].upstreams[0]`; `<toml>` when there is none.
    pub path: String,
    /// What is wrong, as a sentence fragment.
    pub message: String,
    /// 1-based line and column in the file, when known.
    pub location: Option<(usize, usize)>,
}

/// Redis URL schemes fred accepts.
pub const REDIS_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
];

/// Smallest `session.cache_max_bytes` accepted.
const MIN_CACHE_BYTES: u64 = 1024 * 1024;

/// Session fields that may not be copied into the JWT: the gateway sets these claims.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid", "chk",
];

/// The sections (top-level keys) a config file may have.
const SECTIONS: &[&str] = &[
    "server", "redis", "session", "token", "keys", "exchange", "log", "route",
];

/// Parses and validates a config file's text.
///
/// # Errors
/// Every problem found, each with its key path and, when known, its line and column.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let (dto, shape) = deserialize(text)?;
    let result = match validate(&dto) {
        Ok(config) if shape.is_empty() => Ok(config),
        Ok(_) => Err(shape),
        Err(rules) => {
            // A key that failed to deserialize took its default; rules about it (or
            // anything under it) would only repeat or mislead.
            let rules: Vec<ConfigError> = rules
                .into_iter()
                .filter(|r| !shape.iter().any(|e| is_within(&r.path, &e.path)))
                .collect();
            let mut errors = shape;
            errors.extend(rules);
            Err(errors)
        }
    };
    result.map_err(|mut errors| {
        let spans = SpanIndex::build(text);
        for e in &mut errors {
            if e.location.is_none() {
                e.location = spans.locate(&e.path).map(|offset| line_col(text, offset));
            }
        }
        // File order; errors about keys that are not in the file come last.
        errors.sort_by_key(|e| e.location.unwrap_or((usize::MAX, usize::MAX)));
        errors
    })
}

/// Checks every rule on a deserialized file and builds the typed config.
///
/// # Errors
/// Every rule that fails, each with its key path (no locations: see [`parse`]).
pub fn validate(dto: &ConfigDto) -> Result<Config, Vec<ConfigError>> {
    let mut v = Errors::default();
    let config = Config {
        server: server(dto, &mut v),
        redis: redis(dto, &mut v),
        session: session(dto, &mut v),
        token: token(dto, &mut v),
        keys: keys(dto, &mut v),
        exchange: exchange(dto, &mut v),
        routes: routes(dto, &mut v),
        log: log(dto, &mut v),
    };
    if v.0.is_empty() { Ok(config) } else { Err(v.0) }
}

// === impl ConfigError ===

impl ConfigError {
    /// An error at `path` without a location.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            location: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// === deserialization ===

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }
}

/// Whether `path` is `ancestor` or lies under it (`a.b` and `a.b[0].c` under `a.b`).
fn is_within(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Steps 1 and 2: syntax (a syntax error is the only error), then the shape of every key.
/// A key whose value does not fit is reported and takes its default, so the rules can
/// still check the rest.
fn deserialize(text: &str) -> Result<(ConfigDto, Vec<ConfigError>), Vec<ConfigError>> {
    let mut root: toml::Table = toml::from_str(text).map_err(|e| vec![syntax_error(text, &e)])?;
    let mut errors = Errors::default();
    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            errors.push(
                key.clone(),
                format!(
                    "unknown key; expected one of the sections {}",
                    SECTIONS.join(", ")
                ),
            );
        }
    }
    let mut dto = ConfigDto {
        server: section(&mut root, "server", &mut errors),
        redis: section(&mut root, "redis", &mut errors),
        session: section(&mut root, "session", &mut errors),
        token: section(&mut root, "token", &mut errors),
        keys: section(&mut root, "keys", &mut errors),
        exchange: section(&mut root, "exchange", &mut errors),
        log: section(&mut root, "log", &mut errors),
        routes: Vec::new(),
    };
    match root.remove("route") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("route[{i}]");
                match item {
                    toml::Value::Table(t) => {
                        dto.routes.push(fields::<RouteDto>(&path, t, &mut errors))
                    }
                    other => errors.push(
                        path,
                        format!("expected a table, found {}", other.type_str()),
                    ),
                }
            }
        }
        Some(other) => errors.push(
            "route",
            format!(
                "expected an array of tables ([[route]]), found {}",
                other.type_str()
            ),
        ),
    }
    Ok((dto, errors.0))
}

fn section<T: DeserializeOwned + Default>(
    root: &mut toml::Table,
    name: &str,
    errors: &mut Errors,
) -> T {
    match root.remove(name) {
        None => T::default(),
        Some(toml::Value::Table(t)) => fields(name, t, errors),
        Some(other) => {
            errors.push(
                name,
                format!("expected a table, found {}", other.type_str()),
            );
            T::default()
        }
    }
}

/// Deserializes a table, trying each key on its own first so that every bad key is named.
fn fields<T: DeserializeOwned + Default>(
    path: &str,
    mut table: toml::Table,
    errors: &mut Errors,
) -> T {
    let mut bad = Vec::new();
    for (key, value) in &table {
        let one = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = toml::Value::Table(one).try_into::<T>() {
            errors.push(format!("{path}.{key}"), serde_message(e.message()));
            bad.push(key.clone());
        }
    }
    for key in &bad {
        table.remove(key);
    }
    toml::Value::Table(table)
        .try_into::<T>()
        .unwrap_or_else(|e| {
            errors.push(path, serde_message(e.message()));
            T::default()
        })
}

fn serde_message(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    match message.strip_prefix("unknown field ") {
        Some(rest) => format!("unknown key {rest}"),
        None => message,
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start);
    ConfigError {
        path: offset
            .and_then(|o| path_at(text, o))
            .unwrap_or_else(|| "<toml>".to_owned()),
        message: format!("invalid TOML: {}", serde_message(e.message())),
        location: offset.map(|o| line_col(text, o)),
    }
}

/// Best-effort key path for a byte offset, from table headers and the key on that line;
/// used only for syntax errors, when there is no document to index.
fn path_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut table: Option<String> = None;
    let mut arrays: HashMap<String, usize> = HashMap::new();
    for line in text[..line_start].lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = arrays.entry(name.clone()).or_insert(0);
            table = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            let name = name.trim();
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-. ".contains(&b))
            {
                table = Some(name.to_owned());
            }
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    });
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (Some(t), None) => Some(t),
        (None, Some(k)) => Some(k.to_owned()),
        (None, None) => None,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

// === span index ===

/// Where each value of the document is: key path → byte span.
#[derive(Default)]
struct SpanIndex(HashMap<String, Range<usize>>);

// toml's `Spanned<T>` protocol (serde_spanned): asking for this struct makes toml hand
// the value's span to the visitor. Used through a seed so that values without a span
// (implicit tables) still deserialize.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPAN_START: &str = "$__serde_spanned_private_start";
const SPAN_END: &str = "$__serde_spanned_private_end";
const SPAN_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPAN_START, SPAN_END, SPAN_VALUE];

impl SpanIndex {
    fn build(text: &str) -> Self {
        let mut index = SpanIndex::default();
        let seed = Collect {
            path: String::new(),
            spanned: false,
            out: &mut index.0,
        };
        // A document that does not parse has no index; its error has its own location.
        let _ = seed.deserialize(toml::Deserializer::new(text));
        index
    }

    /// The offset of `path`, or of its nearest ancestor that is in the file.
    fn locate(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(span) = self.0.get(path) {
                return Some(span.start);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

struct Collect<'a> {
    path: String,
    spanned: bool,
    out: &'a mut HashMap<String, Range<usize>>,
}

impl Collect<'_> {
    fn child(&mut self, path: String) -> Collect<'_> {
        Collect {
            path,
            spanned: true,
            out: self.out,
        }
    }

    fn join(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl<'de> DeserializeSeed<'de> for Collect<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.spanned {
            d.deserialize_struct(SPANNED, SPANNED_FIELDS, self)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(());
        };
        if first == SPAN_START {
            let start: usize = map.next_value()?;
            let _: Option<String> = map.next_key()?;
            let end: usize = map.next_value()?;
            let _: Option<String> = map.next_key()?;
            let path = self.path.clone();
            map.next_value_seed(Collect {
                path: path.clone(),
                spanned: false,
                out: self.out,
            })?;
            self.out.insert(path, start..end);
            return Ok(());
        }
        let mut key = Some(first);
        while let Some(k) = key {
            if k.starts_with("$__toml_private") {
                map.next_value::<IgnoredAny>()?;
            } else {
                let path = self.join(&k);
                map.next_value_seed(self.child(path))?;
            }
            key = map.next_key()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let path = format!("{}[{i}]", self.path);
            if seq.next_element_seed(self.child(path))?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

// === step 3: rules, section by section ===

fn server(dto: &ConfigDto, v: &mut Errors) -> ServerConfig {
    let s = &dto.server;
    let listen = socket_addr("server.listen", &s.listen, v);
    let admin_listen = socket_addr("server.admin_listen", &s.admin_listen, v);
    if let (Some(a), Some(b)) = (listen, admin_listen)
        && a == b
        && a.port() != 0
    {
        v.push("server.admin_listen", "must differ from server.listen");
    }
    let tls = s.tls.as_ref().map(|t| {
        if t.cert.is_empty() {
            v.push("server.tls.cert", "must not be empty");
        }
        if t.key.is_empty() {
            v.push("server.tls.key", "must not be empty");
        }
        TlsConfig {
            cert: PathBuf::from(&t.cert),
            key: PathBuf::from(&t.key),
        }
    });
    if s.threads == 0 {
        v.push("server.threads", "must be at least 1");
    }
    if s.max_cookie_header_bytes == 0 {
        v.push("server.max_cookie_header_bytes", "must be at least 1");
    }
    if s.upgrade_sock.is_empty() {
        v.push("server.upgrade_sock", "must not be empty");
    }
    let hsts = s.hsts.trim();
    if !hsts.is_empty() {
        if !hsts.to_ascii_lowercase().starts_with("max-age=")
            || hsts.bytes().any(|b| b.is_ascii_control())
        {
            v.push(
                "server.hsts",
                "must be a Strict-Transport-Security value starting with `max-age=`",
            );
        } else if s.tls.is_none() {
            v.push(
                "server.hsts",
                "only applies with server.tls (HSTS over plain HTTP is ignored by browsers)",
            );
        }
    }
    ServerConfig {
        listen: listen.unwrap_or_else(unspecified),
        admin_listen: admin_listen.unwrap_or_else(unspecified),
        tls,
        threads: s.threads,
        grace_period: s.grace_period,
        max_cookie_header_bytes: s.max_cookie_header_bytes,
        hsts: (!hsts.is_empty()).then(|| hsts.to_owned()),
        upgrade_sock: PathBuf::from(&s.upgrade_sock),
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn socket_addr(path: &str, value: &str, v: &mut Errors) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            v.push(
                path,
                format!(
                    "`{value}` is not an IP address with a port, like `0.0.0.0:8080` or `[::]:8080`"
                ),
            );
            None
        }
    }
}

fn redis(dto: &ConfigDto, v: &mut Errors) -> RedisConfig {
    let r = &dto.redis;
    match r.url.split_once("://") {
        Some((scheme, rest)) if REDIS_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => {
            if rest.is_empty() || rest.starts_with('/') {
                v.push("redis.url", "has no host");
            }
        }
        _ => v.push(
            "redis.url",
            format!(
                "must start with one of {}",
                REDIS_SCHEMES
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    if r.timeout.is_zero() {
        v.push("redis.timeout", "must be greater than 0s");
    }
    if !(1..=64).contains(&r.pool_size) {
        v.push("redis.pool_size", "must be between 1 and 64");
    }
    let tls = r
        .url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss"));
    if !r.ca_file.is_empty() && !tls {
        v.push(
            "redis.ca_file",
            "applies only to TLS URLs (rediss://, rediss-cluster://, rediss-sentinel://)",
        );
    }
    RedisConfig {
        url: r.url.clone(),
        timeout: r.timeout,
        pool_size: r.pool_size,
        ca_file: (!r.ca_file.is_empty()).then(|| PathBuf::from(&r.ca_file)),
    }
}

/// RFC 7230 `tchar`: the characters of a cookie name.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn session(dto: &ConfigDto, v: &mut Errors) -> SessionConfig {
    let s = &dto.session;
    if s.cookie.is_empty() {
        v.push("session.cookie", "must not be empty");
    } else if !s.cookie.bytes().all(is_token_char) {
        v.push(
            "session.cookie",
            "is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)",
        );
    }
    if s.key_prefix.is_empty() {
        v.push("session.key_prefix", "must not be empty");
    }
    if s.cache_max_entries == 0 {
        v.push("session.cache_max_entries", "must be at least 1");
    }
    if s.cache_max_bytes.as_u64() < MIN_CACHE_BYTES {
        v.push(
            "session.cache_max_bytes",
            format!(
                "must be at least 1MiB (got {})",
                s.cache_max_bytes.display().iec()
            ),
        );
    }
    if s.subject_field.is_empty() {
        v.push("session.subject_field", "must not be empty");
    }
    let mut seen = HashSet::new();
    for (i, claim) in s.claims.iter().enumerate() {
        let path = format!("session.claims[{i}]");
        if claim.is_empty() {
            v.push(path, "must not be empty");
        } else if RESERVED_CLAIMS.contains(&claim.as_str()) {
            v.push(
                path,
                format!("`{claim}` is set by the gateway and cannot be copied from the session (reserved: {})", RESERVED_CLAIMS.join(", ")),
            );
        } else if !seen.insert(claim) {
            v.push(path, format!("`{claim}` is listed twice"));
        }
    }
    let login_url = if s.login_url.is_empty() {
        None
    } else {
        if !is_login_url(&s.login_url) {
            v.push(
                "session.login_url",
                "must be empty, an absolute path like `/login`, or an http(s) URL",
            );
        }
        Some(s.login_url.clone())
    };
    SessionConfig {
        cookie: s.cookie.clone(),
        key_prefix: s.key_prefix.clone(),
        hashed_keys: s.hashed_keys,
        cache_ttl: s.cache_ttl,
        negative_cache_ttl: s.negative_cache_ttl,
        cache_max_entries: s.cache_max_entries,
        cache_max_bytes: s.cache_max_bytes.as_u64(),
        token_cache_max_bytes: s.token_cache_max_bytes.as_u64(),
        push_invalidation: s.push_invalidation,
        subject_field: s.subject_field.clone(),
        claims: s.claims.clone(),
        forward_cookie: s.forward_cookie,
        login_url,
    }
}

fn is_login_url(url: &str) -> bool {
    if url
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
    {
        return false;
    }
    if let Some(path) = url.strip_prefix('/') {
        // `//host` is a protocol-relative URL: an open redirect, not a path.
        return !path.starts_with('/');
    }
    let lower = url.to_ascii_lowercase();
    ["http://", "https://"].iter().any(|scheme| {
        lower
            .strip_prefix(scheme)
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .is_some_and(|authority| !authority.is_empty())
    })
}

fn token(dto: &ConfigDto, v: &mut Errors) -> TokenConfig {
    let t = &dto.token;
    if t.issuer.is_empty() {
        v.push("token.issuer", "must not be empty");
    }
    if t.ttl < Duration::from_secs(1) || t.ttl > Duration::from_secs(24 * 3600) {
        v.push("token.ttl", "must be between 1s and 24h");
    }
    let algorithm = match t.algorithm.as_str() {
        "ES256" => Algorithm::Es256,
        "EdDSA" => Algorithm::EdDsa,
        other => {
            v.push(
                "token.algorithm",
                format!("`{other}` is not supported; use \"ES256\" or \"EdDSA\""),
            );
            Algorithm::Es256
        }
    };
    TokenConfig {
        issuer: t.issuer.clone(),
        ttl: t.ttl,
        algorithm,
    }
}

fn keys(dto: &ConfigDto, v: &mut Errors) -> KeysConfig {
    let k = &dto.keys;
    let store = match k.store.as_str() {
        "redis" => {
            if k.kek_env.is_empty() {
                v.push(
                    "keys.kek_env",
                    "must name the env var holding the key-encryption key when store = \"redis\"",
                );
            }
            KeyStoreConfig::Redis
        }
        "file" => {
            if k.dir.is_empty() {
                v.push("keys.dir", "must be set when store = \"file\"");
            }
            KeyStoreConfig::File {
                dir: PathBuf::from(&k.dir),
            }
        }
        other => {
            v.push(
                "keys.store",
                format!("`{other}` is not a key store; use \"redis\" or \"file\""),
            );
            KeyStoreConfig::Redis
        }
    };
    // Key times are Unix seconds: a fraction would be dropped without a word (a
    // publish_ahead of "1500ms" would publish a key only 1 s ahead).
    for (path, d) in [
        ("keys.rotate_every", k.rotate_every),
        ("keys.publish_ahead", k.publish_ahead),
        ("keys.clock_skew", k.clock_skew),
    ] {
        if d.subsec_nanos() != 0 {
            v.push(
                path,
                "must be a whole number of seconds (key times are kept in seconds)",
            );
        }
    }
    if k.publish_ahead.is_zero() {
        v.push("keys.publish_ahead", "must be greater than 0s");
    } else if k.rotate_every <= k.publish_ahead {
        v.push(
            "keys.rotate_every",
            format!(
                "must be longer than keys.publish_ahead ({})",
                super::schema::format_duration(k.publish_ahead)
            ),
        );
    }
    KeysConfig {
        store,
        rotate_every: k.rotate_every,
        publish_ahead: k.publish_ahead,
        kek_env: k.kek_env.clone(),
        clock_skew: k.clock_skew,
    }
}

fn exchange(dto: &ConfigDto, v: &mut Errors) -> ExchangeConfig {
    let x = &dto.exchange;
    let path = if x.path.is_empty() {
        None
    } else {
        if let Err(why) = check_normalized_path(&x.path) {
            v.push("exchange.path", why);
        }
        Some(x.path.clone())
    };
    let mut allowed_origins = Vec::with_capacity(x.allowed_origins.len());
    for (i, origin) in x.allowed_origins.iter().enumerate() {
        match parse_origin(origin) {
            Ok(o) => {
                if !allowed_origins.contains(&o) {
                    allowed_origins.push(o);
                }
            }
            Err(why) => v.push(format!("exchange.allowed_origins[{i}]"), why),
        }
    }
    ExchangeConfig {
        path,
        allowed_origins,
    }
}

/// Parses `scheme://host[:port]` into the form browsers send in `Origin`: lowercase,
/// default port dropped.
fn parse_origin(origin: &str) -> Result<String, String> {
    if origin == "*" {
        return Err("a wildcard is not allowed; list each origin as scheme://host[:port]".into());
    }
    let lower = origin.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or_else(|| format!("`{origin}` is not an origin like https://app.example.com"))?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return Err(format!("`{origin}`: the scheme must be http or https")),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "`{origin}` must be scheme://host[:port] with no path, query, user or trailing slash"
        ));
    }
    let (host, port) = split_host_port(rest).map_err(|why| format!("`{origin}`: {why}"))?;
    Ok(match port {
        Some(p) if p.to_string() != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Splits `host[:port]` (IPv6 in brackets). The host keeps its brackets.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or("an IPv6 address must be in brackets, like [::1]")?;
        let (host, after) = s.split_at(end + 1);
        if host[1..host.len() - 1].parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{host}` is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("unexpected text after the host")?,
                ),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("`{p}` is not a port (1-65535)")),
        },
    };
    Ok((host, port))
}

/// A route prefix or endpoint path must already be in normal form, or it could never match.
fn check_normalized_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` must start with '/'"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(format!(
            "`{p}` must not end with '/' (prefixes match on segment boundaries)"
        ));
    }
    if p.contains(';') {
        return Err(format!("`{p}` must not contain ';' path parameters"));
    }
    match crate::path::normalize(p) {
        Ok(n) if n.as_str() == p => Ok(()),
        Ok(n) => Err(format!(
            "`{p}` is not normalized (no `//`, `.` or `..` segments, no escapes of unreserved characters, uppercase hex); write `{n}`"
        )),
        Err(e) => Err(format!("`{p}` is not a valid path: {e}")),
    }
}

fn is_route_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn routes(dto: &ConfigDto, v: &mut Errors) -> Vec<RouteConfig> {
    if dto.routes.is_empty() {
        v.push("route", "at least one [[route]] is required");
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut matches: HashMap<(Option<String>, &str), usize> = HashMap::new();
    let mut out = Vec::with_capacity(dto.routes.len());
    for (i, r) in dto.routes.iter().enumerate() {
        let at = |key: &str| format!("route[{i}].{key}");
        if r.name.is_empty() {
            v.push(at("name"), "must not be empty");
        } else if !is_route_name(&r.name) {
            v.push(
                at("name"),
                format!("`{}` may contain only letters, digits, '_', '.' and '-' (it is a metric label)", r.name),
            );
        } else if let Some(first) = names.insert(&r.name, i) {
            v.push(
                at("name"),
                format!("`{}` is already the name of route[{first}]", r.name),
            );
        }

        if let Err(why) = check_normalized_path(&r.path_prefix) {
            v.push(at("path_prefix"), why);
        }

        let host = if r.host.is_empty() {
            None
        } else {
            match route_host(&r.host) {
                Ok(h) => Some(h),
                Err(why) => {
                    v.push(at("host"), why);
                    None
                }
            }
        };
        if let Some(first) = matches.insert((host.clone(), r.path_prefix.as_str()), i) {
            v.push(
                at("path_prefix"),
                format!(
                    "route[{first}] already matches host `{}` and path_prefix `{}`",
                    host.as_deref().unwrap_or("*"),
                    r.path_prefix
                ),
            );
        }

        if r.upstreams.is_empty() {
            v.push(at("upstreams"), "at least one upstream is required");
        }
        let mut upstreams = Vec::with_capacity(r.upstreams.len());
        for (j, u) in r.upstreams.iter().enumerate() {
            match parse_upstream(u) {
                Ok(up) => upstreams.push(up),
                Err(why) => v.push(format!("route[{i}].upstreams[{j}]"), why),
            }
        }

        let audience = if r.audience.is_empty() {
            r.name.clone()
        } else {
            r.audience.clone()
        };
        let auth = match r.auth.as_str() {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "none" => AuthMode::None,
            other => {
                v.push(
                    at("auth"),
                    format!(
                        "`{other}` is not an auth mode; use \"required\", \"optional\" or \"none\""
                    ),
                );
                AuthMode::Required
            }
        };
        let token_ttl = if r.token_ttl.is_empty() {
            dto.token.ttl
        } else {
            match humantime::parse_duration(&r.token_ttl) {
                Ok(d) if d < Duration::from_secs(1) => {
                    v.push(at("token_ttl"), "must be at least 1s");
                    d
                }
                Ok(d) if d > dto.token.ttl => {
                    v.push(
                        at("token_ttl"),
                        format!(
                            "must be at most token.ttl ({})",
                            super::schema::format_duration(dto.token.ttl)
                        ),
                    );
                    d
                }
                Ok(d) => d,
                Err(e) => {
                    v.push(
                        at("token_ttl"),
                        format!("`{}` is not a duration like \"2m\": {e}", r.token_ttl),
                    );
                    dto.token.ttl
                }
            }
        };
        out.push(RouteConfig {
            name: r.name.clone(),
            path_prefix: r.path_prefix.clone(),
            host,
            upstreams,
            audience,
            auth,
            critical: r.critical,
            token_ttl,
            ca_file: (!r.ca_file.is_empty()).then(|| PathBuf::from(&r.ca_file)),
        });
    }
    out
}

/// A route's Host: lowercase, no port, IPv6 without brackets (as the proxy compares it).
fn route_host(raw: &str) -> Result<String, String> {
    let lower = raw.to_ascii_lowercase();
    let bare = lower
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&lower);
    if bare.parse::<Ipv6Addr>().is_ok() {
        return Ok(bare.to_owned());
    }
    if bare.contains(':') {
        return Err(format!("`{raw}` must be a host name without a port"));
    }
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!("`{raw}` is not a host name"));
    }
    Ok(bare.to_owned())
}

/// Parses `host:port`, `http://host:port` or `https://host:port`.
fn parse_upstream(raw: &str) -> Result<Upstream, String> {
    let lower = raw.to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("https://") {
        (true, &raw["https://".len()..])
    } else if lower.starts_with("http://") {
        (false, &raw["http://".len()..])
    } else if raw.contains("://") {
        return Err(format!("`{raw}`: the scheme must be http or https"));
    } else {
        (false, raw)
    };
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!("`{raw}` must be host:port with no path"));
    }
    let (host, port) = split_host_port(rest).map_err(|why| format!("`{raw}`: {why}"))?;
    let Some(port) = port else {
        return Err(format!("`{raw}` has no port; write host:port"));
    };
    Ok(Upstream {
        addr: format!("{host}:{port}"),
        tls,
    })
}

fn log(dto: &ConfigDto, v: &mut Errors) -> LogConfig {
    let format = match dto.log.format.as_str() {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => {
            v.push(
                "log.format",
                format!("`{other}` is not a log format; use \"human\" or \"json\""),
            );
            LogFormat::Human
        }
    };
    LogConfig {
        format,
        filter: dto.log.filter.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        type Parsed<'a> = Result<(&'a str, bool), ()>;
        let cases: &[(&str, Parsed<'_>)] = &[
            ("127.0.0.1:9001", Ok(("127.0.0.1:9001", false))),
            ("orders.svc:80", Ok(("orders.svc:80", false))),
            ("http://orders.svc:8080", Ok(("orders.svc:8080", false))),
            ("https://orders.svc:8443", Ok(("orders.svc:8443", true))),
            ("HTTPS://Orders.svc:8443", Ok(("Orders.svc:8443", true))),
            ("[::1]:9001", Ok(("[::1]:9001", false))),
            ("https://[::1]:443", Ok(("[::1]:443", true))),
            ("127.0.0.1", Err(())),
            ("https://orders.svc", Err(())),
            ("orders.svc:0", Err(())),
            ("orders.svc:65536", Err(())),
            ("orders.svc:+80", Err(())),
            ("orders.svc:80/api", Err(())),
            ("http://orders.svc:80/", Err(())),
            ("ftp://orders.svc:21", Err(())),
            ("::1:9001", Err(())),
            (":9001", Err(())),
            ("", Err(())),
            ("user@host:80", Err(())),
        ];
        for (raw, expected) in cases {
            let got = parse_upstream(raw).map(|u| (u.addr, u.tls)).map_err(|_| ());
            assert_eq!(got, expected.map(|(a, t)| (a.to_owned(), t)), "{raw}");
        }
    }

    #[test]
    fn origin_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://app.example.com", Some("https://app.example.com")),
            ("HTTPS://App.Example.com", Some("https://app.example.com")),
            (
                "https://app.example.com:443",
                Some("https://app.example.com"),
            ),
            ("http://localhost:80", Some("http://localhost")),
            ("http://localhost:8080", Some("http://localhost:8080")),
            ("https://[::1]:8443", Some("https://[::1]:8443")),
            ("*", None),
            ("null", None),
            ("app.example.com", None),
            ("https://app.example.com/", None),
            ("https://app.example.com/path", None),
            ("ftp://app.example.com", None),
            ("https://", None),
            ("https://app.example.com:x", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_origin(raw).ok().as_deref(), *expected, "{raw}");
        }
    }

    #[test]
    fn login_urls() {
        let cases: &[(&str, bool)] = &[
            ("/login", true),
            ("/", true),
            ("/login?next=/", true),
            ("https://id.example.com/login", true),
            ("http://localhost:3000", true),
            ("//evil.example.com", false),
            ("login", false),
            ("javascript:alert(1)", false),
            ("https://", false),
            ("https:///path", false),
            ("/lo gin", false),
            ("/\\evil", false),
        ];
        for &(url, ok) in cases {
            assert_eq!(is_login_url(url), ok, "{url}");
        }
    }

    #[test]
    fn route_hosts() {
        let cases: &[(&str, Option<&str>)] = &[
            ("api.example.com", Some("api.example.com")),
            ("API.Example.COM", Some("api.example.com")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("api.example.com:8080", None),
            ("https://api.example.com", None),
            ("api example", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(route_host(raw).ok().as_deref(), *expected, "{raw}");
        }
    }

    #[test]
    fn locations() {
        let text = "[server]\nlisten = \"x\"\n\n[[route]]\nname = \"a\"\n[[route]]\nname = \"b\"\nupstreams = [\n  \"h:1\",\n  \"bad\",\n]\n";
        let spans = SpanIndex::build(text);
        let at = |path: &str| spans.locate(path).map(|o| line_col(text, o));
        assert_eq!(at("server.listen"), Some((2, 10)));
        assert_eq!(at("route[1].name"), Some((7, 8)));
        assert_eq!(at("route[1].upstreams[1]"), Some((10, 3)));
        // Absent keys fall back to their nearest ancestor in the file.
        assert_eq!(at("route[1].auth"), Some((6, 1)));
        assert_eq!(at("redis.url"), None);
    }

    #[test]
    fn syntax_error_paths() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nlisten = \n", "server.listen"),
            (
                "[[route]]\nname = \"a\"\n[[route]]\nname = 'b\n",
                "route[1].name",
            ),
            ("listen = [1 2]\n", "listen"),
            ("[server\n", "<toml>"),
        ];
        for (text, path) in cases {
            let errors = parse(text).expect_err(text);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].path, *path, "{text:?}: {errors:?}");
            assert!(errors[0].location.is_some(), "{errors:?}");
        }
    }
}
