//! The persisted projection on sled: nodes, edges, stream versions, anomalies and the
//! checkpoint in their own trees, each delta saved in one transaction.

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
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree},
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

/// Why a save transaction gave up.
enum SaveAbort {
    Conflict { stored: u64 },
    Corrupt(String),
}

fn corrupt(reason: String) -> GraphStoreError {
    GraphStoreError::Corrupt { reason }
}

/// A delta encoded for storage, ready to be applied (possibly more than once, should sled retry
/// the transaction).
struct EncodedDelta {
    nodes: sled::Batch,
    edges: Vec<(String, Vec<u8>)>,
    streams: sled::Batch,
    anomalies: sled::Batch,
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
        let mut nodes = sled::Batch::default();
        for node in &delta.nodes {
            let id = node.id();
            let value = json(format!("node `{id}`"), serde_json::to_vec(node))?;
            nodes.insert(id.as_str(), value);
        }
        let edges = delta
            .edges
            .iter()
            .map(|edge| {
                let value = json(format!("edge `{}`", edge.edge_id), serde_json::to_vec(edge))?;
                Ok((edge.edge_id.clone(), value))
            })
            .collect::<Result<_, GraphStoreError>>()?;
        let mut streams = sled::Batch::default();
        for (stream, version) in &delta.streams {
            streams.insert(stream.as_str(), &version.to_be_bytes()[..]);
        }
        // Keyed by the anomaly's seq, so overlapping deltas from two processes never duplicate one.
        let mut anomalies = sled::Batch::default();
        for a in &delta.anomalies {
            let value = json(
                format!("the anomaly at seq {}", a.seq),
                serde_json::to_vec(a),
            )?;
            anomalies.insert(&layout::seq_key(a.seq)[..], value);
        }
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

type TxResult<T> = Result<T, ConflictableTransactionError<SaveAbort>>;

fn abort_corrupt<T>(reason: String) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(SaveAbort::Corrupt(
        reason,
    )))
}

/// The checkpoint `seq` stored in the transaction's view of `graph.meta`.
fn stored_checkpoint(meta: &TransactionalTree) -> TxResult<u64> {
    match meta.get(layout::CHECKPOINT_KEY)? {
        None => Ok(0),
        Some(bytes) => match layout::decode_head(&bytes) {
            Some(head) => Ok(head.seq),
            None => abort_corrupt("the stored checkpoint is malformed".into()),
        },
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

    /// Runs blocking work on the trees on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Trees, &str) -> Result<T, GraphStoreError> + Send + 'static,
    ) -> Result<T, GraphStoreError> {
        let trees = self.shared.trees.clone();
        let location = self.shared.location.display().to_string();
        tokio::task::spawn_blocking(move || f(&trees, &location))
            .await
            .map_err(|err| GraphStoreError::Backend {
                reason: error::task_failed(what, err),
                source: None,
            })?
    }
}

fn load(trees: &Trees, location: &str) -> Result<GraphSnapshot, GraphStoreError> {
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

fn save(
    trees: &Trees,
    location: &str,
    previous: u64,
    delta: &EncodedDelta,
) -> Result<(), GraphStoreError> {
    let result = (
        &trees.nodes,
        &trees.edges,
        &trees.graph_streams,
        &trees.anomalies,
        &trees.graph_meta,
    )
        .transaction(|(nodes, edges, streams, anomalies, meta)| {
            let stored = stored_checkpoint(meta)?;
            if delta_fits(stored, previous, delta.checkpoint_seq).is_err() {
                return Err(ConflictableTransactionError::Abort(SaveAbort::Conflict {
                    stored,
                }));
            }
            nodes.apply_batch(&delta.nodes)?;
            // Edges never change once created: the first version stays.
            for (id, value) in &delta.edges {
                if edges.get(id.as_bytes())?.is_none() {
                    edges.insert(id.as_bytes(), value.as_slice())?;
                }
            }
            streams.apply_batch(&delta.streams)?;
            anomalies.apply_batch(&delta.anomalies)?;
            match &delta.checkpoint {
                Some(head) => meta.insert(layout::CHECKPOINT_KEY, &head[..])?,
                None => meta.remove(layout::CHECKPOINT_KEY)?,
            };
            Ok(())
        });
    match result {
        Ok(()) => Ok(()),
        Err(TransactionError::Abort(SaveAbort::Conflict { stored })) => {
            Err(GraphStoreError::CheckpointConflict {
                stored,
                previous,
                checkpoint: delta.checkpoint_seq,
            })
        }
        Err(TransactionError::Abort(SaveAbort::Corrupt(reason))) => {
            Err(corrupt(format!("{location}: {reason}")))
        }
        Err(TransactionError::Storage(err)) => Err(error::graph_store(
            err,
            &format!("saving a graph delta to {location}"),
        )),
    }
}

/// Removes everything of the graph in one transaction, so a crash leaves the old graph or none.
fn clear(trees: &Trees, location: &str) -> Result<(), GraphStoreError> {
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
        self.blocking("saving a graph delta", move |trees, location| {
            save(trees, location, previous, &encoded)
        })
        .await
    }

    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError> {
        let location = self.shared.location.display().to_string();
        read_checkpoint(&self.shared.trees, &location)
    }

    async fn clear(&self) -> Result<(), GraphStoreError> {
        self.blocking("clearing the graph", clear).await
    }
}
