//! The local executor running stand-in workers (`sh -c` scripts speaking the worker's result
//! protocol); the real `leviathan worker` runs in the root package's `tests/exec_local_worker.rs`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use leviathan_core::{
    ArtifactStore, AttemptResult, AttemptSpec, Executor, ExecutorError,
    memory::MemoryArtifactStore,
    model::{FailureClass, FailureKind},
};
use leviathan_exec_local::{LocalConfig, LocalExecutor, Secret};

const GITHUB_TOKEN: &str = "ghp_local_executor_test_token";
/// Upper bound for anything a test waits for; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

struct Setup {
    root: tempfile::TempDir,
    artifacts: Arc<MemoryArtifactStore>,
}

impl Setup {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            artifacts: Arc::new(MemoryArtifactStore::new()),
        }
    }

    fn workspace_root(&self) -> PathBuf {
        self.root.path().join("attempts")
    }

    /// A file outside the attempts' directories (they are removed afterwards).
    fn file(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn executor(&self, script: &str) -> LocalExecutor {
        LocalExecutor::new(self.config(script))
    }

    fn config(&self, script: &str) -> LocalConfig {
        LocalConfig::default()
            .worker("/bin/sh", &["-c", script])
            .workspace_root(self.workspace_root())
            .control_plane_url("http://127.0.0.1:9")
            .claude_model("claude-test")
            .secret("GITHUB_TOKEN", Secret::new(GITHUB_TOKEN))
            .secret("CONTROL_PLANE_TOKEN", Secret::new("cp-token-for-tests"))
            .stop_grace(Duration::from_millis(300))
            .artifacts(self.artifacts.clone())
    }
}

fn spec(attempt: &str) -> AttemptSpec {
    AttemptSpec {
        attempt_id: attempt.parse().unwrap(),
        attempt_number: 3,
        task_id: "docs-guide".parse().unwrap(),
        target_id: "demo".parse().unwrap(),
        repo_url: "https://example.com/demo.git".to_owned(),
        base_branch: "main".to_owned(),
        deadline: Duration::from_secs(60),
        env: BTreeMap::from([("LEVIATHAN_MODEL_PROVIDER".to_owned(), "command".to_owned())]),
        worker_token: None,
    }
}

fn with_env(mut spec: AttemptSpec, name: &str, value: &Path) -> AttemptSpec {
    spec.env
        .insert(name.to_owned(), value.display().to_string());
    spec
}

const SUCCEEDED: &str = r#"{"result":"succeeded","branch":"agent/docs-guide-'"$ATTEMPT_ID"'","commit_sha":"0123abcd","pr_number":12,"pr_url":"https://example.com/pr/12"}"#;

fn succeeded(attempt: &str) -> AttemptResult {
    AttemptResult::Succeeded {
        branch: format!("agent/docs-guide-{attempt}"),
        commit_sha: "0123abcd".to_owned(),
        pr_number: 12,
        pr_url: "https://example.com/pr/12".to_owned(),
    }
}

fn failure(result: &AttemptResult) -> (FailureKind, FailureClass, &str) {
    match result {
        AttemptResult::Failed(f) => (f.kind, f.class, f.summary.as_str()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// True while `pid` is a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `condition` (an external process's doing) until it holds or [`PATIENCE`] runs out.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn success_reports_the_workers_result_and_keeps_its_log() {
    let setup = Setup::new();
    // Every check prints a complaint that ends up in the summary (the last line) on failure.
    let script = format!(
        r#"
        set -u
        fail() {{ echo "env check failed: $1"; exit 3; }}
        [ "$TARGET_NAME" = demo ] || fail TARGET_NAME
        [ "$TARGET_REPO_URL" = https://example.com/demo.git ] || fail TARGET_REPO_URL
        [ "$TARGET_BRANCH" = main ] || fail TARGET_BRANCH
        [ "$TASK_ID" = docs-guide ] || fail TASK_ID
        [ "$ATTEMPT_ID" = attempt-ok ] || fail ATTEMPT_ID
        [ "$LEVIATHAN_ATTEMPT_NUMBER" = 3 ] || fail LEVIATHAN_ATTEMPT_NUMBER
        [ "$CONTROL_PLANE_URL" = http://127.0.0.1:9 ] || fail CONTROL_PLANE_URL
        [ "$CONTROL_PLANE_TOKEN" = cp-token-for-tests ] || fail CONTROL_PLANE_TOKEN
        [ "$LEVIATHAN_CLAUDE_MODEL" = claude-test ] || fail LEVIATHAN_CLAUDE_MODEL
        [ "$LEVIATHAN_MODEL_PROVIDER" = command ] || fail LEVIATHAN_MODEL_PROVIDER
        [ "$PWD" = "$LEVIATHAN_WORKSPACE_DIR" ] || fail cwd
        [ -d "$HOME" ] && [ "$HOME" != "$LEVIATHAN_WORKSPACE_DIR" ] || fail HOME
        [ -d "$TMPDIR" ] || fail TMPDIR
        [ -z "${{CARGO_MANIFEST_DIR:-}}" ] || fail "the scheduler's environment leaked"
        [ -f "$LEVIATHAN_TERMINATION_MESSAGE_PATH" ] || fail termination-file
        echo "cloning with $GITHUB_TOKEN"
        echo progress >&2
        echo "basic $(printf 'x-access-token:%s' "$GITHUB_TOKEN" | base64 -w0)"
        printf '%s\n' '{SUCCEEDED}' > "$LEVIATHAN_TERMINATION_MESSAGE_PATH"
        printf '%s\n' '{SUCCEEDED}'
        "#
    );
    let executor = setup.executor(&script);
    let outcome = executor.run(&spec("attempt-ok")).await.expect("run");
    assert_eq!(outcome.attempt_id, "attempt-ok");
    assert_eq!(outcome.result, succeeded("attempt-ok"));

    assert_eq!(outcome.artifacts.len(), 1);
    let log_ref = &outcome.artifacts[0];
    assert_eq!(log_ref.kind, "log");
    let log = setup
        .artifacts
        .get(&log_ref.sha256)
        .await
        .expect("log stored");
    assert_eq!(log.len() as u64, log_ref.size);
    let log = String::from_utf8(log.to_vec()).unwrap();
    assert!(
        log.starts_with("cloning with [REDACTED]\nprogress\nbasic [REDACTED]\n"),
        "{log}"
    );
    assert!(!log.contains(GITHUB_TOKEN), "the token is redacted: {log}");
    assert!(
        !setup.workspace_root().join("attempt-ok").exists(),
        "the attempt directory is removed"
    );
}

#[tokio::test]
async fn a_failed_attempt_reports_the_workers_failure() {
    let setup = Setup::new();
    let script = r#"
        echo running tests
        result='{"result":"failed","kind":"tests_failed","class":"transient","summary":"2 tests fail"}'
        printf '%s' "$result" > "$LEVIATHAN_TERMINATION_MESSAGE_PATH"
        echo "$result"
        echo "trailing noise on stderr" >&2
        exit 1
    "#;
    let executor = LocalExecutor::new(setup.config(script).keep_failed_workspaces(true));
    let outcome = executor.run(&spec("attempt-fails")).await.expect("run");
    assert_eq!(
        failure(&outcome.result),
        (
            FailureKind::TestsFailed,
            FailureClass::Transient,
            "2 tests fail"
        ),
        "the termination file wins over the log's last line"
    );
    let kept = setup.workspace_root().join("attempt-fails");
    assert!(kept.join("workspace").is_dir(), "kept for inspection");
    assert!(!outcome.artifacts.is_empty());
}

#[tokio::test]
async fn the_last_output_line_is_the_fallback_result() {
    let setup = Setup::new();
    let script = format!("echo working; printf '%s\\n\\n' '{SUCCEEDED}'");
    let outcome = setup
        .executor(&script)
        .run(&spec("attempt-stdout"))
        .await
        .expect("run");
    assert_eq!(outcome.result, succeeded("attempt-stdout"));
}

#[tokio::test]
async fn a_worker_without_a_result_is_an_infrastructure_failure() {
    let setup = Setup::new();
    let crash = setup.executor("echo 'thread main panicked'; exit 101");
    let outcome = crash.run(&spec("attempt-crash")).await.expect("run");
    let (kind, class, summary) = failure(&outcome.result);
    assert_eq!(
        (kind, class),
        (FailureKind::Infrastructure, FailureClass::Transient)
    );
    assert!(
        summary.contains("exit code 101") && summary.contains("thread main panicked"),
        "{summary}"
    );

    let config_error = setup.executor("echo 'TASK_ID: must not be empty' >&2; exit 2");
    let outcome = config_error
        .run(&spec("attempt-config"))
        .await
        .expect("run");
    let (kind, class, summary) = failure(&outcome.result);
    assert_eq!(
        (kind, class),
        (FailureKind::Infrastructure, FailureClass::Permanent)
    );
    assert!(summary.contains("TASK_ID: must not be empty"), "{summary}");
    assert!(!setup.workspace_root().join("attempt-config").exists());
}

#[tokio::test]
async fn the_deadline_kills_the_whole_process_group() {
    let setup = Setup::new();
    let pid_file = setup.file("background.pid");
    // The worker ignores SIGTERM (so SIGKILL after the grace period is needed) and leaves a
    // background process behind that would outlive a kill of the main process alone.
    let script = r#"
        trap '' TERM
        sleep 300 &
        echo $! > "$PID_FILE.tmp" && mv "$PID_FILE.tmp" "$PID_FILE"
        echo waiting
        wait
    "#;
    let mut spec = with_env(spec("attempt-slow"), "PID_FILE", &pid_file);
    spec.deadline = Duration::from_secs(1);
    let outcome = setup.executor(script).run(&spec).await.expect("run");
    let (kind, class, summary) = failure(&outcome.result);
    assert_eq!(
        (kind, class),
        (FailureKind::Timeout, FailureClass::Transient)
    );
    assert!(summary.contains("deadline of 1 s"), "{summary}");

    let pid = read_pid(&pid_file);
    eventually("the background process to be gone", || !alive(pid)).await;
    assert!(!setup.workspace_root().join("attempt-slow").exists());
    let log = setup
        .artifacts
        .get(&outcome.artifacts[0].sha256)
        .await
        .unwrap();
    assert_eq!(&log[..], b"waiting\n");
}

#[tokio::test]
async fn cancel_stops_a_running_attempt() {
    let setup = Setup::new();
    let pid_file = setup.file("cancel.pid");
    let script = r#"
        sleep 300 &
        echo $! > "$PID_FILE.tmp" && mv "$PID_FILE.tmp" "$PID_FILE"
        wait
    "#;
    let executor = Arc::new(setup.executor(script));
    let spec = with_env(spec("attempt-cancel"), "PID_FILE", &pid_file);
    let run = tokio::spawn({
        let executor = executor.clone();
        let spec = spec.clone();
        async move { executor.run(&spec).await }
    });
    eventually("the worker to start", || pid_file.exists()).await;
    let pid = read_pid(&pid_file);
    assert!(alive(pid));

    executor.cancel(&spec.attempt_id).await.expect("cancel");
    let outcome = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run ends after cancel")
        .unwrap()
        .expect("run");
    let (kind, class, _) = failure(&outcome.result);
    assert_eq!(
        (kind, class),
        (FailureKind::Cancelled, FailureClass::Permanent)
    );
    eventually("the background process to be gone", || !alive(pid)).await;

    let again = executor.cancel(&spec.attempt_id).await;
    assert!(
        matches!(again, Err(ExecutorError::NotFound(ref id)) if id == "attempt-cancel"),
        "{again:?}"
    );
}

#[tokio::test]
async fn two_attempts_run_at_once_without_interference() {
    let setup = Setup::new();
    // Each worker announces itself, then waits for the other one: this only finishes if both
    // run at the same time. Each writes into its own workspace and reports its own attempt.
    let script = format!(
        r#"
        echo "$ATTEMPT_ID" > "$LEVIATHAN_WORKSPACE_DIR/mine"
        touch "$MARKERS/$ATTEMPT_ID"
        while [ ! -e "$MARKERS/$OTHER" ]; do sleep 0.02; done
        [ "$(cat "$LEVIATHAN_WORKSPACE_DIR/mine")" = "$ATTEMPT_ID" ] || exit 4
        printf '%s\n' '{SUCCEEDED}' > "$LEVIATHAN_TERMINATION_MESSAGE_PATH"
        "#
    );
    let markers = setup.file("markers");
    std::fs::create_dir(&markers).unwrap();
    let executor = setup.executor(&script);
    let mut first = with_env(spec("attempt-one"), "MARKERS", &markers);
    first
        .env
        .insert("OTHER".to_owned(), "attempt-two".to_owned());
    first.deadline = PATIENCE;
    let mut second = with_env(spec("attempt-two"), "MARKERS", &markers);
    second
        .env
        .insert("OTHER".to_owned(), "attempt-one".to_owned());
    second.deadline = PATIENCE;
    let (a, b) = tokio::join!(executor.run(&first), executor.run(&second));
    assert_eq!(a.expect("first").result, succeeded("attempt-one"));
    assert_eq!(b.expect("second").result, succeeded("attempt-two"));
}

#[tokio::test]
async fn bad_requests_are_rejected_before_anything_runs() {
    let setup = Setup::new();
    let marker = setup.file("ran");
    let executor = Arc::new(setup.executor(r#"touch "$MARKER"; sleep 300"#));

    let mut bad = with_env(spec("attempt-bad"), "MARKER", &marker);
    bad.env
        .insert("GITHUB_TOKEN".to_owned(), "smuggled".to_owned());
    let err = executor.run(&bad).await.unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Rejected { reason, .. } if reason.contains("GITHUB_TOKEN")),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(!marker.exists(), "nothing ran");

    // The same attempt twice at once.
    let spec = with_env(spec("attempt-twice"), "MARKER", &marker);
    let run = tokio::spawn({
        let executor = executor.clone();
        let spec = spec.clone();
        async move { executor.run(&spec).await }
    });
    eventually("the first run to start", || marker.exists()).await;
    let err = executor.run(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Rejected { reason, .. } if reason.contains("already running")),
        "{err}"
    );
    executor.cancel(&spec.attempt_id).await.unwrap();
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(failure(&outcome.result).0, FailureKind::Cancelled);

    let missing = LocalExecutor::new(
        setup
            .config("true")
            .worker(setup.file("no-such-worker"), &["worker"]),
    );
    let err = missing
        .run(&crate::spec("attempt-missing"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Io { reason, .. } if reason.contains("no-such-worker")),
        "{err}"
    );
    assert!(
        !setup.workspace_root().join("attempt-missing").exists(),
        "nothing is left behind"
    );
}
