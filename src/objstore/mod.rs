//! Object storage, below both the archive and the object destinations:
//! a store behind a URL with create-only writes and read-back
//! ([`bucket`]), S3 Object Lock retention ([`object_lock`]) and bounded
//! (de)compression ([`compression`]). It knows nothing of archive layouts,
//! manifests or events.

pub mod bucket;
pub mod compression;
#[cfg(test)]
pub(crate) mod gcs_fake;
pub mod object_lock;

pub use bucket::{Bucket, BucketOptions, ProbeResult, PutOutcome};
pub use compression::Compression;

/// Errors of an object store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjStoreError {
    /// The URL or its options are wrong.
    #[error("object store location: {0}")]
    Location(String),
    /// The object store failed.
    #[error("object store: {location}: {message}")]
    Store {
        /// URL and key (no query, no credentials).
        location: String,
        /// The store's message.
        message: String,
        /// Whether a retry may succeed: a network error or a 5xx after the
        /// client's own retries, not a refused credential or permission, a
        /// missing bucket or an unsupported request.
        retryable: bool,
        /// The object store's error, when it came from there.
        #[source]
        source: Option<Box<object_store::Error>>,
    },
    /// A create-only write found a different object at its key; nothing was
    /// overwritten and the run stopped.
    #[error(
        "{key} already exists with other contents (sha256 {found}, this run's {expected}); not overwritten, run stopped"
    )]
    Conflict {
        /// Relative key.
        key: String,
        /// SHA-256 of what this run would write.
        expected: String,
        /// SHA-256 of what is there.
        found: String,
    },
    /// No credentials are configured for a cloud bucket, and instance
    /// metadata was not opted into (`?credentials=metadata`): without this
    /// check `object_store` asks the cloud's metadata service, and off the
    /// cloud the first write fails with an unrelated-looking 403 from
    /// 169.254.169.254 (issue #15).
    #[error("no credentials for {location}: {hint}")]
    MissingCredentials {
        /// The URL (no query, no credentials).
        location: String,
        /// Which settings provide them.
        hint: &'static str,
    },
    /// An object read back after its write differs.
    #[error("{key}: read-back check failed: {message}")]
    ReadBack {
        /// Relative key.
        key: String,
        /// What differs.
        message: String,
    },
}

impl ObjStoreError {
    /// Whether a retry may succeed: retryable store errors, and a read-back
    /// that did not match (an eventually consistent listing, a torn read).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { retryable, .. } => *retryable,
            Self::ReadBack { .. } => true,
            Self::Location(_) | Self::Conflict { .. } | Self::MissingCredentials { .. } => false,
        }
    }

    /// A store error from `object_store`, classified by its kind: refused
    /// credentials or permissions are not retried.
    pub(crate) fn from_store(location: String, e: object_store::Error) -> Self {
        use object_store::Error as E;
        let retryable = matches!(e, E::Generic { .. } | E::JoinError { .. });
        let message = match &e {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => format!(
                "{e} (the credentials were refused: check them and the bucket policy; not retried)"
            ),
            _ => e.to_string(),
        };
        Self::Store {
            location,
            message,
            retryable,
            source: Some(Box::new(e)),
        }
    }
}
