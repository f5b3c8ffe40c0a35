//! The fake Kubernetes API server driven by the real `kube` client and by `kubectl`.
#![cfg(feature = "kubernetes")]

use std::{collections::BTreeMap, future::Future, path::Path, time::Duration};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod, PodSpec, PodTemplateSpec,
            Secret, SecretKeySelector, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams},
    runtime::{WatchStreamExt, wait::await_condition, watcher},
};
use leviathan_testkit::kubernetes::{FakeKubernetes, FakeKubernetesOptions, InjectedFailure};

const NS: &str = "leviathan";
const SHELL_IMAGE: &str = "shell:local";
/// Upper bound for anything a test waits for; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

async fn start() -> (FakeKubernetes, Client) {
    start_with(FakeKubernetesOptions::new()).await
}

/// Starts a fake with the shell image, an option env var and a short grace period on top of
/// `options`, and a client whose default namespace is [`NS`].
async fn start_with(options: FakeKubernetesOptions) -> (FakeKubernetes, Client) {
    let options = options
        .image(SHELL_IMAGE, "/bin/sh")
        .env("FROM_OPTIONS", "yes")
        .termination_grace_period(Duration::from_secs(5));
    let fake = FakeKubernetes::start(options)
        .await
        .expect("start fake API server");
    let mut config = Config::new(fake.url().parse().expect("url"));
    config.default_namespace = NS.to_owned();
    let client = Client::try_from(config).expect("client");
    (fake, client)
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A Job running `script` with `/bin/sh -c` in the shell image, with a `/workspace` emptyDir and
/// `TERM_PATH` pointing at the termination message path.
fn shell_job(name: &str, script: &str) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([(
                        "app".to_owned(),
                        "leviathan-worker".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![Container {
                        name: "worker".to_owned(),
                        image: Some(SHELL_IMAGE.to_owned()),
                        command: Some(vec![
                            "/bin/sh".to_owned(),
                            "-c".to_owned(),
                            script.to_owned(),
                        ]),
                        env: Some(vec![
                            env("TERM_PATH", "/dev/termination-log"),
                            env("WORKSPACE", "/workspace"),
                            env("REPO", "/workspace/repo"),
                        ]),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "workspace".to_owned(),
                            mount_path: "/workspace".to_owned(),
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "workspace".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// A Job that waits until the test creates the file `gate` (a host path), then succeeds: lets a
/// test decide when the Job finishes without sleeping itself.
fn gated_job(name: &str, gate: &Path) -> Job {
    let script = r#"while [ ! -e "$GATE" ]; do sleep 0.05; done; echo through"#;
    let mut job = shell_job(name, script);
    let gate = gate.display().to_string();
    container(&mut job)
        .env
        .as_mut()
        .unwrap()
        .push(env("GATE", &gate));
    job
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn container(job: &mut Job) -> &mut Container {
    &mut job
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
}

fn condition(job: &Job, type_: &str) -> Option<String> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let found = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")?;
    Some(found.reason.clone().unwrap_or_default())
}

fn finished(job: Option<&Job>) -> bool {
    job.is_some_and(|job| {
        condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
    })
}

async fn run_to_end(jobs: &Api<Job>, name: &str) -> Job {
    let job = within(
        "the job to finish",
        await_condition(jobs.clone(), name, finished),
    )
    .await
    .expect("watch");
    job.expect("job exists")
}

/// The single pod of a Job.
async fn pod_of(pods: &Api<Pod>, job: &str) -> Pod {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .expect("list pods");
    assert_eq!(list.items.len(), 1, "one pod for {job}");
    list.items.into_iter().next().unwrap()
}

/// Pods of `job` as watch events replay them from resourceVersion `from`, until one satisfies
/// `last` (inclusive). Replaying history makes the sequence independent of scheduling.
async fn pod_history(
    pods: &Api<Pod>,
    job: &str,
    from: &str,
    last: impl Fn(&Pod) -> bool,
) -> Vec<Pod> {
    let params = WatchParams::default().labels(&format!("job-name={job}"));
    let mut stream = pods.watch(&params, from).await.expect("watch pods").boxed();
    let mut seen = Vec::new();
    within("a pod state", async {
        loop {
            match stream
                .try_next()
                .await
                .expect("watch")
                .expect("stream open")
            {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    let done = last(&pod);
                    seen.push(pod);
                    if done {
                        return;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    seen
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses[0].state.as_ref()?.waiting.as_ref()?.reason.clone()
}

fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn is_alive(pid: u32) -> bool {
    // A zombie is dead; only its parent has not collected it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            != Some("Z")
    })
}

#[tokio::test]
async fn job_completes_with_termination_message_logs_and_translated_paths() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let from = fake.resource_version().to_string();
    let script = r#"echo hi; echo oops >&2
        case "$REPO" in /workspace*) echo untranslated;; esac
        [ "$FROM_OPTIONS" = yes ] || echo no-option-env
        [ "$PWD" != / ] && [ -d "$HOME" ] || echo no-sandbox
        mkdir -p "$REPO" && echo kept > "$REPO/file" && [ "$(cat "$WORKSPACE/repo/file")" = kept ] || echo broken
        echo done > "$TERM_PATH""#;
    let created = jobs
        .create(&PostParams::default(), &shell_job("hello", script))
        .await
        .expect("create");
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some()
    );
    assert_eq!(meta.generation, Some(1));
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(
        (spec.completions, spec.parallelism, spec.backoff_limit),
        (Some(1), Some(1), Some(0))
    );
    let uid = meta.uid.clone().unwrap();
    assert_eq!(
        spec.selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );

    let job = run_to_end(&jobs, "hello").await;
    assert_eq!(
        condition(&job, "Complete").as_deref(),
        Some("CompletionsReached")
    );
    let status = job.status.unwrap();
    assert_eq!(
        (status.succeeded, status.failed, status.active),
        (Some(1), None, None)
    );
    assert!(status.start_time.is_some() && status.completion_time.is_some());

    let pod = pod_of(&pods, "hello").await;
    let name = pod.metadata.name.clone().unwrap();
    let suffix = name
        .strip_prefix("hello-")
        .expect("pod named after its job");
    assert!(
        suffix.len() == 5
            && suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{name}"
    );
    let labels = pod.metadata.labels.clone().unwrap();
    for (key, value) in [
        ("job-name", "hello"),
        ("batch.kubernetes.io/job-name", "hello"),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("app", "leviathan-worker"),
    ] {
        assert_eq!(
            labels.get(key).map(String::as_str),
            Some(value),
            "label {key}"
        );
    }
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Job", uid.as_str(), Some(true))
    );
    let pod_status = pod.status.unwrap();
    assert_eq!(pod_status.phase.as_deref(), Some("Succeeded"));
    let terminated = pod_status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    assert_eq!(terminated.message.as_deref(), Some("done\n"));
    assert!(terminated.started_at.is_some() && terminated.finished_at.is_some());

    let log = pods.logs(&name, &LogParams::default()).await.expect("logs");
    assert_eq!(
        log, "hi\noops\n",
        "combined stdout and stderr; mount paths translated"
    );
    let tail = pods
        .logs(
            &name,
            &LogParams {
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await
        .expect("tail");
    assert_eq!(tail, "oops\n");
    let wrong = pods
        .logs(
            &name,
            &LogParams {
                container: Some("nope".to_owned()),
                ..LogParams::default()
            },
        )
        .await;
    assert_eq!(api_error(wrong.unwrap_err()).0, 400);

    let history = pod_history(&pods, "hello", &from, |pod| phase(pod) == Some("Succeeded")).await;
    let mut phases: Vec<&str> = history.iter().filter_map(phase).collect();
    phases.dedup();
    assert_eq!(phases, ["Pending", "Running", "Succeeded"]);
    let scheduled = history.iter().position(|pod| {
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
    });
    let running = history.iter().position(|pod| phase(pod) == Some("Running"));
    assert!(
        scheduled.is_some() && scheduled < running,
        "PodScheduled while still Pending"
    );
    assert!(fake.container_processes().is_empty());
    assert!(fake.stray_processes().is_empty());
}

/// Mounts an emptyDir at `/tmp` in the job's container, as the executor's Jobs do.
fn mount_tmp_empty_dir(job: &mut Job) {
    container(job)
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        });
    let spec = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod spec");
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
}

/// The mapped executable is a host path: it runs even when it lies under a directory that is
/// also one of the container's mount paths (a checkout under `/tmp` with an emptyDir at `/tmp`).
#[tokio::test]
async fn mapped_executable_under_a_mount_path_is_not_translated() {
    let host = tempfile::Builder::new()
        .prefix("mapped-exe-")
        .tempdir_in("/tmp")
        .expect("temp dir under /tmp");
    let exe = host.path().join("leviathan");
    std::fs::copy("/bin/sh", &exe).expect("copy a shell as the image's entrypoint");
    let (fake, client) =
        start_with(FakeKubernetesOptions::new().image("under-tmp:local", &exe)).await;
    let jobs: Api<Job> = Api::default_namespaced(client);
    let mut job = shell_job("under-tmp", "echo ok > \"$TERM_PATH\"");
    let c = container(&mut job);
    c.image = Some("under-tmp:local".to_owned());
    c.command = Some(vec![
        "leviathan".to_owned(),
        "-c".to_owned(),
        "echo ran > \"$TERM_PATH\"".to_owned(),
    ]);
    mount_tmp_empty_dir(&mut job);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");
    let done = run_to_end(&jobs, "under-tmp").await;
    let status = done.status.as_ref().expect("status");
    assert_eq!(
        status.succeeded,
        Some(1),
        "the mapped executable ran: {status:?}"
    );
    drop(fake);
}

/// A shared host directory keeps its path inside the container even under a mount path, so a
/// test can hand the container a host file; other paths under the mount are still translated.
#[tokio::test]
async fn shared_host_dir_is_not_translated() {
    let shared = tempfile::Builder::new()
        .prefix("shared-dir-")
        .tempdir_in("/tmp")
        .expect("temp dir under /tmp");
    let (fake, client) =
        start_with(FakeKubernetesOptions::new().shared_host_dir(shared.path())).await;
    let jobs: Api<Job> = Api::default_namespaced(client);
    let mut job = shell_job(
        "shared",
        "echo host > \"$SHARED_FILE\"; echo pod > \"$MOUNTED_FILE\"; echo ok > \"$TERM_PATH\"",
    );
    let c = container(&mut job);
    // Unique, so that a host file of that name cannot come from anywhere else.
    let mounted = format!(
        "/tmp/{}-mounted",
        shared.path().file_name().unwrap().to_string_lossy()
    );
    let shared_file = shared.path().join("from-pod");
    c.env.get_or_insert_with(Vec::new).extend([
        env("SHARED_FILE", &shared_file.display().to_string()),
        env("MOUNTED_FILE", &mounted),
    ]);
    mount_tmp_empty_dir(&mut job);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");
    let done = run_to_end(&jobs, "shared").await;
    assert_eq!(done.status.as_ref().and_then(|s| s.succeeded), Some(1));
    let written = std::fs::read_to_string(&shared_file).expect("shared file");
    assert_eq!(written, "host\n");
    assert!(
        !Path::new(&mounted).exists(),
        "/tmp inside the pod is its emptyDir, not the host's /tmp"
    );
    drop(fake);
}

#[tokio::test]
async fn failing_job_is_failed_with_logs_as_message() {
    let (_fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut job = shell_job("broken", "echo starting; echo 'it broke' >&2; exit 3");
    container(&mut job).termination_message_policy = Some("FallbackToLogsOnError".to_owned());
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");

    let job = run_to_end(&jobs, "broken").await;
    assert_eq!(
        condition(&job, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(job.status.as_ref().unwrap().failed, Some(1));
    assert!(condition(&job, "Complete").is_none());
    let pod = pod_of(&pods, "broken").await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let terminated = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (3, Some("Error"))
    );
    assert_eq!(terminated.message.as_deref(), Some("starting\nit broke\n"));
}

#[tokio::test]
async fn secrets_round_trip_and_feed_env() {
    let (_fake, client) = start().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("leviathan-secrets".to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), "leviathan".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "github-token".to_owned(),
            ByteString(b"ghp_secret\x00\xff".to_vec()),
        )])),
        string_data: Some(BTreeMap::from([(
            "control-plane-token".to_owned(),
            "cp-token".to_owned(),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let stored = secrets.get("leviathan-secrets").await.expect("get secret");
    let data = stored.data.unwrap();
    assert_eq!(data["github-token"].0, b"ghp_secret\x00\xff");
    assert_eq!(
        data["control-plane-token"].0, b"cp-token",
        "stringData is merged into data"
    );
    assert!(stored.string_data.is_none());
    assert_eq!(stored.type_.as_deref(), Some("Opaque"));
    let listed = secrets
        .list(&ListParams::default().labels("app=leviathan"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);

    let mut job = shell_job("with-secret", r#"printf '%s' "$TOKEN" > "$TERM_PATH""#);
    container(&mut job).env.as_mut().unwrap().push(EnvVar {
        name: "TOKEN".to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "leviathan-secrets".to_owned(),
                key: "control-plane-token".to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");
    assert!(condition(&run_to_end(&jobs, "with-secret").await, "Complete").is_some());
    let pod = pod_of(&pods, "with-secret").await;
    let terminated = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.message.as_deref(), Some("cp-token"));

    secrets
        .delete("leviathan-secrets", &DeleteParams::default())
        .await
        .expect("delete secret");
    assert_eq!(
        api_error(secrets.get("leviathan-secrets").await.unwrap_err()),
        (404, "NotFound".to_owned())
    );
}

#[tokio::test]
async fn missing_secret_is_a_config_error_until_it_exists() {
    let (_fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut job = shell_job("needs-secret", r#"printf '%s' "$KEY" > "$TERM_PATH""#);
    container(&mut job).env.as_mut().unwrap().push(EnvVar {
        name: "KEY".to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "late".to_owned(),
                key: "key".to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");

    let config_error =
        |pod: &Pod| waiting_reason(pod).as_deref() == Some("CreateContainerConfigError");
    let mut stream = watcher(
        pods.clone(),
        watcher::Config::default().labels("job-name=needs-secret"),
    )
    .applied_objects()
    .boxed();
    let pod = loop {
        let pod = within("CreateContainerConfigError", stream.try_next())
            .await
            .expect("watch")
            .expect("open");
        if config_error(&pod) {
            break pod;
        }
    };
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some("secret \"late\" not found")
    );

    let secrets: Api<Secret> = Api::namespaced(client, NS);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("late".to_owned()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("key".to_owned(), "finally".to_owned())])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    assert!(condition(&run_to_end(&jobs, "needs-secret").await, "Complete").is_some());
}

#[tokio::test]
async fn unknown_image_cannot_be_pulled() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut job = shell_job("no-image", "true");
    container(&mut job).image = Some("registry.example/missing:v1".to_owned());
    let from = fake.resource_version().to_string();
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");

    let backoff = |pod: &Pod| waiting_reason(pod).as_deref() == Some("ImagePullBackOff");
    let history = pod_history(&pods, "no-image", &from, backoff).await;
    let mut seen: Vec<String> = history.iter().filter_map(waiting_reason).collect();
    seen.dedup();
    assert_eq!(
        seen,
        ["ContainerCreating", "ErrImagePull", "ImagePullBackOff"]
    );
    assert!(fake.container_processes().is_empty());
    let job = jobs.get("no-image").await.expect("get");
    assert_eq!(
        job.status.unwrap().active,
        Some(1),
        "the job waits, as on a real cluster"
    );
}

#[tokio::test]
async fn active_deadline_kills_the_process_group() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut job = shell_job("slow", "echo started; sleep 300 & wait");
    job.spec.as_mut().unwrap().active_deadline_seconds = Some(2);
    let from = fake.resource_version().to_string();
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");

    let history = pod_history(&pods, "slow", &from, |pod| phase(pod) == Some("Running")).await;
    let running = history.last().unwrap();
    let processes = fake.container_processes();
    assert_eq!(processes.len(), 1);
    assert_eq!(Some(&processes[0].pod), running.metadata.name.as_ref());
    let pid = processes[0].pid;
    assert!(is_alive(pid));
    let pod_name = running.metadata.name.clone().unwrap();
    let follow = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut lines = pods
        .log_stream(&pod_name, &follow)
        .await
        .expect("follow logs")
        .lines();
    let first = within("the first log line", lines.try_next())
        .await
        .expect("read");
    assert_eq!(first.as_deref(), Some("started"));

    let job = run_to_end(&jobs, "slow").await;
    assert_eq!(
        condition(&job, "Failed").as_deref(),
        Some("DeadlineExceeded")
    );
    let pod = pod_of(&pods, "slow").await;
    let status = pod.status.unwrap();
    assert_eq!(
        (status.phase.as_deref(), status.reason.as_deref()),
        (Some("Failed"), Some("DeadlineExceeded"))
    );
    assert!(!is_alive(pid), "the container's main process is gone");
    let rest = within("the followed log to end", lines.try_next())
        .await
        .expect("read");
    assert_eq!(rest, None, "following stops when the container is gone");
    assert!(
        fake.stray_processes().is_empty(),
        "the background sleep is gone too"
    );
    assert!(fake.container_processes().is_empty());
}

#[tokio::test]
async fn duplicate_and_injected_create_failures() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let mut job = shell_job("once", "true");
    job.spec.as_mut().unwrap().suspend = Some(true);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");
    assert_eq!(
        api_error(jobs.create(&PostParams::default(), &job).await.unwrap_err()),
        (409, "AlreadyExists".to_owned())
    );

    job.metadata.name = Some("flaky".to_owned());
    fake.fail_job_creates(1, InjectedFailure::InternalError);
    fake.fail_job_creates(1, InjectedFailure::Forbidden);
    assert_eq!(
        api_error(jobs.create(&PostParams::default(), &job).await.unwrap_err()),
        (500, "InternalError".to_owned())
    );
    assert_eq!(
        api_error(jobs.create(&PostParams::default(), &job).await.unwrap_err()),
        (403, "Forbidden".to_owned())
    );
    assert_eq!(
        api_error(jobs.get("flaky").await.unwrap_err()),
        (404, "NotFound".to_owned()),
        "nothing was stored"
    );
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("the next create succeeds");

    let mut invalid = shell_job("invalid", "true");
    invalid
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = None;
    assert_eq!(
        api_error(
            jobs.create(&PostParams::default(), &invalid)
                .await
                .unwrap_err()
        ),
        (422, "Invalid".to_owned())
    );

    let paths: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert_eq!(paths.len(), 6);
    assert!(
        paths
            .iter()
            .all(|path| path == "/apis/batch/v1/namespaces/leviathan/jobs")
    );
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let gate = tempfile::tempdir().expect("tempdir");
    let gate = gate.path().join("open");
    fake.expire_next_watches(1);
    let config = watcher::Config::default().fields("metadata.name=relisted");
    let mut events = watcher(jobs.clone(), config).boxed();
    let job = gated_job("relisted", &gate);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create");

    let mut gone = 0;
    loop {
        match within("the job to complete", events.next())
            .await
            .expect("stream")
        {
            Err(watcher::Error::WatchError(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
                gone += 1;
                // Only now may the job finish, so the relist cannot have seen it finished.
                std::fs::write(&gate, b"").expect("open the gate");
            }
            Err(other) => panic!("unexpected watcher error {other:?}"),
            Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job))
                if finished(Some(&job)) =>
            {
                break;
            }
            Ok(_) => {}
        }
    }
    assert_eq!(gone, 1);
    let lists = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/jobs"))
        .filter(|r| {
            !r.query
                .as_deref()
                .unwrap_or_default()
                .contains("watch=true")
        })
        .count();
    assert_eq!(lists, 2, "the watcher listed again after 410");
}

#[tokio::test]
async fn watcher_survives_cut_streams() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let gate = tempfile::tempdir().expect("tempdir");
    let gate = gate.path().join("open");
    fake.cut_watches_after(Some(1));
    let config = watcher::Config::default().labels("app=leviathan-worker");
    let mut events = watcher(jobs.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    jobs.create(&PostParams::default(), &gated_job("cut", &gate))
        .await
        .expect("create");
    loop {
        let next = within("the job to complete", events.try_next()).await;
        let job = next.expect("watcher").expect("open");
        if !gate.exists() {
            // The watcher has listed: everything from here on arrives through cut streams.
            std::fs::write(&gate, b"").expect("open the gate");
        }
        if finished(Some(&job)) {
            assert!(condition(&job, "Complete").is_some());
            break;
        }
    }
    let watches = fake
        .requests()
        .into_iter()
        .filter(|r| r.query.as_deref().is_some_and(|q| q.contains("watch=true")))
        .count();
    assert!(
        watches >= 3,
        "one event per stream, so the watcher re-watched; got {watches} watches"
    );
}

#[tokio::test]
async fn raw_watch_is_cut_and_expires_after_compaction() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let mut job = shell_job("parked", "true");
    job.spec.as_mut().unwrap().suspend = Some(true);
    let created = jobs
        .create(&PostParams::default(), &job)
        .await
        .expect("create");
    let created_rv = created.metadata.resource_version.unwrap();

    let stream = jobs
        .watch(&WatchParams::default(), "1")
        .await
        .expect("watch");
    let mut stream = stream.boxed();
    match within("ADDED", stream.try_next()).await.expect("event") {
        Some(WatchEvent::Added(job)) => {
            assert_eq!(job.metadata.resource_version, Some(created_rv.clone()))
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    fake.cut_watches();
    assert!(
        within("the cut", stream.try_next())
            .await
            .expect("clean end")
            .is_none()
    );

    fake.compact();
    let mut stream = jobs
        .watch(&WatchParams::default(), "1")
        .await
        .expect("watch")
        .boxed();
    match within("410", stream.try_next()).await.expect("event") {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        within("the end", stream.try_next())
            .await
            .expect("clean end")
            .is_none()
    );
    let current = fake.resource_version().to_string();
    let mut stream = jobs
        .watch(&WatchParams::default().timeout(1), &current)
        .await
        .expect("watch")
        .boxed();
    match within("the timeout", stream.try_next())
        .await
        .expect("event")
    {
        Some(WatchEvent::Bookmark(mark)) => assert_eq!(mark.metadata.resource_version, current),
        other => panic!("expected a BOOKMARK before the timeout closes the stream, got {other:?}"),
    }
    assert!(
        within("the end", stream.try_next())
            .await
            .expect("clean end")
            .is_none(),
        "timeoutSeconds ends it"
    );
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (_fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    for (name, team) in [("alpha", Some("a")), ("beta", Some("b")), ("gamma", None)] {
        let mut job = shell_job(name, "true");
        job.spec.as_mut().unwrap().suspend = Some(true);
        job.metadata.labels =
            team.map(|team| BTreeMap::from([("team".to_owned(), team.to_owned())]));
        jobs.create(&PostParams::default(), &job)
            .await
            .expect("create");
    }
    let mut elsewhere = shell_job("alpha", "true");
    elsewhere.spec.as_mut().unwrap().suspend = Some(true);
    Api::<Job>::namespaced(client.clone(), "other")
        .create(&PostParams::default(), &elsewhere)
        .await
        .expect("create");

    let names = |params: ListParams| {
        let jobs = jobs.clone();
        async move {
            let list = jobs.list(&params).await.expect("list");
            assert!(list.metadata.resource_version.is_some());
            list.items
                .into_iter()
                .map(|job| job.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(ListParams::default()).await,
        ["alpha", "beta", "gamma"]
    );
    assert_eq!(
        names(ListParams::default().labels("team=a")).await,
        ["alpha"]
    );
    assert_eq!(
        names(ListParams::default().labels("team in (a,b)")).await,
        ["alpha", "beta"]
    );
    assert_eq!(
        names(ListParams::default().labels("team!=a")).await,
        ["beta", "gamma"]
    );
    assert_eq!(
        names(ListParams::default().labels("team")).await,
        ["alpha", "beta"]
    );
    assert_eq!(
        names(ListParams::default().labels("!team")).await,
        ["gamma"]
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.name=beta")).await,
        ["beta"]
    );
    assert_eq!(
        names(
            ListParams::default()
                .fields("metadata.name!=beta")
                .labels("team")
        )
        .await,
        ["alpha"]
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.namespace=leviathan"))
            .await
            .len(),
        3
    );

    let first = jobs
        .list(&ListParams::default().limit(2))
        .await
        .expect("page");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.expect("continue token");
    let rest = jobs
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(
        rest.items
            .into_iter()
            .map(|job| job.metadata.name.unwrap())
            .collect::<Vec<_>>(),
        ["gamma"]
    );

    let all: Api<Job> = Api::all(client);
    assert_eq!(
        all.list(&ListParams::default().fields("metadata.name=alpha"))
            .await
            .expect("all")
            .items
            .len(),
        2
    );
    let bad = jobs
        .list(&ListParams::default().labels("team in (a"))
        .await
        .unwrap_err();
    assert_eq!(api_error(bad).0, 400);
    let unsupported = jobs
        .list(&ListParams::default().fields("spec.parallelism=1"))
        .await
        .unwrap_err();
    assert_eq!(api_error(unsupported).0, 400);
}

/// The resourceVersion of a watch event's object.
fn event_rv<K: kube::Resource>(event: &WatchEvent<K>) -> u64 {
    match event {
        WatchEvent::Added(object) | WatchEvent::Modified(object) | WatchEvent::Deleted(object) => {
            object
                .meta()
                .resource_version
                .as_deref()
                .unwrap()
                .parse()
                .unwrap()
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn foreground_delete_kills_the_running_process() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let from = fake.resource_version().to_string();
    let created = jobs
        .create(&PostParams::default(), &shell_job("doomed", "sleep 300"))
        .await
        .expect("create");
    let uid = created.metadata.uid.clone().unwrap();
    let history = pod_history(&pods, "doomed", &from, |pod| phase(pod) == Some("Running")).await;
    let pod_name = history.last().unwrap().metadata.name.clone().unwrap();
    let pid = fake.container_processes()[0].pid;

    let from = fake.resource_version().to_string();
    let job_events = jobs
        .watch(&WatchParams::default(), &from)
        .await
        .expect("watch jobs")
        .boxed();
    let pod_events = pods
        .watch(&WatchParams::default(), &from)
        .await
        .expect("watch pods")
        .boxed();
    let response = jobs
        .delete("doomed", &DeleteParams::foreground())
        .await
        .expect("delete");
    let marked = response
        .left()
        .expect("the job is returned while its finalizer holds it");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_owned()])
    );

    within(
        "the job to go",
        await_condition(
            jobs.clone(),
            "doomed",
            kube::runtime::conditions::is_deleted(&uid),
        ),
    )
    .await
    .expect("watch");
    assert!(!is_alive(pid), "deleting the job killed its process");
    assert!(fake.stray_processes().is_empty());
    assert_eq!(api_error(pods.get(&pod_name).await.unwrap_err()).0, 404);

    let job_events: Vec<_> = within(
        "job events",
        job_events
            .take_while(|e| {
                let done = matches!(e, Ok(WatchEvent::Deleted(_)));
                async move { !done }
            })
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("job events");
    let marked_rv = job_events
        .iter()
        .find(|event| matches!(event, WatchEvent::Modified(job) if job.metadata.deletion_timestamp.is_some()))
        .map(event_rv)
        .expect("a MODIFIED event with deletionTimestamp");
    let pod_events: Vec<_> = within(
        "pod events",
        pod_events
            .take_while(|e| {
                let done = matches!(e, Ok(WatchEvent::Deleted(_)));
                async move { !done }
            })
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("pod events");
    let pod_terminating_rv = pod_events
        .iter()
        .find(|event| matches!(event, WatchEvent::Modified(pod) if pod.metadata.deletion_timestamp.is_some()))
        .map(event_rv)
        .expect("the pod is marked terminating");
    assert!(
        marked_rv < pod_terminating_rv,
        "the job is marked before its pods go"
    );
}

#[tokio::test]
async fn background_and_orphan_deletes() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let from = fake.resource_version().to_string();
    for name in ["background", "orphan"] {
        jobs.create(&PostParams::default(), &shell_job(name, "sleep 300"))
            .await
            .expect("create");
    }
    let mut names = BTreeMap::new();
    for job in ["background", "orphan"] {
        let history = pod_history(&pods, job, &from, |pod| phase(pod) == Some("Running")).await;
        names.insert(job, history.last().unwrap().metadata.name.clone().unwrap());
    }

    let gone = jobs
        .delete("background", &DeleteParams::background())
        .await
        .expect("delete");
    assert!(gone.is_left());
    assert_eq!(
        api_error(jobs.get("background").await.unwrap_err()).0,
        404,
        "background removes the job at once"
    );
    let pod = names["background"].clone();
    within(
        "the pod to go",
        await_condition(pods.clone(), &pod, |pod: Option<&Pod>| pod.is_none()),
    )
    .await
    .expect("watch");

    jobs.delete("orphan", &DeleteParams::default())
        .await
        .expect("delete");
    let orphan = names["orphan"].clone();
    within(
        "the job to go",
        await_condition(jobs.clone(), "orphan", |job: Option<&Job>| job.is_none()),
    )
    .await
    .expect("watch");
    let pod = within(
        "the owner reference to go",
        await_condition(pods.clone(), &orphan, |pod: Option<&Pod>| {
            pod.is_some_and(|pod| pod.metadata.owner_references.is_none())
        }),
    )
    .await
    .expect("watch")
    .expect("the orphan pod survives");
    assert_eq!(
        pod.status.unwrap().phase.as_deref(),
        Some("Running"),
        "orphaned pods keep running"
    );
    assert_eq!(fake.container_processes().len(), 1);

    pods.delete(&orphan, &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    within(
        "the pod to go",
        await_condition(pods.clone(), &orphan, |pod: Option<&Pod>| pod.is_none()),
    )
    .await
    .expect("watch");
    assert!(fake.container_processes().is_empty());
    assert!(fake.stray_processes().is_empty());
}

#[tokio::test]
async fn unschedulable_pods_stay_pending() {
    let (fake, client) = start().await;
    fake.make_unschedulable("job-name=stuck").expect("selector");
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let from = fake.resource_version().to_string();
    jobs.create(&PostParams::default(), &shell_job("stuck", "true"))
        .await
        .expect("create");
    let unschedulable = |pod: &Pod| {
        let conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "False")
    };
    let history = pod_history(&pods, "stuck", &from, unschedulable).await;
    let status = history.last().unwrap().status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(
        status.conditions.unwrap()[0].reason.as_deref(),
        Some("Unschedulable")
    );
    assert!(fake.container_processes().is_empty());
}

#[tokio::test]
async fn discovery_and_version_work_for_kube() {
    let (_fake, client) = start().await;
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
    let discovery = kube::Discovery::new(client).run().await.expect("discovery");
    let batch = discovery.get("batch").expect("batch group");
    assert!(
        batch
            .recommended_resources()
            .iter()
            .any(|(resource, _)| resource.kind == "Job")
    );
    let core = discovery.get("").expect("core group");
    let kinds: Vec<String> = core
        .recommended_resources()
        .into_iter()
        .map(|(resource, _)| resource.kind)
        .collect();
    assert!(
        kinds.contains(&"Pod".to_owned()) && kinds.contains(&"Secret".to_owned()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn mapped_image_substitutes_its_entrypoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entrypoint = dir.path().join("leviathan");
    std::fs::write(&entrypoint, "#!/bin/sh\necho \"$0 $*\"\n").expect("write entrypoint");
    let mut permissions = std::fs::metadata(&entrypoint).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&entrypoint, permissions).expect("chmod");
    let options = FakeKubernetesOptions::new().image("leviathan-worker:local", &entrypoint);
    let (_fake, client) = start_with(options).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);

    let strings = |items: &[&str]| Some(items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    let cases = [
        (
            "by-name",
            strings(&["/usr/local/bin/leviathan", "worker"]),
            strings(&["/workspace/x"]),
        ),
        (
            "no-command",
            None,
            strings(&["worker", "--dir", "/workspace"]),
        ),
        (
            "other-command",
            strings(&["/bin/echo", "plain"]),
            strings(&["/workspace/y"]),
        ),
    ];
    for (name, command, args) in cases.clone() {
        let mut job = shell_job(name, "unused");
        let worker = container(&mut job);
        worker.image = Some("leviathan-worker:local".to_owned());
        worker.command = command;
        worker.args = args;
        jobs.create(&PostParams::default(), &job)
            .await
            .expect("create");
    }
    let mut logs = BTreeMap::new();
    for (name, _, _) in cases {
        assert!(
            condition(&run_to_end(&jobs, name).await, "Complete").is_some(),
            "{name}"
        );
        let pod = pod_of(&pods, name).await.metadata.name.unwrap();
        logs.insert(
            name,
            pods.logs(&pod, &LogParams::default()).await.expect("logs"),
        );
    }
    let exe = entrypoint.display().to_string();
    let by_name: Vec<&str> = logs["by-name"].split_whitespace().collect();
    assert_eq!(by_name[..2], [exe.as_str(), "worker"]);
    assert!(
        by_name[2].ends_with("/x") && !by_name[2].starts_with("/workspace"),
        "{by_name:?}"
    );
    let no_command: Vec<&str> = logs["no-command"].split_whitespace().collect();
    assert_eq!(no_command[..3], [exe.as_str(), "worker", "--dir"]);
    assert!(Path::new(no_command[3]).is_absolute() && no_command[3] != "/workspace");
    let other: Vec<&str> = logs["other-command"].split_whitespace().collect();
    assert_eq!(
        other[0], "plain",
        "a command that is not the entrypoint runs as given"
    );
    assert!(
        other[1].ends_with("/y") && !other[1].starts_with("/workspace"),
        "{other:?}"
    );
}

async fn kubectl(fake: &FakeKubernetes, home: &Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new("kubectl")
        .arg("--server")
        .arg(fake.url())
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args)
        .env("KUBECONFIG", home.join("kubeconfig"))
        .env("HOME", home)
        .output()
        .await
        .expect("kubectl is installed (apt-get install -y kubernetes-client)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn kubectl_gets_jobs_pods_and_logs() {
    let (fake, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    jobs.create(
        &PostParams::default(),
        &shell_job("kubectl-job", "echo from-the-pod"),
    )
    .await
    .expect("create");
    run_to_end(&jobs, "kubectl-job").await;
    let pod = pod_of(&pods, "kubectl-job").await.metadata.name.unwrap();
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join("kubeconfig"), "").expect("kubeconfig");

    let out = kubectl(&fake, home.path(), &["get", "jobs", "-n", NS]).await;
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.contains("NAME") && header.contains("STATUS") && header.contains("COMPLETIONS"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|line| line.starts_with("kubectl-job"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("Complete") && row.contains("1/1"), "{out}");

    let out = kubectl(&fake, home.path(), &["get", "pods", "-n", NS]).await;
    let row = out
        .lines()
        .find(|line| line.starts_with(&pod))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("Completed") && row.contains("0/1"), "{out}");

    let out = kubectl(&fake, home.path(), &["logs", &pod, "-n", NS]).await;
    assert_eq!(out, "from-the-pod\n");
    let out = kubectl(
        &fake,
        home.path(),
        &[
            "get",
            "job",
            "kubectl-job",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.succeeded}",
        ],
    )
    .await;
    assert_eq!(out, "1");
}
