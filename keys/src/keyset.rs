//! [`KeySet`]: an immutable snapshot of parsed keys with their states at one instant,
//! and the JWKS rendered from them. Built whole, swapped whole (see [`Keyring`](crate::Keyring)).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::jwks::Jwks;
use crate::rotation::{Phase, classify};
use crate::{Error, KeyRecord, KeyState, RotationPolicy, SigningKey, UnixTime};

/// Source of [`KeySet::generation`].
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The published keys at one instant, with the current signer and the JWKS document.
pub struct KeySet {
    /// Published keys ordered by activation time, then kid.
    keys: Vec<Arc<SigningKey>>,
    current: Option<Arc<SigningKey>>,
    jwks: Jwks,
    next_change: Option<UnixTime>,
    generation: u64,
}

impl KeySet {
    /// Parses `records` and derives their states at `now` under `policy`.
    ///
    /// A non-retired key with `activate_at <= now` is active. The newest active key of
    /// `policy.algorithm` is [`KeyState::Current`]; if none of that algorithm is active,
    /// the newest active key of any algorithm is (so an algorithm change migrates
    /// without a gap). Keys activating later are [`KeyState::Next`]. Other active keys
    /// are [`KeyState::Previous`] until `retain_after` after a newer key took over from
    /// them, then unpublished. Retired keys are never published nor used. With only
    /// pending keys, [`current`](Self::current) is `None`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if a published key's private key does not parse;
    /// [`Error::AlreadyExists`] if two records share a kid; [`Error::Jwk`] if the JWKS
    /// cannot be rendered.
    pub fn build(
        records: &[KeyRecord],
        now: UnixTime,
        policy: &RotationPolicy,
    ) -> Result<KeySet, Error> {
        let mut keys = Vec::new();
        let mut next_change: Option<UnixTime> = None;
        for c in classify(records, now, policy) {
            if let Some(dupe) = records.iter().filter(|r| r.kid == c.record.kid).nth(1) {
                return Err(Error::AlreadyExists {
                    kid: dupe.kid.clone(),
                });
            }
            let change = match c.phase {
                Phase::Next => Some(c.record.activate_at),
                Phase::Previous { until } => until,
                _ => None,
            };
            if let Some(at) = change {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
            if let Some(state) = c.phase.state() {
                keys.push(Arc::new(SigningKey::from_record(c.record, state)?));
            }
        }
        keys.sort_by(|a, b| (a.activate_at(), a.kid()).cmp(&(b.activate_at(), b.kid())));
        let current = keys
            .iter()
            .find(|k| k.state() == KeyState::Current)
            .cloned();
        let jwks = Jwks::render(&keys)?;
        Ok(KeySet {
            keys,
            current,
            jwks,
            next_change,
            generation: next_generation(),
        })
    }

    /// A set with no keys: nothing signs, the JWKS is `{"keys":[]}`.
    pub fn empty() -> KeySet {
        KeySet {
            keys: Vec::new(),
            current: None,
            jwks: Jwks::empty(),
            next_change: None,
            generation: next_generation(),
        }
    }

    /// The key that signs new tokens, if any is active.
    pub fn current(&self) -> Option<&Arc<SigningKey>> {
        self.current.as_ref()
    }

    /// The published key with this kid.
    pub fn get(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.keys.iter().find(|k| k.kid().as_str() == kid)
    }

    /// Whether the kid is still published, so tokens it signed may still be reused.
    pub fn is_published(&self, kid: &str) -> bool {
        self.get(kid).is_some()
    }

    /// The published keys, ordered by activation time then kid.
    pub fn keys(&self) -> &[Arc<SigningKey>] {
        &self.keys
    }

    /// How many published keys are in `state`.
    pub fn count(&self, state: KeyState) -> usize {
        self.keys.iter().filter(|k| k.state() == state).count()
    }

    /// The JWKS document of the published keys.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The earliest instant after the build at which a state changes (a next key
    /// activates or a previous key stops being published): rebuild then.
    pub fn next_change(&self) -> Option<UnixTime> {
        self.next_change
    }

    /// Increases with every set built in this process.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the current key activated.
    pub fn last_rotation(&self) -> Option<UnixTime> {
        self.current.as_ref().map(|k| k.activate_at())
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("generation", &self.generation)
            .field("keys", &self.keys)
            .field("next_change", &self.next_change)
            .field("jwks", &self.jwks)
            .finish()
    }
}

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed) + 1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::jwk::JwkSet;

    use super::*;
    use crate::{Algorithm, generate};

    fn policy(alg: Algorithm) -> RotationPolicy {
        RotationPolicy {
            algorithm: alg,
            rotate_every: Duration::from_secs(86_400),
            publish_ahead: Duration::from_secs(3600),
            retain_after: Duration::from_secs(600),
        }
    }

    fn states(set: &KeySet) -> Vec<(String, KeyState)> {
        set.keys()
            .iter()
            .map(|k| (k.kid().to_string(), k.state()))
            .collect()
    }

    #[test]
    fn states_next_change_and_lookup() {
        let t0 = 1_000_000;
        let a = generate(Algorithm::Es256, t0 - 100, t0 - 100).unwrap();
        let b = generate(Algorithm::Es256, t0, t0 + 3600).unwrap();
        let retired = KeyRecord {
            retired_at: Some(t0 - 1),
            ..generate(Algorithm::Es256, t0 - 50, t0 - 50).unwrap()
        };
        let records = vec![b.clone(), retired.clone(), a.clone()];
        let p = policy(Algorithm::Es256);

        let set = KeySet::build(&records, t0, &p).unwrap();
        let (ka, kb) = (a.kid.to_string(), b.kid.to_string());
        assert_eq!(
            states(&set),
            vec![
                (ka.clone(), KeyState::Current),
                (kb.clone(), KeyState::Next)
            ]
        );
        assert_eq!(set.current().unwrap().kid(), &a.kid);
        assert_eq!(set.last_rotation(), Some(t0 - 100));
        assert_eq!(set.next_change(), Some(t0 + 3600));
        assert_eq!(
            (set.count(KeyState::Next), set.count(KeyState::Current)),
            (1, 1)
        );
        assert!(set.is_published(&kb));
        assert!(!set.is_published(retired.kid.as_str()));
        assert!(set.get(retired.kid.as_str()).is_none());

        let set = KeySet::build(&records, t0 + 3600, &p).unwrap();
        assert_eq!(
            states(&set),
            vec![
                (ka.clone(), KeyState::Previous),
                (kb.clone(), KeyState::Current)
            ]
        );
        assert_eq!(set.next_change(), Some(t0 + 3600 + 600));
        assert_eq!(set.last_rotation(), Some(t0 + 3600));

        let set = KeySet::build(&records, t0 + 3600 + 600, &p).unwrap();
        assert_eq!(states(&set), vec![(kb, KeyState::Current)]);
        assert_eq!(set.next_change(), None);
        assert!(!set.is_published(&ka));
    }

    #[test]
    fn algorithm_migration_has_no_gap() {
        let t0 = 1_000_000;
        let old = generate(Algorithm::Es256, t0 - 100, t0 - 100).unwrap();
        let new = generate(Algorithm::EdDsa, t0, t0 + 3600).unwrap();
        let records = vec![old.clone(), new.clone()];
        let p = policy(Algorithm::EdDsa);
        for (now, current, count) in [
            (t0, &old, 2),
            (t0 + 3599, &old, 2),
            (t0 + 3600, &new, 2),
            (t0 + 4199, &new, 2),
            (t0 + 4200, &new, 1),
        ] {
            let set = KeySet::build(&records, now, &p).unwrap();
            let cur = set.current().unwrap();
            assert_eq!(cur.kid(), &current.kid, "at {now}");
            assert_eq!(cur.alg(), current.alg, "at {now}");
            assert_eq!(set.keys().len(), count, "at {now}");
        }
    }

    #[test]
    fn only_pending_keys_means_no_current() {
        let t0 = 1_000_000;
        let next = generate(Algorithm::EdDsa, t0, t0 + 10).unwrap();
        let set = KeySet::build(&[next], t0, &policy(Algorithm::EdDsa)).unwrap();
        assert!(set.current().is_none());
        assert_eq!(set.last_rotation(), None);
        assert_eq!(set.count(KeyState::Next), 1);
        assert_eq!(set.next_change(), Some(t0 + 10));
    }

    #[test]
    fn jwks_is_stable_and_tracks_the_set() {
        let t0 = 1_000_000;
        let p = policy(Algorithm::Es256);
        let a = generate(Algorithm::Es256, t0, t0).unwrap();
        let b = generate(Algorithm::EdDsa, t0, t0 + 3600).unwrap();

        let one = KeySet::build(&[a.clone(), b.clone()], t0, &p).unwrap();
        // Same keys, other record order, other instant with the same published keys.
        let two = KeySet::build(&[b.clone(), a.clone()], t0 + 3600, &p).unwrap();
        assert_eq!(one.jwks().body(), two.jwks().body());
        assert_eq!(one.jwks().etag(), two.jwks().etag());
        assert!(two.generation() > one.generation());

        let three = KeySet::build(std::slice::from_ref(&a), t0, &p).unwrap();
        assert_ne!(one.jwks().etag(), three.jwks().etag());
        assert_ne!(KeySet::empty().jwks().etag(), three.jwks().etag());

        // The body is a JwkSet in activation order with the SPEC's fields.
        let doc: serde_json::Value = serde_json::from_slice(one.jwks().body()).unwrap();
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        let es = &keys[0];
        assert_eq!(es["kid"], a.kid.as_str());
        assert_eq!(es["kty"], "EC");
        assert_eq!(es["alg"], "ES256");
        assert_eq!(es["use"], "sig");
        assert_eq!(es["crv"], "P-256");
        assert!(es["x"].as_str().is_some_and(|x| x.len() == 43));
        assert!(es["y"].as_str().is_some_and(|y| y.len() == 43));
        assert!(es.get("d").is_none());
        let ed = &keys[1];
        assert_eq!(ed["kid"], b.kid.as_str());
        assert_eq!(ed["kty"], "OKP");
        assert_eq!(ed["alg"], "EdDSA");
        assert_eq!(ed["use"], "sig");
        assert_eq!(ed["crv"], "Ed25519");
        assert!(ed["x"].as_str().is_some_and(|x| x.len() == 43));
        assert!(ed.get("y").is_none() && ed.get("d").is_none());
        let parsed: JwkSet = serde_json::from_slice(one.jwks().body()).unwrap();
        assert_eq!(parsed.keys.len(), 2);
        assert!(parsed.find(a.kid.as_str()).is_some());
    }

    #[test]
    fn bad_records_fail_the_build() {
        let t0 = 1_000_000;
        let p = policy(Algorithm::Es256);
        let a = generate(Algorithm::Es256, t0, t0).unwrap();
        let wrong_alg = KeyRecord {
            alg: Algorithm::EdDsa,
            ..a.clone()
        };
        let err = KeySet::build(&[wrong_alg], t0, &p).unwrap_err();
        assert_eq!(err.kind(), "invalid_key");
        assert!(err.to_string().contains(a.kid.as_str()));
        let err = KeySet::build(&[a.clone(), a], t0, &p).unwrap_err();
        assert_eq!(err.kind(), "already_exists");
    }
}
