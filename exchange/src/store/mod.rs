//! Where sessions live: the `SessionStore` trait, Redis (fred) and in-memory stores.

mod direct;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::Error;

/// A key-value store holding sessions in the documented schema.
///
/// Redis in production; [`memory::MemoryStore`] for `sessiongate dev` and unit tests.
/// Implementations never log keys or values.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Reads a value.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error>;
    /// Reads a value and how long its key has left to live (`None`: no expiry), in one
    /// round trip, so that a cache never trusts a value past its key's expiry.
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Option<Duration>)>, Error> {
        Ok(self.get(key).await?.map(|v| (v, None)))
    }
    /// Writes a value that expires after `ttl`.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error>;
    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, Error>;
    /// Adds `member` to the set `index`, keeping the set for at least `ttl`.
    async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), Error>;
    /// Lists the members of the set `index`.
    async fn index_members(&self, index: &str) -> Result<Vec<String>, Error>;
    /// Removes `members` from the set `index` (an emptied set disappears).
    async fn index_remove(&self, index: &str, members: &[String]) -> Result<(), Error>;
    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), Error>;
    /// Every key that starts with `prefix` (on every primary of a cluster), a page at a
    /// time; a key may appear twice. Stores that cannot scan yield one error.
    fn scan<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<Vec<String>, Error>> {
        let _ = prefix;
        Box::pin(futures::stream::once(async {
            Err(Error::Config("this session store cannot scan".into()))
        }))
    }
    /// Reads several values (one round trip where the store can).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, Error> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }
    /// Deletes several keys without waiting for their memory to be freed (`UNLINK`);
    /// returns how many existed.
    async fn unlink(&self, keys: &[String]) -> Result<usize, Error> {
        let mut n = 0;
        for key in keys {
            n += usize::from(self.delete(key).await?);
        }
        Ok(n)
    }
}
