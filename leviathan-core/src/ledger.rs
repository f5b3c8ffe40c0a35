//! The ledger: an event log and its projection, kept in step.
//!
//! Everything that writes events goes through [`Ledger::ingest`], which validates a batch against
//! the catalogue and against the current graph *before* appending it, and appends it under
//! stream expectations so that a concurrent writer (another thread, another process) can never
//! make the log hold an event the graph refused. The API, the scheduler and the CLI all use it,
//! on any backend.

use std::{
    collections::HashSet,
    sync::{Arc, PoisonError},
};

use tokio::{
    sync::{Mutex, RwLock, RwLockReadGuard},
    task::JoinHandle,
};

use crate::{
    catalogue::{self, StreamId},
    event::{Head, NewEvent},
    graph::Graph,
    id::EventId,
    store::{
        AppendReceipt, AppendRequest, EventRejection, EventStore, EventStoreError, ExpectedVersion,
        GraphStore, GraphStoreError,
    },
};

/// What can go wrong with an ingest or a catch-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Events were refused (by the catalogue or by the graph); nothing was appended.
    #[error("{} event(s) refused: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rejected(Vec<EventRejection>),
    /// A caller-supplied stream expectation failed; nothing was appended.
    #[error("stream `{stream}` is at version {actual}, expected {expected}")]
    WrongExpectedVersion {
        /// The stream.
        stream: StreamId,
        /// The expectation.
        expected: ExpectedVersion,
        /// The stream's version.
        actual: u64,
    },
    /// The event store failed.
    #[error(transparent)]
    EventStore(#[from] EventStoreError),
    /// The graph store failed.
    #[error(transparent)]
    GraphStore(#[from] GraphStoreError),
}

impl LedgerError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::EventStore(e) => e.is_transient(),
            Self::GraphStore(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Which stream expectations an ingest appends under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Expectations {
    /// Derived from the graph the batch was validated against; if another writer got in first,
    /// the batch is validated again against the newer graph (bounded retries).
    #[default]
    Derived,
    /// The caller's own: a failed expectation is returned, never retried. The scheduler uses this
    /// so that two schedulers planning from the same state cannot both dispatch.
    Explicit(Vec<(StreamId, ExpectedVersion)>),
}

/// How often the projection is written to its [`GraphStore`].
///
/// The stored projection only shortens restarts (a ledger catches up from the stored checkpoint;
/// folding runs at hundreds of thousands of events per second), so it is saved every few
/// thousand events, in the background when a tokio runtime is available, and always by
/// [`Ledger::flush`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistPolicy {
    /// Save after at least this many events were folded since the last save (1 = every ingest).
    pub every_events: u64,
}

impl Default for PersistPolicy {
    fn default() -> Self {
        Self { every_events: 8192 }
    }
}

const MAX_DERIVED_RETRIES: usize = 16;
const CATCH_UP_PAGE: usize = 1024;

/// An event log, its projection and the store that persists the projection.
#[derive(Debug)]
pub struct Ledger {
    events: Arc<dyn EventStore>,
    graphs: Arc<dyn GraphStore>,
    graph: Arc<RwLock<Graph>>,
    persist: PersistPolicy,
    /// Serialises graph saves so deltas reach the graph store in order.
    saving: Arc<Mutex<SaveState>>,
    /// Background saves not yet known to be finished; [`Ledger::flush`] waits for them.
    background: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct SaveState {
    saved_seq: u64,
    /// A save failed after its changes were taken from the graph, so the store may lack them:
    /// the next save writes the whole projection.
    whole_due: bool,
}

impl Ledger {
    /// Opens a ledger: loads the persisted graph and catches up with the log from its checkpoint.
    pub async fn open(
        events: Arc<dyn EventStore>,
        graphs: Arc<dyn GraphStore>,
    ) -> Result<Self, LedgerError> {
        Self::open_with(events, graphs, PersistPolicy::default()).await
    }

    /// [`Ledger::open`] with a persistence policy.
    pub async fn open_with(
        events: Arc<dyn EventStore>,
        graphs: Arc<dyn GraphStore>,
        persist: PersistPolicy,
    ) -> Result<Self, LedgerError> {
        let snapshot = graphs.load().await?;
        let graph = Graph::from_snapshot(snapshot);
        let saved_seq = graph.checkpoint_seq();
        let ledger = Self {
            events,
            graphs,
            graph: Arc::new(RwLock::new(graph)),
            persist,
            saving: Arc::new(Mutex::new(SaveState {
                saved_seq,
                whole_due: false,
            })),
            background: std::sync::Mutex::default(),
        };
        ledger.catch_up().await?;
        Ok(ledger)
    }

    /// The event log.
    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    /// The graph store.
    pub fn graph_store(&self) -> &Arc<dyn GraphStore> {
        &self.graphs
    }

    /// The graph store with everything appended so far folded and saved, for its history
    /// queries: the log is caught up with, background saves are waited for and the pending
    /// changes written (a save of the events since the last one; nothing when there are none).
    pub async fn history(&self) -> Result<&Arc<dyn GraphStore>, LedgerError> {
        self.catch_up().await?;
        self.flush().await?;
        Ok(&self.graphs)
    }

    /// A read view of the graph (as of the last catch-up).
    pub async fn graph(&self) -> RwLockReadGuard<'_, Graph> {
        self.graph.read().await
    }

    /// Folds every event appended since the graph's checkpoint; returns how many.
    pub async fn catch_up(&self) -> Result<u64, LedgerError> {
        let mut folded = 0;
        loop {
            let mut graph = self.graph.write().await;
            let after = graph.checkpoint_seq();
            let page = self.events.read(after, CATCH_UP_PAGE).await?;
            let Some(last) = page.last() else { break };
            let last_seq = last.seq;
            for event in &page {
                graph.apply(event);
            }
            folded += page.len() as u64;
            drop(graph);
            self.maybe_save(false).await?;
            if page.len() < CATCH_UP_PAGE || last_seq == after {
                break;
            }
        }
        Ok(folded)
    }

    /// Validates and appends a batch; see the module docs.
    pub async fn ingest(
        &self,
        events: Vec<NewEvent>,
        expectations: Expectations,
    ) -> Result<AppendReceipt, LedgerError> {
        // Catalogue rules first: pure, and reported for every event at once.
        let batch = validate_batch(events)?;

        let mut retries = 0;
        loop {
            self.catch_up().await?;
            let request = {
                let graph = self.graph.read().await;
                let derived = match self.stage(&graph, &batch).await? {
                    Staged::Accepted(expectations) => expectations,
                    Staged::Rejected(rejections) => return Err(LedgerError::Rejected(rejections)),
                };
                let mut request = AppendRequest::validated(
                    batch.iter().map(|v| (v.event.clone(), v.stream.clone())),
                );
                request.expectations = match &expectations {
                    Expectations::Derived => derived,
                    Expectations::Explicit(given) => given.clone(),
                };
                request
            };
            match self.events.append(request).await {
                Ok(receipt) => {
                    self.fold_appended(&receipt, &batch).await?;
                    return Ok(receipt);
                }
                Err(EventStoreError::WrongExpectedVersion {
                    stream,
                    expected,
                    actual,
                }) => {
                    if matches!(expectations, Expectations::Explicit(_))
                        || retries == MAX_DERIVED_RETRIES
                    {
                        return Err(LedgerError::WrongExpectedVersion {
                            stream,
                            expected,
                            actual,
                        });
                    }
                    retries += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Validates new events against `graph`. Events already in the log (a retried bundle) are
    /// recognised as duplicates and skipped; the store reports them in the receipt.
    async fn stage(&self, graph: &Graph, batch: &[Validated]) -> Result<Staged, LedgerError> {
        let rejections = match Self::try_stage(graph, batch, &HashSet::new()) {
            Ok(expectations) => return Ok(Staged::Accepted(expectations)),
            Err(rejections) => rejections,
        };
        // Only when something is refused is it worth asking the log which events it already has.
        let ids: Vec<EventId> = batch.iter().map(|v| v.event.event_id.clone()).collect();
        let stored = self.events.find(&ids).await?;
        if stored.is_empty() {
            return Ok(Staged::Rejected(rejections));
        }
        let mut skip = HashSet::new();
        let mut conflicts = Vec::new();
        for (index, Validated { event, .. }) in batch.iter().enumerate() {
            if let Some(existing) = stored.iter().find(|s| s.event_id == event.event_id) {
                if event.same_content(existing) {
                    skip.insert(index);
                } else {
                    conflicts.push(EventRejection {
                        index,
                        event_id: Some(event.event_id.to_string()),
                        event_type: event.event_type.clone(),
                        field: "event_id".into(),
                        reason: format!(
                            "already used by seq {} with different content",
                            existing.seq
                        ),
                    });
                }
            }
        }
        if !conflicts.is_empty() {
            return Ok(Staged::Rejected(conflicts));
        }
        Ok(Self::try_stage(graph, batch, &skip).map_or_else(Staged::Rejected, Staged::Accepted))
    }

    fn try_stage(
        graph: &Graph,
        batch: &[Validated],
        skip: &HashSet<usize>,
    ) -> Result<Vec<(StreamId, ExpectedVersion)>, Vec<EventRejection>> {
        let mut stage = graph.stage();
        let mut rejections = Vec::new();
        for (index, Validated { event, body, .. }) in batch.iter().enumerate() {
            if skip.contains(&index) {
                continue;
            }
            if let Err(rejection) = stage.accept(event, body) {
                rejections.push(EventRejection {
                    index,
                    event_id: Some(event.event_id.to_string()),
                    event_type: event.event_type.clone(),
                    field: rejection.field.unwrap_or_else(|| ".".into()),
                    reason: rejection.reason,
                });
            }
        }
        if rejections.is_empty() {
            Ok(stage
                .expectations()
                .into_iter()
                .map(|(s, v)| (s, ExpectedVersion::at(v)))
                .collect())
        } else {
            Err(rejections)
        }
    }

    /// Folds a batch just appended: directly when nothing else landed in between, else by
    /// catching up from the log. The appended events are the submitted `batch` minus
    /// duplicates, in order, so their bodies need not be parsed again.
    async fn fold_appended(
        &self,
        receipt: &AppendReceipt,
        batch: &[Validated],
    ) -> Result<(), LedgerError> {
        {
            let mut graph = self.graph.write().await;
            match receipt.appended.first() {
                Some(first) if first.seq == graph.checkpoint_seq() + 1 => {
                    let mut submitted = batch.iter();
                    for event in &receipt.appended {
                        match submitted.find(|v| v.event.event_id == event.event_id) {
                            Some(valid) => graph.apply_parsed(event, &valid.body),
                            None => graph.apply(event),
                        }
                    }
                }
                Some(_) => {
                    drop(graph);
                    self.catch_up().await?;
                    return Ok(());
                }
                None => {}
            }
        }
        self.maybe_save(false).await
    }

    /// Waits for the background saves started so far, then writes the projection's pending
    /// changes to the graph store. Once the last ingest has returned, a flush leaves nothing of
    /// the ledger's running or holding the stores: dropped after it, a store closes at once (a
    /// sled directory can be opened again).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let running = std::mem::take(&mut *self.background_saves());
        for task in running {
            if let Err(error) = task.await {
                tracing::warn!(%error, "a background save of the projection did not finish");
            }
        }
        self.maybe_save(true).await
    }

    fn background_saves(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        // Nothing panics while the list is held, and a list is valid whatever happened.
        self.background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves the projection when it is due. A due save runs in the background when a tokio
    /// runtime is available: the log is the truth and a restart catches up from any stored
    /// checkpoint, so persisting the projection never needs to hold up an ingest.
    async fn maybe_save(&self, force: bool) -> Result<(), LedgerError> {
        if force {
            return save(&self.graph, &self.saving, &*self.graphs, 0).await;
        }
        let due = match self.saving.try_lock() {
            // A save is running; it or the next one will carry these changes.
            Err(_) => false,
            Ok(saving) => {
                self.graph
                    .read()
                    .await
                    .checkpoint_seq()
                    .saturating_sub(saving.saved_seq)
                    >= self.persist.every_events
            }
        };
        if !due {
            return Ok(());
        }
        let every = self.persist.every_events;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (graph, saving, graphs) =
                    (self.graph.clone(), self.saving.clone(), self.graphs.clone());
                let task = runtime.spawn(async move {
                    if let Err(error) = save(&graph, &saving, &*graphs, every).await {
                        tracing::warn!(%error, "saving the projection failed; it is saved again later");
                    }
                });
                let mut background = self.background_saves();
                background.retain(|task| !task.is_finished());
                background.push(task);
                Ok(())
            }
            Err(_) => save(&self.graph, &self.saving, &*self.graphs, every).await,
        }
    }

    /// Replays the whole log into an empty graph and replaces the stored projection with it.
    /// Returns the number of events folded.
    pub async fn rebuild(&self) -> Result<u64, LedgerError> {
        let mut saving = self.saving.lock().await;
        let mut fresh = Graph::new();
        let mut after = 0;
        loop {
            let page = self.events.read(after, CATCH_UP_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for event in &page {
                fresh.apply(event);
            }
        }
        self.graphs.clear().await?;
        let delta = fresh.take_delta();
        self.graphs.save(0, &delta).await?;
        saving.saved_seq = fresh.checkpoint_seq();
        let folded = fresh.checkpoint_seq();
        *self.graph.write().await = fresh;
        drop(saving);
        self.catch_up().await?;
        Ok(folded)
    }

    /// The log's head as the graph has folded it.
    pub async fn checkpoint(&self) -> Option<Head> {
        self.graph.read().await.checkpoint()
    }

    /// Appends events the caller already validated elsewhere (an import of an exported log),
    /// without graph validation: the projection records what it cannot accept as anomalies.
    pub async fn import(&self, events: Vec<NewEvent>) -> Result<AppendReceipt, LedgerError> {
        let receipt = self.events.append(AppendRequest::new(events)).await?;
        self.catch_up().await?;
        Ok(receipt)
    }
}

/// Writes the projection's changes since the last save when at least `every` events are
/// pending (0: whenever anything is).
async fn save(
    graph: &RwLock<Graph>,
    saving: &Mutex<SaveState>,
    graphs: &dyn GraphStore,
    every: u64,
) -> Result<(), LedgerError> {
    let mut saving = saving.lock().await;
    let (previous, delta) = {
        let mut graph = graph.write().await;
        let pending = graph.checkpoint_seq().saturating_sub(saving.saved_seq);
        if !saving.whole_due && (pending == 0 || pending < every) {
            return Ok(());
        }
        // Taken in either case, so that the dirty set starts afresh after this save.
        let changes = graph.take_delta();
        if saving.whole_due {
            (0, graph.snapshot_delta())
        } else {
            (saving.saved_seq, changes)
        }
    };
    let checkpoint = delta.checkpoint.map_or(0, |h| h.seq);
    let saved = match graphs.save(previous, &delta).await {
        Ok(()) => Ok(()),
        // Another process folding the same log saved further already: nothing to add.
        Err(GraphStoreError::CheckpointConflict { stored, .. }) if stored > checkpoint => Ok(()),
        // The store lacks changes this delta does not carry (it was cleared, or another
        // process rebuilt it): write the whole projection instead.
        Err(GraphStoreError::CheckpointConflict { .. }) => {
            let whole = graph.read().await.snapshot_delta();
            match graphs.save(0, &whole).await {
                Ok(()) | Err(GraphStoreError::CheckpointConflict { .. }) => Ok(()),
                Err(other) => Err(other),
            }
        }
        Err(other) => Err(other),
    };
    saving.whole_due = saved.is_err();
    saved?;
    saving.saved_seq = checkpoint;
    Ok(())
}

/// An event of a batch that passed the catalogue, with what validation found: its typed payload
/// (so the graph folds it without parsing it again) and its stream.
struct Validated {
    event: NewEvent,
    body: catalogue::EventBody,
    stream: Option<StreamId>,
}

/// Validates every event of a batch against the catalogue, reporting every refusal at once.
fn validate_batch(events: Vec<NewEvent>) -> Result<Vec<Validated>, LedgerError> {
    let mut batch = Vec::with_capacity(events.len());
    let mut rejections = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        match catalogue::validate(&event) {
            Ok(valid) => batch.push(Validated {
                event,
                body: valid.body,
                stream: valid.stream,
            }),
            Err(err) => rejections.push(EventRejection::from_payload(index, &event, err)),
        }
    }
    if rejections.is_empty() {
        Ok(batch)
    } else {
        Err(LedgerError::Rejected(rejections))
    }
}

enum Staged {
    Accepted(Vec<(StreamId, ExpectedVersion)>),
    Rejected(Vec<EventRejection>),
}
