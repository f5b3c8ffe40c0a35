//! The persisted projection on sled: nodes, edges, stream versions, anomalies and the
//! checkpoint in their own trees.
//!
//! A delta is written entry by entry rather than in one sled transaction: sled commits every
//! transaction under one lock shared by all its trees (and every database of the process), so a
//! delta of thousands of entries in one transaction would stall the event writer for its whole
//! commit. Instead a `saving` marker is stored first and removed together with the new checkpoint
//! (one atomic batch on `graph.meta`); a load that finds the marker (a save cut short by a crash
//! or an I/O error) discards the stored graph, which the ledger then rebuilds from the log.
//! Within the process, saves, loads and clears hold [`Shared::graph_lock`], so no load sees half
//! a save.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use leviathan_core::{
    GraphStore, GraphStoreError, Head, StreamId,
    graph::{GraphDelta, GraphSnapshot},
    store::delta_fits,
};
use serde::de::DeserializeOwned;
use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};

use crate::{
    error,
    layout::{self, Trees},
    store::Shared,
};

/// The [`GraphStore`] of a [`SledStore`](crate::SledStore).
#[derive(Clone)]
pub(crate) struct SledGraphStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for SledGraphStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledGraphStore")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

fn corrupt(reason: String) -> GraphStoreError {
    GraphStoreError::Corrupt { reason }
}

/// Keys and values of one tree's entries in a delta.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A delta encoded for storage (done before the graph lock is taken).
struct EncodedDelta {
    nodes: Entries,
    edges: Entries,
    streams: Entries,
    anomalies: Entries,
    checkpoint: Option<[u8; 40]>,
    checkpoint_seq: u64,
}

impl EncodedDelta {
    fn new(delta: &GraphDelta) -> Result<Self, GraphStoreError> {
        let json = |what: String, value: Result<Vec<u8>, serde_json::Error>| {
            value.map_err(|err| GraphStoreError::Backend {
                reason: format!("encoding {what}: {err}"),
                source: Some(Box::new(err)),
            })
        };
        let nodes = delta
            .nodes
            .iter()
            .map(|node| {
                let id = node.id();
                let value = json(format!("node `{id}`"), serde_json::to_vec(node))?;
                Ok((id.as_str().as_bytes().to_vec(), value))
            })
            .collect::<Result<_, GraphStoreError>>()?;
        let edges = delta
            .edges
            .iter()
            .map(|edge| {
                let value = json(format!("edge `{}`", edge.edge_id), serde_json::to_vec(edge))?;
                Ok((edge.edge_id.as_bytes().to_vec(), value))
            })
            .collect::<Result<_, GraphStoreError>>()?;
        let streams = delta
            .streams
            .iter()
            .map(|(stream, version)| {
                let key = stream.as_str().as_bytes().to_vec();
                (key, version.to_be_bytes().to_vec())
            })
            .collect();
        // Keyed by the anomaly's seq, so overlapping deltas from two processes never duplicate one.
        let anomalies = delta
            .anomalies
            .iter()
            .map(|a| {
                let what = format!("the anomaly at seq {}", a.seq);
                Ok((
                    layout::seq_key(a.seq).to_vec(),
                    json(what, serde_json::to_vec(a))?,
                ))
            })
            .collect::<Result<_, GraphStoreError>>()?;
        Ok(Self {
            nodes,
            edges,
            streams,
            anomalies,
            checkpoint: delta.checkpoint.as_ref().map(layout::encode_head),
            checkpoint_seq: delta.checkpoint.map_or(0, |h| h.seq),
        })
    }
}

fn decode_json<T: DeserializeOwned>(
    what: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, GraphStoreError> {
    serde_json::from_slice(bytes).map_err(|err| {
        corrupt(format!(
            "{what} `{}` does not decode: {err}",
            String::from_utf8_lossy(key)
        ))
    })
}

impl SledGraphStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Runs blocking work on the database on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Shared) -> Result<T, GraphStoreError> + Send + 'static,
    ) -> Result<T, GraphStoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|err| GraphStoreError::Backend {
                reason: error::task_failed(what, err),
                source: None,
            })?
    }
}

fn load(shared: &Shared) -> Result<GraphSnapshot, GraphStoreError> {
    let _saving = lock_graph(shared);
    let (trees, location) = (&shared.trees, &shared.location_text());
    let marker = trees
        .graph_meta
        .get(layout::SAVING_KEY)
        .map_err(|e| error::graph_store(e, &format!("reading graph.meta of {location}")))?;
    if let Some(marker) = marker {
        let seq = layout::decode_u64(&marker).unwrap_or_default();
        tracing::warn!(
            location,
            checkpoint = seq,
            "a projection save was cut short; discarding the stored projection, which is rebuilt from the log"
        );
        clear_trees(trees, location)?;
        return Ok(GraphSnapshot::default());
    }
    let read = |tree: &str| {
        let what = format!("reading {tree} of {location}");
        move |e| error::graph_store(e, &what)
    };
    let mut snapshot = GraphSnapshot::default();
    for entry in trees.nodes.iter() {
        let (key, value) = entry.map_err(read("graph.nodes"))?;
        snapshot.nodes.push(decode_json("node", &key, &value)?);
    }
    for entry in trees.edges.iter() {
        let (key, value) = entry.map_err(read("graph.edges"))?;
        snapshot.edges.push(decode_json("edge", &key, &value)?);
    }
    for entry in trees.graph_streams.iter() {
        let (key, value) = entry.map_err(read("graph.streams"))?;
        let stream = String::from_utf8(key.to_vec())
            .map_err(|_| corrupt(format!("{location}: a stream id is not UTF-8")))?;
        let version = layout::decode_u64(&value).ok_or_else(|| {
            corrupt(format!(
                "{location}: the version of stream `{stream}` is malformed"
            ))
        })?;
        snapshot.streams.push((StreamId::from_raw(stream), version));
    }
    for entry in trees.anomalies.iter() {
        let (key, value) = entry.map_err(read("graph.anomalies"))?;
        snapshot
            .anomalies
            .push(decode_json("anomaly", &key, &value)?);
    }
    snapshot.checkpoint = read_checkpoint(trees, location)?;
    Ok(snapshot)
}

fn read_checkpoint(trees: &Trees, location: &str) -> Result<Option<Head>, GraphStoreError> {
    let stored = trees
        .graph_meta
        .get(layout::CHECKPOINT_KEY)
        .map_err(|e| error::graph_store(e, &format!("reading the checkpoint of {location}")))?;
    stored
        .map(|bytes| {
            layout::decode_head(&bytes)
                .ok_or_else(|| corrupt(format!("{location}: the stored checkpoint is malformed")))
        })
        .transpose()
}

/// Takes the graph lock; a panic while it was held left nothing worse than a marked save.
fn lock_graph(shared: &Shared) -> std::sync::MutexGuard<'_, ()> {
    shared
        .graph_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a delta under the `saving` marker (see the module docs).
fn save(shared: &Shared, previous: u64, delta: &EncodedDelta) -> Result<(), GraphStoreError> {
    let _saving = lock_graph(shared);
    let (trees, location) = (&shared.trees, &shared.location_text());
    let failed = |what: &str, err: sled::Error| {
        error::graph_store(err, &format!("saving a graph delta to {location}: {what}"))
    };
    let stored = read_checkpoint(trees, location)?.map_or(0, |h| h.seq);
    delta_fits(stored, previous, delta.checkpoint_seq)?;

    trees
        .graph_meta
        .insert(
            layout::SAVING_KEY,
            &layout::seq_key(delta.checkpoint_seq)[..],
        )
        .map_err(|e| failed("marking the save", e))?;
    let overwritten = [
        (&trees.nodes, &delta.nodes, "writing a node"),
        (
            &trees.graph_streams,
            &delta.streams,
            "writing a stream version",
        ),
        (&trees.anomalies, &delta.anomalies, "writing an anomaly"),
    ];
    for (tree, entries, what) in overwritten {
        for (key, value) in entries {
            tree.insert(key.as_slice(), value.as_slice())
                .map_err(|e| failed(what, e))?;
        }
    }
    // Edges never change once created: the first version stays (a failed swap means the edge
    // is stored already).
    for (id, value) in &delta.edges {
        let _stored_already = trees
            .edges
            .compare_and_swap(id.as_slice(), None::<&[u8]>, Some(value.as_slice()))
            .map_err(|e| failed("writing an edge", e))?;
    }
    let mut done = sled::Batch::default();
    match &delta.checkpoint {
        Some(head) => done.insert(layout::CHECKPOINT_KEY, &head[..]),
        None => done.remove(layout::CHECKPOINT_KEY),
    }
    done.remove(layout::SAVING_KEY);
    trees
        .graph_meta
        .apply_batch(done)
        .map_err(|e| failed("storing the checkpoint", e))
}

/// Removes everything of the graph in one transaction, so a crash leaves the old graph or none.
fn clear_trees(trees: &Trees, location: &str) -> Result<(), GraphStoreError> {
    let graph_trees = [
        &trees.nodes,
        &trees.edges,
        &trees.graph_streams,
        &trees.anomalies,
        &trees.graph_meta,
    ];
    let mut keys: Vec<sled::Batch> = Vec::with_capacity(graph_trees.len());
    for tree in graph_trees {
        let mut batch = sled::Batch::default();
        for key in tree.iter().keys() {
            let key = key.map_err(|e| error::graph_store(e, &format!("listing {location}")))?;
            batch.remove(key);
        }
        keys.push(batch);
    }
    graph_trees[..]
        .transaction(|views| {
            for (view, batch) in views.iter().zip(&keys) {
                view.apply_batch(batch)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|err| match err {
            TransactionError::Storage(err) => {
                error::graph_store(err, &format!("clearing the graph of {location}"))
            }
            TransactionError::Abort(()) => GraphStoreError::Backend {
                reason: format!("clearing the graph of {location}: the transaction aborted"),
                source: None,
            },
        })
}

#[async_trait]
impl GraphStore for SledGraphStore {
    async fn load(&self) -> Result<GraphSnapshot, GraphStoreError> {
        self.blocking("loading the graph", load).await
    }

    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError> {
        let encoded = EncodedDelta::new(delta)?;
        self.blocking("saving a graph delta", move |shared| {
            save(shared, previous, &encoded)
        })
        .await
    }

    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError> {
        read_checkpoint(&self.shared.trees, &self.shared.location_text())
    }

    async fn clear(&self) -> Result<(), GraphStoreError> {
        self.blocking("clearing the graph", |shared| {
            let _saving = lock_graph(shared);
            clear_trees(&shared.trees, &shared.location_text())
        })
        .await
    }
}
