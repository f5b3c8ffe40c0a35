//! The control plane's operations, independent of HTTP: the router is a thin layer over them, and
//! the `leviathan` binary calls them directly when it works on a store instead of a server.
//! They answer semantic errors ([`ControlPlaneError`]); only the router turns them into statuses.

mod attempt_action;
mod error;
mod log;

use std::{collections::BTreeMap, sync::Arc};

use self::log::VerifiableLog;
pub use self::{
    attempt_action::AttemptAction,
    error::{ControlPlaneError, MissingArtifact},
    log::{Leaf, sign_checkpoints},
};
use crate::{
    metrics::Metrics,
    wire::{
        AttemptDetail, AttemptsPage, ChainVerification, EventsPage, FailuresPage, FoundEvents,
        IngestRequest, IngestResponse, StoredArtifactResponse,
    },
};
use bytes::Bytes;
use leviathan_core::{
    ArtifactStore, BundleBinding, BundleIndex, Event, EventStore, Expectations, GraphSummary, Head,
    Ledger, LedgerError, Sha256Digest, StreamId,
    auth::{Principal, authorize_append},
    canonical,
    graph::{AttemptQuery, FailureQuery, Node, NodeId},
    id::{AttemptId, EventId},
    memory::MemoryBundleIndex,
    store::StoredArtifact,
    tlog::{TreeStore, checkpoint::LogSigner},
};
use serde_json::{Value, json};

/// The actor of events an operator causes through the API or the CLI.
pub const OPERATOR_ACTOR: &str = "operator";

/// A ledger and an artifact store, with the operations the API offers on them.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    ledger: Arc<Ledger>,
    artifacts: Arc<dyn ArtifactStore>,
    metrics: Arc<Metrics>,
    log: Option<VerifiableLog>,
    bundles: Arc<dyn BundleIndex>,
}

impl ControlPlane {
    /// A control plane over these stores.
    pub fn new(ledger: Arc<Ledger>, artifacts: Arc<dyn ArtifactStore>) -> Self {
        Self {
            ledger,
            artifacts,
            metrics: Arc::new(Metrics::new()),
            log: None,
            bundles: Arc::new(MemoryBundleIndex::new()),
        }
    }

    /// Binds bundle ids in `bundles` (the backend's, so that they hold across restarts)
    /// instead of in memory.
    pub fn with_bundles(mut self, bundles: Arc<dyn BundleIndex>) -> Self {
        self.bundles = bundles;
        self
    }

    /// Serves the log's Merkle tree (`tree`, the event store's) and, with `signer`, signs its
    /// checkpoints.
    pub fn with_log(mut self, tree: Arc<dyn TreeStore>, signer: Option<Arc<LogSigner>>) -> Self {
        self.log = Some(VerifiableLog::new(tree, signer));
        self
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The event log.
    pub fn events(&self) -> &Arc<dyn EventStore> {
        self.ledger.events()
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &Arc<dyn ArtifactStore> {
        &self.artifacts
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Validates a bundle (`principal` may append every event, artifacts stored, every event
    /// accepted by the catalogue and the graph) and appends it atomically, each event recording
    /// `principal` as its writer. Events already in the log are reported as duplicates.
    ///
    /// A bundle id names one content: it is bound to the digest of the bundle's target and
    /// events before they are appended, so the same id with other content is refused
    /// ([`ControlPlaneError::BundleConflict`]) and a refused bundle frees its id again.
    ///
    /// The append runs in its own task, so a client that disconnects cannot cut it short; its
    /// retry then finds the events in the log.
    pub async fn ingest(
        &self,
        principal: &Principal,
        mut request: IngestRequest,
    ) -> Result<IngestResponse, ControlPlaneError> {
        authorize_append(principal, &request.events)?;
        for event in &mut request.events {
            event.principal = Some(principal.clone());
        }
        self.check_artifacts(&request).await?;
        let key = bundle_key(&request.bundle_id);
        let content = bundle_content(&request);
        if let BundleBinding::Other(_) = self.bundles.bind(&key, &content).await? {
            return Err(ControlPlaneError::BundleConflict {
                bundle_id: request.bundle_id,
            });
        }
        let result = self.append_bundle(request).await;
        if let Err(error) = &result
            && error.is_refusal()
            && let Err(unreleased) = self.bundles.release(&key, &content).await
        {
            // The refusal is the answer; the id stays bound to the refused content.
            tracing::warn!(error = %unreleased, "cannot free the id of a refused bundle");
        }
        result
    }

    async fn append_bundle(
        &self,
        request: IngestRequest,
    ) -> Result<IngestResponse, ControlPlaneError> {
        let expectations = if request.expectations.is_empty() {
            Expectations::Derived
        } else {
            Expectations::Explicit(
                request
                    .expectations
                    .into_iter()
                    .map(|e| (e.stream, e.version))
                    .collect(),
            )
        };
        let ledger = self.ledger.clone();
        let events = request.events;
        let receipt = tokio::spawn(async move { ledger.ingest(events, expectations).await })
            .await
            .map_err(|e| ControlPlaneError::Internal {
                context: "ingest task",
                source: Box::new(e),
            })??;
        self.metrics.record_appended(&receipt.appended);
        let status = if receipt.appended.is_empty() && !receipt.duplicates.is_empty() {
            IngestResponse::DUPLICATE
        } else {
            IngestResponse::OK
        };
        Ok(IngestResponse {
            status: status.to_owned(),
            bundle_id: request.bundle_id,
            ingested: receipt.appended.len() as u64,
            duplicates: receipt.duplicates.len() as u64,
            head: receipt.head,
        })
    }

    /// Every artifact the bundle lists in `artifacts` must be stored already (workers upload
    /// before they post). `artifact.created` events are not checked: they describe content that
    /// may live elsewhere (their `uri`), and the projection records only its metadata.
    async fn check_artifacts(&self, request: &IngestRequest) -> Result<(), ControlPlaneError> {
        let mut referenced: BTreeMap<Sha256Digest, String> = BTreeMap::new();
        for (i, artifact) in request.artifacts.iter().enumerate() {
            referenced
                .entry(artifact.sha256)
                .or_insert_with(|| format!("artifacts[{i}]"));
        }
        let checks = referenced
            .keys()
            .map(|sha256| self.artifacts.exists(sha256));
        let found = futures::future::try_join_all(checks).await?;
        let missing: Vec<_> = referenced
            .into_iter()
            .zip(found)
            .filter(|(_, exists)| !exists)
            .map(|((sha256, referenced_by), _)| MissingArtifact {
                sha256,
                referenced_by,
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ControlPlaneError::ArtifactsMissing(missing))
    }

    /// Counts of the graph, after catching up with the log.
    pub async fn summary(&self) -> Result<GraphSummary, ControlPlaneError> {
        self.ledger.catch_up().await?;
        Ok(self.ledger.graph().await.summary())
    }

    /// A page of attempts, newest first, from the graph store's indexes.
    pub async fn attempts(&self, query: &AttemptQuery) -> Result<AttemptsPage, ControlPlaneError> {
        let page = self
            .ledger
            .history()
            .await?
            .attempts(query)
            .await
            .map_err(LedgerError::from)?;
        Ok(AttemptsPage {
            count: page.attempts.len(),
            attempts: page.attempts,
            next_cursor: page.next_cursor,
        })
    }

    /// An attempt with its most recent `max_events` events, its artifacts and its pull request,
    /// from the graph store (the events by their positions, which the attempt lists).
    pub async fn attempt(
        &self,
        id: &AttemptId,
        max_events: usize,
    ) -> Result<AttemptDetail, ControlPlaneError> {
        let history = self.ledger.history().await?;
        let stored = |e| ControlPlaneError::from(LedgerError::from(e));
        let Some(Node::Attempt(attempt)) =
            history.node(&NodeId::attempt(id)).await.map_err(stored)?
        else {
            return Err(ControlPlaneError::AttemptNotFound(id.clone()));
        };
        let produced = history.produced(id).await.map_err(stored)?;
        let artifacts = produced
            .iter()
            .filter_map(|n| match n {
                Node::Artifact(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        let reported = match attempt.pr_number {
            Some(number) => {
                let pr = NodeId::pull_request(&attempt.target_id, number);
                history.node(&pr).await.map_err(stored)?
            }
            None => None,
        };
        let pull_request = reported.into_iter().chain(produced).find_map(|n| match n {
            Node::PullRequest(p) => Some(p),
            _ => None,
        });
        let seqs = &attempt.event_seqs;
        let recent = &seqs[seqs.len().saturating_sub(max_events)..];
        let events = self.read_seqs(recent).await?;
        Ok(AttemptDetail {
            events_total: seqs.len(),
            attempt,
            events,
            artifacts,
            pull_request,
        })
    }

    /// Reads events by position, one read per run of consecutive positions.
    async fn read_seqs(&self, seqs: &[u64]) -> Result<Vec<Event>, ControlPlaneError> {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut events = Vec::with_capacity(sorted.len());
        let mut i = 0;
        while i < sorted.len() {
            let start = sorted[i];
            let mut len = 1;
            while i + len < sorted.len() && sorted[i + len] == start + len as u64 {
                len += 1;
            }
            events.extend(self.events().read(start - 1, len).await?);
            i += len;
        }
        Ok(events)
    }

    /// A page of failed and timed-out attempts, most recently ended first, from the graph
    /// store's indexes.
    pub async fn failures(&self, query: &FailureQuery) -> Result<FailuresPage, ControlPlaneError> {
        let page = self
            .ledger
            .history()
            .await?
            .failures(query)
            .await
            .map_err(LedgerError::from)?;
        Ok(FailuresPage {
            count: page.attempts.len(),
            failures: page.attempts,
            next_cursor: page.next_cursor,
        })
    }

    /// Up to `limit` events with `seq > after`.
    pub async fn events_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<EventsPage, ControlPlaneError> {
        let events = self.events().read(after, limit).await?;
        let next_after = match events.last() {
            Some(last) if events.len() == limit => Some(last.seq),
            _ => None,
        };
        Ok(EventsPage { events, next_after })
    }

    /// One event by id.
    pub async fn event(&self, id: &EventId) -> Result<Event, ControlPlaneError> {
        self.events()
            .get(id)
            .await?
            .ok_or_else(|| ControlPlaneError::EventNotFound(id.clone()))
    }

    /// The events among `ids` that exist, in `seq` order.
    pub async fn find_events(&self, ids: &[EventId]) -> Result<FoundEvents, ControlPlaneError> {
        let mut events = self.events().find(ids).await?;
        events.sort_unstable_by_key(|e| e.seq);
        Ok(FoundEvents { events })
    }

    /// The log's head.
    pub async fn head(&self) -> Result<Option<Head>, ControlPlaneError> {
        Ok(self.events().head().await?)
    }

    /// A stream's version.
    pub async fn stream_version(&self, stream: &StreamId) -> Result<u64, ControlPlaneError> {
        Ok(self.events().stream_version(stream).await?)
    }

    /// Verifies the whole chain.
    pub async fn verify(&self) -> Result<ChainVerification, ControlPlaneError> {
        Ok(self.events().verify().await?.into())
    }

    /// Stores content that must hash to `expected`.
    pub async fn put_artifact(
        &self,
        expected: Sha256Digest,
        content: Bytes,
    ) -> Result<StoredArtifactResponse, ControlPlaneError> {
        Ok(stored_response(
            self.artifacts.put_expecting(expected, content).await?,
        ))
    }

    /// Stores content whose digest the caller checked already (as it arrived).
    pub(crate) async fn put_verified_artifact(
        &self,
        content: Bytes,
    ) -> Result<StoredArtifactResponse, ControlPlaneError> {
        Ok(stored_response(self.artifacts.put(content).await?))
    }

    /// Stored content, verified against its address.
    pub async fn get_artifact(&self, sha256: &Sha256Digest) -> Result<Bytes, ControlPlaneError> {
        Ok(self.artifacts.get(sha256).await?)
    }

    /// The base bundle `attempt.created` recorded for `attempt`, if any: the one artifact a
    /// worker token may read (to clone its attempt's base without a forge credential).
    pub async fn base_bundle_of(
        &self,
        attempt: &AttemptId,
    ) -> Result<Option<Sha256Digest>, ControlPlaneError> {
        let history = self.ledger.history().await?;
        let node = history
            .node(&NodeId::attempt(attempt))
            .await
            .map_err(|e| ControlPlaneError::from(LedgerError::from(e)))?;
        Ok(match node {
            Some(Node::Attempt(a)) => a.base.map(|b| b.bundle_sha256),
            _ => None,
        })
    }
}

fn stored_response(stored: StoredArtifact) -> StoredArtifactResponse {
    StoredArtifactResponse {
        sha256: stored.sha256,
        size: stored.size,
        created: stored.created,
    }
}

/// The key a bundle id is bound under: its digest, so every id takes 32 bytes in the index.
fn bundle_key(bundle_id: &str) -> Sha256Digest {
    Sha256Digest::of(bundle_id.as_bytes())
}

/// What a bundle's content is: the SHA-256 of its target and its events in canonical JSON. The
/// principal is left out (the server sets it); artifacts and expectations are not content.
fn bundle_content(request: &IngestRequest) -> Sha256Digest {
    let events: Vec<Value> = request
        .events
        .iter()
        .map(|e| {
            json!({
                "event_id": e.event_id,
                "event_type": e.event_type,
                "timestamp": e.timestamp,
                "actor_id": e.actor_id,
                "payload": e.payload,
            })
        })
        .collect();
    let bundle = json!({ "target": request.target, "events": events });
    Sha256Digest::of(&canonical::to_vec(&bundle))
}
