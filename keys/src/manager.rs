//! [`KeyManager`]: applies the rotation [`plan`] to a [`KeyStore`] and keeps a
//! [`Keyring`] current. The gateway's background service calls
//! [`refresh`](KeyManager::refresh) at the instant it returns (and when the store's
//! version changes); the CLI calls [`rotate`](KeyManager::rotate) and
//! [`retire`](KeyManager::retire).
//!
//! Replicas sharing a store coordinate through the store's rotation lease
//! ([`KeyStore::try_lease`]): a refresh that must create a key takes it first, then
//! reloads and plans again, so that when every replica finds a rotation due at the same
//! instant exactly one key is created. A replica that finds the lease taken creates
//! nothing that round and picks up the other replica's key when the store changes.
//!
//! **A lost keyring is restored from memory.** The store's version only ever grows; when
//! a refresh finds it smaller than the last one seen (Redis restarted without
//! persistence, `FLUSHALL`, a failover to a replica that lacked the latest writes), the
//! keyring was lost or rolled back. Before planning anything, the manager writes back
//! every key it knows that is still published (so tokens they signed keep verifying) and
//! re-retires every key it knows was retired (so a lost retirement cannot bring a
//! compromised key back). Every replica does this; adds are idempotent.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::rotation::{next_rotation, plan};
use crate::{
    Algorithm, Error, KeyRecord, KeySet, KeyStore, Keyring, Kid, RotationPolicy, Transition,
    UnixTime, generate,
};

/// What a [`KeyManager::refresh`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// Keys generated and stored.
    pub created: Vec<Kid>,
    /// Keys deleted from the store (retired or expired).
    pub removed: Vec<Kid>,
    /// When to refresh again: the earliest of the key set's next state change and the
    /// next planned rotation (one second from now if [`deferred`](Self::deferred)).
    /// Polling the store for other replicas' changes is the caller's business.
    pub next_due: Option<UnixTime>,
    /// A key had to be created but another process held the rotation lease, so this
    /// refresh left the creation to it. The keyring was still rebuilt from the store.
    pub deferred: bool,
}

/// What a manual [`KeyManager::rotate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The key that will sign next: the one created, or the successor already pending.
    pub kid: Kid,
    /// When it starts signing.
    pub activate_at: UnixTime,
    /// Whether this call created it (false: a successor was already pending).
    pub created: bool,
}

/// How long the rotation lease is taken for: far longer than generating and storing a
/// key takes, short enough that a crashed holder delays the others only briefly.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Drives a [`KeyStore`] by the [`RotationPolicy`] and publishes the result to a
/// [`Keyring`]. Calls are serialized within the process.
pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    keyring: Arc<Keyring>,
    policy: RotationPolicy,
    /// Serializes refresh/rotate/retire (an async lock, held across store calls on purpose).
    serial: tokio::sync::Mutex<()>,
    /// Random per-manager id naming this manager as holder of the store's rotation lease.
    holder: String,
    /// What the last successful load saw: the store's version and its records.
    seen: parking_lot::Mutex<Seen>,
    /// Keys written back or re-retired after a lost keyring, since start.
    restored: AtomicU64,
}

/// The store as last loaded.
#[derive(Default)]
struct Seen {
    /// The version, when it is a number (the Redis store's counter).
    version: Option<u64>,
    records: Vec<KeyRecord>,
    /// Every key seen retired since start (a retired key is soon removed from the store;
    /// its retirement must still be redone if a rollback brings it back).
    retired: std::collections::BTreeSet<Kid>,
}

impl KeyManager {
    /// A manager of `store` publishing to `keyring`.
    pub fn new(store: Arc<dyn KeyStore>, keyring: Arc<Keyring>, policy: RotationPolicy) -> Self {
        KeyManager {
            store,
            keyring,
            policy,
            serial: tokio::sync::Mutex::new(()),
            holder: holder_id(),
            seen: parking_lot::Mutex::new(Seen::default()),
            restored: AtomicU64::new(0),
        }
    }

    /// Loads the store, applies [`plan`]`(now)` (generating and adding keys, removing
    /// retired and expired ones), reloads, builds the [`KeySet`] at `now` and stores it
    /// in the keyring. The keyring is replaced only when a published key or state
    /// changed, so [`KeySet::generation`] moves only then.
    ///
    /// When the plan creates a key, the store's rotation lease is taken first (for
    /// [`LEASE_TTL`]); the store is then reloaded and the plan made again, since another
    /// replica may have just created the key, applied and the lease released. If the
    /// lease is held elsewhere, no key is created this round
    /// ([`RefreshOutcome::deferred`]) but removals are applied (they are idempotent)
    /// and the keyring is rebuilt from what is stored. If this future is dropped while
    /// holding the lease, the lease lapses after [`LEASE_TTL`].
    ///
    /// If a transition fails (for example a read-only store), the others are still
    /// applied and the keyring is still updated from what the store holds; the first
    /// failure is then returned.
    ///
    /// # Errors
    /// Store errors, [`Error::KeyGeneration`], or a [`KeySet::build`] error (the keyring
    /// is then left as it was).
    pub async fn refresh(&self, now: UnixTime) -> Result<RefreshOutcome, Error> {
        let _serial = self.serial.lock().await;
        self.refresh_locked(now, false).await
    }

    /// Manual rotation, under the store's rotation lease, then a refresh.
    ///
    /// Without `immediate` it brings the scheduled rotation forward to `now`: it adds a
    /// key of the policy's algorithm that signs from `now + publish_ahead`, unless a
    /// non-retired key of that algorithm is already pending (next), which is then
    /// returned with [`Rotation::created`] false. So several processes asked to rotate
    /// at about the same time (or a manual rotation racing the scheduled one) add
    /// exactly one key; to replace a pending key, retire it first.
    ///
    /// With `immediate` it always adds a key that signs at `now`, or one second later if
    /// an active key of the policy's algorithm activated at `now` already, so that the
    /// new key is the one that wins (activation ties would otherwise be broken by kid).
    ///
    /// # Errors
    /// [`Error::Busy`] if another process holds the rotation lease (nothing was
    /// changed; try again shortly); otherwise as [`refresh`](Self::refresh), plus the
    /// store's `add` error.
    pub async fn rotate(&self, now: UnixTime, immediate: bool) -> Result<Rotation, Error> {
        let _serial = self.serial.lock().await;
        if !self.store.try_lease(&self.holder, LEASE_TTL).await? {
            return Err(Error::Busy);
        }
        let result = self.rotate_leased(now, immediate).await;
        self.release_lease().await;
        result
    }

    /// Emergency retirement: marks the key retired in the store, then refreshes. The key
    /// leaves the JWKS and never signs again.
    ///
    /// If no other non-retired key would be active, a replacement that signs at once
    /// (see [`plan`] rule 1) is created first, under the rotation lease, and only then is
    /// the key marked retired: a replica that refreshes in between sees two active keys
    /// (and signs with the newer, the replacement), never none.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the store has no such key; [`Error::Busy`] if a
    /// replacement is needed and another process holds the rotation lease (nothing was
    /// changed; try again shortly); otherwise as [`refresh`](Self::refresh).
    pub async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
        let _serial = self.serial.lock().await;
        let records = self.store.load().await?;
        if !records.iter().any(|r| &r.kid == kid) {
            return Err(Error::NotFound { kid: kid.clone() });
        }
        let leased = needs_replacement(&records, kid, now);
        if leased {
            if !self.store.try_lease(&self.holder, LEASE_TTL).await? {
                return Err(Error::Busy);
            }
            if let Err(error) = self.replace_before_retiring(kid, now).await {
                self.release_lease().await;
                return Err(error);
            }
        }
        let result = match self.store.retire(kid, now).await {
            Ok(()) => {
                self.seen.lock().retired.insert(kid.clone());
                tracing::warn!(%kid, "Retired a signing key.");
                self.refresh_locked(now, leased).await.map(drop)
            }
            Err(error) => Err(error),
        };
        if leased {
            self.release_lease().await;
        }
        result
    }

    /// Under the lease: reloads and, if retiring `kid` still leaves no active key,
    /// creates one that signs at `now`.
    async fn replace_before_retiring(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
        let records = self.store.load().await?;
        if needs_replacement(&records, kid, now) {
            let replacement = self.create(self.policy.algorithm, now, now).await?;
            tracing::warn!(%replacement, retiring = %kid, "Created a replacement signing key that signs at once.");
        }
        Ok(())
    }

    /// The keyring it publishes to.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The store it drives.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// The rotation policy.
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// [`rotate`](Self::rotate) once the lease is held.
    async fn rotate_leased(&self, now: UnixTime, immediate: bool) -> Result<Rotation, Error> {
        let records = self.store.load().await?;
        let live_of_alg = || {
            records
                .iter()
                .filter(|r| r.retired_at.is_none() && r.alg == self.policy.algorithm)
        };
        let activate_at = if immediate {
            live_of_alg()
                .filter(|r| r.activate_at <= now)
                .map(|r| r.activate_at.saturating_add(1))
                .fold(now, UnixTime::max)
        } else {
            let pending = live_of_alg()
                .filter(|r| r.activate_at > now)
                .max_by_key(|r| (r.activate_at, r.created_at));
            if let Some(pending) = pending {
                let rotation = Rotation {
                    kid: pending.kid.clone(),
                    activate_at: pending.activate_at,
                    created: false,
                };
                self.refresh_locked(now, true).await?;
                return Ok(rotation);
            }
            // Rounded up: never sooner than `publish_ahead` after it is written.
            crate::rotation::activation_after(now, &self.policy)
        };
        let kid = self.create(self.policy.algorithm, now, activate_at).await?;
        self.refresh_locked(now, true).await?;
        Ok(Rotation {
            kid,
            activate_at,
            created: true,
        })
    }

    /// Releases the rotation lease; a failure only delays other replicas until the
    /// lease lapses, so it is logged, not returned.
    async fn release_lease(&self) {
        if let Err(error) = self.store.release_lease(&self.holder).await {
            tracing::warn!(%error, "Releasing the key rotation lease failed; it lapses by itself.");
        }
    }

    async fn create(
        &self,
        alg: Algorithm,
        now: UnixTime,
        activate_at: UnixTime,
    ) -> Result<Kid, Error> {
        let record = generate(alg, now, activate_at)?;
        self.store.add(&record).await?;
        tracing::info!(kid = %record.kid, %alg, activate_at, "Created a signing key.");
        Ok(record.kid.clone())
    }

    /// After a failed [`refresh`](Self::refresh): stops using every published key that
    /// the store says is retired (another replica or an operator retired it), even though
    /// the keyring as a whole cannot be loaded. The retirements are read without opening
    /// any private key ([`KeyStore::retired`]); the key set is rebuilt from the records
    /// this manager last loaded, with those keys retired at `now`. If no key is left to
    /// sign, nothing signs (fail closed) until a refresh succeeds. Returns the keys dropped.
    ///
    /// # Errors
    /// Store errors (nothing was learned), or a [`KeySet::build`] error.
    pub async fn drop_retired_elsewhere(&self, now: UnixTime) -> Result<Vec<Kid>, Error> {
        let _serial = self.serial.lock().await;
        let retired = self.store.retired().await?;
        let published = self.keyring.load();
        let dropped: Vec<Kid> = retired
            .into_iter()
            .filter(|kid| published.is_published(kid.as_str()))
            .collect();
        if dropped.is_empty() {
            return Ok(dropped);
        }
        let records: Vec<KeyRecord> = {
            let mut seen = self.seen.lock();
            seen.retired.extend(dropped.iter().cloned());
            for record in &mut seen.records {
                if dropped.contains(&record.kid) && record.retired_at.is_none() {
                    record.retired_at = Some(now);
                }
            }
            seen.records.clone()
        };
        self.keyring
            .store(KeySet::build(&records, now, &self.policy)?);
        Ok(dropped)
    }

    /// Keys written back to the store, or retired again, after a lost keyring.
    pub fn restored(&self) -> u64 {
        self.restored.load(Ordering::Relaxed)
    }

    /// If the store's version went backwards since the last load, writes back what this
    /// manager knows (see the module docs). Returns the version now.
    async fn restore_if_lost(&self, now: UnixTime) -> Result<Option<u64>, Error> {
        let version = self.store.version().await?.parse::<u64>().ok();
        let (last, known, retired) = {
            let seen = self.seen.lock();
            (seen.version, seen.records.clone(), seen.retired.clone())
        };
        let (Some(version), Some(last)) = (version, last) else {
            return Ok(version);
        };
        if version >= last || (known.is_empty() && retired.is_empty()) {
            return Ok(Some(version));
        }
        let stored = self.store.load().await?;
        let published = self.keyring.load();
        let mut restored = 0u64;
        // Retired here, but the store lost the retirement: retire it again.
        for theirs in stored.iter().filter(|r| r.retired_at.is_none()) {
            if retired.contains(&theirs.kid) {
                self.store.retire(&theirs.kid, now).await?;
                tracing::warn!(kid = %theirs.kid, "Retired again a key whose retirement the keyring lost.");
                restored += 1;
            }
        }
        // Still published here (a token it signed may still be valid), gone there.
        for record in known.iter().filter(|r| r.retired_at.is_none()) {
            if stored.iter().any(|r| r.kid == record.kid)
                || retired.contains(&record.kid)
                || !published.is_published(record.kid.as_str())
            {
                continue;
            }
            match self.store.add(record).await {
                Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                Err(error) => return Err(error),
            }
            tracing::warn!(kid = %record.kid, "Restored a key the keyring had lost.");
            restored += 1;
        }
        if restored > 0 {
            self.restored.fetch_add(restored, Ordering::Relaxed);
            tracing::warn!(
                keys = restored,
                version,
                last,
                "The keyring's version went backwards (Redis restarted empty, flushed, or failed over to a stale replica): restored it from memory."
            );
        }
        Ok(self.store.version().await?.parse::<u64>().ok())
    }

    /// The body of [`refresh`](Self::refresh); `leased` says the caller holds the lease.
    async fn refresh_locked(&self, now: UnixTime, leased: bool) -> Result<RefreshOutcome, Error> {
        let version = self.restore_if_lost(now).await?;
        let mut records = self.store.load().await?;
        // Remembered before the plan removes them from the store.
        let retired: Vec<Kid> = records
            .iter()
            .filter(|r| r.retired_at.is_some())
            .map(|r| r.kid.clone())
            .collect();
        let mut transitions = plan(now, &records, &self.policy);
        let mut outcome = RefreshOutcome::default();
        let mut failure = None;
        let mut took_lease = false;
        if !leased && transitions.iter().any(is_create) {
            match self.store.try_lease(&self.holder, LEASE_TTL).await {
                Ok(true) => {
                    took_lease = true;
                    // Another replica may have created the key since we loaded.
                    match self.store.load().await {
                        Ok(reloaded) => records = reloaded,
                        Err(error) => {
                            self.release_lease().await;
                            return Err(error);
                        }
                    }
                    transitions = plan(now, &records, &self.policy);
                }
                Ok(false) => {
                    tracing::debug!(
                        "Another replica holds the key rotation lease; not creating a key."
                    );
                    outcome.deferred = true;
                    transitions.retain(|t| !is_create(t));
                }
                Err(error) => {
                    tracing::warn!(%error, "Taking the key rotation lease failed; not creating a key.");
                    failure = Some(error);
                    transitions.retain(|t| !is_create(t));
                }
            }
        }
        for transition in transitions {
            let result = match &transition {
                Transition::Create { alg, activate_at } => self
                    .create(*alg, now, *activate_at)
                    .await
                    .map(|kid| outcome.created.push(kid)),
                Transition::Remove { kid } => self.store.remove(kid).await.map(|()| {
                    tracing::info!(%kid, "Removed a signing key.");
                    outcome.removed.push(kid.clone());
                }),
            };
            if let Err(error) = result {
                tracing::warn!(?transition, %error, "Applying a key transition failed.");
                failure.get_or_insert(error);
            }
        }
        if took_lease {
            self.release_lease().await;
        }
        if !outcome.created.is_empty() || !outcome.removed.is_empty() {
            records = self.store.load().await?;
        }
        let set = KeySet::build(&records, now, &self.policy)?;
        outcome.next_due = next_due(now, &set, &records, &self.policy);
        if outcome.deferred {
            // Retry soon in case the lease holder dies before storing its key.
            let soon = now.saturating_add(1);
            outcome.next_due = Some(outcome.next_due.map_or(soon, |t| t.min(soon)));
        }
        if !same_states(&self.keyring.load(), &set) {
            self.keyring.store(set);
        }
        // A change made by this refresh bumped the version past what was read before it.
        let version = if outcome.created.is_empty() && outcome.removed.is_empty() {
            version
        } else {
            self.store
                .version()
                .await
                .ok()
                .and_then(|v| v.parse().ok())
                .or(version)
        };
        let mut seen = self.seen.lock();
        seen.retired.extend(retired);
        seen.version = version;
        seen.records = records;
        match failure {
            Some(error) => Err(error),
            None => Ok(outcome),
        }
    }
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("policy", &self.policy)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// Whether, with `kid` retired, no non-retired key would be active at `now`.
fn needs_replacement(records: &[KeyRecord], kid: &Kid, now: UnixTime) -> bool {
    !records
        .iter()
        .any(|r| &r.kid != kid && r.retired_at.is_none() && r.activate_at <= now)
}

fn is_create(transition: &Transition) -> bool {
    matches!(transition, Transition::Create { .. })
}

/// A random id for this manager as lease holder: 16 random bytes in hex, or, should the
/// random source fail, the process id, a clock reading and a per-process counter.
fn holder_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_ok() {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{}-{nanos}-{n}", std::process::id())
    }
}

/// The earliest of the set's next state change and the next planned rotation, never
/// earlier than one second from `now`.
fn next_due(
    now: UnixTime,
    set: &KeySet,
    records: &[KeyRecord],
    policy: &RotationPolicy,
) -> Option<UnixTime> {
    let due = match (set.next_change(), next_rotation(records, policy)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    due.map(|t| t.max(now.saturating_add(1)))
}

/// Whether two sets publish the same keys in the same states with the same next change.
fn same_states(old: &KeySet, new: &KeySet) -> bool {
    old.next_change() == new.next_change()
        && old.keys().len() == new.keys().len()
        && old
            .keys()
            .iter()
            .zip(new.keys())
            .all(|(a, b)| a.kid() == b.kid() && a.state() == b.state())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{KeyState, MemoryStore};

    const H: u64 = 3600;

    fn manager(alg: Algorithm) -> (KeyManager, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let policy = RotationPolicy {
            algorithm: alg,
            rotate_every: Duration::from_secs(24 * H),
            publish_ahead: Duration::from_secs(H),
            retain_after: Duration::from_secs(600),
        };
        let ring = Arc::new(Keyring::default());
        (KeyManager::new(store.clone(), ring, policy), store)
    }

    fn current_kid(m: &KeyManager) -> Option<Kid> {
        m.keyring().load().current().map(|k| k.kid().clone())
    }

    #[test]
    fn usable_from_background_services() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let (m, _) = manager(Algorithm::Es256);
        send_sync(&m);
        send_sync(&*m.keyring().load_full());
        send(m.refresh(1));
        send(m.rotate(1, true));
        send(m.retire(&Kid::from("a"), 1));
    }

    #[tokio::test]
    async fn bootstrap_rotate_and_expire() {
        let (m, store) = manager(Algorithm::Es256);
        let t0 = 1_000_000;

        let out = m.refresh(t0).await.unwrap();
        assert_eq!(out.created.len(), 1);
        let first = out.created[0].clone();
        assert_eq!(current_kid(&m), Some(first.clone()));
        assert_eq!(out.next_due, Some(t0 + 23 * H - 1));

        // Nothing changes before the rotation is due, and the keyring is kept.
        let generation = m.keyring().load().generation();
        let out = m.refresh(t0 + 10).await.unwrap();
        assert_eq!(
            out,
            RefreshOutcome {
                next_due: Some(t0 + 23 * H - 1),
                ..Default::default()
            }
        );
        assert_eq!(m.keyring().load().generation(), generation);

        // The successor is published an hour ahead (from the next whole second).
        let out = m.refresh(t0 + 23 * H - 1).await.unwrap();
        assert_eq!(out.created.len(), 1);
        let second = out.created[0].clone();
        assert_eq!(out.next_due, Some(t0 + 24 * H));
        let set = m.keyring().load_full();
        assert_eq!(current_kid(&m), Some(first.clone()));
        assert_eq!(set.get(second.as_str()).unwrap().state(), KeyState::Next);

        // It takes over; the first stays published for retain_after, then is removed.
        let out = m.refresh(t0 + 24 * H).await.unwrap();
        assert_eq!(out.next_due, Some(t0 + 24 * H + 600));
        assert_eq!(current_kid(&m), Some(second.clone()));
        assert!(m.keyring().load().is_published(first.as_str()));
        let out = m.refresh(t0 + 24 * H + 600).await.unwrap();
        assert_eq!(out.removed, vec![first.clone()]);
        assert!(!m.keyring().load().is_published(first.as_str()));
        assert_eq!(store.load().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn manual_rotation_and_retirement() {
        let (m, store) = manager(Algorithm::EdDsa);
        let t0 = 1_000_000;
        m.refresh(t0).await.unwrap();
        let first = current_kid(&m).unwrap();

        let rotation = m.rotate(t0 + 5, false).await.unwrap();
        assert!(rotation.created);
        assert_eq!(rotation.activate_at, t0 + 6 + H);
        let ahead = rotation.kid;
        let set = m.keyring().load_full();
        assert_eq!(set.get(ahead.as_str()).unwrap().activate_at(), t0 + 6 + H);
        assert_eq!(set.get(ahead.as_str()).unwrap().alg(), Algorithm::EdDsa);
        assert_eq!(current_kid(&m), Some(first.clone()));

        // While that successor is pending, rotating again adds nothing and names it.
        let again = m.rotate(t0 + 6, false).await.unwrap();
        assert_eq!(
            again,
            Rotation {
                kid: ahead.clone(),
                activate_at: t0 + 6 + H,
                created: false
            }
        );
        assert_eq!(store.load().await.unwrap().len(), 2);

        // Immediate rotation in the same second as the bootstrap still wins, a second later.
        let rotation = m.rotate(t0, true).await.unwrap();
        assert!(rotation.created);
        let now = rotation.kid;
        let set = m.keyring().load_full();
        assert_eq!(set.get(now.as_str()).unwrap().activate_at(), t0 + 1);
        m.refresh(t0 + 1).await.unwrap();
        assert_eq!(current_kid(&m), Some(now.clone()));

        // Emergency retirement of the current key: it disappears, the older key signs.
        m.retire(&now, t0 + 2).await.unwrap();
        let set = m.keyring().load_full();
        assert!(!set.is_published(now.as_str()));
        assert_eq!(current_kid(&m), Some(first));
        assert!(store.load().await.unwrap().iter().all(|r| r.kid != now));
        assert_eq!(
            m.retire(&Kid::from("nope"), t0).await.unwrap_err().kind(),
            "not_found"
        );
    }

    #[tokio::test]
    async fn algorithm_change_migrates_without_gap() {
        let (m, store) = manager(Algorithm::Es256);
        let t0 = 1_000_000;
        m.refresh(t0).await.unwrap();
        let es = current_kid(&m).unwrap();

        let ed_policy = RotationPolicy {
            algorithm: Algorithm::EdDsa,
            ..m.policy().clone()
        };
        let m = KeyManager::new(store, m.keyring().clone(), ed_policy);
        let out = m.refresh(t0 + 10).await.unwrap();
        assert_eq!(out.created.len(), 1);
        assert_eq!(current_kid(&m), Some(es.clone()));
        assert_eq!(out.next_due, Some(t0 + 11 + H));

        m.refresh(t0 + 11 + H).await.unwrap();
        let set = m.keyring().load_full();
        assert_eq!(set.current().unwrap().alg(), Algorithm::EdDsa);
        assert_eq!(set.get(es.as_str()).unwrap().state(), KeyState::Previous);
    }

    #[tokio::test]
    async fn emergency_retirement_of_the_only_active_key() {
        let (m, store) = manager(Algorithm::Es256);
        let t0 = 1_000_000;
        m.refresh(t0).await.unwrap();
        let first = current_kid(&m).unwrap();
        let next = m.rotate(t0 + 10, false).await.unwrap().kid;

        // Retiring the current key leaves only the pending one: a key that signs at once
        // is created, and the pending key still takes over on schedule.
        m.retire(&first, t0 + 20).await.unwrap();
        let set = m.keyring().load_full();
        let emergency = set.current().expect("a current key").kid().clone();
        assert_ne!(emergency, first);
        assert_ne!(emergency, next);
        assert_eq!(set.get(next.as_str()).unwrap().state(), KeyState::Next);
        assert!(!set.is_published(first.as_str()));
        assert_eq!(store.load().await.unwrap().len(), 2);

        m.refresh(t0 + 11 + H).await.unwrap();
        assert_eq!(current_kid(&m), Some(next));
    }

    /// A store that can lose its keyring (or roll it back), as Redis restarted without
    /// persistence or a stale replica promoted would.
    #[derive(Default)]
    struct Losable {
        state: parking_lot::Mutex<(Vec<KeyRecord>, u64)>,
    }

    impl Losable {
        fn set(&self, records: Vec<KeyRecord>, version: u64) {
            *self.state.lock() = (records, version);
        }
    }

    #[async_trait::async_trait]
    impl KeyStore for Losable {
        async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
            Ok(self.state.lock().0.clone())
        }
        async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
            let mut s = self.state.lock();
            if s.0.iter().any(|r| r.kid == record.kid) {
                return Err(Error::AlreadyExists {
                    kid: record.kid.clone(),
                });
            }
            s.0.push(record.clone());
            s.1 += 1;
            Ok(())
        }
        async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
            let mut s = self.state.lock();
            if let Some(r) = s.0.iter_mut().find(|r| &r.kid == kid) {
                r.retired_at = Some(now);
            }
            s.1 += 1;
            Ok(())
        }
        async fn remove(&self, kid: &Kid) -> Result<(), Error> {
            let mut s = self.state.lock();
            s.0.retain(|r| &r.kid != kid);
            s.1 += 1;
            Ok(())
        }
        async fn version(&self) -> Result<String, Error> {
            Ok(self.state.lock().1.to_string())
        }
    }

    #[tokio::test]
    async fn a_lost_keyring_is_restored_and_a_lost_retirement_redone() {
        let store = Arc::new(Losable::default());
        let ring = Arc::new(Keyring::default());
        let m = KeyManager::new(store.clone(), ring, RotationPolicy::default());
        let t0 = 1_000_000;
        m.refresh(t0).await.unwrap();
        let first = current_kid(&m).unwrap();
        let next = m.rotate(t0 + 5, false).await.unwrap().kid;
        let before = store.load().await.unwrap();
        assert_eq!(before.len(), 2);

        // Redis restarts empty: the version is back to 0 and the hash is gone. The next
        // refresh writes both keys back instead of bootstrapping a new one.
        store.set(Vec::new(), 0);
        let out = m.refresh(t0 + 10).await.unwrap();
        assert!(out.created.is_empty(), "no new key: {out:?}");
        let mut kids: Vec<Kid> = store
            .load()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.kid)
            .collect();
        kids.sort();
        let mut want = vec![first.clone(), next.clone()];
        want.sort();
        assert_eq!(kids, want);
        assert_eq!(
            current_kid(&m),
            Some(first.clone()),
            "the same key keeps signing"
        );
        assert_eq!(m.restored(), 2);

        // An emergency retirement, then a failover to a replica that never saw it: the
        // key is back un-retired with an older version. It is retired again.
        m.retire(&next, t0 + 20).await.unwrap();
        let version: u64 = store.version().await.unwrap().parse().unwrap();
        store.set(before.clone(), version - 3);
        m.refresh(t0 + 21).await.unwrap();
        let stored = store.load().await.unwrap();
        assert!(
            stored
                .iter()
                .all(|r| r.kid != next || r.retired_at.is_some()),
            "the retired key stays retired"
        );
        assert!(!m.keyring().load().is_published(next.as_str()));

        // A version that only grows never triggers any of this.
        let restored = m.restored();
        m.refresh(t0 + 22).await.unwrap();
        assert_eq!(m.restored(), restored);
    }

    /// A memory store that records, at each `retire`, how many other non-retired keys
    /// were active: what a replica refreshing at that moment would have to sign with.
    #[derive(Default)]
    struct WatchRetire {
        inner: MemoryStore,
        active_others: parking_lot::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl KeyStore for WatchRetire {
        async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
            self.inner.load().await
        }
        async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
            self.inner.add(record).await
        }
        async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
            let others = self
                .inner
                .load()
                .await?
                .iter()
                .filter(|r| &r.kid != kid && r.retired_at.is_none() && r.activate_at <= now)
                .count();
            self.active_others.lock().push(others);
            self.inner.retire(kid, now).await
        }
        async fn remove(&self, kid: &Kid) -> Result<(), Error> {
            self.inner.remove(kid).await
        }
        async fn version(&self) -> Result<String, Error> {
            self.inner.version().await
        }
    }

    #[tokio::test]
    async fn the_replacement_is_stored_before_the_key_is_retired() {
        let store = Arc::new(WatchRetire::default());
        let ring = Arc::new(Keyring::default());
        let m = KeyManager::new(store.clone(), ring, RotationPolicy::default());
        let t0 = 1_000_000;
        m.refresh(t0).await.unwrap();
        let first = current_kid(&m).unwrap();
        m.retire(&first, t0 + 5).await.unwrap();
        assert_eq!(
            *store.active_others.lock(),
            vec![1],
            "a replacement existed already"
        );
        let replacement = current_kid(&m).unwrap();
        assert_ne!(replacement, first);
        assert_eq!(store.load().await.unwrap().len(), 1);

        // With another active key left, nothing is created: it signs again.
        let now = m.rotate(t0 + 6, true).await.unwrap().kid;
        m.retire(&now, t0 + 7).await.unwrap();
        assert_eq!(current_kid(&m), Some(replacement));
        assert_eq!(store.load().await.unwrap().len(), 1);
    }

    /// A store whose rotation lease is always held by someone else.
    struct LeaseHeld(MemoryStore);

    #[async_trait::async_trait]
    impl KeyStore for LeaseHeld {
        async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
            self.0.load().await
        }
        async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
            self.0.add(record).await
        }
        async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
            self.0.retire(kid, now).await
        }
        async fn remove(&self, kid: &Kid) -> Result<(), Error> {
            self.0.remove(kid).await
        }
        async fn version(&self) -> Result<String, Error> {
            self.0.version().await
        }
        async fn try_lease(&self, _: &str, _: Duration) -> Result<bool, Error> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn held_lease_defers_creation_but_not_removal() {
        let t0 = 1_000_000;
        let old = generate(Algorithm::Es256, t0 - 30 * H, t0 - 30 * H).unwrap();
        let retired = generate(Algorithm::Es256, t0 - 40 * H, t0 - 40 * H).unwrap();
        let store = Arc::new(LeaseHeld(MemoryStore::with_records(vec![
            old.clone(),
            store_retired(&retired, t0),
        ])));
        let m = KeyManager::new(
            store.clone(),
            Arc::new(Keyring::default()),
            RotationPolicy::default(),
        );

        // A rotation is due, but another replica holds the lease: no key is created,
        // the retired key is still removed, the keyring is built, and it retries soon.
        let out = m.refresh(t0).await.unwrap();
        assert!(out.deferred);
        assert!(out.created.is_empty());
        assert_eq!(out.removed, vec![retired.kid.clone()]);
        assert_eq!(out.next_due, Some(t0 + 1));
        assert_eq!(current_kid(&m), Some(old.kid.clone()));
        assert_eq!(store.load().await.unwrap(), vec![old.clone()]);

        // A manual rotation refuses at once and changes nothing, and so does retiring
        // the only active key, which needs a replacement first.
        assert_eq!(m.rotate(t0, true).await.unwrap_err().kind(), "busy");
        assert_eq!(store.load().await.unwrap().len(), 1);
        assert_eq!(m.retire(&old.kid, t0).await.unwrap_err().kind(), "busy");
        assert_eq!(store.load().await.unwrap(), vec![old.clone()]);

        // Starting empty: no key, and nothing to sign with until the lease holder's
        // key appears.
        let empty = Arc::new(LeaseHeld(MemoryStore::new()));
        let m = KeyManager::new(
            empty.clone(),
            Arc::new(Keyring::default()),
            RotationPolicy::default(),
        );
        let out = m.refresh(t0).await.unwrap();
        assert!(out.deferred);
        assert_eq!(out.next_due, Some(t0 + 1));
        assert!(empty.load().await.unwrap().is_empty());
        assert_eq!(current_kid(&m), None);
    }

    fn store_retired(record: &KeyRecord, at: UnixTime) -> KeyRecord {
        KeyRecord {
            retired_at: Some(at),
            ..record.clone()
        }
    }

    #[tokio::test]
    async fn failed_transition_still_updates_the_keyring() {
        /// A store that refuses writes, like a read-only Secret mount.
        struct ReadOnly(MemoryStore);

        #[async_trait::async_trait]
        impl KeyStore for ReadOnly {
            async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
                self.0.load().await
            }
            async fn add(&self, _: &KeyRecord) -> Result<(), Error> {
                Err(Error::backend("test", "read-only"))
            }
            async fn retire(&self, _: &Kid, _: UnixTime) -> Result<(), Error> {
                Err(Error::backend("test", "read-only"))
            }
            async fn remove(&self, _: &Kid) -> Result<(), Error> {
                Err(Error::backend("test", "read-only"))
            }
            async fn version(&self) -> Result<String, Error> {
                self.0.version().await
            }
        }

        let t0 = 1_000_000;
        let old = generate(Algorithm::Es256, t0 - 30 * H, t0 - 30 * H).unwrap();
        let store = Arc::new(ReadOnly(MemoryStore::with_records(vec![old.clone()])));
        let ring = Arc::new(Keyring::default());
        let m = KeyManager::new(store, ring, RotationPolicy::default());
        let err = m.refresh(t0).await.unwrap_err();
        assert_eq!(err.kind(), "backend");
        assert_eq!(current_kid(&m), Some(old.kid));
    }
}
