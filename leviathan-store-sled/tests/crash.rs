//! A real crash test: a child process appends batches in a loop and is killed with SIGKILL at
//! random moments, again and again, on the same database. After every kill the database must
//! reopen, its chain must verify, no batch may be half present, and (with `Durability::Flush`)
//! every batch the child saw acknowledged must be there. Beside the batch writers, a ledger
//! ingests bundles that build a graph and saves its projection often, so kills also land in
//! projection saves: the stored projection must load, and with the log caught up on it must equal
//! the log folded afresh.
//!
//! The child is this same test binary, re-executed with `CHILD_DIR` set (so `cargo test` needs
//! no extra build step); it prints `ready` once the store is open and `ack <batch>` after each
//! acknowledged append, flushing stdout each time. This target has `harness = false`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use leviathan_core::{
    AppendRequest, EventId, EventStoreError, Graph, Head, Ledger, NewEvent, Timestamp,
    ledger::{Expectations, PersistPolicy},
    model::Priority,
    testkit::Scenario,
};
use leviathan_store_sled::{Durability, SledOptions, SledStore};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

const TEST_NAME: &str = "sigkill_at_random_moments_loses_no_acknowledged_batch";
const CHILD_DIR: &str = "LEVIATHAN_SLED_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "LEVIATHAN_SLED_CRASH_CHILD_ROUND";
const CHILD_PERIODIC: &str = "LEVIATHAN_SLED_CRASH_CHILD_PERIODIC";
const SEED: &str = "LEVIATHAN_SLED_CRASH_SEED";

/// Rounds with `Durability::Flush` (every acknowledged batch must survive).
const FLUSH_ROUNDS: u32 = 24;
/// Rounds with `Durability::Periodic` (acknowledged batches may be lost, never half of one).
const PERIODIC_ROUNDS: u32 = 6;
const WRITERS: u32 = 4;
const BATCH: u64 = 5;
/// The child stops by itself after this long, should the parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

fn main() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(Path::new(&dir));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    if !selected(&args) {
        println!("running 0 tests ({TEST_NAME} filtered out)");
        return;
    }
    println!("running 1 test");
    parent();
    println!("test {TEST_NAME} ... ok");
}

/// Honours libtest's positional filters, `--exact`, `--skip` and `--ignored`.
fn selected(args: &[String]) -> bool {
    let takes_value = [
        "--test-threads",
        "--skip",
        "--format",
        "--color",
        "--logfile",
        "-Z",
    ];
    let exact = args.iter().any(|a| a == "--exact");
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if takes_value.contains(&arg.as_str()) {
            if arg == "--skip"
                && let Some(skip) = args.get(i + 1)
            {
                skips.push(skip.clone());
            }
            i += 2;
            continue;
        }
        if arg == "--ignored" {
            return false;
        }
        if !arg.starts_with('-') {
            filters.push(arg.clone());
        }
        i += 1;
    }
    let matches = |f: &String| {
        if exact {
            f == TEST_NAME
        } else {
            TEST_NAME.contains(f.as_str())
        }
    };
    (filters.is_empty() || filters.iter().any(matches)) && !skips.iter().any(matches)
}

fn batch_events(round: u32, writer: u32, k: u64) -> (String, Vec<NewEvent>) {
    let batch = format!("r{round}-w{writer}-b{k}");
    let events = (0..BATCH)
        .map(|i| NewEvent {
            event_id: EventId::new(format!("{batch}-{i}")).unwrap(),
            event_type: "crashtest.batch".into(),
            timestamp: Timestamp::from_unix_micros(1_769_601_600_000_000 + k as i64).unwrap(),
            actor_id: Some(format!("writer-{writer}")),
            payload: json!({ "batch": batch, "index": i, "size": BATCH, "text": "ünïcode ✓" }),
            principal: None,
        })
        .collect();
    (batch, events)
}

/// A bundle that adds a target with two tasks and three attempts to the graph.
fn graph_bundle(round: u32, k: u64) -> Vec<NewEvent> {
    let name = format!("g{round}-{k}");
    let mut scenario = Scenario::new(&name, &format!("target-{name}"));
    scenario.register_target();
    for task in ["build", "test"] {
        scenario.create_task(task, &[], Priority::Medium);
    }
    let (first, second, third) = (
        format!("{name}-build-1"),
        format!("{name}-build-2"),
        format!("{name}-test-1"),
    );
    scenario
        .start_attempt("build", &first, 1)
        .fail_attempt("build", &first, 1);
    scenario
        .start_attempt("build", &second, 2)
        .succeed_attempt("build", &second, 1);
    scenario
        .start_attempt("test", &third, 1)
        .succeed_attempt("test", &third, 2);
    scenario.build()
}

/// Appends batches from several concurrent writers, and graph bundles through a ledger that
/// saves its projection every few bundles, until killed.
fn child(dir: &Path) {
    let round: u32 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let durability = if std::env::var(CHILD_PERIODIC).is_ok() {
        Durability::Periodic {
            every: Duration::from_millis(30),
        }
    } else {
        Durability::Flush
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let options = SledOptions {
            durability,
            ..SledOptions::default()
        };
        let store = SledStore::open_with(dir, options).unwrap();
        say("ready");
        let started = Instant::now();
        // Opened in its own task, so that the batch writers start at once.
        let (events, graphs) = (store.events(), store.graphs());
        let mut writers = vec![tokio::spawn(async move {
            let policy = PersistPolicy { every_events: 50 };
            let ledger = Ledger::open_with(events, graphs, policy).await.unwrap();
            let mut k = 0;
            while started.elapsed() < CHILD_LIFETIME {
                let bundle = graph_bundle(round, k);
                ledger.ingest(bundle, Expectations::Derived).await.unwrap();
                k += 1;
            }
        })];
        for w in 0..WRITERS {
            let events = store.events();
            writers.push(tokio::spawn(async move {
                let mut k = 0;
                while started.elapsed() < CHILD_LIFETIME {
                    let (batch, new) = batch_events(round, w, k);
                    events.append(AppendRequest::new(new)).await.unwrap();
                    say(&format!("ack {batch}"));
                    k += 1;
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// What one round observed.
struct Round {
    acknowledged: BTreeSet<String>,
    ready: bool,
}

/// Runs one child and kills it after `delay` (counted from `ready`, or from the spawn when
/// `early`, which may hit the store while it opens and recovers).
fn run_child(dir: &Path, round: u32, periodic: bool, delay: Duration, early: bool) -> Round {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if periodic {
        command.env(CHILD_PERIODIC, "1");
    }
    let spawned = Instant::now();
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ready = false;
    let mut acknowledged = BTreeSet::new();
    let mut take = |line: String, ready: &mut bool| {
        if line == "ready" {
            *ready = true;
        } else if let Some(batch) = line.strip_prefix("ack ") {
            acknowledged.insert(batch.to_owned());
        }
    };
    if early {
        std::thread::sleep(delay.saturating_sub(spawned.elapsed()));
    } else {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the child opens the store");
        assert_eq!(line, "ready");
        ready = true;
        // The child owns the database now: opening it here fails at once.
        match SledStore::open(dir) {
            Err(EventStoreError::Locked { .. }) => {}
            other => panic!("round {round}: expected Locked while the child runs, got {other:?}"),
        }
        std::thread::sleep(delay);
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "round {round}: the child was killed");
    reader.join().unwrap();
    while let Ok(line) = lines.try_recv() {
        take(line, &mut ready);
    }
    Round {
        acknowledged,
        ready,
    }
}

/// What a reopened store held after a round.
struct Found {
    head: Option<Head>,
    /// The batches of this round.
    batches: BTreeSet<String>,
    /// The stored projection's checkpoint `seq`, and the nodes of the graph.
    saved_seq: u64,
    nodes: u64,
}

/// Checks the reopened store (see the module docs).
async fn check(dir: &Path, round: u32, previous: Option<Head>) -> Found {
    let store = SledStore::open(dir).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
    let events = store.events();
    let report = events
        .verify()
        .await
        .unwrap()
        .unwrap_or_else(|b| panic!("round {round}: the chain is broken: {b}"));
    let head = events.head().await.unwrap();
    assert_eq!(report.head, head);
    let after = previous.map_or(0, |h| h.seq);
    assert!(
        head.map_or(0, |h| h.seq) >= after,
        "round {round}: the log shrank"
    );
    if let Some(previous) = previous {
        let kept = events.read(previous.seq - 1, 1).await.unwrap();
        assert_eq!(
            kept[0].hash, previous.hash,
            "round {round}: the prefix changed"
        );
    }

    // Every batch written since the previous round is whole, in order and contiguous.
    let mut batches: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut cursor = after;
    loop {
        let page = events.read(cursor, 2048).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        for event in page {
            // The ledger's graph bundles are checked through the projection below.
            let Some(batch) = event.payload.get("batch").and_then(|b| b.as_str()) else {
                continue;
            };
            let batch = batch.to_owned();
            assert!(
                batch.starts_with(&format!("r{round}-")),
                "round {round}: unexpected batch {batch}"
            );
            let index = event.payload["index"].as_u64().unwrap();
            batches.entry(batch).or_default().push((event.seq, index));
        }
    }
    for (batch, members) in &batches {
        assert_eq!(
            members.len() as u64,
            BATCH,
            "round {round}: batch {batch} is half present: {members:?}"
        );
        for (offset, (seq, index)) in members.iter().enumerate() {
            assert_eq!(
                *index, offset as u64,
                "round {round}: batch {batch} reordered"
            );
            assert_eq!(
                *seq,
                members[0].0 + offset as u64,
                "round {round}: batch {batch} split"
            );
        }
    }

    // The stored projection loads, and caught up with the log it is the log folded afresh.
    let stored = store
        .graphs()
        .load()
        .await
        .unwrap_or_else(|e| panic!("round {round}: the stored projection does not load: {e}"));
    assert!(
        stored.checkpoint.map_or(0, |h| h.seq) <= head.map_or(0, |h| h.seq),
        "round {round}: the projection is ahead of the log"
    );
    let ledger = Ledger::open(store.events(), store.graphs()).await.unwrap();
    let mut fresh = Graph::new();
    let mut cursor = 0;
    loop {
        let page = events.read(cursor, 2048).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        for event in &page {
            fresh.apply(event);
        }
    }
    assert!(
        *ledger.graph().await == fresh,
        "round {round}: the stored projection, caught up, differs from the log folded afresh"
    );
    assert!(
        fresh.anomalies().is_empty(),
        "round {round}: {:?}",
        fresh.anomalies()
    );
    Found {
        head,
        batches: batches.into_keys().collect(),
        saved_seq: stored.checkpoint.map_or(0, |h| h.seq),
        nodes: fresh.summary().total_nodes,
    }
}

fn parent() {
    let seed = std::env::var(SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    println!("crash test seed {seed} (set {SEED} to replay the same kill delays)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::TempDir::new().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut head = None;
    let (mut acknowledged_total, mut lost_periodic, mut rounds_with_acks) = (0, 0, 0);
    let (mut saved_seq, mut nodes) = (0, 0);
    for round in 0..FLUSH_ROUNDS + PERIODIC_ROUNDS {
        let periodic = round >= FLUSH_ROUNDS;
        let early = round % 6 == 5;
        let delay = if early {
            Duration::from_millis(rng.random_range(0..=40))
        } else {
            Duration::from_millis(rng.random_range(0..=150))
        };
        let outcome = run_child(dir.path(), round, periodic, delay, early);
        let found = runtime.block_on(check(dir.path(), round, head));
        let (new_head, present) = (found.head, found.batches);
        saved_seq = found.saved_seq;
        nodes = found.nodes;
        let missing: Vec<&String> = outcome.acknowledged.difference(&present).collect();
        if periodic {
            lost_periodic += missing.len();
        } else {
            assert!(
                missing.is_empty(),
                "round {round} (seed {seed}): acknowledged batches lost: {missing:?}"
            );
        }
        println!(
            "round {round:2}: {} after {delay:?}{}, {} batches acknowledged, {} present, head {}, \
             projection saved at {saved_seq} ({nodes} nodes)",
            if periodic { "periodic" } else { "flush" },
            if early { " from spawn" } else { " from ready" },
            outcome.acknowledged.len(),
            present.len(),
            new_head.map_or(0, |h| h.seq),
        );
        assert!(
            outcome.ready || outcome.acknowledged.is_empty(),
            "acks before ready"
        );
        acknowledged_total += outcome.acknowledged.len();
        rounds_with_acks += usize::from(!outcome.acknowledged.is_empty());
        head = new_head;
    }
    println!(
        "{} kills in {:?}: {acknowledged_total} batches acknowledged in {rounds_with_acks} rounds, \
         {lost_periodic} acknowledged periodic batches lost, final head {}",
        FLUSH_ROUNDS + PERIODIC_ROUNDS,
        started.elapsed(),
        head.map_or(0, |h| h.seq)
    );
    assert!(
        rounds_with_acks >= (FLUSH_ROUNDS / 2) as usize,
        "too few rounds were killed while appending to prove anything"
    );
    assert!(
        saved_seq > 0 && nodes > 0,
        "the ledger never saved a projection to prove anything"
    );
}
