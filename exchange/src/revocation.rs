//! Creating and revoking sessions, and the per-subject index that `revoke-user` uses.
//!
//! Revocation is deletion: deleting a session key revokes it, and the gateway refuses
//! it on critical routes at once and elsewhere once its cache stops trusting it. To
//! revoke every session of a subject, each session key is also added to the set
//! `key_prefix + "user:" + subject` (kept as long as its longest session), and
//! `revoke_user` deletes every member, then removes it from the set. Deleting keys is
//! the only revocation mechanism, so both paths share the same bound. Login services
//! that write sessions themselves must `SADD` the key to the index too
//! (docs/redis-schema.md, docs/revocation.md).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::session::record::{redis_key, user_index_key};
use crate::store::SessionStore;
use crate::{Error, SessionSettings, SessionToken};

/// A session written by [`create_session`].
pub struct CreatedSession {
    /// The cookie value to hand to the browser. Never log it.
    pub token: SessionToken,
    /// Unix time at which it expires.
    pub exp: u64,
}

/// Writes a new session for `subject` with extra `claims`, valid for `ttl`, and indexes it.
///
/// # Errors
/// A store error, or [`Error::Config`] when `claims` tries to set the subject or `exp`.
pub async fn create_session(
    store: &dyn SessionStore,
    settings: &SessionSettings,
    subject: &str,
    claims: Map<String, Value>,
    ttl: Duration,
    now: u64,
) -> Result<CreatedSession, Error> {
    if claims.contains_key(&settings.subject_field) || claims.contains_key("exp") {
        return Err(Error::Config(format!(
            "claims may not set `{}` or `exp`",
            settings.subject_field
        )));
    }
    let token = new_token()?;
    let exp = now + ttl.as_secs().max(1);
    let mut value = claims;
    value.insert(
        settings.subject_field.clone(),
        Value::String(subject.to_owned()),
    );
    value.insert("exp".into(), Value::from(exp));
    value.insert("iat".into(), Value::from(now));
    let json = Value::Object(value).to_string();
    let key = redis_key(&settings.key_prefix, &token, settings.hashed_keys);
    store.put(&key, json.as_bytes(), ttl).await?;
    store
        .index_add(&user_index_key(&settings.key_prefix, subject), &key, ttl)
        .await?;
    Ok(CreatedSession { token, exp })
}

/// Revokes one session. Returns whether it existed.
///
/// # Errors
/// A store error.
pub async fn revoke(
    store: &dyn SessionStore,
    settings: &SessionSettings,
    token: &SessionToken,
) -> Result<bool, Error> {
    store
        .delete(&redis_key(
            &settings.key_prefix,
            token,
            settings.hashed_keys,
        ))
        .await
}

/// Revokes every indexed session of `subject`. Returns how many existed.
///
/// The sessions are deleted first and only then removed from the index, so a failure
/// part-way leaves the rest indexed for the next attempt, and a session indexed while
/// this runs stays indexed (it is not among the members read, and is not removed).
///
/// # Errors
/// A store error; sessions deleted before it stay deleted.
pub async fn revoke_user(
    store: &dyn SessionStore,
    settings: &SessionSettings,
    subject: &str,
) -> Result<usize, Error> {
    let index = user_index_key(&settings.key_prefix, subject);
    let members = store.index_members(&index).await?;
    let mut revoked = 0;
    for (done, key) in members.iter().enumerate() {
        // Only ever delete session keys under our prefix, whatever the index holds.
        if !key.starts_with(&settings.key_prefix) {
            continue;
        }
        match store.delete(key).await {
            Ok(existed) => revoked += usize::from(existed),
            Err(e) => {
                // Best effort: unindex what is already gone; the rest stays indexed.
                let _ = store.index_remove(&index, &members[..done]).await;
                return Err(e);
            }
        }
    }
    store.index_remove(&index, &members).await?;
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
    crate::session::record::push_hex(&mut out, &raw);
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
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn create_revoke_and_revoke_user() {
        let store = MemoryStore::new();
        let settings = SessionSettings::default();
        let ttl = Duration::from_secs(60);
        let mut claims = Map::new();
        claims.insert("roles".into(), serde_json::json!(["admin"]));
        let a = create_session(&store, &settings, "u1", claims.clone(), ttl, 100)
            .await
            .unwrap();
        let b = create_session(&store, &settings, "u1", Map::new(), ttl, 100)
            .await
            .unwrap();
        let c = create_session(&store, &settings, "u2", Map::new(), ttl, 100)
            .await
            .unwrap();
        assert_eq!(a.exp, 160);
        let key = |t: &SessionToken| redis_key(&settings.key_prefix, t, true);
        let stored = store.get(&key(&a.token)).await.unwrap().unwrap();
        let v: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(v["sub"], "u1");
        assert_eq!(v["roles"][0], "admin");

        assert!(revoke(&store, &settings, &c.token).await.unwrap());
        assert!(!revoke(&store, &settings, &c.token).await.unwrap());

        assert_eq!(revoke_user(&store, &settings, "u1").await.unwrap(), 2);
        assert!(store.get(&key(&a.token)).await.unwrap().is_none());
        assert!(store.get(&key(&b.token)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn claims_cannot_override_subject() {
        let store = MemoryStore::new();
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::from("evil"));
        let r = create_session(
            &store,
            &SessionSettings::default(),
            "u",
            claims,
            Duration::from_secs(1),
            0,
        )
        .await;
        assert!(matches!(r, Err(Error::Config(_))));
    }
}
