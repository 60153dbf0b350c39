//! Creating and revoking sessions, and `revoke-user` for every format.
//!
//! Revocation is deletion: deleting a session key revokes it, whatever wrote it, and the
//! gateway refuses it on critical routes at once and elsewhere once its cache stops
//! trusting it. To revoke every session of a subject:
//! - the `sessiongate` format keeps a per-subject index, the set
//!   `key_prefix + "user:" + subject` (kept as long as its longest session):
//!   [`revoke_user`] deletes every member, then removes it from the set. Login services
//!   that write sessions themselves should `SADD` each key too (docs/redis-schema.md);
//! - without an index (the framework formats, or an empty index), [`revoke_user`] scans
//!   the prefix on every primary, skips keys that are not session keys of the format,
//!   decodes each session and unlinks those of the subject.
//!
//! Deleting keys is the only revocation mechanism, so every path shares the same bound.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use serde_json::{Map, Value};

use crate::format::{Fields, MAX_VALUE_BYTES};
use crate::keyspace::Keyspace;
use crate::store::SessionStore;
use crate::{Error, SessionId, SessionToken};

/// A session written by [`create_session`].
pub struct CreatedSession {
    /// The cookie value to hand to the browser. Never log it.
    pub token: SessionToken,
    /// Unix time at which it expires.
    pub exp: u64,
}

/// Writes a new `sessiongate` session for `subject` with extra `claims`, valid for
/// `ttl`, and indexes it.
///
/// # Errors
/// A store error; [`Error::Config`] when the keyspace is not of the `sessiongate`
/// format, or when `claims` tries to set the subject or `exp`.
pub async fn create_session(
    store: &dyn SessionStore,
    keyspace: &Keyspace,
    fields: &Fields,
    subject: &str,
    claims: Map<String, Value>,
    ttl: Duration,
    now: u64,
) -> Result<CreatedSession, Error> {
    let index = keyspace.user_index_key(subject).ok_or_else(|| {
        Error::Config(
            "sessions of this format are written by the application that owns them, not by sessiongate".into(),
        )
    })?;
    let subject_field = fields.subject.pointer().trim_start_matches('/');
    if fields.subject.pointer()[1..].contains('/') {
        return Err(Error::Config(format!(
            "session create writes top-level fields; subject_field `{}` is a nested pointer",
            fields.subject.pointer()
        )));
    }
    if claims.contains_key(subject_field) || claims.contains_key("exp") {
        return Err(Error::Config(format!(
            "claims may not set `{subject_field}` or `exp`"
        )));
    }
    let token = new_token()?;
    let exp = now + ttl.as_secs().max(1);
    let mut value = claims;
    value.insert(subject_field.to_owned(), Value::String(subject.to_owned()));
    value.insert("exp".into(), Value::from(exp));
    value.insert("iat".into(), Value::from(now));
    let json = Value::Object(value).to_string();
    let id = keyspace
        .format()
        .session_id(token.expose())
        .map_err(|e| Error::Config(format!("generated token invalid: {e}")))?;
    let key = keyspace.session_key(&id);
    store.put(&key, json.as_bytes(), ttl).await?;
    store.index_add(&index, &key, ttl).await?;
    Ok(CreatedSession { token, exp })
}

/// Revokes one session. Returns whether it existed.
///
/// # Errors
/// A store error.
pub async fn revoke(
    store: &dyn SessionStore,
    keyspace: &Keyspace,
    id: &SessionId,
) -> Result<bool, Error> {
    store.delete(&keyspace.session_key(id)).await
}

/// How `revoke_user` found the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The per-subject index.
    Index,
    /// A scan of the prefix.
    Scan,
}

/// What `revoke_user` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Sessions deleted.
    pub deleted: usize,
    /// Session keys examined (members of the index, or keys scanned).
    pub examined: u64,
    /// How they were found.
    pub via: Via,
}

/// Progress of a scan, reported after every page.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Session keys examined so far.
    pub examined: u64,
    /// Sessions deleted so far.
    pub deleted: usize,
    /// Time since the scan began.
    pub elapsed: Duration,
}

/// Revokes every session of `subject`: through the per-subject index where the format
/// keeps one and it is not empty, otherwise by scanning the prefix. `progress` is called
/// after every scanned page.
///
/// # Errors
/// A store error; sessions deleted before it stay deleted.
pub async fn revoke_user(
    store: &dyn SessionStore,
    keyspace: &Keyspace,
    fields: &Fields,
    subject: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Revoked, Error> {
    if let Some(index) = keyspace.user_index_key(subject) {
        let members = store.index_members(&index).await?;
        if !members.is_empty() {
            let deleted = revoke_indexed(store, keyspace, &index, &members).await?;
            return Ok(Revoked {
                deleted,
                examined: members.len() as u64,
                via: Via::Index,
            });
        }
    }
    let started = Instant::now();
    let format = keyspace.format();
    let mut pages = store.scan(keyspace.prefix());
    let (mut examined, mut deleted) = (0u64, 0usize);
    while let Some(page) = pages.next().await {
        let keys: Vec<String> = page?
            .into_iter()
            .filter(|k| keyspace.digest_of_key(k).is_some())
            .collect();
        examined += keys.len() as u64;
        let values = store.get_many(&keys).await?;
        let doomed: Vec<String> = keys
            .into_iter()
            .zip(values)
            .filter_map(|(key, value)| {
                let value = value.filter(|v| v.len() <= MAX_VALUE_BYTES)?;
                let doc = format.decode(&value).ok()?;
                (fields.subject(&doc)? == subject).then_some(key)
            })
            .collect();
        deleted += store.unlink(&doomed).await?;
        progress(Progress {
            examined,
            deleted,
            elapsed: started.elapsed(),
        });
    }
    Ok(Revoked {
        deleted,
        examined,
        via: Via::Scan,
    })
}

/// Deletes the indexed sessions, then removes them from the index. Deleting first means
/// a failure part-way leaves the rest indexed for the next attempt, and a session indexed
/// while this runs stays indexed (it is not among the members read, and is not removed).
async fn revoke_indexed(
    store: &dyn SessionStore,
    keyspace: &Keyspace,
    index: &str,
    members: &[String],
) -> Result<usize, Error> {
    let mut revoked = 0;
    for (done, key) in members.iter().enumerate() {
        // Only ever delete session keys, whatever the index holds.
        if keyspace.digest_of_key(key).is_none() {
            continue;
        }
        match store.delete(key).await {
            Ok(existed) => revoked += usize::from(existed),
            Err(e) => {
                // Best effort: unindex what is already gone; the rest stays indexed.
                let _ = store.index_remove(index, &members[..done]).await;
                return Err(e);
            }
        }
    }
    store.index_remove(index, members).await?;
    Ok(revoked)
}

/// `bytes` random bytes as lowercase hex (for names that must differ per process).
///
/// # Errors
/// [`Error::Config`] if the system has no randomness.
pub fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut raw = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| Error::Config("no system randomness".into()))?;
    let mut out = String::with_capacity(bytes * 2);
    crate::format::push_hex(&mut out, &raw);
    Ok(out)
}

/// A new random session cookie value: 32 random bytes, base64url (43 characters).
///
/// # Errors
/// [`Error::Config`] if the system has no randomness.
pub fn new_token() -> Result<SessionToken, Error> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| Error::Config("no system randomness".into()))?;
    SessionToken::parse(&URL_SAFE_NO_PAD.encode(raw))
        .map_err(|e| Error::Config(format!("generated token invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionSettings;
    use crate::format::{FormatSettings, build};
    use crate::store::memory::MemoryStore;

    fn native() -> (Keyspace, Fields) {
        let s = SessionSettings::default();
        let format = build(&s.format);
        (
            Keyspace::new(&s.key_prefix, &s.own_prefix, format),
            s.fields,
        )
    }

    #[tokio::test]
    async fn create_revoke_and_revoke_user_by_index() {
        let store = MemoryStore::new();
        let (keyspace, fields) = native();
        let ttl = Duration::from_secs(60);
        let mut claims = Map::new();
        claims.insert("roles".into(), serde_json::json!(["admin"]));
        let create = |sub: &'static str, claims: Map<String, Value>| {
            create_session(&store, &keyspace, &fields, sub, claims, ttl, 100)
        };
        let a = create("u1", claims).await.unwrap();
        let b = create("u1", Map::new()).await.unwrap();
        let c = create("u2", Map::new()).await.unwrap();
        assert_eq!(a.exp, 160);
        let key = |t: &SessionToken| {
            keyspace.session_key(&keyspace.format().session_id(t.expose()).unwrap())
        };
        let stored = store.get(&key(&a.token)).await.unwrap().unwrap();
        let v: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(v["sub"], "u1");
        assert_eq!(v["roles"][0], "admin");

        let id = |t: &SessionToken| keyspace.format().session_id(t.expose()).unwrap();
        assert!(revoke(&store, &keyspace, &id(&c.token)).await.unwrap());
        assert!(!revoke(&store, &keyspace, &id(&c.token)).await.unwrap());

        let revoked = revoke_user(&store, &keyspace, &fields, "u1", &mut |_| {})
            .await
            .unwrap();
        assert_eq!((revoked.deleted, revoked.via), (2, Via::Index));
        assert!(store.get(&key(&a.token)).await.unwrap().is_none());
        assert!(store.get(&key(&b.token)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn claims_cannot_override_subject_and_frameworks_write_their_own() {
        let store = MemoryStore::new();
        let (keyspace, fields) = native();
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::from("evil"));
        let r = create_session(
            &store,
            &keyspace,
            &fields,
            "u",
            claims,
            Duration::from_secs(1),
            0,
        )
        .await;
        assert!(matches!(r, Err(Error::Config(_))));
        let express = Keyspace::new(
            "sess:",
            "sg:keys:",
            build(&FormatSettings::Express { secrets: vec![] }),
        );
        let r = create_session(
            &store,
            &express,
            &fields,
            "u",
            Map::new(),
            Duration::from_secs(1),
            0,
        )
        .await;
        assert!(matches!(r, Err(Error::Config(m)) if m.contains("application")));
    }

    #[tokio::test]
    async fn revoke_user_scans_when_there_is_no_index() {
        let store = MemoryStore::new();
        let keyspace = Keyspace::new(
            "sess:",
            "sg:keys:",
            build(&FormatSettings::Express { secrets: vec![] }),
        );
        let fields = Fields {
            subject: crate::format::Field::parse("/passport/user").unwrap(),
            claims: vec![],
        };
        let ttl = Duration::from_secs(60);
        for i in 0..250 {
            let user = if i % 5 == 0 { "42" } else { "7" };
            let value = format!(r#"{{"cookie":{{}},"passport":{{"user":{user}}}}}"#);
            store
                .put(&format!("sess:sid-{i}"), value.as_bytes(), ttl)
                .await
                .unwrap();
        }
        // Keys under the prefix that are not sessions, and values that do not decode.
        store
            .put("sess:a b", b"{\"passport\":{\"user\":42}}", ttl)
            .await
            .unwrap();
        store.put("sess:bad", b"not json", ttl).await.unwrap();
        store
            .put("other:sid", b"{\"passport\":{\"user\":42}}", ttl)
            .await
            .unwrap();
        let mut pages = 0;
        let revoked = revoke_user(&store, &keyspace, &fields, "42", &mut |_| pages += 1)
            .await
            .unwrap();
        assert_eq!(revoked.via, Via::Scan);
        assert_eq!(revoked.deleted, 50);
        assert_eq!(revoked.examined, 251);
        assert!(pages >= 3, "{pages}");
        assert!(store.get("sess:sid-0").await.unwrap().is_none());
        assert!(store.get("sess:sid-1").await.unwrap().is_some());
        assert!(
            store.get("sess:a b").await.unwrap().is_some(),
            "not a session key"
        );
        assert!(store.get("other:sid").await.unwrap().is_some());
    }
}
