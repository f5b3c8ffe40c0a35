//! `leviathan schedule` and `leviathan serve --schedule` end to end: the real binary, the local
//! executor running the real `leviathan worker`, a control plane served by the test (memory
//! stores), `FakeGitHub` and `ScriptedLlm` behind the control plane's model gateway, all on
//! 127.0.0.1.

mod support {
    pub(crate) mod cli;
}

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use leviathan::api::{
    ApiConfig, ApiState, BearerToken,
    gateway::{GatewayConfig, Upstream},
    router,
};
use leviathan_core::{
    Ledger,
    memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    model::AttemptStatus,
    secret::Secret,
    store::ArtifactStore,
};
use leviathan_testkit::{
    TestServer,
    github::FakeGitHub,
    llm::{LlmReply, ScriptedLlm, files_envelope},
};

const OWNER: &str = "acme";
const REPO: &str = "widgets";
const CP_TOKEN: &str = "cp-token-for-scheduler-cli-tests-0123456789";
/// Upper bound for anything these tests wait for; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(120);
/// The variable the gateway file names for the scripted model's key.
const MODEL_KEY_ENV: &str = "LEVIATHAN_TEST_MODEL_KEY";

const BACKLOG: &str = r#"version: "1"
tasks:
  - id: docs-a
    title: Write A
    priority: high
    ready: true
    allowed_paths: ["docs/a.md"]
    test_command: "test -s docs/a.md"
  - id: docs-b
    title: Write B
    priority: medium
    ready: true
    allowed_paths: ["docs/b.md"]
  - id: docs-c
    title: Write C, after A
    priority: low
    ready: true
    dependencies: [docs-a]
    allowed_paths: ["docs/c.md"]
  - id: later
    title: Not ready yet
    ready: false
    allowed_paths: ["docs/later.md"]
"#;

/// The control plane, the forge, the model and a home directory with a target file.
struct World {
    github: FakeGitHub,
    llm: ScriptedLlm,
    _api: TestServer,
    api_url: String,
    ledger: Arc<Ledger>,
    home: tempfile::TempDir,
    workspaces: tempfile::TempDir,
    target_file: PathBuf,
    /// While false, the model answers 529 (overloaded) with a retry-after: workers wait.
    model_open: Arc<AtomicBool>,
}

impl World {
    async fn start(backlog: &str, guardrails: &str) -> Self {
        let github = FakeGitHub::start().await.expect("FakeGitHub");
        let repo_url = github
            .create_target_repo(OWNER, REPO, backlog)
            .await
            .expect("seed repository");
        let llm = ScriptedLlm::start().await.expect("ScriptedLlm");
        let model_open = Arc::new(AtomicBool::new(true));
        llm.set_fallback({
            let open = model_open.clone();
            move |request| {
                if !open.load(Ordering::SeqCst) {
                    return LlmReply::Error {
                        status: 529,
                        retry_after: Some(3),
                    };
                }
                // Write the one file the task may change.
                let path = ["docs/a.md", "docs/b.md", "docs/c.md", "docs/later.md"]
                    .into_iter()
                    .find(|p| request.prompt.contains(p))
                    .unwrap_or("docs/unknown.md");
                LlmReply::Text(files_envelope(&[(path, format!("# {path}\n\nWritten.\n"))]))
            }
        });
        let ledger = Arc::new(
            Ledger::open(
                Arc::new(MemoryEventStore::new()),
                Arc::new(MemoryGraphStore::new()),
            )
            .await
            .expect("ledger"),
        );
        let state = ApiState::new(
            ledger.clone(),
            Arc::new(MemoryArtifactStore::new()) as Arc<dyn ArtifactStore>,
            ApiConfig::new(BearerToken::new(CP_TOKEN).unwrap()).with_gateway(GatewayConfig::new(
                Some(Upstream::new(llm.url(), Some(Secret::new(llm.api_key())))),
                None,
            )),
        );
        let api = TestServer::spawn(router(state))
            .await
            .expect("control plane");
        let home = tempfile::tempdir().unwrap();
        let target_file = home.path().join("demo.yaml");
        std::fs::write(
            &target_file,
            format!(
                "name: demo\nrepo_url: {repo_url}\ndefault_branch: main\nautonomy: {{enabled: true}}\n\
                 guardrails:\n  allowed_path_prefixes: [docs/]\n{guardrails}"
            ),
        )
        .unwrap();
        // For `serve --schedule`, whose workers call the model through that process's gateway.
        std::fs::write(
            home.path().join("gateway.yaml"),
            format!(
                "anthropic: {{ base_url: '{}', key_env: {MODEL_KEY_ENV} }}\n",
                llm.url()
            ),
        )
        .unwrap();
        Self {
            api_url: api.url(),
            _api: api,
            github,
            llm,
            ledger,
            home,
            workspaces: tempfile::tempdir().unwrap(),
            target_file,
            model_open,
        }
    }

    /// `leviathan args…` with everything the scheduler and its workers need.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = support::cli::leviathan(self.home.path());
        for name in [
            "GITHUB_TOKEN",
            "LEVIATHAN_GITHUB_API_URL",
            "LEVIATHAN_WORKSPACE_ROOT",
            "LEVIATHAN_WORKER_BIN",
            "LEVIATHAN_WORKER_CONTROL_PLANE_URL",
            "LEVIATHAN_MODEL_PROVIDER",
        ] {
            command.env_remove(name);
        }
        command
            .args(args)
            .env("LEVIATHAN_LOG", "info")
            .env("LEVIATHAN_CONTROL_PLANE_TOKEN", CP_TOKEN)
            .env("GITHUB_TOKEN", self.github.token())
            .env("LEVIATHAN_GITHUB_API_URL", self.github.api_url())
            .env(MODEL_KEY_ENV, self.llm.api_key())
            .env("LEVIATHAN_REPAIR_ROUNDS", "0")
            .env("LEVIATHAN_WORKSPACE_ROOT", self.workspaces.path())
            .env("LEVIATHAN_WORKER_BIN", env!("CARGO_BIN_EXE_leviathan"));
        command
    }

    /// `schedule --once` against the test's control plane.
    async fn once(&self) -> support::cli::Outcome {
        let target = self.target_file.display().to_string();
        let mut command = self.command(&[
            "schedule",
            "--once",
            "--target",
            &target,
            "--api",
            &self.api_url,
        ]);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("the binary runs");
        support::cli::Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn count(&self, event_type: &str) -> usize {
        self.events()
            .await
            .iter()
            .filter(|e| e.event_type == event_type)
            .count()
    }

    async fn events(&self) -> Vec<leviathan_core::Event> {
        self.ledger.events().read(0, 100_000).await.unwrap()
    }

    fn pull_heads(&self) -> Vec<String> {
        let mut heads: Vec<String> = self
            .github
            .pull_requests(OWNER, REPO)
            .unwrap()
            .into_iter()
            .map(|p| p.head)
            .collect();
        heads.sort();
        heads
    }

    async fn assert_chain_verifies(&self) {
        let report = self.ledger.events().verify().await.unwrap();
        assert!(report.is_ok(), "the chain does not verify: {report:?}");
    }
}

/// A background `leviathan` process whose stderr is collected line by line.
struct Background {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Background {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap()
    }

    /// Waits (bounded) until the log holds `needle`.
    async fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < PATIENCE,
                "no `{needle}` in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit code (bounded wait).
    async fn terminate(mut self) -> (i32, String) {
        rustix::process::kill_process(self.pid(), rustix::process::Signal::TERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), self.log());
            }
            assert!(
                start.elapsed() < PATIENCE,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the process dies at once, whatever it was doing.
    fn kill(mut self) -> String {
        rustix::process::kill_process(self.pid(), rustix::process::Signal::KILL).unwrap();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls the control plane's graph (an external process writes to it) until `done` holds.
async fn eventually(world: &World, what: &str, done: impl Fn(&leviathan_core::Graph) -> bool) {
    let start = Instant::now();
    loop {
        world.ledger.catch_up().await.unwrap();
        if done(&*world.ledger.graph().await) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_pull_requests_and_runs_again_without_duplicates() {
    let world = World::start(BACKLOG, "  max_open_prs: 10\n  max_running_attempts: 2\n").await;

    // First run: the two independent tasks; C waits on A, `later` is not ready.
    let first = world.once().await.expect(0);
    assert!(
        first.stderr.contains("dispatch demo/docs-a attempt="),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("skip demo/docs-c: waiting on docs-a"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("skip demo/later: not ready"),
        "{}",
        first.stderr
    );
    assert_eq!(world.pull_heads().len(), 2, "{}", first.stderr);
    assert_eq!(world.count("attempt.created").await, 2);
    assert_eq!(world.count("attempt.succeeded").await, 2);
    assert_eq!(world.count("task.completed").await, 2);

    // Second run: C, now that A is done.
    let second = world.once().await.expect(0);
    assert!(
        second.stderr.contains("dispatch demo/docs-c attempt="),
        "{}",
        second.stderr
    );
    let heads = world.pull_heads();
    assert_eq!(heads.len(), 3);
    for (head, task) in heads.iter().zip(["docs-a", "docs-b", "docs-c"]) {
        assert!(
            head.starts_with(&format!("agent/{task}-attempt-")),
            "{heads:?}"
        );
    }
    let pushes = world.github.push_count().unwrap();
    let events = world.events().await.len();

    // Third run over the same log: nothing to do, nothing created twice.
    let third = world.once().await.expect(0);
    assert!(!third.stderr.contains("dispatch "), "{}", third.stderr);
    assert_eq!(world.count("attempt.created").await, 3);
    assert_eq!(world.pull_heads(), heads);
    assert_eq!(world.github.push_count().unwrap(), pushes);
    assert_eq!(world.events().await.len(), events);

    world.ledger.catch_up().await.unwrap();
    let summary = world.ledger.graph().await.summary();
    assert_eq!(summary.tasks_by_status.get("completed"), Some(&3));
    assert_eq!(summary.tasks_by_status.get("pending"), Some(&1));
    assert_eq!(summary.open_prs, 3);
    world.assert_chain_verifies().await;
    // Each worker reported with a token of its own attempt, minted at dispatch.
    let events = world.events().await;
    let issued = events.iter().filter(|e| e.event_type == "token.issued");
    assert_eq!(issued.count(), 3, "one worker token per attempt");
    for event in events
        .iter()
        .filter(|e| e.event_type == "attempt.succeeded")
    {
        let principal = event.principal.as_ref().expect("a principal");
        assert_eq!(principal.role, leviathan_core::Role::Worker, "{event:?}");
        let attempt = event.payload["attempt_id"].as_str();
        assert_eq!(principal.attempt.as_ref().map(|a| a.as_str()), attempt);
    }
    let log = format!("{}{}{}", first.stderr, second.stderr, third.stderr);
    assert!(
        !log.contains(world.github.token()),
        "the forge token leaked into the log"
    );
    assert!(
        !log.contains(CP_TOKEN),
        "the control-plane token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_scheduler_is_restarted_and_follows_its_running_attempt() {
    let backlog = "tasks:\n  - id: docs-a\n    title: Write A\n    priority: high\n    ready: true\n    allowed_paths: [\"docs/a.md\"]\n";
    let world = World::start(backlog, "  max_open_prs: 5\n").await;
    world.model_open.store(false, Ordering::SeqCst);
    let target = world.target_file.display().to_string();
    let daemon_args = [
        "schedule",
        "--target",
        &target,
        "--api",
        &world.api_url,
        "--tick",
        "1",
    ];

    // The attempt runs: the worker started and waits for the (overloaded) model.
    let first = Background::spawn(world.command(&daemon_args));
    first.wait_for_log("dispatch demo/docs-a attempt=").await;
    eventually(&world, "the worker to start", |g| {
        g.live_attempts()
            .any(|a| a.status == AttemptStatus::Running)
    })
    .await;
    let start = Instant::now();
    while world.llm.requests().is_empty() {
        assert!(
            start.elapsed() < PATIENCE,
            "the worker never asked the model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_log = first.kill();

    // A new scheduler finds the attempt and follows the worker instead of giving up on it.
    let second = Background::spawn(world.command(&daemon_args));
    second.wait_for_log("reattach demo/docs-a attempt=").await;
    world.model_open.store(true, Ordering::SeqCst);
    eventually(&world, "the attempt to succeed", |g| {
        g.tasks_of(&"demo".parse().unwrap())
            .any(|t| t.status == leviathan_core::model::TaskStatus::Completed)
    })
    .await;
    second.wait_for_log("complete demo/docs-a").await;
    let (code, second_log) = second.terminate().await;
    assert_eq!(code, 0, "{second_log}");

    assert_eq!(
        world.count("attempt.created").await,
        1,
        "re-attached, not dispatched again:\n{first_log}\n---\n{second_log}"
    );
    assert_eq!(world.count("attempt.succeeded").await, 1);
    assert_eq!(world.count("attempt.failed").await, 0, "{second_log}");
    assert_eq!(world.count("task.completed").await, 1);
    assert_eq!(world.pull_heads().len(), 1, "one task, one pull request");
    assert!(!second_log.contains("lost demo/docs-a"), "{second_log}");
    assert!(
        second_log.contains("following a worker started by an earlier process"),
        "the live worker was followed:\n{second_log}"
    );
    world.assert_chain_verifies().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_schedule_runs_the_scheduler_inside_the_control_plane() {
    let backlog = "tasks:\n  - id: docs-b\n    title: Write B\n    ready: true\n    allowed_paths: [\"docs/b.md\"]\n";
    let world = World::start(backlog, "  max_open_prs: 5\n").await;
    let target = world.target_file.display().to_string();
    let gateway = world.home.path().join("gateway.yaml").display().to_string();
    let mut command = world.command(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--store",
        "memory:",
        "--schedule",
        &target,
        "--tick",
        "1",
        "--gateway",
        &gateway,
    ]);
    command.env_remove("LEVIATHAN_STORE");
    let served = Background::spawn(command);
    served.wait_for_log("complete demo/docs-b").await;
    let (code, log) = served.terminate().await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stopping the scheduler first"), "{log}");
    let heads = world.pull_heads();
    assert_eq!(heads.len(), 1, "{log}");
    assert!(heads[0].starts_with("agent/docs-b-attempt-"));
    // The worker reported to the serving process itself (the test's control plane saw nothing).
    assert_eq!(world.count("attempt.created").await, 0);
}

/// A scheduler on a store (here PostgreSQL, shared with `serve` on one host) signs each worker's
/// token with the keyring beside the token file; the worker reports with it, never with the
/// scheduler's own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_on_a_store_gives_each_worker_a_token_of_its_own() {
    let backlog = "tasks:\n  - id: docs-b\n    title: Write B\n    ready: true\n    allowed_paths: [\"docs/b.md\"]\n";
    let world = World::start(backlog, "  max_open_prs: 5\n").await;
    let db = leviathan_store_pg::testkit::TestDatabase::create().await;
    let gateway = world.home.path().join("gateway.yaml").display().to_string();
    let served = support::cli::Served::start_with_env(
        world.home.path(),
        &["--store", db.url(), "--gateway", &gateway],
        &[
            ("LEVIATHAN_CONTROL_PLANE_TOKEN", CP_TOKEN),
            (MODEL_KEY_ENV, world.llm.api_key()),
        ],
    );
    let target = world.target_file.display().to_string();
    let mut command = world.command(&[
        "schedule",
        "--once",
        "--target",
        &target,
        "--store",
        db.url(),
    ]);
    command.env("LEVIATHAN_WORKER_CONTROL_PLANE_URL", &served.url);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the binary runs");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");

    let events = db.store().await.events().read(0, 10_000).await.unwrap();
    let issued: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "token.issued")
        .collect();
    assert_eq!(issued.len(), 1, "one attempt, one minted token: {log}");
    let minted = issued[0].payload["token_id"].as_str().unwrap().to_owned();
    assert_eq!(issued[0].payload["role"], "worker");
    let succeeded = events
        .iter()
        .find(|e| e.event_type == "attempt.succeeded")
        .unwrap_or_else(|| panic!("the worker reported its success: {log}"));
    let principal = succeeded
        .principal
        .as_ref()
        .expect("ingest records who wrote it");
    assert_eq!(
        principal.token_id.as_str(),
        minted,
        "written with the attempt's own token"
    );
    assert!(
        events
            .iter()
            .filter_map(|e| e.principal.as_ref())
            .all(|p| p.token_id.as_str() != "static-admin"),
        "no event came in with the shared admin token"
    );
    assert_eq!(world.pull_heads().len(), 1, "{log}");
}

#[test]
fn configuration_errors_exit_2_and_say_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = support::cli::leviathan(home.path());
        command.env_remove("GITHUB_TOKEN").args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        support::cli::run_with(&mut command)
    };

    let missing = run(
        &[
            "schedule", "--once", "--target", "nope", "--store", "memory:",
        ],
        &[],
    )
    .expect(2);
    let expected_home = home.path().join(".leviathan/targets/nope.yaml");
    assert!(
        missing.stderr.contains("`nope`")
            && missing
                .stderr
                .contains(&expected_home.display().to_string()),
        "{}",
        missing.stderr
    );

    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: demo\nrepo_url: https://example.com/o/r.git\nmax_open_pr: 2\n",
    )
    .unwrap();
    let bad_arg = bad.display().to_string();
    let refused = run(
        &[
            "schedule", "--once", "--target", &bad_arg, "--store", "memory:",
        ],
        &[],
    )
    .expect(2);
    assert!(
        refused.stderr.contains("bad.yaml") && refused.stderr.contains("max_open_pr"),
        "{}",
        refused.stderr
    );

    // Found by name under ~/.leviathan/targets; without GITHUB_TOKEN nothing starts.
    let targets = home.path().join(".leviathan/targets");
    std::fs::create_dir_all(&targets).unwrap();
    std::fs::write(
        targets.join("demo.yaml"),
        "repo_url: http://127.0.0.1:9/acme/gone.git\nautonomy: {enabled: true}\n",
    )
    .unwrap();
    let no_token = run(
        &[
            "schedule", "--once", "--target", "demo", "--store", "memory:",
        ],
        &[],
    )
    .expect(2);
    assert!(
        no_token.stderr.contains("GITHUB_TOKEN"),
        "{}",
        no_token.stderr
    );

    // With a token, a target whose repository cannot be read fails closed; the cycle ran: 0.
    let ran = run(
        &[
            "schedule", "--once", "--target", "demo", "--store", "memory:",
        ],
        &[
            ("GITHUB_TOKEN", "ghp_not_a_real_token_0123456789"),
            ("LEVIATHAN_GITHUB_API_URL", "http://127.0.0.1:9/api/v3"),
            ("LEVIATHAN_LOG", "info"),
        ],
    )
    .expect(0);
    assert!(
        ran.stderr.contains("target demo: cannot read the backlog"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("dispatching nothing"), "{}", ran.stderr);
    assert!(
        !ran.stderr.contains("ghp_not_a_real_token"),
        "{}",
        ran.stderr
    );

    let usage = run(&["schedule", "--once"], &[]).expect(2);
    assert!(usage.stderr.contains("--target"), "{}", usage.stderr);
}
