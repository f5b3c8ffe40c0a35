//! What every event family's effect builds on: the event's place in the log, what it reads of
//! the graph, the changes it stages, and why it may be refused.

use std::{collections::BTreeSet, fmt};

use serde::Serialize;

use super::view::{Change, View};
use crate::{
    graph::node::{
        AttemptNode, Edge, EdgeKind, Node, NodeId, NodeMeta, PullRequestNode, TargetNode, TaskNode,
    },
    id::{AttemptId, TargetId, TaskId},
};

/// Why the projection cannot accept an event in the current state of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The payload field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl Rejection {
    pub(crate) fn new(field: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    pub(super) fn at(field: &str, reason: impl Into<String>) -> Self {
        Self::new(Some(field.to_owned()), reason)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Rejection {}

/// Where an event sits in the log: all the projection reads of it besides its payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub(crate) seq: u64,
    pub(crate) timestamp: crate::timestamp::Timestamp,
}

/// Builds the changes of one event.
pub(crate) struct Effect<'v, 'a> {
    pub(super) view: &'v View<'a>,
    pub(super) at: At,
    pub(super) changes: Vec<Change>,
}

impl Effect<'_, '_> {
    pub(super) fn new_meta(&self) -> NodeMeta {
        NodeMeta {
            created_seq: self.at.seq,
            updated_seq: self.at.seq,
            created_at: self.at.timestamp,
            updated_at: self.at.timestamp,
        }
    }

    pub(super) fn touch(&self, meta: &mut NodeMeta) {
        meta.updated_seq = self.at.seq;
        meta.updated_at = self.at.timestamp;
    }

    pub(super) fn put(&mut self, node: Node) {
        self.changes.push(Change::Put(Box::new(node)));
    }

    pub(super) fn link(&mut self, from: NodeId, kind: EdgeKind, to: NodeId) {
        let edge_id = Edge::id(&from, kind, &to);
        if self.view.has_edge(&edge_id) {
            return;
        }
        self.changes.push(Change::Link(Edge {
            edge_id,
            edge_type: kind,
            from,
            to,
            created_seq: self.at.seq,
            created_at: self.at.timestamp,
        }));
    }

    /// A node as this effect has left it so far: its latest pending change, else the view's.
    pub(super) fn current(&self, id: &NodeId) -> Option<Node> {
        self.changes
            .iter()
            .rev()
            .find_map(|c| match c {
                Change::Put(n) if &n.id() == id => Some((**n).clone()),
                _ => None,
            })
            .or_else(|| self.view.node(id).cloned())
    }

    pub(super) fn target(&self, id: &TargetId, field: &str) -> Result<TargetNode, Rejection> {
        match self.current(&NodeId::target(id)) {
            Some(Node::Target(t)) => Ok(t),
            _ => Err(Rejection::at(
                field,
                format!("target `{id}` is not registered"),
            )),
        }
    }

    pub(super) fn task(&self, target: &TargetId, task: &TaskId) -> Result<TaskNode, Rejection> {
        match self.current(&NodeId::task(target, task)) {
            Some(Node::Task(t)) => Ok(t),
            _ => Err(Rejection::at(
                "task_id",
                format!("task `{task}` of target `{target}` is unknown"),
            )),
        }
    }

    pub(super) fn attempt(&self, id: &AttemptId) -> Result<AttemptNode, Rejection> {
        match self.current(&NodeId::attempt(id)) {
            Some(Node::Attempt(a)) => Ok(a),
            _ => Err(Rejection::at(
                "attempt_id",
                format!("attempt `{id}` is unknown"),
            )),
        }
    }

    pub(super) fn pull_request(&self, target: &TargetId, number: u64) -> Option<PullRequestNode> {
        match self.current(&NodeId::pull_request(target, number)) {
            Some(Node::PullRequest(p)) => Some(p),
            _ => None,
        }
    }

    /// The tasks waiting for the task `dep` (a task node id) to be defined, as this effect has
    /// left the list so far.
    pub(super) fn waiters(&self, dep: &NodeId) -> BTreeSet<TaskId> {
        self.changes
            .iter()
            .rev()
            .find_map(|c| match c {
                Change::Waiting { dep: d, waiters } if d == dep => Some(waiters.clone()),
                _ => None,
            })
            .or_else(|| self.view.waiters(dep).cloned())
            .unwrap_or_default()
    }

    /// Replaces the list of tasks waiting for `dep` to be defined.
    pub(super) fn set_waiters(&mut self, dep: NodeId, waiters: BTreeSet<TaskId>) {
        self.changes.push(Change::Waiting { dep, waiters });
    }

    /// An attempt that has not ended yet.
    pub(super) fn live_attempt(&self, id: &AttemptId) -> Result<AttemptNode, Rejection> {
        let attempt = self.attempt(id)?;
        if !attempt.status.is_live() {
            return Err(Rejection::at(
                "attempt_id",
                format!("attempt `{id}` already ended ({})", attempt.status),
            ));
        }
        Ok(attempt)
    }

    /// Records this event on the attempt's event list and provenance.
    pub(super) fn note(&self, attempt: &mut AttemptNode) {
        attempt.event_seqs.push(self.at.seq);
        self.touch(&mut attempt.meta);
    }

    /// Notes an event about an attempt that changes nothing but the attempt (a spent budget),
    /// live or ended. An unknown attempt is no rejection: such events were once accepted without
    /// one, and logs holding them must still fold.
    pub(super) fn note_on_attempt(
        &mut self,
        id: &AttemptId,
        change: impl FnOnce(&mut AttemptNode),
    ) -> Result<(), Rejection> {
        if let Ok(mut attempt) = self.attempt(id) {
            change(&mut attempt);
            self.note(&mut attempt);
            self.put(Node::Attempt(attempt));
        }
        Ok(())
    }
}
