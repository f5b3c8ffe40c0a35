//! The fake kubelet: schedules a pod, resolves its container's image and environment, runs the
//! command as a local process group, and reports each step in the pod's status.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::{fd::OwnedFd, unix::process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
        Secret,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use rustix::process::{Pid, Signal, kill_process_group};
use tempfile::TempDir;
use tokio::{
    io::AsyncReadExt,
    sync::{oneshot, watch},
};

use super::{Cluster, ContainerProcess, controller, lock, now, status::ApiError, store::Key};

/// The node every pod is scheduled to.
const NODE_NAME: &str = "leviathan-testkit-node";
/// Host and pod IP: the processes run on this machine.
const LOCALHOST: &str = "127.0.0.1";
/// Where a container's termination message goes when the spec does not say.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";
/// Kubelet limits on the termination message.
const MAX_MESSAGE_BYTES: usize = 4096;
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;
/// PATH for containers when the test process has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a pod's container must stop before it exits by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The pod is being deleted.
    Delete { grace: Duration },
    /// The Job's `activeDeadlineSeconds` passed.
    Deadline { grace: Duration },
}

/// How a pod ended, for its Job controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PodOutcome {
    Succeeded,
    Failed,
    DeadlineExceeded,
    Deleted,
}

/// The combined stdout/stderr of a container, readable while it grows.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    bytes: Mutex<Vec<u8>>,
    /// `(length, closed)`: followers wait on it.
    progress: watch::Sender<(usize, bool)>,
}

impl LogBuffer {
    fn new() -> Self {
        Self {
            bytes: Mutex::default(),
            progress: watch::channel((0, false)).0,
        }
    }

    fn append(&self, chunk: &[u8]) {
        let mut bytes = lock(&self.bytes);
        bytes.extend_from_slice(chunk);
        let len = bytes.len();
        drop(bytes);
        self.progress.send_modify(|progress| progress.0 = len);
    }

    fn close(&self) {
        self.progress.send_modify(|progress| progress.1 = true);
    }

    /// Everything logged so far.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        lock(&self.bytes).clone()
    }

    /// The bytes from `offset` on.
    pub(crate) fn since(&self, offset: usize) -> Vec<u8> {
        lock(&self.bytes)
            .get(offset..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// A receiver of `(length, closed)`, for following the log.
    pub(crate) fn subscribe(&self) -> watch::Receiver<(usize, bool)> {
        self.progress.subscribe()
    }
}

#[derive(Debug)]
struct PodRuntime {
    stop: watch::Sender<Option<Stop>>,
    /// The kubelet task is still driving the pod.
    active: bool,
    container: String,
    log: Arc<LogBuffer>,
    /// The container process has been started (so there is a log to read).
    started: bool,
    pid: Option<u32>,
    /// Host directories of the pod; removed with the pod.
    sandbox: Option<TempDir>,
}

/// The kubelet's bookkeeping: pods it drives and the process groups it started.
#[derive(Debug, Default)]
pub(crate) struct Kubelet {
    pods: Mutex<BTreeMap<Key, PodRuntime>>,
    groups: Mutex<BTreeSet<u32>>,
}

impl Kubelet {
    /// The container processes running now.
    pub(crate) fn processes(&self) -> Vec<ContainerProcess> {
        lock(&self.pods)
            .iter()
            .filter_map(|((namespace, pod), runtime)| {
                runtime.pid.map(|pid| ContainerProcess {
                    namespace: namespace.clone(),
                    pod: pod.clone(),
                    container: runtime.container.clone(),
                    pid,
                })
            })
            .collect()
    }

    /// Live members of process groups whose container is no longer running.
    pub(crate) fn stray_processes(&self) -> Vec<u32> {
        let running: BTreeSet<u32> = lock(&self.pods)
            .values()
            .filter_map(|runtime| runtime.pid)
            .collect();
        let finished: BTreeSet<u32> = lock(&self.groups).difference(&running).copied().collect();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                process_group_of_live(*pid).is_some_and(|group| finished.contains(&group))
            })
            .collect()
    }

    /// SIGKILLs the process group of every running container.
    pub(crate) fn kill_all(&self) {
        for runtime in lock(&self.pods).values() {
            if let Some(pid) = runtime.pid {
                signal_group(pid, Signal::KILL);
            }
        }
    }

    /// The log of a pod's container, if the container ever started. `Err` carries the reason
    /// the log is unavailable (`None`: the kubelet does not know the pod).
    pub(crate) fn log(
        &self,
        key: &Key,
        container: Option<&str>,
    ) -> Result<Arc<LogBuffer>, Option<String>> {
        let pods = lock(&self.pods);
        let runtime = pods.get(key).ok_or(None)?;
        if let Some(wanted) = container
            && wanted != runtime.container
        {
            return Err(Some(format!(
                "container {wanted} is not valid for pod {}",
                key.1
            )));
        }
        if !runtime.started {
            return Err(Some(format!(
                "container \"{}\" in pod \"{}\" is waiting to start: ContainerCreating",
                runtime.container, key.1
            )));
        }
        Ok(runtime.log.clone())
    }

    fn set_process(&self, key: &Key, pid: Option<u32>) {
        if let Some(runtime) = lock(&self.pods).get_mut(key) {
            runtime.pid = pid;
            runtime.started |= pid.is_some();
        }
        if let Some(pid) = pid {
            lock(&self.groups).insert(pid);
        }
    }
}

/// `/proc/<pid>/stat`'s process group, unless the process is a zombie.
fn process_group_of_live(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    (state != "Z").then_some(group)
}

fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        // ESRCH (the group is already gone) is the expected outcome of a late kill.
        let _ = kill_process_group(pid, signal);
    }
}

/// Starts driving a newly created pod; the receiver gets its outcome.
pub(crate) fn start(cluster: &Arc<Cluster>, pod: &Pod) -> oneshot::Receiver<PodOutcome> {
    let key = super::store::key_of(&pod.metadata);
    let container = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .map(|c| c.name.clone());
    let (stop, stop_rx) = watch::channel(None);
    lock(&cluster.kubelet.pods).insert(
        key.clone(),
        PodRuntime {
            stop,
            active: true,
            container: container.unwrap_or_default(),
            log: Arc::new(LogBuffer::new()),
            started: false,
            pid: None,
            sandbox: None,
        },
    );
    let (outcome_tx, outcome_rx) = oneshot::channel();
    let task_cluster = cluster.clone();
    cluster.spawn(async move {
        let mut stop_rx = stop_rx;
        let outcome = lifecycle(&task_cluster, &key, &mut stop_rx).await;
        finish(&task_cluster, &key);
        let _ = outcome_tx.send(outcome);
    });
    outcome_rx
}

/// Marks the kubelet done with a pod; a pod whose deletion was requested is removed now.
fn finish(cluster: &Cluster, key: &Key) {
    let mut pods = lock(&cluster.kubelet.pods);
    let Some(runtime) = pods.get_mut(key) else {
        return;
    };
    runtime.active = false;
    if matches!(*runtime.stop.borrow(), Some(Stop::Delete { .. })) {
        pods.remove(key);
        drop(pods);
        cluster.store.remove::<Pod>(key);
    }
}

/// Asks the kubelet to stop a pod's container (no-op when it is not driving the pod).
pub(crate) fn stop(cluster: &Cluster, key: &Key, reason: Stop) {
    if let Some(runtime) = lock(&cluster.kubelet.pods).get(key)
        && runtime.active
    {
        runtime.stop.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }
}

/// The SIGTERM → SIGKILL delay for a pod: the request's, else the option's, else the pod's.
pub(crate) fn grace_period(cluster: &Cluster, pod: &Pod, requested: Option<i64>) -> Duration {
    let from_spec = || {
        let seconds = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    };
    match requested {
        Some(seconds) => Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        None => cluster.options.termination_grace.unwrap_or_else(from_spec),
    }
}

/// Deletes a pod: if the kubelet still drives it, marks it terminating and stops the container
/// (the pod disappears once it is down, `Ok((false, pod))`); otherwise removes it at once
/// (`Ok((true, pod))`).
pub(crate) fn delete(
    cluster: &Cluster,
    key: &Key,
    grace: Option<i64>,
) -> Result<(bool, Pod), ApiError> {
    let pod = cluster
        .store
        .get::<Pod>(key)
        .ok_or_else(|| ApiError::not_found(super::kind::Kind::Pod, &key.1))?;
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok((false, pod));
    }
    let grace = grace_period(cluster, &pod, grace);
    let mut pods = lock(&cluster.kubelet.pods);
    match pods.get(key) {
        Some(runtime) if runtime.active => {
            let marked = cluster
                .store
                .update::<Pod>(key, |pod| {
                    pod.metadata.deletion_timestamp = Some(now());
                    pod.metadata.deletion_grace_period_seconds =
                        i64::try_from(grace.as_secs()).ok();
                })
                .unwrap_or(pod);
            runtime.stop.send_replace(Some(Stop::Delete { grace }));
            Ok((false, marked))
        }
        _ => {
            pods.remove(key);
            drop(pods);
            let removed = cluster.store.remove::<Pod>(key).unwrap_or(pod);
            Ok((true, removed))
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
    loop {
        if let Some(reason) = *stop.borrow_and_update() {
            return reason;
        }
        if stop.changed().await.is_err() {
            // The runtime entry is gone: nobody can stop the pod any more.
            std::future::pending::<()>().await;
        }
    }
}

fn update_status(cluster: &Cluster, key: &Key, change: impl FnOnce(&mut PodStatus)) {
    cluster.store.update::<Pod>(key, |pod| {
        change(pod.status.get_or_insert_with(PodStatus::default))
    });
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(now()),
        ..PodCondition::default()
    }
}

/// Replaces the conditions, keeping `lastTransitionTime` of those whose status did not change.
fn set_conditions(status: &mut PodStatus, conditions: Vec<PodCondition>) {
    let previous = status.conditions.take().unwrap_or_default();
    let merged = conditions
        .into_iter()
        .map(|mut condition| {
            if let Some(old) = previous
                .iter()
                .find(|old| old.type_ == condition.type_ && old.status == condition.status)
            {
                condition
                    .last_transition_time
                    .clone_from(&old.last_transition_time);
            }
            condition
        })
        .collect();
    status.conditions = Some(merged);
}

fn container_status(
    container: &Container,
    state: ContainerState,
    process: Option<(u32, &Path)>,
) -> ContainerStatus {
    let running = state.running.is_some();
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: process
            .map(|(_, executable)| format!("file://{}", executable.display()))
            .unwrap_or_default(),
        container_id: process.map(|(pid, _)| format!("process://{pid}")),
        ready: running,
        started: Some(running),
        restart_count: 0,
        state: Some(state),
        ..ContainerStatus::default()
    }
}

fn set_waiting(cluster: &Cluster, key: &Key, container: &Container, reason: &str, message: String) {
    let waiting = ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: Some(message),
        }),
        ..ContainerState::default()
    };
    update_status(cluster, key, |status| {
        status.container_statuses = Some(vec![container_status(container, waiting, None)]);
    });
}

fn not_ready_conditions(container: &str, started: bool) -> Vec<PodCondition> {
    let message = Some(format!("containers with unready status: [{container}]"));
    vec![
        condition("PodReadyToStartContainers", started, None, None),
        condition("Initialized", true, None, None),
        condition("Ready", false, Some("ContainersNotReady"), message.clone()),
        condition(
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            message,
        ),
        condition("PodScheduled", true, None, None),
    ]
}

fn completed_conditions() -> Vec<PodCondition> {
    vec![
        condition("PodReadyToStartContainers", false, None, None),
        condition("Initialized", true, None, None),
        condition("Ready", false, Some("PodCompleted"), None),
        condition("ContainersReady", false, Some("PodCompleted"), None),
        condition("PodScheduled", true, None, None),
    ]
}

const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Records why a stopped pod ended: deletion leaves the status alone, a deadline marks the pod
/// Failed with reason `DeadlineExceeded`.
fn end_stopped(cluster: &Cluster, key: &Key, reason: Stop) -> PodOutcome {
    match reason {
        Stop::Delete { .. } => PodOutcome::Deleted,
        Stop::Deadline { .. } => {
            update_status(cluster, key, |status| {
                status.phase = Some("Failed".to_owned());
                status.reason = Some("DeadlineExceeded".to_owned());
                status.message = Some(DEADLINE_MESSAGE.to_owned());
            });
            PodOutcome::DeadlineExceeded
        }
    }
}

/// Drives one pod from Pending to its end.
async fn lifecycle(
    cluster: &Arc<Cluster>,
    key: &Key,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> PodOutcome {
    let Some(pod) = cluster.store.get::<Pod>(key) else {
        return PodOutcome::Deleted;
    };
    let Some(container) = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .cloned()
    else {
        return PodOutcome::Failed;
    };
    if cluster
        .faults
        .is_unschedulable(pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
    {
        update_status(cluster, key, |status| {
            let message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
                           preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
            set_conditions(
                status,
                vec![condition(
                    "PodScheduled",
                    false,
                    Some("Unschedulable"),
                    Some(message.to_owned()),
                )],
            );
        });
        let reason = stopped(stop).await;
        return end_stopped(cluster, key, reason);
    }
    cluster.store.update::<Pod>(key, |pod| {
        pod.spec.get_or_insert_with(Default::default).node_name = Some(NODE_NAME.to_owned());
        let status = pod.status.get_or_insert_with(PodStatus::default);
        status.host_ip = Some(LOCALHOST.to_owned());
        status.host_ips = Some(vec![HostIP {
            ip: LOCALHOST.to_owned(),
        }]);
        status.pod_ip = Some(LOCALHOST.to_owned());
        status.pod_ips = Some(vec![PodIP {
            ip: LOCALHOST.to_owned(),
        }]);
        status.start_time = Some(now());
        set_conditions(status, not_ready_conditions(&container.name, false));
        let creating = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".to_owned()),
                message: None,
            }),
            ..ContainerState::default()
        };
        status.container_statuses = Some(vec![container_status(&container, creating, None)]);
    });

    let delay = cluster.options.start_delay + cluster.faults.start_delay();
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            reason = stopped(stop) => return end_stopped(cluster, key, reason),
        }
    }

    let image = container.image.clone().unwrap_or_default();
    let Some(executable) = cluster.options.images.get(&image).cloned() else {
        let message = format!(
            "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found (no such image in the leviathan-testkit image map)"
        );
        set_waiting(cluster, key, &container, "ErrImagePull", message);
        tokio::select! {
            () = tokio::time::sleep(cluster.options.image_pull_backoff) => {}
            reason = stopped(stop) => return end_stopped(cluster, key, reason),
        }
        set_waiting(
            cluster,
            key,
            &container,
            "ImagePullBackOff",
            format!("Back-off pulling image \"{image}\""),
        );
        let reason = stopped(stop).await;
        return end_stopped(cluster, key, reason);
    };

    let mut changes = cluster.store.subscribe();
    let env = loop {
        match resolve_env(cluster, &pod, &container) {
            Ok(env) => break env,
            Err(message) => {
                set_waiting(
                    cluster,
                    key,
                    &container,
                    "CreateContainerConfigError",
                    message,
                );
                tokio::select! {
                    _ = changes.changed() => {}
                    reason = stopped(stop) => return end_stopped(cluster, key, reason),
                }
            }
        }
    };

    run(cluster, key, &pod, &container, &executable, env, stop).await
}

/// Starts the process and waits for it to end or be stopped.
async fn run(
    cluster: &Arc<Cluster>,
    key: &Key,
    pod: &Pod,
    container: &Container,
    executable: &Path,
    env: Vec<(String, String)>,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> PodOutcome {
    let started_at = now();
    let prepared = Sandbox::prepare(cluster, pod, container).and_then(|sandbox| {
        let argv = argv(executable, container, &sandbox);
        let child = spawn(cluster, pod, &sandbox, &argv, env)?;
        Ok((sandbox, child))
    });
    let (sandbox, (mut child, reader)) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            let message = format!("failed to start container \"{}\": {error}", container.name);
            terminate_status(
                cluster,
                key,
                container,
                None,
                128,
                "StartError",
                Some(message),
                started_at,
            );
            return PodOutcome::Failed;
        }
    };
    let pid = child.id().unwrap_or_default();
    let log = lock(&cluster.kubelet.pods)
        .get(key)
        .map(|runtime| runtime.log.clone());
    let log = log.unwrap_or_else(|| Arc::new(LogBuffer::new()));
    cluster.kubelet.set_process(key, Some(pid));
    let pump = tokio::spawn(pump(reader, log.clone()));
    cluster.store.update::<Pod>(key, |pod| {
        let status = pod.status.get_or_insert_with(PodStatus::default);
        status.phase = Some("Running".to_owned());
        let running = ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..ContainerState::default()
        };
        status.container_statuses = Some(vec![container_status(
            container,
            running,
            Some((pid, executable)),
        )]);
        set_conditions(
            status,
            vec![
                condition("PodReadyToStartContainers", true, None, None),
                condition("Initialized", true, None, None),
                condition("Ready", true, None, None),
                condition("ContainersReady", true, None, None),
                condition("PodScheduled", true, None, None),
            ],
        );
    });
    controller::pod_ready(cluster, pod, true);

    let (exit, stopped_by) = tokio::select! {
        exit = child.wait() => (exit, None),
        reason = stopped(stop) => {
            let grace = match reason {
                Stop::Delete { grace } | Stop::Deadline { grace } => grace,
            };
            signal_group(pid, Signal::TERM);
            let exit = match tokio::time::timeout(grace, child.wait()).await {
                Ok(exit) => exit,
                Err(_) => {
                    signal_group(pid, Signal::KILL);
                    child.wait().await
                }
            };
            (exit, Some(reason))
        }
    };
    // The container is gone with its main process: nothing else in it survives.
    signal_group(pid, Signal::KILL);
    cluster.kubelet.set_process(key, None);
    // Output written before the exit is drained; a process that escaped the group cannot hold us.
    let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    log.close();
    controller::pod_ready(cluster, pod, false);

    let code = exit.as_ref().map_or(128 + 9, exit_code);
    let message = termination_message(container, &sandbox, code, &log.snapshot());
    let reason = if code == 0 { "Completed" } else { "Error" };
    terminate_status(
        cluster,
        key,
        container,
        Some((pid, executable)),
        code,
        reason,
        message,
        started_at,
    );
    if let Some(runtime) = lock(&cluster.kubelet.pods).get_mut(key) {
        runtime.sandbox = Some(sandbox.dir);
    }
    match stopped_by {
        Some(Stop::Delete { .. }) => PodOutcome::Deleted,
        Some(reason @ Stop::Deadline { .. }) => end_stopped(cluster, key, reason),
        None if code == 0 => PodOutcome::Succeeded,
        None => PodOutcome::Failed,
    }
}

fn exit_code(status: &ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(9))
}

#[allow(clippy::too_many_arguments)] // one status write needs all of these
fn terminate_status(
    cluster: &Cluster,
    key: &Key,
    container: &Container,
    process: Option<(u32, &Path)>,
    code: i32,
    reason: &str,
    message: Option<String>,
    started_at: Time,
) {
    update_status(cluster, key, |status| {
        status.phase = Some(if code == 0 { "Succeeded" } else { "Failed" }.to_owned());
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.to_owned()),
                message,
                started_at: Some(started_at),
                finished_at: Some(now()),
                container_id: process.map(|(pid, _)| format!("process://{pid}")),
                signal: None,
            }),
            ..ContainerState::default()
        };
        status.container_statuses = Some(vec![container_status(container, terminated, process)]);
        set_conditions(status, completed_conditions());
    });
}

/// The terminated state's message, following `terminationMessagePolicy`.
fn termination_message(
    container: &Container,
    sandbox: &Sandbox,
    code: i32,
    log: &[u8],
) -> Option<String> {
    let mut file = std::fs::read(&sandbox.termination_file).unwrap_or_default();
    file.truncate(MAX_MESSAGE_BYTES);
    if !file.is_empty() {
        return Some(String::from_utf8_lossy(&file).into_owned());
    }
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    (fallback && code != 0 && !log.is_empty())
        .then(|| log_tail(log, FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES))
}

/// The last `lines` lines of `log`, at most `max_bytes` bytes of them.
pub(crate) fn log_tail(log: &[u8], lines: usize, max_bytes: usize) -> String {
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(index, _)| index + 1);
    let start = if lines == 0 {
        log.len()
    } else {
        start.max(log.len().saturating_sub(max_bytes))
    };
    String::from_utf8_lossy(&log[start..]).into_owned()
}

/// Copies the container's combined output into its log until every writer has closed the pipe.
async fn pump(reader: io::PipeReader, log: Arc<LogBuffer>) -> io::Result<()> {
    let mut receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    let mut chunk = vec![0; 16 * 1024];
    loop {
        let read = receiver.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        log.append(&chunk[..read]);
    }
}

fn spawn(
    cluster: &Cluster,
    pod: &Pod,
    sandbox: &Sandbox,
    argv: &[String],
    container_env: Vec<(String, String)>,
) -> io::Result<(tokio::process::Child, io::PipeReader)> {
    let program = argv
        .first()
        .ok_or_else(|| io::Error::other("no command to run"))?;
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned()),
    );
    env.insert("HOME".to_owned(), sandbox.home.display().to_string());
    env.insert(
        "HOSTNAME".to_owned(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    if let Some(port) = cluster.port.get() {
        env.insert("KUBERNETES_SERVICE_HOST".to_owned(), LOCALHOST.to_owned());
        env.insert("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string());
    }
    env.extend(container_env.into_iter().map(|(name, value)| {
        let value = sandbox.translate(&value);
        (name, value)
    }));
    env.extend(cluster.options.env.iter().cloned());

    let (reader, writer) = io::pipe()?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(&env)
        .current_dir(&sandbox.workdir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|error| io::Error::new(error.kind(), format!("exec: \"{program}\": {error}")))?;
    // `command` (and with it our copies of the pipe's write end) is dropped here, so the log
    // reaches end-of-file when the container's processes are gone.
    Ok((child, reader))
}

/// The argv for a container, by the image-mapping rule in the module docs.
fn argv(executable: &Path, container: &Container, sandbox: &Sandbox) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let exe = executable.display().to_string();
    let entrypoint = executable
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    // Container paths are translated; the mapped executable is a host path and never is (it may
    // well lie under a directory that is also a mount path, such as `/tmp`).
    let (program, rest) = match command.split_first() {
        None => (exe, Vec::new()),
        Some((first, rest))
            if Path::new(first)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                == entrypoint =>
        {
            (exe, rest.to_vec())
        }
        Some((first, rest)) => (sandbox.translate(first), rest.to_vec()),
    };
    std::iter::once(program)
        .chain(rest.iter().chain(&args).map(|arg| sandbox.translate(arg)))
        .collect()
}

/// The host side of a pod's filesystem: volumes, termination file, home and working directory.
#[derive(Debug)]
struct Sandbox {
    dir: TempDir,
    /// `(mountPath, host directory)`, longest mount path first.
    mounts: Vec<(String, PathBuf)>,
    termination_path: String,
    termination_file: PathBuf,
    /// Host directories whose paths are never translated.
    shared: Vec<PathBuf>,
    home: PathBuf,
    workdir: PathBuf,
}

impl Sandbox {
    fn prepare(cluster: &Cluster, pod: &Pod, container: &Container) -> io::Result<Self> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let dir = tempfile::Builder::new()
            .prefix(&format!("k8s-pod-{name}-"))
            .tempdir()?;
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.volumes.clone())
            .unwrap_or_default();
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let volume_dir = dir.path().join("volumes").join(&mount.name);
            if !volume_dir.exists() {
                std::fs::create_dir_all(&volume_dir)?;
                let secret_name = volumes
                    .iter()
                    .find(|volume| volume.name == mount.name)
                    .and_then(|volume| volume.secret.as_ref())
                    .and_then(|secret| secret.secret_name.clone());
                if let Some(secret_name) = secret_name {
                    write_secret_files(cluster, pod, &secret_name, &volume_dir)?;
                }
            }
            let host = match mount.sub_path.as_deref().filter(|sub| !sub.is_empty()) {
                Some(sub) => volume_dir.join(sub),
                None => volume_dir,
            };
            std::fs::create_dir_all(&host)?;
            mounts.push((mount.mount_path.trim_end_matches('/').to_owned(), host));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let termination_path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_PATH.to_owned());
        let termination_file = dir.path().join("termination-log");
        std::fs::write(&termination_file, b"")?;
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home)?;
        let mut sandbox = Self {
            mounts,
            termination_path,
            termination_file,
            shared: cluster.options.shared_host_dirs.clone(),
            home,
            workdir: PathBuf::new(),
            dir,
        };
        sandbox.workdir = match container
            .working_dir
            .as_deref()
            .map(|wd| sandbox.translate(wd))
        {
            Some(translated) if Some(translated.as_str()) != container.working_dir.as_deref() => {
                PathBuf::from(translated)
            }
            _ => sandbox.dir.path().join("workdir"),
        };
        std::fs::create_dir_all(&sandbox.workdir)?;
        Ok(sandbox)
    }

    /// The path-translation rule of the module docs.
    fn translate(&self, value: &str) -> String {
        if value == self.termination_path {
            return self.termination_file.display().to_string();
        }
        if self
            .shared
            .iter()
            .any(|dir| Path::new(value).starts_with(dir))
        {
            return value.to_owned();
        }
        for (mount_path, host) in &self.mounts {
            if value == mount_path {
                return host.display().to_string();
            }
            if let Some(rest) = value
                .strip_prefix(mount_path.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            {
                return host.join(rest).display().to_string();
            }
        }
        value.to_owned()
    }
}

fn write_secret_files(
    cluster: &Cluster,
    pod: &Pod,
    secret_name: &str,
    dir: &Path,
) -> io::Result<()> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(secret) = cluster
        .store
        .get::<Secret>(&(namespace, secret_name.to_owned()))
    else {
        return Ok(());
    };
    for (key, value) in secret.data.unwrap_or_default() {
        std::fs::write(dir.join(key), value.0)?;
    }
    Ok(())
}

/// The container's environment from `envFrom` and `env`, or why it cannot be built.
fn resolve_env(
    cluster: &Cluster,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let secret = |name: &str| {
        cluster
            .store
            .get::<Secret>(&(namespace.clone(), name.to_owned()))
    };
    let secret_value = |secret: &Secret, key: &str| {
        let data = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned());
        data.or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(key))
                .cloned()
        })
    };
    let mut env = Vec::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.secret_ref {
            match secret(&reference.name) {
                Some(found) => {
                    for key in found.data.iter().flat_map(BTreeMap::keys) {
                        env.push((
                            format!("{prefix}{key}"),
                            secret_value(&found, key).unwrap_or_default(),
                        ));
                    }
                }
                None if reference.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", reference.name)),
            }
        }
        if let Some(reference) = &source.config_map_ref
            && reference.optional != Some(true)
        {
            return Err(format!("configmap \"{}\" not found", reference.name));
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
            continue;
        };
        if let Some(selector) = &from.secret_key_ref {
            let optional = selector.optional == Some(true);
            match secret(&selector.name) {
                None if optional => {}
                None => return Err(format!("secret \"{}\" not found", selector.name)),
                Some(found) => match secret_value(&found, &selector.key) {
                    Some(value) => env.push((var.name.clone(), value)),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            selector.key, selector.name
                        ));
                    }
                },
            }
        } else if let Some(field) = &from.field_ref {
            env.push((var.name.clone(), field_value(pod, &field.field_path)?));
        } else if let Some(selector) = &from.config_map_key_ref {
            if selector.optional != Some(true) {
                return Err(format!("configmap \"{}\" not found", selector.name));
            }
        } else {
            return Err(format!(
                "env var {}: this source is not supported by leviathan-testkit",
                var.name
            ));
        }
    }
    Ok(env)
}

/// The downward-API value of `field_path`.
fn field_value(pod: &Pod, field_path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = field_path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|map| map.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    let value = match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => Some(NODE_NAME.to_owned()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone()),
        "status.podIP" | "status.hostIP" => Some(LOCALHOST.to_owned()),
        _ => keyed("metadata.labels['", &meta.labels)
            .or_else(|| keyed("metadata.annotations['", &meta.annotations))
            .ok_or_else(|| format!("unsupported fieldRef fieldPath {field_path:?}"))
            .map(Some)?,
    };
    Ok(value.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::log_tail;

    #[test]
    fn log_tail_keeps_last_lines_within_byte_budget() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(log_tail(log, 2, 2048), "two\nthree\n");
        assert_eq!(log_tail(log, 10, 2048), "one\ntwo\nthree\n");
        assert_eq!(log_tail(log, 10, 6), "three\n");
        assert_eq!(log_tail(b"no newline", 1, 2048), "no newline");
        assert_eq!(log_tail(log, 0, 2048), "");
    }
}
