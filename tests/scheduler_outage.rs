//! A dispatch cut by an event-store outage (the control plane going down under `schedule
//! --api`): the attempt it created is run, or ended as lost and retried, instead of staying
//! live and unrun until its deadline. Runner level: real ledger, forge and backlog fetch, a
//! scripted executor, tokio's paused clock.

mod support {
    pub(crate) mod scheduler;
}

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use leviathan::{git::GitBacklog, scheduler::Scheduler};
use leviathan_core::{
    ChainBreak, ChainReport, Event, EventId, Head, Ledger, StreamId,
    memory::{MemoryEventStore, MemoryGraphStore},
    model::FailureKind,
    secret::Secret,
    store::{AppendReceipt, AppendRequest, EventStore, EventStoreError, EventStream},
};
use support::scheduler::{Step, World, freeze};

const ONE_TASK: &str = "tasks:\n  - id: docs-guide\n    title: Write the guide\n    ready: true\n    allowed_paths: [docs/GUIDE.md]\n";

/// Whether the failing append stored its batch before failing.
#[derive(Clone, Copy, Debug)]
enum Landing {
    /// Nothing was stored.
    Lost,
    /// The batch was stored, then the connection failed: the writer cannot tell.
    Stored,
}

/// A memory event store whose next append holding an event of one type fails as unavailable.
#[derive(Debug, Default)]
struct OutageStore {
    inner: MemoryEventStore,
    outage: Mutex<Option<(&'static str, Landing)>>,
}

impl OutageStore {
    fn fail_next(&self, event_type: &'static str, landing: Landing) {
        *self.outage.lock().unwrap() = Some((event_type, landing));
    }
}

#[async_trait]
impl EventStore for OutageStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, EventStoreError> {
        let landing = {
            let mut outage = self.outage.lock().unwrap();
            match *outage {
                Some((event_type, landing))
                    if request.events.iter().any(|e| e.event_type == event_type) =>
                {
                    *outage = None;
                    Some(landing)
                }
                _ => None,
            }
        };
        match landing {
            None => self.inner.append(request).await,
            Some(landing) => {
                if let Landing::Stored = landing {
                    self.inner.append(request).await?;
                }
                Err(EventStoreError::Unavailable {
                    reason: "scripted outage".into(),
                    source: None,
                })
            }
        }
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        self.inner.read(after, limit).await
    }

    async fn get(&self, event_id: &EventId) -> Result<Option<Event>, EventStoreError> {
        self.inner.get(event_id).await
    }

    async fn head(&self) -> Result<Option<Head>, EventStoreError> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, EventStoreError> {
        self.inner.stream_version(stream).await
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, EventStoreError> {
        self.inner.subscribe(after).await
    }

    async fn verify(&self) -> Result<Result<ChainReport, ChainBreak>, EventStoreError> {
        self.inner.verify().await
    }
}

/// The world's forge, backlog and executor, with a ledger over an [`OutageStore`].
async fn scheduler(world: &World) -> (Scheduler, Arc<OutageStore>, Arc<Ledger>) {
    let store = Arc::new(OutageStore::default());
    let ledger = Arc::new(
        Ledger::open(
            Arc::clone(&store) as Arc<dyn EventStore>,
            Arc::new(MemoryGraphStore::new()),
        )
        .await
        .unwrap(),
    );
    let config = world.target(
        "autonomy: {enabled: true}",
        "  circuit_breaker: {enabled: false}\n  retry: {initial_backoff_seconds: 10, jitter: false}\n",
    );
    let scheduler = Scheduler::builder(Arc::clone(&ledger), world.executor.clone())
        .target(config, world.forge.clone())
        .backlog(GitBacklog::new(Some(Secret::new(world.github.token()))))
        .seed(1)
        .build()
        .unwrap();
    (scheduler, store, ledger)
}

async fn count(ledger: &Ledger, event_type: &str) -> usize {
    ledger
        .events()
        .read(0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == event_type)
        .count()
}

#[tokio::test(start_paused = true)]
async fn an_attempt_whose_job_submitted_is_not_recorded_still_runs() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    world.executor.script("docs-guide", &[Step::Succeed]);
    let (scheduler, store, ledger) = scheduler(&world).await;
    store.fail_next("job.submitted", Landing::Lost);

    let report = scheduler.run_once().await.expect("the cycle copes");
    assert_eq!(report.dispatched.len(), 1);
    scheduler.wait_idle().await;
    assert_eq!(world.executor.started().len(), 1, "the attempt ran");
    assert_eq!(count(&ledger, "job.submitted").await, 0);
    assert_eq!(count(&ledger, "attempt.succeeded").await, 1);
    assert_eq!(count(&ledger, "task.completed").await, 1);
    assert_eq!(world.pulls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_created_as_the_store_failed_is_ended_as_lost_and_retried() {
    let _frozen = freeze();
    let world = World::start(ONE_TASK).await;
    world.executor.script("docs-guide", &[Step::Succeed]);
    let (scheduler, store, ledger) = scheduler(&world).await;
    // `attempt.created` lands, but the scheduler is told the append failed.
    store.fail_next("attempt.created", Landing::Stored);
    assert!(scheduler.run_once().await.is_err());
    assert_eq!(count(&ledger, "attempt.created").await, 1);
    assert!(world.executor.started().is_empty());

    // The next cycle finds the attempt nobody runs and ends it as lost (transient) ...
    scheduler.run_once().await.unwrap();
    scheduler.wait_idle().await;
    let failed = ledger.events().read(0, 10_000).await.unwrap();
    let lost: Vec<_> = failed
        .iter()
        .filter(|e| e.event_type == "attempt.failed")
        .collect();
    assert_eq!(lost.len(), 1, "{failed:#?}");
    assert_eq!(
        lost[0].payload["failure_kind"],
        serde_json::to_value(FailureKind::Lost).unwrap()
    );

    // ... and the task is retried by policy.
    scheduler.run_once().await.unwrap();
    assert_eq!(count(&ledger, "retry.scheduled").await, 1);
    tokio::time::advance(Duration::from_secs(11)).await;
    let report = scheduler.run_once().await.unwrap();
    assert_eq!(report.dispatched.len(), 1);
    assert_eq!(report.dispatched[0].attempt_number, 2);
    scheduler.wait_idle().await;
    assert_eq!(count(&ledger, "task.completed").await, 1);
    assert_eq!(world.pulls().len(), 1);
}
