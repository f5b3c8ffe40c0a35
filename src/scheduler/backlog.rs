//! Where each cycle reads a target's backlog from.

use std::{
    fmt,
    path::{Component, Path},
};

use async_trait::async_trait;
use leviathan_core::{
    backlog::{Backlog, BacklogError, parse_backlog},
    target::TargetConfig,
};
use leviathan_worker::{GitError, Secret, shallow_clone};

/// Why a target's backlog could not be read this cycle (the target then dispatches nothing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BacklogFetchError {
    /// The repository could not be fetched.
    #[error("cannot fetch {repo_url} at `{branch}`: {source}")]
    Fetch {
        /// The repository.
        repo_url: String,
        /// The branch.
        branch: String,
        /// git's error (redacted).
        #[source]
        source: GitError,
    },
    /// The backlog file is missing, unreadable or outside the repository.
    #[error("cannot read `{path}` of {repo_url}: {reason}")]
    Read {
        /// The repository.
        repo_url: String,
        /// The backlog path inside it.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The backlog does not parse.
    #[error(transparent)]
    Parse(#[from] BacklogError),
}

/// Reads the backlog of a target. Implementations must be safe to call concurrently.
#[async_trait]
pub trait BacklogSource: Send + Sync + fmt::Debug + 'static {
    /// The backlog as the target's default branch has it now.
    async fn fetch(&self, target: &TargetConfig) -> Result<Backlog, BacklogFetchError>;
}

/// The production source: a shallow clone of the target's default branch into a temporary
/// directory each time (git as the worker runs it: isolated from the host's configuration, the
/// token given to git only through its environment configuration, never in a URL).
pub struct GitBacklog {
    token: Option<Secret>,
}

impl fmt::Debug for GitBacklog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitBacklog")
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl GitBacklog {
    /// Fetches with `token` (for private repositories), or anonymously with `None`.
    pub fn new(token: Option<Secret>) -> Self {
        Self { token }
    }
}

#[async_trait]
impl BacklogSource for GitBacklog {
    async fn fetch(&self, target: &TargetConfig) -> Result<Backlog, BacklogFetchError> {
        let read_error = |reason: String| BacklogFetchError::Read {
            repo_url: target.repo_url.clone(),
            path: target.backlog_path.clone(),
            reason,
        };
        let relative = Path::new(&target.backlog_path);
        if relative.as_os_str().is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(read_error(
                "the backlog path must be relative to the repository, without `..`".into(),
            ));
        }
        let scratch = tempfile::Builder::new()
            .prefix("leviathan-backlog-")
            .tempdir()
            .map_err(|e| read_error(format!("cannot create a temporary directory: {e}")))?;
        let repo = shallow_clone(
            &target.repo_url,
            &target.default_branch,
            self.token.as_ref(),
            scratch.path(),
        )
        .await
        .map_err(|source| BacklogFetchError::Fetch {
            repo_url: target.repo_url.clone(),
            branch: target.default_branch.clone(),
            source,
        })?;
        let file = repo.join(relative);
        // A symbolic link could point anywhere on this host: only a regular file is a backlog.
        let meta = tokio::fs::symlink_metadata(&file)
            .await
            .map_err(|e| read_error(e.to_string()))?;
        if !meta.is_file() {
            return Err(read_error("not a regular file".into()));
        }
        let text = tokio::fs::read_to_string(&file)
            .await
            .map_err(|e| read_error(e.to_string()))?;
        Ok(parse_backlog(&target.backlog_path, &text)?)
    }
}
