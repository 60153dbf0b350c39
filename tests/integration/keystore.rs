//! `keys::RedisKeyStore` against a real `redis-server` (the harness's
//! [`RedisServer`]), through the `keys` crate's public API: the stored schema and its
//! version counter, change notifications, the rotation lease, sealed key material, KEK
//! checks, and several `KeyManager` replicas sharing one store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface,
};
use fred::prelude::{Builder, Config, Pool};
use fred::types::{ClusterHash, CustomCommand};
use keys::seal::Kek;
use keys::{
    Algorithm, Error, KeyManager, KeyRecord, KeyStore, Keyring, Kid, RedisKeyStore, RotationPolicy,
    UnixTime, generate,
};

use crate::harness::RedisServer;
use crate::harness::keyring::assert_record_fields;

const NS: &str = "t:";
const T0: UnixTime = 1_000_000;

// === helpers ===

async fn pool(server: &RedisServer, size: usize) -> Pool {
    let config = Config::from_url(&server.url()).expect("a Redis URL");
    let pool = Builder::from_config(config)
        .build_pool(size)
        .expect("a pool");
    pool.init().await.expect("connected");
    pool
}

fn kek(byte: u8) -> Kek {
    Kek::from_bytes(&[byte; 32]).expect("32 bytes")
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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
        assert_record_fields(&json);
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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
        created.extend(result.expect("task").expect("refresh").created);
    }
    created
}

fn current(m: &KeyManager) -> Option<Kid> {
    m.keyring().load().current().map(|k| k.kid().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replicas_create_exactly_one_key() {
    let server = RedisServer::start();
    let admin = pool(&server, 1).await;
    let policy = RotationPolicy::default();
    // The successor is created a second before rotate_every - publish_ahead (its
    // activation rounds up to the next whole second).
    let due = policy
        .rotate_every
        .saturating_sub(policy.publish_ahead)
        .as_secs()
        - 1;

    for round in 0..5 {
        let _: () = admin.flushall(false).await.unwrap();
        // New replicas each round: ones that remembered the last round's keys would
        // restore them after the flush instead of bootstrapping (KeyManager docs).
        let managers = replicas(&server, 5).await;

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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
    let server = RedisServer::start();
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
