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
}

/// What the projection reads of a folded graph: its nodes, its edges and the tasks of each
/// target.
#[derive(Clone, Copy)]
pub(crate) struct Base<'a> {
    pub(crate) nodes: &'a BTreeMap<NodeId, Node>,
    pub(crate) edges: &'a BTreeMap<String, Edge>,
    pub(crate) tasks_by_target: &'a BTreeMap<TargetId, BTreeSet<NodeId>>,
}

/// Nodes, edges and stream versions staged on top of a graph.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    nodes: BTreeMap<NodeId, Node>,
    edges: BTreeSet<String>,
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
            }
        }
    }
}

/// A graph, optionally with an overlay, as the projection reads it.
pub(crate) struct View<'a> {
    base: Base<'a>,
    overlay: Option<&'a Overlay>,
}

impl<'a> View<'a> {
    pub(crate) fn base(base: Base<'a>) -> Self {
        Self {
            base,
            overlay: None,
        }
    }

    pub(crate) fn staged(base: Base<'a>, overlay: &'a Overlay) -> Self {
        Self {
            base,
            overlay: Some(overlay),
        }
    }

    pub(super) fn node(&self, id: &NodeId) -> Option<&'a Node> {
        self.overlay
            .and_then(|o| o.nodes.get(id))
            .or_else(|| self.base.nodes.get(id))
    }

    pub(super) fn has_edge(&self, id: &str) -> bool {
        self.overlay.is_some_and(|o| o.edges.contains(id)) || self.base.edges.contains_key(id)
    }

    pub(super) fn task(&self, target: &TargetId, task: &TaskId) -> Option<&'a TaskNode> {
        match self.node(&NodeId::task(target, task)) {
            Some(Node::Task(t)) => Some(t),
            _ => None,
        }
    }

    /// The tasks of a target, overlay first.
    pub(super) fn tasks_of(&self, target: &TargetId) -> Vec<&'a TaskNode> {
        let mut ids: BTreeSet<&NodeId> = self
            .base
            .tasks_by_target
            .get(target)
            .into_iter()
            .flatten()
            .collect();
        if let Some(overlay) = self.overlay {
            ids.extend(overlay.nodes.iter().filter_map(|(id, n)| match n {
                Node::Task(t) if &t.target_id == target => Some(id),
                _ => None,
            }));
        }
        ids.into_iter()
            .filter_map(|id| match self.node(id) {
                Some(Node::Task(t)) => Some(t),
                _ => None,
            })
            .collect()
    }
}
