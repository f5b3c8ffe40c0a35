//! `FakeGitHub` driven only by real clients: the git CLI over smart HTTP and `octocrab`.
#![cfg(feature = "github")]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
};

use leviathan_testkit::github::{FakeGitHub, PrState, RestFailure};
use octocrab::{
    Octocrab,
    models::{IssueState, pulls::PullRequest},
    params,
    service::middleware::retry::RetryConfig,
};
use tempfile::TempDir;
use tokio::process::Command;

const OWNER: &str = "acme";
const REPO: &str = "widgets";

/// A scratch area for git clients, isolated from the user's git configuration.
struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Self {
        Self {
            dir: TempDir::new().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `git` with no inherited configuration or credentials and no terminal prompts.
    fn git(&self, cwd: &Path) -> Command {
        let mut command = Command::new("git");
        command
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Test Agent")
            .env("GIT_AUTHOR_EMAIL", "agent@example.com")
            .env("GIT_COMMITTER_NAME", "Test Agent")
            .env("GIT_COMMITTER_EMAIL", "agent@example.com");
        command
    }

    /// Clones anonymously into `<workspace>/<name>`.
    async fn clone(&self, url: &str, name: &str) -> PathBuf {
        let target = self.path(name);
        let output = self
            .git(self.dir.path())
            .arg("clone")
            .arg(url)
            .arg(&target)
            .output()
            .await
            .unwrap();
        assert_success(&output, "git clone");
        target
    }

    /// Creates `branch` in `repo` with one commit adding `files`, returning the commit SHA.
    async fn commit_on_branch(&self, repo: &Path, branch: &str, files: &[(&str, &str)]) -> String {
        assert_success(
            &self
                .git(repo)
                .args(["checkout", "-q", "-b", branch])
                .output()
                .await
                .unwrap(),
            "checkout",
        );
        for (path, content) in files {
            let target = repo.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, content).unwrap();
        }
        assert_success(
            &self
                .git(repo)
                .args(["add", "--all"])
                .output()
                .await
                .unwrap(),
            "add",
        );
        let commit = self
            .git(repo)
            .args(["commit", "-q", "-m", &format!("work on {branch}")])
            .output()
            .await
            .unwrap();
        assert_success(&commit, "commit");
        let head = self
            .git(repo)
            .args(["rev-parse", "HEAD"])
            .output()
            .await
            .unwrap();
        assert_success(&head, "rev-parse");
        String::from_utf8(head.stdout).unwrap().trim().to_owned()
    }
}

/// Adds `http.extraHeader` through the environment, as Leviathan's worker does, so the token never
/// reaches a URL, an argument list or `.git/config`.
fn with_bearer(mut command: Command, token: &str) -> Command {
    command
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env(
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Bearer {token}"),
        );
    command
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn fake_with_repo() -> (FakeGitHub, String) {
    let github = FakeGitHub::start().await.unwrap();
    let url = github
        .create_repo_with_files(
            OWNER,
            REPO,
            "main",
            &[("README.md", "# widgets\n"), ("src/lib.rs", "// lib\n")],
        )
        .await
        .unwrap();
    (github, url)
}

/// Clones, commits on `branch` and pushes it with the bearer token; returns the pushed SHA.
async fn push_branch(
    github: &FakeGitHub,
    workspace: &Workspace,
    url: &str,
    branch: &str,
) -> String {
    let checkout = workspace.clone(url, &branch.replace('/', "-")).await;
    let file = format!("changes/{}.txt", branch.replace('/', "-"));
    let sha = workspace
        .commit_on_branch(&checkout, branch, &[(&file, "change\n")])
        .await;
    let push = with_bearer(workspace.git(&checkout), github.token())
        .args(["push", "-q", "origin", branch])
        .output()
        .await
        .unwrap();
    assert_success(&push, "git push");
    sha
}

fn octocrab(github: &FakeGitHub, token: &str) -> Octocrab {
    Octocrab::builder()
        .base_uri(github.api_url())
        .unwrap()
        .personal_token(token.to_owned())
        .build()
        .unwrap()
}

fn github_error(error: octocrab::Error) -> Box<octocrab::GitHubError> {
    match error {
        octocrab::Error::GitHub { source, .. } => source,
        other => panic!("expected a GitHub error, got {other:?}"),
    }
}

#[tokio::test]
async fn clone_commit_and_push_with_a_bearer_extra_header() {
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    let checkout = workspace.clone(&url, "checkout").await;
    assert_eq!(
        std::fs::read_to_string(checkout.join("README.md")).unwrap(),
        "# widgets\n"
    );

    let sha = workspace
        .commit_on_branch(
            &checkout,
            "agent/t1-a1",
            &[("src/new.rs", "pub fn new() {}\n")],
        )
        .await;
    let push = with_bearer(workspace.git(&checkout), github.token())
        .args(["push", "origin", "agent/t1-a1"])
        .output()
        .await
        .unwrap();
    assert_success(&push, "git push");

    assert_eq!(
        github.branch_sha(OWNER, REPO, "agent/t1-a1").await.unwrap(),
        Some(sha)
    );
    assert_eq!(
        github
            .read_file(OWNER, REPO, "agent/t1-a1", "src/new.rs")
            .await
            .unwrap()
            .as_deref(),
        Some(b"pub fn new() {}\n".as_slice())
    );
    assert_eq!(
        github
            .read_file(OWNER, REPO, "main", "src/new.rs")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        github.read_file(OWNER, REPO, "main", "src").await.unwrap(),
        None,
        "a directory is not a file"
    );
    assert_eq!(github.push_count().unwrap(), 1);

    let requests = github.requests();
    let pushes: Vec<_> = requests
        .iter()
        .filter(|request| request.path.contains("git-receive-pack"))
        .collect();
    assert!(!pushes.is_empty());
    assert!(
        pushes
            .iter()
            .all(|request| request.authorization && request.status == 200),
        "{pushes:?}"
    );
    assert!(
        requests
            .iter()
            .all(|request| !request.path.contains(github.token()))
    );
}

#[tokio::test]
async fn push_with_basic_credentials_from_askpass_after_a_challenge() {
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    let checkout = workspace.clone(&url, "checkout").await;
    workspace
        .commit_on_branch(&checkout, "feature", &[("a.txt", "a\n")])
        .await;
    let askpass = workspace.path("askpass.sh");
    std::fs::write(
        &askpass,
        "#!/bin/sh\ncase \"$1\" in\n  Username*) echo x-access-token ;;\n  *) echo \"$FAKE_GITHUB_TOKEN\" ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();

    let push = workspace
        .git(&checkout)
        .env("GIT_ASKPASS", &askpass)
        .env("FAKE_GITHUB_TOKEN", github.token())
        .args(["push", "origin", "feature"])
        .output()
        .await
        .unwrap();
    assert_success(&push, "git push");
    assert!(github.branch_exists(OWNER, REPO, "feature").await.unwrap());

    let advertisements: Vec<_> = github
        .requests()
        .into_iter()
        .filter(|request| request.path.ends_with("info/refs?service=git-receive-pack"))
        .collect();
    let statuses: Vec<(bool, u16)> = advertisements
        .iter()
        .map(|request| (request.authorization, request.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(false, 401), (true, 200)],
        "challenge, then Basic credentials"
    );
}

#[tokio::test]
async fn push_without_a_valid_token_is_refused() {
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    let checkout = workspace.clone(&url, "checkout").await;
    workspace
        .commit_on_branch(&checkout, "feature", &[("a.txt", "a\n")])
        .await;

    let anonymous = workspace
        .git(&checkout)
        .args(["push", "origin", "feature"])
        .output()
        .await
        .unwrap();
    assert!(!anonymous.status.success());
    let wrong = with_bearer(workspace.git(&checkout), "ghp_not-the-token")
        .args(["push", "origin", "feature"])
        .output()
        .await
        .unwrap();
    assert!(!wrong.status.success());

    assert!(!github.branch_exists(OWNER, REPO, "feature").await.unwrap());
    assert_eq!(github.push_count().unwrap(), 0);
    let refused = github
        .requests()
        .into_iter()
        .filter(|request| request.status == 401)
        .count();
    assert!(refused >= 2, "both attempts were challenged");
}

/// Fetching many distinct commits makes git gzip the upload-pack request (bodies over 1 KiB), so
/// this only passes if `Content-Encoding` reaches `git http-backend`.
#[tokio::test]
async fn clone_with_a_gzip_compressed_negotiation() {
    const BRANCHES: usize = 80;
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    let checkout = workspace.clone(&url, "checkout").await;
    let main = workspace
        .git(&checkout)
        .args(["rev-parse", "HEAD"])
        .output()
        .await
        .unwrap();
    let main = String::from_utf8(main.stdout).unwrap();
    let mut stream = String::new();
    for n in 0..BRANCHES {
        stream.push_str(&format!(
            "commit refs/heads/many/{n:02}\ncommitter A <a@example.com> 1700000000 +0000\n\
             data 4\nmsg\nfrom {main}\nM 644 inline file-{n}.txt\ndata 2\n{n:02}\n\n",
            main = main.trim()
        ));
    }
    let mut import = workspace
        .git(&checkout)
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(import.stdin.as_mut().unwrap(), stream.as_bytes())
        .await
        .unwrap();
    drop(import.stdin.take());
    assert!(import.wait().await.unwrap().success());
    let push = with_bearer(workspace.git(&checkout), github.token())
        .args([
            "push",
            "-q",
            "origin",
            "refs/heads/many/*:refs/heads/many/*",
        ])
        .output()
        .await
        .unwrap();
    assert_success(&push, "push of many commits");

    let fresh = workspace.clone(&url, "fresh").await;
    let last = format!("origin/many/{:02}", BRANCHES - 1);
    let fetched = workspace
        .git(&fresh)
        .args(["rev-parse", &last])
        .output()
        .await
        .unwrap();
    assert_success(&fetched, "rev-parse of a fetched branch");
    let expected = github
        .branch_sha(OWNER, REPO, &format!("many/{:02}", BRANCHES - 1))
        .await
        .unwrap();
    assert_eq!(
        Some(String::from_utf8(fetched.stdout).unwrap().trim().to_owned()),
        expected
    );
}

#[tokio::test]
async fn private_repositories_need_the_token_to_clone() {
    let github = FakeGitHub::builder()
        .tokens(["tok-primary", "tok-secondary"])
        .clone_requires_token(true)
        .start()
        .await
        .unwrap();
    assert_eq!(github.token(), "tok-primary");
    let url = github
        .create_repo_with_files(OWNER, REPO, "trunk", &[("a.txt", "a\n")])
        .await
        .unwrap();
    let workspace = Workspace::new();

    let anonymous = workspace
        .git(workspace.dir.path())
        .args(["clone", &url, "anonymous"])
        .output()
        .await
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "anonymous clone of a private repository must fail"
    );

    let clone = with_bearer(workspace.git(workspace.dir.path()), "tok-secondary")
        .args(["clone", &url, "authorised"])
        .output()
        .await
        .unwrap();
    assert_success(&clone, "authorised clone");
    assert_eq!(
        std::fs::read_to_string(workspace.path("authorised/a.txt")).unwrap(),
        "a\n"
    );
    // Like GitHub, the `.git` suffix is optional.
    let without_suffix = format!("{}/{OWNER}/{REPO}", github.url());
    let clone = with_bearer(workspace.git(workspace.dir.path()), "tok-primary")
        .args(["clone", &without_suffix, "no-suffix"])
        .output()
        .await
        .unwrap();
    assert_success(&clone, "clone without .git");

    let repository = octocrab(&github, "tok-secondary")
        .repos(OWNER, REPO)
        .get()
        .await
        .unwrap();
    assert_eq!(repository.private, Some(true));
    assert_eq!(repository.default_branch.as_deref(), Some("trunk"));
}

#[tokio::test]
async fn pushes_declined_by_the_pre_receive_hook() {
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    let checkout = workspace.clone(&url, "checkout").await;
    workspace
        .commit_on_branch(&checkout, "feature", &[("a.txt", "a\n")])
        .await;

    github.reject_pushes(true);
    let declined = with_bearer(workspace.git(&checkout), github.token())
        .args(["push", "origin", "feature"])
        .output()
        .await
        .unwrap();
    assert!(!declined.status.success());
    let stderr = String::from_utf8_lossy(&declined.stderr);
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");
    assert!(
        stderr.contains("pushes to this repository are rejected"),
        "{stderr}"
    );
    assert!(!github.branch_exists(OWNER, REPO, "feature").await.unwrap());
    assert_eq!(github.push_count().unwrap(), 0);

    github.reject_pushes(false);
    let accepted = with_bearer(workspace.git(&checkout), github.token())
        .args(["push", "origin", "feature"])
        .output()
        .await
        .unwrap();
    assert_success(&accepted, "push after re-enabling");
    assert_eq!(github.push_count().unwrap(), 1);
}

#[tokio::test]
async fn octocrab_creates_lists_gets_and_closes_pull_requests() {
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    let sha = push_branch(&github, &workspace, &url, "agent/t1-a1").await;
    let client = octocrab(&github, github.token());

    let repository = client.repos(OWNER, REPO).get().await.unwrap();
    assert_eq!(repository.default_branch.as_deref(), Some("main"));
    assert_eq!(
        repository.clone_url.map(String::from).as_deref(),
        Some(url.as_str())
    );

    let created = client
        .pulls(OWNER, REPO)
        .create("Leviathan: add things", "agent/t1-a1", "main")
        .body("Automated PR from Leviathan")
        .send()
        .await
        .unwrap();
    assert_eq!(created.number, 1);
    assert_eq!(
        created.html_url.as_ref().map(|url| url.as_str()),
        Some(format!("{}/{OWNER}/{REPO}/pull/1", github.url()).as_str())
    );
    assert_eq!(created.state, Some(IssueState::Open));
    assert_eq!(created.head.ref_field, "agent/t1-a1");
    assert_eq!(created.head.sha, sha);
    assert_eq!(created.head.label.as_deref(), Some("acme:agent/t1-a1"));
    assert_eq!(created.base.ref_field, "main");
    assert_eq!(
        created.user.as_ref().map(|user| user.login.as_str()),
        Some(FakeGitHub::USER_LOGIN)
    );
    assert_eq!(
        (created.commits, created.changed_files, created.additions),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        (created.merged, created.mergeable),
        (Some(false), Some(true))
    );

    let by_head = client
        .pulls(OWNER, REPO)
        .list()
        .state(params::State::Open)
        .head(format!("{OWNER}:agent/t1-a1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_head
            .items
            .iter()
            .map(|pull| pull.number)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        by_head.items[0].merged, None,
        "listings use the pull-request-simple shape"
    );
    let other_head = client
        .pulls(OWNER, REPO)
        .list()
        .head(format!("{OWNER}:agent/other"))
        .send()
        .await
        .unwrap();
    assert!(other_head.items.is_empty());

    let fetched = client.pulls(OWNER, REPO).get(1).await.unwrap();
    assert_eq!(fetched.title.as_deref(), Some("Leviathan: add things"));
    assert_eq!(fetched.body.as_deref(), Some("Automated PR from Leviathan"));

    let duplicate = github_error(
        client
            .pulls(OWNER, REPO)
            .create("again", "agent/t1-a1", "main")
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(duplicate.status_code.as_u16(), 422);
    assert_eq!(duplicate.message, "Validation Failed");
    assert_eq!(
        duplicate.errors.unwrap()[0]["message"],
        "A pull request already exists for acme:agent/t1-a1."
    );

    let missing = github_error(
        client
            .pulls(OWNER, REPO)
            .create("nope", "agent/missing", "main")
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(missing.status_code.as_u16(), 422);
    assert_eq!(missing.errors.unwrap()[0]["field"], "head");

    let no_commits = github_error(
        client
            .pulls(OWNER, REPO)
            .create("same", "main", "main")
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(no_commits.status_code.as_u16(), 422);
    assert_eq!(
        no_commits.errors.unwrap()[0]["message"],
        "No commits between main and main"
    );

    let closed = client
        .pulls(OWNER, REPO)
        .update(1)
        .state(params::pulls::State::Closed)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.state, Some(IssueState::Closed));
    assert!(closed.closed_at.is_some() && closed.merged_at.is_none());
    assert_eq!(closed.commits, Some(1), "statistics are kept after closing");
    let open = client
        .pulls(OWNER, REPO)
        .list()
        .state(params::State::Open)
        .send()
        .await
        .unwrap();
    assert!(open.items.is_empty());
    let all = client
        .pulls(OWNER, REPO)
        .list()
        .state(params::State::All)
        .send()
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);

    let summaries = github.pull_requests(OWNER, REPO).unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(
        (summaries[0].state, summaries[0].merged),
        (PrState::Closed, false)
    );
    assert_eq!(summaries[0].head, "agent/t1-a1");

    // Closed, a new pull request from the same head is allowed again.
    let second = client
        .pulls(OWNER, REPO)
        .create("retry", "agent/t1-a1", "main")
        .draft(true)
        .send()
        .await
        .unwrap();
    assert_eq!((second.number, second.draft), (2, Some(true)));
}

#[tokio::test]
async fn merging_updates_the_base_branch_for_real() {
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    push_branch(&github, &workspace, &url, "agent/one").await;
    push_branch(&github, &workspace, &url, "agent/two").await;
    push_branch(&github, &workspace, &url, "agent/three").await;
    let client = octocrab(&github, github.token());
    for head in ["agent/one", "agent/two", "agent/three"] {
        client
            .pulls(OWNER, REPO)
            .create(head, head, "main")
            .send()
            .await
            .unwrap();
    }

    let merge = client
        .pulls(OWNER, REPO)
        .merge(1)
        .method(params::pulls::MergeMethod::Merge)
        .send()
        .await
        .unwrap();
    assert!(merge.merged);
    let merge_sha = merge.sha.unwrap();
    assert_eq!(
        github
            .branch_sha(OWNER, REPO, "main")
            .await
            .unwrap()
            .as_deref(),
        Some(merge_sha.as_str())
    );
    assert!(
        github
            .read_file(OWNER, REPO, "main", "changes/agent-one.txt")
            .await
            .unwrap()
            .is_some()
    );
    let merged: PullRequest = client.pulls(OWNER, REPO).get(1).await.unwrap();
    assert_eq!(
        (merged.merged, merged.state),
        (Some(true), Some(IssueState::Closed))
    );
    assert_eq!(merged.merge_commit_sha.as_deref(), Some(merge_sha.as_str()));
    assert!(merged.merged_at.is_some());

    // Like GitHub, a `head` filter without the `owner:` prefix filters nothing.
    let unfiltered = client
        .pulls(OWNER, REPO)
        .list()
        .state(params::State::All)
        .head("agent/two")
        .send()
        .await
        .unwrap();
    assert_eq!(unfiltered.items.len(), 3);

    let again = github_error(client.pulls(OWNER, REPO).merge(1).send().await.unwrap_err());
    assert_eq!(again.status_code.as_u16(), 405);
    let stale = github_error(
        client
            .pulls(OWNER, REPO)
            .merge(2)
            .sha("0".repeat(40))
            .send()
            .await
            .unwrap_err(),
    );
    assert_eq!(stale.status_code.as_u16(), 409);

    let control_sha = github.merge_pr(OWNER, REPO, 2).await.unwrap();
    assert_eq!(
        github.branch_sha(OWNER, REPO, "main").await.unwrap(),
        Some(control_sha)
    );
    assert!(
        github
            .read_file(OWNER, REPO, "main", "changes/agent-two.txt")
            .await
            .unwrap()
            .is_some()
    );
    github.close_pr(OWNER, REPO, 3).await.unwrap();
    assert!(
        github.merge_pr(OWNER, REPO, 3).await.is_err(),
        "a closed pull request cannot be merged"
    );

    let summaries = github.pull_requests(OWNER, REPO).unwrap();
    let states: Vec<(u64, PrState, bool)> = summaries
        .iter()
        .map(|pull| (pull.number, pull.state, pull.merged))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, PrState::Closed, true),
            (2, PrState::Closed, true),
            (3, PrState::Closed, false)
        ]
    );
    assert!(
        github
            .read_file(OWNER, REPO, "main", "changes/agent-three.txt")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn bad_or_missing_credentials_get_401() {
    let (github, _) = fake_with_repo().await;
    let error = github_error(
        octocrab(&github, "ghp_wrong")
            .repos(OWNER, REPO)
            .get()
            .await
            .unwrap_err(),
    );
    assert_eq!(error.status_code.as_u16(), 401);
    assert_eq!(error.message, "Bad credentials");
    assert_eq!(
        error.documentation_url.as_deref(),
        Some("https://docs.github.com/rest")
    );

    let anonymous = Octocrab::builder()
        .base_uri(github.api_url())
        .unwrap()
        .build()
        .unwrap();
    let error = github_error(anonymous.repos(OWNER, REPO).get().await.unwrap_err());
    assert_eq!(error.status_code.as_u16(), 401);

    let unknown = github_error(
        octocrab(&github, github.token())
            .repos(OWNER, "nope")
            .get()
            .await
            .unwrap_err(),
    );
    assert_eq!(unknown.status_code.as_u16(), 404);
}

#[tokio::test]
async fn pagination_follows_link_headers() {
    const PULLS: u64 = 120;
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    let checkout = workspace.clone(&url, "checkout").await;
    workspace
        .commit_on_branch(&checkout, "feature", &[("a.txt", "a\n")])
        .await;
    let branches: Vec<String> = (0..PULLS).map(|n| format!("agent/{n:03}")).collect();
    let refspecs = branches
        .iter()
        .map(|branch| format!("feature:refs/heads/{branch}"));
    let push = with_bearer(workspace.git(&checkout), github.token())
        .args(["push", "-q", "origin"])
        .args(refspecs)
        .output()
        .await
        .unwrap();
    assert_success(&push, "push of many branches");

    let client = octocrab(&github, github.token());
    for branch in &branches {
        client
            .pulls(OWNER, REPO)
            .create(branch, branch, "main")
            .send()
            .await
            .unwrap();
    }

    let first = client.pulls(OWNER, REPO).list().send().await.unwrap();
    assert_eq!(first.items.len(), 30, "GitHub's default page size");
    assert_eq!(first.items[0].number, PULLS, "newest first");
    assert!(first.prev.is_none());
    assert!(first.last.as_ref().unwrap().to_string().ends_with("page=4"));

    let big = client
        .pulls(OWNER, REPO)
        .list()
        .state(params::State::All)
        .per_page(100)
        .send()
        .await
        .unwrap();
    assert_eq!(big.items.len(), 100);
    let next = big.next.as_ref().unwrap().to_string();
    assert!(
        next.contains("per_page=100") && next.contains("state=all") && next.ends_with("page=2"),
        "{next}"
    );

    let everything = client.all_pages(big).await.unwrap();
    let mut numbers: Vec<u64> = everything.iter().map(|pull| pull.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=PULLS).collect::<Vec<_>>());

    let second = client
        .pulls(OWNER, REPO)
        .list()
        .per_page(100)
        .page(2u32)
        .send()
        .await
        .unwrap();
    assert_eq!(second.items.len(), 20);
    assert!(second.next.is_none() && second.prev.is_some() && second.first.is_some());
}

#[tokio::test]
async fn injected_failures_reach_octocrab() {
    let (github, url) = fake_with_repo().await;
    let workspace = Workspace::new();
    push_branch(&github, &workspace, &url, "agent/t1").await;
    let no_retry = Octocrab::builder()
        .base_uri(github.api_url())
        .unwrap()
        .personal_token(github.token().to_owned())
        .add_retry_config(RetryConfig::None)
        .build()
        .unwrap();
    no_retry
        .pulls(OWNER, REPO)
        .create("t1", "agent/t1", "main")
        .send()
        .await
        .unwrap();

    github.fail_next_rest(1, RestFailure::rate_limited());
    let limited = github_error(no_retry.repos(OWNER, REPO).get().await.unwrap_err());
    assert_eq!(limited.status_code.as_u16(), 403);
    assert!(limited.rate_limit_reset.is_some());
    assert_eq!(limited.headers.unwrap()["x-ratelimit-remaining"], "0");
    no_retry
        .repos(OWNER, REPO)
        .get()
        .await
        .expect("only the next call fails");

    github.fail_next_rest(1, RestFailure::new(500));
    let server_error = github_error(no_retry.pulls(OWNER, REPO).get(1).await.unwrap_err());
    assert_eq!(server_error.status_code.as_u16(), 500);

    // octocrab's default policy retries server errors: one injected 502 is absorbed.
    github.fail_next_rest(1, RestFailure::new(502));
    octocrab(&github, github.token())
        .pulls(OWNER, REPO)
        .get(1)
        .await
        .expect("retried after the 502");
    let statuses: Vec<u16> = github
        .requests()
        .iter()
        .filter(|request| request.path.ends_with("/pulls/1"))
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, vec![500, 502, 200]);

    github.fail_pull_listing(Some(RestFailure::new(503)));
    let unreadable = github_error(no_retry.pulls(OWNER, REPO).list().send().await.unwrap_err());
    assert_eq!(unreadable.status_code.as_u16(), 503);
    no_retry
        .pulls(OWNER, REPO)
        .get(1)
        .await
        .expect("only listings are broken");
    github.fail_pull_listing(None);
    assert_eq!(
        no_retry
            .pulls(OWNER, REPO)
            .list()
            .send()
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    github.fail_next_rest(
        1,
        RestFailure::new(404).with_body(serde_json::json!({ "message": "Gone fishing" })),
    );
    let custom = github_error(no_retry.repos(OWNER, REPO).get().await.unwrap_err());
    assert_eq!(
        (custom.status_code.as_u16(), custom.message.as_str()),
        (404, "Gone fishing")
    );
}
