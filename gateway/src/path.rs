//! Request-path normalization and segment-boundary prefix matching.
//!
//! The gateway routes, authorizes and forwards on the *normalized* path, so the path the
//! route table sees is byte for byte the path the upstream receives. [`normalize`] is the
//! only producer of [`NormalizedPath`]; anything it cannot normalize safely is refused
//! (the proxy answers 400) rather than guessed at.
//!
//! ```
//! # use gateway::path::{matches_prefix, normalize};
//! let p = normalize("/api//orders/./7/../%7Ebob").expect("normalizes");
//! assert_eq!(p.as_str(), "/api/orders/~bob");
//! assert!(matches_prefix(&p, "/api/orders"));
//! assert!(normalize("/api/public/..%2Fadmin").is_err());
//! ```

use std::fmt;

/// The longest path, in bytes, that [`normalize`] accepts (before and after normalizing).
pub const MAX_PATH_LEN: usize = 8192;

/// A request path in canonical form; only [`normalize`] produces one.
///
/// Invariants: starts with `/`; no empty, `.` or `..` segments (a trailing `/` is kept);
/// percent-escapes appear only for bytes that are not unreserved, with uppercase hex, and
/// never for `/`, `\` or control characters; no raw control characters or backslashes;
/// every byte is a valid RFC 3986 path character; at most [`MAX_PATH_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedPath(String);

/// Why a path cannot be normalized safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("The path is empty.")]
    Empty,
    /// The path does not start with `/` (for example `*` or an absolute URI).
    #[error("The path does not start with '/'.")]
    NotAbsolute,
    /// A `%` is not followed by two hex digits.
    #[error("The path has a '%' that is not followed by two hex digits.")]
    BadPercentEncoding,
    /// An encoded `/` (`%2F`) or `\` (`%5C`), which upstreams may decode differently.
    #[error("The path has an encoded slash or backslash (%2F or %5C).")]
    EncodedSlash,
    /// A NUL or other control character, raw or percent-encoded (`%00`-`%1F`, `%7F`).
    #[error("The path has a NUL or control character.")]
    NulOrControl,
    /// A raw backslash, which some servers treat as a path separator.
    #[error("The path has a backslash.")]
    Backslash,
    /// A `.` or `..` segment carrying `;` parameters (`..;/`), which some servers resolve.
    #[error("The path has a dot segment with ';' parameters.")]
    DotSegmentParameters,
    /// A `..` segment would climb above the root.
    #[error("The path climbs above the root with '..'.")]
    EscapesRoot,
    /// The path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("The path is longer than 8192 bytes.")]
    TooLong,
}

/// Normalizes the path part of a request target (the caller splits off the query).
///
/// Percent-decodes unreserved characters (`A-Z a-z 0-9 - . _ ~`) and uppercases the hex
/// of every other escape; percent-encodes raw bytes that are not valid path characters;
/// merges repeated slashes; resolves `.` and `..` segments (including ones spelled with
/// `%2E`); keeps a trailing slash.
///
/// # Errors
/// A [`PathError`] for an empty or relative path, a malformed escape, an encoded slash or
/// backslash, a control character, a raw backslash, a dot segment with `;` parameters,
/// `..` above the root, or a path longer than [`MAX_PATH_LEN`].
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if is_normal(raw.as_bytes()) {
        return Ok(NormalizedPath(raw.to_owned()));
    }
    slow_normalize(raw.as_bytes())
}

/// Whether `path` lies under `prefix` on segment boundaries.
///
/// `prefix` is a validated route prefix (normalized, no trailing `/` unless it is `/`).
/// `/` matches every path; `/api/orders` matches `/api/orders`, `/api/orders/` and
/// `/api/orders/7`, but not `/api/ordersX`. A path segment is compared without its
/// `;` parameters, so `/api/orders;v=1/7` also matches `/api/orders`, as it would reach
/// that resource on servers that strip path parameters (Tomcat, Spring).
pub fn matches_prefix(path: &NormalizedPath, prefix: &str) -> bool {
    let Some(prefix) = prefix.strip_prefix('/') else {
        return false;
    };
    if prefix.is_empty() {
        return true;
    }
    // On bytes: `/` and `;` are ASCII, so they split UTF-8 text where `str::split` would,
    // without its character searcher (every route is tried in turn, on every request).
    let mut segments = path.0.as_bytes()[1..].split(|&b| b == b'/');
    prefix.as_bytes().split(|&b| b == b'/').all(|want| {
        segments
            .next()
            .is_some_and(|seg| seg.split(|&b| b == b';').next().unwrap_or(seg) == want)
    })
}

// === impl NormalizedPath ===

impl NormalizedPath {
    /// The normalized path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalized path, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for NormalizedPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === helpers ===

/// Unreserved characters (RFC 3986 §2.3): decoded when percent-encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters that may appear raw in a path (RFC 3986 `pchar` plus `/`), minus `%`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    out.push(b'%');
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0x0f)]);
}

/// Whether a segment is `.` or `..`, possibly followed by `;` parameters.
fn dot_segment(seg: &[u8]) -> Option<(bool, bool)> {
    let (name, has_params) = match seg.iter().position(|&b| b == b';') {
        Some(i) => (&seg[..i], true),
        None => (seg, false),
    };
    match name {
        b"." => Some((false, has_params)),
        b".." => Some((true, has_params)),
        _ => None,
    }
}

/// The fast path: true when `raw` is already in normal form and can be copied as is.
fn is_normal(raw: &[u8]) -> bool {
    let mut i = 1;
    let mut seg_start = 1;
    while i <= raw.len() {
        if i == raw.len() || raw[i] == b'/' {
            let seg = &raw[seg_start..i];
            // An empty segment is only allowed as the trailing one (`/` or `/a/`).
            if (seg.is_empty() && i != raw.len()) || dot_segment(seg).is_some() {
                return false;
            }
            seg_start = i + 1;
            i += 1;
            continue;
        }
        match raw[i] {
            b'%' => {
                let (Some(&h), Some(&l)) = (raw.get(i + 1), raw.get(i + 2)) else {
                    return false;
                };
                let upper = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if !upper(h) || !upper(l) {
                    return false;
                }
                let v = (hex_value(h).unwrap_or(0) << 4) | hex_value(l).unwrap_or(0);
                if is_unreserved(v) || is_control(v) || v == b'/' || v == b'\\' {
                    return false;
                }
                i += 3;
            }
            b if is_path_char(b) => i += 1,
            _ => return false,
        }
    }
    true
}

fn slow_normalize(raw: &[u8]) -> Result<NormalizedPath, PathError> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    // Start offsets in `out` of each kept segment's leading '/', for `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = raw[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push(b'/');
        decode_segment(seg, &mut out)?;
        let decoded = &out[start + 1..];
        if decoded.is_empty() {
            out.truncate(start);
            trailing_slash = last;
            continue;
        }
        match dot_segment(decoded) {
            Some((_, true)) => return Err(PathError::DotSegmentParameters),
            Some((false, false)) => {
                out.truncate(start);
                trailing_slash = last;
            }
            Some((true, false)) => {
                out.truncate(start);
                let parent = starts.pop().ok_or(PathError::EscapesRoot)?;
                out.truncate(parent);
                trailing_slash = last;
            }
            None => {
                starts.push(start);
                trailing_slash = false;
            }
        }
        if out.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    if out.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    // Every byte pushed is ASCII: unreserved, a path character, or an escape.
    String::from_utf8(out)
        .map(NormalizedPath)
        .map_err(|_| PathError::BadPercentEncoding)
}

/// Appends the canonical form of one raw segment to `out`.
fn decode_segment(seg: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                seg.get(i + 1).copied().and_then(hex_value),
                seg.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(PathError::BadPercentEncoding);
            };
            let v = (h << 4) | l;
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSlash);
            }
            if is_control(v) {
                return Err(PathError::NulOrControl);
            }
            if is_unreserved(v) {
                out.push(v);
            } else {
                push_escaped(out, v);
            }
            i += 3;
            continue;
        }
        if is_control(b) {
            return Err(PathError::NulOrControl);
        }
        if b == b'\\' {
            return Err(PathError::Backslash);
        }
        if is_path_char(b) {
            out.push(b);
        } else {
            // Space, quotes, `<>{}|^` and non-ASCII bytes: the canonical form is the escape.
            push_escaped(out, b);
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, PathError>) {
        let got = normalize(input);
        assert_eq!(
            got.as_ref().map(NormalizedPath::as_str),
            expected.as_ref().map(|s| *s),
            "normalize({input:?})"
        );
        if let Ok(p) = got {
            // Normal form is a fixed point, and the fast path agrees with the slow one.
            assert_eq!(
                normalize(p.as_str()).as_ref(),
                Ok(&p),
                "idempotent for {input:?}"
            );
            assert!(
                is_normal(p.as_str().as_bytes()),
                "fast path accepts output of {input:?}"
            );
            assert_eq!(slow_normalize(p.as_str().as_bytes()).as_ref(), Ok(&p));
        }
    }

    #[test]
    fn normalizes() {
        use PathError::*;
        let cases: &[(&str, Result<&str, PathError>)] = &[
            // Already normal.
            ("/", Ok("/")),
            ("/api", Ok("/api")),
            ("/api/orders/7", Ok("/api/orders/7")),
            ("/api/orders/", Ok("/api/orders/")),
            ("/a%20b", Ok("/a%20b")),
            ("/a;b=c/d", Ok("/a;b=c/d")),
            ("/a:b@c!$&'()*+,=", Ok("/a:b@c!$&'()*+,=")),
            ("/...", Ok("/...")),
            ("/a/..b/c..", Ok("/a/..b/c..")),
            ("/.well-known/jwks.json", Ok("/.well-known/jwks.json")),
            // Percent-decoding of unreserved characters only, uppercase hex otherwise.
            ("/a/%41", Ok("/a/A")),
            ("/%7euser", Ok("/~user")),
            ("/%7Euser/%2d%2E%5f", Ok("/~user/-._")),
            ("/a%2fb", Err(EncodedSlash)),
            ("/a%2Fb", Err(EncodedSlash)),
            ("/a%5cb", Err(EncodedSlash)),
            ("/a%5Cb", Err(EncodedSlash)),
            ("/a%3b", Ok("/a%3B")),
            ("/a%3F%23", Ok("/a%3F%23")),
            ("/a%25", Ok("/a%25")),
            ("/a%2541", Ok("/a%2541")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/x/file%20name.txt", Ok("/x/file%20name.txt")),
            ("/x/last%2e", Ok("/x/last.")),
            ("/x/100%", Err(BadPercentEncoding)),
            ("/x/%zz", Err(BadPercentEncoding)),
            ("/x/%4", Err(BadPercentEncoding)),
            ("/x/%4g", Err(BadPercentEncoding)),
            ("/x/%", Err(BadPercentEncoding)),
            // Raw bytes that are not path characters are escaped.
            ("/a b", Ok("/a%20b")),
            ("/a\"<>`{}|^", Ok("/a%22%3C%3E%60%7B%7D%7C%5E")),
            ("/café", Ok("/caf%C3%A9")),
            // Control characters and backslashes.
            ("/a%00", Err(NulOrControl)),
            ("/a%0a", Err(NulOrControl)),
            ("/a%1F", Err(NulOrControl)),
            ("/a%7f", Err(NulOrControl)),
            ("/a\0b", Err(NulOrControl)),
            ("/a\tb", Err(NulOrControl)),
            ("/a\x7fb", Err(NulOrControl)),
            ("/a\\b", Err(Backslash)),
            ("/api\\..\\admin", Err(Backslash)),
            // Slashes and dot segments.
            ("/api//admin", Ok("/api/admin")),
            ("//api///orders//", Ok("/api/orders/")),
            ("//", Ok("/")),
            ("/./api", Ok("/api")),
            ("/api/.", Ok("/api/")),
            ("/api/./", Ok("/api/")),
            ("/api/orders/..", Ok("/api/")),
            ("/a/b/../../c", Ok("/c")),
            ("/a/b/../..", Ok("/")),
            ("/a/./b/./../c/", Ok("/a/c/")),
            ("/..", Err(EscapesRoot)),
            ("/../", Err(EscapesRoot)),
            ("/a/../..", Err(EscapesRoot)),
            ("/a/../../etc/passwd", Err(EscapesRoot)),
            ("/%2e%2e", Err(EscapesRoot)),
            // Attacks on prefix-based authorization.
            ("/api/public/../admin", Ok("/api/admin")),
            ("/api/public/%2e%2e/admin", Ok("/api/admin")),
            ("/api/public/%2E%2E/admin", Ok("/api/admin")),
            ("/api/public/.%2e/admin", Ok("/api/admin")),
            ("/api/public/%2e/admin", Ok("/api/public/admin")),
            ("/api/public/..%2Fadmin", Err(EncodedSlash)),
            ("/api/public%2F..%2Fadmin", Err(EncodedSlash)),
            ("/api/public/..%5Cadmin", Err(EncodedSlash)),
            ("/api/public/..;/admin", Err(DotSegmentParameters)),
            ("/api/public/.;x/admin", Err(DotSegmentParameters)),
            ("/api/public/%2e%2e;/admin", Err(DotSegmentParameters)),
            ("/api/admin%00.json", Err(NulOrControl)),
            // Not absolute.
            ("", Err(Empty)),
            ("*", Err(NotAbsolute)),
            ("api/orders", Err(NotAbsolute)),
            ("http://example.com/a", Err(NotAbsolute)),
        ];
        for (input, expected) in cases {
            check(input, *expected);
        }
    }

    #[test]
    fn length_limit() {
        let ok = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        check(&ok, Ok(&ok));
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        check(&long, Err(PathError::TooLong));
        // Escaping raw bytes can push a path over the limit.
        let grows = format!("/{}", " ".repeat(MAX_PATH_LEN / 2));
        check(&grows, Err(PathError::TooLong));
        // Dot segments are resolved before the limit applies to the result.
        let shrinks = format!("/{}/..", "a".repeat(MAX_PATH_LEN - 10));
        check(&shrinks, Ok("/"));
    }

    #[test]
    fn prefix_matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/anything/at/all", "/", true),
            ("/api/orders", "/api/orders", true),
            ("/api/orders/", "/api/orders", true),
            ("/api/orders/7", "/api/orders", true),
            ("/api/orders/7/items", "/api/orders", true),
            ("/api/ordersX", "/api/orders", false),
            ("/api/order", "/api/orders", false),
            ("/api", "/api/orders", false),
            ("/api/", "/api/orders", false),
            ("/apix/orders", "/api/orders", false),
            ("/api/orders;v=1", "/api/orders", true),
            ("/api;x/orders/7", "/api/orders", true),
            ("/api/orders%3Bv=1", "/api/orders", false),
            ("/API/orders", "/api/orders", false),
            ("/api/orders", "", false),
        ];
        for &(path, prefix, expected) in cases {
            let p = normalize(path).expect("test paths normalize");
            assert_eq!(
                matches_prefix(&p, prefix),
                expected,
                "matches_prefix({path:?}, {prefix:?})"
            );
        }
    }

    // === properties ===

    use proptest::prelude::*;

    /// The documented invariants of [`NormalizedPath`].
    fn assert_normal_form(p: &NormalizedPath) {
        let s = p.as_str();
        assert!(s.starts_with('/') && s.len() <= MAX_PATH_LEN, "{s:?}");
        assert!(!s.contains("//"), "empty segment in {s:?}");
        let segments: Vec<&str> = s[1..].split('/').collect();
        for seg in &segments {
            let name = seg.split(';').next().unwrap_or(seg);
            assert!(name != "." && name != "..", "dot segment in {s:?}");
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = &s[i + 1..i + 3];
                assert!(
                    hex.bytes()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
                    "lowercase or bad escape in {s:?}"
                );
                let v = u8::from_str_radix(hex, 16).unwrap();
                assert!(
                    !is_unreserved(v) && !is_control(v) && v != b'/' && v != b'\\',
                    "needless or forbidden escape %{hex} in {s:?}"
                );
                i += 3;
            } else {
                assert!(is_path_char(bytes[i]), "raw {:?} in {s:?}", bytes[i]);
                i += 1;
            }
        }
    }

    /// Normalization written plainly, for comparison: decode each segment byte by byte
    /// (remembering which bytes were escaped), refuse what must be refused, resolve dot
    /// segments on a stack. Lengths are not checked (generated paths are short).
    fn model(raw: &str) -> Option<String> {
        let rest = raw.as_bytes().strip_prefix(b"/")?;
        let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
        let (mut kept, mut trailing) = (Vec::<String>::new(), false);
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let mut seg = String::new();
            let mut j = 0;
            while j < part.len() {
                let (b, escaped) = if part[j] == b'%' {
                    let hex = std::str::from_utf8(part.get(j + 1..j + 3)?).ok()?;
                    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return None;
                    }
                    j += 3;
                    (u8::from_str_radix(hex, 16).ok()?, true)
                } else {
                    j += 1;
                    (part[j - 1], false)
                };
                if b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f {
                    return None;
                }
                if is_unreserved(b) || (!escaped && is_path_char(b)) {
                    seg.push(char::from(b));
                } else {
                    seg.push_str(&format!("%{b:02X}"));
                }
            }
            let (name, params) = match seg.split_once(';') {
                Some((name, _)) => (name, true),
                None => (seg.as_str(), false),
            };
            match name {
                _ if seg.is_empty() => trailing = last,
                "." | ".." if params => return None,
                "." => trailing = last,
                ".." => {
                    kept.pop()?;
                    trailing = last;
                }
                _ => {
                    kept.push(seg.clone());
                    trailing = false;
                }
            }
        }
        let mut out: String = kept.iter().map(|s| format!("/{s}")).collect();
        if out.is_empty() || trailing {
            out.push('/');
        }
        Some(out)
    }

    /// Paths made of the pieces normalization cares about.
    fn path_soup() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/", "//", ".", "..", "%2e", "%2E", "%2f", "%5C", "a", "B", "~", "%41", "%7e", "%7E",
            ";", ";x", " ", "\u{e9}", "%", "%zz", "%4", "\\", "\0", "%00", "%1f", "%3b", "%25",
            "admin", "-", "_", ":", "@", "\"", "%C3%a9", "\t", "?", "#",
        ]);
        prop::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
    }

    fn check_properties(raw: &str) -> Result<(), TestCaseError> {
        let got = normalize(raw);
        let expected = model(raw);
        prop_assert_eq!(
            got.as_ref().ok().map(NormalizedPath::as_str),
            expected.as_deref()
        );
        if let Ok(p) = got {
            assert_normal_form(&p);
            let again = normalize(p.as_str());
            prop_assert_eq!(again.as_ref(), Ok(&p), "not idempotent");
            prop_assert!(
                is_normal(p.as_str().as_bytes()),
                "fast path refuses {:?}",
                p
            );
        }
        if raw.starts_with('/') {
            // The fast path is only a shortcut: the slow path agrees with it.
            prop_assert_eq!(slow_normalize(raw.as_bytes()), normalize(raw));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn normalize_matches_its_model_and_is_idempotent(raw in path_soup()) {
            check_properties(&raw)?;
        }

        #[test]
        fn normalize_never_panics_on_any_text(
            raw in prop_oneof!["/[ -~]{0,40}", any::<String>(), "/\\PC{0,20}"],
        ) {
            check_properties(&raw)?;
        }

        #[test]
        fn prefixes_match_on_segment_boundaries(
            raw in path_soup(),
            prefix in prop::collection::vec(prop::sample::select(vec!["a", "B", "admin", "~"]), 0..4),
        ) {
            let Ok(path) = normalize(&raw) else { return Ok(()) };
            let prefix = format!("/{}", prefix.join("/"));
            // The path's leading segments, without their `;` parameters, are the prefix's.
            let want: Vec<&str> = prefix[1..].split('/').filter(|s| !s.is_empty()).collect();
            let have: Vec<&str> = path.as_str()[1..]
                .split('/')
                .map(|s| s.split(';').next().unwrap_or(s))
                .collect();
            let expected = have.len() >= want.len() && have[..want.len()] == want[..];
            prop_assert_eq!(matches_prefix(&path, &prefix), expected, "{} under {}", path, prefix);
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        for e in [
            PathError::Empty,
            PathError::EncodedSlash,
            PathError::TooLong,
        ] {
            let s = e.to_string();
            assert!(s.starts_with("The path") && s.ends_with('.'), "{s}");
        }
    }
}
