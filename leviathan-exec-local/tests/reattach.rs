//! A restarted executor follows the workers of an earlier one (`Executor::reattach`).
//!
//! The earlier executor's memory is made to vanish the way a killed scheduler's does: its `run`
//! future is leaked with `mem::forget` once the worker runs, so nothing stops the worker, nobody
//! reads its result and nobody reaps it (it stays a zombie after it exits, as under an init that
//! does not reap).

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    time::Duration,
};

use leviathan_core::{
    AttemptOutcome, AttemptResult, AttemptSpec, Executor, ExecutorError,
    model::{FailureClass, FailureKind},
};
use leviathan_exec_local::{LocalConfig, LocalExecutor, Secret};

/// Upper bound for anything a test waits for; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

const SUCCEEDED: &str = r#"{"result":"succeeded","branch":"agent/docs-guide-attempt-x","commit_sha":"0123abcd","pr_number":7,"pr_url":"https://example.com/pr/7"}"#;

/// A stand-in worker: waits for `$GO`, then reports success (termination file and stdout).
fn waiting_worker() -> String {
    format!(
        r#"while [ ! -f "$GO" ]; do sleep 0.05; done
printf '%s\n' '{SUCCEEDED}' > "$LEVIATHAN_TERMINATION_MESSAGE_PATH"
echo '{SUCCEEDED}'"#
    )
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("attempts")
    }

    fn go(&self) -> PathBuf {
        self.dir.path().join("go")
    }

    fn executor(&self, script: &str) -> LocalExecutor {
        LocalExecutor::new(
            LocalConfig::default()
                .worker("/bin/sh", &["-c", script])
                .workspace_root(self.root())
                .secret("GITHUB_TOKEN", Secret::new("ghp_reattach_test"))
                .stop_grace(Duration::from_millis(300)),
        )
    }

    fn spec(&self, attempt: &str, deadline: Duration) -> AttemptSpec {
        AttemptSpec {
            attempt_id: attempt.parse().unwrap(),
            attempt_number: 1,
            task_id: "docs-guide".parse().unwrap(),
            target_id: "demo".parse().unwrap(),
            repo_url: "https://example.com/demo.git".to_owned(),
            base_branch: "main".to_owned(),
            deadline,
            env: BTreeMap::from([("GO".to_owned(), self.go().display().to_string())]),
            worker_token: None,
        }
    }

    fn record(&self, attempt: &str) -> PathBuf {
        self.root().join(attempt).join("worker.pid")
    }

    /// Starts `spec` on an executor that then vanishes, leaving the worker running; returns
    /// the worker's pid.
    async fn orphan(&self, script: &str, spec: &AttemptSpec) -> u32 {
        let earlier = Box::new(self.executor(script));
        let mut run: Pin<Box<dyn Future<Output = _> + '_>> = Box::pin(earlier.run(spec));
        let record = self.record(spec.attempt_id.as_str());
        let started = std::time::Instant::now();
        while !record.exists() {
            assert!(started.elapsed() < PATIENCE, "the worker never started");
            tokio::select! {
                outcome = &mut run => panic!("the worker ended early: {outcome:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        std::mem::forget(run);
        std::mem::forget(earlier);
        pid_in(&record)
    }
}

fn pid_in(record: &Path) -> u32 {
    let text = std::fs::read_to_string(record).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("pid="))
        .expect("a pid line")
        .parse()
        .unwrap()
}

/// True while `pid` is a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn failure(outcome: &AttemptOutcome) -> (FailureKind, FailureClass) {
    match &outcome.result {
        AttemptResult::Failed(f) => (f.kind, f.class),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_restarted_executor_follows_a_live_worker_to_its_result() {
    let setup = Setup::new();
    let spec = setup.spec("attempt-follow", Duration::from_secs(60));
    let pid = setup.orphan(&waiting_worker(), &spec).await;
    assert!(alive(pid));

    let later = std::sync::Arc::new(setup.executor(&waiting_worker()));
    let mut follow = tokio::spawn({
        let later = later.clone();
        let spec = spec.clone();
        async move { later.reattach(&spec).await }
    });
    // The worker waits for GO, so following it cannot end yet (an answer now would mean the
    // live worker was not recognised).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut follow)
            .await
            .is_err(),
        "reattach answered while the worker still runs"
    );
    assert!(alive(pid));

    std::fs::write(setup.go(), b"").unwrap();
    let outcome = tokio::time::timeout(PATIENCE, follow)
        .await
        .expect("reattach ends when the worker does")
        .unwrap()
        .expect("reattach")
        .expect("an outcome");
    assert!(
        matches!(
            &outcome.result,
            AttemptResult::Succeeded { pr_number: 7, .. }
        ),
        "{outcome:?}"
    );
    assert!(
        outcome.artifacts.is_empty(),
        "the log went to the earlier process"
    );
    assert!(
        !setup.root().join("attempt-follow").exists(),
        "the attempt directory is removed"
    );
}

#[tokio::test]
async fn a_worker_that_already_exited_gives_the_result_it_left() {
    let setup = Setup::new();
    let spec = setup.spec("attempt-exited", Duration::from_secs(60));
    let pid = setup.orphan(&waiting_worker(), &spec).await;
    std::fs::write(setup.go(), b"").unwrap();
    eventually("the worker to exit", || !alive(pid)).await;

    let outcome = setup
        .executor(&waiting_worker())
        .reattach(&spec)
        .await
        .expect("reattach")
        .expect("the result in the termination file");
    assert!(
        matches!(
            &outcome.result,
            AttemptResult::Succeeded { pr_number: 7, .. }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_worker_that_died_without_a_result_is_lost() {
    let setup = Setup::new();
    let spec = setup.spec("attempt-died", Duration::from_secs(60));
    let pid = setup.orphan(&waiting_worker(), &spec).await;
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    eventually("the worker to die", || !alive(pid)).await;

    let executor = setup.executor(&waiting_worker());
    assert_eq!(executor.reattach(&spec).await.expect("reattach"), None);
    assert!(
        !setup.root().join("attempt-died").exists(),
        "the lost attempt's directory is removed"
    );
    let unknown = setup.spec("attempt-never-ran", Duration::from_secs(60));
    assert_eq!(executor.reattach(&unknown).await.expect("reattach"), None);
}

#[tokio::test]
async fn cancel_stops_a_followed_worker() {
    let setup = Setup::new();
    let spec = setup.spec("attempt-cancel-followed", Duration::from_secs(60));
    let pid = setup.orphan(&waiting_worker(), &spec).await;

    let later = std::sync::Arc::new(setup.executor(&waiting_worker()));
    let follow = tokio::spawn({
        let later = later.clone();
        let spec = spec.clone();
        async move { later.reattach(&spec).await }
    });
    // `cancel` knows the attempt as soon as it is followed.
    let started = std::time::Instant::now();
    loop {
        match later.cancel(&spec.attempt_id).await {
            Ok(()) => break,
            Err(ExecutorError::NotFound(_)) => {
                assert!(
                    started.elapsed() < PATIENCE,
                    "the attempt was never followed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    let outcome = tokio::time::timeout(PATIENCE, follow)
        .await
        .expect("reattach ends after cancel")
        .unwrap()
        .expect("reattach")
        .expect("an outcome");
    assert_eq!(
        failure(&outcome),
        (FailureKind::Cancelled, FailureClass::Permanent)
    );
    eventually("the worker's group to be stopped", || !alive(pid)).await;
}

#[tokio::test]
async fn the_deadline_still_holds_for_a_followed_worker() {
    let setup = Setup::new();
    let spec = setup.spec("attempt-late", Duration::from_secs(1));
    let pid = setup.orphan(&waiting_worker(), &spec).await;
    let outcome = tokio::time::timeout(PATIENCE, setup.executor(&waiting_worker()).reattach(&spec))
        .await
        .expect("reattach ends at the deadline")
        .expect("reattach")
        .expect("an outcome");
    assert_eq!(
        failure(&outcome),
        (FailureKind::Timeout, FailureClass::Transient)
    );
    eventually("the worker's group to be stopped", || !alive(pid)).await;
}
