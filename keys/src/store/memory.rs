//! [`MemoryStore`]: keys in process memory, for `sessiongate dev` and tests.

use std::fmt;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{Error, KeyRecord, KeyStore, Kid, UnixTime};

/// Keys kept in memory; lost when the process exits.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    records: Vec<KeyRecord>,
    /// Bumped by every change.
    version: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `records`.
    pub fn with_records(records: Vec<KeyRecord>) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                records,
                version: 0,
            }),
        }
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
        Ok(self.inner.lock().records.clone())
    }

    async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        if inner.records.iter().any(|r| r.kid == record.kid) {
            return Err(Error::AlreadyExists {
                kid: record.kid.clone(),
            });
        }
        inner.records.push(record.clone());
        inner.version += 1;
        Ok(())
    }

    async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        let record = inner
            .records
            .iter_mut()
            .find(|r| &r.kid == kid)
            .ok_or_else(|| Error::NotFound { kid: kid.clone() })?;
        if record.retired_at.is_none() {
            record.retired_at = Some(now);
            inner.version += 1;
        }
        Ok(())
    }

    async fn remove(&self, kid: &Kid) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        let before = inner.records.len();
        inner.records.retain(|r| &r.kid != kid);
        if inner.records.len() != before {
            inner.version += 1;
        }
        Ok(())
    }

    async fn version(&self) -> Result<String, Error> {
        Ok(self.inner.lock().version.to_string())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("MemoryStore")
            .field("keys", &inner.records.len())
            .field("version", &inner.version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, generate};

    #[tokio::test]
    async fn add_retire_remove_and_version() {
        let store = MemoryStore::new();
        let v0 = store.version().await.unwrap();
        let record = generate(Algorithm::Es256, 1, 1).unwrap();
        store.add(&record).await.unwrap();
        let err = store.add(&record).await.unwrap_err();
        assert_eq!(err.kind(), "already_exists");
        let v1 = store.version().await.unwrap();
        assert_ne!(v0, v1);
        assert_eq!(store.load().await.unwrap(), vec![record.clone()]);

        store.retire(&record.kid, 5).await.unwrap();
        store.retire(&record.kid, 9).await.unwrap();
        assert_eq!(store.load().await.unwrap()[0].retired_at, Some(5));
        let missing = Kid::from("missing");
        assert_eq!(
            store.retire(&missing, 5).await.unwrap_err().kind(),
            "not_found"
        );

        store.remove(&record.kid).await.unwrap();
        store.remove(&record.kid).await.unwrap();
        assert!(store.load().await.unwrap().is_empty());
        assert_ne!(store.version().await.unwrap(), v1);
    }
}
