//! PostgreSQL-specific behaviour: migrations under concurrency, the append-only trigger, one chain
//! across processes, the writer lock, LISTEN reconnection, lost connections, tampering, errors.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use leviathan_core::tlog::{self, Frontier};
use leviathan_core::{
    AppendRequest, ChainFault, EventId, EventStore, EventStoreError, ExpectedVersion, Ledger,
    NewEvent, StreamId, Timestamp,
    graph::{AttemptQuery, FailureQuery},
    ledger::Expectations,
    model::AttemptStatus,
    testkit::lifecycle,
};
use leviathan_store_pg::{
    BuildProgress, PgOptions, PgStore, WRITER_LOCK_KEY, testkit::TestDatabase,
};
use serde_json::json;
use sqlx::PgPool;

fn note(id: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(id).unwrap(),
        event_type: "note.added".into(),
        timestamp: Timestamp::from_unix_micros(1_769_601_600_000_000 + n as i64).unwrap(),
        actor_id: Some("pg-test".into()),
        payload: json!({ "n": n }),
        principal: None,
    }
}

fn heartbeat(id: &str, attempt: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::new(id).unwrap(),
        event_type: "attempt.heartbeat".into(),
        timestamp: Timestamp::parse("2026-02-03T04:05:06.000007Z").unwrap(),
        actor_id: None,
        payload: json!({ "attempt_id": attempt }),
        principal: None,
    }
}

/// Polls `condition` every 20 ms for up to 30 s (for effects of other processes and tasks).
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Backend pids of the store's connections with this application name.
async fn backends(pool: &PgPool, application: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = $1 ORDER BY pid",
    )
    .bind(application)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn terminate(pool: &PgPool, pids: &[i32]) {
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(pids)
        .execute(pool)
        .await
        .unwrap();
}

async fn verified_count(events: &dyn EventStore) -> u64 {
    events
        .verify()
        .await
        .expect("verify ran")
        .expect("the chain verifies")
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_processes_start_together() {
    let db = TestDatabase::create().await;
    let (a, b, c) = tokio::join!(
        PgStore::connect(db.url()),
        PgStore::connect(db.url()),
        PgStore::connect(db.url())
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    // And again on an up-to-date database.
    let d = PgStore::connect(db.url()).await.unwrap();
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(d.pool())
            .await
            .unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("the migrations directory")
        .count();
    assert_eq!(applied.len(), migrations, "each applied once: {applied:?}");
    assert!(applied.iter().all(|(_, success)| *success), "{applied:?}");
    for store in [&a, &b, &c, &d] {
        assert_eq!(store.events().head().await.unwrap(), None);
    }
    a.events()
        .append(AppendRequest::new(vec![note("m1", 1)]))
        .await
        .unwrap();
    assert_eq!(d.events().head().await.unwrap().unwrap().seq, 1);
}

#[tokio::test]
async fn events_are_append_only() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    store
        .events()
        .append(AppendRequest::new(vec![note("a1", 1), note("a2", 2)]))
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET event_type = 'forged.event' WHERE seq = 2",
        "DELETE FROM events WHERE seq = 1",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
        let db_err = err.as_database_error().expect("a database error");
        assert_eq!(db_err.code().as_deref(), Some("23001"), "{sql}: {db_err}");
        assert!(
            db_err.message().contains("events is append-only"),
            "{sql}: {}",
            db_err.message()
        );
        let verb = sql.split_whitespace().next().unwrap();
        assert!(
            db_err.message().contains(verb),
            "{sql}: {}",
            db_err.message()
        );
    }
    assert_eq!(verified_count(&*store.events()).await, 2);
}

/// Two independent stores (as two processes would) with 4 writers each: one linear chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_form_one_chain() {
    let db = TestDatabase::create().await;
    let stores = [db.store().await, db.store().await];
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for w in 0..4 {
            let events = store.events();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while i < 150 {
                    // Batches of 1 to 3 events.
                    let size = 1 + (i % 3);
                    let batch = (i..(i + size).min(150))
                        .map(|n| note(&format!("s{s}-w{w}-{n}"), n))
                        .collect::<Vec<_>>();
                    i += batch.len() as u64;
                    events.append(AppendRequest::new(batch)).await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = 2 * 4 * 150;
    for store in &stores {
        assert_eq!(verified_count(&*store.events()).await, total);
        assert_eq!(store.events().head().await.unwrap().unwrap().seq, total);
    }
    let all = stores[0].events().read(0, 10_000).await.unwrap();
    let ids: BTreeSet<_> = all.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len() as u64, total, "no event lost or doubled");
    // Both writers extended one tree, each reading the other's edge when it had moved on.
    for store in &stores {
        assert_tree_matches_the_log(store).await;
    }
    for s in 0..2 {
        for w in 0..4 {
            let prefix = format!("s{s}-w{w}-");
            let mine: Vec<u64> = all
                .iter()
                .filter(|e| e.event_id.as_str().starts_with(&prefix))
                .map(|e| e.payload["n"].as_u64().unwrap())
                .collect();
            assert_eq!(
                mine,
                (0..150).collect::<Vec<_>>(),
                "{prefix} kept its order"
            );
        }
    }
}

/// The tree's root and proofs at tile boundaries agree with the log's hashes.
async fn assert_tree_matches_the_log(store: &PgStore) {
    let hashes: Vec<_> = store
        .events()
        .read(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.hash)
        .collect();
    let size = hashes.len() as u64;
    let tree = store.tree();
    eventually("the tree sees the whole log", || {
        let tree = tree.clone();
        async move { tree.tree_size().await.unwrap() == size }
    })
    .await;
    let mut frontier = Frontier::new();
    frontier.extend(&hashes);
    assert_eq!(tlog::root(&*tree, size).await.unwrap(), frontier.root());
    for index in [0, 255, 256, size / 2, size - 1] {
        let proof = tlog::inclusion_proof(&*tree, index, size).await.unwrap();
        proof
            .verify(&hashes[index as usize], &frontier.root())
            .unwrap();
    }
}

/// A log stored before the tree existed gets its tree built at the next connect, under the
/// writer lock, reporting progress; appends then extend it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_without_a_tree_gets_one_built_at_connect() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let batch = (0..700).map(|n| note(&format!("old-{n}"), n)).collect();
    store
        .events()
        .append(AppendRequest::new(batch))
        .await
        .unwrap();
    sqlx::raw_sql("DELETE FROM log_tiles; UPDATE log_tree SET built = false")
        .execute(store.pool())
        .await
        .unwrap();
    drop(store);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = {
        let seen = seen.clone();
        BuildProgress(Arc::new(move |done, total| {
            seen.lock().unwrap().push((done, total));
        }))
    };
    let options = PgOptions {
        tree_build_progress: Some(progress),
        ..PgOptions::default()
    };
    let store = PgStore::connect_with(db.url(), options).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(700, 700)]);
    assert_tree_matches_the_log(&store).await;
    let more = (700..720).map(|n| note(&format!("new-{n}"), n)).collect();
    store
        .events()
        .append(AppendRequest::new(more))
        .await
        .unwrap();
    assert_tree_matches_the_log(&store).await;
}

/// How many of the stores' writer connections wait for the writer lock.
async fn writers_waiting_for_the_lock(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND NOT l.granted \
         AND a.application_name = 'leviathan-writer'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The writer waits for the advisory lock whoever holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_the_writer_lock() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITER_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    let events = store.events();
    let append = tokio::spawn(async move {
        events
            .append(AppendRequest::new(vec![note("locked-out", 1)]))
            .await
    });
    let pool = store.pool().clone();
    eventually("the writer waits for the advisory lock", || {
        let pool = pool.clone();
        async move { writers_waiting_for_the_lock(&pool).await == 1 }
    })
    .await;
    assert!(!append.is_finished());
    assert_eq!(store.events().head().await.unwrap(), None);
    holder.commit().await.unwrap();
    let receipt = append.await.unwrap().unwrap();
    assert_eq!(receipt.appended[0].seq, 1);
}

/// Two stores read the same head, then both wait for the writer lock: the one that gets it
/// second finds the head moved, writes nothing with its stale sequencing, and appends again
/// under the lock after the first, so the chain stays linear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_overtaken_after_its_read_appends_after_the_other() {
    let db = TestDatabase::create().await;
    let stores = [db.store().await, db.store().await];
    let mut holder = stores[0].pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITER_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    let appends: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(s, store)| {
            let events = store.events();
            tokio::spawn(async move {
                events
                    .append(AppendRequest::new(vec![note(&format!("racer-{s}"), 1)]))
                    .await
            })
        })
        .collect();
    let pool = stores[0].pool().clone();
    eventually("both writers wait for the lock", || {
        let pool = pool.clone();
        async move { writers_waiting_for_the_lock(&pool).await == 2 }
    })
    .await;
    holder.commit().await.unwrap();
    let mut seqs = Vec::new();
    for append in appends {
        let receipt = append.await.unwrap().expect("both appends land");
        seqs.push(receipt.appended[0].seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(verified_count(&*stores[1].events()).await, 2);
}

/// A writer that knows the head writes its next group without reading first; what it assumed
/// (nobody appended since, none of the ids is stored, each stream at the version it knows) is
/// checked by the write itself, and when any of it is wrong the group is read and written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_writing_without_a_read_checks_what_it_assumed() {
    let db = TestDatabase::create().await;
    let (a, b) = (db.store().await, db.store().await);
    let (a, b) = (a.events(), b.events());
    let stream = StreamId::from_raw("attempt:a1");

    // B gives the stream a version A has never seen; A then learns the head, not the stream.
    b.append(AppendRequest::new(vec![heartbeat("hb-1", "a1")]))
        .await
        .unwrap();
    a.append(AppendRequest::new(vec![note("n-1", 1)]))
        .await
        .unwrap();
    let receipt = a
        .append(AppendRequest::new(vec![heartbeat("hb-2", "a1")]))
        .await
        .unwrap();
    assert_eq!(receipt.appended[0].seq, 3);
    assert_eq!(a.stream_version(&stream).await.unwrap(), 2);
    a.append(
        AppendRequest::new(vec![heartbeat("hb-3", "a1")])
            .expect(stream.clone(), ExpectedVersion::Exact(2)),
    )
    .await
    .expect("A knows the stream's version now");

    // A retried batch: its id is stored, so it is a duplicate, not a second copy.
    let retried = a
        .append(AppendRequest::new(vec![heartbeat("hb-3", "a1")]))
        .await
        .unwrap();
    assert!(retried.appended.is_empty());
    assert_eq!(retried.duplicates, [EventId::new("hb-3").unwrap()]);

    // B appends behind A's back: A's next group finds the head moved and lands after B's.
    b.append(AppendRequest::new(vec![note("n-2", 2)]))
        .await
        .unwrap();
    let receipt = a
        .append(AppendRequest::new(vec![note("n-3", 3)]))
        .await
        .unwrap();
    assert_eq!(receipt.appended[0].seq, 6);
    assert_eq!(a.stream_version(&stream).await.unwrap(), 3);
    assert_eq!(verified_count(&*b).await, 6);
}

/// A subscriber whose LISTEN connection is killed still gets every event, in order, from a
/// writer in another store (so only NOTIFY and the reconnection can wake it). The writer appends
/// in lockstep with the subscriber, so the subscriber is waiting for a wake-up at each append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_survives_a_terminated_listener() {
    let db = TestDatabase::create().await;
    let (reader, writer) = (db.store().await, db.store().await);
    let batch_size = |i: u64| (i % 3) + 1;
    let total = 5 + (0..20).map(batch_size).sum::<u64>();
    for i in 0..5 {
        writer
            .events()
            .append(AppendRequest::new(vec![note(&format!("before-{i}"), i)]))
            .await
            .unwrap();
    }
    let mut sub = reader.events().subscribe(0).await.unwrap();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let subscriber = tokio::spawn(async move {
        for expected in 1..=total {
            let event = sub
                .next()
                .await
                .expect("the subscription stays open")
                .expect("no error");
            assert_eq!(event.seq, expected, "in order, without gaps");
            progress_tx.send_replace(expected);
        }
    });
    let mut delivered = async |seq: u64| {
        tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|s| *s >= seq))
            .await
            .unwrap_or_else(|_| panic!("seq {seq} was never delivered"))
            .expect("the subscriber is running");
    };
    delivered(5).await;

    let admin = writer.pool().clone();
    eventually("both listeners are connected", || {
        let admin = admin.clone();
        async move { backends(&admin, "leviathan-listener").await.len() == 2 }
    })
    .await;
    let killed = backends(&admin, "leviathan-listener").await;
    terminate(&admin, &killed).await;
    eventually("the killed listeners are gone", || {
        let (admin, killed) = (admin.clone(), killed.clone());
        async move {
            let alive: Vec<i32> =
                sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)")
                    .bind(&killed)
                    .fetch_all(&admin)
                    .await
                    .unwrap();
            alive.is_empty()
        }
    })
    .await;

    for i in 0..20 {
        let batch = (0..batch_size(i))
            .map(|j| note(&format!("after-{i}-{j}"), i))
            .collect();
        let receipt = writer
            .events()
            .append(AppendRequest::new(batch))
            .await
            .unwrap();
        delivered(receipt.head.unwrap().seq).await;
    }
    subscriber.await.unwrap();
    let now = backends(&admin, "leviathan-listener").await;
    assert!(
        now.iter().all(|pid| !killed.contains(pid)),
        "the listeners reconnected: {killed:?} -> {now:?}"
    );
}

/// Backends killed during a run of appends: failed appends are transient, retrying them is
/// safe, every acknowledged event is stored once and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_connections_fail_appends_transiently_and_lose_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let transient = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (events, acknowledged, transient) =
            (store.events(), acknowledged.clone(), transient.clone());
        writers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..150 {
                let event = note(&format!("w{w}-{i}"), i);
                loop {
                    match events.append(AppendRequest::new(vec![event.clone()])).await {
                        Ok(receipt) => {
                            assert_eq!(receipt.appended.len() + receipt.duplicates.len(), 1);
                            break;
                        }
                        Err(err) if err.is_transient() => {
                            transient.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => panic!("a lost connection must be transient: {err}"),
                    }
                }
                acknowledged.fetch_add(1, Ordering::Relaxed);
                mine.push(event.event_id);
            }
            mine
        }));
    }
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .unwrap();
    for round in 1..=5u64 {
        let threshold = round * 100;
        eventually("appends make progress", || {
            let acknowledged = acknowledged.clone();
            async move { acknowledged.load(Ordering::Relaxed) >= threshold }
        })
        .await;
        let mut victims = backends(&admin, "leviathan-writer").await;
        victims.extend(backends(&admin, "leviathan").await);
        terminate(&admin, &victims).await;
    }
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    assert!(
        transient.load(Ordering::Relaxed) > 0,
        "killing the writer's connection failed at least one append"
    );
    let events = store.events();
    let found = events.find(&acked).await.unwrap();
    assert_eq!(
        found.len(),
        acked.len(),
        "every acknowledged event is stored"
    );
    assert_eq!(
        verified_count(&*events).await,
        600,
        "each event is stored once"
    );
}

/// A request the database refuses fails alone; the requests committed with it land.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_fails_alone() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    // A stand-in for data only the database refuses.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'poison refused'; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW \
         WHEN (NEW.event_type = 'poison.pill') EXECUTE FUNCTION refuse_poison();",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let stream = StreamId::from_raw("attempt:race");
    let mut tasks = Vec::new();
    for i in 0..30 {
        let events = store.events();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let request = match i {
                7 => {
                    let mut poison = note("poison", 7);
                    poison.event_type = "poison.pill".into();
                    AppendRequest::new(vec![note("with-poison", 7), poison])
                }
                11 => AppendRequest::new(vec![heartbeat("stale", "race")])
                    .expect(stream, ExpectedVersion::Exact(5)),
                _ => AppendRequest::new(vec![note(&format!("fine-{i}"), i)]),
            };
            (i, events.append(request).await)
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            (7, Err(EventStoreError::Backend { reason, .. })) => {
                assert!(reason.contains("poison refused"), "{reason}");
            }
            (11, Err(EventStoreError::WrongExpectedVersion { actual: 0, .. })) => {}
            (i, Ok(receipt)) if i != 7 && i != 11 => assert_eq!(receipt.appended.len(), 1),
            (i, other) => panic!("request {i}: unexpected outcome {other:?}"),
        }
    }
    let events = store.events();
    assert_eq!(verified_count(&*events).await, 28);
    assert!(
        events
            .get(&EventId::new("with-poison").unwrap())
            .await
            .unwrap()
            .is_none(),
        "the refused request's other event did not land"
    );
}

/// seq, canonical, payload->>'a', stream, stream_version, timestamp text.
type EventRow = (
    i64,
    Vec<u8>,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
);

/// The canonical bytes are stored exactly; jsonb and the other columns are there for queries.
#[tokio::test]
async fn rows_keep_canonical_bytes_and_queryable_columns() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut odd = note("odd", 1);
    odd.payload =
        json!({"z": 1.0, "a": 12345678901234567890u64, "m": {"y": [1e-7, "é"], "b": null}});
    let receipt = store
        .events()
        .append(AppendRequest::new(vec![
            odd,
            heartbeat("hb-1", "a1"),
            heartbeat("hb-2", "a1"),
        ]))
        .await
        .unwrap();
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, canonical, payload->>'a', stream, stream_version, \
         to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') \
         FROM events ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    for (row, event) in rows.iter().zip(&receipt.appended) {
        assert_eq!(row.1, event.canonical_bytes(), "seq {}", row.0);
        assert_eq!(format!("{}Z", row.5), event.timestamp.to_string());
    }
    assert_eq!(rows[0].2.as_deref(), Some("12345678901234567890"));
    assert_eq!((rows[0].3.as_deref(), rows[0].4), (None, None));
    assert_eq!(
        (rows[2].3.as_deref(), rows[2].4),
        (Some("attempt:a1"), Some(2))
    );
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM streams WHERE stream = 'attempt:a1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, 2);
    let head: (i64, Vec<u8>) = sqlx::query_as("SELECT seq, hash FROM log_head")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(head, (3, receipt.appended[2].hash.as_bytes().to_vec()));
}

/// Tampering (with the trigger disabled, as only an owner could) is found at its seq.
#[tokio::test]
async fn verification_finds_tampering_at_its_seq() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let batch = (1..=10).map(|n| note(&format!("t{n}"), n)).collect();
    store
        .events()
        .append(AppendRequest::new(batch))
        .await
        .unwrap();
    let tamper = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete; {sql}; \
                 ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete;"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    // One flipped bit inside seq 7's payload.
    tamper(
        "UPDATE events SET canonical = set_byte(canonical, position('\"n\":'::bytea in canonical) + 3, \
         get_byte(canonical, position('\"n\":'::bytea in canonical) + 3) # 1) WHERE seq = 7",
    )
    .await;
    let broken = store.events().verify().await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 7);
    assert!(
        matches!(broken.fault, ChainFault::HashMismatch { .. }),
        "{broken}"
    );

    let db2 = TestDatabase::create().await;
    let store2 = db2.store().await;
    let batch = (1..=10).map(|n| note(&format!("t{n}"), n)).collect();
    store2
        .events()
        .append(AppendRequest::new(batch))
        .await
        .unwrap();
    // The last event removed: the log no longer reaches its head.
    sqlx::raw_sql(
        "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete; \
         DELETE FROM events WHERE seq = 10; \
         ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete;",
    )
    .execute(store2.pool())
    .await
    .unwrap();
    let broken = store2.events().verify().await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 10, "{broken}");
}

/// Connection failures are classified, and no error shows the URL's password.
#[tokio::test]
async fn connect_errors_are_classified_and_hide_the_password() {
    let quick = PgOptions {
        acquire_timeout: Duration::from_secs(1),
        ..PgOptions::default()
    };
    let refused = PgStore::connect_with(
        "postgres://postgres:pw-s3cr3t-xyz@127.0.0.1:1/postgres",
        quick,
    )
    .await
    .unwrap_err();
    assert!(refused.is_transient(), "{refused}");
    let db = TestDatabase::create().await;
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_password(Some("pw-s3cr3t-xyz")).unwrap();
    url.set_path("/leviathan_no_such_database");
    let missing = PgStore::connect(url.as_str()).await.unwrap_err();
    assert!(!missing.is_transient(), "{missing}");
    for err in [&refused, &missing] {
        let mut text = format!("{err} {err:?}");
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            text.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(
            text.contains("***"),
            "the location is named, masked: {text}"
        );
    }
    let store = db.store().await;
    assert!(!format!("{store:?}").contains("s3cr3t"));
}

/// Large batches (far more than one 16 KiB TLS record) land whole and verify, over plain TCP and
/// over whatever the server negotiates by default (TLS when it offers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_land_whole_with_and_without_tls() {
    let db = TestDatabase::create().await;
    let mut plain = url::Url::parse(db.url()).unwrap();
    plain.query_pairs_mut().append_pair("sslmode", "disable");
    let stores = [
        PgStore::connect(plain.as_str()).await.unwrap(),
        db.store().await,
    ];
    for (s, store) in stores.iter().enumerate() {
        let batch = (0..700)
            .map(|i| {
                let mut event = heartbeat(&format!("big-{s}-{i}"), &format!("a{}", i % 50));
                event.payload["filler"] = json!("x".repeat(i % 300));
                event
            })
            .collect();
        let receipt = store
            .events()
            .append(AppendRequest::new(batch))
            .await
            .unwrap();
        assert_eq!(receipt.appended.len(), 700);
    }
    let events = stores[0].events();
    assert_eq!(verified_count(&*events).await, 1400);
    let version = events
        .stream_version(&StreamId::from_raw("attempt:a7"))
        .await
        .unwrap();
    assert_eq!(version, 28, "14 events per attempt stream per batch");
}

/// The pool's connections plan each statement with its arguments: a generic plan cached while
/// the log was small (a sequential scan for `event_id = ANY($1)`) would slow every later read.
/// (The writer keeps generic plans made to read through keys; its own unit test checks them.)
#[tokio::test]
async fn pool_connections_never_use_cached_generic_plans() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    store
        .events()
        .append(AppendRequest::new(vec![note("plan-0", 0)]))
        .await
        .expect("append");
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(mode, "force_custom_plan");
}

/// No statement of the store may wait ~40 ms for a delayed ACK, so its sockets must have Nagle's
/// algorithm off. sqlx sets `TCP_NODELAY` on its sockets (0.9.0 did not, 0.9.1 does again; the
/// workspace requires 0.9.1): this fails if a sqlx that leaves it off comes back. The test looks
/// at its own process's sockets, told apart from other tests' by the client ports the server
/// reports for this database.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn connections_to_the_database_have_tcp_nodelay() {
    use rustix::{
        net::{getsockname, sockopt},
        process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open},
    };
    let db = TestDatabase::create().await;
    let store = db.store().await;
    store
        .events()
        .append(AppendRequest::new(vec![note("nodelay-0", 0)]))
        .await
        .expect("append");
    let ports: Vec<i32> = sqlx::query_scalar(
        "SELECT client_port FROM pg_stat_activity \
         WHERE datname = current_database() AND client_port IS NOT NULL",
    )
    .fetch_all(store.pool())
    .await
    .expect("activity");
    let me = pidfd_open(getpid(), PidfdFlags::empty()).expect("pidfd");
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").expect("fds").flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(socket) = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let Ok(local) = getsockname(&socket) else {
            continue;
        };
        let Ok(local) = std::net::SocketAddr::try_from(local) else {
            continue;
        };
        if ports.contains(&i32::from(local.port())) {
            assert_eq!(
                sockopt::tcp_nodelay(&socket),
                Ok(true),
                "fd {fd} to the database"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "the pool's and the writer's connections were checked ({checked}, {ports:?})"
    );
}

/// The migration that adds the attempt indexes fills them from the attempts a database already
/// holds: the history queries then answer as the graph does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_index_migration_fills_it_from_stored_attempts() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let ledger = Ledger::open(store.events(), store.graphs()).await.unwrap();
    ledger
        .ingest(lifecycle("mig", "demo", 3), Expectations::Derived)
        .await
        .unwrap();
    ledger.flush().await.unwrap();
    let graph = ledger.graph().await.clone();
    drop(ledger);
    // The database as it was before that migration.
    sqlx::raw_sql(
        "DROP TABLE graph_attempts; \
         DELETE FROM _sqlx_migrations WHERE version = 20261209000000",
    )
    .execute(store.pool())
    .await
    .unwrap();
    drop(store);
    let store = PgStore::connect(db.url()).await.unwrap();
    for status in [
        None,
        Some(AttemptStatus::Failed),
        Some(AttemptStatus::Succeeded),
    ] {
        let query = AttemptQuery {
            status,
            limit: 100,
            ..AttemptQuery::default()
        };
        let stored = store.graphs().attempts(&query).await.unwrap().attempts;
        let expected = graph.attempts_page(&query).0;
        assert!(!expected.is_empty());
        assert_eq!(stored.iter().collect::<Vec<_>>(), expected, "{query:?}");
    }
    let failures = FailureQuery {
        limit: 100,
        ..FailureQuery::default()
    };
    let stored = store.graphs().failures(&failures).await.unwrap().attempts;
    assert_eq!(
        stored.iter().collect::<Vec<_>>(),
        graph.failures_page(&failures).0
    );
}
