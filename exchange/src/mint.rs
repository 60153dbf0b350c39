//! Minting: claims for a session and audience, signed with the keyring's current key.
//!
//! The header segment is pre-encoded per key and the subject, issuer, audience and
//! session claims are pre-serialized JSON, so a mint is one claims buffer, one base64
//! pass and one signature. `jsonwebtoken::encode` re-parses the PKCS#8 key on every
//! call; benches/hot.rs compares the two.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use keys::{Keyring, Kid, SigningKey};

use crate::Error;
use crate::format::json_string;
use crate::metrics::Metrics;
use crate::session::Session;

/// Length of an ES256 or EdDSA signature (64 bytes) in base64url without padding.
const SIGNATURE_CHARS: usize = 86;

/// A JWT audience: the route's name for the service behind it, pre-serialized as JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Audience {
    name: Arc<str>,
    json: Box<str>,
}

impl Audience {
    /// Wraps an audience name.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            json: json_string(name).into_boxed_str(),
        }
    }

    /// The audience name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared(&self) -> Arc<str> {
        self.name.clone()
    }
}

impl fmt::Debug for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Audience({})", self.name)
    }
}

/// A signed token, kept framed as the caller asked ([`Minter::framed`]: the gateway
/// frames it as the ready `Authorization` header value), so sending it copies nothing.
///
/// `Debug` never prints the token.
#[derive(Clone)]
pub struct SignedJwt {
    framed: Bytes,
    /// Bytes of the frame before the token.
    frame: u8,
    kid: Kid,
    iat: u64,
    exp: u64,
}

impl SignedJwt {
    /// The compact JWT.
    pub fn jwt(&self) -> &str {
        // The buffer was built from a String: the frame, then the token.
        std::str::from_utf8(&self.framed[usize::from(self.frame)..]).unwrap_or_default()
    }

    /// The token after its frame (e.g. `Bearer <jwt>`), ready to become a header value
    /// without copying.
    pub fn framed(&self) -> &Bytes {
        &self.framed
    }

    /// The key that signed it.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// Issued-at (unix seconds).
    pub fn iat(&self) -> u64 {
        self.iat
    }

    /// Expiry (unix seconds).
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// Whether more than half of its lifetime remains at `now`, so it may be reused.
    pub fn more_than_half_left(&self, now: u64) -> bool {
        let lifetime = self.exp.saturating_sub(self.iat);
        self.exp.saturating_sub(now) * 2 > lifetime
    }
}

#[cfg(test)]
impl SignedJwt {
    /// A token with a given text (not a signed JWT), for tests of what holds tokens.
    pub(crate) fn fake(text: &str, iat: u64, exp: u64) -> Self {
        Self {
            framed: Bytes::from(format!("Bearer {text}")),
            frame: 7,
            kid: Kid::from("test"),
            iat,
            exp,
        }
    }
}

impl fmt::Debug for SignedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedJwt")
            .field("kid", &self.kid)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// Unique token ids: a random per-process prefix and a counter.
struct JtiSource {
    prefix: [u8; 8],
    counter: AtomicU64,
}

impl JtiSource {
    fn new() -> Self {
        let mut prefix = [0u8; 8];
        // aws-lc's system RNG only fails if the OS has no entropy source at all.
        if aws_lc_rs::rand::fill(&mut prefix).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            prefix = (nanos ^ u64::from(std::process::id())).to_le_bytes();
        }
        Self {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    fn next_into(&self, out: &mut String) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.prefix);
        raw[8..].copy_from_slice(&n.to_be_bytes());
        URL_SAFE_NO_PAD.encode_string(raw, out);
    }
}

/// Signs tokens with the keyring's current key.
pub struct Minter {
    keyring: Arc<Keyring>,
    frame: &'static str,
    issuer_json: Box<str>,
    jti: JtiSource,
    metrics: Arc<Metrics>,
    /// `sessiongate_tokens_minted_total` of the key that signed last, resolved once per
    /// key rather than looked up by label on every token.
    minted: arc_swap::ArcSwapOption<(Kid, prometheus::IntCounter)>,
}

impl Minter {
    /// A minter for tokens issued by `issuer`.
    pub fn new(keyring: Arc<Keyring>, issuer: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            keyring,
            frame: "",
            issuer_json: json_string(issuer).into_boxed_str(),
            jti: JtiSource::new(),
            metrics,
            minted: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Tokens framed by `frame` (at most 255 bytes), e.g. `"Bearer "`.
    #[must_use]
    pub fn framed(mut self, frame: &'static str) -> Self {
        if u8::try_from(frame.len()).is_ok() {
            self.frame = frame;
        }
        self
    }

    /// The keyring it signs with.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// Mints a token for `session` and `audience`, valid from `now` for `ttl`.
    /// `chk` (critical routes) is the time the session was confirmed live.
    ///
    /// # Errors
    /// [`Error::NoSigningKey`] when no key is current; [`Error::Sign`] if signing fails.
    pub fn mint(
        &self,
        session: &Session,
        audience: &Audience,
        ttl: Duration,
        now: u64,
        chk: Option<u64>,
    ) -> Result<SignedJwt, Error> {
        let set = self.keyring.load();
        let key = set.current().ok_or(Error::NoSigningKey)?;
        let exp = now + ttl.as_secs();
        let claims = self.claims_json(session, audience, now, exp, chk);
        let jwt = sign(key, self.frame, &claims)?;
        self.count_minted(key);
        Ok(SignedJwt {
            framed: Bytes::from(jwt),
            frame: u8::try_from(self.frame.len()).unwrap_or(0),
            kid: key.kid().clone(),
            iat: now,
            exp,
        })
    }

    /// Counts a token signed by `key`.
    fn count_minted(&self, key: &SigningKey) {
        if let Some(last) = &*self.minted.load()
            && last.0 == *key.kid()
        {
            last.1.inc();
            return;
        }
        let counter = self
            .metrics
            .tokens_minted
            .with_label_values(&[key.alg().as_str(), key.kid().as_str()]);
        counter.inc();
        self.minted
            .store(Some(Arc::new((key.kid().clone(), counter))));
    }

    /// The claims object as JSON text.
    pub fn claims_json(
        &self,
        session: &Session,
        audience: &Audience,
        iat: u64,
        exp: u64,
        chk: Option<u64>,
    ) -> String {
        let mut c = String::with_capacity(
            160 + self.issuer_json.len()
                + session.subject_json().len()
                + audience.json.len()
                + session.claims_json().len(),
        );
        // Pieces and itoa rather than `write!`: core::fmt was most of this function's
        // cost, on every token.
        let mut iat_digits = itoa::Buffer::new();
        let iat = iat_digits.format(iat);
        let mut digits = itoa::Buffer::new();
        c.push_str(r#"{"iss":"#);
        c.push_str(&self.issuer_json);
        c.push_str(r#","sub":"#);
        c.push_str(session.subject_json());
        c.push_str(r#","aud":"#);
        c.push_str(&audience.json);
        c.push_str(r#","iat":"#);
        c.push_str(iat);
        c.push_str(r#","nbf":"#);
        c.push_str(iat);
        c.push_str(r#","exp":"#);
        c.push_str(digits.format(exp));
        c.push_str(r#","jti":""#);
        self.jti.next_into(&mut c);
        c.push_str(r#"","sid":""#);
        c.push_str(session.sid.as_str());
        c.push('"');
        if let Some(chk) = chk {
            c.push_str(r#","chk":"#);
            c.push_str(digits.format(chk));
        }
        c.push_str(session.claims_json());
        c.push('}');
        c
    }
}

/// Builds `<frame><header>.<claims>.<signature>` with `key`.
fn sign(key: &SigningKey, frame: &str, claims_json: &str) -> Result<String, Error> {
    let header = key.header_segment();
    // Exactly the token's length (both algorithms sign with 64 bytes, 86 characters):
    // cached tokens are weighed by their length, and hold no slack.
    let claims_len = base64::encoded_len(claims_json.len(), false).unwrap_or(0);
    let mut out =
        String::with_capacity(frame.len() + header.len() + 1 + claims_len + 1 + SIGNATURE_CHARS);
    out.push_str(frame);
    out.push_str(header);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(claims_json.as_bytes(), &mut out);
    let mut signature = String::with_capacity(SIGNATURE_CHARS);
    key.sign_into(&out.as_bytes()[frame.len()..], &mut signature)
        .map_err(|source| Error::Sign {
            kid: key.kid().to_string(),
            source,
        })?;
    out.push('.');
    out.push_str(&signature);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Decoded, Document};
    use crate::{SessionId, SessionSettings};
    use keys::{Algorithm, KeySet, RotationPolicy};

    fn minter(alg: Algorithm) -> Minter {
        keys::install_crypto_provider();
        let now = keys::unix_now();
        let record = keys::generate(alg, now - 10, now - 10).unwrap();
        let policy = RotationPolicy {
            algorithm: alg,
            ..RotationPolicy::default()
        };
        let set = KeySet::build(&[record], now, &policy).unwrap();
        Minter::new(
            Arc::new(Keyring::new(set)),
            "https://gw.example",
            Arc::new(Metrics::unregistered()),
        )
        .framed("Bearer ")
    }

    fn session() -> Session {
        let id = SessionId::raw("abcdefghijklmnopqrstuvwxyz012345");
        let doc = Document::json(
            br#"{"sub":"user-42","roles":["admin"],"email":"a@example.com","secret":"x"}"#,
        )
        .unwrap();
        match SessionSettings::default()
            .fields
            .extract(&doc, true, &id)
            .unwrap()
        {
            Decoded::Session(s) => s,
            Decoded::Anonymous => unreachable!("it has a subject"),
        }
    }

    #[test]
    fn minted_tokens_verify_with_jsonwebtoken() {
        for alg in [Algorithm::Es256, Algorithm::EdDsa] {
            let m = minter(alg);
            let now = keys::unix_now();
            let jwt = m
                .mint(
                    &session(),
                    &Audience::new("orders"),
                    Duration::from_secs(300),
                    now,
                    Some(now),
                )
                .unwrap();
            let set = m.keyring().load();
            let key = set.current().unwrap();
            let header = jsonwebtoken::decode_header(jwt.jwt()).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.kid.as_deref(), Some(key.kid().as_str()));
            let mut v = jsonwebtoken::Validation::new(alg.to_jwt());
            v.set_audience(&["orders"]);
            v.set_issuer(&["https://gw.example"]);
            let decoded = jsonwebtoken::decode::<serde_json::Value>(
                jwt.jwt(),
                &jsonwebtoken::DecodingKey::from_jwk(key.jwk()).unwrap(),
                &v,
            )
            .unwrap();
            let c = decoded.claims;
            assert_eq!(c["sub"], "user-42");
            assert_eq!(c["aud"], "orders");
            assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
            assert_eq!(c["nbf"], c["iat"]);
            assert_eq!(c["chk"].as_u64(), Some(now));
            assert_eq!(c["roles"][0], "admin");
            assert_eq!(c["email"], "a@example.com");
            assert!(
                c.get("secret").is_none(),
                "unconfigured fields are not copied"
            );
            assert_eq!(c["sid"].as_str().unwrap().len(), 22);
            assert!(jwt.framed().starts_with(b"Bearer "));
            assert_eq!(&jwt.framed()[7..], jwt.jwt().as_bytes());
        }
    }

    #[test]
    fn jti_is_unique_and_issuer_is_escaped() {
        let m = minter(Algorithm::EdDsa);
        let now = keys::unix_now();
        let s = session();
        let aud = Audience::new("a\"b");
        let a = m.claims_json(&s, &aud, now, now + 1, None);
        let b = m.claims_json(&s, &aud, now, now + 1, None);
        let va: serde_json::Value = serde_json::from_str(&a).unwrap();
        let vb: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_ne!(va["jti"], vb["jti"]);
        assert_eq!(va["aud"], "a\"b");
        assert!(va.get("chk").is_none());
    }

    #[test]
    fn half_life_rule() {
        let jwt = SignedJwt {
            framed: Bytes::from_static(b"Bearer x"),
            frame: 7,
            kid: Kid::from("k"),
            iat: 1000,
            exp: 1300,
        };
        assert!(jwt.more_than_half_left(1000));
        assert!(jwt.more_than_half_left(1149));
        assert!(!jwt.more_than_half_left(1150));
        assert!(!jwt.more_than_half_left(2000));
        assert!(!format!("{jwt:?}").contains("Bearer"));
    }
}
