//! The core laws of the projection and the chain, as properties over generated logs.

use std::sync::Arc;

use leviathan_core::{
    Event, Graph, NewEvent,
    chain::{ChainFault, ChainVerifier},
    id::EventId,
    ledger::{Ledger, PersistPolicy},
    memory::{MemoryEventStore, MemoryGraphStore},
    testkit::seal_all,
    timestamp::Timestamp,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// One step of a generated log. Ids come from small pools so that steps interact (and many are
/// refused by the projection, which must stay total).
#[derive(Clone, Debug)]
enum Op {
    Register(u8),
    CreateTask(u8, u8, Option<u8>),
    UpdateTask(u8, u8, bool),
    CreateAttempt(u8, u8, u8, u32),
    Start(u8),
    Heartbeat(u8),
    Succeed(u8, u8),
    Fail(u8, bool),
    TimeOut(u8),
    Invalidate(u8),
    PrCreated(u8, u8),
    Merge(u8, u8),
    Close(u8, u8),
    Retry(u8, u8),
    CircuitOpen(u8),
    CircuitClose(u8),
    Artifact(Option<u8>),
    Unknown(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0u8..2;
    let k = 0u8..4;
    let a = 0u8..6;
    prop_oneof![
        2 => t.clone().prop_map(Op::Register),
        3 => (t.clone(), k.clone(), proptest::option::of(0u8..4)).prop_map(|(t, k, d)| Op::CreateTask(t, k, d)),
        1 => (t.clone(), k.clone(), any::<bool>()).prop_map(|(t, k, c)| Op::UpdateTask(t, k, c)),
        4 => (t.clone(), k.clone(), a.clone(), 1u32..4).prop_map(|(t, k, a, n)| Op::CreateAttempt(t, k, a, n)),
        3 => a.clone().prop_map(Op::Start),
        1 => a.clone().prop_map(Op::Heartbeat),
        2 => (a.clone(), 1u8..5).prop_map(|(a, n)| Op::Succeed(a, n)),
        2 => (a.clone(), any::<bool>()).prop_map(|(a, p)| Op::Fail(a, p)),
        1 => a.clone().prop_map(Op::TimeOut),
        1 => a.clone().prop_map(Op::Invalidate),
        1 => (a.clone(), 1u8..5).prop_map(|(a, n)| Op::PrCreated(a, n)),
        1 => (t.clone(), 1u8..5).prop_map(|(t, n)| Op::Merge(t, n)),
        1 => (t.clone(), 1u8..5).prop_map(|(t, n)| Op::Close(t, n)),
        1 => (t.clone(), k.clone()).prop_map(|(t, k)| Op::Retry(t, k)),
        1 => t.clone().prop_map(Op::CircuitOpen),
        1 => t.clone().prop_map(Op::CircuitClose),
        1 => proptest::option::of(a.clone()).prop_map(Op::Artifact),
        1 => any::<u8>().prop_map(Op::Unknown),
    ]
}

fn to_event(i: usize, op: &Op) -> NewEvent {
    let target = |t: &u8| format!("target-{t}");
    let task = |k: &u8| format!("task-{k}");
    let attempt = |a: &u8| format!("attempt-{a}");
    let url = |n: &u8| format!("https://forge.example/pull/{n}");
    let sha = |a: &u8| format!("{:040x}", u128::from(*a) + 1);
    let (ty, payload) = match op {
        Op::Register(t) => (
            "target.registered",
            json!({"target_id": target(t), "repo_url": "https://x/r.git"}),
        ),
        Op::CreateTask(t, k, d) => (
            "task.created",
            json!({"target_id": target(t), "task_id": task(k), "ready": true, "allowed_paths": ["docs/"],
                   "dependencies": d.filter(|d| d != k).map(|d| vec![task(&d)]).unwrap_or_default()}),
        ),
        Op::UpdateTask(t, k, done) => (
            "task.updated",
            json!({"target_id": target(t), "task_id": task(k), "title": "updated",
                   "status": if *done { "completed" } else { "pending" }}),
        ),
        Op::CreateAttempt(t, k, a, n) => (
            "attempt.created",
            json!({"attempt_id": attempt(a), "task_id": task(k), "target_id": target(t), "attempt_number": n}),
        ),
        Op::Start(a) => ("attempt.started", json!({"attempt_id": attempt(a)})),
        Op::Heartbeat(a) => ("attempt.heartbeat", json!({"attempt_id": attempt(a)})),
        Op::Succeed(a, n) => (
            "attempt.succeeded",
            json!({"attempt_id": attempt(a), "branch": format!("agent/x-{}", attempt(a)), "commit_sha": sha(a),
                   "pr_number": n, "pr_url": url(n)}),
        ),
        Op::Fail(a, permanent) => (
            "attempt.failed",
            json!({"attempt_id": attempt(a), "failure_kind": if *permanent { "path_violation" } else { "tests_failed" }}),
        ),
        Op::TimeOut(a) => ("attempt.timed_out", json!({"attempt_id": attempt(a)})),
        Op::Invalidate(a) => (
            "attempt.invalidated",
            json!({"attempt_id": attempt(a), "reason": "operator"}),
        ),
        Op::PrCreated(a, n) => (
            "pr.created",
            json!({"attempt_id": attempt(a), "pr_number": n, "pr_url": url(n)}),
        ),
        Op::Merge(t, n) => ("pr.merged", json!({"target_id": target(t), "pr_number": n})),
        Op::Close(t, n) => ("pr.closed", json!({"target_id": target(t), "pr_number": n})),
        Op::Retry(t, k) => (
            "retry.scheduled",
            json!({"target_id": target(t), "task_id": task(k), "retry_number": 2, "not_before": "2026-05-01T00:00:00Z"}),
        ),
        Op::CircuitOpen(t) => (
            "circuit.opened",
            json!({"target_id": target(t), "consecutive_failures": 3, "open_until": "2026-05-01T00:00:00Z"}),
        ),
        Op::CircuitClose(t) => ("circuit.closed", json!({"target_id": target(t)})),
        Op::Artifact(a) => (
            "artifact.created",
            json!({"sha256": format!("{:064x}", i), "kind": "log", "size": i, "attempt_id": a.map(|a| attempt(&a))}),
        ),
        Op::Unknown(n) => (
            "custom.thing",
            json!({"n": n, "nested": {"list": [1.5, "two", null]}}),
        ),
    };
    let mut payload = payload;
    if let Value::Object(map) = &mut payload {
        map.retain(|_, v| !v.is_null());
    }
    NewEvent {
        event_id: EventId::new(format!("ev-{i}")).unwrap(),
        event_type: ty.into(),
        timestamp: Timestamp::from_unix_micros(1_780_000_000_000_000 + i as i64 * 1_000_003)
            .unwrap(),
        actor_id: if i.is_multiple_of(3) {
            None
        } else {
            Some("proptest".into())
        },
        payload,
        principal: None,
    }
}

fn log() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(op(), 0..120).prop_map(|ops| {
        seal_all(
            ops.iter()
                .enumerate()
                .map(|(i, op)| to_event(i, op))
                .collect(),
        )
    })
}

fn fold(events: &[Event]) -> Graph {
    let mut g = Graph::new();
    for e in events {
        g.apply(e);
    }
    g
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Same events, same graph: the fold depends on nothing but the events, even after the
    /// events travel through JSON.
    #[test]
    fn same_events_same_graph(events in log()) {
        let a = fold(&events);
        let wire = serde_json::to_string(&events).unwrap();
        let back: Vec<Event> = serde_json::from_str(&wire).unwrap();
        prop_assert_eq!(fold(&back), a);
    }

    /// Applying a prefix, persisting it, then applying the rest equals applying everything.
    #[test]
    fn prefix_then_rest_equals_all(events in log(), cut in 0usize..120) {
        let cut = cut.min(events.len());
        let mut g = fold(&events[..cut]);
        let _ = g.take_delta();
        let mut resumed = Graph::from_snapshot(g.snapshot());
        for e in &events[cut..] {
            resumed.apply(e);
        }
        prop_assert_eq!(resumed, fold(&events));
    }

    /// The projection is total: whatever the log, folding never fails, and every event moves
    /// the checkpoint.
    #[test]
    fn the_fold_is_total(events in log()) {
        let g = fold(&events);
        prop_assert_eq!(g.checkpoint_seq(), events.len() as u64);
    }

    /// Any single-byte change of a stored record fails verification at exactly that event.
    #[test]
    fn a_single_byte_tamper_fails_at_its_seq(events in log().prop_filter("non-empty", |e| !e.is_empty()), pick in any::<prop::sample::Index>(), byte in any::<prop::sample::Index>(), flip in 1u8..=255) {
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

    /// The canonical writer writes exactly what serde_json writes for a sorted value.
    #[test]
    fn canonical_form_is_serde_json_sorted(value in json_value()) {
        prop_assert_eq!(leviathan_core::canonical::to_vec(&value), serde_json::to_vec(&value).unwrap());
    }

    /// Validation never panics, whatever the payload, for every known type.
    #[test]
    fn validation_is_total(payload in json_value(), ty in prop::sample::select(leviathan_core::catalogue::KNOWN_EVENT_TYPES.to_vec())) {
        let event = NewEvent {
            event_id: EventId::new("v").unwrap(),
            event_type: ty.to_owned(),
            timestamp: Timestamp::from_unix_micros(0).unwrap(),
            actor_id: None,
            payload: json!({ "x": payload }),
            principal: None,
        };
        let _ = leviathan_core::catalogue::validate(&event);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A ledger that persists its graph as it goes, reopened from the graph store, equals a
    /// rebuild from the log, which equals the in-memory fold.
    #[test]
    fn rebuild_equals_incremental(events in log(), every in 1u64..40) {
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
