//! One scheduling cycle: sync, reconcile, plan, record the decisions, dispatch.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use leviathan_core::{
    AttemptId, AttemptSpec, EventId, Expectations, ExpectedVersion, StreamId, TargetId, TaskId,
    Timestamp,
    catalogue::{
        AttemptBase, AttemptCreated, AttemptTimedOut, BudgetExhausted, CircuitClosed,
        CircuitOpened, JobSubmitted, Payload as _, RetryScheduled, TaskBlocked, TaskFailed,
        TaskTransition,
    },
    graph::{AttemptNode, Circuit, Graph},
    model::FailureKind,
    plan::{Action, Dispatch, PlanContext, Skip, plan, retry_delay},
};

use super::{
    ClosedTarget, CycleReport, Dispatched, Inner, Recorded, SchedulerError, Served, outcome::Start,
};

/// What a cycle learnt from the targets' backlogs and forges.
#[derive(Debug, Default)]
struct TargetsRead {
    /// The tasks each readable backlog holds.
    in_backlog: BTreeMap<TargetId, BTreeSet<TaskId>>,
    /// Open agent pull requests per target, as the forge reports them.
    forge_open_prs: BTreeMap<TargetId, u32>,
    /// Targets whose daily model budget is spent, with its scope.
    spent_budgets: BTreeMap<TargetId, String>,
    /// Targets that fail closed this cycle, and why.
    closed: BTreeMap<TargetId, String>,
}

/// What a cycle may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Everything, dispatch included.
    Dispatch,
    /// Record the planner's decisions only: no backlog, no forge, no dispatch.
    RecordOnly,
}

impl Inner {
    pub(super) async fn cycle(self: &Arc<Self>, mode: Mode) -> Result<CycleReport, SchedulerError> {
        let mut report = CycleReport::default();
        self.ledger.catch_up().await?;
        let targets = match mode {
            Mode::Dispatch => {
                self.retry_unrecovered().await;
                self.deliver_owed().await?;
                self.read_targets().await?
            }
            Mode::RecordOnly => TargetsRead::default(),
        };
        for (target_id, reason) in &targets.closed {
            tracing::warn!("target {target_id}: {reason}; dispatching nothing for it this cycle");
            report.closed.push(ClosedTarget {
                target_id: target_id.clone(),
                reason: reason.clone(),
            });
        }

        let now = self.clock.now();
        let ctx = PlanContext {
            now,
            forge_open_prs: targets.forge_open_prs,
            spent_budgets: targets.spent_budgets,
        };
        let (actions, skipped, dispatches) = {
            let graph = self.ledger.graph().await;
            let planned = plan(&graph, &self.policy(), &ctx);
            // Each decision with the expectation it is recorded under: the version of its task's
            // or target's stream this plan saw, so that a scheduler planning from the same state
            // cannot record it again.
            let actions: Vec<(Action, Expectations)> = planned
                .actions
                .into_iter()
                .filter(|a| self.serves_action(&graph, a))
                .map(|a| {
                    let expectations = match decided_stream(&a) {
                        Some(stream) => {
                            let version = graph.stream_version(&stream);
                            Expectations::Explicit(vec![(stream, ExpectedVersion::at(version))])
                        }
                        None => Expectations::Derived,
                    };
                    (a, expectations)
                })
                .collect();
            let skipped: Vec<Skip> = planned
                .skipped
                .into_iter()
                .filter(|s| self.targets.contains_key(&s.target_id))
                .collect();
            // Each dispatch with the version of its task's stream this plan saw.
            let dispatches: Vec<(Dispatch, u64)> = planned
                .dispatch
                .into_iter()
                .map(|d| {
                    let version = graph.stream_version(&StreamId::task(&d.target_id, &d.task_id));
                    (d, version)
                })
                .collect();
            (actions, skipped, dispatches)
        };

        for (action, expectations) in actions {
            if self.record_action(&action, expectations, now).await? {
                report.actions.push(action);
            }
        }
        self.log_skips(&skipped);
        report.skipped = skipped;
        self.stop_cancelled_runs().await;

        if mode == Mode::Dispatch {
            for (dispatch, version) in dispatches {
                let label = format!("{}/{}", dispatch.target_id, dispatch.task_id);
                if targets.closed.contains_key(&dispatch.target_id) {
                    tracing::info!("skip {label}: the target failed closed this cycle");
                    continue;
                }
                if !targets
                    .in_backlog
                    .get(&dispatch.target_id)
                    .is_some_and(|tasks| tasks.contains(&dispatch.task_id))
                {
                    tracing::info!("skip {label}: not in the backlog any more");
                    continue;
                }
                if let Some(dispatched) = self.dispatch(&dispatch, version).await? {
                    report.dispatched.push(dispatched);
                }
            }
        }
        self.record_metrics(&report).await;
        self.cycles.send_modify(|n| *n += 1);
        Ok(report)
    }

    /// Cancels on the executor this process's runs of attempts an operator cancelled (the log
    /// says they ended; their workers must stop). The run's own recording then finds them ended.
    async fn stop_cancelled_runs(&self) {
        let cancelled: Vec<AttemptId> = {
            let graph = self.ledger.graph().await;
            self.runs
                .snapshot()
                .into_keys()
                .filter(|id| {
                    graph.attempt(id).is_some_and(|a| {
                        a.failure
                            .as_ref()
                            .is_some_and(|f| f.kind == FailureKind::Cancelled)
                    })
                })
                .collect()
        };
        for attempt_id in cancelled {
            tracing::info!("stop attempt={attempt_id}: cancelled by an operator");
            if let Err(error) = self.executor.cancel(&attempt_id).await {
                tracing::warn!("cannot cancel attempt={attempt_id} on the executor: {error}");
            }
        }
    }

    /// Counts the cycle in the scheduler's metrics, with the served targets' breakers after it.
    async fn record_metrics(&self, report: &CycleReport) {
        let breakers: Vec<(&str, bool)> = {
            let graph = self.ledger.graph().await;
            self.targets
                .keys()
                .map(|target| {
                    let open = graph
                        .target(target)
                        .is_some_and(|node| matches!(node.circuit, Circuit::Open { .. }));
                    (target.as_str(), open)
                })
                .collect()
        };
        let skips = report.skipped.iter().map(|skip| skip.reason.kind());
        self.metrics
            .record_cycle(report.dispatched.len(), skips, breakers);
    }

    /// Syncs every target with its backlog and reconciles it with its forge.
    async fn read_targets(&self) -> Result<TargetsRead, SchedulerError> {
        let mut read = TargetsRead::default();
        for (target_id, served) in &self.targets {
            let mut reasons = Vec::new();
            match self.sync_target(served).await? {
                Ok(tasks) => {
                    read.in_backlog.insert(target_id.clone(), tasks);
                }
                Err(reason) => reasons.push(reason),
            }
            match self.reconcile(target_id, served).await? {
                Ok(open) => {
                    read.forge_open_prs.insert(target_id.clone(), open);
                }
                Err(reason) => reasons.push(reason),
            }
            match self.spent_budget(target_id).await {
                Ok(Some(scope)) => {
                    read.spent_budgets.insert(target_id.clone(), scope);
                }
                Ok(None) => {}
                Err(reason) => reasons.push(reason),
            }
            if !reasons.is_empty() {
                read.closed.insert(target_id.clone(), reasons.join("; "));
            }
        }
        Ok(read)
    }

    /// The scope of `target`'s daily model budget (or all targets') if the gateway recorded it
    /// spent today: its `budget.exhausted` events have ids derived from the budget, so they are
    /// looked up, not searched for. An unreadable log closes the target (budgets never fail
    /// open).
    async fn spent_budget(&self, target: &TargetId) -> Result<Option<String>, String> {
        let day = self.clock.now().as_datetime().date_naive();
        let scopes = [format!("target:{target}:{day}"), format!("global:{day}")];
        let ids: Vec<EventId> = scopes
            .iter()
            .flat_map(|scope| {
                BudgetExhausted::DAY_RESOURCES
                    .map(|resource| BudgetExhausted::event_id(scope, resource))
            })
            .collect();
        let found = self
            .ledger
            .events()
            .find(&ids)
            .await
            .map_err(|e| format!("the model budgets cannot be read: {e}"))?;
        Ok(found
            .iter()
            // The gateway's own record (written by the control plane, with no principal).
            .filter(|event| event.principal.is_none())
            .filter_map(|event| BudgetExhausted::from_payload(&event.payload).ok())
            .map(|spent| spent.scope)
            .next())
    }

    /// True when the action concerns a served target (the planner sees the whole graph).
    fn serves_action(&self, graph: &Graph, action: &Action) -> bool {
        let target = match action {
            Action::ScheduleRetry { target_id, .. }
            | Action::FailTask { target_id, .. }
            | Action::BlockTask { target_id, .. }
            | Action::OpenCircuit { target_id, .. }
            | Action::CloseCircuit { target_id } => Some(target_id),
            Action::TimeOut { attempt_id, .. } => graph.attempt(attempt_id).map(|a| &a.target_id),
        };
        target.is_some_and(|t| self.targets.contains_key(t))
    }

    /// Records one decision; false when the ledger refused it (another writer got there first).
    async fn record_action(
        &self,
        action: &Action,
        expectations: Expectations,
        now: Timestamp,
    ) -> Result<bool, SchedulerError> {
        let (event, line) = match action {
            Action::ScheduleRetry {
                target_id,
                task_id,
                retry_number,
                attempt_id,
            } => {
                let Some(served) = self.targets.get(target_id) else {
                    return Ok(false);
                };
                let delay = retry_delay(&served.config.policy.retry, *retry_number, self.unit());
                let not_before = now.saturating_add(delay);
                (
                    self.event(&RetryScheduled {
                        target_id: target_id.clone(),
                        task_id: task_id.clone(),
                        retry_number: *retry_number,
                        backoff_seconds: delay.as_secs_f64(),
                        not_before,
                        attempt_id: attempt_id.clone(),
                    }),
                    format!(
                        "retry {target_id}/{task_id} #{retry_number} not before {not_before} (backoff {:.1} s)",
                        delay.as_secs_f64()
                    ),
                )
            }
            Action::FailTask {
                target_id,
                task_id,
                reason,
            } => (
                self.event(&TaskFailed(transition(target_id, task_id, reason))),
                format!("fail {target_id}/{task_id}: {reason}"),
            ),
            Action::BlockTask {
                target_id,
                task_id,
                reason,
            } => (
                self.event(&TaskBlocked(transition(target_id, task_id, reason))),
                format!("block {target_id}/{task_id}: {reason}"),
            ),
            Action::OpenCircuit {
                target_id,
                consecutive_failures,
                open_until,
            } => (
                self.event(&CircuitOpened {
                    target_id: target_id.clone(),
                    consecutive_failures: *consecutive_failures,
                    open_until: *open_until,
                }),
                format!(
                    "circuit {target_id} opened after {consecutive_failures} consecutive failures, until {open_until}"
                ),
            ),
            Action::CloseCircuit { target_id } => (
                self.event(&CircuitClosed {
                    target_id: target_id.clone(),
                    reason: Some("an attempt succeeded since it opened".to_owned()),
                }),
                format!("circuit {target_id} closed: an attempt succeeded since it opened"),
            ),
            Action::TimeOut {
                attempt_id,
                deadline_seconds,
            } => (
                self.event(&AttemptTimedOut {
                    attempt_id: attempt_id.clone(),
                    deadline_seconds: Some(*deadline_seconds),
                    summary: Some(format!(
                        "attempt exceeded its deadline of {deadline_seconds} s"
                    )),
                }),
                format!("timeout attempt={attempt_id} after {deadline_seconds} s"),
            ),
        };
        match self.record(vec![event], expectations).await? {
            Recorded::Appended => tracing::info!("{line}"),
            Recorded::Refused(reason) => {
                tracing::info!("not recorded ({line}): {reason}");
                return Ok(false);
            }
        }
        // Recorded first, so that the run's own recording finds the attempt ended.
        if let Action::TimeOut { attempt_id, .. } = action
            && self.runs.contains(attempt_id)
            && let Err(error) = self.executor.cancel(attempt_id).await
        {
            tracing::warn!("cannot cancel attempt={attempt_id} on the executor: {error}");
        }
        Ok(true)
    }

    /// Logs each waiting task once per reason (not every cycle).
    fn log_skips(&self, skipped: &[Skip]) {
        let mut logged = self
            .logged_skips
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for skip in skipped {
            let reason = skip.reason.to_string();
            let key = (skip.target_id.clone(), skip.task_id.clone());
            if logged.get(&key) != Some(&reason) {
                tracing::info!("skip {}/{}: {reason}", skip.target_id, skip.task_id);
                logged.insert(key, reason);
            }
        }
    }

    /// Creates the attempt under the task stream's version the plan saw, then runs it.
    /// `None` when another writer changed the task first.
    async fn dispatch(
        self: &Arc<Self>,
        dispatch: &Dispatch,
        task_version: u64,
    ) -> Result<Option<Dispatched>, SchedulerError> {
        let Some(served) = self.targets.get(&dispatch.target_id) else {
            return Ok(None);
        };
        let label = format!("{}/{}", dispatch.target_id, dispatch.task_id);
        let base = match self.publish_base(served).await {
            Ok(base) => base,
            Err(reason) => {
                tracing::warn!("skip {label}: cannot publish the base revision: {reason}");
                return Ok(None);
            }
        };
        let attempt_id = AttemptId::generate();
        let deadline = Duration::from_secs(dispatch.deadline.as_secs().max(1));
        let created = self.event(&AttemptCreated {
            attempt_id: attempt_id.clone(),
            task_id: dispatch.task_id.clone(),
            target_id: dispatch.target_id.clone(),
            attempt_number: dispatch.attempt_number,
            executor: Some(self.executor.name().to_owned()),
            deadline_seconds: Some(deadline.as_secs()),
            base: base.clone(),
        });
        let expectation = (
            StreamId::task(&dispatch.target_id, &dispatch.task_id),
            ExpectedVersion::at(task_version),
        );
        let recorded = self
            .record(vec![created], Expectations::Explicit(vec![expectation]))
            .await
            .inspect_err(|_| {
                // The append may have landed before the store failed: if the attempt turns up
                // in the log, the next cycle finds nobody running it and ends it as lost.
                self.unrecovered
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(attempt_id.clone());
            })?;
        if let Recorded::Refused(reason) = recorded {
            tracing::info!(
                "skip {label}: the task changed since it was planned (another scheduler?): {reason}"
            );
            return Ok(None);
        }
        tracing::info!(
            "dispatch {label} attempt={attempt_id} #{}{}",
            dispatch.attempt_number,
            if dispatch.probe {
                " (half-open circuit probe)"
            } else {
                ""
            }
        );
        let submitted = self.event(&JobSubmitted {
            attempt_id: attempt_id.clone(),
            executor: self.executor.name().to_owned(),
            job_name: None,
            namespace: None,
        });
        // The attempt exists: it runs even when its bookkeeping cannot be recorded (the run
        // records its outcome once the log is back).
        match self.record(vec![submitted], Expectations::Derived).await {
            Ok(Recorded::Appended) => {}
            Ok(Recorded::Refused(reason)) => {
                tracing::warn!("job.submitted of attempt={attempt_id} not recorded: {reason}");
            }
            Err(error) => {
                tracing::warn!("job.submitted of attempt={attempt_id} not recorded: {error}");
            }
        }
        let spec = AttemptSpec {
            attempt_id: attempt_id.clone(),
            attempt_number: dispatch.attempt_number,
            task_id: dispatch.task_id.clone(),
            target_id: dispatch.target_id.clone(),
            repo_url: served.config.repo_url.clone(),
            base_branch: served.config.default_branch.clone(),
            deadline,
            env: self.worker_env(&served.config, base.as_ref()),
            worker_token: None,
        };
        self.spawn_run(spec, Start::Run);
        Ok(Some(Dispatched {
            target_id: dispatch.target_id.clone(),
            task_id: dispatch.task_id.clone(),
            attempt_id,
            attempt_number: dispatch.attempt_number,
            probe: dispatch.probe,
        }))
    }

    /// The base branch's tip as a bundle artifact, for a new attempt; `None` when this scheduler
    /// does not deliver (the worker then clones the branch itself).
    async fn publish_base(&self, served: &Served) -> Result<Option<AttemptBase>, String> {
        let (Some(deliverer), Some(artifacts)) = (&served.deliverer, &self.artifacts) else {
            return Ok(None);
        };
        let published = deliverer
            .publish_base(artifacts.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(AttemptBase {
            commit: published.commit,
            bundle_sha256: published.bundle.sha256,
        }))
    }

    /// The spec of an attempt already in the graph (for re-attaching to it).
    pub(super) fn spec_of(&self, attempt: &AttemptNode, served: &Served) -> AttemptSpec {
        AttemptSpec {
            attempt_id: attempt.attempt_id.clone(),
            attempt_number: attempt.attempt_number,
            task_id: attempt.task_id.clone(),
            target_id: attempt.target_id.clone(),
            repo_url: served.config.repo_url.clone(),
            base_branch: served.config.default_branch.clone(),
            deadline: attempt
                .deadline_seconds
                .map_or(served.config.policy.attempt_timeout, Duration::from_secs),
            env: self.worker_env(&served.config, attempt.base.as_ref()),
            worker_token: None,
        }
    }
}

/// The stream a decision is about, when its event must not be recorded twice for one state:
/// the task's for retries, failures and blocks, the target's for the circuit. A timeout is
/// refused by the graph once the attempt ended (and a worker's events on the attempt's stream
/// must not stop it), so it carries no expectation of its own.
fn decided_stream(action: &Action) -> Option<StreamId> {
    match action {
        Action::ScheduleRetry {
            target_id, task_id, ..
        }
        | Action::FailTask {
            target_id, task_id, ..
        }
        | Action::BlockTask {
            target_id, task_id, ..
        } => Some(StreamId::task(target_id, task_id)),
        Action::OpenCircuit { target_id, .. } | Action::CloseCircuit { target_id } => {
            Some(StreamId::target(target_id))
        }
        Action::TimeOut { .. } => None,
    }
}

fn transition(target_id: &TargetId, task_id: &TaskId, reason: &str) -> TaskTransition {
    TaskTransition {
        target_id: target_id.clone(),
        task_id: task_id.clone(),
        reason: Some(reason.to_owned()),
        attempt_id: None,
        status: None,
    }
}
