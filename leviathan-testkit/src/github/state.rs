//! Shared state of a [`FakeGitHub`](super::FakeGitHub) — repositories, pull requests, the request
//! log, injected failures — and the pull request operations that both the REST API and the test
//! controls perform, so the two can never disagree.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
};

use anyhow::{Context as _, bail};
use axum::{
    extract::{Request, State as AxumState},
    http::{HeaderMap, header::AUTHORIZATION},
    middleware::Next,
    response::Response,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use tempfile::TempDir;

use super::{
    failure::RestFailure,
    records::{PrState, RequestRecord, USER_LOGIN},
    repo::{self, DiffStats, MergeOutcome, Refs},
};

/// Everything the handlers and the [`FakeGitHub`] handle share.
pub(super) struct Shared {
    dir: TempDir,
    /// `http://127.0.0.1:PORT`, set once the port is bound.
    pub(super) web: OnceLock<String>,
    pub(super) tokens: Vec<String>,
    pub(super) clone_requires_token: bool,
    state: Mutex<State>,
}

/// Mutable state, behind [`Shared::lock`]; never held across an `.await`.
#[derive(Default)]
pub(super) struct State {
    repos: BTreeMap<(String, String), Repo>,
    next_id: u64,
    pub(super) requests: Vec<RequestRecord>,
    pub(super) rest_failures: VecDeque<RestFailure>,
    pub(super) listing_failure: Option<RestFailure>,
    /// REST calls `(method, path suffix)` that are carried out and then answered with a failure,
    /// as when the response is lost on the way back.
    pub(super) lost_responses: VecDeque<(String, String, RestFailure)>,
    pub(super) reject_pushes: bool,
}

pub(super) struct Repo {
    id: u64,
    owner: String,
    name: String,
    default_branch: String,
    private: bool,
    created_at: DateTime<Utc>,
    pub(super) pulls: Vec<Pull>,
}

/// A repository's REST-visible metadata, copied out of the lock for rendering.
#[derive(Debug, Clone)]
pub(super) struct RepoMeta {
    pub(super) id: u64,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) default_branch: String,
    pub(super) private: bool,
    pub(super) created_at: DateTime<Utc>,
    pub(super) open_pulls: usize,
}

#[derive(Debug, Clone)]
pub(super) struct Pull {
    pub(super) id: u64,
    pub(super) number: u64,
    pub(super) user: String,
    pub(super) title: String,
    pub(super) body: Option<String>,
    pub(super) head: String,
    pub(super) base: String,
    /// Tips when last seen, reported if the branch is deleted later.
    pub(super) head_sha: String,
    pub(super) base_sha: String,
    pub(super) draft: bool,
    /// Label names, in the order they were added.
    pub(super) labels: Vec<String>,
    pub(super) state: PrState,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) closed_at: Option<DateTime<Utc>>,
    pub(super) merged_at: Option<DateTime<Utc>>,
    pub(super) merge_commit_sha: Option<String>,
    /// Diff statistics frozen when the pull request was closed or merged (GitHub keeps them).
    pub(super) closed_stats: Option<DiffStats>,
}

/// Who an `Authorization` header says the caller is.
pub(super) enum Caller {
    Anonymous,
    /// A valid token; the name is the Basic user name, or the bot's login for bearer tokens.
    User(String),
    Invalid,
}

/// How a pull request is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MergeMethod {
    Merge,
    Squash,
    Rebase,
}

/// Why a pull request operation was refused, in GitHub's terms.
#[derive(Debug)]
pub(super) enum PullError {
    NotFound,
    NotMergeable,
    HeadModified,
    RebaseNotAllowed,
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for PullError {
    fn from(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
}

impl PullError {
    pub(super) fn message(&self) -> String {
        match self {
            Self::NotFound => "Not Found".into(),
            Self::NotMergeable => "Pull Request is not mergeable".into(),
            Self::HeadModified => {
                "Head branch was modified. Review and try the merge again.".into()
            }
            Self::RebaseNotAllowed => "Rebase merges are not allowed on this repository.".into(),
            Self::Internal(error) => format!("FakeGitHub internal error: {error:#}"),
        }
    }
}

impl State {
    pub(super) fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos.get(&(owner.to_owned(), name.to_owned()))
    }

    pub(super) fn repo_mut(&mut self, owner: &str, name: &str) -> Option<&mut Repo> {
        self.repos.get_mut(&(owner.to_owned(), name.to_owned()))
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Repo {
    pub(super) fn meta(&self) -> RepoMeta {
        RepoMeta {
            id: self.id,
            owner: self.owner.clone(),
            name: self.name.clone(),
            default_branch: self.default_branch.clone(),
            private: self.private,
            created_at: self.created_at,
            open_pulls: self
                .pulls
                .iter()
                .filter(|pull| pull.state == PrState::Open)
                .count(),
        }
    }

    pub(super) fn pull(&self, number: u64) -> Option<&Pull> {
        let index = usize::try_from(number.checked_sub(1)?).ok()?;
        self.pulls.get(index)
    }

    pub(super) fn pull_mut(&mut self, number: u64) -> Option<&mut Pull> {
        let index = usize::try_from(number.checked_sub(1)?).ok()?;
        self.pulls.get_mut(index)
    }
}

impl Pull {
    /// Current head and base tips, falling back to the last seen ones for deleted branches.
    pub(super) fn tips(&self, refs: &Refs) -> (String, String) {
        let head = refs.get(&self.head).unwrap_or(&self.head_sha);
        let base = refs.get(&self.base).unwrap_or(&self.base_sha);
        (head.clone(), base.clone())
    }
}

/// Owner and repository names: what GitHub allows, and nothing that could escape the repository
/// root on disk.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Shared {
    pub(super) fn new(dir: TempDir, tokens: Vec<String>, clone_requires_token: bool) -> Self {
        Self {
            dir,
            web: OnceLock::new(),
            tokens,
            clone_requires_token,
            state: Mutex::new(State::default()),
        }
    }

    /// `HOME` for every git process, so the user's configuration never leaks in.
    pub(super) fn home(&self) -> &Path {
        self.dir.path()
    }

    /// `GIT_PROJECT_ROOT`: repositories live at `<root>/<owner>/<name>.git`.
    pub(super) fn repos_root(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    fn repo_dir(&self, owner: &str, name: &str) -> PathBuf {
        self.repos_root().join(owner).join(format!("{name}.git"))
    }

    pub(super) fn web(&self) -> &str {
        self.web.get().map_or("", String::as_str)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn repo_meta(&self, owner: &str, name: &str) -> Option<RepoMeta> {
        self.lock().repo(owner, name).map(Repo::meta)
    }

    /// The on-disk directory of a repository this server created.
    pub(super) fn existing_repo_dir(&self, owner: &str, name: &str) -> anyhow::Result<PathBuf> {
        if self.lock().repo(owner, name).is_none() {
            bail!("no repository {owner}/{name}");
        }
        Ok(self.repo_dir(owner, name))
    }

    pub(super) async fn create_repo(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
        seed_dir: &Path,
    ) -> anyhow::Result<()> {
        if !valid_name(owner) || !valid_name(name) || name.ends_with(".git") {
            bail!("invalid repository name {owner}/{name}");
        }
        let dir = self.repo_dir(owner, name);
        let parent = dir.parent().context("repository directory has a parent")?;
        tokio::fs::create_dir_all(parent).await?;
        // Creating the final directory reserves the name: it fails if the repository exists.
        tokio::fs::create_dir(&dir)
            .await
            .with_context(|| format!("repository {owner}/{name} already exists"))?;
        repo::create_bare(self.home(), &dir, default_branch, seed_dir).await?;
        let mut state = self.lock();
        let id = state.next_id();
        state.repos.insert(
            (owner.to_owned(), name.to_owned()),
            Repo {
                id,
                owner: owner.to_owned(),
                name: name.to_owned(),
                default_branch: default_branch.to_owned(),
                private: self.clone_requires_token,
                created_at: Utc::now(),
                pulls: Vec::new(),
            },
        );
        Ok(())
    }

    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Caller {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Caller::Anonymous;
        };
        let Ok(value) = value.to_str() else {
            return Caller::Invalid;
        };
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD
                .decode(credentials)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some((user, password)) = decoded.as_deref().and_then(|pair| pair.split_once(':'))
                && self.accepts(password)
            {
                let user = if user.is_empty() { USER_LOGIN } else { user };
                return Caller::User(user.to_owned());
            }
        } else if (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
            && self.accepts(credentials)
        {
            return Caller::User(USER_LOGIN.to_owned());
        }
        Caller::Invalid
    }

    fn accepts(&self, token: &str) -> bool {
        self.tokens.iter().any(|accepted| accepted == token)
    }

    pub(super) fn push_count(&self) -> anyhow::Result<usize> {
        let dirs: Vec<PathBuf> = {
            let state = self.lock();
            state
                .repos
                .keys()
                .map(|(owner, name)| self.repo_dir(owner, name))
                .collect()
        };
        let mut count = 0;
        for dir in dirs {
            match std::fs::read_to_string(dir.join(repo::PUSH_LOG)) {
                Ok(log) => count += log.lines().count(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(count)
    }

    /// A copy of one pull request and its repository's directory.
    fn find_pull(
        &self,
        owner: &str,
        name: &str,
        number: u64,
    ) -> Result<(PathBuf, Pull), PullError> {
        let state = self.lock();
        let pull = state
            .repo(owner, name)
            .and_then(|repo| repo.pull(number))
            .ok_or(PullError::NotFound)?;
        Ok((self.repo_dir(owner, name), pull.clone()))
    }

    /// Closes a pull request without merging it; closing a closed one changes nothing.
    pub(super) async fn close_pull(
        &self,
        owner: &str,
        name: &str,
        number: u64,
    ) -> Result<Pull, PullError> {
        let (dir, pull) = self.find_pull(owner, name, number)?;
        if pull.state == PrState::Closed {
            return Ok(pull);
        }
        let refs = repo::heads(self.home(), &dir).await?;
        let (head_sha, base_sha) = pull.tips(&refs);
        let stats = repo::diff_stats(self.home(), &dir, &base_sha, &head_sha).await?;
        let mut state = self.lock();
        let pull = state
            .repo_mut(owner, name)
            .and_then(|repo| repo.pull_mut(number))
            .ok_or(PullError::NotFound)?;
        if pull.state == PrState::Open {
            let now = Utc::now();
            pull.state = PrState::Closed;
            pull.closed_at = Some(now);
            pull.updated_at = now;
            pull.head_sha = head_sha;
            pull.base_sha = base_sha;
            pull.closed_stats = Some(stats);
        }
        Ok(pull.clone())
    }

    /// Merges an open pull request into its base branch for real and returns the new commit.
    ///
    /// `expected_head` is the REST API's `sha` precondition; `message` overrides the commit title
    /// and body GitHub would write.
    pub(super) async fn merge_pull(
        &self,
        owner: &str,
        name: &str,
        number: u64,
        method: MergeMethod,
        expected_head: Option<&str>,
        message: Option<(Option<String>, Option<String>)>,
    ) -> Result<String, PullError> {
        let (dir, pull) = self.find_pull(owner, name, number)?;
        if method == MergeMethod::Rebase {
            return Err(PullError::RebaseNotAllowed);
        }
        if pull.state != PrState::Open {
            return Err(PullError::NotMergeable);
        }
        let refs = repo::heads(self.home(), &dir).await?;
        let (Some(head_sha), Some(base_sha)) = (refs.get(&pull.head), refs.get(&pull.base)) else {
            return Err(PullError::NotMergeable);
        };
        if expected_head.is_some_and(|expected| expected != head_sha) {
            return Err(PullError::HeadModified);
        }
        let stats = repo::diff_stats(self.home(), &dir, base_sha, head_sha).await?;
        let (title, body) = message.unwrap_or_default();
        let squash = method == MergeMethod::Squash;
        let title = title.unwrap_or_else(|| {
            if squash {
                format!("{} (#{number})", pull.title)
            } else {
                format!("Merge pull request #{number} from {owner}/{}", pull.head)
            }
        });
        let body = body.unwrap_or_else(|| {
            if squash {
                String::new()
            } else {
                pull.title.clone()
            }
        });
        let message = if body.is_empty() {
            title
        } else {
            format!("{title}\n\n{body}")
        };
        let outcome = repo::merge(
            self.home(),
            &dir,
            &pull.base,
            base_sha,
            head_sha,
            &message,
            squash,
        )
        .await?;
        let MergeOutcome::Merged(commit) = outcome else {
            return Err(PullError::NotMergeable);
        };
        let mut state = self.lock();
        let pull = state
            .repo_mut(owner, name)
            .and_then(|repo| repo.pull_mut(number))
            .ok_or(PullError::NotFound)?;
        let now = Utc::now();
        pull.state = PrState::Closed;
        pull.closed_at = Some(now);
        pull.merged_at = Some(now);
        pull.updated_at = now;
        pull.merge_commit_sha = Some(commit.clone());
        pull.head_sha = head_sha.clone();
        pull.base_sha = base_sha.clone();
        pull.closed_stats = Some(stats);
        Ok(commit)
    }
}

/// Middleware recording every request (never the `Authorization` value) with its response status.
pub(super) async fn log_request(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let uri = request.uri();
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let authorization = request.headers().contains_key(AUTHORIZATION);
    let response = next.run(request).await;
    let status = response.status().as_u16();
    shared.lock().requests.push(RequestRecord {
        method,
        path,
        authorization,
        status,
    });
    response
}
