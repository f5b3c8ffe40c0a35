//! What only a durable, embedded backend must do: keep everything across reopen, own its
//! directory exclusively, survive what it acknowledged, and report damage it finds on disk.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use leviathan_core::{
    AppendRequest, ChainFault, Event, EventId, EventStore, EventStoreError, Graph, GraphStoreError,
    Head, Ledger, NewEvent, Sha256Digest, StreamId, Timestamp,
    graph::{Anomaly, AttemptNode, AttemptQuery, GraphDelta, StoredGraph},
    ledger::{Expectations, PersistPolicy},
    model::AttemptStatus,
    testkit::lifecycle,
    tlog::{self, Frontier},
};
use leviathan_store_sled::{Durability, SledOptions, SledStore};
use serde_json::json;
use tempfile::TempDir;

fn note(id: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(id).unwrap(),
        event_type: "note.added".into(),
        timestamp: Timestamp::from_unix_micros(1_769_601_600_000_000 + n as i64).unwrap(),
        actor_id: Some("sled-test".into()),
        payload: json!({ "n": n }),
        principal: None,
    }
}

async fn read_all(events: &dyn EventStore) -> Vec<Event> {
    let mut all = Vec::new();
    loop {
        let page = events.read(all.len() as u64, 1000).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_events_streams_graph_and_artifacts() {
    let dir = TempDir::new().unwrap();
    let events = lifecycle("ro", "demo", 6);
    let (log, graph, versions, artifact) = {
        let store = SledStore::open(dir.path()).unwrap();
        let ledger = Ledger::open_with(
            store.events(),
            store.graphs(),
            PersistPolicy { every_events: 5 },
        )
        .await
        .unwrap();
        for chunk in events.chunks(7) {
            ledger
                .ingest(chunk.to_vec(), Expectations::Derived)
                .await
                .unwrap();
        }
        ledger.flush().await.unwrap();
        let graph = ledger.graph().await.clone();
        let log = read_all(&*store.events()).await;
        let mut versions = BTreeMap::new();
        for stream in graph.snapshot().streams.iter().map(|(s, _)| s.clone()) {
            let version = store.events().stream_version(&stream).await.unwrap();
            assert!(version > 0, "stream {stream} has events");
            versions.insert(stream, version);
        }
        let artifact = store
            .artifacts()
            .put(Bytes::from_static(b"kept across reopen"))
            .await
            .unwrap();
        (log, graph, versions, artifact)
    };
    assert_eq!(log.len(), events.len());
    assert!(!versions.is_empty());

    // Several clean close/open cycles: the lock is released as soon as the last handle is gone.
    let mut log = log;
    for cycle in 0..5u64 {
        let store = SledStore::open(dir.path()).unwrap();
        let reopened = store.events();
        let back = read_all(&*reopened).await;
        assert_eq!(back.len(), log.len(), "cycle {cycle}");
        assert!(back == log, "cycle {cycle}: the log changed across reopen");
        assert_eq!(reopened.head().await.unwrap(), log.last().map(Event::head));
        let report = reopened.verify().await.unwrap().unwrap();
        assert_eq!(report.events, log.len() as u64);
        for (stream, version) in &versions {
            assert_eq!(reopened.stream_version(stream).await.unwrap(), *version);
        }
        let stored_graph = Graph::from_snapshot(store.graphs().load().await.unwrap());
        assert!(stored_graph == graph, "cycle {cycle}: the graph changed");
        assert_eq!(
            store.graphs().checkpoint().await.unwrap(),
            graph.checkpoint()
        );
        assert_eq!(
            store.artifacts().get(&artifact.sha256).await.unwrap(),
            Bytes::from_static(b"kept across reopen")
        );
        // The reopened writer continues the chain from the stored tail.
        let receipt = reopened
            .append(AppendRequest::new(vec![note(
                &format!("after-{cycle}"),
                cycle,
            )]))
            .await
            .unwrap();
        let appended = receipt.appended.into_iter().next().unwrap();
        assert_eq!(appended.seq, log.len() as u64 + 1);
        assert_eq!(appended.prev_hash, log.last().map(|e| e.hash));
        log.push(appended);
    }
    // A resumed ledger starts from the stored checkpoint and folds what came after it.
    let store = SledStore::open(dir.path()).unwrap();
    let ledger = Ledger::open(store.events(), store.graphs()).await.unwrap();
    assert_eq!(ledger.graph().await.checkpoint_seq(), log.len() as u64);
}

/// Also proves that opening needs no async runtime.
#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let dir = TempDir::new().unwrap();
    let first = SledStore::open(dir.path()).unwrap();
    // The second opens run on another thread so that a hang fails the test instead of stalling it.
    let path = dir.path().to_path_buf();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let same = SledStore::open(&path).map(drop);
        // Through another spelling of the same directory, too.
        let other_spelling = SledStore::open_with(path.join("."), SledOptions::default()).map(drop);
        let _ = done.send((same, other_spelling));
    });
    let (same, other_spelling) = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("a second open refuses at once instead of waiting for the lock");
    match same {
        Err(EventStoreError::Locked { location }) => {
            assert!(
                location.contains(&*dir.path().to_string_lossy()),
                "{location}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(
        matches!(other_spelling, Err(EventStoreError::Locked { .. })),
        "{other_spelling:?}"
    );
    drop(first);
    SledStore::open(dir.path()).expect("the lock is released with the last handle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let receipts = {
        let store = SledStore::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let events = store.events();
            tasks.push(tokio::spawn(async move {
                let mut receipts = Vec::new();
                for i in 0..25u64 {
                    let batch = (0..(i % 4 + 1))
                        .map(|j| note(&format!("w{w}-{i}-{j}"), i))
                        .collect();
                    receipts.push(events.append(AppendRequest::new(batch)).await.unwrap());
                }
                receipts
            }));
        }
        let mut receipts = Vec::new();
        for task in tasks {
            receipts.extend(task.await.unwrap());
        }
        receipts
    };
    let store = SledStore::open(dir.path()).unwrap();
    let log = read_all(&*store.events()).await;
    let acknowledged: Vec<&Event> = receipts.iter().flat_map(|r| &r.appended).collect();
    assert_eq!(log.len(), acknowledged.len());
    for event in acknowledged {
        assert_eq!(&log[(event.seq - 1) as usize], event, "seq {}", event.seq);
    }
    assert_eq!(
        store.events().verify().await.unwrap().unwrap().events,
        log.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_durability_appends_reads_follows_and_closes_cleanly() {
    let dir = TempDir::new().unwrap();
    let options = SledOptions {
        durability: Durability::Periodic {
            every: Duration::from_millis(20),
        },
        ..SledOptions::default()
    };
    let stream = StreamId::from_raw("attempt:p1");
    {
        let store = SledStore::open_with(dir.path(), options.clone()).unwrap();
        let events = store.events();
        let mut sub = events.subscribe(0).await.unwrap();
        for i in 0..30u64 {
            let mut heartbeat = note(&format!("p{i}"), i);
            heartbeat.event_type = "attempt.heartbeat".into();
            heartbeat.payload = json!({ "attempt_id": "p1" });
            let receipt = events
                .append(
                    AppendRequest::new(vec![heartbeat, note(&format!("q{i}"), i)])
                        .expect(stream.clone(), leviathan_core::ExpectedVersion::at(i)),
                )
                .await
                .unwrap();
            // Acknowledged means readable at once, without waiting for a flush.
            assert_eq!(events.head().await.unwrap(), receipt.head);
        }
        for seq in 1..=60 {
            let event = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .expect("the subscription delivers")
                .expect("open")
                .expect("no error");
            assert_eq!(event.seq, seq);
        }
        assert_eq!(events.stream_version(&stream).await.unwrap(), 30);
    }
    // Dropping the last handle flushed everything.
    let store = SledStore::open_with(dir.path(), options).unwrap();
    let log = read_all(&*store.events()).await;
    assert_eq!(log.len(), 60);
    assert_eq!(store.events().stream_version(&stream).await.unwrap(), 30);
    assert_eq!(store.events().verify().await.unwrap().unwrap().events, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_payload_round_trips_across_reopen() {
    let dir = TempDir::new().unwrap();
    let text: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut big = note("big", 1);
    big.payload = json!({ "text": text, "snowman": "☃", "max": u64::MAX });
    let appended = {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .events()
            .append(AppendRequest::new(vec![big.clone(), note("small", 2)]))
            .await
            .unwrap()
            .appended
    };
    let store = SledStore::open(dir.path()).unwrap();
    let back = read_all(&*store.events()).await;
    assert_eq!(back, appended);
    assert!(big.same_content(&back[0]));
    assert_eq!(store.events().verify().await.unwrap().unwrap().events, 2);
}

/// Edits the raw sled database of a closed store (the test plays a failing disk).
fn edit_raw<T>(dir: &TempDir, edit: impl FnOnce(&sled::Db) -> T) -> T {
    let db = sled::open(dir.path()).unwrap();
    let out = edit(&db);
    db.flush().unwrap();
    out
}

/// Opens the store after [`edit_raw`]. A bare sled handle, unlike a `SledStore`, does not wait
/// for sled's pool threads to close the data file when dropped, so this polls (bounded) while
/// the directory is still locked.
fn open_after_raw_edit(dir: &TempDir) -> Result<SledStore, EventStoreError> {
    let started = std::time::Instant::now();
    loop {
        match SledStore::open(dir.path()) {
            Err(EventStoreError::Locked { .. }) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

async fn store_with_notes(dir: &TempDir, n: u64) -> Vec<Event> {
    let store = SledStore::open(dir.path()).unwrap();
    let batch = (1..=n).map(|i| note(&format!("n{i}"), i)).collect();
    store
        .events()
        .append(AppendRequest::new(batch))
        .await
        .unwrap()
        .appended
}

/// The save numbers of the projection deltas stored in the raw database.
fn stored_delta_numbers(db: &sled::Db) -> BTreeSet<u64> {
    db.open_tree("graph.deltas")
        .unwrap()
        .iter()
        .keys()
        .map(|key| u64::from_be_bytes(key.unwrap()[..8].try_into().unwrap()))
        .collect()
}

/// A ledger on a fresh store that ingested and saved `tasks` tasks of a lifecycle; its graph.
async fn saved_projection(dir: &TempDir, tasks: usize) -> Graph {
    let store = SledStore::open(dir.path()).unwrap();
    let ledger = Ledger::open(store.events(), store.graphs()).await.unwrap();
    let events = lifecycle("cut", "demo", tasks);
    ledger.ingest(events, Expectations::Derived).await.unwrap();
    ledger.flush().await.unwrap();
    let graph = ledger.graph().await.clone();
    assert!(Graph::from_snapshot(store.graphs().load().await.unwrap()) == graph);
    graph
}

/// A save writes its delta, then seals it; what a save cut short (the process died, the disk
/// failed) had written is never loaded, and the next save removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_cut_short_is_ignored_and_removed_by_the_next_one() {
    let dir = TempDir::new().unwrap();
    let graph = saved_projection(&dir, 4).await;
    // What a later, larger save had written when it stopped: two chunks of the next delta.
    let sealed = edit_raw(&dir, |db| {
        let sealed = *stored_delta_numbers(db).last().unwrap();
        let deltas = db.open_tree("graph.deltas").unwrap();
        for chunk in [0u32, 5] {
            let mut key = (sealed + 1).to_be_bytes().to_vec();
            key.extend_from_slice(&chunk.to_be_bytes());
            deltas.insert(key, &b"{\"nodes\": [{\"half"[..]).unwrap();
        }
        sealed
    });
    let store = open_after_raw_edit(&dir).unwrap();
    assert!(Graph::from_snapshot(store.graphs().load().await.unwrap()) == graph);

    let ledger = Ledger::open(store.events(), store.graphs()).await.unwrap();
    let more = (1..=3).map(|n| note(&format!("more-{n}"), n)).collect();
    ledger.ingest(more, Expectations::Derived).await.unwrap();
    ledger.flush().await.unwrap();
    let graph = ledger.graph().await.clone();
    assert!(Graph::from_snapshot(store.graphs().load().await.unwrap()) == graph);
    drop((ledger, store));
    let numbers = edit_raw(&dir, stored_delta_numbers);
    assert_eq!(numbers, BTreeSet::from([sealed, sealed + 1]));
}

/// A sealed delta that lost a chunk is reported as corruption, not loaded as a smaller graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_delta_missing_a_chunk_is_corruption() {
    let dir = TempDir::new().unwrap();
    // Enough tasks for a delta of several chunks.
    saved_projection(&dir, 120).await;
    edit_raw(&dir, |db| {
        let deltas = db.open_tree("graph.deltas").unwrap();
        assert!(deltas.len() > 2, "the delta spans several chunks");
        let (second, _) = deltas.iter().nth(1).unwrap().unwrap();
        deltas.remove(second).unwrap();
    });
    let store = open_after_raw_edit(&dir).unwrap();
    match store.graphs().load().await {
        Err(GraphStoreError::Corrupt { reason }) => {
            assert!(reason.contains("incomplete"), "{reason}")
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Deltas accumulate until they outweigh the base, then are merged into a new base: the number of
/// stored deltas stays bounded and the merged projection loads the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_are_merged_into_a_new_base_when_they_outweigh_it() {
    let dir = TempDir::new().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let graphs = store.graphs();
    // Each delta: 100 anomalies of 10 KiB (1 MB of JSON), the later ones replacing a tenth.
    let delta = |round: u64| GraphDelta {
        anomalies: (0..100)
            .map(|i| Anomaly {
                seq: if i < 10 { i + 1 } else { round * 1000 + i },
                event_type: "note.added".into(),
                reason: format!("round {round}: ").repeat(1024),
            })
            .collect(),
        checkpoint: Some(Head {
            seq: round * 1000 + 999,
            hash: Sha256Digest::of(&round.to_be_bytes()),
        }),
        ..GraphDelta::default()
    };
    let mut expected = StoredGraph::default();
    let mut previous = 0;
    let mut kept = Vec::new();
    for round in 1..=8 {
        let delta = delta(round);
        graphs.save(previous, &delta).await.unwrap();
        previous = delta.checkpoint.unwrap().seq;
        expected.merge(delta);
        let loaded = graphs.load().await.unwrap();
        assert_eq!(loaded, expected.clone().into_snapshot(), "round {round}");
        kept.push(loaded.anomalies.len());
    }
    // 10 anomalies replaced in every round: 100 + 90 per later round.
    assert_eq!(kept, (0..8).map(|r| 100 + 90 * r).collect::<Vec<_>>());
    drop((graphs, store));
    // Base 1 (1 MB) and deltas 2..=6 (5 MB > 4 MB): merged as 7; then 8 and 9 after it.
    let numbers = edit_raw(&dir, stored_delta_numbers);
    assert_eq!(numbers, BTreeSet::from([7, 8, 9]));
    let store = open_after_raw_edit(&dir).unwrap();
    let whole = store.graphs().load().await.unwrap();
    assert_eq!(whole, expected.into_snapshot());

    // A delta from seq 0 holds the whole graph: it replaces every delta before it.
    let whole_delta = GraphDelta::from(whole.clone());
    store.graphs().save(0, &whole_delta).await.unwrap();
    assert_eq!(store.graphs().load().await.unwrap(), whole);
    drop(store);
    assert_eq!(edit_raw(&dir, stored_delta_numbers), BTreeSet::from([10]));
}

/// A database of the first layout keeps its events; its stored projection (a tree per kind) is
/// dropped and the ledger rebuilds it from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_first_layout_is_upgraded() {
    let dir = TempDir::new().unwrap();
    let events = lifecycle("up", "demo", 3);
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .events()
            .append(AppendRequest::new(events.clone()))
            .await
            .unwrap();
    }
    edit_raw(&dir, |db| {
        db.open_tree("meta")
            .unwrap()
            .insert("format", "leviathan-store-sled/1")
            .unwrap();
        db.open_tree("graph.nodes")
            .unwrap()
            .insert("target:demo", "{\"old\": \"layout\"}")
            .unwrap();
        let meta = db.open_tree("graph.meta").unwrap();
        meta.insert("checkpoint", &[0u8; 40][..]).unwrap();
        meta.insert("saving", &7u64.to_be_bytes()[..]).unwrap();
        db.drop_tree("tree.tiles").unwrap();
    });
    let store = open_after_raw_edit(&dir).unwrap();
    assert_eq!(store.graphs().checkpoint().await.unwrap(), None);
    assert_tree_matches_the_log(&store).await;
    let ledger = Ledger::open(store.events(), store.graphs()).await.unwrap();
    let mut expected = Graph::new();
    for event in read_all(&*store.events()).await {
        expected.apply(&event);
    }
    assert_eq!(expected.checkpoint_seq(), events.len() as u64);
    assert!(*ledger.graph().await == expected);
    drop((ledger, store));
    edit_raw(&dir, |db| {
        let names: Vec<_> = db.tree_names();
        assert!(!names.iter().any(|n| &n[..] == b"graph.nodes"), "{names:?}");
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get("format").unwrap().as_deref(),
            Some(&b"leviathan-store-sled/3"[..])
        );
        assert_eq!(
            db.open_tree("graph.meta").unwrap().get("saving").unwrap(),
            None
        );
    });
}

/// The tree's root and a proof of every tile boundary agree with the log's hashes.
async fn assert_tree_matches_the_log(store: &SledStore) {
    let hashes: Vec<_> = read_all(&*store.events())
        .await
        .iter()
        .map(|e| e.hash)
        .collect();
    let size = hashes.len() as u64;
    assert_eq!(store.tree().tree_size().await.unwrap(), size);
    let mut frontier = Frontier::new();
    frontier.extend(&hashes);
    assert_eq!(
        tlog::root(&*store.tree(), size).await.unwrap(),
        frontier.root()
    );
    for index in [0, size / 2, size - 1] {
        let proof = tlog::inclusion_proof(&*store.tree(), index, size)
            .await
            .unwrap();
        proof
            .verify(&hashes[index as usize], &frontier.root())
            .unwrap();
    }
}

/// A database written before the log had a Merkle tree gets its tree built from the stored
/// hashes when opened, and appends extend it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_a_tree_gets_one_built() {
    let dir = TempDir::new().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .events()
            .append(AppendRequest::new(lifecycle("tr", "demo", 40)))
            .await
            .unwrap();
    }
    edit_raw(&dir, |db| {
        db.open_tree("meta")
            .unwrap()
            .insert("format", "leviathan-store-sled/2")
            .unwrap();
        db.drop_tree("tree.tiles").unwrap();
    });
    let store = open_after_raw_edit(&dir).unwrap();
    assert!(
        store.tree().tree_size().await.unwrap() > 256,
        "past a tile of tiles"
    );
    assert_tree_matches_the_log(&store).await;
    store
        .events()
        .append(AppendRequest::new(lifecycle("more", "demo", 2)))
        .await
        .unwrap();
    assert_tree_matches_the_log(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_fails_verification_and_reads_at_its_seq() {
    let dir = TempDir::new().unwrap();
    store_with_notes(&dir, 5).await;
    edit_raw(&dir, |db| {
        let events = db.open_tree("events").unwrap();
        let key = 3u64.to_be_bytes();
        let mut record = events.get(key).unwrap().unwrap().to_vec();
        // Change the payload digit `3` (`"n":3`) to `4`: still valid JSON, wrong hash.
        let at = record
            .windows(5)
            .rposition(|w| w == b"\"n\":3")
            .expect("the payload in the record")
            + 4;
        record[at] = b'4';
        events.insert(key, record).unwrap();
    });
    let store = open_after_raw_edit(&dir).unwrap();
    let broken = store.events().verify().await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 3);
    assert!(
        matches!(broken.fault, ChainFault::HashMismatch { .. }),
        "{broken}"
    );

    // Bytes that no longer decode are reported as corruption at their seq, not returned.
    drop(store);
    edit_raw(&dir, |db| {
        let events = db.open_tree("events").unwrap();
        let key = 2u64.to_be_bytes();
        let mut record = events.get(key).unwrap().unwrap().to_vec();
        record.truncate(40);
        events.insert(key, record).unwrap();
    });
    let store = open_after_raw_edit(&dir).unwrap();
    match store.events().read(0, 10).await {
        Err(EventStoreError::Corrupt { seq: Some(2), .. }) => {}
        other => panic!("expected corruption at seq 2, got {other:?}"),
    }
    assert_eq!(store.events().verify().await.unwrap().unwrap_err().seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_that_disagrees_with_the_log_refuses_to_open() {
    let dir = TempDir::new().unwrap();
    store_with_notes(&dir, 3).await;
    edit_raw(&dir, |db| {
        db.open_tree("events")
            .unwrap()
            .remove(3u64.to_be_bytes())
            .unwrap();
    });
    match open_after_raw_edit(&dir) {
        Err(EventStoreError::Corrupt { reason, .. }) => {
            assert!(reason.contains("tail"), "{reason}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_database_of_another_format_is_refused() {
    let dir = TempDir::new().unwrap();
    edit_raw(&dir, |db| {
        db.open_tree("meta")
            .unwrap()
            .insert("format", "leviathan-store-sled/999")
            .unwrap();
    });
    match open_after_raw_edit(&dir) {
        Err(EventStoreError::Backend { reason, .. }) => {
            assert!(reason.contains("leviathan-store-sled/999"), "{reason}")
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_artifact_is_repaired_by_putting_it_again() {
    let dir = TempDir::new().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let artifacts = store.artifacts();
    let content = Bytes::from_static(b"test output worth keeping");
    let stored = artifacts.put(content.clone()).await.unwrap();
    let path = store.artifact_path(&stored.sha256);
    assert!(path.starts_with(dir.path().join("artifacts")));
    std::fs::write(&path, b"truncated").unwrap();
    assert!(artifacts.get(&stored.sha256).await.is_err());
    let again = artifacts.put(content.clone()).await.unwrap();
    assert!(again.created, "a damaged copy does not count as stored");
    assert_eq!(artifacts.get(&stored.sha256).await.unwrap(), content);
    // Nothing is left in the temporary directory.
    assert_eq!(
        std::fs::read_dir(dir.path().join("artifacts/.tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_keeps_the_store_open() {
    let dir = TempDir::new().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let events: Arc<dyn EventStore> = store.events();
    events
        .append(AppendRequest::new(vec![note("s1", 1)]))
        .await
        .unwrap();
    let mut sub = events.subscribe(0).await.unwrap();
    drop(store);
    drop(events);
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first.seq, 1);
    // The subscription holds the database: it cannot be opened twice meanwhile.
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(EventStoreError::Locked { .. })
    ));
    drop(sub);
    SledStore::open(dir.path()).expect("closed once the subscription is dropped");
}

/// A database written before the history trees (no `history` marker, empty trees) gets them
/// filled from its deltas at its first load, so the history queries answer as the graph does;
/// a save cut short leaves a stale index key behind, which no query answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_the_history_trees_gets_them_at_its_first_load() {
    let dir = TempDir::new().unwrap();
    let graph = saved_projection(&dir, 3).await;
    edit_raw(&dir, |db| {
        for tree in [
            "graph.history",
            "graph.history_edges",
            "graph.attempt_index",
        ] {
            db.drop_tree(tree).unwrap();
        }
        db.open_tree("graph.meta")
            .unwrap()
            .remove("history")
            .unwrap();
    });
    let store = open_after_raw_edit(&dir).unwrap();
    let all = AttemptQuery {
        limit: 100,
        ..AttemptQuery::default()
    };
    assert!(
        store
            .graphs()
            .attempts(&all)
            .await
            .unwrap()
            .attempts
            .is_empty()
    );
    store.graphs().load().await.unwrap();
    let ids = |attempts: Vec<AttemptNode>| -> Vec<String> {
        attempts.iter().map(|a| a.attempt_id.to_string()).collect()
    };
    let (expected, _) = graph.attempts_page(&all);
    let expected: Vec<String> = expected.iter().map(|a| a.attempt_id.to_string()).collect();
    assert_eq!(expected.len(), 6);
    assert_eq!(
        ids(store.graphs().attempts(&all).await.unwrap().attempts),
        expected
    );
    drop(store);

    // An index key of a status the attempt has left (a save cut short before it removed it).
    let succeeded = graph
        .attempts_page(&AttemptQuery {
            status: Some(AttemptStatus::Succeeded),
            ..all.clone()
        })
        .0[0]
        .clone();
    edit_raw(&dir, |db| {
        let mut key = b"s".to_vec();
        key.extend_from_slice(b"running\0");
        key.extend_from_slice(&succeeded.meta.created_seq.to_be_bytes());
        db.open_tree("graph.attempt_index")
            .unwrap()
            .insert(key, succeeded.attempt_id.as_str())
            .unwrap();
    });
    let store = open_after_raw_edit(&dir).unwrap();
    let running = AttemptQuery {
        status: Some(AttemptStatus::Running),
        ..all
    };
    assert!(
        store
            .graphs()
            .attempts(&running)
            .await
            .unwrap()
            .attempts
            .is_empty()
    );
}
