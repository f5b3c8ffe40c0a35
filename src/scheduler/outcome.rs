//! Running attempts in tasks of their own and recording how they ended: what the worker could
//! not report (a crash, a lost attempt, an executor failure), the executor's artifacts, and the
//! task's completion. Also the re-attachment of orphaned attempts after a restart.

use std::{sync::Arc, time::Duration};

use leviathan_core::{
    AttemptId, AttemptOutcome, AttemptResult, AttemptSpec, ExecutorError, Expectations, NewEvent,
    TargetId, TaskId, Timestamp,
    catalogue::{ArtifactCreated, AttemptFailed, AttemptSucceeded, TaskCompleted, TaskTransition},
    executor::ArtifactRef,
    model::{AttemptStatus, FailureClass, FailureKind},
};

use super::{Inner, Recorded, SchedulerError, runs::Run};

/// How long a worker token outlives its attempt's deadline (the worker's last report).
const TOKEN_GRACE: Duration = Duration::from_secs(15 * 60);
/// The longest a worker token may live (the control plane refuses more than 7 days).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 86_400 - 60);

/// How a run task gets its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// A new attempt: [`Executor::run`](leviathan_core::Executor::run).
    Run,
    /// An orphan of an earlier process: [`Executor::reattach`](leviathan_core::Executor::reattach).
    Reattach,
}

impl Inner {
    /// Runs (or re-attaches to) `spec` in a task of its own that records the outcome; nothing
    /// happens when this process already runs the attempt.
    pub(super) fn spawn_run(self: &Arc<Self>, spec: AttemptSpec, start: Start) {
        let run = Run {
            target_id: spec.target_id.clone(),
            task_id: spec.task_id.clone(),
        };
        let Some(guard) = self.runs.start(&spec.attempt_id, run) else {
            return;
        };
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let _registered = guard;
            inner.follow_run(spec, start).await;
        });
    }

    async fn follow_run(&self, spec: AttemptSpec, start: Start) {
        let label = label(&spec);
        let result = match start {
            Start::Run => match self.with_token(spec.clone()).await {
                Ok(with_token) => self.executor.run(&with_token).await,
                Err(error) => Err(error),
            },
            Start::Reattach => match self.executor.reattach(&spec).await {
                Ok(Some(outcome)) => Ok(outcome),
                Ok(None) => {
                    if let Err(error) = self.record_lost(&spec).await {
                        tracing::error!("cannot record {label} as lost: {error}");
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!("reattach {label}: {error}; trying again next cycle");
                    self.unrecovered
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(spec.attempt_id.clone());
                    return;
                }
            },
        };
        if let Err(error) = self.record_outcome(&spec, result).await {
            tracing::error!("cannot record how {label} ended: {error}");
        }
    }

    /// `spec` with the attempt's own worker token, when this scheduler mints them. A token that
    /// cannot be minted fails the attempt (transiently) rather than hand the worker another.
    async fn with_token(&self, mut spec: AttemptSpec) -> Result<AttemptSpec, ExecutorError> {
        let Some(minter) = &self.worker_tokens else {
            return Ok(spec);
        };
        let ttl = (spec.deadline + TOKEN_GRACE).min(MAX_TOKEN_TTL);
        let expires = Timestamp::now().saturating_add(ttl);
        let token = minter
            .mint(&spec.attempt_id, expires)
            .await
            .map_err(|source| ExecutorError::Unavailable {
                reason: format!(
                    "cannot mint the worker token of attempt {}",
                    spec.attempt_id
                ),
                source: Some(source),
            })?;
        spec.worker_token = Some(token);
        Ok(spec)
    }

    /// Records what the worker could not: the outcome while the attempt is still live, the
    /// executor's artifacts (allowed after the end), and `task.completed` after a success.
    async fn record_outcome(
        &self,
        spec: &AttemptSpec,
        result: Result<AttemptOutcome, ExecutorError>,
    ) -> Result<(), SchedulerError> {
        let label = label(spec);
        // A proposal in the log is answered whatever the executor says (a late one is refused).
        let proposed = self.deliver_proposal(&spec.attempt_id).await?;
        if !proposed && self.is_live(spec).await? {
            let (event, line) = self.ending(spec, &result);
            match self.record(vec![event], Expectations::Derived).await? {
                Recorded::Appended => tracing::info!("{line}"),
                Recorded::Refused(reason) => tracing::info!("not recorded ({line}): {reason}"),
            }
        } else {
            match &result {
                Ok(outcome) => tracing::info!(
                    "ended {label}: {} (reported by the worker or recorded already)",
                    describe(&outcome.result)
                ),
                Err(error) => tracing::info!("ended {label}; the executor said: {error}"),
            }
        }
        if let Ok(outcome) = &result {
            self.record_artifacts(spec, &outcome.artifacts).await?;
        }
        if proposed {
            return Ok(());
        }
        self.complete_if_delivered(&spec.target_id, &spec.task_id, &spec.attempt_id)
            .await
    }

    /// The event that ends a live attempt as the executor reported it, and its log line.
    fn ending(
        &self,
        spec: &AttemptSpec,
        result: &Result<AttemptOutcome, ExecutorError>,
    ) -> (NewEvent, String) {
        let label = label(spec);
        match result {
            Ok(AttemptOutcome {
                result:
                    AttemptResult::Succeeded {
                        branch,
                        commit_sha,
                        pr_number,
                        pr_url,
                    },
                ..
            }) => (
                self.event(&AttemptSucceeded {
                    attempt_id: spec.attempt_id.clone(),
                    branch: branch.clone(),
                    commit_sha: commit_sha.clone(),
                    pr_number: i64::try_from(*pr_number).unwrap_or(i64::MAX),
                    pr_url: pr_url.clone(),
                }),
                format!("succeeded {label}: PR #{pr_number} {pr_url}"),
            ),
            Ok(AttemptOutcome {
                result: AttemptResult::Proposed { patch_sha256, .. },
                ..
            }) => {
                let summary = format!(
                    "the worker reported a proposal (patch {patch_sha256}) that the log does not hold"
                );
                (
                    self.event(&AttemptFailed {
                        attempt_id: spec.attempt_id.clone(),
                        failure_kind: FailureKind::Infrastructure,
                        failure_class: Some(FailureClass::Transient),
                        error_summary: summary.clone(),
                    }),
                    format!("failed {label}: {summary}"),
                )
            }
            Ok(AttemptOutcome {
                result: AttemptResult::Failed(failure),
                ..
            }) => (
                self.event(&AttemptFailed {
                    attempt_id: spec.attempt_id.clone(),
                    failure_kind: failure.kind,
                    failure_class: Some(failure.class),
                    error_summary: failure.summary.clone(),
                }),
                format!(
                    "failed {label}: {} ({}): {}",
                    failure.kind, failure.class, failure.summary
                ),
            ),
            Err(error) => {
                let class = if error.is_transient() {
                    FailureClass::Transient
                } else {
                    FailureClass::Permanent
                };
                let summary = format!("executor `{}`: {error}", self.executor.name());
                (
                    self.event(&AttemptFailed {
                        attempt_id: spec.attempt_id.clone(),
                        failure_kind: FailureKind::Infrastructure,
                        failure_class: Some(class),
                        error_summary: summary.clone(),
                    }),
                    format!("failed {label}: infrastructure ({class}): {summary}"),
                )
            }
        }
    }

    /// `artifact.created` for the artifacts the executor collected (pod logs and the like).
    async fn record_artifacts(
        &self,
        spec: &AttemptSpec,
        artifacts: &[ArtifactRef],
    ) -> Result<(), SchedulerError> {
        if artifacts.is_empty() {
            return Ok(());
        }
        let events = artifacts
            .iter()
            .map(|a| {
                self.event(&ArtifactCreated {
                    sha256: a.sha256,
                    kind: a.kind.clone(),
                    size: a.size,
                    name: a.name.clone(),
                    uri: Some(format!("/v1/artifacts/{}", a.sha256)),
                    attempt_id: Some(spec.attempt_id.clone()),
                })
            })
            .collect();
        if let Recorded::Refused(reason) = self.record(events, Expectations::Derived).await? {
            tracing::warn!("artifacts of {} not recorded: {reason}", label(spec));
        }
        Ok(())
    }

    /// `task.completed` once the attempt succeeded with a pull request.
    pub(super) async fn complete_if_delivered(
        &self,
        target_id: &TargetId,
        task_id: &TaskId,
        attempt_id: &AttemptId,
    ) -> Result<(), SchedulerError> {
        let succeeded = self
            .ledger
            .graph()
            .await
            .attempt(attempt_id)
            .and_then(|a| (a.status == AttemptStatus::Succeeded).then_some(a.pr_number))
            .flatten();
        let Some(pr_number) = succeeded else {
            return Ok(());
        };
        let completed = self.event(&TaskCompleted(TaskTransition {
            target_id: target_id.clone(),
            task_id: task_id.clone(),
            reason: Some(format!(
                "attempt {} delivered pull request #{pr_number}",
                attempt_id
            )),
            attempt_id: Some(attempt_id.clone()),
            status: None,
        }));
        let line = format!("complete {}/{}: PR #{pr_number}", target_id, task_id);
        match self.record(vec![completed], Expectations::Derived).await? {
            Recorded::Appended => tracing::info!("{line}"),
            Recorded::Refused(reason) => tracing::info!("not recorded ({line}): {reason}"),
        }
        Ok(())
    }

    /// Whether the attempt is still live in the log, after catching up with it.
    async fn is_live(&self, spec: &AttemptSpec) -> Result<bool, SchedulerError> {
        self.ledger.catch_up().await?;
        Ok(self
            .ledger
            .graph()
            .await
            .attempt(&spec.attempt_id)
            .is_some_and(|a| a.status.is_live()))
    }

    /// Ends an attempt no executor can find as `lost` (transient: retried by policy).
    async fn record_lost(&self, spec: &AttemptSpec) -> Result<(), SchedulerError> {
        // The worker ended with a proposal: it is delivered, not lost.
        if self.deliver_proposal(&spec.attempt_id).await? {
            return Ok(());
        }
        let live = self.is_live(spec).await?;
        if !live {
            return Ok(());
        }
        let summary = format!(
            "executor `{}` has no trace of the attempt after a scheduler restart",
            self.executor.name()
        );
        let line = format!(
            "lost {}/{} attempt={}: {summary}",
            spec.target_id, spec.task_id, spec.attempt_id
        );
        let event = self.event(&AttemptFailed {
            attempt_id: spec.attempt_id.clone(),
            failure_kind: FailureKind::Lost,
            failure_class: Some(FailureClass::Transient),
            error_summary: summary,
        });
        match self.record(vec![event], Expectations::Derived).await? {
            Recorded::Appended => tracing::info!("{line}"),
            Recorded::Refused(reason) => tracing::info!("not recorded ({line}): {reason}"),
        }
        Ok(())
    }

    /// Re-attaches to every live attempt of the served targets that this process does not run.
    pub(super) async fn recover(self: &Arc<Self>) -> Result<usize, SchedulerError> {
        self.ledger.catch_up().await?;
        let orphans: Vec<AttemptSpec> = {
            let graph = self.ledger.graph().await;
            graph
                .live_attempts()
                .filter(|a| !self.runs.contains(&a.attempt_id))
                .filter_map(|a| {
                    let served = self.targets.get(&a.target_id)?;
                    match a.executor.as_deref() {
                        Some(other) if other != self.executor.name() => {
                            tracing::info!(
                                "leave {}/{} attempt={} to executor `{other}` (this scheduler runs `{}`); its deadline still holds",
                                a.target_id,
                                a.task_id,
                                a.attempt_id,
                                self.executor.name()
                            );
                            None
                        }
                        _ => Some(self.spec_of(a, served)),
                    }
                })
                .collect()
        };
        for spec in &orphans {
            tracing::info!(
                "reattach {}/{} attempt={} #{}",
                spec.target_id,
                spec.task_id,
                spec.attempt_id,
                spec.attempt_number
            );
            self.spawn_run(spec.clone(), Start::Reattach);
        }
        Ok(orphans.len())
    }

    /// Tries again the re-attachments that failed.
    pub(super) async fn retry_unrecovered(self: &Arc<Self>) {
        let pending = std::mem::take(
            &mut *self
                .unrecovered
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if pending.is_empty() {
            return;
        }
        let specs: Vec<AttemptSpec> = {
            let graph = self.ledger.graph().await;
            pending
                .iter()
                .filter_map(|id| graph.attempt(id))
                .filter(|a| a.status.is_live())
                .filter_map(|a| Some(self.spec_of(a, self.targets.get(&a.target_id)?)))
                .collect()
        };
        for spec in specs {
            self.spawn_run(spec, Start::Reattach);
        }
    }
}

fn describe(result: &AttemptResult) -> String {
    match result {
        AttemptResult::Succeeded { pr_number, .. } => format!("succeeded with PR #{pr_number}"),
        AttemptResult::Proposed { patch_sha256, .. } => format!("proposed patch {patch_sha256}"),
        AttemptResult::Failed(f) => format!("failed: {} ({})", f.kind, f.class),
    }
}

/// How log lines name an attempt: `target/task attempt=id`.
fn label(spec: &AttemptSpec) -> String {
    format!(
        "{}/{} attempt={}",
        spec.target_id, spec.task_id, spec.attempt_id
    )
}
