//! The Kubernetes executor through the real `kube` client against the testkit API server, whose
//! kubelet runs the real `leviathan worker` binary (the image mapped to it) against
//! `FakeGitHub`, `ScriptedLlm` and the control plane on memory stores. Also: the Job printed by
//! `leviathan k8s job-spec`, created with `kubectl`, runs the same way.

mod support {
    pub(crate) mod worker;
}

use std::{path::Path, sync::Arc, time::Duration};

use k8s_openapi::api::{batch::v1::Job, core::v1::Secret as K8sSecret};
use kube::{
    Api,
    api::PostParams,
    runtime::{conditions, wait::await_condition},
};
use leviathan_api::client::ControlPlaneClient;
use leviathan_core::{
    AttemptResult, AttemptSpec, Executor, Timestamp,
    model::{AttemptStatus, FailureKind},
    secret::Secret,
    store::ArtifactStore,
};
use leviathan_exec_k8s::{K8sConfig, K8sExecutor, token_secret};
use leviathan_testkit::{kubernetes::FakeKubernetes, llm::files_envelope};
use support::worker::{
    BAD_GUIDE, CP_TOKEN, GOOD_GUIDE, World,
    cluster::{Cluster, IMAGE, NAMESPACE as NS},
};

/// Upper bound for anything a test waits for; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(120);

/// The fake cluster with the secret created from `world`'s credentials.
async fn cluster(world: &World) -> Cluster {
    Cluster::start(&world.secrets()).await
}

fn executor(world: &World, cluster: &Cluster) -> K8sExecutor {
    let config = K8sConfig::default()
        .image(IMAGE)
        .namespace(NS)
        .control_plane_url(world.api_url.clone())
        .artifacts(Arc::clone(&world.artifacts) as Arc<dyn ArtifactStore>);
    K8sExecutor::new(cluster.client.clone(), config)
}

#[tokio::test]
async fn the_worker_in_a_job_delivers_a_pull_request() {
    let world = World::start().await;
    let cluster = cluster(&world).await;
    world
        .llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let spec = world.create_attempt("attempt-k8s-ok", 1, "k8s").await;
    let outcome = tokio::time::timeout(PATIENCE, executor(&world, &cluster).run(&spec))
        .await
        .expect("the attempt ends in time")
        .expect("run");

    let AttemptResult::Succeeded {
        branch, pr_number, ..
    } = &outcome.result
    else {
        panic!("expected success, got {:?}", outcome.result);
    };
    assert_eq!(branch, "agent/docs-guide-attempt-k8s-ok");
    let pulls = world.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].number, *pr_number);
    let attempt = world.attempt("attempt-k8s-ok").await;
    assert_eq!(attempt.status, AttemptStatus::Succeeded);
    assert_eq!(attempt.pr_number, Some(*pr_number));

    // The pod log is an artifact in the control plane's store, without credentials.
    assert_eq!(outcome.artifacts.len(), 1);
    let log = world
        .artifacts
        .get(&outcome.artifacts[0].sha256)
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(!log.is_empty());
    for (_, secret) in world.secrets() {
        assert!(
            !log.contains(&secret),
            "a credential leaked into the pod log"
        );
    }
    assert!(
        cluster.fake.jobs().is_empty(),
        "the finished Job is deleted"
    );
    assert!(cluster.fake.stray_processes().is_empty());
}

#[tokio::test]
async fn a_worker_that_exits_1_reports_its_failure() {
    let world = World::start().await;
    let cluster = cluster(&world).await;
    world
        .llm
        .push_text(files_envelope(&[("docs/GUIDE.md", BAD_GUIDE)]));
    let spec = world.create_attempt("attempt-k8s-fails", 1, "k8s").await;
    let outcome = tokio::time::timeout(PATIENCE, executor(&world, &cluster).run(&spec))
        .await
        .expect("the attempt ends in time")
        .expect("run");
    let AttemptResult::Failed(failure) = &outcome.result else {
        panic!("expected a failure, got {:?}", outcome.result);
    };
    assert_eq!(
        failure.kind,
        FailureKind::TestsFailed,
        "{}",
        failure.summary
    );
    assert!(world.pulls().is_empty());
    assert_eq!(
        world.attempt("attempt-k8s-fails").await.status,
        AttemptStatus::Failed
    );
    assert_eq!(
        outcome.artifacts.len(),
        1,
        "the log of a failure is kept too"
    );
}

#[tokio::test]
async fn the_printed_job_spec_runs_when_created_with_kubectl() {
    let world = World::start().await;
    let cluster = cluster(&world).await;
    world
        .llm
        .push_text(files_envelope(&[("docs/GUIDE.md", GOOD_GUIDE)]));
    let spec = world.create_attempt("attempt-kubectl", 1, "k8s").await;
    let mut args = vec![
        "k8s".to_owned(),
        "job-spec".to_owned(),
        "--target".to_owned(),
        spec.target_id.to_string(),
        "--task".to_owned(),
        spec.task_id.to_string(),
        "--attempt".to_owned(),
        spec.attempt_id.to_string(),
        "--repo-url".to_owned(),
        spec.repo_url.clone(),
        "--image".to_owned(),
        IMAGE.to_owned(),
    ];
    for (name, value) in &spec.env {
        args.extend(["--env".to_owned(), format!("{name}={value}")]);
    }
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(&args)
        .env("LEVIATHAN_WORKER_CONTROL_PLANE_URL", &world.api_url)
        .env_remove("LEVIATHAN_K8S_NAMESPACE")
        .env_remove("LEVIATHAN_EXECUTOR_IMAGE")
        // Credentials in the printing process's environment must not reach the output.
        .env("GITHUB_TOKEN", "forge-secret-in-env")
        .env("CONTROL_PLANE_TOKEN", "admin-secret-in-env")
        .output()
        .expect("run leviathan k8s job-spec");
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let text = String::from_utf8_lossy(&printed.stdout);
    for secret in ["forge-secret-in-env", "admin-secret-in-env"] {
        assert!(!text.contains(secret), "job-spec printed {secret}: {text}");
    }
    assert!(
        text.contains("name: leviathan-attempt-kubectl-token"),
        "the worker's token comes from the attempt's own Secret: {text}"
    );
    let home = tempfile::tempdir().unwrap();
    let manifest = home.path().join("job.yaml");
    std::fs::write(&manifest, &printed.stdout).unwrap();
    kubectl(
        &cluster.fake,
        home.path(),
        &[
            "create",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ],
    )
    .await;

    // As the scheduler does: the attempt's own token, in a Secret the Job owns.
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), NS);
    let job = jobs
        .get("leviathan-attempt-kubectl")
        .await
        .expect("the Job");
    let admin = ControlPlaneClient::new(&world.api_url, CP_TOKEN).unwrap();
    let expires = Timestamp::now().saturating_add(Duration::from_secs(600));
    let issued = admin
        .mint_worker_token(&spec.attempt_id, expires)
        .await
        .expect("a worker token");
    let minted = AttemptSpec {
        worker_token: Some(Secret::new(issued.token)),
        ..spec.clone()
    };
    let secret = token_secret(&minted, &job).expect("the attempt's Secret");
    Api::<K8sSecret>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the attempt's Secret");

    let finished = tokio::time::timeout(
        PATIENCE,
        await_condition(
            jobs,
            "leviathan-attempt-kubectl",
            conditions::is_job_completed(),
        ),
    )
    .await
    .expect("the Job completes in time")
    .expect("watch");
    let status = finished.and_then(|job| job.status).expect("job status");
    assert_eq!(status.succeeded, Some(1), "{status:?}");
    assert_eq!(world.pulls().len(), 1);
    assert_eq!(
        world.attempt("attempt-kubectl").await.status,
        AttemptStatus::Succeeded
    );
}

/// Runs kubectl against the fake (asynchronously: the fake serves on this test's runtime).
async fn kubectl(fake: &FakeKubernetes, home: &Path, args: &[&str]) -> String {
    std::fs::write(home.join("kubeconfig"), "").unwrap();
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
        .expect("kubectl is installed (see https://kubernetes.io/docs/tasks/tools/)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
