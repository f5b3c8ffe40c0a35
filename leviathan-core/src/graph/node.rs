//! Node and edge types of the graph.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    catalogue::AttemptBase,
    digest::Sha256Digest,
    id::{AttemptId, TargetId, TaskId},
    model::{AttemptStatus, Failure, PrState, TaskSpec, TaskStatus},
    timestamp::Timestamp,
};

/// The kind of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeKind {
    /// A repository.
    Target,
    /// A backlog task.
    Task,
    /// One run of a task.
    Attempt,
    /// Stored content.
    Artifact,
    /// A pull request.
    PullRequest,
    /// A pushed commit.
    Commit,
    /// One test run.
    TestRun,
    /// One model call.
    ModelCall,
}

impl NodeKind {
    /// The kind's name, as node types are named on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Target => "Target",
            Self::Task => "Task",
            Self::Attempt => "Attempt",
            Self::Artifact => "Artifact",
            Self::PullRequest => "PullRequest",
            Self::Commit => "Commit",
            Self::TestRun => "TestRun",
            Self::ModelCall => "ModelCall",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::Task => "task",
            Self::Attempt => "attempt",
            Self::Artifact => "artifact",
            Self::PullRequest => "pr",
            Self::Commit => "commit",
            Self::TestRun => "testrun",
            Self::ModelCall => "modelcall",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node id: `<kind>:<key>`, e.g. `task:demo/docs-guide`. Keys never contain `:`, so the edges of
/// a node are exactly the edge ids starting with `<node id>:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    fn of(kind: NodeKind, key: fmt::Arguments<'_>) -> Self {
        Self(format!("{}:{}", kind.prefix(), key))
    }
    /// A target's node.
    pub fn target(target: &TargetId) -> Self {
        Self::of(NodeKind::Target, format_args!("{target}"))
    }
    /// A task's node; task ids are unique within their target.
    pub fn task(target: &TargetId, task: &TaskId) -> Self {
        Self::of(NodeKind::Task, format_args!("{target}/{task}"))
    }
    /// An attempt's node.
    pub fn attempt(attempt: &AttemptId) -> Self {
        Self::of(NodeKind::Attempt, format_args!("{attempt}"))
    }
    /// An artifact's node, keyed by its content address.
    pub fn artifact(sha256: &Sha256Digest) -> Self {
        Self::of(NodeKind::Artifact, format_args!("{sha256}"))
    }
    /// A pull request's node; numbers are unique within a target's repository.
    pub fn pull_request(target: &TargetId, number: u64) -> Self {
        Self::of(NodeKind::PullRequest, format_args!("{target}#{number}"))
    }
    /// A commit's node.
    pub fn commit(sha: &str) -> Self {
        Self::of(NodeKind::Commit, format_args!("{sha}"))
    }
    /// The `index`-th test run of an attempt.
    pub fn test_run(attempt: &AttemptId, index: u32) -> Self {
        Self::of(NodeKind::TestRun, format_args!("{attempt}/{index}"))
    }
    /// The `index`-th model call of an attempt.
    pub fn model_call(attempt: &AttemptId, index: u32) -> Self {
        Self::of(NodeKind::ModelCall, format_args!("{attempt}/{index}"))
    }
    /// Wraps an id read back from storage.
    pub fn from_raw(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EdgeKind {
    /// Task → its target.
    BelongsTo,
    /// Task → a task it depends on.
    DependsOn,
    /// Attempt → its task.
    AttemptOf,
    /// Attempt → what it produced (artifacts, commits, test runs, model calls, PRs).
    Produced,
}

impl EdgeKind {
    /// The wire name, as it appears in edge ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BelongsTo => "BELONGS_TO",
            Self::DependsOn => "DEPENDS_ON",
            Self::AttemptOf => "ATTEMPT_OF",
            Self::Produced => "PRODUCED",
        }
    }
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed, directed edge, with the deterministic id `<from>:<TYPE>:<to>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// `<from>:<TYPE>:<to>`.
    pub edge_id: String,
    /// The edge type.
    pub edge_type: EdgeKind,
    /// Source node.
    pub from: NodeId,
    /// Destination node.
    pub to: NodeId,
    /// The event that created it.
    pub created_seq: u64,
    /// That event's timestamp.
    pub created_at: Timestamp,
}

impl Edge {
    /// The id of the edge `from -kind-> to`.
    pub fn id(from: &NodeId, kind: EdgeKind, to: &NodeId) -> String {
        format!("{from}:{kind}:{to}")
    }
}

/// When a node was created and last changed, by log position and event time (never wall clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The event that created the node.
    pub created_seq: u64,
    /// The last event that changed it.
    pub updated_seq: u64,
    /// The creating event's timestamp.
    pub created_at: Timestamp,
    /// The last changing event's timestamp.
    pub updated_at: Timestamp,
}

/// The circuit breaker of a target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Circuit {
    /// Dispatch allowed.
    #[default]
    Closed,
    /// Dispatch paused; after `until` one probe attempt may run (half-open).
    Open {
        /// When it opened.
        opened_at: Timestamp,
        /// End of the cooldown.
        until: Timestamp,
        /// The failure count that tripped it.
        failures: u32,
    },
}

/// A repository Leviathan works on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetNode {
    /// The target.
    pub target_id: TargetId,
    /// Display name.
    pub name: Option<String>,
    /// Clone URL.
    pub repo_url: String,
    /// Base branch.
    pub default_branch: String,
    /// Default test command.
    pub test_command: Option<String>,
    /// Breaker state.
    pub circuit: Circuit,
    /// Failed attempts since the last success or breaker reset.
    pub consecutive_failures: u32,
    /// Open PRs known to the log.
    pub open_prs: u32,
    /// Attempts created or running.
    pub live_attempts: u32,
    /// Provenance.
    pub meta: NodeMeta,
}

/// A backlog task and its progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskNode {
    /// Its target.
    pub target_id: TargetId,
    /// The task.
    pub task_id: TaskId,
    /// The backlog entry as last synced.
    pub spec: TaskSpec,
    /// Position in the backlog file.
    pub backlog_index: Option<u32>,
    /// Status derived from events.
    pub status: TaskStatus,
    /// Why it has that status (completion, block or failure reason).
    pub status_reason: Option<String>,
    /// Attempts created so far (any outcome).
    pub attempts: u32,
    /// The attempt in flight, if any.
    pub live_attempt: Option<AttemptId>,
    /// The most recent attempt.
    pub last_attempt: Option<AttemptId>,
    /// The attempt that delivered the task's PR.
    pub succeeded_attempt: Option<AttemptId>,
    /// The most recent failure.
    pub last_failure: Option<Failure>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Earliest time of the next dispatch (retry backoff).
    pub not_before: Option<Timestamp>,
    /// The last attempt failed transiently and no `retry.scheduled` has been recorded since:
    /// the scheduler must choose a backoff before dispatching again.
    pub awaiting_retry: bool,
    /// Provenance.
    pub meta: NodeMeta,
}

/// One attempt at a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptNode {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Its task.
    pub task_id: TaskId,
    /// Its target.
    pub target_id: TargetId,
    /// 1-based number among the task's attempts.
    pub attempt_number: u32,
    /// Where it stands.
    pub status: AttemptStatus,
    /// The executor running it.
    pub executor: Option<String>,
    /// Deadline from policy.
    pub deadline_seconds: Option<u64>,
    /// Platform handle from `job.submitted`.
    pub job_name: Option<String>,
    /// Worker host or pod.
    pub worker: Option<String>,
    /// `attempt.started` time.
    pub started_at: Option<Timestamp>,
    /// Last heartbeat.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Terminal event time.
    pub ended_at: Option<Timestamp>,
    /// Terminal event position.
    pub ended_seq: Option<u64>,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Pushed branch.
    pub branch: Option<String>,
    /// Pushed commit.
    pub commit_sha: Option<String>,
    /// PR number.
    pub pr_number: Option<u64>,
    /// PR URL.
    pub pr_url: Option<String>,
    /// Why it was invalidated.
    pub invalidated_reason: Option<String>,
    /// Model calls recorded.
    pub model_calls: u32,
    /// Test runs recorded.
    pub test_runs: u32,
    /// Input tokens over all calls.
    pub tokens_in: u64,
    /// Output tokens over all calls.
    pub tokens_out: u64,
    /// Cost in USD over all calls that say theirs (the model gateway's).
    #[serde(default)]
    pub cost_usd: f64,
    /// The revision it starts from, when the scheduler published it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<AttemptBase>,
    /// The worker's proposal (`delivery.requested`), which the trusted side delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<ProposalRef>,
    /// Why the trusted side delivered nothing for its proposal (`delivery.refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_refused: Option<String>,
    /// The budget a model call of it was refused for (`budget.exhausted`), e.g. `usd of
    /// target:demo:2026-01-02 (spent 5 of 5)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_exhausted: Option<String>,
    /// Positions of every event about this attempt, in order.
    pub event_seqs: Vec<u64>,
    /// Provenance.
    pub meta: NodeMeta,
}

/// An attempt's proposal as `delivery.requested` announced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalRef {
    /// The commit the patch applies to.
    pub base: String,
    /// The patch artifact.
    pub patch_sha256: Sha256Digest,
    /// The message artifact (commit message, pull request title and body).
    pub message_sha256: Option<Sha256Digest>,
    /// True once `delivery.refused` or `delivery.unchanged` answered it (a delivered proposal
    /// is answered by the attempt's success).
    pub answered: bool,
}

/// Stored content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactNode {
    /// Content address.
    pub sha256: Sha256Digest,
    /// `log`, `diff`, …
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Human name.
    pub name: Option<String>,
    /// Fetch location.
    pub uri: Option<String>,
    /// Provenance.
    pub meta: NodeMeta,
}

/// A pull request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullRequestNode {
    /// The target whose repository holds it.
    pub target_id: TargetId,
    /// Its number.
    pub number: u64,
    /// Its URL.
    pub url: String,
    /// Its title.
    pub title: Option<String>,
    /// Head branch.
    pub branch: Option<String>,
    /// Open, merged or closed.
    pub state: PrState,
    /// The attempt that last reported it.
    pub attempt_id: Option<AttemptId>,
    /// When it left the open state.
    pub resolved_at: Option<Timestamp>,
    /// Provenance.
    pub meta: NodeMeta,
}

/// A pushed commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitNode {
    /// The commit id.
    pub sha: String,
    /// The branch.
    pub branch: String,
    /// The message.
    pub message: Option<String>,
    /// The attempt that made it.
    pub attempt_id: AttemptId,
    /// Provenance.
    pub meta: NodeMeta,
}

/// One test run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestRunNode {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Position among the attempt's test runs.
    pub index: u32,
    /// Repair round.
    pub round: u32,
    /// Did it pass.
    pub passed: bool,
    /// Command run.
    pub command: String,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Digest of the output artifact.
    pub output_sha256: Option<Sha256Digest>,
    /// Wall time.
    pub duration_ms: Option<u64>,
    /// Provenance.
    pub meta: NodeMeta,
}

/// One model call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCallNode {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Position among the attempt's model calls.
    pub index: u32,
    /// Model name.
    pub model: String,
    /// Provider.
    pub provider: Option<String>,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Digest of the prompt artifact.
    pub prompt_sha256: Sha256Digest,
    /// Digest of the response artifact.
    pub response_sha256: Sha256Digest,
    /// Generation round.
    pub round: u32,
    /// Wall time.
    pub duration_ms: Option<u64>,
    /// Cost in USD, when the call records it (the model gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Provenance.
    pub meta: NodeMeta,
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "node_type")]
pub enum Node {
    /// A repository.
    Target(TargetNode),
    /// A backlog task.
    Task(TaskNode),
    /// One run of a task.
    Attempt(AttemptNode),
    /// Stored content.
    Artifact(ArtifactNode),
    /// A pull request.
    PullRequest(PullRequestNode),
    /// A pushed commit.
    Commit(CommitNode),
    /// One test run.
    TestRun(TestRunNode),
    /// One model call.
    ModelCall(ModelCallNode),
}

impl Node {
    /// The node's id, derived from its content.
    pub fn id(&self) -> NodeId {
        match self {
            Self::Target(n) => NodeId::target(&n.target_id),
            Self::Task(n) => NodeId::task(&n.target_id, &n.task_id),
            Self::Attempt(n) => NodeId::attempt(&n.attempt_id),
            Self::Artifact(n) => NodeId::artifact(&n.sha256),
            Self::PullRequest(n) => NodeId::pull_request(&n.target_id, n.number),
            Self::Commit(n) => NodeId::commit(&n.sha),
            Self::TestRun(n) => NodeId::test_run(&n.attempt_id, n.index),
            Self::ModelCall(n) => NodeId::model_call(&n.attempt_id, n.index),
        }
    }

    /// The node's kind.
    pub fn kind(&self) -> NodeKind {
        match self {
            Self::Target(_) => NodeKind::Target,
            Self::Task(_) => NodeKind::Task,
            Self::Attempt(_) => NodeKind::Attempt,
            Self::Artifact(_) => NodeKind::Artifact,
            Self::PullRequest(_) => NodeKind::PullRequest,
            Self::Commit(_) => NodeKind::Commit,
            Self::TestRun(_) => NodeKind::TestRun,
            Self::ModelCall(_) => NodeKind::ModelCall,
        }
    }

    /// Provenance.
    pub fn meta(&self) -> &NodeMeta {
        match self {
            Self::Target(n) => &n.meta,
            Self::Task(n) => &n.meta,
            Self::Attempt(n) => &n.meta,
            Self::Artifact(n) => &n.meta,
            Self::PullRequest(n) => &n.meta,
            Self::Commit(n) => &n.meta,
            Self::TestRun(n) => &n.meta,
            Self::ModelCall(n) => &n.meta,
        }
    }

    pub(crate) fn meta_mut(&mut self) -> &mut NodeMeta {
        match self {
            Self::Target(n) => &mut n.meta,
            Self::Task(n) => &mut n.meta,
            Self::Attempt(n) => &mut n.meta,
            Self::Artifact(n) => &mut n.meta,
            Self::PullRequest(n) => &mut n.meta,
            Self::Commit(n) => &mut n.meta,
            Self::TestRun(n) => &mut n.meta,
            Self::ModelCall(n) => &mut n.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_edge_ids() {
        let target = TargetId::new("demo").unwrap();
        let task = TaskId::new("docs-guide").unwrap();
        let task_node = NodeId::task(&target, &task);
        assert_eq!(task_node.as_str(), "task:demo/docs-guide");
        assert_eq!(
            Edge::id(&task_node, EdgeKind::BelongsTo, &NodeId::target(&target)),
            "task:demo/docs-guide:BELONGS_TO:target:demo"
        );
        assert_eq!(NodeId::pull_request(&target, 7).as_str(), "pr:demo#7");
    }
}
