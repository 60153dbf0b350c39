//! Wiring of the shared Redis key store: the KEK comes from the environment variable the
//! config names, and the keyring lives under `keys.redis_prefix`.

use exchange::store::redis::RedisStore;
use keys::RedisKeyStore;
use keys::seal::Kek;

use crate::server::StartError;

/// Reads and decodes the key-encryption key from the environment variable `name`.
///
/// # Errors
/// [`StartError::Keys`] when the variable is missing or is not base64 of 32 bytes: the
/// gateway refuses to start rather than run with keys it cannot protect.
pub fn kek_from_env(name: &str) -> Result<Kek, StartError> {
    let value = std::env::var(name).map_err(|_| {
        StartError::Keys(keys::Error::Kek {
            reason: format!(
                "environment variable {name} is not set (keys.store = \"redis\" needs a KEK)"
            ),
        })
    })?;
    Kek::from_base64(value.trim()).map_err(StartError::Keys)
}

/// The Redis key store sharing the session store's connection pool.
pub fn redis_key_store(redis: &RedisStore, namespace: &str, kek: Kek) -> RedisKeyStore {
    RedisKeyStore::new(redis.pool().clone(), namespace, kek)
}
