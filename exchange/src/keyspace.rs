//! The gateway's Redis keyspace for sessions: session keys, the per-subject index, the
//! canary. The one place that spells a session-related key (docs/redis-schema.md).
//!
//! Sessions live under `session.key_prefix`, which with the framework formats is the
//! framework's (`sess:`): nothing but sessions may be written there, since push
//! invalidation tracks the whole prefix and `revoke-user` scans it. The gateway's own keys
//! (the canary here, the keyring in `keys`) live under `keys.redis_prefix` instead.

use std::sync::Arc;

use crate::format::{SessionFormat, SessionId};

/// Where sessions and the gateway's session-related keys are.
#[derive(Clone)]
pub struct Keyspace {
    prefix: Arc<str>,
    own: Arc<str>,
    format: Arc<dyn SessionFormat>,
}

impl Keyspace {
    /// Sessions of `format` under `prefix`; the gateway's own keys under `own`.
    pub fn new(prefix: &str, own: &str, format: Arc<dyn SessionFormat>) -> Self {
        Self {
            prefix: prefix.into(),
            own: own.into(),
            format,
        }
    }

    /// The session key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The format sessions are written in.
    pub fn format(&self) -> &Arc<dyn SessionFormat> {
        &self.format
    }

    /// The Redis key of a session.
    pub fn session_key(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        id.push_key(&mut key);
        key
    }

    /// The digest of the session a Redis key holds, or `None` for any other key (an
    /// index, a key of the application's that shares the prefix).
    pub fn digest_of_key(&self, key: &str) -> Option<[u8; 32]> {
        self.format.digest_of_key(key.strip_prefix(&*self.prefix)?)
    }

    /// The set of a subject's session keys (`sessiongate` format only:
    /// `key_prefix + "user:" + subject`; its members are session keys).
    pub fn user_index_key(&self, subject: &str) -> Option<String> {
        self.format
            .is_native()
            .then(|| format!("{}user:{subject}", self.prefix))
    }

    /// A replica's canary key (`own + "canary:" + id`): its disappearance means the
    /// database was flushed.
    pub fn canary_key(&self, id: &str) -> String {
        format!("{}canary:{id}", self.own)
    }
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyspace")
            .field("prefix", &self.prefix)
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FormatSettings, build};

    #[test]
    fn keys_of_each_part() {
        let native = Keyspace::new(
            "sg:session:",
            "sg:keys:",
            build(&FormatSettings::Sessiongate { hashed_keys: true }),
        );
        let id = native
            .format()
            .session_id("abcdefghijklmnopqrstuvwxyz012345")
            .unwrap();
        let key = native.session_key(&id);
        assert!(key.starts_with("sg:session:") && key.len() == 11 + 64);
        assert_eq!(native.digest_of_key(&key), Some(*id.digest()));
        assert_eq!(native.digest_of_key("other:abc"), None);
        assert_eq!(
            native.user_index_key("alice").as_deref(),
            Some("sg:session:user:alice")
        );
        assert_eq!(native.digest_of_key("sg:session:user:alice"), None);
        assert_eq!(native.canary_key("00ff"), "sg:keys:canary:00ff");

        let django = Keyspace::new(
            ":1:django.contrib.sessions.cache",
            "sg:keys:",
            build(&FormatSettings::Django),
        );
        assert_eq!(django.user_index_key("42"), None);
    }
}
