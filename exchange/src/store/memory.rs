//! An in-process session store for `sessiongate dev` and tests.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use parking_lot::Mutex;

use super::SessionStore;
use crate::Error;

/// A session store kept in memory, with per-key expiry. Not shared between processes.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    values: HashMap<String, (Bytes, Instant)>,
    sets: HashMap<String, HashSet<String>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let mut inner = self.inner.lock();
        match inner.values.get(key) {
            Some((value, deadline)) if Instant::now() < *deadline => Ok(Some(value.clone())),
            Some(_) => {
                inner.values.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Option<Duration>)>, Error> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        match inner.values.get(key) {
            Some((value, deadline)) if now < *deadline => {
                Ok(Some((value.clone(), Some(*deadline - now))))
            }
            Some(_) => {
                inner.values.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + ttl;
        self.inner
            .lock()
            .values
            .insert(key.to_owned(), (Bytes::copy_from_slice(value), deadline));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self.inner.lock().values.remove(key).is_some())
    }

    async fn index_add(&self, index: &str, member: &str, _ttl: Duration) -> Result<(), Error> {
        self.inner
            .lock()
            .sets
            .entry(index.to_owned())
            .or_default()
            .insert(member.to_owned());
        Ok(())
    }

    async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .inner
            .lock()
            .sets
            .get(index)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn index_remove(&self, index: &str, members: &[String]) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        if let Some(set) = inner.sets.get_mut(index) {
            for m in members {
                set.remove(m);
            }
            if set.is_empty() {
                inner.sets.remove(index);
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }

    fn scan<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<Vec<String>, Error>> {
        let now = Instant::now();
        let keys: Vec<String> = self
            .inner
            .lock()
            .values
            .iter()
            .filter(|(k, (_, deadline))| k.starts_with(prefix) && now < *deadline)
            .map(|(k, _)| k.clone())
            .collect();
        // Pages of 100, like a SCAN with COUNT 100.
        let pages: Vec<Result<Vec<String>, Error>> =
            keys.chunks(100).map(|c| Ok(c.to_vec())).collect();
        Box::pin(futures::stream::iter(pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_delete_and_expiry() {
        let store = MemoryStore::new();
        store.put("k", b"v", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert!(store.delete("k").await.unwrap());
        assert!(!store.delete("k").await.unwrap());
        assert_eq!(store.get("k").await.unwrap(), None);
        store.put("e", b"v", Duration::ZERO).await.unwrap();
        assert_eq!(store.get("e").await.unwrap(), None);
    }

    #[tokio::test]
    async fn index_members_and_remove() {
        let store = MemoryStore::new();
        store
            .index_add("i", "a", Duration::from_secs(1))
            .await
            .unwrap();
        store
            .index_add("i", "b", Duration::from_secs(1))
            .await
            .unwrap();
        let mut members = store.index_members("i").await.unwrap();
        members.sort();
        assert_eq!(members, ["a", "b"]);
        store.index_remove("i", &members[..1]).await.unwrap();
        assert_eq!(store.index_members("i").await.unwrap(), ["b"]);
        store.index_remove("i", &members).await.unwrap();
        assert!(store.index_members("i").await.unwrap().is_empty());
    }
}
