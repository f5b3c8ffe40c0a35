//! The pure heart of every backend's writer: turning validated batches into chained events.
//!
//! A writer holds the log's tail, prefetches what a group of batches needs (existing events with
//! the same ids, current stream versions), and sequences each batch in turn. Each batch either
//! yields all its events or an error and no events; later batches of the group see the earlier
//! ones. The writer then persists the accepted batches in one transaction (group commit).

use std::collections::HashMap;

use crate::{
    catalogue::StreamId,
    event::{Event, Head, NewEvent},
    id::EventId,
};

use super::{
    append::{AppendReceipt, PreparedAppend, PreparedEvent},
    error::EventStoreError,
};

/// What a writer looked up for a group of batches.
#[derive(Clone, Debug, Default)]
pub struct Prefetched {
    /// Stored events with ids used by the group.
    pub events: HashMap<EventId, Event>,
    /// Current versions of the streams the group touches (absent means 0).
    pub streams: HashMap<StreamId, u64>,
}

/// A sequenced event and, when it has a stream, the stream's version after it.
#[derive(Clone, Debug, PartialEq)]
pub struct SequencedEvent {
    /// The chained event.
    pub event: Event,
    /// Its canonical bytes (what its hash covers), as computed when it was chained.
    pub canonical: Vec<u8>,
    /// Its stream and the stream's new version.
    pub stream: Option<(StreamId, u64)>,
}

/// One batch, sequenced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sequenced {
    /// New events to persist, in order.
    pub events: Vec<SequencedEvent>,
    /// Ids already stored with the same content.
    pub duplicates: Vec<EventId>,
    /// The head after this batch.
    pub head: Option<Head>,
}

impl Sequenced {
    /// The receipt to answer the caller with once persisted (the events move into it).
    pub fn into_receipt(self) -> AppendReceipt {
        AppendReceipt {
            appended: self.events.into_iter().map(|e| e.event).collect(),
            duplicates: self.duplicates,
            head: self.head,
        }
    }
}

/// Sequences batches after a known tail.
///
/// It borrows the group's batches rather than copying their events: later batches of a group
/// are compared with the earlier ones' submitted events, which live as long as the group.
#[derive(Debug, Default)]
pub struct Sequencer<'g> {
    tail: Option<Head>,
    group_events: HashMap<&'g EventId, &'g NewEvent>,
    group_streams: HashMap<StreamId, u64>,
}

impl<'g> Sequencer<'g> {
    /// A sequencer continuing after `tail` (`None` for an empty log).
    pub fn new(tail: Option<Head>) -> Self {
        Self {
            tail,
            ..Self::default()
        }
    }

    /// The tail after everything sequenced so far.
    pub fn tail(&self) -> Option<Head> {
        self.tail
    }

    /// Sequences one batch after the batches already sequenced by this sequencer.
    pub fn sequence(
        &mut self,
        batch: &'g PreparedAppend,
        known: &Prefetched,
    ) -> Result<Sequenced, EventStoreError> {
        // 1. Duplicates and conflicts, against the log, the group so far and the batch itself.
        let mut fresh: Vec<&'g PreparedEvent> = Vec::with_capacity(batch.events.len());
        let mut duplicates = Vec::new();
        let mut in_batch: HashMap<&'g EventId, &'g NewEvent> =
            HashMap::with_capacity(batch.events.len());
        for (index, prepared) in batch.events.iter().enumerate() {
            let new = &prepared.event;
            let same = if let Some(earlier) = self.group_events.get(&new.event_id) {
                Some(*earlier == new)
            } else if let Some(stored) = known.events.get(&new.event_id) {
                Some(new.same_content(stored))
            } else {
                in_batch.get(&new.event_id).map(|earlier| *earlier == new)
            };
            match same {
                Some(true) => duplicates.push(new.event_id.clone()),
                Some(false) => {
                    return Err(EventStoreError::Conflict {
                        event_id: new.event_id.clone(),
                        index,
                    });
                }
                None => {
                    in_batch.insert(&new.event_id, new);
                    fresh.push(prepared);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(Sequenced {
                events: Vec::new(),
                duplicates,
                head: self.tail,
            });
        }

        // 2. Expectations, only when something new would land.
        let version = |stream: &StreamId, group: &HashMap<StreamId, u64>| {
            group
                .get(stream)
                .or_else(|| known.streams.get(stream))
                .copied()
                .unwrap_or(0)
        };
        for (stream, expected) in &batch.expectations {
            let actual = version(stream, &self.group_streams);
            if !expected.matches(actual) {
                return Err(EventStoreError::WrongExpectedVersion {
                    stream: stream.clone(),
                    expected: *expected,
                    actual,
                });
            }
        }

        // 3. Chain them.
        let mut events = Vec::with_capacity(fresh.len());
        let mut streams: HashMap<StreamId, u64> = HashMap::new();
        let mut tail = self.tail;
        for prepared in fresh {
            let seq = tail.map_or(1, |h| h.seq + 1);
            let (event, canonical) =
                Event::seal_canonical(prepared.event.clone(), seq, tail.map(|h| h.hash));
            tail = Some(event.head());
            let stream = prepared.stream.as_ref().map(|s| {
                let next = streams
                    .get(s)
                    .copied()
                    .unwrap_or_else(|| version(s, &self.group_streams))
                    + 1;
                streams.insert(s.clone(), next);
                (s.clone(), next)
            });
            events.push(SequencedEvent {
                event,
                canonical,
                stream,
            });
        }

        // 4. Make the batch visible to the next batches of the group.
        self.tail = tail;
        self.group_streams.extend(streams);
        self.group_events.extend(in_batch);
        Ok(Sequenced {
            events,
            duplicates,
            head: tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        store::{AppendRequest, ExpectedVersion},
        timestamp::Timestamp,
    };
    use serde_json::json;

    fn new(id: &str, attempt: &str) -> NewEvent {
        NewEvent {
            event_id: EventId::new(id).unwrap(),
            event_type: "attempt.heartbeat".into(),
            timestamp: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            actor_id: None,
            payload: json!({"attempt_id": attempt}),
            principal: None,
        }
    }

    #[test]
    fn chains_and_counts_streams_across_a_group() {
        let mut seq = Sequencer::new(None);
        let a = AppendRequest::new(vec![new("e1", "a1"), new("e2", "a1")])
            .prepare()
            .unwrap();
        let b = AppendRequest::new(vec![new("e3", "a1")])
            .expect(StreamId::from_raw("attempt:a1"), ExpectedVersion::Exact(2))
            .prepare()
            .unwrap();
        let known = Prefetched::default();
        let first = seq.sequence(&a, &known).unwrap();
        let second = seq.sequence(&b, &known).unwrap();
        assert_eq!(first.events[1].event.seq, 2);
        assert_eq!(
            second.events[0].event.prev_hash,
            Some(first.events[1].event.hash)
        );
        assert_eq!(second.events[0].stream.as_ref().unwrap().1, 3);
    }

    #[test]
    fn duplicates_conflicts_and_expectations() {
        let mut seq = Sequencer::new(None);
        let known = Prefetched::default();
        let a = AppendRequest::new(vec![new("e1", "a1")]).prepare().unwrap();
        seq.sequence(&a, &known).unwrap();
        let again = seq.sequence(&a, &known).unwrap();
        assert!(again.events.is_empty());
        assert_eq!(again.duplicates.len(), 1);

        let conflicting = AppendRequest::new(vec![new("e1", "a2")]).prepare().unwrap();
        assert!(matches!(
            seq.sequence(&conflicting, &known),
            Err(EventStoreError::Conflict { index: 0, .. })
        ));

        let stale = AppendRequest::new(vec![new("e9", "a1")])
            .expect(StreamId::from_raw("attempt:a1"), ExpectedVersion::NoStream)
            .prepare()
            .unwrap();
        assert!(matches!(
            seq.sequence(&stale, &known),
            Err(EventStoreError::WrongExpectedVersion { actual: 1, .. })
        ));
        assert_eq!(
            seq.tail().unwrap().seq,
            1,
            "failed batches leave the tail alone"
        );
    }

    #[test]
    fn same_id_twice_in_one_batch() {
        let mut seq = Sequencer::new(None);
        let dup = AppendRequest::new(vec![new("e1", "a1"), new("e1", "a1")])
            .prepare()
            .unwrap();
        let out = seq.sequence(&dup, &Prefetched::default()).unwrap();
        assert_eq!((out.events.len(), out.duplicates.len()), (1, 1));
        let mut seq = Sequencer::new(None);
        let clash = AppendRequest::new(vec![new("e1", "a1"), new("e1", "a2")])
            .prepare()
            .unwrap();
        assert!(matches!(
            seq.sequence(&clash, &Prefetched::default()),
            Err(EventStoreError::Conflict { index: 1, .. })
        ));
    }
}
