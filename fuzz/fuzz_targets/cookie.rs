//! Fuzz target: the `Cookie` header parser, `gateway::http::cookie::{find, strip}`.
//!
//! Input: a byte that picks the cookie name, then `Cookie` header values separated by
//! `\n` (values a header cannot hold are dropped). Neither function may panic; both must
//! agree with the plain reading of the headers written here: pairs split on `;`, trimmed,
//! the name before the first `=`. `find` answers the first pair of the name (its value
//! unquoted; `Unreadable` when that value is not UTF-8, whatever the other pairs hold);
//! `strip` keeps every other pair's bytes, in order, and leaves no pair of the name.

#![no_main]

use gateway::http::cookie::{Presented, Stripped, find, strip};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

/// Cookie names the gateway is configured with (each format's default), and the
/// nameless one.
const NAMES: &[&str] = &["__Host-session", "connect.sid", "sessionid", "s", ""];

/// `(name, value, pair)` of every non-empty pair, each trimmed.
fn pairs(header: &[u8]) -> Vec<(&[u8], &[u8], &[u8])> {
    let mut out = Vec::new();
    for pair in header.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (pair[..i].trim_ascii(), pair[i + 1..].trim_ascii()),
            None => (&b""[..], pair),
        };
        out.push((name, value, pair));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let headers: Vec<HeaderValue> = rest
        .split(|&b| b == b'\n')
        .filter_map(|h| HeaderValue::from_bytes(h).ok())
        .collect();
    let all: Vec<_> = headers.iter().flat_map(|h| pairs(h.as_bytes())).collect();

    let (found, total) = find(headers.iter(), name);
    assert_eq!(total, headers.iter().map(HeaderValue::len).sum::<usize>());
    let expected = match all.iter().find(|(n, _, _)| *n == name.as_bytes()) {
        None => Presented::Absent,
        Some((_, value, _)) => {
            let value = match value {
                [b'"', inner @ .., b'"'] => inner,
                _ => value,
            };
            match std::str::from_utf8(value) {
                Ok(v) => Presented::Value(v),
                Err(_) => Presented::Unreadable,
            }
        }
    };
    assert_eq!(found, expected);

    let kept: Vec<&[u8]> = all
        .iter()
        .filter(|(n, _, _)| *n != name.as_bytes())
        .map(|(_, _, pair)| *pair)
        .collect();
    let removed = kept.len() < all.len();
    match strip(headers.iter(), name) {
        Stripped::Unchanged => assert!(headers.len() <= 1 && !removed),
        Stripped::Empty => assert!(kept.is_empty()),
        Stripped::Joined(joined) => {
            assert!(headers.len() > 1 || removed);
            assert_eq!(joined.as_bytes(), kept.join(&b"; "[..]).as_slice());
            assert_eq!(find(std::iter::once(&joined), name).0, Presented::Absent);
        }
    }
});
