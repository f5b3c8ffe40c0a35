//! The Job of one attempt: a pure, deterministic function of the attempt and the configuration,
//! so `leviathan k8s job-spec` prints exactly what the executor submits.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, Secret,
            SecretKeySelector, SecurityContext, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use leviathan_core::{AttemptSpec, executor::protocol};

use crate::{
    config::K8sConfig,
    names::{job_name, label_value, token_secret_name},
};

/// Name of the worker container.
pub const CONTAINER_NAME: &str = "worker";
/// The container's command (the image's `leviathan` binary).
pub const COMMAND: [&str; 2] = ["leviathan", "worker"];
/// Mount point of the workspace `emptyDir` (`LEVIATHAN_WORKSPACE_DIR`).
pub const WORKSPACE_DIR: &str = "/workspace";
/// Mount point of the scratch `emptyDir` (also `HOME`): the root filesystem is read-only.
pub const TMP_DIR: &str = "/tmp";
/// Where the worker writes its result and Kubernetes reads the termination message.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// `app` label of every worker Job and pod.
pub const APP_LABEL: (&str, &str) = ("app", "leviathan");
/// The label the worker NetworkPolicy (`ops/k8s/base/networkpolicy.yaml`) selects on.
pub const NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "leviathan-worker");
/// `app.kubernetes.io/part-of`, shared by every Leviathan object.
pub const PART_OF_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "leviathan");
/// Label (and annotation) keys naming the attempt; labels hold valid label values, annotations
/// the exact ids.
pub const TARGET_KEY: &str = "leviathan.dev/target";
/// The task's label and annotation key.
pub const TASK_KEY: &str = "leviathan.dev/task";
/// The attempt's label and annotation key; the annotation identifies the Job's attempt.
pub const ATTEMPT_KEY: &str = "leviathan.dev/attempt";
/// Annotation holding the attempt number.
pub const ATTEMPT_NUMBER_KEY: &str = "leviathan.dev/attempt-number";
/// The key of the attempt's token Secret ([`token_secret_name`]) holding its worker token.
pub const TOKEN_SECRET_KEY: &str = "control-plane-token";

/// The Job that runs `spec`'s attempt.
///
/// Names in `spec.env` that only the executor may set
/// ([`protocol::RESERVED_VARIABLES`]) are skipped; [`crate::K8sExecutor::run`] rejects such
/// specs before getting here. A `LEVIATHAN_CLAUDE_MODEL` in `spec.env` wins over the
/// configured one.
pub fn job_spec(spec: &AttemptSpec, config: &K8sConfig) -> Job {
    let labels = BTreeMap::from(
        [
            APP_LABEL,
            NAME_LABEL,
            PART_OF_LABEL,
            (TARGET_KEY, &label_value(spec.target_id.as_str())),
            (TASK_KEY, &label_value(spec.task_id.as_str())),
            (ATTEMPT_KEY, &label_value(spec.attempt_id.as_str())),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let annotations = BTreeMap::from(
        [
            (TARGET_KEY, spec.target_id.to_string()),
            (TASK_KEY, spec.task_id.to_string()),
            (ATTEMPT_KEY, spec.attempt_id.to_string()),
            (ATTEMPT_NUMBER_KEY, spec.attempt_number.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let deadline = i64::try_from(spec.deadline.as_secs())
        .unwrap_or(i64::MAX)
        .max(1);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&spec.attempt_id)),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            ttl_seconds_after_finished: config.ttl_seconds_after_finished,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(spec, config)),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(spec: &AttemptSpec, config: &K8sConfig) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".to_owned()),
        service_account_name: Some(config.service_account.clone()),
        automount_service_account_token: Some(false),
        // Service links would put every Service of the namespace into the worker's environment.
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(config.run_as_user),
            run_as_group: Some(config.run_as_user),
            fs_group: Some(config.run_as_user),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: CONTAINER_NAME.to_owned(),
            image: Some(config.image.clone()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            command: Some(COMMAND.map(str::to_owned).to_vec()),
            env: Some(worker_env(spec, config)),
            resources: Some(config.resources.clone()),
            termination_message_path: Some(TERMINATION_MESSAGE_PATH.to_owned()),
            termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "workspace".to_owned(),
                    mount_path: WORKSPACE_DIR.to_owned(),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: "tmp".to_owned(),
                    mount_path: TMP_DIR.to_owned(),
                    ..VolumeMount::default()
                },
            ]),
            ..Container::default()
        }],
        volumes: Some(vec![
            Volume {
                name: "workspace".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Volume {
                name: "tmp".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// The guide's table in order, then the paths, then the attempt's own settings.
fn worker_env(spec: &AttemptSpec, config: &K8sConfig) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut env: Vec<EnvVar> = protocol::attempt_variables(spec)
        .into_iter()
        .map(|(name, v)| value(name, v))
        .collect();
    env.push(value(
        protocol::CONTROL_PLANE_URL,
        config.control_plane_url.clone(),
    ));
    let from_secret = |variable: &str, secret: String, key: &str, optional: bool| EnvVar {
        name: variable.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.to_owned(),
                optional: optional.then_some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // With a worker token the control-plane token comes from the attempt's own Secret only.
    let own_token = spec.worker_token.is_some();
    env.extend(
        config
            .secret_env
            .iter()
            .filter(|s| !(own_token && s.variable == protocol::CONTROL_PLANE_TOKEN))
            .map(|s| from_secret(&s.variable, config.secret_name.clone(), &s.key, s.optional)),
    );
    if own_token {
        let secret = token_secret_name(&spec.attempt_id);
        env.push(from_secret(
            protocol::CONTROL_PLANE_TOKEN,
            secret,
            TOKEN_SECRET_KEY,
            false,
        ));
    }
    if let Some(model) = &config.claude_model
        && !spec.env.contains_key(protocol::LEVIATHAN_CLAUDE_MODEL)
    {
        env.push(value(protocol::LEVIATHAN_CLAUDE_MODEL, model.clone()));
    }
    env.push(value(
        protocol::LEVIATHAN_WORKSPACE_DIR,
        WORKSPACE_DIR.to_owned(),
    ));
    env.push(value(
        protocol::LEVIATHAN_TERMINATION_MESSAGE_PATH,
        TERMINATION_MESSAGE_PATH.to_owned(),
    ));
    env.push(value("HOME", TMP_DIR.to_owned()));
    let taken: Vec<String> = env.iter().map(|e| e.name.clone()).collect();
    env.extend(
        spec.env
            .iter()
            .filter(|(name, _)| {
                !protocol::RESERVED_VARIABLES.contains(&name.as_str()) && !taken.contains(name)
            })
            .map(|(name, v)| value(name, v.clone())),
    );
    env
}

/// The Secret holding `spec`'s worker token, owned by its created `job` so that the garbage
/// collector deletes it with the Job; `None` without a worker token or a Job uid.
///
/// The Job is created first and this Secret after it: a Secret created first would hold a live
/// token without an owner until patched, and would leak if the executor died in between. The
/// cost is a pod that may wait briefly in `CreateContainerConfigError` for this Secret, which
/// the kubelet retries and the executor does not count as fatal.
pub fn token_secret(spec: &AttemptSpec, job: &Job) -> Option<Secret> {
    let token = spec.worker_token.as_ref()?;
    let owner = OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(&spec.attempt_id)),
            namespace: job.metadata.namespace.clone(),
            labels: job.metadata.labels.clone(),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            TOKEN_SECRET_KEY.to_owned(),
            token.expose().to_owned(),
        )])),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        ..Secret::default()
    })
}
