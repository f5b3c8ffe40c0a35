//! Every guardrail, enforced by the runner and visible as events: the real ledger on memory
//! stores, the real forge and backlog fetch against `FakeGitHub`, a scripted executor, and
//! tokio's paused clock.

mod support {
    pub(crate) mod scheduler;
}

use std::time::Duration;

use leviathan::scheduler::SchedulerOptions;
use leviathan_core::{
    EventId, Expectations, NewEvent, Timestamp,
    catalogue::{AttemptFailed, EventBody},
    model::{FailureClass, FailureKind},
    plan::SkipReason,
};
use support::scheduler::{Step, World, advance_past, freeze, skip_of, spawn_daemon};

const ONE_TASK: &str = "tasks:\n  - id: docs-guide\n    title: Write the guide\n    priority: high\n    ready: true\n    allowed_paths: [docs/GUIDE.md]\n";

const TWO_TASKS: &str = "tasks:\n  - id: alpha\n    title: Alpha\n    priority: high\n    ready: true\n    allowed_paths: [docs/alpha.md]\n  - id: beta\n    title: Beta\n    priority: medium\n    ready: true\n    allowed_paths: [docs/beta.md]\n";

const ENABLED: &str = "autonomy: {enabled: true}";

fn fail() -> Step {
    Step::Fail(FailureKind::TestsFailed, FailureClass::Transient)
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_a_jittered_delay_before_the_retry() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(
        ENABLED,
        "  max_attempts_per_task: 5\n  circuit_breaker: {enabled: false}\n  retry: {initial_backoff_seconds: 60, factor: 2, max_backoff_seconds: 3600, jitter: true}\n",
    );
    world
        .executor
        .script("docs-guide", &[fail(), fail(), Step::Succeed]);
    let scheduler = world.builder(config, 7).build().unwrap();

    assert_eq!(scheduler.run_once().await.unwrap().dispatched.len(), 1);
    scheduler.wait_idle().await;

    // The retry is recorded with a jittered not-before within [now, now + 60 s].
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty(), "{report:#?}");
    let retries = world.of_type("retry.scheduled").await;
    let [(event, EventBody::RetryScheduled(retry))] = retries.as_slice() else {
        panic!("one retry: {retries:#?}");
    };
    assert_eq!(retry.retry_number, 2);
    let delay = retry.not_before.saturating_since(event.timestamp);
    assert!(
        retry.not_before >= event.timestamp && delay <= Duration::from_secs(60),
        "not_before {} is outside [{}, +60 s]",
        retry.not_before,
        event.timestamp
    );
    assert!(
        (retry.backoff_seconds - delay.as_secs_f64()).abs() < 1e-3,
        "the recorded backoff is the delay"
    );

    // Not before it: the task waits, whatever the cycle.
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    assert_eq!(
        skip_of(&report, "docs-guide"),
        &SkipReason::Backoff {
            until: Some(retry.not_before)
        }
    );
    tokio::time::advance(delay / 2).await;
    assert!(scheduler.run_once().await.unwrap().dispatched.is_empty());

    // Past it: attempt #2.
    advance_past(retry.not_before, event.timestamp.saturating_add(delay / 2)).await;
    let report = scheduler.run_once().await.unwrap();
    assert_eq!(report.dispatched.len(), 1, "{report:#?}");
    assert_eq!(report.dispatched[0].attempt_number, 2);
    scheduler.wait_idle().await;

    // The second retry backs off by up to 60 × 2 s.
    scheduler.run_once().await.unwrap();
    let retries = world.of_type("retry.scheduled").await;
    let (event, EventBody::RetryScheduled(second)) = &retries[1] else {
        panic!("a second retry: {retries:#?}");
    };
    assert_eq!(second.retry_number, 3);
    let second_delay = second.not_before.saturating_since(event.timestamp);
    assert!(second.not_before >= event.timestamp && second_delay <= Duration::from_secs(120));
    assert_ne!(delay, second_delay, "the delays are drawn, not fixed");
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_draws_the_same_jitter() {
    let _frozen = freeze();
    let mut delays = Vec::new();
    for _ in 0..2 {
        let world = World::start(ONE_TASK).await;
        let config = world.target(
            ENABLED,
            "  circuit_breaker: {enabled: false}\n  retry: {initial_backoff_seconds: 600, jitter: true}\n",
        );
        world.executor.script("docs-guide", &[fail()]);
        let scheduler = world.builder(config, 42).build().unwrap();
        scheduler.run_once().await.unwrap();
        scheduler.wait_idle().await;
        scheduler.settle().await.unwrap();
        let retries = world.of_type("retry.scheduled").await;
        let (_, EventBody::RetryScheduled(retry)) = &retries[0] else {
            panic!("a retry");
        };
        delays.push(retry.backoff_seconds);
    }
    assert_eq!(delays[0], delays[1]);
    assert!(delays[0] > 0.0 && delays[0] < 600.0, "{delays:?}");
}

#[tokio::test(start_paused = true)]
async fn the_circuit_opens_pauses_lets_one_probe_through_and_closes() {
    let _frozen = freeze();
    let world = World::start(TWO_TASKS).await;
    let config = world.target(
        ENABLED,
        "  max_running_attempts: 2\n  max_open_prs: 5\n  max_attempts_per_task: 5\n  circuit_breaker: {consecutive_failures_threshold: 2, cooldown_minutes: 10}\n  retry: {initial_backoff_seconds: 1, jitter: false}\n",
    );
    world.executor.script("alpha", &[fail(), Step::Succeed]);
    world.executor.script("beta", &[fail(), Step::Succeed]);
    let scheduler = world.builder(config, 1).build().unwrap();

    assert_eq!(scheduler.run_once().await.unwrap().dispatched.len(), 2);
    scheduler.wait_idle().await;

    // Two consecutive failures: the circuit opens; nothing is dispatched.
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty(), "{report:#?}");
    let opened = world.of_type("circuit.opened").await;
    let [(event, EventBody::CircuitOpened(open))] = opened.as_slice() else {
        panic!("one circuit.opened: {opened:#?}");
    };
    assert_eq!(open.consecutive_failures, 2);
    assert_eq!(
        open.open_until,
        event.timestamp.saturating_add(Duration::from_secs(600))
    );

    // During the cooldown (the retries' backoff long over), nothing is dispatched.
    tokio::time::advance(Duration::from_secs(300)).await;
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    assert_eq!(
        skip_of(&report, "alpha"),
        &SkipReason::CircuitOpen {
            until: open.open_until
        }
    );

    // After it: exactly one probe, although two may run.
    advance_past(
        open.open_until,
        event.timestamp.saturating_add(Duration::from_secs(300)),
    )
    .await;
    let report = scheduler.run_once().await.unwrap();
    assert_eq!(report.dispatched.len(), 1, "{report:#?}");
    assert!(report.dispatched[0].probe);
    assert_eq!(report.dispatched[0].task_id, "alpha");
    assert!(matches!(
        skip_of(&report, "beta"),
        SkipReason::CircuitOpen { .. }
    ));
    scheduler.wait_idle().await;

    // The probe succeeded: the circuit closes and the other task runs again.
    let report = scheduler.run_once().await.unwrap();
    assert_eq!(world.count("circuit.closed").await, 1);
    assert_eq!(report.dispatched.len(), 1);
    assert_eq!(report.dispatched[0].task_id, "beta");
    assert!(!report.dispatched[0].probe);
    assert_eq!(world.count("circuit.opened").await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_circuit_again() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(
        ENABLED,
        "  max_attempts_per_task: 5\n  circuit_breaker: {consecutive_failures_threshold: 1, cooldown_minutes: 10}\n  retry: {initial_backoff_seconds: 1, jitter: false}\n",
    );
    world.executor.script("docs-guide", &[fail(), fail()]);
    let scheduler = world.builder(config, 1).build().unwrap();

    scheduler.run_once().await.unwrap();
    scheduler.wait_idle().await;
    scheduler.run_once().await.unwrap();
    assert_eq!(world.count("circuit.opened").await, 1);

    tokio::time::advance(Duration::from_secs(601)).await;
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched[0].probe, "{report:#?}");
    scheduler.wait_idle().await;

    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    let opened = world.of_type("circuit.opened").await;
    let [_, (event, EventBody::CircuitOpened(again))] = opened.as_slice() else {
        panic!("opened twice: {opened:#?}");
    };
    assert_eq!(again.consecutive_failures, 2);
    assert_eq!(
        again.open_until,
        event.timestamp.saturating_add(Duration::from_secs(600))
    );
    assert_eq!(world.count("circuit.closed").await, 0);
}

const THREE_TASKS: &str = "tasks:\n  - {id: one, title: One, ready: true, allowed_paths: [docs/1.md]}\n  - {id: two, title: Two, ready: true, allowed_paths: [docs/2.md]}\n  - {id: three, title: Three, ready: true, allowed_paths: [docs/3.md]}\n";

#[tokio::test(start_paused = true)]
async fn running_attempts_are_capped_per_target_and_overall() {
    let _frozen = freeze();
    let world = World::start(THREE_TASKS).await;
    let config = world.target(ENABLED, "  max_running_attempts: 2\n  max_open_prs: 10\n");
    for task in ["one", "two", "three"] {
        world.executor.script(task, &[Step::Hang]);
    }
    let scheduler = world.builder(config, 1).build().unwrap();
    let report = scheduler.run_once().await.unwrap();
    assert_eq!(report.dispatched.len(), 2, "{report:#?}");
    assert_eq!(
        skip_of(&report, "three"),
        &SkipReason::MaxRunning {
            scope: "target",
            running: 2,
            max: 2
        }
    );
    // Still two while they run.
    assert!(scheduler.run_once().await.unwrap().dispatched.is_empty());
    assert_eq!(world.count("attempt.created").await, 2);
    assert_eq!(scheduler.running().len(), 2);

    let world = World::start(THREE_TASKS).await;
    let config = world.target(ENABLED, "  max_running_attempts: 3\n  max_open_prs: 10\n");
    for task in ["one", "two", "three"] {
        world.executor.script(task, &[Step::Hang]);
    }
    let scheduler = world
        .builder(config, 1)
        .options(SchedulerOptions {
            max_running_global: 1,
            ..SchedulerOptions::default()
        })
        .build()
        .unwrap();
    let report = scheduler.run_once().await.unwrap();
    assert_eq!(report.dispatched.len(), 1);
    assert!(matches!(
        skip_of(&report, "two"),
        SkipReason::MaxRunning {
            scope: "global",
            max: 1,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn max_attempts_fail_the_task() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(
        ENABLED,
        "  max_attempts_per_task: 2\n  circuit_breaker: {enabled: false}\n  retry: {initial_backoff_seconds: 5, jitter: false}\n",
    );
    world
        .executor
        .script("docs-guide", &[fail(), fail(), Step::Succeed]);
    let scheduler = world.builder(config, 1).build().unwrap();

    scheduler.run_once().await.unwrap();
    scheduler.wait_idle().await;
    scheduler.run_once().await.unwrap(); // retry #2 scheduled
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(scheduler.run_once().await.unwrap().dispatched.len(), 1);
    scheduler.wait_idle().await;

    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    let failed = world.of_type("task.failed").await;
    let [(_, EventBody::TaskFailed(failed))] = failed.as_slice() else {
        panic!("one task.failed: {failed:#?}");
    };
    assert!(
        failed
            .0
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("max attempts (2)"),
        "{failed:?}"
    );
    assert_eq!(
        world.count("retry.scheduled").await,
        1,
        "no retry after the last attempt"
    );

    tokio::time::advance(Duration::from_secs(3600)).await;
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    assert_eq!(world.count("attempt.created").await, 2);
    assert_eq!(world.count("task.failed").await, 1, "recorded once");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_blocks_the_task_without_retry() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(ENABLED, "  max_attempts_per_task: 5\n");
    world.executor.script(
        "docs-guide",
        &[Step::Fail(
            FailureKind::PathViolation,
            FailureClass::Permanent,
        )],
    );
    let scheduler = world.builder(config, 1).build().unwrap();
    scheduler.run_once().await.unwrap();
    scheduler.wait_idle().await;

    scheduler.run_once().await.unwrap();
    let blocked = world.of_type("task.blocked").await;
    let [(_, EventBody::TaskBlocked(blocked))] = blocked.as_slice() else {
        panic!("one task.blocked: {blocked:#?}");
    };
    assert!(
        blocked
            .0
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("path_violation"),
        "{blocked:?}"
    );
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    assert_eq!(world.count("retry.scheduled").await, 0);
    assert_eq!(world.count("attempt.created").await, 1);
}

#[tokio::test(start_paused = true)]
async fn executor_errors_are_infrastructure_failures_of_their_class() {
    let _frozen = freeze();
    let world = World::start(TWO_TASKS).await;
    let config = world.target(ENABLED, "  max_running_attempts: 2\n  max_open_prs: 5\n");
    world
        .executor
        .script("alpha", &[Step::Error { transient: true }]);
    world
        .executor
        .script("beta", &[Step::Error { transient: false }]);
    let scheduler = world.builder(config, 1).build().unwrap();
    scheduler.run_once().await.unwrap();
    scheduler.wait_idle().await;
    let failed = world.of_type("attempt.failed").await;
    let mut classes: Vec<(FailureKind, FailureClass)> = failed
        .iter()
        .map(|(_, body)| match body {
            EventBody::AttemptFailed(f) => (f.failure_kind, f.class()),
            other => panic!("{other:?}"),
        })
        .collect();
    classes.sort_by_key(|(_, class)| *class == FailureClass::Transient);
    assert_eq!(
        classes,
        [
            (FailureKind::Infrastructure, FailureClass::Permanent),
            (FailureKind::Infrastructure, FailureClass::Transient)
        ]
    );
}

const ORDERED: &str = "tasks:
  - {id: low-first, title: Low, priority: low, ready: true, allowed_paths: [docs/low.md]}
  - {id: high-dep, title: High with a dependency, priority: high, ready: true, dependencies: [base], allowed_paths: [docs/dep.md]}
  - {id: base, title: Base, priority: medium, ready: true, allowed_paths: [docs/base.md]}
  - {id: high-free, title: High, priority: high, ready: true, allowed_paths: [docs/free.md]}
  - {id: not-ready, title: Not ready, priority: high, ready: false, allowed_paths: [docs/no.md]}
  - {id: outside, title: Outside, priority: high, ready: true, allowed_paths: [ops/deploy.yaml]}
";

#[tokio::test(start_paused = true)]
async fn dependencies_scope_and_priority_decide_the_order() {
    let _frozen = freeze();
    let world = World::start(ORDERED).await;
    let config = world.target(ENABLED, "  max_open_prs: 10\n");
    for task in ["low-first", "high-dep", "base", "high-free"] {
        world.executor.script(task, &[Step::Succeed]);
    }
    let scheduler = world.builder(config, 1).build().unwrap();

    let first = scheduler.run_once().await.unwrap();
    assert_eq!(
        skip_of(&first, "high-dep"),
        &SkipReason::Dependencies {
            waiting_on: vec!["base".parse().unwrap()]
        }
    );
    assert_eq!(skip_of(&first, "not-ready"), &SkipReason::NotReady);
    assert!(matches!(
        skip_of(&first, "outside"),
        SkipReason::Scope { .. }
    ));
    scheduler.wait_idle().await;
    for _ in 0..4 {
        scheduler.run_once().await.unwrap();
        scheduler.wait_idle().await;
    }
    assert_eq!(
        world.dispatched_tasks().await,
        ["high-free", "base", "high-dep", "low-first"]
    );
    assert_eq!(world.count("task.completed").await, 4);
    assert_eq!(world.pulls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_times_the_attempt_out_and_cancels_it() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(ENABLED, "  timeout: {attempt_timeout_minutes: 2}\n");
    world.executor.script("docs-guide", &[Step::Hang]);
    let scheduler = world.builder(config, 1).build().unwrap();
    let report = scheduler.run_once().await.unwrap();
    let attempt = report.dispatched[0].attempt_id.clone();

    tokio::time::advance(Duration::from_secs(119)).await;
    scheduler.run_once().await.unwrap();
    assert_eq!(world.count("attempt.timed_out").await, 0, "not yet");

    tokio::time::advance(Duration::from_secs(2)).await;
    scheduler.run_once().await.unwrap();
    let timed_out = world.of_type("attempt.timed_out").await;
    let [(_, EventBody::AttemptTimedOut(timed_out))] = timed_out.as_slice() else {
        panic!("one attempt.timed_out: {timed_out:#?}");
    };
    assert_eq!(timed_out.attempt_id, attempt);
    assert_eq!(timed_out.deadline_seconds, Some(120));
    assert_eq!(world.executor.cancelled(), [attempt]);
    scheduler.wait_idle().await;
    assert_eq!(
        world.count("attempt.failed").await,
        0,
        "the cancelled run's own outcome is not recorded over the timeout"
    );
    scheduler.run_once().await.unwrap();
    assert_eq!(
        world.count("retry.scheduled").await,
        1,
        "a timeout is transient: retried"
    );
}

/// An operator's cancellation (`attempt.failed`, kind `cancelled`, as `POST /v1/attempts/{id}/cancel`
/// records it) stops the run at the next cycle, and the task is not retried.
#[tokio::test(start_paused = true)]
async fn an_operator_cancellation_stops_the_run() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(ENABLED, "");
    world.executor.script("docs-guide", &[Step::Hang]);
    let scheduler = world.builder(config, 1).build().unwrap();
    let report = scheduler.run_once().await.unwrap();
    let attempt = report.dispatched[0].attempt_id.clone();
    scheduler.run_once().await.unwrap();
    assert!(
        world.executor.cancelled().is_empty(),
        "running, not cancelled"
    );

    let cancel = NewEvent::new(
        EventId::new("cancel-by-operator").unwrap(),
        Timestamp::now(),
        Some("operator".into()),
        &AttemptFailed {
            attempt_id: attempt.clone(),
            failure_kind: FailureKind::Cancelled,
            failure_class: Some(FailureClass::Permanent),
            error_summary: "cancelled by an operator: wrong task".into(),
        },
    );
    world
        .ledger
        .ingest(vec![cancel], Expectations::Derived)
        .await
        .unwrap();
    scheduler.run_once().await.unwrap();
    assert_eq!(world.executor.cancelled(), [attempt]);
    scheduler.wait_idle().await;
    scheduler.run_once().await.unwrap();
    assert_eq!(world.count("attempt.failed").await, 1, "recorded once");
    assert_eq!(world.count("retry.scheduled").await, 0, "not retried");
    assert_eq!(
        world.dispatched_tasks().await.len(),
        1,
        "not dispatched again"
    );
}

#[tokio::test(start_paused = true)]
async fn without_autonomy_nothing_is_dispatched() {
    let _frozen = freeze();
    for autonomy in ["", "autonomy: {enabled: false}"] {
        let world = World::start(ONE_TASK).await;
        let config = world.target(autonomy, "  max_open_prs: 3\n");
        world.executor.script("docs-guide", &[Step::Succeed]);
        let scheduler = world.builder(config, 1).build().unwrap();
        let report = scheduler.run_once().await.unwrap();
        assert!(report.dispatched.is_empty(), "{autonomy:?}: {report:#?}");
        assert_eq!(
            skip_of(&report, "docs-guide"),
            &SkipReason::AutonomyDisabled
        );
        assert_eq!(
            world.count("task.created").await,
            1,
            "the backlog is still synced"
        );
        assert_eq!(world.count("attempt.created").await, 0);
        assert!(world.executor.started().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn once_twice_over_one_log_creates_nothing_twice() {
    let _frozen = freeze();
    let world = World::start(TWO_TASKS).await;
    let mut config = world.target(ENABLED, "  max_running_attempts: 2\n  max_open_prs: 5\n");
    // A target whose tests need more than Landlock allows: its workers are told.
    config.landlock = false;
    // A target that wants draft pull requests: its workers are told too.
    config.delivery.draft_prs = true;
    world.executor.script("alpha", &[Step::Succeed]);
    world.executor.script("beta", &[Step::Succeed]);
    let first = world.builder(config.clone(), 1).build().unwrap();
    let report = first.once().await.unwrap();
    assert_eq!(report.dispatched.len(), 2);
    let events = world.events().await.len();
    let pulls = world.pulls();
    assert_eq!(pulls.len(), 2);

    // A second process over the same log: nothing new to do, nothing recorded twice.
    let second = world.builder(config, 2).build().unwrap();
    let report = second.once().await.unwrap();
    assert!(
        report.dispatched.is_empty() && report.actions.is_empty(),
        "{report:#?}"
    );
    assert_eq!(world.events().await.len(), events);
    assert_eq!(world.pulls(), pulls);
    let started = world.executor.started();
    assert_eq!(started.len(), 2);
    for spec in started {
        assert_eq!(spec.env["LEVIATHAN_LANDLOCK"], "false");
        assert_eq!(spec.env["LEVIATHAN_DRAFT_PRS"], "true");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_attempts_finish_then_cancels_them_as_transient() {
    let frozen = freeze();
    let world = World::start(ONE_TASK).await;
    let config = world.target(ENABLED, "");
    world.executor.script("docs-guide", &[Step::Hang]);
    let scheduler = world
        .builder(config, 1)
        .options(SchedulerOptions {
            tick: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(90),
            ..SchedulerOptions::default()
        })
        .build()
        .unwrap();
    let (stop, daemon) = spawn_daemon(&scheduler);
    let mut cycles = scheduler.cycles();
    cycles.wait_for(|n| *n >= 1).await.unwrap();
    assert_eq!(world.count("attempt.created").await, 1);
    let attempt = scheduler.running()[0].clone();

    // Stop; then let time run: the grace period passes with the attempt still running.
    stop.send(()).unwrap();
    drop(frozen);
    daemon.await.unwrap().expect("a clean shutdown");

    let failed = world.of_type("attempt.failed").await;
    let [(_, EventBody::AttemptFailed(failed))] = failed.as_slice() else {
        panic!("one attempt.failed: {failed:#?}");
    };
    assert_eq!(failed.attempt_id, attempt);
    assert_eq!(failed.failure_kind, FailureKind::Cancelled);
    assert_eq!(failed.class(), FailureClass::Transient);
    assert_eq!(world.executor.cancelled(), [attempt]);
    assert!(scheduler.running().is_empty());
    assert_eq!(
        world.count("attempt.created").await,
        1,
        "no dispatch after the stop"
    );
}
