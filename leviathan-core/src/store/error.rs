//! What can go wrong with the event log, and the boxed source every store error may carry.

use serde::{Deserialize, Serialize};

use super::expected_version::ExpectedVersion;
use crate::{
    catalogue::{PayloadError, StreamId},
    event::NewEvent,
    id::EventId,
};

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One refused event of a batch: where it is and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("event {index} ({}): {event_type}: field `{field}`: {reason}", event_id.as_deref().unwrap_or("?"))]
pub struct EventRejection {
    /// Index in the batch.
    pub index: usize,
    /// The event's id, when it has a valid one.
    pub event_id: Option<String>,
    /// The event's type.
    pub event_type: String,
    /// The field at fault (`.` for the whole event).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl EventRejection {
    /// A rejection of the event at `index` from a payload error.
    pub fn from_payload(index: usize, event: &NewEvent, error: PayloadError) -> Self {
        Self {
            index,
            event_id: Some(event.event_id.to_string()),
            event_type: event.event_type.clone(),
            field: error.field,
            reason: error.reason,
        }
    }
}

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
