//! Unit tests of `Exchange` over the in-memory store: outcomes, caching, token reuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use keys::{Algorithm, KeySet, Keyring, RotationPolicy};

use crate::store::SessionStore;
use crate::store::memory::MemoryStore;
use crate::{
    Audience, Error, Exchange, Freshness, Metrics, Minter, SessionLookup, SessionSettings, Source,
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
    let mut settings = SessionSettings::default();
    settings.cache.ttl = cache_ttl;
    (
        Exchange::new(store.clone(), settings, minter, metrics),
        store,
    )
}

fn cookie(n: u8) -> String {
    format!("session-token-number-{n:03}")
}

fn key(prefix: &str, cookie: &str) -> String {
    use sha2::Digest as _;
    let mut key = String::from(prefix);
    crate::format::push_hex(&mut key, &sha2::Sha256::digest(cookie.as_bytes()));
    key
}

async fn put(store: &MemoryStore, cookie: &str, json: &str) {
    put_for(store, cookie, json, Duration::from_secs(60)).await;
}

/// Stores the session of `cookie` with a key TTL of `ttl`.
async fn put_for(store: &MemoryStore, cookie: &str, json: &str, ttl: Duration) {
    store
        .put(&key("sg:session:", cookie), json.as_bytes(), ttl)
        .await
        .unwrap();
}

async fn del(store: &MemoryStore, cookie: &str) {
    store.delete(&key("sg:session:", cookie)).await.unwrap();
}

/// Where a valid lookup was answered from.
#[track_caller]
fn source(lookup: &SessionLookup) -> Source {
    match lookup {
        SessionLookup::Valid(v) => v.source(),
        other => panic!("not valid: {other:?}"),
    }
}

#[tokio::test]
async fn outcomes() {
    let (ex, store) = exchange(Duration::from_secs(5));
    let (valid, expired, corrupt, missing, anonymous, int) = (
        cookie(1),
        cookie(2),
        cookie(3),
        cookie(4),
        cookie(5),
        cookie(6),
    );
    put(&store, &valid, r#"{"sub":"u"}"#).await;
    put(&store, &expired, r#"{"sub":"u","exp":1}"#).await;
    put(&store, &corrupt, r#"["not","an","object"]"#).await;
    put(&store, &anonymous, r#"{"views":1}"#).await;
    put(&store, &int, r#"{"sub":42}"#).await;
    for freshness in [Freshness::Cached, Freshness::Live] {
        for (c, label) in [
            (valid.as_str(), "valid"),
            (&expired, "expired"),
            (&missing, "missing"),
            (&corrupt, "malformed"),
            (&anonymous, "anonymous"),
            ("short", "malformed"),
        ] {
            assert_eq!(
                ex.lookup(c, freshness).await.label(),
                label,
                "{freshness:?}"
            );
        }
        let SessionLookup::Valid(v) = ex.lookup(&int, freshness).await else {
            panic!("integer subjects are subjects")
        };
        assert_eq!(v.session().subject(), "42");
    }
    let m = ex.metrics();
    let count =
        |source: &str, result: &str| m.session_lookups.with_label_values(&[source, result]).get();
    assert_eq!(count("cookie", "malformed"), 2);
    assert_eq!(count("redis", "malformed"), 2, "once cached, once live");
    assert_eq!(
        count("cache", "malformed"),
        0,
        "the negative entry answers cached lookups once"
    );
}

#[tokio::test]
async fn cached_lookups_trust_the_cache_and_live_ones_do_not() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = cookie(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    assert_eq!(
        source(&ex.lookup(&t, Freshness::Cached).await),
        Source::Redis
    );
    del(&store, &t).await;
    // Within cache_ttl a non-critical lookup may still trust the cached session...
    assert_eq!(
        source(&ex.lookup(&t, Freshness::Cached).await),
        Source::Cache
    );
    // ...but a critical lookup goes to the store, sees the deletion as a revocation,
    assert!(matches!(
        ex.lookup(&t, Freshness::Live).await,
        SessionLookup::Revoked
    ));
    // and the cache no longer trusts the session either.
    let after = ex.lookup(&t, Freshness::Cached).await;
    assert!(!matches!(after, SessionLookup::Valid(_)));
}

#[tokio::test]
async fn disabled_cache_always_asks_the_store() {
    let (ex, store) = exchange(Duration::ZERO);
    let t = cookie(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    assert_eq!(
        source(&ex.lookup(&t, Freshness::Cached).await),
        Source::Redis
    );
    del(&store, &t).await;
    assert!(matches!(
        ex.lookup(&t, Freshness::Cached).await,
        SessionLookup::Missing
    ));
}

#[tokio::test]
async fn tokens_are_reused_on_cached_routes_and_fresh_on_live_ones() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = cookie(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    let aud = Audience::new("orders");
    let ttl = Duration::from_secs(300);
    let valid = |l: SessionLookup| match l {
        SessionLookup::Valid(v) => v,
        other => panic!("{other:?}"),
    };
    let r1 = valid(ex.lookup(&t, Freshness::Cached).await);
    let a = ex.token(&r1, &aud, ttl).unwrap();
    let r2 = valid(ex.lookup(&t, Freshness::Cached).await);
    let b = ex.token(&r2, &aud, ttl).unwrap();
    assert_eq!(
        a.jwt(),
        b.jwt(),
        "same session and audience reuse the token"
    );
    let other = ex.token(&r2, &Audience::new("billing"), ttl).unwrap();
    assert_ne!(a.jwt(), other.jwt());
    let live = valid(ex.lookup(&t, Freshness::Live).await);
    let c = ex.token(&live, &aud, ttl).unwrap();
    let d = ex.token(&live, &aud, ttl).unwrap();
    assert_ne!(c.jwt(), a.jwt());
    assert_ne!(c.jwt(), d.jwt(), "critical routes always get a fresh token");
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(c.jwt())
        .unwrap()
        .claims;
    assert!(claims["chk"].as_u64().is_some());
    assert_eq!(claims["sid"], live.session().sid().as_str());
}

/// A session read again once its cache entry is no longer trusted keeps its tokens
/// while the store holds the same session; a changed session gets a new one.
#[tokio::test]
async fn tokens_outlive_a_refresh_of_an_unchanged_session() {
    let ttl = Duration::from_millis(20);
    let (ex, store) = exchange(ttl);
    let t = cookie(1);
    put(&store, &t, r#"{"sub":"u","roles":["a"]}"#).await;
    let (aud, token_ttl) = (Audience::new("orders"), Duration::from_secs(300));
    let read = async || match ex.lookup(&t, Freshness::Cached).await {
        SessionLookup::Valid(v) => v,
        other => panic!("{other:?}"),
    };
    let first = ex.token(&read().await, &aud, token_ttl).unwrap();
    tokio::time::sleep(ttl * 2).await;
    let refreshed = read().await;
    assert_eq!(
        refreshed.source(),
        Source::Redis,
        "the entry was read again"
    );
    assert_eq!(
        ex.token(&refreshed, &aud, token_ttl).unwrap().jwt(),
        first.jwt()
    );
    // A critical read of the same session does not take the token away either.
    let SessionLookup::Valid(_) = ex.lookup(&t, Freshness::Live).await else {
        panic!("live lookup")
    };
    assert_eq!(
        ex.token(&read().await, &aud, token_ttl).unwrap().jwt(),
        first.jwt()
    );

    put(&store, &t, r#"{"sub":"u","roles":["a","b"]}"#).await;
    tokio::time::sleep(ttl * 2).await;
    let changed = ex.token(&read().await, &aud, token_ttl).unwrap();
    assert_ne!(
        changed.jwt(),
        first.jwt(),
        "a changed session is signed again"
    );
}

#[tokio::test]
async fn revocation_drops_cached_tokens() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = cookie(1);
    put(&store, &t, r#"{"sub":"u"}"#).await;
    let aud = Audience::new("orders");
    let ttl = Duration::from_secs(300);
    let SessionLookup::Valid(r) = ex.lookup(&t, Freshness::Cached).await else {
        panic!()
    };
    let before = ex.token(&r, &aud, ttl).unwrap();
    // Invalidation (what a push or a live lookup does) takes the tokens with it.
    ex.cache().invalidate(r.digest());
    put(&store, &t, r#"{"sub":"u"}"#).await;
    let SessionLookup::Valid(r) = ex.lookup(&t, Freshness::Cached).await else {
        panic!()
    };
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
    let (kept, deleted) = (cookie(1), cookie(2));
    for t in [&kept, &deleted] {
        put(&store.inner, t, r#"{"sub":"u"}"#).await;
        assert_eq!(
            source(&ex.lookup(t, Freshness::Cached).await),
            Source::Redis
        );
        assert_eq!(
            source(&ex.lookup(t, Freshness::Cached).await),
            Source::Cache
        );
    }
    // The push channel attaches (or drops): nothing is answered from memory any more.
    ex.cache().suspend();
    del(&store.inner, &deleted).await;
    assert!(
        matches!(
            ex.lookup(&deleted, Freshness::Cached).await,
            SessionLookup::Revoked
        ),
        "no invalidation was needed"
    );
    assert_eq!(
        source(&ex.lookup(&kept, Freshness::Cached).await),
        Source::Redis
    );
    // Redis becomes unreachable: the cached session (younger than cache_ttl) answers.
    store.down.store(true, Ordering::Relaxed);
    assert_eq!(
        source(&ex.lookup(&kept, Freshness::Cached).await),
        Source::Cache
    );
    assert!(
        matches!(
            ex.lookup(&kept, Freshness::Live).await,
            SessionLookup::Unavailable(_)
        ),
        "critical: 503"
    );
    assert!(
        matches!(
            ex.lookup(&cookie(3), Freshness::Cached).await,
            SessionLookup::Unavailable(_)
        ),
        "nothing cached"
    );
    // The channel vouches again: plain cache hits.
    store.down.store(false, Ordering::Relaxed);
    ex.cache()
        .confirm_until(Instant::now() + Duration::from_secs(5));
    assert_eq!(
        source(&ex.lookup(&kept, Freshness::Cached).await),
        Source::Cache
    );
}

#[tokio::test]
async fn an_outage_never_serves_a_session_older_than_cache_ttl() {
    let (ex, store) = flaky_exchange(Duration::from_millis(200));
    let t = cookie(1);
    put(&store.inner, &t, r#"{"sub":"u"}"#).await;
    assert!(matches!(
        ex.lookup(&t, Freshness::Cached).await,
        SessionLookup::Valid(_)
    ));
    ex.cache().suspend();
    store.down.store(true, Ordering::Relaxed);
    assert!(matches!(
        ex.lookup(&t, Freshness::Cached).await,
        SessionLookup::Valid(_)
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(matches!(
        ex.lookup(&t, Freshness::Cached).await,
        SessionLookup::Unavailable(Error::Store { .. })
    ));
}

#[tokio::test]
async fn a_cached_session_is_not_trusted_past_its_key_ttl() {
    let (ex, store) = exchange(Duration::from_secs(60));
    let t = cookie(1);
    put_for(&store, &t, r#"{"sub":"u"}"#, Duration::from_millis(150)).await;
    assert_eq!(
        source(&ex.lookup(&t, Freshness::Cached).await),
        Source::Redis
    );
    assert_eq!(
        source(&ex.lookup(&t, Freshness::Cached).await),
        Source::Cache
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No invalidation came (the memory store has none): the key's TTL alone ends it.
    assert!(!matches!(
        ex.lookup(&t, Freshness::Cached).await,
        SessionLookup::Valid(_)
    ));
}

#[tokio::test]
async fn a_new_key_prefix_retires_the_push_channel_until_restart() {
    let (ex, store) = exchange(Duration::from_secs(60));
    ex.cache().suspend();
    ex.cache()
        .confirm_until(Instant::now() + Duration::from_secs(60));
    let settings = SessionSettings {
        key_prefix: "other:".into(),
        ..ex.settings()
    };
    let not_applied = ex.reconfigure(settings);
    assert!(
        not_applied.iter().any(|n| n.contains("push invalidation")),
        "{not_applied:?}"
    );
    let t = cookie(1);
    store
        .put(
            &key("other:", &t),
            br#"{"sub":"u"}"#,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    ex.cache()
        .confirm_until(Instant::now() + Duration::from_secs(60));
    // The channel tracks the old prefix: nothing is answered from memory any more.
    for _ in 0..2 {
        assert_eq!(
            source(&ex.lookup(&t, Freshness::Cached).await),
            Source::Redis
        );
    }
}

#[tokio::test]
async fn express_sessions_read_by_pointer_with_signed_cookies() {
    use crate::format::{Claim, Field, FormatSettings, Secret};
    let (ex, store) = exchange(Duration::from_secs(60));
    let mut settings = ex.settings();
    settings.format = FormatSettings::Express {
        secrets: vec![Secret::new("new"), Secret::new("old")],
    };
    settings.key_prefix = "sess:".into();
    settings.fields.subject = Field::parse("/passport/user").unwrap();
    settings.fields.claims = vec![Claim {
        name: "uid".into(),
        field: Field::parse("/passport/user").unwrap(),
    }];
    ex.reconfigure(settings);
    let sign = |sid: &str, secret: &str| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, sid.as_bytes());
        use base64::Engine as _;
        format!(
            "s%3A{sid}.{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(tag.as_ref())
        )
    };
    let value = br#"{"cookie":{"expires":"2000-01-01T00:00:00.000Z"},"passport":{"user":17}}"#;
    store
        .put("sess:abc", value, Duration::from_secs(60))
        .await
        .unwrap();
    store
        .put("sess:anon", br#"{"cookie":{}}"#, Duration::from_secs(60))
        .await
        .unwrap();
    for secret in ["new", "old"] {
        let SessionLookup::Valid(v) = ex.lookup(&sign("abc", secret), Freshness::Live).await else {
            panic!("{secret}")
        };
        assert_eq!(
            v.session().subject(),
            "17",
            "a stale cookie.expires does not matter"
        );
        assert_eq!(v.session().claims_json(), r#","uid":17"#);
    }
    assert!(matches!(
        ex.lookup(&sign("abc", "foreign"), Freshness::Cached).await,
        SessionLookup::Malformed(crate::Malformed::Signature)
    ));
    assert!(matches!(
        ex.lookup("abc", Freshness::Cached).await,
        SessionLookup::Malformed(_)
    ));
    assert!(matches!(
        ex.lookup(&sign("anon", "new"), Freshness::Cached).await,
        SessionLookup::Anonymous
    ));
    assert!(matches!(
        ex.lookup(&sign("gone", "new"), Freshness::Cached).await,
        SessionLookup::Missing
    ));
}

mod watches {
    use super::*;
    use crate::watch::{Bounds, Ended};

    const BOUNDS: Bounds = Bounds {
        unavailable_for: Duration::from_millis(300),
        recheck_every: Duration::from_millis(100),
    };

    fn digest(cookie: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(cookie.as_bytes()).into()
    }

    /// Spawns a watch of `cookie` and returns it with the time it started.
    fn spawn(ex: &Arc<Exchange>, cookie: &str) -> tokio::task::JoinHandle<(Ended, Duration)> {
        let (ex, cookie) = (ex.clone(), cookie.to_owned());
        tokio::spawn(async move {
            let started = Instant::now();
            let ended = ex.watch(&cookie, BOUNDS).await;
            (ended, started.elapsed())
        })
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    #[tokio::test]
    async fn an_invalidation_ends_a_deleted_session_at_once_and_not_a_touched_one() {
        let (ex, store) = exchange(Duration::from_secs(60));
        let ex = Arc::new(ex);
        let (a, b) = (cookie(1), cookie(2));
        put(&store, &a, r#"{"sub":"u"}"#).await;
        put(&store, &b, r#"{"sub":"v"}"#).await;
        ex.cache()
            .confirm_until(Instant::now() + Duration::from_secs(60));
        let wa = spawn(&ex, &a);
        let wb = spawn(&ex, &b);
        settle().await;
        assert_eq!(ex.watches(), 2);
        // A framework's touch rewrites the key: the watch re-checks and carries on.
        put(&store, &a, r#"{"sub":"u","views":2}"#).await;
        ex.cache().invalidate(&digest(&a));
        settle().await;
        assert!(!wa.is_finished());
        // A DEL and its invalidation: the watch ends, the other session's does not.
        del(&store, &a).await;
        let at = Instant::now();
        ex.cache().invalidate(&digest(&a));
        let (ended, _) = wa.await.unwrap();
        assert_eq!(ended, Ended::Revoked);
        assert!(
            at.elapsed() < Duration::from_millis(50),
            "{:?}",
            at.elapsed()
        );
        settle().await;
        assert!(!wb.is_finished());
        assert_eq!(ex.watches(), 1);
        wb.abort();
        settle().await;
        assert_eq!(ex.watches(), 0, "a dropped watch deregisters");
    }

    #[tokio::test]
    async fn a_key_or_session_expiring_ends_it_without_any_invalidation() {
        let (ex, store) = exchange(Duration::from_secs(60));
        let ex = Arc::new(ex);
        ex.cache()
            .confirm_until(Instant::now() + Duration::from_secs(60));
        let (short_key, short_exp) = (cookie(1), cookie(2));
        put_for(
            &store,
            &short_key,
            r#"{"sub":"u"}"#,
            Duration::from_millis(300),
        )
        .await;
        let exp = crate::unix_now() + 1;
        put(&store, &short_exp, &format!(r#"{{"sub":"u","exp":{exp}}}"#)).await;
        let (ended, after) = spawn(&ex, &short_key).await.unwrap();
        assert_eq!(ended, Ended::Expired);
        assert!(
            after >= Duration::from_millis(250) && after < Duration::from_secs(2),
            "{after:?}"
        );
        let (ended, after) = spawn(&ex, &short_exp).await.unwrap();
        assert_eq!(ended, Ended::Expired);
        assert!(after < Duration::from_millis(2100), "{after:?}");
    }

    #[tokio::test]
    async fn while_the_push_channel_is_down_watches_poll() {
        let (ex, store) = exchange(Duration::from_secs(60));
        let ex = Arc::new(ex);
        let t = cookie(1);
        put(&store, &t, r#"{"sub":"u"}"#).await;
        ex.cache().suspend();
        let w = spawn(&ex, &t);
        settle().await;
        // Deleted, and no invalidation comes.
        del(&store, &t).await;
        let at = Instant::now();
        let (ended, _) = w.await.unwrap();
        assert_eq!(ended, Ended::Revoked);
        assert!(
            at.elapsed() <= BOUNDS.recheck_every + Duration::from_millis(60),
            "{:?}",
            at.elapsed()
        );
    }

    #[tokio::test]
    async fn redis_failing_past_the_bound_ends_it() {
        let (ex, store) = flaky_exchange(Duration::from_secs(60));
        let ex = Arc::new(ex);
        let t = cookie(1);
        put(&store.inner, &t, r#"{"sub":"u"}"#).await;
        ex.cache().suspend();
        let w = spawn(&ex, &t);
        settle().await;
        store.down.store(true, Ordering::Relaxed);
        let at = Instant::now();
        let (ended, _) = w.await.unwrap();
        assert_eq!(ended, Ended::Unavailable);
        let waited = at.elapsed();
        assert!(waited >= BOUNDS.unavailable_for, "{waited:?}");
        assert!(
            waited < BOUNDS.unavailable_for + BOUNDS.recheck_every + Duration::from_millis(150),
            "{waited:?}"
        );
        // A cookie that names no session of the format ends at once.
        assert_eq!(ex.watch("short", BOUNDS).await, Ended::Revoked);
    }
}
