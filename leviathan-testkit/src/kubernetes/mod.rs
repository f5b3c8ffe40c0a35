//! A Kubernetes API server on 127.0.0.1 with a fake Job controller and a fake kubelet that runs
//! each pod's container as a local process, so the real `kube` client and `kubectl` can drive
//! Jobs end to end without a cluster.
//!
//! # Connecting
//!
//! The library does not depend on `kube`; callers build the client from [`FakeKubernetes::url`]:
//!
//! ```no_run
//! # use leviathan_testkit::kubernetes::{FakeKubernetes, FakeKubernetesOptions};
//! # async fn connect() -> anyhow::Result<()> {
//! let options = FakeKubernetesOptions::new().image("worker:local", "/bin/sh");
//! let fake = FakeKubernetes::start(options).await?;
//! let mut config = kube::Config::new(fake.url().parse()?);
//! config.default_namespace = "leviathan".into();
//! let client = kube::Client::try_from(config)?;
//! # drop(client);
//! # Ok(())
//! # }
//! ```
//!
//! `kubectl --server <url> get jobs -n <ns>` works too (legacy discovery, then `meta.k8s.io/v1`
//! Table output); so do `kubectl get pods|secrets`, `kubectl logs` and `-o json|jsonpath`.
//!
//! # What is served
//!
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/batch`, `/apis/batch/v1`.
//! - `batch/v1` Jobs; `v1` Pods (with `pods/{name}/log`), Secrets; Namespaces read-only.
//!   Verbs: create, get, list (label and field selectors, `limit`/`continue`), watch, delete,
//!   also across namespaces (`/apis/batch/v1/jobs`). Patch and update are not served (405).
//! - Namespaces are implicit: any namespace name is accepted and "exists".
//! - Errors are `meta/v1 Status` objects with the real codes and reasons (`NotFound`,
//!   `AlreadyExists`, `Invalid`, `Forbidden`, `InternalError`, `BadRequest`, `Expired`).
//! - One global, monotonically increasing resourceVersion. Watches replay the history after the
//!   requested version (all of it is kept until [`FakeKubernetes::compact`], after which older
//!   versions answer an ERROR event with a 410 `Expired` Status); without a version (or with
//!   `0`) they start with ADDED events for the current objects. Lists always answer the current
//!   state: `resourceVersion`/`resourceVersionMatch` on a list are ignored.
//!   `allowWatchBookmarks=true` gets a BOOKMARK when a batch of changes was all filtered out and
//!   before `timeoutSeconds` closes the stream; `sendInitialEvents=true` is honoured.
//!
//! # Jobs, pods and containers
//!
//! Each Job runs its pods one at a time: a pod is created (`<job>-<5 chars>`, with the
//! `job-name`, `batch.kubernetes.io/job-name`, `controller-uid` and
//! `batch.kubernetes.io/controller-uid` labels plus the template's, and a controller owner
//! reference), and the next one only after a failure while `failed <= backoffLimit` (without
//! backoff delay) or after a success while `succeeded < completions`. `parallelism`, indexed
//! completion, pod failure policies and resuming a suspended Job are not modelled;
//! `restartPolicy: OnFailure` is treated as `Never`. Only the first container of a pod runs
//! (init and sidecar containers are ignored). Pods created directly through the API run too.
//!
//! Pods move Pending (`PodScheduled`) → Running → Succeeded/Failed, each step a MODIFIED event.
//! On `spec.activeDeadlineSeconds` the container is killed and, unlike a real cluster (which
//! deletes the pod), the pod is kept with phase Failed and reason `DeadlineExceeded` so its log
//! stays readable; the Job gets `FailureTarget` and `Failed` with reason `DeadlineExceeded`.
//! A pod deleted before it finished counts as failed for its Job. `ttlSecondsAfterFinished`
//! deletes the finished Job in the background.
//!
//! ## Image mapping
//!
//! [`FakeKubernetesOptions::image`] maps an image reference (compared as an exact string) to a
//! host executable that stands for the image's entrypoint. The argv is:
//! - `command` empty: `[executable] + args`;
//! - the file name of `command[0]` equals the executable's file name (`leviathan` or
//!   `/usr/local/bin/leviathan` for `.../target/debug/leviathan`):
//!   `[executable] + command[1..] + args`;
//! - otherwise `command + args`, run as given on the host with `command[0]` looked up in the
//!   container's `PATH` (the image is taken to contain the host's tools, e.g. `/bin/sh`).
//!
//! An image that is not mapped cannot be pulled: the container waits with `ErrImagePull`, then
//! `ImagePullBackOff`, and never starts.
//!
//! ## Environment and path translation
//!
//! The process gets a clean environment: `PATH` (the test process's, else the usual container
//! default), `HOME` (a per-pod temp dir), `HOSTNAME` (the pod name),
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` (this server), then the container's
//! `envFrom` (`secretRef`) and `env` (`value`; `secretKeyRef`; `fieldRef` for `metadata.name`,
//! `metadata.namespace`, `metadata.uid`, `metadata.labels['k']`, `metadata.annotations['k']`,
//! `spec.nodeName`, `spec.serviceAccountName`, `status.podIP`, `status.hostIP`), then
//! [`FakeKubernetesOptions::env`], which wins. A missing secret or key leaves the container
//! waiting with `CreateContainerConfigError` (`secret "x" not found`) until the secret appears;
//! `configMapKeyRef`, `configMapRef` and `resourceFieldRef` get the same error unless optional.
//! `$(VAR)` references are not expanded.
//!
//! Each volume is a host temp directory (a `secret` volume holds the secret's keys as files if
//! the secret exists when the container starts; every other type starts empty); `subPath` is a
//! subdirectory. The termination message path (default `/dev/termination-log`) is a host temp
//! file. Every env value, `command`/`args` element and `workingDir` is rewritten by one rule: a
//! value **equal to** a `mountPath`, or **starting with** `<mountPath>/`, has that prefix
//! replaced with the host directory (the longest matching mount wins); a value equal to the
//! termination message path becomes the host file; a value under a
//! [`FakeKubernetesOptions::shared_host_dir`] is left as it is. Other occurrences
//! (`--dir=/work`, text in a shell script) are not rewritten, so scripts should take paths from
//! env vars. The working directory is the translated `workingDir` when it lies in a mount, else
//! a per-pod temp dir.
//!
//! The process runs in its own process group with stdin closed and stdout and stderr on one
//! pipe: that combined output is the pod log. When the main process exits, the rest of its group
//! is killed (the container is gone). The terminated state's `message` is the termination
//! file's content (at most 4096 bytes), or with `terminationMessagePolicy:
//! FallbackToLogsOnError`, an empty file and a non-zero exit, the last 80 lines (at most 2048
//! bytes) of the log. Stopping a container (deletion, deadline) sends SIGTERM to the group, then
//! SIGKILL after the grace period. All timers use tokio time, so they run under any runtime.
//!
//! # Deletion
//!
//! `propagationPolicy` comes from the DeleteOptions body or the query. Jobs default to
//! `Orphan`, as batch/v1 does on a real server: pass `Background` or `Foreground` to stop the
//! processes. `Foreground` sets `deletionTimestamp` and the `foregroundDeletion` finalizer,
//! deletes the pods (killing their processes), then removes the finalizer and the Job, each step
//! visible to watches. `Background` removes the Job at once, then its pods. Once the Job is
//! gone, the Secrets it owned (an `ownerReference` with its uid) are deleted as the garbage
//! collector would, unless another owner remains; with `Orphan` they lose that reference and
//! stay. Other dependents (and owners that never existed) are not collected.

mod api;
mod controller;
mod faults;
mod kind;
mod kubelet;
mod selector;
mod status;
mod store;
mod table;

use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::{Duration, SystemTime},
};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use rand::Rng;
use tokio::{sync::watch, task::JoinSet};

pub use faults::InjectedFailure;

use crate::server::TestServer;

/// How the fake cluster runs containers; built with chained setters from
/// [`FakeKubernetesOptions::new`].
#[derive(Clone, Debug)]
pub struct FakeKubernetesOptions {
    images: BTreeMap<String, PathBuf>,
    env: Vec<(String, String)>,
    shared_host_dirs: Vec<PathBuf>,
    termination_grace: Option<Duration>,
    start_delay: Duration,
    image_pull_backoff: Duration,
}

impl Default for FakeKubernetesOptions {
    fn default() -> Self {
        Self {
            images: BTreeMap::new(),
            env: Vec::new(),
            shared_host_dirs: Vec::new(),
            termination_grace: None,
            start_delay: Duration::ZERO,
            image_pull_backoff: Duration::from_millis(200),
        }
    }
}

impl FakeKubernetesOptions {
    /// No images, no extra env, grace periods from the pod specs, containers start at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `image` (exact string) to the host executable standing for its entrypoint; see the
    /// module docs for how `command`/`args` use it.
    pub fn image(mut self, image: impl Into<String>, executable: impl Into<PathBuf>) -> Self {
        self.images.insert(image.into(), executable.into());
        self
    }

    /// Adds an environment variable to every container, overriding the pod spec's value, so tests
    /// can point workers at local services without changing the Job.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// A host directory every container sees at its own path (as a `hostPath` volume mounted at
    /// the same path would be), so a test can hand a container host files through env or args:
    /// values under it are never translated, even when it lies under a mount path such as `/tmp`.
    pub fn shared_host_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.shared_host_dirs.push(dir.into());
        self
    }

    /// Overrides every pod's `terminationGracePeriodSeconds` (SIGTERM → SIGKILL delay) unless a
    /// delete request gives its own, so stubborn processes do not stall tests for 30 s.
    pub fn termination_grace_period(mut self, grace: Duration) -> Self {
        self.termination_grace = Some(grace);
        self
    }

    /// Delay between scheduling and starting each container (an image pull, say).
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = delay;
        self
    }

    /// How long a container shows `ErrImagePull` before `ImagePullBackOff` (default 200 ms).
    pub fn image_pull_backoff(mut self, delay: Duration) -> Self {
        self.image_pull_backoff = delay;
        self
    }
}

/// One request the API server received, for asserting on what a client did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// URL path, e.g. `/apis/batch/v1/namespaces/ns/jobs`.
    pub path: String,
    /// Raw query string, if any (`watch=true&resourceVersion=12`).
    pub query: Option<String>,
}

/// A container process that is running now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerProcess {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// The process id; also the id of the container's process group.
    pub pid: u32,
}

/// State shared by the API handlers, the Job controller and the kubelet.
#[derive(Debug)]
pub(crate) struct Cluster {
    store: store::Store,
    faults: faults::Faults,
    options: FakeKubernetesOptions,
    kubelet: kubelet::Kubelet,
    /// Stop signals of running Job controllers, by Job uid.
    jobs: Mutex<BTreeMap<String, watch::Sender<bool>>>,
    tasks: Mutex<JoinSet<()>>,
    requests: Mutex<Vec<RecordedRequest>>,
    shutdown: watch::Sender<bool>,
    port: OnceLock<u16>,
}

impl Cluster {
    /// Runs a background task owned by the cluster (aborted when the fake is dropped).
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

/// Locks a mutex, ignoring poisoning (a panicked test task must not cascade).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The current time at the seconds precision of `meta/v1 Time`.
fn now() -> Time {
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Time(
        Timestamp::from_second(i64::try_from(seconds).unwrap_or(0))
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Five characters from the alphabet the API server uses for `generateName`.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A random (version 4) UUID for `metadata.uid`.
fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The fake API server. Dropping it stops the server and kills every container process.
#[derive(Debug)]
pub struct FakeKubernetes {
    server: TestServer,
    cluster: Arc<Cluster>,
}

impl FakeKubernetes {
    /// Starts the API server on an ephemeral 127.0.0.1 port.
    pub async fn start(options: FakeKubernetesOptions) -> anyhow::Result<Self> {
        let cluster = Arc::new(Cluster {
            store: store::Store::new(),
            faults: faults::Faults::new(),
            options,
            kubelet: kubelet::Kubelet::default(),
            jobs: Mutex::default(),
            tasks: Mutex::default(),
            requests: Mutex::default(),
            shutdown: watch::channel(false).0,
            port: OnceLock::new(),
        });
        let server = TestServer::spawn(api::router(cluster.clone())).await?;
        cluster.port.set(server.addr().port()).ok();
        Ok(Self { server, cluster })
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Makes the next `count` Job creates fail with `failure` (nothing is stored).
    pub fn fail_job_creates(&self, count: usize, failure: InjectedFailure) {
        self.cluster.faults.fail_job_creates(count, failure);
    }

    /// Ends every open watch stream now (cleanly, as an API server restart or a load balancer
    /// idle timeout does); clients must re-watch from their last resourceVersion.
    pub fn cut_watches(&self) {
        self.cluster.faults.cut_watches();
    }

    /// Ends each watch stream after it has delivered `events` events (counted from this call for
    /// open streams, from their start for later ones), until called with `None`.
    pub fn cut_watches_after(&self, events: Option<usize>) {
        self.cluster.faults.set_watch_event_limit(events);
    }

    /// Makes the next `count` watch requests answer with an ERROR event carrying a 410 `Expired`
    /// Status, which forces clients to relist.
    pub fn expire_next_watches(&self, count: usize) {
        self.cluster.faults.expire_next_watches(count);
    }

    /// Drops the change history, as etcd compaction does: watches from any version before now
    /// answer 410 `Expired`.
    pub fn compact(&self) {
        self.cluster.store.compact();
    }

    /// Pods created from now on whose labels match `label_selector` (API syntax, e.g.
    /// `job-name=stuck`) are never scheduled: they stay Pending with `PodScheduled=False`,
    /// reason `Unschedulable`.
    pub fn make_unschedulable(&self, label_selector: &str) -> anyhow::Result<()> {
        let selector =
            selector::LabelSelector::parse(label_selector).map_err(anyhow::Error::msg)?;
        self.cluster.faults.add_unschedulable(selector);
        Ok(())
    }

    /// Adds a delay before containers scheduled from now on start (on top of the option's).
    pub fn set_start_delay(&self, delay: Duration) {
        self.cluster.faults.set_start_delay(delay);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.cluster.store.resource_version()
    }

    /// Every stored Job, across namespaces.
    pub fn jobs(&self) -> Vec<Job> {
        self.cluster.store.list::<Job>(None).0
    }

    /// Every stored Pod, across namespaces.
    pub fn pods(&self) -> Vec<Pod> {
        self.cluster.store.list::<Pod>(None).0
    }

    /// The container processes running now.
    pub fn container_processes(&self) -> Vec<ContainerProcess> {
        self.cluster.kubelet.processes()
    }

    /// Live processes (zombies excluded) left in the process group of any container that is no
    /// longer running: should always be empty. Linux only (reads `/proc`).
    pub fn stray_processes(&self) -> Vec<u32> {
        self.cluster.kubelet.stray_processes()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.cluster.requests).clone()
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        self.cluster.shutdown.send_replace(true);
        self.cluster.kubelet.kill_all();
        lock(&self.cluster.tasks).abort_all();
    }
}
