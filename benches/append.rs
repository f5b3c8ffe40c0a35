//! Append throughput of every backend, next to the floors measured in the same run: one
//! `fdatasync` on the same disk and raw sled writing records of the same size (sled), and a plain
//! unchained `INSERT` of the same rows through the same pool (PostgreSQL). For PostgreSQL, 8
//! concurrent single-event clients also run against a naive writer (advisory lock, read the tail,
//! insert, commit per event) to show what group commit buys.
//!
//! Needs PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use leviathan_core::{
    AppendRequest, EventId, EventStore, NewEvent, Sha256Digest, Timestamp, memory::MemoryEventStore,
};
use leviathan_store_pg::testkit::TestDatabase;
use leviathan_store_sled::SledStore;
use serde_json::json;
use sled::{Transactional, transaction::ConflictableTransactionError};
use tokio::runtime::Runtime;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A heartbeat-sized event with a realistic payload (about 300 bytes of canonical JSON).
fn event() -> NewEvent {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    NewEvent {
        event_id: EventId::new(format!("bench-{n}")).expect("valid id"),
        event_type: "worker.progress".into(),
        timestamp: Timestamp::from_unix_micros(1_780_000_000_000_000 + n as i64).expect("in range"),
        actor_id: Some("worker-attempt-0123456789abcdef".into()),
        payload: json!({
            "attempt_id": "attempt-0123456789abcdef",
            "step": "tests",
            "round": n % 4,
            "message": "running make test in the worktree (3 of 5 suites passed)",
            "elapsed_ms": n % 10_000,
        }),
        principal: None,
    }
}

fn batch(size: usize) -> AppendRequest {
    AppendRequest::new((0..size).map(|_| event()).collect())
}

/// Single-client batches of 1 and 100, and 8 concurrent clients with batches of 1 and 100.
fn bench_store(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn EventStore>,
) {
    for size in [1usize, 100] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{name}/batch{size}/1client"), |b| {
            b.to_async(rt).iter(|| {
                let store = store.clone();
                async move { store.append(batch(size)).await.expect("append") }
            })
        });
        let per_client = if size == 1 { 16 } else { 2 };
        group.throughput(Throughput::Elements((8 * per_client * size) as u64));
        group.bench_function(format!("{name}/batch{size}/8clients"), |b| {
            b.to_async(rt).iter(|| {
                let store = store.clone();
                async move {
                    let mut tasks = Vec::new();
                    for _ in 0..8 {
                        let store = store.clone();
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..per_client {
                                store.append(batch(size)).await.expect("append");
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.expect("client");
                    }
                }
            })
        });
    }
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));

    bench_store(&mut group, &rt, "memory", Arc::new(MemoryEventStore::new()));

    // sled, durable (flush + fdatasync per group), and the floor: one fdatasync on the same disk.
    let dir = tempfile::tempdir().expect("temp dir");
    let sled = SledStore::open(dir.path().join("db")).expect("open sled");
    bench_store(&mut group, &rt, "sled", sled.events());
    let mut file = std::fs::File::create(dir.path().join("fsync-probe")).expect("probe file");
    group.throughput(Throughput::Elements(1));
    group.bench_function("floor/fdatasync_512b", |b| {
        b.iter(|| {
            file.write_all(&[7u8; 512]).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });
    drop(sled);

    // The sled floors: what sled itself takes to write 100 records of an event's size and make
    // them durable the same way; bare (one tree, no index), then with what the store minimally
    // needs (an id index and the tail, in one transaction across trees), without hashing or reads.
    let raw = sled::Config::new()
        .path(dir.path().join("raw"))
        .flush_every_ms(None)
        .open()
        .expect("open raw sled");
    let raw_tree = raw.open_tree("records").expect("tree");
    let raw_file = std::fs::File::open(dir.path().join("raw").join("db")).expect("raw data file");
    let record = vec![b'x'; 450];
    let mut raw_seq = 0u64;
    group.throughput(Throughput::Elements(100));
    group.bench_function("floor/sled_raw_apply_batch/batch100", |b| {
        b.iter(|| {
            let mut batch = sled::Batch::default();
            for _ in 0..100 {
                raw_seq += 1;
                batch.insert(&raw_seq.to_be_bytes(), record.as_slice());
            }
            raw_tree.apply_batch(batch).expect("apply");
            raw.flush().expect("flush");
            raw_file.sync_data().expect("fdatasync");
        })
    });
    let raw_ids = raw.open_tree("ids").expect("tree");
    let raw_meta = raw.open_tree("meta").expect("tree");
    group.bench_function("floor/sled_raw_transaction_with_index/batch100", |b| {
        b.iter(|| {
            let mut records = sled::Batch::default();
            let mut ids = sled::Batch::default();
            for _ in 0..100 {
                raw_seq += 1;
                records.insert(&raw_seq.to_be_bytes(), record.as_slice());
                ids.insert(
                    format!("bench-{raw_seq}").as_bytes(),
                    &raw_seq.to_be_bytes(),
                );
            }
            let tail = raw_seq.to_be_bytes();
            (&raw_tree, &raw_ids, &raw_meta)
                .transaction(|(tx_records, tx_ids, tx_meta)| {
                    tx_records.apply_batch(&records)?;
                    tx_ids.apply_batch(&ids)?;
                    tx_meta.insert(b"tail", &tail)?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .expect("transaction");
            raw.flush().expect("flush");
            raw_file.sync_data().expect("fdatasync");
        })
    });
    drop(raw);

    // PostgreSQL, and the floors: a plain INSERT of the same rows, and a naive serialised writer.
    let db = rt.block_on(TestDatabase::create());
    let pg = rt.block_on(db.store());
    // Start from a checkpoint, so that one forced by earlier benches' WAL does not land in the
    // middle of these measurements.
    rt.block_on(sqlx::query("CHECKPOINT").execute(pg.pool()))
        .expect("checkpoint");
    bench_store(&mut group, &rt, "postgres", pg.events());
    let pool = pg.pool().clone();
    rt.block_on(async {
        sqlx::raw_sql(
            "CREATE TABLE plain_events (id bigserial PRIMARY KEY, event_id text NOT NULL UNIQUE, \
             event_type text NOT NULL, ts timestamptz NOT NULL, payload jsonb NOT NULL, canonical bytea NOT NULL); \
             CREATE TABLE naive_events (seq bigint PRIMARY KEY, event_id text NOT NULL UNIQUE, \
             canonical bytea NOT NULL, hash bytea NOT NULL)",
        )
        .execute(&pool)
        .await
        .expect("floor tables");
    });
    let plain_insert = {
        let pool = pool.clone();
        move |size: usize| {
            let pool = pool.clone();
            async move {
                let events: Vec<NewEvent> = (0..size).map(|_| event()).collect();
                let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
                let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
                let stamps: Vec<chrono::DateTime<chrono::Utc>> =
                    events.iter().map(|e| e.timestamp.as_datetime()).collect();
                let payloads: Vec<serde_json::Value> =
                    events.iter().map(|e| e.payload.clone()).collect();
                let canonical: Vec<Vec<u8>> = events
                    .iter()
                    .map(|e| leviathan_core::canonical::to_vec(&e.payload))
                    .collect();
                sqlx::query(
                "INSERT INTO plain_events (event_id, event_type, ts, payload, canonical) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::bytea[])",
            )
            .bind(ids)
            .bind(types)
            .bind(stamps)
            .bind(payloads)
            .bind(canonical)
            .execute(&pool)
            .await
            .expect("plain insert");
            }
        }
    };
    group.throughput(Throughput::Elements(100));
    group.bench_function("floor/postgres_plain_insert/batch100/1client", |b| {
        b.to_async(&rt).iter(|| plain_insert.clone()(100))
    });
    group.throughput(Throughput::Elements(8 * 16));
    group.bench_function("floor/postgres_plain_insert/batch1/8clients", |b| {
        b.to_async(&rt).iter(|| async {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let insert = plain_insert.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..16 {
                        insert(1).await;
                    }
                }));
            }
            for task in tasks {
                task.await.expect("client");
            }
        })
    });
    let naive_append = {
        let pool = pool.clone();
        move || {
            let pool = pool.clone();
            async move {
                let new = event();
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("SELECT pg_advisory_xact_lock(4242)")
                    .execute(&mut *tx)
                    .await
                    .expect("lock");
                let tail: Option<(i64, Vec<u8>)> =
                    sqlx::query_as("SELECT seq, hash FROM naive_events ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *tx)
                        .await
                        .expect("tail");
                let (seq, prev) = match tail {
                    Some((seq, hash)) => (
                        seq as u64 + 1,
                        Some(Sha256Digest::from_bytes(hash.try_into().expect("32 bytes"))),
                    ),
                    None => (1, None),
                };
                let sealed = leviathan_core::Event::seal(new, seq, prev);
                sqlx::query("INSERT INTO naive_events (seq, event_id, canonical, hash) VALUES ($1, $2, $3, $4)")
                    .bind(seq as i64)
                    .bind(sealed.event_id.as_str())
                    .bind(sealed.canonical_bytes())
                    .bind(sealed.hash.as_bytes().to_vec())
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
            }
        }
    };
    group.throughput(Throughput::Elements(8 * 16));
    group.bench_function(
        "floor/postgres_naive_lock_read_insert/batch1/8clients",
        |b| {
            b.to_async(&rt).iter(|| {
                let naive_append = naive_append.clone();
                async move {
                    let mut tasks = Vec::new();
                    for _ in 0..8 {
                        let append = naive_append.clone();
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..16 {
                                append().await;
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.expect("client");
                    }
                }
            })
        },
    );
    group.finish();
    drop(pg);
    drop(db);
}

criterion_group!(benches, append);
criterion_main!(benches);
