//! Rotation: the policy, the pure state derivation shared with [`KeySet`](crate::KeySet),
//! and [`plan`], which says what must change at a given `now`.
//!
//! Time is always passed in (`now`), never read here, so every rule is testable with a
//! table of instants.

use std::cmp::Ordering;
use std::time::Duration;

use crate::{Algorithm, KeyRecord, KeyState, Kid, UnixTime};

/// Rotation settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// The algorithm new keys use. Changing it migrates without a gap: the old key keeps
    /// signing until a key of the new algorithm activates.
    pub algorithm: Algorithm,
    /// How long a key is current before its successor takes over.
    pub rotate_every: Duration,
    /// How long a new key is published before it signs.
    pub publish_ahead: Duration,
    /// How long a superseded key stays published: the longest token ttl plus clock skew.
    pub retain_after: Duration,
}

/// A change the key store needs at some instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Generate and store a key of `alg` that signs from `activate_at`.
    Create {
        /// The algorithm.
        alg: Algorithm,
        /// When it starts signing.
        activate_at: UnixTime,
    },
    /// Delete a retired or expired key from the store.
    Remove {
        /// The key to delete.
        kid: Kid,
    },
}

/// What must change at `now` for `records` to follow `policy`.
///
/// Rules, in order:
/// 1. No non-retired key is active (`activate_at <= now`): create one that signs at
///    once. This is the bootstrap (an empty store), and also the emergency case where
///    the current key was just retired and only a pending (next) key is left.
///
///    Trade-off: the emergency key signs before any verifier can have fetched it, so a
///    verifier with a cached JWKS rejects its tokens until it refetches (most refetch
///    on an unknown `kid`; some only when their cache expires). The alternative, not
///    signing until the pending key activates, is a certain outage of up to
///    `publish_ahead`; a retired key must never sign again. Activating the pending key
///    early would be published longer, but records never change their `activate_at`.
///    Rules 2 and 3 are skipped in this case; the pending key takes over on schedule.
/// 2. The newest non-retired key of `policy.algorithm` activated at least
///    `rotate_every - publish_ahead` ago: create its successor, signing at
///    `now + publish_ahead` (so it takes over `rotate_every` after its predecessor).
///    A pending key of `policy.algorithm` is newer than `now`, so it blocks this rule.
/// 3. No key of `policy.algorithm` at all (the algorithm changed) and no key of any
///    algorithm pending: create one signing at `now + publish_ahead`.
/// 4. Remove retired keys, and superseded keys whose `retain_after` has passed.
///
/// Creations come first, then removals ordered by activation time and kid.
pub fn plan(now: UnixTime, records: &[KeyRecord], policy: &RotationPolicy) -> Vec<Transition> {
    let mut out = Vec::new();
    let live: Vec<&KeyRecord> = records.iter().filter(|r| r.retired_at.is_none()).collect();
    let ahead = activation_after(now, policy);
    if !live.iter().any(|r| r.activate_at <= now) {
        out.push(Transition::Create {
            alg: policy.algorithm,
            activate_at: now,
        });
    } else {
        match newest_of(&live, policy.algorithm) {
            Some(newest) => {
                if now >= rotation_due(newest, policy) {
                    out.push(Transition::Create {
                        alg: policy.algorithm,
                        activate_at: ahead,
                    });
                }
            }
            None => {
                if !live.iter().any(|r| r.activate_at > now) {
                    out.push(Transition::Create {
                        alg: policy.algorithm,
                        activate_at: ahead,
                    });
                }
            }
        }
    }
    let mut removals: Vec<&KeyRecord> = classify(records, now, policy)
        .into_iter()
        .filter(|c| matches!(c.phase, Phase::Retired | Phase::Expired))
        .map(|c| c.record)
        .collect();
    removals.sort_by(|a, b| age_order(a, b));
    out.extend(
        removals
            .into_iter()
            .map(|r| Transition::Remove { kid: r.kid.clone() }),
    );
    out
}

/// When [`plan`] will next create a key by rule 2: `rotate_every - publish_ahead` after
/// the newest non-retired key of `policy.algorithm` activated. `None` if there is no
/// such key (then [`plan`] decides by rules 1 and 3 at once).
pub fn next_rotation(records: &[KeyRecord], policy: &RotationPolicy) -> Option<UnixTime> {
    let live: Vec<&KeyRecord> = records.iter().filter(|r| r.retired_at.is_none()).collect();
    newest_of(&live, policy.algorithm).map(|r| rotation_due(r, policy))
}

// === state derivation (shared with KeySet) ===

/// A record's phase at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Retired: never published nor used.
    Retired,
    /// Published, activates later.
    Next,
    /// Signing.
    Current,
    /// Superseded, published until `until` (`None`: not superseded by a key that is
    /// known to have taken over from it, so kept until one is).
    Previous { until: Option<UnixTime> },
    /// Superseded longer than `retain_after` ago: no longer published.
    Expired,
}

impl Phase {
    /// The published state, if the phase is published.
    pub(crate) fn state(self) -> Option<KeyState> {
        match self {
            Phase::Next => Some(KeyState::Next),
            Phase::Current => Some(KeyState::Current),
            Phase::Previous { .. } => Some(KeyState::Previous),
            Phase::Retired | Phase::Expired => None,
        }
    }
}

/// A record with its phase.
#[derive(Debug)]
pub(crate) struct Classified<'a> {
    pub(crate) record: &'a KeyRecord,
    pub(crate) phase: Phase,
}

/// Derives every record's phase at `now`, in the order of `records`.
///
/// Active = not retired and `activate_at <= now`. Current = the newest active key of
/// `policy.algorithm`, else the newest active key of any algorithm. Another active key
/// `k` was superseded at the earliest activation of a newer active key that certainly
/// took over from it: one of `k`'s algorithm, or the current key. It stays published
/// until that instant plus `retain_after`; with no such key it stays published.
pub(crate) fn classify<'a>(
    records: &'a [KeyRecord],
    now: UnixTime,
    policy: &RotationPolicy,
) -> Vec<Classified<'a>> {
    let active: Vec<&KeyRecord> = records
        .iter()
        .filter(|r| r.retired_at.is_none() && r.activate_at <= now)
        .collect();
    let current = newest_of(&active, policy.algorithm).or_else(|| newest(&active));
    let retain = policy.retain_after.as_secs();
    records
        .iter()
        .map(|record| {
            let phase = if record.retired_at.is_some() {
                Phase::Retired
            } else if record.activate_at > now {
                Phase::Next
            } else if current.is_some_and(|c| std::ptr::eq(c, record)) {
                Phase::Current
            } else {
                let superseded = active
                    .iter()
                    .filter(|j| age_order(j, record) == Ordering::Greater)
                    .filter(|j| {
                        j.alg == record.alg || current.is_some_and(|c| std::ptr::eq(c, **j))
                    })
                    .map(|j| j.activate_at)
                    .min();
                match superseded {
                    None => Phase::Previous { until: None },
                    Some(at) => {
                        let until = at.saturating_add(retain);
                        if now < until {
                            Phase::Previous { until: Some(until) }
                        } else {
                            Phase::Expired
                        }
                    }
                }
            };
            Classified { record, phase }
        })
        .collect()
}

/// Orders keys from oldest to newest: by activation, then creation, then kid.
pub(crate) fn age_order(a: &KeyRecord, b: &KeyRecord) -> Ordering {
    (a.activate_at, a.created_at, &a.kid).cmp(&(b.activate_at, b.created_at, &b.kid))
}

fn newest<'a>(records: &[&'a KeyRecord]) -> Option<&'a KeyRecord> {
    records.iter().copied().max_by(|a, b| age_order(a, b))
}

fn newest_of<'a>(records: &[&'a KeyRecord], alg: Algorithm) -> Option<&'a KeyRecord> {
    records
        .iter()
        .copied()
        .filter(|r| r.alg == alg)
        .max_by(|a, b| age_order(a, b))
}

/// When a key created at `now` may start signing: `publish_ahead` later, rounded up.
/// `now` is whole seconds rounded down, so a key written at 100.9 s would otherwise sign
/// at 100 + publish_ahead, up to a second short of the promise.
pub(crate) fn activation_after(now: UnixTime, policy: &RotationPolicy) -> UnixTime {
    now.saturating_add(1)
        .saturating_add(policy.publish_ahead.as_secs())
}

/// When the successor of `newest` is created: early enough that it signs (after
/// [`activation_after`]) exactly `rotate_every` after `newest` did.
fn rotation_due(newest: &KeyRecord, policy: &RotationPolicy) -> UnixTime {
    let lead = policy
        .rotate_every
        .saturating_sub(policy.publish_ahead)
        .as_secs()
        .saturating_sub(1);
    newest.activate_at.saturating_add(lead)
}

impl Default for RotationPolicy {
    /// The SPEC defaults: ES256, rotate every 24 h, publish 30 min ahead, keep a
    /// superseded key 10 min (5 min token ttl plus skew).
    fn default() -> Self {
        RotationPolicy {
            algorithm: Algorithm::Es256,
            rotate_every: Duration::from_secs(24 * 3600),
            publish_ahead: Duration::from_secs(30 * 60),
            retain_after: Duration::from_secs(10 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretBytes;

    const H: u64 = 3600;

    fn policy(alg: Algorithm) -> RotationPolicy {
        RotationPolicy {
            algorithm: alg,
            rotate_every: Duration::from_secs(24 * H),
            publish_ahead: Duration::from_secs(H),
            retain_after: Duration::from_secs(600),
        }
    }

    /// A record without usable key material (planning never parses keys).
    fn rec(kid: &str, alg: Algorithm, activate_at: u64, retired_at: Option<u64>) -> KeyRecord {
        KeyRecord {
            kid: Kid::from(kid),
            alg,
            created_at: activate_at.saturating_sub(H),
            activate_at,
            retired_at,
            private_pkcs8: SecretBytes::new(Vec::new()),
        }
    }

    use Algorithm::{EdDsa as Ed, Es256 as Es};

    /// Name, now, records, policy algorithm, expected outputs.
    type Case<T> = (&'static str, u64, Vec<KeyRecord>, Algorithm, Vec<T>);

    fn create(alg: Algorithm, activate_at: u64) -> Transition {
        Transition::Create { alg, activate_at }
    }

    fn remove(kid: &str) -> Transition {
        Transition::Remove {
            kid: Kid::from(kid),
        }
    }

    #[test]
    fn plan_rules() {
        let t0 = 1_000_000;
        let day = 24 * H;
        #[rustfmt::skip]
        let cases: Vec<Case<Transition>> = vec![
            ("bootstrap: empty store signs at once",
                t0, vec![], Es, vec![create(Es, t0)]),
            ("bootstrap with EdDSA",
                t0, vec![], Ed, vec![create(Ed, t0)]),
            ("bootstrap: only retired keys, which are removed",
                t0, vec![rec("a", Es, t0 - day, Some(t0 - 5))], Es,
                vec![create(Es, t0), remove("a")]),
            ("fresh current key: nothing to do",
                t0, vec![rec("a", Es, t0 - H, None)], Es, vec![]),
            ("one second before the rotation is due: nothing",
                t0 - H - 2, vec![rec("a", Es, t0 - day, None)], Es, vec![]),
            ("rotation due one second before rotate_every - publish_ahead: successor signs \
              publish_ahead after the next whole second, exactly rotate_every after the first",
                t0 - H - 1, vec![rec("a", Es, t0 - day, None)], Es, vec![create(Es, t0)]),
            ("rotation overdue (gateway was down): successor still publish_ahead ahead",
                t0 + 3 * day, vec![rec("a", Es, t0 - day, None)], Es,
                vec![create(Es, t0 + 3 * day + 1 + H)]),
            ("successor already pending: nothing",
                t0 - 30, vec![rec("a", Es, t0 - day, None), rec("b", Es, t0, None)], Es, vec![]),
            ("successor just activated, previous still retained",
                t0 + 599, vec![rec("a", Es, t0 - day, None), rec("b", Es, t0, None)], Es, vec![]),
            ("previous past retain_after is removed",
                t0 + 600, vec![rec("a", Es, t0 - day, None), rec("b", Es, t0, None)], Es,
                vec![remove("a")]),
            ("retired key is removed, even the current one",
                t0, vec![rec("a", Es, t0 - 2 * H, None), rec("b", Es, t0 - H, Some(t0))], Es,
                vec![remove("b")]),
            ("algorithm changed: create one of the new algorithm ahead",
                t0, vec![rec("a", Es, t0 - H, None)], Ed, vec![create(Ed, t0 + 1 + H)]),
            ("algorithm changed but a key (of the old algorithm) is pending: wait",
                t0, vec![rec("a", Es, t0 - H, None), rec("b", Es, t0 + 10, None)], Ed, vec![]),
            ("algorithm changed, new key pending: nothing",
                t0, vec![rec("a", Es, t0 - H, None), rec("b", Ed, t0 + 10, None)], Ed, vec![]),
            ("migration done: old-algorithm key expires after retain_after",
                t0 + 600, vec![rec("a", Es, t0 - H, None), rec("b", Ed, t0, None)], Ed,
                vec![remove("a")]),
            ("migration: old key retained until then",
                t0 + 599, vec![rec("a", Es, t0 - H, None), rec("b", Ed, t0, None)], Ed, vec![]),
            ("rotation due on the policy algorithm ignores a pending key of another",
                t0, vec![rec("a", Ed, t0 - day, None), rec("x", Es, t0 + 10, None)], Ed,
                vec![create(Ed, t0 + 1 + H)]),
            ("emergency: current key retired, only a next key left: sign at once",
                t0, vec![rec("a", Es, t0 - H, Some(t0)), rec("b", Es, t0 + 30 * 60, None)], Es,
                vec![create(Es, t0), remove("a")]),
            ("emergency: only a pending key of another algorithm",
                t0, vec![rec("b", Ed, t0 + 10, None)], Es, vec![create(Es, t0)]),
            ("emergency: only pending keys, none retired",
                t0, vec![rec("b", Es, t0 + 10, None), rec("c", Es, t0 + 20, None)], Es,
                vec![create(Es, t0)]),
            ("a key activating exactly now counts as active",
                t0, vec![rec("a", Es, t0 - H, Some(t0)), rec("b", Es, t0, None)], Es,
                vec![remove("a")]),
            ("emergency key in place: the pending key takes over later, nothing to do",
                t0 + 5, vec![rec("b", Es, t0 + 30 * 60, None), rec("e", Es, t0, None)], Es,
                vec![]),
            ("removals are ordered oldest first",
                t0, vec![rec("c", Es, t0 - H, Some(t0)), rec("b", Es, t0 - 2 * H, Some(t0)),
                         rec("a", Es, t0 - 30, None)], Es,
                vec![remove("b"), remove("c")]),
        ];
        for (name, now, records, alg, expected) in cases {
            assert_eq!(plan(now, &records, &policy(alg)), expected, "{name}");
        }
    }

    #[test]
    fn activation_rounds_up_so_publish_ahead_is_never_short() {
        // A key written at 100.9 s is planned at now = 100: it signs at 100 + 1 + ahead,
        // at least `publish_ahead` after it was written, never 0.9 s short.
        let p = policy(Es);
        let ahead = p.publish_ahead.as_secs();
        assert_eq!(activation_after(100, &p), 101 + ahead);
        let written = 100.9_f64;
        assert!(activation_after(100, &p) as f64 - written >= ahead as f64);
    }

    #[test]
    fn rotation_interval_is_rotate_every() {
        // Following the plan at each due instant activates keys exactly rotate_every apart.
        let p = policy(Es);
        let mut records = Vec::new();
        let mut now = 5_000;
        let mut activations = Vec::new();
        for i in 0..4 {
            for t in plan(now, &records, &p) {
                if let Transition::Create { alg, activate_at } = t {
                    activations.push(activate_at);
                    records.push(rec(&format!("k{i}"), alg, activate_at, None));
                }
            }
            now = next_rotation(&records, &p).unwrap();
        }
        let day = 24 * H;
        assert_eq!(
            activations,
            vec![5_000, 5_000 + day, 5_000 + 2 * day, 5_000 + 3 * day]
        );
    }

    fn phases(now: u64, records: &[KeyRecord], alg: Algorithm) -> Vec<(String, Phase)> {
        classify(records, now, &policy(alg))
            .into_iter()
            .map(|c| (c.record.kid.to_string(), c.phase))
            .collect()
    }

    #[test]
    fn state_derivation() {
        use Phase::*;
        let t0 = 1_000_000;
        let prev = |until| Previous { until: Some(until) };
        #[rustfmt::skip]
        let cases: Vec<Case<Phase>> = vec![
            ("single active key is current",
                t0, vec![rec("a", Es, t0, None)], Es, vec![Current]),
            ("only a pending key: next, no current",
                t0, vec![rec("a", Es, t0 + 1, None)], Es, vec![Next]),
            ("rotation: old current, new next",
                t0, vec![rec("a", Es, t0 - 10, None), rec("b", Es, t0 + 10, None)], Es,
                vec![Current, Next]),
            ("rotation: new current, old previous until activation + retain",
                t0 + 10, vec![rec("a", Es, t0 - 10, None), rec("b", Es, t0 + 10, None)], Es,
                vec![prev(t0 + 610), Current]),
            ("previous expires at superseded + retain_after",
                t0 + 610, vec![rec("a", Es, t0 - 10, None), rec("b", Es, t0 + 10, None)], Es,
                vec![Expired, Current]),
            ("superseded by the next key, not the newest",
                t0 + 100, vec![rec("a", Es, t0 - 200, None), rec("b", Es, t0 - 100, None),
                               rec("c", Es, t0 + 50, None)], Es,
                vec![prev(t0 - 100 + 600), prev(t0 + 650), Current]),
            ("retired keys are neither published nor current",
                t0, vec![rec("a", Es, t0 - 10, None), rec("b", Es, t0 - 5, Some(t0))], Es,
                vec![Current, Retired]),
            ("algorithm migration: old key stays current until the new one activates",
                t0, vec![rec("a", Es, t0 - 10, None), rec("b", Ed, t0 + 10, None)], Ed,
                vec![Current, Next]),
            ("algorithm migration: new algorithm takes over",
                t0 + 10, vec![rec("a", Es, t0 - 10, None), rec("b", Ed, t0 + 10, None)], Ed,
                vec![prev(t0 + 610), Current]),
            ("policy algorithm wins over a newer key of another algorithm, kept published",
                t0, vec![rec("a", Ed, t0 - 10, None), rec("b", Es, t0 - 5, None)], Ed,
                vec![Current, Previous { until: None }]),
            ("that key expires once a newer key of its algorithm took over",
                t0 + 700, vec![rec("a", Ed, t0 - 10, None), rec("b", Es, t0 - 5, None),
                               rec("c", Es, t0 + 50, None)], Ed,
                vec![Current, Expired, Previous { until: None }]),
            ("ties in activation broken by creation then kid",
                t0, vec![rec("b", Es, t0, None), rec("a", Es, t0, None)], Es,
                vec![Current, prev(t0 + 600)]),
        ];
        for (name, now, records, alg, expected) in cases {
            let got: Vec<Phase> = phases(now, &records, alg)
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            assert_eq!(got, expected, "{name}");
        }
    }
}
