//! The world of `tests/system.rs`, all on 127.0.0.1: a fresh PostgreSQL database for the control
//! plane, the target repository on `FakeGitHub` with a backlog, `ScriptedLlm` answering from the
//! prompt behind the control plane's model gateway (`serve --gateway`), the fake Kubernetes cluster whose worker image is the built binary, a kubeconfig
//! pointing at it and a target file with autonomy enabled; and the real `leviathan` processes
//! (`serve`, `schedule`, one-shot commands) started in it.

mod process;

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use leviathan::api::client::ControlPlaneClient;
use leviathan_core::{Event, GraphSummary};
use leviathan_store_pg::testkit::TestDatabase;
use leviathan_testkit::{
    github::PullSummary,
    llm::{LlmReply, LlmRequest, files_envelope},
};

pub(crate) use self::process::Process;
use super::worker::{
    OWNER, Outside, REPO,
    cluster::{Cluster, IMAGE, NAMESPACE},
    worker_secrets,
};

/// Upper bound for anything the tests wait for; hitting it fails the test.
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);
/// How often a waiting test looks again.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// The control plane's token.
pub(crate) const TOKEN: &str = "cp-token-for-the-system-test-0123456789abcdef";
/// The target.
pub(crate) const TARGET: &str = "demo";
/// The backlog's ready tasks.
pub(crate) const READY_TASKS: [&str; 3] = ["docs-a", "docs-b", GATED_TASK];
/// The ready task that depends on `docs-a`, and whose tests wait until [`World::open_gate`].
pub(crate) const GATED_TASK: &str = "docs-c";
/// The ready task whose first attempt fails as a whole: the model's answers fail the task's tests
/// in every round of attempt 1, and pass on attempt 2.
pub(crate) const FLAKY_TASK: &str = "docs-b";
/// The task that is not ready: it must never get an attempt.
pub(crate) const NOT_READY_TASK: &str = "later";
/// Repair rounds of every worker (so attempt 1 of the flaky task asks the model twice).
const REPAIR_ROUNDS: u32 = 1;
/// The variable the gateway file names for the scripted model's key (only `serve` has it).
const MODEL_KEY_ENV: &str = "LEVIATHAN_TEST_MODEL_KEY";

/// The backlog; `{gate}` stands for the gate file's path.
const BACKLOG: &str = r#"version: "1"
tasks:
  - id: docs-a
    title: Write A
    priority: high
    ready: true
    allowed_paths: ["docs/a.md"]
    acceptance_criteria: ["Says it is done"]
    test_command: "grep -q Done docs/a.md"
  - id: docs-b
    title: Write B
    priority: medium
    ready: true
    allowed_paths: ["docs/b.md"]
    test_command: "grep -q Done docs/b.md"
  - id: docs-c
    title: Write C, after A
    priority: low
    ready: true
    dependencies: [docs-a]
    allowed_paths: ["docs/c.md"]
    test_command: "until [ -e {gate} ]; do sleep 0.05; done; grep -q Done docs/c.md"
  - id: later
    title: Not ready yet
    ready: false
    allowed_paths: ["docs/later.md"]
"#;

/// Guardrails generous enough for the backlog, with a one-second retry backoff.
const GUARDRAILS: &str = "guardrails:
  allowed_path_prefixes: [docs/]
  max_open_prs: 10
  max_running_attempts: 2
  max_attempts_per_task: 3
  retry: {initial_backoff_seconds: 1, factor: 2, max_backoff_seconds: 2, jitter: false}
  timeout: {attempt_timeout_minutes: 2}
";

/// Everything outside the `leviathan` processes.
pub(crate) struct World {
    pub(crate) outside: Outside,
    pub(crate) cluster: Cluster,
    pub(crate) db: TestDatabase,
    /// `HOME` of every process, with the target file, the kubeconfig and the gate.
    home: tempfile::TempDir,
    /// The log of every process started, by name, shown when a test fails.
    logs: Mutex<Vec<(String, Arc<Mutex<String>>)>>,
}

impl World {
    /// A fresh database, the fakes, the repository with the backlog, the cluster's Secret, the
    /// target file and the kubeconfig.
    pub(crate) async fn start() -> Self {
        let db = TestDatabase::create().await;
        let home = tempfile::tempdir().unwrap();
        let gate = home.path().join("gate").display().to_string();
        let outside = Outside::start(&BACKLOG.replace("{gate}", &gate)).await;
        let answered = Mutex::new(BTreeMap::new());
        outside
            .llm
            .set_fallback(move |request| answer(&answered, request));
        let cluster = Cluster::start(&worker_secrets(TOKEN, &outside.github)).await;
        let world = Self {
            outside,
            cluster,
            db,
            home,
            logs: Mutex::default(),
        };
        std::fs::write(
            world.target_file(),
            format!(
                "name: {TARGET}\nrepo_url: {}\ndefault_branch: main\nautonomy: {{enabled: true}}\n{GUARDRAILS}",
                world.outside.repo_url
            ),
        )
        .unwrap();
        std::fs::write(
            world.kubeconfig(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NAMESPACE}\n\
                 current-context: fake\n",
                world.cluster.fake.url()
            ),
        )
        .unwrap();
        std::fs::write(
            world.gateway_file(),
            format!(
                "anthropic: {{ base_url: '{}', key_env: {MODEL_KEY_ENV} }}\n",
                world.outside.llm.url()
            ),
        )
        .unwrap();
        world
    }

    fn target_file(&self) -> PathBuf {
        self.home.path().join("demo.yaml")
    }

    fn gateway_file(&self) -> PathBuf {
        self.home.path().join("gateway.yaml")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.home.path().join("kubeconfig")
    }

    /// `leviathan args…` with a clean environment: `PATH`, `HOME`, the log filter and the token.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_leviathan"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("LEVIATHAN_LOG", "info")
            .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN);
        command
    }

    /// `leviathan serve` on the test database, listening on `bind` (`127.0.0.1:0`: any port).
    pub(crate) async fn control_plane(&self, bind: SocketAddr) -> ControlPlane {
        let bind = bind.to_string();
        let gateway = self.gateway_file().display().to_string();
        let mut command = self.command(&[
            "serve",
            "--bind",
            &bind,
            "--store",
            self.db.url(),
            "--gateway",
            &gateway,
        ]);
        command.env(MODEL_KEY_ENV, self.outside.llm.api_key());
        let mut process = self.spawn(&format!("control plane on {bind}"), command);
        let line = process.wait_for_line("control plane listening").await;
        let addr: SocketAddr = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in `{line}`"))
            .parse()
            .unwrap();
        ControlPlane {
            process,
            url: format!("http://{addr}"),
            addr,
        }
    }

    /// `leviathan schedule` as a daemon against the control plane at `api`, with the
    /// Kubernetes executor on the fake cluster, ticking every second.
    pub(crate) fn scheduler(&self, api: &str, name: &str) -> Process {
        let target = self.target_file().display().to_string();
        let mut command = self.command(&[
            "schedule",
            "--target",
            &target,
            "--api",
            api,
            "--executor",
            "k8s",
            "--tick",
            "1",
            "--shutdown-grace",
            "30",
        ]);
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env("GITHUB_TOKEN", self.outside.github.token())
            .env("LEVIATHAN_GITHUB_API_URL", self.outside.github.api_url())
            .env("LEVIATHAN_EXECUTOR_IMAGE", IMAGE)
            .env("LEVIATHAN_K8S_NAMESPACE", NAMESPACE)
            .env("LEVIATHAN_WORKER_CONTROL_PLANE_URL", api)
            // Worker settings the scheduler hands every attempt.
            .env("LEVIATHAN_REPAIR_ROUNDS", REPAIR_ROUNDS.to_string());
        self.spawn(name, command)
    }

    /// Starts `command` as `name`, its log kept to be shown if the test fails.
    fn spawn(&self, name: &str, command: Command) -> Process {
        let log = Arc::new(Mutex::new(String::new()));
        let mut logs = self.logs.lock().unwrap();
        let name = format!("{name} (process {})", logs.len() + 1);
        logs.push((name.clone(), Arc::clone(&log)));
        Process::spawn(name, command, log)
    }

    /// Runs `leviathan args…` to completion (without blocking the runtime the fakes serve on).
    pub(crate) async fn cli(&self, args: &[&str]) -> Outcome {
        let output = tokio::process::Command::from(self.command(args))
            .kill_on_drop(true)
            .output()
            .await
            .expect("the binary runs");
        Outcome {
            args: args.join(" "),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The log as `leviathan events export --api <api>` writes it.
    pub(crate) async fn export(&self, api: &str) -> Vec<Event> {
        let export = self
            .cli(&["events", "export", "--api", api])
            .await
            .expect(0);
        export
            .stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("an exported event"))
            .collect()
    }

    /// The forge's pull requests.
    pub(crate) fn pulls(&self) -> Vec<PullSummary> {
        self.outside.github.pull_requests(OWNER, REPO).unwrap()
    }

    /// Every credential of the world, for leak checks: the workers' executor's and the model
    /// key only the control plane holds.
    pub(crate) fn secrets(&self) -> Vec<String> {
        worker_secrets(TOKEN, &self.outside.github)
            .into_iter()
            .map(|(_, value)| value)
            .chain([self.outside.llm.api_key().to_owned()])
            .collect()
    }

    /// Lets the gated task's tests run.
    pub(crate) fn open_gate(&self) {
        std::fs::write(self.home.path().join("gate"), "").unwrap();
    }
}

impl Drop for World {
    /// When the test fails, shows what every process logged (those still running are stopped
    /// by then: the test's processes are dropped before its world).
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, log) in self.logs.lock().unwrap().iter() {
                eprintln!("--- {name}:\n{}", log.lock().unwrap());
            }
        }
    }
}

/// The model: writes the one file the task may change, with `Done` (what the task's test looks
/// for), except in every round of the flaky task's first attempt.
fn answer(answered: &Mutex<BTreeMap<String, u32>>, request: &LlmRequest) -> LlmReply {
    let Some(task) = request
        .prompt
        .lines()
        .find_map(|line| line.strip_prefix("- ID: "))
        .map(str::trim)
    else {
        return LlmReply::Text("the prompt names no task".to_owned());
    };
    let nth = {
        let mut answered = answered.lock().unwrap();
        let count = answered.entry(task.to_owned()).or_default();
        *count += 1;
        *count
    };
    let path = format!("docs/{}.md", task.trim_start_matches("docs-"));
    let body = if task == FLAKY_TASK && nth <= 1 + REPAIR_ROUNDS {
        "To be written."
    } else {
        "Done."
    };
    LlmReply::Text(files_envelope(&[(path, format!("# {task}\n\n{body}\n"))]))
}

/// `leviathan serve`, running.
pub(crate) struct ControlPlane {
    pub(crate) process: Process,
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
}

impl ControlPlane {
    /// A client of its API (it keeps working across a restart on the same address).
    pub(crate) fn client(&self) -> ControlPlaneClient {
        ControlPlaneClient::new(&self.url, TOKEN).unwrap()
    }
}

/// What a finished command did.
pub(crate) struct Outcome {
    pub(crate) args: String,
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    /// Asserts the exit code, showing the output when it differs.
    pub(crate) fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "`leviathan {}` exited {}:\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Polls `probe` until it returns something, at most [`PATIENCE`]; on timeout fails the test
/// saying `what` was awaited.
pub(crate) async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The summary of a fresh in-memory fold of `events`.
pub(crate) fn fold(events: &[Event]) -> GraphSummary {
    let mut graph = leviathan_core::Graph::new();
    for event in events {
        graph.apply(event);
    }
    graph.summary()
}

/// The completed tasks of a summary.
pub(crate) fn completed(summary: &GraphSummary) -> u64 {
    summary
        .tasks_by_status
        .get("completed")
        .copied()
        .unwrap_or(0)
}
