//! [`FileStore`]: one JSON file per key in a directory.
//!
//! Each key is `<dir>/<kid>.json` holding a [`StoredKey`]. Writes go to a dotfile in the
//! same directory, are synced, then renamed over the target, with mode 0600. Loading
//! follows symlinks and ignores dotfiles, so a read-only Kubernetes Secret mount (files
//! symlinked through `..data`) loads as is. A malformed file is an error naming it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::StoredKey;
use crate::{Error, KeyRecord, KeyStore, Kid, UnixTime};

/// The file-name suffix of key files.
const SUFFIX: &str = ".json";

/// Keys stored as `<kid>.json` files in one directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: Arc<Path>,
}

impl FileStore {
    /// A store in `dir`, which must exist (it is not created here).
    pub fn new(dir: PathBuf) -> Self {
        FileStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs blocking file-system work off the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, Error> + Send + 'static,
    {
        let dir = Arc::clone(&self.dir);
        tokio::task::spawn_blocking(move || f(&dir))
            .await
            .map_err(|e| {
                Error::io(
                    "running a file task for",
                    &*self.dir,
                    std::io::Error::other(e),
                )
            })?
    }
}

#[async_trait]
impl KeyStore for FileStore {
    async fn load(&self) -> Result<Vec<KeyRecord>, Error> {
        self.blocking(load_dir).await
    }

    async fn add(&self, record: &KeyRecord) -> Result<(), Error> {
        record.kid.check_storable()?;
        let json = stored_json(record)?;
        let kid = record.kid.clone();
        self.blocking(move |dir| {
            let path = key_path(dir, &kid);
            if fs::symlink_metadata(&path).is_ok() {
                return Err(Error::AlreadyExists { kid });
            }
            write_atomically(dir, &path, &json)
        })
        .await
    }

    async fn retire(&self, kid: &Kid, now: UnixTime) -> Result<(), Error> {
        kid.check_storable()?;
        let kid = kid.clone();
        self.blocking(move |dir| {
            let path = key_path(dir, &kid);
            let mut record = match read_record(&path) {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound { kid });
                }
                other => other?,
            };
            if record.retired_at.is_some() {
                return Ok(());
            }
            record.retired_at = Some(now);
            write_atomically(dir, &path, &stored_json(&record)?)
        })
        .await
    }

    async fn remove(&self, kid: &Kid) -> Result<(), Error> {
        kid.check_storable()?;
        let kid = kid.clone();
        self.blocking(move |dir| {
            let path = key_path(dir, &kid);
            match fs::remove_file(&path) {
                Ok(()) => {
                    sync_dir(dir);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("removing", path, e)),
            }
        })
        .await
    }

    async fn version(&self) -> Result<String, Error> {
        self.blocking(fingerprint).await
    }
}

/// `<dir>/<kid>.json`; the kid was checked to be a plain file stem.
fn key_path(dir: &Path, kid: &Kid) -> PathBuf {
    dir.join(format!("{kid}{SUFFIX}"))
}

/// The key files of `dir` (name, path), sorted by name: `*.json`, not dotfiles,
/// symlinks followed, regular files only.
fn key_files(dir: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>, Error> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::debug!(path = %path.display(), "Ignoring a non-UTF-8 file name in the key directory.");
            continue;
        };
        if name.starts_with('.') || !name.ends_with(SUFFIX) {
            continue;
        }
        // `metadata` follows symlinks (Kubernetes Secret mounts).
        let meta = fs::metadata(&path).map_err(|e| Error::io("reading metadata of", &path, e))?;
        if !meta.is_file() {
            continue;
        }
        out.push((name, path, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn load_dir(dir: &Path) -> Result<Vec<KeyRecord>, Error> {
    let mut records = Vec::new();
    for (name, path, _) in key_files(dir)? {
        let record = read_record(&path)?;
        let stem = name.strip_suffix(SUFFIX).unwrap_or(&name);
        if record.kid.as_str() != stem {
            return Err(Error::Malformed {
                path,
                reason: format!("kid {:?} does not match the file name", record.kid.as_str()),
            });
        }
        records.push(record);
    }
    Ok(records)
}

fn read_record(path: &Path) -> Result<KeyRecord, Error> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| Error::io("reading", path, e))?);
    let stored: StoredKey = serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    stored.into_record().map_err(|reason| Error::Malformed {
        path: path.to_owned(),
        reason,
    })
}

fn stored_json(record: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, Error> {
    StoredKey::from_record(record)
        .to_json()
        .map_err(|e| Error::Jwk {
            kid: record.kid.clone(),
            reason: format!("serializing the key record: {e}"),
        })
}

/// Writes `contents` to `path` via a synced 0600 temp file in `dir` and a rename.
fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), Error> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let mut nonce = [0u8; 8];
    // A collision only makes `create_new` fail, which is reported.
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        file.write_all(contents)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        file.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("renaming into", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    } else {
        sync_dir(dir);
    }
    result
}

/// Best effort: makes a rename or unlink durable.
fn sync_dir(dir: &Path) {
    if let Err(error) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), %error, "Syncing the key directory failed.");
    }
}

/// SHA-256 over the directory's mtime and each key file's name, mtime, inode and size.
fn fingerprint(dir: &Path) -> Result<String, Error> {
    let meta = fs::metadata(dir).map_err(|e| Error::io("reading metadata of", dir, e))?;
    let mut hash = Sha256::new();
    hash.update(format!("{}.{}\n", meta.mtime(), meta.mtime_nsec()));
    for (name, _, meta) in key_files(dir)? {
        hash.update(format!(
            "{name} {}.{} {} {}\n",
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino(),
            meta.len()
        ));
    }
    let digest = hash.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::{Algorithm, generate};

    #[tokio::test]
    async fn round_trip_retire_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().to_owned());
        assert!(store.load().await.unwrap().is_empty());
        let v0 = store.version().await.unwrap();

        let es = generate(Algorithm::Es256, 100, 100).unwrap();
        let ed = generate(Algorithm::EdDsa, 100, 200).unwrap();
        store.add(&es).await.unwrap();
        store.add(&ed).await.unwrap();
        assert_eq!(store.add(&es).await.unwrap_err().kind(), "already_exists");

        let mut loaded = store.load().await.unwrap();
        loaded.sort_by_key(|r| r.activate_at);
        assert_eq!(loaded, vec![es.clone(), ed.clone()]);

        let path = dir.path().join(format!("{}.json", es.kid));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for field in [
            "kid",
            "alg",
            "created_at",
            "activate_at",
            "retired_at",
            "private_key",
        ] {
            assert!(doc.get(field).is_some(), "{field}");
        }
        assert_eq!(doc["alg"], "ES256");

        let v1 = store.version().await.unwrap();
        assert_ne!(v0, v1);
        assert_eq!(v1, store.version().await.unwrap());

        store.retire(&es.kid, 150).await.unwrap();
        store.retire(&es.kid, 160).await.unwrap();
        let retired = store
            .load()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.kid == es.kid)
            .unwrap();
        assert_eq!(retired.retired_at, Some(150));
        let missing = Kid::from("missing");
        assert_eq!(
            store.retire(&missing, 1).await.unwrap_err().kind(),
            "not_found"
        );

        store.remove(&es.kid).await.unwrap();
        store.remove(&es.kid).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![ed]);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[tokio::test]
    async fn malformed_files_are_errors_naming_the_file() {
        let record = generate(Algorithm::Es256, 1, 1).unwrap();
        let good = StoredKey::from_record(&record).to_json().unwrap();
        let good = std::str::from_utf8(&good).unwrap().to_owned();
        let own = format!("{}.json", record.kid);
        let cases = [
            ("broken.json", "{not json".to_owned()),
            (
                "unknown.json",
                good.replace("\"alg\"", "\"extra\": 1, \"alg\""),
            ),
            ("other-name.json", good.clone()),
            (own.as_str(), good.replace("ES256", "HS256")),
        ];
        for (name, contents) in cases {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(name), contents).unwrap();
            let err = FileStore::new(dir.path().to_owned())
                .load()
                .await
                .unwrap_err();
            assert_eq!(err.kind(), "malformed", "{name}: {err}");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[tokio::test]
    async fn kubernetes_secret_layout_read_only() {
        // ..data -> ..2024_01_01/, <kid>.json -> ..data/<kid>.json, as the kubelet does.
        let dir = tempfile::tempdir().unwrap();
        let record = generate(Algorithm::EdDsa, 1, 1).unwrap();
        let versioned = dir.path().join("..2024_01_01_00_00_00.000000000");
        fs::create_dir(&versioned).unwrap();
        let name = format!("{}.json", record.kid);
        fs::write(
            versioned.join(&name),
            &*StoredKey::from_record(&record).to_json().unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink(&versioned, dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(&name), dir.path().join(&name))
            .unwrap();
        fs::write(dir.path().join("README"), "not a key").unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();

        let store = FileStore::new(dir.path().to_owned());
        assert_eq!(store.load().await.unwrap(), vec![record]);
        assert!(!store.version().await.unwrap().is_empty());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn unsafe_kids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().to_owned());
        let record = KeyRecord {
            kid: Kid::from("../escape"),
            ..generate(Algorithm::Es256, 1, 1).unwrap()
        };
        assert_eq!(store.add(&record).await.unwrap_err().kind(), "invalid_kid");
        assert_eq!(
            store.remove(&record.kid).await.unwrap_err().kind(),
            "invalid_kid"
        );
        assert_eq!(
            store.retire(&record.kid, 1).await.unwrap_err().kind(),
            "invalid_kid"
        );
    }

    #[tokio::test]
    async fn missing_directory_is_an_io_error() {
        let store = FileStore::new(PathBuf::from("/nonexistent/sessiongate-keys"));
        let err = store.load().await.unwrap_err();
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("/nonexistent/sessiongate-keys"));
    }
}
