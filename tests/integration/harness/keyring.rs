//! Helpers for the keyring tests: `keys rotate` through the CLI, the JWKS with its
//! caching headers, a Prometheus scrape of the admin listener, tokens minted through
//! a route, the keyring as stored in Redis, and a gateway start that is expected to fail.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use reqwest::blocking::Client;
use serde_json::Value;

use super::cli::{sg_ok, sg_within, stderr};
use super::gateway::{Gateway, GatewayBuilder};
use super::redis::RedisServer;
use super::{cookie_header, try_verify};

/// `sessiongate keys rotate [--now] --config <gw's config>`; returns (kid, created).
///
/// # Panics
/// If it fails or prints something else than `created KID …` / `already pending KID …`.
#[track_caller]
pub(crate) fn keys_rotate(gw: &Gateway, kek: Option<&str>, now: bool) -> (String, bool) {
    let config = gw.config_path().display().to_string();
    let mut args = vec!["keys", "rotate", "--config", config.as_str()];
    if now {
        args.push("--now");
    }
    let env: Vec<(&str, &str)> = kek.map(|k| ("SESSIONGATE_KEK", k)).into_iter().collect();
    parse_rotate(&sg_ok(&args, &env))
}

/// Parses the output of `keys rotate`: (kid, created).
pub(crate) fn parse_rotate(stdout: &str) -> (String, bool) {
    let line = stdout.trim();
    let (created, rest) = if let Some(rest) = line.strip_prefix("created ") {
        (true, rest)
    } else if let Some(rest) = line.strip_prefix("already pending ") {
        (false, rest)
    } else {
        panic!("unexpected `keys rotate` output: {stdout:?}");
    };
    let kid = rest.split_whitespace().next().expect("a kid").to_owned();
    (kid, created)
}

/// One JWKS answer with its caching headers.
#[derive(Clone, Debug)]
pub(crate) struct JwksDoc {
    /// The HTTP status (200 or 304).
    pub(crate) status: u16,
    /// The `ETag` header.
    pub(crate) etag: Option<String>,
    /// `max-age` from `Cache-Control`.
    pub(crate) max_age: Option<u64>,
    /// Whether `Cache-Control` has `public`.
    pub(crate) public: bool,
    /// The raw body.
    pub(crate) body: Vec<u8>,
    /// The parsed body (200 only).
    pub(crate) set: Option<JwkSet>,
}

impl JwksDoc {
    /// The kids of the published keys (empty for a 304).
    pub(crate) fn kids(&self) -> BTreeSet<String> {
        self.set
            .iter()
            .flat_map(|s| s.keys.iter())
            .filter_map(|k| k.common.key_id.clone())
            .collect()
    }

    /// The parsed set.
    ///
    /// # Panics
    /// For a 304.
    pub(crate) fn jwks(&self) -> &JwkSet {
        self.set.as_ref().expect("a 200 JWKS answer")
    }
}

/// `GET url` (a JWKS), with `If-None-Match` when given.
///
/// # Errors
/// A transport error, a status other than 200/304, or a body that is not a JWKS.
pub(crate) fn get_jwks(
    http: &Client,
    url: &str,
    if_none_match: Option<&str>,
) -> Result<JwksDoc, String> {
    let mut req = http.get(url);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let resp = req.send().map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header("etag");
    let cache_control = header("cache-control").unwrap_or_default();
    let directives: Vec<String> = cache_control
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    let max_age = directives
        .iter()
        .find_map(|d| d.strip_prefix("max-age="))
        .and_then(|n| n.parse().ok());
    let public = directives.iter().any(|d| d == "public");
    let body = resp
        .bytes()
        .map_err(|e| format!("GET {url}: body: {e}"))?
        .to_vec();
    let set = match status {
        200 => {
            Some(serde_json::from_slice(&body).map_err(|e| format!("{url} is not a JWKS: {e}"))?)
        }
        304 => None,
        other => return Err(format!("GET {url}: status {other}")),
    };
    Ok(JwksDoc {
        status,
        etag,
        max_age,
        public,
        body,
        set,
    })
}

/// The kids in `gw`'s JWKS (admin listener), empty if it cannot be fetched.
pub(crate) fn published(http: &Client, gw: &Gateway) -> BTreeSet<String> {
    get_jwks(http, &gw.admin_url("/.well-known/jwks.json"), None)
        .map(|d| d.kids())
        .unwrap_or_default()
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape of `/metrics`.
#[derive(Debug)]
pub(crate) struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of the sample `name` whose labels include every pair of `labels`;
    /// `None` if there is none.
    ///
    /// # Panics
    /// If several samples match.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().copied()
    }

    /// [`get`](Self::get), 0 when absent.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

/// Scrapes `gw`'s admin `/metrics` (Prometheus text format).
///
/// # Panics
/// If it is not 200 or a line does not parse.
pub(crate) fn scrape(http: &Client, gw: &Gateway) -> Scrape {
    let url = gw.admin_url("/metrics");
    let resp = http
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(resp.status(), 200, "{url}");
    let text = resp.text().expect("metrics text");
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        samples.push((name, labels, value));
    }
    Scrape(samples)
}

/// `GET path` on `gw` with the session cookie, through an echo upstream; returns the
/// bearer token the upstream received (read from the echo body, so concurrent callers do
/// not race on the upstream's record).
///
/// # Errors
/// A transport error, a status other than 200, or no bearer token in the echo.
pub(crate) fn mint(
    http: &Client,
    gw: &Gateway,
    path: &str,
    cookie: &str,
) -> Result<String, String> {
    mint_at(http, &gw.url(path), cookie)
}

/// [`mint`] by URL (`http://proxy-listener/path`).
///
/// # Errors
/// As [`mint`].
pub(crate) fn mint_at(http: &Client, url: &str, cookie: &str) -> Result<String, String> {
    let resp = http
        .get(url)
        .header("cookie", cookie_header(cookie))
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("GET {url}: status {status}"));
    }
    let echo: Value = resp.json().map_err(|e| format!("echo body: {e}"))?;
    echo["headers"]["authorization"][0]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or_else(|| format!("no bearer token in the echo: {echo}"))
}

/// The `kid` and `alg` of a token's header (no verification).
pub(crate) fn kid_alg(token: &str) -> (String, String) {
    let header = jsonwebtoken::decode_header(token).expect("a JWT header");
    (header.kid.expect("a kid"), format!("{:?}", header.alg))
}

/// Verifies `token` against the JWKS at `jwks_url`, fetched now.
///
/// # Errors
/// The fetch or the verification failure.
pub(crate) fn verify_now(
    http: &Client,
    jwks_url: &str,
    token: &str,
    aud: &str,
    iss: &str,
) -> Result<JwksDoc, String> {
    let doc = get_jwks(http, jwks_url, None)?;
    try_verify(token, doc.jwks(), aud, iss).map(|_| doc.clone())
}

/// The keyring records stored in Redis under `prefix` (`HGETALL {prefix}keyring`), as JSON.
pub(crate) fn stored_records(redis: &RedisServer, prefix: &str) -> Vec<Value> {
    let ring = format!("{prefix}keyring");
    let dump = redis.cli(&["HGETALL", &ring]);
    dump.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Asserts that a stored key record has exactly the fields of docs/redis-schema.md (no
/// private key in clear, nothing undocumented).
pub(crate) fn assert_record_fields(record: &Value) {
    let names: BTreeSet<&str> = record
        .as_object()
        .expect("a key record is a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "kid",
            "alg",
            "created_at",
            "activate_at",
            "retired_at",
            "sealed_key"
        ])
    );
}

/// Writes `builder`'s config into `dir` and runs `sessiongate run` with `env` (and no
/// inherited KEK), expecting it to exit within 20 s: returns its exit code and stderr.
///
/// # Panics
/// If it is still running after 20 s (it is killed).
pub(crate) fn start_expecting_exit(
    builder: &GatewayBuilder,
    dir: &Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let (config, _, _) = builder.write_config(dir);
    let config = config.display().to_string();
    let out = sg_within(
        &["run", "--config", &config],
        None,
        env,
        Duration::from_secs(20),
    );
    (out.status.code(), stderr(&out))
}
