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

    /// The pub/sub channel on which the new version is published after every change.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Parses and unseals one stored record.
    fn open_record(&self, kid: Kid, json: &[u8]) -> Result<KeyRecord, Error> {
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
        let private_pkcs8 = open(&self.kek, &kid, &sealed)?;
        Ok(KeyRecord {
            kid,
            alg,
            created_at: wire.created_at,
            activate_at: wire.activate_at,
            retired_at: wire.retired_at,
            private_pkcs8,
        })
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
            .map(|(kid, json)| self.open_record(Kid::from(kid), &json))
            .collect::<Result<Vec<_>, Error>>()?;
        self.check_kek().await?;
        Ok(records)
    }

    /// Seals the private key and `HSETNX`es the record.
    ///
    /// # Errors
    /// [`Error::InvalidKid`], [`Error::AlreadyExists`], or [`Error::Backend`].
    async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
        record.kid.check_storable()?;
        let sealed = seal(&self.kek, &record.kid, record.private_pkcs8.expose())?;
        let wire = WireRecord {
            kid: record.kid.to_string(),
            alg: record.alg.as_str().to_owned(),
            created_at: record.created_at,
            activate_at: record.activate_at,
            retired_at: record.retired_at,
            sealed_key: STANDARD.encode(sealed),
        };
        let json = wire.to_json(&record.kid)?;
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
    use std::collections::BTreeSet;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use fred::interfaces::{ClientLike, EventInterface};
    use fred::prelude::{Builder, Config};
    use fred::types::{ClusterHash, CustomCommand};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{KeyManager, Keyring, RotationPolicy, generate};

    const NS: &str = "t:";
    const T0: UnixTime = 1_000_000;

    // === RedisServer: a throw-away redis-server process ===

    /// A `redis-server` on a free loopback port with its data in a temp dir; killed
    /// and reaped on drop.
    struct RedisServer {
        child: Child,
        port: u16,
        log: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl RedisServer {
        /// Starts a server and waits until it answers `PING`. A port found free can be
        /// taken before redis binds it; redis then exits and another port is tried.
        async fn start() -> RedisServer {
            for _ in 0..5 {
                if let Some(server) = RedisServer::try_start().await {
                    return server;
                }
            }
            panic!("redis-server failed to start five times");
        }

        async fn try_start() -> Option<RedisServer> {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("redis.log");
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run redis-server ({e}); these tests need it on PATH \
                         (Debian: apt-get install redis-server)"
                    )
                });
            let mut server = RedisServer {
                child,
                port,
                log,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if server.child.try_wait().unwrap().is_some() {
                    eprintln!("redis-server exited early:\n{}", server.log_text());
                    return None;
                }
                if ping(port).await {
                    return Some(server);
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not answer on port {port} within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn log_text(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!("redis-server log:\n{}", self.log_text());
            }
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn ping(port: u16) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            return false;
        };
        let mut buf = [0u8; 16];
        stream.write_all(b"PING\r\n").await.is_ok()
            && matches!(stream.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    // === helpers ===

    async fn pool(server: &RedisServer, size: usize) -> Pool {
        let config = Config::from_url(&server.url()).unwrap();
        let pool = Builder::from_config(config).build_pool(size).unwrap();
        pool.init().await.unwrap();
        pool
    }

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes(&[byte; 32]).unwrap()
    }

    fn store(pool: &Pool) -> RedisKeyStore {
        RedisKeyStore::new(pool.clone(), NS, kek(1))
    }

    fn sorted(mut records: Vec<KeyRecord>) -> Vec<KeyRecord> {
        records.sort_by(|a, b| a.kid.cmp(&b.kid));
        records
    }

    // === tests ===

    #[tokio::test]
    async fn round_trip_and_version() {
        let server = RedisServer::start().await;
        let pool = pool(&server, 2).await;
        let store = store(&pool);
        assert_eq!(store.version().await.unwrap(), "0");
        assert!(store.load().await.unwrap().is_empty());

        let es = generate(Algorithm::Es256, T0, T0).unwrap();
        let ed = generate(Algorithm::EdDsa, T0, T0 + 60).unwrap();
        store.add(&es).await.unwrap();
        store.add(&ed).await.unwrap();
        assert_eq!(store.version().await.unwrap(), "2");
        assert_eq!(
            store.load().await.unwrap(),
            sorted(vec![es.clone(), ed.clone()])
        );
        assert_eq!(store.add(&es).await.unwrap_err().kind(), "already_exists");
        assert_eq!(store.version().await.unwrap(), "2");

        store.retire(&es.kid, T0 + 5).await.unwrap();
        store.retire(&es.kid, T0 + 9).await.unwrap();
        let loaded = store.load().await.unwrap();
        let retired = loaded.iter().find(|r| r.kid == es.kid).unwrap();
        assert_eq!(retired.retired_at, Some(T0 + 5));
        assert_eq!(retired.private_pkcs8, es.private_pkcs8);
        let missing = Kid::from("missing");
        assert_eq!(
            store.retire(&missing, T0).await.unwrap_err().kind(),
            "not_found"
        );
        let v = store.version().await.unwrap();

        store.remove(&es.kid).await.unwrap();
        assert_ne!(store.version().await.unwrap(), v);
        let v = store.version().await.unwrap();
        store.remove(&es.kid).await.unwrap();
        assert_eq!(
            store.version().await.unwrap(),
            v,
            "removing an absent key is no change"
        );
        assert_eq!(store.load().await.unwrap(), vec![ed]);

        let bad = Kid::from("a/b");
        let mut record = generate(Algorithm::Es256, T0, T0).unwrap();
        record.kid = bad;
        assert_eq!(store.add(&record).await.unwrap_err().kind(), "invalid_kid");
    }

    #[tokio::test]
    async fn changes_are_published() {
        let server = RedisServer::start().await;
        let pool = pool(&server, 1).await;
        let subscriber = Builder::from_config(Config::from_url(&server.url()).unwrap())
            .build()
            .unwrap();
        subscriber.init().await.unwrap();
        let mut messages = subscriber.message_rx();
        let store = store(&pool);
        subscriber.subscribe(store.channel()).await.unwrap();
        assert_eq!(store.channel(), "t:keyring:changed");

        store
            .add(&generate(Algorithm::EdDsa, T0, T0).unwrap())
            .await
            .unwrap();
        let message = tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&*message.channel, "t:keyring:changed");
        assert_eq!(message.value.as_string().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn lease_is_exclusive_and_released_only_by_its_holder() {
        let server = RedisServer::start().await;
        let pool = pool(&server, 1).await;
        let store = store(&pool);
        let ttl = Duration::from_secs(10);

        assert!(store.try_lease("a", ttl).await.unwrap());
        assert!(!store.try_lease("b", ttl).await.unwrap());
        assert!(!store.try_lease("a", ttl).await.unwrap(), "not re-entrant");
        store.release_lease("b").await.unwrap();
        assert!(
            !store.try_lease("c", ttl).await.unwrap(),
            "b cannot release a's lease"
        );
        let holder: Option<String> = pool.get("t:keyring:lease").await.unwrap();
        assert_eq!(holder.as_deref(), Some("a"));
        let pttl: i64 = pool.pttl("t:keyring:lease").await.unwrap();
        assert!(pttl > 9_000 && pttl <= 10_000, "{pttl}");
        store.release_lease("a").await.unwrap();
        assert!(
            store
                .try_lease("b", Duration::from_millis(50))
                .await
                .unwrap()
        );

        // The lease lapses by itself.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !store.try_lease("c", ttl).await.unwrap() {
            assert!(Instant::now() < deadline, "the lease did not lapse");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn nothing_in_redis_holds_clear_key_material() {
        let server = RedisServer::start().await;
        let pool = pool(&server, 1).await;
        let store = store(&pool);
        let records = [
            generate(Algorithm::Es256, T0, T0).unwrap(),
            generate(Algorithm::EdDsa, T0, T0).unwrap(),
        ];
        for record in &records {
            store.add(record).await.unwrap();
        }
        store.retire(&records[0].kid, T0 + 1).await.unwrap();
        assert!(
            store
                .try_lease("holder", Duration::from_secs(10))
                .await
                .unwrap()
        );

        let keys: Vec<String> = pool
            .custom(
                CustomCommand::new("KEYS", ClusterHash::Random, false),
                vec!["*"],
            )
            .await
            .unwrap();
        let keys: BTreeSet<String> = keys.into_iter().collect();
        let expected: BTreeSet<String> = ["t:keyring", "t:keyring:version", "t:keyring:lease"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(keys, expected);

        // Every byte stored: hash fields and values, and the strings.
        let mut stored: Vec<Vec<u8>> = Vec::new();
        let hash: BTreeMap<String, Bytes> = pool.hgetall("t:keyring").await.unwrap();
        assert_eq!(hash.len(), 2);
        for (field, value) in &hash {
            stored.push(field.as_bytes().to_vec());
            stored.push(value.to_vec());
            let json: serde_json::Value = serde_json::from_slice(value).unwrap();
            let names: BTreeSet<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                names,
                BTreeSet::from([
                    "kid",
                    "alg",
                    "created_at",
                    "activate_at",
                    "retired_at",
                    "sealed_key"
                ])
            );
            assert_eq!(json["kid"], field.as_str());
        }
        for key in ["t:keyring:version", "t:keyring:lease"] {
            let value: Bytes = pool.get(key).await.unwrap();
            stored.push(value.to_vec());
        }

        for record in &records {
            let der = record.private_pkcs8.expose();
            let secret = raw_secret(der);
            let forms = [
                der.to_vec(),
                STANDARD.encode(der).into_bytes(),
                URL_SAFE.encode(der).into_bytes(),
                URL_SAFE_NO_PAD.encode(der).into_bytes(),
                secret.to_vec(),
                STANDARD.encode(secret).into_bytes(),
                URL_SAFE_NO_PAD.encode(secret).into_bytes(),
            ];
            for value in &stored {
                for form in &forms {
                    assert!(
                        !value.windows(form.len()).any(|w| w == form.as_slice()),
                        "key material of {} found in Redis",
                        record.kid
                    );
                }
            }
        }
        assert_eq!(sorted(store.load().await.unwrap()).len(), 2);
    }

    /// The 32 secret bytes inside a PKCS#8 key: the P-256 scalar (the OCTET STRING
    /// after `ECPrivateKey`'s version 1) or the Ed25519 seed (the DER's last 32 bytes).
    fn raw_secret(der: &[u8]) -> &[u8] {
        const EC_SCALAR: [u8; 5] = [0x02, 0x01, 0x01, 0x04, 0x20];
        match der.windows(EC_SCALAR.len()).position(|w| w == EC_SCALAR) {
            Some(at) => &der[at + EC_SCALAR.len()..at + EC_SCALAR.len() + 32],
            None => &der[der.len() - 32..],
        }
    }

    #[tokio::test]
    async fn wrong_kek_and_malformed_records_fail_load() {
        let server = RedisServer::start().await;
        let pool = pool(&server, 1).await;
        let record = generate(Algorithm::Es256, T0, T0).unwrap();
        store(&pool).add(&record).await.unwrap();

        let wrong = RedisKeyStore::new(pool.clone(), NS, kek(2));
        match wrong.load().await.unwrap_err() {
            Error::Unseal { kid } => assert_eq!(kid, record.kid),
            other => panic!("expected Unseal, got {other}"),
        }

        let good: String = pool.hget("t:keyring", record.kid.as_str()).await.unwrap();
        let moved = good.replace(record.kid.as_str(), "other");
        let cases = [
            ("bogus", "not json".to_owned(), "not a key record"),
            ("other", moved.clone(), "unseal"),
            ("other", good.clone(), "differs from the hash field"),
            (
                "x",
                moved
                    .replace("other", "x")
                    .replace("\"ES256\"", "\"RS256\""),
                "unknown signing algorithm",
            ),
            (
                "x",
                moved
                    .replace("other", "x")
                    .replace("sealed_key\":\"", "sealed_key\":\"!"),
                "not base64",
            ),
            (
                "x",
                moved
                    .replace("other", "x")
                    .replace("}", ",\"private_key\":\"AA\"}"),
                "unknown field",
            ),
        ];
        for (field, value, expected) in cases {
            let clean = RedisKeyStore::new(pool.clone(), "case:", kek(1));
            let _: () = pool.del("case:keyring").await.unwrap();
            let _: () = pool
                .hset("case:keyring", (field, value.as_str()))
                .await
                .unwrap();
            let err = clean.load().await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(expected) || err.kind() == expected,
                "{field} {value}: {text}"
            );
            assert!(text.contains(field), "the error names the kid: {text}");
        }
    }

    #[tokio::test]
    async fn a_wrong_kek_is_refused_even_on_an_empty_keyring() {
        let server = RedisServer::start().await;
        let pool = pool(&server, 2).await;
        let first = RedisKeyStore::new(pool.clone(), NS, kek(1));
        assert!(first.load().await.unwrap().is_empty());
        let check: Option<String> = pool.get("t:keyring:kek-check").await.unwrap();
        let check = check.expect("the first load writes the check value");
        assert!(!check.contains("sessiongate keyring"), "sealed: {check}");
        // Same KEK: fine, again and again; another KEK: refused before it can add a key.
        assert!(first.load().await.unwrap().is_empty());
        let other = RedisKeyStore::new(pool.clone(), NS, kek(2));
        let err = other.load().await.unwrap_err();
        assert_eq!(err.kind(), "kek", "{err}");
        assert!(
            err.to_string().contains("different key-encryption key"),
            "{err}"
        );

        // Two KEKs racing on an empty keyring of another namespace: exactly one wins.
        let a = RedisKeyStore::new(pool.clone(), "race:", kek(3));
        let b = RedisKeyStore::new(pool.clone(), "race:", kek(4));
        let (ra, rb) = tokio::join!(a.load(), b.load());
        assert_eq!(
            usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
            1,
            "{ra:?} {rb:?}"
        );
    }

    /// `n` replicas, each with its own connection, store handle, manager and keyring.
    async fn replicas(server: &RedisServer, n: usize) -> Vec<Arc<KeyManager>> {
        let mut out = Vec::new();
        for _ in 0..n {
            let pool = pool(server, 1).await;
            let store = Arc::new(store(&pool));
            let ring = Arc::new(Keyring::default());
            out.push(Arc::new(KeyManager::new(
                store,
                ring,
                RotationPolicy::default(),
            )));
        }
        out
    }

    /// Every replica refreshes at `now` at the same moment; returns the keys created.
    async fn refresh_all(managers: &[Arc<KeyManager>], now: UnixTime) -> Vec<Kid> {
        let barrier = Arc::new(tokio::sync::Barrier::new(managers.len()));
        let mut tasks = tokio::task::JoinSet::new();
        for m in managers {
            let (m, barrier) = (m.clone(), barrier.clone());
            tasks.spawn(async move {
                barrier.wait().await;
                m.refresh(now).await
            });
        }
        let mut created = Vec::new();
        while let Some(result) = tasks.join_next().await {
            created.extend(result.unwrap().unwrap().created);
        }
        created
    }

    fn current(m: &KeyManager) -> Option<Kid> {
        m.keyring().load().current().map(|k| k.kid().clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_replicas_create_exactly_one_key() {
        let server = RedisServer::start().await;
        let admin = pool(&server, 1).await;
        let managers = replicas(&server, 5).await;
        let policy = RotationPolicy::default();
        let due = policy
            .rotate_every
            .saturating_sub(policy.publish_ahead)
            .as_secs();

        for round in 0..5 {
            let _: () = admin.flushall(false).await.unwrap();

            // Bootstrap on an empty store: one key.
            let created = refresh_all(&managers, T0).await;
            assert_eq!(
                created.len(),
                1,
                "round {round}: bootstrap created {created:?}"
            );
            let stored = managers[0].store().load().await.unwrap();
            assert_eq!(stored.len(), 1, "round {round}");
            // Replicas that deferred pick the key up on their next refresh.
            assert!(refresh_all(&managers, T0 + 1).await.is_empty());
            for m in &managers {
                assert_eq!(current(m), Some(created[0].clone()), "round {round}");
            }

            // A rotation due on every replica at once: one successor.
            let created = refresh_all(&managers, T0 + due).await;
            assert_eq!(
                created.len(),
                1,
                "round {round}: rotation created {created:?}"
            );
            assert_eq!(
                managers[0].store().load().await.unwrap().len(),
                2,
                "round {round}"
            );
            assert!(refresh_all(&managers, T0 + due + 1).await.is_empty());
            for m in &managers {
                assert!(m.keyring().load().is_published(created[0].as_str()));
            }
            let lease: Option<String> = admin.get("t:keyring:lease").await.unwrap();
            assert_eq!(lease, None, "round {round}: the lease is released");
        }
    }

    /// A store that stops in `try_lease` until told to go on, to order two replicas.
    struct PausedAtLease {
        inner: RedisKeyStore,
        reached: tokio::sync::Notify,
        go: tokio::sync::Notify,
    }

    #[async_trait]
    impl KeyStore for PausedAtLease {
        async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
            self.inner.load().await
        }
        async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
            self.inner.add(record).await
        }
        async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
            self.inner.retire(kid, now).await
        }
        async fn remove(&self, kid: &Kid) -> Result<(), Error> {
            self.inner.remove(kid).await
        }
        async fn version(&self) -> Result<String, Error> {
            self.inner.version().await
        }
        async fn try_lease(&self, holder: &str, ttl: Duration) -> Result<bool, Error> {
            self.reached.notify_one();
            self.go.notified().await;
            self.inner.try_lease(holder, ttl).await
        }
        async fn release_lease(&self, holder: &str) -> Result<(), Error> {
            self.inner.release_lease(holder).await
        }
    }

    #[tokio::test]
    async fn a_replica_that_planned_before_another_rotated_plans_again() {
        let server = RedisServer::start().await;
        let a = replicas(&server, 1).await.remove(0);
        let paused = Arc::new(PausedAtLease {
            inner: store(&pool(&server, 1).await),
            reached: tokio::sync::Notify::new(),
            go: tokio::sync::Notify::new(),
        });
        let b = Arc::new(KeyManager::new(
            paused.clone(),
            Arc::new(Keyring::default()),
            RotationPolicy::default(),
        ));

        // B loads the empty store and wants to create a key; before it takes the lease,
        // A bootstraps completely. B then holds the lease, reloads, and creates nothing.
        let task = tokio::spawn({
            let b = b.clone();
            async move { b.refresh(T0).await }
        });
        paused.reached.notified().await;
        assert_eq!(a.refresh(T0).await.unwrap().created.len(), 1);
        paused.go.notify_one();
        let out = task.await.unwrap().unwrap();
        assert!(out.created.is_empty() && !out.deferred, "{out:?}");
        assert_eq!(a.store().load().await.unwrap().len(), 1);
        assert_eq!(current(&b), current(&a));
    }

    #[tokio::test]
    async fn manual_rotation_is_refused_while_the_lease_is_held() {
        let server = RedisServer::start().await;
        let managers = replicas(&server, 2).await;
        managers[0].refresh(T0).await.unwrap();
        let store = managers[0].store();
        assert!(
            store
                .try_lease("someone", Duration::from_secs(10))
                .await
                .unwrap()
        );
        let err = managers[1].rotate(T0 + 1, true).await.unwrap_err();
        assert_eq!(err.kind(), "busy");
        assert_eq!(store.load().await.unwrap().len(), 1);
        store.release_lease("someone").await.unwrap();
        let kid = managers[1].rotate(T0 + 1, true).await.unwrap().kid;
        assert_eq!(current(&managers[1]), Some(kid));
    }

    #[tokio::test]
    async fn emergency_retirement_leaves_a_current_key() {
        let server = RedisServer::start().await;
        let managers = replicas(&server, 2).await;
        let (a, b) = (&managers[0], &managers[1]);
        a.refresh(T0).await.unwrap();
        let first = current(a).unwrap();
        let next = a.rotate(T0 + 10, false).await.unwrap().kid;
        b.refresh(T0 + 10).await.unwrap();
        assert_eq!(current(b), Some(first.clone()));

        // Retire the only active key: a replacement signs at once, on both replicas.
        a.retire(&first, T0 + 20).await.unwrap();
        let emergency = current(a).expect("a current key after the retirement");
        assert!(emergency != first && emergency != next);
        b.refresh(T0 + 21).await.unwrap();
        assert_eq!(current(b), Some(emergency));
        for m in [a, b] {
            let set = m.keyring().load_full();
            assert!(!set.is_published(first.as_str()));
            assert!(set.is_published(next.as_str()));
        }
        assert_eq!(a.store().load().await.unwrap().len(), 2);
    }
}
