//! Running an attempt as a Job: submit (or adopt), follow to the end, read the result, collect
//! the log, clean up.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use kube::{api::PropagationPolicy, runtime::watcher};
use leviathan_core::{
    AttemptId, AttemptOutcome, AttemptResult, AttemptSpec, Executor, ExecutorError,
    executor::{ArtifactRef, protocol},
    model::{Failure, FailureClass, FailureKind},
    retry::Verdict,
};
use tokio::{sync::watch, time::Sleep};

use crate::{
    api::{ApiError, Cluster, describe, watch_error_is_permanent},
    config::K8sConfig,
    job::{ATTEMPT_KEY, job_spec, token_secret},
    names::{job_name, token_secret_name},
    status::{JobState, PodProblem, finished_result, job_state, pod_problem, terminated},
};

/// Runs each attempt as one Kubernetes Job.
pub struct K8sExecutor {
    cluster: Cluster,
    config: K8sConfig,
    /// Attempts being followed by this process, each with what [`Executor::cancel`] shares with
    /// its run.
    following: Mutex<HashMap<AttemptId, Cancellation>>,
}

impl std::fmt::Debug for K8sExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How following a Job ended.
enum Ending {
    /// The Job reached `Complete` or `Failed`.
    Finished(JobState, Option<String>),
    /// The Job was deleted (or is being deleted) before it finished.
    Gone,
    /// The pod cannot run; the Job is stopped.
    Stuck(Failure),
    /// The cluster did not end the Job in time; the executor stops it.
    Overdue,
}

impl K8sExecutor {
    /// An executor submitting Jobs through `client` (whose default namespace does not matter:
    /// Jobs go to [`K8sConfig::namespace`]).
    pub fn new(client: kube::Client, config: K8sConfig) -> Self {
        Self {
            cluster: Cluster::new(client, &config.namespace),
            config,
            following: Mutex::default(),
        }
    }

    /// An executor using the in-cluster service account, else the local kubeconfig.
    pub async fn try_default(config: K8sConfig) -> Result<Self, ExecutorError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|err| ExecutorError::Rejected {
                reason: format!("cannot configure a Kubernetes client: {err}"),
                source: Some(Box::new(err)),
            })?;
        Ok(Self::new(client, config))
    }

    /// Its configuration.
    pub fn config(&self) -> &K8sConfig {
        &self.config
    }

    /// The Job this executor submits for `spec`.
    pub fn job_spec(&self, spec: &AttemptSpec) -> Job {
        job_spec(spec, &self.config)
    }

    fn following(&self) -> MutexGuard<'_, HashMap<AttemptId, Cancellation>> {
        self.following
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `attempt` as followed; the guard unregisters it and tells whether it was
    /// cancelled.
    fn register(&self, attempt: &AttemptId) -> Result<Following<'_>, ExecutorError> {
        let mut following = self.following();
        if following.contains_key(attempt) {
            return Err(ExecutorError::Rejected {
                reason: format!("attempt {attempt} is already being followed by this executor"),
                source: None,
            });
        }
        let (requested, cancelled) = watch::channel(false);
        let deletion = JobDeletion::default();
        following.insert(
            attempt.clone(),
            Cancellation {
                requested,
                deletion: deletion.clone(),
            },
        );
        Ok(Following {
            executor: self,
            attempt: attempt.clone(),
            cancelled,
            deletion,
        })
    }

    /// Creates the Job, retrying transient errors with the configured policy; a Job of the same
    /// attempt that exists already (an earlier try whose answer was lost, another scheduler) is
    /// adopted. `None` when the attempt was cancelled before a Job was submitted.
    async fn submit(
        &self,
        job: &Job,
        spec: &AttemptSpec,
        following: &Following<'_>,
    ) -> Result<Option<Job>, ExecutorError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let cancelled = following.cancelled.clone();
        // A cancel ends the wait between tries; the next try then sees it.
        let sleep = move |wait: Duration| {
            let mut cancelled = cancelled.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = cancelled.wait_for(|cancelled| *cancelled) => {}
                }
            }
        };
        let retry = self.config.create_retry;
        let create = || self.try_submit(job, &name, spec, following);
        let what = format!("creating Job {name}");
        match retry
            .retry_with_sleep(&what, create, SubmitError::verdict, sleep)
            .await
        {
            Ok(job) => Ok(Some(job)),
            Err(SubmitError::Cancelled) => Ok(None),
            Err(SubmitError::Vanished) => Err(ExecutorError::Unavailable {
                reason: format!(
                    "Job {name} kept disappearing while being created ({} tries)",
                    retry.max_attempts
                ),
                source: None,
            }),
            Err(SubmitError::Api(err)) => Err(err.into()),
            Err(SubmitError::Refused(err)) => Err(err),
        }
    }

    /// One try of [`Self::submit`].
    async fn try_submit(
        &self,
        job: &Job,
        name: &str,
        spec: &AttemptSpec,
        following: &Following<'_>,
    ) -> Result<Job, SubmitError> {
        if following.cancelled() {
            return Err(SubmitError::Cancelled);
        }
        if let Some(created) = self.cluster.create_job(job).await? {
            tracing::info!(job = %name, attempt = %spec.attempt_id, "job submitted");
            return Ok(created);
        }
        let existing = self.cluster.get_job(name).await?;
        // Deleted between the create and the get: create it again.
        let existing = existing.ok_or(SubmitError::Vanished)?;
        self.check_owner(&existing, spec)
            .map_err(SubmitError::Refused)?;
        tracing::info!(job = %name, attempt = %spec.attempt_id, "existing job adopted");
        Ok(existing)
    }

    /// Creates the attempt's token Secret owned by `job` (see [`token_secret`] for the order); a
    /// Secret of that name that `job` does not own (left by an earlier Job of the attempt) is
    /// replaced. Nothing to do without a worker token.
    async fn provide_token(&self, spec: &AttemptSpec, job: &Job) -> Result<(), ExecutorError> {
        let Some(secret) = token_secret(spec, job) else {
            return Ok(());
        };
        let name = token_secret_name(&spec.attempt_id);
        if self.cluster.create_secret(&secret).await? {
            return Ok(());
        }
        let uid = job.metadata.uid.as_deref();
        let owned = |existing: &Secret| {
            let owners = existing.metadata.owner_references.iter().flatten();
            owners.into_iter().any(|o| Some(o.uid.as_str()) == uid)
        };
        if self
            .cluster
            .get_secret(&name)
            .await?
            .is_some_and(|s| owned(&s))
        {
            return Ok(());
        }
        self.cluster.delete_secret(&name).await?;
        if self.cluster.create_secret(&secret).await? {
            Ok(())
        } else {
            Err(ExecutorError::Unavailable {
                reason: format!(
                    "Secret {name} in namespace {} reappeared while being replaced",
                    self.cluster.namespace()
                ),
                source: None,
            })
        }
    }

    /// Refuses to follow a Job that belongs to another attempt (a name collision).
    fn check_owner(&self, job: &Job, spec: &AttemptSpec) -> Result<(), ExecutorError> {
        let owner = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ATTEMPT_KEY));
        if owner.map(String::as_str) == Some(spec.attempt_id.as_str()) {
            Ok(())
        } else {
            Err(ExecutorError::Rejected {
                reason: format!(
                    "Job {} in namespace {} exists but belongs to {}, not to attempt {}",
                    job.metadata.name.as_deref().unwrap_or_default(),
                    self.cluster.namespace(),
                    owner.map_or("no Leviathan attempt".to_owned(), |o| format!(
                        "attempt {o}"
                    )),
                    spec.attempt_id
                ),
                source: None,
            })
        }
    }

    /// Watches Job `name` and its pods until the Job ends, its pod turns out unable to run, or
    /// the deadline plus slack passes.
    async fn watch(&self, spec: &AttemptSpec, name: &str) -> Result<Ending, ExecutorError> {
        let mut jobs = self.cluster.watch_job(name);
        let mut pods = self.cluster.watch_pods(name);
        let overdue = tokio::time::sleep(spec.deadline + self.config.deadline_slack);
        tokio::pin!(overdue);
        let mut unschedulable: Option<(Pin<Box<Sleep>>, PodProblem)> = None;
        let mut pod_name: Option<String> = None;
        let mut listed_job = false;
        loop {
            tokio::select! {
                event = jobs.next() => match event {
                    Some(Ok(watcher::Event::Init)) => listed_job = false,
                    Some(Ok(watcher::Event::InitApply(job) | watcher::Event::Apply(job))) => {
                        listed_job = true;
                        match job_state(&job) {
                            JobState::Active => {}
                            JobState::Deleting => return Ok(Ending::Gone),
                            state => return Ok(Ending::Finished(state, pod_name)),
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) if !listed_job => return Ok(Ending::Gone),
                    Some(Ok(watcher::Event::InitDone)) => {}
                    Some(Ok(watcher::Event::Delete(_))) => return Ok(Ending::Gone),
                    Some(Err(err)) => self.watch_failed(name, "Job", err)?,
                    None => return Err(watch_ended(name)),
                },
                event = pods.next() => match event {
                    Some(Ok(watcher::Event::InitApply(pod) | watcher::Event::Apply(pod))) => {
                        pod_name = pod.metadata.name.clone();
                        match pod_problem(&pod) {
                            None => unschedulable = None,
                            Some(problem @ PodProblem::Unschedulable { .. }) => {
                                if unschedulable.is_none() {
                                    let timer = Box::pin(tokio::time::sleep(self.config.unschedulable_grace));
                                    unschedulable = Some((timer, problem));
                                }
                            }
                            // The token Secret is created just after the Job; the kubelet retries.
                            Some(PodProblem::ContainerConfig { message })
                                if awaits_token(spec, &message) => {}
                            Some(problem) => {
                                return Ok(Ending::Stuck(
                                    problem.failure(&self.config.image, self.config.unschedulable_grace),
                                ));
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => self.watch_failed(name, "pods of Job", err)?,
                    None => return Err(watch_ended(name)),
                },
                () = &mut overdue => return Ok(Ending::Overdue),
                problem = async {
                    match unschedulable.as_mut() {
                        Some((timer, problem)) => {
                            timer.await;
                            problem.clone()
                        }
                        None => std::future::pending().await,
                    }
                }, if unschedulable.is_some() => {
                    return Ok(Ending::Stuck(
                        problem.failure(&self.config.image, self.config.unschedulable_grace),
                    ));
                }
            }
        }
    }

    /// A watch error: the watcher retries by itself (with backoff) unless retrying cannot help.
    fn watch_failed(
        &self,
        name: &str,
        what: &str,
        err: watcher::Error,
    ) -> Result<(), ExecutorError> {
        if watch_error_is_permanent(&err) {
            return Err(ExecutorError::Rejected {
                reason: format!(
                    "cannot watch the {what} {name} in namespace {}: {}",
                    self.cluster.namespace(),
                    watch_error_text(&err)
                ),
                source: Some(Box::new(err)),
            });
        }
        tracing::warn!(job = %name, error = %watch_error_text(&err), "watch interrupted; resuming");
        Ok(())
    }

    /// Follows the attempt's Job to its end and turns that into the outcome.
    async fn follow(
        &self,
        spec: &AttemptSpec,
        following: &Following<'_>,
    ) -> Result<AttemptOutcome, ExecutorError> {
        let name = job_name(&spec.attempt_id);
        let ending = self.watch(spec, &name).await?;
        let mut artifacts = Vec::new();
        let result = match ending {
            Ending::Finished(state, pod_name) => {
                let pod = self.final_pod(&name, pod_name.as_deref()).await;
                let log = match &pod {
                    Some(pod) => self.pod_log(pod).await,
                    None => None,
                };
                let container = pod.as_ref().and_then(terminated);
                let result =
                    finished_result(&name, &state, container, log.as_deref(), spec.deadline);
                if let (Some(pod), Some(log)) = (&pod, log) {
                    artifacts.extend(self.store_log(pod, log).await);
                }
                if !self.config.keep_finished_jobs {
                    self.delete_quietly(spec).await;
                }
                result
            }
            Ending::Gone if following.cancelled() => failed(
                FailureKind::Cancelled,
                FailureClass::Permanent,
                format!("attempt cancelled; Job {name} deleted"),
            ),
            Ending::Gone => failed(
                FailureKind::Lost,
                FailureClass::Transient,
                format!("Job {name} was deleted before it finished"),
            ),
            Ending::Stuck(failure) => {
                self.delete_quietly(spec).await;
                AttemptResult::Failed(failure)
            }
            Ending::Overdue => {
                self.delete_quietly(spec).await;
                failed(
                    FailureKind::Timeout,
                    FailureClass::Transient,
                    format!(
                        "attempt exceeded its deadline of {} s and the cluster did not end Job {name} within {} s more; deleted it",
                        spec.deadline.as_secs(),
                        self.config.deadline_slack.as_secs()
                    ),
                )
            }
        };
        Ok(AttemptOutcome {
            attempt_id: spec.attempt_id.clone(),
            result,
            artifacts,
        })
    }

    /// The Job's pod as it is now: the one the watch saw, else the newest the Job has.
    async fn final_pod(&self, job: &str, seen: Option<&str>) -> Option<Pod> {
        if let Some(name) = seen {
            match self.cluster.get_pod(name).await {
                Ok(Some(pod)) => return Some(pod),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "cannot read the worker pod"),
            }
        }
        match self.cluster.list_pods(job).await {
            Ok(pods) => pods
                .into_iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone()),
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the worker pods");
                None
            }
        }
    }

    async fn pod_log(&self, pod: &Pod) -> Option<String> {
        let name = pod.metadata.name.as_deref()?;
        match self.cluster.pod_log(name).await {
            Ok(log) => Some(log),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the worker log");
                None
            }
        }
    }

    /// Stores the pod log; a store failure costs the log, never the outcome.
    async fn store_log(&self, pod: &Pod, log: String) -> Option<ArtifactRef> {
        let store = self.config.artifacts.as_ref()?;
        let pod = pod.metadata.name.as_deref().unwrap_or_default();
        match store.put(Bytes::from(log)).await {
            Ok(stored) => Some(ArtifactRef {
                sha256: stored.sha256,
                kind: "log".to_owned(),
                size: stored.size,
                name: Some(format!("log of pod {pod}")),
            }),
            Err(err) => {
                tracing::warn!(%pod, error = %err, "cannot store the worker log");
                None
            }
        }
    }

    /// Deletes a Job that is of no further use, and its token Secret (which the garbage
    /// collector would delete with the Job anyway); failing leaves them to
    /// `ttlSecondsAfterFinished`.
    async fn delete_quietly(&self, spec: &AttemptSpec) {
        let name = job_name(&spec.attempt_id);
        if let Err(err) = self
            .cluster
            .delete_job(&name, PropagationPolicy::Background)
            .await
        {
            tracing::warn!(error = %err, "cannot delete the finished job");
        }
        self.delete_token(spec).await;
    }

    /// Deletes the attempt's token Secret, if it has one, at once rather than leaving it to the
    /// garbage collector. ([`Executor::cancel`], which has no spec, leaves it to the collector.)
    async fn delete_token(&self, spec: &AttemptSpec) {
        if spec.worker_token.is_none() {
            return;
        }
        let name = token_secret_name(&spec.attempt_id);
        if let Err(err) = self.cluster.delete_secret(&name).await {
            tracing::warn!(error = %err, "cannot delete the worker token secret");
        }
    }
}

fn failed(kind: FailureKind, class: FailureClass, summary: String) -> AttemptResult {
    AttemptResult::Failed(Failure {
        kind,
        class,
        summary,
    })
}

/// Whether a `CreateContainerConfigError` is the pod waiting for the attempt's own token Secret
/// (`secret "<name>" not found`), which the executor creates right after the Job.
fn awaits_token(spec: &AttemptSpec, message: &str) -> bool {
    spec.worker_token.is_some()
        && message.contains(&format!("\"{}\"", token_secret_name(&spec.attempt_id)))
}

fn watch_ended(name: &str) -> ExecutorError {
    ExecutorError::Unavailable {
        reason: format!("the watch of Job {name} ended unexpectedly"),
        source: None,
    }
}

fn watch_error_text(err: &watcher::Error) -> String {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => describe(e),
        other => other.to_string(),
    }
}

/// What [`Executor::cancel`] shares with the run following the attempt.
#[derive(Clone)]
struct Cancellation {
    /// Flips to `true` when the attempt is cancelled.
    requested: watch::Sender<bool>,
    deletion: JobDeletion,
}

/// Whether the attempt's Job was deleted for a cancel, so that `cancel` and the run (whose
/// create may have been in flight) do not both delete it.
#[derive(Clone, Default)]
struct JobDeletion(Arc<tokio::sync::Mutex<bool>>);

impl JobDeletion {
    /// Deletes Job `name` unless an earlier call found and deleted it; whether it is deleted.
    async fn delete(&self, cluster: &Cluster, name: &str) -> Result<bool, ApiError> {
        let mut deleted = self.0.lock().await;
        if !*deleted {
            *deleted = cluster
                .delete_job(name, PropagationPolicy::Foreground)
                .await?;
        }
        Ok(*deleted)
    }
}

/// Keeps an attempt registered as followed while its `run` or `reattach` is in progress.
struct Following<'a> {
    executor: &'a K8sExecutor,
    attempt: AttemptId,
    cancelled: watch::Receiver<bool>,
    deletion: JobDeletion,
}

impl Following<'_> {
    fn cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.executor.following().remove(&self.attempt);
    }
}

#[async_trait]
impl Executor for K8sExecutor {
    fn name(&self) -> &str {
        "k8s"
    }

    async fn run(&self, spec: &AttemptSpec) -> Result<AttemptOutcome, ExecutorError> {
        protocol::check_spec(spec)?;
        let following = self.register(&spec.attempt_id)?;
        let name = job_name(&spec.attempt_id);
        let cancelled = |summary: String| AttemptOutcome {
            attempt_id: spec.attempt_id.clone(),
            result: failed(FailureKind::Cancelled, FailureClass::Permanent, summary),
            artifacts: Vec::new(),
        };
        let Some(job) = self.submit(&self.job_spec(spec), spec, &following).await? else {
            return Ok(cancelled(format!(
                "attempt cancelled before Job {name} was submitted"
            )));
        };
        if !following.cancelled()
            && let Err(err) = self.provide_token(spec, &job).await
        {
            self.delete_quietly(spec).await;
            return Err(err);
        }
        if following.cancelled() {
            // Cancelled while the create was in flight: the Job exists now and must go, unless
            // the cancel found and deleted it already.
            following.deletion.delete(&self.cluster, &name).await?;
            self.delete_token(spec).await;
            return Ok(cancelled(format!("attempt cancelled; Job {name} deleted")));
        }
        self.follow(spec, &following).await
    }

    async fn cancel(&self, attempt_id: &AttemptId) -> Result<(), ExecutorError> {
        let cancellation = self.following().get(attempt_id).cloned();
        let name = job_name(attempt_id);
        let deleted = match &cancellation {
            Some(cancellation) => {
                cancellation.requested.send_replace(true);
                cancellation.deletion.delete(&self.cluster, &name).await
            }
            None => {
                self.cluster
                    .delete_job(&name, PropagationPolicy::Foreground)
                    .await
            }
        };
        match deleted {
            Ok(true) => Ok(()),
            // Not submitted yet: the run sees the flag and submits nothing, or deletes the Job
            // its create made.
            Ok(false) if cancellation.is_some() => Ok(()),
            Ok(false) => Err(ExecutorError::NotFound(attempt_id.clone())),
            Err(err) => Err(err.into()),
        }
    }

    async fn reattach(&self, spec: &AttemptSpec) -> Result<Option<AttemptOutcome>, ExecutorError> {
        let following = self.register(&spec.attempt_id)?;
        let name = job_name(&spec.attempt_id);
        match self.cluster.get_job(&name).await? {
            None => Ok(None),
            Some(job) => {
                self.check_owner(&job, spec)?;
                tracing::info!(job = %name, attempt = %spec.attempt_id, "following job of an earlier process");
                self.follow(spec, &following).await.map(Some)
            }
        }
    }
}

/// Why one try of submitting a Job did not submit it.
#[derive(Debug, thiserror::Error)]
enum SubmitError {
    /// The attempt was cancelled first.
    #[error("cancelled")]
    Cancelled,
    /// A Job of that name existed at create and was gone at get.
    #[error("the Job disappeared while being created")]
    Vanished,
    /// The API failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The Job of that name belongs to another attempt.
    #[error(transparent)]
    Refused(ExecutorError),
}

impl SubmitError {
    /// Transient API errors wait for the backoff; a vanished Job is created again at once.
    fn verdict(&self) -> Verdict {
        match self {
            Self::Api(err) if err.is_transient() => Verdict::Transient,
            Self::Vanished => Verdict::RetryAfter(Duration::ZERO),
            _ => Verdict::Permanent,
        }
    }
}
