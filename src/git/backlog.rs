//! The git [`BacklogSource`]: the backlog file read from a fresh clone of the target.

use std::{
    fmt,
    path::{Component, Path},
};

use async_trait::async_trait;
use leviathan_core::{
    BacklogFetchError, BacklogSource,
    backlog::{Backlog, parse_backlog},
    secret::Secret,
    target::TargetConfig,
};
use leviathan_worker::shallow_clone;

/// The production source: a shallow clone of the revision into a temporary directory each time
/// (git as the worker runs it: isolated from the host's configuration, the token given to git
/// only through its environment configuration, never in a URL).
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
    async fn fetch(
        &self,
        target: &TargetConfig,
        revision: &str,
    ) -> Result<Backlog, BacklogFetchError> {
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
            revision,
            self.token.as_ref(),
            scratch.path(),
        )
        .await
        .map_err(|source| BacklogFetchError::Fetch {
            repo_url: target.repo_url.clone(),
            revision: revision.to_owned(),
            source: Box::new(source),
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
