//! Plugging your own executor into the scheduler: the quickstart's demo, with attempts run by
//! `NiceExecutor`, a small [`Executor`] that starts the worker as a child process at the lowest
//! CPU priority (`nice -n 19 <worker> worker`; directly when `nice` is not installed).
//!
//! ```sh
//! cargo run --example custom_executor
//! ```
//!
//! An executor's contract ([`leviathan::core::executor::protocol`]): give the worker the
//! attempt's identity ([`protocol::attempt_variables`]), the control plane's URL, the
//! credentials (from the executor's own configuration: they are never in an [`AttemptSpec`]) and
//! the spec's non-secret settings; read its result from the last line of its stdout; end it at
//! the deadline or on [`Executor::cancel`]; store what it printed as the attempt's log.
//! `leviathan_exec_local::LocalExecutor` does the same with process groups, a private `TMPDIR`
//! and re-attachment after a restart.

#[path = "demo/mod.rs"]
pub(crate) mod demo;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use async_trait::async_trait;
use bytes::Bytes;
use demo::{Demo, DemoResult, Outcome, WorkerCommand};
use leviathan::core::{
    ArtifactStore, AttemptId, AttemptOutcome, AttemptResult, AttemptSpec, Executor, ExecutorError,
    executor::{ArtifactRef, protocol},
    model::{Failure, FailureClass, FailureKind},
};
use leviathan_exec_local::Secret;
use tokio::{process::Command, sync::oneshot};

fn main() -> ExitCode {
    demo::main(run)
}

/// Runs the demo with attempts on a [`NiceExecutor`] starting `worker`.
pub(crate) async fn run(worker: WorkerCommand) -> DemoResult<Outcome> {
    let demo = Demo::start().await?;
    let executor = NiceExecutor {
        worker,
        nice: find_on_path("nice"),
        control_plane_url: demo.api_url().to_owned(),
        secrets: demo.worker_secrets().into(),
        root: demo.attempts_dir(),
        artifacts: demo.artifacts(),
        running: Mutex::default(),
    };
    demo.schedule(Arc::new(executor)).await?;
    demo.finish().await
}

/// Runs each attempt's worker as a low-priority child process.
#[derive(Debug)]
pub(crate) struct NiceExecutor {
    worker: WorkerCommand,
    /// `nice`, when installed.
    nice: Option<PathBuf>,
    control_plane_url: String,
    /// Credentials by worker variable (their `Debug` is redacted).
    secrets: Vec<(&'static str, Secret)>,
    /// One directory per running attempt: the worker's `HOME` and workspace.
    root: PathBuf,
    /// Where worker logs go.
    artifacts: Arc<dyn ArtifactStore>,
    /// Running attempts, to cancel them.
    running: Mutex<HashMap<AttemptId, oneshot::Sender<()>>>,
}

/// How a worker process ended.
enum Ended {
    Exited(std::io::Result<std::process::Output>),
    Deadline,
    Cancelled,
}

#[async_trait]
impl Executor for NiceExecutor {
    fn name(&self) -> &str {
        if self.nice.is_some() {
            "nice"
        } else {
            "direct"
        }
    }

    async fn run(&self, spec: &AttemptSpec) -> Result<AttemptOutcome, ExecutorError> {
        protocol::check_spec(spec)?;
        let dir = self.root.join(spec.attempt_id.as_str());
        let workspace = dir.join("workspace");
        tokio::fs::create_dir_all(&workspace)
            .await
            .map_err(|e| io_error(format!("creating {}", workspace.display()), e))?;

        let mut command = match &self.nice {
            Some(nice) => {
                let mut command = Command::new(nice);
                command.args(["-n", "19"]).arg(&self.worker.program);
                command
            }
            None => Command::new(&self.worker.program),
        };
        command
            .args(&self.worker.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .envs(protocol::attempt_variables(spec))
            .env(protocol::CONTROL_PLANE_URL, &self.control_plane_url)
            .env(protocol::LEVIATHAN_WORKSPACE_DIR, &workspace)
            .env(
                protocol::LEVIATHAN_TERMINATION_MESSAGE_PATH,
                dir.join("result.json"),
            )
            .envs(
                self.secrets
                    .iter()
                    .map(|(name, value)| (name, value.expose())),
            )
            .envs(&spec.env);
        // The attempt's own token, when the scheduler minted one, instead of the executor's: the
        // control plane's model gateway serves only a live attempt's token.
        if let Some(token) = &spec.worker_token {
            command.env(protocol::CONTROL_PLANE_TOKEN, token.expose());
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = shown_command(self.nice.as_deref(), &self.worker);
        let child = command
            .spawn()
            .map_err(|e| io_error(format!("starting `{shown}`"), e))?;

        let (cancel, cancelled) = oneshot::channel();
        self.running().insert(spec.attempt_id.clone(), cancel);
        let started = Instant::now();
        // Leaving `wait_with_output` early drops the child, which kills it (`kill_on_drop`).
        let ended = tokio::select! {
            output = child.wait_with_output() => Ended::Exited(output),
            () = tokio::time::sleep(spec.deadline) => Ended::Deadline,
            _ = cancelled => Ended::Cancelled,
        };
        self.running().remove(&spec.attempt_id);
        let _ = tokio::fs::remove_dir_all(&dir).await;

        let failed = |kind, class, summary| {
            AttemptResult::Failed(Failure {
                kind,
                class,
                summary,
            })
        };
        let mut artifacts = Vec::new();
        let result = match ended {
            Ended::Exited(Ok(output)) => {
                let stdout = String::from_utf8_lossy(&output.stdout);
                let stderr = String::from_utf8_lossy(&output.stderr);
                artifacts.extend(self.store_log(spec, &format!("{stderr}{stdout}")).await);
                protocol::parse_worker_result(&stdout).unwrap_or_else(|| {
                    // No result line: a crash (transient), or a configuration the worker refused
                    // (exit 2, permanent: a retry would get the same one).
                    let class = if output.status.code() == Some(protocol::EXIT_CONFIGURATION) {
                        FailureClass::Permanent
                    } else {
                        FailureClass::Transient
                    };
                    failed(
                        FailureKind::Infrastructure,
                        class,
                        format!(
                            "worker {}: {}",
                            output.status,
                            protocol::summary_line(&stderr)
                        ),
                    )
                })
            }
            Ended::Exited(Err(error)) => {
                return Err(io_error(format!("waiting for `{shown}`"), error));
            }
            Ended::Deadline => failed(
                FailureKind::Timeout,
                FailureClass::Transient,
                format!("stopped after the {} s deadline", spec.deadline.as_secs()),
            ),
            Ended::Cancelled => failed(
                FailureKind::Cancelled,
                FailureClass::Permanent,
                "cancelled".to_owned(),
            ),
        };
        let how = match &result {
            AttemptResult::Succeeded { pr_url, .. } => format!("pull request {pr_url}"),
            AttemptResult::Proposed { patch_sha256, .. } => {
                format!("proposed patch {patch_sha256}")
            }
            AttemptResult::Failed(failure) => format!("{} ({})", failure.kind, failure.summary),
        };
        println!(
            "{} executor: {} #{} of {} ran `{shown}` for {:.1} s: {how}",
            self.name(),
            spec.attempt_id,
            spec.attempt_number,
            spec.task_id,
            started.elapsed().as_secs_f64(),
        );
        Ok(AttemptOutcome {
            attempt_id: spec.attempt_id.clone(),
            result,
            artifacts,
        })
    }

    async fn cancel(&self, attempt_id: &AttemptId) -> Result<(), ExecutorError> {
        match self.running().remove(attempt_id) {
            Some(cancel) => {
                // The run may have ended meanwhile; then there is nothing left to stop.
                let _ = cancel.send(());
                Ok(())
            }
            None => Err(ExecutorError::NotFound(attempt_id.clone())),
        }
    }
}

impl NiceExecutor {
    /// Stores the worker's output, credentials redacted, as the attempt's `log` artifact; a
    /// store failure costs the log, never the outcome.
    async fn store_log(&self, spec: &AttemptSpec, log: &str) -> Option<ArtifactRef> {
        let redacted = self
            .secrets
            .iter()
            .fold(log.to_owned(), |log, (_, secret)| {
                log.replace(secret.expose(), "[redacted]")
            });
        let stored = self.artifacts.put(Bytes::from(redacted)).await.ok()?;
        Some(ArtifactRef {
            sha256: stored.sha256,
            kind: "log".to_owned(),
            size: stored.size,
            name: Some(format!("worker log of {}", spec.attempt_id)),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptId, oneshot::Sender<()>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The command line as printed.
fn shown_command(nice: Option<&Path>, worker: &WorkerCommand) -> String {
    let mut words: Vec<String> = nice
        .map(|nice| vec![nice.display().to_string(), "-n".into(), "19".into()])
        .unwrap_or_default();
    words.push(worker.program.display().to_string());
    words.extend(worker.args.iter().cloned());
    words.join(" ")
}

/// `program` in one of `PATH`'s directories.
fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn io_error(what: String, error: std::io::Error) -> ExecutorError {
    ExecutorError::Io {
        reason: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}
