//! Parsing and validation: TOML text to a typed [`Config`], or every error at once.
//!
//! Parsing happens in three steps, each of which reports every problem it finds:
//! 1. TOML syntax (one error: the parser stops at the first).
//! 2. Shape: each key of each section (and each route) is deserialized on its own, so
//!    every unknown key and every value serde refuses (a wrong type, a name outside a
//!    closed set, a bad duration) is reported with its key path; such a key takes its
//!    default for the next step.
//! 3. Meaning: [`validate`] checks every rule of docs/configuration.md and builds the
//!    typed config. Errors about keys that already failed step 2 are dropped.
//!
//! Errors carry the key path (`route[2].upstreams[0]`) and, when the key is in the file,
//! its line and column, from the spans of a `toml_edit` document. No message quotes
//! `redis.url`, which may hold passwords.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::{Table, Value};
use url::{Host, Url};

use super::schema::{ClaimsDto, ConfigDto, RouteDto, SessionDto, StoreKind, format_duration};
use super::{
    ClaimConfig, Config, ExchangeConfig, KeyStoreConfig, KeysConfig, LogConfig, RedisConfig,
    RouteConfig, ServerConfig, SessionConfig, SessionFormat, TlsConfig, TokenConfig, Upstream,
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

/// Claim names the session may not supply: the gateway sets these claims.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid", "chk",
];

/// `rules!(v; path, failed, "message", args...; ...)`: reports each rule that failed.
macro_rules! rules {
    ($v:ident; $($path:expr, $failed:expr, $message:literal $(, $arg:expr)*;)*) => {
        $(if $failed { $v.push($path, format!($message $(, $arg)*)); })*
    };
}

/// Parses and validates a config file's text.
///
/// # Errors
/// Every problem found, each with its key path and, when known, its line and column.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let root: Table = toml::from_str(text).map_err(|e| vec![syntax_error(text, &e)])?;
    let mut errors = Vec::new();
    let dto = keep(String::new(), Value::Table(root), &|v| v, 0, &mut errors)
        .and_then(|root| root.try_into().ok())
        .unwrap_or_default();
    match validate(&dto) {
        Ok(config) if errors.is_empty() => return Ok(config),
        Ok(_) => {}
        // A key that failed to deserialize took its default; rules about it (or anything
        // under it), or about the keys only a format has, would only repeat or mislead.
        Err(rules) => {
            let failed = |path: &str| errors.iter().any(|e| is_within(path, &e.path));
            let by_format = ["session.hashed_keys", "session.secrets_env"];
            let misleads = |r: &ConfigError| {
                failed(&r.path) || failed("session.format") && by_format.contains(&&*r.path)
            };
            let rules: Vec<ConfigError> = rules.into_iter().filter(|r| !misleads(r)).collect();
            errors.extend(rules);
        }
    }
    let spans = spans(text);
    for e in &mut errors {
        e.location = locate(text, &spans, &e.path);
    }
    // File order; errors about keys that are not in the file come last.
    errors.sort_by_key(|e| e.location.unwrap_or((usize::MAX, usize::MAX)));
    Err(errors)
}

/// Checks every rule on a deserialized file and builds the typed config.
///
/// # Errors
/// Every rule that fails, each with its key path (no locations: see [`parse`]).
pub fn validate(dto: &ConfigDto) -> Result<Config, Vec<ConfigError>> {
    let mut v = Errors::default();
    let (s, r, se, t, k) = (&dto.server, &dto.redis, &dto.session, &dto.token, &dto.keys);
    let x = &dto.exchange;
    let hsts = s.hsts.trim();
    let bad_hsts = !hsts.to_ascii_lowercase().starts_with("max-age=")
        || hsts.bytes().any(|b| b.is_ascii_control());
    let tls_url = v.ok("redis.url", redis_url(&r.url));
    let session = session(se, &mut v);
    let (ours, theirs) = (&k.redis_prefix, &session.key_prefix);
    let whole_seconds = |d: Duration| d.subsec_nanos() != 0;
    let env_name = |name: &str| name.contains(['=', '\0']);
    rules! { v;
        "server.admin_listen", s.listen == s.admin_listen && s.listen.port() != 0,
            "must differ from server.listen";
        "server.tls.cert", s.tls.as_ref().is_some_and(|t| t.cert.is_empty()), "must not be empty";
        "server.tls.key", s.tls.as_ref().is_some_and(|t| t.key.is_empty()), "must not be empty";
        "server.threads", s.threads == 0, "must be at least 1";
        "server.max_cookie_header_bytes", s.max_cookie_header_bytes == 0, "must be at least 1";
        "server.upgrade_sock", s.upgrade_sock.is_empty(), "must not be empty";
        "server.hsts", !hsts.is_empty() && bad_hsts,
            "must be a Strict-Transport-Security value starting with `max-age=`";
        "server.hsts", !hsts.is_empty() && !bad_hsts && s.tls.is_none(),
            "only applies with server.tls (HSTS over plain HTTP is ignored by browsers)";
        "redis.timeout", r.timeout.is_zero(), "must be greater than 0s";
        "redis.pool_size", !(1..=64).contains(&r.pool_size), "must be between 1 and 64";
        "redis.ca_file", !r.ca_file.is_empty() && tls_url == Some(false),
            "applies only to TLS URLs (rediss://, rediss-cluster://, rediss-sentinel://)";
        "token.issuer", t.issuer.is_empty(), "must not be empty";
        "token.ttl", t.ttl < Duration::from_secs(1) || t.ttl > Duration::from_secs(24 * 3600),
            "must be between 1s and 24h";
        "keys.dir", k.store == StoreKind::File && k.dir.is_empty(),
            "must be set when store = \"file\"";
        "keys.kek_env", k.store == StoreKind::Redis && k.kek_env.is_empty(),
            "must name the env var holding the key-encryption key when store = \"redis\"";
        "keys.kek_env", env_name(&k.kek_env), "must be the name of an environment variable";
        // Key times are Unix seconds: a fraction would be dropped without a word (a
        // publish_ahead of "1500ms" would publish a key only 1 s ahead).
        "keys.rotate_every", whole_seconds(k.rotate_every), "must be a whole number of seconds";
        "keys.publish_ahead", whole_seconds(k.publish_ahead), "must be a whole number of seconds";
        "keys.clock_skew", whole_seconds(k.clock_skew), "must be a whole number of seconds";
        "keys.publish_ahead", k.publish_ahead.is_zero(), "must be greater than 0s";
        "keys.rotate_every", !k.publish_ahead.is_zero() && k.rotate_every <= k.publish_ahead,
            "must be longer than keys.publish_ahead ({})", format_duration(k.publish_ahead);
        "keys.redis_prefix", ours.is_empty(), "must not be empty";
        "keys.redis_prefix", !ours.is_empty() && !theirs.is_empty()
            && (ours.starts_with(theirs.as_str()) || theirs.starts_with(ours.as_str())),
            "`{ours}` and session.key_prefix `{theirs}` overlap: the keyring must never be \
             under the sessions' prefix, nor contain it";
        "session.secrets_env", se.format == SessionFormat::Express && env_name(&se.secrets_env),
            "must be the name of an environment variable";
    }
    if !x.path.is_empty()
        && let Err(why) = check_normalized_path(&x.path)
    {
        v.push("exchange.path", why);
    }
    let mut allowed_origins = v.each("exchange.allowed_origins", &x.allowed_origins, origin);
    let mut seen = HashSet::new();
    allowed_origins.retain(|o| seen.insert(o.clone()));
    let config = Config {
        server: ServerConfig {
            listen: s.listen,
            admin_listen: s.admin_listen,
            tls: s.tls.as_ref().map(|t| TlsConfig {
                cert: PathBuf::from(&t.cert),
                key: PathBuf::from(&t.key),
            }),
            threads: s.threads,
            grace_period: s.grace_period,
            max_cookie_header_bytes: s.max_cookie_header_bytes,
            hsts: (!hsts.is_empty()).then(|| hsts.to_owned()),
            upgrade_sock: PathBuf::from(&s.upgrade_sock),
            trusted_proxies: v.each("server.trusted_proxies", &s.trusted_proxies, cidr),
        },
        redis: RedisConfig {
            url: r.url.clone(),
            timeout: r.timeout,
            pool_size: r.pool_size,
            ca_file: path(&r.ca_file),
        },
        session,
        token: TokenConfig {
            issuer: t.issuer.clone(),
            ttl: t.ttl,
            algorithm: t.algorithm,
        },
        keys: KeysConfig {
            store: match k.store {
                StoreKind::Redis => KeyStoreConfig::Redis,
                StoreKind::File => KeyStoreConfig::File {
                    dir: PathBuf::from(&k.dir),
                },
            },
            rotate_every: k.rotate_every,
            publish_ahead: k.publish_ahead,
            kek_env: k.kek_env.clone(),
            redis_prefix: k.redis_prefix.clone(),
            clock_skew: k.clock_skew,
        },
        exchange: ExchangeConfig {
            path: (!x.path.is_empty()).then(|| x.path.clone()),
            allowed_origins,
        },
        routes: routes(dto, &mut v),
        log: LogConfig {
            format: dto.log.format,
            filter: dto.log.filter.clone(),
        },
    };
    if v.0.is_empty() { Ok(config) } else { Err(v.0) }
}

/// `url` with every secret fred reads from it (the password, and query values other
/// than `sentinelServiceName`, `sentinelUsername` and `node`, or any value that names a
/// password because an `&` was mistyped) replaced by `***`, for output and error messages:
/// `redis://app:s3cret@h:6379/0` becomes `redis://app:***@h:6379/0`. When its parts are
/// ambiguous (it does not parse, or a raw `/`, `?` or `#` in a password moved an `@` out
/// of the user info) and it may hold a secret, only its scheme is kept. A URL without
/// secrets is returned as it is.
pub fn redact_url(raw: &str) -> Cow<'_, str> {
    let secret = |key: &str| key.to_ascii_lowercase().contains("password");
    // Public: a parameter fred reads that does not name a password.
    let public = |key: &str| REDIS_QUERY_KEYS.contains(&key) && !secret(key);
    match Url::parse(raw) {
        Ok(mut url) if !url[url::Position::BeforePath..].contains('@') => {
            let redact = |pair: &str| match url::form_urlencoded::parse(pair.as_bytes()).next() {
                Some((key, value)) if !public(&key) || secret(&value) => {
                    format!("{}=***", pair.split_once('=').map_or(pair, |(key, _)| key))
                }
                _ => pair.to_owned(),
            };
            let query = url
                .query()
                .map(|q| q.split('&').map(redact).collect::<Vec<_>>().join("&"));
            if url.password().is_none() && query.as_deref() == url.query() {
                return raw.into();
            }
            if url.password().is_some() && url.set_password(Some("***")).is_err() {
                return "***".into();
            }
            url.set_query(query.as_deref());
            url.to_string().into()
        }
        _ if !raw.contains(['@', '%']) && !secret(raw) => raw.into(),
        _ => match raw.split_once("://") {
            Some((scheme, _))
                if scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                format!("{scheme}://***").into()
            }
            _ => "***".into(),
        },
    }
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

// === steps 1 and 2: syntax and shape ===

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// The value of a check, or its error reported at `path`.
    fn ok<T>(&mut self, path: &str, checked: Result<T, String>) -> Option<T> {
        checked.map_err(|why| self.push(path, why)).ok()
    }

    /// The items of the list at `path` that `parse` accepts; the others reported at `path[i]`.
    fn each<T>(
        &mut self,
        path: &str,
        items: &[String],
        parse: fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let items = items.iter().enumerate();
        items
            .filter_map(|(i, item)| self.ok(&format!("{path}[{i}]"), parse(item)))
            .collect()
    }
}

/// Whether `path` is `ancestor` or lies under it (`a.b` and `a.b[0].c` under `a.b`).
fn is_within(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The parts of `value` (at `path`, `depth` tables down) that deserialize, each key tried
/// on its own; every part that does not is reported and dropped. `wrap` puts a part back
/// where it lives in an otherwise empty file. Sections and routes are opened; their keys
/// are tried whole.
fn keep(
    path: String,
    value: Value,
    wrap: &dyn Fn(Value) -> Value,
    depth: usize,
    errors: &mut Vec<ConfigError>,
) -> Option<Value> {
    let check = |v: Value, errors: &mut Vec<ConfigError>| match wrap(v).try_into::<ConfigDto>() {
        Ok(_) => true,
        Err(e) => {
            let at = if path.is_empty() {
                "<toml>"
            } else {
                path.as_str()
            };
            errors.push(ConfigError::new(at, serde_message(&e)));
            false
        }
    };
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    let value = match value {
        // A section or route whose name or kind is wrong is reported once, as a whole.
        Value::Table(_) if depth == 1 && !check(Value::Table(Table::new()), errors) => return None,
        Value::Array(_) if depth == 1 && !check(Value::Array(Vec::new()), errors) => return None,
        Value::Table(table) if depth < 2 => Value::Table(
            table
                .into_iter()
                .filter_map(|(key, v)| {
                    let wrap = |v| wrap(Value::Table(Table::from_iter([(key.clone(), v)])));
                    keep(join(&key), v, &wrap, depth + 1, errors).map(|v| (key, v))
                })
                .collect(),
        ),
        Value::Array(items) if depth == 1 => {
            let wrap = |v| wrap(Value::Array(vec![v]));
            let items = items.into_iter().enumerate();
            Value::Array(
                items
                    .filter_map(|(i, v)| keep(format!("{path}[{i}]"), v, &wrap, 1, errors))
                    .collect(),
            )
        }
        other => other,
    };
    check(value.clone(), errors).then_some(value)
}

/// serde's message in the file's words: keys, arrays and tables.
fn serde_message(e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    let message = message
        .replace("unknown field", "unknown key")
        .replace("a sequence", "an array");
    match message.find("expected struct ") {
        Some(cut) => format!("{}expected a table", &message[..cut]),
        None => message,
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start);
    ConfigError {
        path: offset
            .and_then(|o| path_at(text, o))
            .unwrap_or_else(|| "<toml>".to_owned()),
        message: format!("invalid TOML: {}", serde_message(e)),
        location: offset.map(|o| line_col(text, o)),
    }
}

/// Best-effort key path for a byte offset, from table headers and the key on that line;
/// used only for syntax errors, when there is no document to index.
fn path_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let is_key = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    let mut table = None;
    let mut arrays: HashMap<&str, usize> = HashMap::new();
    for line in text[..line_start].lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let n = arrays.entry(name.trim()).or_insert(0);
            table = Some(format!("{}[{n}]", name.trim()));
            *n += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = is_key(name.trim())
                .then(|| name.trim().to_owned())
                .or(table);
        }
    }
    let line = text[line_start..].lines().next();
    let key = line
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| is_key(k));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (t, k) => t.or(k.map(str::to_owned)),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    (
        line,
        before.rsplit('\n').next().unwrap_or("").chars().count() + 1,
    )
}

/// The line and column of `path`, or of its nearest ancestor in the file (an absent key:
/// its table).
fn locate(text: &str, spans: &HashMap<String, Range<usize>>, path: &str) -> Option<(usize, usize)> {
    let mut path = path;
    loop {
        if let Some(span) = spans.get(path) {
            return Some(line_col(text, span.start));
        }
        path = &path[..path.rfind(['.', '['])?];
    }
}

/// Where each key path is in `text`: a value's first character, a table's header.
fn spans(text: &str) -> HashMap<String, Range<usize>> {
    use toml_edit::{Item, Value};

    fn walk(path: String, item: &Item, out: &mut HashMap<String, Range<usize>>) {
        let key = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        let index = |i: usize| format!("{path}[{i}]");
        match item {
            Item::Table(t) => t.iter().for_each(|(k, v)| walk(key(k), v, out)),
            Item::ArrayOfTables(a) => {
                a.iter()
                    .enumerate()
                    .for_each(|(i, t)| walk(index(i), &Item::Table(t.clone()), out));
            }
            Item::Value(Value::InlineTable(t)) => {
                t.iter()
                    .for_each(|(k, v)| walk(key(k), &Item::Value(v.clone()), out));
            }
            Item::Value(Value::Array(a)) => {
                a.iter()
                    .enumerate()
                    .for_each(|(i, v)| walk(index(i), &Item::Value(v.clone()), out));
            }
            _ => {}
        }
        if let Some(span) = item.span() {
            out.insert(path, span);
        }
    }
    let mut out = HashMap::new();
    if let Ok(doc) = toml_edit::ImDocument::parse(text) {
        walk(String::new(), doc.as_item(), &mut out);
    }
    out
}

// === step 3: the rules that build values ===

fn path(text: &str) -> Option<PathBuf> {
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// A CIDR, or an IP address as a single host, without host bits.
fn cidr(text: &str) -> Result<IpNet, String> {
    match text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
    {
        Ok(net) if net == net.trunc() => Ok(net),
        Ok(net) => Err(format!(
            "`{text}` has host bits set; write `{}`",
            net.trunc()
        )),
        Err(_) => Err(format!(
            "`{text}` is not a CIDR like `10.0.0.0/8` or `::1/128`, or an IP address"
        )),
    }
}

/// Checks a Redis URL the way fred reads it, and says whether it uses TLS. No message
/// quotes the URL.
fn redis_url(raw: &str) -> Result<bool, String> {
    const ENCODE: &str = "percent-encode `/`, `?`, `#`, `@` and `:` in a password";
    let url = Url::parse(raw).map_err(|e| format!("cannot be parsed as a URL ({e}); {ENCODE}"))?;
    if !REDIS_SCHEMES.contains(&url.scheme()) {
        let schemes: Vec<String> = REDIS_SCHEMES.iter().map(|s| format!("{s}://")).collect();
        return Err(format!("must start with one of {}", schemes.join(", ")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host; {ENCODE}"));
    }
    // An `@` after the host is a password's, cut short by a raw `/`, `?` or `#`.
    let db = url.path().strip_prefix('/').unwrap_or_default();
    let ambiguous = url[url::Position::BeforePath..].contains('@') || url.fragment().is_some();
    if ambiguous || (!db.is_empty() && db.parse::<u8>().is_err()) {
        return Err(format!(
            "must be scheme://[user:password@]host[:port][/db][?query]; {ENCODE}"
        ));
    }
    // fred ignores a query parameter it does not know, so a misspelt
    // `sentinelPassword` would connect without it. The name is not quoted: a mistyped
    // separator can put a secret in it.
    if let Some(n) = url
        .query_pairs()
        .position(|(key, _)| !REDIS_QUERY_KEYS.contains(&key.as_ref()))
    {
        return Err(format!(
            "query parameter {} is not one fred reads ({})",
            n + 1,
            REDIS_QUERY_KEYS.join(", ")
        ));
    }
    Ok(url.scheme().starts_with("rediss"))
}

/// The query parameters fred reads from a Redis URL.
const REDIS_QUERY_KEYS: [&str; 4] = [
    "sentinelServiceName",
    "sentinelUsername",
    "sentinelPassword",
    "node",
];

fn session(s: &SessionDto, v: &mut Errors) -> SessionConfig {
    let [cookie, key_prefix, subject] = s.format.defaults();
    let cookie = s.cookie.clone().unwrap_or_else(|| cookie.to_owned());
    let key_prefix = s
        .key_prefix
        .clone()
        .unwrap_or_else(|| key_prefix.to_owned());
    let token_chars = |b| b"!#$%&'*+-.^_`|~".contains(&b) || u8::is_ascii_alphanumeric(&b);
    let (format, express) = (s.format.as_str(), s.format == SessionFormat::Express);
    let sessiongate = s.format == SessionFormat::Sessiongate;
    let login_url = (!s.login_url.is_empty()).then(|| s.login_url.clone());
    rules! { v;
        "session.cookie", cookie.is_empty(), "must not be empty";
        "session.cookie", !cookie.bytes().all(token_chars),
            "is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)";
        "session.key_prefix", key_prefix.is_empty(), "must not be empty";
        "session.hashed_keys", s.hashed_keys.is_some() && !sessiongate,
            "belongs to format = \"sessiongate\"; remove it for format = \"{format}\"";
        "session.secrets_env", express && s.secrets_env.is_empty(),
            "must name the env var holding the cookie secret(s) when format = \"express\"";
        "session.secrets_env", !express && !s.secrets_env.is_empty(),
            "applies only to format = \"express\"";
        "session.cache_max_entries", s.cache_max_entries == 0, "must be at least 1";
        "session.cache_max_bytes", s.cache_max_bytes.as_u64() < 1 << 20,
            "must be at least 1MiB (got {})", s.cache_max_bytes.display().iec();
        "session.stream_recheck", s.stream_recheck.is_zero(), "must be greater than 0s";
        "session.login_url", login_url.as_deref().is_some_and(|url| !is_login_url(url)),
            "must be empty, an absolute path like `/login`, or an http(s) URL";
    }
    let subject = s.subject_field.as_deref().unwrap_or(subject);
    let subject_field = v
        .ok("session.subject_field", field(subject))
        .unwrap_or_default()
        .0;
    let entries: Vec<(String, Option<&String>, &String)> = match &s.claims {
        ClaimsDto::List(list) => {
            let list = list.iter().enumerate();
            list.map(|(i, f)| (format!("session.claims[{i}]"), None, f))
                .collect()
        }
        ClaimsDto::Table(table) => table
            .iter()
            .map(|(name, f)| (format!("session.claims.{name}"), Some(name), f))
            .collect(),
    };
    let mut claims: Vec<ClaimConfig> = Vec::with_capacity(entries.len());
    for (path, name, text) in entries {
        let Some((pointer, last)) = v.ok(&path, field(text)) else {
            continue;
        };
        let name = name.cloned().unwrap_or(last);
        let reserved = RESERVED_CLAIMS.contains(&name.as_str());
        let twice = claims.iter().any(|c| c.name == name);
        rules! { v;
            path.as_str(), name.is_empty(), "the claim name must not be empty";
            path.as_str(), reserved, "the claim `{name}` is set by the gateway, not the session \
                (reserved: {})", RESERVED_CLAIMS.join(", ");
            path.as_str(), twice && !reserved, "the claim `{name}` is listed twice";
        }
        if !name.is_empty() && !reserved && !twice {
            claims.push(ClaimConfig { name, pointer });
        }
    }
    SessionConfig {
        format: s.format,
        cookie,
        key_prefix,
        hashed_keys: sessiongate && s.hashed_keys.unwrap_or(true),
        secrets_env: (!s.secrets_env.is_empty()).then(|| s.secrets_env.clone()),
        cache_ttl: s.cache_ttl,
        negative_cache_ttl: s.negative_cache_ttl,
        cache_max_entries: s.cache_max_entries,
        cache_max_bytes: s.cache_max_bytes.as_u64(),
        token_cache_max_bytes: s.token_cache_max_bytes.as_u64(),
        push_invalidation: s.push_invalidation,
        subject_field,
        claims,
        forward_cookie: s.forward_cookie,
        login_url,
        stream_recheck: s.stream_recheck,
    }
}

/// A field name (`roles`) or an RFC 6901 JSON Pointer (`/passport/user`), as a pointer
/// and the name of the field it ends in (its last segment, unescaped).
pub(super) fn field(text: &str) -> Result<(String, String), String> {
    let Some(rest) = text.strip_prefix('/') else {
        let pointer = format!("/{}", text.replace('~', "~0").replace('/', "~1"));
        return if text.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok((pointer, text.into()))
        };
    };
    if rest.split('~').skip(1).any(|s| !s.starts_with(['0', '1'])) {
        return Err(format!(
            "`{text}` is not a JSON Pointer: `~` must be followed by 0 or 1"
        ));
    }
    let last = rest.rsplit_once('/').map_or(rest, |(_, last)| last);
    match last.replace("~1", "/").replace("~0", "~") {
        name if name.is_empty() => Err(format!("`{text}` must end in a field name")),
        name => Ok((text.to_owned(), name)),
    }
}

/// The shortest way to write a pointer from [`field`] in the file: a top-level field's name.
pub(super) fn field_text(pointer: &str) -> &str {
    pointer
        .strip_prefix('/')
        .filter(|name| !name.contains(['/', '~']))
        .unwrap_or(pointer)
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
    let authority = |scheme| {
        lower
            .strip_prefix(scheme)
            .and_then(|r| r.split(['/', '?', '#']).next())
    };
    ["http://", "https://"]
        .into_iter()
        .any(|scheme| authority(scheme).is_some_and(|a| !a.is_empty()))
}

/// Parses `scheme://host[:port]` into the form browsers send in `Origin`: lowercase
/// (IDNA for names), default port dropped.
fn origin(raw: &str) -> Result<String, String> {
    if raw == "*" {
        return Err("a wildcard is not allowed; list each origin as scheme://host[:port]".into());
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(format!(
            "`{raw}` is not an origin like https://app.example.com"
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("`{raw}`: the scheme must be http or https"));
    }
    if rest.contains(|c: char| "/?#@\\".contains(c) || c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{raw}` must be scheme://host[:port] with no path, query, user or trailing slash"
        ));
    }
    Ok(Url::parse(raw)
        .map_err(|e| format!("`{raw}`: {e}"))?
        .origin()
        .ascii_serialization())
}

/// Parses `host:port`, `http://host:port` or `https://host:port`.
fn upstream(raw: &str) -> Result<Upstream, String> {
    let (tls, rest) = match raw.split_once("://") {
        None => (false, raw),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
        Some(_) => return Err(format!("`{raw}`: the scheme must be http or https")),
    };
    // A scheme without special rules keeps the host as written and any port explicit.
    let url = Url::parse(&format!("tcp://{rest}")).map_err(|e| format!("`{raw}`: {e}"))?;
    if !url[url::Position::BeforeUsername..url::Position::BeforeHost].is_empty()
        || !url[url::Position::BeforePath..].is_empty()
    {
        return Err(format!(
            "`{raw}` must be host:port with no user, path or query"
        ));
    }
    let host = match url.host() {
        Some(Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(Host::Domain(name)) if is_host_name(name) => name.to_owned(),
        _ => {
            return Err(format!(
                "`{raw}` is not host:port with a host name or IP address"
            ));
        }
    };
    match url.port() {
        Some(0) => Err(format!("`{raw}`: the port must be 1-65535")),
        Some(port) => Ok(Upstream {
            addr: format!("{host}:{port}"),
            tls,
        }),
        None => Err(format!("`{raw}` has no port; write host:port")),
    }
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// A route's Host as the proxy compares it: lowercase (IDNA for names), no port, no
/// trailing dot, IPv6 without brackets.
fn route_host(raw: &str) -> Result<String, String> {
    let bare = raw.strip_suffix('.').unwrap_or(raw);
    let unbracketed = bare
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(bare);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    match Host::parse(bare) {
        Ok(Host::Domain(name))
            if !raw.contains('%') && !name.ends_with('.') && is_host_name(&name) =>
        {
            Ok(name)
        }
        _ if bare.contains(':') => Err(format!("`{raw}` must be a host name without a port")),
        _ => Err(format!("`{raw}` is not a host name")),
    }
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
            "`{p}` is not normalized (no `//`, `.` or `..` segments, no escapes of unreserved \
             characters, uppercase hex); write `{n}`"
        )),
        Err(e) => Err(format!("`{p}` is not a valid path: {e}")),
    }
}

fn routes(dto: &ConfigDto, v: &mut Errors) -> Vec<RouteConfig> {
    rules! { v; "route", dto.routes.is_empty(), "at least one [[route]] is required"; }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut matches: HashMap<(Option<String>, &str), usize> = HashMap::new();
    let mut out = Vec::with_capacity(dto.routes.len());
    for (i, r) in dto.routes.iter().enumerate() {
        let RouteDto {
            name,
            path_prefix: prefix,
            ..
        } = r;
        let at = |key: &str| format!("route[{i}].{key}");
        let host = (!r.host.is_empty())
            .then(|| v.ok(&at("host"), route_host(&r.host)))
            .flatten();
        let metric_label = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        let same_name = (!name.is_empty() && metric_label)
            .then(|| names.insert(name, i))
            .flatten();
        let same_match = matches.insert((host.clone(), prefix), i);
        let shown = host.as_deref().unwrap_or("*");
        let token_ttl = r.token_ttl.unwrap_or(dto.token.ttl);
        let zero = |d: Option<Duration>| d.is_some_and(|d| d.is_zero());
        rules! { v;
            at("name"), name.is_empty(), "must not be empty";
            at("name"), !metric_label,
                "`{name}` may contain only letters, digits, '_', '.' and '-' (it is a metric label)";
            at("name"), same_name.is_some(), "`{name}` is already the name of route[{}]",
                same_name.unwrap_or_default();
            at("path_prefix"), same_match.is_some(),
                "route[{}] already matches host `{shown}` and path_prefix `{prefix}`",
                same_match.unwrap_or_default();
            at("upstreams"), r.upstreams.is_empty(), "at least one upstream is required";
            at("token_ttl"), r.token_ttl.is_some_and(|d| d < Duration::from_secs(1)),
                "must be at least 1s";
            at("token_ttl"), token_ttl >= Duration::from_secs(1) && token_ttl > dto.token.ttl,
                "must be at most token.ttl ({})", format_duration(dto.token.ttl);
            at("max_connection_lifetime"), zero(r.max_connection_lifetime),
                "must be greater than 0s (\"\" for no limit)";
            at("connect_timeout"), r.connect_timeout.is_zero(), "must be greater than 0s";
            at("read_timeout"), r.read_timeout.is_zero(), "must be greater than 0s";
        }
        if let Err(why) = check_normalized_path(prefix) {
            v.push(at("path_prefix"), why);
        }
        out.push(RouteConfig {
            name: name.clone(),
            path_prefix: prefix.clone(),
            host,
            upstreams: v.each(&format!("route[{i}].upstreams"), &r.upstreams, upstream),
            audience: if r.audience.is_empty() {
                name.clone()
            } else {
                r.audience.clone()
            },
            auth: r.auth,
            critical: r.critical,
            token_ttl,
            max_connection_lifetime: r.max_connection_lifetime,
            connect_timeout: r.connect_timeout,
            read_timeout: r.read_timeout,
            ca_file: path(&r.ca_file),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let cases: &[(&str, Option<(&str, bool)>)] = &[
            ("127.0.0.1:9001", Some(("127.0.0.1:9001", false))),
            ("orders.svc:80", Some(("orders.svc:80", false))),
            ("http://orders.svc:8080", Some(("orders.svc:8080", false))),
            ("https://orders.svc:8443", Some(("orders.svc:8443", true))),
            ("HTTPS://Orders.svc:8443", Some(("Orders.svc:8443", true))),
            ("[::1]:9001", Some(("[::1]:9001", false))),
            ("https://[::1]:443", Some(("[::1]:443", true))),
            ("http://orders.svc:80", Some(("orders.svc:80", false))),
            ("127.0.0.1", None),
            ("https://orders.svc", None),
            ("orders.svc:0", None),
            ("orders.svc:65536", None),
            ("orders.svc:+80", None),
            ("orders.svc:80/api", None),
            ("http://orders.svc:80/", None),
            ("orders.svc:80?x", None),
            ("orders.svc:80#x", None),
            ("ftp://orders.svc:21", None),
            ("::1:9001", None),
            (":9001", None),
            ("", None),
            ("user@host:80", None),
            ("a b:80", None),
            ("a%41:80", None),
        ];
        for (raw, expected) in cases {
            let got = upstream(raw).ok().map(|u| (u.addr, u.tls));
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
            (
                "https://Bücher.example",
                Some("https://xn--bcher-kva.example"),
            ),
            ("*", None),
            ("null", None),
            ("app.example.com", None),
            ("https://app.example.com/", None),
            ("https://app.example.com/path", None),
            ("https://app.example.com?x", None),
            ("https://app.example.com#x", None),
            ("https://user@app.example.com", None),
            ("ftp://app.example.com", None),
            ("https://", None),
            ("https://app.example.com:x", None),
            ("https://app example.com", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(origin(raw).ok().as_deref(), *expected, "{raw}");
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
            ("admin.example.com.", Some("admin.example.com")),
            ("Bücher.example", Some("xn--bcher-kva.example")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("10.0.0.1", Some("10.0.0.1")),
            ("api.example.com:8080", None),
            ("https://api.example.com", None),
            ("api example", None),
            ("a%41", None),
            ("a..", None),
            (".", None),
            ("", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(route_host(raw).ok().as_deref(), *expected, "{raw}");
        }
    }

    #[test]
    fn fields_and_pointers() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("sub", Some(("/sub", "sub"))),
            ("/passport/user", Some(("/passport/user", "user"))),
            ("/a~1b/c~0d", Some(("/a~1b/c~0d", "c~d"))),
            ("x/y~z", Some(("/x~1y~0z", "x/y~z"))),
            ("/a~2b", None),
            ("/a~", None),
            ("/a/", None),
            ("/", None),
            ("", None),
        ];
        for (text, expected) in cases {
            let got = field(text).ok();
            assert_eq!(
                got,
                expected.map(|(p, n)| (p.to_owned(), n.to_owned())),
                "{text}"
            );
            if let Some((pointer, _)) = &got {
                assert_eq!(field(field_text(pointer)).ok(), got, "{text} prints back");
            }
        }
    }

    #[test]
    fn trusted_proxy_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("::1/128", Some("::1/128")),
            ("192.168.1.7", Some("192.168.1.7/32")),
            ("fd00::1", Some("fd00::1/128")),
            ("10.0.0.1/8", None),
            ("10.0.0.0/33", None),
            ("10.0.0.0/", None),
            ("proxy.internal", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                cidr(text).ok().map(|n| n.to_string()).as_deref(),
                *expected,
                "{text}"
            );
        }
    }

    #[test]
    fn locations() {
        let text = "[server]\nlisten = \"x\"\n\n[[route]]\nname = \"a\"\n[[route]]\nname = \"b\"\nupstreams = [\n  \"h:1\",\n  \"bad\",\n]\ntls = { cert = \"c\" }\n";
        let spans = spans(text);
        let at = |path: &str| locate(text, &spans, path);
        assert_eq!(at("server.listen"), Some((2, 10)));
        assert_eq!(at("route[1].name"), Some((7, 8)));
        assert_eq!(at("route[1].upstreams[1]"), Some((10, 3)));
        assert_eq!(at("route[1].tls.cert"), Some((12, 16)));
        // Absent keys fall back to their nearest ancestor in the file.
        assert_eq!(at("route[1].auth"), Some((6, 1)));
        assert_eq!(at("route[1].tls.key"), Some((12, 7)));
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
