//! A GitHub-shaped server on 127.0.0.1: the REST endpoints Leviathan's forge uses (repositories and
//! pull requests, with GitHub's JSON shapes, status codes and `Link` pagination) and smart-HTTP git
//! served by the real `git http-backend`, so the git CLI and `octocrab` are exercised end to end.
//!
//! Layout of one [`FakeGitHub`] (a single port):
//! - REST under [`FakeGitHub::api_url`], `http://127.0.0.1:PORT/api/v3` — GitHub Enterprise Server's
//!   layout, so it is a valid `octocrab` `base_uri` and works for any client appending `/repos/...`.
//!   Every REST call needs `Authorization: Bearer <token>` (or `token <token>`, or Basic with the token
//!   as password); anything else gets GitHub's `401 Bad credentials`.
//! - git under `http://127.0.0.1:PORT/<owner>/<name>.git` ([`FakeGitHub::create_repo`] returns it).
//!   Pushes always need the token (HTTP Basic with any user name and the token as password, or
//!   `Authorization: Bearer <token>` through `http.extraHeader`); clones only when configured.
//! - `http://127.0.0.1:PORT/<owner>/<name>/pull/<n>` is where `html_url` points; nothing is served
//!   there.
//!
//! Merging (REST or [`FakeGitHub::merge_pr`]) is real: a merge (or squash) commit is written with
//! `git merge-tree` and `git commit-tree` and the base branch is advanced. Rebase merges are refused
//! the way GitHub refuses them on a repository that disallows them (405).

mod failure;
mod json;
mod records;
mod repo;
mod rest;
mod smart_http;
mod state;

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use axum::{Router, middleware};
use rand::{Rng as _, distr::Alphanumeric};

use crate::TestServer;

pub use self::{
    failure::RestFailure,
    records::{PrState, PullSummary, RequestRecord},
};
use self::{
    records::{API_PREFIX, USER_LOGIN},
    state::{MergeMethod, PullError, Shared},
};

/// A GitHub-shaped REST and smart-HTTP git server, stopped (and its repositories deleted) on drop.
pub struct FakeGitHub {
    server: TestServer,
    shared: Arc<Shared>,
}

/// Options for [`FakeGitHub`]; start from [`FakeGitHub::builder`].
#[derive(Debug, Clone, Default)]
pub struct FakeGitHubBuilder {
    tokens: Vec<String>,
    clone_requires_token: bool,
}

impl FakeGitHub {
    /// Login of the user every accepted token belongs to; it authors pull requests.
    pub const USER_LOGIN: &'static str = USER_LOGIN;

    /// Starts a server with one random token and public (anonymous) clones.
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    /// Options for tokens and clone authentication.
    pub fn builder() -> FakeGitHubBuilder {
        FakeGitHubBuilder::default()
    }

    /// The first accepted token; hand it to clients as their GitHub token.
    pub fn token(&self) -> &str {
        &self.shared.tokens[0]
    }

    /// Base URL of the server, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// REST base URL, `http://127.0.0.1:PORT/api/v3`: pass it to `octocrab`'s `base_uri`.
    pub fn api_url(&self) -> String {
        format!("{}{API_PREFIX}", self.server.url())
    }

    /// Clone URL of a repository, `http://127.0.0.1:PORT/<owner>/<name>.git`.
    pub fn clone_url(&self, owner: &str, name: &str) -> String {
        format!("{}/{owner}/{name}.git", self.server.url())
    }

    /// Creates a bare repository whose `default_branch` holds one commit of every file under
    /// `seed_dir` (honouring its `.gitignore`), and returns its clone URL.
    pub async fn create_repo(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
        seed_dir: &Path,
    ) -> anyhow::Result<String> {
        self.shared
            .create_repo(owner, name, default_branch, seed_dir)
            .await?;
        Ok(self.clone_url(owner, name))
    }

    /// Like [`create_repo`](Self::create_repo), seeding from `(path, content)` pairs instead of a
    /// directory, for tests that need only a few files.
    pub async fn create_repo_with_files(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let seed = tempfile::tempdir()?;
        for (path, content) in files {
            let target = seed.path().join(path);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::write(&target, content)
                .await
                .with_context(|| format!("writing seed file {path}"))?;
        }
        self.create_repo(owner, name, default_branch, seed.path())
            .await
    }

    /// A repository shaped as a Leviathan target: branch `main` holding a README and
    /// `.leviathan/backlog.yaml` with `backlog`. Returns its clone URL.
    pub async fn create_target_repo(
        &self,
        owner: &str,
        name: &str,
        backlog: &str,
    ) -> anyhow::Result<String> {
        self.create_repo_with_files(
            owner,
            name,
            "main",
            &[
                ("README.md", "# widgets\n"),
                (".leviathan/backlog.yaml", backlog),
            ],
        )
        .await
    }

    /// All pull requests of a repository, by number.
    pub fn pull_requests(&self, owner: &str, repo: &str) -> anyhow::Result<Vec<PullSummary>> {
        let web = self.server.url();
        let state = self.shared.lock();
        let Some(repository) = state.repo(owner, repo) else {
            bail!("no repository {owner}/{repo}");
        };
        Ok(repository
            .pulls
            .iter()
            .map(|pull| PullSummary {
                number: pull.number,
                head: pull.head.clone(),
                base: pull.base.clone(),
                title: pull.title.clone(),
                body: pull.body.clone(),
                state: pull.state,
                draft: pull.draft,
                labels: pull.labels.clone(),
                merged: pull.merged_at.is_some(),
                html_url: json::pull_html_url(&web, owner, repo, pull.number),
            })
            .collect())
    }

    /// Merges an open pull request as a maintainer would on the web (a merge commit on the base
    /// branch), and returns the merge commit's SHA.
    pub async fn merge_pr(&self, owner: &str, repo: &str, number: u64) -> anyhow::Result<String> {
        self.shared
            .merge_pull(owner, repo, number, MergeMethod::Merge, None, None)
            .await
            .map_err(|error| pull_error(owner, repo, number, error))
    }

    /// Closes a pull request without merging it, as a maintainer would on the web.
    pub async fn close_pr(&self, owner: &str, repo: &str, number: u64) -> anyhow::Result<()> {
        self.shared
            .close_pull(owner, repo, number)
            .await
            .map(drop)
            .map_err(|error| pull_error(owner, repo, number, error))
    }

    /// Commit SHA at the tip of a branch, `None` if the branch does not exist.
    pub async fn branch_sha(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
    ) -> anyhow::Result<Option<String>> {
        let dir = self.shared.existing_repo_dir(owner, repo)?;
        Ok(repo::heads(self.shared.home(), &dir).await?.remove(branch))
    }

    /// Whether a branch exists in the repository.
    pub async fn branch_exists(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
    ) -> anyhow::Result<bool> {
        Ok(self.branch_sha(owner, repo, branch).await?.is_some())
    }

    /// Content of `path` on `branch`, `None` if the branch or the file does not exist.
    pub async fn read_file(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
        path: &str,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let dir = self.shared.existing_repo_dir(owner, repo)?;
        repo::show(self.shared.home(), &dir, branch, path).await
    }

    /// Number of pushes that updated at least one ref, over all repositories (counted by a
    /// `post-receive` hook, so pushes that were rejected or failed authentication do not count).
    pub fn push_count(&self) -> anyhow::Result<usize> {
        self.shared.push_count()
    }

    /// Every request received so far (REST and git), in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Answers the next `times` REST calls (any endpoint, before authentication) with `failure`.
    pub fn fail_next_rest(&self, times: usize, failure: RestFailure) {
        let mut state = self.shared.lock();
        state
            .rest_failures
            .extend(std::iter::repeat_n(failure, times));
    }

    /// Carries out the next `method` REST call whose path ends with `path_suffix` (e.g. `POST`,
    /// `/pulls`) and then answers it with `failure`: the response is lost, the effect is not.
    pub fn lose_next_response(&self, method: &str, path_suffix: &str, failure: RestFailure) {
        self.shared.lock().lost_responses.push_back((
            method.to_owned(),
            path_suffix.to_owned(),
            failure,
        ));
    }

    /// While `Some`, every pull request listing fails with this response (a forge that cannot be
    /// read); `None` restores normal listings.
    pub fn fail_pull_listing(&self, failure: Option<RestFailure>) {
        self.shared.lock().listing_failure = failure;
    }

    /// While `true`, every push is declined by the repositories' `pre-receive` hook, so `git push`
    /// reports `pre-receive hook declined`.
    pub fn reject_pushes(&self, reject: bool) {
        self.shared.lock().reject_pushes = reject;
    }
}

fn pull_error(owner: &str, repo: &str, number: u64, error: PullError) -> anyhow::Error {
    match error {
        PullError::Internal(error) => error,
        refused => anyhow::anyhow!("{owner}/{repo}#{number}: {}", refused.message()),
    }
}

impl FakeGitHubBuilder {
    /// Replaces the accepted tokens (the default is one random `ghp_…` token); the first one is
    /// what [`FakeGitHub::token`] returns.
    pub fn tokens<I, T>(mut self, tokens: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tokens = tokens.into_iter().map(Into::into).collect();
        self
    }

    /// Whether clones and fetches need the token too, as for a private repository (default: no).
    pub fn clone_requires_token(mut self, required: bool) -> Self {
        self.clone_requires_token = required;
        self
    }

    /// Binds an ephemeral port on 127.0.0.1 and starts serving.
    pub async fn start(self) -> anyhow::Result<FakeGitHub> {
        let tokens = if self.tokens.is_empty() {
            vec![random_token()]
        } else {
            self.tokens
        };
        if tokens
            .iter()
            .any(|token| token.is_empty() || token.contains(char::is_whitespace))
        {
            bail!("FakeGitHub tokens must be non-empty and contain no whitespace");
        }
        let dir = tempfile::Builder::new().prefix("fake-github-").tempdir()?;
        let shared = Arc::new(Shared::new(dir, tokens, self.clone_requires_token));
        let router = Router::new()
            .nest(API_PREFIX, rest::router(Arc::clone(&shared)))
            .fallback(smart_http::handle)
            .layer(middleware::from_fn_with_state(
                Arc::clone(&shared),
                state::log_request,
            ))
            .with_state(Arc::clone(&shared));
        let server = TestServer::spawn(router).await?;
        // No request can arrive before the port is known to anyone, so this happens first.
        let _ = shared.web.set(server.url());
        Ok(FakeGitHub { server, shared })
    }
}

fn random_token() -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(36)
        .map(char::from)
        .collect();
    format!("ghp_{suffix}")
}
