//! The git backlog source against the testkit's smart-HTTP git server with the real git CLI: one
//! cached bare repository per target, brought up to date by a shallow fetch, never cloned again.

mod support {
    pub(crate) mod scheduler;
}

use leviathan::git::GitBacklog;
use leviathan_core::{
    BacklogFetchError, BacklogSource, secret::Secret, target::parse_target_config,
};
use leviathan_testkit::github::FakeGitHub;
use support::scheduler::push_commit;

const ONE_TASK: &str = "tasks:\n  - id: docs-guide\n    title: Write the guide\n";
const TWO_TASKS: &str = "tasks:\n  - id: docs-guide\n    title: Write the guide\n  - id: docs-faq\n    title: Write the FAQ\n";

fn target(repo_url: &str, backlog_path: Option<&str>) -> leviathan_core::target::TargetConfig {
    let path = backlog_path.map_or(String::new(), |p| format!("backlog_path: {p}\n"));
    let text = format!("name: demo\nrepo_url: {repo_url}\ndefault_branch: main\n{path}");
    parse_target_config("demo.yaml", &text, None).expect("target config")
}

fn task_ids(backlog: &leviathan_core::backlog::Backlog) -> Vec<String> {
    backlog.tasks.iter().map(|t| t.id.to_string()).collect()
}

/// The first fetch makes the target's cached repository; the next one reuses it (a file left in
/// it survives) and sees a backlog committed in between; the repository holds no checkout.
#[tokio::test]
async fn the_second_sync_fetches_into_the_cached_repository() {
    let github = FakeGitHub::start().await.unwrap();
    let url = github
        .create_target_repo("acme", "widgets", ONE_TASK)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let source = GitBacklog::cached_in(Some(Secret::new(github.token())), cache.path());
    let config = target(&url, None);

    let first = source.fetch(&config, "main").await.unwrap();
    assert_eq!(task_ids(&first), ["docs-guide"]);
    let repos: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path().join("repo.git"))
        .collect();
    assert_eq!(repos.len(), 1, "one cached repository per target");
    let repo = &repos[0];
    assert!(repo.join("HEAD").is_file(), "a bare repository");
    assert!(!repo.join(".leviathan").exists(), "no checkout");
    let marker = repo.join("leviathan-test-marker");
    std::fs::write(&marker, "kept").unwrap();

    let (token, push_url) = (github.token().to_owned(), url.clone());
    tokio::task::spawn_blocking(move || {
        push_commit(
            &push_url,
            "main",
            &["main"],
            &token,
            &[(".leviathan/backlog.yaml", TWO_TASKS)],
        )
    })
    .await
    .unwrap()
    .unwrap();
    let second = source.fetch(&config, "main").await.unwrap();
    assert_eq!(task_ids(&second), ["docs-guide", "docs-faq"]);
    assert!(
        marker.is_file(),
        "the cached repository was fetched into, not cloned again"
    );
    let again = GitBacklog::cached_in(Some(Secret::new(github.token())), cache.path());
    assert_eq!(
        task_ids(&again.fetch(&config, "main").await.unwrap()).len(),
        2
    );
    assert!(marker.is_file(), "the cache outlives its source");
}

/// Only a regular file of the fetched tree is a backlog: a symbolic link, a directory or a
/// missing file is refused with the path, as is a path leaving the repository.
#[tokio::test]
async fn only_a_regular_file_inside_the_repository_is_a_backlog() {
    let github = FakeGitHub::start().await.unwrap();
    let seed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(seed.path().join(".leviathan")).unwrap();
    std::fs::write(seed.path().join(".leviathan/backlog.yaml"), ONE_TASK).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", seed.path().join("linked.yaml")).unwrap();
    let url = github
        .create_repo("acme", "widgets", "main", seed.path())
        .await
        .unwrap();
    let source = GitBacklog::new(Some(Secret::new(github.token())));
    for (path, reason) in [
        ("linked.yaml", "not a regular file"),
        (".leviathan", "not a regular file"),
        ("missing.yaml", "no such file"),
        ("../outside.yaml", "without `..`"),
    ] {
        let err = source
            .fetch(&target(&url, Some(path)), "main")
            .await
            .unwrap_err();
        match &err {
            BacklogFetchError::Read {
                path: p, reason: r, ..
            } => assert!(p == path && r.contains(reason), "{path}: {err}"),
            other => panic!("{path}: {other}"),
        }
        assert!(!err.to_string().contains(github.token()));
    }
    let fine = source
        .fetch(&target(&url, Some("./.leviathan/backlog.yaml")), "main")
        .await
        .unwrap();
    assert_eq!(task_ids(&fine), ["docs-guide"]);
}
