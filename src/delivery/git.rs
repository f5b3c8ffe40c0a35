//! The delivery's own scratch repository: the base commit fetched with the forge token, the proposal's patch
//! applied to the index only (no working tree, so nothing the patch writes is ever followed on
//! disk), the change read back as git sees it, committed and pushed with a lease.

use std::path::PathBuf;

use leviathan_core::{
    delivery::{Change, ChangeKind},
    secret::Secret,
};
use leviathan_worker::{Git, GitError, config::GitIdentity};

/// One delivery's scratch repository; removed on drop.
pub(super) struct Scratch {
    git: Git,
    url: String,
    repo: PathBuf,
    _scratch: tempfile::TempDir,
}

/// The tip of the task's branch as the forge holds it.
pub(super) struct Tip {
    /// Its commit.
    pub commit: String,
    /// Its tree.
    pub tree: String,
    /// Its message.
    pub message: String,
}

impl Scratch {
    /// An empty repository in a fresh temporary directory, talking to `url` with `token`.
    pub(super) async fn init(
        url: &str,
        token: &Secret,
        identity: &GitIdentity,
    ) -> Result<Self, GitError> {
        let scratch = tempfile::Builder::new()
            .prefix("leviathan-delivery-")
            .tempdir()
            .map_err(|e| local("init", e))?;
        let (home, repo) = (scratch.path().join("home"), scratch.path().join("repo"));
        std::fs::create_dir_all(&home).map_err(|e| local("init", e))?;
        let git = Git::isolated(&home, identity, url, token);
        let repo_arg = repo.to_string_lossy().into_owned();
        git.command(scratch.path(), &["init", "--quiet", &repo_arg], false)
            .await?;
        Ok(Self {
            git,
            url: url.to_owned(),
            repo,
            _scratch: scratch,
        })
    }

    async fn text(&self, args: &[&str], authenticated: bool) -> Result<String, GitError> {
        let out = self.git.command(&self.repo, args, authenticated).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Fetches `base` (as `refs/delivery/base`) and, when given and it exists, `branch`;
    /// returns the branch's tip.
    pub(super) async fn fetch(
        &self,
        base: &str,
        branch: Option<&str>,
    ) -> Result<Option<Tip>, GitError> {
        let branch_ref = branch.map(|b| format!("refs/heads/{b}"));
        let has_branch = match &branch_ref {
            Some(branch_ref) => self
                .text(&["ls-remote", "--", &self.url, branch_ref], true)
                .await?
                .lines()
                .any(|l| l.ends_with(&format!("\t{branch_ref}"))),
            None => false,
        };
        let mut refspecs = vec![format!("+refs/heads/{base}:refs/delivery/base")];
        if let Some(branch_ref) = branch_ref.filter(|_| has_branch) {
            refspecs.push(format!("+{branch_ref}:refs/delivery/branch"));
        }
        let mut args = vec!["fetch", "--quiet", "--no-tags", "--", &self.url];
        args.extend(refspecs.iter().map(String::as_str));
        self.text(&args, true).await?;
        if !has_branch {
            return Ok(None);
        }
        Ok(Some(Tip {
            commit: self.rev_parse("refs/delivery/branch").await?,
            tree: self.rev_parse("refs/delivery/branch^{tree}").await?,
            message: self
                .text(&["log", "-1", "--format=%B", "refs/delivery/branch"], false)
                .await?,
        }))
    }

    async fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        self.text(&["rev-parse", "--verify", "--quiet", rev], false)
            .await
    }

    /// `git bundle create` of the fetched base as branch `base`: its commit and the bundle.
    pub(super) async fn bundle_base(&self, base: &str) -> Result<(String, Vec<u8>), GitError> {
        let commit = self.rev_parse("refs/delivery/base").await?;
        let head = format!("refs/heads/{base}");
        self.text(&["update-ref", &head, &commit], false).await?;
        let file = self.repo.with_file_name("base.bundle");
        let file_arg = file.to_string_lossy().into_owned();
        self.text(&["bundle", "create", "--quiet", &file_arg, &head], false)
            .await?;
        let bytes = std::fs::read(&file).map_err(|e| local("bundle", e))?;
        Ok((commit, bytes))
    }

    /// True when `commit` is a commit the clone holds.
    pub(super) async fn has_commit(&self, commit: &str) -> bool {
        let spec = format!("{commit}^{{commit}}");
        self.text(&["cat-file", "-e", &spec], false).await.is_ok()
    }

    /// Loads `base` into the index and applies `patch` to it; `Err(git's reason)` when the patch
    /// does not apply.
    pub(super) async fn apply(&self, base: &str, patch: &[u8]) -> Result<(), ApplyError> {
        self.text(&["read-tree", base], false)
            .await
            .map_err(ApplyError::Git)?;
        let file = self.repo.with_file_name("proposal.patch");
        std::fs::write(&file, patch).map_err(|e| ApplyError::Git(local("apply", e)))?;
        let file = file.to_string_lossy().into_owned();
        self.text(&["apply", "--cached", "--binary", "--", &file], false)
            .await
            .map(drop)
            .map_err(|e| ApplyError::DoesNotApply(e.detail))
    }

    /// What the index changes against `base`, with modes, sizes and line counts.
    pub(super) async fn changes(&self, base: &str) -> Result<Vec<Change>, GitError> {
        let diff = [
            "diff",
            "--cached",
            "-z",
            "-M",
            "--no-ext-diff",
            "--no-textconv",
        ];
        let raw = self
            .git
            .command(
                &self.repo,
                &[&diff[..], &["--raw", "--no-abbrev", base]].concat(),
                false,
            )
            .await?;
        let numstat = self
            .git
            .command(
                &self.repo,
                &[&diff[..], &["--numstat", base]].concat(),
                false,
            )
            .await?;
        let lines = parse_numstat(&numstat);
        let mut changes = Vec::new();
        for (i, entry) in parse_raw(&raw).into_iter().enumerate() {
            let size = if entry.new_mode == "000000" || entry.new_mode == "160000" {
                0
            } else {
                self.text(&["cat-file", "-s", &entry.new_sha], false)
                    .await?
                    .parse()
                    .unwrap_or(u64::MAX)
            };
            changes.push(Change {
                path: entry.path,
                kind: entry.kind,
                old_mode: entry.old_mode,
                new_mode: entry.new_mode,
                size,
                lines: lines.get(i).copied().flatten(),
            });
        }
        Ok(changes)
    }

    /// Writes the index as a tree and returns it.
    pub(super) async fn write_tree(&self) -> Result<String, GitError> {
        self.text(&["write-tree"], false).await
    }

    /// Commits `tree` on top of `base` with `message` (as the bot) and returns the commit.
    pub(super) async fn commit(
        &self,
        tree: &str,
        base: &str,
        message: &str,
    ) -> Result<String, GitError> {
        self.text(
            &[
                "commit-tree",
                "--no-gpg-sign",
                tree,
                "-p",
                base,
                "-m",
                message,
            ],
            false,
        )
        .await
    }

    /// Pushes `commit` to `branch`, replacing it only if it is still at `lease` (absent: `None`).
    pub(super) async fn push(
        &self,
        commit: &str,
        branch: &str,
        lease: Option<&str>,
    ) -> Result<(), GitError> {
        let lease = format!(
            "--force-with-lease=refs/heads/{branch}:{}",
            lease.unwrap_or("")
        );
        let refspec = format!("{commit}:refs/heads/{branch}");
        self.text(
            &[
                "push",
                "--quiet",
                "--no-verify",
                &lease,
                "--",
                &self.url,
                &refspec,
            ],
            true,
        )
        .await
        .map(drop)
    }
}

/// Why a patch could not be applied.
pub(super) enum ApplyError {
    /// git refused the patch; its reason.
    DoesNotApply(String),
    /// git itself failed.
    Git(GitError),
}

fn local(operation: &str, e: std::io::Error) -> GitError {
    GitError {
        operation: operation.to_owned(),
        outcome: "not started".into(),
        detail: e.to_string(),
        auth_failed: false,
    }
}

/// One entry of `git diff --raw -z`.
struct RawEntry {
    path: String,
    kind: ChangeKind,
    old_mode: String,
    new_mode: String,
    new_sha: String,
}

/// Parses `git diff --raw -z --no-abbrev`: `:old new old_sha new_sha STATUS\0path\0[path\0]`.
fn parse_raw(raw: &[u8]) -> Vec<RawEntry> {
    let mut fields = raw
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let mut out = Vec::new();
    while let Some(header) = fields.next() {
        let parts: Vec<&str> = header.trim_start_matches(':').split(' ').collect();
        let [old_mode, new_mode, _, new_sha, status] = parts[..] else {
            continue;
        };
        let Some(first) = fields.next() else { break };
        let (path, kind) = match status.as_bytes().first() {
            Some(b'R') => (
                fields.next().unwrap_or_default(),
                ChangeKind::Renamed(first),
            ),
            Some(b'C') => (fields.next().unwrap_or_default(), ChangeKind::Copied(first)),
            Some(b'A') => (first, ChangeKind::Added),
            Some(b'D') => (first, ChangeKind::Deleted),
            Some(b'T') => (first, ChangeKind::TypeChanged),
            _ => (first, ChangeKind::Modified),
        };
        out.push(RawEntry {
            path,
            kind,
            old_mode: old_mode.to_owned(),
            new_mode: new_mode.to_owned(),
            new_sha: new_sha.to_owned(),
        });
    }
    out
}

/// Parses `git diff --numstat -z`: lines per entry in order, `None` for binary files.
fn parse_numstat(raw: &[u8]) -> Vec<Option<u64>> {
    let mut fields = raw.split(|b| *b == 0).map(String::from_utf8_lossy);
    let mut out = Vec::new();
    while let Some(entry) = fields.next() {
        let mut parts = entry.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if path.is_empty() {
            // A rename: the two paths follow as fields of their own.
            fields.next();
            fields.next();
        }
        out.push(match (added.parse::<u64>(), removed.parse::<u64>()) {
            (Ok(a), Ok(r)) => Some(a + r),
            _ => None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_numstat_entries() {
        let zero = "0".repeat(40);
        let sha = "a".repeat(40);
        let raw = format!(
            ":000000 100644 {zero} {sha} A\0docs/a.md\0:100644 100644 {sha} {sha} R090\0old.md\0docs/new.md\0:100644 120000 {sha} {sha} T\0l\0"
        );
        let entries = parse_raw(raw.as_bytes());
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].path, "docs/a.md");
        assert_eq!(entries[0].kind, ChangeKind::Added);
        assert_eq!(entries[1].path, "docs/new.md");
        assert_eq!(entries[1].kind, ChangeKind::Renamed("old.md".into()));
        assert_eq!(
            (entries[2].kind.clone(), entries[2].new_mode.as_str()),
            (ChangeKind::TypeChanged, "120000")
        );
        let numstat = b"3\t1\tdocs/a.md\x002\t0\t\x00old.md\x00docs/new.md\x00-\t-\tl\x00";
        assert_eq!(parse_numstat(numstat), [Some(4), Some(2), None]);
    }
}
