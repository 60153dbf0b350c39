//! Unit tests of `Exchange` over the in-memory store: outcomes, caching, token reuse.

use std::sync::Arc;
use std::time::Duration;

use keys::{Algorithm, KeySet, Keyring, RotationPolicy};

use crate::session::record::redis_key;
use crate::store::SessionStore;
use crate::store::memory::MemoryStore;
use crate::{
    Audience, Error, Exchange, Freshness, Metrics, Minter, SessionLookup, SessionSettings,
    SessionToken, Source,
};

fn exchange(cache_ttl: Duration) -> (Exchange, Arc<MemoryStore>) {
    keys::install_crypto_provider();
    let now = keys::unix_now();
    let record = keys::generate(Algorithm::Es256, now - 10, now - 10).unwrap();
    let set = KeySet::build(&[record], now, &RotationPolicy::default()).unwrap();
    let metrics = Arc::new(Metrics::unregistered());
    let minter = Minter::new(Arc::new(Keyring::new(set)), "iss", metrics.clone());
    let store = Arc::new(MemoryStore::new());
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
