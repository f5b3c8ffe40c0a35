//! The append-only, hash-chained event log as a trait.

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::{
    append::{AppendReceipt, AppendRequest},
    error::EventStoreError,
};
use crate::{
    catalogue::StreamId,
    chain::{ChainBreak, ChainReport, ChainVerifier},
    event::{Event, Head},
    id::EventId,
};

/// A stream of events in `seq` order.
pub type EventStream = BoxStream<'static, Result<Event, EventStoreError>>;

/// The append-only, hash-chained event log.
///
/// Appends are atomic (a batch lands whole or not at all), idempotent by `event_id`, serialised
/// into one chain, and may carry stream expectations. Order is `seq`.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// Appends a batch (see [`AppendRequest`]).
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, EventStoreError>;

    /// Up to `limit` events with `seq > after`, in order.
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, EventStoreError>;

    /// The event with this id.
    async fn get(&self, event_id: &EventId) -> Result<Option<Event>, EventStoreError>;

    /// The events among `ids` that exist, in any order. Backends answer in one round trip.
    async fn find(&self, ids: &[EventId]) -> Result<Vec<Event>, EventStoreError> {
        let mut found = Vec::new();
        for id in ids {
            if let Some(event) = self.get(id).await? {
                found.push(event);
            }
        }
        Ok(found)
    }

    /// The last event's position; `None` for an empty log.
    async fn head(&self) -> Result<Option<Head>, EventStoreError>;

    /// The number of events in a stream.
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, EventStoreError>;

    /// Events with `seq > after`: first those already stored, then each new one as it is
    /// appended, with no gap and no reordering.
    async fn subscribe(&self, after: u64) -> Result<EventStream, EventStoreError>;

    /// Verifies the whole chain from `seq` 1. Backends that keep canonical bytes override this
    /// with [`ChainVerifier::push_record`].
    async fn verify(&self) -> Result<Result<ChainReport, ChainBreak>, EventStoreError> {
        let mut verifier = ChainVerifier::new();
        let mut after = 0;
        loop {
            let page = self.read(after, 1024).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for event in &page {
                if let Err(broken) = verifier.push(event) {
                    return Ok(Err(broken));
                }
            }
        }
        Ok(Ok(verifier.finish()))
    }
}
