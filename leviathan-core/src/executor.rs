//! Executors run one attempt each: as a local process, a Kubernetes Job, or anything else that can
//! start the worker with the attempt's environment.

pub mod protocol;

use std::{collections::BTreeMap, fmt, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    digest::Sha256Digest,
    id::{AttemptId, TargetId, TaskId},
    model::{Failure, FailureClass, FailureKind},
    secret::Secret,
    store::BoxError,
    timestamp::Timestamp,
};

/// Everything an executor needs to start the worker for one attempt. Secrets are not here (but
/// the attempt's own token): each executor injects them from its own configuration
/// (environment, Kubernetes Secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpec {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// 1-based attempt number.
    pub attempt_number: u32,
    /// The task.
    pub task_id: TaskId,
    /// The target.
    pub target_id: TargetId,
    /// Clone URL of the target repository.
    pub repo_url: String,
    /// Branch to check out and open the PR against.
    pub base_branch: String,
    /// Wall-clock budget; the executor ends the attempt when it is spent.
    #[serde(with = "seconds")]
    pub deadline: Duration,
    /// Extra, non-secret worker settings (model provider, base URLs…), passed as environment.
    pub env: BTreeMap<String, String>,
    /// The attempt's own control-plane token (a worker token scoped to this attempt, minted at
    /// dispatch). When set, executors give the worker this token instead of one of their own.
    #[serde(skip)]
    pub worker_token: Option<Secret>,
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// An artifact an executor collected (e.g. the worker's log), already stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Content address.
    pub sha256: Sha256Digest,
    /// `log`, …
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Human name.
    pub name: Option<String>,
}

/// How an attempt ended, as the executor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AttemptResult {
    /// The worker delivered a real pull request.
    Succeeded {
        /// Pushed branch.
        branch: String,
        /// Pushed commit.
        commit_sha: String,
        /// PR number from the forge.
        pr_number: u64,
        /// PR URL from the forge.
        pr_url: String,
    },
    /// The worker proposed a change (`delivery.requested`, its patch against `base`); the
    /// trusted side delivers it and records the attempt's success or failure.
    Proposed {
        /// The commit the patch applies to.
        base: String,
        /// The patch artifact.
        patch_sha256: crate::Sha256Digest,
    },
    /// It did not.
    Failed(Failure),
}

/// The result of [`Executor::run`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptOutcome {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How it ended.
    pub result: AttemptResult,
    /// Artifacts the executor stored (logs); the worker uploads its own.
    pub artifacts: Vec<ArtifactRef>,
}

impl AttemptOutcome {
    /// A failed outcome.
    pub fn failed(
        attempt_id: AttemptId,
        kind: FailureKind,
        class: FailureClass,
        summary: impl Into<String>,
    ) -> Self {
        Self {
            attempt_id,
            result: AttemptResult::Failed(Failure {
                kind,
                class,
                summary: summary.into(),
            }),
            artifacts: Vec::new(),
        }
    }
}

/// What can go wrong while driving an executor (as opposed to the attempt failing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The platform is unreachable, overloaded or throttling; retrying may help.
    #[error("executor unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The platform refused the request (bad credentials, forbidden, invalid spec); retrying will not help.
    #[error("executor request refused: {reason}")]
    Rejected {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The executor has no trace of the attempt.
    #[error("attempt {0} is unknown to the executor")]
    NotFound(AttemptId),
    /// The executor's own machinery failed (spawning a process, writing a workspace).
    #[error("executor failure: {reason}")]
    Io {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl ExecutorError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Mints the worker token of an attempt at dispatch (the control plane's `MintWorkerToken`,
/// over HTTP or in process), so that each worker holds a token for its own attempt only.
#[async_trait]
pub trait WorkerTokens: Send + Sync + fmt::Debug + 'static {
    /// A worker token for `attempt` only, expiring at `expires`.
    async fn mint(&self, attempt: &AttemptId, expires: Timestamp) -> Result<Secret, BoxError>;
}

/// Runs attempts. Implementations must be safe to call concurrently for different attempts.
#[async_trait]
pub trait Executor: Send + Sync + fmt::Debug + 'static {
    /// A short name recorded in events (`local`, `k8s`).
    fn name(&self) -> &str;

    /// Runs the attempt to its end (success, failure or deadline) and reports how it ended.
    async fn run(&self, spec: &AttemptSpec) -> Result<AttemptOutcome, ExecutorError>;

    /// Stops a running attempt.
    async fn cancel(&self, attempt_id: &AttemptId) -> Result<(), ExecutorError>;

    /// After a scheduler restart: follows an attempt started by an earlier process to its end,
    /// if the executor can still find it; `None` when it has no trace of it (the attempt is lost).
    async fn reattach(&self, spec: &AttemptSpec) -> Result<Option<AttemptOutcome>, ExecutorError> {
        let _ = spec;
        Ok(None)
    }
}
