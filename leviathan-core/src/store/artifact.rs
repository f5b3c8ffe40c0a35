//! Content-addressed artifact storage.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::BoxError;
use crate::digest::Sha256Digest;

/// What can go wrong with an [`ArtifactStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// No artifact with this address.
    #[error("artifact {0} not found")]
    NotFound(Sha256Digest),
    /// The content does not hash to the address it was given; nothing was kept.
    #[error("content hashes to {actual}, not the expected {expected}")]
    DigestMismatch {
        /// The address the caller gave.
        expected: Sha256Digest,
        /// The content's real digest.
        actual: Sha256Digest,
    },
    /// The stored blob no longer hashes to its address; it is not returned.
    #[error("artifact {sha256} is corrupt: {reason}")]
    Corrupt {
        /// The address.
        sha256: Sha256Digest,
        /// What is wrong.
        reason: String,
    },
    /// The store cannot be reached or is out of space; retrying may help.
    #[error("artifact store unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Any other backend failure.
    #[error("artifact store failure: {reason}")]
    Backend {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl ArtifactError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// An artifact as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    /// Content address.
    pub sha256: Sha256Digest,
    /// Size in bytes.
    pub size: u64,
    /// False when identical content was already stored (deduplicated).
    pub created: bool,
}

/// Content-addressed blobs (`artifact_id = sha256`): deduplicated, written atomically,
/// hash-checked on every read.
#[async_trait]
pub trait ArtifactStore: Send + Sync + fmt::Debug + 'static {
    /// Stores `content` under its digest. Storing the same content again changes nothing.
    async fn put(&self, content: Bytes) -> Result<StoredArtifact, ArtifactError>;

    /// Stores `content` only if it hashes to `expected`.
    async fn put_expecting(
        &self,
        expected: Sha256Digest,
        content: Bytes,
    ) -> Result<StoredArtifact, ArtifactError> {
        let actual = Sha256Digest::of(&content);
        if actual != expected {
            return Err(ArtifactError::DigestMismatch { expected, actual });
        }
        self.put(content).await
    }

    /// The content, verified against its address.
    async fn get(&self, sha256: &Sha256Digest) -> Result<Bytes, ArtifactError>;

    /// True when an artifact with this address is stored.
    async fn exists(&self, sha256: &Sha256Digest) -> Result<bool, ArtifactError>;
}

/// Checks content read back from storage against its address.
pub fn verify_content(sha256: &Sha256Digest, content: Bytes) -> Result<Bytes, ArtifactError> {
    let actual = Sha256Digest::of(&content);
    if &actual == sha256 {
        Ok(content)
    } else {
        Err(ArtifactError::Corrupt {
            sha256: *sha256,
            reason: format!("stored content hashes to {actual}"),
        })
    }
}
