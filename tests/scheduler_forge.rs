//! The forge and the backlog as the scheduler reads them: `GitHubForge::list_open` over every
//! page and `state`, the open-PR latch reconciled with the forge (merged and closed PRs become
//! events and release it), and failing closed when the forge or the backlog cannot be read.

mod support {
    pub(crate) mod scheduler;
}

use std::time::Duration;

use leviathan_core::{Forge, catalogue::EventBody, model::PrState, plan::SkipReason};
use leviathan_testkit::github::RestFailure;
use support::scheduler::{OWNER, REPO, Step, World, freeze, skip_of};

const TWO_TASKS: &str = "tasks:\n  - id: alpha\n    title: Alpha\n    priority: high\n    ready: true\n    allowed_paths: [docs/alpha.md]\n  - id: beta\n    title: Beta\n    priority: medium\n    ready: true\n    allowed_paths: [docs/beta.md]\n";

const ENABLED: &str = "autonomy: {enabled: true}";

#[tokio::test]
async fn list_open_reads_every_page_and_state_tells_merged_from_closed() {
    let world = World::start(TWO_TASKS).await;
    let mut heads: Vec<String> = (0..130).map(|i| format!("agent/task-{i:03}")).collect();
    heads.push("feature/by-a-human".to_owned());
    let numbers = world.open_pulls(&heads).await;
    assert_eq!(numbers.len(), 131);

    let listed = world.forge.list_open("agent/").await.expect("list");
    assert_eq!(listed.len(), 130, "every page, agent branches only");
    assert!(listed.iter().all(|pr| pr.head.starts_with("agent/")));
    assert!(
        listed
            .iter()
            .all(|pr| pr.url.ends_with(&format!("/pull/{}", pr.number)))
    );
    let pages = world
        .github
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/pulls?") && r.path.contains("page=2"))
        .count();
    assert!(pages >= 1, "a second page was fetched");

    world
        .github
        .merge_pr(OWNER, REPO, numbers[0])
        .await
        .unwrap();
    world
        .github
        .close_pr(OWNER, REPO, numbers[1])
        .await
        .unwrap();
    assert_eq!(world.forge.list_open("agent/").await.unwrap().len(), 128);
    assert_eq!(
        world.forge.state(numbers[0]).await.unwrap(),
        PrState::Merged
    );
    assert_eq!(
        world.forge.state(numbers[1]).await.unwrap(),
        PrState::Closed
    );
    assert_eq!(world.forge.state(numbers[2]).await.unwrap(), PrState::Open);
    assert!(world.forge.state(9999).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn merged_and_closed_pull_requests_release_the_open_pr_latch() {
    let _frozen = freeze();
    let world = World::start(TWO_TASKS).await;
    let config = world.target(ENABLED, "  max_open_prs: 1\n  max_running_attempts: 2\n");
    world.executor.script("alpha", &[Step::Succeed]);
    world.executor.script("beta", &[Step::Succeed]);
    let scheduler = world.builder(config, 1).build().unwrap();

    // The running attempt counts toward the latch: one at a time.
    let report = scheduler.run_once().await.unwrap();
    assert_eq!(report.dispatched.len(), 1);
    assert_eq!(
        skip_of(&report, "beta"),
        &SkipReason::OpenPrLatch { open: 1, max: 1 }
    );
    scheduler.wait_idle().await;
    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    assert_eq!(
        skip_of(&report, "beta"),
        &SkipReason::OpenPrLatch { open: 1, max: 1 }
    );

    // Merged upstream: recorded, and the latch opens in the same cycle.
    let alpha_pr = world.pulls()[0].number;
    world.github.merge_pr(OWNER, REPO, alpha_pr).await.unwrap();
    let report = scheduler.run_once().await.unwrap();
    let merged = world.of_type("pr.merged").await;
    let [(_, EventBody::PrMerged(merged))] = merged.as_slice() else {
        panic!("one pr.merged: {merged:#?}");
    };
    assert_eq!(merged.0.pr_number, i64::try_from(alpha_pr).unwrap());
    assert_eq!(report.dispatched.len(), 1, "{report:#?}");
    assert_eq!(report.dispatched[0].task_id, "beta");
    scheduler.wait_idle().await;

    // Closed without merging: recorded as such.
    let beta_pr = world.pulls()[1].number;
    world.github.close_pr(OWNER, REPO, beta_pr).await.unwrap();
    scheduler.run_once().await.unwrap();
    let closed = world.of_type("pr.closed").await;
    let [(_, EventBody::PrClosed(closed))] = closed.as_slice() else {
        panic!("one pr.closed: {closed:#?}");
    };
    assert_eq!(closed.0.pr_number, i64::try_from(beta_pr).unwrap());
    scheduler.run_once().await.unwrap();
    assert_eq!(
        world.count("pr.merged").await + world.count("pr.closed").await,
        2
    );
    let summary = world.ledger.graph().await.summary();
    assert_eq!(summary.open_prs, 0);
}

#[tokio::test(start_paused = true)]
async fn agent_pull_requests_the_log_does_not_know_hold_the_latch() {
    let _frozen = freeze();
    let world = World::start(TWO_TASKS).await;
    let config = world.target(ENABLED, "  max_open_prs: 1\n");
    world.executor.script("alpha", &[Step::Succeed]);
    let stray = world.open_pulls(&["agent/left-over-1".to_owned()]).await;
    let scheduler = world.builder(config, 1).build().unwrap();

    let report = scheduler.run_once().await.unwrap();
    assert!(report.dispatched.is_empty());
    assert_eq!(
        skip_of(&report, "alpha"),
        &SkipReason::OpenPrLatch { open: 1, max: 1 }
    );
    world.github.close_pr(OWNER, REPO, stray[0]).await.unwrap();
    assert_eq!(scheduler.run_once().await.unwrap().dispatched.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_forge_dispatches_nothing_but_keeps_recording_decisions() {
    let _frozen = freeze();
    let world = World::start(TWO_TASKS).await;
    let config = world.target(
        ENABLED,
        "  max_open_prs: 5\n  circuit_breaker: {enabled: false}\n  retry: {initial_backoff_seconds: 10, jitter: false}\n",
    );
    world.executor.script(
        "alpha",
        &[Step::Fail(
            leviathan_core::model::FailureKind::TestsFailed,
            leviathan_core::model::FailureClass::Transient,
        )],
    );
    let scheduler = world.builder(config, 1).build().unwrap();
    assert_eq!(scheduler.run_once().await.unwrap().dispatched.len(), 1);
    scheduler.wait_idle().await;

    for failure in [RestFailure::new(502), RestFailure::rate_limited()] {
        world.github.fail_pull_listing(Some(failure));
        let report = scheduler.run_once().await.unwrap();
        assert!(report.dispatched.is_empty(), "{report:#?}");
        let [closed] = report.closed.as_slice() else {
            panic!("the target fails closed: {report:#?}");
        };
        assert_eq!(closed.target_id, "demo");
        assert!(closed.reason.contains("forge"), "{}", closed.reason);
    }
    // The retry was still recorded while the forge was unreadable.
    assert_eq!(world.count("retry.scheduled").await, 1);

    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(scheduler.run_once().await.unwrap().dispatched.is_empty());
    assert_eq!(world.count("attempt.created").await, 1);

    world.github.fail_pull_listing(None);
    world.executor.script("alpha", &[Step::Succeed]);
    let report = scheduler.run_once().await.unwrap();
    assert!(report.closed.is_empty());
    assert_eq!(report.dispatched.len(), 1, "{report:#?}");
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_backlog_dispatches_nothing_for_the_target() {
    let _frozen = freeze();
    let world = World::start(TWO_TASKS).await;
    let config = world.target(ENABLED, "  max_open_prs: 5\n");
    world.executor.script("alpha", &[Step::Succeed]);
    world.executor.script("gamma", &[Step::Succeed]);
    let scheduler = world.builder(config, 1).build().unwrap();
    scheduler.run_once().await.unwrap();
    scheduler.wait_idle().await;

    for (content, expected) in [
        ("tasks: [\n", "invalid YAML"),
        (
            "tasks:\n  - {id: ../x, title: X}\n",
            ".leviathan/backlog.yaml",
        ),
    ] {
        world
            .commit_to_main(&[(".leviathan/backlog.yaml", content)])
            .await;
        let report = scheduler.run_once().await.unwrap();
        assert!(report.dispatched.is_empty(), "{report:#?}");
        let [closed] = report.closed.as_slice() else {
            panic!("the target fails closed: {report:#?}");
        };
        assert!(
            closed.reason.contains("backlog") && closed.reason.contains(expected),
            "{}",
            closed.reason
        );
    }

    // A backlog without beta (it is pending) and with a new task: beta is blocked, gamma runs.
    world
        .commit_to_main(&[(
            ".leviathan/backlog.yaml",
            "tasks:\n  - {id: alpha, title: Alpha, priority: high, ready: true, allowed_paths: [docs/alpha.md]}\n  - {id: gamma, title: Gamma, ready: true, allowed_paths: [docs/gamma.md]}\n",
        )])
        .await;
    let report = scheduler.run_once().await.unwrap();
    assert!(report.closed.is_empty(), "{report:#?}");
    assert_eq!(report.dispatched.len(), 1);
    assert_eq!(report.dispatched[0].task_id, "gamma");
    let blocked = world.of_type("task.blocked").await;
    let [(_, EventBody::TaskBlocked(blocked))] = blocked.as_slice() else {
        panic!("beta blocked: {blocked:#?}");
    };
    assert_eq!(blocked.0.task_id, "beta");
}
