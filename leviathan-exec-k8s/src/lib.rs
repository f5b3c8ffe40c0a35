//! The Kubernetes executor: one Job per attempt, running `leviathan worker`.
//!
//! [`job_spec`] is a pure function of the attempt and the [`K8sConfig`]: the Job
//! `leviathan-<attempt_id>` (a valid RFC 1123 name, see [`names`]) with `backoffLimit: 0` (the
//! scheduler owns retries), the attempt's deadline as `activeDeadlineSeconds`, a hardened pod
//! (non-root, read-only root filesystem with `emptyDir`s for `/workspace` and `/tmp`, no
//! service account token, all capabilities dropped, seccomp `RuntimeDefault`), the worker
//! environment of the guide with credentials from `secretKeyRef`s, and the worker's result
//! read from the termination message (`FallbackToLogsOnError`). When the attempt carries a
//! worker token, `CONTROL_PLANE_TOKEN` comes from the attempt's own Secret ([`token_secret`],
//! owned by the Job) instead of the shared one, so the worker holds its attempt's token only.
//!
//! [`K8sExecutor::run`] creates the Job (retrying transient API errors with bounded backoff,
//! adopting a Job of the same attempt that exists already), then watches the Job and its pods
//! with `kube::runtime::watcher`, which resumes cut streams and relists after `410 Gone`. It
//! fails fast when the pod cannot run (see [Failure classes](#failure-classes)), maps
//! `Complete`/`Failed`/`DeadlineExceeded`, reads the result from the container's termination
//! message (else the pod log's last line), stores the pod log as an artifact and deletes the
//! finished Job unless [`K8sConfig::keep_finished_jobs`]. It records no events: the scheduler
//! records what the outcome says. [`Executor::cancel`](leviathan_core::Executor::cancel) deletes
//! the Job with foreground propagation; [`Executor::reattach`](leviathan_core::Executor::reattach)
//! follows the Job of an attempt started by an earlier process.
//!
//! # Failure classes
//!
//! - image pull errors and `CreateContainerConfigError` (a missing secret or key):
//!   `infrastructure`, permanent (the same Job fails the same way until an operator acts);
//! - a pod unschedulable past [`K8sConfig::unschedulable_grace`]: `infrastructure`, transient;
//! - `DeadlineExceeded`, or no verdict within [`K8sConfig::deadline_slack`] after the deadline:
//!   `timeout`, transient;
//! - a worker without a readable result: `infrastructure`, permanent for exit code 2 (it
//!   rejected its configuration), transient otherwise;
//! - the Job deleted by someone else: `lost`, transient; by [`Executor::cancel`]: `cancelled`.
//!
//! API errors are [`ExecutorError`](leviathan_core::ExecutorError)s: 5xx, 429 and transport
//! failures are `Unavailable` (transient), other 4xx (401, 403, 422…) `Rejected`.
//!
//! Every API call goes through one of the [`ApiCall`]s listed in [`API_CALLS`], which is what
//! the scheduler's Role must grant.

mod api;
mod config;
mod executor;
mod job;
pub mod names;
mod status;

pub use api::{API_CALLS, ApiCall, ApiError};
pub use config::{
    ConfigError, DEFAULT_CONTROL_PLANE_URL, DEFAULT_IMAGE, DEFAULT_NAMESPACE, DEFAULT_RUN_AS_USER,
    DEFAULT_SECRET_NAME, DEFAULT_SERVICE_ACCOUNT, EXECUTOR_IMAGE, K8S_NAMESPACE, K8sConfig,
    RetryPolicy, SECRET_NAME, SecretEnv, VARIABLES, WORKER_CONTROL_PLANE_URL,
    WORKER_SERVICE_ACCOUNT, default_resources, default_secret_env,
};
pub use executor::K8sExecutor;
pub use job::{
    APP_LABEL, ATTEMPT_KEY, ATTEMPT_NUMBER_KEY, COMMAND, CONTAINER_NAME, NAME_LABEL, PART_OF_LABEL,
    TARGET_KEY, TASK_KEY, TERMINATION_MESSAGE_PATH, TMP_DIR, TOKEN_SECRET_KEY, WORKSPACE_DIR,
    job_spec, token_secret,
};
