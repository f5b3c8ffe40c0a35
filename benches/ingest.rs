//! Ingest through HTTP (bundles of 100 realistic events, validated against the graph, appended,
//! folded) next to the same store's own batched append of the same kind of events, in one run:
//! the ratio is the cost of HTTP, JSON and validation.
//!
//! Needs PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use leviathan_api::{
    ApiConfig, ApiState, BearerToken, client::ControlPlaneClient, wire::IngestRequest,
};
use leviathan_core::{
    AppendRequest, ArtifactStore, EventStore, GraphStore, Ledger, NewEvent, model::Priority,
    testkit::Scenario,
};
use leviathan_store_pg::testkit::TestDatabase;
use leviathan_store_sled::SledStore;
use tokio::runtime::Runtime;

const BUNDLE: usize = 100;
static NEXT: AtomicU64 = AtomicU64::new(0);

/// 100 events about a fresh target: registration, tasks, attempts that fail and succeed, model
/// calls, test runs, artifacts, commits and PRs (attempt ids are globally unique, so each bundle
/// needs its own).
fn bundle_events() -> (String, Vec<NewEvent>) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let target = format!("t{n}");
    let mut s = Scenario::new(&format!("b{n}"), &target);
    s.register_target();
    for t in 0..5u8 {
        let task = format!("task-{t}");
        let (first, second) = (format!("a{n}-{t}-1"), format!("a{n}-{t}-2"));
        s.create_task(&task, &[], Priority::Medium);
        s.start_attempt(&task, &first, 1)
            .fail_attempt(&task, &first, 2);
        s.start_attempt(&task, &second, 2)
            .succeed_attempt(&task, &second, i64::from(t) + 1);
    }
    let mut events = s.build();
    events.truncate(BUNDLE);
    assert_eq!(events.len(), BUNDLE, "the scenario yields enough events");
    (target, events)
}

/// `direct` takes the store's own appends; `events`, `graphs` and `artifacts` (a second, fresh
/// store of the same kind) serve the control plane, so neither run sees the other's events.
fn bench_backend(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    direct: Arc<dyn EventStore>,
    (events, graphs, artifacts): (
        Arc<dyn EventStore>,
        Arc<dyn GraphStore>,
        Arc<dyn ArtifactStore>,
    ),
) {
    let token = BearerToken::generate().expect("token");
    let secret = token.expose().to_owned();
    let (url, server) = rt.block_on(async {
        let ledger = Arc::new(Ledger::open(events.clone(), graphs).await.expect("ledger"));
        let router = leviathan_api::router(ApiState::new(ledger, artifacts, ApiConfig::new(token)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        (url, server)
    });
    let client = ControlPlaneClient::new(&url, secret).expect("client");

    // The store's own batched append, then the same kind of events through HTTP, where the ledger
    // also validates them against the graph, folds them and persists the projection.
    group.throughput(Throughput::Elements(BUNDLE as u64));
    group.bench_function(format!("{name}/direct_append/batch{BUNDLE}"), |b| {
        b.to_async(rt).iter(|| {
            let direct = direct.clone();
            async move {
                let (_, batch) = bundle_events();
                direct
                    .append(AppendRequest::new(batch))
                    .await
                    .expect("append");
            }
        })
    });
    group.bench_function(format!("{name}/http_ingest/bundle{BUNDLE}"), |b| {
        b.to_async(rt).iter(|| {
            let client = client.clone();
            async move {
                let (target, events) = bundle_events();
                let bundle_id = format!("bundle-{target}");
                let request = IngestRequest {
                    target,
                    bundle_id,
                    events,
                    artifacts: Vec::new(),
                    expectations: Vec::new(),
                };
                let response = client.ingest(&request).await.expect("ingest");
                assert_eq!(response.ingested, BUNDLE as u64);
            }
        })
    });
    server.abort();
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("ingest");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));

    let dir = tempfile::tempdir().expect("temp dir");
    let direct = SledStore::open(dir.path().join("direct")).expect("open sled");
    let served = SledStore::open(dir.path().join("served")).expect("open sled");
    let stores = (served.events(), served.graphs(), served.artifacts());
    bench_backend(&mut group, &rt, "sled", direct.events(), stores);
    drop((direct, served));

    let (direct_db, served_db) =
        rt.block_on(async { (TestDatabase::create().await, TestDatabase::create().await) });
    let direct = rt.block_on(direct_db.store());
    let served = rt.block_on(served_db.store());
    // Start from a checkpoint, so that one forced by the sled runs' writes or earlier benches'
    // WAL does not land in the middle of these measurements.
    rt.block_on(sqlx::query("CHECKPOINT").execute(direct.pool()))
        .expect("checkpoint");
    let stores = (served.events(), served.graphs(), served.artifacts());
    bench_backend(&mut group, &rt, "postgres", direct.events(), stores);
    group.finish();
    drop((direct, served));
    drop((direct_db, served_db));
}

criterion_group!(benches, ingest);
criterion_main!(benches);
