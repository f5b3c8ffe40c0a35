//! The verifiable log as the control plane serves it, two of issue 19's figures:
//!
//! - **Proofs from a sled log of 10 million events**: inclusion and consistency proofs read from
//!   the store's tree (`tlog::inclusion_proof` on `SledStore::tree`) and served over HTTP
//!   (`GET /v1/log/proof/...` through the typed client), next to the HTTP floor (an
//!   authenticated `GET /v1/health` on the same server). The log is built once through the
//!   store's batched append under `CARGO_TARGET_TMPDIR` and reused (about 7 GB; building it
//!   took 25 minutes on a loaded machine).
//! - **Appends while checkpoints are signed every second**: single-event and 100-event appends
//!   to a fresh sled store, with `sign_checkpoints` running every second and without, in
//!   alternating rounds of the same run.
//!
//! Besides criterion's figures, each part prints per-request percentiles (p50, p99, max), which
//! criterion's per-sample means do not show.

use std::{
    future::Future,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leviathan_api::{
    ApiConfig, ApiState, BearerToken, ControlPlane, client::ControlPlaneClient, router,
    sign_checkpoints,
};
use leviathan_core::{
    AppendRequest, EventId, EventStore, Ledger, NewEvent, Timestamp,
    memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    secret::Secret,
    tlog::{
        self, TreeStore,
        checkpoint::{LogSigner, generate_key},
    },
};
use leviathan_store_sled::{Durability, SledOptions, SledStore};
use leviathan_testkit::TestServer;
use serde_json::json;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Leaves of the large log.
const LEAVES: u64 = 10_000_000;
/// Events per append while building it.
const BUILD_BATCH: u64 = 5_000;
/// Requests timed one by one for the percentiles.
const SAMPLES: usize = 5_000;
const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A heartbeat-sized event (about 300 bytes of canonical JSON), as in the append bench.
fn event(id: String, n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(id).expect("valid id"),
        event_type: "worker.progress".into(),
        timestamp: Timestamp::from_unix_micros(1_780_000_000_000_000 + n as i64).expect("in range"),
        actor_id: Some("worker-attempt-0123456789abcdef".into()),
        payload: json!({
            "attempt_id": "attempt-0123456789abcdef",
            "step": "tests",
            "message": "running make test in the worktree",
            "n": n,
        }),
        principal: None,
    }
}

fn batch(size: u64) -> AppendRequest {
    AppendRequest::new(
        (0..size)
            .map(|_| {
                let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                event(format!("signing-{n}"), n)
            })
            .collect(),
    )
}

/// The 10 M-event sled log, built (or finished, after an interrupted build) through the store's
/// batched append. Built with periodic flushes: durability does not change what is read later.
fn large_log(rt: &Runtime) -> SledStore {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tlog-10m-sled");
    let options = SledOptions {
        durability: Durability::Periodic {
            every: Duration::from_secs(1),
        },
        ..SledOptions::default()
    };
    let store = SledStore::open_with(&dir, options).expect("open the large log");
    let events = store.events();
    let tree = store.tree();
    rt.block_on(async {
        let mut size = tree.tree_size().await.expect("tree size");
        let started = Instant::now();
        while size < LEAVES {
            let n = BUILD_BATCH.min(LEAVES - size);
            let request = AppendRequest::new(
                (size..size + n)
                    .map(|i| event(format!("leaf-{i}"), i))
                    .collect(),
            );
            events
                .append(request)
                .await
                .expect("append to the large log");
            size += n;
            if size % 500_000 == 0 {
                eprintln!(
                    "building {}: {size} of {LEAVES} events, {:.0} s",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
    store
}

/// A deterministic spread of leaves and old sizes over the whole tree.
fn points(count: usize) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(19);
    (0..count).map(|_| rng.u64(1..LEAVES)).collect()
}

/// Times `call` on each point one by one; prints p50, p99 and max.
fn percentiles<F, Fut>(rt: &Runtime, name: &str, points: &[u64], call: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times: Vec<Duration> = rt.block_on(async {
        let mut times = Vec::with_capacity(points.len());
        for &point in points {
            let start = Instant::now();
            call(point).await;
            times.push(start.elapsed());
        }
        times
    });
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "{name}: p50 {:?}, p99 {:?}, max {:?} ({} requests)",
        at(0.50),
        at(0.99),
        at(1.0),
        times.len()
    );
}

/// A control plane whose log is `tree`, signing with a fresh key, serving HTTP on 127.0.0.1.
/// Its ledger is an empty memory one: proofs by `seq` read only the tree.
async fn serve(tree: Arc<dyn TreeStore>, ledger: Arc<Ledger>) -> (ControlPlane, TestServer) {
    let (secret, public) = generate_key("bench.example/leviathan").expect("log key");
    let signer = LogSigner::new(&Secret::new(secret.expose()), &public).expect("signer");
    let plane = ControlPlane::new(ledger, Arc::new(MemoryArtifactStore::new()))
        .with_log(tree, Some(Arc::new(signer)));
    let config = ApiConfig::new(BearerToken::new(TOKEN).expect("token"));
    let state = ApiState::from_control_plane(plane.clone(), config);
    let server = TestServer::spawn(router(state)).await.expect("server");
    (plane, server)
}

async fn empty_ledger() -> Arc<Ledger> {
    let ledger = Ledger::open(
        Arc::new(MemoryEventStore::new()),
        Arc::new(MemoryGraphStore::new()),
    )
    .await
    .expect("ledger");
    Arc::new(ledger)
}

fn proofs(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let store = large_log(&rt);
    let tree = store.tree();
    let (_plane, server) = rt.block_on(async { serve(tree.clone(), empty_ledger().await).await });
    let api = ControlPlaneClient::new(&server.url(), TOKEN).expect("client");
    let leaves = points(SAMPLES);
    // Proof lengths at 10 M leaves (what the issue bounds at 25).
    rt.block_on(async {
        let inclusion = tlog::inclusion_proof(&*tree, leaves[0], LEAVES).await.unwrap();
        let consistency = tlog::consistency_proof(&*tree, leaves[0], LEAVES).await.unwrap();
        eprintln!(
            "at {LEAVES} leaves: inclusion proof of leaf {} has {} hashes, consistency proof from {} has {}",
            leaves[0],
            inclusion.hashes.len(),
            leaves[0],
            consistency.hashes.len()
        );
    });
    let store_inclusion = |i: u64| {
        let tree = tree.clone();
        async move {
            tlog::inclusion_proof(&*tree, i, LEAVES).await.unwrap();
        }
    };
    let store_consistency = |from: u64| {
        let tree = tree.clone();
        async move {
            tlog::consistency_proof(&*tree, from, LEAVES).await.unwrap();
        }
    };
    let http_inclusion = |i: u64| {
        let api = api.clone();
        async move {
            api.inclusion_proof(i + 1, Some(LEAVES)).await.unwrap();
        }
    };
    let http_consistency = |from: u64| {
        let api = api.clone();
        async move {
            api.consistency_proof(from, Some(LEAVES)).await.unwrap();
        }
    };
    let http_floor = |_: u64| {
        let api = api.clone();
        async move {
            api.health().await.unwrap();
        }
    };
    percentiles(&rt, "store/inclusion", &leaves, store_inclusion);
    percentiles(&rt, "store/consistency", &leaves, store_consistency);
    percentiles(&rt, "http/inclusion", &leaves, http_inclusion);
    percentiles(&rt, "http/consistency", &leaves, http_consistency);
    percentiles(&rt, "http/floor_health", &leaves, http_floor);

    let mut group = c.benchmark_group("proofs_10m_sled");
    group.throughput(Throughput::Elements(1));
    let mut next = points(1 << 16).into_iter().cycle();
    group.bench_function("store/inclusion", |b| {
        b.to_async(&rt)
            .iter(|| store_inclusion(next.next().expect("cycle")))
    });
    group.bench_function("store/consistency", |b| {
        b.to_async(&rt)
            .iter(|| store_consistency(next.next().expect("cycle")))
    });
    group.bench_function("http/inclusion", |b| {
        b.to_async(&rt)
            .iter(|| http_inclusion(next.next().expect("cycle")))
    });
    group.bench_function("http/consistency", |b| {
        b.to_async(&rt)
            .iter(|| http_consistency(next.next().expect("cycle")))
    });
    group.bench_function("http/floor_health", |b| {
        b.to_async(&rt).iter(|| http_floor(0))
    });
    group.finish();
}

/// Appends `size`-event batches for `time`, one at a time; the latency of each.
async fn append_for(events: &dyn EventStore, size: u64, time: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    let end = Instant::now() + time;
    while Instant::now() < end {
        let request = batch(size);
        let start = Instant::now();
        events.append(request).await.expect("append");
        times.push(start.elapsed());
    }
    times
}

fn describe(mode: &str, size: u64, mut times: Vec<Duration>, seconds: f64) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "batch {size}, {mode}: {:.0} events/s, p50 {:?}, p99 {:?}, max {:?} ({} appends)",
        (times.len() as u64 * size) as f64 / seconds,
        at(0.50),
        at(0.99),
        at(1.0),
        times.len()
    );
}

/// Rounds of appends alternating between no signer and a signer every second.
fn signing(c: &mut Criterion) {
    const ROUNDS: u32 = 4;
    const ROUND: Duration = Duration::from_secs(5);
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path().join("log")).expect("open");
    let events = store.events();
    let tree = store.tree();
    let (plane, _server) = rt.block_on(async { serve(tree.clone(), empty_ledger().await).await });
    let with_signer = |on: bool| {
        let stop = CancellationToken::new();
        if on {
            let stop = stop.clone();
            rt.spawn(sign_checkpoints(
                plane.clone(),
                Duration::from_secs(1),
                async move { stop.cancelled().await },
            ));
        }
        stop.drop_guard()
    };
    for size in [1, 100] {
        let mut off = Vec::new();
        let mut on = Vec::new();
        let signed_before = checkpoints_size(&rt, &*tree);
        for round in 0..ROUNDS {
            for signer in [round % 2 == 1, round % 2 == 0] {
                let _running = with_signer(signer);
                let times = rt.block_on(append_for(&*events, size, ROUND));
                if signer { &mut on } else { &mut off }.extend(times);
            }
        }
        let signed_after = checkpoints_size(&rt, &*tree);
        assert!(
            signed_after > signed_before,
            "the signer signed nothing while the log grew"
        );
        let seconds = f64::from(ROUNDS) * ROUND.as_secs_f64();
        describe("no signer", size, off, seconds);
        describe("signer every 1 s", size, on, seconds);
    }

    let mut group = c.benchmark_group("append_sled_signing");
    for size in [1, 100] {
        group.throughput(Throughput::Elements(size));
        for signer in [false, true] {
            let _running = with_signer(signer);
            let name = if signer { "signer_1s" } else { "no_signer" };
            group.bench_function(format!("batch{size}/{name}"), |b| {
                b.to_async(&rt)
                    .iter(|| async { events.append(batch(size)).await.expect("append") })
            });
        }
    }
    group.finish();
}

/// The size of the latest signed checkpoint (0 when none).
fn checkpoints_size(rt: &Runtime, tree: &dyn TreeStore) -> u64 {
    rt.block_on(tree.latest_checkpoint())
        .expect("latest checkpoint")
        .map_or(0, |checkpoint| checkpoint.size)
}

criterion_group!(benches, signing, proofs);
criterion_main!(benches);
