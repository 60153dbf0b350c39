//! Fuzz target: path normalization and routing — `gateway::path::normalize`,
//! `gateway::http::target::{parse, normalize_host}` and `gateway::route::RouteTable::find`.
//!
//! Input: a request target, then `Host` header values, separated by `\n`. Nothing may
//! panic. A normalized path is in normal form (no `//`, no `.`/`..` segment, escapes only
//! for bytes that need them, in uppercase hex, never for `/`, `\` or a control character;
//! only path characters) and normalizing it again changes nothing. A normalized host is
//! lowercase, without port or trailing dot (an IPv6 address alone has `:`). The route
//! found is the most specific one whose host and prefix match, its prefix ending on a
//! segment boundary of the path; no route is found only when none matches.

#![no_main]

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use gateway::config::Config;
use gateway::http::target::{normalize_host, parse};
use gateway::path::{NormalizedPath, matches_prefix, normalize};
use gateway::route::{Route, RouteTable};
use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;

/// Routes with nested prefixes, with and without a host.
const ROUTES: &str = r#"
[[route]]
name = "root"
path_prefix = "/"
upstreams = ["127.0.0.1:1"]
[[route]]
name = "api"
path_prefix = "/api"
upstreams = ["127.0.0.1:1"]
[[route]]
name = "orders"
path_prefix = "/api/orders"
upstreams = ["127.0.0.1:1"]
[[route]]
name = "items"
path_prefix = "/api/orders/items"
upstreams = ["127.0.0.1:1"]
[[route]]
name = "admin"
path_prefix = "/admin"
host = "admin.example.com"
upstreams = ["127.0.0.1:1"]
[[route]]
name = "admin-api"
path_prefix = "/api"
host = "admin.example.com"
upstreams = ["127.0.0.1:1"]
[[route]]
name = "v6"
path_prefix = "/"
host = "::1"
upstreams = ["127.0.0.1:1"]
"#;

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = Config::parse(ROUTES).expect("the routes are valid");
        let metrics = gateway::metrics::Metrics::register(&prometheus::Registry::new())
            .expect("fresh registry");
        RouteTable::build(&config.routes, &metrics).expect("upstreams resolve")
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_path_char(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b)
}

fn check_path(p: &NormalizedPath) {
    let s = p.as_str();
    assert!(
        s.starts_with('/') && s.len() <= gateway::path::MAX_PATH_LEN,
        "{s:?}"
    );
    assert!(!s.contains("//"), "{s:?}");
    for seg in s[1..].split('/') {
        let name = seg.split(';').next().unwrap_or(seg);
        assert!(name != "." && name != "..", "{s:?}");
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                "{s:?}"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !is_unreserved(v) && v >= 0x20 && v != 0x7f && v != b'/' && v != b'\\',
                "{s:?}"
            );
            i += 3;
        } else {
            assert!(is_path_char(bytes[i]), "{s:?}");
            i += 1;
        }
    }
    assert_eq!(normalize(s).as_ref(), Ok(p), "not idempotent");
}

fn check_host(host: &str) {
    if host.contains(':') {
        let ip: Ipv6Addr = host.parse().expect("only IPv6 addresses have a ':'");
        assert_eq!(ip.to_string(), host);
        assert_eq!(normalize_host(&format!("[{host}]")).as_deref(), Ok(host));
        return;
    }
    assert!(!host.is_empty() && !host.ends_with('.'), "{host:?}");
    assert!(
        host.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
        "{host:?}"
    );
    assert_eq!(normalize_host(host).as_deref(), Ok(host));
}

/// The path's leading segments, without `;` parameters, are the prefix's.
fn under(path: &str, prefix: &str) -> bool {
    let want: Vec<&str> = prefix[1..].split('/').filter(|s| !s.is_empty()).collect();
    let have: Vec<&str> = path[1..]
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(s))
        .collect();
    have.len() >= want.len() && have[..want.len()] == want[..]
}

fn check_route(host: Option<&str>, path: &NormalizedPath) {
    let table = table();
    let matches = |r: &Route| {
        r.host.as_deref().is_none_or(|h| Some(h) == host) && under(path.as_str(), &r.path_prefix)
    };
    let rank = |r: &Route| (r.host.is_some(), r.path_prefix.len());
    let best = table
        .routes()
        .iter()
        .filter(|r| matches(r))
        .map(|r| rank(r))
        .max();
    match table.find(host, path) {
        None => assert_eq!(best, None),
        Some(found) => {
            assert!(matches(found), "{path} under {}", found.path_prefix);
            assert!(matches_prefix(path, &found.path_prefix));
            assert_eq!(Some(rank(found)), best);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let hosts: Vec<&[u8]> = lines.collect();

    let text = String::from_utf8_lossy(target);
    if let Ok(p) = normalize(&text) {
        check_path(&p);
        check_route(None, &p);
    }
    for host in &hosts {
        if let Ok(h) = normalize_host(&String::from_utf8_lossy(host)) {
            check_host(&h);
        }
    }

    let Ok(mut req) = RequestHeader::build("GET", target, None) else {
        return;
    };
    for host in &hosts {
        if req.append_header("host", *host).is_err() {
            return;
        }
    }
    if let Ok(t) = parse(&req) {
        assert_eq!(Ok(&t.path), normalize(req.uri.path()).as_ref());
        check_path(&t.path);
        if let Some(host) = &t.host {
            check_host(host);
        }
        if let Some(forward) = &t.forward_host {
            let text = forward.to_str().expect("a Host header is text");
            assert_eq!(normalize_host(text).ok().as_deref(), t.host.as_deref());
        }
        if let Some(uri) = &t.forward_uri {
            assert!(uri.scheme().is_none() && uri.authority().is_none(), "{uri}");
            assert_eq!(uri.path(), t.path.as_str());
        }
        check_route(t.host.as_deref(), &t.path);
    }
});
