//! Unit tests of `Exchange` over the in-memory store: outcomes, caching, token reuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use keys::{Algorithm, KeySet, Keyring, RotationPolicy};

use crate::session::record::redis_key;
use crate::store::SessionStore;
use crate::store::memory::MemoryStore;
use crate::{
    Audience, Error, Exchange, Freshness, Metrics, Minter, SessionLookup, SessionSettings,
    SessionToken, Source,
};

fn exchange(cache_ttl: Duration) -> (Exchange, Arc<MemoryStore>) {
    exchange_over(Arc::new(MemoryStore::new()), cache_ttl)
}

/// An exchange over `store`, signing with a fresh ES256 key.
fn exchange_over<S: SessionStore + 'static>(
    store: Arc<S>,
    cache_ttl: Duration,
) -> (Exchange, Arc<S>) {
    keys::install_crypto_provider();
    let now = keys::unix_now();
    let record = keys::generate(Algorithm::Es256, now - 10, now - 10).unwrap();
    let set = KeySet::build(&[record], now, &RotationPolicy::default()).unwrap();
    let metrics = Arc::new(Metrics::unregistered());
    let minter = Minter::new(Arc::new(Keyring::new(set)), "iss", metrics.clone());
    let settings = SessionSettings {
        cache_ttl,
        ..SessionSettings::default()
    };
    (
        Exchange::new(store.clone(), settings, minter, metrics),
        store,
    )
}

fn token(n: u8) -> SessionToken {
    SessionToken::parse(&format!("session-token-number-{n:03}")).unwrap()
}

async fn put(store: &MemoryStore, t: &SessionToken, json: &str) {
    let key = redis_key("sg:session:", t, true);
    store
        .put(&key, json.as_bytes(), Duration::from_secs(60))
        .await
        .unwrap();
}

async fn del(store: &MemoryStore, t: &SessionToken) {
    store
        .delete(&redis_key("sg:session:", t, true))
        .await
        .unwrap();
}

#[tokio::test]
async fn outcomes() {
    let (ex, store) = exchange(Duration::from_secs(5));
    let (valid, expired, corrupt, missing) = (token(1), token(2), token(3), token(4));
    put(&store, &valid, r#"{"sub":"u"}"#).await;
    put(&store, &expired, r#"{"sub":"u","exp":1}"#).await;
    put(&store, &corrupt, r#"["not","an","object"]"#).await;
    for freshness in [Freshness::Cached, Freshness::Live] {
        assert!(matches!(
            ex.lookup(&valid, freshness).await.unwrap().lookup,
            SessionLookup::Valid(_)
        ));
        assert!(matches!(
            ex.lookup(&expired, freshness).await.unwrap().lookup,
            SessionLookup::Expired
        ));
        assert!(matches!(
            ex.lookup(&missing, freshness).await.unwrap().lookup,
            SessionLookup::Missing
        ));
        assert!(matches!(
            ex.lookup(&corrupt, freshness).await,
            Err(Error::Corrupt { .. })
        ));
    }
}

#[tokio::test]
async fn cached_lookups_trust_the_cache_and_live_ones_do_not() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = token(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    let first = ex.lookup(&t, Freshness::Cached).await.unwrap();
    assert_eq!(first.source, Source::Redis);
    del(&store, &t).await;
    // Within cache_ttl a non-critical lookup may still trust the cached session...
    let cached = ex.lookup(&t, Freshness::Cached).await.unwrap();
    assert_eq!(cached.source, Source::Cache);
    assert!(matches!(cached.lookup, SessionLookup::Valid(_)));
    // ...but a critical lookup goes to the store, sees the deletion as a revocation,
    let live = ex.lookup(&t, Freshness::Live).await.unwrap();
    assert!(matches!(live.lookup, SessionLookup::Revoked));
    // and the cache no longer trusts the session either.
    let after = ex.lookup(&t, Freshness::Cached).await.unwrap();
    assert!(!matches!(after.lookup, SessionLookup::Valid(_)));
}

#[tokio::test]
async fn disabled_cache_always_asks_the_store() {
    let (ex, store) = exchange(Duration::ZERO);
    let t = token(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    assert_eq!(
        ex.lookup(&t, Freshness::Cached).await.unwrap().source,
        Source::Redis
    );
    del(&store, &t).await;
    assert!(matches!(
        ex.lookup(&t, Freshness::Cached).await.unwrap().lookup,
        SessionLookup::Missing
    ));
}

#[tokio::test]
async fn tokens_are_reused_on_cached_routes_and_fresh_on_live_ones() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = token(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    let aud = Audience::new("orders");
    let ttl = Duration::from_secs(300);
    let r1 = ex.lookup(&t, Freshness::Cached).await.unwrap();
    let a = ex.token(&r1, &aud, ttl).unwrap();
    let r2 = ex.lookup(&t, Freshness::Cached).await.unwrap();
    let b = ex.token(&r2, &aud, ttl).unwrap();
    assert_eq!(
        a.jwt(),
        b.jwt(),
        "same session and audience reuse the token"
    );
    let other = ex.token(&r2, &Audience::new("billing"), ttl).unwrap();
    assert_ne!(a.jwt(), other.jwt());
    let live = ex.lookup(&t, Freshness::Live).await.unwrap();
    let c = ex.token(&live, &aud, ttl).unwrap();
    let d = ex.token(&live, &aud, ttl).unwrap();
    assert_ne!(c.jwt(), a.jwt());
    assert_ne!(c.jwt(), d.jwt(), "critical routes always get a fresh token");
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(c.jwt())
        .unwrap()
        .claims;
    assert!(claims["chk"].as_u64().is_some());
}

#[tokio::test]
async fn revocation_drops_cached_tokens() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = token(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    let aud = Audience::new("orders");
    let ttl = Duration::from_secs(300);
    let r = ex.lookup(&t, Freshness::Cached).await.unwrap();
    let before = ex.token(&r, &aud, ttl).unwrap();
    // Invalidation (what a push or a live lookup does) takes the tokens with it.
    ex.cache().invalidate(t.digest());
    put(&store, &t, r#"{"sub":"u"}"#).await;
    let r = ex.lookup(&t, Freshness::Cached).await.unwrap();
    let after = ex.token(&r, &aud, ttl).unwrap();
    assert_ne!(before.jwt(), after.jwt());
}

/// A memory store that can be made unreachable.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    down: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), Error> {
        if self.down.load(Ordering::Relaxed) {
            Err(Error::Store {
                op: "GET",
                message: "down".into(),
                timeout: false,
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for FlakyStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Option<Duration>)>, Error> {
        self.check()?;
        self.inner.get_with_ttl(key).await
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        self.inner.put(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.inner.delete(key).await
    }
    async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), Error> {
        self.inner.index_add(index, member, ttl).await
    }
    async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        self.inner.index_members(index).await
    }
    async fn index_remove(&self, index: &str, members: &[String]) -> Result<(), Error> {
        self.inner.index_remove(index, members).await
    }
    async fn ping(&self) -> Result<(), Error> {
        self.check()
    }
}

fn flaky_exchange(cache_ttl: Duration) -> (Exchange, Arc<FlakyStore>) {
    exchange_over(Arc::new(FlakyStore::default()), cache_ttl)
}

#[tokio::test]
async fn while_push_is_down_lookups_read_the_store_and_fall_back_only_on_an_outage() {
    let (ex, store) = flaky_exchange(Duration::from_secs(60));
    let (kept, deleted) = (token(1), token(2));
    for t in [&kept, &deleted] {
        put(&store.inner, t, r#"{"sub":"u"}"#).await;
        assert_eq!(
            ex.lookup(t, Freshness::Cached).await.unwrap().source,
            Source::Redis
        );
        assert_eq!(
            ex.lookup(t, Freshness::Cached).await.unwrap().source,
            Source::Cache
        );
    }
    // The push channel attaches (or drops): nothing is answered from memory any more.
    ex.cache().suspend();
    del(&store.inner, &deleted).await;
    let r = ex.lookup(&deleted, Freshness::Cached).await.unwrap();
    assert_eq!(r.source, Source::Redis);
    assert!(
        matches!(r.lookup, SessionLookup::Revoked),
        "no invalidation was needed"
    );
    let r = ex.lookup(&kept, Freshness::Cached).await.unwrap();
    assert_eq!(r.source, Source::Redis);
    // Redis becomes unreachable: the cached session (younger than cache_ttl) answers.
    store.down.store(true, Ordering::Relaxed);
    let r = ex.lookup(&kept, Freshness::Cached).await.unwrap();
    assert_eq!(r.source, Source::Cache);
    assert!(matches!(r.lookup, SessionLookup::Valid(_)));
    assert!(
        ex.lookup(&kept, Freshness::Live).await.is_err(),
        "critical: 503"
    );
    assert!(
        ex.lookup(&token(3), Freshness::Cached).await.is_err(),
        "nothing cached"
    );
    // The channel vouches again: plain cache hits.
    store.down.store(false, Ordering::Relaxed);
    ex.cache()
        .confirm_until(Instant::now() + Duration::from_secs(5));
    assert_eq!(
        ex.lookup(&kept, Freshness::Cached).await.unwrap().source,
        Source::Cache
    );
}

#[tokio::test]
async fn an_outage_never_serves_a_session_older_than_cache_ttl() {
    let (ex, store) = flaky_exchange(Duration::from_millis(200));
    let t = token(1);
    put(&store.inner, &t, r#"{"sub":"u"}"#).await;
    ex.lookup(&t, Freshness::Cached).await.unwrap();
    ex.cache().suspend();
    store.down.store(true, Ordering::Relaxed);
    assert!(ex.lookup(&t, Freshness::Cached).await.is_ok());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(matches!(
        ex.lookup(&t, Freshness::Cached).await,
        Err(Error::Store { .. })
    ));
}

#[tokio::test]
async fn a_cached_session_is_not_trusted_past_its_key_ttl() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = token(1);
    let key = redis_key("sg:session:", &t, true);
    store
        .put(&key, br#"{"sub":"u"}"#, Duration::from_millis(150))
        .await
        .unwrap();
    assert!(matches!(
        ex.lookup(&t, Freshness::Cached).await.unwrap().lookup,
        SessionLookup::Valid(_)
    ));
    assert_eq!(
        ex.lookup(&t, Freshness::Cached).await.unwrap().source,
        Source::Cache
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No invalidation came (the memory store has none): the key's TTL alone ends it.
    let r = ex.lookup(&t, Freshness::Cached).await.unwrap();
    assert_eq!(r.source, Source::Redis);
    assert!(!matches!(r.lookup, SessionLookup::Valid(_)));
}

#[tokio::test]
async fn a_new_key_prefix_retires_the_push_channel_until_restart() {
    let (ex, store) = exchange(Duration::from_secs(60));
    ex.cache().suspend();
    ex.cache()
        .confirm_until(Instant::now() + Duration::from_secs(60));
    let settings = SessionSettings {
        key_prefix: "other:".into(),
        ..(*ex.settings()).clone()
    };
    let not_applied = ex.reconfigure(settings);
    assert!(
        not_applied.iter().any(|n| n.contains("push invalidation")),
        "{not_applied:?}"
    );
    let t = token(1);
    let key = redis_key("other:", &t, true);
    store
        .put(&key, br#"{"sub":"u"}"#, Duration::from_secs(60))
        .await
        .unwrap();
    ex.cache()
        .confirm_until(Instant::now() + Duration::from_secs(60));
    // The channel tracks the old prefix: nothing is answered from memory any more.
    for _ in 0..2 {
        assert_eq!(
            ex.lookup(&t, Freshness::Cached).await.unwrap().source,
            Source::Redis
        );
    }
}
