//! Criterion benches of the hot path, each paired with its baseline in the same run.
//!
//! - `cookie`: cookie lookup + validation + SHA-256 (vs. the SHA-256 alone).
//! - `route`: path normalization + route match (vs. normalization alone).
//! - `session_decode`: decoding a stored session (vs. `serde_json::Value` parsing).
//! - `mint/{ES256,EdDSA}`: our mint vs. `jsonwebtoken::encode` vs. the raw signature of
//!   the same signing input (the 1.2x target of docs/performance.md).
//! - `cache_hit`: a cached lookup plus token reuse through `Exchange`.
//!
//! Run: `cargo bench -p gateway --bench hot` (add `-- --quick` for a fast pass).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use exchange::session::record;
use exchange::store::SessionStore;
use exchange::store::memory::MemoryStore;
use exchange::{Audience, Exchange, Freshness, Metrics, Minter, SessionSettings, SessionToken};
use gateway::config::Config;
use gateway::path::normalize;
use gateway::route::RouteTable;
use keys::{Algorithm, KeySet, Keyring, RotationPolicy};

const COOKIE: &str = "ZmFrZS1zZXNzaW9uLWNvb2tpZS12YWx1ZS0wMTIzNDU2Nzg5YWJj";
const SESSION: &[u8] = br#"{"sub":"user-42","exp":4102444800,"roles":["admin","ops"],"email":"a@example.com","name":"Ada"}"#;

fn keyring(alg: Algorithm) -> (Arc<Keyring>, keys::KeyRecord) {
    let now = keys::unix_now();
    let record = keys::generate(alg, now - 10, now - 10).expect("key");
    let policy = RotationPolicy {
        algorithm: alg,
        ..RotationPolicy::default()
    };
    let set = KeySet::build(std::slice::from_ref(&record), now, &policy).expect("set");
    (Arc::new(Keyring::new(set)), record)
}

fn bench_cookie(c: &mut Criterion) {
    let header = format!("theme=dark; _ga=GA1.2.3; __Host-session={COOKIE}; lang=en");
    let mut g = c.benchmark_group("cookie");
    g.bench_function("find+parse+sha256", |b| {
        b.iter(|| {
            let raw = exchange::cookie::find_cookie(black_box(&header), "__Host-session")
                .expect("cookie");
            SessionToken::parse(raw).expect("valid")
        })
    });
    g.bench_function("baseline/sha256", |b| {
        use sha2::Digest as _;
        b.iter(|| sha2::Sha256::digest(black_box(COOKIE.as_bytes())))
    });
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let mut toml = String::from("[keys]\nstore = \"file\"\ndir = \"/tmp\"\n");
    for (i, prefix) in [
        "/api/orders",
        "/api/users",
        "/api/payments",
        "/static",
        "/api",
        "/",
    ]
    .iter()
    .enumerate()
    {
        toml.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\npath_prefix = \"{prefix}\"\nupstreams = [\"127.0.0.1:{}\"]\n",
            9000 + i
        ));
    }
    let config = Config::parse(&toml).expect("config");
    let registry = prometheus::Registry::new();
    let metrics = gateway::metrics::Metrics::register(&registry).expect("metrics");
    let table = RouteTable::build(&config.routes, &metrics).expect("routes");
    let raw = "/api/orders/12345/items/../items/7";
    let mut g = c.benchmark_group("route");
    g.bench_function("normalize+match", |b| {
        b.iter(|| {
            let p = normalize(black_box(raw)).expect("normal");
            table.find(Some("gw.example"), &p).map(|r| r.name.len())
        })
    });
    g.bench_function("baseline/normalize", |b| {
        b.iter(|| normalize(black_box(raw)).expect("normal"))
    });
    g.finish();
}

fn bench_session_decode(c: &mut Criterion) {
    let token = SessionToken::parse(COOKIE).expect("token");
    let settings = SessionSettings::default();
    let mut g = c.benchmark_group("session_decode");
    g.bench_function("record::decode", |b| {
        b.iter(|| record::decode(black_box(SESSION), &token, &settings).expect("decode"))
    });
    g.bench_function("baseline/serde_json::Value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(SESSION)).expect("json"))
    });
    g.finish();
}

fn bench_mint(c: &mut Criterion) {
    keys::install_crypto_provider();
    let token = SessionToken::parse(COOKIE).expect("token");
    let session = record::decode(SESSION, &token, &SessionSettings::default()).expect("decode");
    let audience = Audience::new("orders");
    for alg in [Algorithm::Es256, Algorithm::EdDsa] {
        let (keyring, rec) = keyring(alg);
        let minter = Minter::new(
            keyring.clone(),
            "https://gateway.internal",
            Arc::new(Metrics::unregistered()),
        );
        let now = keys::unix_now();
        let claims = minter.claims_json(&session, &audience, now, now + 300, None);
        let set = keyring.load_full();
        let key = set.current().expect("current").clone();
        let input = format!(
            "{}.{}",
            key.header_segment(),
            "x".repeat(claims.len() * 4 / 3)
        );
        let encoding = match alg {
            Algorithm::Es256 => jsonwebtoken::EncodingKey::from_ec_der(rec.private_pkcs8.expose()),
            Algorithm::EdDsa => jsonwebtoken::EncodingKey::from_ed_der(rec.private_pkcs8.expose()),
        };
        let mut header = jsonwebtoken::Header::new(alg.to_jwt());
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid().to_string());
        let claims_value: serde_json::Value = serde_json::from_str(&claims).expect("claims");

        let mut g = c.benchmark_group(format!("mint/{}", alg.as_str()));
        g.bench_function("sessiongate", |b| {
            b.iter(|| {
                minter
                    .mint(
                        black_box(&session),
                        &audience,
                        Duration::from_secs(300),
                        now,
                        None,
                    )
                    .expect("mint")
            })
        });
        g.bench_function("baseline/raw_sign", |b| {
            b.iter(|| {
                let mut out = String::with_capacity(100);
                key.sign_into(black_box(input.as_bytes()), &mut out)
                    .expect("sign");
                out
            })
        });
        g.bench_function("baseline/jsonwebtoken::encode", |b| {
            b.iter(|| {
                jsonwebtoken::encode(&header, black_box(&claims_value), &encoding).expect("encode")
            })
        });
        g.finish();
    }
}

fn bench_cache_hit(c: &mut Criterion) {
    keys::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (keyring, _) = keyring(Algorithm::Es256);
    let metrics = Arc::new(Metrics::unregistered());
    let store = Arc::new(MemoryStore::new());
    let settings = SessionSettings {
        cache_ttl: Duration::from_secs(3600),
        ..SessionSettings::default()
    };
    let token = SessionToken::parse(COOKIE).expect("token");
    let key = record::redis_key(&settings.key_prefix, &token, true);
    rt.block_on(store.put(&key, SESSION, Duration::from_secs(3600)))
        .expect("put");
    let ex = Exchange::new(
        store,
        settings,
        Minter::new(keyring, "iss", metrics.clone()),
        metrics,
    );
    let audience = Audience::new("orders");
    let ttl = Duration::from_secs(300);
    let mut g = c.benchmark_group("cache_hit");
    g.bench_function("lookup+token", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = ex
                    .lookup(black_box(&token), Freshness::Cached)
                    .await
                    .expect("lookup");
                ex.token(&r, &audience, ttl).expect("token")
            })
        })
    });
    g.bench_function("baseline/block_on(noop)", |b| {
        b.iter(|| rt.block_on(async { black_box(1) }))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_cookie,
    bench_route,
    bench_session_decode,
    bench_mint,
    bench_cache_hit
);
criterion_main!(benches);
