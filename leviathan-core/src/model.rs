//! The domain model: tasks as a backlog describes them, and the states of tasks, attempts and PRs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{id::TaskId, paths::AllowedPaths};

/// Task priority; `high` is dispatched first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Dispatched first.
    High,
    /// The default.
    #[default]
    Medium,
    /// Dispatched last.
    Low,
}

impl Priority {
    /// Sort rank: 0 for high, 2 for low.
    pub fn rank(self) -> u8 {
        match self {
            Self::High => 0,
            Self::Medium => 1,
            Self::Low => 2,
        }
    }
}

/// A task as `.leviathan/backlog.yaml` describes it (every field of the predecessor's schema plus
/// `test_command`). It is the payload of `task.created` and `task.updated`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Short title; PRs are titled `Leviathan: <title>`.
    #[serde(default = "default_title")]
    pub title: String,
    /// Longer description given to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Area of work (`docs`, `tests`, `ci`, …).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Dispatch priority.
    #[serde(default)]
    pub priority: Priority,
    /// Free-text size estimate (`xs`…`xl`, `small`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_size: Option<String>,
    /// Only ready tasks are ever dispatched; a missing flag means not ready.
    #[serde(default)]
    pub ready: bool,
    /// The backlog's own status (`pending`, `completed`, …); only `pending` or none is dispatchable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Tasks of the same target that must be completed first.
    #[serde(default)]
    pub dependencies: Vec<TaskId>,
    /// The files and directories the task may change.
    #[serde(default)]
    pub allowed_paths: AllowedPaths,
    /// What the change must achieve; given to the model and listed in the PR.
    #[serde(default)]
    pub acceptance_criteria: Vec<String>,
    /// Free labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The command that tests the change; falls back to the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
    /// Write-back field of the predecessor: the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_id: Option<String>,
    /// Write-back field of the predecessor: the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_name: Option<String>,
    /// Write-back field of the predecessor: the PR number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u64>,
    /// Write-back field of the predecessor: completion time, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Write-back field of the predecessor: the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

fn default_title() -> String {
    "Untitled".to_owned()
}

fn default_scope() -> String {
    "unknown".to_owned()
}

impl TaskSpec {
    /// A ready task with a title, one scope and no paths; mostly for tests and examples.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            description: None,
            scope: default_scope(),
            priority: Priority::Medium,
            estimated_size: None,
            ready: true,
            status: None,
            dependencies: Vec::new(),
            allowed_paths: AllowedPaths::default(),
            acceptance_criteria: Vec::new(),
            labels: Vec::new(),
            test_command: None,
            last_attempt_id: None,
            branch_name: None,
            pr_number: None,
            completed_at: None,
            commit: None,
        }
    }

    /// True when the backlog says the task is done.
    pub fn backlog_completed(&self) -> bool {
        self.status.as_deref() == Some("completed")
    }

    /// True when the backlog status allows dispatch (`pending` or absent).
    pub fn backlog_dispatchable(&self) -> bool {
        matches!(self.status.as_deref(), None | Some("pending"))
    }
}

/// Where a task stands, as the projection derives it from events.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be dispatched (or re-dispatched after a failed attempt).
    #[default]
    Pending,
    /// An attempt is in flight.
    InProgress,
    /// Done: an attempt delivered a PR, or the backlog or an operator said so.
    Completed,
    /// Given up: attempts exhausted.
    Failed,
    /// Will not be dispatched until its spec changes (e.g. a permanent failure).
    Blocked,
}

impl TaskStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Blocked => "blocked",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an attempt stands.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Created by the scheduler, not yet started by a worker.
    #[default]
    Created,
    /// A worker reported `attempt.started`.
    Running,
    /// Delivered a real PR.
    Succeeded,
    /// Ended without a PR.
    Failed,
    /// Ran past its deadline.
    TimedOut,
    /// An operator declared it void.
    Invalidated,
}

impl AttemptStatus {
    /// Created or running: not ended.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Created | Self::Running)
    }

    /// All statuses, for summaries.
    pub const ALL: [AttemptStatus; 6] = [
        Self::Created,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Invalidated,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Invalidated => "invalidated",
        }
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttemptStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown attempt status `{s}` (expected one of: {})",
                    Self::ALL.map(|s| s.as_str()).join(", ")
                )
            })
    }
}

/// Why an attempt failed. Predecessor names are accepted as aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Clone, configuration, backlog or task loading failed.
    #[serde(
        alias = "setup_failed",
        alias = "file_not_found",
        alias = "worker_error"
    )]
    Setup,
    /// The model call failed or its output was unusable.
    #[serde(
        alias = "model_error",
        alias = "generation_failure",
        alias = "rewrite_validation_failure",
        alias = "patch_validation_failure"
    )]
    Model,
    /// Tests did not pass within the repair rounds.
    #[serde(alias = "test_failure")]
    TestsFailed,
    /// The change touched a path outside `allowed_paths`.
    PathViolation,
    /// The model changed nothing.
    NoChanges,
    /// Committing or pushing failed.
    #[serde(
        alias = "push_failure",
        alias = "commit_failure",
        alias = "merge_conflict"
    )]
    Push,
    /// Opening the pull request failed.
    #[serde(rename = "pr", alias = "pr_creation_failure")]
    PullRequest,
    /// The attempt ran past its deadline.
    Timeout,
    /// The executor or the platform failed (Job API errors, image pulls, crashed worker).
    #[serde(
        alias = "execution_error",
        alias = "job_failed",
        alias = "k8s_api_error",
        alias = "execution_failed"
    )]
    Infrastructure,
    /// The worker vanished without reporting (e.g. the scheduler restarted and found no trace).
    Lost,
    /// An operator or a shutdown cancelled it.
    Cancelled,
    /// The model gateway refused a call: a budget of the attempt, its target or the day is
    /// spent (retrying cannot help until the budget's window resets).
    Budget,
}

impl FailureKind {
    /// The class a failure of this kind has unless its reporter says otherwise.
    pub fn default_class(self) -> FailureClass {
        match self {
            Self::PathViolation | Self::NoChanges | Self::Cancelled | Self::Budget => {
                FailureClass::Permanent
            }
            _ => FailureClass::Transient,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Model => "model",
            Self::TestsFailed => "tests_failed",
            Self::PathViolation => "path_violation",
            Self::NoChanges => "no_changes",
            Self::Push => "push",
            Self::PullRequest => "pr",
            Self::Timeout => "timeout",
            Self::Infrastructure => "infrastructure",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
            Self::Budget => "budget",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Retrying cannot help; never retried.
    Permanent,
    /// Retried by policy.
    Transient,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Permanent => "permanent",
            Self::Transient => "transient",
        })
    }
}

/// A failed attempt's kind, class and one-line summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// Whether a retry can help.
    pub class: FailureClass,
    /// One line for operators (already redacted by the reporter).
    pub summary: String,
}

impl Failure {
    /// A failure with the kind's default class.
    pub fn new(kind: FailureKind, summary: impl Into<String>) -> Self {
        Self {
            kind,
            class: kind.default_class(),
            summary: summary.into(),
        }
    }
}

/// A pull request's state on the forge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrState {
    /// Open (counts toward the open-PR latch).
    #[default]
    Open,
    /// Merged.
    Merged,
    /// Closed without merging.
    Closed,
}

/// How an attempt's untrusted children (its tests, the `command` model) were confined, as its
/// `attempt.started` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// Landlock's write restriction: only the worktree and a private temp directory.
    pub landlock: LandlockState,
    /// The worker made itself non-dumpable before running anything untrusted, so processes of
    /// its uid cannot read its environment or memory nor attach to it.
    pub non_dumpable: bool,
    /// Untrusted children ran in a session of their own, without capabilities and under
    /// `no_new_privs`.
    pub confined_children: bool,
}

/// Whether Landlock restricted the writes of untrusted children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockState {
    /// Every requested restriction applied.
    Enforced,
    /// The kernel's Landlock lacks some of the requested rights; the others applied.
    Partial,
    /// The kernel has no Landlock; writes were not restricted.
    Unsupported,
    /// Turned off for the target (`landlock: false`).
    Off,
}

impl fmt::Display for LandlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforced => "enforced",
            Self::Partial => "partial",
            Self::Unsupported => "unsupported",
            Self::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kind_aliases() {
        for (alias, kind) in [
            ("test_failure", FailureKind::TestsFailed),
            ("pr_creation_failure", FailureKind::PullRequest),
            ("k8s_api_error", FailureKind::Infrastructure),
            ("pr", FailureKind::PullRequest),
            ("path_violation", FailureKind::PathViolation),
        ] {
            let parsed: FailureKind = serde_json::from_value(serde_json::json!(alias)).unwrap();
            assert_eq!(parsed, kind);
        }
        assert_eq!(
            serde_json::to_value(FailureKind::PullRequest).unwrap(),
            "pr"
        );
        assert_eq!(
            FailureKind::PathViolation.default_class(),
            FailureClass::Permanent
        );
        assert_eq!(
            FailureKind::Timeout.default_class(),
            FailureClass::Transient
        );
    }

    #[test]
    fn task_spec_defaults() {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(spec.title, "Untitled");
        assert_eq!(spec.scope, "unknown");
        assert!(!spec.ready);
        assert!(spec.backlog_dispatchable());
    }

    #[test]
    fn attempt_status_parse() {
        assert_eq!(
            "timed_out".parse::<AttemptStatus>().unwrap(),
            AttemptStatus::TimedOut
        );
        assert!(
            "nope"
                .parse::<AttemptStatus>()
                .unwrap_err()
                .contains("expected one of")
        );
    }
}
