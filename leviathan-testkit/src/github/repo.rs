//! Bare repositories on disk, driven through the git CLI: creation with a seed commit, ref
//! snapshots, diff statistics, server-side merges, and file reads.

use std::{collections::BTreeMap, path::Path, process::Stdio};

use anyhow::{Context as _, bail};
use tokio::process::Command;

/// Branch name → tip commit SHA.
pub(super) type Refs = BTreeMap<String, String>;

/// File in each bare repository that the `post-receive` hook appends one line to per push.
pub(super) const PUSH_LOG: &str = "leviathan-pushes.log";

/// Environment variable that makes the `pre-receive` hook decline a push; the smart-HTTP bridge
/// sets it while [`FakeGitHub::reject_pushes`](super::FakeGitHub::reject_pushes) is on.
pub(super) const REJECT_PUSHES_ENV: &str = "LEVIATHAN_REJECT_PUSHES";

const PRE_RECEIVE: &str = "#!/bin/sh\n\
    # Installed by leviathan-testkit's FakeGitHub: declines pushes while reject_pushes(true) is on.\n\
    if [ -n \"$LEVIATHAN_REJECT_PUSHES\" ]; then\n\
    \techo \"leviathan-testkit: pushes to this repository are rejected\" >&2\n\
    \texit 1\n\
    fi\n";

const POST_RECEIVE: &str = "#!/bin/sh\n\
    # Installed by leviathan-testkit's FakeGitHub: counts accepted pushes (the cwd is the bare repo).\n\
    cat >/dev/null\n\
    echo push >> leviathan-pushes.log\n";

/// Identity of commits the server writes itself (merges, seeds), like GitHub's web-flow commits.
const SERVER_NAME: &str = "GitHub";
const SERVER_EMAIL: &str = "noreply@github.com";

/// Lines changed between a pull request's base and head, as GitHub reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiffStats {
    pub(super) commits: u64,
    pub(super) additions: u64,
    pub(super) deletions: u64,
    pub(super) changed_files: u64,
}

/// Result of a server-side merge attempt.
pub(super) enum MergeOutcome {
    Merged(String),
    Conflict,
}

/// A git command isolated from the caller's environment and configuration: only `PATH` survives,
/// `HOME` is the server's private directory, and commits get the server's identity.
pub(super) fn git(home: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", SERVER_NAME)
        .env("GIT_AUTHOR_EMAIL", SERVER_EMAIL)
        .env("GIT_COMMITTER_NAME", SERVER_NAME)
        .env("GIT_COMMITTER_EMAIL", SERVER_EMAIL)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a git command in `dir` and returns its trimmed stdout, failing with stderr on a non-zero exit.
async fn run(home: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = git(home)
        .current_dir(dir)
        .args(args)
        .output()
        .await
        .context("running git")?;
    if !output.status.success() {
        bail!(
            "git {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)
        .context("git output is not UTF-8")?
        .trim()
        .to_owned())
}

/// Initialises a bare repository in the (existing, empty) `dir`, accepting pushes over smart HTTP,
/// with the testkit hooks, and one commit of `seed_dir`'s files on `branch` (which becomes HEAD).
pub(super) async fn create_bare(
    home: &Path,
    dir: &Path,
    branch: &str,
    seed_dir: &Path,
) -> anyhow::Result<()> {
    run(
        home,
        dir,
        &[
            "init",
            "--quiet",
            "--bare",
            &format!("--initial-branch={branch}"),
        ],
    )
    .await?;
    run(home, dir, &["config", "http.receivepack", "true"]).await?;
    install_hook(dir, "pre-receive", PRE_RECEIVE).await?;
    install_hook(dir, "post-receive", POST_RECEIVE).await?;

    // Commit the seed without a clone: a throwaway index, with the seed directory as work tree.
    let index = dir.join("leviathan-seed.index");
    let seed = |args: &'static [&'static str]| {
        let mut command = git(home);
        command
            .current_dir(seed_dir)
            .env("GIT_DIR", dir)
            .env("GIT_WORK_TREE", seed_dir)
            .env("GIT_INDEX_FILE", &index)
            .args(args);
        command
    };
    let added = seed(&["add", "--all"]).output().await?;
    if !added.status.success() {
        bail!(
            "git add of the seed failed: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        );
    }
    let tree = seed(&["write-tree"]).output().await?;
    if !tree.status.success() {
        bail!(
            "git write-tree failed: {}",
            String::from_utf8_lossy(&tree.stderr).trim()
        );
    }
    let tree = String::from_utf8(tree.stdout)?.trim().to_owned();
    tokio::fs::remove_file(&index).await?;
    let commit = run(home, dir, &["commit-tree", &tree, "-m", "Initial commit"]).await?;
    run(
        home,
        dir,
        &["update-ref", &format!("refs/heads/{branch}"), &commit],
    )
    .await?;
    Ok(())
}

async fn install_hook(dir: &Path, name: &str, script: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("hooks").join(name);
    tokio::fs::write(&path, script).await?;
    tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).await?;
    Ok(())
}

/// All branches and their tips, in one git process.
pub(super) async fn heads(home: &Path, dir: &Path) -> anyhow::Result<Refs> {
    let listing = run(
        home,
        dir,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname:lstrip=2)",
            "refs/heads/",
        ],
    )
    .await?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(sha, branch)| (branch.to_owned(), sha.to_owned()))
        .collect())
}

/// Commits on `head` not on `base`, and the line and file counts of `base...head`.
pub(super) async fn diff_stats(
    home: &Path,
    dir: &Path,
    base: &str,
    head: &str,
) -> anyhow::Result<DiffStats> {
    let commits = run(
        home,
        dir,
        &["rev-list", "--count", &format!("{base}..{head}")],
    )
    .await?;
    let numstat = run(
        home,
        dir,
        &["diff", "--numstat", &format!("{base}...{head}")],
    )
    .await?;
    let mut stats = DiffStats {
        commits: commits.parse().context("rev-list --count output")?,
        additions: 0,
        deletions: 0,
        changed_files: 0,
    };
    for line in numstat.lines() {
        let mut fields = line.split('\t');
        // Binary files report `-` for both counts.
        stats.additions += fields
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        stats.deletions += fields
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        stats.changed_files += 1;
    }
    Ok(stats)
}

/// Whether `head` merges cleanly into `base` (GitHub's `mergeable`).
pub(super) async fn mergeable(
    home: &Path,
    dir: &Path,
    base: &str,
    head: &str,
) -> anyhow::Result<bool> {
    Ok(merge_tree(home, dir, base, head).await?.is_some())
}

/// The merged tree of `base` and `head`, `None` on conflicts.
async fn merge_tree(
    home: &Path,
    dir: &Path,
    base: &str,
    head: &str,
) -> anyhow::Result<Option<String>> {
    let output = git(home)
        .current_dir(dir)
        .args(["merge-tree", "--write-tree", "--no-messages", base, head])
        .output()
        .await?;
    match output.status.code() {
        Some(0) => {
            let stdout = String::from_utf8(output.stdout)?;
            Ok(stdout.lines().next().map(str::to_owned))
        }
        Some(1) => Ok(None),
        _ => bail!(
            "git merge-tree failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// Writes a merge commit of `head` into `base` (or a single-parent squash commit) and advances
/// `branch` to it, provided the branch still points at `base`.
pub(super) async fn merge(
    home: &Path,
    dir: &Path,
    branch: &str,
    base: &str,
    head: &str,
    message: &str,
    squash: bool,
) -> anyhow::Result<MergeOutcome> {
    let Some(tree) = merge_tree(home, dir, base, head).await? else {
        return Ok(MergeOutcome::Conflict);
    };
    let mut args = vec!["commit-tree", &tree, "-p", base];
    if !squash {
        args.extend(["-p", head]);
    }
    args.extend(["-m", message]);
    let commit = run(home, dir, &args).await?;
    run(
        home,
        dir,
        &["update-ref", &format!("refs/heads/{branch}"), &commit, base],
    )
    .await?;
    Ok(MergeOutcome::Merged(commit))
}

/// Content of the file `path` at the tip of `branch`, `None` if either does not exist.
pub(super) async fn show(
    home: &Path,
    dir: &Path,
    branch: &str,
    path: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    let object = format!("refs/heads/{branch}:{path}");
    let kind = git(home)
        .current_dir(dir)
        .args(["cat-file", "-t", &object])
        .output()
        .await?;
    if !kind.status.success() || kind.stdout.trim_ascii() != b"blob" {
        return Ok(None);
    }
    let output = git(home)
        .current_dir(dir)
        .args(["show", &object])
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "git show {object} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(Some(output.stdout))
}
