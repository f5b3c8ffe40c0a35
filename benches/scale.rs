//! Issue 20's figures: what a control plane costs as its log grows.
//!
//! For each backend (sled, PostgreSQL) and each shape of history (`few`: 4 targets with many
//! tasks each; `many`: a target per 100 tasks), it builds a log of realistic attempt lifecycles
//! (task, attempt, job, start, model calls, test runs, artifacts, commit, PR, success; every
//! fifth task's first attempt fails) through `Ledger::ingest` in batches of 100 (validated
//! against the graph, appended, folded, saved as the ledger saves), and reports the ingest rate
//! over the first and the last tenth. Then a fresh process (this bench again, so that its memory
//! is its own) opens the stores as `serve` does and reports the time until the ledger is ready,
//! its resident memory (`VmRSS` from `/proc/self/status`) and the nodes its graph holds, serves
//! the API over HTTP on 127.0.0.1 and reports the p50 and p99 of the attempt list, the filtered
//! list (one target, succeeded), failures, an attempt's detail and the summary.
//!
//! ```sh
//! cargo bench --bench scale -- 100000            # both backends, both shapes
//! cargo bench --bench scale -- 1000000 sled few  # one of each
//! ```
//!
//! Needs PostgreSQL for `pg` (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/
//! postgres`). The sled logs go under `CARGO_TARGET_TMPDIR` and are rebuilt each run.

use std::{
    future::Future,
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use leviathan_api::{
    ApiConfig, ApiState, BearerToken, ControlPlane,
    client::ControlPlaneClient,
    router,
    wire::{AttemptsQuery, FailuresQuery},
};
use leviathan_core::{
    ArtifactStore, EventStore, Expectations, GraphStore, Ledger, NewEvent,
    id::{AttemptId, TargetId},
    model::{AttemptStatus, Priority},
    testkit::Scenario,
};
use leviathan_store_pg::{PgStore, testkit::TestDatabase};
use leviathan_store_sled::SledStore;
use leviathan_testkit::TestServer;
use tokio::runtime::Runtime;

const BATCH: usize = 100;
/// Tasks generated at a time (one scenario), so that memory does not grow with the log.
const BLOCK: usize = 100;
/// Requests timed one by one per query.
const SAMPLES: usize = 200;
const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

/// The lifecycles of tasks `first..first + BLOCK` of target `target`.
fn block(target: usize, first: usize) -> Vec<NewEvent> {
    let name = format!("target-{target}");
    let mut s = Scenario::new(&format!("s{target}-{first}"), &name);
    if first == 0 {
        s.register_target();
    }
    for k in first..first + BLOCK {
        let task = format!("task-{k}");
        let attempt = |n: u8| format!("t{target}-{k}-{n}");
        s.create_task(&task, &[], Priority::Medium);
        let mut number = 1;
        if k % 5 == 0 {
            s.start_attempt(&task, &attempt(1), 1)
                .fail_attempt(&task, &attempt(1), 2);
            number = 2;
        }
        s.start_attempt(&task, &attempt(2), number).succeed_attempt(
            &task,
            &attempt(2),
            k as i64 + 1,
        );
    }
    s.build()
}

/// Ingests `total` events of the shape (`targets` targets, filled in turn a block at a time);
/// returns the rates over the first and the last tenth, in events per second.
async fn build(ledger: &Ledger, total: usize, targets: usize) -> (f64, f64) {
    let tenth = total / 10;
    let (mut done, mut next_task) = (0, 0);
    let started = Instant::now();
    let (mut first_tenth, mut last_tenth_start) = (None, None);
    'fill: loop {
        for target in 0..targets {
            for chunk in block(target, next_task).chunks(BATCH) {
                let n = chunk.len().min(total - done);
                ledger
                    .ingest(chunk[..n].to_vec(), Expectations::Derived)
                    .await
                    .expect("ingest");
                done += n;
                if first_tenth.is_none() && done >= tenth {
                    first_tenth = Some((done, started.elapsed()));
                }
                if last_tenth_start.is_none() && done >= total - tenth {
                    last_tenth_start = Some((done, started.elapsed()));
                }
                if done == total {
                    break 'fill;
                }
            }
        }
        next_task += BLOCK;
    }
    let ended = started.elapsed();
    ledger.flush().await.expect("flush");
    let rate = |events: usize, time: Duration| events as f64 / time.as_secs_f64();
    let (first_n, first_t) = first_tenth.expect("a first tenth");
    let (last_n, last_t) = last_tenth_start.expect("a last tenth");
    (rate(first_n, first_t), rate(done - last_n, ended - last_t))
}

/// Resident memory of this process, in MiB.
fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Times `call` `SAMPLES` times; returns "p50 …, p99 …".
async fn percentiles<F, Fut>(call: F) -> String
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let start = Instant::now();
        call(i).await;
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    format!("p50 {:.2?}, p99 {:.2?}", at(0.5), at(0.99))
}

/// The child process: opens the stores, reports readiness, memory and nodes, serves and times
/// the queries.
async fn serve_and_query(backend: &str, location: &str) {
    let started = Instant::now();
    let (events, graphs, artifacts): (
        Arc<dyn EventStore>,
        Arc<dyn GraphStore>,
        Arc<dyn ArtifactStore>,
    ) = match backend {
        "sled" => {
            let store = SledStore::open(location).expect("open sled");
            (store.events(), store.graphs(), store.artifacts())
        }
        _ => {
            let store = PgStore::connect(location).await.expect("connect");
            (store.events(), store.graphs(), store.artifacts())
        }
    };
    let ledger = Arc::new(Ledger::open(events, graphs).await.expect("ledger"));
    let ready = started.elapsed();
    let nodes = ledger.graph().await.summary().total_nodes;
    println!(
        "  restart: ready in {ready:.2?}, resident {:.0} MiB, {nodes} nodes in memory",
        resident_mib()
    );
    let plane = ControlPlane::new(ledger, artifacts);
    let config = ApiConfig::new(BearerToken::new(TOKEN).expect("token"));
    let server = TestServer::spawn(router(ApiState::from_control_plane(plane, config)))
        .await
        .expect("server");
    let api = ControlPlaneClient::new(&server.url(), TOKEN).expect("client");
    let everything = AttemptsQuery {
        limit: Some(SAMPLES),
        ..AttemptsQuery::default()
    };
    let ids: Vec<AttemptId> = api
        .attempts(&everything)
        .await
        .expect("attempts")
        .attempts
        .into_iter()
        .map(|a| a.attempt_id)
        .collect();
    let page = AttemptsQuery {
        limit: Some(50),
        ..AttemptsQuery::default()
    };
    let filtered = AttemptsQuery {
        target: Some(TargetId::new("target-0").expect("id")),
        status: Some(AttemptStatus::Succeeded),
        limit: Some(50),
        cursor: None,
    };
    let failures = FailuresQuery {
        limit: Some(50),
        ..FailuresQuery::default()
    };
    let (api, ids) = (&api, &ids);
    let (page, filtered, failures) = (&page, &filtered, &failures);
    let list = percentiles(|_| async move { drop(api.attempts(page).await.unwrap()) }).await;
    let by = percentiles(|_| async move { drop(api.attempts(filtered).await.unwrap()) }).await;
    let failed = percentiles(|_| async move { drop(api.failures(failures).await.unwrap()) }).await;
    let detail = percentiles(|i| async move {
        drop(api.attempt(&ids[i % ids.len()]).await.unwrap());
    })
    .await;
    let summary = percentiles(|_| async move { drop(api.graph_summary().await.unwrap()) }).await;
    println!("  attempts (50): {list}\n  target + succeeded (50): {by}\n  failures (50): {failed}");
    println!("  attempt detail: {detail}\n  summary: {summary}");
}

/// Builds one log and measures it from a fresh process.
fn run(rt: &Runtime, events: usize, backend: &str, shape: &str) {
    let targets = match shape {
        "few" => 4,
        // About 20 events per task: a target per 100 tasks.
        _ => (events / 2000).max(1),
    };
    let database = (backend == "pg").then(|| rt.block_on(TestDatabase::create()));
    let location = match &database {
        Some(db) => db.url().to_owned(),
        None => {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("scale-{shape}"));
            let _ = std::fs::remove_dir_all(&dir);
            dir.to_string_lossy().into_owned()
        }
    };
    let started = Instant::now();
    let (first, last) = rt.block_on(async {
        let (events_store, graphs): (Arc<dyn EventStore>, Arc<dyn GraphStore>) = match backend {
            "sled" => {
                let store = SledStore::open(&location).expect("open sled");
                (store.events(), store.graphs())
            }
            _ => {
                let store = PgStore::connect(&location).await.expect("connect");
                (store.events(), store.graphs())
            }
        };
        let ledger = Ledger::open(events_store, graphs).await.expect("ledger");
        build(&ledger, events, targets).await
    });
    println!(
        "{backend}, {shape} ({targets} targets), {events} events: built in {:.1?}; ingest {first:.0} events/s over the first tenth, {last:.0} over the last ({:.2}x)",
        started.elapsed(),
        last / first
    );
    let status = Command::new(std::env::current_exe().expect("this bench"))
        .args(["serve", backend, &location])
        .status()
        .expect("the serving process");
    assert!(status.success(), "the serving process failed");
    drop(database);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rt = Runtime::new().expect("runtime");
    if let [serve, backend, location] = &args[..]
        && serve == "serve"
    {
        rt.block_on(serve_and_query(backend, location));
        return;
    }
    let events = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let chosen = |all: &'static [&'static str]| -> Vec<&'static str> {
        let picked: Vec<_> = all
            .iter()
            .copied()
            .filter(|x| args.iter().any(|a| a == x))
            .collect();
        if picked.is_empty() {
            all.to_vec()
        } else {
            picked
        }
    };
    for backend in chosen(&["sled", "pg"]) {
        for shape in chosen(&["few", "many"]) {
            run(&rt, events, backend, shape);
        }
    }
}
