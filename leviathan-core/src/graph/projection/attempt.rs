//! The life of an attempt: `attempt.created`, `attempt.started`, `attempt.heartbeat`,
//! `job.submitted`, and its end: `attempt.succeeded`, `attempt.failed`, `attempt.timed_out`,
//! `attempt.invalidated`.

use super::{
    delivery::pr_number,
    effect::{Effect, Rejection},
};
use crate::{
    catalogue as cat,
    graph::node::{AttemptNode, EdgeKind, Node, NodeId},
    id::{TargetId, TaskId},
    model::{AttemptStatus, Failure, FailureClass, FailureKind, TaskStatus},
};

impl Effect<'_, '_> {
    /// A new live attempt: its task is in progress, its target runs one more.
    pub(super) fn create_attempt(&mut self, p: &cat::AttemptCreated) -> Result<(), Rejection> {
        let mut task = self.task(&p.target_id, &p.task_id)?;
        let mut target = self.target(&p.target_id, "target_id")?;
        if self.current(&NodeId::attempt(&p.attempt_id)).is_some() {
            return Err(Rejection::at(
                "attempt_id",
                format!("attempt `{}` already exists", p.attempt_id),
            ));
        }
        if let Some(live) = &task.live_attempt {
            return Err(Rejection::at(
                "task_id",
                format!("task `{}` already has a live attempt `{live}`", p.task_id),
            ));
        }
        if matches!(
            task.status,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Blocked
        ) {
            return Err(Rejection::at(
                "task_id",
                format!("task `{}` is {}", p.task_id, task.status),
            ));
        }
        if p.attempt_number != task.attempts + 1 {
            return Err(Rejection::at(
                "attempt_number",
                format!(
                    "must be {} (task `{}` has had {} attempts)",
                    task.attempts + 1,
                    p.task_id,
                    task.attempts
                ),
            ));
        }
        task.attempts += 1;
        task.live_attempt = Some(p.attempt_id.clone());
        task.last_attempt = Some(p.attempt_id.clone());
        task.status = TaskStatus::InProgress;
        task.not_before = None;
        task.awaiting_retry = false;
        self.touch(&mut task.meta);
        target.live_attempts += 1;
        self.touch(&mut target.meta);
        let attempt = AttemptNode {
            attempt_id: p.attempt_id.clone(),
            task_id: p.task_id.clone(),
            target_id: p.target_id.clone(),
            attempt_number: p.attempt_number,
            status: AttemptStatus::Created,
            executor: p.executor.clone(),
            deadline_seconds: p.deadline_seconds,
            job_name: None,
            worker: None,
            started_at: None,
            last_heartbeat_at: None,
            ended_at: None,
            ended_seq: None,
            failure: None,
            branch: None,
            commit_sha: None,
            pr_number: None,
            pr_url: None,
            invalidated_reason: None,
            model_calls: 0,
            test_runs: 0,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            base: p.base.clone(),
            proposal: None,
            delivery_refused: None,
            budget_exhausted: None,
            event_seqs: vec![self.at.seq],
            meta: self.new_meta(),
        };
        self.link(
            NodeId::attempt(&p.attempt_id),
            EdgeKind::AttemptOf,
            NodeId::task(&p.target_id, &p.task_id),
        );
        self.put(Node::Attempt(attempt));
        self.put(Node::Task(task));
        self.put(Node::Target(target));
        Ok(())
    }

    /// The worker started the attempt.
    pub(super) fn start_attempt(&mut self, p: &cat::AttemptStarted) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&p.attempt_id)?;
        if attempt.status == AttemptStatus::Running {
            return Err(Rejection::at(
                "attempt_id",
                format!("attempt `{}` already started", p.attempt_id),
            ));
        }
        check_matches(&attempt, p.task_id.as_ref(), p.target_id.as_ref())?;
        attempt.status = AttemptStatus::Running;
        attempt.started_at = Some(self.at.timestamp);
        attempt.worker = p.worker.clone().or(attempt.worker);
        self.note(&mut attempt);
        self.put(Node::Attempt(attempt));
        Ok(())
    }

    /// The worker is alive.
    pub(super) fn beat(&mut self, p: &cat::AttemptHeartbeat) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&p.attempt_id)?;
        attempt.last_heartbeat_at = Some(self.at.timestamp);
        self.note(&mut attempt);
        self.put(Node::Attempt(attempt));
        Ok(())
    }

    /// The executor submitted the job of the attempt.
    pub(super) fn submit_job(&mut self, p: &cat::JobSubmitted) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&p.attempt_id)?;
        attempt.executor = Some(p.executor.clone());
        attempt.job_name = p.job_name.clone();
        self.note(&mut attempt);
        self.put(Node::Attempt(attempt));
        Ok(())
    }

    /// The attempt delivered its pull request: the task is completed.
    pub(super) fn succeed_attempt(&mut self, p: &cat::AttemptSucceeded) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&p.attempt_id)?;
        let number = pr_number(p.pr_number);
        attempt.branch = Some(p.branch.clone());
        attempt.commit_sha = Some(p.commit_sha.clone());
        attempt.pr_number = Some(number);
        attempt.pr_url = Some(p.pr_url.clone());
        if self
            .pull_request(&attempt.target_id, number)
            .is_none_or(|pr| pr.attempt_id.as_ref() != Some(&attempt.attempt_id))
        {
            self.record_pr(&attempt, number, &p.pr_url, None, Some(&p.branch))?;
        }
        self.end_attempt(attempt, AttemptStatus::Succeeded, None)?;
        Ok(())
    }

    /// The attempt failed; its task may be retried.
    pub(super) fn fail_attempt(&mut self, p: &cat::AttemptFailed) -> Result<(), Rejection> {
        let attempt = self.live_attempt(&p.attempt_id)?;
        let failure = Failure {
            kind: p.failure_kind,
            class: p.class(),
            summary: p.error_summary.clone(),
        };
        self.end_attempt(attempt, AttemptStatus::Failed, Some(failure))?;
        Ok(())
    }

    /// The attempt outlived its deadline: a transient failure.
    pub(super) fn time_out_attempt(&mut self, p: &cat::AttemptTimedOut) -> Result<(), Rejection> {
        let attempt = self.live_attempt(&p.attempt_id)?;
        let summary = p.summary.clone().unwrap_or_else(|| {
            match p.deadline_seconds.or(attempt.deadline_seconds) {
                Some(s) => format!("attempt exceeded its deadline of {s} s"),
                None => "attempt exceeded its deadline".to_owned(),
            }
        });
        let failure = Failure {
            kind: FailureKind::Timeout,
            class: FailureClass::Transient,
            summary,
        };
        self.end_attempt(attempt, AttemptStatus::TimedOut, Some(failure))?;
        Ok(())
    }

    /// The attempt is void, live or ended: its task must be done again.
    pub(super) fn invalidate_attempt(
        &mut self,
        p: &cat::AttemptInvalidated,
    ) -> Result<(), Rejection> {
        let mut attempt = self.attempt(&p.attempt_id)?;
        if attempt.status == AttemptStatus::Invalidated {
            return Err(Rejection::at(
                "attempt_id",
                format!("attempt `{}` is already invalidated", p.attempt_id),
            ));
        }
        let mut task = self.task(&attempt.target_id, &attempt.task_id)?;
        let mut target = self.target(&attempt.target_id, "target_id")?;
        if attempt.status.is_live() {
            target.live_attempts = target.live_attempts.saturating_sub(1);
            attempt.ended_at = Some(self.at.timestamp);
            attempt.ended_seq = Some(self.at.seq);
        }
        if task.live_attempt.as_ref() == Some(&attempt.attempt_id) {
            task.live_attempt = None;
            task.status = TaskStatus::Pending;
            task.awaiting_retry = false;
        }
        if task.succeeded_attempt.as_ref() == Some(&attempt.attempt_id) {
            // The delivered change is void: the task must be done again.
            task.succeeded_attempt = None;
            if task.status == TaskStatus::Completed {
                task.status = TaskStatus::Pending;
            }
        }
        task.status_reason = Some(format!(
            "attempt {} invalidated: {}",
            attempt.attempt_id, p.reason
        ));
        attempt.status = AttemptStatus::Invalidated;
        attempt.invalidated_reason = Some(p.reason.clone());
        self.note(&mut attempt);
        self.touch(&mut task.meta);
        self.touch(&mut target.meta);
        self.put(Node::Attempt(attempt));
        self.put(Node::Task(task));
        self.put(Node::Target(target));
        Ok(())
    }

    /// Ends a live attempt and releases its task and target.
    pub(super) fn end_attempt(
        &mut self,
        mut attempt: AttemptNode,
        status: AttemptStatus,
        failure: Option<Failure>,
    ) -> Result<(), Rejection> {
        let mut task = self.task(&attempt.target_id, &attempt.task_id)?;
        let mut target = self.target(&attempt.target_id, "target_id")?;
        attempt.status = status;
        attempt.ended_at = Some(self.at.timestamp);
        attempt.ended_seq = Some(self.at.seq);
        if task.live_attempt.as_ref() == Some(&attempt.attempt_id) {
            task.live_attempt = None;
        }
        target.live_attempts = target.live_attempts.saturating_sub(1);
        match &failure {
            None => {
                task.status = TaskStatus::Completed;
                task.status_reason = Some(format!(
                    "attempt {} delivered a pull request",
                    attempt.attempt_id
                ));
                task.succeeded_attempt = Some(attempt.attempt_id.clone());
                task.consecutive_failures = 0;
                target.consecutive_failures = 0;
            }
            Some(failure) => {
                if task.status == TaskStatus::InProgress {
                    task.status = TaskStatus::Pending;
                }
                task.last_failure = Some(failure.clone());
                task.awaiting_retry = failure.class == FailureClass::Transient;
                task.consecutive_failures += 1;
                // An operator's or a shutdown's cancellation says nothing about the target's
                // health, so it does not count toward the circuit breaker.
                if failure.kind != FailureKind::Cancelled {
                    target.consecutive_failures += 1;
                }
            }
        }
        attempt.failure = failure;
        self.note(&mut attempt);
        self.touch(&mut task.meta);
        self.touch(&mut target.meta);
        self.put(Node::Attempt(attempt));
        self.put(Node::Task(task));
        self.put(Node::Target(target));
        Ok(())
    }
}

fn check_matches(
    attempt: &AttemptNode,
    task: Option<&TaskId>,
    target: Option<&TargetId>,
) -> Result<(), Rejection> {
    if let Some(task) = task
        && task != &attempt.task_id
    {
        return Err(Rejection::at(
            "task_id",
            format!(
                "attempt `{}` belongs to task `{}`, not `{task}`",
                attempt.attempt_id, attempt.task_id
            ),
        ));
    }
    if let Some(target) = target
        && target != &attempt.target_id
    {
        return Err(Rejection::at(
            "target_id",
            format!(
                "attempt `{}` belongs to target `{}`, not `{target}`",
                attempt.attempt_id, attempt.target_id
            ),
        ));
    }
    Ok(())
}
