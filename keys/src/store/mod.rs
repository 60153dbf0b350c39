//! Key stores: where [`KeyRecord`]s live between processes.
//!
//! [`KeyStore`] is the trait the [`KeyManager`](crate::KeyManager) drives;
//! [`MemoryStore`] serves `sessiongate dev` and tests, [`FileStore`] a directory (for
//! example a Kubernetes Secret mount), [`RedisKeyStore`] a Redis hash shared by every
//! replica, with private keys sealed under a key-encryption key. [`StoredKey`] is the
//! JSON wire form of a record in the file store.

mod file;
mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize as _, Zeroizing};

use crate::{Error, KeyRecord, Kid, SecretBytes, UnixTime};

pub use self::file::FileStore;
pub use self::memory::MemoryStore;
pub use self::redis::RedisKeyStore;

/// Persistent storage of key records.
///
/// Implementations never hold a lock across an `.await`.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Every stored record, retired ones included.
    ///
    /// # Errors
    /// Store-specific; a record that cannot be read is an error, never skipped.
    async fn load(&self) -> Result<Vec<KeyRecord>, Error>;

    /// Stores a new record.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the kid is taken; store-specific otherwise.
    async fn add(&self, record: &KeyRecord) -> Result<(), Error>;

    /// The kids of the records marked retired, read without opening any private key:
    /// what a replica whose [`load`](Self::load) fails (a record it cannot unseal or
    /// parse) can still learn. The default reads them from `load`.
    ///
    /// # Errors
    /// Store-specific.
    async fn retired(&self) -> Result<Vec<Kid>, Error> {
        Ok(self
            .load()
            .await?
            .into_iter()
            .filter(|r| r.retired_at.is_some())
            .map(|r| r.kid)
            .collect())
    }

    /// Marks a key retired at `now` (kept if it was already retired).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such key; store-specific otherwise.
    async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error>;

    /// Deletes a key. Deleting an absent key succeeds, so replicas may race.
    ///
    /// # Errors
    /// Store-specific.
    async fn remove(&self, kid: &Kid) -> Result<(), Error>;

    /// A cheap fingerprint that changes when the stored keys change, for change polling.
    ///
    /// # Errors
    /// Store-specific.
    async fn version(&self) -> Result<String, Error>;

    /// Tries to take the rotation lease for `holder` for `ttl`, so that of several
    /// processes sharing the store only one creates keys at a time. Returns `false` if
    /// the lease is held, even by `holder` itself; it lapses by itself after `ttl`.
    ///
    /// The default grants it always: right for stores with a single writer (a file
    /// store is written by one process, or is a read-only mount) and for
    /// [`MemoryStore`], which lives in one process whose manager serializes its calls.
    ///
    /// # Errors
    /// Store-specific.
    async fn try_lease(&self, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let _ = (holder, ttl);
        Ok(true)
    }

    /// Releases the rotation lease if `holder` still holds it; otherwise does nothing
    /// (it lapsed and may now be someone else's).
    ///
    /// # Errors
    /// Store-specific.
    async fn release_lease(&self, holder: &str) -> Result<(), Error> {
        let _ = holder;
        Ok(())
    }
}

/// The JSON form of a [`KeyRecord`]:
/// `{"kid","alg","created_at","activate_at","retired_at","private_key"}` with
/// `private_key` the standard base64 of the PKCS#8 DER.
///
/// `Debug` redacts the private key; call [`StoredKey::into_record`] promptly, which
/// wipes the base64 text.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    /// The key id.
    pub kid: String,
    /// `"ES256"` or `"EdDSA"`.
    pub alg: String,
    /// Unix seconds.
    pub created_at: UnixTime,
    /// Unix seconds.
    pub activate_at: UnixTime,
    /// Unix seconds, or `null`.
    #[serde(default)]
    pub retired_at: Option<UnixTime>,
    /// Standard base64 of the PKCS#8 DER private key.
    pub private_key: String,
}

impl StoredKey {
    /// The wire form of `record` (the base64 text is wiped on drop).
    pub fn from_record(record: &KeyRecord) -> Self {
        StoredKey {
            kid: record.kid.to_string(),
            alg: record.alg.as_str().to_owned(),
            created_at: record.created_at,
            activate_at: record.activate_at,
            retired_at: record.retired_at,
            private_key: STANDARD.encode(record.private_pkcs8.expose()),
        }
    }

    /// Validates and converts to a record.
    ///
    /// # Errors
    /// A description of the first problem (unknown algorithm, bad base64, empty kid);
    /// the caller wraps it with where the data came from.
    pub fn into_record(mut self) -> Result<KeyRecord, String> {
        let decoded = STANDARD
            .decode(self.private_key.as_bytes())
            .map(SecretBytes::new)
            .map_err(|e| format!("private_key is not base64: {e}"));
        self.private_key.zeroize();
        let private_pkcs8 = decoded?;
        if private_pkcs8.is_empty() {
            return Err("private_key is empty".to_owned());
        }
        if self.kid.is_empty() {
            return Err("kid is empty".to_owned());
        }
        let alg = self.alg.parse().map_err(|e: Error| e.to_string())?;
        Ok(KeyRecord {
            kid: Kid::from(std::mem::take(&mut self.kid)),
            alg,
            created_at: self.created_at,
            activate_at: self.activate_at,
            retired_at: self.retired_at,
            private_pkcs8,
        })
    }

    /// Pretty JSON, in a buffer wiped on drop.
    ///
    /// # Errors
    /// Only if serialization fails, which it does not for this type.
    pub fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
        let mut out = Zeroizing::new(Vec::with_capacity(512));
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.push(b'\n');
        Ok(out)
    }
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activate_at", &self.activate_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Algorithm, generate};

    #[test]
    fn stored_key_round_trip() {
        let record = generate(Algorithm::EdDsa, 10, 20).unwrap();
        let json = StoredKey::from_record(&record).to_json().unwrap();
        let back: StoredKey = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.into_record().unwrap(), record);
    }

    #[test]
    fn stored_key_rejections() {
        let cases = [
            (
                r#"{"kid":"a","alg":"RS256","created_at":1,"activate_at":1,"private_key":"AAAA"}"#,
                "unknown signing algorithm",
            ),
            (
                r#"{"kid":"a","alg":"ES256","created_at":1,"activate_at":1,"private_key":"!!"}"#,
                "not base64",
            ),
            (
                r#"{"kid":"a","alg":"ES256","created_at":1,"activate_at":1,"private_key":""}"#,
                "empty",
            ),
            (
                r#"{"kid":"","alg":"ES256","created_at":1,"activate_at":1,"private_key":"AAAA"}"#,
                "kid is empty",
            ),
        ];
        for (json, expected) in cases {
            let stored: StoredKey = serde_json::from_str(json).unwrap();
            let err = stored.into_record().unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    // === properties ===

    use proptest::prelude::*;

    /// The record decoder of the file store: JSON text to a record.
    fn decode(json: &[u8]) -> Option<KeyRecord> {
        serde_json::from_slice::<StoredKey>(json)
            .ok()?
            .into_record()
            .ok()
    }

    /// Any record a store may be given, with a private key of `min_key` bytes or more.
    pub(crate) fn record(min_key: usize) -> impl Strategy<Value = KeyRecord> {
        (
            "[A-Za-z0-9_-]{1,64}",
            prop::sample::select(vec![Algorithm::Es256, Algorithm::EdDsa]),
            any::<u64>(),
            any::<u64>(),
            any::<Option<u64>>(),
            prop::collection::vec(any::<u8>(), min_key..160),
        )
            .prop_map(
                |(kid, alg, created_at, activate_at, retired_at, key)| KeyRecord {
                    kid: Kid::from(kid),
                    alg,
                    created_at,
                    activate_at,
                    retired_at,
                    private_pkcs8: SecretBytes::new(key),
                },
            )
    }

    /// Record-shaped JSON with every field at times wrong.
    fn record_json() -> impl Strategy<Value = String> {
        let field = |good: &'static str, bad: Vec<&'static str>| prop_oneof![3 => Just(good.to_owned()), 1 => prop::sample::select(bad).prop_map(str::to_owned)];
        (
            field(r#""k1""#, vec![r#""""#, r#""k/1""#, "1", "null", r#""\u0000""#]),
            field(r#""EdDSA""#, vec![r#""ES256""#, r#""RS256""#, r#""eddsa""#, "[]"]),
            field("1767225600", vec!["-1", "1.5", "18446744073709551616", r#""1""#]),
            field("null", vec!["5", r#""x""#, "{}"]),
            field(r#""AAECAw==""#, vec![r#""""#, r#""!!""#, r#""AAECAw""#, r#""AA==""#, "7"]),
            prop::sample::select(vec!["", r#","x":1"#, r#","retired_at":null"#]),
        )
            .prop_map(|(kid, alg, time, retired, key, extra)| {
                format!(
                    r#"{{"kid":{kid},"alg":{alg},"created_at":{time},"activate_at":{time},"retired_at":{retired},"private_key":{key}{extra}}}"#
                )
            })
    }

    proptest! {
        #[test]
        fn stored_keys_round_trip(record in record(1)) {
            let json = StoredKey::from_record(&record).to_json().unwrap();
            prop_assert_eq!(decode(&json), Some(record));
        }

        #[test]
        fn decoded_stored_keys_encode_back_to_equal_records(json in record_json()) {
            if let Some(record) = decode(json.as_bytes()) {
                let again = StoredKey::from_record(&record).to_json().unwrap();
                prop_assert_eq!(decode(&again), Some(record));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(json in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&json);
        }
    }
}
