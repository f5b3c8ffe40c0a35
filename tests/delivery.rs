//! Trusted delivery against the testkit GitHub (real git smart-HTTP, REST through octocrab): the
//! proposal's patch is checked on the trusted side, one branch and one pull request per task,
//! nothing delivered for an attempt that is no longer live, lost responses adopted on retry.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use leviathan::{
    delivery::{Delivered, Deliverer, DeliveryError, Proposal, Refusal},
    worker::{config::GitIdentity, forge::GitHubForge},
};
use leviathan_core::{
    AttemptId, TaskId,
    delivery::Violation,
    paths::AllowedPaths,
    secret::Secret,
    target::{TargetConfig, parse_target_config},
};
use leviathan_testkit::github::{FakeGitHub, RestFailure};

const OWNER: &str = "acme";
const REPO: &str = "widgets";
const TASK: &str = "docs-guide";

struct Fixture {
    github: FakeGitHub,
    base: String,
}

impl Fixture {
    async fn start() -> Self {
        let github = FakeGitHub::start().await.unwrap();
        github
            .create_repo_with_files(
                OWNER,
                REPO,
                "main",
                &[("README.md", "# widgets\n"), ("docs/index.md", "index\n")],
            )
            .await
            .unwrap();
        let base = github
            .branch_sha(OWNER, REPO, "main")
            .await
            .unwrap()
            .unwrap();
        Self { github, base }
    }

    fn target(&self, delivery: &str) -> TargetConfig {
        let text = format!(
            "name: demo\nrepo_url: {}\n{delivery}\n",
            self.github.clone_url(OWNER, REPO)
        );
        parse_target_config("demo.yaml", &text, None).unwrap()
    }

    fn deliverer(&self, delivery: &str) -> Deliverer {
        let target = self.target(delivery);
        let token = Secret::new(self.github.token());
        let forge = GitHubForge::new(&self.github.api_url(), &token, &target.repo_url).unwrap();
        Deliverer::new(
            target,
            Arc::new(forge),
            token,
            GitIdentity {
                name: "Leviathan".into(),
                email: "bot@leviathan.invalid".into(),
            },
        )
    }

    fn proposal(&self, attempt: u32, patch: &str) -> Proposal {
        Proposal {
            task_id: TaskId::new(TASK).unwrap(),
            attempt_id: AttemptId::new(format!("attempt-{attempt}")).unwrap(),
            attempt_number: attempt,
            base_commit: self.base.clone(),
            patch: patch.as_bytes().to_vec(),
            message: "Write the guide".into(),
            title: "Leviathan: Write the guide".into(),
            body: "Automated PR from Leviathan".into(),
        }
    }

    fn pulls(&self) -> Vec<leviathan_testkit::github::PullSummary> {
        self.github.pull_requests(OWNER, REPO).unwrap()
    }
}

fn docs() -> AllowedPaths {
    AllowedPaths::parse(&["docs/"]).unwrap()
}

fn live(_: &AttemptId) -> bool {
    true
}

/// A patch adding `path` with one line `text`.
fn add_file(path: &str, text: &str) -> String {
    format!(
        "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{text}\n"
    )
}

fn refusal(result: Result<Delivered, DeliveryError>) -> Refusal {
    match result {
        Err(DeliveryError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn two_attempts_give_one_pull_request_with_two_pushes_and_a_same_tree_is_unchanged() {
    let f = Fixture::start().await;
    let deliverer = f.deliverer("delivery: {draft_prs: true, labels: [agent]}");
    let first = deliverer
        .deliver(
            &f.proposal(1, &add_file("docs/guide.md", "one")),
            &docs(),
            &live,
        )
        .await
        .unwrap();
    let Delivered::Pushed { branch, pr, .. } = &first else {
        panic!("{first:?}")
    };
    assert_eq!(branch, "agent/docs-guide");
    assert!(!pr.reused);
    let file = f
        .github
        .read_file(OWNER, REPO, branch, "docs/guide.md")
        .await
        .unwrap();
    assert_eq!(file.as_deref(), Some(&b"one\n"[..]));

    let second = deliverer
        .deliver(
            &f.proposal(2, &add_file("docs/guide.md", "two")),
            &docs(),
            &live,
        )
        .await
        .unwrap();
    let Delivered::Pushed {
        pr: pr2,
        commit_sha,
        ..
    } = &second
    else {
        panic!("{second:?}")
    };
    assert!(pr2.reused);
    assert_eq!(pr2.number, pr.number);
    assert_eq!(
        f.github
            .branch_sha(OWNER, REPO, branch)
            .await
            .unwrap()
            .as_ref(),
        Some(commit_sha)
    );
    assert_eq!(f.github.push_count().unwrap(), 2);

    let third = deliverer
        .deliver(
            &f.proposal(3, &add_file("docs/guide.md", "two")),
            &docs(),
            &live,
        )
        .await
        .unwrap();
    assert!(
        matches!(&third, Delivered::Unchanged { commit_sha: c, .. } if c == commit_sha),
        "{third:?}"
    );
    assert_eq!(f.github.push_count().unwrap(), 2, "nothing pushed");

    let pulls = f.pulls();
    assert_eq!(pulls.len(), 1, "one pull request per task");
    let only = &pulls[0];
    assert!(only.draft, "draft_prs");
    assert_eq!(only.labels, ["agent"]);
    assert!(!only.merged);
    let body = only.body.clone().unwrap_or_default();
    assert!(
        body.contains("- Attempt 1 (`attempt-1`) delivered"),
        "{body}"
    );
    assert!(
        body.contains("- Attempt 2 (`attempt-2`) delivered"),
        "{body}"
    );
}

#[tokio::test]
async fn policy_and_scope_are_checked_on_the_applied_patch() {
    let f = Fixture::start().await;
    let deliverer =
        f.deliverer("delivery: {forbidden_paths: [docs/private/], max_files_changed: 2}");
    let symlink = "diff --git a/docs/escape b/docs/escape\nnew file mode 120000\n--- /dev/null\n+++ b/docs/escape\n@@ -0,0 +1 @@\n+../../etc/passwd\n\\ No newline at end of file\n";
    let three = [
        add_file("docs/a.md", "a"),
        add_file("docs/b.md", "b"),
        add_file("docs/c.md", "c"),
    ]
    .concat();
    let workflow = add_file(".github/workflows/ci.yml", "on: push");
    for (patch, allowed, want) in [
        (
            add_file("docs/private/key.md", "k"),
            docs(),
            Violation::Forbidden("docs/private/key.md".into()),
        ),
        (
            three,
            docs(),
            Violation::TooManyFiles { files: 3, limit: 2 },
        ),
        (
            symlink.to_owned(),
            docs(),
            Violation::Symlink("docs/escape".into()),
        ),
        (
            workflow,
            docs(),
            Violation::OutOfScope {
                path: ".github/workflows/ci.yml".into(),
                what: "added",
            },
        ),
        (
            add_file("docs/.gitattributes", "* filter=x"),
            docs(),
            Violation::Protected("docs/.gitattributes".into()),
        ),
    ] {
        let got = refusal(
            deliverer
                .deliver(&f.proposal(1, &patch), &allowed, &live)
                .await,
        );
        let Refusal::Policy(violations) = &got else {
            panic!("{got:?}")
        };
        assert!(violations.contains(&want), "{want:?} not in {violations:?}");
    }
    let got = refusal(
        deliverer
            .deliver(&f.proposal(1, "not a patch\n"), &docs(), &live)
            .await,
    );
    assert!(matches!(got, Refusal::DoesNotApply(_)), "{got:?}");
    assert!(
        !f.github
            .branch_exists(OWNER, REPO, "agent/docs-guide")
            .await
            .unwrap()
    );
    assert_eq!(f.github.push_count().unwrap(), 0);
    assert!(f.pulls().is_empty());
}

#[tokio::test]
async fn an_attempt_that_is_no_longer_live_opens_nothing() {
    let f = Fixture::start().await;
    let deliverer = f.deliverer("");
    let proposal = f.proposal(1, &add_file("docs/guide.md", "late"));
    let dead = |_: &AttemptId| false;
    assert_eq!(
        refusal(deliverer.deliver(&proposal, &docs(), &dead).await),
        Refusal::NotLive
    );
    // Live when the delivery starts, timed out before the push.
    let asked = AtomicUsize::new(0);
    let times_out = |_: &AttemptId| asked.fetch_add(1, Ordering::SeqCst) == 0;
    assert_eq!(
        refusal(deliverer.deliver(&proposal, &docs(), &times_out).await),
        Refusal::NotLive
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "asked again before the push"
    );
    assert_eq!(f.github.push_count().unwrap(), 0);
    assert!(f.pulls().is_empty());
}

#[tokio::test]
async fn a_lost_create_response_is_adopted_not_duplicated() {
    let f = Fixture::start().await;
    let deliverer = f.deliverer("");
    let proposal = f.proposal(1, &add_file("docs/guide.md", "one"));
    // The pull request is created, but every answer to the creation (octocrab retries server
    // errors) is lost.
    for _ in 0..3 {
        f.github
            .lose_next_response("POST", "/pulls", RestFailure::new(502));
    }
    let first = deliverer.deliver(&proposal, &docs(), &live).await;
    assert!(
        matches!(&first, Err(DeliveryError::Forge(e)) if e.is_transient()),
        "{first:?}"
    );
    assert_eq!(f.pulls().len(), 1, "created despite the lost answer");
    let again = deliverer.deliver(&proposal, &docs(), &live).await.unwrap();
    let Delivered::Pushed { pr, .. } = &again else {
        panic!("{again:?}")
    };
    assert!(pr.reused, "adopted by head branch");
    assert_eq!(f.pulls().len(), 1, "no second pull request");
    assert_eq!(
        f.github.push_count().unwrap(),
        1,
        "the branch was adopted, not pushed again"
    );
}

#[tokio::test]
async fn a_forge_failure_between_push_and_pull_request_is_completed_on_retry() {
    let f = Fixture::start().await;
    let deliverer = f.deliverer("");
    let proposal = f.proposal(1, &add_file("docs/guide.md", "one"));
    // Every REST call fails (three for octocrab's retries of the lookup), after the push.
    f.github.fail_next_rest(3, RestFailure::new(503));
    let first = deliverer.deliver(&proposal, &docs(), &live).await;
    assert!(matches!(&first, Err(DeliveryError::Forge(_))), "{first:?}");
    assert_eq!(f.github.push_count().unwrap(), 1);
    assert!(f.pulls().is_empty());
    let again = deliverer.deliver(&proposal, &docs(), &live).await.unwrap();
    assert!(
        matches!(&again, Delivered::Pushed { pr, .. } if !pr.reused),
        "{again:?}"
    );
    assert_eq!(f.github.push_count().unwrap(), 1);
    assert_eq!(f.pulls().len(), 1);
}

#[tokio::test]
async fn the_base_is_published_as_a_bundle_a_worker_clones_without_any_credential() {
    use leviathan::{delivery::publish_base, worker::Git};
    use leviathan_core::{ArtifactStore, memory::MemoryArtifactStore};

    // A private repository: nothing can be fetched from it without the token.
    let github = FakeGitHub::builder()
        .clone_requires_token(true)
        .start()
        .await
        .unwrap();
    let url = github
        .create_repo_with_files(OWNER, REPO, "main", &[("docs/index.md", "index\n")])
        .await
        .unwrap();
    let target =
        parse_target_config("t.yaml", &format!("name: demo\nrepo_url: {url}\n"), None).unwrap();
    let identity = GitIdentity {
        name: "Leviathan".into(),
        email: "bot@leviathan.invalid".into(),
    };
    let store = MemoryArtifactStore::new();
    let token = Secret::new(github.token());
    let published = publish_base(&target, &token, &identity, &store)
        .await
        .unwrap();
    let tip = github.branch_sha(OWNER, REPO, "main").await.unwrap();
    assert_eq!(Some(&published.commit), tip.as_ref());

    // The worker's side: the bundle from the store, cloned with no token at all.
    let bytes = store.get(&published.bundle.sha256).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("base.bundle");
    std::fs::write(&bundle, &bytes).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let no_token = Secret::new(String::new());
    let git = Git::isolated(&home, &identity, &url, &no_token);
    let repo = dir.path().join("repo");
    git.clone_bundle(&bundle, "main", &repo, &url)
        .await
        .unwrap();
    let head = git
        .command(&repo, &["rev-parse", "HEAD"], false)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head).trim(), published.commit);
    assert_eq!(
        std::fs::read_to_string(repo.join("docs/index.md")).unwrap(),
        "index\n"
    );
    let config = std::fs::read_to_string(repo.join(".git/config")).unwrap();
    assert!(config.contains(&format!("url = {url}")), "{config}");
    assert!(!config.contains(github.token()), "{config}");
    assert!(
        !config.to_ascii_lowercase().contains("extraheader"),
        "{config}"
    );
    // And without the token the network would not have served it.
    let refused = Git::isolated(&home, &identity, &url, &no_token)
        .command(dir.path(), &["ls-remote", "--", &url], false)
        .await;
    assert!(refused.is_err(), "the repository is private");
}

#[tokio::test]
async fn a_patch_writing_through_a_symlink_of_the_base_is_refused() {
    // The base already holds `docs/link -> ../src`; a patch that writes `docs/link/evil.rs`
    // would land in `src/`, outside the task's scope, if the link were followed.
    let github = FakeGitHub::start().await.unwrap();
    let seed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(seed.path().join("docs")).unwrap();
    std::fs::create_dir_all(seed.path().join("src")).unwrap();
    std::fs::write(seed.path().join("src/lib.rs"), "// lib\n").unwrap();
    std::os::unix::fs::symlink("../src", seed.path().join("docs/link")).unwrap();
    github
        .create_repo(OWNER, REPO, "main", seed.path())
        .await
        .unwrap();
    let base = github
        .branch_sha(OWNER, REPO, "main")
        .await
        .unwrap()
        .unwrap();
    let f = Fixture { github, base };
    let deliverer = f.deliverer("");
    let got = refusal(
        deliverer
            .deliver(
                &f.proposal(1, &add_file("docs/link/evil.rs", "fn evil() {}")),
                &docs(),
                &live,
            )
            .await,
    );
    assert!(
        matches!(&got, Refusal::DoesNotApply(reason) if reason.contains("symbolic link")),
        "{got:?}"
    );
    assert_eq!(f.github.push_count().unwrap(), 0);
    assert!(f.pulls().is_empty());
}

#[tokio::test]
async fn a_declined_push_fails_without_opening_anything_or_showing_the_token() {
    let f = Fixture::start().await;
    let deliverer = f.deliverer("");
    f.github.reject_pushes(true);
    let result = deliverer
        .deliver(
            &f.proposal(1, &add_file("docs/guide.md", "one")),
            &docs(),
            &live,
        )
        .await;
    let Err(DeliveryError::Git(error)) = &result else {
        panic!("{result:?}")
    };
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("pre-receive hook declined"), "{shown}");
    assert!(!shown.contains(f.github.token()), "{shown}");
    assert!(f.pulls().is_empty());
    // Once the forge accepts pushes again, the same proposal is delivered.
    f.github.reject_pushes(false);
    let again = deliverer
        .deliver(
            &f.proposal(1, &add_file("docs/guide.md", "one")),
            &docs(),
            &live,
        )
        .await
        .unwrap();
    assert!(matches!(again, Delivered::Pushed { .. }), "{again:?}");
    assert_eq!(f.pulls().len(), 1);
}

/// `git diff --cached --binary` of a repository where `path` is added with `bytes` (a patch in
/// the form a worker proposes, binary or not).
fn added_by_git(path: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "--quiet"]);
    let file = dir.path().join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, bytes).unwrap();
    git(&["add", "--", path]);
    git(&["diff", "--cached", "--binary"])
}

#[tokio::test]
async fn size_line_and_binary_limits_are_measured_on_the_applied_patch() {
    let f = Fixture::start().await;
    let limits = "delivery: {max_file_bytes: 8, max_diff_lines: 2}";
    let binary = added_by_git("docs/logo.png", &[0x89, b'P', 0, 1, 2, 0xff]);
    for (delivery, patch, want) in [
        (
            limits,
            add_file("docs/big.md", "0123456789"),
            Violation::TooLarge {
                path: "docs/big.md".into(),
                bytes: 11,
                limit: 8,
            },
        ),
        (
            limits,
            added_by_git("docs/three.md", b"a\nb\nc\n"),
            Violation::TooManyLines { lines: 3, limit: 2 },
        ),
        (
            "delivery: {allow_binary: false}",
            binary.clone(),
            Violation::Binary("docs/logo.png".into()),
        ),
    ] {
        let got = refusal(
            f.deliverer(delivery)
                .deliver(&f.proposal(1, &patch), &docs(), &live)
                .await,
        );
        let Refusal::Policy(violations) = &got else {
            panic!("{got:?}")
        };
        assert_eq!(violations, &[want]);
    }
    assert_eq!(f.github.push_count().unwrap(), 0);
    // The same binary file is delivered byte for byte where the target allows binaries.
    let delivered = f
        .deliverer("delivery: {allow_binary: true}")
        .deliver(&f.proposal(1, &binary), &docs(), &live)
        .await
        .unwrap();
    let Delivered::Pushed { branch, .. } = &delivered else {
        panic!("{delivered:?}")
    };
    let file = f
        .github
        .read_file(OWNER, REPO, branch, "docs/logo.png")
        .await
        .unwrap();
    assert_eq!(file.as_deref(), Some(&[0x89, b'P', 0, 1, 2, 0xff][..]));
}
