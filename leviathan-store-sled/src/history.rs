//! The projection's history on sled: every saved node and edge by id, and the attempt indexes
//! the history queries scan (see the crate docs for the keys), written by each save under the
//! graph lock before the save is sealed.
//!
//! Entries are whole nodes at a checkpoint at or after the sealed one, so writing them again
//! (a save cut short and repeated) is harmless. An attempt's index keys change with its status
//! and end: a save removes the keys of the node it replaces. A key left behind by a save cut
//! short names an attempt that no longer matches it, and every query checks the node it reads
//! against its filters, so such a key is skipped, never answered.

use std::collections::BTreeSet;

use leviathan_core::{
    GraphStoreError,
    graph::{
        AttemptNode, AttemptPage, AttemptQuery, Edge, EdgeKind, FailureQuery, GraphDelta,
        GraphSnapshot, Node, NodeId, take_page,
    },
    id::{AttemptId, TargetId, TaskId},
    model::AttemptStatus,
};

use crate::{
    error,
    layout::{self, Trees},
};

/// An attempt's index keys (see [`attempt_keys`]).
type IndexKeys = BTreeSet<Vec<u8>>;

/// Nodes and edges encoded for the history trees (done before the graph lock is taken): each
/// node's id, JSON and, for an attempt, its index keys.
pub(crate) struct Entries {
    nodes: Vec<(NodeId, Vec<u8>, Option<IndexKeys>)>,
    edges: Vec<(String, Vec<u8>)>,
}

impl Entries {
    /// The history writes of a delta (or a whole snapshot).
    pub(crate) fn of(nodes: &[Node], edges: &[Edge]) -> Result<Self, GraphStoreError> {
        let encode = |what: &str, value: Result<Vec<u8>, serde_json::Error>| {
            value.map_err(|err| GraphStoreError::Backend {
                reason: format!("encoding {what} for the history: {err}"),
                source: Some(Box::new(err)),
            })
        };
        let nodes = nodes
            .iter()
            .map(|node| {
                let keys = match node {
                    Node::Attempt(a) => Some(attempt_keys(a)),
                    _ => None,
                };
                Ok((node.id(), encode("a node", serde_json::to_vec(node))?, keys))
            })
            .collect::<Result<_, GraphStoreError>>()?;
        let edges = edges
            .iter()
            .map(|edge| {
                let json = encode("an edge", serde_json::to_vec(edge))?;
                Ok((edge.edge_id.clone(), json))
            })
            .collect::<Result<_, GraphStoreError>>()?;
        Ok(Self { nodes, edges })
    }

    pub(crate) fn of_delta(delta: &GraphDelta) -> Result<Self, GraphStoreError> {
        Self::of(&delta.nodes, &delta.edges)
    }

    pub(crate) fn of_snapshot(snapshot: &GraphSnapshot) -> Result<Self, GraphStoreError> {
        Self::of(&snapshot.nodes, &snapshot.edges)
    }
}

/// The index keys of an attempt; each maps to the attempt's id. Target, task and status names
/// never hold a zero byte, which ends each of them.
fn attempt_keys(a: &AttemptNode) -> IndexKeys {
    let created = a.meta.created_seq.to_be_bytes();
    let (target, status) = (a.target_id.as_str(), a.status.as_str());
    let mut keys: IndexKeys = [
        [&b"c"[..], &created].concat(),
        [&b"t"[..], target.as_bytes(), &[0], &created].concat(),
        [&b"s"[..], status.as_bytes(), &[0], &created].concat(),
        [
            &b"u"[..],
            target.as_bytes(),
            &[0],
            status.as_bytes(),
            &[0],
            &created,
        ]
        .concat(),
        [task_prefix(&a.target_id, &a.task_id), created.to_vec()].concat(),
    ]
    .into_iter()
    .collect();
    if let (AttemptStatus::Failed | AttemptStatus::TimedOut, Some(ended)) = (a.status, a.ended_seq)
    {
        let ended = ended.to_be_bytes();
        keys.insert([&b"f"[..], &ended].concat());
        keys.insert([&b"g"[..], target.as_bytes(), &[0], &ended].concat());
    }
    keys
}

fn task_prefix(target: &TargetId, task: &TaskId) -> Vec<u8> {
    [
        &b"k"[..],
        target.as_str().as_bytes(),
        &[0],
        task.as_str().as_bytes(),
        &[0],
    ]
    .concat()
}

/// The index prefix an attempt query scans.
pub(crate) fn attempts_prefix(query: &AttemptQuery) -> Vec<u8> {
    match (&query.target, query.status) {
        (None, None) => b"c".to_vec(),
        (Some(t), None) => [&b"t"[..], t.as_str().as_bytes(), &[0]].concat(),
        (None, Some(s)) => [&b"s"[..], s.as_str().as_bytes(), &[0]].concat(),
        (Some(t), Some(s)) => [
            &b"u"[..],
            t.as_str().as_bytes(),
            &[0],
            s.as_str().as_bytes(),
            &[0],
        ]
        .concat(),
    }
}

/// The index prefix a failure query scans.
pub(crate) fn failures_prefix(query: &FailureQuery) -> Vec<u8> {
    match &query.target {
        None => b"f".to_vec(),
        Some(t) => [&b"g"[..], t.as_str().as_bytes(), &[0]].concat(),
    }
}

fn corrupt(reason: String) -> GraphStoreError {
    GraphStoreError::Corrupt { reason }
}

/// Writes the entries: nodes replace the stored ones (with their attempt keys), edges are kept
/// as first stored.
pub(crate) fn record(
    trees: &Trees,
    entries: &Entries,
    location: &str,
) -> Result<(), GraphStoreError> {
    let failed = |e| error::graph_store(e, &format!("writing the history of {location}"));
    for (id, json, keys) in &entries.nodes {
        let old = trees
            .graph_history
            .insert(id.as_str(), &json[..])
            .map_err(failed)?;
        let Some(keys) = keys else { continue };
        let old_keys = match old {
            Some(bytes) => match decode_node(id, &bytes, location)? {
                Node::Attempt(a) => attempt_keys(&a),
                _ => IndexKeys::new(),
            },
            None => IndexKeys::new(),
        };
        let attempt_id = id.as_str().trim_start_matches("attempt:").as_bytes();
        for stale in old_keys.difference(keys) {
            trees.graph_attempt_index.remove(stale).map_err(failed)?;
        }
        for key in keys.difference(&old_keys) {
            trees
                .graph_attempt_index
                .insert(key, attempt_id)
                .map_err(failed)?;
        }
    }
    for (id, json) in &entries.edges {
        trees
            .graph_history_edges
            .compare_and_swap(id.as_str(), None as Option<&[u8]>, Some(&json[..]))
            .map_err(failed)?
            .ok();
    }
    Ok(())
}

/// Empties the history trees.
pub(crate) fn clear(trees: &Trees, location: &str) -> Result<(), GraphStoreError> {
    let failed = |e| error::graph_store(e, &format!("clearing the history of {location}"));
    trees.graph_history.clear().map_err(failed)?;
    trees.graph_history_edges.clear().map_err(failed)?;
    trees.graph_attempt_index.clear().map_err(failed)
}

fn decode_node(id: &NodeId, bytes: &[u8], location: &str) -> Result<Node, GraphStoreError> {
    serde_json::from_slice(bytes).map_err(|err| {
        corrupt(format!(
            "{location}: the stored history of `{id}` does not decode: {err}"
        ))
    })
}

/// A stored node.
pub(crate) fn node(
    trees: &Trees,
    id: &NodeId,
    location: &str,
) -> Result<Option<Node>, GraphStoreError> {
    let stored = trees
        .graph_history
        .get(id.as_str())
        .map_err(|e| error::graph_store(e, &format!("reading `{id}` from {location}")))?;
    stored
        .map(|bytes| decode_node(id, &bytes, location))
        .transpose()
}

/// The attempt an index entry names, with the entry's `seq` (its last eight bytes).
fn indexed_attempt(
    trees: &Trees,
    entry: sled::Result<(sled::IVec, sled::IVec)>,
    location: &str,
) -> Result<Option<(u64, AttemptNode)>, GraphStoreError> {
    let (key, value) = entry
        .map_err(|e| error::graph_store(e, &format!("reading the attempt index of {location}")))?;
    let malformed = || corrupt(format!("{location}: an attempt index entry is malformed"));
    let seq = key
        .len()
        .checked_sub(8)
        .and_then(|at| layout::decode_u64(&key[at..]))
        .ok_or_else(malformed)?;
    let id = std::str::from_utf8(&value)
        .ok()
        .and_then(|id| AttemptId::new(id).ok())
        .ok_or_else(malformed)?;
    match node(trees, &NodeId::attempt(&id), location)? {
        Some(Node::Attempt(attempt)) => Ok(Some((seq, attempt))),
        _ => Ok(None),
    }
}

/// Scans an index prefix newest first from `cursor` (exclusive) and takes a page of the
/// attempts that `keep` accepts.
pub(crate) fn page(
    trees: &Trees,
    prefix: &[u8],
    cursor: Option<u64>,
    limit: usize,
    keep: impl Fn(&AttemptNode) -> bool,
    location: &str,
) -> Result<AttemptPage, GraphStoreError> {
    let upper = [prefix, &cursor.unwrap_or(u64::MAX).to_be_bytes()].concat();
    let candidates = trees
        .graph_attempt_index
        .range(prefix.to_vec()..upper)
        .rev()
        .filter_map(|entry| indexed_attempt(trees, entry, location).transpose());
    let (attempts, next_cursor) = take_page(candidates, limit, keep)?;
    Ok(AttemptPage {
        attempts,
        next_cursor,
    })
}

pub(crate) fn task_attempts(
    trees: &Trees,
    target: &TargetId,
    task: &TaskId,
    location: &str,
) -> Result<Vec<AttemptNode>, GraphStoreError> {
    let mut attempts = Vec::new();
    for entry in trees
        .graph_attempt_index
        .scan_prefix(task_prefix(target, task))
    {
        match indexed_attempt(trees, entry, location)? {
            Some((_, a)) if &a.target_id == target && &a.task_id == task => attempts.push(a),
            _ => {}
        }
    }
    Ok(attempts)
}

pub(crate) fn produced(
    trees: &Trees,
    attempt: &AttemptId,
    location: &str,
) -> Result<Vec<Node>, GraphStoreError> {
    let prefix = format!("{}:{}:", NodeId::attempt(attempt), EdgeKind::Produced);
    let mut nodes = Vec::new();
    for entry in trees.graph_history_edges.scan_prefix(prefix.as_bytes()) {
        let (key, json) =
            entry.map_err(|e| error::graph_store(e, &format!("reading edges of {location}")))?;
        let edge: Edge = serde_json::from_slice(&json).map_err(|err| {
            corrupt(format!(
                "{location}: the stored edge `{}` does not decode: {err}",
                String::from_utf8_lossy(&key)
            ))
        })?;
        nodes.extend(node(trees, &edge.to, location)?);
    }
    Ok(nodes)
}
