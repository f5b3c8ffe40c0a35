//! One attempt end to end against real components on 127.0.0.1: the control-plane API router
//! over memory stores with its model gateway, `FakeGitHub` (REST + smart-HTTP git through
//! `git http-backend`), `ScriptedLlm` (Anthropic and OpenAI shapes) behind the gateway, the git
//! CLI and `sh`. The worker holds its attempt's token and no model key.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use leviathan_api::{
    ApiConfig, ApiState, BearerToken,
    gateway::{Budgets, GatewayConfig, Limit, Upstream},
    router,
};
use leviathan_core::{
    AttemptId, AttemptResult, EventId, Expectations, Ledger, NewEvent, TaskId, Timestamp,
    WorkerTokens,
    catalogue::{AttemptBase, AttemptCreated},
    executor::protocol,
    memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    model::{AttemptStatus, FailureClass, FailureKind, Priority},
    store::ArtifactStore,
    testkit::Scenario,
};
use leviathan_testkit::{
    TestServer,
    github::{FakeGitHub, PrState, RestFailure},
    llm::{LlmReply, Provider, ScriptedLlm, files_envelope},
};
use leviathan_worker::{AttemptReport, Delivery, WorkerConfig, config, config::RetryPolicy};
use tempfile::TempDir;

const TARGET: &str = "demo";
const OWNER: &str = "acme";
const REPO: &str = "widgets";
const TASK: &str = "docs-guide";
const ATTEMPT: &str = "attempt-0001";
const BRANCH: &str = "agent/docs-guide-attempt-0001";
const CP_TOKEN: &str = "cp-token-0123456789abcdef";

const GOOD_GUIDE: &str = "# Guide\n\nSetup: run `make`.\n";
const BAD_GUIDE: &str = "# Guide\n\nTo be written.\n";

fn backlog(allowed: &[&str], test_command: &str) -> String {
    let allowed: Vec<String> = allowed.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "version: \"1\"\ntasks:\n  - id: {TASK}\n    title: Write the guide\n    scope: docs\n    priority: high\n    ready: true\n    allowed_paths: [{}]\n    acceptance_criteria: [\"Explains setup\"]\n    test_command: \"{test_command}\"\n",
        allowed.join(", ")
    )
}

/// The control plane's model gateway to `llm`, on both protocols, with its key.
fn gateway_to(llm: &ScriptedLlm) -> GatewayConfig {
    let key = || Some(leviathan_core::secret::Secret::new(llm.api_key()));
    GatewayConfig::new(
        Some(Upstream::new(llm.url(), key())),
        Some(Upstream::new(format!("{}/v1", llm.url()), key())),
    )
}

fn default_backlog() -> String {
    backlog(&["docs/GUIDE.md"], "grep -q Setup docs/GUIDE.md")
}

/// Fails control-plane requests from the `start`-th on (0-based), `length` of them, with 503.
#[derive(Default)]
struct Outage {
    seen: AtomicUsize,
    failed: AtomicUsize,
    start: AtomicUsize,
    length: AtomicUsize,
}

impl Outage {
    fn schedule(&self, start: usize, length: usize) {
        self.start.store(start, Ordering::SeqCst);
        self.length.store(length, Ordering::SeqCst);
    }
}

async fn outage_gate(State(outage): State<Arc<Outage>>, request: Request, next: Next) -> Response {
    let n = outage.seen.fetch_add(1, Ordering::SeqCst);
    let start = outage.start.load(Ordering::SeqCst);
    let length = outage.length.load(Ordering::SeqCst);
    if n >= start && n - start < length {
        outage.failed.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({"error": {"code": "unavailable", "message": "down for maintenance"}});
        return (http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    next.run(request).await
}

struct Harness {
    github: FakeGitHub,
    llm: ScriptedLlm,
    _api: TestServer,
    api_url: String,
    ledger: Arc<Ledger>,
    artifacts: Arc<MemoryArtifactStore>,
    /// Mints worker tokens as the scheduler does.
    state: ApiState,
    outage: Arc<Outage>,
    workspace: TempDir,
    repo_url: String,
    /// The attempt's worker token (the admin token when no attempt was created).
    worker_token: String,
}

impl Harness {
    async fn start(backlog: &str) -> Self {
        Self::start_with(FakeGitHub::start().await.unwrap(), backlog, true).await
    }

    async fn start_with(github: FakeGitHub, backlog: &str, create_attempt: bool) -> Self {
        Self::start_with_budgets(github, backlog, create_attempt, Budgets::default()).await
    }

    /// Servers up, the gateway holding calls to `budgets`, repository seeded, and (when
    /// `create_attempt`) the scheduler's `target.registered`, `task.created` and
    /// `attempt.created` in the log.
    async fn start_with_budgets(
        github: FakeGitHub,
        backlog: &str,
        create_attempt: bool,
        budgets: Budgets,
    ) -> Self {
        let repo_url = github
            .create_repo_with_files(
                OWNER,
                REPO,
                "main",
                &[
                    ("README.md", "# widgets\n"),
                    (".leviathan/backlog.yaml", backlog),
                    ("docs/INDEX.md", "# Docs\n"),
                ],
            )
            .await
            .unwrap();
        let llm = ScriptedLlm::start().await.unwrap();
        let ledger = Arc::new(
            Ledger::open(
                Arc::new(MemoryEventStore::new()),
                Arc::new(MemoryGraphStore::new()),
            )
            .await
            .unwrap(),
        );
        let artifacts = Arc::new(MemoryArtifactStore::new());
        let state = ApiState::new(
            Arc::clone(&ledger),
            Arc::clone(&artifacts) as Arc<dyn ArtifactStore>,
            ApiConfig::new(BearerToken::new(CP_TOKEN).unwrap())
                .with_gateway(gateway_to(&llm).with_budgets(budgets)),
        );
        let outage = Arc::new(Outage::default());
        let app = router(state.clone()).layer(middleware::from_fn_with_state(
            Arc::clone(&outage),
            outage_gate,
        ));
        let api = TestServer::spawn(app).await.unwrap();
        let mut harness = Self {
            github,
            llm,
            api_url: api.url(),
            _api: api,
            ledger,
            artifacts,
            state,
            outage,
            workspace: TempDir::new().unwrap(),
            repo_url,
            worker_token: CP_TOKEN.to_owned(),
        };
        if create_attempt {
            harness.create_attempt(None).await;
            let expires = Timestamp::now().saturating_add(Duration::from_secs(3600));
            let token = harness.state.mint(&attempt_id(), expires).await.unwrap();
            harness.worker_token = token.expose().to_owned();
        }
        harness
    }

    async fn create_attempt(&self, base: Option<AttemptBase>) {
        let mut scenario = Scenario::new("seed", TARGET);
        scenario
            .register_target()
            .create_task(TASK, &[], Priority::High);
        let mut events = scenario.build();
        events.push(NewEvent::new(
            EventId::new("seed-attempt-created").unwrap(),
            Timestamp::now(),
            Some("scheduler".into()),
            &AttemptCreated {
                attempt_id: attempt_id(),
                task_id: TaskId::new(TASK).unwrap(),
                target_id: scenario.target().clone(),
                attempt_number: 1,
                executor: Some("local".into()),
                deadline_seconds: Some(900),
                base,
            },
        ));
        self.ledger
            .ingest(events, Expectations::Derived)
            .await
            .unwrap();
    }

    fn termination_path(&self) -> PathBuf {
        self.workspace.path().join("termination-log")
    }

    fn workspace_dir(&self) -> PathBuf {
        self.workspace.path().join("work")
    }

    /// The environment an executor would give the worker, for the Anthropic provider.
    fn env(&self) -> BTreeMap<&'static str, String> {
        std::fs::create_dir_all(self.workspace_dir()).unwrap();
        BTreeMap::from([
            (protocol::TARGET_NAME, TARGET.to_owned()),
            (protocol::TARGET_REPO_URL, self.repo_url.clone()),
            (protocol::TARGET_BRANCH, "main".to_owned()),
            (protocol::TASK_ID, TASK.to_owned()),
            (protocol::ATTEMPT_ID, ATTEMPT.to_owned()),
            (protocol::CONTROL_PLANE_URL, self.api_url.clone()),
            (protocol::CONTROL_PLANE_TOKEN, self.worker_token.clone()),
            (protocol::GITHUB_TOKEN, self.github.token().to_owned()),
            (protocol::LEVIATHAN_GITHUB_API_URL, self.github.api_url()),
            (
                protocol::LEVIATHAN_WORKSPACE_DIR,
                self.workspace_dir().to_string_lossy().into_owned(),
            ),
            (
                protocol::LEVIATHAN_TERMINATION_MESSAGE_PATH,
                self.termination_path().to_string_lossy().into_owned(),
            ),
        ])
    }

    fn config(&self, env: &BTreeMap<&'static str, String>) -> WorkerConfig {
        let mut config = WorkerConfig::from_env(|name| env.get(name).cloned()).unwrap();
        config.echo_log = false;
        config.control_plane_retry = RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        };
        config.model.retry = RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_millis(10),
            max: Duration::from_secs(2),
        };
        config
    }

    async fn run(&self, env: &BTreeMap<&'static str, String>) -> AttemptReport {
        leviathan_worker::run_attempt(self.config(env))
            .await
            .unwrap()
    }

    async fn attempt(&self) -> leviathan_core::graph::AttemptNode {
        self.ledger.catch_up().await.unwrap();
        self.ledger
            .graph()
            .await
            .attempt(&attempt_id())
            .cloned()
            .expect("attempt in graph")
    }

    async fn logged_types(&self) -> Vec<String> {
        self.ledger
            .events()
            .read(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.actor_id.as_deref() == Some("worker-attempt-0001"))
            .map(|e| e.event_type)
            .collect()
    }

    /// The model calls the gateway recorded (the worker records none).
    async fn gateway_calls(&self) -> Vec<leviathan_core::Event> {
        let events = self.ledger.events().read(0, 10_000).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.event_type == "model.call_completed")
            .inspect(|e| assert_eq!(e.actor_id.as_deref(), Some("gateway")))
            .collect()
    }

    fn pulls(&self) -> Vec<leviathan_testkit::github::PullSummary> {
        self.github.pull_requests(OWNER, REPO).unwrap()
    }
}

fn attempt_id() -> AttemptId {
    AttemptId::new(ATTEMPT).unwrap()
}

fn failure(report: &AttemptReport) -> &leviathan_core::model::Failure {
    match &report.result {
        AttemptResult::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}\n{}", report.log),
    }
}

fn success(report: &AttemptReport) -> (String, String, u64, String) {
    match &report.result {
        AttemptResult::Succeeded {
            branch,
            commit_sha,
            pr_number,
            pr_url,
        } => (
            branch.clone(),
            commit_sha.clone(),
            *pr_number,
            pr_url.clone(),
        ),
        other => panic!("expected success, got {other:?}\n{}", report.log),
    }
}

fn types(report: &AttemptReport) -> Vec<&str> {
    report
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect()
}

/// Pushes `branch` with one commit to the fake's repository, as another client would.
async fn push_branch(github: &FakeGitHub, url: &str, branch: &str) {
    let dir = TempDir::new().unwrap();
    let checkout = dir.path().join("checkout");
    let git = async |args: &[&str], cwd: &Path| {
        let out = tokio::process::Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("HOME", dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Other")
            .env("GIT_AUTHOR_EMAIL", "other@example.com")
            .env("GIT_COMMITTER_NAME", "Other")
            .env("GIT_COMMITTER_EMAIL", "other@example.com")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Bearer {}", github.token()),
            )
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(
        &["clone", "-q", url, checkout.to_str().unwrap()],
        dir.path(),
    )
    .await;
    git(&["checkout", "-q", "-b", branch], &checkout).await;
    std::fs::create_dir_all(checkout.join("docs")).unwrap();
    std::fs::write(checkout.join("docs/GUIDE.md"), "earlier draft\n").unwrap();
    git(&["add", "."], &checkout).await;
    git(&["commit", "-q", "-m", "earlier run"], &checkout).await;
    git(&["push", "-q", "origin", branch], &checkout).await;
}

#[tokio::test]
async fn success_opens_a_real_pull_request_and_records_everything() {
    let h = Harness::start(&default_backlog()).await;
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;

    let (branch, commit_sha, pr_number, pr_url) = success(&report);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(branch, BRANCH);
    assert_eq!(report.delivery, Delivery::Delivered, "{}", report.log);

    // The forge has the PR and the branch has the change.
    let pulls = h.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].number, pr_number);
    assert_eq!(pulls[0].html_url, pr_url);
    assert_eq!(pulls[0].title, "Leviathan: Write the guide");
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        (BRANCH, "main")
    );
    assert_eq!(pulls[0].state, PrState::Open);
    assert!(!pulls[0].draft);
    let body = pulls[0].body.clone().unwrap();
    assert!(body.contains("**Task ID:** docs-guide"), "{body}");
    assert!(body.contains("**Attempt ID:** attempt-0001"), "{body}");
    assert!(body.contains("- Explains setup"), "{body}");
    assert_eq!(
        h.github.branch_sha(OWNER, REPO, BRANCH).await.unwrap(),
        Some(commit_sha.clone())
    );
    assert_eq!(
        last_commit(&h, "%H|%an <%ae>|%cn <%ce>|%s").await,
        format!(
            "{commit_sha}|Leviathan <leviathan@users.noreply.github.com>|Leviathan <leviathan@users.noreply.github.com>|Leviathan: Write the guide"
        )
    );
    assert_eq!(
        h.github
            .read_file(OWNER, REPO, BRANCH, "docs/GUIDE.md")
            .await
            .unwrap()
            .unwrap(),
        GOOD_GUIDE.as_bytes()
    );

    // The model was called once, with the Anthropic shape.
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].provider, Provider::Anthropic);
    assert!(requests[0].authenticated);
    assert_eq!(requests[0].model, config::DEFAULT_CLAUDE_MODEL);
    assert!(
        requests[0]
            .prompt
            .contains("=== FILE: docs/GUIDE.md (does not exist yet) ===")
    );

    // Events: in the report, in the log, and folded into the graph.
    assert_eq!(
        types(&report),
        [
            "attempt.started",
            "artifact.created",
            "artifact.created",
            "artifact.created",
            "tests.passed",
            "artifact.created",
            "commit.created",
            "pr.created",
            "artifact.created",
            "attempt.succeeded"
        ]
    );
    let ids: Vec<&str> = report.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids[0], "attempt-0001-0001");
    assert_eq!(ids[9], "attempt-0001-0010");
    assert_eq!(h.logged_types().await, types(&report));
    // The call was recorded by the gateway, with the upstream's usage.
    let calls = h.gateway_calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].payload["attempt_id"], ATTEMPT);
    assert_eq!(calls[0].payload["model"], config::DEFAULT_CLAUDE_MODEL);
    let attempt = h.attempt().await;
    assert_eq!(attempt.status, AttemptStatus::Succeeded);
    assert_eq!(attempt.pr_number, Some(pr_number));
    assert_eq!(attempt.commit_sha.as_deref(), Some(commit_sha.as_str()));
    assert_eq!((attempt.model_calls, attempt.test_runs), (1, 1));
    assert!(attempt.tokens_in > 0 && attempt.tokens_out > 0);

    // Every artifact was uploaded and is what the report says.
    assert!(!report.artifacts.is_empty());
    for artifact in &report.artifacts {
        let stored = h.artifacts.get(&artifact.sha256).await.unwrap();
        assert_eq!(stored, artifact.content);
    }
    let kinds: Vec<&str> = report.artifacts.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["model_prompt", "model_output", "test_output", "diff", "log"]
    );

    // The result is in the termination file, as core's shape.
    let written = std::fs::read_to_string(h.termination_path()).unwrap();
    assert_eq!(written, format!("{}\n", report.result_line()));
    let parsed: AttemptResult = serde_json::from_str(written.trim()).unwrap();
    assert_eq!(parsed, report.result);

    // The chain of the control plane's log verifies.
    let events = h.ledger.events().read(0, 10_000).await.unwrap();
    let report = leviathan_core::chain::verify(&events).expect("the chain verifies");
    assert_eq!(report.head.map(|h| h.seq), events.last().map(|e| e.seq));
}

#[tokio::test]
async fn fenced_and_truncated_output_is_salvaged() {
    let h = Harness::start(&backlog(
        &["docs/GUIDE.md", "docs/extra/"],
        "grep -q Setup docs/GUIDE.md",
    ))
    .await;
    let complete = files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]);
    // A fenced envelope whose second entry was cut off by the token limit.
    let entries = complete
        .trim_start_matches("{\"files\":[")
        .trim_end_matches("]}");
    let truncated = format!(
        "Here is the change:\n```json\n{{\"files\": [{entries}, {{\"path\": \"docs/extra/notes.md\", \"content_b64\": \"IyBOb3Rlcwo"
    );
    h.llm.push(LlmReply::Truncated(truncated));
    let report = h.run(&h.env()).await;
    success(&report);
    assert!(
        report.log.contains("stripped markdown code fence"),
        "{}",
        report.log
    );
    assert!(
        report.log.contains("salvaged 1 complete entry"),
        "{}",
        report.log
    );
    assert!(report.log.contains("stopped at the output token limit"));
    assert_eq!(
        h.github
            .read_file(OWNER, REPO, BRANCH, "docs/extra/notes.md")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn unusable_answer_is_fed_back_and_corrected() {
    let h = Harness::start(&default_backlog()).await;
    h.llm.push_text(files_envelope(&[
        ("docs/GUIDE.md", GOOD_GUIDE),
        ("src/x.rs", ""),
    ]));
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    success(&report);
    let prompts = h.llm.requests();
    assert_eq!(prompts.len(), 2);
    assert!(
        prompts[1]
            .prompt
            .contains("Validation error: Extra paths not in allowed_paths: src/x.rs"),
        "{}",
        prompts[1].prompt
    );
    assert_eq!(h.attempt().await.model_calls, 2);
}

#[tokio::test]
async fn a_path_violation_fails_and_nothing_is_pushed() {
    // The tests pass but leave an untracked file outside the allowed paths.
    let h = Harness::start(&backlog(
        &["docs/GUIDE.md"],
        "grep -q Setup docs/GUIDE.md && echo log > stray.log",
    ))
    .await;
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::PathViolation, FailureClass::Permanent)
    );
    assert!(
        f.summary
            .contains("`stray.log` (added) is outside allowed_paths"),
        "{}",
        f.summary
    );
    assert!(f.summary.contains("nothing was committed or pushed"));
    assert_eq!(report.exit_code(), 1);
    assert_eq!(h.github.push_count().unwrap(), 0);
    assert!(!h.github.branch_exists(OWNER, REPO, BRANCH).await.unwrap());
    assert!(h.pulls().is_empty());
    assert!(!types(&report).contains(&"commit.created"));
    let attempt = h.attempt().await;
    assert_eq!(attempt.status, AttemptStatus::Failed);
    assert_eq!(attempt.failure.unwrap().kind, FailureKind::PathViolation);
}

#[tokio::test]
async fn an_answer_that_changes_nothing_is_no_changes() {
    let h = Harness::start(&backlog(&["docs/INDEX.md"], "true")).await;
    h.llm
        .push_text(files_envelope(&[("docs/INDEX.md", "# Docs\n")]));
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::NoChanges, FailureClass::Permanent)
    );
    assert_eq!(h.github.push_count().unwrap(), 0);
    assert_eq!(
        h.attempt().await.failure.unwrap().kind,
        FailureKind::NoChanges
    );
}

/// `git log -1` of the attempt's worktree, formatted with `format`.
async fn last_commit(h: &Harness, format: &str) -> String {
    let repo = h.workspace_dir().join(ATTEMPT).join("repo");
    let out = tokio::process::Command::new("git")
        .args(["log", "-1", &format!("--format={format}")])
        .current_dir(repo)
        .output()
        .await
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn failing_tests_are_repaired_in_the_next_round() {
    let h = Harness::start(&default_backlog()).await;
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", BAD_GUIDE)]));
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    success(&report);
    let t = types(&report);
    let tests: Vec<&&str> = t.iter().filter(|t| t.starts_with("tests.")).collect();
    assert_eq!(tests, [&"tests.failed", &"tests.passed"]);
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    let repair = &requests[1].prompt;
    assert!(
        repair.contains("RETRY ATTEMPT - PREVIOUS IMPLEMENTATION FAILED"),
        "{repair}"
    );
    assert!(repair.contains("Test command: grep -q Setup docs/GUIDE.md"));
    assert!(repair.contains("CURRENT FILE CONTENTS (after previous attempt):"));
    assert!(
        repair.contains("To be written."),
        "the repair sees the previous attempt"
    );
    assert_eq!(h.gateway_calls().await.len(), 2);
    let attempt = h.attempt().await;
    assert_eq!((attempt.model_calls, attempt.test_runs), (2, 2));
}

#[tokio::test]
async fn tests_that_never_pass_fail_the_attempt_and_keep_the_output() {
    let h = Harness::start(&backlog(
        &["docs/GUIDE.md"],
        "echo checking docs/GUIDE.md; grep -q Setup docs/GUIDE.md || { echo 'FAIL: no Setup section'; exit 1; }",
    ))
    .await;
    h.llm
        .set_fallback(|_| LlmReply::Text(files_envelope(&[("docs/GUIDE.md", BAD_GUIDE)])));
    let mut env = h.env();
    env.insert(protocol::LEVIATHAN_REPAIR_ROUNDS, "2".into());
    let report = h.run(&env).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::TestsFailed, FailureClass::Transient)
    );
    assert!(
        f.summary.contains("after 2 repair round(s)"),
        "{}",
        f.summary
    );
    assert!(
        f.summary.contains("FAIL: no Setup section"),
        "{}",
        f.summary
    );
    assert_eq!(h.llm.requests().len(), 3);
    let outputs: Vec<_> = report
        .artifacts
        .iter()
        .filter(|a| a.kind == "test_output")
        .collect();
    // Three identical runs give one content-addressed artifact, referenced by three events.
    assert_eq!(outputs.len(), 1);
    let stored = h.artifacts.get(&outputs[0].sha256).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&stored).unwrap(),
        "checking docs/GUIDE.md\nFAIL: no Setup section\n"
    );
    let failed_runs: Vec<&NewEvent> = report
        .events
        .iter()
        .filter(|e| e.event_type == "tests.failed")
        .collect();
    assert_eq!(failed_runs.len(), 3);
    for run in failed_runs {
        assert_eq!(run.payload["output_sha256"], outputs[0].sha256.to_hex());
        assert_eq!(run.payload["exit_code"], 1);
    }
    assert_eq!(h.github.push_count().unwrap(), 0);
    assert_eq!(h.attempt().await.status, AttemptStatus::Failed);
}

#[tokio::test]
async fn the_budget_caps_model_calls() {
    let h = Harness::start(&default_backlog()).await;
    h.llm
        .set_fallback(|_| LlmReply::Text(files_envelope(&[("docs/GUIDE.md", BAD_GUIDE)])));
    let mut env = h.env();
    env.insert(protocol::LEVIATHAN_MAX_MODEL_CALLS, "2".into());
    let report = h.run(&env).await;
    let f = failure(&report);
    assert_eq!(f.kind, FailureKind::TestsFailed);
    assert!(
        f.summary.contains("budget spent (2 of 2 model calls"),
        "{}",
        f.summary
    );
    assert_eq!(h.llm.requests().len(), 2);
}

/// A spent budget is the gateway's word, not the worker's: the call it refuses fails the
/// attempt with kind `budget`, permanently for the attempt's own budget.
#[tokio::test]
async fn a_budget_the_gateway_finds_spent_fails_the_attempt_with_kind_budget() {
    let mut budgets = Budgets::default();
    budgets.attempt = Limit {
        calls: Some(1),
        ..Limit::default()
    };
    let h = Harness::start_with_budgets(
        FakeGitHub::start().await.unwrap(),
        &default_backlog(),
        true,
        budgets,
    )
    .await;
    h.llm
        .set_fallback(|_| LlmReply::Text(files_envelope(&[("docs/GUIDE.md", BAD_GUIDE)])));
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::Budget, FailureClass::Permanent),
        "{}",
        f.summary
    );
    assert!(f.summary.contains("budget_exhausted"), "{}", f.summary);
    assert_eq!(
        h.llm.requests().len(),
        1,
        "the refused call never went upstream"
    );
    assert_eq!(h.gateway_calls().await.len(), 1);
    assert_eq!(h.attempt().await.status, AttemptStatus::Failed);
}

#[tokio::test]
async fn an_existing_open_pull_request_is_reused() {
    let h = Harness::start(&default_backlog()).await;
    // An earlier run of this attempt pushed the branch and opened the PR, then died.
    push_branch(&h.github, &h.repo_url, BRANCH).await;
    let octocrab = octocrab::Octocrab::builder()
        .base_uri(h.github.api_url())
        .unwrap()
        .personal_token(h.github.token().to_owned())
        .build()
        .unwrap();
    let existing = octocrab
        .pulls(OWNER, REPO)
        .create("Leviathan: Write the guide", BRANCH, "main")
        .send()
        .await
        .unwrap();
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    let (_, commit_sha, pr_number, _) = success(&report);
    assert_eq!(pr_number, existing.number);
    assert_eq!(h.pulls().len(), 1);
    let pr_created = report
        .events
        .iter()
        .find(|e| e.event_type == "pr.created")
        .unwrap();
    assert_eq!(pr_created.payload["reused"], true);
    assert_eq!(
        h.github.branch_sha(OWNER, REPO, BRANCH).await.unwrap(),
        Some(commit_sha),
        "the attempt's own branch is replaced by its new commit"
    );
}

#[tokio::test]
async fn a_rejected_push_fails_the_attempt() {
    let h = Harness::start(&default_backlog()).await;
    h.github.reject_pushes(true);
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::Push, FailureClass::Transient)
    );
    assert!(f.summary.contains("`git push` failed"), "{}", f.summary);
    assert!(
        f.summary.contains("pre-receive hook declined"),
        "{}",
        f.summary
    );
    assert!(h.pulls().is_empty());
    assert_eq!(h.attempt().await.failure.unwrap().kind, FailureKind::Push);
}

#[tokio::test]
async fn github_401_is_a_permanent_pull_request_failure() {
    let h = Harness::start(&default_backlog()).await;
    h.github.fail_next_rest(1, RestFailure::new(401));
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::PullRequest, FailureClass::Permanent)
    );
    assert!(f.summary.contains("HTTP 401"), "{}", f.summary);
    assert!(f.summary.contains("Bad credentials"), "{}", f.summary);
    assert!(h.pulls().is_empty());
    assert!(types(&report).contains(&"commit.created"));
    assert!(!types(&report).contains(&"pr.created"));
}

#[tokio::test]
async fn a_github_rate_limit_is_a_transient_pull_request_failure() {
    let h = Harness::start(&default_backlog()).await;
    h.github.fail_next_rest(1, RestFailure::rate_limited());
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::PullRequest, FailureClass::Transient)
    );
    assert!(f.summary.contains("rate limit"), "{}", f.summary);
}

#[tokio::test]
async fn three_unusable_answers_in_a_row_fail_the_attempt() {
    let h = Harness::start(&default_backlog()).await;
    h.llm
        .set_fallback(|_| LlmReply::Text("I would rather describe the change in prose.".into()));
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::Model, FailureClass::Transient)
    );
    assert!(
        f.summary.starts_with("3 unusable model answers in a row"),
        "{}",
        f.summary
    );
    assert_eq!(h.llm.requests().len(), 3);
    assert_eq!(h.attempt().await.model_calls, 3, "every call is recorded");
}

#[tokio::test]
async fn the_targets_test_command_applies_when_the_task_has_none() {
    let h = Harness::start(
        &default_backlog().replace("    test_command: \"grep -q Setup docs/GUIDE.md\"\n", ""),
    )
    .await;
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", BAD_GUIDE)]));
    let mut env = h.env();
    env.insert(
        protocol::LEVIATHAN_TEST_COMMAND,
        "grep -q Setup docs/GUIDE.md".into(),
    );
    env.insert(protocol::LEVIATHAN_REPAIR_ROUNDS, "0".into());
    let report = h.run(&env).await;
    let f = failure(&report);
    assert_eq!(f.kind, FailureKind::TestsFailed, "{}", report.log);
    let run = report
        .events
        .iter()
        .find(|e| e.event_type == "tests.failed")
        .unwrap();
    assert_eq!(run.payload["command"], "grep -q Setup docs/GUIDE.md");
}

#[tokio::test]
async fn model_529_is_retried_after_retry_after() {
    let h = Harness::start(&default_backlog()).await;
    h.llm.push_error(529, Some(1));
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    success(&report);
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the same request is retried"
    );
    assert_eq!(h.attempt().await.model_calls, 1, "one call, retried inside");
}

#[tokio::test]
async fn control_plane_outage_during_the_final_post_is_retried() {
    let h = Harness::start(&default_backlog()).await;
    // Request 0 is attempt.started, 1 the model call through the gateway; the next three
    // requests (artifact uploads) fail with 503.
    h.outage.schedule(2, 3);
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    success(&report);
    assert_eq!(report.delivery, Delivery::Delivered, "{}", report.log);
    assert_eq!(h.outage.failed.load(Ordering::SeqCst), 3);
    assert_eq!(h.attempt().await.status, AttemptStatus::Succeeded);
    // attempt.started was posted twice (alone, then with the bundle) and stored once.
    let started = h
        .logged_types()
        .await
        .into_iter()
        .filter(|t| t == "attempt.started")
        .count();
    assert_eq!(started, 1);
}

#[tokio::test]
async fn control_plane_down_for_the_final_post_still_writes_the_result() {
    let h = Harness::start(&default_backlog()).await;
    h.outage.schedule(2, usize::MAX);
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let report = h.run(&h.env()).await;
    let (_, _, pr_number, _) = success(&report);
    assert_eq!(
        report.exit_code(),
        0,
        "the attempt's code, whatever the delivery"
    );
    let Delivery::Failed(reason) = &report.delivery else {
        panic!("expected a failed delivery: {:?}", report.delivery)
    };
    assert!(reason.contains("503"), "{reason}");
    // The client retried: 5 tries for the first upload, then it gave up.
    assert_eq!(h.outage.failed.load(Ordering::SeqCst), 5);
    assert_eq!(
        std::fs::read_to_string(h.termination_path())
            .unwrap()
            .trim(),
        report.result_line()
    );
    assert!(
        report
            .result_line()
            .contains(&format!("\"pr_number\":{pr_number}"))
    );
    assert_eq!(h.attempt().await.status, AttemptStatus::Running);
}

#[tokio::test]
async fn an_unknown_attempt_is_refused_before_any_work() {
    let h = Harness::start_with(
        FakeGitHub::start().await.unwrap(),
        &default_backlog(),
        false,
    )
    .await;
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::Setup, FailureClass::Permanent)
    );
    assert!(
        f.summary.contains("refused attempt.started"),
        "{}",
        f.summary
    );
    assert!(matches!(report.delivery, Delivery::Refused(_)));
    assert!(h.github.requests().is_empty(), "nothing was cloned");
    assert!(h.llm.requests().is_empty());
    assert!(h.ledger.events().read(0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_task_is_a_permanent_setup_failure_naming_file_and_id() {
    let h = Harness::start(&default_backlog().replace(TASK, "other-task")).await;
    let report = h.run(&h.env()).await;
    let f = failure(&report);
    assert_eq!(
        (f.kind, f.class),
        (FailureKind::Setup, FailureClass::Permanent)
    );
    assert_eq!(
        f.summary,
        ".leviathan/backlog.yaml has no task `docs-guide` (tasks: other-task)"
    );
    assert!(h.llm.requests().is_empty());
    assert_eq!(h.attempt().await.status, AttemptStatus::Failed);
}

#[tokio::test]
async fn the_openai_provider_delivers_too() {
    let h = Harness::start(&default_backlog()).await;
    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let mut env = h.env();
    env.insert(protocol::LEVIATHAN_MODEL_PROVIDER, "openai".into());
    env.insert(protocol::LEVIATHAN_OPENAI_MODEL, "qwen2.5-coder".into());
    env.insert(protocol::LEVIATHAN_DRAFT_PRS, "true".into());
    env.insert(protocol::LEVIATHAN_GIT_AUTHOR_NAME, "Robo Author".into());
    env.insert(
        protocol::LEVIATHAN_GIT_AUTHOR_EMAIL,
        "robo@example.com".into(),
    );
    let report = h.run(&env).await;
    success(&report);
    assert!(h.pulls()[0].draft, "LEVIATHAN_DRAFT_PRS opens drafts");
    assert_eq!(
        last_commit(&h, "%an <%ae> / %cn <%ce>").await,
        "Robo Author <robo@example.com> / Robo Author <robo@example.com>"
    );
    let requests = h.llm.requests();
    assert_eq!(requests[0].provider, Provider::OpenAi);
    assert!(requests[0].authenticated);
    let calls = h.gateway_calls().await;
    let call = &calls[0];
    assert_eq!(call.payload["provider"], "openai");
    assert_eq!(call.payload["model"], "qwen2.5-coder");
}

fn write_script(dir: &Path, body: &str) -> String {
    let path = dir.join("agent.sh");
    std::fs::write(&path, body).unwrap();
    format!("sh {}", path.display())
}

#[tokio::test]
async fn the_command_provider_edits_the_worktree() {
    let h = Harness::start(&default_backlog()).await;
    let scripts = TempDir::new().unwrap();
    let command = write_script(
        scripts.path(),
        r#"set -e
prompt=$(cat)
case "$prompt" in *"TASK DETAILS:"*"HOW TO DELIVER:"*) ;; *) echo "unexpected prompt" >&2; exit 3;; esac
mkdir -p docs
printf '# %s\n\nSetup: run make (task %s, round %s).\n' "$LEVIATHAN_TASK_TITLE" "$LEVIATHAN_TASK_ID" "$LEVIATHAN_REPAIR_ROUND" > docs/GUIDE.md
echo "edited $LEVIATHAN_TASK_ALLOWED_PATHS"
"#,
    );
    let mut env = h.env();
    env.insert(protocol::LEVIATHAN_MODEL_PROVIDER, "command".into());
    env.insert(protocol::LEVIATHAN_MODEL_COMMAND, command);
    let report = h.run(&env).await;
    success(&report);
    assert_eq!(
        h.github
            .read_file(OWNER, REPO, BRANCH, "docs/GUIDE.md")
            .await
            .unwrap()
            .unwrap(),
        b"# Write the guide\n\nSetup: run make (task docs-guide, round 0).\n"
    );
    let transcript = report
        .artifacts
        .iter()
        .find(|a| a.name == "response-r0-c1.txt")
        .unwrap();
    let stored = h.artifacts.get(&transcript.sha256).await.unwrap();
    assert_eq!(&stored[..], b"edited docs/GUIDE.md\n");
    assert!(h.llm.requests().is_empty());
    assert!(
        h.gateway_calls().await.is_empty(),
        "this command called no model"
    );
}

/// An external agent reaches a model only through the gateway: it finds no provider key in its
/// environment, its call with the gateway's base URL and key (an OpenAI-compatible client) is
/// metered as the attempt's, and the upstream refuses a call made directly without a key.
#[tokio::test]
async fn a_command_agent_calls_the_model_through_the_gateway_and_holds_no_provider_key() {
    let h = Harness::start(&default_backlog()).await;
    h.llm.push_text("the agent's plan");
    let scripts = TempDir::new().unwrap();
    let command = write_script(
        scripts.path(),
        &format!(
            r#"set -e
cat > /dev/null
if env | grep -qF '{key}'; then echo "found the provider key" >&2; exit 3; fi
curl -sf "$OPENAI_BASE_URL/chat/completions" -H "Authorization: Bearer $OPENAI_API_KEY" \
  -H 'content-type: application/json' \
  -d '{{"model":"gpt-5-mini","messages":[{{"role":"user","content":"plan"}}]}}' > "$TMPDIR/answer.json"
grep -q "the agent's plan" "$TMPDIR/answer.json"
status=$(curl -s -o /dev/null -w '%{{http_code}}' "{upstream}/v1/chat/completions" \
  -H 'content-type: application/json' \
  -d '{{"model":"gpt-5-mini","messages":[{{"role":"user","content":"direct"}}]}}')
[ "$status" = 401 ] || {{ echo "the upstream answered $status without a key" >&2; exit 4; }}
mkdir -p docs && printf '# Guide\n\nSetup: run make.\n' > docs/GUIDE.md
"#,
            key = h.llm.api_key(),
            upstream = h.llm.url()
        ),
    );
    let mut env = h.env();
    env.insert(protocol::LEVIATHAN_MODEL_PROVIDER, "command".into());
    env.insert(protocol::LEVIATHAN_MODEL_COMMAND, command);
    let report = h.run(&env).await;
    success(&report);
    let calls = h.gateway_calls().await;
    assert_eq!(calls.len(), 1, "{}", report.log);
    assert_eq!(calls[0].payload["provider"], "openai");
    assert_eq!(calls[0].payload["attempt_id"], ATTEMPT);
    assert!(calls[0].payload["tokens_out"].as_u64().unwrap() > 0);
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[0].authenticated,
        "through the gateway, with its key"
    );
    assert!(!requests[1].authenticated, "directly, with none");
    assert_eq!(h.attempt().await.model_calls, 1);
}

#[tokio::test]
async fn command_edits_outside_the_allowed_paths_are_caught_on_the_final_tree() {
    let h = Harness::start(&backlog(&["docs/"], "true")).await;
    let scripts = TempDir::new().unwrap();
    let command = write_script(
        scripts.path(),
        "cat > /dev/null\necho new > docs/ok.md\nrm README.md\nln -s ../README.md docs/link\ngit mv docs/INDEX.md INDEX.md\ngit commit -qm sneaky\n",
    );
    let mut env = h.env();
    env.insert(protocol::LEVIATHAN_MODEL_PROVIDER, "command".into());
    env.insert(protocol::LEVIATHAN_MODEL_COMMAND, command);
    let report = h.run(&env).await;
    let f = failure(&report);
    assert_eq!(f.kind, FailureKind::PathViolation, "{}", report.log);
    for expected in [
        "`README.md` (deleted) is outside allowed_paths",
        "`docs/link` (added) is a symbolic link",
        "`INDEX.md` (renamed) is outside allowed_paths",
    ] {
        assert!(f.summary.contains(expected), "{expected}: {}", f.summary);
    }
    assert!(report.log.contains("HEAD moved"), "{}", report.log);
    assert_eq!(h.github.push_count().unwrap(), 0);
}

/// Every place a secret could leak to: the report (log, events, artifacts, result), the
/// termination file, every file of the attempt's workspace (`.git/config` included), the
/// control plane's log and artifacts, and what the GitHub and model servers received.
#[tokio::test]
async fn secrets_never_appear_in_any_output() {
    let github = FakeGitHub::builder()
        .clone_requires_token(true)
        .start()
        .await
        .unwrap();
    let h = Harness::start_with(
        github,
        &backlog(
            &["docs/GUIDE.md"],
            "grep -q Setup docs/GUIDE.md; env; git config --list --show-origin",
        ),
        true,
    )
    .await;
    let gh = h.github.token().to_owned();
    let key = h.llm.api_key().to_owned();
    let own = h.worker_token.clone();
    // A model that echoes credentials it should never have seen (the model key the worker never
    // holds is searched for everywhere all the same).
    h.llm.push_text(format!(
        "Note: token {gh} and key {own} and {CP_TOKEN}.\n{}",
        files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)])
    ));
    let report = h.run(&h.env()).await;
    success(&report);

    let secrets = [
        gh.clone(),
        key.clone(),
        own.clone(),
        CP_TOKEN.to_owned(),
        leviathan_worker_basic(&gh),
    ];
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("log".into(), report.log.clone().into_bytes()),
        ("result".into(), report.result_line().into_bytes()),
        ("events".into(), serde_json::to_vec(&report.events).unwrap()),
        (
            "termination".into(),
            std::fs::read(h.termination_path()).unwrap(),
        ),
    ];
    for a in &report.artifacts {
        haystacks.push((format!("artifact {}", a.name), a.content.to_vec()));
        haystacks.push((
            format!("stored artifact {}", a.name),
            h.artifacts.get(&a.sha256).await.unwrap().to_vec(),
        ));
    }
    let logged = h.ledger.events().read(0, 10_000).await.unwrap();
    haystacks.push((
        "control plane log".into(),
        serde_json::to_vec(&logged).unwrap(),
    ));
    for file in walk(&h.workspace_dir()) {
        haystacks.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    for r in h.github.requests() {
        haystacks.push((
            format!("github request {}", r.path),
            r.path.clone().into_bytes(),
        ));
    }
    for r in h.llm.requests() {
        haystacks.push(("llm prompt".into(), r.prompt.into_bytes()));
    }
    assert!(
        haystacks.iter().any(|(n, _)| n.ends_with(".git/config")),
        "the scan covers .git/config"
    );
    for (name, bytes) in &haystacks {
        let text = String::from_utf8_lossy(bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into {name}"
            );
        }
    }
    // The redaction is visible where the model echoed the secrets.
    let response = report
        .artifacts
        .iter()
        .find(|a| a.kind == "model_output")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&response.content)
            .starts_with("Note: token [REDACTED] and key [REDACTED] and [REDACTED]."),
    );
    // The test command's environment had no secret and git's config no credential.
    let tests = report
        .artifacts
        .iter()
        .find(|a| a.kind == "test_output")
        .unwrap();
    let tests = String::from_utf8_lossy(&tests.content);
    assert!(
        !tests.contains("GITHUB_TOKEN") && !tests.contains("extraheader"),
        "{tests}"
    );
    assert!(h.github.requests().iter().any(|r| r.authorization));
}

/// The Basic credential the worker derives for git (what it must never write out either).
fn leviathan_worker_basic(token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// `git bundle create` of `main` as the fake forge holds it: the bundle and its commit.
fn bundle_of_main(h: &Harness) -> (Vec<u8>, String) {
    let dir = TempDir::new().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let header = format!(
        "http.extraHeader=Authorization: Bearer {}",
        h.github.token()
    );
    git(&["-c", &header, "clone", "--quiet", &h.repo_url, "repo"]);
    git(&[
        "-C",
        "repo",
        "bundle",
        "create",
        "--quiet",
        "../base.bundle",
        "main",
    ]);
    let commit = git(&["-C", "repo", "rev-parse", "HEAD"]);
    (
        std::fs::read(dir.path().join("base.bundle")).unwrap(),
        commit,
    )
}

// Two threads: the test's git clone blocks one while the fake forge answers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_base_is_cloned_from_its_bundle_with_the_attempt_token_only() {
    let h = Harness::start_with(
        FakeGitHub::start().await.unwrap(),
        &default_backlog(),
        false,
    )
    .await;
    let (bundle, commit) = bundle_of_main(&h);
    let stored = h.artifacts.put(bundle.into()).await.unwrap();
    let other = h
        .artifacts
        .put(b"another attempt's prompt".to_vec().into())
        .await
        .unwrap();
    let base = AttemptBase {
        commit: commit.clone(),
        bundle_sha256: stored.sha256,
    };
    h.create_attempt(Some(base)).await;
    let token = h
        .state
        .mint(
            &attempt_id(),
            Timestamp::now().saturating_add(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    // The attempt's token reads its base bundle and no other artifact.
    let client =
        leviathan_api::client::ControlPlaneClient::new(&h.api_url, token.expose().to_owned())
            .unwrap();
    assert_eq!(
        client.get_artifact(&stored.sha256).await.unwrap().len() as u64,
        stored.size
    );
    let refused = client.get_artifact(&other.sha256).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");

    h.llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let mut env = h.env();
    env.insert(protocol::CONTROL_PLANE_TOKEN, token.expose().to_owned());
    env.insert(protocol::LEVIATHAN_BASE_BUNDLE, stored.sha256.to_hex());
    env.insert(protocol::LEVIATHAN_BASE_COMMIT, commit.clone());
    let fetches = h.github.requests().len();
    let report = h.run(&env).await;
    success(&report);
    assert!(
        report.log.contains(&format!("cloned main at {commit}")),
        "{}",
        report.log
    );
    let cloned = h.github.requests()[fetches..]
        .iter()
        .any(|r| r.path.contains("git-upload-pack"));
    assert!(
        !cloned,
        "the worker fetched from the forge instead of the bundle"
    );
}
