//! A control plane as an [`EventStore`], so that a scheduler can run against a remote log.
//!
//! Appends go through ingest, so the control plane also validates them against its graph: a
//! batch the graph refuses is [`EventStoreError::Invalid`], which a raw store would have taken.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use futures::StreamExt;
use leviathan_core::{
    AppendReceipt, AppendRequest, Event, EventStore, EventStoreError, Head, StreamId,
    chain::{ChainBreak, ChainReport},
    id::EventId,
    store::{EventRejection, EventStream},
};
use serde::Deserialize;
use serde_json::Value;

use super::{ClientError, ControlPlaneClient, error::code_label};
use crate::{
    code::ErrorCode,
    wire::{IngestRequest, WireExpectation},
};

/// Ids per `find` request.
const FIND_CHUNK: usize = 1000;

/// An [`EventStore`] backed by a control plane's API.
#[derive(Clone, Debug)]
pub struct RemoteEventStore {
    client: ControlPlaneClient,
}

impl RemoteEventStore {
    /// The store of the control plane `client` talks to.
    pub fn new(client: ControlPlaneClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl EventStore for RemoteEventStore {
    /// Ingests the batch with its expectations as explicit ones (a failed one is
    /// [`EventStoreError::WrongExpectedVersion`]), then looks the events up to build the receipt.
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, EventStoreError> {
        let Some(first) = request.events.first() else {
            return Ok(AppendReceipt {
                head: self.head().await?,
                ..AppendReceipt::default()
            });
        };
        let target = request
            .events
            .iter()
            .find_map(|e| e.payload.get("target_id").and_then(Value::as_str))
            .unwrap_or("leviathan")
            .to_owned();
        // Named by its content, so that no other batch is ever sent under this id.
        let digest = leviathan_core::event::batch_digest(&request.events).to_string();
        let bundle_id = format!("append-{}-{}", first.event_id, &digest[..16]);
        let ids: Vec<EventId> = request.events.iter().map(|e| e.event_id.clone()).collect();
        let bundle = IngestRequest {
            target,
            bundle_id,
            events: request.events,
            artifacts: Vec::new(),
            expectations: request
                .expectations
                .into_iter()
                .map(|(stream, version)| WireExpectation { stream, version })
                .collect(),
        };
        let answer = self.client.ingest(&bundle).await.map_err(store_error)?;
        // A batch is sequenced contiguously, so the events it appended are the last `ingested`
        // positions up to the head it reports; the others were already in the log.
        let head_seq = answer.head.map_or(0, |h| h.seq);
        let appended_from = head_seq.saturating_sub(answer.ingested) + 1;
        let found: BTreeMap<EventId, Event> = self
            .find(&ids)
            .await?
            .into_iter()
            .map(|e| (e.event_id.clone(), e))
            .collect();
        let mut receipt = AppendReceipt {
            head: answer.head,
            ..AppendReceipt::default()
        };
        let mut seen = HashSet::new();
        for id in ids {
            let Some(event) = found.get(&id) else {
                return Err(EventStoreError::Backend {
                    reason: format!("event `{id}` is not in the log after it was ingested"),
                    source: None,
                });
            };
            let fresh = (appended_from..=head_seq).contains(&event.seq);
            if fresh && seen.insert(id.clone()) {
                receipt.appended.push(event.clone());
            } else {
                receipt.duplicates.push(id);
            }
        }
        receipt.appended.sort_by_key(|e| e.seq);
        Ok(receipt)
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        let mut events = Vec::new();
        let mut cursor = after;
        while events.len() < limit {
            let page = self
                .client
                .events_page(cursor, limit - events.len())
                .await
                .map_err(store_error)?;
            let Some(last) = page.events.last() else {
                break;
            };
            cursor = last.seq;
            let more = page.next_after.is_some();
            events.extend(page.events);
            if !more {
                break;
            }
        }
        Ok(events)
    }

    async fn get(&self, event_id: &EventId) -> Result<Option<Event>, EventStoreError> {
        self.client.event(event_id).await.map_err(store_error)
    }

    async fn find(&self, ids: &[EventId]) -> Result<Vec<Event>, EventStoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(FIND_CHUNK) {
            found.extend(self.client.find_events(chunk).await.map_err(store_error)?);
        }
        Ok(found)
    }

    async fn head(&self) -> Result<Option<Head>, EventStoreError> {
        self.client.head().await.map_err(store_error)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, EventStoreError> {
        self.client
            .stream_version(stream)
            .await
            .map_err(store_error)
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, EventStoreError> {
        let events = self
            .client
            .stream_events(after)
            .await
            .map_err(store_error)?;
        Ok(events.map(|item| item.map_err(store_error)).boxed())
    }

    async fn verify(&self) -> Result<Result<ChainReport, ChainBreak>, EventStoreError> {
        let verification = self.client.verify_chain().await.map_err(store_error)?;
        Ok(verification.into())
    }
}

#[derive(Deserialize)]
struct VersionConflict {
    stream: StreamId,
    expected: leviathan_core::ExpectedVersion,
    actual: u64,
}

#[derive(Deserialize)]
struct IdConflict {
    event_id: EventId,
    index: usize,
}

/// The store error an API error stands for.
fn store_error(error: ClientError) -> EventStoreError {
    if let ClientError::Status {
        status,
        code,
        message,
        details,
        ..
    } = &error
    {
        let first = || details.first().cloned().unwrap_or(Value::Null);
        match (*status, *code) {
            (409, Some(ErrorCode::WrongExpectedVersion)) => {
                if let Ok(c) = serde_json::from_value::<VersionConflict>(first()) {
                    return EventStoreError::WrongExpectedVersion {
                        stream: c.stream,
                        expected: c.expected,
                        actual: c.actual,
                    };
                }
            }
            (409, Some(ErrorCode::EventConflict)) => {
                if let Ok(c) = serde_json::from_value::<IdConflict>(first()) {
                    return EventStoreError::Conflict {
                        event_id: c.event_id,
                        index: c.index,
                    };
                }
            }
            (422, Some(ErrorCode::ValidationFailed)) => {
                let rejections: Result<Vec<EventRejection>, _> = details
                    .iter()
                    .map(|d| serde_json::from_value(d.clone()))
                    .collect();
                if let Ok(rejections) = rejections {
                    return EventStoreError::Invalid { rejections };
                }
            }
            (413 | 422, _) => {
                return EventStoreError::Invalid {
                    rejections: vec![EventRejection {
                        index: 0,
                        event_id: None,
                        event_type: String::new(),
                        field: ".".into(),
                        reason: format!("{message} ({})", code_label(*status, *code)),
                    }],
                };
            }
            _ => {}
        }
    }
    let reason = format!("control plane: {error}");
    if error.is_transient() {
        EventStoreError::unavailable(reason, error)
    } else {
        EventStoreError::backend(reason, error)
    }
}
