//! The scheduler delivers the workers' proposals: a worker holding no forge token proposes a
//! patch (artifacts and `delivery.requested`), the scheduler checks it, pushes the task's one
//! branch and opens its one pull request, and records the commit, the pull request and the
//! attempt's success; proposals that break the scope or the policy, or come too late, are
//! refused with a reason; a delivery cut short is completed by the next scheduler.

mod support {
    pub(crate) mod scheduler;
}

use std::time::Duration;

use leviathan_core::{ArtifactStore, catalogue::EventBody, model::AttemptStatus};
use leviathan_testkit::github::RestFailure;
use support::scheduler::{OWNER, REPO, Step, World, freeze};

const ENABLED: &str = "autonomy: {enabled: true}";

/// A patch adding `path` with one line `text`.
fn add_file(path: &str, text: &str) -> String {
    format!(
        "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{text}\n"
    )
}

/// A backlog of ready tasks, each allowed to change `docs/`.
fn backlog(tasks: &[&str]) -> String {
    let mut out = String::from("tasks:\n");
    for task in tasks {
        out.push_str(&format!(
            "  - id: {task}\n    title: {task}\n    priority: high\n    ready: true\n    allowed_paths: [docs/]\n"
        ));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_proposal_is_delivered_as_the_tasks_one_pull_request_by_the_scheduler() {
    let _frozen = freeze();
    let world = World::start(&backlog(&["alpha"])).await;
    let config = world.target(ENABLED, "  max_open_prs: 2\n");
    world.executor.script(
        "alpha",
        &[Step::Propose(add_file("docs/alpha.md", "alpha"))],
    );
    let scheduler = world.builder(config, 1).build().unwrap();
    scheduler.run_until_idle().await.unwrap();

    // The attempt was dispatched at main's tip, published as a bundle a worker clones with no
    // forge credential.
    let main = world
        .github
        .branch_sha(OWNER, REPO, "main")
        .await
        .unwrap()
        .unwrap();
    let created = world.of_type("attempt.created").await;
    let [(_, EventBody::AttemptCreated(created))] = created.as_slice() else {
        panic!("one attempt.created: {created:?}")
    };
    let base = created.base.clone().expect("the base is recorded");
    assert_eq!(base.commit, main);
    let bundle = world.artifacts.get(&base.bundle_sha256).await.unwrap();
    assert!(bundle.starts_with(b"# v2 git bundle\n"), "a git bundle");

    let pulls = world.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].head, "agent/alpha");
    let file = world
        .github
        .read_file(OWNER, REPO, "agent/alpha", "docs/alpha.md")
        .await
        .unwrap();
    assert_eq!(file.as_deref(), Some(&b"alpha\n"[..]));
    assert_eq!(world.ledger.graph().await.live_attempts().count(), 0);
    let succeeded = world.of_type("attempt.succeeded").await;
    let [(_, EventBody::AttemptSucceeded(succeeded))] = succeeded.as_slice() else {
        panic!("one attempt.succeeded: {succeeded:?}")
    };
    assert_eq!(succeeded.branch, "agent/alpha");
    assert_eq!(u64::try_from(succeeded.pr_number).unwrap(), pulls[0].number);
    for (event_type, count) in [
        ("commit.created", 1),
        ("pr.created", 1),
        ("task.completed", 1),
        ("delivery.refused", 0),
    ] {
        assert_eq!(world.count(event_type).await, count, "{event_type}");
    }
}

#[tokio::test(start_paused = true)]
async fn proposals_breaking_scope_or_policy_are_refused_at_delivery_whatever_the_worker_checked() {
    let _frozen = freeze();
    let tasks = ["forbidden", "workflow", "many", "symlink"];
    let world = World::start(&backlog(&tasks)).await;
    let config = world.target(
        ENABLED,
        "  max_open_prs: 8\n  max_running_attempts: 8\ndelivery: {forbidden_paths: [docs/private/], max_files_changed: 2}\n",
    );
    let symlink = "diff --git a/docs/escape b/docs/escape\nnew file mode 120000\n--- /dev/null\n+++ b/docs/escape\n@@ -0,0 +1 @@\n+../../etc/passwd\n\\ No newline at end of file\n";
    let many = ["a", "b", "c"].map(|n| add_file(&format!("docs/{n}.md"), n));
    let cases = [
        (
            "forbidden",
            add_file("docs/private/key.md", "k"),
            "`docs/private/key.md` is in the target's forbidden_paths",
        ),
        (
            "workflow",
            add_file(".github/workflows/ci.yml", "on: push"),
            "`.github/workflows/ci.yml` (added) is outside the task's allowed_paths",
        ),
        (
            "many",
            many.concat(),
            "3 files changed, over max_files_changed 2",
        ),
        (
            "symlink",
            symlink.to_owned(),
            "`docs/escape` is a symbolic link",
        ),
    ];
    for (task, patch, _) in &cases {
        world.executor.script(task, &[Step::Propose(patch.clone())]);
    }
    world
        .builder(config, 1)
        .build()
        .unwrap()
        .run_until_idle()
        .await
        .unwrap();
    let refused = world.of_type("delivery.refused").await;
    let graph = world.ledger.graph().await;
    for (task, _, reason) in cases {
        let refusal = refused.iter().find_map(|(_, body)| match body {
            EventBody::DeliveryRefused(r)
                if graph.attempt(&r.attempt_id).unwrap().task_id == task =>
            {
                Some(r)
            }
            _ => None,
        });
        let Some(refusal) = refusal else {
            panic!("{task}: no delivery.refused in {refused:?}")
        };
        assert!(
            refusal.reason.contains(reason),
            "{task}: {} lacks {reason}",
            refusal.reason
        );
        let attempt = graph.attempt(&refusal.attempt_id).unwrap();
        assert_eq!(attempt.status, AttemptStatus::Failed, "{task}");
    }
    drop(graph);
    assert_eq!(world.count("delivery.refused").await, tasks.len());
    assert_eq!(world.github.push_count().unwrap(), 0);
    assert!(world.pulls().is_empty());
    assert_eq!(world.count("attempt.succeeded").await, 0);
}

// On the real clock: the forge client's retries sleep.
#[tokio::test]
async fn a_delivery_cut_short_before_its_pull_request_is_completed_by_a_fresh_scheduler() {
    let world = World::start(&backlog(&["alpha"])).await;
    let config = world.target(ENABLED, "  max_open_prs: 2\n");
    world.executor.script(
        "alpha",
        &[Step::Propose(add_file("docs/alpha.md", "alpha"))],
    );
    // The push lands; every REST call of the pull request's step fails (octocrab retries).
    let first = world.builder(config.clone(), 1).build().unwrap();
    first.run_once().await.unwrap();
    world.github.fail_next_rest(3, RestFailure::new(503));
    first.wait_idle().await;
    assert_eq!(world.github.push_count().unwrap(), 1);
    assert!(world.pulls().is_empty());
    assert_eq!(world.count("attempt.succeeded").await, 0);
    drop(first);

    // A fresh scheduler (a restart) delivers the owed proposal: the branch is adopted, one PR.
    let second = world.builder(config, 2).build().unwrap();
    second.run_once().await.unwrap();
    second.wait_idle().await;
    assert_eq!(world.pulls().len(), 1);
    assert_eq!(
        world.github.push_count().unwrap(),
        1,
        "adopted, not pushed again"
    );
    assert_eq!(world.count("attempt.succeeded").await, 1);
    assert_eq!(world.count("task.completed").await, 1);
    // Nothing is owed any more: another cycle delivers nothing again.
    second.run_once().await.unwrap();
    assert_eq!(world.count("pr.created").await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempts_late_proposal_is_refused_and_opens_nothing() {
    let _frozen = freeze();
    let world = World::start(&backlog(&["alpha"])).await;
    let config = world.target(
        ENABLED,
        "  max_open_prs: 2\n  timeout: {attempt_timeout_minutes: 1}\n",
    );
    world.executor.script(
        "alpha",
        &[Step::LateProposal(add_file("docs/alpha.md", "late"))],
    );
    let scheduler = world.builder(config, 1).build().unwrap();
    assert_eq!(scheduler.run_once().await.unwrap().dispatched.len(), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    // The timeout is recorded and the run cancelled; the worker proposes all the same.
    scheduler.settle().await.unwrap();
    scheduler.wait_idle().await;
    assert_eq!(world.count("attempt.timed_out").await, 1);
    let refused = world.of_type("delivery.refused").await;
    let [(_, EventBody::DeliveryRefused(refused))] = refused.as_slice() else {
        panic!("one delivery.refused: {refused:?}")
    };
    assert_eq!(refused.reason, "attempt no longer live");
    assert_eq!(world.github.push_count().unwrap(), 0);
    assert!(world.pulls().is_empty());
    assert_eq!(world.count("attempt.succeeded").await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_proposal_against_another_base_than_the_dispatched_one_is_refused() {
    let _frozen = freeze();
    let world = World::start(&backlog(&["alpha"])).await;
    let old = world
        .github
        .branch_sha(OWNER, REPO, "main")
        .await
        .unwrap()
        .unwrap();
    world.commit_to_main(&[("docs/new.md", "new\n")]).await;
    let config = world.target(ENABLED, "  max_open_prs: 2\n");
    world.executor.script(
        "alpha",
        &[Step::ProposeAt {
            base: old.clone(),
            patch: add_file("docs/alpha.md", "alpha"),
        }],
    );
    world
        .builder(config, 1)
        .build()
        .unwrap()
        .run_until_idle()
        .await
        .unwrap();
    let refused = world.of_type("delivery.refused").await;
    let [(_, EventBody::DeliveryRefused(refused))] = refused.as_slice() else {
        panic!("one delivery.refused: {refused:?}")
    };
    assert!(
        refused.reason.starts_with(&format!(
            "the proposal's base {old} is not the attempt's base"
        )),
        "{}",
        refused.reason
    );
    assert_eq!(
        world.github.push_count().unwrap(),
        1,
        "only the test's own commit to main"
    );
    assert!(world.pulls().is_empty());
}
