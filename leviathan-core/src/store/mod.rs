//! The backend traits: one small object-safe trait per concern, each with its own error enum.
//!
//! - [`EventStore`]: the append-only, hash-chained log.
//! - [`GraphStore`]: the persisted projection and its checkpoint.
//! - [`ArtifactStore`]: content-addressed blobs.
//!
//! Backends share the pure parts ([`sequencer`], [`follow`]) so that they differ only in I/O.

mod append;
mod artifact;
mod follow;
mod graph_store;
pub mod sequencer;

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use append::{AppendReceipt, AppendRequest, EventRejection, ExpectedVersion};
pub use artifact::{ArtifactError, ArtifactStore, StoredArtifact, verify_content};
pub use follow::follow;
pub use graph_store::{GraphStore, GraphStoreError, delta_fits};

use crate::{
    catalogue::StreamId,
    chain::{ChainBreak, ChainReport, ChainVerifier},
    event::{Event, Head},
    id::EventId,
};

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong with an [`EventStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventStoreError {
    /// Events in the batch break the catalogue's rules; nothing was appended.
    #[error("batch refused: {}", rejections.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// One entry per offending event.
        rejections: Vec<EventRejection>,
    },
    /// An event id is already in the log with different content; nothing was appended.
    #[error("event `{event_id}` (batch index {index}) already exists with different content")]
    Conflict {
        /// The id.
        event_id: EventId,
        /// Its index in the batch.
        index: usize,
    },
    /// A stream expectation failed; nothing was appended.
    #[error("stream `{stream}` is at version {actual}, expected {expected}")]
    WrongExpectedVersion {
        /// The stream.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// What it is.
        actual: u64,
    },
    /// Stored data does not decode or verify.
    #[error("corrupt event store{}: {reason}", seq.map(|s| format!(" at seq {s}")).unwrap_or_default())]
    Corrupt {
        /// Where, when known.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// The store cannot be reached or is overloaded; retrying may help. Nothing acknowledged is lost.
    #[error("event store unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Another process owns the store.
    #[error("event store at {location} is locked by another process")]
    Locked {
        /// Path or URL of the store.
        location: String,
    },
    /// Any other backend failure; retrying will not help.
    #[error("event store failure: {reason}")]
    Backend {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl EventStoreError {
    /// True when retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// A transient failure.
    pub fn unavailable(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// A permanent backend failure.
    pub fn backend(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

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
