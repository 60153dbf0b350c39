//! Infrastructure errors of the exchange crate (auth outcomes are not errors).

/// A failure to look up, store or mint; never an authentication outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session store could not answer (connection down, timeout, server error).
    #[error("session store {op} failed: {message}")]
    Store {
        /// The command that failed, e.g. `GET`.
        op: &'static str,
        /// The store's error text (never contains a cookie or token).
        message: String,
        /// True when the failure was a timeout.
        timeout: bool,
    },
    /// A value in the store does not follow the documented session schema.
    #[error("session value under {key_hint} is corrupt: {reason}")]
    Corrupt {
        /// A non-secret hint of where the value lives (the key prefix and a short digest).
        key_hint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No key is currently allowed to sign.
    #[error("no signing key is current")]
    NoSigningKey,
    /// The signing key refused to sign.
    #[error("signing with key {kid} failed: {source}")]
    Sign {
        /// The key id.
        kid: String,
        /// The underlying error.
        source: keys::Error,
    },
    /// Invalid settings (e.g. a bad Redis URL).
    #[error("invalid session store configuration: {0}")]
    Config(String),
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Store { timeout: true, .. } => "timeout",
            Error::Store { .. } => "store",
            Error::Corrupt { .. } => "corrupt",
            Error::NoSigningKey => "no_signing_key",
            Error::Sign { .. } => "sign",
            Error::Config(_) => "config",
        }
    }

    /// True when the store could not be reached, as opposed to a bad value or key.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Store { .. })
    }
}
