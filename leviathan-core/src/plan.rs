//! The scheduler's planner: a pure function from the graph, the policy and the time to what to
//! dispatch, what to record, and why every other task waits.
//!
//! It reads no clock and draws no randomness: the runner passes `now`, and turns the plan into
//! events and executor calls. Every guardrail the predecessor configured but never enforced is a
//! rule here: readiness, dependencies, priority, path scope, attempt limits, backoff, the circuit
//! breaker (with a half-open probe), the open-PR latch, running limits and the attempt deadline.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::Serialize;

use crate::{
    graph::{AttemptNode, Circuit, Graph, TargetNode, TaskNode},
    id::{AttemptId, TargetId, TaskId},
    model::{AttemptStatus, FailureClass, TaskStatus},
    target::{Policy, RetryPolicy},
    timestamp::Timestamp,
};

/// The policies of the targets the scheduler serves, plus global limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SchedulingPolicy {
    /// Per-target guardrails. Targets absent here are never dispatched (fail closed).
    pub targets: BTreeMap<TargetId, Policy>,
    /// Attempts running at once over all targets.
    pub max_running_global: u32,
}

/// What the runner knows besides the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanContext {
    /// The current time.
    pub now: Timestamp,
    /// Open agent PRs per target as the forge reports them; the latch uses the larger of this and
    /// the graph's count, so PRs the log does not know about still hold the latch.
    pub forge_open_prs: BTreeMap<TargetId, u32>,
    /// Targets whose daily model budget (their own or all targets') the gateway found spent
    /// today, with the budget's scope: nothing is dispatched for them until it resets.
    pub spent_budgets: BTreeMap<TargetId, String>,
}

impl PlanContext {
    /// A context at `now` with no forge information.
    pub fn at(now: Timestamp) -> Self {
        Self {
            now,
            forge_open_prs: BTreeMap::new(),
            spent_budgets: BTreeMap::new(),
        }
    }
}

/// One attempt to create and run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dispatch {
    /// The target.
    pub target_id: TargetId,
    /// The task.
    pub task_id: TaskId,
    /// The new attempt's number.
    pub attempt_number: u32,
    /// True when this is the single probe of a half-open circuit.
    pub probe: bool,
    /// Deadline from policy.
    pub deadline: Duration,
}

/// A decision that becomes an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Emit `retry.scheduled` with a jittered backoff (the runner draws the jitter).
    ScheduleRetry {
        /// The target.
        target_id: TargetId,
        /// The task.
        task_id: TaskId,
        /// Number of the coming attempt.
        retry_number: u32,
        /// The failed attempt.
        attempt_id: Option<AttemptId>,
    },
    /// Emit `task.failed`: attempts exhausted.
    FailTask {
        /// The target.
        target_id: TargetId,
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: String,
    },
    /// Emit `task.blocked`: the last failure was permanent.
    BlockTask {
        /// The target.
        target_id: TargetId,
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: String,
    },
    /// Emit `circuit.opened`.
    OpenCircuit {
        /// The target.
        target_id: TargetId,
        /// The failure count that tripped it.
        consecutive_failures: u32,
        /// End of the cooldown.
        open_until: Timestamp,
    },
    /// Emit `circuit.closed`: the probe succeeded.
    CloseCircuit {
        /// The target.
        target_id: TargetId,
    },
    /// Cancel the attempt and emit `attempt.timed_out`.
    TimeOut {
        /// The attempt.
        attempt_id: AttemptId,
        /// Its deadline.
        deadline_seconds: u64,
    },
}

/// Why a task is not dispatched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// Autonomy is off for the target, or the target has no policy.
    AutonomyDisabled,
    /// `ready` is not true in the backlog.
    NotReady,
    /// The task's status does not allow dispatch.
    Status {
        /// The status (graph or backlog).
        status: String,
    },
    /// Dependencies are not completed.
    Dependencies {
        /// The dependencies still open (or unknown).
        waiting_on: Vec<TaskId>,
    },
    /// A path rule lies outside the target's allowed prefixes.
    Scope {
        /// The rules outside.
        outside: Vec<String>,
    },
    /// An attempt is in flight.
    InFlight {
        /// The attempt.
        attempt_id: AttemptId,
    },
    /// The retry backoff has not elapsed.
    Backoff {
        /// Earliest dispatch time (`None` while the retry is being scheduled).
        until: Option<Timestamp>,
    },
    /// Attempts exhausted.
    MaxAttempts {
        /// Failed attempts.
        attempts: u32,
        /// The limit.
        max: u32,
    },
    /// Too many open PRs (or attempts that may become PRs).
    OpenPrLatch {
        /// Open PRs plus attempts in flight.
        open: u32,
        /// The limit.
        max: u32,
    },
    /// Too many attempts running.
    MaxRunning {
        /// `target` or `global`.
        scope: &'static str,
        /// Running plus dispatched in this plan.
        running: u32,
        /// The limit.
        max: u32,
    },
    /// The circuit breaker is open.
    CircuitOpen {
        /// End of the cooldown (or the probe in flight).
        until: Timestamp,
    },
    /// The target's daily model budget, or all targets', is spent until the day ends.
    BudgetSpent {
        /// `target:<id>:<day>` or `global:<day>`.
        scope: String,
    },
}

impl SkipReason {
    /// The reason's kind, as its serde tag spells it (a metrics label: one value per variant).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AutonomyDisabled => "autonomy_disabled",
            Self::NotReady => "not_ready",
            Self::Status { .. } => "status",
            Self::Dependencies { .. } => "dependencies",
            Self::Scope { .. } => "scope",
            Self::InFlight { .. } => "in_flight",
            Self::Backoff { .. } => "backoff",
            Self::MaxAttempts { .. } => "max_attempts",
            Self::OpenPrLatch { .. } => "open_pr_latch",
            Self::MaxRunning { .. } => "max_running",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::BudgetSpent { .. } => "budget_spent",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AutonomyDisabled => f.write_str("autonomy disabled for the target"),
            Self::NotReady => f.write_str("not ready"),
            Self::Status { status } => write!(f, "status {status}"),
            Self::Dependencies { waiting_on } => {
                write!(
                    f,
                    "waiting on {}",
                    waiting_on
                        .iter()
                        .map(TaskId::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Self::Scope { outside } => write!(
                f,
                "paths outside the allowed prefixes: {}",
                outside.join(", ")
            ),
            Self::InFlight { attempt_id } => write!(f, "attempt {attempt_id} in flight"),
            Self::Backoff { until: Some(t) } => write!(f, "backoff until {t}"),
            Self::Backoff { until: None } => f.write_str("retry being scheduled"),
            Self::MaxAttempts { attempts, max } => {
                write!(f, "max attempts reached ({attempts}/{max})")
            }
            Self::OpenPrLatch { open, max } => {
                write!(f, "open-PR latch ({open} open or in flight, max {max})")
            }
            Self::MaxRunning {
                scope,
                running,
                max,
            } => write!(f, "max running ({scope}: {running}/{max})"),
            Self::CircuitOpen { until } => write!(f, "circuit open until {until}"),
            Self::BudgetSpent { scope } => write!(f, "model budget {scope} spent"),
        }
    }
}

/// A task that is not dispatched and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// The target.
    pub target_id: TargetId,
    /// The task.
    pub task_id: TaskId,
    /// Why.
    #[serde(flatten)]
    pub reason: SkipReason,
}

/// The outcome of planning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Decisions to record first (in order).
    pub actions: Vec<Action>,
    /// Attempts to create and run.
    pub dispatch: Vec<Dispatch>,
    /// Every other task and why it waits.
    pub skipped: Vec<Skip>,
}

/// The delay before retry number `retry` (2 for the second attempt): exponential from
/// `initial` by `factor`, capped at `max`; with full jitter it is `unit` (uniform in `[0, 1)`,
/// drawn by the caller) times that.
pub fn retry_delay(policy: &RetryPolicy, retry: u32, unit: f64) -> Duration {
    let steps = retry.saturating_sub(2).min(64) as i32;
    let backoff =
        (policy.initial.as_secs_f64() * policy.factor.powi(steps)).min(policy.max.as_secs_f64());
    let delay = if policy.jitter {
        backoff * unit.clamp(0.0, 1.0)
    } else {
        backoff
    };
    Duration::from_secs_f64(delay.max(0.0))
}

/// Circuit state for this plan, after the breaker decisions.
enum Breaker {
    Closed,
    Open { until: Timestamp },
    HalfOpen,
}

/// Plans one scheduling cycle.
pub fn plan(graph: &Graph, policy: &SchedulingPolicy, ctx: &PlanContext) -> Plan {
    let now = ctx.now;
    let mut out = Plan {
        // Deadlines first: they free running slots.
        actions: time_outs(graph, now),
        ..Plan::default()
    };
    let mut slots = Slots::after(graph, &out.actions);
    let breakers = breakers(graph, policy, now, &mut out.actions);
    for task in candidates(graph) {
        let skip = |reason| Skip {
            target_id: task.target_id.clone(),
            task_id: task.task_id.clone(),
            reason,
        };
        let Some(p) = policy
            .targets
            .get(&task.target_id)
            .filter(|p| p.autonomy_enabled)
        else {
            out.skipped.push(skip(SkipReason::AutonomyDisabled));
            continue;
        };
        let Some(target) = graph.target(&task.target_id) else {
            continue;
        };
        if let Err(reason) = gate(graph, task, p, now, &mut out.actions) {
            out.skipped.push(skip(reason));
            continue;
        }
        let limits = Limits {
            target: p,
            max_running_global: policy.max_running_global,
            forge_open_prs: ctx.forge_open_prs.get(&task.target_id).copied(),
            spent_budget: ctx.spent_budgets.get(&task.target_id),
            now,
        };
        match slots.claim(task, target, breakers.get(&task.target_id), &limits) {
            Ok(dispatch) => out.dispatch.push(dispatch),
            Err(reason) => out.skipped.push(skip(reason)),
        }
    }
    out
}

/// Time-outs of the live attempts past their deadline.
fn time_outs(graph: &Graph, now: Timestamp) -> Vec<Action> {
    graph
        .live_attempts()
        .filter_map(|attempt| {
            let deadline = attempt.deadline_seconds?;
            let due = attempt
                .meta
                .created_at
                .saturating_add(Duration::from_secs(deadline));
            (now >= due).then(|| Action::TimeOut {
                attempt_id: attempt.attempt_id.clone(),
                deadline_seconds: deadline,
            })
        })
        .collect()
}

/// The tasks of every target in dispatch order: priority, then backlog order.
fn candidates(graph: &Graph) -> Vec<&TaskNode> {
    let mut tasks: Vec<&TaskNode> = graph
        .targets()
        .flat_map(|t| graph.tasks_of(&t.target_id))
        .collect();
    tasks.sort_by(|a, b| {
        (
            a.spec.priority.rank(),
            a.backlog_index.map_or(a.meta.created_seq, u64::from),
            &a.target_id,
            &a.task_id,
        )
            .cmp(&(
                b.spec.priority.rank(),
                b.backlog_index.map_or(b.meta.created_seq, u64::from),
                &b.target_id,
                &b.task_id,
            ))
    });
    tasks
}

/// The circuit of every target with a policy, after this plan's breaker decisions.
fn breakers(
    graph: &Graph,
    policy: &SchedulingPolicy,
    now: Timestamp,
    actions: &mut Vec<Action>,
) -> BTreeMap<TargetId, Breaker> {
    graph
        .targets()
        .filter_map(|target| {
            let p = policy.targets.get(&target.target_id)?;
            Some((target.target_id.clone(), breaker(target, p, now, actions)))
        })
        .collect()
}

/// The limits one dispatch is checked against.
struct Limits<'p> {
    target: &'p Policy,
    max_running_global: u32,
    /// The target's open agent PRs as the forge reports them, when it was asked.
    forge_open_prs: Option<u32>,
    /// The target's spent daily model budget, if any.
    spent_budget: Option<&'p String>,
    now: Timestamp,
}

/// Attempts running, counting this plan's dispatches, and the half-open probes taken.
struct Slots {
    running_global: u32,
    running_by_target: BTreeMap<TargetId, u32>,
    probes_used: BTreeMap<TargetId, bool>,
}

impl Slots {
    /// The live attempts, without those `actions` time out.
    fn after(graph: &Graph, actions: &[Action]) -> Self {
        let timed_out: Vec<&AttemptId> = actions
            .iter()
            .filter_map(|a| match a {
                Action::TimeOut { attempt_id, .. } => Some(attempt_id),
                _ => None,
            })
            .collect();
        let live = |a: &&AttemptNode| !timed_out.contains(&&a.attempt_id);
        let mut running_by_target: BTreeMap<TargetId, u32> = BTreeMap::new();
        for a in graph.live_attempts().filter(live) {
            *running_by_target.entry(a.target_id.clone()).or_insert(0) += 1;
        }
        Self {
            running_global: graph.live_attempts().filter(live).count() as u32,
            running_by_target,
            probes_used: BTreeMap::new(),
        }
    }

    /// A dispatch of `task` if its circuit and the limits allow one, taking its slot; else why
    /// it waits.
    fn claim(
        &mut self,
        task: &TaskNode,
        target: &TargetNode,
        breaker: Option<&Breaker>,
        limits: &Limits<'_>,
    ) -> Result<Dispatch, SkipReason> {
        let p = limits.target;
        if let Some(scope) = limits.spent_budget {
            return Err(SkipReason::BudgetSpent {
                scope: scope.clone(),
            });
        }
        let running_here = self
            .running_by_target
            .get(&task.target_id)
            .copied()
            .unwrap_or(0);
        let probe = self.probe(task, target, breaker, running_here, limits.now)?;
        let open = target.open_prs.max(limits.forge_open_prs.unwrap_or(0)) + running_here;
        if open >= p.max_open_prs {
            return Err(SkipReason::OpenPrLatch {
                open,
                max: p.max_open_prs,
            });
        }
        if running_here >= p.max_running_attempts {
            return Err(SkipReason::MaxRunning {
                scope: "target",
                running: running_here,
                max: p.max_running_attempts,
            });
        }
        if self.running_global >= limits.max_running_global {
            return Err(SkipReason::MaxRunning {
                scope: "global",
                running: self.running_global,
                max: limits.max_running_global,
            });
        }
        self.running_global += 1;
        *self
            .running_by_target
            .entry(task.target_id.clone())
            .or_insert(0) += 1;
        Ok(Dispatch {
            target_id: task.target_id.clone(),
            task_id: task.task_id.clone(),
            attempt_number: task.attempts + 1,
            probe,
            deadline: p.attempt_timeout,
        })
    }

    /// Whether the circuit lets `task` through: `true` when it is the half-open circuit's single
    /// probe (taken even if a limit then holds the task back).
    fn probe(
        &mut self,
        task: &TaskNode,
        target: &TargetNode,
        breaker: Option<&Breaker>,
        running_here: u32,
        now: Timestamp,
    ) -> Result<bool, SkipReason> {
        match breaker {
            Some(Breaker::Open { until }) => Err(SkipReason::CircuitOpen { until: *until }),
            Some(Breaker::HalfOpen) => {
                let used = self
                    .probes_used
                    .entry(task.target_id.clone())
                    .or_insert(false);
                if *used || running_here > 0 {
                    let until = match target.circuit {
                        Circuit::Open { until, .. } => until,
                        Circuit::Closed => now,
                    };
                    return Err(SkipReason::CircuitOpen { until });
                }
                *used = true;
                Ok(true)
            }
            Some(Breaker::Closed) | None => Ok(false),
        }
    }
}

/// The breaker decisions for a target, recorded as actions, and its state for this plan.
fn breaker(target: &TargetNode, p: &Policy, now: Timestamp, actions: &mut Vec<Action>) -> Breaker {
    let cb = &p.circuit_breaker;
    match target.circuit {
        Circuit::Closed if cb.enabled && target.consecutive_failures >= cb.threshold => {
            let until = now.saturating_add(cb.cooldown);
            actions.push(Action::OpenCircuit {
                target_id: target.target_id.clone(),
                consecutive_failures: target.consecutive_failures,
                open_until: until,
            });
            Breaker::Open { until }
        }
        Circuit::Closed => Breaker::Closed,
        Circuit::Open { .. } if !cb.enabled || target.consecutive_failures == 0 => {
            // A success since the circuit opened (the probe), or the breaker was switched off.
            actions.push(Action::CloseCircuit {
                target_id: target.target_id.clone(),
            });
            Breaker::Closed
        }
        Circuit::Open {
            until, failures, ..
        } if now >= until && target.consecutive_failures > failures => {
            // The probe failed: open again for another cooldown.
            let until = now.saturating_add(cb.cooldown);
            actions.push(Action::OpenCircuit {
                target_id: target.target_id.clone(),
                consecutive_failures: target.consecutive_failures,
                open_until: until,
            });
            Breaker::Open { until }
        }
        Circuit::Open { until, .. } if now >= until => Breaker::HalfOpen,
        Circuit::Open { until, .. } => Breaker::Open { until },
    }
}

/// The per-task rules that do not depend on other dispatches in this plan.
fn gate(
    graph: &Graph,
    task: &TaskNode,
    p: &Policy,
    now: Timestamp,
    actions: &mut Vec<Action>,
) -> Result<(), SkipReason> {
    match task.status {
        TaskStatus::Pending => {}
        TaskStatus::InProgress => {
            return Err(match &task.live_attempt {
                Some(attempt_id) => SkipReason::InFlight {
                    attempt_id: attempt_id.clone(),
                },
                None => SkipReason::Status {
                    status: task.status.to_string(),
                },
            });
        }
        status => {
            return Err(SkipReason::Status {
                status: status.to_string(),
            });
        }
    }
    if !task.spec.ready {
        return Err(SkipReason::NotReady);
    }
    if !task.spec.backlog_dispatchable() {
        return Err(SkipReason::Status {
            status: task.spec.status.clone().unwrap_or_default(),
        });
    }
    let waiting_on: Vec<TaskId> = task
        .spec
        .dependencies
        .iter()
        .filter(|dep| {
            graph
                .task(&task.target_id, dep)
                .is_none_or(|d| d.status != TaskStatus::Completed && !d.spec.backlog_completed())
        })
        .cloned()
        .collect();
    if !waiting_on.is_empty() {
        return Err(SkipReason::Dependencies { waiting_on });
    }
    if !p.in_scope(task.spec.allowed_paths.iter()) {
        let outside = task
            .spec
            .allowed_paths
            .iter()
            .filter(|r| {
                !p.allowed_path_prefixes
                    .iter()
                    .any(|prefix| prefix == "/" || r.within_prefix(prefix))
            })
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        let outside = if outside.is_empty() {
            vec!["(no allowed_paths)".to_owned()]
        } else {
            outside
        };
        return Err(SkipReason::Scope { outside });
    }
    if let Some(failure) = &task.last_failure
        && failure.class == FailureClass::Permanent
        && task.consecutive_failures > 0
    {
        actions.push(Action::BlockTask {
            target_id: task.target_id.clone(),
            task_id: task.task_id.clone(),
            reason: format!("permanent failure ({}): {}", failure.kind, failure.summary),
        });
        return Err(SkipReason::Status {
            status: "blocked".into(),
        });
    }
    // Invalidated attempts were an operator's decision, not the task's failures.
    let failed = graph
        .attempts_of(&task.target_id, &task.task_id)
        .filter(|a| matches!(a.status, AttemptStatus::Failed | AttemptStatus::TimedOut))
        .count() as u32;
    if failed >= p.max_attempts_per_task {
        actions.push(Action::FailTask {
            target_id: task.target_id.clone(),
            task_id: task.task_id.clone(),
            reason: format!("max attempts ({}) exhausted", p.max_attempts_per_task),
        });
        return Err(SkipReason::MaxAttempts {
            attempts: failed,
            max: p.max_attempts_per_task,
        });
    }
    if task.awaiting_retry {
        actions.push(Action::ScheduleRetry {
            target_id: task.target_id.clone(),
            task_id: task.task_id.clone(),
            retry_number: task.attempts + 1,
            attempt_id: task.last_attempt.clone(),
        });
        return Err(SkipReason::Backoff { until: None });
    }
    if let Some(until) = task.not_before
        && now < until
    {
        return Err(SkipReason::Backoff { until: Some(until) });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
