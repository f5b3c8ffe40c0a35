//! The graph as the projection reads it: the folded graph, optionally under an overlay of the
//! changes staged by earlier events of a batch.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    catalogue::StreamId,
    graph::node::{Edge, Node, NodeId, TaskNode},
    id::{TargetId, TaskId},
};

/// One change of the projection's effect of an event.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Put(Box<Node>),
    Link(Edge),
    /// The tasks waiting for the task `dep` (a task node id) to be defined, replacing the
    /// previous list; an empty list removes the entry.
    Waiting {
        dep: NodeId,
        waiters: BTreeSet<TaskId>,
    },
}

/// Tasks defined with a dependency on a task not defined yet, by the missing task's node id: the
/// index that gives a task its incoming dependency edges when it is defined, without a scan of
/// its target's tasks.
pub(crate) type WaitingOn = BTreeMap<NodeId, BTreeSet<TaskId>>;

/// What the projection reads of a folded graph: its nodes, its edges and who waits on which
/// undefined task.
#[derive(Clone, Copy)]
pub(crate) struct Base<'a> {
    pub(crate) nodes: &'a BTreeMap<NodeId, Node>,
    pub(crate) edges: &'a BTreeMap<String, Edge>,
    pub(crate) waiting: &'a WaitingOn,
}

/// Nodes, edges, waiting lists and stream versions staged on top of a graph.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    nodes: BTreeMap<NodeId, Node>,
    edges: BTreeSet<String>,
    waiting: WaitingOn,
    pub(crate) streams: BTreeMap<StreamId, u64>,
}

impl Overlay {
    pub(crate) fn absorb(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Put(node) => {
                    self.nodes.insert(node.id(), *node);
                }
                Change::Link(edge) => {
                    self.edges.insert(edge.edge_id);
                }
                Change::Waiting { dep, waiters } => {
                    self.waiting.insert(dep, waiters);
                }
            }
        }
    }
}

/// A graph, optionally with an overlay, as the projection reads it.
pub(crate) struct View<'a> {
    base: Base<'a>,
    overlay: Option<&'a Overlay>,
    /// Entries read so far, so that tests can check that an event's cost does not grow with
    /// the graph.
    #[cfg(test)]
    pub(crate) reads: std::cell::Cell<u64>,
}

impl<'a> View<'a> {
    pub(crate) fn base(base: Base<'a>) -> Self {
        Self {
            base,
            overlay: None,
            #[cfg(test)]
            reads: std::cell::Cell::new(0),
        }
    }

    pub(crate) fn staged(base: Base<'a>, overlay: &'a Overlay) -> Self {
        Self {
            base,
            overlay: Some(overlay),
            #[cfg(test)]
            reads: std::cell::Cell::new(0),
        }
    }

    fn count_read(&self) {
        #[cfg(test)]
        self.reads.set(self.reads.get() + 1);
    }

    pub(super) fn node(&self, id: &NodeId) -> Option<&'a Node> {
        self.count_read();
        self.overlay
            .and_then(|o| o.nodes.get(id))
            .or_else(|| self.base.nodes.get(id))
    }

    pub(super) fn has_edge(&self, id: &str) -> bool {
        self.count_read();
        self.overlay.is_some_and(|o| o.edges.contains(id)) || self.base.edges.contains_key(id)
    }

    pub(super) fn task(&self, target: &TargetId, task: &TaskId) -> Option<&'a TaskNode> {
        match self.node(&NodeId::task(target, task)) {
            Some(Node::Task(t)) => Some(t),
            _ => None,
        }
    }

    /// The tasks of the same target waiting for the task `dep` (a task node id) to be defined.
    pub(super) fn waiters(&self, dep: &NodeId) -> Option<&'a BTreeSet<TaskId>> {
        self.count_read();
        self.overlay
            .and_then(|o| o.waiting.get(dep))
            .or_else(|| self.base.waiting.get(dep))
            .filter(|waiters| !waiters.is_empty())
    }
}
