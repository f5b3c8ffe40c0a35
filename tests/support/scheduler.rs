//! What the scheduler's runner tests share: a target repository on `FakeGitHub` with a backlog,
//! the real ledger on memory stores, the real forge and backlog fetch, and a scripted executor
//! (outcomes chosen per task; successes push a real branch and open a real pull request).
//!
//! Time: tests run on tokio's paused clock and hold it still with [`Frozen`] while real I/O
//! (git, HTTP) happens, so time moves only when a test calls `tokio::time::advance`.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, VecDeque},
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use leviathan::{
    git::GitBacklog,
    scheduler::{
        CycleReport, DeliveryConfig, Scheduler, SchedulerBuilder, SchedulerError, SchedulerOptions,
    },
    worker::config::GitIdentity,
};
use leviathan_core::{
    ArtifactStore, AttemptId, AttemptOutcome, AttemptResult, AttemptSpec, Event, EventId, Executor,
    ExecutorError, Expectations, Forge, Ledger, NewEvent, Payload, Timestamp,
    catalogue::{DeliveryRequested, EventBody, validate},
    delivery::ProposalText,
    forge::PullRequestSpec,
    memory::MemoryArtifactStore,
    memory::{MemoryEventStore, MemoryGraphStore},
    model::{Failure, FailureClass, FailureKind},
    plan::SkipReason,
    secret::Secret,
    target::{TargetConfig, parse_target_config},
};
use leviathan_testkit::github::{FakeGitHub, PullSummary};
use leviathan_worker::forge::GitHubForge;
use tokio::{
    sync::{Notify, oneshot},
    task::JoinHandle,
};

pub(crate) const TARGET: &str = "demo";
pub(crate) const OWNER: &str = "acme";
pub(crate) const REPO: &str = "widgets";

/// The scheduler's decision lines go to the test's output (shown when a test fails).
pub(crate) fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEVIATHAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("leviathan=info")),
        )
        .try_init();
}

/// Keeps tokio's paused clock from auto-advancing while it lives: a blocking task in flight
/// inhibits auto-advance (documented on `tokio::time::pause`), so real I/O can take its time.
pub(crate) struct Frozen {
    _release: std::sync::mpsc::Sender<()>,
}

pub(crate) fn freeze() -> Frozen {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        // Returns when the sender is dropped.
        let _ = wait.recv();
    });
    Frozen { _release: release }
}

/// One scripted run.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Push a branch with a commit and open a real pull request, then report success.
    Succeed,
    /// Report a failure.
    Fail(FailureKind, FailureClass),
    /// Run until cancelled (then report `cancelled` as the local executor does).
    Hang,
    /// The executor itself fails.
    Error { transient: bool },
    /// Propose this patch against the tip of the base branch as a worker without a forge token
    /// does (the patch and its words as artifacts, `delivery.requested` in the log), skipping
    /// any check of its own, and report the proposal.
    Propose(String),
    /// Run until cancelled (a timeout), then propose this patch all the same.
    LateProposal(String),
    /// Propose `patch` against `base`, whatever the attempt was dispatched at.
    ProposeAt { base: String, patch: String },
}

/// An in-process executor whose outcomes the test scripts per task.
#[derive(Debug)]
pub(crate) struct ScriptedExecutor {
    script: Mutex<BTreeMap<String, VecDeque<Step>>>,
    started: Mutex<Vec<AttemptSpec>>,
    cancelled: Mutex<Vec<AttemptId>>,
    running: Hanging,
    forge: Arc<GitHubForge>,
    token: String,
    ledger: Arc<Ledger>,
    artifacts: MemoryArtifactStore,
}

impl ScriptedExecutor {
    /// Queues `steps` for the next runs of `task`.
    pub(crate) fn script(&self, task: &str, steps: &[Step]) {
        self.script
            .lock()
            .unwrap()
            .entry(task.to_owned())
            .or_default()
            .extend(steps.iter().cloned());
    }

    /// Every attempt started so far, in order.
    pub(crate) fn started(&self) -> Vec<AttemptSpec> {
        self.started.lock().unwrap().clone()
    }

    /// Every cancel received so far.
    pub(crate) fn cancelled(&self) -> Vec<AttemptId> {
        self.cancelled.lock().unwrap().clone()
    }

    /// What [`Step::Propose`] does.
    async fn propose(&self, spec: &AttemptSpec, patch: &str) -> AttemptResult {
        let (repo_url, token) = (spec.repo_url.clone(), self.token.clone());
        let branch = format!("refs/heads/{}", spec.base_branch);
        let base = tokio::task::spawn_blocking(move || {
            let listed = git_with_token(Path::new("."), &token, &["ls-remote", &repo_url, &branch])
                .expect("ls-remote");
            listed.split_whitespace().next().unwrap().to_owned()
        })
        .await
        .unwrap();
        self.propose_at(spec, base, patch).await
    }

    /// What [`Step::ProposeAt`] does.
    async fn propose_at(&self, spec: &AttemptSpec, base: String, patch: &str) -> AttemptResult {
        let patch = self
            .artifacts
            .put(Bytes::from(patch.to_owned()))
            .await
            .unwrap();
        let text = ProposalText {
            message: format!("Leviathan: {}", spec.task_id),
            title: format!("Leviathan: {}", spec.task_id),
            body: "Proposed by a scripted worker".into(),
        };
        let message = self
            .artifacts
            .put(Bytes::from(serde_json::to_vec(&text).unwrap()))
            .await
            .unwrap();
        let requested = DeliveryRequested {
            attempt_id: spec.attempt_id.clone(),
            base: base.clone(),
            patch_sha256: patch.sha256,
            files_changed: 1,
            message_sha256: Some(message.sha256),
        };
        let event = NewEvent {
            event_id: EventId::new(format!("worker-{}", spec.attempt_id)).unwrap(),
            event_type: DeliveryRequested::EVENT_TYPE.to_owned(),
            timestamp: Timestamp::now(),
            actor_id: Some("worker".into()),
            payload: requested.to_value(),
            principal: None,
        };
        self.ledger
            .ingest(vec![event], Expectations::Derived)
            .await
            .expect("delivery.requested recorded");
        AttemptResult::Proposed {
            base,
            patch_sha256: patch.sha256,
        }
    }

    async fn deliver(&self, spec: &AttemptSpec) -> Result<AttemptResult, String> {
        let branch = format!("agent/{}-{}", spec.task_id, spec.attempt_id);
        let repo_url = spec.repo_url.clone();
        let base = spec.base_branch.clone();
        let token = self.token.clone();
        let head = branch.clone();
        let commit_sha =
            tokio::task::spawn_blocking(move || push_branch(&repo_url, &base, &head, &token))
                .await
                .map_err(|e| e.to_string())??;
        let pr = self
            .forge
            .create(&PullRequestSpec {
                head: branch.clone(),
                base: spec.base_branch.clone(),
                title: format!("Leviathan: {}", spec.task_id),
                body: "scripted".into(),
                draft: false,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(AttemptResult::Succeeded {
            branch,
            commit_sha,
            pr_number: pr.number,
            pr_url: pr.url,
        })
    }
}

#[async_trait]
impl Executor for ScriptedExecutor {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn run(&self, spec: &AttemptSpec) -> Result<AttemptOutcome, ExecutorError> {
        self.started.lock().unwrap().push(spec.clone());
        let step = self
            .script
            .lock()
            .unwrap()
            .get_mut(spec.task_id.as_str())
            .and_then(VecDeque::pop_front)
            .unwrap_or(Step::Fail(FailureKind::Setup, FailureClass::Permanent));
        let outcome = |result| AttemptOutcome {
            attempt_id: spec.attempt_id.clone(),
            result,
            artifacts: Vec::new(),
        };
        match step {
            Step::Succeed => match self.deliver(spec).await {
                Ok(result) => Ok(outcome(result)),
                Err(e) => panic!("the scripted delivery failed: {e}"),
            },
            Step::Propose(patch) => Ok(outcome(self.propose(spec, &patch).await)),
            Step::ProposeAt { base, patch } => {
                Ok(outcome(self.propose_at(spec, base, &patch).await))
            }
            Step::LateProposal(patch) => {
                self.running.wait(&spec.attempt_id).await;
                Ok(outcome(self.propose(spec, &patch).await))
            }
            Step::Fail(kind, class) => Ok(outcome(AttemptResult::Failed(Failure {
                kind,
                class,
                summary: format!("scripted {kind}"),
            }))),
            Step::Hang => {
                self.running.wait(&spec.attempt_id).await;
                Ok(outcome(AttemptResult::Failed(Failure {
                    kind: FailureKind::Cancelled,
                    class: FailureClass::Permanent,
                    summary: "cancelled".into(),
                })))
            }
            Step::Error { transient } => Err(if transient {
                ExecutorError::Unavailable {
                    reason: "scripted outage".into(),
                    source: None,
                }
            } else {
                ExecutorError::Rejected {
                    reason: "scripted refusal".into(),
                    source: None,
                }
            }),
        }
    }

    async fn cancel(&self, attempt_id: &AttemptId) -> Result<(), ExecutorError> {
        self.cancelled.lock().unwrap().push(attempt_id.clone());
        if self.running.cancel(attempt_id) {
            Ok(())
        } else {
            Err(ExecutorError::NotFound(attempt_id.clone()))
        }
    }
}

/// Pushes `head` (one new commit on `base`) to `repo_url` with `token`; returns the commit.
fn push_branch(repo_url: &str, base: &str, head: &str, token: &str) -> Result<String, String> {
    push_commit(
        repo_url,
        base,
        &[head],
        token,
        &[(&format!("{}.txt", head.replace('/', "-")), head)],
    )
}

/// Clones `base` of `repo_url`, commits `files` on it and pushes that commit to every branch in
/// `heads` (in one push); returns the commit.
pub(crate) fn push_commit(
    repo_url: &str,
    base: &str,
    heads: &[&str],
    token: &str,
    files: &[(&str, &str)],
) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let repo = dir.path().join("repo");
    let git = |cwd: &Path, args: &[&str]| git_with_token(cwd, token, args);
    git(
        dir.path(),
        &[
            "clone", "--quiet", "--depth", "1", "--branch", base, repo_url, "repo",
        ],
    )?;
    for (path, content) in files {
        let file = repo.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(file, content).map_err(|e| e.to_string())?;
    }
    git(&repo, &["add", "--all"])?;
    git(&repo, &["commit", "--quiet", "-m", "scripted change"])?;
    let refspecs: Vec<String> = heads
        .iter()
        .map(|h| format!("HEAD:refs/heads/{h}"))
        .collect();
    let mut args = vec!["push", "--quiet", "origin"];
    args.extend(refspecs.iter().map(String::as_str));
    git(&repo, &args)?;
    git(&repo, &["rev-parse", "HEAD"])
}

/// Runs git in `cwd` as a scripted author, authenticated to the fake forge with `token`.
fn git_with_token(cwd: &Path, token: &str, args: &[&str]) -> Result<String, String> {
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Scripted")
        .env("GIT_AUTHOR_EMAIL", "scripted@example.com")
        .env("GIT_COMMITTER_NAME", "Scripted")
        .env("GIT_COMMITTER_EMAIL", "scripted@example.com")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env(
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Bearer {token}"),
        )
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "git {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A target repository with a backlog, the ledger, the forge and the scripted executor.
pub(crate) struct World {
    pub(crate) github: FakeGitHub,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) executor: Arc<ScriptedExecutor>,
    pub(crate) forge: Arc<GitHubForge>,
    pub(crate) repo_url: String,
    /// Where proposals are stored.
    pub(crate) artifacts: MemoryArtifactStore,
}

impl World {
    /// A repository whose `.leviathan/backlog.yaml` is `backlog`.
    pub(crate) async fn start(backlog: &str) -> Self {
        init_logs();
        let github = FakeGitHub::start().await.expect("FakeGitHub");
        let repo_url = github
            .create_target_repo(OWNER, REPO, backlog)
            .await
            .expect("seed repository");
        let ledger = Arc::new(
            Ledger::open(
                Arc::new(MemoryEventStore::new()),
                Arc::new(MemoryGraphStore::new()),
            )
            .await
            .expect("ledger"),
        );
        let forge = Arc::new(
            GitHubForge::new(&github.api_url(), &Secret::new(github.token()), &repo_url)
                .expect("forge"),
        );
        let artifacts = MemoryArtifactStore::new();
        let executor = Arc::new(ScriptedExecutor {
            script: Mutex::default(),
            started: Mutex::default(),
            cancelled: Mutex::default(),
            running: Hanging::default(),
            forge: forge.clone(),
            token: github.token().to_owned(),
            ledger: ledger.clone(),
            artifacts: artifacts.clone(),
        });
        Self {
            github,
            ledger,
            executor,
            forge,
            repo_url,
            artifacts,
        }
    }

    /// The target's configuration: `guardrails` is YAML under `guardrails:` (indented by two).
    pub(crate) fn target(&self, autonomy: &str, guardrails: &str) -> TargetConfig {
        let text = format!(
            "name: {TARGET}\nrepo_url: {}\ndefault_branch: main\n{autonomy}\nguardrails:\n  allowed_path_prefixes: [docs/, src/]\n{guardrails}",
            self.repo_url
        );
        parse_target_config("demo.yaml", &text, None).expect("target config")
    }

    /// A scheduler over this world with `config`, jitter seeded with `seed`.
    pub(crate) fn builder(&self, config: TargetConfig, seed: u64) -> SchedulerBuilder {
        Scheduler::builder(
            self.ledger.clone(),
            self.executor.clone() as Arc<dyn Executor>,
        )
        .target(config, self.forge.clone() as Arc<dyn Forge>)
        .backlog(GitBacklog::new(Some(Secret::new(self.github.token()))))
        .seed(seed)
        .delivery(DeliveryConfig {
            artifacts: Arc::new(self.artifacts.clone()),
            token: Secret::new(self.github.token()),
            identity: GitIdentity {
                name: "Leviathan".into(),
                email: "bot@leviathan.invalid".into(),
            },
        })
        .options(SchedulerOptions {
            max_running_global: 8,
            ..SchedulerOptions::default()
        })
    }

    /// Every event of the log.
    pub(crate) async fn events(&self) -> Vec<Event> {
        self.ledger.events().read(0, 100_000).await.expect("read")
    }

    /// The events of one type, parsed.
    pub(crate) async fn of_type(&self, event_type: &str) -> Vec<(Event, EventBody)> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.event_type == event_type)
            .map(|e| {
                let body = validate(&leviathan_core::NewEvent {
                    event_id: e.event_id.clone(),
                    event_type: e.event_type.clone(),
                    timestamp: e.timestamp,
                    actor_id: e.actor_id.clone(),
                    payload: e.payload.clone(),
                    principal: None,
                })
                .expect("valid")
                .body;
                (e, body)
            })
            .collect()
    }

    /// How many events of `event_type` there are.
    pub(crate) async fn count(&self, event_type: &str) -> usize {
        self.of_type(event_type).await.len()
    }

    /// Task ids of the `attempt.created` events, in order.
    pub(crate) async fn dispatched_tasks(&self) -> Vec<String> {
        self.of_type("attempt.created")
            .await
            .into_iter()
            .map(|(e, _)| e.payload["task_id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub(crate) fn pulls(&self) -> Vec<PullSummary> {
        self.github.pull_requests(OWNER, REPO).unwrap()
    }

    /// Commits `files` to `main` of the target repository (e.g. a new backlog).
    pub(crate) async fn commit_to_main(&self, files: &[(&str, &str)]) {
        let (url, token) = (self.repo_url.clone(), self.github.token().to_owned());
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, c)| (p.as_str(), c.as_str()))
                .collect();
            push_commit(&url, "main", &["main"], &token, &files)
        })
        .await
        .unwrap()
        .expect("commit to main");
    }

    /// Pushes one commit to each of `heads` and opens a pull request for each; returns their
    /// numbers.
    pub(crate) async fn open_pulls(&self, heads: &[String]) -> Vec<u64> {
        let (url, token) = (self.repo_url.clone(), self.github.token().to_owned());
        let branches = heads.to_vec();
        tokio::task::spawn_blocking(move || {
            let heads: Vec<&str> = branches.iter().map(String::as_str).collect();
            push_commit(
                &url,
                "main",
                &heads,
                &token,
                &[("docs/extra.md", "extra\n")],
            )
        })
        .await
        .unwrap()
        .expect("push branches");
        let mut numbers = Vec::new();
        for head in heads {
            let pr = self
                .forge
                .create(&PullRequestSpec {
                    head: head.clone(),
                    base: "main".into(),
                    title: format!("PR of {head}"),
                    body: String::new(),
                    draft: false,
                })
                .await
                .expect("create the pull request");
            numbers.push(pr.number);
        }
        numbers
    }
}

/// Attempts that hang until cancelled.
#[derive(Debug, Default)]
pub(crate) struct Hanging {
    gates: Mutex<BTreeMap<AttemptId, Arc<Notify>>>,
}

impl Hanging {
    /// Waits until `attempt` is cancelled.
    async fn wait(&self, attempt: &AttemptId) {
        let gate = self
            .gates
            .lock()
            .unwrap()
            .entry(attempt.clone())
            .or_default()
            .clone();
        gate.notified().await;
        self.gates.lock().unwrap().remove(attempt);
    }

    /// Releases `attempt`; false when it is not hanging.
    fn cancel(&self, attempt: &AttemptId) -> bool {
        match self.gates.lock().unwrap().get(attempt) {
            Some(gate) => {
                gate.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Advances the paused clock to just past `target` (from `now`).
pub(crate) async fn advance_past(
    target: leviathan_core::Timestamp,
    now: leviathan_core::Timestamp,
) {
    tokio::time::advance(target.saturating_since(now) + Duration::from_millis(1)).await;
}

/// The skip reason of `task` in a report.
pub(crate) fn skip_of<'a>(report: &'a CycleReport, task: &str) -> &'a SkipReason {
    &report
        .skipped
        .iter()
        .find(|s| s.task_id == task)
        .unwrap_or_else(|| panic!("{task} is not skipped: {report:#?}"))
        .reason
}

/// Runs `scheduler` as a daemon in a task of its own until the returned sender fires.
pub(crate) fn spawn_daemon(
    scheduler: &Scheduler,
) -> (oneshot::Sender<()>, JoinHandle<Result<(), SchedulerError>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let scheduler = scheduler.clone();
    let daemon = tokio::spawn(async move {
        scheduler
            .run(async move {
                let _ = stopped.await;
            })
            .await
    });
    (stop, daemon)
}
