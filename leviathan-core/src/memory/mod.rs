//! In-memory backends: the reference implementations of the store traits, for tests,
//! examples and ephemeral control planes (`memory:` store URL), and of the ports [`Forge`] and
//! [`BacklogSource`], for tests. Nothing survives the process.
//!
//! [`Forge`]: crate::forge::Forge
//! [`BacklogSource`]: crate::backlog_source::BacklogSource

mod backlog;
mod forge;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::{
    catalogue::StreamId,
    digest::Sha256Digest,
    event::{Event, Head},
    graph::{
        AttemptNode, AttemptPage, AttemptQuery, FailureQuery, GraphDelta, GraphSnapshot, Node,
        NodeId, StoredGraph,
    },
    id::{AttemptId, EventId, TargetId, TaskId},
    store::{
        AppendReceipt, AppendRequest, ArtifactError, ArtifactStore, BundleBinding, BundleIndex,
        EventStore, EventStoreError, EventStream, GraphStore, GraphStoreError, StoredArtifact,
        delta_fits, follow,
        sequencer::{Prefetched, Sequencer},
        verify_content,
    },
    tlog::{Frontier, StoredCheckpoint, Tile, TileRead, TreeError, TreeStore},
};

pub use self::{backlog::MemoryBacklog, forge::MemoryForge};

/// Locks a mutex, recovering from poisoning: every critical section below leaves the data
/// consistent before it can panic, so a poisoned lock holds valid data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<Event>,
    by_id: HashMap<EventId, u64>,
    streams: HashMap<StreamId, u64>,
    /// The tree's right edge and its full tiles, by level then index.
    frontier: Frontier,
    tiles: Vec<Vec<Tile>>,
    checkpoints: BTreeMap<u64, String>,
}

/// An [`EventStore`] in memory. Cloning shares the log.
#[derive(Clone, Debug)]
pub struct MemoryEventStore {
    log: Arc<Mutex<Log>>,
    head: Arc<watch::Sender<u64>>,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self {
            log: Arc::default(),
            head: Arc::new(watch::channel(0).0),
        }
    }
}

impl MemoryEventStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the stored event at `seq` (tests of verification use it to tamper with the log).
    #[cfg(any(test, feature = "testkit"))]
    pub fn tamper(&self, seq: u64, f: impl FnOnce(&mut Event)) {
        let mut log = lock(&self.log);
        if let Some(event) = seq
            .checked_sub(1)
            .and_then(|i| log.events.get_mut(i as usize))
        {
            f(event);
        }
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, EventStoreError> {
        let prepared = request.prepare()?;
        let mut log = lock(&self.log);
        let mut known = Prefetched::default();
        for id in prepared.event_ids() {
            if let Some(&seq) = log.by_id.get(id) {
                known
                    .events
                    .insert(id.clone(), log.events[(seq - 1) as usize].clone());
            }
        }
        for stream in prepared.streams() {
            if let Some(&v) = log.streams.get(stream) {
                known.streams.insert(stream.clone(), v);
            }
        }
        let mut sequencer = Sequencer::new(log.events.last().map(Event::head));
        let sequenced = sequencer.sequence(&prepared, &known)?;
        for e in &sequenced.events {
            log.by_id.insert(e.event.event_id.clone(), e.event.seq);
            if let Some((stream, version)) = &e.stream {
                log.streams.insert(stream.clone(), *version);
            }
            log.events.push(e.event.clone());
        }
        let full = log
            .frontier
            .extend(sequenced.events.iter().map(|e| &e.event.hash));
        for tile in full {
            let level = usize::from(tile.level);
            if log.tiles.len() <= level {
                log.tiles.resize_with(level + 1, Vec::new);
            }
            log.tiles[level].push(tile);
        }
        let head = log.events.len() as u64;
        drop(log);
        self.head.send_replace(head);
        Ok(sequenced.into_receipt())
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        let log = lock(&self.log);
        let start = (after as usize).min(log.events.len());
        Ok(log.events[start..].iter().take(limit).cloned().collect())
    }

    async fn get(&self, event_id: &EventId) -> Result<Option<Event>, EventStoreError> {
        let log = lock(&self.log);
        Ok(log
            .by_id
            .get(event_id)
            .map(|&seq| log.events[(seq - 1) as usize].clone()))
    }

    async fn head(&self) -> Result<Option<Head>, EventStoreError> {
        Ok(lock(&self.log).events.last().map(Event::head))
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, EventStoreError> {
        Ok(lock(&self.log).streams.get(stream).copied().unwrap_or(0))
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, EventStoreError> {
        Ok(follow(Arc::new(self.clone()), after, self.head.subscribe()))
    }
}

/// A [`BundleIndex`] in memory. Cloning shares the bindings.
#[derive(Clone, Debug, Default)]
pub struct MemoryBundleIndex {
    bound: Arc<Mutex<HashMap<Sha256Digest, Sha256Digest>>>,
}

impl MemoryBundleIndex {
    /// No bundle id bound.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl BundleIndex for MemoryBundleIndex {
    async fn bind(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<BundleBinding, EventStoreError> {
        let mut bound = lock(&self.bound);
        let binding = BundleBinding::of(bound.get(bundle).copied(), content);
        if binding == BundleBinding::New {
            bound.insert(*bundle, *content);
        }
        Ok(binding)
    }

    async fn release(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<(), EventStoreError> {
        let mut bound = lock(&self.bound);
        if bound.get(bundle) == Some(content) {
            bound.remove(bundle);
        }
        Ok(())
    }
}

/// The tree of the log in memory: the same tiles a durable backend stores.
#[async_trait]
impl TreeStore for MemoryEventStore {
    async fn tree_size(&self) -> Result<u64, TreeError> {
        Ok(lock(&self.log).events.len() as u64)
    }

    async fn read_tiles(&self, reads: &[TileRead]) -> Result<Vec<Vec<Sha256Digest>>, TreeError> {
        let log = lock(&self.log);
        reads.iter().map(|read| log.read_tile(read)).collect()
    }

    async fn record_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), TreeError> {
        lock(&self.log)
            .checkpoints
            .insert(checkpoint.size, checkpoint.note.clone());
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, TreeError> {
        Ok(lock(&self.log)
            .checkpoints
            .last_key_value()
            .map(|(size, note)| StoredCheckpoint {
                size: *size,
                note: note.clone(),
            }))
    }
}

impl Log {
    fn read_tile(&self, read: &TileRead) -> Result<Vec<Sha256Digest>, TreeError> {
        let missing = |what: String| EventStoreError::Corrupt {
            seq: None,
            reason: format!("{what} is not in the memory store"),
        };
        match read {
            TileRead::Tiles { level, indexes } => {
                let stored = self.tiles.get(usize::from(*level));
                let mut hashes = Vec::new();
                for index in indexes.clone() {
                    let tile = stored
                        .and_then(|tiles| tiles.get(index as usize))
                        .ok_or_else(|| missing(format!("tile {index} of level {level}")))?;
                    hashes.extend_from_slice(&tile.hashes);
                }
                Ok(hashes)
            }
            TileRead::EventHashes { indexes } => {
                let events = self
                    .events
                    .get(indexes.start as usize..indexes.end as usize)
                    .ok_or_else(|| missing(format!("events {indexes:?}")))?;
                Ok(events.iter().map(|e| e.hash).collect())
            }
        }
    }
}

/// A [`GraphStore`] in memory. Cloning shares the stored graph.
#[derive(Clone, Debug, Default)]
pub struct MemoryGraphStore {
    stored: Arc<Mutex<StoredGraph>>,
}

impl MemoryGraphStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl GraphStore for MemoryGraphStore {
    async fn load(&self) -> Result<GraphSnapshot, GraphStoreError> {
        Ok(lock(&self.stored).clone().into_snapshot())
    }

    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError> {
        let mut stored = lock(&self.stored);
        delta_fits(
            stored.checkpoint().map_or(0, |h| h.seq),
            previous,
            delta.checkpoint.map_or(0, |h| h.seq),
        )?;
        stored.merge(delta.clone());
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError> {
        Ok(lock(&self.stored).checkpoint())
    }

    async fn clear(&self) -> Result<(), GraphStoreError> {
        *lock(&self.stored) = StoredGraph::default();
        Ok(())
    }

    async fn attempts(&self, query: &AttemptQuery) -> Result<AttemptPage, GraphStoreError> {
        let stored = lock(&self.stored);
        Ok(owned_page(stored.attempts_page(query)))
    }

    async fn failures(&self, query: &FailureQuery) -> Result<AttemptPage, GraphStoreError> {
        let stored = lock(&self.stored);
        Ok(owned_page(stored.failures_page(query)))
    }

    async fn task_attempts(
        &self,
        target: &TargetId,
        task: &TaskId,
    ) -> Result<Vec<AttemptNode>, GraphStoreError> {
        Ok(lock(&self.stored)
            .attempts_of(target, task)
            .cloned()
            .collect())
    }

    async fn node(&self, id: &NodeId) -> Result<Option<Node>, GraphStoreError> {
        Ok(lock(&self.stored).node(id).cloned())
    }

    async fn produced(&self, attempt: &AttemptId) -> Result<Vec<Node>, GraphStoreError> {
        Ok(lock(&self.stored).produced_by(attempt).cloned().collect())
    }
}

fn owned_page((attempts, next_cursor): (Vec<&AttemptNode>, Option<u64>)) -> AttemptPage {
    AttemptPage {
        attempts: attempts.into_iter().cloned().collect(),
        next_cursor,
    }
}

/// An [`ArtifactStore`] in memory. Cloning shares the blobs.
#[derive(Clone, Debug, Default)]
pub struct MemoryArtifactStore {
    blobs: Arc<Mutex<HashMap<Sha256Digest, Bytes>>>,
}

impl MemoryArtifactStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flips a bit of a stored blob (tests of read verification use it).
    #[cfg(any(test, feature = "testkit"))]
    pub fn corrupt(&self, sha256: &Sha256Digest) {
        let mut blobs = lock(&self.blobs);
        if let Some(blob) = blobs.get_mut(sha256) {
            let mut bytes = blob.to_vec();
            match bytes.first_mut() {
                Some(b) => *b ^= 0x01,
                None => bytes.push(0),
            }
            *blob = Bytes::from(bytes);
        }
    }
}

#[async_trait]
impl ArtifactStore for MemoryArtifactStore {
    async fn put(&self, content: Bytes) -> Result<StoredArtifact, ArtifactError> {
        let sha256 = Sha256Digest::of(&content);
        let size = content.len() as u64;
        let mut blobs = lock(&self.blobs);
        let created = !blobs.contains_key(&sha256);
        if created {
            blobs.insert(sha256, content);
        }
        Ok(StoredArtifact {
            sha256,
            size,
            created,
        })
    }

    async fn get(&self, sha256: &Sha256Digest) -> Result<Bytes, ArtifactError> {
        let blob = lock(&self.blobs)
            .get(sha256)
            .cloned()
            .ok_or(ArtifactError::NotFound(*sha256))?;
        verify_content(sha256, blob)
    }

    async fn exists(&self, sha256: &Sha256Digest) -> Result<bool, ArtifactError> {
        Ok(lock(&self.blobs).contains_key(sha256))
    }
}
