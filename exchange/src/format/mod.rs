//! Session formats: who wrote the sessions the gateway reads.
//!
//! A format is one small unit answering three questions, none of which does I/O:
//! - which session a cookie value names ([`SessionFormat::session_id`]: syntax, and for
//!   signed cookies the signature, checked before any Redis call);
//! - which session a Redis key names ([`SessionFormat::digest_of_key`], for pushed
//!   invalidations and prefix scans);
//! - what the stored bytes say ([`SessionFormat::decode`], into a [`Document`]).
//!
//! What a document means is the same for every format ([`Fields::extract`]): the subject
//! and the claims are read by JSON pointer, integers become strings, and a session
//! without a usable subject is anonymous. Adding a format (Spring Session, Rails) is one
//! new file here and one arm in [`build`].

pub mod django;
pub mod express;
pub mod native;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::session::{Session, Sid};

/// Largest stored value decoded, in any format; larger values are malformed.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The formats the gateway reads, as `session.format` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatSettings {
    /// sessiongate's own JSON sessions, keyed by the cookie or its SHA-256.
    Sessiongate {
        /// Whether the Redis key holds the cookie's SHA-256 (hex) rather than the cookie.
        hashed_keys: bool,
    },
    /// express-session with connect-redis: a signed cookie, a JSON value.
    Express {
        /// The cookie-signing secrets, newest first (express-session's `secret` array).
        secrets: Vec<Secret>,
    },
    /// Django's `cache` / `cached_db` session engines on a Redis cache: a pickled dict.
    Django,
}

impl FormatSettings {
    /// The format's name in the config.
    pub fn name(&self) -> &'static str {
        match self {
            FormatSettings::Sessiongate { .. } => "sessiongate",
            FormatSettings::Express { .. } => "express",
            FormatSettings::Django => "django",
        }
    }
}

/// A cookie-signing secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(bytes.as_ref()))
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Builds the format `settings` name.
pub fn build(settings: &FormatSettings) -> Arc<dyn SessionFormat> {
    match settings {
        FormatSettings::Sessiongate { hashed_keys } => Arc::new(native::Native::new(*hashed_keys)),
        FormatSettings::Express { secrets } => Arc::new(express::Express::new(secrets.clone())),
        FormatSettings::Django => Arc::new(django::Django),
    }
}

/// One session format (see the module docs).
pub trait SessionFormat: Send + Sync + 'static {
    /// The session a cookie value (as the browser sent it) names.
    ///
    /// # Errors
    /// [`Malformed`] when the value cannot name a session of this format: it never
    /// reaches Redis.
    fn session_id(&self, cookie: &str) -> Result<SessionId, Malformed>;

    /// The digest ([`SessionId::digest`]) of the session behind the part of a Redis key
    /// after the prefix, or `None` when that is not a session key of this format (a
    /// canary, an index, another application's key).
    fn digest_of_key(&self, rest: &str) -> Option<[u8; 32]>;

    /// Decodes a stored value (at most [`MAX_VALUE_BYTES`], checked by the caller).
    ///
    /// # Errors
    /// [`Malformed::Value`] with what is wrong (never the value itself).
    fn decode<'a>(&self, value: &'a [u8]) -> Result<Document<'a>, Malformed>;

    /// Whether a top-level `exp` (unix seconds) in the value ends the session.
    fn honours_exp(&self) -> bool {
        false
    }

    /// Whether sessions of this format are written by `sessiongate session create` and
    /// indexed per subject (docs/redis-schema.md).
    fn is_native(&self) -> bool {
        false
    }
}

/// Which session a request names: what follows the prefix in its Redis key, and the
/// SHA-256 the cache and the `sid` claim are derived from. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId {
    key: KeyPart,
    digest: [u8; 32],
}

#[derive(Clone, PartialEq, Eq)]
enum KeyPart {
    /// The key ends with the lowercase hex of the digest.
    Hashed,
    /// The key ends with this text.
    Raw(Box<str>),
}

impl SessionId {
    /// A session whose key ends with `raw` itself; the digest is SHA-256 of `raw`.
    pub fn raw(raw: &str) -> Self {
        Self {
            digest: Sha256::digest(raw.as_bytes()).into(),
            key: KeyPart::Raw(raw.into()),
        }
    }

    /// A session whose key ends with the hex of `digest`.
    pub fn hashed(digest: [u8; 32]) -> Self {
        Self {
            key: KeyPart::Hashed,
            digest,
        }
    }

    /// The SHA-256 that identifies the session in the cache and derives its `sid`.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Appends the part of the Redis key after the prefix to `out`. Never log it.
    pub fn push_key(&self, out: &mut String) {
        match &self.key {
            KeyPart::Hashed => push_hex(out, &self.digest),
            KeyPart::Raw(raw) => out.push_str(raw),
        }
    }

    /// The opaque handle placed in tokens as `sid`.
    pub fn sid(&self) -> Sid {
        Sid::derive(&self.digest)
    }

    /// The first 8 hex digits of the digest: enough to find a key in logs, too little to
    /// use it.
    pub fn hint(&self) -> String {
        let mut s = String::with_capacity(8);
        push_hex(&mut s, &self.digest[..4]);
        s
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", self.hint())
    }
}

/// Why a cookie or a stored value is no session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The cookie value does not have the format's syntax.
    #[error("the cookie value is not a session id of this format: {0}")]
    Cookie(&'static str),
    /// The cookie's signature does not verify under any configured secret.
    #[error("the cookie's signature does not verify")]
    Signature,
    /// The stored value cannot be decoded.
    #[error("the stored value cannot be decoded: {0}")]
    Value(String),
}

impl Malformed {
    /// Whether the cookie itself was refused (before any Redis call).
    pub fn is_cookie(&self) -> bool {
        !matches!(self, Malformed::Value(_))
    }
}

/// A decoded value: JSON text (read lazily, field by field), or decoded data.
pub enum Document<'a> {
    /// A JSON object, as text.
    Json(JsonObject<'a>),
    /// Decoded data (a pickle).
    Value(serde_json::Value),
}

impl<'a> Document<'a> {
    /// Parses JSON text that must be an object.
    ///
    /// # Errors
    /// [`Malformed::Value`] when it is not a JSON object.
    pub fn json(value: &'a [u8]) -> Result<Self, Malformed> {
        serde_json::from_slice(value)
            .map(Document::Json)
            .map_err(|e| Malformed::Value(format!("not a JSON object: {e}")))
    }

    /// The value at `field`, as JSON text.
    fn get(&self, field: &Field) -> Option<Cow<'_, str>> {
        match self {
            Document::Json(top) => raw_at(top, &field.segments).map(|r| Cow::Borrowed(r.get())),
            Document::Value(v) => v
                .pointer(&field.pointer)
                .and_then(|v| serde_json::to_string(v).ok())
                .map(Cow::Owned),
        }
    }

    /// The top-level `exp`: `Ok(None)` when absent or null.
    fn exp(&self) -> Result<Option<u64>, Malformed> {
        let bad = || Malformed::Value("`exp` is not a non-negative integer".into());
        let text = match self {
            Document::Json(top) => match top.get("exp") {
                None => return Ok(None),
                Some(raw) => raw.get(),
            },
            Document::Value(v) => {
                return match v.get("exp") {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(v) => v.as_u64().map(Some).ok_or_else(bad),
                };
            }
        };
        if text == "null" {
            return Ok(None);
        }
        serde_json::from_str::<u64>(text)
            .map(Some)
            .map_err(|_| bad())
    }
}

/// A JSON object's members as text, in document order. A session holds a handful of
/// fields and is read for three or four of them, so a linear search beats hashing every
/// name (SipHash and a growing table cost more than the rest of the decode). As with
/// a map, the last of duplicate names wins.
pub struct JsonObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> JsonObject<'a> {
    /// The member named `name`.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Members<'a> {
            type Value = JsonObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(Name(name)) = map.next_key::<Name<'a>>()? {
                    members.push((name, map.next_value::<&'a RawValue>()?));
                }
                Ok(JsonObject(members))
            }
        }
        deserializer.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// A member name, borrowed from the text unless it had escapes to undo (serde's own
/// `Cow` always copies).
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Name<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Text<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Text(std::marker::PhantomData))
    }
}

/// The value at `segments` below a JSON object's fields, without decoding anything but
/// the objects and arrays on the way.
fn raw_at<'a>(top: &JsonObject<'a>, segments: &[Box<str>]) -> Option<&'a RawValue> {
    let (first, rest) = segments.split_first()?;
    let mut current: &'a RawValue = top.get(first)?;
    for segment in rest {
        let text: &'a str = current.get();
        current = match text.as_bytes().first()? {
            b'{' => {
                let object: JsonObject<'a> = serde_json::from_str(text).ok()?;
                object.get(segment)?
            }
            b'[' => {
                let array: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
                array.get(array_index(segment)?).copied()?
            }
            _ => return None,
        };
    }
    Some(current)
}

/// An RFC 6901 array index: digits, no leading zero (`-` names no element).
fn array_index(segment: &str) -> Option<usize> {
    let ok = !segment.is_empty()
        && segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'));
    ok.then(|| segment.parse().ok()).flatten()
}

/// A field of the session: an RFC 6901 JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pointer: Box<str>,
    segments: Box<[Box<str>]>,
}

impl Field {
    /// A field from a JSON pointer (`/passport/user`) or a top-level field name (`sub`).
    ///
    /// # Errors
    /// When a pointer has a `~` not followed by `0` or `1`, or names the whole document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pointer = if text.starts_with('/') {
            text.to_owned()
        } else {
            format!("/{}", text.replace('~', "~0").replace('/', "~1"))
        };
        let mut segments = Vec::new();
        for raw in pointer[1..].split('/') {
            let mut seg = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => seg.push('~'),
                        Some('1') => seg.push('/'),
                        _ => return Err(format!("`{text}`: `~` must be followed by 0 or 1")),
                    }
                } else {
                    seg.push(c);
                }
            }
            segments.push(seg.into_boxed_str());
        }
        if pointer.len() <= 1 && text.is_empty() {
            return Err("a field must not be empty".into());
        }
        Ok(Self {
            pointer: pointer.into_boxed_str(),
            segments: segments.into_boxed_slice(),
        })
    }

    /// The JSON pointer.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// The last segment: what a claim read from this field is named by default.
    pub fn last(&self) -> &str {
        self.segments.last().map_or("", |s| s)
    }
}

/// A claim copied from the session into tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claim's name in the token.
    pub name: String,
    /// Where it is read from.
    pub field: Field,
}

/// What to read from a session: the subject and the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The field that becomes `sub`.
    pub subject: Field,
    /// The fields copied into tokens.
    pub claims: Vec<Claim>,
}

/// What a stored value says.
#[derive(Debug)]
pub enum Decoded {
    /// A session with a subject.
    Session(Session),
    /// A session without a usable subject: frameworks make one for every visitor.
    Anonymous,
}

impl Fields {
    /// The subject of a document, `None` for an anonymous session.
    pub fn subject(&self, doc: &Document<'_>) -> Option<String> {
        let literal = doc
            .get(&self.subject)
            .and_then(|raw| subject_literal(&raw))?;
        serde_json::from_str(&literal).ok()
    }

    /// Reads a document: the subject (a non-empty string, or an integer as its decimal
    /// string; anything else makes the session anonymous), the configured claims
    /// (verbatim JSON), and with `exp` the session's own expiry.
    ///
    /// # Errors
    /// [`Malformed::Value`] when `exp` is present but not a non-negative integer.
    pub fn extract(
        &self,
        doc: &Document<'_>,
        exp: bool,
        id: &SessionId,
    ) -> Result<Decoded, Malformed> {
        let exp = if exp { doc.exp()? } else { None };
        let Some(subject) = doc.get(&self.subject).and_then(|raw| subject_literal(&raw)) else {
            return Ok(Decoded::Anonymous);
        };
        // The subject literal, then the claim pairs: one buffer, the session's only heap
        // block.
        let mut json = subject;
        let subject_end = json.len();
        for claim in &self.claims {
            if let Some(raw) = doc.get(&claim.field) {
                json.push(',');
                json.push_str(&json_string(&claim.name));
                json.push(':');
                json.push_str(&raw);
            }
        }
        Ok(Decoded::Session(Session::new(
            json,
            subject_end,
            exp,
            id.sid(),
        )))
    }
}

/// The subject as a JSON string literal: a non-empty string as it is, an integer as its
/// decimal string; `None` for anything else (an anonymous session).
fn subject_literal(raw: &str) -> Option<String> {
    match raw.as_bytes().first()? {
        b'"' => {
            let s: Cow<'_, str> = serde_json::from_str(raw).ok()?;
            (!s.is_empty()).then(|| json_string(&s))
        }
        b'-' | b'0'..=b'9' => {
            let n: serde_json::Number = serde_json::from_str(raw).ok()?;
            (n.is_i64() || n.is_u64()).then(|| format!("\"{n}\""))
        }
        _ => None,
    }
}

/// Serializes `s` as a JSON string literal (quoted and escaped).
pub(crate) fn json_string(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Appends lowercase hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    // A table lookup per nibble: `write!("{b:02x}")` cost ~250 instructions a byte, and
    // every Redis read formats the 32-byte digest.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Decodes 64 lowercase hex digits.
pub(crate) fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(subject: &str, claims: &[(&str, &str)]) -> Fields {
        Fields {
            subject: Field::parse(subject).unwrap(),
            claims: claims
                .iter()
                .map(|(name, field)| Claim {
                    name: (*name).to_owned(),
                    field: Field::parse(field).unwrap(),
                })
                .collect(),
        }
    }

    fn extract(f: &Fields, json: &str) -> Option<(String, String)> {
        let doc = Document::json(json.as_bytes()).unwrap();
        match f.extract(&doc, true, &SessionId::raw("id")).unwrap() {
            Decoded::Session(s) => Some((s.subject().into_owned(), s.claims_json().to_owned())),
            Decoded::Anonymous => None,
        }
    }

    #[test]
    fn pointers_parse_and_escape() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("sub", "/sub", &["sub"]),
            ("/passport/user", "/passport/user", &["passport", "user"]),
            ("/a~1b/c~0d", "/a~1b/c~0d", &["a/b", "c~d"]),
            ("a/b", "/a~1b", &["a/b"]),
            ("x~y", "/x~0y", &["x~y"]),
            ("/", "/", &[""]),
        ];
        for (text, pointer, segments) in cases {
            let f = Field::parse(text).unwrap();
            assert_eq!(f.pointer(), *pointer, "{text}");
            let got: Vec<&str> = f.segments.iter().map(|s| &**s).collect();
            assert_eq!(got, *segments, "{text}");
        }
        assert!(Field::parse("/a~2").is_err());
        assert!(Field::parse("/a~").is_err());
        assert!(Field::parse("").is_err());
        assert_eq!(Field::parse("/passport/user").unwrap().last(), "user");
    }

    #[test]
    fn subjects_and_claims_by_pointer() {
        let f = fields(
            "/passport/user",
            &[
                ("roles", "/roles"),
                ("uid", "/passport/user"),
                ("first", "/list/0"),
                ("deep", "/a/b/c"),
            ],
        );
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                r#"{"passport":{"user":"u-1"},"roles":["a"],"list":[1,2],"a":{"b":{"c":null}}}"#,
                Some(("u-1", r#","roles":["a"],"uid":"u-1","first":1,"deep":null"#)),
            ),
            (r#"{"passport":{"user":42}}"#, Some(("42", r#","uid":42"#))),
            (r#"{"passport":{"user":-7}}"#, Some(("-7", r#","uid":-7"#))),
            (r#"{"passport":{"user":1.5}}"#, None),
            (r#"{"passport":{"user":""}}"#, None),
            (r#"{"passport":{"user":true}}"#, None),
            (r#"{"passport":{"user":["x"]}}"#, None),
            (r#"{"passport":{}}"#, None),
            (r#"{"passport":"user"}"#, None),
            (r#"{"cookie":{"expires":"2020-01-01"}}"#, None),
            (
                r#"{"passport":{"user":"a\"b"},"list":[],"a":[1]}"#,
                Some(("a\"b", r#","uid":"a\"b""#)),
            ),
            (
                r#"{"passport":{"user":"u"},"list":{"0":"not an array"}}"#,
                Some(("u", r#","uid":"u","first":"not an array""#)),
            ),
        ];
        for (json, expected) in cases {
            let got = extract(&f, json);
            let expected = expected.map(|(s, c)| (s.to_owned(), c.to_owned()));
            assert_eq!(got, expected, "{json}");
        }
    }

    #[test]
    fn array_indexes_follow_rfc_6901() {
        let f = fields("/l/01", &[]);
        assert_eq!(extract(&f, r#"{"l":["a","b"]}"#), None, "leading zero");
        let f = fields("/l/1", &[]);
        assert_eq!(extract(&f, r#"{"l":["a","b"]}"#).unwrap().0, "b");
        let f = fields("/l/-", &[]);
        assert_eq!(extract(&f, r#"{"l":["a","b"]}"#), None);
    }

    #[test]
    fn decoded_values_are_read_by_pointer_too() {
        let f = fields(
            "/_auth_user_id",
            &[("roles", "/roles"), ("n", "/nested/0/k")],
        );
        let doc = Document::Value(serde_json::json!({
            "_auth_user_id": "42", "roles": ["a"], "nested": [{"k": {"x": 1}}]
        }));
        let Decoded::Session(s) = f.extract(&doc, false, &SessionId::raw("id")).unwrap() else {
            panic!("anonymous")
        };
        assert_eq!(s.subject(), "42");
        assert_eq!(s.claims_json(), r#","roles":["a"],"n":{"x":1}"#);
        let doc = Document::Value(serde_json::json!({ "_auth_user_id": 7 }));
        let Decoded::Session(s) = f.extract(&doc, false, &SessionId::raw("id")).unwrap() else {
            panic!("anonymous")
        };
        assert_eq!(s.subject(), "7");
        let doc = Document::Value(serde_json::json!({ "views": 1 }));
        assert!(matches!(
            f.extract(&doc, false, &SessionId::raw("id")),
            Ok(Decoded::Anonymous)
        ));
    }

    #[test]
    fn exp_is_read_only_when_the_format_honours_it() {
        let f = fields("sub", &[]);
        let id = SessionId::raw("id");
        for (json, honoured, expected) in [
            (r#"{"sub":"u","exp":5}"#, true, Ok(Some(5))),
            (r#"{"sub":"u","exp":null}"#, true, Ok(None)),
            (r#"{"sub":"u"}"#, true, Ok(None)),
            (r#"{"sub":"u","exp":"soon"}"#, false, Ok(None)),
        ] {
            let doc = Document::json(json.as_bytes()).unwrap();
            let got = f.extract(&doc, honoured, &id).map(|d| match d {
                Decoded::Session(s) => s.exp(),
                Decoded::Anonymous => Some(u64::MAX),
            });
            assert_eq!(got, expected, "{json}");
        }
        for json in [
            r#"{"sub":"u","exp":"soon"}"#,
            r#"{"sub":"u","exp":-5}"#,
            r#"{"sub":"u","exp":1.5}"#,
        ] {
            let doc = Document::json(json.as_bytes()).unwrap();
            assert!(
                matches!(f.extract(&doc, true, &id), Err(Malformed::Value(_))),
                "{json}"
            );
        }
    }

    #[test]
    fn claims_are_copied_verbatim() {
        // Found by fuzz/fuzz_targets/session.rs: `2.5e3010` is a JSON number by RFC 8259's
        // grammar but beyond f64, so serde_json's `Value` (like Go's encoding/json) refuses
        // it. Claims are copied verbatim (docs/redis-schema.md): the token carries it as
        // the session wrote it, and the token's JSON is valid by the grammar.
        let f = fields("sub", &[("odd \"name\"", "/a~1b/~0"), ("email", "email")]);
        let session = r#"{"sub":"a\"b\u00e9","a/b":{"~":[1,2.5e3010,-0]},"email":null}"#;
        let (subject, claims) = extract(&f, session).unwrap();
        assert_eq!(subject, "a\"b\u{e9}");
        assert_eq!(claims, r#","odd \"name\"":[1,2.5e3010,-0],"email":null"#);
        let token = format!(r#"{{"sub":"x"{claims}}}"#);
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(&token).is_ok());
        assert!(serde_json::from_str::<Value>(&token).is_err());
    }

    #[test]
    fn non_objects_are_malformed() {
        for input in ["", "not json", "[1,2]", "\"sub\"", "null", "{\"sub\":\"u\""] {
            assert!(
                matches!(Document::json(input.as_bytes()), Err(Malformed::Value(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut ours = String::from("p:");
        push_hex(&mut ours, &bytes);
        let theirs: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ours, format!("p:{theirs}"));
        let digest: [u8; 32] = Sha256::digest(b"x").into();
        let mut hex = String::new();
        push_hex(&mut hex, &digest);
        assert_eq!(parse_hex32(&hex), Some(digest));
        assert_eq!(parse_hex32(&hex.to_uppercase()), None);
        assert_eq!(parse_hex32(&hex[1..]), None);
        assert_eq!(parse_hex32(&"zz".repeat(32)), None);
    }

    #[test]
    fn object_members_are_found_by_name_the_last_duplicate_winning() {
        let text = br#"{"a":1,"b\u0061":2,"a":3,"n":{"x":{"y":[4,5]},"x":{"y":[6,7]}}}"#;
        let Ok(Document::Json(object)) = Document::json(text) else {
            panic!("an object");
        };
        assert_eq!(object.get("a").map(RawValue::get), Some("3"));
        assert_eq!(
            object.get("ba").map(RawValue::get),
            Some("2"),
            "escapes undone"
        );
        assert!(object.get("b").is_none());
        let path: Vec<Box<str>> = ["n", "x", "y", "1"].map(Box::from).to_vec();
        assert_eq!(raw_at(&object, &path).map(RawValue::get), Some("7"));
        assert!(Document::json(b"[1,2]").is_err());
        assert!(Document::json(b"{\"a\":}").is_err());
    }

    #[test]
    fn session_ids_redact_and_key() {
        let id = SessionId::raw("secret-session-id");
        assert!(!format!("{id:?}").contains("secret"));
        let mut key = String::from("p:");
        id.push_key(&mut key);
        assert_eq!(key, "p:secret-session-id");
        let hashed = SessionId::hashed(*id.digest());
        let mut key = String::new();
        hashed.push_key(&mut key);
        assert_eq!(parse_hex32(&key), Some(*id.digest()));
        assert_eq!(hashed.sid(), id.sid());
    }

    // === properties ===

    use proptest::prelude::*;
    use serde_json::Value;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop_oneof!["", "[a-z]{1,3}", ".{0,8}"].prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Field names the generated fields point at, and some they do not.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["sub", "user", "passport", "roles", "exp", "0", "1", "a/b", "~"])
                .prop_map(str::to_owned),
            1 => ".{0,4}",
        ]
    }

    /// Mostly what a subject can be (a non-empty string, an integer), and anything.
    fn subject_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            2 => ".{1,6}".prop_map(Value::String),
            1 => any::<i64>().prop_map(Value::from),
            1 => json_value(),
        ]
    }

    /// A session object: fields the subject and claims are read from (some absent), an
    /// `exp` (mostly valid), and others.
    fn session_object() -> impl Strategy<Value = Value> {
        let exp = prop_oneof![
            2 => Just(None),
            2 => any::<u64>().prop_map(|n| Some(Value::from(n))),
            1 => Just(Some(Value::Null)),
            1 => json_value().prop_map(Some),
        ];
        (
            prop::collection::btree_map(key(), json_value(), 0..4),
            prop::option::weighted(0.7, subject_value()),
            prop::option::weighted(0.5, subject_value()),
            prop::option::weighted(0.7, json_value()),
            exp,
        )
            .prop_map(|(others, sub, user, roles, exp)| {
                let mut object: serde_json::Map<String, Value> = others.into_iter().collect();
                let fixed = [
                    ("sub", sub),
                    ("passport", user.map(|u| serde_json::json!({ "user": u }))),
                    ("roles", roles),
                    ("exp", exp),
                ];
                for (name, v) in fixed {
                    match v {
                        Some(v) => object.insert(name.to_owned(), v),
                        None => object.remove(name),
                    };
                }
                Value::Object(object)
            })
    }

    fn pointer() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["sub", "/passport/user", "/roles", "/roles/0"])
                .prop_map(str::to_owned),
            1 => prop::sample::select(vec![
                "sub", "/sub", "/passport/user", "/roles/0", "/roles/01", "/a~1b", "/~0", "exp",
                "/user/1", "/-",
            ])
            .prop_map(str::to_owned),
            1 => "(/[a-z0-9~]{0,3}){1,3}",
        ]
    }

    fn fields_strategy() -> impl Strategy<Value = Fields> {
        let claims = prop::collection::btree_map(
            prop::sample::select(vec!["roles", "email", "uid", "x", "\"q\""]),
            pointer(),
            0..4,
        );
        (pointer(), claims).prop_filter_map("valid pointers", |(subject, claims)| {
            let claims = claims
                .into_iter()
                .map(|(name, p)| {
                    Field::parse(&p).map(|field| Claim {
                        name: name.to_owned(),
                        field,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some(Fields {
                subject: Field::parse(&subject).ok()?,
                claims,
            })
        })
    }

    /// A decoded session as the JSON tokens carry: `sub`, then the claims.
    fn token_json(decoded: Decoded) -> Result<Option<Value>, TestCaseError> {
        let Decoded::Session(s) = decoded else {
            return Ok(None);
        };
        prop_assert!(!s.subject().is_empty(), "an empty subject");
        let text = format!("{{\"sub\":{}{}}}", s.subject_json(), s.claims_json());
        let json: Value =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(json["sub"].as_str(), Some(&*s.subject()));
        Ok(Some(json))
    }

    proptest! {
        #[test]
        fn arbitrary_values_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let f = Fields { subject: Field::parse("sub").unwrap(), claims: Vec::new() };
            if let Ok(doc) = Document::json(&bytes)
                && let Ok(decoded) = f.extract(&doc, true, &SessionId::raw("id"))
            {
                token_json(decoded)?;
            }
        }

        #[test]
        fn json_text_and_decoded_values_read_the_same(
            value in session_object(),
            fields in fields_strategy(),
            exp in any::<bool>(),
        ) {
            let text = serde_json::to_vec(&value).unwrap();
            let id = SessionId::raw("id");
            let doc = Document::json(&text).unwrap();
            let from_text = f_extract(&fields, &doc, exp, &id)?;
            let from_value = f_extract(&fields, &Document::Value(value.clone()), exp, &id)?;
            prop_assert_eq!(&from_text, &from_value);
            // The subject: a non-empty string, or an integer as its decimal string.
            let subject = value.pointer(fields.subject.pointer()).and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                _ => None,
            });
            let exp_ok = !exp || matches!(value.get("exp"), None | Some(Value::Null))
                || value["exp"].is_u64();
            match (&from_text, subject) {
                (Err(()), _) => prop_assert!(!exp_ok),
                (Ok(None), subject) => prop_assert!(exp_ok && subject.is_none()),
                (Ok(Some(json)), subject) => {
                    prop_assert!(exp_ok);
                    prop_assert_eq!(json["sub"].as_str(), subject.as_deref());
                    for claim in &fields.claims {
                        // Through text as the token's value went (serde_json reads floats
                        // to within an ulp unless `float_roundtrip` is on).
                        let want = value
                            .pointer(claim.field.pointer())
                            .map(|v| serde_json::from_str::<Value>(&v.to_string()).unwrap());
                        prop_assert_eq!(json.get(&claim.name), want.as_ref());
                    }
                }
            }
        }
    }

    /// [`Fields::extract`] as the token JSON it leads to (`Err(())`: a bad `exp`).
    fn f_extract(
        fields: &Fields,
        doc: &Document<'_>,
        exp: bool,
        id: &SessionId,
    ) -> Result<Result<Option<Value>, ()>, TestCaseError> {
        match fields.extract(doc, exp, id) {
            Ok(decoded) => token_json(decoded).map(Ok),
            Err(_) => Ok(Err(())),
        }
    }
}
