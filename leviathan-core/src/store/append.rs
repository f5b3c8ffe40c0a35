//! Append requests, their expectations and receipts.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    catalogue::{self, PayloadError, StreamId},
    event::{Event, Head, NewEvent},
    id::EventId,
};

use super::{
    EventStoreError,
    sequencer::{PreparedAppend, PreparedEvent},
};

/// What a writer expects of a stream before its batch may land.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No expectation.
    #[default]
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has exactly this many events.
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation that a stream is at `version` (0 meaning no stream).
    pub fn at(version: u64) -> Self {
        if version == 0 {
            Self::NoStream
        } else {
            Self::Exact(version)
        }
    }

    /// True when a stream at `actual` meets this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// On the wire: `"any"`, `"no_stream"` or a version number.
impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Any => serializer.serialize_str("any"),
            Self::NoStream => serializer.serialize_str("no_stream"),
            Self::Exact(n) => serializer.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Number(u64),
            Word(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Number(0) => Ok(Self::NoStream),
            Wire::Number(n) => Ok(Self::Exact(n)),
            Wire::Word(w) if w == "any" => Ok(Self::Any),
            Wire::Word(w) if w == "no_stream" => Ok(Self::NoStream),
            Wire::Word(w) => Err(serde::de::Error::custom(format!(
                "expected version must be \"any\", \"no_stream\" or a number, got \"{w}\""
            ))),
        }
    }
}

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

/// A batch to append atomically, with optional stream expectations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppendRequest {
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// Expectations on streams; streams not listed are unconstrained.
    pub expectations: Vec<(StreamId, ExpectedVersion)>,
    /// The streams of `events` when the ledger validated them already. Only this crate sets it,
    /// so [`AppendRequest::prepare`] can trust it instead of validating every event twice.
    validated_streams: Option<Vec<Option<StreamId>>>,
}

impl AppendRequest {
    /// A batch without expectations.
    pub fn new(events: Vec<NewEvent>) -> Self {
        Self {
            events,
            expectations: Vec::new(),
            validated_streams: None,
        }
    }

    /// A batch of events that passed [`catalogue::validate`], each with its stream.
    pub(crate) fn validated(
        events: impl IntoIterator<Item = (NewEvent, Option<StreamId>)>,
    ) -> Self {
        let (events, streams) = events.into_iter().unzip();
        Self {
            validated_streams: Some(streams),
            ..Self::new(events)
        }
    }

    /// Adds an expectation.
    pub fn expect(mut self, stream: StreamId, version: ExpectedVersion) -> Self {
        self.expectations.push((stream, version));
        self
    }

    /// Validates every event against the catalogue (pure); all rejections are reported at once.
    pub fn prepare(self) -> Result<PreparedAppend, EventStoreError> {
        if let Some(streams) = self.validated_streams
            && streams.len() == self.events.len()
        {
            let events = self.events.into_iter().zip(streams);
            return Ok(PreparedAppend {
                events: events
                    .map(|(event, stream)| PreparedEvent { event, stream })
                    .collect(),
                expectations: self.expectations,
            });
        }
        let mut rejections = Vec::new();
        let mut events = Vec::with_capacity(self.events.len());
        for (index, event) in self.events.into_iter().enumerate() {
            match catalogue::validate(&event) {
                Ok(valid) => events.push(PreparedEvent {
                    event,
                    stream: valid.stream,
                }),
                Err(err) => rejections.push(EventRejection::from_payload(index, &event, err)),
            }
        }
        if rejections.is_empty() {
            Ok(PreparedAppend {
                events,
                expectations: self.expectations,
            })
        } else {
            Err(EventStoreError::Invalid { rejections })
        }
    }
}

/// What an append did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppendReceipt {
    /// The events appended, with their `seq` and hashes.
    pub appended: Vec<Event>,
    /// Ids of events that were already in the log with the same content (nothing appended for them).
    pub duplicates: Vec<EventId>,
    /// The log's head after the append.
    pub head: Option<Head>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_the_ledger_validated_prepares_as_one_validated_here() {
        let events = crate::testkit::lifecycle("pv", "demo", 2);
        let trusted = AppendRequest::validated(
            events
                .iter()
                .map(|e| (e.clone(), catalogue::validate(e).unwrap().stream)),
        )
        .prepare();
        let checked = AppendRequest::new(events).prepare();
        assert_eq!(trusted.unwrap(), checked.unwrap());
    }

    #[test]
    fn expected_version_wire() {
        for (v, json) in [
            (ExpectedVersion::Any, "\"any\""),
            (ExpectedVersion::NoStream, "\"no_stream\""),
            (ExpectedVersion::Exact(3), "3"),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), json);
            assert_eq!(serde_json::from_str::<ExpectedVersion>(json).unwrap(), v);
        }
        assert_eq!(
            serde_json::from_str::<ExpectedVersion>("0").unwrap(),
            ExpectedVersion::NoStream
        );
        assert!(
            serde_json::from_str::<ExpectedVersion>("\"later\"")
                .unwrap_err()
                .to_string()
                .contains("no_stream")
        );
    }

    #[test]
    fn expectations_match() {
        assert!(ExpectedVersion::Any.matches(5));
        assert!(ExpectedVersion::NoStream.matches(0));
        assert!(!ExpectedVersion::NoStream.matches(1));
        assert!(ExpectedVersion::Exact(2).matches(2));
        assert!(!ExpectedVersion::Exact(2).matches(3));
        assert_eq!(ExpectedVersion::at(0), ExpectedVersion::NoStream);
    }
}
