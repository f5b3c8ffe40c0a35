//! The persisted projection on sled: a log of deltas in `graph.deltas`, made to count by small
//! atomic batches on `graph.meta`.
//!
//! A save writes its delta (one JSON document, cut into chunks) under the next save number with
//! plain inserts, then seals it: one atomic batch on `graph.meta` moves the sealed number and the
//! checkpoint together. A load merges the sealed deltas in order (see [`StoredGraph`]), so chunks
//! of a save cut short (a crash, an I/O error) are never read; the next save removes them.
//! Deltas are not written in one sled transaction because sled commits every transaction under
//! one lock shared by all trees (and every database of the process): the event writer must not
//! wait while a projection is saved, and a save costs a few inserts of large values instead of
//! one insert per node.
//!
//! Each save also writes its nodes and edges to the history trees, which the history queries
//! read (see [`crate::history`]), before it seals the delta.
//!
//! When the deltas after the base outweigh it several times, they are merged into a new base,
//! written and switched in the same way; a delta from seq 0 (the whole graph) is a new base by
//! itself. Deltas before the base are then removed. Loads, saves and clears hold
//! [`Shared::graph_lock`], so within the process none sees another half done.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use leviathan_core::{
    GraphStore, GraphStoreError, Head,
    graph::{
        AttemptNode, AttemptPage, AttemptQuery, FailureQuery, GraphDelta, GraphSnapshot, Node,
        NodeId, StoredGraph,
    },
    id::{AttemptId, TargetId, TaskId},
    store::delta_fits,
};

use crate::{
    error,
    history::{self, Entries},
    layout::{self, DeltaLog, Trees},
    shared::Shared,
};

/// Bytes of delta JSON per stored chunk: well under sled's blob threshold (a quarter of its
/// 512 KiB segments), so chunks live in its log like any other value.
const CHUNK_BYTES: usize = 32 * 1024;

/// Deltas after the base are merged into a new base once they are this many times its size:
/// each byte is then rewritten about 1¼ times in all while the graph grows, and a load reads at
/// most five times the graph's size when every delta rewrites the same nodes.
const MERGE_RATIO: u64 = 4;

/// Deltas after the base are not merged into a new base before they reach this size.
const MIN_MERGE_BYTES: u64 = 4 << 20;

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

/// A delta encoded for storage (done before the graph lock is taken).
struct EncodedDelta {
    json: Vec<u8>,
    checkpoint: Option<Head>,
}

impl EncodedDelta {
    fn new(delta: &GraphDelta) -> Result<Self, GraphStoreError> {
        let json = serde_json::to_vec(delta).map_err(|err| GraphStoreError::Backend {
            reason: format!("encoding a graph delta: {err}"),
            source: Some(Box::new(err)),
        })?;
        Ok(Self {
            json,
            checkpoint: delta.checkpoint,
        })
    }
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

impl SledGraphStore {
    /// A page of the attempt index under `prefix` (see [`history::page`]).
    async fn page(
        &self,
        prefix: Vec<u8>,
        cursor: Option<u64>,
        limit: usize,
        keep: impl Fn(&AttemptNode) -> bool + Send + 'static,
    ) -> Result<AttemptPage, GraphStoreError> {
        self.blocking("reading a page of attempts", move |shared| {
            let location = shared.location_text();
            history::page(&shared.trees, &prefix, cursor, limit, keep, &location)
        })
        .await
    }
}

/// Takes the graph lock; a panic while it was held left at most unsealed chunks behind.
fn lock_graph(shared: &Shared) -> std::sync::MutexGuard<'_, ()> {
    shared
        .graph_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

fn read_log(trees: &Trees, location: &str) -> Result<DeltaLog, GraphStoreError> {
    let stored = trees
        .graph_meta
        .get(layout::DELTAS_KEY)
        .map_err(|e| error::graph_store(e, &format!("reading the delta log of {location}")))?;
    match stored {
        None => Ok(DeltaLog::default()),
        Some(bytes) => DeltaLog::decode(&bytes)
            .ok_or_else(|| corrupt(format!("{location}: the delta log's bounds are malformed"))),
    }
}

/// Merges the sealed deltas in order, checking that each is there whole.
fn merge_sealed(
    trees: &Trees,
    log: DeltaLog,
    location: &str,
) -> Result<StoredGraph, GraphStoreError> {
    let incomplete = |number: u64| {
        corrupt(format!(
            "{location}: the projection delta saved as number {number} is incomplete"
        ))
    };
    let mut merged = StoredGraph::default();
    // The delta being read: its number and the chunk expected next.
    let mut current: Option<(u64, u32)> = None;
    let mut json: Vec<u8> = Vec::new();
    let range = layout::delta_key(log.base, 0)..layout::delta_key(log.sealed + 1, 0);
    for entry in trees.graph_deltas.range(range) {
        let (key, chunk) = entry
            .map_err(|e| error::graph_store(e, &format!("reading graph.deltas of {location}")))?;
        let (number, index) = layout::decode_delta_key(&key)
            .ok_or_else(|| corrupt(format!("{location}: a key of graph.deltas is malformed")))?;
        match current {
            Some((reading, next)) if number == reading && index == next => {}
            Some((reading, _)) if number == reading + 1 && index == 0 => {
                merge_one(&mut merged, reading, &json, location)?;
                json.clear();
            }
            None if number == log.base && index == 0 => {}
            _ => return Err(incomplete(number)),
        }
        current = Some((number, index + 1));
        json.extend_from_slice(&chunk);
    }
    match current {
        None if log.sealed < log.base => {}
        Some((reading, _)) if reading == log.sealed => {
            merge_one(&mut merged, reading, &json, location)?;
        }
        _ => return Err(incomplete(current.map_or(log.base, |(n, _)| n + 1))),
    }
    Ok(merged)
}

fn merge_one(
    merged: &mut StoredGraph,
    number: u64,
    json: &[u8],
    location: &str,
) -> Result<(), GraphStoreError> {
    let delta: GraphDelta = serde_json::from_slice(json).map_err(|err| {
        corrupt(format!(
            "{location}: the projection delta saved as number {number} does not decode: {err}"
        ))
    })?;
    merged.merge(delta);
    Ok(())
}

/// Loads the merged deltas; a database written before the history trees gets them filled from
/// the deltas once.
fn load(shared: &Shared) -> Result<GraphSnapshot, GraphStoreError> {
    let _graph = lock_graph(shared);
    let (trees, location) = (&shared.trees, &shared.location_text());
    let log = read_log(trees, location)?;
    let mut snapshot = merge_sealed(trees, log, location)?.into_snapshot();
    snapshot.checkpoint = read_checkpoint(trees, location)?;
    let failed = |e| error::graph_store(e, &format!("completing the history of {location}"));
    if !trees
        .graph_meta
        .contains_key(layout::HISTORY_KEY)
        .map_err(failed)?
    {
        history::record(trees, &Entries::of_snapshot(&snapshot)?, location)?;
        trees
            .graph_meta
            .insert(layout::HISTORY_KEY, &[][..])
            .map_err(failed)?;
    }
    Ok(snapshot)
}

/// Removes chunks outside the log's deltas: those of a save cut short, and those a merge or a
/// clear left behind.
fn tidy(trees: &Trees, log: DeltaLog, location: &str) -> Result<(), GraphStoreError> {
    let failed =
        |e| error::graph_store(e, &format!("removing old projection deltas of {location}"));
    let before = trees.graph_deltas.range(..layout::delta_key(log.base, 0));
    let after = trees
        .graph_deltas
        .range(layout::delta_key(log.sealed.saturating_add(1), 0)..);
    for key in before.keys().chain(after.keys()) {
        trees
            .graph_deltas
            .remove(key.map_err(failed)?)
            .map_err(failed)?;
    }
    Ok(())
}

/// Writes `json` as the chunks of the delta numbered `number`.
fn write_chunks(
    trees: &Trees,
    number: u64,
    json: &[u8],
    location: &str,
) -> Result<(), GraphStoreError> {
    for (index, chunk) in (0u32..).zip(json.chunks(CHUNK_BYTES)) {
        trees
            .graph_deltas
            .insert(layout::delta_key(number, index), chunk)
            .map_err(|e| {
                error::graph_store(e, &format!("writing a projection delta to {location}"))
            })?;
    }
    Ok(())
}

/// Makes `log` (and, when given, the checkpoint) the stored state in one atomic batch.
fn switch(
    trees: &Trees,
    log: DeltaLog,
    checkpoint: Option<Option<Head>>,
    location: &str,
) -> Result<(), GraphStoreError> {
    let mut batch = sled::Batch::default();
    batch.insert(layout::DELTAS_KEY, &log.encode()[..]);
    match checkpoint {
        Some(Some(head)) => batch.insert(layout::CHECKPOINT_KEY, &layout::encode_head(&head)[..]),
        Some(None) => batch.remove(layout::CHECKPOINT_KEY),
        None => {}
    }
    trees
        .graph_meta
        .apply_batch(batch)
        .map_err(|e| error::graph_store(e, &format!("storing the checkpoint of {location}")))
}

/// Appends and seals a delta (see the module docs), then merges when the deltas outweigh the base.
fn save(
    shared: &Shared,
    previous: u64,
    delta: &EncodedDelta,
    entries: &Entries,
) -> Result<(), GraphStoreError> {
    let _graph = lock_graph(shared);
    let (trees, location) = (&shared.trees, &shared.location_text());
    let stored = read_checkpoint(trees, location)?.map_or(0, |h| h.seq);
    delta_fits(stored, previous, delta.checkpoint.map_or(0, |h| h.seq))?;

    let mut log = read_log(trees, location)?;
    tidy(trees, log, location)?;
    history::record(trees, entries, location)?;
    let number = log.sealed + 1;
    write_chunks(trees, number, &delta.json, location)?;
    let bytes = delta.json.len() as u64;
    log.sealed = number;
    // A delta from seq 0 holds every change there is: the whole graph, a base by itself.
    if number == log.base || previous == 0 {
        log.base = number;
        log.base_bytes = bytes;
        log.tail_bytes = 0;
    } else {
        log.tail_bytes += bytes;
    }
    switch(trees, log, Some(delta.checkpoint), location)?;
    if log.base == number {
        return tidy(trees, log, location);
    }

    if log.tail_bytes
        > log
            .base_bytes
            .saturating_mul(MERGE_RATIO)
            .max(MIN_MERGE_BYTES)
    {
        // The delta is stored; a merge that fails is tried again after the next save.
        if let Err(error) = merge_into_new_base(trees, log, location) {
            tracing::warn!(location, %error, "merging the projection's deltas failed");
        }
    }
    Ok(())
}

/// Writes the merge of the log's deltas as the next delta and makes it the base. Merging costs
/// the size of everything stored and happens only once the deltas after the base are several
/// times its size, so each byte saved is rewritten a bounded number of times.
fn merge_into_new_base(
    trees: &Trees,
    log: DeltaLog,
    location: &str,
) -> Result<(), GraphStoreError> {
    let whole = merge_sealed(trees, log, location)?.into_snapshot();
    let base = EncodedDelta::new(&GraphDelta::from(whole))?;
    let number = log.sealed + 1;
    write_chunks(trees, number, &base.json, location)?;
    let merged = DeltaLog {
        base: number,
        sealed: number,
        base_bytes: base.json.len() as u64,
        tail_bytes: 0,
    };
    switch(trees, merged, None, location)?;
    tidy(trees, merged, location)
}

/// Empties the projection: one atomic batch moves the base past every delta and removes the
/// checkpoint; the old chunks are removed after.
fn clear(shared: &Shared) -> Result<(), GraphStoreError> {
    let _graph = lock_graph(shared);
    let (trees, location) = (&shared.trees, &shared.location_text());
    let log = read_log(trees, location)?;
    let empty = DeltaLog {
        base: log.sealed + 1,
        sealed: log.sealed,
        base_bytes: 0,
        tail_bytes: 0,
    };
    switch(trees, empty, Some(None), location)?;
    history::clear(trees, location)?;
    tidy(trees, empty, location)
}

#[async_trait]
impl GraphStore for SledGraphStore {
    async fn load(&self) -> Result<GraphSnapshot, GraphStoreError> {
        self.blocking("loading the graph", load).await
    }

    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError> {
        let encoded = EncodedDelta::new(delta)?;
        let entries = Entries::of_delta(delta)?;
        self.blocking("saving a graph delta", move |shared| {
            save(shared, previous, &encoded, &entries)
        })
        .await
    }

    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError> {
        read_checkpoint(&self.shared.trees, &self.shared.location_text())
    }

    async fn clear(&self) -> Result<(), GraphStoreError> {
        self.blocking("clearing the graph", clear).await
    }

    async fn attempts(&self, query: &AttemptQuery) -> Result<AttemptPage, GraphStoreError> {
        let prefix = history::attempts_prefix(query);
        let query = query.clone();
        self.page(prefix, query.cursor, query.limit, move |a| query.matches(a))
            .await
    }

    async fn failures(&self, query: &FailureQuery) -> Result<AttemptPage, GraphStoreError> {
        let prefix = history::failures_prefix(query);
        let query = query.clone();
        self.page(prefix, query.cursor, query.limit, move |a| query.matches(a))
            .await
    }

    async fn task_attempts(
        &self,
        target: &TargetId,
        task: &TaskId,
    ) -> Result<Vec<AttemptNode>, GraphStoreError> {
        let (target, task) = (target.clone(), task.clone());
        self.blocking("listing a task's attempts", move |shared| {
            history::task_attempts(&shared.trees, &target, &task, &shared.location_text())
        })
        .await
    }

    async fn node(&self, id: &NodeId) -> Result<Option<Node>, GraphStoreError> {
        history::node(&self.shared.trees, id, &self.shared.location_text())
    }

    async fn produced(&self, attempt: &AttemptId) -> Result<Vec<Node>, GraphStoreError> {
        let attempt = attempt.clone();
        self.blocking("listing what an attempt produced", move |shared| {
            history::produced(&shared.trees, &attempt, &shared.location_text())
        })
        .await
    }
}
