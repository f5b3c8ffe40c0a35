//! The graph itself: the fold of the log, with the indexes its queries read and the changes
//! not yet saved.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    delta::{Anomaly, GraphDelta, GraphSnapshot},
    index::Indexes,
    node::{Edge, Node, NodeId},
    projection::{self, Base, Change, Overlay, Rejection, View, WaitingOn},
};
use crate::{
    catalogue::{EventBody, StreamId},
    event::{Event, Head, NewEvent},
};

/// The projection of a log prefix, with indexes for the queries the API and the planner make.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub(super) nodes: BTreeMap<NodeId, Node>,
    pub(super) edges: BTreeMap<String, Edge>,
    streams: BTreeMap<StreamId, u64>,
    pub(super) anomalies: Vec<Anomaly>,
    pub(super) checkpoint: Option<Head>,
    waiting: WaitingOn,
    pub(super) index: Indexes,
    dirty: Dirty,
}

/// What changed since the last delta was taken.
#[derive(Clone, Debug, Default)]
struct Dirty {
    nodes: BTreeSet<NodeId>,
    edges: Vec<String>,
    streams: BTreeSet<StreamId>,
    anomalies: usize,
}

impl PartialEq for Graph {
    /// Graphs are equal when their content is: indexes are derived and dirty tracking is not state.
    fn eq(&self, other: &Self) -> bool {
        self.checkpoint == other.checkpoint
            && self.nodes == other.nodes
            && self.edges == other.edges
            && self.streams == other.streams
            && self.anomalies == other.anomalies
            && self.waiting == other.waiting
    }
}

impl Graph {
    /// An empty graph (the projection of an empty log).
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a graph from a persisted snapshot.
    pub fn from_snapshot(snapshot: GraphSnapshot) -> Self {
        let mut graph = Self {
            checkpoint: snapshot.checkpoint,
            anomalies: snapshot.anomalies,
            ..Self::default()
        };
        graph.streams = snapshot.streams.into_iter().collect();
        for node in snapshot.nodes {
            graph.put_node(node);
        }
        for edge in snapshot.edges {
            graph.link(edge);
        }
        graph.waiting = graph.undefined_dependencies();
        graph.dirty = Dirty::default();
        graph
    }

    /// Who waits on which undefined task, derived from the tasks' definitions.
    fn undefined_dependencies(&self) -> WaitingOn {
        let mut waiting = WaitingOn::new();
        for node in self.nodes.values() {
            let Node::Task(task) = node else { continue };
            for dep in &task.spec.dependencies {
                let dep_node = NodeId::task(&task.target_id, dep);
                if dep != &task.task_id && !self.nodes.contains_key(&dep_node) {
                    waiting
                        .entry(dep_node)
                        .or_default()
                        .insert(task.task_id.clone());
                }
            }
        }
        waiting
    }

    /// The whole graph as a snapshot.
    pub fn snapshot(&self) -> GraphSnapshot {
        GraphSnapshot {
            nodes: self.nodes.values().cloned().collect(),
            edges: self.edges.values().cloned().collect(),
            streams: self.streams.iter().map(|(s, v)| (s.clone(), *v)).collect(),
            anomalies: self.anomalies.clone(),
            checkpoint: self.checkpoint,
        }
    }

    /// The last event folded; `None` for the empty log.
    pub fn checkpoint(&self) -> Option<Head> {
        self.checkpoint
    }

    /// The `seq` of the last event folded (0 for none).
    pub fn checkpoint_seq(&self) -> u64 {
        self.checkpoint.map_or(0, |h| h.seq)
    }

    /// Events appended without validation that the projection could not accept.
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    /// The number of events in a stream so far.
    pub fn stream_version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).copied().unwrap_or(0)
    }

    /// Folds the next event. Total: an event the projection cannot accept becomes an anomaly.
    ///
    /// Events must come in log order; an event at or before the checkpoint is ignored, so that
    /// catching up twice over the same range is harmless.
    pub fn apply(&mut self, event: &Event) {
        if event.seq <= self.checkpoint_seq() {
            return;
        }
        let body = EventBody::parse(&event.event_type, &event.payload)
            .map_err(|e| Rejection::new(Some(e.field.clone()), e.reason.clone()));
        self.fold(event, body.as_ref());
    }

    /// [`Graph::apply`] for an event whose payload was already parsed (by ingest validation):
    /// `body` must be `EventBody::parse` of the event's type and payload.
    pub fn apply_parsed(&mut self, event: &Event, body: &EventBody) {
        if event.seq > self.checkpoint_seq() {
            self.fold(event, Ok(body));
        }
    }

    fn fold(&mut self, event: &Event, body: Result<&EventBody, &Rejection>) {
        let at = projection::At {
            seq: event.seq,
            timestamp: event.timestamp,
        };
        let effect = body
            .map_err(Clone::clone)
            .and_then(|body| projection::effect(&View::base(self.base()), at, body));
        match effect {
            Ok(changes) => {
                for change in changes {
                    match change {
                        Change::Put(node) => self.put_node(*node),
                        Change::Link(edge) => self.link(edge),
                        Change::Waiting { dep, waiters } if waiters.is_empty() => {
                            self.waiting.remove(&dep);
                        }
                        Change::Waiting { dep, waiters } => {
                            self.waiting.insert(dep, waiters);
                        }
                    }
                }
            }
            Err(rejection) => {
                self.anomalies.push(Anomaly {
                    seq: event.seq,
                    event_type: event.event_type.clone(),
                    reason: rejection.to_string(),
                });
                self.dirty.anomalies += 1;
            }
        }
        // Stores count every appended event in its stream, accepted by the projection or not;
        // the graph's versions must agree for expectations derived from it to hold.
        if let Some(stream) = body.ok().and_then(EventBody::stream) {
            *self.streams.entry(stream.clone()).or_insert(0) += 1;
            self.dirty.streams.insert(stream);
        }
        self.checkpoint = Some(event.head());
    }

    /// A scratch overlay for validating a batch of new events against this graph without
    /// changing it; each accepted event is visible to the next.
    pub fn stage(&self) -> Stage<'_> {
        Stage {
            base: self,
            overlay: Overlay::default(),
            next_seq: self.checkpoint_seq() + 1,
            #[cfg(test)]
            reads: 0,
        }
    }

    /// The whole graph as a delta from the empty graph (for a store that must be rewritten).
    pub fn snapshot_delta(&self) -> GraphDelta {
        self.snapshot().into()
    }

    /// Takes what changed since the last call, for persisting.
    pub fn take_delta(&mut self) -> GraphDelta {
        let dirty = std::mem::take(&mut self.dirty);
        GraphDelta {
            nodes: dirty
                .nodes
                .iter()
                .filter_map(|id| self.nodes.get(id).cloned())
                .collect(),
            edges: dirty
                .edges
                .iter()
                .filter_map(|id| self.edges.get(id).cloned())
                .collect(),
            streams: dirty
                .streams
                .iter()
                .map(|s| (s.clone(), self.stream_version(s)))
                .collect(),
            anomalies: self.anomalies
                [self.anomalies.len() - dirty.anomalies.min(self.anomalies.len())..]
                .to_vec(),
            checkpoint: self.checkpoint,
        }
    }

    /// Number of events folded since the last [`Graph::take_delta`] that changed something.
    pub fn has_pending_changes(&self) -> bool {
        !self.dirty.nodes.is_empty()
            || !self.dirty.edges.is_empty()
            || !self.dirty.streams.is_empty()
    }

    /// What the projection reads of this graph.
    fn base(&self) -> Base<'_> {
        Base {
            nodes: &self.nodes,
            edges: &self.edges,
            waiting: &self.waiting,
        }
    }

    fn put_node(&mut self, mut node: Node) {
        let id = node.id();
        if let Some(old) = self.nodes.get(&id) {
            // Keep creation provenance; the projection only sets `updated_*` on changes.
            let created = (old.meta().created_seq, old.meta().created_at);
            let meta = node.meta_mut();
            (meta.created_seq, meta.created_at) = created;
        }
        self.index.node_changed(&id, self.nodes.get(&id), &node);
        self.nodes.insert(id.clone(), node);
        self.dirty.nodes.insert(id);
    }

    fn link(&mut self, edge: Edge) {
        if self.edges.contains_key(&edge.edge_id) {
            return;
        }
        self.index.edge_added(&edge);
        self.dirty.edges.push(edge.edge_id.clone());
        self.edges.insert(edge.edge_id.clone(), edge);
    }
}

/// A batch of new events being validated against a graph (see [`Graph::stage`]).
#[derive(Debug)]
pub struct Stage<'g> {
    base: &'g Graph,
    overlay: Overlay,
    next_seq: u64,
    /// Graph entries the accepted events read.
    #[cfg(test)]
    pub(super) reads: u64,
}

impl Stage<'_> {
    /// Checks that the projection accepts `event` after the events accepted so far, and if so
    /// makes its effect visible to the next ones. `body` is the event's validated payload.
    pub fn accept(&mut self, event: &NewEvent, body: &EventBody) -> Result<(), Rejection> {
        // The seq does not influence whether an event is accepted; the next one suffices.
        let at = projection::At {
            seq: self.next_seq,
            timestamp: event.timestamp,
        };
        let view = View::staged(self.base.base(), &self.overlay);
        let changes = projection::effect(&view, at, body);
        #[cfg(test)]
        {
            self.reads += view.reads.get();
        }
        self.overlay.absorb(changes?);
        if let Some(stream) = body.stream() {
            let version = self
                .overlay
                .streams
                .get(&stream)
                .copied()
                .unwrap_or_else(|| self.base.stream_version(&stream));
            self.overlay.streams.insert(stream, version + 1);
        }
        self.next_seq += 1;
        Ok(())
    }

    /// The streams the accepted events touch, with their versions before the batch: the
    /// expectations under which appending the batch is safe.
    pub fn expectations(&self) -> Vec<(StreamId, u64)> {
        self.overlay
            .streams
            .keys()
            .map(|s| (s.clone(), self.base.stream_version(s)))
            .collect()
    }
}
