//! The Kubernetes executor's settings: what the Job looks like (image, namespace, service
//! account, secret references, resources) and how the executor behaves (retries, grace
//! periods, cleanup, where pod logs go).

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::ResourceRequirements, apimachinery::pkg::api::resource::Quantity,
};
pub use leviathan_core::retry::RetryPolicy;
use leviathan_core::{ArtifactStore, executor::protocol};

use crate::names::is_dns_label;

/// Image of the worker container.
pub const EXECUTOR_IMAGE: &str = "LEVIATHAN_EXECUTOR_IMAGE";
/// Namespace the Jobs run in.
pub const K8S_NAMESPACE: &str = "LEVIATHAN_K8S_NAMESPACE";
/// Control plane URL as workers inside the cluster reach it.
pub const WORKER_CONTROL_PLANE_URL: &str = "LEVIATHAN_WORKER_CONTROL_PLANE_URL";
/// Service account of worker pods.
pub const WORKER_SERVICE_ACCOUNT: &str = "LEVIATHAN_WORKER_SERVICE_ACCOUNT";
/// Secret holding the workers' credentials.
pub const SECRET_NAME: &str = "LEVIATHAN_SECRET_NAME";

/// Every variable [`K8sConfig::from_env`] reads, with its default (empty: none).
pub const VARIABLES: &[(&str, &str)] = &[
    (EXECUTOR_IMAGE, DEFAULT_IMAGE),
    (K8S_NAMESPACE, DEFAULT_NAMESPACE),
    (WORKER_CONTROL_PLANE_URL, DEFAULT_CONTROL_PLANE_URL),
    (WORKER_SERVICE_ACCOUNT, DEFAULT_SERVICE_ACCOUNT),
    (SECRET_NAME, DEFAULT_SECRET_NAME),
    (protocol::LEVIATHAN_CLAUDE_MODEL, ""),
];

/// Default worker image (what `ops/k8s/kind-bootstrap.sh` loads into kind).
pub const DEFAULT_IMAGE: &str = "leviathan-worker:local";
/// Default namespace.
pub const DEFAULT_NAMESPACE: &str = "leviathan";
/// Default control plane URL (the Service in `ops/k8s/base/control-plane.yaml`).
pub const DEFAULT_CONTROL_PLANE_URL: &str = "http://leviathan-control-plane:8000";
/// Default worker service account (`ops/k8s/base/rbac.yaml`).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "leviathan-worker";
/// Default secret (`ops/k8s/base/secret.template.yaml`).
pub const DEFAULT_SECRET_NAME: &str = "leviathan-secrets";
/// User and group id of the image's non-root user (`ops/Dockerfile`).
pub const DEFAULT_RUN_AS_USER: i64 = 10001;

/// A worker variable filled from a key of the configured secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEnv {
    /// The worker's variable, e.g. `GITHUB_TOKEN`.
    pub variable: String,
    /// The secret's key, e.g. `github-token`.
    pub key: String,
    /// When true, a missing key (or secret) leaves the variable unset instead of keeping the
    /// container from starting.
    pub optional: bool,
}

impl SecretEnv {
    fn new(variable: &str, key: &str, optional: bool) -> Self {
        Self {
            variable: variable.to_owned(),
            key: key.to_owned(),
            optional,
        }
    }
}

/// The guide's secret keys: `control-plane-token` and `github-token`, both required. No model
/// provider key: workers call the model through the control plane's gateway with their
/// attempt's token.
pub fn default_secret_env() -> Vec<SecretEnv> {
    vec![
        SecretEnv::new(protocol::CONTROL_PLANE_TOKEN, "control-plane-token", false),
        SecretEnv::new(protocol::GITHUB_TOKEN, "github-token", false),
    ]
}

/// Requests 250m CPU and 512Mi memory, limits 2 CPUs and 2Gi: a clone, a model call and the
/// target's tests.
pub fn default_resources() -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities("250m", "512Mi")),
        limits: Some(quantities("2", "2Gi")),
        ..ResourceRequirements::default()
    }
}

/// Job creation's retries: 5 tries, sleeps capped at 500 ms doubling up to 8 s.
const DEFAULT_CREATE_RETRY: RetryPolicy =
    RetryPolicy::new(5, Duration::from_millis(500), Duration::from_secs(8));

/// A variable [`K8sConfig::from_env`] cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// The Kubernetes executor's settings. Build with [`K8sConfig::default`] or
/// [`K8sConfig::from_env`], then adjust with the chained setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct K8sConfig {
    /// Worker image.
    pub image: String,
    /// Namespace of the Jobs.
    pub namespace: String,
    /// `CONTROL_PLANE_URL` of the workers.
    pub control_plane_url: String,
    /// Service account of the worker pods.
    pub service_account: String,
    /// Secret the credentials come from.
    pub secret_name: String,
    /// Worker variables filled from the secret's keys.
    pub secret_env: Vec<SecretEnv>,
    /// `LEVIATHAN_CLAUDE_MODEL` of the workers, unless the attempt's env sets it.
    pub claude_model: Option<String>,
    /// `ttlSecondsAfterFinished` of the Jobs (`None`: kept until deleted).
    pub ttl_seconds_after_finished: Option<i32>,
    /// Resources of the worker container.
    pub resources: ResourceRequirements,
    /// User and group the worker runs as.
    pub run_as_user: i64,
    /// Keep finished Jobs (and their pods) instead of deleting them once read.
    pub keep_finished_jobs: bool,
    /// How long a pod may stay unschedulable before the attempt fails.
    pub unschedulable_grace: Duration,
    /// How long past the attempt's deadline the executor waits for the cluster to end the Job
    /// before it deletes the Job itself.
    pub deadline_slack: Duration,
    /// Retries of transient errors when creating the Job.
    pub create_retry: RetryPolicy,
    /// Where pod logs are stored as artifacts; without one, logs are not kept. The scheduler may
    /// run away from the control plane: pass the store that reaches it.
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
}

impl fmt::Debug for K8sConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("K8sConfig")
            .field("image", &self.image)
            .field("namespace", &self.namespace)
            .field("control_plane_url", &self.control_plane_url)
            .field("service_account", &self.service_account)
            .field("secret_name", &self.secret_name)
            .field("secret_env", &self.secret_env)
            .field("claude_model", &self.claude_model)
            .field(
                "ttl_seconds_after_finished",
                &self.ttl_seconds_after_finished,
            )
            .field("resources", &self.resources)
            .field("run_as_user", &self.run_as_user)
            .field("keep_finished_jobs", &self.keep_finished_jobs)
            .field("unschedulable_grace", &self.unschedulable_grace)
            .field("deadline_slack", &self.deadline_slack)
            .field("create_retry", &self.create_retry)
            .field("artifacts", &self.artifacts.is_some())
            .finish()
    }
}

impl Default for K8sConfig {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            control_plane_url: DEFAULT_CONTROL_PLANE_URL.to_owned(),
            service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
            secret_name: DEFAULT_SECRET_NAME.to_owned(),
            secret_env: default_secret_env(),
            claude_model: None,
            ttl_seconds_after_finished: Some(3600),
            resources: default_resources(),
            run_as_user: DEFAULT_RUN_AS_USER,
            keep_finished_jobs: false,
            unschedulable_grace: Duration::from_secs(300),
            deadline_slack: Duration::from_secs(120),
            create_retry: DEFAULT_CREATE_RETRY,
            artifacts: None,
        }
    }
}

impl K8sConfig {
    /// Reads [`VARIABLES`] from the process environment (the scheduler's Deployment in
    /// `ops/k8s/base/scheduler.yaml` sets them).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads [`VARIABLES`] through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut config = Self::default();
        if let Some(image) = get(EXECUTOR_IMAGE) {
            if image.chars().any(char::is_whitespace) {
                return Err(ConfigError {
                    variable: EXECUTOR_IMAGE,
                    reason: format!("`{image}` is not an image reference"),
                });
            }
            config.image = image;
        }
        for (variable, field) in [
            (K8S_NAMESPACE, &mut config.namespace),
            (WORKER_SERVICE_ACCOUNT, &mut config.service_account),
            (SECRET_NAME, &mut config.secret_name),
        ] {
            if let Some(value) = get(variable) {
                if !is_dns_label(&value) {
                    return Err(ConfigError {
                        variable,
                        reason: format!(
                            "`{value}` is not a valid Kubernetes name (lowercase letters, digits and `-`, at most 63)"
                        ),
                    });
                }
                *field = value;
            }
        }
        if let Some(url) = get(WORKER_CONTROL_PLANE_URL) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError {
                    variable: WORKER_CONTROL_PLANE_URL,
                    reason: format!("`{url}` is not an http:// or https:// URL"),
                });
            }
            config.control_plane_url = url;
        }
        config.claude_model = get(protocol::LEVIATHAN_CLAUDE_MODEL);
        Ok(config)
    }

    /// Sets the worker image.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// Sets the namespace of the Jobs.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the control plane URL workers report to.
    pub fn control_plane_url(mut self, url: impl Into<String>) -> Self {
        self.control_plane_url = url.into();
        self
    }

    /// Sets the worker pods' service account.
    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = name.into();
        self
    }

    /// Sets the secret the credentials come from.
    pub fn secret_name(mut self, name: impl Into<String>) -> Self {
        self.secret_name = name.into();
        self
    }

    /// Fills the worker's `variable` from the secret's `key` (replacing the key of a variable
    /// already configured, keeping whether it is optional; new ones are required).
    pub fn secret_key(mut self, variable: impl Into<String>, key: impl Into<String>) -> Self {
        let variable = variable.into();
        let key = key.into();
        match self.secret_env.iter_mut().find(|s| s.variable == variable) {
            Some(existing) => existing.key = key,
            None => self.secret_env.push(SecretEnv {
                variable,
                key,
                optional: false,
            }),
        }
        self
    }

    /// Sets the Claude model workers use.
    pub fn claude_model(mut self, model: impl Into<String>) -> Self {
        self.claude_model = Some(model.into());
        self
    }

    /// Sets `ttlSecondsAfterFinished` (`None`: never deleted by the cluster).
    pub fn ttl_seconds_after_finished(mut self, ttl: Option<i32>) -> Self {
        self.ttl_seconds_after_finished = ttl;
        self
    }

    /// Sets the worker container's resources.
    pub fn resources(mut self, resources: ResourceRequirements) -> Self {
        self.resources = resources;
        self
    }

    /// Sets the user and group the worker runs as.
    pub fn run_as_user(mut self, uid: i64) -> Self {
        self.run_as_user = uid;
        self
    }

    /// Keeps finished Jobs instead of deleting them.
    pub fn keep_finished_jobs(mut self, keep: bool) -> Self {
        self.keep_finished_jobs = keep;
        self
    }

    /// Sets how long a pod may stay unschedulable.
    pub fn unschedulable_grace(mut self, grace: Duration) -> Self {
        self.unschedulable_grace = grace;
        self
    }

    /// Sets how long past the deadline the executor waits for the cluster's verdict.
    pub fn deadline_slack(mut self, slack: Duration) -> Self {
        self.deadline_slack = slack;
        self
    }

    /// Sets the retries of transient create errors.
    pub fn create_retry(mut self, retry: RetryPolicy) -> Self {
        self.create_retry = retry;
        self
    }

    /// Stores pod logs in `store`.
    pub fn artifacts(mut self, store: Arc<dyn ArtifactStore>) -> Self {
        self.artifacts = Some(store);
        self
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Mutex};

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn defaults_match_the_manifests() {
        let config = K8sConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.image, "leviathan-worker:local");
        assert_eq!(config.namespace, "leviathan");
        assert_eq!(
            config.control_plane_url,
            "http://leviathan-control-plane:8000"
        );
        assert_eq!(config.service_account, "leviathan-worker");
        assert_eq!(config.secret_name, "leviathan-secrets");
        assert_eq!(config.claude_model, None);
        assert_eq!(config.ttl_seconds_after_finished, Some(3600));
        let keys: Vec<(&str, &str, bool)> = config
            .secret_env
            .iter()
            .map(|s| (s.variable.as_str(), s.key.as_str(), s.optional))
            .collect();
        assert_eq!(
            keys,
            [
                ("CONTROL_PLANE_TOKEN", "control-plane-token", false),
                ("GITHUB_TOKEN", "github-token", false),
            ]
        );
    }

    #[test]
    fn reads_every_variable() {
        let config = K8sConfig::from_lookup(lookup(&[
            ("LEVIATHAN_EXECUTOR_IMAGE", "ghcr.io/x/leviathan-worker:v1"),
            ("LEVIATHAN_K8S_NAMESPACE", "agents"),
            ("LEVIATHAN_WORKER_CONTROL_PLANE_URL", "https://cp.example"),
            ("LEVIATHAN_WORKER_SERVICE_ACCOUNT", "runner"),
            ("LEVIATHAN_SECRET_NAME", "creds"),
            ("LEVIATHAN_CLAUDE_MODEL", " claude-x "),
        ]))
        .unwrap();
        assert_eq!(config.image, "ghcr.io/x/leviathan-worker:v1");
        assert_eq!(config.namespace, "agents");
        assert_eq!(config.control_plane_url, "https://cp.example");
        assert_eq!(config.service_account, "runner");
        assert_eq!(config.secret_name, "creds");
        assert_eq!(config.claude_model.as_deref(), Some("claude-x"));
    }

    #[test]
    fn reads_exactly_the_documented_variables() {
        let asked = Mutex::new(BTreeSet::new());
        K8sConfig::from_lookup(|name| {
            asked.lock().unwrap().insert(name.to_owned());
            None
        })
        .unwrap();
        let documented: BTreeSet<String> = VARIABLES
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        assert_eq!(asked.into_inner().unwrap(), documented);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            (K8S_NAMESPACE, "Leviathan"),
            (WORKER_SERVICE_ACCOUNT, "a_b"),
            (SECRET_NAME, "-x"),
            (WORKER_CONTROL_PLANE_URL, "leviathan-control-plane:8000"),
            (EXECUTOR_IMAGE, "bad image"),
        ] {
            let err = K8sConfig::from_lookup(lookup(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.to_string().contains(value), "{err}");
        }
    }

    #[test]
    fn secret_keys_can_be_renamed_and_added() {
        let config = K8sConfig::default()
            .secret_key("GITHUB_TOKEN", "gh")
            .secret_key("LEVIATHAN_EXTRA_TOKEN", "extra-token");
        let github = &config.secret_env[1];
        assert_eq!((github.key.as_str(), github.optional), ("gh", false));
        let extra = config.secret_env.last().unwrap();
        assert_eq!(
            (extra.variable.as_str(), extra.key.as_str()),
            ("LEVIATHAN_EXTRA_TOKEN", "extra-token")
        );
    }

    #[test]
    fn retry_delays_double_up_to_the_bound() {
        let retry = DEFAULT_CREATE_RETRY;
        let delays: Vec<u128> = (1..=6).map(|n| retry.backoff_cap(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 8000]);
    }
}
