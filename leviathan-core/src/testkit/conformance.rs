//! The backend conformance suite, written once and run unchanged on every backend.
//!
//! A backend crate implements [`Harness`] (how to open fresh, empty stores; how to corrupt a
//! stored artifact) and calls [`conformance_tests!`](crate::conformance_tests) in a test module,
//! which expands to one `#[tokio::test]` per function of this module, with the same names on
//! every backend.

pub mod history;
pub mod tree;

use std::{any::Any, collections::BTreeSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{
    auth::{Principal, Role},
    catalogue::StreamId,
    digest::Sha256Digest,
    event::{Event, NewEvent},
    graph::Graph,
    id::{AttemptId, EventId, TokenId},
    ledger::{Expectations, Ledger, LedgerError, PersistPolicy},
    store::{
        AppendRequest, ArtifactError, ArtifactStore, BundleBinding, BundleIndex, EventStore,
        EventStoreError, ExpectedVersion, GraphStore, GraphStoreError,
    },
    testkit::{lifecycle, seal_all},
    timestamp::Timestamp,
    tlog::TreeStore,
};

/// Fresh stores for one test. `guard` keeps backend resources (a temp dir, a database) alive for
/// the test and releases them when dropped.
pub struct Stores {
    /// The event log.
    pub events: Arc<dyn EventStore>,
    /// The projection store.
    pub graphs: Arc<dyn GraphStore>,
    /// The artifact store.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// The log's Merkle tree and checkpoints.
    pub tree: Arc<dyn TreeStore>,
    /// Bundle ids bound to their content.
    pub bundles: Arc<dyn BundleIndex>,
    /// Backend resources to release after the test.
    pub guard: Option<Box<dyn Any + Send + Sync>>,
}

/// How the suite gets at a backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Fresh, empty stores.
    async fn open(&self) -> Stores;

    /// The same stores after closing them and opening them again (a process restart); the
    /// memory backend, which nothing outlives, returns them as they are.
    async fn reopen(&self, stores: Stores) -> Stores;

    /// Damages the stored bytes of an artifact in place, as a failing disk would.
    async fn corrupt_artifact(&self, stores: &Stores, sha256: &Sha256Digest);
}

/// Expands to one `#[tokio::test]` per conformance test. `$harness` is an expression evaluated in
/// each test (it may `.await`); the calling crate needs `tokio` as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            append_read_head,
            append_is_atomic,
            duplicate_events_are_idempotent,
            conflicting_duplicate_is_refused,
            stream_expectations,
            concurrent_exact_expectations_admit_one,
            concurrent_writers_form_one_chain,
            subscription_catches_up_then_follows,
            awkward_payloads_round_trip_and_verify,
            principals_round_trip_and_keep_older_hashes,
            get_and_find_by_event_id,
            read_pages_in_order,
            ledger_refuses_what_the_graph_cannot_accept,
            graph_store_equals_memory_projection,
            checkpoint_resume_equals_rebuild,
            graph_store_save_rules,
            two_ledgers_share_one_graph_store,
            artifacts_put_get_exists,
            artifacts_are_deduplicated,
            artifacts_empty_and_one_mebibyte,
            artifacts_digest_mismatch_keeps_nothing,
            corrupted_artifact_is_reported_not_returned,
            bundle_ids_bind_once_and_survive_a_restart,
        );
        $crate::conformance_tests!(@each_in tree $harness;
            tree_roots_after_every_batch_size,
            tree_proofs_for_spread_leaves_and_sizes,
            tree_survives_a_restart,
            checkpoints_are_recorded,
        );
        $crate::conformance_tests!(@each_in history $harness;
            history_queries_answer_as_the_graph,
        );
    };
    (@each $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let harness = $harness;
                $crate::testkit::conformance::$name(&harness).await;
            }
        )*
    };
    (@each_in $module:ident $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let harness = $harness;
                $crate::testkit::conformance::$module::$name(&harness).await;
            }
        )*
    };
}

fn ts(n: u64) -> Timestamp {
    Timestamp::from_unix_micros(1_769_601_600_000_000 + n as i64).expect("in range")
}

fn note(id: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(id).expect("valid id"),
        event_type: "note.added".into(),
        timestamp: ts(n),
        actor_id: Some("conformance".into()),
        payload: json!({ "n": n }),
        principal: None,
    }
}

fn heartbeat(id: &str, attempt: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::new(id).expect("valid id"),
        event_type: "attempt.heartbeat".into(),
        timestamp: ts(0),
        actor_id: None,
        payload: json!({ "attempt_id": attempt }),
        principal: None,
    }
}

async fn verify_all(events: &dyn EventStore) -> crate::chain::ChainReport {
    events
        .verify()
        .await
        .expect("verify ran")
        .expect("chain verifies")
}

/// Appends, reads back and reports the head.
pub async fn append_read_head(h: &dyn Harness) {
    let s = h.open().await;
    assert_eq!(s.events.head().await.unwrap(), None);
    let receipt = s
        .events
        .append(AppendRequest::new(vec![note("a", 1), note("b", 2)]))
        .await
        .unwrap();
    assert_eq!(
        receipt.appended.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(receipt.appended[0].prev_hash, None);
    assert_eq!(
        receipt.appended[1].prev_hash,
        Some(receipt.appended[0].hash)
    );
    let receipt2 = s
        .events
        .append(AppendRequest::new(vec![note("c", 3)]))
        .await
        .unwrap();
    assert_eq!(
        receipt2.appended[0].prev_hash,
        Some(receipt.appended[1].hash)
    );
    let all = s.events.read(0, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], receipt.appended[0]);
    assert_eq!(s.events.head().await.unwrap(), receipt2.head);
    assert_eq!(verify_all(&*s.events).await.events, 3);
}

/// A batch with one invalid event appends nothing, and says which event and field.
pub async fn append_is_atomic(h: &dyn Harness) {
    let s = h.open().await;
    s.events
        .append(AppendRequest::new(vec![note("first", 1)]))
        .await
        .unwrap();
    let mut bad = note("bad", 3);
    bad.event_type = "pr.created".into();
    bad.payload = json!({"attempt_id": "a1", "pr_number": 0, "pr_url": "https://x/pull/0"});
    let err = s
        .events
        .append(AppendRequest::new(vec![
            note("ok-1", 2),
            bad,
            note("ok-2", 4),
        ]))
        .await
        .unwrap_err();
    match err {
        EventStoreError::Invalid { rejections } => {
            assert_eq!(rejections.len(), 1);
            assert_eq!(
                (rejections[0].index, rejections[0].field.as_str()),
                (1, "pr_number")
            );
        }
        other => panic!("expected Invalid, got {other}"),
    }
    assert_eq!(s.events.head().await.unwrap().unwrap().seq, 1);
    assert!(
        s.events
            .get(&EventId::new("ok-1").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

/// The same events again are duplicates: nothing appended, reported as such.
pub async fn duplicate_events_are_idempotent(h: &dyn Harness) {
    let s = h.open().await;
    let batch = vec![note("d1", 1), note("d2", 2)];
    let first = s
        .events
        .append(AppendRequest::new(batch.clone()))
        .await
        .unwrap();
    let again = s.events.append(AppendRequest::new(batch)).await.unwrap();
    assert!(again.appended.is_empty());
    assert_eq!(again.duplicates.len(), 2);
    assert_eq!(again.head, first.head);
    let mixed = s
        .events
        .append(AppendRequest::new(vec![note("d2", 2), note("d3", 3)]))
        .await
        .unwrap();
    assert_eq!(mixed.appended.len(), 1);
    assert_eq!(mixed.appended[0].seq, 3);
    assert_eq!(mixed.duplicates, vec![EventId::new("d2").unwrap()]);
}

/// The same id with other content is a conflict and appends nothing.
pub async fn conflicting_duplicate_is_refused(h: &dyn Harness) {
    let s = h.open().await;
    s.events
        .append(AppendRequest::new(vec![note("x", 1)]))
        .await
        .unwrap();
    let err = s
        .events
        .append(AppendRequest::new(vec![note("y", 2), note("x", 99)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::Conflict { index: 1, .. }),
        "{err}"
    );
    assert_eq!(s.events.head().await.unwrap().unwrap().seq, 1);
}

/// `Any`, `NoStream` and `Exact(n)`.
pub async fn stream_expectations(h: &dyn Harness) {
    let s = h.open().await;
    let stream = StreamId::from_raw("attempt:a1");
    let req = |id: &str, v| AppendRequest::new(vec![heartbeat(id, "a1")]).expect(stream.clone(), v);
    s.events
        .append(req("h1", ExpectedVersion::NoStream))
        .await
        .unwrap();
    let err = s
        .events
        .append(req("h2", ExpectedVersion::NoStream))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::WrongExpectedVersion { actual: 1, .. }),
        "{err}"
    );
    s.events
        .append(req("h2", ExpectedVersion::Exact(1)))
        .await
        .unwrap();
    let err = s
        .events
        .append(req("h3", ExpectedVersion::Exact(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::WrongExpectedVersion { actual: 2, .. }),
        "{err}"
    );
    s.events
        .append(req("h3", ExpectedVersion::Any))
        .await
        .unwrap();
    assert_eq!(s.events.stream_version(&stream).await.unwrap(), 3);
    assert_eq!(
        s.events
            .stream_version(&StreamId::from_raw("attempt:none"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.events.head().await.unwrap().unwrap().seq, 3);
}

/// 20 concurrent appends expecting the same version: exactly one lands, 19 conflict, none lost.
pub async fn concurrent_exact_expectations_admit_one(h: &dyn Harness) {
    let s = h.open().await;
    let stream = StreamId::from_raw("attempt:race");
    s.events
        .append(AppendRequest::new(vec![heartbeat("seed", "race")]))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let events = s.events.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            events
                .append(
                    AppendRequest::new(vec![heartbeat(&format!("race-{i}"), "race")])
                        .expect(stream, ExpectedVersion::Exact(1)),
                )
                .await
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(EventStoreError::WrongExpectedVersion { .. }) => conflicts += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 19));
    assert_eq!(s.events.stream_version(&stream).await.unwrap(), 2);
    assert_eq!(verify_all(&*s.events).await.events, 2);
}

/// 8 concurrent writers × 500 events: 4000 events in one linear chain that verifies.
pub async fn concurrent_writers_form_one_chain(h: &dyn Harness) {
    let s = h.open().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let events = s.events.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                events
                    .append(AppendRequest::new(vec![note(&format!("w{w}-{i}"), i)]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = verify_all(&*s.events).await;
    assert_eq!(report.events, 4000);
    let all = s.events.read(0, 5000).await.unwrap();
    let ids: BTreeSet<_> = all.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), 4000, "no event lost or doubled");
    for w in 0..8 {
        let mine: Vec<u64> = all
            .iter()
            .filter(|e| e.event_id.as_str().starts_with(&format!("w{w}-")))
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            mine,
            (0..500).collect::<Vec<_>>(),
            "writer {w}'s events keep their order"
        );
    }
}

/// A subscription delivers what is stored, then each new event, with no gap and no reordering.
pub async fn subscription_catches_up_then_follows(h: &dyn Harness) {
    let s = h.open().await;
    for i in 0..5 {
        s.events
            .append(AppendRequest::new(vec![note(&format!("s{i}"), i)]))
            .await
            .unwrap();
    }
    let mut sub = s.events.subscribe(2).await.unwrap();
    let writer = {
        let events = s.events.clone();
        tokio::spawn(async move {
            for i in 5..60 {
                let batch = (0..(i % 3) + 1)
                    .map(|j| note(&format!("s{i}-{j}"), i))
                    .collect();
                events.append(AppendRequest::new(batch)).await.unwrap();
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let total = 5 + (5..60u64).map(|i| (i % 3) + 1).sum::<u64>();
    let mut expected = 3;
    while expected <= total {
        let event = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the subscription keeps delivering")
            .expect("the stream stays open")
            .expect("no error");
        assert_eq!(event.seq, expected);
        expected += 1;
    }
    writer.await.unwrap();
}

/// Unicode, 64-bit integer extremes, floats, deep nesting and empty containers come back exactly,
/// and the chain still verifies.
pub async fn awkward_payloads_round_trip_and_verify(h: &dyn Harness) {
    let s = h.open().await;
    let mut deep = json!({"leaf": "🌊"});
    for i in 0..40 {
        deep = if i % 2 == 0 {
            json!([deep])
        } else {
            json!({ "k": deep })
        };
    }
    let payloads: Vec<Value> = vec![
        json!({"text": "café — 日本語 — 🦑 \u{10FFFF}", "esc": "quote\" backslash\\ nl\n tab\t ctl\u{1}\u{1f} del\u{7f}"}),
        json!({"max": u64::MAX, "min": i64::MIN, "zero": 0, "neg": -1}),
        json!({"pi": std::f64::consts::PI, "tiny": 5e-324, "huge": 1.7976931348623157e308, "one": 1.0, "neg_zero": -0.0, "tenth": 0.1}),
        json!({"deep": deep}),
        json!({"empty_obj": {}, "empty_arr": [], "empty_str": "", "null": null, "bools": [true, false]}),
        json!({"z": 1, "a": 2, "é": 3, "E": 4, "": 5}),
        json!({}),
    ];
    let events: Vec<NewEvent> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| NewEvent {
            event_id: EventId::new(format!("awk-{i}")).unwrap(),
            event_type: "awkward.payload".into(),
            timestamp: Timestamp::parse("2026-02-03T04:05:06.000007Z").unwrap(),
            actor_id: if i % 2 == 0 {
                None
            } else {
                Some("ünïcode-actor".into())
            },
            payload: p.clone(),
            principal: None,
        })
        .collect();
    let receipt = s
        .events
        .append(AppendRequest::new(events.clone()))
        .await
        .unwrap();
    let back = s.events.read(0, 100).await.unwrap();
    assert_eq!(back, receipt.appended);
    for (stored, sent) in back.iter().zip(&events) {
        assert!(
            sent.same_content(stored),
            "payload {} changed in storage",
            stored.event_id
        );
        assert_eq!(stored.compute_hash(), stored.hash);
    }
    assert_eq!(verify_all(&*s.events).await.events, payloads.len() as u64);
}

/// The principal the server records comes back exactly from every read path and is covered by
/// the chain; an event without one hashes as it always did.
pub async fn principals_round_trip_and_keep_older_hashes(h: &dyn Harness) {
    let s = h.open().await;
    let worker = Principal::worker(
        TokenId::new("tok-worker-1").unwrap(),
        AttemptId::new("attempt-p1").unwrap(),
    );
    let admin = Principal::new(TokenId::new("control-plane-token").unwrap(), Role::Admin);
    let mut signed = heartbeat("p-2", "attempt-p1");
    signed.principal = Some(worker.clone());
    let mut by_admin = note("p-3", 3);
    by_admin.principal = Some(admin.clone());
    let sent = vec![note("p-1", 1), signed, by_admin];
    let receipt = s
        .events
        .append(AppendRequest::new(sent.clone()))
        .await
        .unwrap();
    let unsigned = Event::seal(note("p-1", 1), 1, None);
    assert_eq!(
        receipt.appended[0].hash, unsigned.hash,
        "no principal, same hash"
    );
    let principals = |events: &[Event]| -> Vec<Option<Principal>> {
        events.iter().map(|e| e.principal.clone()).collect()
    };
    let expected = vec![None, Some(worker), Some(admin)];
    assert_eq!(principals(&receipt.appended), expected);
    assert_eq!(principals(&s.events.read(0, 10).await.unwrap()), expected);
    let got = s.events.get(&EventId::new("p-2").unwrap()).await.unwrap();
    assert_eq!(got.unwrap().principal, expected[1]);
    let followed: Vec<Event> = s
        .events
        .subscribe(0)
        .await
        .unwrap()
        .take(3)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(principals(&followed), expected);
    for event in &followed {
        assert_eq!(event.compute_hash(), event.hash);
    }
    assert_eq!(verify_all(&*s.events).await.events, 3);
}

/// Lookups by id, singly and in batches.
pub async fn get_and_find_by_event_id(h: &dyn Harness) {
    let s = h.open().await;
    let receipt = s
        .events
        .append(AppendRequest::new(vec![
            note("g1", 1),
            note("g2", 2),
            note("g3", 3),
        ]))
        .await
        .unwrap();
    let got = s
        .events
        .get(&EventId::new("g2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, receipt.appended[1]);
    assert!(
        s.events
            .get(&EventId::new("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let ids: Vec<EventId> = ["g3", "missing", "g1"]
        .iter()
        .map(|i| EventId::new(*i).unwrap())
        .collect();
    let mut found: Vec<u64> = s
        .events
        .find(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    found.sort_unstable();
    assert_eq!(found, [1, 3]);
}

/// Reads page by `seq`.
pub async fn read_pages_in_order(h: &dyn Harness) {
    let s = h.open().await;
    let batch: Vec<NewEvent> = (0..250).map(|i| note(&format!("p{i}"), i)).collect();
    s.events.append(AppendRequest::new(batch)).await.unwrap();
    let mut after = 0;
    let mut seen = 0;
    loop {
        let page = s.events.read(after, 64).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 64);
        for e in &page {
            assert_eq!(e.seq, after + 1);
            after = e.seq;
            seen += 1;
        }
    }
    assert_eq!(seen, 250);
    assert!(s.events.read(250, 10).await.unwrap().is_empty());
    assert!(s.events.read(1000, 10).await.unwrap().is_empty());
}

/// Ingest refuses events the projection cannot accept, names them, and appends nothing.
pub async fn ledger_refuses_what_the_graph_cannot_accept(h: &dyn Harness) {
    let s = h.open().await;
    let ledger = Ledger::open(s.events.clone(), s.graphs.clone())
        .await
        .unwrap();
    let events = lifecycle("lg", "demo", 1);
    ledger
        .ingest(events[..2].to_vec(), Expectations::Derived)
        .await
        .unwrap();
    let mut stray = heartbeat("stray", "attempt-unknown");
    stray.event_type = "attempt.started".into();
    let err = ledger
        .ingest(vec![note("fine", 1), stray], Expectations::Derived)
        .await
        .unwrap_err();
    match err {
        LedgerError::Rejected(r) => {
            assert_eq!(r.len(), 1);
            assert_eq!((r[0].index, r[0].field.as_str()), (1, "attempt_id"));
            assert!(r[0].reason.contains("unknown"), "{}", r[0].reason);
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert_eq!(s.events.head().await.unwrap().unwrap().seq, 2);
    // A retried batch is idempotent even though its events would now be refused as new ones.
    let again = ledger
        .ingest(events[..2].to_vec(), Expectations::Derived)
        .await
        .unwrap();
    assert_eq!((again.appended.len(), again.duplicates.len()), (0, 2));
    // A second terminal event for an attempt is refused.
    ledger
        .ingest(events[2..].to_vec(), Expectations::Derived)
        .await
        .unwrap();
    let live = ledger.graph().await.live_attempts().count();
    assert_eq!(live, 0);
    let mut second = note("second-terminal", 9);
    second.event_type = "attempt.failed".into();
    second.payload = json!({"attempt_id": "attempt-00000-b", "failure_kind": "tests_failed"});
    assert!(matches!(
        ledger.ingest(vec![second], Expectations::Derived).await,
        Err(LedgerError::Rejected(_))
    ));
}

/// The projection persisted by this backend equals the in-memory fold of the same log.
pub async fn graph_store_equals_memory_projection(h: &dyn Harness) {
    let s = h.open().await;
    let events = lifecycle("gs", "demo", 12);
    let ledger = Ledger::open_with(
        s.events.clone(),
        s.graphs.clone(),
        PersistPolicy { every_events: 7 },
    )
    .await
    .unwrap();
    for chunk in events.chunks(9) {
        ledger
            .ingest(chunk.to_vec(), Expectations::Derived)
            .await
            .unwrap();
    }
    ledger.flush().await.unwrap();
    let mut expected = Graph::new();
    for event in seal_all(events) {
        expected.apply(&event);
    }
    assert!(
        expected.anomalies().is_empty(),
        "{:?}",
        expected.anomalies()
    );
    assert_eq!(*ledger.graph().await, expected);
    let stored = Graph::from_snapshot(s.graphs.load().await.unwrap());
    assert_eq!(
        stored, expected,
        "the stored projection equals the in-memory fold"
    );
    assert_eq!(stored.summary(), expected.summary());
}

/// A ledger reopened from a stored checkpoint and caught up equals a full rebuild.
pub async fn checkpoint_resume_equals_rebuild(h: &dyn Harness) {
    let s = h.open().await;
    let events = lifecycle("cp", "demo", 8);
    let half = events.len() / 2;
    {
        let ledger = Ledger::open_with(
            s.events.clone(),
            s.graphs.clone(),
            PersistPolicy { every_events: 1 },
        )
        .await
        .unwrap();
        ledger
            .ingest(events[..half].to_vec(), Expectations::Derived)
            .await
            .unwrap();
        ledger.flush().await.unwrap();
    }
    let checkpoint = s.graphs.checkpoint().await.unwrap().unwrap();
    assert_eq!(checkpoint.seq, half as u64);
    // Events appended while no ledger was running are picked up on resume.
    s.events
        .append(AppendRequest::new(events[half..].to_vec()))
        .await
        .unwrap();
    let resumed = Ledger::open(s.events.clone(), s.graphs.clone())
        .await
        .unwrap();
    let resumed_graph = resumed.graph().await.clone();
    assert_eq!(resumed_graph.checkpoint_seq(), events.len() as u64);
    let folded = resumed.rebuild().await.unwrap();
    assert_eq!(folded, events.len() as u64);
    assert_eq!(
        *resumed.graph().await,
        resumed_graph,
        "resume equals rebuild"
    );
    assert_eq!(
        Graph::from_snapshot(s.graphs.load().await.unwrap()),
        resumed_graph
    );
}

/// A delta is accepted over any stored checkpoint between its start and its end, refused when
/// the store lacks changes it does not carry or is already past it, and overlapping deltas never
/// duplicate edges or anomalies.
pub async fn graph_store_save_rules(h: &dyn Harness) {
    let s = h.open().await;
    let mut events = seal_all(lifecycle("st", "demo", 2));
    // An event the projection refuses, so that anomalies are part of the deltas.
    let stray = Event::seal(
        heartbeat("stray", "attempt-nobody"),
        events.len() as u64 + 1,
        events.last().map(|e| e.hash),
    );
    events.push(stray);
    let cut = events.len() / 2;
    let mut graph = Graph::new();
    for e in &events[..cut] {
        graph.apply(e);
    }
    let first = graph.take_delta();
    for e in &events[cut..] {
        graph.apply(e);
    }
    let second = graph.take_delta();
    let (mid, end) = (cut as u64, events.len() as u64);

    let err = s.graphs.save(mid, &second).await.unwrap_err();
    assert!(
        matches!(err, GraphStoreError::CheckpointConflict { stored: 0, .. }),
        "a store behind the delta refuses it: {err}"
    );
    s.graphs.save(0, &first).await.unwrap();
    s.graphs.save(mid, &second).await.unwrap();
    let err = s.graphs.save(0, &first).await.unwrap_err();
    assert!(
        matches!(err, GraphStoreError::CheckpointConflict { stored, .. } if stored == end),
        "a store ahead refuses it: {err}"
    );
    // A second process that folded the same log saves its own whole delta: accepted, no duplicates.
    s.graphs.save(0, &graph.snapshot_delta()).await.unwrap();
    let stored = Graph::from_snapshot(s.graphs.load().await.unwrap());
    assert_eq!(stored, graph);
    assert_eq!(stored.anomalies().len(), 1);
}

/// Two ledgers over the same stores (two control-plane replicas) ingest in turn and both persist
/// the projection; the stored graph stays equal to the fold of the log.
pub async fn two_ledgers_share_one_graph_store(h: &dyn Harness) {
    let s = h.open().await;
    let policy = PersistPolicy { every_events: 1 };
    let a = Ledger::open_with(s.events.clone(), s.graphs.clone(), policy)
        .await
        .unwrap();
    let b = Ledger::open_with(s.events.clone(), s.graphs.clone(), policy)
        .await
        .unwrap();
    let events = lifecycle("two", "demo", 4);
    for (i, chunk) in events.chunks(5).enumerate() {
        let ledger = if i % 2 == 0 { &a } else { &b };
        ledger
            .ingest(chunk.to_vec(), Expectations::Derived)
            .await
            .unwrap();
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let mut expected = Graph::new();
    for event in seal_all(events) {
        expected.apply(&event);
    }
    assert_eq!(
        Graph::from_snapshot(s.graphs.load().await.unwrap()),
        expected
    );
    a.catch_up().await.unwrap();
    assert_eq!(*a.graph().await, expected);
}

/// put, get, exists.
pub async fn artifacts_put_get_exists(h: &dyn Harness) {
    let s = h.open().await;
    let content = Bytes::from_static(b"worker log\nline 2\n");
    let stored = s.artifacts.put(content.clone()).await.unwrap();
    assert_eq!(stored.sha256, Sha256Digest::of(&content));
    assert_eq!(stored.size, content.len() as u64);
    assert!(stored.created);
    assert!(s.artifacts.exists(&stored.sha256).await.unwrap());
    assert_eq!(s.artifacts.get(&stored.sha256).await.unwrap(), content);
    let missing = Sha256Digest::of(b"never stored");
    assert!(!s.artifacts.exists(&missing).await.unwrap());
    assert!(matches!(
        s.artifacts.get(&missing).await,
        Err(ArtifactError::NotFound(_))
    ));
}

/// The same content twice is stored once.
pub async fn artifacts_are_deduplicated(h: &dyn Harness) {
    let s = h.open().await;
    let a = s.artifacts.put(Bytes::from_static(b"same")).await.unwrap();
    let b = s.artifacts.put(Bytes::from_static(b"same")).await.unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert!(a.created && !b.created);
}

/// Empty and 1 MiB contents round-trip.
pub async fn artifacts_empty_and_one_mebibyte(h: &dyn Harness) {
    let s = h.open().await;
    let empty = s.artifacts.put(Bytes::new()).await.unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(s.artifacts.get(&empty.sha256).await.unwrap(), Bytes::new());
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let big = Bytes::from(big);
    let stored = s.artifacts.put(big.clone()).await.unwrap();
    assert_eq!(stored.size, 1024 * 1024);
    assert_eq!(s.artifacts.get(&stored.sha256).await.unwrap(), big);
}

/// Content that does not match its claimed address is refused and not kept.
pub async fn artifacts_digest_mismatch_keeps_nothing(h: &dyn Harness) {
    let s = h.open().await;
    let claimed = Sha256Digest::of(b"what the client said");
    let err = s
        .artifacts
        .put_expecting(claimed, Bytes::from_static(b"what it sent"))
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
    assert!(!s.artifacts.exists(&claimed).await.unwrap());
    assert!(
        !s.artifacts
            .exists(&Sha256Digest::of(b"what it sent"))
            .await
            .unwrap()
    );
}

/// A blob damaged in storage is reported as corrupt on read, never returned.
pub async fn corrupted_artifact_is_reported_not_returned(h: &dyn Harness) {
    let s = h.open().await;
    let stored = s
        .artifacts
        .put(Bytes::from_static(b"precious test output"))
        .await
        .unwrap();
    h.corrupt_artifact(&s, &stored.sha256).await;
    match s.artifacts.get(&stored.sha256).await {
        Err(ArtifactError::Corrupt { sha256, .. }) => assert_eq!(sha256, stored.sha256),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A bundle id binds to its first content, once among concurrent binders, can be released only
/// by that content, and stays bound across a restart.
pub async fn bundle_ids_bind_once_and_survive_a_restart(h: &dyn Harness) {
    let s = h.open().await;
    let bundle = Sha256Digest::of(b"demo\nbundle-1");
    let contents: Vec<Sha256Digest> = (0..8u8).map(|i| Sha256Digest::of(&[i])).collect();
    let binds = contents
        .iter()
        .map(|content| s.bundles.bind(&bundle, content));
    let bindings = futures::future::try_join_all(binds).await.expect("bind");
    let winners: Vec<_> = contents
        .iter()
        .zip(&bindings)
        .filter(|(_, b)| **b == BundleBinding::New)
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent bind wins: {bindings:?}"
    );
    let winner = winners[0];
    for (content, binding) in contents.iter().zip(&bindings) {
        if *content != winner {
            assert_eq!(*binding, BundleBinding::Other(winner));
        }
    }
    let loser = contents.iter().find(|c| **c != winner).expect("a loser");
    s.bundles.release(&bundle, loser).await.expect("release");
    assert_eq!(
        s.bundles.bind(&bundle, &winner).await.expect("bind"),
        BundleBinding::Same,
        "other content cannot release a binding"
    );
    let other = Sha256Digest::of(b"demo\nbundle-2");
    s.bundles.bind(&other, loser).await.expect("bind");
    s.bundles.release(&other, loser).await.expect("release");
    assert_eq!(
        s.bundles.bind(&other, &winner).await.expect("bind"),
        BundleBinding::New,
        "a released id is free"
    );
    let s = h.reopen(s).await;
    assert_eq!(
        s.bundles.bind(&bundle, loser).await.expect("bind"),
        BundleBinding::Other(winner),
        "the binding survives a restart"
    );
    assert_eq!(
        s.bundles.bind(&other, &winner).await.expect("bind"),
        BundleBinding::Same
    );
}
