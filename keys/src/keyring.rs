//! [`Keyring`]: the hot-path holder of the current [`KeySet`], read lock-free per request
//! and replaced whole by the key manager.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::KeySet;

/// Holds the current [`KeySet`] behind an `ArcSwap`.
pub struct Keyring {
    set: ArcSwap<KeySet>,
}

impl Keyring {
    /// A keyring holding `set`.
    pub fn new(set: KeySet) -> Self {
        Keyring {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// The current set, for the duration of a request (cheap, lock-free).
    pub fn load(&self) -> Guard<Arc<KeySet>> {
        self.set.load()
    }

    /// The current set as an owned `Arc`, to keep beyond a request.
    pub fn load_full(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// Replaces the set.
    pub fn store(&self, set: KeySet) {
        self.set.store(Arc::new(set));
    }
}

impl Default for Keyring {
    /// A keyring with no keys.
    fn default() -> Self {
        Keyring::new(KeySet::empty())
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("set", &**self.load())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_replaces_whole_set() {
        let ring = Keyring::default();
        let before = ring.load_full();
        assert!(before.current().is_none());
        ring.store(KeySet::empty());
        let after = ring.load_full();
        assert!(after.generation() > before.generation());
        assert_eq!(ring.load().generation(), after.generation());
    }
}
