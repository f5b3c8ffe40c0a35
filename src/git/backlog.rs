//! The git [`BacklogSource`]: the backlog file read from a cached bare repository of the target,
//! brought up to the revision's tip by a shallow fetch.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use leviathan_core::{
    BacklogFetchError, BacklogSource, Sha256Digest,
    backlog::{Backlog, parse_backlog},
    secret::Secret,
    target::TargetConfig,
};
use leviathan_worker::{Git, GitError, config::GitIdentity};

/// The ref the fetched revision is kept under in a cached repository.
const FETCHED: &str = "refs/leviathan/backlog";

/// The production source. Each repository gets one bare repository under the cache directory;
/// each fetch brings the revision's tip into it (`git fetch --depth 1`: only what changed since
/// the last one crosses the network) and reads the backlog from that commit's tree, never from
/// a checkout. Git runs as the worker runs it: isolated from the host's configuration, with the
/// token given to git only through its environment configuration, never in a URL.
pub struct GitBacklog {
    token: Option<Secret>,
    cache: Cache,
    /// One lock per cached repository: fetches of one repository run one at a time.
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Where the cached repositories live.
enum Cache {
    /// A directory of the caller's, kept after the source is dropped.
    Dir(PathBuf),
    /// A temporary directory, made at the first fetch and removed with the source.
    Temporary(tokio::sync::OnceCell<tempfile::TempDir>),
}

impl fmt::Debug for GitBacklog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitBacklog")
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl GitBacklog {
    /// Fetches with `token` (for private repositories), or anonymously with `None`, caching the
    /// repositories in a temporary directory that lives as long as the source.
    pub fn new(token: Option<Secret>) -> Self {
        Self::with_cache(token, Cache::Temporary(tokio::sync::OnceCell::new()))
    }

    /// [`GitBacklog::new`] caching the repositories in `dir` (created when missing), so that
    /// they outlive the process.
    pub fn cached_in(token: Option<Secret>, dir: impl Into<PathBuf>) -> Self {
        Self::with_cache(token, Cache::Dir(dir.into()))
    }

    fn with_cache(token: Option<Secret>, cache: Cache) -> Self {
        Self {
            token,
            cache,
            locks: Mutex::default(),
        }
    }

    async fn cache_dir(&self) -> std::io::Result<PathBuf> {
        match &self.cache {
            Cache::Dir(dir) => Ok(dir.clone()),
            Cache::Temporary(cell) => {
                let made = cell
                    .get_or_try_init(|| async {
                        tempfile::Builder::new()
                            .prefix("leviathan-backlogs-")
                            .tempdir()
                    })
                    .await?;
                Ok(made.path().to_owned())
            }
        }
    }

    fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(key.to_owned()).or_default().clone()
    }
}

/// The backlog's place in the repository, checked to stay inside it.
fn relative_path(target: &TargetConfig) -> Result<&str, String> {
    let relative = Path::new(&target.backlog_path);
    if relative.as_os_str().is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err("the backlog path must be relative to the repository, without `..`".into());
    }
    Ok(target.backlog_path.trim_start_matches("./"))
}

/// Brings `revision`'s tip of `repo_url` into the bare repository `dir/repo.git` (made at the
/// first fetch), under [`FETCHED`].
async fn fetch_tip(
    dir: &Path,
    repo_url: &str,
    revision: &str,
    token: Option<&Secret>,
) -> Result<Git, GitError> {
    let not_started = |detail: String| GitError {
        operation: "fetch".into(),
        outcome: "not started".into(),
        detail,
        auth_failed: false,
    };
    let home = dir.join("home");
    tokio::fs::create_dir_all(&home)
        .await
        .map_err(|e| not_started(format!("cannot create {}: {e}", home.display())))?;
    let identity = GitIdentity {
        name: "Leviathan".into(),
        email: "leviathan@users.noreply.github.com".into(),
    };
    let no_token = Secret::new(String::new());
    let git = Git::isolated(&home, &identity, repo_url, token.unwrap_or(&no_token));
    let repo = dir.join("repo.git");
    if !repo.join("HEAD").exists() {
        let path = repo.to_string_lossy();
        git.command(dir, &["init", "--quiet", "--bare", "--", &path], false)
            .await?;
    }
    let refspec = format!("+{revision}:{FETCHED}");
    git.command(
        &repo,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--depth",
            "1",
            "--",
            repo_url,
            &refspec,
        ],
        token.is_some(),
    )
    .await?;
    Ok(git)
}

/// Reads `path` from the fetched commit: only a regular file is a backlog (a symbolic link
/// could point anywhere on this host once checked out).
async fn read_fetched(git: &Git, repo: &Path, path: &str) -> Result<String, String> {
    let spec = format!("{FETCHED}:{path}");
    let listed = git
        .command(
            repo,
            &["ls-tree", "-z", "--full-tree", FETCHED, "--", path],
            false,
        )
        .await
        .map_err(|e| e.to_string())?;
    let entry = String::from_utf8_lossy(&listed);
    let mode = entry.split(' ').next().unwrap_or_default();
    match mode {
        "" => return Err("no such file in the fetched revision".into()),
        "100644" | "100755" => {}
        _ => return Err("not a regular file".into()),
    }
    let blob = git
        .command(repo, &["cat-file", "blob", &spec], false)
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(blob).map_err(|_| "not UTF-8 text".into())
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
        let path = relative_path(target).map_err(read_error)?;
        let cache = self
            .cache_dir()
            .await
            .map_err(|e| read_error(format!("cannot create the cache directory: {e}")))?;
        // One directory per repository URL, named by its digest (a URL is no file name).
        let key = Sha256Digest::of(target.repo_url.as_bytes()).to_string();
        let lock = self.lock_of(&key);
        let _fetching = lock.lock().await;
        let dir = cache.join(&key[..32]);
        let git = fetch_tip(&dir, &target.repo_url, revision, self.token.as_ref())
            .await
            .map_err(|source| BacklogFetchError::Fetch {
                repo_url: target.repo_url.clone(),
                revision: revision.to_owned(),
                source: Box::new(source),
            })?;
        let text = read_fetched(&git, &dir.join("repo.git"), path)
            .await
            .map_err(read_error)?;
        Ok(parse_backlog(&target.backlog_path, &text)?)
    }
}
