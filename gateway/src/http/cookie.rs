//! The `Cookie` request header: finding the session cookie and removing it before
//! forwarding.
//!
//! Each `;`-separated pair is read on its own, as bytes, so that a pair another
//! application set with bytes that are not UTF-8 (or not ASCII) hides nothing: a sibling
//! subdomain's odd cookie must not lock a user out.

use http::HeaderValue;

/// The session cookie as a request presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No cookie of that name.
    Absent,
    /// Its value (surrounding double quotes removed).
    Value(&'a str),
    /// A cookie of that name whose value is not text: no session, refused before Redis.
    Unreadable,
}

impl<'a> Presented<'a> {
    /// The same cookie, its value mapped.
    pub fn map<T>(self, f: impl FnOnce(&'a str) -> T) -> PresentedAs<T> {
        match self {
            Presented::Absent => PresentedAs::Absent,
            Presented::Value(v) => PresentedAs::Value(f(v)),
            Presented::Unreadable => PresentedAs::Unreadable,
        }
    }
}

/// [`Presented`] with an owned value (held across an await that needs the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedAs<T> {
    /// No cookie of that name.
    Absent,
    /// Its value.
    Value(T),
    /// A value that is not text.
    Unreadable,
}

impl PresentedAs<String> {
    /// Borrowed again.
    pub fn as_ref(&self) -> Presented<'_> {
        match self {
            PresentedAs::Absent => Presented::Absent,
            PresentedAs::Value(v) => Presented::Value(v),
            PresentedAs::Unreadable => Presented::Unreadable,
        }
    }
}

/// The pairs of one `Cookie` header value: `(name, value, pair)` as bytes, each trimmed
/// of whitespace, empty pairs skipped. A pair without `=` is a value without a name.
fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            return None;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (&b""[..], pair),
        };
        Some((name.trim_ascii(), value.trim_ascii(), pair))
    })
}

/// Finds cookie `name` across every `Cookie` header (the first occurrence wins), and
/// adds up the headers' total size.
pub fn find<'a>(
    headers: impl Iterator<Item = &'a HeaderValue>,
    name: &str,
) -> (Presented<'a>, usize) {
    let mut total = 0;
    let mut found = Presented::Absent;
    for header in headers {
        let bytes = header.as_bytes();
        total += bytes.len();
        if found != Presented::Absent {
            continue;
        }
        if let Some((_, value, _)) = pairs(bytes).find(|(n, _, _)| *n == name.as_bytes()) {
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            found = match std::str::from_utf8(value) {
                Ok(v) => Presented::Value(v),
                Err(_) => Presented::Unreadable,
            };
        }
    }
    (found, total)
}

/// What removing the session cookie leaves of the `Cookie` headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Stripped {
    /// The headers do not carry the cookie (and are a single header): forward them as
    /// they are.
    Unchanged,
    /// Nothing is left: remove the header.
    Empty,
    /// Replace every `Cookie` header with this one.
    Joined(HeaderValue),
}

/// Removes cookie `name` from the `Cookie` headers, keeping every other pair's bytes
/// as they were (only the whitespace around a pair goes), in order, joined by `"; "`.
///
/// A pair is kept whole, never rebuilt from its name and value: rebuilding `=s=x` (a
/// nameless pair, which [`find`] does not take for cookie `s`) as `s=x` would hand the
/// upstream a cookie of the stripped name that the gateway never saw.
pub fn strip<'a>(headers: impl Iterator<Item = &'a HeaderValue>, name: &str) -> Stripped {
    let mut out: Vec<u8> = Vec::new();
    let (mut count, mut removed) = (0, false);
    for header in headers {
        count += 1;
        for (n, _, pair) in pairs(header.as_bytes()) {
            if n == name.as_bytes() {
                removed = true;
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair);
        }
    }
    if count <= 1 && !removed {
        return Stripped::Unchanged;
    }
    if out.is_empty() {
        return Stripped::Empty;
    }
    // The bytes came from valid header values and were only rejoined.
    HeaderValue::from_bytes(&out).map_or(Stripped::Empty, Stripped::Joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(headers: &[&[u8]]) -> Vec<HeaderValue> {
        headers
            .iter()
            .map(|h| HeaderValue::from_bytes(h).unwrap())
            .collect()
    }

    #[test]
    fn find_table() {
        let cases: &[(&[&[u8]], Presented<'_>)] = &[
            (&[b"a=1; s=xyz; b=2"], Presented::Value("xyz")),
            (&[b"s=xyz"], Presented::Value("xyz")),
            (&[b"ss=1; s=2"], Presented::Value("2")),
            (&[b"a=1;s=2"], Presented::Value("2")),
            (&[b"a=1"], Presented::Absent),
            (&[b"s=\"q\""], Presented::Value("q")),
            (&[b"s=first; s=second"], Presented::Value("first")),
            (&[b""], Presented::Absent),
            (
                &[b"a=1", b"s=in-the-second"],
                Presented::Value("in-the-second"),
            ),
            // A sibling's cookie that is not UTF-8 (or not ASCII) hides nothing.
            (&[b"theme=\xff\xfe; s=xyz"], Presented::Value("xyz")),
            (
                &[b"na\xefve=caf\xc3\xa9; s=xyz; x=\x80"],
                Presented::Value("xyz"),
            ),
            (&[b"s=\xff\xfe"], Presented::Unreadable),
            (&[b"\t s = xyz \t"], Presented::Value("xyz")),
            (&[b"novalue; s=xyz"], Presented::Value("xyz")),
            (&[b"=bare; s=xyz"], Presented::Value("xyz")),
        ];
        for (headers, expected) in cases {
            let v = values(headers);
            assert_eq!(find(v.iter(), "s").0, *expected, "{headers:?}");
        }
        let v = values(&[b"a=1; s=x", b"b=22"]);
        assert_eq!(find(v.iter(), "s").1, 8 + 4);
    }

    #[test]
    fn strip_table() {
        let joined = |s: &[u8]| Stripped::Joined(HeaderValue::from_bytes(s).unwrap());
        let cases: &[(&[&[u8]], Stripped)] = &[
            (&[b"a=1; s=xyz; b=2"], joined(b"a=1; b=2")),
            (&[b"s=xyz"], Stripped::Empty),
            (&[b"s=1; s=2; c=3"], joined(b"c=3")),
            (&[b"a=1;s=2;b=3"], joined(b"a=1; b=3")),
            (&[b"ss=1; s=2"], joined(b"ss=1")),
            (&[b"a=1; b=2"], Stripped::Unchanged),
            (&[b"a=1", b"b=2"], joined(b"a=1; b=2")),
            (
                &[b"a=1; s=x", b"s=y", b"b=2;c=3", b" s=z ; d=4"],
                joined(b"a=1; b=2; c=3; d=4"),
            ),
            (
                &[b"t=\xff; s=x; u=caf\xc3\xa9"],
                joined(b"t=\xff; u=caf\xc3\xa9"),
            ),
            (&[b"s=\xff"], Stripped::Empty),
            // Pairs are kept as they were: a nameless pair is not rebuilt into cookie `s`
            // (found by the property test below).
            (&[b"s=real; =s=smuggled"], joined(b"=s=smuggled")),
            (&[b"=s=x", b"a=1"], joined(b"=s=x; a=1")),
            (&[b"a = 1 ; s=2; novalue"], joined(b"a = 1; novalue")),
        ];
        for (headers, expected) in cases {
            let v = values(headers);
            assert_eq!(strip(v.iter(), "s"), *expected, "{headers:?}");
            if let Stripped::Joined(joined) = strip(v.iter(), "s") {
                assert_eq!(find(std::iter::once(&joined), "s").0, Presented::Absent);
            }
        }
    }

    // === properties ===

    use proptest::prelude::*;

    /// One generated pair: its name and value as `find` should read them, and its
    /// text in the header.
    #[derive(Debug, Clone)]
    struct Pair {
        name: Vec<u8>,
        value: Vec<u8>,
        text: Vec<u8>,
    }

    /// Names that collide with the looked-up ones (`s`, `__Host-session`) or nearly do,
    /// and any token, including bytes that are not UTF-8.
    fn name() -> impl Strategy<Value = Vec<u8>> {
        let fixed = prop::sample::select(vec!["s", "ss", "S", "a", "__Host-session", ""]);
        let token_byte = prop_oneof![
            prop::sample::select(b"!#$&'*+-.^_`|~0123456789AZaz".to_vec()),
            0x80_u8..=0xff,
        ];
        prop_oneof![
            3 => fixed.prop_map(|n| n.as_bytes().to_vec()),
            1 => prop::collection::vec(token_byte, 1..6),
        ]
    }

    /// Visible ASCII but `;`, and bytes that are not UTF-8, sometimes in double quotes.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            (0x21_u8..=0x7e).prop_filter("no separator", |&b| b != b';'),
            0x80_u8..=0xff,
        ];
        (prop::collection::vec(byte, 0..8), any::<bool>()).prop_map(|(v, quoted)| {
            if quoted {
                [&b"\""[..], &v, b"\""].concat()
            } else {
                v
            }
        })
    }

    fn pair() -> impl Strategy<Value = Pair> {
        let eq = prop::sample::select(vec!["=", " = ", "\t="]);
        (name(), value(), eq, any::<bool>()).prop_map(|(name, value, eq, bare)| {
            if bare && !value.is_empty() && !value.contains(&b'=') {
                // A pair without `=` is a nameless value.
                return Pair {
                    name: Vec::new(),
                    text: value.clone(),
                    value,
                };
            }
            let text = [&name, eq.as_bytes(), &value].concat();
            Pair { name, value, text }
        })
    }

    /// Pairs spread over one to three `Cookie` headers, joined by assorted separators.
    fn headers() -> impl Strategy<Value = (Vec<Pair>, Vec<HeaderValue>)> {
        let sep = prop::sample::select(vec![";", "; ", " ; ", ";\t", ";;", "; ;"]);
        let header = (prop::collection::vec((pair(), sep), 0..6), any::<bool>());
        prop::collection::vec(header, 1..4).prop_map(|headers| {
            let mut all = Vec::new();
            let mut values = Vec::new();
            for (pairs, leading) in headers {
                let mut text = Vec::new();
                if leading {
                    text.extend_from_slice(b" ;");
                }
                for (i, (pair, sep)) in pairs.iter().enumerate() {
                    if i > 0 {
                        text.extend_from_slice(sep.as_bytes());
                    }
                    text.extend_from_slice(&pair.text);
                }
                values.push(HeaderValue::from_bytes(&text).expect("generated bytes are valid"));
                all.extend(pairs.into_iter().map(|(p, _)| p));
            }
            (all, values)
        })
    }

    fn unquoted(value: &[u8]) -> &[u8] {
        match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        }
    }

    proptest! {
        #[test]
        fn find_answers_the_first_pair_of_that_name(
            (pairs, headers) in headers(),
            wanted in prop::sample::select(vec!["s", "__Host-session"]),
        ) {
            let (found, total) = find(headers.iter(), wanted);
            let expected = match pairs.iter().find(|p| p.name == wanted.as_bytes()) {
                None => Presented::Absent,
                Some(p) => match std::str::from_utf8(unquoted(&p.value)) {
                    Ok(v) => Presented::Value(v),
                    Err(_) => Presented::Unreadable,
                },
            };
            prop_assert_eq!(found, expected);
            prop_assert_eq!(total, headers.iter().map(|h| h.len()).sum::<usize>());
        }

        #[test]
        fn strip_removes_every_pair_of_that_name_and_keeps_the_others(
            (pairs, headers) in headers(),
            wanted in prop::sample::select(vec!["s", "__Host-session"]),
        ) {
            let kept: Vec<&[u8]> = pairs
                .iter()
                .filter(|p| p.name != wanted.as_bytes())
                .map(|p| p.text.trim_ascii())
                .collect();
            let removed = kept.len() < pairs.len();
            match strip(headers.iter(), wanted) {
                Stripped::Unchanged => {
                    prop_assert!(headers.len() == 1 && !removed);
                }
                Stripped::Empty => prop_assert!(kept.is_empty()),
                Stripped::Joined(joined) => {
                    prop_assert!(headers.len() > 1 || removed);
                    let expected = kept.join(&b"; "[..]);
                    prop_assert_eq!(joined.as_bytes(), expected.as_slice());
                    prop_assert_eq!(find(std::iter::once(&joined), wanted).0, Presented::Absent);
                }
            }
        }

        #[test]
        fn arbitrary_headers_never_panic(
            headers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4),
            wanted in "[a-zA-Z_-]{0,3}",
        ) {
            let values: Vec<HeaderValue> = headers
                .iter()
                .filter_map(|h| HeaderValue::from_bytes(h).ok())
                .collect();
            let _ = find(values.iter(), &wanted);
            if let Stripped::Joined(joined) = strip(values.iter(), &wanted) {
                prop_assert_eq!(find(std::iter::once(&joined), &wanted).0, Presented::Absent);
            }
        }
    }
}
