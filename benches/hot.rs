//! Criterion benches of the hot path, each paired with its baseline in the same run.
//!
//! - `cookie`: finding the cookie in a `Cookie` header + its session id (validation and
//!   SHA-256), vs. the SHA-256 alone.
//! - `route`: path normalization + route match (vs. normalization alone).
//! - `session_decode/{native,express,django}`: decoding a stored session of each format
//!   (vs. `serde_json::Value` parsing of the native one); `express` includes checking the
//!   cookie's HMAC signature, `django` decoding a pickle (`benches/fixtures/`, written by
//!   Python's `pickle.dumps(session, 5)`, what Django's Redis cache stores).
//! - `edge`: what the gateway does to every forwarded request's headers (hop-by-hop
//!   stripping, `X-Forwarded-*`, a request id) vs. cloning the header, which Pingora
//!   does for every request anyway.
//! - `mint/{ES256,EdDSA}`: our mint vs. `jsonwebtoken::encode` vs. the raw signature of
//!   the same signing input (the 1.2x target of docs/performance.md); for EdDSA also
//!   ed25519-dalek's signature, which aws-lc's replaced on the hot path.
//! - `cache_hit`: a cached lookup plus token reuse through `Exchange`.
//!
//! Run: `cargo bench -p gateway --bench hot` (add `-- --quick` for a fast pass).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/integration/harness/mod.rs"]
mod harness;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use exchange::format::{Decoded, Document, SessionFormat as _};
use exchange::store::SessionStore;
use exchange::store::memory::MemoryStore;
use exchange::{
    Audience, Exchange, Freshness, Metrics, Minter, SessionId, SessionLookup, SessionSettings,
};
use gateway::config::Config;
use gateway::path::normalize;
use gateway::route::RouteTable;
use harness::{GatewayBuilder, Route};
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

/// The session of [`SESSION`], decoded with the default settings.
fn session() -> exchange::Session {
    let doc = Document::json(SESSION).expect("json");
    let id = SessionId::raw(COOKIE);
    match SessionSettings::default()
        .fields
        .extract(&doc, true, &id)
        .expect("decode")
    {
        Decoded::Session(s) => s,
        Decoded::Anonymous => unreachable!("it has a subject"),
    }
}

fn bench_cookie(c: &mut Criterion) {
    let header = http::HeaderValue::from_str(&format!(
        "theme=dark; _ga=GA1.2.3; __Host-session={COOKIE}; lang=en"
    ))
    .expect("header");
    let format = exchange::format::native::Native::new(true);
    let mut g = c.benchmark_group("cookie");
    g.bench_function("find+parse+sha256", |b| {
        b.iter(|| {
            let (found, _) =
                gateway::http::cookie::find(std::iter::once(black_box(&header)), "__Host-session");
            let gateway::http::cookie::Presented::Value(raw) = found else {
                panic!("cookie")
            };
            format.session_id(raw).expect("valid")
        })
    });
    g.bench_function("baseline/sha256", |b| {
        use sha2::Digest as _;
        b.iter(|| sha2::Sha256::digest(black_box(COOKIE.as_bytes())))
    });
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    // Six routes in the test suite's config (GatewayBuilder), on addresses never bound.
    let mut builder = GatewayBuilder::new("redis://127.0.0.1:6379/0");
    for (i, (prefix, port)) in [
        "/api/orders",
        "/api/users",
        "/api/payments",
        "/static",
        "/api",
        "/",
    ]
    .into_iter()
    .zip(9000..)
    .enumerate()
    {
        let upstream = SocketAddr::from(([127, 0, 0, 1], port));
        builder = builder.route(Route::new(&format!("r{i}"), prefix, &[upstream]));
    }
    let (listen, admin) = (
        SocketAddr::from(([127, 0, 0, 1], 8080)),
        SocketAddr::from(([127, 0, 0, 1], 9090)),
    );
    let toml = builder.toml(listen, admin, &std::env::temp_dir().join("sg-bench-keys"));
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

/// A Django session as its Redis cache stores it: `pickle.dumps(session, 5)` of
/// `{"_auth_user_id": "42", "_auth_user_backend": ..., "_auth_user_hash": ..., "roles":
/// ["admin", "ops"], "email": "a@example.com"}`.
const DJANGO_SESSION: &[u8] = include_bytes!("fixtures/django-session.pickle");
/// An express-session value as connect-redis stores it (its JSON serializer).
const EXPRESS_SESSION: &[u8] = br#"{"cookie":{"originalMaxAge":86400000,"expires":"2099-01-01T00:00:00.000Z","secure":true,"httpOnly":true,"path":"/","sameSite":"lax"},"passport":{"user":"42"},"roles":["admin","ops"],"email":"a@example.com"}"#;

fn fields(subject: &str) -> exchange::format::Fields {
    let field = |p: &str| exchange::format::Field::parse(p).expect("field");
    exchange::format::Fields {
        subject: field(subject),
        claims: ["roles", "email"]
            .into_iter()
            .map(|name| exchange::format::Claim {
                name: name.into(),
                field: field(name),
            })
            .collect(),
    }
}

fn bench_session_decode(c: &mut Criterion) {
    use exchange::format::{FormatSettings, Secret, build};
    let mut g = c.benchmark_group("session_decode");
    let id = SessionId::raw(COOKIE);
    let native = SessionSettings::default().fields;
    g.bench_function("native", |b| {
        b.iter(|| {
            let doc = Document::json(black_box(SESSION)).expect("json");
            native.extract(&doc, true, &id).expect("decode")
        })
    });
    g.bench_function("baseline/serde_json::Value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(SESSION)).expect("json"))
    });

    // express: the signed cookie (`s:<sid>.<HMAC-SHA256, base64>`), then the value.
    let secret = "keyboard cat";
    let sid = "Xq3yN0p8bXzYkq1w2e3r4t5y6u7i8o9p";
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes()),
        sid.as_bytes(),
    );
    use base64::Engine as _;
    let cookie = format!(
        "s%3A{sid}.{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(tag.as_ref())
    );
    let express = build(&FormatSettings::Express {
        secrets: vec![Secret::new(secret)],
    });
    let express_fields = fields("/passport/user");
    g.bench_function("express (cookie signature + value)", |b| {
        b.iter(|| {
            let id = express.session_id(black_box(&cookie)).expect("signed");
            let doc = express.decode(black_box(EXPRESS_SESSION)).expect("json");
            express_fields.extract(&doc, false, &id).expect("decode")
        })
    });

    let django = build(&FormatSettings::Django);
    let django_fields = fields("/_auth_user_id");
    g.bench_function("django (pickle)", |b| {
        b.iter(|| {
            let doc = django.decode(black_box(DJANGO_SESSION)).expect("pickle");
            django_fields.extract(&doc, false, &id).expect("decode")
        })
    });
    g.finish();
}

fn bench_edge(c: &mut Criterion) {
    use gateway::http::forwarding::{Origin, RequestIds, set_forwarding, strip_hop_by_hop, wire};
    let mut req =
        pingora::http::RequestHeader::build("GET", b"/api/orders?page=2", None).expect("request");
    for (name, value) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        ),
        ("accept", "application/json"),
        ("accept-language", "en-GB,en;q=0.8"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
        ("cookie", "theme=dark; __Host-session=abc"),
        ("referer", "https://app.example.com/orders"),
    ] {
        req.append_header(name, value).expect("header");
    }
    let ids = RequestIds::default();
    let host = http::HeaderValue::from_static("app.example.com");
    let origin = Origin {
        peer: Some("203.0.113.7".parse().expect("ip")),
        trusted: false,
        tls: true,
        host: Some(&host),
    };
    let mut g = c.benchmark_group("edge");
    g.bench_function("hop-by-hop + forwarding + request id", |b| {
        b.iter(|| {
            let mut r = black_box(&req).clone();
            strip_hop_by_hop(&mut r);
            set_forwarding(&mut r, &origin).expect("forwarding");
            r.insert_header(wire::X_REQUEST_ID, ids.next()).expect("id");
            r
        })
    });
    g.bench_function("baseline/clone", |b| b.iter(|| black_box(&req).clone()));
    g.finish();
}

fn bench_mint(c: &mut Criterion) {
    keys::install_crypto_provider();
    let session = session();
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
        if alg == Algorithm::EdDsa {
            // What signing cost before keys/src/key.rs moved Ed25519 signing to aws-lc.
            use ed25519_dalek::Signer as _;
            use ed25519_dalek::pkcs8::DecodePrivateKey as _;
            let dalek = ed25519_dalek::SigningKey::from_pkcs8_der(rec.private_pkcs8.expose())
                .expect("ed25519 key");
            g.bench_function("baseline/ed25519-dalek raw_sign", |b| {
                b.iter(|| dalek.sign(black_box(input.as_bytes())))
            });
        }
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
    let mut settings = SessionSettings::default();
    settings.cache.ttl = Duration::from_secs(3600);
    let key = settings
        .keyspace()
        .session_key(&settings.keyspace().format().session_id(COOKIE).expect("id"));
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
                let SessionLookup::Valid(r) = ex.lookup(black_box(COOKIE), Freshness::Cached).await
                else {
                    panic!("valid")
                };
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
    bench_edge,
    bench_mint,
    bench_cache_hit
);
criterion_main!(benches);
