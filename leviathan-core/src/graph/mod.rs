//! The graph of targets, tasks, attempts, artifacts and pull requests: a pure, total projection
//! of the event log.
//!
//! [`Graph::apply`] folds one event; it reads no clock, draws no randomness and does no I/O, so the
//! same events always give the same graph. Ingest validates events with [`Graph::stage`] before
//! they are appended, so the log and the graph never disagree. An event that reached the log
//! without that check (an import, a direct append) and that the projection cannot accept is
//! recorded as an [`Anomaly`] and otherwise ignored, so folding never fails.

mod delta;
mod fold;
mod index;
mod node;
mod projection;
mod query;
#[cfg(test)]
mod tests;

pub use delta::{Anomaly, GraphDelta, GraphSnapshot, StoredGraph};
pub use fold::{Graph, Stage};
pub use node::{
    ArtifactNode, AttemptNode, Circuit, CommitNode, Edge, EdgeKind, ModelCallNode, Node, NodeId,
    NodeKind, NodeMeta, ProposalRef, PullRequestNode, TargetNode, TaskNode, TestRunNode,
};
pub use projection::Rejection;
pub use query::{AttemptPage, AttemptQuery, FailureQuery, GraphSummary, take_page};
