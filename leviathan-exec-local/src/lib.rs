//! The local executor: runs `leviathan worker` as a child process per attempt.
//!
//! Each attempt gets a fresh directory `<workspace_root>/<attempt_id>/` holding the worker's
//! workspace (`LEVIATHAN_WORKSPACE_DIR`), a private `HOME` and `TMPDIR`, and the termination file
//! the worker writes its result to. The worker runs in its own process group with a clean
//! environment (a few inherited variables such as `PATH`, the attempt's identity, the
//! configured secrets, then [`AttemptSpec::env`]); its combined stdout and stderr become the
//! attempt's log artifact, with the configured secret values redacted.
//!
//! How an attempt ends:
//! - the worker's result (termination file, else the last line of its output) is the outcome;
//! - the deadline passing stops the whole process group (SIGTERM, SIGKILL after the grace
//!   period): `timeout`, transient;
//! - [`Executor::cancel`] stops it likewise: `cancelled`, permanent;
//! - no readable result: `infrastructure`, permanent for exit code 2 (the worker rejected its
//!   configuration, a retry gets the same one), transient otherwise (a crash).
//!
//! The directory is removed afterwards, except after a failure with
//! [`LocalConfig::keep_failed_workspaces`].
//!
//! The worker outlives a scheduler that is killed (it leads its own process group), and
//! [`Executor::reattach`] follows it from a new process: `run` records the worker's pid and
//! start time (from `/proc`, so a reused pid is never mistaken for it) and the deadline in
//! `<attempt_id>/worker.pid`. `reattach` finds a live worker through that record, waits for it to
//! exit (polling, bounded by the deadline; cancel and the deadline stop it as in `run`) and reads
//! its termination file; a worker that already exited gives the result it left there; without a
//! record or a result the answer is `None` (the attempt is lost). The log of a followed worker
//! went to the process that started it and is not stored.

mod config;
mod process;
mod reattach;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use bytes::Bytes;
use leviathan_core::{
    AttemptId, AttemptOutcome, AttemptResult, AttemptSpec, Executor, ExecutorError,
    executor::{ArtifactRef, protocol},
    model::{Failure, FailureClass, FailureKind},
    redact::Redactor,
};
use tokio_util::sync::CancellationToken;

pub use config::{
    CONTROL_PLANE_TOKEN, ConfigError, DEFAULT_CONTROL_PLANE_URL, DEFAULT_INHERITED,
    KEEP_FAILED_WORKSPACES, LocalConfig, VARIABLES, Variable, WORKER_BIN, WORKER_CONTROL_PLANE_URL,
    WORKSPACE_ROOT,
};
pub use leviathan_core::secret::Secret;

use crate::{
    process::{Finished, Launch, Stop},
    reattach::WorkerRecord,
};

/// The file, in the attempt's directory, the worker writes its result to.
const TERMINATION_FILE: &str = "termination-log";

/// Runs each attempt as a local `leviathan worker` process.
#[derive(Debug)]
pub struct LocalExecutor {
    config: LocalConfig,
    running: Mutex<HashMap<AttemptId, CancellationToken>>,
}

impl LocalExecutor {
    /// An executor with `config`.
    pub fn new(config: LocalConfig) -> Self {
        Self {
            config,
            running: Mutex::default(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    fn running(&self) -> MutexGuard<'_, HashMap<AttemptId, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `attempt` as running; the guard unregisters it.
    fn register(&self, attempt: &AttemptId) -> Result<Registration<'_>, ExecutorError> {
        let mut running = self.running();
        if running.contains_key(attempt) {
            return Err(ExecutorError::Rejected {
                reason: format!("attempt {attempt} is already running on this executor"),
                source: None,
            });
        }
        let token = CancellationToken::new();
        running.insert(attempt.clone(), token.clone());
        Ok(Registration {
            executor: self,
            attempt: attempt.clone(),
            token,
        })
    }

    /// The worker's complete environment for `spec` in directory `dir`.
    fn worker_env(&self, spec: &AttemptSpec, dir: &AttemptDir) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self
            .config
            .inherited
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
            .collect();
        let mut set = |name: &str, value: String| {
            env.insert(name.to_owned(), value);
        };
        for (name, value) in protocol::attempt_variables(spec) {
            set(name, value);
        }
        set(
            protocol::CONTROL_PLANE_URL,
            self.config.control_plane_url.clone(),
        );
        for (name, secret) in &self.config.secrets {
            set(name, secret.expose().to_owned());
        }
        // The attempt's own token replaces the executor's: the worker can act for its attempt only.
        if let Some(token) = &spec.worker_token {
            set(protocol::CONTROL_PLANE_TOKEN, token.expose().to_owned());
        }
        if let Some(model) = &self.config.claude_model {
            set(protocol::LEVIATHAN_CLAUDE_MODEL, model.clone());
        }
        set(
            protocol::LEVIATHAN_WORKSPACE_DIR,
            path_string(&dir.workspace),
        );
        set(
            protocol::LEVIATHAN_TERMINATION_MESSAGE_PATH,
            path_string(&dir.termination_file),
        );
        set("HOME", path_string(&dir.home));
        set("TMPDIR", path_string(&dir.tmp));
        for (name, value) in &spec.env {
            set(name, value.clone());
        }
        env
    }

    /// Replaces every configured secret value and the attempt's token (and the forms the worker
    /// derives from them) in `output`, with the worker's own redactor.
    fn redact(&self, spec: &AttemptSpec, output: &[u8]) -> String {
        let secrets = self.config.secrets.values().chain(&spec.worker_token);
        Redactor::new(secrets.map(Secret::expose)).redact_bytes(output)
    }

    /// Stores the worker's log; a store failure costs the log, never the outcome.
    async fn store_log(&self, attempt: &AttemptId, log: String) -> Vec<ArtifactRef> {
        let Some(store) = &self.config.artifacts else {
            return Vec::new();
        };
        match store.put(Bytes::from(log)).await {
            Ok(stored) => vec![ArtifactRef {
                sha256: stored.sha256,
                kind: "log".to_owned(),
                size: stored.size,
                name: Some(format!("worker log of {attempt}")),
            }],
            Err(err) => {
                tracing::warn!(%attempt, error = %err, "cannot store the worker log");
                Vec::new()
            }
        }
    }

    /// Turns how the worker ended into the attempt's result.
    fn result_of(
        &self,
        spec: &AttemptSpec,
        finished: &Finished,
        log: &str,
        dir: &AttemptDir,
    ) -> AttemptResult {
        if let Some(stop) = finished.stopped {
            return stopped_result(spec, stop);
        }
        if let Some(result) =
            termination_result(&dir.termination_file).or_else(|| protocol::parse_worker_result(log))
        {
            return result;
        }
        let how = match (finished.status.code(), finished.status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "an unknown status".to_owned(),
        };
        let last = protocol::summary_line(log);
        AttemptResult::Failed(
            if finished.status.code() == Some(protocol::EXIT_CONFIGURATION) {
                Failure {
                    kind: FailureKind::Infrastructure,
                    class: FailureClass::Permanent,
                    summary: format!("the worker rejected its configuration ({how}): {last}"),
                }
            } else {
                Failure {
                    kind: FailureKind::Infrastructure,
                    class: FailureClass::Transient,
                    summary: format!(
                        "the worker ended with {how} without reporting a result: {last}"
                    ),
                }
            },
        )
    }
}

/// The result of an attempt the executor stopped.
fn stopped_result(spec: &AttemptSpec, stop: Stop) -> AttemptResult {
    AttemptResult::Failed(match stop {
        Stop::Deadline => Failure {
            kind: FailureKind::Timeout,
            class: FailureClass::Transient,
            summary: format!(
                "attempt exceeded its deadline of {} s; the worker's process group was stopped",
                spec.deadline.as_secs()
            ),
        },
        Stop::Cancelled => Failure {
            kind: FailureKind::Cancelled,
            class: FailureClass::Permanent,
            summary: "attempt cancelled; the worker's process group was stopped".to_owned(),
        },
    })
}

/// The result the worker wrote to its termination file, if it wrote one.
fn termination_result(path: &Path) -> Option<AttemptResult> {
    protocol::parse_worker_result(&std::fs::read_to_string(path).ok()?)
}

/// Keeps an attempt registered as running while its `run` is in progress.
struct Registration<'a> {
    executor: &'a LocalExecutor,
    attempt: AttemptId,
    token: CancellationToken,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.executor.running().remove(&self.attempt);
    }
}

/// The directories and files of one attempt.
#[derive(Debug)]
struct AttemptDir {
    root: PathBuf,
    workspace: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    termination_file: PathBuf,
}

impl AttemptDir {
    /// Creates `<root>/<attempt>/` afresh (a leftover of an earlier run is replaced).
    async fn create(workspace_root: &Path, attempt: &AttemptId) -> io::Result<Self> {
        let root = workspace_root.join(attempt.as_str());
        match tokio::fs::remove_dir_all(&root).await {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let dir = Self {
            workspace: root.join("workspace"),
            home: root.join("home"),
            tmp: root.join("tmp"),
            termination_file: root.join(TERMINATION_FILE),
            root,
        };
        for path in [&dir.workspace, &dir.home, &dir.tmp] {
            tokio::fs::create_dir_all(path).await?;
        }
        tokio::fs::write(&dir.termination_file, b"").await?;
        Ok(dir)
    }
}

/// Removes an attempt's directory; failing to is worth a warning, not the attempt.
async fn remove_dir(dir: &Path) {
    if let Err(err) = tokio::fs::remove_dir_all(dir).await {
        tracing::warn!(dir = %dir.display(), error = %err, "cannot remove the attempt directory");
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> ExecutorError {
    move |err| ExecutorError::Io {
        reason: format!("{what}: {err}"),
        source: Some(Box::new(err)),
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &str {
        "local"
    }

    async fn run(&self, spec: &AttemptSpec) -> Result<AttemptOutcome, ExecutorError> {
        protocol::check_spec(spec)?;
        let registration = self.register(&spec.attempt_id)?;
        let dir = AttemptDir::create(&self.config.workspace_root, &spec.attempt_id)
            .await
            .map_err(io_error(format!(
                "cannot prepare the directory of attempt {} under {}",
                spec.attempt_id,
                self.config.workspace_root.display()
            )))?;
        let launch = Launch {
            program: self.config.worker_program.clone(),
            args: self.config.worker_args.clone(),
            cwd: dir.workspace.clone(),
            env: self.worker_env(spec, &dir),
        };
        let record_worker = |pid: u32| {
            if let Err(err) =
                WorkerRecord::of(pid, spec.deadline).and_then(|record| record.write(&dir.root))
            {
                tracing::warn!(
                    attempt = %spec.attempt_id,
                    error = %err,
                    "cannot record the worker's pid; a restarted scheduler will not find it"
                );
            }
        };
        let finished = match process::supervise(
            launch,
            spec.deadline,
            &registration.token,
            self.config.stop_grace,
            record_worker,
        )
        .await
        {
            Ok(finished) => finished,
            Err(err) => {
                remove_dir(&dir.root).await;
                return Err(io_error(format!(
                    "cannot run the worker of attempt {}",
                    spec.attempt_id
                ))(err));
            }
        };
        let mut log = self.redact(spec, &finished.output);
        let result = self.result_of(spec, &finished, &log, &dir);
        if finished.truncated {
            log.insert_str(0, "[the start of the log was dropped]\n");
        }
        let artifacts = self.store_log(&spec.attempt_id, log).await;
        let keep = self.config.keep_failed_workspaces && matches!(result, AttemptResult::Failed(_));
        if !keep {
            remove_dir(&dir.root).await;
        }
        drop(registration);
        Ok(AttemptOutcome {
            attempt_id: spec.attempt_id.clone(),
            result,
            artifacts,
        })
    }

    async fn cancel(&self, attempt_id: &AttemptId) -> Result<(), ExecutorError> {
        match self.running().get(attempt_id) {
            Some(token) => {
                token.cancel();
                Ok(())
            }
            None => Err(ExecutorError::NotFound(attempt_id.clone())),
        }
    }

    async fn reattach(&self, spec: &AttemptSpec) -> Result<Option<AttemptOutcome>, ExecutorError> {
        let root = self.config.workspace_root.join(spec.attempt_id.as_str());
        if !root.is_dir() {
            return Ok(None);
        }
        let termination_file = root.join(TERMINATION_FILE);
        let result = match WorkerRecord::read(&root).filter(WorkerRecord::is_running) {
            Some(record) => {
                let registration = self.register(&spec.attempt_id)?;
                tracing::info!(
                    attempt = %spec.attempt_id,
                    pid = record.pid,
                    "following a worker started by an earlier process"
                );
                let stopped =
                    reattach::follow(&record, &registration.token, self.config.stop_grace).await;
                drop(registration);
                match stopped {
                    Some(stop) => stopped_result(spec, stop),
                    None => termination_result(&termination_file).unwrap_or_else(|| {
                        AttemptResult::Failed(Failure {
                            kind: FailureKind::Infrastructure,
                            class: FailureClass::Transient,
                            summary: format!(
                                "the worker (pid {}) ended without reporting a result after a scheduler restart",
                                record.pid
                            ),
                        })
                    }),
                }
            }
            None => match termination_result(&termination_file) {
                Some(result) => result,
                None => {
                    if !self.config.keep_failed_workspaces {
                        remove_dir(&root).await;
                    }
                    return Ok(None);
                }
            },
        };
        let keep = self.config.keep_failed_workspaces && matches!(result, AttemptResult::Failed(_));
        if !keep {
            remove_dir(&root).await;
        }
        Ok(Some(AttemptOutcome {
            attempt_id: spec.attempt_id.clone(),
            result,
            artifacts: Vec::new(),
        }))
    }
}
