//! Watching the session behind an open connection (a WebSocket, a stream): a future
//! that resolves when that session stops being valid.
//!
//! A watch is fed by what already keeps the cache honest, and re-checks the session in
//! Redis (a live read, never the cache) whenever one of them says it may have changed:
//! - a pushed invalidation of its key (a `DEL`, an expiry, an overwrite such as a
//!   framework's `touch`; so a re-check, not an end), or a flush (`FLUSHDB`, a re-armed
//!   channel, `revoke-user`'s deletions arrive as invalidations too);
//! - the key's own expiry and the session's `exp`, as timers;
//! - every `stream_recheck` while the push channel does not vouch for the cache.
//!
//! When Redis cannot answer, the watch keeps retrying and ends (fail closed) once Redis
//! has been failing for longer than the bound the caller gives (the route's).
//!
//! Registrations are a map from the cache key to the watches of that session, so one
//! invalidation wakes only that session's watches; a watch deregisters itself when
//! dropped. docs/revocation.md has the bounds and what a watch costs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::cache::Key;

/// Why a watched session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The session is gone (deleted, revoked) or no longer has a subject.
    Revoked,
    /// The session, or its key, expired.
    Expired,
    /// Redis could not confirm the session for longer than the bound.
    Unavailable,
}

impl Ended {
    /// A bounded label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Ended::Revoked => "revoked",
            Ended::Expired => "expired",
            Ended::Unavailable => "unavailable",
        }
    }
}

/// One watch's wake-up call.
struct Waker {
    id: u64,
    notify: Notify,
}

/// Every open watch, by session, and the push channel's state.
pub(crate) struct Registry {
    by_key: Mutex<HashMap<Key, Vec<Arc<Waker>>>>,
    ids: AtomicU64,
    /// `true` while the push channel vouches for the cache; watches poll while it is not.
    push_up: tokio::sync::watch::Sender<bool>,
    watching: AtomicU64,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            by_key: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
            // Until a push channel vouches for the cache (there may be none: then watches
            // poll every `stream_recheck`).
            push_up: tokio::sync::watch::Sender::new(false),
            watching: AtomicU64::new(0),
        }
    }

    /// Registers a watch of the session cached under `key`.
    pub(crate) fn register(self: &Arc<Self>, key: Key) -> Registration {
        let waker = Arc::new(Waker {
            id: self.ids.fetch_add(1, Ordering::Relaxed),
            notify: Notify::new(),
        });
        self.by_key
            .lock()
            .entry(key)
            .or_default()
            .push(waker.clone());
        self.watching.fetch_add(1, Ordering::Relaxed);
        Registration {
            registry: self.clone(),
            key,
            waker,
        }
    }

    /// Wakes the watches of one session.
    pub(crate) fn wake(&self, key: &Key) {
        if let Some(wakers) = self.by_key.lock().get(key) {
            for w in wakers {
                w.notify.notify_one();
            }
        }
    }

    /// Wakes every watch.
    pub(crate) fn wake_all(&self) {
        for wakers in self.by_key.lock().values() {
            for w in wakers {
                w.notify.notify_one();
            }
        }
    }

    /// Records whether the push channel vouches for the cache (waking every watch when
    /// that changes).
    pub(crate) fn set_push_up(&self, up: bool) {
        self.push_up
            .send_if_modified(|state| std::mem::replace(state, up) != up);
    }

    /// How many watches are open.
    pub(crate) fn len(&self) -> u64 {
        self.watching.load(Ordering::Relaxed)
    }
}

/// What woke a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Its session's key changed, or everything was flushed.
    Changed,
    /// A deadline passed.
    Deadline,
    /// The push channel went up or down.
    Push,
}

/// A registered watch; deregisters on drop.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    key: Key,
    waker: Arc<Waker>,
}

impl Registration {
    /// Waits until woken (an invalidation, a flush), until `deadline`, or until the push
    /// channel changes state; says which.
    pub(crate) async fn wait(
        &self,
        deadline: Option<Instant>,
        push: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Woken {
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.waker.notify.notified() => Woken::Changed,
            () = sleep => Woken::Deadline,
            changed = push.changed() => match changed {
                Ok(()) => Woken::Push,
                // The registry is gone with the exchange: nothing will ever wake us again.
                Err(_) => Woken::Deadline,
            },
        }
    }

    /// A receiver of the push channel's state.
    pub(crate) fn push_state(&self) -> tokio::sync::watch::Receiver<bool> {
        self.registry.push_up.subscribe()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.registry.by_key.lock();
        if let Some(wakers) = map.get_mut(&self.key) {
            wakers.retain(|w| w.id != self.waker.id);
            if wakers.is_empty() {
                map.remove(&self.key);
            }
        }
        self.registry.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a watch tolerates Redis failing before it ends the connection, and how often
/// it re-checks while the push channel is down.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Redis may fail for this long before the watch ends (the route's bound).
    pub unavailable_for: Duration,
    /// Re-check period while the push channel does not vouch (`session.stream_recheck`).
    pub recheck_every: Duration,
}

/// The next re-check while Redis fails: soon, but not a busy loop.
pub(crate) fn retry_after(bounds: &Bounds) -> Duration {
    (bounds.unavailable_for / 4).clamp(Duration::from_millis(25), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_only_that_sessions_watches() {
        let registry = Arc::new(Registry::new());
        let a = registry.register([1, 1]);
        let a2 = registry.register([1, 1]);
        let b = registry.register([2, 2]);
        assert_eq!(registry.len(), 3);
        registry.wake(&[1, 1]);
        let far = Some(Instant::now() + Duration::from_secs(60));
        async fn woke(r: &Registration, far: Option<Instant>) -> Option<Woken> {
            let mut push = r.push_state();
            tokio::time::timeout(Duration::from_millis(50), r.wait(far, &mut push))
                .await
                .ok()
        }
        assert_eq!(woke(&a, far).await, Some(Woken::Changed));
        assert_eq!(woke(&a2, far).await, Some(Woken::Changed));
        assert_eq!(
            woke(&b, far).await,
            None,
            "another session's watch stays asleep"
        );
        registry.wake_all();
        assert_eq!(woke(&b, far).await, Some(Woken::Changed));
        let soon = Some(Instant::now() + Duration::from_millis(10));
        let mut push = b.push_state();
        assert_eq!(b.wait(soon, &mut push).await, Woken::Deadline);
        drop(a);
        drop(a2);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.by_key.lock().len(), 1, "the emptied entry is gone");
        drop(b);
        assert!(registry.by_key.lock().is_empty());
    }

    #[tokio::test]
    async fn the_push_state_wakes_waiters_when_it_changes() {
        let registry = Arc::new(Registry::new());
        let r = registry.register([3, 3]);
        let mut push = r.push_state();
        registry.set_push_up(true);
        registry.set_push_up(true); // unchanged: nothing to wake
        let _ = push.borrow_and_update();
        let far = Instant::now() + Duration::from_secs(60);
        let waited =
            tokio::time::timeout(Duration::from_millis(50), r.wait(Some(far), &mut push)).await;
        assert!(waited.is_err());
        registry.set_push_up(false);
        let waited =
            tokio::time::timeout(Duration::from_millis(500), r.wait(Some(far), &mut push)).await;
        assert_eq!(waited.ok(), Some(Woken::Push));
        assert!(!*push.borrow());
    }
}
