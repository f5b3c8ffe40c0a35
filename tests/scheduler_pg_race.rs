//! Two schedulers over one PostgreSQL store (two `PgStore`s on one database, each with its own
//! `Ledger`) cycling at the same time never create two attempts for one task, nor record one
//! decision twice: `attempt.created`, `retry.scheduled` and `circuit.opened` are appended under
//! the version of the task's or target's stream the plan saw.
//!
//! The race is forced, not hoped for: each scheduler's clock makes the cycle that reads it wait
//! for the other's, right before both plan, so both plan from the same state every time.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use leviathan::scheduler::{Clock, Scheduler, SchedulerOptions, TokioClock};
use leviathan_core::{
    AttemptId, AttemptOutcome, AttemptSpec, Executor, ExecutorError, Ledger, Timestamp,
    backlog::{Backlog, parse_backlog},
    memory::{MemoryBacklog, MemoryForge},
    model::{FailureClass, FailureKind},
    plan::{PlanContext, SchedulingPolicy, plan},
    target::{TargetConfig, parse_target_config},
};
use leviathan_store_pg::testkit::TestDatabase;

const ROUNDS: usize = 10;
const TASKS: usize = 6;

/// Records every attempt it is asked to run; each fails at once (transient), so that both
/// schedulers then decide its retry.
#[derive(Debug, Default)]
struct Recording {
    started: Mutex<Vec<AttemptSpec>>,
}

#[async_trait]
impl Executor for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    async fn run(&self, spec: &AttemptSpec) -> Result<AttemptOutcome, ExecutorError> {
        self.started.lock().unwrap().push(spec.clone());
        Ok(AttemptOutcome::failed(
            spec.attempt_id.clone(),
            FailureKind::TestsFailed,
            FailureClass::Transient,
            "tests fail",
        ))
    }
    async fn cancel(&self, attempt_id: &AttemptId) -> Result<(), ExecutorError> {
        Err(ExecutorError::NotFound(attempt_id.clone()))
    }
}

fn backlog() -> Backlog {
    let mut text = String::from("tasks:\n");
    for i in 0..TASKS {
        text.push_str(&format!(
            "  - {{id: task-{i}, title: Task {i}, ready: true, allowed_paths: [docs/{i}.md]}}\n"
        ));
    }
    parse_backlog("backlog.yaml", &text).unwrap()
}

fn target() -> TargetConfig {
    target_with_autonomy(true)
}

fn target_with_autonomy(enabled: bool) -> TargetConfig {
    parse_target_config(
        "demo.yaml",
        &format!(
            "name: demo\nrepo_url: https://example.com/acme/widgets.git\nautonomy: {{enabled: {enabled}}}\n\
             guardrails: {{allowed_path_prefixes: [docs/], max_open_prs: 100, max_running_attempts: 100}}\n"
        ),
        None,
    )
    .unwrap()
}

async fn scheduler_with_clock(
    db: &TestDatabase,
    executor: Arc<Recording>,
    clock: Arc<dyn Clock>,
) -> Scheduler {
    scheduler_of(db, target(), executor, clock).await
}

async fn scheduler_of(
    db: &TestDatabase,
    target: TargetConfig,
    executor: Arc<Recording>,
    clock: Arc<dyn Clock>,
) -> Scheduler {
    let store = db.store().await;
    let ledger = Arc::new(Ledger::open(store.events(), store.graphs()).await.unwrap());
    // The same backlog every time and a forge without pull requests: the race is about
    // dispatch, not about git.
    let backlogs = MemoryBacklog::new();
    backlogs.set(target.name.clone(), "main", backlog());
    Scheduler::builder(ledger, executor as Arc<dyn Executor>)
        .clock(clock)
        .target(target, Arc::new(MemoryForge::new()))
        .backlog(backlogs)
        .options(SchedulerOptions {
            max_running_global: 100,
            ..SchedulerOptions::default()
        })
        .build()
        .unwrap()
}

/// Both schedulers plan every task from the same state, every round: each task's attempt is
/// created by exactly one of them and started once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_never_dispatch_one_task_twice() {
    let mut raced = 0;
    for round in 0..ROUNDS {
        let db = TestDatabase::create().await;
        // A scheduler with autonomy off records the target and its backlog and dispatches
        // nothing, so the racing cycles have nothing to record before they plan: the first time
        // they read their clocks is right before planning.
        let syncer = scheduler_of(
            &db,
            target_with_autonomy(false),
            Arc::new(Recording::default()),
            Arc::new(TokioClock::new()),
        )
        .await;
        assert!(syncer.run_once().await.unwrap().dispatched.is_empty());
        let policy = SchedulingPolicy {
            targets: BTreeMap::from([(target().name, target().policy)]),
            max_running_global: 100,
        };
        let planned = plan(
            &*syncer.ledger().graph().await,
            &policy,
            &PlanContext::at(Timestamp::now()),
        );
        assert_eq!(
            planned.dispatch.len(),
            TASKS,
            "round {round}: from this state every task is dispatched"
        );

        let clocks = MeetingClock::pair();
        let (left_exec, right_exec) = (
            Arc::new(Recording::default()),
            Arc::new(Recording::default()),
        );
        let (left, right) = tokio::join!(
            scheduler_with_clock(&db, left_exec.clone(), clocks[0].clone()),
            scheduler_with_clock(&db, right_exec.clone(), clocks[1].clone())
        );
        for clock in &clocks {
            clock.armed.store(true, Ordering::SeqCst);
        }
        // Separate tasks: each may block its worker thread at the meeting point.
        let run = |s: &Scheduler| {
            let s = s.clone();
            tokio::spawn(async move { s.run_once().await })
        };
        let (l, r) = tokio::join!(run(&left), run(&right));
        let (l, r) = (l.unwrap().unwrap(), r.unwrap().unwrap());
        tokio::join!(left.wait_idle(), right.wait_idle());
        assert!(
            clocks.iter().all(|c| c.met.load(Ordering::SeqCst) == 1),
            "round {round}: both planned at the meeting point"
        );
        // Both planned every task; only one of them could create each task's attempt.
        assert_eq!(
            l.dispatched.len() + r.dispatched.len(),
            TASKS,
            "round {round}: {l:#?} {r:#?}"
        );
        raced += TASKS;

        let ledger = left.ledger();
        ledger.catch_up().await.unwrap();
        let events = ledger.events().read(0, 10_000).await.unwrap();
        let mut created: Vec<String> = events
            .iter()
            .filter(|e| e.event_type == "attempt.created")
            .map(|e| e.payload["task_id"].as_str().unwrap().to_owned())
            .collect();
        created.sort();
        let expected: Vec<String> = {
            let mut all: Vec<String> = (0..TASKS).map(|i| format!("task-{i}")).collect();
            all.sort();
            all
        };
        assert_eq!(created, expected, "round {round}: one attempt per task");

        let mut started: Vec<String> = left_exec
            .started
            .lock()
            .unwrap()
            .iter()
            .chain(right_exec.started.lock().unwrap().iter())
            .map(|s| s.task_id.to_string())
            .collect();
        started.sort();
        assert_eq!(started, expected, "round {round}: each task started once");
        let verified = ledger.events().verify().await.unwrap();
        assert!(verified.is_ok(), "round {round}: {verified:?}");
    }
    assert_eq!(
        raced,
        ROUNDS * TASKS,
        "every task of every round was raced for"
    );
}

/// Two schedulers cycling at once from an empty log, without any forcing: whichever records the
/// target and the backlog first, they are recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_syncing_at_once_record_the_backlog_once() {
    let db = TestDatabase::create().await;
    let (left, right) = tokio::join!(
        scheduler_with_clock(
            &db,
            Arc::new(Recording::default()),
            Arc::new(TokioClock::new())
        ),
        scheduler_with_clock(
            &db,
            Arc::new(Recording::default()),
            Arc::new(TokioClock::new())
        )
    );
    let (l, r) = tokio::join!(left.run_once(), right.run_once());
    let (l, r) = (l.unwrap(), r.unwrap());
    tokio::join!(left.wait_idle(), right.wait_idle());
    assert_eq!(l.dispatched.len() + r.dispatched.len(), TASKS);
    let ledger = left.ledger();
    ledger.catch_up().await.unwrap();
    let events = ledger.events().read(0, 10_000).await.unwrap();
    let count = |ty: &str| events.iter().filter(|e| e.event_type == ty).count();
    assert_eq!(count("target.registered"), 1);
    assert_eq!(count("task.created"), TASKS);
    assert_eq!(count("attempt.created"), TASKS);
}

/// A clock that, once armed, makes its first reader wait until the other scheduler's clock is
/// read too: a cycle with nothing to sync reads the time right before it plans, so both plans
/// see the same state. Counts the meetings it went through.
#[derive(Debug)]
struct MeetingClock {
    time: TokioClock,
    meeting: Arc<Barrier>,
    armed: AtomicBool,
    met: AtomicUsize,
}

impl MeetingClock {
    /// Two clocks that meet each other.
    fn pair() -> Vec<Arc<MeetingClock>> {
        let meeting = Arc::new(Barrier::new(2));
        (0..2)
            .map(|_| {
                Arc::new(MeetingClock {
                    time: TokioClock::new(),
                    meeting: meeting.clone(),
                    armed: AtomicBool::new(false),
                    met: AtomicUsize::new(0),
                })
            })
            .collect()
    }
}

impl Clock for MeetingClock {
    fn now(&self) -> Timestamp {
        if self.armed.swap(false, Ordering::SeqCst) {
            tokio::task::block_in_place(|| {
                self.meeting.wait();
            });
            self.met.fetch_add(1, Ordering::SeqCst);
        }
        self.time.now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_planning_from_one_state_record_each_decision_once() {
    let db = TestDatabase::create().await;
    let clocks = MeetingClock::pair();
    let executor = Arc::new(Recording::default());
    let left = scheduler_with_clock(&db, executor.clone(), clocks[0].clone()).await;
    let right = scheduler_with_clock(&db, executor.clone(), clocks[1].clone()).await;

    // Every task is dispatched once and fails.
    assert_eq!(left.run_once().await.unwrap().dispatched.len(), TASKS);
    left.wait_idle().await;

    // Both plan from that same state: each would retry every task and open the circuit.
    for clock in &clocks {
        clock.armed.store(true, Ordering::SeqCst);
    }
    // Separate tasks: each may block its worker thread at the meeting point.
    let settle = |s: &Scheduler| {
        let s = s.clone();
        tokio::spawn(async move { s.settle().await })
    };
    let (l, r) = tokio::join!(settle(&left), settle(&right));
    let (l, r) = (l.unwrap().unwrap(), r.unwrap().unwrap());
    assert!(clocks.iter().all(|c| c.met.load(Ordering::SeqCst) == 1));
    assert_eq!(
        l.actions.len() + r.actions.len(),
        TASKS + 1,
        "each decision recorded by one of them: {l:#?} {r:#?}"
    );

    let ledger = left.ledger();
    let events = ledger.events().read(0, 10_000).await.unwrap();
    let count = |ty: &str| events.iter().filter(|e| e.event_type == ty).count();
    assert_eq!(count("retry.scheduled"), TASKS);
    assert_eq!(count("circuit.opened"), 1);
}
