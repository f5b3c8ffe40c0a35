//! Append requests, their validation into prepared batches, and receipts.

use crate::{
    catalogue::{self, StreamId},
    event::{Event, Head, NewEvent},
    id::EventId,
};

use super::{
    error::{EventRejection, EventStoreError},
    expected_version::ExpectedVersion,
};

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

/// A validated event and its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedEvent {
    /// The event.
    pub event: NewEvent,
    /// Its stream, if any.
    pub stream: Option<StreamId>,
}

/// A validated batch (see [`AppendRequest::prepare`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedAppend {
    /// The events, in order.
    pub events: Vec<PreparedEvent>,
    /// The caller's expectations.
    pub expectations: Vec<(StreamId, ExpectedVersion)>,
}

impl PreparedAppend {
    /// The event ids a writer must look up before sequencing.
    pub fn event_ids(&self) -> impl Iterator<Item = &EventId> {
        self.events.iter().map(|e| &e.event.event_id)
    }

    /// The streams whose versions a writer must look up before sequencing.
    pub fn streams(&self) -> impl Iterator<Item = &StreamId> {
        self.events
            .iter()
            .filter_map(|e| e.stream.as_ref())
            .chain(self.expectations.iter().map(|(s, _)| s))
    }
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
}
