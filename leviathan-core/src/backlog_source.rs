//! Where the scheduler reads a target's backlog. [`BacklogSource`] is the port; the binary wires
//! in the git one (a clone of the target's repository);
//! [`MemoryBacklog`](crate::memory::MemoryBacklog) is the in-memory one for tests.

use std::fmt;

use async_trait::async_trait;

use crate::{
    backlog::{Backlog, BacklogError},
    store::BoxError,
    target::TargetConfig,
};

/// Why a target's backlog could not be read (the target then dispatches nothing that cycle).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BacklogFetchError {
    /// The repository could not be fetched at that revision.
    #[error("cannot fetch {repo_url} at `{revision}`: {source}")]
    Fetch {
        /// The repository.
        repo_url: String,
        /// The revision asked for.
        revision: String,
        /// Why (credentials already redacted).
        #[source]
        source: BoxError,
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
    /// The backlog at `target.backlog_path` as `revision` (a branch or tag of the target's
    /// repository) has it now.
    async fn fetch(
        &self,
        target: &TargetConfig,
        revision: &str,
    ) -> Result<Backlog, BacklogFetchError>;
}
