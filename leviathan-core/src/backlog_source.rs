//! Where the scheduler reads a target's backlog. [`BacklogSource`] is the port; the binary wires
//! in the git one (a clone of the target's repository); [`MemoryBacklog`] is the in-memory one
//! for tests.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;

use crate::{
    backlog::{Backlog, BacklogError},
    id::TargetId,
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

/// A [`BacklogSource`] in memory: the backlog set for each target and revision.
#[derive(Debug, Default)]
pub struct MemoryBacklog {
    backlogs: Mutex<BTreeMap<(TargetId, String), Backlog>>,
}

impl MemoryBacklog {
    /// A source without backlogs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what `target`'s backlog holds at `revision`.
    pub fn set(&self, target: TargetId, revision: impl Into<String>, backlog: Backlog) {
        self.lock().insert((target, revision.into()), backlog);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(TargetId, String), Backlog>> {
        // Inserting cannot leave the map half-changed, so a poisoned lock holds valid data.
        self.backlogs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl BacklogSource for MemoryBacklog {
    async fn fetch(
        &self,
        target: &TargetConfig,
        revision: &str,
    ) -> Result<Backlog, BacklogFetchError> {
        self.lock()
            .get(&(target.name.clone(), revision.to_owned()))
            .cloned()
            .ok_or_else(|| BacklogFetchError::Fetch {
                repo_url: target.repo_url.clone(),
                revision: revision.to_owned(),
                source: format!("no backlog of `{}` at this revision", target.name).into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{backlog::parse_backlog, target::parse_target_config};

    #[tokio::test]
    async fn answers_per_target_and_revision() {
        let target = parse_target_config(
            "demo.yaml",
            "name: demo\nrepo_url: https://example.com/demo.git\n",
            None,
        )
        .unwrap();
        let backlog = parse_backlog("b.yaml", "tasks:\n  - {id: a, title: A}\n").unwrap();
        let source = MemoryBacklog::new();
        source.set(target.name.clone(), "main", backlog.clone());
        assert_eq!(source.fetch(&target, "main").await.unwrap(), backlog);
        let error = source.fetch(&target, "release").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot fetch https://example.com/demo.git at `release`: no backlog of `demo` at this revision"
        );
    }
}
