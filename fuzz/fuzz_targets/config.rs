//! Fuzz target: config parsing, `gateway::config::Config::parse`.
//!
//! Input: a byte whose low bit picks the mode, then either config text (any bytes, read
//! as UTF-8 with replacement) or a list of edits to a valid file — the effective TOML of
//! a one-route config, which holds every real key — each edit three bytes: what to do
//! (set a key to one of [`VALUES`], remove a key, add an unknown one, add a route), which
//! section and which key. Nothing may panic. Every error has a key path and, when it has
//! a location, one inside the file; a config that parses prints an effective TOML that
//! parses back to the same config (its Redis password shown as `***`), and no output
//! ever shows the Redis password.

#![no_main]

use std::sync::OnceLock;

use gateway::config::{Config, redact_url};
use libfuzzer_sys::fuzz_target;

/// The password of the Redis URLs below; no error and no effective file may show it.
const SECRET: &str = "Zs3cret";

/// Values the edits assign: valid and invalid ones of every type a key takes (shared
/// with the config property tests).
static VALUES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    include_str!("../../gateway/src/config/sample-values.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// Redis URLs with the password [`SECRET`], for `redis.url` only.
const SECRET_URLS: &[&str] = &[
    "redis://app:Zs3cret@r:6379/0",
    "rediss://:Zs3cret@r",
    "redis://u:Zs3cret/x@r",
    "redis-sentinel://r/0?sentinelServiceName=m&sentinelPassword=Zs3cret",
];

const MINIMAL: &str = r#"
[[route]]
name = "orders"
path_prefix = "/api/orders"
upstreams = ["127.0.0.1:9001"]
"#;

fn base() -> &'static toml::Table {
    static BASE: OnceLock<toml::Table> = OnceLock::new();
    BASE.get_or_init(|| {
        let config = Config::parse(MINIMAL).expect("valid");
        toml::from_str(&config.to_effective_toml()).expect("TOML")
    })
}

fn value(text: &str) -> toml::Value {
    let table: toml::Table = toml::from_str(&format!("v = {text}")).expect("a TOML value");
    table["v"].clone()
}

/// The table an edit applies to: a section, or the last route.
fn section<'a>(file: &'a mut toml::Table, pick: u8) -> Option<&'a mut toml::Table> {
    let name = file
        .keys()
        .nth(usize::from(pick) % file.len().max(1))?
        .clone();
    match file.get_mut(&name)? {
        toml::Value::Table(t) => Some(t),
        toml::Value::Array(routes) => routes.last_mut()?.as_table_mut(),
        _ => None,
    }
}

fn edited(edits: &[u8]) -> String {
    let mut file = base().clone();
    for edit in edits.chunks_exact(3) {
        let (what, s, k) = (edit[0], edit[1], edit[2]);
        match what % 8 {
            0..=3 => {
                if let Some(t) = section(&mut file, s)
                    && let Some(key) = t.keys().nth(usize::from(k) % t.len().max(1)).cloned()
                {
                    let v = VALUES[(usize::from(what / 8) * 256 + usize::from(k)) % VALUES.len()];
                    t.insert(key, value(v));
                }
            }
            4 => {
                if let Some(t) = section(&mut file, s)
                    && let Some(key) = t.keys().nth(usize::from(k) % t.len().max(1)).cloned()
                {
                    t.remove(&key);
                }
            }
            5 => {
                if let Some(t) = section(&mut file, s) {
                    t.insert("unknown_key".into(), 1.into());
                }
            }
            6 => {
                if let Some(toml::Value::Array(routes)) = file.get_mut("route")
                    && let Some(mut route) = routes.first().and_then(|r| r.as_table()).cloned()
                {
                    let prefixes = ["/", "/b", "/a/b", "/api/orders", "/api"];
                    route.insert("name".into(), format!("r{s}").into());
                    route.insert("audience".into(), format!("r{s}").into());
                    let prefix = prefixes[usize::from(k) % prefixes.len()];
                    route.insert("path_prefix".into(), prefix.into());
                    routes.push(route.into());
                }
            }
            _ => {
                if let Some(toml::Value::Table(redis)) = file.get_mut("redis") {
                    let url = SECRET_URLS[usize::from(k) % SECRET_URLS.len()];
                    redis.insert("url".into(), url.into());
                }
            }
        }
    }
    toml::to_string(&file).expect("a table prints")
}

fn check(text: &str) {
    match Config::parse(text) {
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = text.split('\n').count();
            for e in &errors {
                assert!(!e.path.is_empty(), "an error without a path: {e:?}");
                if let Some((line, col)) = e.location {
                    assert!(line >= 1 && line <= lines && col >= 1, "{e:?}");
                }
            }
        }
        Ok(config) => {
            let effective = config.to_effective_toml();
            let mut expected = config.clone();
            expected.redis.url = redact_url(&config.redis.url).into_owned();
            assert_eq!(Config::parse(&effective), Ok(expected), "{effective}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(&String::from_utf8_lossy(rest));
    } else {
        let text = edited(rest);
        // Only `redis.url` holds the secret here, so no output may show it.
        match Config::parse(&text) {
            Err(errors) => {
                for e in &errors {
                    assert!(!e.to_string().contains(SECRET), "{e}");
                }
            }
            Ok(config) => assert!(!config.to_effective_toml().contains(SECRET)),
        }
        check(&text);
    }
});
