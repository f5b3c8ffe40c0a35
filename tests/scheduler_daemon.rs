//! The daemon's wake-ups and the recovery of orphaned attempts, at the runner level (real ledger,
//! forge and backlog fetch; a scripted executor; tokio's paused clock).

mod support {
    pub(crate) mod scheduler;
}

use std::time::Duration;

use leviathan::scheduler::SchedulerOptions;
use leviathan_core::{
    EventId, Expectations, NewEvent, Timestamp,
    catalogue::{AttemptCreated, EventBody},
    model::{FailureClass, FailureKind},
};
use support::scheduler::{Step, World, freeze, spawn_daemon};

const CHAIN: &str = "tasks:\n  - {id: first, title: First, priority: high, ready: true, allowed_paths: [docs/1.md]}\n  - {id: second, title: Second, ready: true, dependencies: [first], allowed_paths: [docs/2.md]}\n";

const ONE_TASK: &str = "tasks:\n  - id: docs-guide\n    title: Write the guide\n    ready: true\n    allowed_paths: [docs/GUIDE.md]\n";

#[tokio::test(start_paused = true)]
async fn an_attempt_that_ends_wakes_the_daemon_before_its_tick() {
    let _frozen = freeze();
    let world = World::start(CHAIN).await;
    let config = world.target("autonomy: {enabled: true}", "  max_open_prs: 5\n");
    world.executor.script("first", &[Step::Succeed]);
    world.executor.script("second", &[Step::Hang]);
    let scheduler = world
        .builder(config, 1)
        .options(SchedulerOptions {
            tick: Duration::from_secs(3600),
            ..SchedulerOptions::default()
        })
        .build()
        .unwrap();
    let (stop, daemon) = spawn_daemon(&scheduler);
    // Time stands still (no tick can fire), yet `second` is dispatched once `first` ends.
    let mut cycles = scheduler.cycles();
    let start = tokio::time::Instant::now();
    let woken = async {
        while world.dispatched_tasks().await.len() < 2 {
            cycles.changed().await.unwrap();
        }
    };
    // The paused clock cannot bound this wait; a blocking wait on the side does (in real time),
    // and ends as soon as `done` is dropped.
    let (done, bound) = std::sync::mpsc::channel::<()>();
    let watchdog = tokio::task::spawn_blocking(move || bound.recv_timeout(Duration::from_secs(60)));
    tokio::select! {
        () = woken => drop(done),
        _ = watchdog => panic!("the daemon did not wake when the first attempt ended"),
    }
    assert_eq!(tokio::time::Instant::now(), start, "no time passed");
    assert_eq!(
        world.dispatched_tasks().await,
        ["first", "second"],
        "dispatched in dependency order"
    );
    assert!(*cycles.borrow() >= 2);
    stop.send(()).unwrap();
    drop(daemon);
}

/// Records `attempt.created` for `docs-guide` as an earlier scheduler would have.
async fn orphan(world: &World, attempt: &str, executor: &str) {
    let event = NewEvent::new(
        EventId::new(format!("earlier-{attempt}")).unwrap(),
        Timestamp::now(),
        Some("scheduler".into()),
        &AttemptCreated {
            attempt_id: attempt.parse().unwrap(),
            task_id: "docs-guide".parse().unwrap(),
            target_id: "demo".parse().unwrap(),
            attempt_number: 1,
            executor: Some(executor.into()),
            deadline_seconds: Some(900),
            base: None,
        },
    );
    world
        .ledger
        .ingest(vec![event], Expectations::Derived)
        .await
        .unwrap();
}

/// Registers the target and syncs the backlog without dispatching (autonomy off for one cycle).
async fn sync_only(world: &World, config: &leviathan_core::target::TargetConfig) {
    let mut quiet = config.clone();
    quiet.policy.autonomy_enabled = false;
    let report = world
        .builder(quiet, 1)
        .build()
        .unwrap()
        .run_once()
        .await
        .unwrap();
    assert!(report.dispatched.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_orphan_without_a_trace_is_ended_as_lost_once_and_retried() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(
        "autonomy: {enabled: true}",
        "  circuit_breaker: {enabled: false}\n  retry: {initial_backoff_seconds: 10, jitter: false}\n",
    );
    // An earlier process created an attempt and died: a live attempt that nobody runs.
    sync_only(&world, &config).await;
    orphan(&world, "attempt-orphan", "scripted").await;

    let restarted = world.builder(config, 2).build().unwrap();
    assert_eq!(restarted.recover().await.unwrap(), 1);
    restarted.wait_idle().await;
    let failed = world.of_type("attempt.failed").await;
    let [(_, EventBody::AttemptFailed(lost))] = failed.as_slice() else {
        panic!("one attempt.failed: {failed:#?}");
    };
    assert_eq!(lost.attempt_id, "attempt-orphan");
    assert_eq!(lost.failure_kind, FailureKind::Lost);
    assert_eq!(lost.class(), FailureClass::Transient);

    // Recovering again finds nothing; the task is retried by policy.
    assert_eq!(restarted.recover().await.unwrap(), 0);
    world.executor.script("docs-guide", &[Step::Succeed]);
    restarted.run_once().await.unwrap();
    assert_eq!(world.count("retry.scheduled").await, 1);
    tokio::time::advance(Duration::from_secs(11)).await;
    let report = restarted.run_once().await.unwrap();
    assert_eq!(report.dispatched.len(), 1);
    assert_eq!(report.dispatched[0].attempt_number, 2);
    restarted.wait_idle().await;
    assert_eq!(world.count("attempt.failed").await, 1, "lost exactly once");
    assert_eq!(world.count("task.completed").await, 1);
}

#[tokio::test(start_paused = true)]
async fn an_orphan_of_another_executor_is_left_to_its_deadline() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target("autonomy: {enabled: true}", "");
    sync_only(&world, &config).await;
    orphan(&world, "attempt-k8s", "k8s").await;

    let scheduler = world.builder(config, 1).build().unwrap();
    assert_eq!(scheduler.recover().await.unwrap(), 0);
    assert_eq!(world.count("attempt.failed").await, 0);
    let report = scheduler.run_once().await.unwrap();
    assert!(
        report.dispatched.is_empty(),
        "the task is in flight elsewhere"
    );

    // Its deadline (900 s) still ends it.
    tokio::time::advance(Duration::from_secs(901)).await;
    scheduler.run_once().await.unwrap();
    assert_eq!(world.count("attempt.timed_out").await, 1);
    assert!(
        world.executor.cancelled().is_empty(),
        "not cancelled here: this process does not run it"
    );
}
