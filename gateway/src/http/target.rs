//! The request target: which host and path a request is for, as routing sees them.
//!
//! Hosts match case-insensitively, without a port and without a trailing dot, so that
//! `ADMIN.example.com.:443` cannot slip past a route for `admin.example.com`. An
//! absolute-form target (`GET http://host/path`) is routed by its own authority and the
//! `Host` header is then ignored (RFC 9112 §3.2.2); an HTTP/1.1 request without either
//! is refused. Upstreams always get an origin-form target with `Host` set to the
//! authority the route was chosen by.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::header::HOST;
use http::{HeaderValue, Uri, Version};
use pingora::http::RequestHeader;
use pingora::http::authority::{RawTargetAuthority, raw_target_authority};

use crate::path::{NormalizedPath, PathError, normalize};

/// Where a request is going, normalized.
#[derive(Debug)]
pub struct Target<'a> {
    /// The host routes match: lowercase, no port, no trailing dot, IPv6 without
    /// brackets. `None` for an HTTP/1.0 request without `Host`.
    pub host: Option<Cow<'a, str>>,
    /// The normalized path.
    pub path: NormalizedPath,
    /// The `Host` upstreams must get, when it is not the client's `Host` header as sent
    /// (an absolute-form target, or a host normalization changed).
    pub forward_host: Option<HeaderValue>,
    /// The origin-form target upstreams must get, when it is not the request's as sent.
    pub forward_uri: Option<Uri>,
}

/// Why a request target is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The path cannot be normalized safely.
    #[error("the path cannot be normalized safely: {0}")]
    Path(PathError),
    /// An HTTP/1.1 request with no `Host` and no absolute-form target.
    #[error("an HTTP/1.1 request needs a Host header")]
    MissingHost,
    /// More than one `Host` header.
    #[error("more than one Host header")]
    RepeatedHost,
    /// A `Host` (or target authority) that is not a host name or address.
    #[error("the Host is not a host name or address")]
    BadHost,
    /// An absolute-form target with a scheme other than http or https.
    #[error("the request target's scheme is not http or https")]
    BadScheme,
}

impl TargetError {
    /// A fixed phrase for the answer's `detail`.
    pub fn detail(self) -> &'static str {
        match self {
            TargetError::Path(_) => "path cannot be normalized",
            TargetError::MissingHost => "missing Host header",
            TargetError::RepeatedHost => "repeated Host header",
            TargetError::BadHost => "invalid Host",
            TargetError::BadScheme => "unsupported scheme",
        }
    }
}

/// Reads a request's target.
///
/// # Errors
/// [`TargetError`] when the request must be refused with 400.
pub fn parse(req: &RequestHeader) -> Result<Target<'_>, TargetError> {
    let uri = &req.uri;
    let path = normalize(uri.path()).map_err(TargetError::Path)?;
    // Pingora keeps an absolute-form target's scheme and authority in the raw target
    // only; its `Uri` holds the path and query.
    let raw = match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute {
            scheme, authority, ..
        } => Some((scheme, authority)),
        RawTargetAuthority::AmbiguousAuthority => return Err(TargetError::BadHost),
        RawTargetAuthority::None => None,
    };
    let absolute = raw.is_some() || uri.authority().is_some();
    let (authority, from_target) = if let Some((scheme, authority)) = raw {
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Err(TargetError::BadScheme);
        }
        let authority = std::str::from_utf8(authority).map_err(|_| TargetError::BadHost)?;
        (Some(authority), true)
    } else if let Some(authority) = uri.authority() {
        if !matches!(uri.scheme_str(), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
        {
            return Err(TargetError::BadScheme);
        }
        (Some(authority.as_str()), true)
    } else {
        let mut hosts = req.headers.get_all(HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(TargetError::RepeatedHost);
        }
        let host = host
            .map(|h| h.to_str().map_err(|_| TargetError::BadHost))
            .transpose()?;
        if host.is_none() && req.version != Version::HTTP_10 && req.version != Version::HTTP_09 {
            return Err(TargetError::MissingHost);
        }
        (host, false)
    };
    let host = authority.map(normalize_host).transpose()?;
    let forward_host = match (authority, &host) {
        (Some(authority), Some(host))
            if from_target || split_port(authority).0 != host.as_ref() =>
        {
            let port = split_port(authority.trim()).1;
            let text = match port {
                Some(port) if host.contains(':') => format!("[{host}]:{port}"),
                Some(port) => format!("{host}:{port}"),
                None if host.contains(':') => format!("[{host}]"),
                None => host.to_string(),
            };
            Some(HeaderValue::from_str(&text).map_err(|_| TargetError::BadHost)?)
        }
        _ => None,
    };
    let forward_uri = if absolute || path.as_str() != uri.path() {
        let pq = match uri.query() {
            Some(q) => format!("{}?{q}", path.as_str()),
            None => path.as_str().to_owned(),
        };
        Some(Uri::try_from(pq).map_err(|_| TargetError::Path(PathError::NotAbsolute))?)
    } else {
        None
    };
    Ok(Target {
        host,
        path,
        forward_host,
        forward_uri,
    })
}

/// Splits `host[:port]` (IPv6 in brackets); the host keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    // Byte positions: `@`, `[`, `]` and `:` are ASCII, so they are character boundaries.
    let last = |byte: u8, text: &str| text.bytes().rposition(|b| b == byte);
    let authority = last(b'@', authority).map_or(authority, |at| &authority[at + 1..]);
    if authority.starts_with('[') {
        return match authority.bytes().position(|b| b == b']') {
            Some(end) => (&authority[..=end], authority[end + 1..].strip_prefix(':')),
            None => (authority, None),
        };
    }
    match last(b':', authority) {
        Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
        None => (authority, None),
    }
}

/// A host as routes match it: lowercase, no port, no trailing dot, IPv6 unbracketed.
/// Borrowed when the text needed no change.
///
/// # Errors
/// [`TargetError::BadHost`] for anything that is not a host name or IP address with an
/// optional numeric port.
pub fn normalize_host(authority: &str) -> Result<Cow<'_, str>, TargetError> {
    let trimmed = authority.trim();
    let (host, port) = split_port(trimmed);
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(TargetError::BadHost);
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| TargetError::BadHost)?;
        return Ok(Cow::Owned(ip.to_string()));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || host.ends_with('.')
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(TargetError::BadHost);
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_normalize() {
        let cases: &[(&str, Result<&str, TargetError>)] = &[
            ("admin.example.com", Ok("admin.example.com")),
            ("Admin.Example.COM", Ok("admin.example.com")),
            ("admin.example.com.", Ok("admin.example.com")),
            ("ADMIN.example.com.:8443", Ok("admin.example.com")),
            ("admin.example.com:80", Ok("admin.example.com")),
            ("127.0.0.1:8080", Ok("127.0.0.1")),
            ("[::1]:8080", Ok("::1")),
            ("[::1]", Ok("::1")),
            ("[0:0::1]", Ok("::1")),
            (" spaced.example ", Ok("spaced.example")),
            ("", Err(TargetError::BadHost)),
            (".", Err(TargetError::BadHost)),
            ("a..", Err(TargetError::BadHost)),
            ("host:", Err(TargetError::BadHost)),
            ("host:80a", Err(TargetError::BadHost)),
            ("ho st", Err(TargetError::BadHost)),
            ("exa/mple", Err(TargetError::BadHost)),
            ("[::1", Err(TargetError::BadHost)),
            ("[nope]", Err(TargetError::BadHost)),
        ];
        for (input, expected) in cases {
            let got = normalize_host(input);
            assert_eq!(got.as_deref().map_err(|e| *e), *expected, "{input:?}");
        }
        assert!(matches!(
            normalize_host("plain.example"),
            Ok(Cow::Borrowed(_))
        ));
    }

    fn request(target: &str, headers: &[(&str, &str)], version: Version) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        r.set_version(version);
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn targets_route_by_their_authority_and_forward_origin_form() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Result<(Option<&'a str>, Option<&'a str>, Option<&'a str>), TargetError>,
        );
        let v11 = Version::HTTP_11;
        let cases: &[Case<'_>] = &[
            // (target, headers) -> (routing host, forwarded Host, forwarded URI)
            (
                "/api/x",
                &[("host", "app.example")],
                Ok((Some("app.example"), None, None)),
            ),
            (
                "/api//x?q=1",
                &[("host", "app.example")],
                Ok((Some("app.example"), None, Some("/api/x?q=1"))),
            ),
            (
                "/api/x",
                &[("host", "ADMIN.example.com.")],
                Ok((Some("admin.example.com"), Some("admin.example.com"), None)),
            ),
            (
                "/api/x",
                &[("host", "Admin.example.com:8080")],
                Ok((
                    Some("admin.example.com"),
                    Some("admin.example.com:8080"),
                    None,
                )),
            ),
            (
                "http://admin.example.com/api/payments/x",
                &[],
                Ok((
                    Some("admin.example.com"),
                    Some("admin.example.com"),
                    Some("/api/payments/x"),
                )),
            ),
            (
                "http://ADMIN.example.com.:81/p?q",
                &[("host", "other.example")],
                Ok((
                    Some("admin.example.com"),
                    Some("admin.example.com:81"),
                    Some("/p?q"),
                )),
            ),
            (
                "http://[::1]:81/p",
                &[],
                Ok((Some("::1"), Some("[::1]:81"), Some("/p"))),
            ),
            ("/api/x", &[], Err(TargetError::MissingHost)),
            (
                "/api/x",
                &[("host", "a.example"), ("host", "b.example")],
                Err(TargetError::RepeatedHost),
            ),
            ("/api/x", &[("host", "bad host")], Err(TargetError::BadHost)),
            (
                "/api/%2e%2e/%2e%2e/x",
                &[("host", "a")],
                Err(TargetError::Path(PathError::EscapesRoot)),
            ),
            ("ftp://a.example/x", &[], Err(TargetError::BadScheme)),
        ];
        for (target, headers, expected) in cases {
            let req = request(target, headers, v11);
            let got = parse(&req).map(|t| {
                (
                    t.host.map(Cow::into_owned),
                    t.forward_host.map(|h| h.to_str().unwrap().to_owned()),
                    t.forward_uri.map(|u| u.to_string()),
                )
            });
            let expected = expected.map(|(a, b, c)| {
                (
                    a.map(str::to_owned),
                    b.map(str::to_owned),
                    c.map(str::to_owned),
                )
            });
            assert_eq!(got, expected, "{target} {headers:?}");
        }
        let old = request("/x", &[], Version::HTTP_10);
        assert_eq!(parse(&old).unwrap().host, None, "HTTP/1.0 may omit Host");
    }

    // === properties ===

    use proptest::prelude::*;

    /// What routes may rely on: lowercase, no port, no trailing dot; an IPv6 address
    /// (the only form with `:`) in its canonical text, without brackets.
    fn assert_routable(host: &str) {
        if host.contains(':') {
            let ip: Ipv6Addr = host.parse().expect("only IPv6 addresses have a ':'");
            assert_eq!(ip.to_string(), host);
            return;
        }
        assert!(!host.is_empty() && !host.ends_with('.'), "{host:?}");
        assert!(
            host.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
            "{host:?}"
        );
    }

    fn authority() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ ]?[A-Za-z0-9._-]{0,12}[.]?(:[0-9]{0,6})?[ ]?",
            "\\[[0-9a-fA-F:.]{0,20}\\](:[0-9a-z]{0,5})?",
            "([a-z]{1,4}@)?[a-z.]{1,8}(:[0-9]{1,3})?",
            any::<String>(),
        ]
    }

    /// `split_port` as it was written with `str` patterns: what the byte search must equal.
    fn split_port_by_str(authority: &str) -> (&str, Option<&str>) {
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        if authority.starts_with('[') {
            return match authority.find(']') {
                Some(end) => (&authority[..=end], authority[end + 1..].strip_prefix(':')),
                None => (authority, None),
            };
        }
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    }

    proptest! {
        #[test]
        fn split_port_splits_where_str_patterns_split(
            authority in prop_oneof![authority(), "[@:\\[\\]a-zé€1]{0,12}"],
        ) {
            prop_assert_eq!(split_port(&authority), split_port_by_str(&authority));
        }

        #[test]
        fn hosts_normalize_to_what_routes_match(authority in authority()) {
            let Ok(host) = normalize_host(&authority) else { return Ok(()) };
            assert_routable(&host);
            // Normal form is a fixed point (IPv6 goes back in brackets).
            let again = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
            let back = normalize_host(&again);
            prop_assert_eq!(back.as_deref(), Ok(&*host));
        }

        #[test]
        fn targets_parse_into_routable_parts(
            target in prop_oneof![
                "/[ -~]{0,24}",
                "(http|https|HTTP|ftp)://[A-Za-z0-9.:@\\[\\]-]{0,16}(/[a-z./%]{0,12})?",
                "[*]|[a-z]{0,6}",
            ],
            hosts in prop::collection::vec(authority(), 0..3),
            old in any::<bool>(),
        ) {
            let Ok(mut req) = RequestHeader::build("GET", target.as_bytes(), None) else {
                return Ok(());
            };
            req.set_version(if old { Version::HTTP_10 } else { Version::HTTP_11 });
            for h in &hosts {
                if req.append_header("host", h.as_str()).is_err() {
                    return Ok(());
                }
            }
            let Ok(t) = parse(&req) else { return Ok(()) };
            let path = normalize(req.uri.path());
            prop_assert_eq!(Ok(&t.path), path.as_ref());
            if let Some(host) = &t.host {
                assert_routable(host);
            } else {
                prop_assert!(old && hosts.is_empty(), "only HTTP/1.0 may go without a host");
            }
            if let Some(forward) = &t.forward_host {
                // The Host sent upstream names the host the route was chosen by.
                let text = forward.to_str().expect("a host header is text");
                prop_assert_eq!(normalize_host(text).ok(), t.host.clone());
            }
            if let Some(uri) = &t.forward_uri {
                prop_assert!(uri.scheme().is_none() && uri.authority().is_none(), "{}", uri);
                prop_assert_eq!(uri.path(), t.path.as_str());
            }
        }
    }
}
