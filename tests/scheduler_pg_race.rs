//! Two schedulers over one PostgreSQL store (two `PgStore`s on one database, each with its own
//! `Ledger`) cycling at the same time never create two attempts for one task: `attempt.created`
//! is appended under the task stream's version the plan saw. Fifty rounds, a fresh database each.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use leviathan::scheduler::{BacklogFetchError, BacklogSource, Scheduler, SchedulerOptions};
use leviathan_core::{
    AttemptId, AttemptOutcome, AttemptSpec, Executor, ExecutorError, Ledger,
    backlog::{Backlog, parse_backlog},
    model::PrState,
    target::{TargetConfig, parse_target_config},
};
use leviathan_store_pg::test_support::TestDatabase;
use leviathan_worker::forge::{Forge, ForgeError, OpenPullRequest, PullRequest, PullRequestSpec};

const ROUNDS: usize = 50;
const TASKS: usize = 6;

/// The same backlog every time (the race is about dispatch, not about git).
#[derive(Debug)]
struct FixedBacklog(Backlog);

#[async_trait]
impl BacklogSource for FixedBacklog {
    async fn fetch(&self, _target: &TargetConfig) -> Result<Backlog, BacklogFetchError> {
        Ok(self.0.clone())
    }
}

/// A forge with no pull requests (nothing here opens any).
#[derive(Debug)]
struct EmptyForge;

#[async_trait]
impl Forge for EmptyForge {
    async fn find_open(&self, _head: &str) -> Result<Option<PullRequest>, ForgeError> {
        Ok(None)
    }
    async fn create(&self, _spec: &PullRequestSpec) -> Result<PullRequest, ForgeError> {
        Err(ForgeError::Invalid("this forge opens nothing".into()))
    }
    async fn list_open(&self, _prefix: &str) -> Result<Vec<OpenPullRequest>, ForgeError> {
        Ok(Vec::new())
    }
    async fn state(&self, _number: u64) -> Result<PrState, ForgeError> {
        Ok(PrState::Open)
    }
}

/// Records every attempt it is asked to run; they run until the test ends.
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
        std::future::pending().await
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
    parse_target_config(
        "demo.yaml",
        "name: demo\nrepo_url: https://example.com/acme/widgets.git\nautonomy: {enabled: true}\n\
         guardrails: {allowed_path_prefixes: [docs/], max_open_prs: 100, max_running_attempts: 100}\n",
        None,
    )
    .unwrap()
}

async fn scheduler(db: &TestDatabase, executor: Arc<Recording>) -> Scheduler {
    let store = db.store().await;
    let ledger = Arc::new(Ledger::open(store.events(), store.graphs()).await.unwrap());
    Scheduler::builder(ledger, executor as Arc<dyn Executor>)
        .target(target(), Arc::new(EmptyForge))
        .backlog(FixedBacklog(backlog()))
        .options(SchedulerOptions {
            max_running_global: 100,
            ..SchedulerOptions::default()
        })
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_dispatch_one_task_twice() {
    let mut contended = 0;
    for round in 0..ROUNDS {
        let db = TestDatabase::create().await;
        let (left_exec, right_exec) = (
            Arc::new(Recording::default()),
            Arc::new(Recording::default()),
        );
        let (left, right) = tokio::join!(
            scheduler(&db, left_exec.clone()),
            scheduler(&db, right_exec.clone())
        );

        for _ in 0..2 {
            let (l, r) = tokio::join!(left.run_once(), right.run_once());
            l.unwrap();
            r.unwrap();
        }

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
        let (l, r) = (
            left_exec.started.lock().unwrap().len(),
            right_exec.started.lock().unwrap().len(),
        );
        if l > 0 && r > 0 {
            contended += 1;
        }
        started.sort();
        assert_eq!(started, expected, "round {round}: each task started once");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.event_type == "target.registered")
                .count(),
            1
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.event_type == "task.created")
                .count(),
            TASKS
        );
        let verified = ledger.events().verify().await.unwrap();
        assert!(verified.is_ok(), "round {round}: {verified:?}");
    }
    println!("{contended} of {ROUNDS} rounds had both schedulers dispatching");
}
