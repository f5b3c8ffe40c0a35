//! The control plane as an `EventStore` (`RemoteEventStore`): core's conformance tests that do
//! not depend on appending events the graph would refuse, plus expectation tests on real streams.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use leviathan_core::{
    AppendRequest, EventStore, EventStoreError, ExpectedVersion, Sha256Digest, StreamId,
    memory::{MemoryArtifactStore, MemoryBundleIndex, MemoryEventStore, MemoryGraphStore},
    model::Priority,
    testkit::Scenario,
    testkit::conformance::{self, Stores},
};
use support::{Harness, note};

/// Fresh stores: a control plane on memory stores, reached through its API.
struct Remote;

#[async_trait]
impl conformance::Harness for Remote {
    async fn open(&self) -> Stores {
        let harness = Harness::start().await;
        let events = Arc::new(harness.client().event_store());
        Stores {
            events,
            graphs: Arc::new(MemoryGraphStore::new()),
            artifacts: Arc::new(MemoryArtifactStore::new()),
            // The tree tests do not run against the remote event store.
            tree: Arc::new(MemoryEventStore::new()),
            // Nor do the bundle tests: bundles are bound by the control plane, not through it.
            bundles: Arc::new(MemoryBundleIndex::new()),
            guard: Some(Box::new(harness.server)),
        }
    }

    async fn reopen(&self, _stores: Stores) -> Stores {
        unreachable!("restart tests do not run against the remote event store")
    }

    async fn corrupt_artifact(&self, _stores: &Stores, _sha256: &Sha256Digest) {
        unreachable!("artifact tests do not run against the remote event store")
    }
}

macro_rules! remote_conformance {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                conformance::$name(&Remote).await;
            }
        )*
    };
}

remote_conformance!(
    append_read_head,
    append_is_atomic,
    duplicate_events_are_idempotent,
    conflicting_duplicate_is_refused,
    concurrent_writers_form_one_chain,
    subscription_catches_up_then_follows,
    awkward_payloads_round_trip_and_verify,
    get_and_find_by_event_id,
    read_pages_in_order,
    ledger_refuses_what_the_graph_cannot_accept,
);

/// A started attempt whose stream (`attempt:attempt-race`) holds 2 events.
async fn with_live_attempt() -> (Harness, Arc<dyn EventStore>) {
    let h = Harness::start().await;
    let store: Arc<dyn EventStore> = Arc::new(h.client().event_store());
    let mut s = Scenario::new("race", "demo");
    s.register_target()
        .create_task("t1", &[], Priority::High)
        .start_attempt("t1", "attempt-race", 1);
    store.append(AppendRequest::new(s.build())).await.unwrap();
    (h, store)
}

fn heartbeat(id: &str) -> leviathan_core::NewEvent {
    let mut event = note(id, 0);
    event.event_type = "attempt.heartbeat".into();
    event.payload = serde_json::json!({"attempt_id": "attempt-race"});
    event
}

#[tokio::test]
async fn stream_expectations_map_to_wrong_expected_version() {
    let (_h, store) = with_live_attempt().await;
    let stream = StreamId::from_raw("attempt:attempt-race");
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
    let req = |id: &str, v| AppendRequest::new(vec![heartbeat(id)]).expect(stream.clone(), v);
    let err = store
        .append(req("h1", ExpectedVersion::NoStream))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EventStoreError::WrongExpectedVersion {
                actual: 2,
                expected: ExpectedVersion::NoStream,
                ..
            }
        ),
        "{err}"
    );
    store
        .append(req("h1", ExpectedVersion::Exact(2)))
        .await
        .unwrap();
    let err = store
        .append(req("h2", ExpectedVersion::Exact(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::WrongExpectedVersion { actual: 3, .. }),
        "{err}"
    );
    let receipt = store.append(req("h2", ExpectedVersion::Any)).await.unwrap();
    assert_eq!(receipt.appended.len(), 1);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_exact_expectations_admit_one() {
    let (_h, store) = with_live_attempt().await;
    let stream = StreamId::from_raw("attempt:attempt-race");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(
                    AppendRequest::new(vec![heartbeat(&format!("race-{i}"))])
                        .expect(stream, ExpectedVersion::Exact(2)),
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
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    let report = store.verify().await.unwrap().unwrap();
    assert_eq!(report.head, store.head().await.unwrap());
}

#[tokio::test]
async fn graph_refusals_are_invalid_batches() {
    let h = Harness::start().await;
    let store = h.client().event_store();
    let err = store
        .append(AppendRequest::new(vec![heartbeat("orphan")]))
        .await
        .unwrap_err();
    match err {
        EventStoreError::Invalid { rejections } => {
            assert_eq!(rejections[0].field, "attempt_id");
        }
        other => panic!("expected Invalid, got {other}"),
    }
    assert_eq!(store.head().await.unwrap(), None);
    // Appending nothing reports the head.
    let empty = store.append(AppendRequest::new(Vec::new())).await.unwrap();
    assert!(empty.appended.is_empty() && empty.head.is_none());
}
