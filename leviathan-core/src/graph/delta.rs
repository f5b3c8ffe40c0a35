//! What a [`crate::GraphStore`] persists of a graph: the changes since the last save, whole
//! snapshots, anomalies, and the rules by which saved deltas merge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    index::Indexes,
    node::{AttemptNode, Edge, Node, NodeId},
    query::{AttemptQuery, FailureQuery, Records},
};
use crate::{
    catalogue::StreamId,
    event::Head,
    id::{AttemptId, TargetId, TaskId},
};

/// An appended event the projection could not accept (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The event's position.
    pub seq: u64,
    /// Its type.
    pub event_type: String,
    /// Why it had no effect.
    pub reason: String,
}

/// What changed in a graph since the last [`Graph::take_delta`]: what a [`crate::GraphStore`]
/// persists, atomically with the new checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphDelta {
    /// Nodes created or changed (whole nodes; nodes are never deleted).
    pub nodes: Vec<Node>,
    /// Edges created (edges are never deleted).
    pub edges: Vec<Edge>,
    /// Stream versions changed.
    pub streams: Vec<(StreamId, u64)>,
    /// Anomalies recorded.
    pub anomalies: Vec<Anomaly>,
    /// The last event folded.
    pub checkpoint: Option<Head>,
}

impl GraphDelta {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.edges.is_empty()
            && self.streams.is_empty()
            && self.anomalies.is_empty()
    }
}

/// A whole persisted graph, as a [`crate::GraphStore`] loads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphSnapshot {
    /// All nodes.
    pub nodes: Vec<Node>,
    /// All edges.
    pub edges: Vec<Edge>,
    /// All stream versions.
    pub streams: Vec<(StreamId, u64)>,
    /// All anomalies.
    pub anomalies: Vec<Anomaly>,
    /// The last event folded.
    pub checkpoint: Option<Head>,
}

impl From<GraphSnapshot> for GraphDelta {
    /// The whole graph as a delta from the empty graph (`previous` 0).
    fn from(snapshot: GraphSnapshot) -> Self {
        Self {
            nodes: snapshot.nodes,
            edges: snapshot.edges,
            streams: snapshot.streams,
            anomalies: snapshot.anomalies,
            checkpoint: snapshot.checkpoint,
        }
    }
}

/// What a [`crate::GraphStore`] holds after a sequence of saves: each delta merged over the
/// ones before it, by the rules every backend shares (the newest node and stream version win,
/// an edge is kept as first stored, an anomaly is kept once per `seq`), with the indexes the
/// history queries read.
#[derive(Clone, Debug, Default)]
pub struct StoredGraph {
    nodes: BTreeMap<NodeId, Node>,
    edges: BTreeMap<String, Edge>,
    streams: BTreeMap<StreamId, u64>,
    anomalies: BTreeMap<u64, Anomaly>,
    checkpoint: Option<Head>,
    index: Indexes,
}

impl StoredGraph {
    /// Merges the next saved delta.
    pub fn merge(&mut self, delta: GraphDelta) {
        for node in delta.nodes {
            let id = node.id();
            self.index.node_changed(&id, self.nodes.get(&id), &node);
            self.nodes.insert(id, node);
        }
        for edge in delta.edges {
            if !self.edges.contains_key(&edge.edge_id) {
                self.index.edge_added(&edge);
                self.edges.insert(edge.edge_id.clone(), edge);
            }
        }
        self.streams.extend(delta.streams);
        for anomaly in delta.anomalies {
            self.anomalies.insert(anomaly.seq, anomaly);
        }
        self.checkpoint = delta.checkpoint;
    }

    /// The checkpoint of the last delta merged.
    pub fn checkpoint(&self) -> Option<Head> {
        self.checkpoint
    }

    fn records(&self) -> Records<'_> {
        Records {
            nodes: &self.nodes,
            edges: &self.edges,
            index: &self.index,
        }
    }

    /// A stored node.
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// A page of stored attempts, newest first, and the cursor of the next page.
    pub fn attempts_page(&self, query: &AttemptQuery) -> (Vec<&AttemptNode>, Option<u64>) {
        self.records().attempts_page(query)
    }

    /// A page of stored failures, most recently ended first, and the cursor of the next page.
    pub fn failures_page(&self, query: &FailureQuery) -> (Vec<&AttemptNode>, Option<u64>) {
        self.records().failures_page(query)
    }

    /// A task's stored attempts, oldest first.
    pub fn attempts_of<'a>(
        &'a self,
        target: &TargetId,
        task: &TaskId,
    ) -> impl Iterator<Item = &'a AttemptNode> + 'a {
        self.records().attempts_of(target, task)
    }

    /// The stored nodes an attempt produced, in edge id order.
    pub fn produced_by<'a>(
        &'a self,
        attempt: &AttemptId,
    ) -> impl Iterator<Item = &'a Node> + use<'a> {
        self.records().produced_by(attempt)
    }

    /// Everything merged, as a snapshot to load.
    pub fn into_snapshot(self) -> GraphSnapshot {
        GraphSnapshot {
            nodes: self.nodes.into_values().collect(),
            edges: self.edges.into_values().collect(),
            streams: self.streams.into_iter().collect(),
            anomalies: self.anomalies.into_values().collect(),
            checkpoint: self.checkpoint,
        }
    }
}
