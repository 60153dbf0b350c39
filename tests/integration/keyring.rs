//! The keyring lifecycle on real processes (SPEC "JWKS", docs/keys.md): replicas sharing
//! one Redis keyring agree on the keys and converge within [`CONVERGENCE`]; no token
//! minted during accelerated rotations fails to verify against a JWKS fetched at that
//! moment; concurrent rotations add exactly one key; private keys are sealed at rest and a
//! wrong or missing KEK refuses start-up; emergency retirement; an algorithm change; the
//! file store's hot reload; the key metrics; and PyJWT with a cached JWKS across rotations.
//!
//! Accelerated rotations use `rotate_every = "3s"`, `publish_ahead = "2s"`: a successor is
//! created one second after a key takes over and signs two seconds later.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::harness::cli::{sg, sg_ok, stderr};
use crate::harness::eventually::poll;
use crate::harness::keyring::{
    assert_record_fields, get_jwks, keys_rotate, kid_alg, mint, mint_at, parse_rotate, published,
    scrape, start_expecting_exit, stored_records, verify_now,
};
use crate::harness::{
    Gateway, GatewayBuilder, RedisServer, Route, Upstream, assert_eventually, client,
    cookie_header, fetch_jwks, new_cookie, new_kek, session_json, session_key, verify,
};

/// What docs/keys.md promises: a change to the shared keyring made anywhere (another
/// replica, a `keys` command) is in every replica's JWKS and keyring within this long
/// (the refresher polls the store's version every 250 ms).
const CONVERGENCE: Duration = Duration::from_secs(1);

/// What the tests assert: [`CONVERGENCE`] with room for a loaded 2-core CI machine, where
/// the polling client and the gateway share the cores with every other test. The measured
/// time is printed; figures from quiet runs are in docs/keys.md.
const CONVERGENCE_ASSERTED: Duration = Duration::from_secs(3);

const JWKS: &str = "/.well-known/jwks.json";

/// Redis, an echo upstream and a KEK for one test.
struct Shared {
    redis: RedisServer,
    up: Upstream,
    kek: String,
}

impl Shared {
    fn start() -> Self {
        Shared {
            redis: RedisServer::start(),
            up: Upstream::echo("echo"),
            kek: new_kek(),
        }
    }

    /// A builder on the shared Redis keyring with one route `orders` (critical, so every
    /// request mints a fresh token, unless `cached`).
    fn builder(&self, cached: bool) -> GatewayBuilder {
        let route = Route::new("orders", "/api/orders", &[self.up.addr()]);
        let route = if cached { route } else { route.critical() };
        GatewayBuilder::new(&self.redis.url())
            .redis_keys(&self.kek)
            .route(route)
    }

    /// [`builder`](Self::builder) with accelerated rotations.
    fn fast(&self) -> GatewayBuilder {
        self.builder(false)
            .publish_ahead("2s")
            .set("keys.rotate_every", "3s")
    }

    /// A session for `sub`; returns the cookie value.
    fn login(&self, prefix: &str, sub: &str) -> String {
        let cookie = new_cookie();
        self.redis
            .set_session(&session_key(prefix, &cookie), &session_json(sub), 3600);
        cookie
    }

    fn kek_env(&self) -> [(&str, &str); 1] {
        [("SESSIONGATE_KEK", self.kek.as_str())]
    }
}

/// Polls until `cond` holds; returns how long that took, panicking after `limit`.
#[track_caller]
fn time_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) -> Duration {
    poll(cond, limit).unwrap_or_else(|waited| panic!("{what}: not within {waited:?}"))
}

#[test]
fn two_replicas_on_one_redis_publish_the_same_jwks_and_verify_each_others_tokens() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    let kek = new_kek();
    let builder = GatewayBuilder::new(&redis.url())
        .redis_keys(&kek)
        .route(Route::new("orders", "/api/orders", &[up.addr()]));
    let a = builder.start();
    let b = builder.start();
    let http = client();
    let jwks_a = fetch_jwks(&http, &a.admin_url("/.well-known/jwks.json"));
    let jwks_b = fetch_jwks(&http, &b.admin_url("/.well-known/jwks.json"));
    assert_eq!(
        jwks_a.keys.len(),
        1,
        "one bootstrap key shared by both replicas"
    );
    assert_eq!(
        serde_json::to_value(&jwks_a).expect("jwks json"),
        serde_json::to_value(&jwks_b).expect("jwks json"),
        "both replicas publish the same JWKS"
    );

    let cookie = new_cookie();
    redis.set_session(
        &session_key(a.key_prefix(), &cookie),
        &session_json("alice"),
        3600,
    );
    for (minted_by, verified_by) in [(&a, &jwks_b), (&b, &jwks_a)] {
        let resp = http
            .get(minted_by.url("/api/orders/1"))
            .header("cookie", cookie_header(&cookie))
            .send()
            .expect("GET through the gateway");
        assert_eq!(resp.status(), 200);
        let token = up.last();
        let v = verify(token.bearer(), verified_by, "orders", a.issuer());
        assert_eq!(v.str("sub"), "alice");
    }
}

#[test]
fn a_rotation_on_one_replica_is_seen_by_the_other_within_the_documented_interval() {
    let s = Shared::start();
    let builder = s.builder(false);
    let a = builder.start();
    let b = builder.start();
    let http = client();
    let cookie = s.login(a.key_prefix(), "alice");
    let first = published(&http, &b);
    assert_eq!(first.len(), 1, "{first:?}");

    // A scheduled-style rotation by hand against A's config: B publishes the new key...
    let (next, created) = keys_rotate(&a, Some(&s.kek), false);
    assert!(created);
    let seen = time_until(
        "B publishes the rotated key",
        Duration::from_secs(10),
        || published(&http, &b).contains(&next),
    );
    eprintln!("B published a key rotated via A's config {seen:?} after the command exited");
    assert!(
        seen <= CONVERGENCE_ASSERTED,
        "B published {next} {seen:?} after the rotation, documented: within {CONVERGENCE:?}"
    );
    // ...as next: B still signs with the first key, and says so in its metrics.
    let token = mint(&http, &b, "/api/orders", &cookie).expect("mint via B");
    assert!(first.contains(&kid_alg(&token).0));
    assert_eq!(
        scrape(&http, &b).value("sessiongate_jwks_keys", &[("state", "next")]),
        1.0
    );

    // An immediate rotation via A's config: B signs with it within the same interval.
    let (now_kid, created) = keys_rotate(&a, Some(&s.kek), true);
    assert!(created && now_kid != next);
    let signs = |gw: &Gateway| {
        mint(&http, gw, "/api/orders", &cookie).is_ok_and(|t| kid_alg(&t).0 == now_kid)
    };
    let signed = time_until(
        "both sign with the new key",
        Duration::from_secs(10),
        || signs(&a) && signs(&b),
    );
    eprintln!(
        "both replicas signed with a key made current via A's config {signed:?} after the command"
    );
    assert!(signed <= CONVERGENCE_ASSERTED, "{signed:?}");
    let token = mint(&http, &a, "/api/orders", &cookie).expect("mint via A");
    let jwks_b = fetch_jwks(&http, &b.admin_url(JWKS));
    verify(&token, &jwks_b, "orders", a.issuer());

    // `keys list` against B's config tells the same story.
    let config = b.config_path().display().to_string();
    let list = sg_ok(&["keys", "list", "--config", &config], &s.kek_env());
    let state_of = |kid: &str| {
        list.lines()
            .find(|l| l.starts_with(kid))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{kid} not in `keys list`:\n{list}"))
    };
    let old = first.iter().next().expect("first kid");
    assert_eq!(state_of(old), "previous", "{list}");
    assert_eq!(state_of(&now_kid), "current", "{list}");
    assert_eq!(state_of(&next), "next", "{list}");
}

/// One minted-and-verified token of the continuous client.
struct Checked {
    kid: String,
    doc: crate::harness::keyring::JwksDoc,
}

#[test]
fn no_token_minted_during_accelerated_rotations_fails_against_a_jwks_fetched_then() {
    let s = Shared::start();
    let builder = s.fast();
    let a = builder.start();
    let b = builder.start();
    let http = client();
    let cookie = s.login(a.key_prefix(), "alice");
    let gateways = [&a, &b];
    // Every pairing: minted by A or B, verified against either's admin or proxy JWKS.
    let jwks_urls = [
        a.admin_url(JWKS),
        b.admin_url(JWKS),
        b.url(JWKS),
        a.url(JWKS),
    ];

    let mut checked: Vec<Checked> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut signed: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut i = 0usize;
    // Four kids have signed: three rotations on top of the bootstrap key.
    while signed.len() < 4 && Instant::now() < deadline {
        let gw = gateways[i % 2];
        let url = &jwks_urls[(i / 2) % jwks_urls.len()];
        i += 1;
        let token = match mint(&http, gw, "/api/orders", &cookie) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("#{i}: minting failed: {e}"));
                continue;
            }
        };
        match verify_now(&http, url, &token, "orders", a.issuer()) {
            Ok(doc) => {
                let kid = kid_alg(&token).0;
                *signed.entry(kid.clone()).or_default() += 1;
                checked.push(Checked { kid, doc });
            }
            Err(e) => failures.push(format!(
                "#{i}: a token minted by {} does not verify against {url} fetched at once: {e}",
                gw.addr()
            )),
        }
    }
    eprintln!(
        "{} tokens minted and verified across {} kids: {signed:?}",
        checked.len(),
        signed.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {i} tokens failed, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        signed.len() >= 4,
        "only {} kids signed within 40 s: {signed:?}",
        signed.len()
    );
    // Keys that signed for a whole rotation period (not the first and last seen) signed
    // many tokens.
    let mut order: Vec<&str> = Vec::new();
    for c in &checked {
        if !order.contains(&c.kid.as_str()) {
            order.push(&c.kid);
        }
    }
    for kid in &order[1..order.len() - 1] {
        assert!(
            signed[*kid] >= 3,
            "{kid} signed only {}: {signed:?}",
            signed[*kid]
        );
    }

    // The JWKS: strong ETag, max-age <= publish_ahead (2 s), and the document changes
    // exactly when the key set does, identically on both replicas and listeners.
    let mut body_of_etag: HashMap<String, Vec<u8>> = HashMap::new();
    let mut etag_of_set: HashMap<BTreeSet<String>, String> = HashMap::new();
    for c in &checked {
        let etag = c.doc.etag.clone().expect("an ETag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "a strong ETag, got {etag}"
        );
        assert!(c.doc.public, "Cache-Control: public");
        let max_age = c.doc.max_age.expect("a max-age");
        assert!(max_age <= 2, "max-age {max_age} > publish_ahead 2 s");
        assert!(c.doc.kids().contains(&c.kid));
        let body = body_of_etag
            .entry(etag.clone())
            .or_insert(c.doc.body.clone());
        assert_eq!(*body, c.doc.body, "one ETag, two documents");
        let tag = etag_of_set.entry(c.doc.kids()).or_insert(etag.clone());
        assert_eq!(*tag, etag, "one key set, two ETags: {:?}", c.doc.kids());
    }
    assert_eq!(body_of_etag.len(), etag_of_set.len());
    // One document per key set: by the time the client starts, the bootstrap key's
    // successor is usually published already, so at least one fewer than the kids.
    assert!(
        etag_of_set.len() >= signed.len() - 1,
        "{} documents for {} kids",
        etag_of_set.len(),
        signed.len()
    );

    // A verifier load-balanced across replicas revalidates with the other's ETag: 304.
    assert_eventually!(
        {
            let from_a = get_jwks(&http, &a.admin_url(JWKS), None).expect("A's JWKS");
            let etag = from_a.etag.expect("ETag");
            get_jwks(&http, &b.url(JWKS), Some(&etag)).is_ok_and(|d| d.status == 304)
                && get_jwks(&http, &a.url(JWKS), Some(&etag)).is_ok_and(|d| d.status == 304)
        },
        Duration::from_secs(5)
    );

    // Both replicas reached every rotation instant together; each rotation added one key
    // (two keys of one rotation would activate in the same second or one apart).
    let mut activations: Vec<u64> = stored_records(&s.redis, a.keys_prefix())
        .iter()
        .map(|r| r["activate_at"].as_u64().expect("activate_at"))
        .collect();
    activations.sort_unstable();
    assert!(
        activations.windows(2).all(|w| w[1] - w[0] >= 3),
        "keys activating less than rotate_every apart: {activations:?}"
    );
}

#[test]
fn replicas_reaching_the_rotation_instant_together_create_exactly_one_key() {
    let s = Shared::start();
    let builder = s
        .builder(false)
        .publish_ahead("1s")
        .set("keys.rotate_every", "2s");
    let replicas: Vec<Gateway> = (0..3).map(|_| builder.start()).collect();
    let prefix = replicas[0].keys_prefix().to_owned();
    let http = client();

    // Bootstrap plus four rotations, each due on the three replicas at the same instant.
    time_until("five keys", Duration::from_secs(30), || {
        stored_records(&s.redis, &prefix).len() >= 5
    });
    let records = stored_records(&s.redis, &prefix);
    let mut activations: Vec<u64> = records
        .iter()
        .map(|r| r["activate_at"].as_u64().expect("activate_at"))
        .collect();
    activations.sort_unstable();
    assert!(
        activations.windows(2).all(|w| w[1] - w[0] >= 2),
        "more than one key per rotation: activations {activations:?}"
    );
    // Every replica publishes every key it has seen created, the same document.
    let kids: BTreeSet<String> = records
        .iter()
        .map(|r| r["kid"].as_str().expect("kid").to_owned())
        .collect();
    assert_eventually!(
        replicas.iter().all(|gw| {
            let p = published(&http, gw);
            kids.is_subset(&p) && p == published(&http, &replicas[0])
        }),
        Duration::from_secs(5)
    );
}

#[test]
fn concurrent_keys_rotate_commands_on_several_replicas_add_exactly_one_key() {
    let s = Shared::start();
    let builder = s.builder(false);
    let a = builder.start();
    let b = builder.start();
    let configs = [
        a.config_path().display().to_string(),
        b.config_path().display().to_string(),
    ];
    // Six processes at once, against both replicas' configs.
    let env = s.kek_env();
    let outcomes: Vec<(String, bool)> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..6)
            .map(|i| {
                let (config, env) = (&configs[i % 2], &env);
                scope.spawn(move || sg_ok(&["keys", "rotate", "--config", config], env))
            })
            .collect();
        runs.into_iter()
            .map(|run| parse_rotate(&run.join().expect("keys rotate")))
            .collect()
    });
    let created: Vec<&(String, bool)> = outcomes.iter().filter(|(_, c)| *c).collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one process created a key: {outcomes:?}"
    );
    let kid = &created[0].0;
    assert!(
        outcomes.iter().all(|(k, _)| k == kid),
        "the others name the same pending key: {outcomes:?}"
    );
    assert_eq!(stored_records(&s.redis, a.keys_prefix()).len(), 2);
    let http = client();
    assert_eventually!(
        published(&http, &a).contains(kid) && published(&http, &b).contains(kid),
        CONVERGENCE * 2
    );
}

#[test]
fn a_wrong_kek_is_refused_on_an_empty_keyring_and_seals_nothing() {
    let s = Shared::start();
    let builder = s.builder(false);
    let a = builder.start();
    let prefix = a.keys_prefix().to_owned();
    drop(a);
    // An emptied keyring (keys gone, the check value kept): nothing to unseal, yet a
    // replica with another KEK must not seal the first key under it.
    s.redis.del(&format!("{prefix}keyring"));
    let wrong = new_kek();
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr) =
        start_expecting_exit(&builder, dir.path(), &[("SESSIONGATE_KEK", wrong.as_str())]);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("sealed under a different key-encryption key"),
        "{stderr}"
    );
    assert!(!stderr.contains(&wrong), "the KEK is printed: {stderr}");
    assert!(
        stored_records(&s.redis, &prefix).is_empty(),
        "nothing was sealed"
    );
    // The right KEK still starts and creates the first key.
    let b = builder.start();
    assert_eq!(stored_records(&s.redis, b.keys_prefix()).len(), 1);
}

#[test]
fn a_wrong_missing_or_malformed_kek_fails_start_up_with_exit_code_1() {
    let s = Shared::start();
    let builder = s.builder(false);
    let a = builder.start();
    let records = stored_records(&s.redis, a.keys_prefix());
    assert_eq!(records.len(), 1);
    let kid = records[0]["kid"].as_str().expect("kid").to_owned();
    let wrong = new_kek();
    let short = STANDARD.encode([7u8; 16]);
    let cases = [
        (
            "wrong",
            vec![("SESSIONGATE_KEK", wrong.as_str())],
            format!("cannot unseal private key {kid}: wrong key-encryption key"),
        ),
        (
            "missing",
            vec![],
            "environment variable SESSIONGATE_KEK is not set".to_owned(),
        ),
        (
            "malformed",
            vec![("SESSIONGATE_KEK", "not base64!")],
            "invalid key-encryption key: not valid base64".to_owned(),
        ),
        (
            "short",
            vec![("SESSIONGATE_KEK", short.as_str())],
            "invalid key-encryption key: expected 32 bytes, got 16".to_owned(),
        ),
    ];
    for (name, env, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let (code, stderr) = start_expecting_exit(&builder, dir.path(), &env);
        assert_eq!(code, Some(1), "{name} KEK: exit code; stderr:\n{stderr}");
        assert!(
            stderr.contains(&expected),
            "{name} KEK: stderr must say {expected:?}:\n{stderr}"
        );
        for (_, value) in &env {
            assert!(
                !stderr.contains(value),
                "{name}: the KEK is printed: {stderr}"
            );
        }
    }
    // The keys commands refuse the same way.
    let config = a.config_path().display().to_string();
    let out = sg(
        &["keys", "list", "--config", &config],
        None,
        &[("SESSIONGATE_KEK", wrong.as_str())],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot unseal private key"));
    // Nothing was changed by the refused starts, and the running replica still serves.
    assert_eq!(stored_records(&s.redis, a.keys_prefix()), records);
    let cookie = s.login(a.key_prefix(), "alice");
    let http = client();
    let token = mint(&http, &a, "/api/orders", &cookie).expect("A still mints");
    assert_eq!(kid_alg(&token).0, kid);
}

#[test]
fn nothing_in_redis_holds_a_private_key_in_clear() {
    let s = Shared::start();
    let es = s.builder(false).start();
    // A second replica with the other algorithm adds an EdDSA key to the same keyring.
    let ed = s.builder(false).algorithm("EdDSA").start();
    let prefix = es.keys_prefix().to_owned();
    let records = stored_records(&s.redis, &prefix);
    let algs: BTreeSet<&str> = records.iter().filter_map(|r| r["alg"].as_str()).collect();
    assert_eq!(algs, BTreeSet::from(["ES256", "EdDSA"]), "{records:?}");
    let http = client();
    let jwks: Value = http
        .get(ed.admin_url(JWKS))
        .send()
        .expect("JWKS")
        .json()
        .expect("JSON");

    // Every record is sealed: AES-256-GCM under the KEK with the kid as associated data.
    // Unsealing it here gives the private key whose public half is in the JWKS.
    let kek = keys::seal::Kek::from_base64(&s.kek).expect("KEK");
    let other = keys::seal::Kek::from_base64(&new_kek()).expect("KEK");
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for r in &records {
        assert_record_fields(r);
        let kid = keys::Kid::from(r["kid"].as_str().expect("kid"));
        let sealed = STANDARD
            .decode(r["sealed_key"].as_str().expect("sealed_key"))
            .expect("base64");
        assert!(keys::seal::open(&other, &kid, &sealed).is_err());
        let der = keys::seal::open(&kek, &kid, &sealed).expect("sealed under the KEK");
        let record = keys::KeyRecord {
            kid: kid.clone(),
            alg: r["alg"].as_str().expect("alg").parse().expect("alg"),
            created_at: 0,
            activate_at: 0,
            retired_at: None,
            private_pkcs8: der.clone(),
        };
        let key = keys::SigningKey::from_record(&record, keys::KeyState::Current).expect("key");
        let published = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("published");
        assert_eq!(
            serde_json::to_value(key.jwk()).expect("jwk"),
            *published,
            "the sealed key is the published one"
        );
        secrets.push((kid.to_string(), der.expose().to_vec()));
    }

    // Everything Redis holds, byte for byte: a full RDB snapshot, uncompressed.
    let dir = tempfile::tempdir().expect("temp dir");
    let rdb = dir.path().join("dump.rdb");
    s.redis.cli(&["CONFIG", "SET", "rdbcompression", "no"]);
    s.redis.cli(&["--rdb", &rdb.display().to_string()]);
    let snapshot = std::fs::read(&rdb).expect("RDB snapshot");
    let contains = |needle: &[u8]| snapshot.windows(needle.len()).any(|w| w == needle);
    let sealed_text = records[0]["sealed_key"].as_str().expect("sealed_key");
    assert!(
        contains(sealed_text.as_bytes()),
        "the snapshot has the keyring"
    );
    for (kid, der) in &secrets {
        let secret = raw_secret(der);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let forms: Vec<Vec<u8>> = [der.as_slice(), secret]
            .iter()
            .flat_map(|b| {
                [
                    b.to_vec(),
                    STANDARD.encode(b).into_bytes(),
                    URL_SAFE.encode(b).into_bytes(),
                    URL_SAFE_NO_PAD.encode(b).into_bytes(),
                    hex(b).into_bytes(),
                ]
            })
            .collect();
        for form in &forms {
            assert!(!contains(form), "private key {kid} is in Redis in clear");
        }
    }
}

/// The 32 secret bytes inside a PKCS#8 key: the P-256 scalar (the OCTET STRING after
/// `ECPrivateKey`'s version 1) or the Ed25519 seed (the DER's last 32 bytes).
fn raw_secret(der: &[u8]) -> &[u8] {
    const EC_SCALAR: [u8; 5] = [0x02, 0x01, 0x01, 0x04, 0x20];
    match der.windows(EC_SCALAR.len()).position(|w| w == EC_SCALAR) {
        Some(at) => &der[at + EC_SCALAR.len()..at + EC_SCALAR.len() + 32],
        None => &der[der.len() - 32..],
    }
}

#[test]
fn retiring_a_key_removes_it_from_every_replica_at_once_and_it_never_signs_again() {
    let s = Shared::start();
    // Not critical: tokens are cached and reused, which retirement must stop as well.
    let builder = s.builder(true);
    let a = builder.start();
    let b = builder.start();
    let http = client();
    let cookie = s.login(a.key_prefix(), "alice");
    let first_b = mint(&http, &b, "/api/orders", &cookie).expect("mint via B");
    // Cached once the invalidation channel is armed (until then lookups bypass the
    // cache, and arming flushes it) and two answers in a row carry the same token (a
    // read racing the invalidation of the session's own SET is answered but not cached).
    crate::harness::metrics::wait_armed(&a, Duration::from_secs(5));
    let mut first_a = mint(&http, &a, "/api/orders", &cookie).expect("mint via A");
    assert_eventually!(
        {
            let again = mint(&http, &a, "/api/orders", &cookie).expect("mint via A");
            std::mem::replace(&mut first_a, again) == first_a
        },
        Duration::from_secs(5),
        "the token is cached and reused"
    );
    let retired = kid_alg(&first_a).0;
    assert_eq!(kid_alg(&first_b).0, retired);
    let (pending, _) = keys_rotate(&a, Some(&s.kek), false);

    let config = b.config_path().display().to_string();
    let out = sg_ok(
        &["keys", "retire", "--config", &config, &retired],
        &s.kek_env(),
    );
    assert_eq!(out.trim(), format!("retired {retired}"));
    let gone = time_until(
        "both replicas drop the key",
        Duration::from_secs(10),
        || !published(&http, &a).contains(&retired) && !published(&http, &b).contains(&retired),
    );
    eprintln!("a retired key left both replicas' JWKS {gone:?} after `keys retire` exited");
    assert!(gone <= CONVERGENCE_ASSERTED, "{gone:?}");

    // From now on neither replica signs with it, nor hands out the cached token.
    let jwks_a = fetch_jwks(&http, &a.admin_url(JWKS));
    let jwks_b = fetch_jwks(&http, &b.url(JWKS));
    let mut replacements = BTreeSet::new();
    for round in 0..5 {
        for (gw, other) in [(&a, &jwks_b), (&b, &jwks_a)] {
            let token = mint(&http, gw, "/api/orders", &cookie).expect("mint");
            let kid = kid_alg(&token).0;
            assert_ne!(kid, retired, "round {round}: signed by the retired key");
            verify(&token, other, "orders", a.issuer());
            replacements.insert(kid);
        }
    }
    // The pending key was not made to sign early; an emergency key signs at once.
    assert_eq!(replacements.len(), 1, "{replacements:?}");
    let replacement = replacements.into_iter().next().expect("one");
    assert_ne!(replacement, pending);
    for gw in [&a, &b] {
        let kids = published(&http, gw);
        assert_eq!(kids, BTreeSet::from([replacement.clone(), pending.clone()]));
        let m = scrape(&http, gw);
        assert!(m.value("sessiongate_tokens_minted_total", &[("kid", &replacement)]) >= 1.0);
    }
    let stored: Vec<String> = stored_records(&s.redis, a.keys_prefix())
        .iter()
        .map(|r| r["kid"].as_str().expect("kid").to_owned())
        .collect();
    assert!(
        !stored.contains(&retired),
        "removed from the store: {stored:?}"
    );
    // Retiring it again: it is gone, exit 1 naming it.
    let out = sg(
        &["keys", "retire", "--config", &config, &retired],
        None,
        &s.kek_env(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("key {retired} not found")));
}

/// Where the migrating client mints and fetches the JWKS.
#[derive(Clone)]
struct Endpoint {
    name: &'static str,
    mint: String,
    jwks: String,
}

impl Endpoint {
    fn of(name: &'static str, gw: &Gateway) -> Self {
        Endpoint {
            name,
            mint: gw.url("/api/orders"),
            jwks: gw.admin_url(JWKS),
        }
    }
}

#[test]
fn changing_the_algorithm_by_rolling_restart_migrates_with_no_token_failing() {
    let s = Shared::start();
    let es = s.fast().set("keys.rotate_every", "24h");
    let ed = es.clone().algorithm("EdDSA");
    let a = es.start();
    let b = es.start();
    let issuer = a.issuer().to_owned();
    let cookie = s.login(a.key_prefix(), "alice");
    let live = RwLock::new(vec![Endpoint::of("a", &a), Endpoint::of("b", &b)]);
    let stop = AtomicBool::new(false);
    let verified = AtomicUsize::new(0);
    // (endpoint name, alg, kid) of every verified token; failures.
    let seen: Mutex<Vec<(&'static str, String, String)>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Stops the client when dropped, also when an assertion unwinds the scope (which
    /// joins the client thread before the panic propagates).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| {
            let http = client();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Holding the read guard keeps a replica from being stopped mid-request.
                let endpoints = live.read();
                let minter = &endpoints[i % endpoints.len()];
                let verifier = &endpoints[(i / 2 + 1) % endpoints.len()];
                i += 1;
                let result = mint_at(&http, &minter.mint, &cookie).and_then(|token| {
                    verify_now(&http, &verifier.jwks, &token, "orders", &issuer).map(|_| token)
                });
                match result {
                    Ok(token) => {
                        let (kid, alg) = kid_alg(&token);
                        seen.lock().push((minter.name, alg, kid));
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().push(format!(
                        "minted by {}, verified by {}: {e}",
                        minter.name, verifier.name
                    )),
                }
            }
        });
        let wait_for_tokens = |n: usize| {
            let target = verified.load(Ordering::Relaxed) + n;
            time_until(
                "the client verifies tokens",
                Duration::from_secs(20),
                || verified.load(Ordering::Relaxed) >= target,
            );
        };
        wait_for_tokens(20);

        // Replace B with an EdDSA replica: it publishes an EdDSA key at once and keeps
        // signing with the ES256 key until the new key has been published publish_ahead.
        let b2 = ed.start();
        {
            let mut endpoints = live.write();
            endpoints.retain(|e| e.name != "b");
            endpoints.push(Endpoint::of("b2", &b2));
        }
        drop(b);
        time_until("B2 signs with EdDSA", Duration::from_secs(15), || {
            seen.lock()
                .iter()
                .any(|(n, alg, _)| *n == "b2" && alg == "EdDSA")
        });
        wait_for_tokens(20);

        // Then A: from here on every replica signs with EdDSA.
        let a2 = ed.start();
        {
            let mut endpoints = live.write();
            endpoints.retain(|e| e.name != "a");
            endpoints.push(Endpoint::of("a2", &a2));
        }
        drop(a);
        let mark = seen.lock().len();
        wait_for_tokens(30);
        stop.store(true, Ordering::Relaxed);

        let seen = seen.lock();
        let failures = failures.lock();
        assert!(
            failures.is_empty(),
            "{} tokens failed, first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        let algs: BTreeSet<&str> = seen.iter().map(|(_, alg, _)| alg.as_str()).collect();
        assert_eq!(algs, BTreeSet::from(["ES256", "EdDSA"]));
        assert!(
            seen[mark..].iter().all(|(_, alg, _)| alg == "EdDSA"),
            "after the restarts only EdDSA signs"
        );
        // The old key stays published while tokens it signed are valid.
        let es_kid = &seen
            .iter()
            .find(|(_, alg, _)| alg == "ES256")
            .expect("ES256")
            .2;
        let http = client();
        assert!(published(&http, &a2).contains(es_kid));
        assert_eq!(
            seen.iter()
                .filter(|(n, alg, _)| *n == "a" && alg == "EdDSA")
                .count(),
            0,
            "the ES256 replica never switched algorithm"
        );
    });
}

/// Mounts the key files of `source` into `secret` the way the kubelet updates a Secret
/// volume: a new `..<version>` directory, the `..data` symlink swapped atomically, one
/// top-level symlink per file, and the old version removed.
fn project_secret(source: &std::path::Path, secret: &std::path::Path, version: &str) {
    use std::os::unix::fs::symlink;
    let versioned = secret.join(format!("..{version}"));
    std::fs::create_dir(&versioned).expect("version dir");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(source).expect("source dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.starts_with('.') {
            std::fs::copy(entry.path(), versioned.join(&name)).expect("copy key");
            names.insert(name);
        }
    }
    let old = std::fs::read_link(secret.join("..data")).ok();
    let tmp = secret.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, secret.join("..data")).expect("swap ..data");
    for entry in std::fs::read_dir(secret).expect("secret dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !names.contains(&name) {
            std::fs::remove_file(entry.path()).expect("remove stale link");
        }
    }
    for name in &names {
        let link = secret.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(std::path::Path::new("..data").join(name), &link).expect("link");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(secret.join(old)).expect("remove old version");
    }
}

#[test]
fn a_file_key_store_mounted_like_a_kubernetes_secret_is_reloaded_without_restart() {
    let redis = RedisServer::start();
    let up = Upstream::echo("echo");
    // The Secret's source: a writable key directory driven by the CLI.
    let source_dir = tempfile::tempdir().expect("temp dir");
    let (source_config, _, _) = GatewayBuilder::new(&redis.url())
        .route(Route::new("orders", "/api/orders", &[up.addr()]))
        .write_config(source_dir.path());
    let source_config = source_config.display().to_string();
    let source_keys = source_dir.path().join("keys");
    let rotate_now = || {
        parse_rotate(&sg_ok(
            &["keys", "rotate", "--now", "--config", &source_config],
            &[],
        ))
        .0
    };
    let k0 = rotate_now();

    let secret = tempfile::tempdir().expect("temp dir");
    project_secret(&source_keys, secret.path(), "v1");
    let gw = GatewayBuilder::new(&redis.url())
        .set("keys.dir", secret.path().display().to_string())
        .route(Route::new("orders", "/api/orders", &[up.addr()]).critical())
        .start();
    let http = client();
    let cookie = new_cookie();
    redis.set_session(
        &session_key(gw.key_prefix(), &cookie),
        &session_json("alice"),
        3600,
    );
    assert_eq!(published(&http, &gw), BTreeSet::from([k0.clone()]));
    let token = mint(&http, &gw, "/api/orders", &cookie).expect("mint");
    assert_eq!(kid_alg(&token).0, k0);

    // A new key in the Secret: published within the interval, and it signs.
    let k1 = rotate_now();
    project_secret(&source_keys, secret.path(), "v2");
    let seen = time_until(
        "the new key file is published",
        Duration::from_secs(10),
        || published(&http, &gw) == BTreeSet::from([k0.clone(), k1.clone()]),
    );
    eprintln!("a key added to the Secret was published {seen:?} after the swap");
    assert!(seen <= CONVERGENCE_ASSERTED, "{seen:?}");
    assert_eventually!(
        mint(&http, &gw, "/api/orders", &cookie).is_ok_and(|t| kid_alg(&t).0 == k1),
        Duration::from_secs(5)
    );

    // A key taken out of the Secret leaves the JWKS.
    let config = source_config.clone();
    sg_ok(&["keys", "retire", "--config", &config, &k0], &[]);
    project_secret(&source_keys, secret.path(), "v3");
    let gone = time_until(
        "the removed key leaves the JWKS",
        Duration::from_secs(10),
        || published(&http, &gw) == BTreeSet::from([k1.clone()]),
    );
    assert!(gone <= CONVERGENCE_ASSERTED, "{gone:?}");
    let m = scrape(&http, &gw);
    assert_eq!(m.value("sessiongate_key_rotation_failures_total", &[]), 0.0);
    assert_eq!(
        m.value("sessiongate_jwks_keys", &[("state", "current")]),
        1.0
    );
}

#[test]
fn key_metrics_report_states_rotation_age_failures_and_tokens_by_kid() {
    let s = Shared::start();
    let gw = s.builder(false).start();
    let prefix = gw.keys_prefix().to_owned();
    let http = client();
    let cookie = s.login(gw.key_prefix(), "alice");
    let m = scrape(&http, &gw);
    let states = |m: &crate::harness::keyring::Scrape| {
        ["next", "current", "previous"]
            .map(|state| m.value("sessiongate_jwks_keys", &[("state", state)]))
    };
    assert_eq!(states(&m), [0.0, 1.0, 0.0]);
    assert_eq!(
        m.get("sessiongate_key_rotation_failures_total", &[]),
        Some(0.0)
    );
    let k0 = published(&http, &gw).into_iter().next().expect("a key");

    for _ in 0..3 {
        mint(&http, &gw, "/api/orders", &cookie).expect("mint");
    }
    let minted = |m: &crate::harness::keyring::Scrape, kid: &str| {
        m.value(
            "sessiongate_tokens_minted_total",
            &[("alg", "ES256"), ("kid", kid)],
        )
    };
    assert_eq!(minted(&scrape(&http, &gw), &k0), 3.0);

    // The age grows with the current key...
    assert_eventually!(
        scrape(&http, &gw).value("sessiongate_key_rotation_age_seconds", &[]) >= 2.0,
        Duration::from_secs(10)
    );
    // ...and restarts when another key takes over; the states follow.
    let (pending, _) = keys_rotate(&gw, Some(&s.kek), false);
    let (k1, _) = keys_rotate(&gw, Some(&s.kek), true);
    assert_eventually!(
        states(&scrape(&http, &gw)) == [1.0, 1.0, 1.0],
        CONVERGENCE * 2
    );
    let m = scrape(&http, &gw);
    assert!(m.value("sessiongate_key_rotation_age_seconds", &[]) <= 1.0);
    assert!(published(&http, &gw).contains(&pending));
    for _ in 0..2 {
        mint(&http, &gw, "/api/orders", &cookie).expect("mint");
    }
    let m = scrape(&http, &gw);
    assert_eq!((minted(&m, &k0), minted(&m, &k1)), (3.0, 2.0));

    // A keyring the gateway cannot load (here a corrupt record) is a rotation failure:
    // counted, and the gateway keeps signing with the keys it has.
    let ring = format!("{prefix}keyring");
    let version = format!("{prefix}keyring:version");
    s.redis.cli(&["HSET", &ring, "bogus", "not a key record"]);
    s.redis.cli(&["INCR", &version]);
    assert_eventually!(
        scrape(&http, &gw).value("sessiongate_key_rotation_failures_total", &[]) >= 1.0,
        Duration::from_secs(5)
    );
    let token = mint(&http, &gw, "/api/orders", &cookie).expect("still minting");
    assert_eq!(kid_alg(&token).0, k1);
    assert_eq!(
        http.get(gw.admin_url("/readyz"))
            .send()
            .expect("readyz")
            .status(),
        200
    );
    // Once the record is gone the next change is picked up again.
    s.redis.cli(&["HDEL", &ring, "bogus"]);
    s.redis.cli(&["INCR", &version]);
    let (k2, _) = keys_rotate(&gw, Some(&s.kek), true);
    assert_eventually!(
        mint(&http, &gw, "/api/orders", &cookie).is_ok_and(|t| kid_alg(&t).0 == k2),
        CONVERGENCE * 2
    );
}

#[test]
fn a_key_retired_elsewhere_stops_signing_on_a_replica_that_cannot_refresh() {
    let s = Shared::start();
    let gw = s.builder(false).start();
    let prefix = gw.keys_prefix().to_owned();
    let http = client();
    let cookie = s.login(gw.key_prefix(), "alice");
    let k0 = published(&http, &gw).into_iter().next().expect("a key");
    let (k1, _) = keys_rotate(&gw, Some(&s.kek), true);
    assert_eventually!(
        mint(&http, &gw, "/api/orders", &cookie).is_ok_and(|t| kid_alg(&t).0 == k1),
        CONVERGENCE * 2
    );

    // The keyring cannot be loaded any more (a corrupt record), and then k1 is retired
    // elsewhere: its record rewritten as another replica's `keys retire` would.
    let ring = format!("{prefix}keyring");
    let version = format!("{prefix}keyring:version");
    s.redis.cli(&["HSET", &ring, "bogus", "not a key record"]);
    let record = s.redis.cli(&["HGET", &ring, &k1]);
    let retired = record.replace(r#""retired_at":null"#, r#""retired_at":1767225600"#);
    assert_ne!(record, retired, "the record names its retirement: {record}");
    s.redis.cli(&["HSET", &ring, &k1, &retired]);
    s.redis.cli(&["INCR", &version]);

    // The replica learns it anyway: k1 is unpublished and never signs again; the key
    // it had before (still valid) signs; the failure is counted and logged.
    assert_eventually!(!published(&http, &gw).contains(&k1), CONVERGENCE * 2);
    let token = mint(&http, &gw, "/api/orders", &cookie).expect("minting with k0");
    assert_eq!(kid_alg(&token).0, k0);
    assert!(published(&http, &gw).contains(&k0));
    assert!(scrape(&http, &gw).value("sessiongate_key_rotation_failures_total", &[]) >= 1.0);
    assert_eventually!(
        gw.logs()
            .contains("retired by another replica or an operator"),
        Duration::from_secs(5)
    );
}

const ROTATION_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/rotation.py");

#[test]
fn pyjwt_with_its_cached_jwks_client_verifies_tokens_across_rotations() {
    let python = crate::interop::venv_python();
    let s = Shared::start();
    let builder = s.fast();
    let a = builder.start();
    let b = builder.start();
    let http = client();
    let cookie = s.login(a.key_prefix(), "user-py");
    // PyJWT caches the JWKS for `lifespan` (default 300 s, it ignores Cache-Control) and
    // refetches on an unknown kid at most once per `cooldown_duration` (default 30 s).
    // The gateway publishes a key publish_ahead before it signs; scaled down like the
    // rotation, the cache lives for the max-age the gateway announces (publish_ahead / 2)
    // and the cooldown stays at its default, so no token may depend on a refetch.
    let jwks_url = a.admin_url(JWKS);
    let max_age = get_jwks(&http, &jwks_url, None)
        .expect("JWKS")
        .max_age
        .expect("max-age");
    assert_eq!(max_age, 1, "publish_ahead 2 s");
    let started = Instant::now();
    let mut verifier = Command::new(&python)
        .arg(ROTATION_PY)
        .args([
            "--jwks-url",
            &jwks_url,
            "--audience",
            "orders",
            "--issuer",
            a.issuer(),
        ])
        .args(["--lifespan", &max_age.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run rotation.py");
    let mut to_py = verifier.stdin.take().expect("stdin");
    let mut from_py = BufReader::new(verifier.stdout.take().expect("stdout"));

    let mut kids: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut fetches = 0;
    let mut n = 0usize;
    let deadline = Instant::now() + Duration::from_secs(40);
    // Three kids: two rotations after the one PyJWT cached first.
    while kids.len() < 3 && Instant::now() < deadline {
        let gw = if n.is_multiple_of(2) { &a } else { &b };
        n += 1;
        let token = mint(&http, gw, "/api/orders", &cookie).expect("mint");
        writeln!(to_py, "{token}").expect("write to rotation.py");
        to_py.flush().expect("flush");
        let mut line = String::new();
        from_py.read_line(&mut line).expect("read rotation.py");
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        fetches = answer["fetches"].as_u64().expect("fetches");
        if answer["ok"] == true {
            assert_eq!(answer["sub"], "user-py");
            *kids
                .entry(answer["kid"].as_str().expect("kid").to_owned())
                .or_default() += 1;
        } else {
            failures.push(format!(
                "token {n} (kid {}): {}",
                kid_alg(&token).0,
                answer["error"]
            ));
        }
    }
    drop(to_py);
    let status = verifier.wait().expect("wait rotation.py");
    eprintln!(
        "PyJWT verified {n} tokens over {} kids with {fetches} JWKS fetches",
        kids.len()
    );
    assert!(status.success());
    assert!(failures.is_empty(), "PyJWT rejected: {failures:#?}");
    assert!(kids.len() >= 3, "only {kids:?} within 40 s");
    // It cached: about one fetch per lifespan, not one per token.
    let budget = started.elapsed().as_secs() / max_age + kids.len() as u64 + 2;
    assert!(
        fetches <= budget && fetches * 10 < n as u64,
        "{fetches} fetches for {n} tokens and {} kids (at most {budget})",
        kids.len()
    );
}

const EXAMPLE_PY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/examples/verify_pyjwt.py"
);

#[test]
fn the_documented_pyjwt_example_verifies_tokens_of_an_old_and_a_new_key() {
    let python = crate::interop::venv_python();
    let s = Shared::start();
    let gw = s.builder(false).start();
    let http = client();
    let cookie = s.login(gw.key_prefix(), "user-doc");
    let old = mint(&http, &gw, "/api/orders", &cookie).expect("mint");
    let (new_kid, _) = keys_rotate(&gw, Some(&s.kek), true);
    assert_eventually!(
        mint(&http, &gw, "/api/orders", &cookie).is_ok_and(|t| kid_alg(&t).0 == new_kid),
        CONVERGENCE * 2
    );
    let new = mint(&http, &gw, "/api/orders", &cookie).expect("mint");
    let run = |token: &str| {
        Command::new(&python)
            .arg(EXAMPLE_PY)
            .args(["--jwks-url", &gw.url(JWKS), "--issuer", gw.issuer()])
            .args(["--audience", "orders", "--token", token])
            .stdin(Stdio::null())
            .output()
            .expect("run verify_pyjwt.py")
    };
    for token in [&old, &new] {
        let out = run(token);
        assert!(
            out.status.success(),
            "docs/examples/verify_pyjwt.py rejected a gateway token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let claims: Value = serde_json::from_slice(&out.stdout).expect("claims JSON");
        assert_eq!(claims["sub"], "user-doc");
    }
    let (head, _) = new.rsplit_once('.').expect("three parts");
    let forged = format!("{head}.{}", kid_alg(&old).0);
    assert_eq!(run(&forged).status.code(), Some(1), "a bad signature fails");
}
