//! Signing keys for sessiongate: generation, storage, rotation, the hot-path keyring and
//! the JWKS document.
//!
//! - [`KeyRecord`] is the stored form of a key; [`KeyStore`] persists records
//!   ([`MemoryStore`], [`FileStore`], and [`RedisKeyStore`] for `keys.store = "redis"`:
//!   one Redis hash shared by every replica, private keys sealed with the KEK; the
//!   schema is in [`store::redis`]).
//! - [`plan`] decides, from records and a [`RotationPolicy`] at a given `now`, which keys
//!   to create and remove; [`KeyManager`] applies it to a store. Replicas sharing a store
//!   take its rotation lease ([`KeyStore::try_lease`]) before creating a key, so a
//!   rotation due on all of them at once creates exactly one.
//! - [`KeySet`] is an immutable snapshot of parsed keys ([`SigningKey`]) with their
//!   [`KeyState`]s and pre-rendered [`Jwks`]; [`Keyring`] holds the current one behind an
//!   `ArcSwap` for lock-free reads per request.
//! - [`seal`] encrypts private keys at rest with a key-encryption key.
//!
//! ```
//! use std::sync::Arc;
//! use keys::{KeyManager, Keyring, MemoryStore, RotationPolicy};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let keyring = Arc::new(Keyring::default());
//! let manager = KeyManager::new(Arc::new(MemoryStore::new()), keyring.clone(), RotationPolicy::default());
//! let outcome = manager.refresh(keys::unix_now()).await?; // bootstrap: one key, signing now
//! assert_eq!(outcome.created.len(), 1);
//!
//! let set = keyring.load();
//! let key = set.current().expect("a current key");
//! let mut jwt = format!("{}.{}", key.header_segment(), "eyJzdWIiOiJ1c2VyLTQyIn0");
//! let mut signature = String::new();
//! key.sign_into(jwt.as_bytes(), &mut signature)?;
//! jwt.push('.');
//! jwt.push_str(&signature);
//! assert!(std::str::from_utf8(set.jwks().body()).unwrap().contains(key.kid().as_str()));
//! # Ok::<(), keys::Error>(())
//! # }).unwrap();
//! ```

mod error;
mod jwks;
mod key;
mod keyring;
mod keyset;
mod kid;
mod manager;
mod rotation;
pub mod seal;
pub mod store;

pub use crate::error::Error;
pub use crate::jwks::Jwks;
pub use crate::key::{
    Algorithm, KeyRecord, KeyState, SecretBytes, SigningKey, TOKEN_TYPE, generate,
};
pub use crate::keyring::Keyring;
pub use crate::keyset::KeySet;
pub use crate::kid::Kid;
pub use crate::manager::{KeyManager, LEASE_TTL, RefreshOutcome, Rotation};
pub use crate::rotation::{RotationPolicy, Transition, next_rotation, plan};
pub use crate::store::{FileStore, KeyStore, MemoryStore, RedisKeyStore};

/// Unix time in seconds.
pub type UnixTime = u64;

/// The current Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Installs `jsonwebtoken`'s aws-lc-rs crypto provider for the process (for verifying
/// and `jsonwebtoken::encode` elsewhere). Does nothing if a provider is installed
/// already. Call once at start-up.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
