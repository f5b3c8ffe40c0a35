//! The fake Job controller and garbage collector: Job defaulting and validation, one pod at a
//! time per Job, Job status and conditions, `activeDeadlineSeconds`, TTL, and deletion with
//! propagation.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods},
        core::v1::{Pod, PodSecurityContext, PodSpec, PodStatus, ResourceRequirements, Secret},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use tokio::{sync::watch, time::Instant};

use super::{
    Cluster,
    kind::Kind,
    kubelet::{self, PodOutcome, Stop},
    lock, new_uid, now, random_suffix,
    status::ApiError,
    store::{Key, key_of},
};

const CONTROLLER_UID: &str = "controller-uid";
const JOB_NAME: &str = "job-name";
const BATCH_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const BATCH_JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// How a delete treats the objects a Job owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    /// Parses `propagationPolicy`.
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "Orphan" => Ok(Self::Orphan),
            "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// Applies the pod defaults a real API server fills in.
pub(crate) fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_owned());
    spec.service_account_name
        .get_or_insert_with(|| "default".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    for container in &mut spec.containers {
        container
            .termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".to_owned());
        container
            .termination_message_policy
            .get_or_insert_with(|| "File".to_owned());
        container
            .resources
            .get_or_insert_with(ResourceRequirements::default);
        let latest = container.image.as_deref().is_none_or(|image| {
            let last = image.rsplit('/').next().unwrap_or(image);
            !last.contains(':') || last.ends_with(":latest")
        });
        container
            .image_pull_policy
            .get_or_insert_with(|| if latest { "Always" } else { "IfNotPresent" }.to_owned());
    }
}

/// Validation errors of a pod spec at `path`, as `(field, message)` pairs.
pub(crate) fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if spec.containers.is_empty() {
        errors.push((format!("{path}.containers"), "Required value".to_owned()));
    }
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|volume| volume.name.as_str())
        .collect();
    for (index, container) in spec.containers.iter().enumerate() {
        let at = format!("{path}.containers[{index}]");
        if container.name.is_empty() {
            errors.push((format!("{at}.name"), "Required value".to_owned()));
        }
        if container.image.as_deref().is_none_or(str::is_empty) {
            errors.push((format!("{at}.image"), "Required value".to_owned()));
        }
        for (mount_index, mount) in container.volume_mounts.iter().flatten().enumerate() {
            if !volumes.contains(&mount.name.as_str()) {
                errors.push((
                    format!("{at}.volumeMounts[{mount_index}].name"),
                    format!("Not found: \"{}\"", mount.name),
                ));
            }
        }
    }
    errors
}

/// Defaults and validates a Job about to be created (its metadata already stamped).
pub(crate) fn prepare_job(job: &mut Job) -> Result<(), Vec<(String, String)>> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let mut errors = Vec::new();
    if name.len() > 63 {
        errors.push((
            "metadata.name".to_owned(),
            format!("Invalid value: \"{name}\": must be no more than 63 characters"),
        ));
    }
    let spec = job.spec.get_or_insert_with(Default::default);
    let pod_spec = spec.template.spec.get_or_insert_with(PodSpec::default);
    let restart = pod_spec.restart_policy.clone();
    match restart.as_deref() {
        Some("Never" | "OnFailure") => {}
        None => errors.push((
            "spec.template.spec.restartPolicy".to_owned(),
            "Required value: valid values: \"OnFailure\", \"Never\"".to_owned(),
        )),
        Some(other) => errors.push((
            "spec.template.spec.restartPolicy".to_owned(),
            format!("Unsupported value: \"{other}\": supported values: \"OnFailure\", \"Never\""),
        )),
    }
    errors.extend(validate_pod_spec(pod_spec, "spec.template.spec"));
    if !errors.is_empty() {
        return Err(errors);
    }
    default_pod_spec(pod_spec);
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".to_owned());
    spec.suspend.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".to_owned());
    spec.selector.get_or_insert_with(|| LabelSelector {
        match_labels: Some(BTreeMap::from([(
            BATCH_CONTROLLER_UID.to_owned(),
            uid.clone(),
        )])),
        ..LabelSelector::default()
    });
    let template_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    let labels = template_meta.labels.get_or_insert_with(BTreeMap::new);
    for (key, value) in [
        (CONTROLLER_UID, &uid),
        (BATCH_CONTROLLER_UID, &uid),
        (JOB_NAME, &name),
        (BATCH_JOB_NAME, &name),
    ] {
        labels.insert(key.to_owned(), value.clone());
    }
    let template_labels = labels.clone();
    if job.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
        job.metadata.labels = Some(template_labels);
    }
    job.metadata.generation = Some(1);
    job.status = Some(JobStatus::default());
    Ok(())
}

/// Starts the controller loop for a newly created Job (suspended Jobs get none).
pub(crate) fn start(cluster: &Arc<Cluster>, job: &Job) {
    if job.spec.as_ref().and_then(|spec| spec.suspend) == Some(true) {
        return;
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let (stop, stop_rx) = watch::channel(false);
    lock(&cluster.jobs).insert(uid.clone(), stop);
    let key = key_of(&job.metadata);
    let task_cluster = cluster.clone();
    cluster.spawn(async move {
        run(&task_cluster, &key, stop_rx).await;
        lock(&task_cluster.jobs).remove(&uid);
    });
}

/// Records a pod's readiness in its Job's `status.ready`.
pub(crate) fn pod_ready(cluster: &Cluster, pod: &Pod, ready: bool) {
    let Some(owner) = controller_of(pod) else {
        return;
    };
    let key = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        owner.name.clone(),
    );
    cluster.store.update::<Job>(&key, |job| {
        if job.metadata.uid.as_deref() == Some(owner.uid.as_str()) {
            job.status.get_or_insert_with(JobStatus::default).ready = Some(i32::from(ready));
        }
    });
}

fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true) && owner.kind == "Job")
}

enum Finished {
    Complete,
    Failed {
        reason: &'static str,
        message: &'static str,
    },
}

/// Resolves once the Job's controller is told to stop (or its stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn deadline_reached(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The controller loop of one Job; returns when the Job finished (and its TTL ran) or was deleted.
async fn run(cluster: &Arc<Cluster>, key: &Key, mut stop: watch::Receiver<bool>) {
    let Some(job) = cluster.store.get::<Job>(key) else {
        return;
    };
    let spec = job.spec.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1).max(1);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let seconds = |value: i64| Duration::from_secs(u64::try_from(value).unwrap_or(0));
    let deadline = spec
        .active_deadline_seconds
        .map(|limit| Instant::now() + seconds(limit));
    let (mut succeeded, mut failed) = (0, 0);
    let finished = loop {
        let Some(pod) = create_pod(cluster, &job) else {
            return;
        };
        let pod_key = key_of(&pod.metadata);
        update_status(cluster, key, |status| {
            status.active = Some(1);
            status.start_time.get_or_insert_with(now);
            status.ready = Some(0);
            status.terminating = Some(0);
            status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        });
        let mut outcome_rx = kubelet::start(cluster, &pod);
        let outcome = tokio::select! {
            outcome = &mut outcome_rx => outcome.unwrap_or(PodOutcome::Deleted),
            () = deadline_reached(deadline) => {
                let grace = kubelet::grace_period(cluster, &pod, None);
                kubelet::stop(cluster, &pod_key, Stop::Deadline { grace });
                let _ = outcome_rx.await;
                PodOutcome::DeadlineExceeded
            }
            () = stopped(&mut stop) => return,
        };
        if *stop.borrow() {
            return;
        }
        match outcome {
            PodOutcome::Succeeded => succeeded += 1,
            PodOutcome::Failed | PodOutcome::Deleted => failed += 1,
            PodOutcome::DeadlineExceeded => {
                failed += 1;
                break Finished::Failed {
                    reason: "DeadlineExceeded",
                    message: "Job was active longer than specified deadline",
                };
            }
        }
        update_status(cluster, key, |status| {
            status.active = None;
            status.ready = Some(0);
            status.succeeded = Some(succeeded).filter(|n| *n > 0);
            status.failed = Some(failed).filter(|n| *n > 0);
        });
        if succeeded >= completions {
            break Finished::Complete;
        }
        if failed > backoff_limit {
            break Finished::Failed {
                reason: "BackoffLimitExceeded",
                message: "Job has reached the specified backoff limit",
            };
        }
    };
    update_status(cluster, key, |status| {
        status.active = None;
        status.ready = Some(0);
        status.terminating = Some(0);
        status.succeeded = Some(succeeded).filter(|n| *n > 0);
        status.failed = Some(failed).filter(|n| *n > 0);
        let (types, reason, message) = match finished {
            Finished::Complete => {
                status.completion_time = Some(now());
                (
                    ["SuccessCriteriaMet", "Complete"],
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                )
            }
            Finished::Failed { reason, message } => (["FailureTarget", "Failed"], reason, message),
        };
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        for type_ in types {
            conditions.push(JobCondition {
                type_: type_.to_owned(),
                status: "True".to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
                last_probe_time: Some(now()),
                last_transition_time: Some(now()),
            });
        }
    });
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        tokio::select! {
            () = tokio::time::sleep(seconds(i64::from(ttl))) => {
                let _ = delete(cluster, key, Some(Propagation::Background), None);
            }
            () = stopped(&mut stop) => {}
        }
    }
}

fn update_status(cluster: &Cluster, key: &Key, change: impl FnOnce(&mut JobStatus)) {
    cluster.store.update::<Job>(key, |job| {
        change(job.status.get_or_insert_with(JobStatus::default))
    });
}

/// Creates the next pod of a Job from its template.
fn create_pod(cluster: &Cluster, job: &Job) -> Option<Pod> {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let template = job.spec.as_ref()?.template.clone();
    let template_meta = template.metadata.unwrap_or_default();
    let owner = OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: job_name.clone(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    // Random names can collide; a real controller retries too.
    for _ in 0..8 {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("{job_name}-{}", random_suffix())),
                generate_name: Some(format!("{job_name}-")),
                namespace: job.metadata.namespace.clone(),
                labels: template_meta.labels.clone(),
                annotations: template_meta.annotations.clone(),
                owner_references: Some(vec![owner.clone()]),
                uid: Some(new_uid()),
                creation_timestamp: Some(now()),
                ..ObjectMeta::default()
            },
            spec: template.spec.clone(),
            status: Some(PodStatus {
                phase: Some("Pending".to_owned()),
                qos_class: Some("BestEffort".to_owned()),
                ..PodStatus::default()
            }),
        };
        if let Ok(created) = cluster.store.create(pod) {
            return Some(created);
        }
    }
    None
}

fn owned_by(metadata: &ObjectMeta, uid: &str) -> bool {
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid)
}

fn owned_pods(cluster: &Cluster, namespace: &str, uid: &str) -> Vec<Key> {
    cluster
        .store
        .list::<Pod>(Some(namespace))
        .0
        .into_iter()
        .filter(|pod| owned_by(&pod.metadata, uid))
        .map(|pod| key_of(&pod.metadata))
        .collect()
}

/// Drops the owner reference to `uid` (an orphaned dependent).
fn disown(metadata: &mut ObjectMeta, uid: &str) {
    let owners = metadata.owner_references.take().unwrap_or_default();
    let kept: Vec<_> = owners
        .into_iter()
        .filter(|owner| owner.uid != uid)
        .collect();
    metadata.owner_references = Some(kept).filter(|kept| !kept.is_empty());
}

/// The garbage collector's part for the Secrets Job `uid` owned once the Job is gone: each is
/// deleted unless another owner remains, or disowned with `Orphan` propagation.
fn collect_secrets(cluster: &Cluster, namespace: &str, uid: &str, orphan: bool) {
    let (secrets, _) = cluster.store.list::<Secret>(Some(namespace));
    for secret in secrets.iter().filter(|s| owned_by(&s.metadata, uid)) {
        let key = key_of(&secret.metadata);
        let mut others = secret.metadata.owner_references.iter().flatten();
        if orphan || others.any(|owner| owner.uid != uid) {
            cluster
                .store
                .update::<Secret>(&key, |s| disown(&mut s.metadata, uid));
        } else {
            cluster.store.remove::<Secret>(&key);
        }
    }
}

/// Deletes a Job with the given propagation (batch/v1 defaults to `Orphan`). `Ok((true, job))`
/// when the Job is gone at once, `Ok((false, job))` when finalizers defer it.
pub(crate) fn delete(
    cluster: &Arc<Cluster>,
    key: &Key,
    propagation: Option<Propagation>,
    grace: Option<i64>,
) -> Result<(bool, Job), ApiError> {
    let job = cluster
        .store
        .get::<Job>(key)
        .ok_or_else(|| ApiError::not_found(Kind::Job, &key.1))?;
    if job.metadata.deletion_timestamp.is_some() {
        return Ok((false, job));
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    if let Some(stop) = lock(&cluster.jobs).remove(&uid) {
        stop.send_replace(true);
    }
    let propagation = propagation.unwrap_or(Propagation::Orphan);
    if propagation == Propagation::Background {
        let removed = cluster.store.remove::<Job>(key).unwrap_or(job);
        for pod in owned_pods(cluster, &key.0, &uid) {
            let _ = kubelet::delete(cluster, &pod, grace);
        }
        collect_secrets(cluster, &key.0, &uid, false);
        return Ok((true, removed));
    }
    let finalizer = if propagation == Propagation::Foreground {
        "foregroundDeletion"
    } else {
        "orphan"
    };
    let marked = cluster
        .store
        .update::<Job>(key, |job| {
            job.metadata.deletion_timestamp = Some(now());
            job.metadata.deletion_grace_period_seconds = Some(0);
            job.metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(finalizer.to_owned());
        })
        .unwrap_or(job);
    let task_cluster = cluster.clone();
    let key = key.clone();
    cluster.spawn(async move {
        let cluster = task_cluster;
        let mut changes = cluster.store.subscribe();
        if propagation == Propagation::Foreground {
            for pod in owned_pods(&cluster, &key.0, &uid) {
                let _ = kubelet::delete(&cluster, &pod, grace);
            }
            while !owned_pods(&cluster, &key.0, &uid).is_empty() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        } else {
            for pod in owned_pods(&cluster, &key.0, &uid) {
                cluster
                    .store
                    .update::<Pod>(&pod, |pod| disown(&mut pod.metadata, &uid));
            }
        }
        cluster.store.update::<Job>(&key, |job| {
            let finalizers = job.metadata.finalizers.take().unwrap_or_default();
            let kept: Vec<_> = finalizers.into_iter().filter(|f| f != finalizer).collect();
            job.metadata.finalizers = Some(kept).filter(|kept| !kept.is_empty());
        });
        cluster.store.remove::<Job>(&key);
        collect_secrets(&cluster, &key.0, &uid, propagation == Propagation::Orphan);
    });
    Ok((false, marked))
}
