//! The core laws of the projection, the catalogue and the chain, as properties over the logs the
//! `proptest` feature generates (`leviathan_core::testkit::strategy`).

use std::sync::Arc;

use leviathan_core::{
    Event, Graph, NewEvent,
    catalogue::{EventBody, validate},
    chain::{ChainFault, ChainVerifier},
    graph::GraphSnapshot,
    id::EventId,
    ledger::{Ledger, PersistPolicy},
    memory::{MemoryEventStore, MemoryGraphStore},
    testkit::{
        seal_all,
        strategy::{
            broken_payload, catalogue_event, catalogue_type, event, history, json_value,
            mixed_history, valid_payload,
        },
    },
    timestamp::Timestamp,
};
use proptest::{prelude::*, sample::Index};
use serde_json::Value;

fn fold(events: &[Event]) -> Graph {
    let mut g = Graph::new();
    for e in events {
        g.apply(e);
    }
    g
}

/// A valid history with arbitrary events (valid or not) mixed in, chained as a store would.
fn mixed_log() -> impl Strategy<Value = Vec<Event>> {
    mixed_history(event()).prop_map(seal_all)
}

/// An event of `event_type` carrying `payload`.
fn submitted(event_type: &str, payload: Value) -> NewEvent {
    NewEvent {
        event_id: EventId::new("v").unwrap(),
        event_type: event_type.to_owned(),
        timestamp: Timestamp::from_unix_micros(0).unwrap(),
        actor_id: None,
        payload,
        principal: None,
    }
}

/// What folding one event may change besides nodes and edges.
fn without_bookkeeping(mut snapshot: GraphSnapshot) -> GraphSnapshot {
    snapshot.anomalies.clear();
    snapshot.streams.clear();
    snapshot.checkpoint = None;
    snapshot
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every event of a generated history is accepted: by ingest validation (all staged as one
    /// batch) and by the fold, which records no anomaly.
    #[test]
    fn histories_are_accepted_event_by_event(events in history()) {
        let graph = Graph::new();
        let mut stage = graph.stage();
        for (i, e) in events.iter().enumerate() {
            let body = validate(e).map_err(|err| TestCaseError::fail(format!("event {i}: {err}")))?.body;
            stage.accept(e, &body).map_err(|r| TestCaseError::fail(format!("event {i} ({}): {r}", e.event_type)))?;
        }
        let folded = fold(&seal_all(events));
        prop_assert_eq!(folded.anomalies(), &[]);
    }

    /// Same events, same graph: the fold depends on nothing but the events, even after the
    /// events travel through JSON.
    #[test]
    fn same_events_same_graph(events in mixed_log()) {
        let a = fold(&events);
        let wire = serde_json::to_string(&events).unwrap();
        let back: Vec<Event> = serde_json::from_str(&wire).unwrap();
        prop_assert_eq!(fold(&back), a);
    }

    /// Applying a prefix, persisting it, then applying the rest equals applying everything.
    #[test]
    fn prefix_then_rest_equals_all(events in mixed_log(), cut in any::<Index>()) {
        let cut = cut.index(events.len() + 1);
        let mut g = fold(&events[..cut]);
        let _ = g.take_delta();
        let mut resumed = Graph::from_snapshot(g.snapshot());
        for e in &events[cut..] {
            resumed.apply(e);
        }
        prop_assert_eq!(resumed, fold(&events));
    }

    /// The fold is total and agrees with ingest validation (which stages events on an overlay,
    /// another path through the projection). Every event moves the checkpoint. An event whose
    /// payload parses and that staging accepts changes the graph without an anomaly; any other
    /// becomes exactly one anomaly at its `seq` and changes nothing else: no node, no edge, and
    /// no stream version but its own (stores count every appended event in its stream).
    #[test]
    fn the_fold_is_total(events in mixed_log()) {
        let mut graph = Graph::new();
        for e in &events {
            let body = EventBody::parse(&e.event_type, &e.payload).ok();
            let accepted = body.as_ref().is_some_and(|body| graph.stage().accept(&e.to_new_event(), body).is_ok());
            let before = graph.snapshot();
            graph.apply(e);
            let after = graph.snapshot();
            prop_assert_eq!(graph.checkpoint(), Some(e.head()));
            if accepted {
                prop_assert_eq!(&after.anomalies, &before.anomalies, "{} was accepted", e.event_type);
                continue;
            }
            prop_assert_eq!(after.anomalies.len(), before.anomalies.len() + 1, "{} was refused", e.event_type);
            let anomaly = after.anomalies.last().unwrap();
            prop_assert_eq!((anomaly.seq, &anomaly.event_type), (e.seq, &e.event_type));
            let own_stream = body.as_ref().and_then(EventBody::stream);
            let mut streams = before.streams.clone();
            if let Some(stream) = own_stream {
                match streams.iter_mut().find(|(s, _)| s == &stream) {
                    Some((_, version)) => *version += 1,
                    None => streams.push((stream, 1)),
                }
            }
            streams.sort();
            let mut after_streams = after.streams.clone();
            after_streams.sort();
            prop_assert_eq!(after_streams, streams);
            prop_assert_eq!(without_bookkeeping(after), without_bookkeeping(before));
        }
    }

    /// Any single-byte change of a stored record fails verification at exactly that event.
    #[test]
    fn a_single_byte_tamper_fails_at_its_seq(events in mixed_log().prop_filter("non-empty", |e| !e.is_empty()), pick in any::<Index>(), byte in any::<Index>(), flip in 1u8..=255) {
        let victim = pick.index(events.len());
        let mut records: Vec<(leviathan_core::Sha256Digest, Vec<u8>)> =
            events.iter().map(|e| (e.hash, e.canonical_bytes())).collect();
        let i = byte.index(records[victim].1.len());
        records[victim].1[i] ^= flip;
        let mut verifier = ChainVerifier::new();
        let mut broke_at = None;
        for (hash, bytes) in &records {
            if let Err(b) = verifier.push_record(*hash, bytes) {
                broke_at = Some(b);
                break;
            }
        }
        let broke = broke_at.expect("tampering is detected");
        prop_assert_eq!(broke.seq, victim as u64 + 1);
        let is_mismatch = matches!(broke.fault, ChainFault::HashMismatch { .. });
        prop_assert!(is_mismatch, "fault: {}", broke.fault);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The canonical writer writes exactly what serde_json writes for a sorted value.
    #[test]
    fn canonical_form_is_serde_json_sorted(value in json_value()) {
        prop_assert_eq!(leviathan_core::canonical::to_vec(&value), serde_json::to_vec(&value).unwrap());
    }

    /// A valid payload of every catalogue type validates, as its own type.
    #[test]
    fn valid_payloads_validate(
        (ty, payload) in catalogue_type().prop_flat_map(|ty| (Just(ty), valid_payload(ty)))
    ) {
        let valid = validate(&submitted(ty, payload.clone()));
        prop_assert!(valid.is_ok(), "{ty} {payload}: {:?}", valid.err());
        let body = valid.unwrap().body;
        prop_assert_ne!(&body, &EventBody::Unknown);
        prop_assert_eq!(EventBody::parse(ty, &payload).unwrap(), body);
    }

    /// A payload broken in a required field is refused, naming its type and that field.
    #[test]
    fn broken_payloads_are_refused_naming_the_field(
        (ty, (payload, field)) in catalogue_type().prop_flat_map(|ty| (Just(ty), broken_payload(ty)))
    ) {
        let refused = validate(&submitted(ty, payload.clone()));
        prop_assert!(refused.is_err(), "{ty} {payload} was accepted");
        let error = refused.unwrap_err();
        prop_assert_eq!(&error.event_type, ty);
        prop_assert_eq!(&error.field, field, "{}", error);
    }

    /// Validation is total: a real payload of any catalogue type with one member removed or
    /// replaced by any JSON value is accepted or refused with an error naming its type, never a
    /// panic.
    #[test]
    fn validation_is_total(
        (ty, payload) in catalogue_type().prop_flat_map(|ty| (Just(ty), valid_payload(ty))),
        member in any::<Index>(),
        replacement in proptest::option::of(json_value()),
    ) {
        let mut payload = payload;
        if let Value::Object(map) = &mut payload {
            let key = map.keys().nth(member.index(map.len().max(1))).cloned().unwrap_or_else(|| "extra".into());
            match replacement {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        if let Err(error) = validate(&submitted(ty, payload)) {
            prop_assert_eq!(&error.event_type, ty);
            prop_assert!(!error.field.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// A ledger that persists its graph as it goes, reopened from the graph store, equals a
    /// rebuild from the log, which equals the in-memory fold.
    #[test]
    fn rebuild_equals_incremental(events in mixed_history(catalogue_event()).prop_map(seal_all), every in 1u64..40) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = Arc::new(MemoryEventStore::new());
            let graphs = Arc::new(MemoryGraphStore::new());
            let expected = fold(&events);
            {
                let ledger = Ledger::open_with(store.clone(), graphs.clone(), PersistPolicy { every_events: every }).await.unwrap();
                for chunk in events.chunks(7) {
                    ledger.import(chunk.iter().map(Event::to_new_event).collect()).await.unwrap();
                }
                assert_eq!(*ledger.graph().await, expected);
            }
            let reopened = Ledger::open(store.clone(), graphs.clone()).await.unwrap();
            assert_eq!(*reopened.graph().await, expected, "resume from the stored checkpoint");
            reopened.rebuild().await.unwrap();
            assert_eq!(*reopened.graph().await, expected, "rebuild");
        });
    }
}
