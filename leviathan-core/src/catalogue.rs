//! The event catalogue: every known `event_type`, its payload's typed view, its validation rules
//! and the stream it belongs to.
//!
//! The payload itself is stored exactly as submitted; these types are views derived from it.
//! Unknown fields are kept in the payload and ignored here; unknown event types are kept verbatim
//! and have no effect on the projection.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    auth::principal::Role,
    digest::Sha256Digest,
    event::NewEvent,
    id::{AttemptId, EventId, KeyId, TargetId, TaskId, TokenId},
    model::{FailureClass, FailureKind, SandboxReport, TaskSpec},
    timestamp::Timestamp,
};

/// A payload that does not fit its event type, naming the type and the field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{event_type}: field `{field}`: {reason}")]
pub struct PayloadError {
    /// The event type whose rules were broken.
    pub event_type: String,
    /// The field, as a path (`allowed_paths[2]`); `.` for the envelope or the whole payload.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl PayloadError {
    pub(crate) fn new(
        event_type: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            event_type: event_type.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A field-level rule violation found by a payload's own checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field path.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A typed payload of the catalogue.
pub trait Payload: Serialize + DeserializeOwned {
    /// The dotted event type this payload belongs to.
    const EVENT_TYPE: &'static str;

    /// Rules serde cannot express (positive numbers, non-empty strings, URL shapes…).
    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }

    /// Parses and checks a payload of this type.
    fn from_payload(payload: &Value) -> Result<Self, PayloadError> {
        parse_value(Self::EVENT_TYPE, payload)
    }

    /// The payload as a JSON object.
    fn to_value(&self) -> Value {
        // Catalogue payloads are plain structs with string keys: serialization cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The log's unit of optimistic concurrency: events about one target, task, attempt or PR.
/// Appends can expect a stream's version, so that two writers never both act on the same state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Events about a target (registration, circuit breaker).
    pub fn target(target: &TargetId) -> Self {
        Self(format!("target:{target}"))
    }
    /// Events about a task, including the creation of its attempts and retries.
    pub fn task(target: &TargetId, task: &TaskId) -> Self {
        Self(format!("task:{target}/{task}"))
    }
    /// Events an attempt produces.
    pub fn attempt(attempt: &AttemptId) -> Self {
        Self(format!("attempt:{attempt}"))
    }
    /// Events about a pull request after its creation.
    pub fn pull_request(target: &TargetId, number: u64) -> Self {
        Self(format!("pr:{target}#{number}"))
    }
    /// Wraps a stream name read back from storage or the wire.
    pub fn from_raw(name: impl Into<String>) -> Self {
        Self(name.into())
    }
    /// The stream's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        Err(FieldError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

fn positive(field: &str, value: i64) -> Result<(), FieldError> {
    if value > 0 {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be a positive integer, got {value}"),
        ))
    }
}

fn http_url(field: &str, value: &str) -> Result<(), FieldError> {
    non_empty(field, value)?;
    if !(value.starts_with("https://") || value.starts_with("http://"))
        || value.contains(char::is_whitespace)
    {
        return Err(FieldError::new(
            field,
            format!(
                "must be an http(s) URL, got `{}`",
                crate::text::ellipsize(value, 80)
            ),
        ));
    }
    Ok(())
}

fn branch_name(field: &str, value: &str) -> Result<(), FieldError> {
    non_empty(field, value)?;
    let bad = value.starts_with('-')
        || value.starts_with('/')
        || value.ends_with('/')
        || value.contains("..")
        || value.contains("//")
        || value.ends_with(".lock")
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        Err(FieldError::new(
            field,
            format!(
                "`{}` is not a valid git branch name",
                crate::text::ellipsize(value, 80)
            ),
        ))
    } else {
        Ok(())
    }
}

fn commit_sha(field: &str, value: &str) -> Result<(), FieldError> {
    let hex = value
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex && (value.len() == 40 || value.len() == 64) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be a full lowercase hex commit id (40 or 64 characters)",
        ))
    }
}

fn default_branch() -> String {
    "main".to_owned()
}

/// `target.registered`: a repository Leviathan works on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRegistered {
    /// The target.
    pub target_id: TargetId,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where workers clone from.
    pub repo_url: String,
    /// The branch PRs are opened against.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Default test command for the target's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
}

impl Payload for TargetRegistered {
    const EVENT_TYPE: &'static str = "target.registered";
    fn check(&self) -> Result<(), FieldError> {
        non_empty("repo_url", &self.repo_url)?;
        branch_name("default_branch", &self.default_branch)
    }
}

/// `target.updated`: changed target settings; absent fields keep their value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetUpdated {
    /// The target.
    pub target_id: TargetId,
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New clone URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// New base branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// New default test command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
}

impl Payload for TargetUpdated {
    const EVENT_TYPE: &'static str = "target.updated";
    fn check(&self) -> Result<(), FieldError> {
        if let Some(url) = &self.repo_url {
            non_empty("repo_url", url)?;
        }
        match &self.default_branch {
            Some(b) => branch_name("default_branch", b),
            None => Ok(()),
        }
    }
}

/// A task's definition as the backlog gives it: the payload of `task.created` and `task.updated`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinition {
    /// The target whose backlog holds the task.
    pub target_id: TargetId,
    /// The task.
    pub task_id: TaskId,
    /// The backlog entry.
    #[serde(flatten)]
    pub spec: TaskSpec,
    /// Position in the backlog file; ties in priority are broken by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_index: Option<u32>,
}

impl TaskDefinition {
    /// Decodes in two passes, the ids and then the spec, because serde loses field paths
    /// through `#[serde(flatten)]` and errors must name the field (`allowed_paths[1]`).
    fn from_payload(event_type: &str, payload: &Value) -> Result<Self, PayloadError> {
        #[derive(Deserialize)]
        struct Ids {
            target_id: TargetId,
            task_id: TaskId,
            #[serde(default)]
            backlog_index: Option<u32>,
        }
        let ids: Ids = parse_value(event_type, payload)?;
        let spec: TaskSpec = parse_value(event_type, payload)?;
        Ok(Self {
            target_id: ids.target_id,
            task_id: ids.task_id,
            spec,
            backlog_index: ids.backlog_index,
        })
    }

    fn check_definition(&self) -> Result<(), FieldError> {
        non_empty("title", &self.spec.title)?;
        if let Some(i) = self
            .spec
            .dependencies
            .iter()
            .position(|d| d == &self.task_id)
        {
            return Err(FieldError::new(
                format!("dependencies[{i}]"),
                "a task cannot depend on itself",
            ));
        }
        Ok(())
    }
}

/// `task.created`: a backlog task became known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskCreated(pub TaskDefinition);

impl Payload for TaskCreated {
    const EVENT_TYPE: &'static str = "task.created";
    fn from_payload(payload: &Value) -> Result<Self, PayloadError> {
        TaskDefinition::from_payload(Self::EVENT_TYPE, payload).map(Self)
    }
    fn check(&self) -> Result<(), FieldError> {
        self.0.check_definition()
    }
}

/// `task.updated`: a backlog task changed; carries the whole new definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskUpdated(pub TaskDefinition);

impl Payload for TaskUpdated {
    const EVENT_TYPE: &'static str = "task.updated";
    fn from_payload(payload: &Value) -> Result<Self, PayloadError> {
        TaskDefinition::from_payload(Self::EVENT_TYPE, payload).map(Self)
    }
    fn check(&self) -> Result<(), FieldError> {
        self.0.check_definition()
    }
}

/// A task's status change with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskTransition {
    /// The target.
    pub target_id: TargetId,
    /// The task.
    pub task_id: TaskId,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The attempt that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<AttemptId>,
    /// The predecessor's `task.completed` carried `status: failed` for exhausted tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

macro_rules! transition {
    ($(#[$doc:meta])* $name:ident, $ty:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub TaskTransition);

        impl Payload for $name {
            const EVENT_TYPE: &'static str = $ty;
        }
    };
}

transition!(
    /// `task.completed`: the task is done.
    TaskCompleted,
    "task.completed"
);
transition!(
    /// `task.failed`: the task is given up (attempts exhausted).
    TaskFailed,
    "task.failed"
);
transition!(
    /// `task.blocked`: the task will not run until its definition changes.
    TaskBlocked,
    "task.blocked"
);

/// `attempt.created`: the scheduler decided to run a task; emitted before dispatch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptCreated {
    /// The new attempt.
    pub attempt_id: AttemptId,
    /// Its task.
    pub task_id: TaskId,
    /// Its target.
    pub target_id: TargetId,
    /// 1 for the first attempt at the task, and so on.
    pub attempt_number: u32,
    /// The executor that will run it (`local`, `k8s`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The attempt deadline from policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
    /// The revision the attempt works on, when the scheduler published it (safe delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<AttemptBase>,
}

/// The exact revision an attempt starts from: the base branch's commit at dispatch, and the git
/// bundle of it the worker clones (an artifact it reads with its attempt token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptBase {
    /// The commit.
    pub commit: String,
    /// The bundle artifact holding the base branch at that commit.
    pub bundle_sha256: Sha256Digest,
}

impl Payload for AttemptCreated {
    const EVENT_TYPE: &'static str = "attempt.created";
    fn check(&self) -> Result<(), FieldError> {
        positive("attempt_number", i64::from(self.attempt_number))?;
        match &self.base {
            Some(base) => commit_sha("base.commit", &base.commit),
            None => Ok(()),
        }
    }
}

/// `attempt.started`: a worker began; posted at once so a lost worker leaves a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptStarted {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Its task (informational; the graph knows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// Its target (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<TargetId>,
    /// Where the worker runs (host or pod name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// How the attempt's untrusted children are confined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxReport>,
}

impl Payload for AttemptStarted {
    const EVENT_TYPE: &'static str = "attempt.started";
}

/// `attempt.heartbeat`: the worker is alive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptHeartbeat {
    /// The attempt.
    pub attempt_id: AttemptId,
}

impl Payload for AttemptHeartbeat {
    const EVENT_TYPE: &'static str = "attempt.heartbeat";
}

/// `attempt.succeeded`: the attempt delivered a real pull request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptSucceeded {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The pushed branch, `agent/<task_id>-<attempt_id>`.
    #[serde(alias = "branch_name")]
    pub branch: String,
    /// The pushed commit.
    pub commit_sha: String,
    /// The PR number the forge returned.
    pub pr_number: i64,
    /// The PR URL the forge returned.
    pub pr_url: String,
}

impl Payload for AttemptSucceeded {
    const EVENT_TYPE: &'static str = "attempt.succeeded";
    fn check(&self) -> Result<(), FieldError> {
        branch_name("branch", &self.branch)?;
        commit_sha("commit_sha", &self.commit_sha)?;
        positive("pr_number", self.pr_number)?;
        http_url("pr_url", &self.pr_url)
    }
}

/// `attempt.failed`: the attempt ended without a PR.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailed {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// What failed.
    #[serde(alias = "failure_type")]
    pub failure_kind: FailureKind,
    /// Whether retrying can help; defaults from the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_class: Option<FailureClass>,
    /// One line for operators.
    #[serde(default, alias = "summary")]
    pub error_summary: String,
}

impl AttemptFailed {
    /// The class, explicit or the kind's default.
    pub fn class(&self) -> FailureClass {
        self.failure_class
            .unwrap_or_else(|| self.failure_kind.default_class())
    }
}

impl Payload for AttemptFailed {
    const EVENT_TYPE: &'static str = "attempt.failed";
}

/// `attempt.timed_out`: the attempt ran past its deadline (emitted by the scheduler).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptTimedOut {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The deadline that was exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
    /// One line for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl Payload for AttemptTimedOut {
    const EVENT_TYPE: &'static str = "attempt.timed_out";
}

/// `attempt.invalidated`: an operator declared the attempt void; its task becomes pending again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptInvalidated {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Why.
    pub reason: String,
}

impl Payload for AttemptInvalidated {
    const EVENT_TYPE: &'static str = "attempt.invalidated";
    fn check(&self) -> Result<(), FieldError> {
        non_empty("reason", &self.reason)
    }
}

/// `retry.scheduled`: the task may be retried, not before a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryScheduled {
    /// The target.
    pub target_id: TargetId,
    /// The task.
    pub task_id: TaskId,
    /// The attempt number of the retry.
    pub retry_number: u32,
    /// The backoff chosen (after jitter).
    #[serde(default)]
    pub backoff_seconds: f64,
    /// Earliest dispatch time.
    #[serde(alias = "scheduled_at")]
    pub not_before: Timestamp,
    /// The failed attempt that caused the retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<AttemptId>,
}

impl Payload for RetryScheduled {
    const EVENT_TYPE: &'static str = "retry.scheduled";
    fn check(&self) -> Result<(), FieldError> {
        positive("retry_number", i64::from(self.retry_number))?;
        if !(self.backoff_seconds.is_finite() && self.backoff_seconds >= 0.0) {
            return Err(FieldError::new(
                "backoff_seconds",
                "must be a non-negative number",
            ));
        }
        Ok(())
    }
}

/// `job.submitted`: an executor handed the attempt to its platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitted {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Executor name (`local`, `k8s`).
    pub executor: String,
    /// Platform handle (Job name, process id…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Kubernetes namespace, when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Payload for JobSubmitted {
    const EVENT_TYPE: &'static str = "job.submitted";
    fn check(&self) -> Result<(), FieldError> {
        non_empty("executor", &self.executor)
    }
}

/// `artifact.created`: content stored in the artifact store, usually produced by an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactCreated {
    /// Content address (also the artifact id).
    pub sha256: Sha256Digest,
    /// `log`, `diff`, `model_prompt`, `model_output`, `test_output`, …
    #[serde(alias = "artifact_type")]
    pub kind: String,
    /// Size in bytes.
    #[serde(alias = "size_bytes")]
    pub size: u64,
    /// Human name (`worker.log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it can be fetched (`/v1/artifacts/<sha256>`).
    #[serde(
        default,
        alias = "storage_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub uri: Option<String>,
    /// The attempt that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<AttemptId>,
}

impl Payload for ArtifactCreated {
    const EVENT_TYPE: &'static str = "artifact.created";
    fn check(&self) -> Result<(), FieldError> {
        non_empty("kind", &self.kind)
    }
}

/// `model.call_completed`: one model call, its usage and the digests of prompt and response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCallCompleted {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Model name.
    pub model: String,
    /// `anthropic`, `openai`, `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Input tokens.
    #[serde(default, alias = "tokens_input")]
    pub tokens_in: u64,
    /// Output tokens.
    #[serde(default, alias = "tokens_output")]
    pub tokens_out: u64,
    /// Digest of the prompt artifact.
    pub prompt_sha256: Sha256Digest,
    /// Digest of the response artifact.
    pub response_sha256: Sha256Digest,
    /// Generation round (0 for the first, then one per repair).
    #[serde(default)]
    pub round: u32,
    /// Wall time of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The attempt's target (the model gateway records it, for the per-target budgets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<TargetId>,
    /// Cost in USD from the price table of [`ModelCallCompleted::prices_as_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The date of the price table the cost was computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices_as_of: Option<String>,
}

impl Payload for ModelCallCompleted {
    const EVENT_TYPE: &'static str = "model.call_completed";
    fn check(&self) -> Result<(), FieldError> {
        non_empty("model", &self.model)?;
        match self.cost_usd {
            Some(cost) if !(cost.is_finite() && cost >= 0.0) => {
                Err(FieldError::new("cost_usd", "must be a non-negative number"))
            }
            _ => Ok(()),
        }
    }
}

/// `budget.exhausted`: the model gateway refused a call because a budget was spent; recorded
/// once per budget and window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetExhausted {
    /// Which budget: `attempt:<id>`, `target:<id>:<YYYY-MM-DD>` or `global:<YYYY-MM-DD>`.
    pub scope: String,
    /// What ran out: `calls`, `tokens`, `usd` or `wall_seconds`.
    pub resource: String,
    /// The limit.
    pub limit: f64,
    /// What was spent when the call was refused.
    pub spent: f64,
    /// The attempt whose call was refused.
    pub attempt_id: AttemptId,
    /// Its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<TargetId>,
}

impl BudgetExhausted {
    /// The resources a day's budget (of a target or of all) is counted in.
    pub const DAY_RESOURCES: [&'static str; 3] = ["calls", "tokens", "usd"];

    /// The event id of the budget `scope`'s `resource` found spent: derived from both, so that
    /// replicas racing to record it append it once, and a scheduler can look it up by id.
    pub fn event_id(scope: &str, resource: &str) -> EventId {
        let key = format!("{scope}/{resource}");
        let digest = Sha256Digest::of(key.as_bytes()).to_hex();
        EventId::new(format!("budget-exhausted-{}", &digest[..32]))
            .expect("`budget-exhausted-` and hex digits make a valid event id")
    }
}

impl Payload for BudgetExhausted {
    const EVENT_TYPE: &'static str = "budget.exhausted";
    fn check(&self) -> Result<(), FieldError> {
        non_empty("scope", &self.scope)?;
        non_empty("resource", &self.resource)
    }
}

/// A test run: the payload of `tests.passed` and `tests.failed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestRunReport {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Repair round (0 for the first run).
    #[serde(default)]
    pub round: u32,
    /// The command run.
    pub command: String,
    /// Its exit code (`None` when killed by a signal or the timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Digest of the output artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<Sha256Digest>,
    /// Wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `tests.passed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TestsPassed(pub TestRunReport);

impl Payload for TestsPassed {
    const EVENT_TYPE: &'static str = "tests.passed";
}

/// `tests.failed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TestsFailed(pub TestRunReport);

impl Payload for TestsFailed {
    const EVENT_TYPE: &'static str = "tests.failed";
}

/// `commit.created`: the attempt committed and pushed its change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitCreated {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The commit.
    pub commit_sha: String,
    /// The branch it was pushed to.
    #[serde(alias = "branch_name")]
    pub branch: String,
    /// The commit message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Payload for CommitCreated {
    const EVENT_TYPE: &'static str = "commit.created";
    fn check(&self) -> Result<(), FieldError> {
        commit_sha("commit_sha", &self.commit_sha)?;
        branch_name("branch", &self.branch)
    }
}

/// `pr.created`: the forge opened (or returned an existing open) pull request for the attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrCreated {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The number the forge returned; placeholders are refused.
    pub pr_number: i64,
    /// The URL the forge returned.
    pub pr_url: String,
    /// PR title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Head branch.
    #[serde(
        default,
        alias = "branch_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub branch: Option<String>,
    /// True when an already open PR for the branch was reused.
    #[serde(default)]
    pub reused: bool,
}

impl Payload for PrCreated {
    const EVENT_TYPE: &'static str = "pr.created";
    fn check(&self) -> Result<(), FieldError> {
        positive("pr_number", self.pr_number)?;
        http_url("pr_url", &self.pr_url)
    }
}

/// `delivery.requested`: the worker's proposal, whose patch, message and evidence are
/// artifacts; the trusted side checks and delivers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRequested {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The commit the patch applies to (the attempt's dispatched base).
    pub base: String,
    /// The patch (`git diff --binary` against `base`) as an artifact.
    pub patch_sha256: Sha256Digest,
    /// Files the worker says the patch changes (the trusted side counts again).
    pub files_changed: u32,
    /// The commit message, PR title and body, as an artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_sha256: Option<Sha256Digest>,
}

impl Payload for DeliveryRequested {
    const EVENT_TYPE: &'static str = "delivery.requested";
    fn check(&self) -> Result<(), FieldError> {
        commit_sha("base", &self.base)
    }
}

/// `delivery.refused`: the trusted side delivered nothing for the attempt, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRefused {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// What the operator reads (`attempt no longer live`, the policy's violations, …).
    pub reason: String,
}

impl Payload for DeliveryRefused {
    const EVENT_TYPE: &'static str = "delivery.refused";
    fn check(&self) -> Result<(), FieldError> {
        non_empty("reason", &self.reason)
    }
}

/// `delivery.unchanged`: the task's open pull request already has the proposed tree; nothing
/// was pushed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryUnchanged {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The task's branch.
    pub branch: String,
    /// The commit already on it.
    pub commit_sha: String,
    /// The open pull request.
    pub pr_number: i64,
    /// Its URL.
    pub pr_url: String,
}

impl Payload for DeliveryUnchanged {
    const EVENT_TYPE: &'static str = "delivery.unchanged";
    fn check(&self) -> Result<(), FieldError> {
        branch_name("branch", &self.branch)?;
        commit_sha("commit_sha", &self.commit_sha)?;
        positive("pr_number", self.pr_number)?;
        http_url("pr_url", &self.pr_url)
    }
}

/// A pull request left the open state: the payload of `pr.merged` and `pr.closed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrStateChange {
    /// The target whose repository holds the PR.
    pub target_id: TargetId,
    /// The PR number.
    pub pr_number: i64,
    /// The PR URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
}

impl PrStateChange {
    fn check_change(&self) -> Result<(), FieldError> {
        positive("pr_number", self.pr_number)
    }
}

/// `pr.merged`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrMerged(pub PrStateChange);

impl Payload for PrMerged {
    const EVENT_TYPE: &'static str = "pr.merged";
    fn check(&self) -> Result<(), FieldError> {
        self.0.check_change()
    }
}

/// `pr.closed` (closed without merging).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrClosed(pub PrStateChange);

impl Payload for PrClosed {
    const EVENT_TYPE: &'static str = "pr.closed";
    fn check(&self) -> Result<(), FieldError> {
        self.0.check_change()
    }
}

/// `circuit.opened`: too many consecutive failures on a target; dispatch pauses until a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitOpened {
    /// The target.
    pub target_id: TargetId,
    /// The failure count that tripped the breaker.
    pub consecutive_failures: u32,
    /// When one probe attempt may run (half-open).
    pub open_until: Timestamp,
}

impl Payload for CircuitOpened {
    const EVENT_TYPE: &'static str = "circuit.opened";
}

/// `circuit.closed`: a probe succeeded (or an operator reset the breaker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitClosed {
    /// The target.
    pub target_id: TargetId,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Payload for CircuitClosed {
    const EVENT_TYPE: &'static str = "circuit.closed";
}

/// `token.issued`: the control plane signed a token. Its id, role and expiry, never its secret.
/// Recorded by the control plane only (no ingest may carry it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenIssued {
    /// The token's public id.
    pub token_id: TokenId,
    /// Its role.
    pub role: Role,
    /// The name an operator gave it, for `token list` and `token revoke NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a worker token, its attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<AttemptId>,
    /// The key that signed it.
    pub key_id: KeyId,
    /// When it stops being accepted.
    pub expires: Timestamp,
}

impl Payload for TokenIssued {
    const EVENT_TYPE: &'static str = "token.issued";
    fn check(&self) -> Result<(), FieldError> {
        if let Some(name) = &self.name {
            non_empty("name", name)?;
        }
        if (self.role == Role::Worker) != self.attempt_id.is_some() {
            return Err(FieldError::new(
                "attempt_id",
                "a worker token names its attempt, and only a worker token does",
            ));
        }
        Ok(())
    }
}

/// `token.revoked`: the token is refused from now on, whatever its expiry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRevoked {
    /// The token's public id.
    pub token_id: TokenId,
    /// Why, if the operator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Payload for TokenRevoked {
    const EVENT_TYPE: &'static str = "token.revoked";
}

macro_rules! catalogue {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// The typed view of an event's payload.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum EventBody {
            $(
                #[doc = concat!("`", stringify!($ty), "`")]
                $variant($ty),
            )*
            /// A type outside the catalogue, kept verbatim and ignored by the projection.
            Unknown,
        }

        /// Every event type of the catalogue.
        pub const KNOWN_EVENT_TYPES: &[&str] = &[$(<$ty as Payload>::EVENT_TYPE),*];

        impl EventBody {
            /// Parses and checks the payload of a known type; other types are [`EventBody::Unknown`].
            pub fn parse(event_type: &str, payload: &Value) -> Result<Self, PayloadError> {
                $(
                    if event_type == <$ty as Payload>::EVENT_TYPE {
                        return decode::<$ty>(payload).map(EventBody::$variant);
                    }
                )*
                Ok(EventBody::Unknown)
            }
        }
    };
}

catalogue! {
    TargetRegistered(TargetRegistered),
    TargetUpdated(TargetUpdated),
    TaskCreated(TaskCreated),
    TaskUpdated(TaskUpdated),
    TaskCompleted(TaskCompleted),
    TaskFailed(TaskFailed),
    TaskBlocked(TaskBlocked),
    AttemptCreated(AttemptCreated),
    AttemptStarted(AttemptStarted),
    AttemptHeartbeat(AttemptHeartbeat),
    AttemptSucceeded(AttemptSucceeded),
    AttemptFailed(AttemptFailed),
    AttemptTimedOut(AttemptTimedOut),
    AttemptInvalidated(AttemptInvalidated),
    RetryScheduled(RetryScheduled),
    JobSubmitted(JobSubmitted),
    ArtifactCreated(ArtifactCreated),
    ModelCallCompleted(ModelCallCompleted),
    BudgetExhausted(BudgetExhausted),
    TestsPassed(TestsPassed),
    TestsFailed(TestsFailed),
    CommitCreated(CommitCreated),
    PrCreated(PrCreated),
    DeliveryRequested(DeliveryRequested),
    DeliveryRefused(DeliveryRefused),
    DeliveryUnchanged(DeliveryUnchanged),
    PrMerged(PrMerged),
    PrClosed(PrClosed),
    CircuitOpened(CircuitOpened),
    CircuitClosed(CircuitClosed),
    TokenIssued(TokenIssued),
    TokenRevoked(TokenRevoked),
}

impl EventBody {
    /// The stream the event belongs to, derived from the payload alone.
    pub fn stream(&self) -> Option<StreamId> {
        use EventBody as B;
        Some(match self {
            B::TargetRegistered(p) => StreamId::target(&p.target_id),
            B::TargetUpdated(p) => StreamId::target(&p.target_id),
            B::CircuitOpened(p) => StreamId::target(&p.target_id),
            B::CircuitClosed(p) => StreamId::target(&p.target_id),
            B::TaskCreated(TaskCreated(d)) | B::TaskUpdated(TaskUpdated(d)) => {
                StreamId::task(&d.target_id, &d.task_id)
            }
            B::TaskCompleted(TaskCompleted(t))
            | B::TaskFailed(TaskFailed(t))
            | B::TaskBlocked(TaskBlocked(t)) => StreamId::task(&t.target_id, &t.task_id),
            B::AttemptCreated(p) => StreamId::task(&p.target_id, &p.task_id),
            B::RetryScheduled(p) => StreamId::task(&p.target_id, &p.task_id),
            B::AttemptStarted(p) => StreamId::attempt(&p.attempt_id),
            B::AttemptHeartbeat(p) => StreamId::attempt(&p.attempt_id),
            B::AttemptSucceeded(p) => StreamId::attempt(&p.attempt_id),
            B::AttemptFailed(p) => StreamId::attempt(&p.attempt_id),
            B::AttemptTimedOut(p) => StreamId::attempt(&p.attempt_id),
            B::AttemptInvalidated(p) => StreamId::attempt(&p.attempt_id),
            B::JobSubmitted(p) => StreamId::attempt(&p.attempt_id),
            B::ModelCallCompleted(p) => StreamId::attempt(&p.attempt_id),
            B::BudgetExhausted(p) => StreamId::attempt(&p.attempt_id),
            B::TestsPassed(TestsPassed(r)) | B::TestsFailed(TestsFailed(r)) => {
                StreamId::attempt(&r.attempt_id)
            }
            B::CommitCreated(p) => StreamId::attempt(&p.attempt_id),
            B::PrCreated(p) => StreamId::attempt(&p.attempt_id),
            B::DeliveryRequested(p) => StreamId::attempt(&p.attempt_id),
            B::DeliveryRefused(p) => StreamId::attempt(&p.attempt_id),
            B::DeliveryUnchanged(p) => StreamId::attempt(&p.attempt_id),
            B::ArtifactCreated(p) => StreamId::attempt(p.attempt_id.as_ref()?),
            B::PrMerged(PrMerged(c)) | B::PrClosed(PrClosed(c)) => {
                StreamId::pull_request(&c.target_id, c.pr_number.unsigned_abs())
            }
            B::TokenIssued(_) | B::TokenRevoked(_) | B::Unknown => return None,
        })
    }
}

fn decode<P: Payload>(payload: &Value) -> Result<P, PayloadError> {
    let parsed = P::from_payload(payload)?;
    parsed
        .check()
        .map_err(|e| PayloadError::new(P::EVENT_TYPE, e.field, e.reason))?;
    Ok(parsed)
}

/// Deserializes `payload`, naming the offending field on error. Tracking the path costs on every
/// field, so only a payload that failed is decoded again with it.
fn parse_value<T: DeserializeOwned>(event_type: &str, payload: &Value) -> Result<T, PayloadError> {
    let plain = match T::deserialize(payload) {
        Ok(value) => return Ok(value),
        Err(plain) => plain,
    };
    let tracked = serde_path_to_error::deserialize::<_, T>(payload);
    tracked.map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        // serde reports a missing field at the enclosing object; name the field itself.
        let field = match message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            Some(missing) if path == "." => missing.to_owned(),
            Some(missing) => format!("{path}.{missing}"),
            None => path,
        };
        PayloadError::new(event_type, field, message)
    })?;
    // The two decoders agree; should they ever not, the plain decoder's error stands.
    Err(PayloadError::new(event_type, ".", plain.to_string()))
}

/// The deepest payload nesting accepted; deeper documents are refused before they can exhaust
/// a recursive reader anywhere downstream.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Typed construction lives with the payloads, so that events need not know the catalogue.
impl NewEvent {
    /// Builds an event from a typed payload of the catalogue.
    pub fn new<P: Payload>(
        event_id: EventId,
        timestamp: Timestamp,
        actor_id: Option<String>,
        payload: &P,
    ) -> Self {
        Self {
            event_id,
            event_type: P::EVENT_TYPE.to_owned(),
            timestamp,
            actor_id,
            payload: payload.to_value(),
            principal: None,
        }
    }
}

/// An event that passed validation, with its typed view and stream.
#[derive(Clone, Debug)]
pub struct ValidatedEvent {
    /// The typed payload.
    pub body: EventBody,
    /// Its stream, if any.
    pub stream: Option<StreamId>,
}

/// Checks an event before it may be appended: the envelope, the payload's shape (a JSON object
/// without NUL characters, at most [`MAX_PAYLOAD_DEPTH`] deep) and, for known types, the
/// catalogue's rules. Pure: every backend calls it, so they all refuse the same events.
pub fn validate(event: &NewEvent) -> Result<ValidatedEvent, PayloadError> {
    let ty = event.event_type.as_str();
    let type_ok = !ty.is_empty()
        && ty.len() <= 128
        && ty.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && !ty.starts_with('.')
        && !ty.ends_with('.');
    if !type_ok {
        return Err(PayloadError::new(
            &crate::text::ellipsize(ty, 64),
            "event_type",
            "must be 1 to 128 characters of `a-z`, `0-9`, `.`, `_` or `-`, e.g. `attempt.created`",
        ));
    }
    if let Some(actor) = &event.actor_id
        && (actor.len() > 256 || actor.chars().any(char::is_control))
    {
        return Err(PayloadError::new(
            ty,
            "actor_id",
            "must be at most 256 bytes without control characters",
        ));
    }
    if !event.payload.is_object() {
        return Err(PayloadError::new(ty, "payload", "must be a JSON object"));
    }
    check_shape(&event.payload, 0)
        .map_err(|(below, reason)| PayloadError::new(ty, format!("payload{below}"), reason))?;
    let body = EventBody::parse(ty, &event.payload)?;
    let stream = body.stream();
    Ok(ValidatedEvent { body, stream })
}

/// Checks nesting depth and NUL characters. On failure it returns the offending field's path
/// below `value` (built only then, on the way out) and why.
fn check_shape(value: &Value, depth: usize) -> Result<(), (String, String)> {
    if depth > MAX_PAYLOAD_DEPTH {
        return Err((
            String::new(),
            format!("nesting is deeper than {MAX_PAYLOAD_DEPTH} levels"),
        ));
    }
    let nul = |below: &str| {
        Err((
            below.to_owned(),
            "contains a NUL character, which cannot be stored exactly".to_owned(),
        ))
    };
    let nested =
        |item: &Value| matches!(item, Value::Array(_) | Value::Object(_) | Value::String(_));
    match value {
        Value::String(s) if s.contains('\0') => nul(""),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate().filter(|(_, item)| nested(item)) {
                check_shape(item, depth + 1)
                    .map_err(|(below, why)| (format!("[{i}]{below}"), why))?;
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key.contains('\0') {
                    return nul(".<key>");
                }
                if nested(item) {
                    check_shape(item, depth + 1)
                        .map_err(|(below, why)| (format!(".{key}{below}"), why))?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ty: &str, payload: Value) -> NewEvent {
        NewEvent {
            event_id: EventId::new("e1").unwrap(),
            event_type: ty.to_owned(),
            timestamp: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            actor_id: None,
            payload,
            principal: None,
        }
    }

    #[test]
    fn pr_created_requires_a_real_pr() {
        let err = validate(&event(
            "pr.created",
            json!({"attempt_id": "a1", "pr_number": 0, "pr_url": "https://x/1"}),
        ))
        .unwrap_err();
        assert_eq!(
            (err.event_type.as_str(), err.field.as_str()),
            ("pr.created", "pr_number")
        );
        let err = validate(&event(
            "pr.created",
            json!({"attempt_id": "a1", "pr_number": 3, "pr_url": ""}),
        ))
        .unwrap_err();
        assert_eq!(err.field, "pr_url");
        let err = validate(&event(
            "pr.created",
            json!({"attempt_id": "a1", "pr_url": "https://x/1"}),
        ))
        .unwrap_err();
        assert_eq!(err.field, "pr_number");
        assert!(
            err.to_string().starts_with("pr.created: field `pr_number`"),
            "{err}"
        );
        assert!(
            validate(&event(
                "pr.created",
                json!({"attempt_id": "a1", "pr_number": 3, "pr_url": "https://x/pull/3"})
            ))
            .is_ok()
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = validate(&event(
            "attempt.created",
            json!({"attempt_id": "a1", "task_id": "t", "target_id": "d", "attempt_number": "one"}),
        ))
        .unwrap_err();
        assert_eq!(err.field, "attempt_number");
        let err = validate(&event(
            "task.created",
            json!({"task_id": "t", "target_id": "d", "allowed_paths": ["ok", "../x"]}),
        ))
        .unwrap_err();
        assert_eq!(err.field, "allowed_paths[1]", "{err}");
        assert!(err.reason.contains("`..`"), "{err}");
    }

    #[test]
    fn unknown_types_are_kept() {
        let v = validate(&event("topo.area.discovered", json!({"anything": [1, 2]}))).unwrap();
        assert!(matches!(v.body, EventBody::Unknown));
        assert_eq!(v.stream, None);
    }

    #[test]
    fn envelope_rules() {
        assert_eq!(
            validate(&event("Bad Type", json!({}))).unwrap_err().field,
            "event_type"
        );
        assert_eq!(
            validate(&event("x.y", json!([1]))).unwrap_err().field,
            "payload"
        );
        assert_eq!(
            validate(&event("x.y", json!({"a": {"b": "nul\u{0}"}})))
                .unwrap_err()
                .field,
            "payload.a.b"
        );
        let nul_at = |payload| validate(&event("x.y", payload)).unwrap_err().field;
        assert_eq!(
            nul_at(json!({"a": [1, {"b": ["ok", "nul\u{0}"]}]})),
            "payload.a[1].b[1]"
        );
        assert_eq!(nul_at(json!({"a": {"k\u{0}": 1}})), "payload.a.<key>");
        let mut deep = json!(1);
        for _ in 0..70 {
            deep = json!([deep]);
        }
        let err = validate(&event("x.y", json!({ "d": deep }))).unwrap_err();
        assert!(err.reason.contains("deeper"), "{err}");
        let expected = format!("payload.d{}", "[0]".repeat(MAX_PAYLOAD_DEPTH));
        assert_eq!(err.field, expected);
    }

    #[test]
    fn streams() {
        let v = validate(&event(
            "attempt.created",
            json!({"attempt_id": "a1", "task_id": "t", "target_id": "d", "attempt_number": 1}),
        ))
        .unwrap();
        assert_eq!(v.stream.unwrap().as_str(), "task:d/t");
        let v = validate(&event(
            "attempt.failed",
            json!({"attempt_id": "a1", "failure_type": "test_failure"}),
        ))
        .unwrap();
        assert_eq!(v.stream.unwrap().as_str(), "attempt:a1");
    }

    #[test]
    fn hash_vector_payload_is_a_valid_task() {
        let payload: Value = serde_json::from_str(r#"{"task_id":"docs-guide","target_id":"demo","title":"Write the guide — café","scope":"docs","priority":"high","allowed_paths":["docs/GUIDE.md"],"acceptance_criteria":["Explains setup"],"ready":true,"dependencies":[]}"#).unwrap();
        let v = validate(&event("task.created", payload)).unwrap();
        let EventBody::TaskCreated(TaskCreated(def)) = v.body else {
            panic!("not a task")
        };
        assert_eq!(def.spec.priority, crate::model::Priority::High);
    }

    #[test]
    fn every_catalogue_type_is_listed_once() {
        let mut types = KNOWN_EVENT_TYPES.to_vec();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), KNOWN_EVENT_TYPES.len());
        assert!(KNOWN_EVENT_TYPES.len() >= 26);
    }
}
