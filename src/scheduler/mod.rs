//! The scheduler's runner: it turns the pure planner's decisions
//! ([`leviathan_core::plan`]) into events and executor calls.
//!
//! One cycle ([`Scheduler::run_once`]):
//! 1. catches the [`Ledger`] up with the log;
//! 2. per target: records `target.registered` (or `target.updated`), fetches the backlog through
//!    the [`BacklogSource`] and records `task.created` / `task.updated` for new or changed tasks;
//! 3. reconciles the open-PR latch with the target's [`Forge`]: PRs open in the graph that the
//!    forge no longer lists become `pr.merged` / `pr.closed`;
//! 4. plans, and records every decision as its event (`retry.scheduled` with a jittered
//!    `not_before`, `task.failed`, `task.blocked`, `circuit.opened`, `circuit.closed`,
//!    `attempt.timed_out` with the executor's attempt cancelled), then cancels on the executor its runs of attempts an operator cancelled (`attempt.failed`
//!    of kind `cancelled` in the log);
//! 5. dispatches: `attempt.created` under the task stream's version the plan saw (so two
//!    schedulers can never create the same attempt), `job.submitted`, then
//!    [`Executor::run`] in a task of its own;
//! 6. when a run ends, records what the worker could not: the outcome (`attempt.succeeded` /
//!    `attempt.failed`) if the attempt is still live, the executor's artifacts, and
//!    `task.completed` after a success.
//!
//! Failing closed: a target whose backlog or forge cannot be read dispatches nothing that
//! cycle (its other decisions are still recorded); a target without autonomy enabled never
//! dispatches. Every decision logs one line (`dispatch demo/docs-guide attempt=… #2`,
//! `skip demo/x: waiting on a, b`, `retry demo/x #2 not before …`).
//!
//! ```no_run
//! # async fn demo(
//! #     ledger: std::sync::Arc<leviathan_core::Ledger>,
//! #     executor: std::sync::Arc<dyn leviathan_core::Executor>,
//! #     target: leviathan_core::target::TargetConfig,
//! #     forge: std::sync::Arc<dyn leviathan_core::Forge>,
//! # ) -> Result<(), leviathan::scheduler::SchedulerError> {
//! use leviathan::{git::GitBacklog, scheduler::Scheduler};
//!
//! let scheduler = Scheduler::builder(ledger, executor)
//!     .target(target, forge)
//!     .backlog(GitBacklog::new(None))
//!     .build()?;
//! // Dispatch until a cycle finds nothing more to do, waiting for every attempt.
//! let reports = scheduler.run_until_idle().await?;
//! println!("{} cycles", reports.len());
//! # Ok(()) }
//! ```

mod clock;
mod cycle;
mod daemon;
mod metrics;
mod outcome;
mod proposals;
mod reconcile;
mod runs;
mod sync;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use leviathan_core::{ArtifactStore, catalogue::AttemptBase, secret::Secret};
use leviathan_core::{
    AttemptId, BacklogSource, EventId, Expectations, Forge, Ledger, LedgerError, NewEvent, Payload,
    TargetId, TaskId,
    executor::{Executor, WorkerTokens, protocol},
    plan::{Action, SchedulingPolicy, Skip},
    store::EventStoreError,
    target::TargetConfig,
};
use leviathan_worker::config::GitIdentity;
use rand::{SeedableRng, rngs::StdRng};
use serde::Serialize;
use tokio::sync::watch;

pub use self::clock::{Clock, TokioClock};
pub use self::metrics::serve_metrics;
use self::runs::Runs;
use crate::delivery::Deliverer;

/// Head branches of the agent's pull requests start with this.
pub const AGENT_BRANCH_PREFIX: &str = "agent/";

/// Settings that are not per target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Attempts running at once over all targets.
    pub max_running_global: u32,
    /// Time between cycles of the daemon ([`Scheduler::run`]); it also cycles when an attempt ends.
    pub tick: Duration,
    /// On shutdown, how long running attempts may finish before they are cancelled.
    pub shutdown_grace: Duration,
    /// `actor_id` of the events the scheduler records.
    pub actor_id: String,
    /// Non-secret worker settings given to every attempt (`LEVIATHAN_MODEL_PROVIDER`,
    /// `LEVIATHAN_GITHUB_API_URL`, …); a target's `test_command` is added as
    /// `LEVIATHAN_TEST_COMMAND`, its `delivery.draft_prs` as `LEVIATHAN_DRAFT_PRS`.
    pub worker_env: BTreeMap<String, String>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            max_running_global: 4,
            tick: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(300),
            actor_id: "scheduler".to_owned(),
            worker_env: BTreeMap::new(),
        }
    }
}

/// What can stop the scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The scheduler cannot be built as configured.
    #[error("scheduler configuration: {0}")]
    Config(String),
    /// The event log or the projection failed (not a refused decision, which is only logged).
    #[error("the event log failed: {0}")]
    Ledger(#[from] LedgerError),
}

/// An attempt a cycle created and handed to the executor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dispatched {
    /// The target.
    pub target_id: TargetId,
    /// The task.
    pub task_id: TaskId,
    /// The new attempt.
    pub attempt_id: AttemptId,
    /// Its number at the task.
    pub attempt_number: u32,
    /// True for the single probe of a half-open circuit.
    pub probe: bool,
}

/// A target that dispatched nothing this cycle, and why (its backlog or forge was unreadable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClosedTarget {
    /// The target.
    pub target_id: TargetId,
    /// Why.
    pub reason: String,
}

/// What one cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CycleReport {
    /// Attempts created and started.
    pub dispatched: Vec<Dispatched>,
    /// Decisions recorded as events, in order.
    pub actions: Vec<Action>,
    /// Tasks of the served targets not dispatched, and why.
    pub skipped: Vec<Skip>,
    /// Targets that failed closed this cycle.
    pub closed: Vec<ClosedTarget>,
}

/// Runs the scheduling cycles of a set of targets over one ledger and one executor.
/// Cheap to clone; clones share everything (the attempts in progress included).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("targets", &self.inner.targets.keys().collect::<Vec<_>>())
            .field("executor", &self.inner.executor.name())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// A target the scheduler serves.
#[derive(Debug)]
struct Served {
    config: TargetConfig,
    forge: Arc<dyn Forge>,
    /// Delivers its attempts' proposals, when the scheduler holds the forge token.
    deliverer: Option<Deliverer>,
}

/// What the scheduler needs to deliver proposals itself: where workers store them, the forge
/// token (never given to a worker) and the bot's identity.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// The artifact store the workers upload their patches to.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// The forge token: push and pull requests.
    pub token: Secret,
    /// Author and committer of the delivered commits.
    pub identity: GitIdentity,
}

/// Everything a scheduler and its run tasks share.
#[derive(Debug)]
struct Inner {
    ledger: Arc<Ledger>,
    executor: Arc<dyn Executor>,
    worker_tokens: Option<Arc<dyn WorkerTokens>>,
    targets: BTreeMap<TargetId, Served>,
    /// Where proposals are read (with [`SchedulerBuilder::delivery`]).
    artifacts: Option<Arc<dyn ArtifactStore>>,
    /// Attempts whose proposal a task of this process delivers right now.
    delivering: Mutex<BTreeSet<AttemptId>>,
    backlog: Arc<dyn BacklogSource>,
    clock: Arc<dyn Clock>,
    rng: Mutex<StdRng>,
    options: SchedulerOptions,
    runs: Arc<Runs>,
    /// The last skip reason logged per task, so that a waiting task is logged when its reason
    /// changes rather than every cycle.
    logged_skips: Mutex<BTreeMap<(TargetId, TaskId), String>>,
    /// Orphaned attempts to re-attach next cycle (when still live): those whose re-attachment
    /// failed, and those whose `attempt.created` may have landed although recording it failed.
    unrecovered: Mutex<BTreeSet<AttemptId>>,
    cycles: watch::Sender<u64>,
    metrics: metrics::SchedulerMetrics,
}

/// Builds a [`Scheduler`]; see [`Scheduler::builder`].
#[derive(Debug)]
#[must_use]
pub struct SchedulerBuilder {
    ledger: Arc<Ledger>,
    executor: Arc<dyn Executor>,
    worker_tokens: Option<Arc<dyn WorkerTokens>>,
    targets: Vec<(TargetConfig, Arc<dyn Forge>)>,
    delivery: Option<DeliveryConfig>,
    backlog: Option<Arc<dyn BacklogSource>>,
    clock: Option<Arc<dyn Clock>>,
    seed: Option<u64>,
    options: SchedulerOptions,
}

impl SchedulerBuilder {
    /// Serves `config`'s target, reading its pull requests through `forge`.
    pub fn target(mut self, config: TargetConfig, forge: Arc<dyn Forge>) -> Self {
        self.targets.push((config, forge));
        self
    }

    /// Delivers the workers' proposals (`delivery.requested`) with this token and identity,
    /// reading them from `config.artifacts`.
    pub fn delivery(mut self, config: DeliveryConfig) -> Self {
        self.delivery = Some(config);
        self
    }

    /// Where backlogs are read (required).
    pub fn backlog(mut self, source: impl BacklogSource) -> Self {
        self.backlog = Some(Arc::new(source));
        self
    }

    /// [`SchedulerBuilder::backlog`] with a shared source.
    pub fn backlog_arc(mut self, source: Arc<dyn BacklogSource>) -> Self {
        self.backlog = Some(source);
        self
    }

    /// Mints each attempt's own worker token at dispatch (the executors then give the worker
    /// that token only). Without it, workers get the executor's configured token.
    pub fn worker_tokens(mut self, minter: Arc<dyn WorkerTokens>) -> Self {
        self.worker_tokens = Some(minter);
        self
    }

    /// The time source (default: [`TokioClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Seeds the backoff jitter (default: from the operating system).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Settings that are not per target.
    pub fn options(mut self, options: SchedulerOptions) -> Self {
        self.options = options;
        self
    }

    /// Checks the configuration and builds the scheduler.
    pub fn build(self) -> Result<Scheduler, SchedulerError> {
        let config = |message: String| Err(SchedulerError::Config(message));
        if self.targets.is_empty() {
            return config("no target to serve".into());
        }
        let Some(backlog) = self.backlog else {
            return config("no backlog source (SchedulerBuilder::backlog)".into());
        };
        if self.options.max_running_global == 0 {
            return config("max_running_global must be at least 1".into());
        }
        if self.options.tick.is_zero() {
            return config("the tick must be positive".into());
        }
        if self.options.actor_id.trim().is_empty() {
            return config("the actor id must not be empty".into());
        }
        let forbidden: BTreeSet<&str> = protocol::RESERVED_VARIABLES
            .iter()
            .chain(protocol::SECRET_VARIABLES)
            .copied()
            .collect();
        if let Some(name) = self
            .options
            .worker_env
            .keys()
            .find(|name| forbidden.contains(name.as_str()))
        {
            return config(format!(
                "worker_env must not set `{name}`: executors set it (credentials and the attempt's identity never travel in an attempt's environment)"
            ));
        }
        let mut targets = BTreeMap::new();
        for (target, forge) in self.targets {
            if let Ok(url) = url::Url::parse(&target.repo_url)
                && (!url.username().is_empty() || url.password().is_some())
            {
                return config(format!(
                    "target `{}`: repo_url must not carry credentials (the token comes from GITHUB_TOKEN)",
                    target.name
                ));
            }
            let name = target.name.clone();
            let deliverer = self.delivery.as_ref().map(|d| {
                Deliverer::new(
                    target.clone(),
                    Arc::clone(&forge),
                    d.token.clone(),
                    d.identity.clone(),
                )
            });
            if targets
                .insert(
                    name.clone(),
                    Served {
                        config: target,
                        forge,
                        deliverer,
                    },
                )
                .is_some()
            {
                return config(format!("target `{name}` is given twice"));
            }
        }
        let rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Scheduler {
            inner: Arc::new(Inner {
                ledger: self.ledger,
                executor: self.executor,
                worker_tokens: self.worker_tokens,
                targets,
                artifacts: self.delivery.map(|d| d.artifacts),
                delivering: Mutex::default(),
                backlog,
                clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
                rng: Mutex::new(rng),
                options: self.options,
                runs: Runs::new(),
                logged_skips: Mutex::default(),
                unrecovered: Mutex::default(),
                cycles: watch::Sender::new(0),
                metrics: metrics::SchedulerMetrics::new(),
            }),
        })
    }
}

impl Scheduler {
    /// A builder over `ledger` (every event goes through it) and `executor` (every attempt
    /// runs on it).
    pub fn builder(ledger: Arc<Ledger>, executor: Arc<dyn Executor>) -> SchedulerBuilder {
        SchedulerBuilder {
            ledger,
            executor,
            worker_tokens: None,
            targets: Vec::new(),
            delivery: None,
            backlog: None,
            clock: None,
            seed: None,
            options: SchedulerOptions::default(),
        }
    }

    /// One cycle: sync, reconcile, plan, record, dispatch (see the module docs). Dispatched
    /// attempts run in tasks of their own; [`Scheduler::wait_idle`] waits for them.
    pub async fn run_once(&self) -> Result<CycleReport, SchedulerError> {
        self.inner.cycle(cycle::Mode::Dispatch).await
    }

    /// A cycle that only records decisions (retries, blocks, failures, circuit changes,
    /// timeouts) and dispatches nothing; it does not fetch backlogs.
    pub async fn settle(&self) -> Result<CycleReport, SchedulerError> {
        self.inner.cycle(cycle::Mode::RecordOnly).await
    }

    /// Waits until every attempt this process runs (or follows) has ended and its outcome is
    /// recorded.
    pub async fn wait_idle(&self) {
        self.inner.runs.idle().await;
    }

    /// After a restart: follows every live attempt of the served targets that this process does
    /// not run (through [`Executor::reattach`]), recording
    /// its outcome when it ends, or ends it as `lost` (transient, so it is retried by policy)
    /// when the executor has no trace of it. Returns how many attempts it took up; they run in
    /// tasks of their own.
    pub async fn recover(&self) -> Result<usize, SchedulerError> {
        self.inner.recover().await
    }

    /// `--once`: [`recover`](Self::recover), one cycle, wait for what it started, then
    /// [`settle`](Self::settle) so that retries, blocks and failures are in the log. Returns the
    /// cycle's report with the settled decisions appended to its actions.
    pub async fn once(&self) -> Result<CycleReport, SchedulerError> {
        self.recover().await?;
        let mut report = self.run_once().await?;
        self.wait_idle().await;
        let settled = self.settle().await?;
        report.actions.extend(settled.actions);
        Ok(report)
    }

    /// Cycles until one dispatches nothing, waiting for every attempt after each (recovering
    /// orphans first and settling at the end): everything that can be done now is done.
    /// Returns the reports of the dispatching cycles and the final settle.
    pub async fn run_until_idle(&self) -> Result<Vec<CycleReport>, SchedulerError> {
        self.recover().await?;
        self.wait_idle().await;
        let mut reports = Vec::new();
        loop {
            let report = self.run_once().await?;
            let dispatched = !report.dispatched.is_empty();
            reports.push(report);
            self.wait_idle().await;
            if !dispatched {
                break;
            }
        }
        reports.push(self.settle().await?);
        Ok(reports)
    }

    /// The daemon: recovers orphans, then cycles every [`SchedulerOptions::tick`] and whenever
    /// an attempt ends, until `shutdown` completes. Then it stops dispatching, lets running
    /// attempts finish for up to [`SchedulerOptions::shutdown_grace`], and cancels the rest,
    /// recording them as `attempt.failed` (`cancelled`, transient: they are retried later).
    /// A failed cycle is logged and the next one tried; only recording the shutdown can fail.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        self.inner.daemon(shutdown).await
    }

    /// The attempts this process runs or follows now.
    pub fn running(&self) -> Vec<AttemptId> {
        self.inner.runs.snapshot().into_keys().collect()
    }

    /// The Prometheus exposition of this scheduler's metrics: cycles, dispatches, skips by
    /// reason, attempts running, each served target's breaker (see [`serve_metrics`]).
    pub fn metrics(&self) -> String {
        self.inner.metrics.render(self.inner.runs.snapshot().len())
    }

    /// Counts completed cycles; watch it to follow the daemon's progress.
    pub fn cycles(&self) -> watch::Receiver<u64> {
        self.inner.cycles.subscribe()
    }

    /// The ledger the scheduler records into.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.inner.ledger
    }
}

/// An event the scheduler records, or why it was refused.
enum Recorded {
    Appended,
    Refused(String),
}

impl Inner {
    /// An event of the scheduler's, stamped with its clock and actor.
    fn event<P: Payload>(&self, payload: &P) -> NewEvent {
        self.event_of(P::EVENT_TYPE, payload.to_value())
    }

    /// [`Inner::event`] from a type and a payload.
    fn event_of(&self, event_type: &str, payload: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: new_event_id(),
            event_type: event_type.to_owned(),
            timestamp: self.clock.now(),
            actor_id: Some(self.options.actor_id.clone()),
            payload,
            principal: None,
        }
    }

    /// Appends events; a refusal (the graph or a stream expectation said no: another writer got
    /// there first) is an answer, a failing store an error.
    async fn record(
        &self,
        events: Vec<NewEvent>,
        expectations: Expectations,
    ) -> Result<Recorded, SchedulerError> {
        match self.ledger.ingest(events, expectations).await {
            Ok(_) => Ok(Recorded::Appended),
            Err(error) if is_refusal(&error) => Ok(Recorded::Refused(error.to_string())),
            Err(error) => Err(error.into()),
        }
    }

    /// The policies of the served targets.
    fn policy(&self) -> SchedulingPolicy {
        SchedulingPolicy {
            targets: self
                .targets
                .iter()
                .map(|(id, served)| (id.clone(), served.config.policy.clone()))
                .collect(),
            max_running_global: self.options.max_running_global,
        }
    }

    /// The worker settings of an attempt of `target` starting from `base` when published.
    fn worker_env(
        &self,
        target: &TargetConfig,
        base: Option<&AttemptBase>,
    ) -> BTreeMap<String, String> {
        let mut env = self.options.worker_env.clone();
        if let Some(base) = base {
            env.insert(
                protocol::LEVIATHAN_BASE_BUNDLE.to_owned(),
                base.bundle_sha256.to_hex(),
            );
            env.insert(
                protocol::LEVIATHAN_BASE_COMMIT.to_owned(),
                base.commit.clone(),
            );
        }
        if let Some(command) = &target.test_command {
            env.insert(protocol::LEVIATHAN_TEST_COMMAND.to_owned(), command.clone());
        }
        if !target.landlock {
            env.insert(protocol::LEVIATHAN_LANDLOCK.to_owned(), "false".to_owned());
        }
        if target.delivery.draft_prs {
            env.insert(protocol::LEVIATHAN_DRAFT_PRS.to_owned(), "true".to_owned());
        }
        env
    }

    /// A uniform draw in `[0, 1)` for the backoff jitter.
    fn unit(&self) -> f64 {
        use rand::Rng as _;
        self.rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .random::<f64>()
    }
}

/// True when the ledger refused a decision (as opposed to failing).
fn is_refusal(error: &LedgerError) -> bool {
    matches!(
        error,
        LedgerError::Rejected(_)
            | LedgerError::WrongExpectedVersion { .. }
            | LedgerError::EventStore(
                EventStoreError::Invalid { .. }
                    | EventStoreError::Conflict { .. }
                    | EventStoreError::WrongExpectedVersion { .. }
            )
    )
}

/// A fresh, random event id.
fn new_event_id() -> EventId {
    // 32 hex digits always make a valid event id.
    EventId::new(format!("sched-{:032x}", rand::random::<u128>()))
        .expect("hex digits form a valid event id")
}
