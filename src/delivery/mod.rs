//! Trusted delivery: the component that alone holds the forge token turns an attempt's
//! *proposal* (a patch against the dispatched base commit, a message, a title and a body) into
//! the task's one branch and one pull request, after checking the change itself.
//!
//! [`Deliverer::deliver`]:
//! 1. refuses a proposal of an attempt that is no longer live (asked again right before the push);
//! 2. applies the patch to the base commit in a scratch repository of its own (index only);
//! 3. checks the result with [`leviathan_core::delivery::check`] against the task's
//!    `allowed_paths` and the target's `delivery:` policy, whatever the worker checked;
//! 4. commits as the bot and pushes `agent/<task_id>` with a lease on the tip it read, then
//!    opens the pull request or reuses the open one (found by head branch first, so a lost
//!    create response is adopted, not duplicated), adding a line for the attempt to its body.
//!
//! Every step can be run again: a tip that already carries this attempt's commit is not pushed
//! again, and the open pull request is found by its head branch. So a delivery cut short (a
//! crash, a lost response) is completed by delivering the same proposal again.

mod base;
mod git;

use std::sync::Arc;

use leviathan_core::{
    ArtifactStore, AttemptId, Forge, ForgeError, TaskId,
    delivery::{self, Violation},
    forge::{PullRequest, PullRequestSpec, open_pull_request},
    paths::AllowedPaths,
    secret::Secret,
    target::TargetConfig,
};
use leviathan_worker::{GitError, config::GitIdentity};

pub use self::base::{BaseError, PublishedBase, publish_base};
use self::git::{ApplyError, Scratch};

/// Head branches of the agent's pull requests start with this; one branch per task.
pub fn task_branch(task_id: &TaskId) -> String {
    format!("{}{task_id}", crate::scheduler::AGENT_BRANCH_PREFIX)
}

/// What an attempt proposes to deliver.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The task.
    pub task_id: TaskId,
    /// The attempt that made it.
    pub attempt_id: AttemptId,
    /// The attempt's number at the task.
    pub attempt_number: u32,
    /// The commit the attempt was dispatched at; the patch applies to it.
    pub base_commit: String,
    /// `git diff --binary` against the base commit.
    pub patch: Vec<u8>,
    /// The commit message (the delivery adds `Task-ID` and `Attempt-ID` trailers).
    pub message: String,
    /// The pull request's title.
    pub title: String,
    /// The pull request's body, for a new pull request.
    pub body: String,
}

/// What a delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivered {
    /// The change was pushed (or found pushed by this attempt) and the pull request opened or,
    /// when `pr.reused`, updated.
    Pushed {
        /// The task's branch.
        branch: String,
        /// The commit on it.
        commit_sha: String,
        /// The pull request.
        pr: PullRequest,
    },
    /// The open pull request's head already has exactly this tree: nothing was pushed.
    Unchanged {
        /// The task's branch.
        branch: String,
        /// The commit already there.
        commit_sha: String,
        /// The open pull request.
        pr: PullRequest,
    },
}

/// Why a proposal is not delivered, as the operator reads it in `delivery.refused`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The attempt timed out, failed or was invalidated meanwhile.
    #[error("attempt no longer live")]
    NotLive,
    /// The proposal's patch or words cannot be read (a missing or malformed artifact).
    #[error("the proposal cannot be read: {0}")]
    Unreadable(String),
    /// The patch is against another commit than the one the attempt was dispatched at.
    #[error("the proposal's base {proposed} is not the attempt's base {dispatched}")]
    WrongBase {
        /// The proposal's.
        proposed: String,
        /// The attempt's, as `attempt.created` recorded it.
        dispatched: String,
    },
    /// The base commit is not in the repository any more.
    #[error("the base commit {0} is not in the repository")]
    BaseMissing(String),
    /// The patch does not apply to the base commit.
    #[error("the patch does not apply to the base commit: {0}")]
    DoesNotApply(String),
    /// The patch changes nothing.
    #[error("the patch changes nothing")]
    Empty,
    /// The applied change breaks the scope or the target's policy.
    #[error("{}", list(.0))]
    Policy(Vec<Violation>),
}

fn list(violations: &[Violation]) -> String {
    let shown: Vec<String> = violations.iter().take(5).map(ToString::to_string).collect();
    match violations.len().saturating_sub(shown.len()) {
        0 => shown.join("; "),
        more => format!("{}; and {more} more", shown.join("; ")),
    }
}

/// Why a delivery did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Refused for good: nothing was pushed or opened.
    #[error("delivery refused: {0}")]
    Refused(#[from] Refusal),
    /// git failed (fetch, push, a lost lease); delivering again may succeed.
    #[error("delivery failed: {0}")]
    Git(#[from] GitError),
    /// The forge failed; delivering again may succeed when the error is transient.
    #[error("delivery failed: {0}")]
    Forge(#[from] ForgeError),
}

/// Whether an attempt is still live (not ended, timed out or invalidated); the scheduler answers
/// from the log, caught up.
#[async_trait::async_trait]
pub trait Liveness: Send + Sync {
    /// True while `attempt` may still deliver.
    async fn is_live(&self, attempt: &AttemptId) -> bool;
}

#[async_trait::async_trait]
impl<F: Fn(&AttemptId) -> bool + Send + Sync> Liveness for F {
    async fn is_live(&self, attempt: &AttemptId) -> bool {
        self(attempt)
    }
}

/// Delivers proposals to one target.
pub struct Deliverer {
    target: TargetConfig,
    forge: Arc<dyn Forge>,
    token: Secret,
    identity: GitIdentity,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("target", &self.target.name)
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    /// A deliverer for `target`, pushing with `token` and opening pull requests on `forge`,
    /// committing as `identity`.
    pub fn new(
        target: TargetConfig,
        forge: Arc<dyn Forge>,
        token: Secret,
        identity: GitIdentity,
    ) -> Self {
        Self {
            target,
            forge,
            token,
            identity,
        }
    }

    /// Publishes the target's base branch as it is now ([`publish_base`]) for an attempt.
    pub async fn publish_base(
        &self,
        artifacts: &dyn ArtifactStore,
    ) -> Result<PublishedBase, BaseError> {
        publish_base(&self.target, &self.token, &self.identity, artifacts).await
    }

    /// Delivers `proposal`, whose task may change `allowed`; see the module documentation.
    pub async fn deliver(
        &self,
        proposal: &Proposal,
        allowed: &AllowedPaths,
        live: &dyn Liveness,
    ) -> Result<Delivered, DeliveryError> {
        if !live.is_live(&proposal.attempt_id).await {
            return Err(Refusal::NotLive.into());
        }
        let branch = task_branch(&proposal.task_id);
        let scratch = Scratch::init(&self.target.repo_url, &self.token, &self.identity).await?;
        let tip = scratch
            .fetch(&self.target.default_branch, Some(&branch))
            .await?;
        let base = &proposal.base_commit;
        if !scratch.has_commit(base).await {
            return Err(Refusal::BaseMissing(base.clone()).into());
        }
        match scratch.apply(base, &proposal.patch).await {
            Ok(()) => {}
            Err(ApplyError::DoesNotApply(reason)) => {
                return Err(Refusal::DoesNotApply(reason).into());
            }
            Err(ApplyError::Git(e)) => return Err(e.into()),
        }
        let changes = scratch.changes(base).await?;
        if changes.is_empty() {
            return Err(Refusal::Empty.into());
        }
        let violations = delivery::check(&changes, allowed, &self.target.delivery);
        if !violations.is_empty() {
            return Err(Refusal::Policy(violations).into());
        }
        let tree = scratch.write_tree().await?;
        let trailer = attempt_trailer(&proposal.attempt_id);
        let commit_sha = match &tip {
            // Pushed by this very attempt before a crash or a lost response: adopt it.
            Some(tip) if tip.tree == tree && tip.message.lines().any(|l| l == trailer) => {
                tip.commit.clone()
            }
            Some(tip) if tip.tree == tree => {
                if let Some(pr) = self.forge.find_open(&branch).await? {
                    return Ok(Delivered::Unchanged {
                        branch,
                        commit_sha: tip.commit.clone(),
                        pr,
                    });
                }
                self.push(&scratch, proposal, &tree, &branch, Some(&tip.commit), live)
                    .await?
            }
            tip => {
                let lease = tip.as_ref().map(|t| t.commit.as_str());
                self.push(&scratch, proposal, &tree, &branch, lease, live)
                    .await?
            }
        };
        let pr = self.pull_request(proposal, &branch).await?;
        Ok(Delivered::Pushed {
            branch,
            commit_sha,
            pr,
        })
    }

    /// Commits `tree` and pushes it over `lease`, once the attempt is seen live again.
    async fn push(
        &self,
        scratch: &Scratch,
        proposal: &Proposal,
        tree: &str,
        branch: &str,
        lease: Option<&str>,
        live: &dyn Liveness,
    ) -> Result<String, DeliveryError> {
        let message = format!(
            "{}\n\nTask-ID: {}\n{}\n",
            proposal.message.trim_end(),
            proposal.task_id,
            attempt_trailer(&proposal.attempt_id)
        );
        let commit = scratch
            .commit(tree, &proposal.base_commit, &message)
            .await?;
        if !live.is_live(&proposal.attempt_id).await {
            return Err(Refusal::NotLive.into());
        }
        scratch.push(&commit, branch, lease).await?;
        Ok(commit)
    }

    /// Opens the task's pull request or reuses the open one, adding this attempt's line to its
    /// body once; then the target's labels.
    async fn pull_request(
        &self,
        proposal: &Proposal,
        branch: &str,
    ) -> Result<PullRequest, DeliveryError> {
        let line = attempt_line(proposal);
        let spec = PullRequestSpec {
            head: branch.to_owned(),
            base: self.target.default_branch.clone(),
            title: proposal.title.clone(),
            body: format!("{}\n\n{line}\n", proposal.body.trim_end()),
            draft: self.target.delivery.draft_prs,
        };
        let pr = open_pull_request(self.forge.as_ref(), &spec).await?;
        if pr.reused && !pr.body.lines().any(|l| l == line) {
            let body = format!("{}\n{line}\n", pr.body.trim_end());
            self.forge.update_body(pr.number, &body).await?;
        }
        if !self.target.delivery.labels.is_empty() {
            self.forge
                .add_labels(pr.number, &self.target.delivery.labels)
                .await?;
        }
        Ok(pr)
    }
}

/// The commit trailer that says which attempt made a commit.
fn attempt_trailer(attempt_id: &AttemptId) -> String {
    format!("Attempt-ID: {attempt_id}")
}

/// The pull request body's line for one attempt.
fn attempt_line(proposal: &Proposal) -> String {
    format!(
        "- Attempt {} (`{}`) delivered",
        proposal.attempt_number, proposal.attempt_id
    )
}
