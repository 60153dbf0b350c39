//! Sealing private keys at rest: AES-256-GCM under a 32-byte key-encryption key
//! ([`Kek`]), with the kid as associated data so a sealed key cannot be moved to another
//! kid unnoticed.
//!
//! Sealed form: 12-byte random nonce, then ciphertext, then the 16-byte tag.
//!
//! ```
//! use keys::seal::{Kek, open, seal};
//! use keys::Kid;
//!
//! let kek = Kek::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let kid = Kid::from("abc");
//! let sealed = seal(&kek, &kid, b"pkcs8 bytes")?;
//! assert_eq!(open(&kek, &kid, &sealed)?.expose(), b"pkcs8 bytes");
//! # Ok::<(), keys::Error>(())
//! ```

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use crate::{Error, Kid, SecretBytes};

/// Length of a key-encryption key.
pub const KEK_LEN: usize = 32;

/// Length of the GCM tag appended to the ciphertext.
const TAG_LEN: usize = 16;

/// A 32-byte AES-256-GCM key-encryption key. `Debug` is redacted.
pub struct Kek {
    key: LessSafeKey,
}

impl Kek {
    /// Reads a key from base64 (standard or URL-safe alphabet, padding optional;
    /// surrounding whitespace ignored), e.g. the output of `openssl rand -base64 32`.
    ///
    /// # Errors
    /// [`Error::Kek`] if the text is not base64 or does not decode to 32 bytes.
    pub fn from_base64(text: &str) -> Result<Kek, Error> {
        let text = text.trim();
        let config = GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let bytes = GeneralPurpose::new(&alphabet::STANDARD, config)
            .decode(text)
            .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(text))
            .map(Zeroizing::new)
            .map_err(|_| Error::Kek {
                reason: "not valid base64".to_owned(),
            })?;
        Kek::from_bytes(&bytes)
    }

    /// Uses 32 raw bytes as the key.
    ///
    /// # Errors
    /// [`Error::Kek`] if `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Kek, Error> {
        if bytes.len() != KEK_LEN {
            return Err(Error::Kek {
                reason: format!("expected {KEK_LEN} bytes, got {}", bytes.len()),
            });
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| Error::Kek {
            reason: "rejected by AES-256-GCM".to_owned(),
        })?;
        Ok(Kek {
            key: LessSafeKey::new(key),
        })
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

/// Encrypts `plaintext` for `kid`: random nonce, then ciphertext and tag.
///
/// # Errors
/// [`Error::Kek`] if the random source or the cipher fails (not expected in practice).
pub fn seal(kek: &Kek, kid: &Kid, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Kek {
        reason: "no randomness for a nonce".to_owned(),
    })?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = kek
        .key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(kid.as_str().as_bytes()),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| Error::Kek {
            reason: "sealing failed".to_owned(),
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts what [`seal`] produced for `kid`.
///
/// # Errors
/// [`Error::Unseal`] with the kid for a wrong key-encryption key, another kid, or
/// truncated or tampered data.
pub fn open(kek: &Kek, kid: &Kid, sealed: &[u8]) -> Result<SecretBytes, Error> {
    let unseal = || Error::Unseal { kid: kid.clone() };
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(unseal());
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unseal())?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = kek
        .key
        .open_in_place(nonce, Aad::from(kid.as_str().as_bytes()), &mut buf)
        .map_err(|_| unseal())?
        .len();
    buf.truncate(len);
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn kek_parsing() {
        let cases = [
            (KEK_B64, Ok(())),
            ("  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n", Ok(())),
            ("_-8AAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0", Ok(())),
            ("AAECAwQ=", Err("expected 32 bytes, got 5")),
            ("not base64 at all!", Err("not valid base64")),
            ("", Err("expected 32 bytes, got 0")),
        ];
        for (text, expected) in cases {
            match (Kek::from_base64(text), expected) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(reason)) => {
                    assert_eq!(e.kind(), "kek");
                    assert!(e.to_string().contains(reason), "{text:?}: {e}");
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            format!("{:?}", Kek::from_base64(KEK_B64).unwrap()),
            "Kek(<redacted>)"
        );
    }

    #[test]
    fn seal_open_round_trip_and_failures() {
        let kek = Kek::from_base64(KEK_B64).unwrap();
        let other = Kek::from_bytes(&[7u8; 32]).unwrap();
        let kid = Kid::from("kid-1");
        let secret = b"-- PKCS#8 bytes --";

        let sealed = seal(&kek, &kid, secret).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + secret.len() + TAG_LEN);
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
        assert_eq!(open(&kek, &kid, &sealed).unwrap().expose(), secret);
        // A fresh nonce every time.
        assert_ne!(seal(&kek, &kid, secret).unwrap(), sealed);

        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        let cases: [(&Kek, &str, &[u8]); 4] = [
            (&other, "kid-1", &sealed),
            (&kek, "kid-2", &sealed),
            (&kek, "kid-1", &tampered),
            (&kek, "kid-1", &sealed[..NONCE_LEN + TAG_LEN - 1]),
        ];
        for (k, kid, data) in cases {
            let err = open(k, &Kid::from(kid), data).unwrap_err();
            assert_eq!(err.kind(), "unseal");
            assert!(err.to_string().contains(kid), "{err}");
        }
    }
}
