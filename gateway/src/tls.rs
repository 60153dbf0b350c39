//! TLS on the proxy listener with certificates that reload without a restart.
//!
//! The listener's rustls config resolves its certificate through [`CertReloader`], which
//! holds the parsed chain and key behind an `ArcSwap`. A background task checks the two
//! files every [`CHECK_EVERY`] and swaps in a new pair when they change and parse; SIGHUP
//! re-reads them at once, changed or not. A bad new pair is refused, logged and counted,
//! and the old one keeps serving. Handshakes never wait on a lock.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

/// How often the certificate files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {cert} / key {key}: {message}")]
pub struct TlsError {
    cert: String,
    key: String,
    message: String,
}

/// What identifies a version of the files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<(Option<SystemTime>, u64)>);

fn stamp(paths: &[&Path]) -> Stamp {
    Stamp(
        paths
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .map(|m| (m.modified().ok(), m.len()))
                    .unwrap_or((None, 0))
            })
            .collect(),
    )
}

/// A certificate resolver whose certificate can be replaced while serving.
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Stamp>,
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertReloader {
    /// Loads the pair once.
    ///
    /// # Errors
    /// [`TlsError`] when either file is missing or does not parse, or they do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        pingora::tls::install_default_crypto_provider();
        let seen = stamp(&[cert, key]);
        let certified = load_pair(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
            seen: Mutex::new(seen),
        })
    }

    /// Reloads the pair if either file changed. `Ok(true)` when a new pair was installed.
    ///
    /// # Errors
    /// [`TlsError`] when the changed files do not load; the old pair stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&[&self.cert, &self.key]);
        if *self.seen.lock() == now {
            return Ok(false);
        }
        self.install(now).map(|()| true)
    }

    /// Re-reads the pair whether or not the files changed (SIGHUP).
    ///
    /// # Errors
    /// [`TlsError`] when the files do not load; the old pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.install(stamp(&[&self.cert, &self.key]))
    }

    fn install(&self, now: Stamp) -> Result<(), TlsError> {
        // Remember the stamp even on failure, so a broken pair is reported once, not
        // every CHECK_EVERY; the next change is tried again.
        *self.seen.lock() = now;
        let certified = load_pair(&self.cert, &self.key)?;
        self.current.store(Arc::new(certified));
        Ok(())
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let err = |message: String| TlsError {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        message,
    };
    let (chain, private) =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err("no certificate or no private key found".into()))?;
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| err("no TLS crypto provider installed".into()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| err(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| err(format!("certificate and key do not match: {e}")))?;
    Ok(certified)
}
