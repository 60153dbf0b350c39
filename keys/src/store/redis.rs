//! [`RedisKeyStore`]: the keyring in Redis, shared by every replica, private keys sealed
//! under a key-encryption key ([`Kek`]).
//!
//! # Schema
//!
//! With `ns` the namespace given to [`RedisKeyStore::new`] (for example `sg:`):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{ns}keyring` | hash | field = kid, value = the key record as JSON (below) |
//! | `{ns}keyring:version` | string | integer, `INCR`ed after every change; absent means `0` |
//! | `{ns}keyring:lease` | string | rotation lease: the holder id, set with `SET NX PX` |
//! | `{ns}keyring:changed` | pub/sub channel | the new version, published after every change |
//! | `{ns}keyring:kek-check` | string | [`KEK_CHECK_PLAINTEXT`] sealed under the KEK (base64), so a replica with another KEK is refused even while the hash is empty |
//!
//! A key record is one line of JSON:
//!
//! ```json
//! {"kid":"<kid>","alg":"ES256","created_at":1767225600,"activate_at":1767225600,"retired_at":null,"sealed_key":"<base64>"}
//! ```
//!
//! `alg` is `"ES256"` or `"EdDSA"`; times are Unix seconds; `retired_at` is `null` or
//! the time the key was retired. `sealed_key` is the standard, padded base64 of
//! [`seal`]`(kek, kid, pkcs8)`: a 12-byte nonce, the AES-256-GCM ciphertext of the PKCS#8
//! DER private key, and the 16-byte tag, with the kid as associated data. The clear
//! private key is never written to Redis.
//!
//! # Consistency
//!
//! Every command touches one Redis key, so the store works on a cluster as well:
//! `add` is `HSETNX`; `retire` reads the record and rewrites it with a script that
//! writes only if the field still exists; `remove` is `HDEL`. Each change is followed by
//! `INCR {ns}keyring:version` and a best-effort `PUBLISH`, so a poller that sees the new
//! version reads the change. The lease is released by a script that deletes it only if
//! it still names the holder, so a lease that lapsed and was taken by another replica is
//! left alone.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface, PubsubInterface};
use fred::prelude::Pool;
use fred::types::{Expiration, SetOptions};
use serde::{Deserialize, Serialize};

use crate::seal::{Kek, open, seal};
use crate::{Algorithm, Error, KeyRecord, KeyStore, Kid, UnixTime};

/// The store name in errors.
const STORE: &str = "redis";

/// What `{ns}keyring:kek-check` holds, sealed under the KEK with `KEK_CHECK_AAD` as
/// associated data (in place of a kid).
pub const KEK_CHECK_PLAINTEXT: &[u8] = b"sessiongate keyring kek check v1";

/// The associated data (in place of a kid) of the KEK check value.
const KEK_CHECK_AAD: &str = "sessiongate:kek-check";

/// Sets a hash field only if it exists (`HSET` with "XX" semantics):
/// `KEYS[1]` the hash, `ARGV[1]` the field, `ARGV[2]` the value; returns 1 if written.
const REPLACE_FIELD: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// Deletes the lease `KEYS[1]` only if it still names the holder `ARGV[1]`.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A [`KeyStore`] in Redis, for `keys.store = "redis"`: one hash of sealed key records
/// shared by every replica, a version counter for change polling, a pub/sub channel
/// announcing changes, and a rotation lease (see the module docs for the schema).
///
/// Build the [`Pool`] on the runtime it will live on; the store only sends commands
/// and holds no lock.
#[derive(Clone)]
pub struct RedisKeyStore {
    client: Pool,
    kek: Arc<Kek>,
    ring: String,
    version: String,
    lease: String,
    channel: String,
    kek_check: String,
}

impl RedisKeyStore {
    /// A store using `client`, with every key name starting with `namespace`, sealing
    /// private keys with `kek`.
    pub fn new(client: Pool, namespace: &str, kek: Kek) -> Self {
        RedisKeyStore {
            client,
            kek: Arc::new(kek),
            ring: format!("{namespace}keyring"),
            version: format!("{namespace}keyring:version"),
            lease: format!("{namespace}keyring:lease"),
            channel: format!("{namespace}keyring:changed"),
            kek_check: format!("{namespace}keyring:kek-check"),
        }
    }

    /// Checks that the keyring in Redis belongs to this store's KEK.
    ///
    /// Unsealing the records proves the KEK only when there are records: a replica
    /// started with another KEK on an empty keyring would otherwise seal the first key
    /// under its own KEK, and every other replica would then fail to load it. So the
    /// first replica whose KEK opened every record (or that found none) writes a check
    /// value with `SET NX`; every load then opens it. Two replicas with different KEKs
    /// racing on an empty keyring both `SET NX`, and the loser fails to open the winner's.
    ///
    /// # Errors
    /// [`Error::Kek`] when the check value was sealed under another KEK;
    /// [`Error::Backend`] if Redis fails.
    async fn check_kek(&self) -> Result<(), Error> {
        let check_kid = Kid::from(KEK_CHECK_AAD.to_owned());
        let mut stored: Option<String> = self
            .client
            .get(self.kek_check.as_str())
            .await
            .map_err(|e| redis_error("GET", &self.kek_check, &e))?;
        if stored.is_none() {
            let sealed = STANDARD.encode(seal(&self.kek, &check_kid, KEK_CHECK_PLAINTEXT)?);
            let _: Option<String> = self
                .client
                .set(
                    self.kek_check.as_str(),
                    sealed,
                    None,
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(|e| redis_error("SET NX", &self.kek_check, &e))?;
            stored = self
                .client
                .get(self.kek_check.as_str())
                .await
                .map_err(|e| redis_error("GET", &self.kek_check, &e))?;
        }
        let wrong = || Error::Kek {
            reason: format!(
                "the keyring in Redis is sealed under a different key-encryption key \
                 ({} does not open with this one)",
                self.kek_check
            ),
        };
        let sealed = STANDARD
            .decode(stored.unwrap_or_default().as_bytes())
            .map_err(|_| wrong())?;
        match open(&self.kek, &check_kid, &sealed) {
            Ok(plain) if plain.expose() == KEK_CHECK_PLAINTEXT => Ok(()),
            _ => Err(wrong()),
        }
    }

    /// Moves a keyring kept under an older namespace (releases before `keys.redis_prefix`
    /// kept it under `session.key_prefix`) to this store's, once: when this store's
    /// keyring is empty and the old one is not, every record and the KEK check value are
    /// copied (`HSETNX`, `SET NX`: replicas starting together copy the same data) and the
    /// version is bumped. The old keys are left for replicas still running the older
    /// release; docs/redis-schema.md says when to delete them. Returns how many records
    /// were copied.
    ///
    /// # Errors
    /// [`Error::Backend`] if Redis fails.
    pub async fn migrate_from(&self, old_namespace: &str) -> Result<usize, Error> {
        let (old_ring, old_check) = (
            format!("{old_namespace}keyring"),
            format!("{old_namespace}keyring:kek-check"),
        );
        if old_ring == self.ring {
            return Ok(0);
        }
        let present: i64 = self
            .client
            .hlen(self.ring.as_str())
            .await
            .map_err(|e| redis_error("HLEN", &self.ring, &e))?;
        if present > 0 {
            return Ok(0);
        }
        let records: BTreeMap<String, Bytes> = self
            .client
            .hgetall(old_ring.as_str())
            .await
            .map_err(|e| redis_error("HGETALL", &old_ring, &e))?;
        if records.is_empty() {
            return Ok(0);
        }
        let check: Option<Bytes> = self
            .client
            .get(old_check.as_str())
            .await
            .map_err(|e| redis_error("GET", &old_check, &e))?;
        if let Some(check) = check {
            let _: Option<String> = self
                .client
                .set(
                    self.kek_check.as_str(),
                    check,
                    None,
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(|e| redis_error("SET NX", &self.kek_check, &e))?;
        }
        for (kid, record) in &records {
            let _: i64 = self
                .client
                .hsetnx(self.ring.as_str(), kid.as_str(), record.clone())
                .await
                .map_err(|e| redis_error("HSETNX", &self.ring, &e))?;
        }
        self.changed().await?;
        Ok(records.len())
    }

    /// The pub/sub channel on which the new version is published after every change.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Announces a change: bumps the version, then publishes it (best effort).
    async fn changed(&self) -> Result<(), Error> {
        let version: i64 = self
            .client
            .incr(self.version.as_str())
            .await
            .map_err(|e| redis_error("INCR", &self.version, &e))?;
        let published = self
            .client
            .next_connected()
            .publish::<i64, _, _>(self.channel.as_str(), version)
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, channel = %self.channel, "Publishing a keyring change failed; pollers still see the version.");
        }
        Ok(())
    }
}

#[async_trait]
impl KeyStore for RedisKeyStore {
    /// `HGETALL {ns}keyring`, then unseals every record, then checks the KEK against
    /// `{ns}keyring:kek-check` (written by the first load that opened every record).
    ///
    /// # Errors
    /// [`Error::Unseal`] naming the kid for a wrong key-encryption key (or tampered
    /// data); [`Error::Kek`] for a wrong key-encryption key on a keyring whose records
    /// did not tell (an empty one); [`Error::MalformedRecord`] naming the kid for a
    /// record that is not valid; [`Error::Backend`] if Redis fails.
    async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
        let fields: BTreeMap<String, Bytes> = self
            .client
            .hgetall(self.ring.as_str())
            .await
            .map_err(|e| redis_error("HGETALL", &self.ring, &e))?;
        let records = fields
            .into_iter()
            .map(|(kid, json)| decode_record(&self.kek, Kid::from(kid), &json))
            .collect::<Result<Vec<_>, Error>>()?;
        self.check_kek().await?;
        Ok(records)
    }

    /// `HGETALL`, keeping the kids of records whose JSON says they are retired; records
    /// that do not parse, or whose kid differs from their hash field, are skipped (a
    /// retirement is only ever believed of the key it names).
    ///
    /// # Errors
    /// [`Error::Backend`].
    async fn retired(&self) -> Result<Vec<Kid>, Error> {
        let fields: BTreeMap<String, Bytes> = self
            .client
            .hgetall(self.ring.as_str())
            .await
            .map_err(|e| redis_error("HGETALL", &self.ring, &e))?;
        Ok(fields
            .into_iter()
            .filter_map(|(kid, json)| {
                let kid = Kid::from(kid);
                let wire = parse(&kid, &json).ok()?;
                (wire.kid == kid.as_str() && wire.retired_at.is_some()).then_some(kid)
            })
            .collect())
    }

    /// Seals the private key and `HSETNX`es the record.
    ///
    /// # Errors
    /// [`Error::InvalidKid`], [`Error::AlreadyExists`], or [`Error::Backend`].
    async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
        let json = encode_record(&self.kek, record)?;
        let added: i64 = self
            .client
            .hsetnx(self.ring.as_str(), record.kid.as_str(), json)
            .await
            .map_err(|e| redis_error("HSETNX", &self.ring, &e))?;
        if added == 0 {
            return Err(Error::AlreadyExists {
                kid: record.kid.clone(),
            });
        }
        self.changed().await
    }

    /// Rewrites the record with `retired_at = now` unless it is retired already. The
    /// version is bumped either way, so repeating a retirement whose notification was
    /// lost notifies again.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::MalformedRecord`], or [`Error::Backend`].
    async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
        let not_found = || Error::NotFound { kid: kid.clone() };
        let json: Option<Bytes> = self
            .client
            .hget(self.ring.as_str(), kid.as_str())
            .await
            .map_err(|e| redis_error("HGET", &self.ring, &e))?;
        let json = json.ok_or_else(not_found)?;
        let mut wire = parse(kid, &json)?;
        if wire.retired_at.is_none() {
            wire.retired_at = Some(now);
            let json = wire.to_json(kid)?;
            let replaced: i64 = self
                .client
                .eval(
                    REPLACE_FIELD,
                    self.ring.as_str(),
                    vec![kid.to_string(), json],
                )
                .await
                .map_err(|e| redis_error("EVAL (replace field)", &self.ring, &e))?;
            if replaced == 0 {
                return Err(not_found());
            }
        }
        self.changed().await
    }

    /// `HDEL`; the version is bumped only if the key was there.
    ///
    /// # Errors
    /// [`Error::Backend`].
    async fn remove(&self, kid: &Kid) -> Result<(), Error> {
        let removed: i64 = self
            .client
            .hdel(self.ring.as_str(), kid.as_str())
            .await
            .map_err(|e| redis_error("HDEL", &self.ring, &e))?;
        if removed > 0 {
            self.changed().await?;
        }
        Ok(())
    }

    /// `GET {ns}keyring:version`, `"0"` if absent.
    ///
    /// # Errors
    /// [`Error::Backend`].
    async fn version(&self) -> Result<String, Error> {
        let version: Option<String> = self
            .client
            .get(self.version.as_str())
            .await
            .map_err(|e| redis_error("GET", &self.version, &e))?;
        Ok(version.unwrap_or_else(|| "0".to_owned()))
    }

    /// `SET {ns}keyring:lease <holder> NX PX <ttl>` (at least 1 ms).
    ///
    /// # Errors
    /// [`Error::Backend`].
    async fn try_lease(&self, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set: Option<String> = self
            .client
            .set(
                self.lease.as_str(),
                holder,
                Some(Expiration::PX(millis)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| redis_error("SET NX", &self.lease, &e))?;
        Ok(set.is_some())
    }

    /// Deletes the lease if it still names `holder` (one script, so atomic).
    ///
    /// # Errors
    /// [`Error::Backend`].
    async fn release_lease(&self, holder: &str) -> Result<(), Error> {
        let _deleted: i64 = self
            .client
            .eval(RELEASE_LEASE, self.lease.as_str(), holder)
            .await
            .map_err(|e| redis_error("EVAL (release lease)", &self.lease, &e))?;
        Ok(())
    }
}

impl fmt::Debug for RedisKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("hash", &self.ring)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .field("channel", &self.channel)
            .field("kek_check", &self.kek_check)
            .finish_non_exhaustive()
    }
}

/// The record decoder: one value of the `{ns}keyring` hash, whose field is `kid`, as a
/// [`KeyRecord`] with its private key unsealed by `kek` (the schema is in the module
/// docs). [`RedisKeyStore::load`] reads every record through it.
///
/// # Errors
/// [`Error::MalformedRecord`] naming the kid when the value is not a key record: not JSON
/// of the schema's shape, a `kid` that differs from the hash field or that no store
/// accepts, an unknown `alg`, a `sealed_key` that is not base64. [`Error::Unseal`] when
/// the key was sealed under another KEK or for another kid, or was tampered with.
pub fn decode_record(kek: &Kek, kid: Kid, json: &[u8]) -> Result<KeyRecord, Error> {
    let wire = parse(&kid, json)?;
    let malformed = |reason: String| Error::MalformedRecord {
        store: STORE,
        kid: kid.clone(),
        reason,
    };
    if wire.kid != kid.as_str() {
        return Err(malformed(format!(
            "its kid field {:?} differs from the hash field",
            wire.kid
        )));
    }
    kid.check_storable().map_err(|e| malformed(e.to_string()))?;
    let alg: Algorithm = wire
        .alg
        .parse()
        .map_err(|e: Error| malformed(e.to_string()))?;
    let sealed = STANDARD
        .decode(wire.sealed_key.as_bytes())
        .map_err(|e| malformed(format!("sealed_key is not base64: {e}")))?;
    let private_pkcs8 = open(kek, &kid, &sealed)?;
    Ok(KeyRecord {
        kid,
        alg,
        created_at: wire.created_at,
        activate_at: wire.activate_at,
        retired_at: wire.retired_at,
        private_pkcs8,
    })
}

/// The record encoder: `record` as the one line of JSON the `{ns}keyring` hash holds
/// under its kid, the private key sealed by `kek` with a fresh nonce. [`decode_record`]
/// reads it back as an equal record.
///
/// # Errors
/// [`Error::InvalidKid`] for a kid no store accepts; [`Error::Kek`] if sealing fails.
pub fn encode_record(kek: &Kek, record: &KeyRecord) -> Result<String, Error> {
    record.kid.check_storable()?;
    let sealed = seal(kek, &record.kid, record.private_pkcs8.expose())?;
    let wire = WireRecord {
        kid: record.kid.to_string(),
        alg: record.alg.as_str().to_owned(),
        created_at: record.created_at,
        activate_at: record.activate_at,
        retired_at: record.retired_at,
        sealed_key: STANDARD.encode(sealed),
    };
    wire.to_json(&record.kid)
}

/// The JSON form of a record in the hash: [`StoredKey`](super::StoredKey) with the
/// private key sealed instead of in the clear.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecord {
    kid: String,
    alg: String,
    created_at: UnixTime,
    activate_at: UnixTime,
    #[serde(default)]
    retired_at: Option<UnixTime>,
    sealed_key: String,
}

impl WireRecord {
    fn to_json(&self, kid: &Kid) -> Result<String, Error> {
        serde_json::to_string(self).map_err(|e| Error::MalformedRecord {
            store: STORE,
            kid: kid.clone(),
            reason: format!("cannot encode: {e}"),
        })
    }
}

fn parse(kid: &Kid, json: &[u8]) -> Result<WireRecord, Error> {
    serde_json::from_slice(json).map_err(|e| Error::MalformedRecord {
        store: STORE,
        kid: kid.clone(),
        reason: format!("not a key record: {e}"),
    })
}

/// A fred error as [`Error::Backend`], with the command and the Redis key.
fn redis_error(command: &str, key: &str, error: &fred::error::Error) -> Error {
    Error::backend(STORE, format!("{command} {key}: {error}"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kek() -> Kek {
        Kek::from_bytes(&[7; 32]).unwrap()
    }

    /// Record-shaped JSON with every field at times wrong.
    fn record_json(kek: &Kek) -> impl Strategy<Value = (String, Vec<u8>)> {
        let sealed = STANDARD.encode(seal(kek, &Kid::from("k1"), b"pkcs8").unwrap());
        let field = |good: &'static str, bad: Vec<&'static str>| prop_oneof![3 => Just(good.to_owned()), 1 => prop::sample::select(bad).prop_map(str::to_owned)];
        (
            prop_oneof![3 => Just("k1"), 1 => prop::sample::select(vec!["k2", "", "k/1", "K1"])],
            field(r#""k1""#, vec![r#""k2""#, r#""""#, "1", "null"]),
            field(r#""ES256""#, vec![r#""EdDSA""#, r#""RS256""#, r#""es256""#, "[]"]),
            field("1767225600", vec!["-1", "1.5", "18446744073709551616", r#""1""#]),
            field("null", vec!["5", "-5", r#""x""#, "{}"]),
            prop_oneof![
                3 => Just(format!(r#""{sealed}""#)),
                1 => prop::sample::select(vec![r#""""#, r#""!!""#, r#""AAAA""#, "7"]).prop_map(str::to_owned),
            ],
            any::<bool>(),
        )
            .prop_map(|(hash_field, kid, alg, time, retired, sealed_key, extra)| {
                let extra = if extra { r#","x":1"# } else { "" };
                let json = format!(
                    r#"{{"kid":{kid},"alg":{alg},"created_at":{time},"activate_at":{time},"retired_at":{retired},"sealed_key":{sealed_key}{extra}}}"#
                );
                (hash_field.to_owned(), json.into_bytes())
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(record in crate::store::tests::record(0)) {
            let kek = kek();
            let json = encode_record(&kek, &record).unwrap();
            let decoded = decode_record(&kek, record.kid.clone(), json.as_bytes()).unwrap();
            prop_assert_eq!(&decoded, &record);
            // Another KEK, or another hash field, never opens it.
            let other = Kek::from_bytes(&[8; 32]).unwrap();
            let unseal = matches!(decode_record(&other, record.kid.clone(), json.as_bytes()), Err(Error::Unseal { .. }));
            prop_assert!(unseal);
            let moved = decode_record(&kek, Kid::from(format!("{}x", record.kid)), json.as_bytes());
            prop_assert!(moved.is_err());
        }

        #[test]
        fn decoded_records_encode_back_to_equal_records(input in record_json(&kek())) {
            let (kid, json) = input;
            let kek = kek();
            if let Ok(record) = decode_record(&kek, Kid::from(kid.as_str()), &json) {
                let again = encode_record(&kek, &record).unwrap();
                prop_assert_eq!(decode_record(&kek, record.kid.clone(), again.as_bytes()).unwrap(), record);
            }
        }

        #[test]
        fn arbitrary_values_never_panic(
            kid in prop_oneof!["[A-Za-z0-9_-]{1,8}", any::<String>()],
            json in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = decode_record(&kek(), Kid::from(kid.as_str()), &json);
        }
    }
}
