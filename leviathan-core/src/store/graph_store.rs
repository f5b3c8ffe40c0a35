//! Persistence of the projection.

use std::fmt;

use async_trait::async_trait;

use super::error::BoxError;
use crate::{
    event::Head,
    graph::{
        AttemptNode, AttemptPage, AttemptQuery, FailureQuery, GraphDelta, GraphSnapshot, Node,
        NodeId,
    },
    id::{AttemptId, TargetId, TaskId},
};

/// What can go wrong with a [`GraphStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphStoreError {
    /// A delta does not fit the stored checkpoint (see [`GraphStore::save`]); nothing was written.
    #[error(
        "checkpoint conflict: stored checkpoint is seq {stored}, the delta covers seq {previous} to {checkpoint}"
    )]
    CheckpointConflict {
        /// The stored checkpoint's seq.
        stored: u64,
        /// The seq the delta continues from.
        previous: u64,
        /// The seq the delta brings the store to.
        checkpoint: u64,
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

/// Whether a store at `stored` accepts a delta from `previous` to `checkpoint` (see
/// [`GraphStore::save`]); every backend applies this one rule.
pub fn delta_fits(stored: u64, previous: u64, checkpoint: u64) -> Result<(), GraphStoreError> {
    if previous <= stored && stored <= checkpoint {
        Ok(())
    } else {
        Err(GraphStoreError::CheckpointConflict {
            stored,
            previous,
            checkpoint,
        })
    }
}

impl GraphStoreError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// The persisted projection: nodes, edges, stream versions and the checkpoint (the last event
/// folded), so that a restart resumes from the checkpoint instead of replaying the whole log;
/// and the history queries, answered from the store's own indexes (attempts by target, status
/// and creation; failures by end; a task's attempts; what an attempt produced), never by a
/// scan. They see what was saved: [`crate::Ledger::history`] saves what was folded first.
#[async_trait]
pub trait GraphStore: Send + Sync + fmt::Debug + 'static {
    /// The stored graph (empty when nothing was saved).
    async fn load(&self) -> Result<GraphSnapshot, GraphStoreError>;

    /// Writes a delta and its checkpoint atomically. The delta holds every node, edge, stream
    /// version and anomaly that changed after seq `previous`, as of its checkpoint.
    ///
    /// It is accepted when the stored checkpoint lies between `previous` and the delta's
    /// checkpoint: nodes are stored whole and the projection is deterministic, so writing the
    /// delta over any such state yields the projection at the delta's checkpoint. That is what
    /// lets several processes folding the same log (two API replicas) save into one store. A
    /// store behind `previous` (it lacks changes the delta does not carry) or ahead of the delta
    /// refuses it with [`GraphStoreError::CheckpointConflict`]; [`delta_fits`] is the rule.
    /// Edges are inserted once and anomalies are keyed by their seq, so overlapping deltas
    /// never duplicate them.
    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError>;

    /// The stored checkpoint.
    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError>;

    /// Deletes everything (before a rebuild).
    async fn clear(&self) -> Result<(), GraphStoreError>;

    /// A page of the stored attempts that pass the query's filters, newest first (by the `seq`
    /// that created them; the cursor is that `seq`).
    async fn attempts(&self, query: &AttemptQuery) -> Result<AttemptPage, GraphStoreError>;

    /// A page of the stored failed and timed-out attempts, most recently ended first (the
    /// cursor is the `seq` that ended the page's last attempt).
    async fn failures(&self, query: &FailureQuery) -> Result<AttemptPage, GraphStoreError>;

    /// A task's stored attempts, oldest first.
    async fn task_attempts(
        &self,
        target: &TargetId,
        task: &TaskId,
    ) -> Result<Vec<AttemptNode>, GraphStoreError>;

    /// A stored node.
    async fn node(&self, id: &NodeId) -> Result<Option<Node>, GraphStoreError>;

    /// The stored nodes an attempt produced (artifacts, commits, test runs, model calls, pull
    /// requests), in the order of their edges' ids.
    async fn produced(&self, attempt: &AttemptId) -> Result<Vec<Node>, GraphStoreError>;
}
