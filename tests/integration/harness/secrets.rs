//! Log hygiene across the whole test run: a process-global registry of every secret a
//! test hands to a gateway or gets from one, and the check that none of them appears in
//! a gateway's logs.
//!
//! The harness records secrets where they are made or seen: every cookie value
//! [`super::new_cookie`] mints and every value [`super::cookie_header`] sends, every KEK
//! [`super::new_kek`] makes, every bearer token an [`super::Upstream`] receives, and the
//! private keys in each gateway's key directory. Every [`super::Gateway`] checks its
//! captured stdout and stderr against all secrets recorded so far when it is dropped, so
//! each integration test is also a log-hygiene test. (A secret recorded after a gateway
//! stopped was never in that gateway's hands.)
//!
//! The check indexes secrets by their first [`PREFIX`] bytes and slides a window over the
//! log text, so it costs one hash lookup per log byte however many secrets there are.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

/// Secrets shorter than this are not recorded (every real one is longer: cookies have at
/// least 16 characters, tokens and keys far more).
const PREFIX: usize = 16;

/// A secret found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leak {
    /// What it is ("cookie", "bearer token", ...).
    pub(crate) kind: &'static str,
    /// The secret.
    pub(crate) secret: String,
    /// The line it was found on.
    pub(crate) line: String,
}

#[derive(Default)]
struct Registry {
    seen: HashSet<String>,
    by_prefix: HashMap<[u8; PREFIX], Vec<(&'static str, String)>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Records a secret of `kind`. Values shorter than 16 bytes are ignored.
pub(crate) fn record(kind: &'static str, secret: &str) {
    let Some(prefix) = prefix_of(secret.as_bytes()) else {
        return;
    };
    let mut guard = REGISTRY.lock();
    let registry = guard.get_or_insert_with(Registry::default);
    if registry.seen.insert(secret.to_owned()) {
        registry
            .by_prefix
            .entry(prefix)
            .or_default()
            .push((kind, secret.to_owned()));
    }
}

/// Every recorded secret that occurs in `text`.
pub(crate) fn leaks(text: &str) -> Vec<Leak> {
    let guard = REGISTRY.lock();
    let Some(registry) = guard.as_ref() else {
        return Vec::new();
    };
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut reported = HashSet::new();
    for start in 0..bytes.len().saturating_sub(PREFIX - 1) {
        let Some(window) = prefix_of(&bytes[start..]) else {
            break;
        };
        let Some(candidates) = registry.by_prefix.get(&window) else {
            continue;
        };
        for (kind, secret) in candidates {
            if bytes[start..].starts_with(secret.as_bytes()) && reported.insert(secret.clone()) {
                found.push(Leak {
                    kind,
                    secret: secret.clone(),
                    line: line_at(text, start),
                });
            }
        }
    }
    found
}

/// Panics, naming each leak, when `text` (from `what`) contains a recorded secret.
pub(crate) fn assert_clean(what: &str, text: &str) {
    let leaks = leaks(text);
    if leaks.is_empty() {
        return;
    }
    let mut msg = format!("{} secret(s) leaked into {what}:\n", leaks.len());
    for leak in &leaks {
        msg.push_str(&format!(
            "  a {} ({}...) in line: {}\n",
            leak.kind,
            &leak.secret[..PREFIX.min(leak.secret.len())],
            leak.line
        ));
    }
    panic!("{msg}");
}

fn prefix_of(bytes: &[u8]) -> Option<[u8; PREFIX]> {
    bytes.get(..PREFIX)?.try_into().ok()
}

fn line_at(text: &str, offset: usize) -> String {
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    text[start..end].chars().take(400).collect()
}

#[test]
fn finds_recorded_secrets_and_nothing_else() {
    let secret = super::new_cookie();
    let other = super::new_cookie();
    record("cookie", "too-short");
    let text = format!(
        "a line\nGET /x cookie={secret}; theme=dark\nlast {}\n",
        &other[..20]
    );
    let found: Vec<Leak> = leaks(&text)
        .into_iter()
        .filter(|l| l.secret == secret || l.secret == other)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, "cookie");
    assert_eq!(found[0].line, format!("GET /x cookie={secret}; theme=dark"));
    assert!(
        leaks("too-short and more text")
            .iter()
            .all(|l| l.secret != "too-short"),
        "values shorter than 16 bytes are not recorded"
    );
    assert!(
        !leaks(&secret).is_empty(),
        "a text that is exactly the secret"
    );
}
