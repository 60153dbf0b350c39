//! Request hygiene on the way upstream: hop-by-hop headers, forwarding headers and the
//! request id.
//!
//! A client may claim anything in `Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
//! `X-Original-URL` or `X-Rewrite-URL`; upstreams trust those for logging, rate limits and
//! routing, so the gateway removes them and sets `X-Forwarded-For`, `-Proto` and `-Host`
//! itself. Only a peer in `server.trusted_proxies` (a load balancer in front) has its
//! `X-Forwarded-For` extended and its `-Proto`/`-Host` kept.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::RequestHeader;

/// Headers a client may not set for the upstream (besides every `X-Forwarded-*`).
const SPOOFABLE: [&str; 4] = ["forwarded", "x-real-ip", "x-original-url", "x-rewrite-url"];

/// Hop-by-hop headers (RFC 9110 §7.6.1) removed from every request, besides those
/// `Connection` names and `Transfer-Encoding` (the HTTP layer frames the body itself).
/// Names, not text, so that nothing is parsed per request.
const HOP_BY_HOP: [HeaderName; 3] = [
    HeaderName::from_static("keep-alive"),
    http::header::TE,
    http::header::TRAILER,
];

/// `X-Request-Id`, kept from the client when well-formed, else made: the name to look up.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Names the gateway sets, as written on the wire.
///
/// Pingora's `insert_header` keeps each name's case for the wire. Given a `HeaderName`,
/// it copies the name's text into a new buffer unless Pingora knows a title case for it;
/// given a `&'static str`, it uses the text as it is. These are what the gateway inserts
/// on every request.
pub mod wire {
    /// `Authorization`.
    pub const AUTHORIZATION: &str = "Authorization";
    /// `Cookie`.
    pub const COOKIE: &str = "Cookie";
    /// `X-Request-Id`.
    pub const X_REQUEST_ID: &str = "X-Request-Id";
    /// `X-Forwarded-For`.
    pub const X_FORWARDED_FOR: &str = "X-Forwarded-For";
    /// `X-Forwarded-Proto`.
    pub const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
    /// `X-Forwarded-Host`.
    pub const X_FORWARDED_HOST: &str = "X-Forwarded-Host";
    /// `Strict-Transport-Security`.
    pub const STRICT_TRANSPORT_SECURITY: &str = "Strict-Transport-Security";
}

/// Whether a request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade(req: &RequestHeader) -> bool {
    req.headers.contains_key(UPGRADE)
        && req
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
}

/// The comma-separated tokens of a header value.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `TE`, `Trailer`, `Proxy-*`, and `Upgrade` unless the request is an upgrade (which
/// then keeps `Connection: upgrade`). `Transfer-Encoding` is left to the HTTP layer,
/// which frames the body itself.
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    let upgrade = is_upgrade(req);
    let mut named: Vec<HeaderName> = Vec::new();
    for value in req.headers.get_all(CONNECTION) {
        for token in tokens(value) {
            if let Ok(name) = HeaderName::from_bytes(token)
                && !matches!(name.as_str(), "upgrade" | "transfer-encoding" | "host")
            {
                named.push(name);
            }
        }
    }
    let proxy: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in named.iter().chain(&proxy) {
        req.remove_header(name);
    }
    // Only what is there: removing an absent name still costs two map lookups.
    let framing: &[HeaderName] = if upgrade { &[] } else { &[CONNECTION, UPGRADE] };
    for name in HOP_BY_HOP.iter().chain(framing) {
        if req.headers.contains_key(name) {
            req.remove_header(name);
        }
    }
    if upgrade {
        // Replaces whatever else `Connection` listed.
        let _ = req.insert_header(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What the gateway knows of where a request came from.
pub struct Origin<'a> {
    /// The peer's address.
    pub peer: Option<IpAddr>,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// The authority the route was chosen by.
    pub host: Option<&'a HeaderValue>,
}

/// Whether `peer` is in one of the `trusted` networks.
pub fn is_trusted(peer: Option<IpAddr>, trusted: &[IpNet]) -> bool {
    peer.is_some_and(|ip| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        trusted.iter().any(|net| net.contains(&ip))
    })
}

/// Replaces every forwarding header the client sent with the gateway's own.
///
/// # Errors
/// Never in practice: every value set is built from valid header values.
pub fn set_forwarding(req: &mut RequestHeader, origin: &Origin<'_>) -> pingora::Result<()> {
    // A trusted proxy's claims, joined across repeated headers, before they go.
    let kept = |req: &RequestHeader, name: &str| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for v in req.headers.get_all(name) {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v.as_bytes().trim_ascii());
        }
        (!out.is_empty()).then_some(out)
    };
    let (prior_for, prior_proto, prior_host) = if origin.trusted {
        (
            kept(req, "x-forwarded-for"),
            kept(req, "x-forwarded-proto"),
            kept(req, "x-forwarded-host"),
        )
    } else {
        (None, None, None)
    };
    let spoofed: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-forwarded-") || SPOOFABLE.contains(&n.as_str()))
        .cloned()
        .collect();
    for name in &spoofed {
        req.remove_header(name);
    }
    let mut ip_buf = [0u8; 64];
    let ip = origin.peer.and_then(|ip| ip_text(&mut ip_buf, ip));
    let value = |bytes: &[u8]| HeaderValue::from_bytes(bytes).ok();
    let forwarded_for = match (prior_for, ip) {
        (Some(mut chain), Some(ip)) => {
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(ip.as_bytes());
            value(&chain)
        }
        (Some(chain), None) => value(&chain),
        (None, Some(ip)) => value(ip.as_bytes()),
        (None, None) => None,
    };
    if let Some(v) = forwarded_for {
        req.insert_header(wire::X_FORWARDED_FOR, v)?;
    }
    let proto = prior_proto
        .and_then(|p| value(&p))
        .unwrap_or(HeaderValue::from_static(if origin.tls {
            "https"
        } else {
            "http"
        }));
    req.insert_header(wire::X_FORWARDED_PROTO, proto)?;
    // The authority as a header value already: shared, not copied. Only visible ASCII,
    // as the text it was routed by.
    let host = prior_host
        .and_then(|h| value(&h))
        .or_else(|| origin.host.filter(|h| h.to_str().is_ok()).cloned());
    if let Some(host) = host {
        req.insert_header(wire::X_FORWARDED_HOST, host)?;
    }
    Ok(())
}

/// `ip` as text in `buf`: IPv4 octet by octet with itoa (the common case, per request),
/// IPv6 by its `Display`.
fn ip_text(buf: &mut [u8; 64], ip: IpAddr) -> Option<&str> {
    let IpAddr::V4(v4) = ip else {
        return display_in(buf, ip);
    };
    let mut digits = itoa::Buffer::new();
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        let text = digits.format(octet).as_bytes();
        buf[len..len + text.len()].copy_from_slice(text);
        len += text.len();
    }
    std::str::from_utf8(&buf[..len]).ok()
}

/// Formats `value` into `buf` without allocating; `None` if it does not fit (an address
/// always fits in 64 bytes).
pub fn display_in(buf: &mut [u8], value: impl std::fmt::Display) -> Option<&str> {
    use std::io::Write as _;
    let len = buf.len();
    let mut cursor = &mut buf[..];
    write!(cursor, "{value}").ok()?;
    let written = len - cursor.len();
    std::str::from_utf8(&buf[..written]).ok()
}

/// Longest `X-Request-Id` kept from a client.
pub const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id`, if it is 1–128 visible ASCII characters.
pub fn client_request_id(req: &RequestHeader) -> Option<&HeaderValue> {
    let mut values = req.headers.get_all(X_REQUEST_ID).iter();
    let value = values.next()?;
    let ok = values.next().is_none()
        && (1..=MAX_REQUEST_ID).contains(&value.len())
        && value.as_bytes().iter().all(|b| b.is_ascii_graphic());
    ok.then_some(value)
}

/// Fresh request ids: 32 hex digits, a random per-process prefix and a counter.
///
/// Each id is one shared buffer: the copies sent upstream and back to the client share
/// it instead of each promoting the first to shared storage.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut prefix = [0u8; 8];
        // The system RNG only fails without an entropy source; ids then stay unique per
        // process, just guessable, which they may be.
        let _ = aws_lc_rs::rand::fill(&mut prefix);
        Self {
            prefix: u64::from_le_bytes(prefix),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The next id.
    pub fn next(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 32];
        for (i, word) in [self.prefix, n].into_iter().enumerate() {
            for (j, digit) in id[i * 16..(i + 1) * 16].iter_mut().enumerate() {
                *digit = HEX[((word >> (60 - 4 * j)) & 0xf) as usize];
            }
        }
        // Hex digits are a valid header value.
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
            .unwrap_or(HeaderValue::from_static("0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut r = req(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut r);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "upgrade",
        ] {
            assert!(get(&r, gone).is_empty(), "{gone}");
        }
        assert_eq!(get(&r, "x-kept"), ["yes"]);

        let mut ws = req(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&ws));
        strip_hop_by_hop(&mut ws);
        assert_eq!(get(&ws, "connection"), ["upgrade"]);
        assert_eq!(get(&ws, "upgrade"), ["websocket"]);
        assert!(get(&ws, "x-secret").is_empty());
        assert_eq!(get(&ws, "sec-websocket-key"), ["k"]);
    }

    #[test]
    fn forwarding_headers_are_the_gateways_own_unless_a_trusted_proxy_sent_them() {
        let spoofed = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-prefix", "/admin"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
        ];
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let mut r = req(&spoofed);
        let host = HeaderValue::from_static("app.example");
        let origin = Origin {
            peer: Some(peer),
            trusted: false,
            tls: false,
            host: Some(&host),
        };
        set_forwarding(&mut r, &origin).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(get(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["app.example"]);
        for gone in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "forwarded",
            "x-real-ip",
            "x-original-url",
            "x-rewrite-url",
        ] {
            assert!(get(&r, gone).is_empty(), "{gone}");
        }

        let mut r = req(&spoofed);
        let origin = Origin {
            trusted: true,
            tls: true,
            ..origin
        };
        set_forwarding(&mut r, &origin).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), ["6.6.6.6, 7.7.7.7, 10.1.2.3"]);
        assert_eq!(get(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["evil.example"]);
        assert!(
            get(&r, "x-forwarded-prefix").is_empty(),
            "only the three are kept"
        );

        let mut r = req(&[]);
        set_forwarding(&mut r, &origin).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(get(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["app.example"]);
    }

    #[test]
    fn trusted_proxies_match_by_network_and_mapped_addresses() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let t = |s: &str| is_trusted(Some(s.parse().unwrap()), &nets);
        assert!(t("10.200.0.1"));
        assert!(t("::1"));
        assert!(t("::ffff:10.0.0.1"));
        assert!(!t("11.0.0.1"));
        assert!(!t("::2"));
        assert!(!is_trusted(None, &nets));
        assert!(!is_trusted(Some("10.0.0.1".parse().unwrap()), &[]));
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        let max = "x".repeat(MAX_REQUEST_ID);
        let cases: &[(&[&str], bool)] = &[
            (&["abc-123"], true),
            (&[&max], true),
            (&[&long], false),
            (&[""], false),
            (&["has space"], false),
            (&["a", "b"], false),
            (&[], false),
        ];
        for (values, kept) in cases {
            let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("x-request-id", *v)).collect();
            let r = req(&pairs);
            assert_eq!(client_request_id(&r).is_some(), *kept, "{values:?}");
        }
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header(
            "x-request-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .unwrap();
        assert!(client_request_id(&r).is_none(), "not ASCII");
        let ids = RequestIds::default();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        // The prefix stays, the counter counts, in lowercase hex.
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
        let count = |v: &HeaderValue| u128::from_str_radix(v.to_str().unwrap(), 16).unwrap();
        assert_eq!(count(&b), count(&a) + 1);
        let prefix = u64::from_str_radix(&a.to_str().unwrap()[..16], 16).unwrap();
        assert_eq!(prefix, ids.prefix);
        assert_eq!(
            a.to_str().unwrap(),
            a.to_str().unwrap().to_ascii_lowercase()
        );
    }

    #[test]
    fn ip_text_writes_what_display_writes() {
        let mut buf = [0u8; 64];
        let mut octets = vec![0u8, 1, 9, 10, 99, 100, 199, 200, 255];
        octets.extend((0..=255).step_by(7));
        for &a in &octets {
            for &b in &[0u8, 7, 42, 127, 255] {
                let ip = IpAddr::V4(std::net::Ipv4Addr::new(a, b, 255 - a, a / 3));
                assert_eq!(ip_text(&mut buf, ip), Some(ip.to_string().as_str()));
            }
        }
        for v6 in ["::1", "2001:db8::1", "::ffff:10.0.0.1", "fe80::1:2:3:4"] {
            let ip: IpAddr = v6.parse().unwrap();
            assert_eq!(ip_text(&mut buf, ip), Some(ip.to_string().as_str()));
        }
    }

    #[test]
    fn a_host_that_is_not_visible_ascii_is_not_forwarded() {
        let host = HeaderValue::from_bytes(b"caf\xc3\xa9.example").unwrap();
        let origin = Origin {
            peer: None,
            trusted: false,
            tls: false,
            host: Some(&host),
        };
        let mut r = req(&[]);
        set_forwarding(&mut r, &origin).unwrap();
        assert!(get(&r, "x-forwarded-host").is_empty());
        assert!(get(&r, "x-forwarded-for").is_empty());
        assert_eq!(get(&r, "x-forwarded-proto"), ["http"]);
    }

    #[test]
    fn the_gateways_headers_go_upstream_in_title_case() {
        let host = HeaderValue::from_static("app.example");
        let origin = Origin {
            peer: Some("10.1.2.3".parse().unwrap()),
            trusted: false,
            tls: true,
            host: Some(&host),
        };
        let mut r = req(&[("x-forwarded-for", "6.6.6.6")]);
        set_forwarding(&mut r, &origin).unwrap();
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        for line in [
            "X-Forwarded-For: 10.1.2.3\r\n",
            "X-Forwarded-Proto: https\r\n",
            "X-Forwarded-Host: app.example\r\n",
        ] {
            assert!(wire.contains(line), "{line:?} in {wire:?}");
        }
        assert!(!wire.contains("6.6.6.6"));
    }

    #[test]
    fn display_in_formats_without_allocating_and_refuses_what_does_not_fit() {
        let mut buf = [0u8; 64];
        let v6: std::net::SocketAddr = "[2001:db8::ffff:1:2:3]:65535".parse().unwrap();
        assert_eq!(
            display_in(&mut buf, v6),
            Some("[2001:db8::ffff:1:2:3]:65535")
        );
        let mut small = [0u8; 4];
        assert_eq!(display_in(&mut small, v6), None);
    }
}
