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
    AppendRequest, ArtifactStore, EventStore, GraphStore, Ledger, NewEvent, fixtures::lifecycle,
};
use leviathan_store_pg::test_support::TestDatabase;
use leviathan_store_sled::SledStore;
use tokio::runtime::Runtime;

const BUNDLE: usize = 100;
static NEXT: AtomicU64 = AtomicU64::new(0);

/// 100 events of a fresh target's lifecycle: registration, tasks, attempts, artifacts, PRs.
fn bundle_events() -> (String, Vec<NewEvent>) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let target = format!("t{n}");
    let mut events = lifecycle(&format!("b{n}"), &target, 4);
    events.truncate(BUNDLE);
    (target, events)
}

fn bench_backend(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    events: Arc<dyn EventStore>,
    graphs: Arc<dyn GraphStore>,
    artifacts: Arc<dyn ArtifactStore>,
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

    group.throughput(Throughput::Elements(BUNDLE as u64));
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
    group.bench_function(format!("{name}/direct_append/batch{BUNDLE}"), |b| {
        b.to_async(rt).iter(|| {
            let events = events.clone();
            async move {
                let (_, batch) = bundle_events();
                events
                    .append(AppendRequest::new(batch))
                    .await
                    .expect("append");
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
    let sled = SledStore::open(dir.path().join("db")).expect("open sled");
    bench_backend(
        &mut group,
        &rt,
        "sled",
        sled.events(),
        sled.graphs(),
        sled.artifacts(),
    );
    drop(sled);

    let db = rt.block_on(TestDatabase::create());
    let pg = rt.block_on(db.store());
    bench_backend(
        &mut group,
        &rt,
        "postgres",
        pg.events(),
        pg.graphs(),
        pg.artifacts(),
    );
    group.finish();
    drop(pg);
    drop(db);
}

criterion_group!(benches, ingest);
criterion_main!(benches);
