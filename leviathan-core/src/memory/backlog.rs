//! A backlog source in memory, for tests and examples.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;

use crate::{
    backlog::Backlog,
    backlog_source::{BacklogFetchError, BacklogSource},
    id::TargetId,
    target::TargetConfig,
};

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
