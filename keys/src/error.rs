//! The crate's one error type, with context fields and a bounded [`Error::kind`] label.

use std::path::PathBuf;

use crate::{Algorithm, Kid};

/// Everything that can go wrong while generating, loading, storing or using keys.
///
/// Messages never contain key material.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The crypto library could not generate a key.
    #[error("generating a new {alg} key failed")]
    KeyGeneration {
        /// The requested algorithm.
        alg: Algorithm,
    },
    /// A stored private key could not be parsed for its algorithm.
    #[error("private key {kid} is not a valid {alg} PKCS#8 key: {reason}")]
    InvalidKey {
        /// The key id.
        kid: Kid,
        /// The algorithm the record claims.
        alg: Algorithm,
        /// What the parser said (never key bytes).
        reason: String,
    },
    /// The signer refused to sign.
    #[error("signing with key {kid} failed")]
    Sign {
        /// The key id.
        kid: Kid,
    },
    /// Building the public JWK, its thumbprint or the JWT header failed.
    #[error("building the public JWK or header of key {kid} failed: {reason}")]
    Jwk {
        /// The key id (empty while the thumbprint is being computed).
        kid: Kid,
        /// What went wrong.
        reason: String,
    },
    /// An algorithm name other than `ES256` or `EdDSA`.
    #[error("unknown signing algorithm {value:?} (expected \"ES256\" or \"EdDSA\")")]
    UnknownAlgorithm {
        /// The rejected value.
        value: String,
    },
    /// The store has no key with this id.
    #[error("key {kid} not found")]
    NotFound {
        /// The key id.
        kid: Kid,
    },
    /// The store already has a key with this id.
    #[error("key {kid} already exists")]
    AlreadyExists {
        /// The key id.
        kid: Kid,
    },
    /// A key id that cannot be used as a file name or storage key.
    #[error("invalid key id {kid:?}: only A-Z a-z 0-9 - _ are allowed, at most 128 characters")]
    InvalidKid {
        /// The rejected id.
        kid: String,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        /// What was being done (e.g. "reading", "renaming").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A stored key file is not a valid key record.
    #[error("malformed key file {path}: {reason}", path = path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A store implemented outside this crate (e.g. Redis) failed.
    #[error("{store} key store: {cause}")]
    Backend {
        /// A short, bounded name of the store (e.g. "redis").
        store: &'static str,
        /// The underlying error (shown in the message, so not chained as a source).
        cause: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A key-encryption key could not be read.
    #[error("invalid key-encryption key: {reason}")]
    Kek {
        /// What is wrong with it (never the key itself).
        reason: String,
    },
    /// A sealed private key could not be decrypted: wrong key-encryption key or tampered data.
    #[error("cannot unseal private key {kid}: wrong key-encryption key or corrupted data")]
    Unseal {
        /// The key id the sealed key belongs to.
        kid: Kid,
    },
    /// A record in a shared store (e.g. a Redis hash field) is not a valid key record.
    #[error("malformed key record {kid} in the {store} key store: {reason}")]
    MalformedRecord {
        /// A short, bounded name of the store (e.g. "redis").
        store: &'static str,
        /// The id the record is stored under.
        kid: Kid,
        /// What is wrong with it (never key material).
        reason: String,
    },
    /// Another process holds the rotation lease, so a manual rotation was not attempted.
    #[error("another replica is rotating the keyring (lease held); try again in a few seconds")]
    Busy,
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::KeyGeneration { .. } => "key_generation",
            Error::InvalidKey { .. } => "invalid_key",
            Error::Sign { .. } => "sign",
            Error::Jwk { .. } => "jwk",
            Error::UnknownAlgorithm { .. } => "unknown_algorithm",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::InvalidKid { .. } => "invalid_kid",
            Error::Io { .. } => "io",
            Error::Malformed { .. } => "malformed",
            Error::Backend { .. } => "backend",
            Error::Kek { .. } => "kek",
            Error::Unseal { .. } => "unseal",
            Error::MalformedRecord { .. } => "malformed",
            Error::Busy => "busy",
        }
    }

    /// Wraps an error of a store implemented outside this crate.
    pub fn backend(
        store: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            store,
            cause: source.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_bounded_labels() {
        let cases = [
            (
                Error::NotFound {
                    kid: Kid::from("a"),
                },
                "not_found",
            ),
            (
                Error::UnknownAlgorithm {
                    value: "RS256".into(),
                },
                "unknown_algorithm",
            ),
            (Error::backend("redis", "down"), "backend"),
            (
                Error::Unseal {
                    kid: Kid::from("a"),
                },
                "unseal",
            ),
            (
                Error::MalformedRecord {
                    store: "redis",
                    kid: Kid::from("a"),
                    reason: "bad".into(),
                },
                "malformed",
            ),
            (Error::Busy, "busy"),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }
}
