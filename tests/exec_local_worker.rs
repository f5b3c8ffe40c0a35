//! The local executor running the real `leviathan worker` binary against `FakeGitHub`,
//! `ScriptedLlm` and the control plane on memory stores.

mod support {
    pub(crate) mod worker;
}

use std::sync::Arc;

use leviathan_core::{
    AttemptResult, Executor,
    model::{AttemptStatus, FailureKind},
    store::ArtifactStore,
};
use leviathan_exec_local::{LocalConfig, LocalExecutor, Secret};
use leviathan_testkit::llm::files_envelope;
use support::worker::{BAD_GUIDE, GOOD_GUIDE, World};

fn executor(world: &World, root: &std::path::Path) -> LocalExecutor {
    let mut config = LocalConfig::default()
        .worker(env!("CARGO_BIN_EXE_leviathan"), &["worker"])
        .workspace_root(root)
        .control_plane_url(world.api_url.clone())
        .artifacts(Arc::clone(&world.artifacts) as Arc<dyn ArtifactStore>);
    for (name, value) in world.secrets() {
        config = config.secret(name, Secret::new(value));
    }
    LocalExecutor::new(config)
}

#[tokio::test]
async fn the_worker_delivers_a_pull_request() {
    let world = World::start().await;
    world
        .llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let root = tempfile::tempdir().unwrap();
    let spec = world.create_attempt("attempt-local-ok", 1, "local").await;
    let outcome = executor(&world, root.path()).run(&spec).await.expect("run");

    let AttemptResult::Succeeded {
        branch, pr_number, ..
    } = &outcome.result
    else {
        panic!("expected success, got {:?}", outcome.result);
    };
    assert_eq!(branch, "agent/docs-guide-attempt-local-ok");
    let pulls = world.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].number, *pr_number);
    let attempt = world.attempt("attempt-local-ok").await;
    assert_eq!(attempt.status, AttemptStatus::Succeeded);
    assert_eq!(attempt.pr_number, Some(*pr_number));

    // The worker's log was stored, without any credential.
    let log = world
        .artifacts
        .get(&outcome.artifacts[0].sha256)
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(!log.is_empty());
    for (_, secret) in world.secrets() {
        assert!(!log.contains(&secret), "a credential leaked into the log");
    }
    assert!(
        std::fs::read_dir(root.path()).unwrap().next().is_none(),
        "the attempt directory is removed"
    );
}

#[tokio::test]
async fn a_failed_attempt_is_reported_and_recorded() {
    let world = World::start().await;
    world
        .llm
        .push_text(files_envelope(&[("docs/GUIDE.md", BAD_GUIDE)]));
    let root = tempfile::tempdir().unwrap();
    let spec = world
        .create_attempt("attempt-local-fails", 1, "local")
        .await;
    let outcome = executor(&world, root.path()).run(&spec).await.expect("run");
    let AttemptResult::Failed(failure) = &outcome.result else {
        panic!("expected a failure, got {:?}", outcome.result);
    };
    assert_eq!(
        failure.kind,
        FailureKind::TestsFailed,
        "{}",
        failure.summary
    );
    assert!(world.pulls().is_empty());
    assert_eq!(
        world.attempt("attempt-local-fails").await.status,
        AttemptStatus::Failed
    );
}
