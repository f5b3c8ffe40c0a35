//! Persistence of the projection.

use std::fmt;

use async_trait::async_trait;

use super::BoxError;
use crate::{
    event::Head,
    graph::{GraphDelta, GraphSnapshot},
};

/// What can go wrong with a [`GraphStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphStoreError {
    /// A delta does not continue the stored checkpoint; nothing was written.
    #[error(
        "checkpoint conflict: stored checkpoint is seq {stored}, the delta continues from seq {expected}"
    )]
    CheckpointConflict {
        /// The stored checkpoint's seq.
        stored: u64,
        /// The seq the writer believed was stored.
        expected: u64,
    },
    /// Stored data does not decode.
    #[error("corrupt graph store: {reason}")]
    Corrupt {
        /// What is wrong.
        reason: String,
    },
    /// The store cannot be reached; retrying may help.
    #[error("graph store unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Any other backend failure.
    #[error("graph store failure: {reason}")]
    Backend {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl GraphStoreError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// The persisted projection: nodes, edges, stream versions and the checkpoint (the last event
/// folded), so that a restart resumes from the checkpoint instead of replaying the whole log.
#[async_trait]
pub trait GraphStore: Send + Sync + fmt::Debug + 'static {
    /// The stored graph (empty when nothing was saved).
    async fn load(&self) -> Result<GraphSnapshot, GraphStoreError>;

    /// Writes a delta and its checkpoint atomically. `previous` is the checkpoint seq the delta
    /// continues from; a store holding another checkpoint refuses the delta, so two writers
    /// cannot interleave their deltas.
    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError>;

    /// The stored checkpoint.
    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError>;

    /// Deletes everything (before a rebuild).
    async fn clear(&self) -> Result<(), GraphStoreError>;
}
