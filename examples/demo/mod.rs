//! The demo world the examples share, all on 127.0.0.1 and offline: the repository of
//! `examples/quickstart/repo` (with its `.leviathan/backlog.yaml`) served by the testkit's
//! GitHub-shaped server, a scripted model that answers from the prompt, and the control plane on
//! sled in a temporary directory, served over HTTP for the workers. An example brings the
//! executor; [`Demo::schedule`] runs the scheduler with it until nothing is left to do and
//! [`Demo::finish`] reads back what happened.
//!
//! Workers are separate processes. An example cannot count on `target/debug/leviathan` being
//! built, so it re-executes itself: started as `<example> worker`, [`main`] runs
//! [`leviathan_worker::run_from_env`], exactly what `leviathan worker` runs.

use std::{
    collections::BTreeMap,
    future::Future,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Instant,
};

use leviathan::{
    api::{
        ApiConfig, ApiState, BearerToken,
        client::ControlPlaneClient,
        console,
        gateway::{GatewayConfig, Upstream},
        router,
        wire::ChainVerification,
    },
    core::{
        ArtifactStore, Executor, Forge, GraphSummary, Ledger, Role, TaskId,
        backlog::{Backlog, parse_backlog},
        graph::Node,
        model::{AttemptStatus, TaskStatus},
        target::{TargetConfig, parse_target_config},
    },
    git::GitBacklog,
    scheduler::{Scheduler, SchedulerOptions},
    stores::{StoreUrl, open},
};
use leviathan_exec_local::Secret;
use leviathan_testkit::{
    github::FakeGitHub,
    llm::{LlmReply, LlmRequest, ScriptedLlm, files_envelope},
};
use leviathan_worker::forge::GitHubForge;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Errors of the demo's setup, with what failed in the message.
pub(crate) type DemoError = Box<dyn std::error::Error + Send + Sync>;
/// A result of the demo's setup.
pub(crate) type DemoResult<T> = Result<T, DemoError>;

/// The fixture directory: the demo repository (`repo/`) and its target configuration.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart");
/// Owner and name of the demo repository on the GitHub-shaped server.
const OWNER: &str = "acme";
const REPO: &str = "widgets";
/// More events than the demo ever records.
const MAX_EVENTS: usize = 100_000;
/// The task whose first answer fails its tests and whose repair round passes.
pub(crate) const REPAIR_TASK: &str = "greet-script";

/// How the executors start the worker: a program and its arguments.
#[derive(Clone, Debug)]
pub(crate) struct WorkerCommand {
    /// The executable.
    pub(crate) program: PathBuf,
    /// Its arguments (`worker`).
    pub(crate) args: Vec<String>,
}

impl WorkerCommand {
    /// `<program> worker`: the `leviathan` binary, or a program that handles `worker` as
    /// [`main`] does.
    pub(crate) fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: vec!["worker".to_owned()],
        }
    }

    /// The running example itself, re-executed as `<example> worker`.
    fn this_executable() -> DemoResult<Self> {
        let program = std::env::current_exe()
            .map_err(|e| format!("cannot find this executable to run it as the worker: {e}"))?;
        Ok(Self::new(program))
    }
}

/// An example's `main`: as `<example> worker`, the worker; otherwise `run` with this executable
/// as the worker, the outcome printed, and exit 0 only when the demo did what it should.
pub(crate) fn main<F, Fut>(run: F) -> ExitCode
where
    F: FnOnce(WorkerCommand) -> Fut,
    Fut: Future<Output = DemoResult<Outcome>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "worker")
    {
        return runtime.block_on(leviathan_worker::run_from_env());
    }
    // The scheduler's decisions, one line each, on stderr (`LEVIATHAN_LOG` overrides).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEVIATHAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,leviathan=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        let worker = WorkerCommand::this_executable()?;
        run(worker).await
    });
    match outcome {
        Ok(outcome) => {
            outcome.print();
            let problems = outcome.problems();
            if problems.is_empty() {
                println!("done in {:.1} s", started.elapsed().as_secs_f64());
                ExitCode::SUCCESS
            } else {
                eprintln!("error: the demo did not end as expected:");
                for problem in problems {
                    eprintln!("  - {problem}");
                }
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the demo runs on; stopped and deleted when dropped.
pub(crate) struct Demo {
    github: FakeGitHub,
    /// The gateway's upstream, kept running for the demo's life.
    _llm: ScriptedLlm,
    ledger: Arc<Ledger>,
    artifacts: Arc<dyn ArtifactStore>,
    api_url: String,
    token: String,
    /// The control plane's state: the scheduler mints each attempt's worker token through it.
    state: ApiState,
    server: JoinHandle<std::io::Result<()>>,
    stop_server: oneshot::Sender<()>,
    target: TargetConfig,
    backlog: Backlog,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Seeds the repository, starts the model, opens the store and serves the control plane.
    pub(crate) async fn start() -> DemoResult<Self> {
        let fixtures = Path::new(FIXTURES);
        let backlog_path = fixtures.join("repo/.leviathan/backlog.yaml");
        let backlog = parse_backlog(&backlog_path.display().to_string(), &read(&backlog_path)?)?;
        let target_path = fixtures.join("target.yaml");
        let mut target = parse_target_config(
            &target_path.display().to_string(),
            &read(&target_path)?,
            None,
        )?;

        let github = FakeGitHub::start()
            .await
            .map_err(|e| format!("starting the GitHub-shaped server: {e:#}"))?;
        target.repo_url = github
            .create_repo(OWNER, REPO, &target.default_branch, &fixtures.join("repo"))
            .await
            .map_err(|e| format!("creating the demo repository: {e:#}"))?;
        println!(
            "demo repository: {} ({} tasks in {})",
            target.repo_url,
            backlog.tasks.len(),
            target.backlog_path
        );

        let llm = ScriptedLlm::start()
            .await
            .map_err(|e| format!("starting the scripted model: {e:#}"))?;
        llm.set_fallback(answer);
        println!(
            "model: scripted, Anthropic Messages API at {}, behind the control plane's model gateway",
            llm.url()
        );

        let dir = tempfile::Builder::new()
            .prefix("leviathan-demo-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        let stores = open(&StoreUrl::Sled(dir.path().join("data"))).await?;
        let ledger = Arc::new(Ledger::open(stores.events.clone(), stores.graphs.clone()).await?);
        let token = BearerToken::generate()?;
        let secret = token.expose().to_owned();
        let state = ApiState::new(
            Arc::clone(&ledger),
            Arc::clone(&stores.artifacts),
            // As `serve --gateway` with the scripted model as the Anthropic upstream: the
            // workers call the model through it with their attempt's token.
            ApiConfig::new(token).with_gateway(GatewayConfig::new(
                Some(Upstream::new(llm.url(), Some(Secret::new(llm.api_key())))),
                None,
            )),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding the control plane to 127.0.0.1: {e}"))?;
        let api_url = format!("http://{}", listener.local_addr()?);
        let (stop_server, stopped) = oneshot::channel::<()>();
        let served = state.clone();
        let server = tokio::spawn(async move {
            let console = console::router(served.clone(), console::ConsoleConfig::default());
            let app = axum::Router::new()
                .nest("/ui", console)
                .merge(router(served));
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        println!("control plane: {api_url} on {}", stores.location);

        Ok(Self {
            github,
            _llm: llm,
            ledger,
            artifacts: stores.artifacts,
            api_url,
            token: secret,
            state,
            server,
            stop_server,
            target,
            backlog,
            dir,
        })
    }

    /// Where workers report.
    pub(crate) fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Where the control plane keeps artifacts (executors store worker logs there).
    pub(crate) fn artifacts(&self) -> Arc<dyn ArtifactStore> {
        Arc::clone(&self.artifacts)
    }

    /// A directory for the attempts' workspaces, removed with the demo.
    pub(crate) fn attempts_dir(&self) -> PathBuf {
        self.dir.path().join("attempts")
    }

    /// The credentials a worker needs, by worker variable: the control plane's token and the
    /// forge's token (no model key: the model is behind the control plane's gateway).
    pub(crate) fn worker_secrets(&self) -> [(&'static str, Secret); 2] {
        use leviathan::core::executor::protocol;
        [
            (protocol::CONTROL_PLANE_TOKEN, Secret::new(&self.token)),
            (protocol::GITHUB_TOKEN, Secret::new(self.github.token())),
        ]
    }

    /// Runs the scheduler with `executor` until a cycle finds nothing to dispatch; returns the
    /// number of cycles.
    pub(crate) async fn schedule(&self, executor: Arc<dyn Executor>) -> DemoResult<usize> {
        use leviathan::core::executor::protocol::LEVIATHAN_GITHUB_API_URL;
        let forge = GitHubForge::new(
            &self.github.api_url(),
            &Secret::new(self.github.token()),
            &self.target.repo_url,
        )?;
        let options = SchedulerOptions {
            // Not secret: where the worker finds the forge's API (the model is behind the
            // control plane it reports to).
            worker_env: BTreeMap::from([(
                LEVIATHAN_GITHUB_API_URL.to_owned(),
                self.github.api_url(),
            )]),
            ..SchedulerOptions::default()
        };
        println!("scheduler: executor `{}`", executor.name());
        let scheduler = Scheduler::builder(Arc::clone(&self.ledger), executor)
            .target(self.target.clone(), Arc::new(forge) as Arc<dyn Forge>)
            .backlog(GitBacklog::new(Some(Secret::new(self.github.token()))))
            .options(options)
            .worker_tokens(Arc::new(self.state.clone()))
            .build()?;
        let reports = scheduler.run_until_idle().await?;
        Ok(reports.len())
    }

    /// With `--serve`: keeps the control plane up for a look at the console, with a reader
    /// token to sign in with, until Ctrl-C.
    async fn serve_until_interrupted(&self, client: &ControlPlaneClient) -> DemoResult<()> {
        let request = leviathan::api::wire::CreateTokenRequest {
            role: leviathan::core::Role::Reader,
            ttl_seconds: Some(24 * 3600),
            name: Some("quickstart-console".into()),
        };
        let reader = client.create_token(&request).await?;
        println!("console: {}/ui", self.api_url);
        println!("reader token (sign in with it): {}", reader.token);
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("waiting for Ctrl-C: {e}"))?;
        Ok(())
    }

    /// Stops the control plane and reads back what happened: the graph, the pull requests on the
    /// forge, and the chain and summary as the control plane's HTTP API reports them.
    pub(crate) async fn finish(self) -> DemoResult<Outcome> {
        let client = ControlPlaneClient::new(&self.api_url, self.token.clone())?;
        if std::env::args().any(|arg| arg == "--serve") {
            self.serve_until_interrupted(&client).await?;
        }
        let summary = client.graph_summary().await?;
        let chain = client.verify_chain().await?;
        let _ = self.stop_server.send(());
        self.server
            .await
            .map_err(|e| format!("the control plane's task failed: {e}"))?
            .map_err(|e| format!("the control plane failed: {e}"))?;

        self.ledger.catch_up().await?;
        let events = self.ledger.events().read(0, MAX_EVENTS).await?;
        let completed_at: BTreeMap<String, u64> = events
            .iter()
            .filter(|e| e.event_type == "task.completed")
            .filter_map(|e| Some((e.payload["task_id"].as_str()?.to_owned(), e.seq)))
            .collect();
        let graph = self.ledger.graph().await;
        let mut tasks = Vec::new();
        for task in &self.backlog.tasks {
            let node = graph.task(&self.target.name, &task.id);
            let attempts: Vec<AttemptRow> = graph
                .attempts_of(&self.target.name, &task.id)
                .map(|a| AttemptRow {
                    attempt_id: a.attempt_id.to_string(),
                    created_seq: a.meta.created_seq,
                    status: a.status,
                    executor: a.executor.clone().unwrap_or_default(),
                    model_calls: a.model_calls,
                    test_runs: a.test_runs,
                    pr_url: a.pr_url.clone(),
                })
                .collect();
            tasks.push(TaskRow {
                task_id: task.id.clone(),
                ready: task.spec.ready,
                dependencies: task.spec.dependencies.clone(),
                status: node.map(|n| n.status),
                completed_seq: completed_at.get(task.id.as_str()).copied(),
                attempts,
            });
        }
        let mut pull_requests: Vec<PullRow> = graph
            .nodes()
            .filter_map(|node| match node {
                Node::PullRequest(pr) => Some(PullRow {
                    number: pr.number,
                    url: pr.url.clone(),
                    branch: pr.branch.clone().unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        pull_requests.sort_by_key(|pr| pr.number);
        let worker_tokens = events
            .iter()
            .filter(|e| e.event_type == "token.issued" && e.payload["role"] == "worker")
            .count();
        let by_workers = events.iter().filter_map(|e| {
            let principal = e.principal.as_ref()?;
            (principal.role == Role::Worker).then_some((e, principal))
        });
        let worker_events = by_workers.clone().count();
        let outside_scope = by_workers
            .filter(|(e, p)| {
                e.payload["attempt_id"].as_str() != p.attempt.as_ref().map(|a| a.as_str())
            })
            .count();
        let executor_logs = tasks
            .iter()
            .flat_map(|t| &t.attempts)
            .filter(|a| {
                let name = format!("worker log of {}", a.attempt_id);
                graph.nodes().any(|node| {
                    matches!(node, Node::Artifact(artifact) if artifact.name.as_ref() == Some(&name))
                })
            })
            .count();
        drop(graph);
        self.ledger.flush().await?;
        let forge_pull_requests = self
            .github
            .pull_requests(OWNER, REPO)
            .map_err(|e| format!("listing the demo repository's pull requests: {e:#}"))?
            .len();
        Ok(Outcome {
            tasks,
            pull_requests,
            forge_pull_requests,
            summary,
            chain,
            events: events.len() as u64,
            executor_logs,
            worker_tokens,
            worker_events,
            outside_scope,
        })
    }
}

/// Reads a fixture file.
fn read(path: &Path) -> DemoResult<String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

/// The scripted model: one file envelope with every allowed file of the task in the prompt. The
/// greeting script is wrong at first (its test fails) and right once the prompt carries the
/// test output, as in a repair round.
fn answer(request: &LlmRequest) -> LlmReply {
    let repair = request.prompt.contains("Test output:");
    let files: Vec<(String, String)> = allowed_files(&request.prompt)
        .into_iter()
        .map(|path| {
            let content = match (path, repair) {
                ("docs/GUIDE.md", _) => GUIDE.to_owned(),
                ("docs/FAQ.md", _) => FAQ.to_owned(),
                ("scripts/greet.sh", false) => GREET_FIRST.to_owned(),
                ("scripts/greet.sh", true) => GREET_REPAIRED.to_owned(),
                (other, _) => format!("# {other}\n\nWritten by the quickstart's model.\n"),
            };
            (path.to_owned(), content)
        })
        .collect();
    LlmReply::Text(files_envelope(&files))
}

/// The exact files of the prompt's `ALLOWED PATHS` section (directories are left out).
fn allowed_files(prompt: &str) -> Vec<&str> {
    prompt
        .lines()
        .skip_while(|line| !line.starts_with("ALLOWED PATHS"))
        .skip(1)
        .map_while(|line| line.strip_prefix("- "))
        .filter(|path| !path.contains(' '))
        .collect()
}

const GUIDE: &str = "# Getting started\n\n## Install\n\nClone the repository; nothing else is needed.\n\n## Run\n\n    sh scripts/greet.sh Ada\n";
const FAQ: &str = "# FAQ\n\n**Where do I start?** With the [guide](GUIDE.md).\n";
const GREET_FIRST: &str = "#!/bin/sh\necho \"Hello $1\"\n";
const GREET_REPAIRED: &str = "#!/bin/sh\nprintf 'Hello, %s!\\n' \"$1\"\n";

/// What the demo did, read back from the control plane.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The backlog's tasks, in backlog order.
    pub(crate) tasks: Vec<TaskRow>,
    /// Pull requests in the graph, by number.
    pub(crate) pull_requests: Vec<PullRow>,
    /// Pull requests the GitHub-shaped server has.
    pub(crate) forge_pull_requests: usize,
    /// `GET /v1/graph/summary`.
    pub(crate) summary: GraphSummary,
    /// `GET /v1/chain/verify`.
    pub(crate) chain: ChainVerification,
    /// Events in the log.
    pub(crate) events: u64,
    /// Attempts whose executor stored the worker's log (`worker log of <attempt>`).
    pub(crate) executor_logs: usize,
    /// Worker tokens minted (`token.issued` of role worker): one per attempt.
    pub(crate) worker_tokens: usize,
    /// Events written with a worker token.
    pub(crate) worker_events: usize,
    /// Of those, events about another attempt than their token's (the API refuses them).
    pub(crate) outside_scope: usize,
}

/// A task of the backlog and its attempts.
#[derive(Debug)]
pub(crate) struct TaskRow {
    pub(crate) task_id: TaskId,
    pub(crate) ready: bool,
    pub(crate) dependencies: Vec<TaskId>,
    /// `None` when the scheduler never recorded it.
    pub(crate) status: Option<TaskStatus>,
    /// Seq of its `task.completed`.
    pub(crate) completed_seq: Option<u64>,
    /// Oldest first.
    pub(crate) attempts: Vec<AttemptRow>,
}

/// An attempt as the graph has it.
#[derive(Debug)]
pub(crate) struct AttemptRow {
    pub(crate) attempt_id: String,
    /// Seq of its `attempt.created`.
    pub(crate) created_seq: u64,
    pub(crate) status: AttemptStatus,
    pub(crate) executor: String,
    pub(crate) model_calls: u32,
    pub(crate) test_runs: u32,
    pub(crate) pr_url: Option<String>,
}

/// A pull request as the graph has it.
#[derive(Debug)]
pub(crate) struct PullRow {
    pub(crate) number: u64,
    pub(crate) url: String,
    pub(crate) branch: String,
}

impl Outcome {
    /// The task `id`.
    pub(crate) fn task(&self, id: &str) -> Option<&TaskRow> {
        self.tasks.iter().find(|t| t.task_id.as_str() == id)
    }

    /// How the demo differs from what it should do; empty when it did everything: one pull
    /// request per ready task (on the forge too), each dependency completed before its
    /// dependant's first attempt, the repair task done in one attempt with two model calls, no
    /// attempt at a task that is not ready, every worker's log stored by the executor, a verified
    /// chain over every event.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let ready = self.tasks.iter().filter(|t| t.ready).count();
        if self.pull_requests.len() != ready {
            problems.push(format!(
                "{} pull requests for {ready} ready tasks",
                self.pull_requests.len()
            ));
        }
        if self.forge_pull_requests != self.pull_requests.len() {
            problems.push(format!(
                "the forge has {} pull requests, the graph {}",
                self.forge_pull_requests,
                self.pull_requests.len()
            ));
        }
        for task in &self.tasks {
            let id = &task.task_id;
            if !task.ready {
                if !task.attempts.is_empty() {
                    problems.push(format!("{id} is not ready but has attempts"));
                }
                continue;
            }
            if task.status != Some(TaskStatus::Completed) {
                let status = task.status.map_or("not recorded", TaskStatus::as_str);
                problems.push(format!("{id} is {status}, not completed"));
            }
            let delivered: Vec<_> = task
                .attempts
                .iter()
                .filter_map(|a| a.pr_url.as_ref())
                .collect();
            if delivered.len() != 1 {
                problems.push(format!("{id} has {} pull requests", delivered.len()));
            }
            let first = task.attempts.first().map(|a| a.created_seq);
            for dependency in &task.dependencies {
                let done = self.task(dependency.as_str()).and_then(|d| d.completed_seq);
                match (done, first) {
                    (Some(done), Some(first)) if done < first => {}
                    _ => problems.push(format!(
                        "{id} started (seq {first:?}) before {dependency} completed (seq {done:?})"
                    )),
                }
            }
        }
        match self.task(REPAIR_TASK).map(|t| t.attempts.as_slice()) {
            Some([attempt]) if attempt.model_calls == 2 && attempt.test_runs == 2 => {}
            other => problems.push(format!(
                "{REPAIR_TASK} should take one attempt with 2 model calls and 2 test runs: {other:?}"
            )),
        }
        match &self.chain {
            ChainVerification::Verified(report) if report.events == self.events => {}
            ChainVerification::Verified(report) => problems.push(format!(
                "the chain verified {} events of {}",
                report.events, self.events
            )),
            ChainVerification::Broken(broken) => {
                problems.push(format!("the chain does not verify: {broken}"));
            }
        }
        let attempts = self.tasks.iter().map(|t| t.attempts.len()).sum::<usize>();
        if self.executor_logs != attempts {
            problems.push(format!(
                "the executor stored the log of {} of {attempts} attempts",
                self.executor_logs
            ));
        }
        if self.summary.anomalies != 0 {
            problems.push(format!("{} graph anomalies", self.summary.anomalies));
        }
        if self.worker_tokens != attempts {
            problems.push(format!(
                "{} worker tokens were minted for {attempts} attempts",
                self.worker_tokens
            ));
        }
        if self.outside_scope != 0 {
            problems.push(format!(
                "{} events were written by a worker token outside its attempt",
                self.outside_scope
            ));
        }
        problems
    }

    /// Prints the pull requests, the tasks, the graph summary and the chain.
    pub(crate) fn print(&self) {
        println!();
        for pr in &self.pull_requests {
            println!("pull request #{}: {} ({})", pr.number, pr.url, pr.branch);
        }
        println!();
        for task in &self.tasks {
            let status = task.status.map_or("not recorded", TaskStatus::as_str);
            let attempts: Vec<String> = task
                .attempts
                .iter()
                .map(|a| {
                    format!(
                        "{} on {}: {}, model calls {}, test runs {}",
                        a.attempt_id, a.executor, a.status, a.model_calls, a.test_runs
                    )
                })
                .collect();
            println!(
                "task {:<13} {:<10} {}",
                task.task_id.as_str(),
                status,
                if attempts.is_empty() {
                    "no attempt".to_owned()
                } else {
                    attempts.join("; ")
                }
            );
        }
        let s = &self.summary;
        println!();
        println!(
            "graph: {} nodes, {} edges, {} open pull requests",
            s.total_nodes, s.total_edges, s.open_prs
        );
        println!("  nodes:    {}", counts(&s.nodes_by_type));
        println!("  tasks:    {}", counts(&s.tasks_by_status));
        println!("  attempts: {}", counts(&s.attempts_by_status));
        println!(
            "tokens:   {} worker tokens, one per attempt, minted at dispatch; {} events written with them, each about its own attempt",
            self.worker_tokens, self.worker_events
        );
        match &self.chain {
            ChainVerification::Verified(report) => {
                println!("chain verified: {} events", report.events);
            }
            ChainVerification::Broken(broken) => println!("chain NOT verified: {broken}"),
        }
    }
}

/// `a 1, b 2`.
fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
