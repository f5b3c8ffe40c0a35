//! Secondary indexes over a set of nodes and edges: counts for the summary and the orders the
//! history queries page through. The in-memory graph and the stored graph keep the same ones.

use std::collections::{BTreeMap, BTreeSet};

use super::node::{Edge, EdgeKind, Node, NodeId, NodeKind};
use crate::{
    id::{AttemptId, TargetId},
    model::{AttemptStatus, PrState, TaskStatus},
};

/// Indexes derived from nodes and edges, updated as each changes and rebuilt on load.
#[derive(Clone, Debug, Default)]
pub(super) struct Indexes {
    pub(super) node_counts: BTreeMap<NodeKind, u64>,
    pub(super) edge_counts: BTreeMap<EdgeKind, u64>,
    pub(super) attempt_status: BTreeMap<AttemptStatus, u64>,
    pub(super) task_status: BTreeMap<TaskStatus, u64>,
    pub(super) tasks_by_target: BTreeMap<TargetId, BTreeSet<NodeId>>,
    pub(super) attempts_by_created: BTreeMap<u64, AttemptId>,
    pub(super) attempts_by_task: BTreeMap<NodeId, Vec<AttemptId>>,
    pub(super) ended_by_seq: BTreeMap<u64, AttemptId>,
    pub(super) open_prs: BTreeSet<NodeId>,
}

/// Moves one count from the `old` key to the `new` one (a status change).
fn recount<K: Ord + Copy>(counts: &mut BTreeMap<K, u64>, old: Option<K>, new: K) {
    if old == Some(new) {
        return;
    }
    if let Some(count) = old.and_then(|k| counts.get_mut(&k)) {
        *count -= 1;
    }
    *counts.entry(new).or_insert(0) += 1;
}

impl Indexes {
    /// Records that the node `id` changed from `old` (absent when new) to `new`.
    pub(super) fn node_changed(&mut self, id: &NodeId, old: Option<&Node>, new: &Node) {
        if old.is_none() {
            *self.node_counts.entry(new.kind()).or_insert(0) += 1;
        }
        match new {
            Node::Task(task) => {
                let old_status = match old {
                    Some(Node::Task(o)) => Some(o.status),
                    _ => None,
                };
                recount(&mut self.task_status, old_status, task.status);
                self.tasks_by_target
                    .entry(task.target_id.clone())
                    .or_default()
                    .insert(id.clone());
            }
            Node::Attempt(attempt) => {
                let old_status = match old {
                    Some(Node::Attempt(o)) => Some(o.status),
                    _ => None,
                };
                recount(&mut self.attempt_status, old_status, attempt.status);
                if old.is_none() {
                    self.attempts_by_created
                        .insert(attempt.meta.created_seq, attempt.attempt_id.clone());
                    self.attempts_by_task
                        .entry(NodeId::task(&attempt.target_id, &attempt.task_id))
                        .or_default()
                        .push(attempt.attempt_id.clone());
                }
                if let Some(ended) = attempt.ended_seq {
                    self.ended_by_seq.insert(ended, attempt.attempt_id.clone());
                }
            }
            Node::PullRequest(pr) => {
                if pr.state == PrState::Open {
                    self.open_prs.insert(id.clone());
                } else {
                    self.open_prs.remove(id);
                }
            }
            _ => {}
        }
    }

    /// Records a new edge.
    pub(super) fn edge_added(&mut self, edge: &Edge) {
        *self.edge_counts.entry(edge.edge_type).or_insert(0) += 1;
    }
}
