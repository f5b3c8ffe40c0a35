//! Read-side queries over the graph, answered from indexes rather than scans of the log.

use std::{borrow::Borrow, collections::BTreeMap, convert::Infallible};

use serde::{Deserialize, Serialize};

use super::{
    fold::Graph,
    index::Indexes,
    node::{
        AttemptNode, Edge, EdgeKind, Node, NodeId, NodeKind, PullRequestNode, TargetNode, TaskNode,
    },
};
use crate::{
    event::Head,
    id::{AttemptId, TargetId, TaskId},
    model::AttemptStatus,
};

/// A page of attempts and the cursor of the page after it (`None` on the last page).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptPage {
    /// The attempts, in the query's order.
    pub attempts: Vec<AttemptNode>,
    /// Pass as the query's `cursor` for the next page.
    pub next_cursor: Option<u64>,
}

/// Counts that describe a graph at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSummary {
    /// Total nodes.
    pub total_nodes: u64,
    /// Total edges.
    pub total_edges: u64,
    /// Nodes per type (types with none are omitted).
    pub nodes_by_type: BTreeMap<String, u64>,
    /// Edges per type.
    pub edges_by_type: BTreeMap<String, u64>,
    /// Attempts per status.
    pub attempts_by_status: BTreeMap<String, u64>,
    /// Tasks per status.
    pub tasks_by_status: BTreeMap<String, u64>,
    /// Open pull requests.
    pub open_prs: u64,
    /// Events the projection could not accept.
    pub anomalies: u64,
    /// The last event folded.
    pub checkpoint: Option<Head>,
}

/// A page request over attempts, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptQuery {
    /// Only this target's attempts.
    pub target: Option<TargetId>,
    /// Only attempts in this status.
    pub status: Option<AttemptStatus>,
    /// At most this many (the caller caps it).
    pub limit: usize,
    /// Continue after this cursor (from a previous page).
    pub cursor: Option<u64>,
}

/// A page request over failed and timed-out attempts, most recently ended first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureQuery {
    /// Only this target's failures.
    pub target: Option<TargetId>,
    /// At most this many (the caller caps it).
    pub limit: usize,
    /// Continue after this cursor (from a previous page).
    pub cursor: Option<u64>,
}

impl AttemptQuery {
    /// Whether `attempt` passes the query's filters.
    pub fn matches(&self, attempt: &AttemptNode) -> bool {
        self.target.as_ref().is_none_or(|t| t == &attempt.target_id)
            && self.status.is_none_or(|s| s == attempt.status)
    }
}

impl FailureQuery {
    /// Whether `attempt` is a failure (failed or timed out) that passes the query's filter.
    pub fn matches(&self, attempt: &AttemptNode) -> bool {
        matches!(
            attempt.status,
            AttemptStatus::Failed | AttemptStatus::TimedOut
        ) && self.target.as_ref().is_none_or(|t| t == &attempt.target_id)
    }
}

/// Takes a page from `candidates`, given in the page's order each with its cursor key: the
/// first `limit` that `keep` accepts, and as the next cursor the key of the last of them when
/// another accepted candidate follows. Every backend pages its index scans with it.
pub fn take_page<T: Borrow<AttemptNode>, E>(
    candidates: impl IntoIterator<Item = Result<(u64, T), E>>,
    limit: usize,
    keep: impl Fn(&AttemptNode) -> bool,
) -> Result<(Vec<T>, Option<u64>), E> {
    let mut page = Vec::new();
    let mut last_key = None;
    for candidate in candidates {
        let (key, attempt) = candidate?;
        if !keep(attempt.borrow()) {
            continue;
        }
        if page.len() == limit {
            return Ok((page, last_key));
        }
        page.push(attempt);
        last_key = Some(key);
    }
    Ok((page, None))
}

/// Nodes, edges and their indexes: what the queries read, in the graph and in a
/// [`super::StoredGraph`] alike.
#[derive(Clone, Copy)]
pub(super) struct Records<'a> {
    pub(super) nodes: &'a BTreeMap<NodeId, Node>,
    pub(super) edges: &'a BTreeMap<String, Edge>,
    pub(super) index: &'a Indexes,
}

impl<'a> Records<'a> {
    pub(super) fn attempt(self, id: &AttemptId) -> Option<&'a AttemptNode> {
        match self.nodes.get(&NodeId::attempt(id)) {
            Some(Node::Attempt(a)) => Some(a),
            _ => None,
        }
    }

    /// Edges leaving `from` (a range scan: edge ids start with `<from>:`).
    pub(super) fn edges_from(self, from: &NodeId) -> impl Iterator<Item = &'a Edge> + use<'a> {
        let prefix = format!("{from}:");
        self.edges
            .range(prefix.clone()..)
            .take_while(move |(id, _)| id.starts_with(&prefix))
            .map(|(_, e)| e)
    }

    /// Nodes the attempt produced, in edge id order.
    pub(super) fn produced_by(
        self,
        attempt: &AttemptId,
    ) -> impl Iterator<Item = &'a Node> + use<'a> {
        self.edges_from(&NodeId::attempt(attempt))
            .filter(|e| e.edge_type == EdgeKind::Produced)
            .filter_map(move |e| self.nodes.get(&e.to))
    }

    pub(super) fn attempts_of(
        self,
        target: &TargetId,
        task: &TaskId,
    ) -> impl Iterator<Item = &'a AttemptNode> + use<'a> {
        self.index
            .attempts_by_task
            .get(&NodeId::task(target, task))
            .into_iter()
            .flatten()
            .filter_map(move |id| self.attempt(id))
    }

    pub(super) fn attempts_page(self, query: &AttemptQuery) -> (Vec<&'a AttemptNode>, Option<u64>) {
        let candidates = self
            .index
            .attempts_by_created
            .range(..query.cursor.unwrap_or(u64::MAX))
            .rev()
            .filter_map(|(key, id)| Some(Ok::<_, Infallible>((*key, self.attempt(id)?))));
        let Ok(page) = take_page(candidates, query.limit, |a| query.matches(a));
        page
    }

    pub(super) fn failures_page(self, query: &FailureQuery) -> (Vec<&'a AttemptNode>, Option<u64>) {
        let candidates = self
            .index
            .ended_by_seq
            .range(..query.cursor.unwrap_or(u64::MAX))
            .rev()
            .filter_map(|(key, id)| Some(Ok::<_, Infallible>((*key, self.attempt(id)?))));
        let Ok(page) = take_page(candidates, query.limit, |a| query.matches(a));
        page
    }
}

impl Graph {
    fn records(&self) -> Records<'_> {
        Records {
            nodes: &self.nodes,
            edges: &self.edges,
            index: &self.index,
        }
    }

    /// A node by id.
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// All nodes, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// All edges, in id order.
    pub fn edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges.values()
    }

    /// Edges leaving `from` (a range scan: edge ids start with `<from>:`).
    pub fn edges_from<'a>(&'a self, from: &NodeId) -> impl Iterator<Item = &'a Edge> + use<'a> {
        self.records().edges_from(from)
    }

    /// A target.
    pub fn target(&self, id: &TargetId) -> Option<&TargetNode> {
        match self.nodes.get(&NodeId::target(id)) {
            Some(Node::Target(t)) => Some(t),
            _ => None,
        }
    }

    /// All targets.
    pub fn targets(&self) -> impl Iterator<Item = &TargetNode> {
        self.nodes.values().filter_map(|n| match n {
            Node::Target(t) => Some(t),
            _ => None,
        })
    }

    /// A task.
    pub fn task(&self, target: &TargetId, task: &TaskId) -> Option<&TaskNode> {
        match self.nodes.get(&NodeId::task(target, task)) {
            Some(Node::Task(t)) => Some(t),
            _ => None,
        }
    }

    /// A target's tasks, in id order.
    pub fn tasks_of<'a>(&'a self, target: &TargetId) -> impl Iterator<Item = &'a TaskNode> + 'a {
        self.index
            .tasks_by_target
            .get(target)
            .into_iter()
            .flatten()
            .filter_map(|id| match self.nodes.get(id) {
                Some(Node::Task(t)) => Some(t),
                _ => None,
            })
    }

    /// An attempt.
    pub fn attempt(&self, id: &AttemptId) -> Option<&AttemptNode> {
        self.records().attempt(id)
    }

    /// A task's attempts, oldest first.
    pub fn attempts_of<'a>(
        &'a self,
        target: &TargetId,
        task: &TaskId,
    ) -> impl Iterator<Item = &'a AttemptNode> + 'a {
        self.records().attempts_of(target, task)
    }

    /// Attempts that are created or running, oldest first.
    pub fn live_attempts(&self) -> impl Iterator<Item = &AttemptNode> {
        self.index
            .attempts_by_created
            .values()
            .filter_map(|id| self.attempt(id))
            .filter(|a| a.status.is_live())
    }

    /// A page of attempts, newest first, and the cursor of the next page.
    pub fn attempts_page(&self, query: &AttemptQuery) -> (Vec<&AttemptNode>, Option<u64>) {
        self.records().attempts_page(query)
    }

    /// A page of failed and timed-out attempts, most recently ended first, and the cursor of the
    /// next page (the `seq` that ended the page's last attempt).
    pub fn failures_page(&self, query: &FailureQuery) -> (Vec<&AttemptNode>, Option<u64>) {
        self.records().failures_page(query)
    }

    /// A pull request.
    pub fn pull_request(&self, target: &TargetId, number: u64) -> Option<&PullRequestNode> {
        match self.nodes.get(&NodeId::pull_request(target, number)) {
            Some(Node::PullRequest(p)) => Some(p),
            _ => None,
        }
    }

    /// Open pull requests, optionally of one target.
    pub fn open_pull_requests<'a>(
        &'a self,
        target: Option<&'a TargetId>,
    ) -> impl Iterator<Item = &'a PullRequestNode> + 'a {
        self.index
            .open_prs
            .iter()
            .filter_map(|id| match self.nodes.get(id) {
                Some(Node::PullRequest(p)) => Some(p),
                _ => None,
            })
            .filter(move |p| target.is_none_or(|t| t == &p.target_id))
    }

    /// Nodes an attempt produced, of one kind.
    pub fn produced_by<'a>(
        &'a self,
        attempt: &AttemptId,
        kind: NodeKind,
    ) -> impl Iterator<Item = &'a Node> + use<'a> {
        self.records()
            .produced_by(attempt)
            .filter(move |n| n.kind() == kind)
    }

    /// Counts by type and status.
    pub fn summary(&self) -> GraphSummary {
        let ix = &self.index;
        GraphSummary {
            total_nodes: self.nodes.len() as u64,
            total_edges: self.edges.len() as u64,
            nodes_by_type: ix
                .node_counts
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            edges_by_type: ix
                .edge_counts
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            attempts_by_status: ix
                .attempt_status
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            tasks_by_status: ix
                .task_status
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            open_prs: ix.open_prs.len() as u64,
            anomalies: self.anomalies.len() as u64,
            checkpoint: self.checkpoint,
        }
    }
}
