//! `leviathan schedule`: the scheduler over a store or a running control plane, once or as a
//! daemon. `leviathan serve --schedule` builds the same scheduler inside the control plane.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use leviathan::{
    api::{
        authority::minter::LedgerMinter,
        client::{ClientError, ControlPlaneClient},
        keyring_file, token,
    },
    core::{
        ArtifactStore, Executor, Forge, Ledger, Sha256Digest, WorkerTokens,
        auth::token::Keyring,
        executor::protocol::{self, LEVIATHAN_GITHUB_API_URL},
        memory::MemoryGraphStore,
        secret::Secret,
        store::{ArtifactError, StoredArtifact},
        target::{TargetConfig, parse_target_config},
    },
    git::GitBacklog,
    scheduler::{DeliveryConfig, Scheduler, SchedulerOptions, serve_metrics},
};
use leviathan_exec_k8s::{K8sConfig, K8sExecutor};
use leviathan_exec_local::{LocalConfig, LocalExecutor};
use leviathan_worker::{
    config::{DEFAULT_GITHUB_API_URL, GitIdentity},
    forge::GitHubForge,
};

use super::{
    error::{CliError, finish},
    output::{LogFormat, init_logging},
    signal::shutdown_signal,
    source::{Source, SourceArgs},
};

/// Run the scheduler: sync backlogs, plan, dispatch attempts and record every decision.
#[derive(clap::Args, Debug)]
#[command(after_long_help = environment_help())]
pub(crate) struct Args {
    /// A target to serve: a configuration file, or NAME for ~/.leviathan/targets/NAME.yaml
    /// (repeat for several targets)
    #[arg(long = "target", value_name = "NAME|PATH", required = true)]
    targets: Vec<String>,
    /// One cycle: dispatch, wait for the attempts it started, record the decisions that follow,
    /// exit (0 when the cycle ran, 1 when it failed)
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    source: SourceArgs,
    /// Log format (logs go to stderr; one line per decision)
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve the scheduler's Prometheus metrics (cycles, dispatches, skips by reason, attempts
    /// running, breakers) on http://ADDR/metrics, e.g. 127.0.0.1:9464
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<std::net::SocketAddr>,
}

/// How the scheduler runs (shared with `serve --schedule`).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct RunArgs {
    /// Where attempts run: local child processes or Kubernetes Jobs
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    executor: ExecutorKind,
    /// Seconds between the daemon's cycles (it also cycles when an attempt ends)
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    tick: u64,
    /// On SIGTERM or SIGINT, seconds running attempts may finish before they are cancelled
    /// (and recorded as cancelled, to be retried)
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    shutdown_grace: u64,
    /// Attempts running at once over all targets (each target has its own limit too)
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_running: u32,
}

/// Where attempts run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExecutorKind {
    /// `leviathan worker` as a child process per attempt.
    Local,
    /// One Kubernetes Job per attempt.
    K8s,
}

/// What workers need to report to the control plane, when their executor's configuration does
/// not say otherwise.
pub(crate) struct WorkerDefaults {
    /// The control plane's URL as workers reach it.
    pub(crate) control_plane_url: Option<String>,
    /// Mints each attempt's own worker token (the control plane's API, the control plane
    /// itself when the scheduler runs inside `serve`, or the keyring beside the token file when
    /// it runs on a store): no worker is given the scheduler's own token.
    pub(crate) minter: Arc<dyn WorkerTokens>,
}

/// `GITHUB_TOKEN`: the forge and backlog credential (the same name as the worker's).
const GITHUB_TOKEN: &str = protocol::GITHUB_TOKEN;

fn environment_help() -> String {
    let mut lines: Vec<String> = [
        "Environment:",
        "  GITHUB_TOKEN                        required: the targets' backlogs (git) and pull requests are",
        "                                      read with it; local workers get it too",
        "  LEVIATHAN_GITHUB_API_URL            GitHub REST API base URL (GitHub Enterprise:",
        "                                      https://<host>/api/v3; default https://api.github.com);",
        "                                      workers get it too",
        "  LEVIATHAN_STORE, LEVIATHAN_API_URL, LEVIATHAN_CONTROL_PLANE_TOKEN, LEVIATHAN_TOKEN_FILE,",
        "  LEVIATHAN_LOG                       as for every command (see `leviathan --help`)",
        "",
        "Local executor (--executor local):",
    ]
    .map(str::to_owned)
    .to_vec();
    for v in leviathan_exec_local::VARIABLES {
        lines.push(format!("  {:<36}{}", v.name, v.description));
        if !v.default.is_empty() {
            lines.push(format!("  {:<36}default: {}", "", v.default));
        }
    }
    lines.extend(
        [
            "  With --api, workers report to that control plane with this command's token unless",
            "  LEVIATHAN_WORKER_CONTROL_PLANE_URL and LEVIATHAN_CONTROL_PLANE_TOKEN say otherwise.",
            "",
            "Kubernetes executor (--executor k8s; the cluster from KUBECONFIG or the service account):",
        ]
        .map(str::to_owned),
    );
    for (name, default) in leviathan_exec_k8s::VARIABLES {
        lines.push(if default.is_empty() {
            format!("  {name}")
        } else {
            format!("  {name:<36}default: {default}")
        });
    }
    lines.push(String::new());
    lines.push(
        "Worker settings given to every attempt when set here (see `leviathan worker --help`;"
            .into(),
    );
    lines.push("a target's `test_command` wins over LEVIATHAN_TEST_COMMAND):".into());
    for chunk in forwarded_worker_variables().collect::<Vec<_>>().chunks(3) {
        lines.push(format!("  {}", chunk.join(", ")));
    }
    lines.extend(
        [
            "",
            "Target files: this project's keys, the predecessor's target files and its flat autonomy",
            "files are accepted; unknown keys are refused. Nothing is dispatched for a target unless",
            "`autonomy: {enabled: true}` (or `autonomy_enabled: true`).",
            "",
            "Exit codes: 0 the cycle ran (--once) or the daemon stopped cleanly, 1 the cycle or the log",
            "failed, 2 usage or configuration error.",
        ]
        .map(str::to_owned),
    );
    lines.join("\n")
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("info", args.log_format == LogFormat::Json);
    finish(schedule(args).await)
}

async fn schedule(args: Args) -> Result<(), CliError> {
    let targets = load_targets(&args.targets)?;
    let source = args.source.open().await?;
    let (ledger, artifacts, workers): (Arc<Ledger>, Arc<dyn ArtifactStore>, WorkerDefaults) =
        match source {
            Source::Store(stores) => {
                tracing::info!(store = %stores.location, "opening the ledger");
                let ledger =
                    Arc::new(Ledger::open(stores.events.clone(), stores.graphs.clone()).await?);
                let keyring = keyring_beside(args.source.token_file.as_deref())?;
                let workers = WorkerDefaults {
                    control_plane_url: None,
                    minter: Arc::new(LedgerMinter::new(keyring, ledger.clone())),
                };
                (ledger, stores.artifacts.clone(), workers)
            }
            Source::Api(client) => {
                let ledger = Ledger::open(
                    Arc::new(client.event_store()),
                    Arc::new(MemoryGraphStore::new()),
                )
                .await?;
                let workers = WorkerDefaults {
                    control_plane_url: Some(
                        client.base_url().as_str().trim_end_matches('/').to_owned(),
                    ),
                    minter: Arc::new(client.clone()),
                };
                (
                    Arc::new(ledger),
                    Arc::new(RemoteArtifacts(client)) as Arc<dyn ArtifactStore>,
                    workers,
                )
            }
        };
    let scheduler = build(ledger.clone(), artifacts, targets, &args.run, workers).await?;
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = args.metrics_bind {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::failure(format!("--metrics-bind {addr}: cannot listen: {e}")))?;
        tracing::info!(%addr, "serving the scheduler's metrics on /metrics");
        let render = {
            let scheduler = scheduler.clone();
            move || scheduler.metrics()
        };
        let stopped = async move {
            let _ = metrics_stopped.await;
        };
        tokio::spawn(async move {
            if let Err(error) = serve_metrics(listener, render, stopped).await {
                tracing::warn!(%error, "the metrics server stopped");
            }
        });
    }
    let result = if args.once {
        scheduler.once().await.map(|report| {
            tracing::info!(
                "once: {} attempt(s) dispatched, {} decision(s) recorded, {} target(s) failed closed",
                report.dispatched.len(),
                report.actions.len(),
                report.closed.len()
            );
        })
    } else {
        scheduler.run(shutdown_signal_logged()).await
    };
    let _ = stop_metrics.send(());
    let flushed = ledger.flush().await;
    result.map_err(|e| CliError::failure(e.to_string()))?;
    Ok(flushed?)
}

async fn shutdown_signal_logged() {
    let signal = shutdown_signal().await;
    tracing::info!(signal, "stopping the scheduler");
}

/// The token `--api` uses, for workers that have none configured.
/// The control plane's token keyring, beside the token file (`--token-file`, else the default),
/// made on first use like `serve` makes it: a scheduler on a store signs its workers' tokens
/// with it, so the control plane they report to (one host, one home) accepts them.
fn keyring_beside(token_file: Option<&Path>) -> Result<Keyring, CliError> {
    let file = token_file
        .map(Path::to_path_buf)
        .or_else(token::default_token_file)
        .ok_or_else(|| {
            CliError::usage(
                "HOME is unset and no --token-file is given: the scheduler signs its workers' tokens with the keyring beside the token file",
            )
        })?;
    let path = keyring_file::keyring_file_beside(&file);
    let (keyring, generated) =
        keyring_file::load_or_create(&path).map_err(|e| CliError::usage(e.to_string()))?;
    if generated {
        tracing::info!(file = %path.display(), "generated the token signing keyring (mode 0600)");
    }
    Ok(keyring)
}

pub(crate) fn load_targets(names: &[String]) -> Result<Vec<TargetConfig>, CliError> {
    names.iter().map(|name| load_target(name)).collect()
}

fn load_target(name: &str) -> Result<TargetConfig, CliError> {
    let given = PathBuf::from(name);
    let home_file = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| {
            PathBuf::from(home)
                .join(".leviathan")
                .join("targets")
                .join(format!("{name}.yaml"))
        });
    let file = if given.is_file() {
        given
    } else if let Some(file) = home_file.as_ref().filter(|f| f.is_file()) {
        file.clone()
    } else {
        return Err(CliError::usage(format!(
            "target `{name}`: no such file `{}`, and no `{}`",
            given.display(),
            home_file.map_or_else(
                || "~/.leviathan/targets/<name>.yaml (HOME is unset)".to_owned(),
                |f| f.display().to_string()
            )
        )));
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
    let default_name = file.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
    parse_target_config(&file.display().to_string(), &text, default_name.as_deref())
        .map_err(|e| CliError::usage(e.to_string()))
}

/// The scheduler over `ledger` for `targets`, with the executor, forges and backlog source the
/// environment configures.
pub(crate) async fn build(
    ledger: Arc<Ledger>,
    artifacts: Arc<dyn ArtifactStore>,
    targets: Vec<TargetConfig>,
    run: &RunArgs,
    workers: WorkerDefaults,
) -> Result<Scheduler, CliError> {
    let token = std::env::var(GITHUB_TOKEN)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(Secret::new)
        .ok_or_else(|| {
            CliError::usage(format!(
                "{GITHUB_TOKEN} is not set: the scheduler reads the targets' backlogs and pull requests with it"
            ))
        })?;
    let api_url = std::env::var(LEVIATHAN_GITHUB_API_URL)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.to_owned());
    let minter = workers.minter.clone();
    let delivery = DeliveryConfig {
        artifacts: Arc::clone(&artifacts),
        token: token.clone(),
        identity: bot_identity(),
    };
    let executor = executor(run.executor, artifacts, workers.control_plane_url).await?;
    let mut builder = Scheduler::builder(ledger, executor)
        .backlog(GitBacklog::new(Some(token.clone())))
        .delivery(delivery)
        .options(SchedulerOptions {
            max_running_global: run.max_running,
            tick: Duration::from_secs(run.tick),
            shutdown_grace: Duration::from_secs(run.shutdown_grace),
            worker_env: forwarded_worker_env(),
            ..SchedulerOptions::default()
        })
        .worker_tokens(minter);
    for target in targets {
        let forge = GitHubForge::new(&api_url, &token, &target.repo_url)
            .map_err(|e| CliError::usage(format!("target `{}`: {e}", target.name)))?;
        builder = builder.target(target, Arc::new(forge) as Arc<dyn Forge>);
    }
    builder.build().map_err(|e| CliError::usage(e.to_string()))
}

/// The author of delivered commits: `LEVIATHAN_GIT_AUTHOR_NAME` and `LEVIATHAN_GIT_AUTHOR_EMAIL`
/// when set, else the bot's defaults.
fn bot_identity() -> GitIdentity {
    let bot = GitIdentity::default();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    GitIdentity {
        name: var(protocol::LEVIATHAN_GIT_AUTHOR_NAME).unwrap_or(bot.name),
        email: var(protocol::LEVIATHAN_GIT_AUTHOR_EMAIL).unwrap_or(bot.email),
    }
}

async fn executor(
    kind: ExecutorKind,
    artifacts: Arc<dyn ArtifactStore>,
    control_plane_url: Option<String>,
) -> Result<Arc<dyn Executor>, CliError> {
    match kind {
        ExecutorKind::Local => {
            let mut config = LocalConfig::from_env().map_err(|e| CliError::usage(e.to_string()))?;
            let configured_url = std::env::var(leviathan_exec_local::WORKER_CONTROL_PLANE_URL)
                .is_ok_and(|v| !v.trim().is_empty());
            if let (false, Some(url)) = (configured_url, control_plane_url) {
                config = config.control_plane_url(url);
            }
            // Every attempt gets a token of its own: the executor holds no shared one to leak.
            config.secrets.remove(protocol::CONTROL_PLANE_TOKEN);
            Ok(Arc::new(LocalExecutor::new(config.artifacts(artifacts))))
        }
        ExecutorKind::K8s => {
            let config = K8sConfig::from_env()
                .map_err(|e| CliError::usage(e.to_string()))?
                .artifacts(artifacts);
            let executor = K8sExecutor::try_default(config)
                .await
                .map_err(|e| CliError::usage(format!("the Kubernetes executor: {e}")))?;
            Ok(Arc::new(executor))
        }
    }
}

/// Worker variables the scheduler passes on from its own environment: the worker's non-secret
/// settings that no executor sets itself.
fn forwarded_worker_variables() -> impl Iterator<Item = &'static str> {
    protocol::VARIABLES
        .iter()
        .filter(|v| {
            !v.secret
                && !protocol::RESERVED_VARIABLES.contains(&v.name)
                // The executors set the model name from their own configuration.
                && v.name != protocol::LEVIATHAN_CLAUDE_MODEL
        })
        .map(|v| v.name)
}

fn forwarded_worker_env() -> std::collections::BTreeMap<String, String> {
    forwarded_worker_variables()
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
            Some((name.to_owned(), value))
        })
        .collect()
}

/// A control plane's artifacts through its API, for executors that store logs.
#[derive(Debug)]
struct RemoteArtifacts(ControlPlaneClient);

fn artifact_error(error: ClientError) -> ArtifactError {
    let reason = error.to_string();
    if error.is_transient() {
        ArtifactError::Unavailable {
            reason,
            source: Some(Box::new(error)),
        }
    } else {
        ArtifactError::Backend {
            reason,
            source: Some(Box::new(error)),
        }
    }
}

#[async_trait]
impl ArtifactStore for RemoteArtifacts {
    /// Uploads the content. The API does not say whether it was stored already, so the answer
    /// reports it as created.
    async fn put(&self, content: Bytes) -> Result<StoredArtifact, ArtifactError> {
        let sha256 = Sha256Digest::of(&content);
        let size = content.len() as u64;
        self.0
            .put_artifact(&sha256, content)
            .await
            .map_err(artifact_error)?;
        Ok(StoredArtifact {
            sha256,
            size,
            created: true,
        })
    }

    async fn get(&self, sha256: &Sha256Digest) -> Result<Bytes, ArtifactError> {
        match self.0.get_artifact(sha256).await {
            Ok(content) => Ok(content),
            Err(ClientError::Status { status: 404, .. }) => Err(ArtifactError::NotFound(*sha256)),
            Err(error) => Err(artifact_error(error)),
        }
    }

    async fn exists(&self, sha256: &Sha256Digest) -> Result<bool, ArtifactError> {
        match self.get(sha256).await {
            Ok(_) => Ok(true),
            Err(ArtifactError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }
}
