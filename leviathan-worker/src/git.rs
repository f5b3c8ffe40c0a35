//! The git CLI, isolated from the host's configuration, with the token given to git only through
//! its environment configuration (`GIT_CONFIG_COUNT` / `GIT_CONFIG_KEY_n` / `GIT_CONFIG_VALUE_n`)
//! as an `http.<origin>/.extraHeader` scoped to the repository's host: never in a URL, an
//! argument, `.git/config`, an error or a log line.

use std::{collections::BTreeMap, ffi::OsString, path::Path, time::Duration};

use leviathan_core::{
    redact::{Redactor, basic_credential},
    secret::Secret,
};

use crate::{
    config::GitIdentity,
    process::{self, Spec},
};

/// Time limit of one git command (clones of large repositories take a while).
const GIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A git command that failed; its output is already redacted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`git {operation}` failed ({outcome}): {detail}")]
pub struct GitError {
    /// `clone`, `push`, …
    pub operation: String,
    /// `exit code 128`, `timed out after …`.
    pub outcome: String,
    /// The end of git's output, redacted.
    pub detail: String,
    /// True when git said the credentials were refused or missing.
    pub auth_failed: bool,
}

/// Runs git for one attempt (and, through [`Git::command`], for the trusted side's delivery).
#[derive(Debug)]
pub struct Git {
    env: BTreeMap<String, String>,
    /// `(config key, value)` of the credential header, only for commands that talk to the remote.
    credential: Option<(String, Secret)>,
    redactor: Redactor,
}

impl Git {
    /// A git runner with `home` as its private HOME, committing as `identity`, authenticating to
    /// `repo_url`'s origin (when it is an http(s) URL) with `token`.
    pub fn new(
        home: &Path,
        base_env: &BTreeMap<String, String>,
        identity: &GitIdentity,
        repo_url: &str,
        token: &Secret,
        redactor: Redactor,
    ) -> Self {
        let mut env: BTreeMap<String, String> = base_env
            .iter()
            .filter(|(k, _)| !k.starts_with("GIT_") && k.as_str() != "SSH_ASKPASS")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let home = home.to_string_lossy().into_owned();
        for (k, v) in [
            ("HOME", home.as_str()),
            ("XDG_CONFIG_HOME", home.as_str()),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_AUTHOR_NAME", identity.name.as_str()),
            ("GIT_AUTHOR_EMAIL", identity.email.as_str()),
            ("GIT_COMMITTER_NAME", identity.name.as_str()),
            ("GIT_COMMITTER_EMAIL", identity.email.as_str()),
            ("LC_ALL", "C"),
        ] {
            env.insert(k.to_owned(), v.to_owned());
        }
        let credential = http_origin(repo_url).map(|origin| {
            (
                format!("http.{origin}/.extraHeader"),
                Secret::new(format!(
                    "Authorization: Basic {}",
                    basic_credential(token.expose())
                )),
            )
        });
        Self {
            env,
            credential,
            redactor,
        }
    }

    /// Runs `git <args>` in `cwd`; returns its raw output on success and a redacted error
    /// otherwise. Only `authenticated` commands get the credential header.
    async fn exec(
        &self,
        cwd: &Path,
        operation: &str,
        args: &[&str],
        authenticated: bool,
    ) -> Result<Vec<u8>, GitError> {
        // Configuration through the environment outranks every config file, so hooks and
        // credential helpers a repository (or a model) configures never run.
        let mut config = vec![
            ("core.hooksPath".to_owned(), "/dev/null".to_owned()),
            ("credential.helper".to_owned(), String::new()),
        ];
        if authenticated && let Some((key, value)) = &self.credential {
            config.push((key.clone(), value.expose().to_owned()));
        }
        let mut env = self.env.clone();
        env.insert("GIT_CONFIG_COUNT".into(), config.len().to_string());
        for (i, (key, value)) in config.into_iter().enumerate() {
            env.insert(format!("GIT_CONFIG_KEY_{i}"), key);
            env.insert(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        let spec = Spec {
            program: "git",
            args: args.iter().map(OsString::from).collect(),
            cwd,
            env,
            stdin: None,
            timeout: GIT_TIMEOUT,
            confined: None,
        };
        let failed = |outcome: String, detail: String| GitError {
            operation: operation.to_owned(),
            outcome,
            auth_failed: is_auth_failure(&detail),
            detail,
        };
        let done = process::run(spec)
            .await
            .map_err(|e| failed("not started".into(), self.redactor.redact(&e.to_string())))?;
        if done.success() {
            Ok(done.output)
        } else {
            let output = self.redactor.redact_bytes(&done.output);
            let (tail, _) = process::last_lines(output.trim(), 20);
            Err(failed(done.describe(GIT_TIMEOUT), tail))
        }
    }

    /// A runner for the trusted side: the environment scrubbed of secrets, `home` as HOME,
    /// committing as `identity`, `token` (empty for none) redacted from every error.
    pub fn isolated(home: &Path, identity: &GitIdentity, repo_url: &str, token: &Secret) -> Self {
        let secrets: Vec<&str> = [token.expose()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        Self::new(
            home,
            &process::scrubbed_env(&secrets),
            identity,
            repo_url,
            token,
            Redactor::new(&secrets),
        )
    }

    /// `git <args>` in `cwd` for callers outside the worker; `authenticated` adds the credential
    /// header. The output is raw (the caller redacts what it reports); errors are redacted.
    pub async fn command(
        &self,
        cwd: &Path,
        args: &[&str],
        authenticated: bool,
    ) -> Result<Vec<u8>, GitError> {
        let operation = args.first().copied().unwrap_or("git");
        self.exec(cwd, operation, args, authenticated).await
    }

    /// [`Git::exec`] with the output as redacted text.
    async fn run(
        &self,
        cwd: &Path,
        operation: &str,
        args: &[&str],
        authenticated: bool,
    ) -> Result<String, GitError> {
        let output = self.exec(cwd, operation, args, authenticated).await?;
        Ok(self.redactor.redact_bytes(&output))
    }

    /// `git clone --branch <branch> <url> <dest>`.
    pub(crate) async fn clone(&self, url: &str, branch: &str, dest: &Path) -> Result<(), GitError> {
        self.clone_from(url, branch, dest, true).await
    }

    /// Clones branch `branch` from the git bundle at `bundle` (no network, no credential) and
    /// points `origin` at `repo_url`, so the worktree's `.git/config` names the repository and
    /// holds no credential.
    pub async fn clone_bundle(
        &self,
        bundle: &Path,
        branch: &str,
        dest: &Path,
        repo_url: &str,
    ) -> Result<(), GitError> {
        self.clone_from(&bundle.to_string_lossy(), branch, dest, false)
            .await?;
        self.run(
            dest,
            "remote",
            &["remote", "set-url", "origin", "--", repo_url],
            false,
        )
        .await
        .map(drop)
    }

    /// `git clone` of one branch of `source` (a URL, or a bundle's path, which needs no
    /// credential: `authenticated` false).
    async fn clone_from(
        &self,
        source: &str,
        branch: &str,
        dest: &Path,
        authenticated: bool,
    ) -> Result<(), GitError> {
        let parent = dest.parent().unwrap_or(Path::new("/"));
        let dest = dest.to_string_lossy();
        let args = [
            "clone",
            "--quiet",
            "--no-tags",
            "--branch",
            branch,
            "--",
            source,
            &dest,
        ];
        self.run(parent, "clone", &args, authenticated)
            .await
            .map(drop)
    }

    /// The full commit id `rev` names.
    pub(crate) async fn rev_parse(&self, repo: &Path, rev: &str) -> Result<String, GitError> {
        let out = self
            .run(repo, "rev-parse", &["rev-parse", "--verify", rev], false)
            .await?;
        Ok(out.trim().to_owned())
    }

    /// `git reset --soft <commit>`: undoes commits made in the worktree, keeping their changes.
    pub(crate) async fn reset_soft(&self, repo: &Path, commit: &str) -> Result<(), GitError> {
        self.run(
            repo,
            "reset",
            &["reset", "--quiet", "--soft", commit],
            false,
        )
        .await
        .map(drop)
    }

    /// Stages everything (new, changed and deleted files) and returns the porcelain v2 status,
    /// NUL-separated and unredacted (paths are redacted where they are reported).
    pub(crate) async fn stage_all_and_status(&self, repo: &Path) -> Result<Vec<u8>, GitError> {
        self.run(repo, "add", &["add", "--all"], false).await?;
        self.exec(
            repo,
            "status",
            &[
                "status",
                "--porcelain=v2",
                "-z",
                "--untracked-files=all",
                "--ignore-submodules=none",
            ],
            false,
        )
        .await
    }

    /// The staged diff, for the `diff` artifact.
    pub(crate) async fn staged_diff(&self, repo: &Path) -> Result<String, GitError> {
        self.run(
            repo,
            "diff",
            &[
                "diff",
                "--cached",
                "--no-color",
                "--no-ext-diff",
                "--binary",
            ],
            false,
        )
        .await
    }

    /// Creates `branch` at HEAD, commits the staged changes and returns the new commit id.
    pub(crate) async fn commit(
        &self,
        repo: &Path,
        branch: &str,
        message: &str,
    ) -> Result<String, GitError> {
        self.run(
            repo,
            "checkout",
            &["checkout", "--quiet", "-B", branch],
            false,
        )
        .await?;
        self.run(
            repo,
            "commit",
            &[
                "commit",
                "--quiet",
                "--no-verify",
                "--no-gpg-sign",
                "-m",
                message,
            ],
            false,
        )
        .await?;
        self.rev_parse(repo, "HEAD").await
    }

    /// Pushes HEAD to `branch` of `url` (the configured URL, not whatever `origin` says now).
    /// The branch belongs to this attempt alone, so a leftover of an earlier run of the same
    /// attempt is replaced (`+`).
    pub(crate) async fn push(&self, repo: &Path, url: &str, branch: &str) -> Result<(), GitError> {
        let refspec = format!("+HEAD:refs/heads/{branch}");
        self.run(
            repo,
            "push",
            &["push", "--quiet", "--no-verify", url, &refspec],
            true,
        )
        .await
        .map(drop)
    }
}

/// Fetches the tip of `branch` of `repo_url` into `<workdir>/repo` and returns that path: a
/// shallow, single-branch clone with the worker's isolation (no host configuration, hooks or
/// credential helpers; `<workdir>/home` as `HOME`) and `token`, when given, handed to git only
/// through its environment configuration. `workdir` must exist; the caller removes it.
pub async fn shallow_clone(
    repo_url: &str,
    branch: &str,
    token: Option<&Secret>,
    workdir: &Path,
) -> Result<std::path::PathBuf, GitError> {
    let home = workdir.join("home");
    let repo = workdir.join("repo");
    std::fs::create_dir_all(&home).map_err(|e| GitError {
        operation: "clone".into(),
        outcome: "not started".into(),
        detail: format!("cannot create {}: {e}", home.display()),
        auth_failed: false,
    })?;
    let identity = GitIdentity {
        name: "Leviathan".into(),
        email: "leviathan@users.noreply.github.com".into(),
    };
    let no_token = Secret::new(String::new());
    let git = Git::isolated(&home, &identity, repo_url, token.unwrap_or(&no_token));
    let dest = repo.to_string_lossy();
    git.run(
        workdir,
        "clone",
        &[
            "clone",
            "--quiet",
            "--no-tags",
            "--depth",
            "1",
            "--single-branch",
            "--branch",
            branch,
            "--",
            repo_url,
            &dest,
        ],
        token.is_some(),
    )
    .await?;
    Ok(repo)
}

/// True when git's output says the credentials were refused or missing.
fn is_auth_failure(output: &str) -> bool {
    let lower = output.to_ascii_lowercase();
    [
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "access denied",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
        "invalid username or token",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// `scheme://host[:port]` of an http(s) URL; `None` for local paths and `file://` URLs, which
/// need no credentials.
fn http_origin(repo_url: &str) -> Option<String> {
    let url = url::Url::parse(repo_url).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
}

/// The SHA-256 of `.git/config`, to detect a model or a test run that rewired the repository
/// (remotes, filters, includes) before anything is pushed.
pub(crate) fn config_fingerprint(repo: &Path) -> std::io::Result<leviathan_core::Sha256Digest> {
    let bytes = std::fs::read(repo.join(".git").join("config"))?;
    Ok(leviathan_core::Sha256Digest::of(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            http_origin("http://127.0.0.1:8080/acme/w.git").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            http_origin("https://github.com/acme/w").as_deref(),
            Some("https://github.com")
        );
        assert_eq!(http_origin("file:///srv/x.git"), None);
        assert_eq!(http_origin("/srv/x.git"), None);
    }
}
