//! Bundle ids bound to their content: the control plane binds each bundle id to the digest of
//! the first content ingested under it, so the same id with other content is refused instead
//! of appended.

use std::fmt;

use async_trait::async_trait;

use super::error::EventStoreError;
use crate::digest::Sha256Digest;

/// What [`BundleIndex::bind`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleBinding {
    /// The id was free; it is now bound to the content given.
    New,
    /// The id was bound to this same content already (a retry).
    Same,
    /// The id is bound to other content, whose digest this is.
    Other(Sha256Digest),
}

/// Bundle ids (as their SHA-256) bound to the digest of their content, durably on
/// a durable backend, so that a bundle id means one content across restarts.
#[async_trait]
pub trait BundleIndex: Send + Sync + fmt::Debug + 'static {
    /// Binds `bundle` to `content` unless it is bound already, atomically: of two concurrent
    /// binds with different content, exactly one is [`BundleBinding::New`].
    async fn bind(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<BundleBinding, EventStoreError>;

    /// Frees `bundle` if it is bound to `content` (that content was refused, so nothing was
    /// ingested under the id); a binding to other content is left alone.
    async fn release(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<(), EventStoreError>;
}

impl BundleBinding {
    /// What binding `content` finds when `bound` is the content already bound, if any.
    pub fn of(bound: Option<Sha256Digest>, content: &Sha256Digest) -> Self {
        match bound {
            None => Self::New,
            Some(bound) if bound == *content => Self::Same,
            Some(bound) => Self::Other(bound),
        }
    }
}
