//! The `express` format: express-session with connect-redis.
//!
//! Cookie: `s:<sid>.<signature>`, percent-encoded as express-session writes it (the plain
//! form is read too, as the `cookie` module decodes only values with a `%`). The
//! signature is cookie-signature's: the standard base64 HMAC-SHA256 of `<sid>` under a
//! secret, its `=` padding removed; like `cookie-signature.unsign`, the whole string
//! `<sid>.<signature>` is compared with the expected one in constant time, for each
//! secret in turn (newest first). Key: the prefix (connect-redis's, `sess:`), then the
//! sid. Value: connect-redis's JSON. Expiry is the key's TTL alone: `touch` and rolling
//! sessions move the TTL but leave the stored `cookie.expires` stale.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest as _, Sha256};

use super::{Document, Malformed, Secret, SessionFormat, SessionId};

/// Longest cookie value considered (express-session's sids are 32 characters).
const MAX_COOKIE: usize = 1024;
/// Longest sid accepted.
const MAX_SID: usize = 256;

/// The `express` format.
pub struct Express {
    keys: Vec<hmac::Key>,
}

impl Express {
    /// The format, verifying signatures against `secrets` (newest first).
    pub fn new(secrets: Vec<Secret>) -> Self {
        let keys = secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose()))
            .collect();
        Self { keys }
    }

    /// `<sid>.<signature>` as cookie-signature's `sign` makes it with the secret `key`.
    fn signed(key: &hmac::Key, sid: &str) -> String {
        let tag = hmac::sign(key, sid.as_bytes());
        let mut out = String::with_capacity(sid.len() + 44);
        out.push_str(sid);
        out.push('.');
        STANDARD_NO_PAD.encode_string(tag.as_ref(), &mut out);
        out
    }
}

/// Whether `sid` is one express-session could have made: visible ASCII, no separators
/// a cookie or a Redis key could trip on.
fn is_sid(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= MAX_SID
        && sid
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
}

/// `decodeURIComponent` as the `cookie` module applies it: only to values with a `%`,
/// keeping the value as it is when it does not decode.
fn percent_decode(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains('%') {
        return value.into();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) if hex.is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit())) => {
                    out.push(b);
                    i += 3;
                }
                _ => return value.into(),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_or(value.into(), Into::into)
}

impl SessionFormat for Express {
    fn session_id(&self, cookie: &str) -> Result<SessionId, Malformed> {
        if cookie.len() > MAX_COOKIE {
            return Err(Malformed::Cookie("longer than 1024 characters"));
        }
        let decoded = percent_decode(cookie);
        let signed = decoded.strip_prefix("s:").ok_or(Malformed::Cookie(
            "not a signed cookie (s:<sid>.<signature>)",
        ))?;
        let sid = signed.rsplit_once('.').map_or("", |(sid, _)| sid);
        for key in &self.keys {
            let expected = Self::signed(key, sid);
            // Like timingSafeEqual after a length check: the lengths are not secret.
            if expected.len() == signed.len()
                && aws_lc_rs::constant_time::verify_slices_are_equal(
                    expected.as_bytes(),
                    signed.as_bytes(),
                )
                .is_ok()
            {
                return if is_sid(sid) {
                    Ok(SessionId::raw(sid))
                } else {
                    Err(Malformed::Cookie(
                        "the signed session id has characters no key may hold",
                    ))
                };
            }
        }
        Err(Malformed::Signature)
    }

    fn digest_of_key(&self, rest: &str) -> Option<[u8; 32]> {
        is_sid(rest).then(|| Sha256::digest(rest.as_bytes()).into())
    }

    fn decode<'a>(&self, value: &'a [u8]) -> Result<Document<'a>, Malformed> {
        Document::json(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session id as express-session's default `genid` (uid-safe, 24 bytes) makes them.
    const SID: &str = "n9Vq0yX-mLrD1nOAZ5jWYdhfBNMO2Lbx";

    fn format(secrets: &[&str]) -> Express {
        Express::new(secrets.iter().map(Secret::new).collect())
    }

    fn cookie(sid: &str, secret: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        format!("s:{}", Express::signed(&key, sid))
    }

    fn encode(cookie: &str) -> String {
        cookie
            .replace(':', "%3A")
            .replace('/', "%2F")
            .replace('+', "%2B")
    }

    #[test]
    fn signatures_match_cookie_signature() {
        // Node: require('cookie-signature').sign('hello', 'tobiiscool')
        //   === 'hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI'
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"tobiiscool");
        assert_eq!(
            Express::signed(&key, "hello"),
            "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
        );
    }

    #[test]
    fn cookies_verify_against_every_secret_before_any_lookup() {
        let f = format(&["new secret", "keyboard cat"]);
        let expected = SessionId::raw(SID);
        let old = cookie(SID, "keyboard cat");
        let new = cookie(SID, "new secret");
        for ok in [old.clone(), new.clone(), encode(&old), encode(&new)] {
            assert_eq!(f.session_id(&ok), Ok(expected.clone()), "{ok}");
        }
        let foreign = cookie(SID, "someone else's secret");
        let (rest, sig) = old.rsplit_once('.').unwrap();
        let cases: &[(String, Malformed)] = &[
            (foreign.clone(), Malformed::Signature),
            (encode(&foreign), Malformed::Signature),
            (
                SID.to_owned(),
                Malformed::Cookie("not a signed cookie (s:<sid>.<signature>)"),
            ),
            (format!("s:{SID}"), Malformed::Signature),
            (format!("{rest}.{sig}="), Malformed::Signature),
            (
                format!("{rest}.{}", sig.replace('+', "-").replace('/', "_")),
                Malformed::Signature,
            ),
            (format!("{rest}.{}", &sig[1..]), Malformed::Signature),
            (format!("{old}x"), Malformed::Signature),
            (
                format!("s%3{}", &old[2..]),
                Malformed::Cookie("not a signed cookie (s:<sid>.<signature>)"),
            ),
            (
                "s%3A%ZZ".to_owned(),
                Malformed::Cookie("not a signed cookie (s:<sid>.<signature>)"),
            ),
            (
                "x".repeat(2000),
                Malformed::Cookie("longer than 1024 characters"),
            ),
            (
                String::new(),
                Malformed::Cookie("not a signed cookie (s:<sid>.<signature>)"),
            ),
        ];
        for (value, why) in cases {
            assert_eq!(f.session_id(value).as_ref(), Err(why), "{value}");
        }
        assert_eq!(format(&[]).session_id(&old), Err(Malformed::Signature));
    }

    #[test]
    fn keys_invert_to_the_same_digest() {
        let f = format(&["s"]);
        let id = f.session_id(&cookie(SID, "s")).unwrap();
        assert_eq!(f.digest_of_key(SID), Some(*id.digest()));
        assert_eq!(f.digest_of_key(""), None);
        assert_eq!(f.digest_of_key("a b"), None);
    }

    #[test]
    fn percent_decoding_matches_decode_uri_component() {
        let cases = [
            ("plain", "plain"),
            ("s%3Aabc.d%2Be%2F", "s:abc.d+e/"),
            ("%E2%9C%93", "\u{2713}"),
            ("bad%2", "bad%2"),
            ("bad%zz", "bad%zz"),
            ("%FF", "%FF"),
            ("%+1", "%+1"),
        ];
        for (input, expected) in cases {
            assert_eq!(percent_decode(input), expected, "{input}");
        }
    }

    // === properties ===

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cookies_signed_with_a_configured_secret_verify(
            sid in "[A-Za-z0-9_-]{1,40}",
            secrets in prop::collection::vec("[ -~]{0,16}", 1..4),
            which in any::<prop::sample::Index>(),
            other in "[ -~]{1,16}",
            encoded in any::<bool>(),
        ) {
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let f = format(&refs);
            let good = cookie(&sid, which.get::<String>(&secrets));
            let good = if encoded { encode(&good) } else { good };
            prop_assert_eq!(f.session_id(&good), Ok(SessionId::raw(&sid)));
            if !secrets.contains(&other) {
                prop_assert_eq!(f.session_id(&cookie(&sid, &other)), Err(Malformed::Signature));
            }
        }

        #[test]
        fn tampered_cookies_never_verify(
            sid in "[A-Za-z0-9_-]{1,40}",
            secret in "[ -~]{0,16}",
            at in any::<prop::sample::Index>(),
            with in prop::char::range(' ', '~'),
        ) {
            let good = cookie(&sid, &secret);
            let at = at.index(good.len());
            let mut bad = good.clone();
            bad.replace_range(at..=at, &with.to_string());
            prop_assume!(bad != good);
            prop_assert!(format(&[&secret]).session_id(&bad).is_err(), "{} verified", bad);
        }

        #[test]
        fn arbitrary_cookies_never_verify(
            value in prop_oneof![
                any::<String>(),
                "s:[ -~]{0,60}",
                "s%3A[A-Za-z0-9%._-]{0,60}",
                "s:[A-Za-z0-9_-]{1,32}[.][A-Za-z0-9+/]{43}",
            ],
        ) {
            let f = format(&["keyboard cat", ""]);
            prop_assert!(f.session_id(&value).is_err(), "{} verified", value);
            let _ = f.digest_of_key(&value);
        }
    }
}
