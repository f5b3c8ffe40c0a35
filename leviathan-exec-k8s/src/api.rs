//! Every Kubernetes API call the executor makes, and nothing else: [`API_CALLS`] is the list the
//! scheduler's Role must grant (`ops/k8s/base/rbac.yaml`, checked by a test), and [`Cluster`]
//! has one method per call, each reporting failures with the call's name and classified as
//! transient or permanent.

use std::fmt;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy},
    runtime::{WatchStreamExt as _, watcher},
};
use leviathan_core::ExecutorError;

use crate::job::CONTAINER_NAME;

/// One kind of API request: a verb on a resource of an API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ApiCall {
    /// Submit an attempt's Job.
    CreateJob,
    /// Read a Job (adoption, reattach).
    GetJob,
    /// List Jobs (the start of every watch, and relists after `410 Gone`).
    ListJobs,
    /// Watch the attempt's Job.
    WatchJobs,
    /// Delete a Job (cancel, cleanup, giving up on a stuck pod).
    DeleteJob,
    /// Read the Job's pod for its final state.
    GetPod,
    /// List the Job's pods (watch start, finding the pod).
    ListPods,
    /// Watch the Job's pods (image pull errors, missing secrets, scheduling).
    WatchPods,
    /// Read the pod's log (the log artifact, the fallback result).
    GetPodLog,
    /// Create the attempt's token Secret (owned by its Job).
    CreateSecret,
    /// Read the token Secret of an adopted Job (is it owned by that Job?).
    GetSecret,
    /// Delete the token Secret with its Job (and a stale one before creating it again).
    DeleteSecret,
}

impl ApiCall {
    /// Every call.
    pub const ALL: [Self; 12] = [
        Self::CreateJob,
        Self::GetJob,
        Self::ListJobs,
        Self::WatchJobs,
        Self::DeleteJob,
        Self::GetPod,
        Self::ListPods,
        Self::WatchPods,
        Self::GetPodLog,
        Self::CreateSecret,
        Self::GetSecret,
        Self::DeleteSecret,
    ];

    /// The RBAC rule it needs: `(apiGroup, resource, verb)`.
    pub const fn rule(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::CreateJob => ("batch", "jobs", "create"),
            Self::GetJob => ("batch", "jobs", "get"),
            Self::ListJobs => ("batch", "jobs", "list"),
            Self::WatchJobs => ("batch", "jobs", "watch"),
            Self::DeleteJob => ("batch", "jobs", "delete"),
            Self::GetPod => ("", "pods", "get"),
            Self::ListPods => ("", "pods", "list"),
            Self::WatchPods => ("", "pods", "watch"),
            Self::GetPodLog => ("", "pods/log", "get"),
            Self::CreateSecret => ("", "secrets", "create"),
            Self::GetSecret => ("", "secrets", "get"),
            Self::DeleteSecret => ("", "secrets", "delete"),
        }
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (group, resource, verb) = self.rule();
        if group.is_empty() {
            write!(f, "{verb} {resource}")
        } else {
            write!(f, "{verb} {resource}.{group}")
        }
    }
}

/// The `(apiGroup, resource, verb)` triples the executor uses: what its Role must grant.
pub const API_CALLS: &[(&str, &str, &str)] = &[
    ApiCall::CreateJob.rule(),
    ApiCall::GetJob.rule(),
    ApiCall::ListJobs.rule(),
    ApiCall::WatchJobs.rule(),
    ApiCall::DeleteJob.rule(),
    ApiCall::GetPod.rule(),
    ApiCall::ListPods.rule(),
    ApiCall::WatchPods.rule(),
    ApiCall::GetPodLog.rule(),
    ApiCall::CreateSecret.rule(),
    ApiCall::GetSecret.rule(),
    ApiCall::DeleteSecret.rule(),
];

/// A failed API call: which call, on what, and the client's error.
#[derive(Debug, thiserror::Error)]
#[error("{call} `{object}` in namespace `{namespace}`: {}", describe(.source))]
pub struct ApiError {
    /// The call.
    pub call: ApiCall,
    /// The object (Job or pod name).
    pub object: String,
    /// The namespace.
    pub namespace: String,
    /// What the client reported.
    #[source]
    pub source: kube::Error,
}

impl ApiError {
    /// The HTTP status of an API error response.
    pub fn status(&self) -> Option<u16> {
        status_of(&self.source)
    }

    /// True when retrying may help: 5xx, 429 and transport failures (timeouts, refused
    /// connections); 4xx such as 401, 403 and 422 are permanent.
    pub fn is_transient(&self) -> bool {
        is_transient(&self.source)
    }

    fn is(&self, code: u16) -> bool {
        self.status() == Some(code)
    }
}

impl From<ApiError> for ExecutorError {
    fn from(err: ApiError) -> Self {
        let reason = err.to_string();
        if err.is_transient() {
            Self::Unavailable {
                reason,
                source: Some(Box::new(err)),
            }
        } else {
            Self::Rejected {
                reason,
                source: Some(Box::new(err)),
            }
        }
    }
}

/// `403 Forbidden: jobs.batch is forbidden…` for API errors, the client's message otherwise.
pub(crate) fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

fn status_of(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The classification of [`ApiError::is_transient`], for any client error.
pub(crate) fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The namespace's Jobs and pods, through [`ApiCall`]s only.
#[derive(Clone)]
pub(crate) struct Cluster {
    jobs: Api<Job>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    namespace: String,
}

impl Cluster {
    pub(crate) fn new(client: Client, namespace: &str) -> Self {
        Self {
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    fn error(&self, call: ApiCall, object: &str) -> impl FnOnce(kube::Error) -> ApiError {
        let namespace = self.namespace.clone();
        let object = object.to_owned();
        move |source| ApiError {
            call,
            object,
            namespace,
            source,
        }
    }

    /// [`ApiCall::CreateJob`]; `Ok(None)` when a Job of that name exists already.
    pub(crate) async fn create_job(&self, job: &Job) -> Result<Option<Job>, ApiError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        match self.jobs.create(&PostParams::default(), job).await {
            Ok(created) => Ok(Some(created)),
            Err(source) => {
                let err = self.error(ApiCall::CreateJob, &name)(source);
                if err.is(409) { Ok(None) } else { Err(err) }
            }
        }
    }

    /// [`ApiCall::GetJob`]; `Ok(None)` when there is none.
    pub(crate) async fn get_job(&self, name: &str) -> Result<Option<Job>, ApiError> {
        self.jobs
            .get_opt(name)
            .await
            .map_err(self.error(ApiCall::GetJob, name))
    }

    /// [`ApiCall::DeleteJob`] with `propagation` for its pods; `Ok(false)` when it was gone.
    pub(crate) async fn delete_job(
        &self,
        name: &str,
        propagation: PropagationPolicy,
    ) -> Result<bool, ApiError> {
        let params = DeleteParams {
            propagation_policy: Some(propagation),
            ..DeleteParams::default()
        };
        match self.jobs.delete(name, &params).await {
            Ok(_) => Ok(true),
            Err(source) => {
                let err = self.error(ApiCall::DeleteJob, name)(source);
                if err.is(404) { Ok(false) } else { Err(err) }
            }
        }
    }

    /// [`ApiCall::CreateSecret`]; `Ok(false)` when a Secret of that name exists already.
    pub(crate) async fn create_secret(&self, secret: &Secret) -> Result<bool, ApiError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        match self.secrets.create(&PostParams::default(), secret).await {
            Ok(_) => Ok(true),
            Err(source) => {
                let err = self.error(ApiCall::CreateSecret, &name)(source);
                if err.is(409) { Ok(false) } else { Err(err) }
            }
        }
    }

    /// [`ApiCall::GetSecret`]; `Ok(None)` when there is none.
    pub(crate) async fn get_secret(&self, name: &str) -> Result<Option<Secret>, ApiError> {
        self.secrets
            .get_opt(name)
            .await
            .map_err(self.error(ApiCall::GetSecret, name))
    }

    /// [`ApiCall::DeleteSecret`]; `Ok(false)` when it was gone.
    pub(crate) async fn delete_secret(&self, name: &str) -> Result<bool, ApiError> {
        match self.secrets.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(source) => {
                let err = self.error(ApiCall::DeleteSecret, name)(source);
                if err.is(404) { Ok(false) } else { Err(err) }
            }
        }
    }

    /// [`ApiCall::GetPod`]; `Ok(None)` when it is gone.
    pub(crate) async fn get_pod(&self, name: &str) -> Result<Option<Pod>, ApiError> {
        self.pods
            .get_opt(name)
            .await
            .map_err(self.error(ApiCall::GetPod, name))
    }

    /// [`ApiCall::ListPods`]: the pods of Job `job`.
    pub(crate) async fn list_pods(&self, job: &str) -> Result<Vec<Pod>, ApiError> {
        self.pods
            .list(&ListParams::default().labels(&pod_selector(job)))
            .await
            .map(|list| list.items)
            .map_err(self.error(ApiCall::ListPods, job))
    }

    /// [`ApiCall::GetPodLog`]: the worker container's whole log.
    pub(crate) async fn pod_log(&self, pod: &str) -> Result<String, ApiError> {
        let params = LogParams {
            container: Some(CONTAINER_NAME.to_owned()),
            ..LogParams::default()
        };
        self.pods
            .logs(pod, &params)
            .await
            .map_err(self.error(ApiCall::GetPodLog, pod))
    }

    /// [`ApiCall::ListJobs`] then [`ApiCall::WatchJobs`] on Job `name`, resuming after cut
    /// streams and relisting after `410 Gone` (with the watcher's default backoff).
    pub(crate) fn watch_job(
        &self,
        name: &str,
    ) -> impl Stream<Item = Result<watcher::Event<Job>, watcher::Error>> + Send + use<> {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        watcher(self.jobs.clone(), config).default_backoff().boxed()
    }

    /// [`ApiCall::ListPods`] then [`ApiCall::WatchPods`] on the pods of Job `job`, likewise.
    pub(crate) fn watch_pods(
        &self,
        job: &str,
    ) -> impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + use<> {
        let config = watcher::Config::default().labels(&pod_selector(job));
        watcher(self.pods.clone(), config).default_backoff().boxed()
    }
}

/// The label the Job controller puts on its pods.
fn pod_selector(job: &str) -> String {
    format!("job-name={job}")
}

/// A watcher error that no retry will fix (e.g. 401, 403: the Role is missing a verb).
pub(crate) fn watch_error_is_permanent(err: &watcher::Error) -> bool {
    let client_error = match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        // 410 Gone and friends: the watcher relists by itself.
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => return false,
    };
    status_of(client_error).is_some_and(|code| matches!(code, 400..=499) && code != 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_calls_list_every_call_once() {
        let rules: Vec<_> = ApiCall::ALL.iter().map(|c| c.rule()).collect();
        assert_eq!(API_CALLS, rules.as_slice());
        let mut unique = rules.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), rules.len());
    }

    #[test]
    fn calls_read_as_verbs() {
        assert_eq!(ApiCall::CreateJob.to_string(), "create jobs.batch");
        assert_eq!(ApiCall::GetPodLog.to_string(), "get pods/log");
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn classification() {
        for code in [500, 502, 503, 504, 429] {
            assert!(is_transient(&api_error(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!is_transient(&api_error(code)), "{code}");
        }
        let denied = watcher::Error::WatchStartFailed(api_error(403));
        assert!(watch_error_is_permanent(&denied));
        let busy = watcher::Error::InitialListFailed(api_error(503));
        assert!(!watch_error_is_permanent(&busy));
    }
}
