//! The Kubernetes executor through the real `kube` client against the testkit API server, whose
//! kubelet runs a stand-in `leviathan` (a shell script speaking the worker's result protocol).
//! The real `leviathan worker` runs in the root package's `tests/exec_k8s_worker.rs`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
};
use leviathan_core::{
    ArtifactStore, AttemptOutcome, AttemptResult, AttemptSpec, Executor, ExecutorError,
    memory::MemoryArtifactStore,
    model::{Failure, FailureClass, FailureKind},
    secret::Secret as WorkerToken,
};
use leviathan_exec_k8s::{
    API_CALLS, K8sConfig, K8sExecutor, RetryPolicy, TOKEN_SECRET_KEY, job_spec,
    names::{job_name, token_secret_name},
};
use leviathan_testkit::kubernetes::{FakeKubernetes, FakeKubernetesOptions, InjectedFailure};

const NS: &str = "leviathan";
const IMAGE: &str = "leviathan-worker:test";
/// Upper bound for anything a test waits for; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(60);

/// A stand-in for the image's `leviathan` binary: checks the worker environment the Job gives
/// it, then behaves as `FAKE_MODE` (from the attempt's env) says.
const FAKE_LEVIATHAN: &str = r#"#!/bin/sh
complain() { echo "stand-in worker: $1"; exit 2; }
[ "$1" = worker ] || complain "expected the worker subcommand, got: $*"
for var in TARGET_NAME TARGET_REPO_URL TARGET_BRANCH TASK_ID ATTEMPT_ID CONTROL_PLANE_URL \
    LEVIATHAN_ATTEMPT_NUMBER LEVIATHAN_CLAUDE_MODEL; do
  eval "value=\${$var:-}"
  [ -n "$value" ] || complain "$var is not set"
done
# With OWN_TOKEN the attempt's worker token (`wt-<attempt>`, see `with_token`) is expected.
if [ -n "${OWN_TOKEN:-}" ]; then token="wt-$ATTEMPT_ID"; else token=cp-secret; fi
[ "$CONTROL_PLANE_TOKEN" = "$token" ] || complain "CONTROL_PLANE_TOKEN is not $token"
[ "$GITHUB_TOKEN" = gh-secret ] || complain "GITHUB_TOKEN is not the secret's"
# The Secret holds the control plane's model key too; no worker is given it.
env | grep -q claude-secret && complain "the worker was given a model provider key"
[ -d "$LEVIATHAN_WORKSPACE_DIR" ] && [ -w "$LEVIATHAN_WORKSPACE_DIR" ] || complain "no workspace"
[ -d "$HOME" ] && [ -w "$HOME" ] || complain "no writable HOME"
[ -f "$LEVIATHAN_TERMINATION_MESSAGE_PATH" ] || complain "no termination file"
succeeded='{"result":"succeeded","branch":"agent/'"$TASK_ID-$ATTEMPT_ID"'","commit_sha":"abc123","pr_number":7,"pr_url":"https://example.com/pr/7"}'
failed='{"result":"failed","kind":"tests_failed","class":"transient","summary":"3 tests fail"}'
case "$FAKE_MODE" in
  succeed)
    echo "working on $TASK_ID"
    echo "$succeeded" > "$LEVIATHAN_TERMINATION_MESSAGE_PATH"
    echo "$succeeded" ;;
  fail)
    echo "tests fail"
    echo "$failed" > "$LEVIATHAN_TERMINATION_MESSAGE_PATH"
    echo "$failed"
    exit 1 ;;
  log-only)
    echo "working"
    echo "$succeeded" ;;
  crash)
    echo "thread 'main' panicked"
    exit 101 ;;
  sleep)
    echo started
    sleep 300 &
    wait ;;
  gate)
    while [ ! -e "$GATE" ]; do sleep 0.05; done
    echo "$succeeded" > "$LEVIATHAN_TERMINATION_MESSAGE_PATH" ;;
  *) complain "unknown FAKE_MODE '$FAKE_MODE'" ;;
esac
"#;

struct Harness {
    fake: FakeKubernetes,
    client: Client,
    dir: tempfile::TempDir,
    artifacts: Arc<MemoryArtifactStore>,
    /// Requests made while setting up (the secret), before the executor's.
    setup_requests: usize,
}

impl Harness {
    async fn start() -> Self {
        // Shared with the pods as it is: the fake kubelet translates every other path under a
        // mount point (the Job mounts /tmp), which would rewrite the gate file's path.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let leviathan = bin.join("leviathan");
        std::fs::write(&leviathan, FAKE_LEVIATHAN).unwrap();
        std::fs::set_permissions(
            &leviathan,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let options = FakeKubernetesOptions::new()
            .image(IMAGE, &leviathan)
            .shared_host_dir(dir.path())
            .termination_grace_period(Duration::from_secs(2));
        let fake = FakeKubernetes::start(options)
            .await
            .expect("fake API server");
        let mut config = Config::new(fake.url().parse().unwrap());
        config.default_namespace = "default".to_owned();
        let client = Client::try_from(config).unwrap();
        Self {
            fake,
            client,
            dir,
            artifacts: Arc::new(MemoryArtifactStore::new()),
            setup_requests: 0,
        }
    }

    async fn with_secret() -> Self {
        let mut harness = Self::start().await;
        harness.create_secret().await;
        harness.setup_requests = harness.fake.requests().len();
        harness
    }

    async fn create_secret(&self) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("leviathan-secrets".to_owned()),
                ..ObjectMeta::default()
            },
            string_data: Some(BTreeMap::from(
                [
                    ("control-plane-token", "cp-secret"),
                    ("github-token", "gh-secret"),
                    ("claude-api-key", "claude-secret"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            )),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    fn config(&self) -> K8sConfig {
        K8sConfig::default()
            .image(IMAGE)
            .namespace(NS)
            .control_plane_url("http://127.0.0.1:9")
            .claude_model("claude-test")
            .unschedulable_grace(Duration::from_millis(500))
            .create_retry(RetryPolicy {
                max_attempts: 3,
                initial: Duration::from_millis(20),
                max: Duration::from_millis(100),
            })
            .artifacts(self.artifacts.clone())
    }

    fn executor(&self) -> K8sExecutor {
        K8sExecutor::new(self.client.clone(), self.config())
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn gate(&self) -> PathBuf {
        self.dir.path().join("gate")
    }

    fn posts(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
            .count()
    }

    /// Every request the executor made is one of [`API_CALLS`] (so the Role suffices).
    fn assert_only_granted_calls(&self) {
        for request in self.fake.requests().into_iter().skip(self.setup_requests) {
            let rule = rule_of(&request.method, &request.path, request.query.as_deref());
            assert!(
                rule.is_some_and(|rule| API_CALLS.contains(&rule)),
                "{} {}?{} is not in API_CALLS",
                request.method,
                request.path,
                request.query.unwrap_or_default()
            );
        }
    }
}

/// The RBAC rule `(apiGroup, resource, verb)` a namespaced request needs.
fn rule_of(
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Option<(&'static str, &'static str, &'static str)> {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
    let (group, rest) = if let Some(rest) = path.strip_prefix("/apis/batch/v1/namespaces/") {
        ("batch", rest)
    } else {
        ("", path.strip_prefix("/api/v1/namespaces/")?)
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let resource = match (group, parts.get(1).copied()?) {
        ("batch", "jobs") => "jobs",
        ("", "pods") if parts.get(3) == Some(&"log") => "pods/log",
        ("", "pods") => "pods",
        ("", "secrets") => "secrets",
        _ => return None,
    };
    let verb = match (method, parts.len(), watch) {
        ("POST", 2, _) => "create",
        ("GET", 2, true) => "watch",
        ("GET", 2, false) => "list",
        ("GET", 3 | 4, _) => "get",
        ("DELETE", 3, _) => "delete",
        _ => return None,
    };
    Some((group, resource, verb))
}

fn spec(attempt: &str, mode: &str) -> AttemptSpec {
    AttemptSpec {
        attempt_id: attempt.parse().unwrap(),
        attempt_number: 1,
        task_id: "docs-guide".parse().unwrap(),
        target_id: "demo".parse().unwrap(),
        repo_url: "https://example.com/demo.git".to_owned(),
        base_branch: "main".to_owned(),
        deadline: Duration::from_secs(120),
        env: BTreeMap::from([("FAKE_MODE".to_owned(), mode.to_owned())]),
        worker_token: None,
    }
}

/// `spec` carrying the worker token `wt-<attempt>`, which the stand-in worker then expects.
fn with_token(mut spec: AttemptSpec) -> AttemptSpec {
    spec.worker_token = Some(WorkerToken::new(format!("wt-{}", spec.attempt_id)));
    spec.env.insert("OWN_TOKEN".to_owned(), "1".to_owned());
    spec
}

fn gated(attempt: &str, gate: &Path) -> AttemptSpec {
    let mut spec = spec(attempt, "gate");
    spec.env
        .insert("GATE".to_owned(), gate.display().to_string());
    spec
}

fn succeeded(attempt: &str) -> AttemptResult {
    AttemptResult::Succeeded {
        branch: format!("agent/docs-guide-{attempt}"),
        commit_sha: "abc123".to_owned(),
        pr_number: 7,
        pr_url: "https://example.com/pr/7".to_owned(),
    }
}

fn failure(outcome: &AttemptOutcome) -> &Failure {
    match &outcome.result {
        AttemptResult::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `condition` (the fake cluster's doing) until it holds or [`PATIENCE`] runs out.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn success_reads_the_termination_message_and_stores_the_log() {
    let harness = Harness::with_secret().await;
    let executor = harness.executor();
    let outcome = within("the run", executor.run(&spec("attempt-ok", "succeed")))
        .await
        .expect("run");
    assert_eq!(outcome.attempt_id, "attempt-ok");
    assert_eq!(outcome.result, succeeded("attempt-ok"));

    assert_eq!(outcome.artifacts.len(), 1);
    let artifact = &outcome.artifacts[0];
    assert_eq!(artifact.kind, "log");
    let log = harness.artifacts.get(&artifact.sha256).await.unwrap();
    let log = String::from_utf8(log.to_vec()).unwrap();
    assert!(
        log.starts_with("working on docs-guide\n{\"result\":\"succeeded\""),
        "{log}"
    );

    assert_eq!(harness.posts(), 1);
    assert!(
        harness.fake.jobs().is_empty(),
        "the finished Job is deleted"
    );
    assert!(harness.fake.stray_processes().is_empty());
    harness.assert_only_granted_calls();
}

#[tokio::test]
async fn a_failing_worker_reports_its_failure() {
    let harness = Harness::with_secret().await;
    let outcome = within(
        "the run",
        harness.executor().run(&spec("attempt-fails", "fail")),
    )
    .await
    .expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class, failure.summary.as_str()),
        (
            FailureKind::TestsFailed,
            FailureClass::Transient,
            "3 tests fail"
        )
    );
    assert_eq!(
        outcome.artifacts.len(),
        1,
        "the log of a failure is kept too"
    );
}

#[tokio::test]
async fn the_log_is_the_fallback_result_and_a_crash_is_infrastructure() {
    let harness = Harness::with_secret().await;
    let executor = harness.executor();
    let outcome = within("the run", executor.run(&spec("attempt-log", "log-only")))
        .await
        .expect("run");
    assert_eq!(outcome.result, succeeded("attempt-log"));

    let outcome = within("the run", executor.run(&spec("attempt-crash", "crash")))
        .await
        .expect("run");
    let crash = failure(&outcome);
    assert_eq!(
        (crash.kind, crash.class),
        (FailureKind::Infrastructure, FailureClass::Transient)
    );
    assert!(
        crash.summary.contains("exit code 101") && crash.summary.contains("panicked"),
        "{}",
        crash.summary
    );

    // The stand-in exits 2 on an environment it rejects (here an unknown mode), as the worker
    // does on a configuration error.
    let outcome = within(
        "the run",
        executor.run(&spec("attempt-config", "no-such-mode")),
    )
    .await
    .expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Infrastructure, FailureClass::Permanent)
    );
    assert!(
        failure.summary.contains("unknown FAKE_MODE 'no-such-mode'"),
        "{}",
        failure.summary
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_fast() {
    let harness = Harness::with_secret().await;
    let executor = K8sExecutor::new(
        harness.client.clone(),
        harness.config().image("registry.example/missing:v1"),
    );
    let outcome = within("the run", executor.run(&spec("attempt-pull", "succeed")))
        .await
        .expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Infrastructure, FailureClass::Permanent)
    );
    assert!(
        failure
            .summary
            .contains("`registry.example/missing:v1` cannot be pulled"),
        "{}",
        failure.summary
    );
    assert!(outcome.artifacts.is_empty());
    assert!(harness.fake.jobs().is_empty(), "the stuck Job is deleted");
    harness.assert_only_granted_calls();
}

#[tokio::test]
async fn a_missing_secret_fails_fast() {
    let harness = Harness::start().await;
    let outcome = within(
        "the run",
        harness.executor().run(&spec("attempt-secret", "succeed")),
    )
    .await
    .expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Infrastructure, FailureClass::Permanent)
    );
    assert!(
        failure
            .summary
            .contains("CreateContainerConfigError): secret \"leviathan-secrets\" not found"),
        "{}",
        failure.summary
    );
    assert!(harness.fake.jobs().is_empty());
}

#[tokio::test]
async fn the_deadline_exceeded_is_a_timeout() {
    let harness = Harness::with_secret().await;
    let mut spec = spec("attempt-slow", "sleep");
    spec.deadline = Duration::from_secs(2);
    let job = job_spec(&spec, &harness.config());
    assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(2));
    let outcome = within("the run", harness.executor().run(&spec))
        .await
        .expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Timeout, FailureClass::Transient)
    );
    assert!(
        failure.summary.contains("deadline of 2 s") && failure.summary.contains("DeadlineExceeded"),
        "{}",
        failure.summary
    );
    let log = harness
        .artifacts
        .get(&outcome.artifacts[0].sha256)
        .await
        .unwrap();
    assert_eq!(&log[..], b"started\n");
    assert!(harness.fake.container_processes().is_empty());
    assert!(harness.fake.stray_processes().is_empty());
}

#[tokio::test]
async fn a_job_the_cluster_does_not_end_in_time_is_stopped() {
    let harness = Harness::with_secret().await;
    // The Job in the cluster has a generous activeDeadlineSeconds (an earlier submission with a
    // longer deadline); the executor's own guard ends the attempt at deadline + slack.
    let mut submitted = spec("attempt-overdue", "sleep");
    submitted.deadline = Duration::from_secs(600);
    harness
        .jobs()
        .create(
            &PostParams::default(),
            &job_spec(&submitted, &harness.config()),
        )
        .await
        .unwrap();
    let executor = K8sExecutor::new(
        harness.client.clone(),
        harness.config().deadline_slack(Duration::from_millis(500)),
    );
    let mut spec = submitted.clone();
    spec.deadline = Duration::from_secs(1);
    let outcome = within("the run", executor.run(&spec)).await.expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Timeout, FailureClass::Transient)
    );
    assert!(
        failure
            .summary
            .contains("did not end Job leviathan-attempt-overdue"),
        "{}",
        failure.summary
    );
    eventually("the Job to be gone", || harness.fake.jobs().is_empty()).await;
    eventually("the worker to stop", || {
        harness.fake.container_processes().is_empty()
    })
    .await;
}

#[tokio::test]
async fn transient_create_errors_are_retried_and_permanent_ones_are_not() {
    let harness = Harness::with_secret().await;
    let executor = harness.executor();
    harness
        .fake
        .fail_job_creates(2, InjectedFailure::InternalError);
    let outcome = within("the run", executor.run(&spec("attempt-retried", "succeed")))
        .await
        .expect("run after two 500s");
    assert_eq!(outcome.result, succeeded("attempt-retried"));
    assert_eq!(harness.posts(), 3);

    harness
        .fake
        .fail_job_creates(3, InjectedFailure::InternalError);
    let err = executor
        .run(&spec("attempt-unavailable", "succeed"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(&err, ExecutorError::Unavailable { reason, .. }
            if reason.contains("create jobs.batch `leviathan-attempt-unavailable`") && reason.contains("500")),
        "{err}"
    );
    assert_eq!(harness.posts(), 6, "bounded: three more tries");

    harness.fake.fail_job_creates(1, InjectedFailure::Forbidden);
    let err = executor
        .run(&spec("attempt-forbidden", "succeed"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Rejected { reason, .. } if reason.contains("403")),
        "{err}"
    );
    assert_eq!(harness.posts(), 7, "a 403 is not retried");
    assert!(harness.fake.jobs().is_empty());
}

#[tokio::test]
async fn cut_and_expired_watches_are_survived() {
    let harness = Harness::with_secret().await;
    let executor = Arc::new(harness.executor());
    let watches = || {
        harness
            .fake
            .requests()
            .iter()
            .filter(|r| r.query.as_deref().is_some_and(|q| q.contains("watch=true")))
            .count()
    };

    // Every stream ends after one event: the Job's progress arrives through resumed watches.
    harness.fake.cut_watches_after(Some(1));
    let gate = harness.dir.path().join("gate-cut");
    let run = tokio::spawn({
        let executor = executor.clone();
        let spec = gated("attempt-cut", &gate);
        async move { executor.run(&spec).await }
    });
    eventually("the executor to watch", || watches() >= 2).await;
    let before = watches();
    std::fs::write(&gate, b"").unwrap();
    let outcome = within("the run", run)
        .await
        .unwrap()
        .expect("run with cut watches");
    assert_eq!(outcome.result, succeeded("attempt-cut"));
    assert!(
        watches() > before,
        "streams were resumed; {before} watches before the gate, {} after",
        watches()
    );
    harness.fake.cut_watches_after(None);

    // The first two watches answer 410 Gone: the watchers list again.
    harness.fake.expire_next_watches(2);
    let lists = || {
        harness
            .fake
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && (r.path.ends_with("/jobs") || r.path.ends_with("/pods"))
            })
            .filter(|r| {
                !r.query
                    .as_deref()
                    .unwrap_or_default()
                    .contains("watch=true")
            })
            .count()
    };
    let lists_before = lists();
    let gate = harness.dir.path().join("gate-gone");
    let run = tokio::spawn({
        let executor = executor.clone();
        let spec = gated("attempt-gone", &gate);
        async move { executor.run(&spec).await }
    });
    eventually("the watchers to relist", || lists() >= lists_before + 4).await;
    std::fs::write(&gate, b"").unwrap();
    let outcome = within("the run", run)
        .await
        .unwrap()
        .expect("run with 410 Gone");
    assert_eq!(outcome.result, succeeded("attempt-gone"));
}

#[tokio::test]
async fn an_existing_job_of_the_attempt_is_adopted() {
    let harness = Harness::with_secret().await;
    let config = harness.config();
    let adopted = gated("attempt-adopt", &harness.gate());
    harness
        .jobs()
        .create(&PostParams::default(), &job_spec(&adopted, &config))
        .await
        .expect("an earlier submission");

    // Kept, so that its pods can be counted afterwards.
    let executor = Arc::new(K8sExecutor::new(
        harness.client.clone(),
        config.clone().keep_finished_jobs(true),
    ));
    let run = tokio::spawn({
        let executor = executor.clone();
        let adopted = adopted.clone();
        async move { executor.run(&adopted).await }
    });
    eventually("the executor's create to be refused", || {
        harness.posts() == 2
    })
    .await;
    std::fs::write(harness.gate(), b"").unwrap();
    let outcome = within("the run", run).await.unwrap().expect("run");
    assert_eq!(outcome.result, succeeded("attempt-adopt"));
    assert_eq!(
        harness.fake.pods().len(),
        1,
        "one Job, one pod: nothing ran twice"
    );
    harness.assert_only_granted_calls();

    // A Job of the same name that belongs to another attempt is not adopted.
    let mut other = job_spec(&spec("attempt-taken", "succeed"), &config);
    other.metadata.annotations.as_mut().unwrap().insert(
        "leviathan.dev/attempt".to_owned(),
        "attempt-other".to_owned(),
    );
    harness
        .jobs()
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let err = executor
        .run(&spec("attempt-taken", "succeed"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Rejected { reason, .. } if reason.contains("belongs to attempt attempt-other")),
        "{err}"
    );
}

#[tokio::test]
async fn cancel_deletes_the_job_and_stops_the_worker() {
    let harness = Harness::with_secret().await;
    let executor = Arc::new(harness.executor());
    let spec = spec("attempt-cancel", "sleep");
    let run = tokio::spawn({
        let executor = executor.clone();
        let spec = spec.clone();
        async move { executor.run(&spec).await }
    });
    eventually("the worker to run", || {
        !harness.fake.container_processes().is_empty()
    })
    .await;
    executor.cancel(&spec.attempt_id).await.expect("cancel");
    let outcome = within("the run", run).await.unwrap().expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Cancelled, FailureClass::Permanent)
    );
    eventually("the Job to be gone", || harness.fake.jobs().is_empty()).await;
    eventually("the worker to stop", || {
        harness.fake.container_processes().is_empty()
    })
    .await;
    assert!(harness.fake.stray_processes().is_empty());
    let deletes: Vec<_> = harness
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert_eq!(
        deletes[0].path,
        format!("/apis/batch/v1/namespaces/{NS}/jobs/leviathan-attempt-cancel")
    );
    harness.assert_only_granted_calls();

    let again = executor.cancel(&spec.attempt_id).await;
    assert!(
        matches!(again, Err(ExecutorError::NotFound(ref id)) if id == "attempt-cancel"),
        "{again:?}"
    );
}

#[tokio::test]
async fn cancel_during_create_retries_submits_nothing() {
    let harness = Harness::with_secret().await;
    // A long backoff after a 500: the cancel arrives while the executor waits to retry.
    let executor = Arc::new(K8sExecutor::new(
        harness.client.clone(),
        harness.config().create_retry(RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_secs(600),
            max: Duration::from_secs(600),
        }),
    ));
    harness
        .fake
        .fail_job_creates(1, InjectedFailure::InternalError);
    let spec = spec("attempt-early-cancel", "succeed");
    let run = tokio::spawn({
        let executor = executor.clone();
        let spec = spec.clone();
        async move { executor.run(&spec).await }
    });
    eventually("the first create to fail", || harness.posts() == 1).await;
    executor
        .cancel(&spec.attempt_id)
        .await
        .expect("a followed attempt without a Job yet can be cancelled");
    let outcome = within("the run", run).await.unwrap().expect("run");
    let failure = failure(&outcome);
    assert_eq!(failure.kind, FailureKind::Cancelled);
    assert!(
        failure.summary.contains("before Job"),
        "{}",
        failure.summary
    );
    assert_eq!(harness.posts(), 1, "no Job was created after the cancel");
    assert!(harness.fake.jobs().is_empty());
}

#[tokio::test]
async fn a_job_deleted_by_someone_else_is_lost() {
    let harness = Harness::with_secret().await;
    let executor = Arc::new(harness.executor());
    let spec = spec("attempt-deleted", "sleep");
    let run = tokio::spawn({
        let executor = executor.clone();
        let spec = spec.clone();
        async move { executor.run(&spec).await }
    });
    eventually("the worker to run", || {
        !harness.fake.container_processes().is_empty()
    })
    .await;
    harness
        .jobs()
        .delete(&job_name(&spec.attempt_id), &DeleteParams::background())
        .await
        .unwrap();
    let outcome = within("the run", run).await.unwrap().expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Lost, FailureClass::Transient)
    );
}

#[tokio::test]
async fn a_pod_unschedulable_past_the_grace_period_fails() {
    let harness = Harness::with_secret().await;
    harness
        .fake
        .make_unschedulable("app.kubernetes.io/name=leviathan-worker")
        .unwrap();
    let outcome = within(
        "the run",
        harness.executor().run(&spec("attempt-pending", "succeed")),
    )
    .await
    .expect("run");
    let failure = failure(&outcome);
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Infrastructure, FailureClass::Transient)
    );
    assert!(
        failure.summary.contains("unschedulable"),
        "{}",
        failure.summary
    );
    assert!(harness.fake.jobs().is_empty());
}

#[tokio::test]
async fn reattach_follows_the_job_of_an_earlier_process() {
    let harness = Harness::with_secret().await;
    let first = harness.executor();
    assert!(
        first
            .reattach(&spec("attempt-unknown", "succeed"))
            .await
            .expect("reattach")
            .is_none(),
        "no Job, no trace"
    );

    // An earlier scheduler submitted the Job and died; a new one finds it running.
    let earlier = gated("attempt-reattach", &harness.gate());
    harness
        .jobs()
        .create(
            &PostParams::default(),
            &job_spec(&earlier, &harness.config()),
        )
        .await
        .unwrap();
    let second = Arc::new(harness.executor());
    let follow = tokio::spawn({
        let second = second.clone();
        let earlier = earlier.clone();
        async move { second.reattach(&earlier).await }
    });
    eventually("the worker to run", || {
        !harness.fake.container_processes().is_empty()
    })
    .await;
    std::fs::write(harness.gate(), b"").unwrap();
    let outcome = within("the reattach", follow)
        .await
        .unwrap()
        .expect("reattach")
        .expect("the Job was found");
    assert_eq!(outcome.result, succeeded("attempt-reattach"));
    assert_eq!(outcome.artifacts.len(), 1);
    assert_eq!(harness.posts(), 1, "reattach creates nothing");
    harness.assert_only_granted_calls();
}

#[tokio::test]
async fn finished_jobs_are_kept_when_configured() {
    let harness = Harness::with_secret().await;
    let executor = K8sExecutor::new(
        harness.client.clone(),
        harness.config().keep_finished_jobs(true),
    );
    let outcome = within("the run", executor.run(&spec("attempt-kept", "succeed")))
        .await
        .expect("run");
    assert_eq!(outcome.result, succeeded("attempt-kept"));
    let jobs = harness.fake.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].metadata.name.as_deref(),
        Some("leviathan-attempt-kept")
    );

    // Running it again adopts the finished Job and reports the same result.
    let again = within("the rerun", executor.run(&spec("attempt-kept", "succeed")))
        .await
        .expect("rerun");
    assert_eq!(again.result, outcome.result);
    assert_eq!(harness.fake.pods().len(), 1);
}

#[tokio::test]
async fn reserved_variables_in_the_spec_are_rejected() {
    let harness = Harness::with_secret().await;
    let mut spec = spec("attempt-smuggle", "succeed");
    spec.env
        .insert("GITHUB_TOKEN".to_owned(), "smuggled".to_owned());
    let err = harness.executor().run(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Rejected { reason, .. } if reason.contains("GITHUB_TOKEN")),
        "{err}"
    );
    assert_eq!(harness.posts(), 0);
}

/// The attempt's token Secret in the fake cluster, if any.
async fn token_secret(harness: &Harness, attempt: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(harness.client.clone(), NS)
        .get_opt(&token_secret_name(&attempt.parse().unwrap()))
        .await
        .expect("get secret")
}

#[tokio::test]
async fn the_worker_gets_its_attempt_token_from_its_own_secret_only() {
    let harness = Harness::with_secret().await;
    let executor = Arc::new(harness.executor());
    let gate = harness.gate();
    let spec = with_token(gated("attempt-tok", &gate));
    let run = tokio::spawn({
        let (executor, spec) = (executor.clone(), spec.clone());
        async move { executor.run(&spec).await }
    });
    eventually("the worker to run", || {
        !harness.fake.container_processes().is_empty()
    })
    .await;
    let job = harness.fake.jobs().pop().expect("the Job");
    let secret = token_secret(&harness, "attempt-tok")
        .await
        .expect("token Secret");
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), Some(&owners[0].uid)),
        ("Job", job.metadata.uid.as_ref())
    );
    let data = secret.data.unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), [TOKEN_SECRET_KEY]);
    assert_eq!(data[TOKEN_SECRET_KEY].0, b"wt-attempt-tok");

    let pod = harness.fake.pods().pop().expect("the pod");
    let env = pod.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let token_ref = env
        .iter()
        .find(|var| var.name == "CONTROL_PLANE_TOKEN")
        .and_then(|var| var.value_from.as_ref()?.secret_key_ref.clone())
        .expect("CONTROL_PLANE_TOKEN from a secretKeyRef");
    assert_eq!(token_ref.name, token_secret_name(&spec.attempt_id));
    assert!(
        env.iter().all(|var| var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .is_none_or(|r| r.key != "control-plane-token" || r.name != "leviathan-secrets")),
        "the shared control-plane token is not referenced: {env:#?}"
    );

    std::fs::write(&gate, "").unwrap();
    let outcome = within("the run", run).await.unwrap().expect("run");
    // The stand-in worker exits 2 unless CONTROL_PLANE_TOKEN is `wt-attempt-tok`.
    assert_eq!(outcome.result, succeeded("attempt-tok"));
    assert!(
        harness.fake.jobs().is_empty(),
        "the finished Job is deleted"
    );
    assert!(
        token_secret(&harness, "attempt-tok").await.is_none(),
        "the token Secret is deleted"
    );
    harness.assert_only_granted_calls();
}

#[tokio::test]
async fn the_token_secret_is_collected_with_its_job() {
    let harness = Harness::with_secret().await;
    let executor = Arc::new(harness.executor());
    let spec = with_token(spec("attempt-gc", "sleep"));
    let run = tokio::spawn({
        let (executor, spec) = (executor.clone(), spec.clone());
        async move { executor.run(&spec).await }
    });
    eventually("the worker to run", || {
        !harness.fake.container_processes().is_empty()
    })
    .await;
    assert!(token_secret(&harness, "attempt-gc").await.is_some());
    // Deleted by someone else: the executor deletes no Secret, the garbage collector does.
    harness
        .jobs()
        .delete(&job_name(&spec.attempt_id), &DeleteParams::background())
        .await
        .expect("delete the Job");
    let outcome = within("the run", run).await.unwrap().expect("run");
    assert_eq!(failure(&outcome).kind, FailureKind::Lost);
    assert!(
        token_secret(&harness, "attempt-gc").await.is_none(),
        "collected with the Job"
    );
    let secret_deletes = harness
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/secrets/"))
        .count();
    assert_eq!(secret_deletes, 0);
}
