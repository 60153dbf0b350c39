//! Keys: the stored form ([`KeyRecord`]) and the parsed, ready-to-sign form ([`SigningKey`]).
//!
//! Signing does not go through `jsonwebtoken::encode`, which re-parses the PKCS#8
//! document on every call: the private key is parsed once and the JWT header segment is
//! encoded once per key. Both algorithms sign with aws-lc-rs. An Ed25519 key is parsed and
//! its public half derived by ed25519-dalek, and aws-lc's key pair is built from the same
//! seed and checked against it: aws-lc signs in half of dalek's time (10 against 20 µs a
//! token on the benchmark machine, docs/performance.md), which is the critical path's.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, ThumbprintHash,
};
use zeroize::Zeroizing;

use crate::{Error, Kid, UnixTime};

/// The `typ` of every token header: an OAuth 2.0 access token (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410, section 7); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A JWS signing algorithm this gateway supports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (`ES256`).
    Es256,
    /// Ed25519 (`EdDSA`).
    EdDsa,
}

/// Where a key is in its life, derived from the time a [`KeySet`](crate::KeySet) was built.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Published and signing new tokens.
    Current,
    /// Published so that tokens it signed still verify; no longer signing.
    Previous,
}

/// Private key bytes (PKCS#8 DER): zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

/// The stored form of a key: what a [`KeyStore`](crate::KeyStore) persists.
///
/// The private key is redacted in `Debug` and zeroized on drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key id (RFC 7638 thumbprint of the public JWK for generated keys).
    pub kid: Kid,
    /// The signing algorithm.
    pub alg: Algorithm,
    /// When the key was generated.
    pub created_at: UnixTime,
    /// When the key may start signing; it is published before that.
    pub activate_at: UnixTime,
    /// Set when the key was retired: it is then never published nor used again.
    pub retired_at: Option<UnixTime>,
    /// The private key, PKCS#8 v1 DER.
    pub private_pkcs8: SecretBytes,
}

/// A parsed, ready-to-sign key with its state at the time its [`KeySet`](crate::KeySet)
/// was built. `Debug` never prints private material.
pub struct SigningKey {
    kid: Kid,
    alg: Algorithm,
    state: KeyState,
    created_at: UnixTime,
    activate_at: UnixTime,
    header_segment: String,
    jwk: Jwk,
    signer: Signer,
}

/// The pre-parsed private key.
enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// Generates a new key of `alg`, created at `now`, signing from `activate_at`.
///
/// The kid is the RFC 7638 SHA-256 thumbprint of the public JWK.
///
/// # Errors
/// [`Error::KeyGeneration`] if the crypto library fails; [`Error::Jwk`] if the
/// thumbprint cannot be computed.
pub fn generate(alg: Algorithm, now: UnixTime, activate_at: UnixTime) -> Result<KeyRecord, Error> {
    let private_pkcs8 = match alg {
        Algorithm::Es256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .map_err(|_| Error::KeyGeneration { alg })?;
            SecretBytes::new(doc.as_ref().to_vec())
        }
        Algorithm::EdDsa => {
            let mut seed = Zeroizing::new([0u8; 32]);
            aws_lc_rs::rand::fill(&mut seed[..]).map_err(|_| Error::KeyGeneration { alg })?;
            let mut der = Vec::with_capacity(ED25519_PKCS8_PREFIX.len() + seed.len());
            der.extend_from_slice(&ED25519_PKCS8_PREFIX);
            der.extend_from_slice(&seed[..]);
            SecretBytes::new(der)
        }
    };
    let placeholder = Kid::from("");
    let signer = Signer::parse(&placeholder, alg, private_pkcs8.expose())?;
    let kid = thumbprint(&signer.public_jwk(alg, None)?)?;
    Ok(KeyRecord {
        kid,
        alg,
        created_at: now,
        activate_at,
        retired_at: None,
        private_pkcs8,
    })
}

/// The RFC 7638 SHA-256 thumbprint of `jwk`, as a kid.
fn thumbprint(jwk: &Jwk) -> Result<Kid, Error> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map(Kid::from)
        .map_err(|e| Error::Jwk {
            kid: Kid::from(""),
            reason: e.to_string(),
        })
}

// === impl Algorithm ===

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 2] = [Algorithm::Es256, Algorithm::EdDsa];

    /// The JOSE name: `"ES256"` or `"EdDSA"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// The matching `jsonwebtoken` algorithm.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            Algorithm::Es256 => KeyAlgorithm::ES256,
            Algorithm::EdDsa => KeyAlgorithm::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Accepts exactly `"ES256"` or `"EdDSA"`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ES256" => Ok(Algorithm::Es256),
            "EdDSA" => Ok(Algorithm::EdDsa),
            _ => Err(Error::UnknownAlgorithm {
                value: s.to_owned(),
            }),
        }
    }
}

// === impl KeyState ===

impl KeyState {
    /// Every state, in life-cycle order.
    pub const ALL: [KeyState; 3] = [KeyState::Next, KeyState::Current, KeyState::Previous];

    /// `"next"`, `"current"` or `"previous"` (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Previous => "previous",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl SecretBytes ===

impl SecretBytes {
    /// Takes ownership of secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The secret itself. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes::new(bytes)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl Eq for SecretBytes {}

// === impl SigningKey ===

impl SigningKey {
    /// Parses `record`'s private key and pre-computes its JWK and header segment.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the private key does not parse for `record.alg`;
    /// [`Error::Jwk`] if the JWK or header cannot be built.
    pub fn from_record(record: &KeyRecord, state: KeyState) -> Result<Self, Error> {
        let signer = Signer::parse(&record.kid, record.alg, record.private_pkcs8.expose())?;
        let jwk = signer.public_jwk(record.alg, Some(&record.kid))?;
        let header = jsonwebtoken::Header {
            typ: Some(TOKEN_TYPE.to_owned()),
            kid: Some(record.kid.to_string()),
            ..jsonwebtoken::Header::new(record.alg.to_jwt())
        };
        let header_json = serde_json::to_vec(&header).map_err(|e| Error::Jwk {
            kid: record.kid.clone(),
            reason: e.to_string(),
        })?;
        Ok(SigningKey {
            kid: record.kid.clone(),
            alg: record.alg,
            state,
            created_at: record.created_at,
            activate_at: record.activate_at,
            header_segment: URL_SAFE_NO_PAD.encode(header_json),
            jwk,
            signer,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The signing algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The state when the key set was built.
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// When the key may start signing.
    pub fn activate_at(&self) -> UnixTime {
        self.activate_at
    }

    /// When the key was generated.
    pub fn created_at(&self) -> UnixTime {
        self.created_at
    }

    /// base64url (no padding) of the JWT header `{"typ":"at+jwt","alg":..,"kid":..}`,
    /// computed once.
    pub fn header_segment(&self) -> &str {
        &self.header_segment
    }

    /// Signs `signing_input` (`header_segment + "." + claims_segment`) and appends the
    /// base64url signature to `out`. Allocates nothing besides growing `out`.
    ///
    /// # Errors
    /// [`Error::Sign`] if the crypto library refuses.
    pub fn sign_into(&self, signing_input: &[u8], out: &mut String) -> Result<(), Error> {
        match &self.signer {
            Signer::Es256(pair) => {
                // aws-lc-rs ignores the rng argument; `SystemRandom` is zero-sized.
                let sig = pair
                    .sign(&aws_lc_rs::rand::SystemRandom::new(), signing_input)
                    .map_err(|_| Error::Sign {
                        kid: self.kid.clone(),
                    })?;
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), out);
            }
            Signer::EdDsa(pair) => {
                URL_SAFE_NO_PAD.encode_string(pair.sign(signing_input).as_ref(), out);
            }
        }
        Ok(())
    }

    /// The public JWK: `kty`, `kid`, `alg`, `use: "sig"`, `crv`, `x` (and `y` for P-256).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("activate_at", &self.activate_at)
            .finish_non_exhaustive()
    }
}

// === impl Signer ===

impl Signer {
    fn parse(kid: &Kid, alg: Algorithm, pkcs8: &[u8]) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidKey {
            kid: kid.clone(),
            alg,
            reason,
        };
        match alg {
            Algorithm::Es256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                .map(Signer::Es256)
                .map_err(|e| invalid(e.to_string())),
            Algorithm::EdDsa => {
                let parsed = ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8)
                    .map_err(|e| invalid(e.to_string()))?;
                let public = parsed.verifying_key();
                let pair =
                    Ed25519KeyPair::from_seed_and_public_key(parsed.as_bytes(), public.as_bytes())
                        .map_err(|e| invalid(format!("aws-lc refused the key: {e}")))?;
                Ok(Signer::EdDsa(pair))
            }
        }
    }

    /// The public JWK, built from the parsed key (no provider round trip).
    fn public_jwk(&self, alg: Algorithm, kid: Option<&Kid>) -> Result<Jwk, Error> {
        let algorithm = match self {
            Signer::Es256(pair) => {
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let (x, y) = match pair.public_key().as_ref() {
                    [0x04, xy @ ..] if xy.len() == 64 => xy.split_at(32),
                    _ => {
                        return Err(Error::Jwk {
                            kid: kid.cloned().unwrap_or_else(|| Kid::from("")),
                            reason: "unexpected P-256 public key encoding".to_owned(),
                        });
                    }
                };
                AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: URL_SAFE_NO_PAD.encode(x),
                    y: URL_SAFE_NO_PAD.encode(y),
                })
            }
            Signer::EdDsa(pair) => AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        };
        Ok(Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(alg.key_algorithm()),
                key_id: kid.map(Kid::to_string),
                ..CommonParameters::default()
            },
            algorithm,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use jsonwebtoken::{DecodingKey, EncodingKey, Validation};
    use serde_json::{Value, json};

    use super::*;

    fn signing_key(alg: Algorithm) -> (KeyRecord, SigningKey) {
        let record = generate(alg, 100, 200).unwrap();
        let key = SigningKey::from_record(&record, KeyState::Current).unwrap();
        (record, key)
    }

    /// `header.claims.signature` signed by `key`.
    fn mint(key: &SigningKey, claims: &Value) -> String {
        let mut jwt = String::from(key.header_segment());
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).unwrap(), &mut jwt);
        let mut sig = String::new();
        key.sign_into(jwt.as_bytes(), &mut sig).unwrap();
        jwt.push('.');
        jwt.push_str(&sig);
        jwt
    }

    #[test]
    fn algorithm_names() {
        let cases = [
            ("ES256", Some(Algorithm::Es256)),
            ("EdDSA", Some(Algorithm::EdDsa)),
            ("es256", None),
            ("EDDSA", None),
            ("RS256", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Algorithm>().ok(), expected, "{text:?}");
        }
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert_eq!(Algorithm::Es256.to_jwt(), jsonwebtoken::Algorithm::ES256);
        assert_eq!(Algorithm::EdDsa.to_jwt(), jsonwebtoken::Algorithm::EdDSA);
        let states: Vec<_> = KeyState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(states, ["next", "current", "previous"]);
    }

    #[test]
    fn signatures_verify_with_the_published_jwk() {
        crate::install_crypto_provider();
        let claims = json!({"iss": "https://gateway.internal", "sub": "user-42", "aud": "orders",
                            "iat": 1, "nbf": 1, "exp": 4_000_000_000u64, "jti": "j1", "sid": "s1"});
        for alg in Algorithm::ALL {
            let (record, key) = signing_key(alg);
            let jwt = mint(&key, &claims);

            let header = jsonwebtoken::decode_header(&jwt).unwrap();
            assert_eq!(header.alg, alg.to_jwt());
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.kid.as_deref(), Some(record.kid.as_str()));

            // Verify through a JWKS round trip, as a microservice would.
            let jwk_json = serde_json::to_string(key.jwk()).unwrap();
            let jwk: Jwk = serde_json::from_str(&jwk_json).unwrap();
            let decoding = DecodingKey::from_jwk(&jwk).unwrap();
            let mut validation = Validation::new(alg.to_jwt());
            validation.set_audience(&["orders"]);
            validation.set_issuer(&["https://gateway.internal"]);
            let data = jsonwebtoken::decode::<Value>(&jwt, &decoding, &validation).unwrap();
            assert_eq!(data.claims, claims, "{alg}");

            // A tampered token fails.
            let mut bad = jwt.clone();
            bad.insert(key.header_segment().len() + 2, 'x');
            assert!(jsonwebtoken::decode::<Value>(&bad, &decoding, &validation).is_err());

            // Another key of the same algorithm does not verify it.
            let (_, other) = signing_key(alg);
            let other = DecodingKey::from_jwk(other.jwk()).unwrap();
            assert!(
                jsonwebtoken::decode::<Value>(&jwt, &other, &validation).is_err(),
                "{alg}"
            );
        }
    }

    #[test]
    fn sign_into_appends() {
        for (alg, sig_len) in [(Algorithm::Es256, 86), (Algorithm::EdDsa, 86)] {
            let (_, key) = signing_key(alg);
            let mut out = String::from("prefix");
            key.sign_into(b"a.b", &mut out).unwrap();
            assert!(out.starts_with("prefix"));
            assert_eq!(out.len(), "prefix".len() + sig_len, "{alg}");
            assert!(!out.contains('=') && !out.contains('+') && !out.contains('/'));
        }
    }

    #[test]
    fn jwk_matches_jsonwebtoken_and_kid_is_its_thumbprint() {
        crate::install_crypto_provider();
        for alg in Algorithm::ALL {
            let (record, key) = signing_key(alg);
            let encoding = match alg {
                Algorithm::Es256 => EncodingKey::from_ec_der(record.private_pkcs8.expose()),
                Algorithm::EdDsa => EncodingKey::from_ed_der(record.private_pkcs8.expose()),
            };
            let reference = Jwk::from_encoding_key(&encoding, alg.to_jwt()).unwrap();
            assert_eq!(reference.algorithm, key.jwk().algorithm, "{alg}");
            assert_eq!(
                reference.thumbprint(ThumbprintHash::SHA256).unwrap(),
                record.kid.as_str()
            );
            assert_eq!(record.kid.as_str().len(), 43);
            assert!(record.kid.check_storable().is_ok());

            let doc: Value = serde_json::to_value(key.jwk()).unwrap();
            let fields: HashSet<&str> = doc
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let expected: HashSet<&str> = match alg {
                Algorithm::Es256 => ["kty", "kid", "alg", "use", "crv", "x", "y"].into(),
                Algorithm::EdDsa => ["kty", "kid", "alg", "use", "crv", "x"].into(),
            };
            assert_eq!(fields, expected, "{alg}");
            assert_eq!(doc["use"], "sig");
            assert_eq!(doc["alg"], alg.as_str());
        }
    }

    #[test]
    fn generated_keys_are_distinct_and_timed() {
        let a = generate(Algorithm::EdDsa, 5, 9).unwrap();
        let b = generate(Algorithm::EdDsa, 5, 9).unwrap();
        assert_ne!(a.kid, b.kid);
        assert_ne!(a.private_pkcs8, b.private_pkcs8);
        assert_eq!((a.created_at, a.activate_at, a.retired_at), (5, 9, None));
        assert_eq!(a.private_pkcs8.len(), 48);
        let key = SigningKey::from_record(&a, KeyState::Next).unwrap();
        assert_eq!(
            (key.alg(), key.state(), key.created_at(), key.activate_at()),
            (Algorithm::EdDsa, KeyState::Next, 5, 9)
        );
    }

    #[test]
    fn invalid_private_keys_are_rejected() {
        let es = generate(Algorithm::Es256, 1, 1).unwrap();
        let cases = [
            ("garbage", Algorithm::Es256, vec![1u8, 2, 3]),
            (
                "EdDSA bytes as ES256",
                Algorithm::Es256,
                generate(Algorithm::EdDsa, 1, 1)
                    .unwrap()
                    .private_pkcs8
                    .expose()
                    .to_vec(),
            ),
            (
                "ES256 bytes as EdDSA",
                Algorithm::EdDsa,
                es.private_pkcs8.expose().to_vec(),
            ),
            ("empty", Algorithm::EdDsa, vec![]),
        ];
        for (name, alg, bytes) in cases {
            let record = KeyRecord {
                alg,
                private_pkcs8: SecretBytes::new(bytes),
                ..es.clone()
            };
            let err = SigningKey::from_record(&record, KeyState::Current).unwrap_err();
            assert_eq!(err.kind(), "invalid_key", "{name}");
            assert!(err.to_string().contains(es.kid.as_str()), "{name}: {err}");
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        for alg in Algorithm::ALL {
            let (record, key) = signing_key(alg);
            let secret = record.private_pkcs8.expose();
            let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
            let tail_b64 = URL_SAFE_NO_PAD.encode(&secret[secret.len() - 32..]);
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let dumps = [
                format!("{:?}", record.private_pkcs8),
                format!("{record:?}"),
                format!("{record:#?}"),
                format!("{key:?}"),
                format!("{key:#?}"),
            ];
            for dump in &dumps {
                assert!(!dump.contains(&b64), "{dump}");
                assert!(!dump.contains(&tail_b64), "{dump}");
                assert!(!dump.contains(&hex[hex.len() - 64..]), "{dump}");
                // Byte lists such as `[48, 46, ...]` would also be a leak.
                assert!(
                    !dump.contains(&format!("{}, {}, {}", secret[0], secret[1], secret[2])),
                    "{dump}"
                );
            }
            assert_eq!(
                dumps[0],
                format!("SecretBytes(<redacted {} bytes>)", secret.len())
            );
            assert!(dumps[3].contains(record.kid.as_str()));
        }
    }
}
