//! The deployment in `ops/k8s/` agrees with the code: every rendered manifest is a valid
//! Kubernetes object, the Job the executor generates fits the NetworkPolicy, the Secret template
//! and the service accounts, the Role grants exactly the executor's API calls, and the bootstrap
//! script passes `bash -n` and `shellcheck`.
//!
//! Needs `kubectl` (for `kubectl kustomize`) and `shellcheck` on the PATH; a missing tool fails
//! the test with the command that installs it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{
            ConfigMap, Container, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
        },
        networking::v1::NetworkPolicy,
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use leviathan_core::AttemptSpec;
use leviathan_exec_k8s::{API_CALLS, K8sConfig, job_spec};
use serde::de::DeserializeOwned;
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["base", "overlays/kind", "overlays/prod"];

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/k8s")
}

/// Runs `program` with `args`; a missing program fails with how to install it.
fn run(program: &str, args: &[&str], install: &str) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}); install it: {install}"))
}

/// Every object of a rendered kustomization, typed.
#[derive(Default)]
struct Rendered {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    network_policies: Vec<NetworkPolicy>,
    config_maps: Vec<ConfigMap>,
    claims: Vec<PersistentVolumeClaim>,
    /// Every document as JSON, for checks across kinds.
    documents: Vec<Value>,
}

/// `value` as a `T`, and back to the same JSON: no unknown or misspelt field is dropped.
fn typed<T: DeserializeOwned + serde::Serialize + k8s_openapi::Resource>(
    what: &str,
    value: &Value,
) -> T {
    let object: T = serde_path_to_error::deserialize(value)
        .unwrap_or_else(|e| panic!("{what}: does not deserialize at {}: {e}", e.path()));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(difference) = first_difference(value, &back, String::new()) {
        panic!("{what}: not a valid {}: {difference}", T::KIND);
    }
    object
}

/// Where `written` and `typed` (the same document after a round trip through its type) first
/// differ: a field the type does not know, or a value it reads differently.
fn first_difference(written: &Value, typed: &Value, path: String) -> Option<String> {
    match (written, typed) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(key, value)| {
            let here = format!("{path}.{key}");
            match b.get(key) {
                None => Some(format!("`{here}` is not a field of the type")),
                Some(other) => first_difference(value, other, here),
            }
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{path}[{i}]"))),
        _ if written == typed => None,
        _ => Some(format!("`{path}` reads back as {typed}, not {written}")),
    }
}

fn render(kustomization: &str) -> Rendered {
    let dir = ops().join(kustomization);
    let output = run(
        "kubectl",
        &["kustomize", dir.to_str().unwrap()],
        "https://kubernetes.io/docs/tasks/tools/ (kubectl)",
    );
    assert!(
        output.status.success(),
        "kubectl kustomize {kustomization} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut rendered = Rendered::default();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .unwrap_or_else(|e| panic!("{kustomization}: not YAML: {e}"));
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let what = format!(
            "{kustomization}: {kind} {}",
            value["metadata"]["name"].as_str().unwrap_or("?")
        );
        match kind.as_str() {
            "Namespace" => rendered.namespaces.push(typed(&what, &value)),
            "ServiceAccount" => rendered.service_accounts.push(typed(&what, &value)),
            "Role" => rendered.roles.push(typed(&what, &value)),
            "RoleBinding" => rendered.role_bindings.push(typed(&what, &value)),
            "Deployment" => rendered.deployments.push(typed(&what, &value)),
            "Service" => rendered.services.push(typed(&what, &value)),
            "NetworkPolicy" => rendered.network_policies.push(typed(&what, &value)),
            "ConfigMap" => rendered.config_maps.push(typed(&what, &value)),
            "PersistentVolumeClaim" => rendered.claims.push(typed(&what, &value)),
            other => panic!("{what}: no check knows the kind `{other}`"),
        }
        rendered.documents.push(value);
    }
    assert!(
        !rendered.documents.is_empty(),
        "{kustomization} rendered nothing"
    );
    rendered
}

fn named<'a, T: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>>(
    objects: &'a [T],
    name: &str,
) -> &'a T {
    objects
        .iter()
        .find(|o| o.metadata().name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no {} named {name}", T::KIND))
}

fn secret_template() -> Secret {
    let text = std::fs::read_to_string(ops().join("base/secret.template.yaml")).unwrap();
    let value: Value = serde_yaml_ng::from_str(&text).unwrap();
    typed("secret.template.yaml", &value)
}

fn container<'a>(deployment: &'a Deployment, name: &str) -> &'a Container {
    deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The executor's configuration as the rendered scheduler Deployment gives it: its plain `env`
/// values (values from secrets are stand-ins).
fn scheduler_config(rendered: &Rendered) -> K8sConfig {
    let scheduler = container(
        named(&rendered.deployments, "leviathan-scheduler"),
        "scheduler",
    );
    let env: BTreeMap<String, String> = scheduler
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = e
                .value
                .clone()
                .unwrap_or_else(|| "from-a-secret".to_owned());
            (e.name.clone(), value)
        })
        .collect();
    K8sConfig::from_lookup(|name| env.get(name).cloned()).expect("the scheduler's env is valid")
}

fn attempt() -> AttemptSpec {
    AttemptSpec {
        attempt_id: "attempt-0123456789abcdef".parse().unwrap(),
        attempt_number: 1,
        task_id: "docs-guide".parse().unwrap(),
        target_id: "example".parse().unwrap(),
        repo_url: "https://github.com/your-org/your-repo.git".to_owned(),
        base_branch: "main".to_owned(),
        deadline: Duration::from_secs(900),
        env: BTreeMap::new(),
        worker_token: None,
    }
}

fn generated_job(rendered: &Rendered) -> Job {
    job_spec(&attempt(), &scheduler_config(rendered))
}

#[test]
fn every_rendered_manifest_is_a_valid_object() {
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        for document in &rendered.documents {
            let namespace = match document["kind"].as_str() {
                Some("Namespace") => document["metadata"]["name"].as_str(),
                _ => document["metadata"]["namespace"].as_str(),
            };
            assert_eq!(namespace, Some("leviathan"), "{overlay}: {document}");
        }
        let target = named(&rendered.config_maps, "leviathan-target");
        let text = &target.data.as_ref().unwrap()["target.yaml"];
        leviathan_core::target::parse_target_config("target.yaml", text, None)
            .unwrap_or_else(|e| panic!("{overlay}: the target ConfigMap does not parse: {e}"));
        // The control plane serves the model gateway with the key the gateway file names.
        let gateway = named(&rendered.config_maps, "leviathan-gateway");
        let text = &gateway.data.as_ref().unwrap()["gateway.yaml"];
        let control_plane = container(
            named(&rendered.deployments, "leviathan-control-plane"),
            "control-plane",
        );
        let args = control_plane.args.clone().unwrap_or_default().join(" ");
        assert!(
            args.contains("--gateway /etc/leviathan/gateway.yaml"),
            "{overlay}: {args}"
        );
        let env: Vec<&str> = control_plane
            .env
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert!(text.contains("key_env: LEVIATHAN_CLAUDE_API_KEY"), "{text}");
        assert!(
            env.contains(&"LEVIATHAN_CLAUDE_API_KEY"),
            "{overlay}: {env:?}"
        );
    }
}

#[test]
fn overlays_pick_their_images_and_stores() {
    let kind = render("overlays/kind");
    assert_eq!(
        generated_job(&kind)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("leviathan-worker:local")
    );
    let control_plane = container(
        named(&kind.deployments, "leviathan-control-plane"),
        "control-plane",
    );
    assert_eq!(
        control_plane.image.as_deref(),
        Some("leviathan-control-plane:local")
    );
    assert_eq!(
        kind.claims.len(),
        1,
        "sled lives on a PersistentVolumeClaim"
    );

    let prod = render("overlays/prod");
    assert_eq!(
        generated_job(&prod)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("ghcr.io/leviathan-dev/leviathan-worker:v0.1.0")
    );
    let deployment = named(&prod.deployments, "leviathan-control-plane");
    assert_eq!(deployment.spec.replicas, Some(2));
    assert_eq!(
        container(deployment, "control-plane").image.as_deref(),
        Some("ghcr.io/leviathan-dev/leviathan-control-plane:v0.1.0")
    );
}

#[test]
fn the_generated_job_fits_the_network_policy_and_the_service_accounts() {
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        let job = generated_job(&rendered);
        assert_eq!(job.metadata.namespace.as_deref(), Some("leviathan"));
        let template = job.spec.as_ref().unwrap().template.clone();
        let pod_labels = template.metadata.unwrap().labels.unwrap();
        let pod = template.spec.unwrap();

        let policy = named(&rendered.network_policies, "leviathan-worker");
        let spec = policy.spec.as_ref().unwrap();
        let selector = spec.pod_selector.as_ref().unwrap();
        assert!(selector.match_expressions.is_none());
        let wanted = selector
            .match_labels
            .as_ref()
            .expect("the policy selects by labels");
        assert!(
            !wanted.is_empty(),
            "{overlay}: the policy must not select every pod"
        );
        for (key, value) in wanted {
            assert_eq!(
                pod_labels.get(key),
                Some(value),
                "{overlay}: the worker pod lacks the NetworkPolicy's label {key}={value}"
            );
        }
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );

        // The worker reaches the control plane through the Service the policy lets it reach.
        let config = scheduler_config(&rendered);
        let url = config.control_plane_url.strip_prefix("http://").unwrap();
        let (host, port) = url.split_once(':').unwrap();
        let port: i32 = port.trim_end_matches('/').parse().unwrap();
        let service = named(&rendered.services, host);
        let service_spec = service.spec.as_ref().unwrap();
        assert!(service_spec.ports.iter().flatten().any(|p| p.port == port));
        let backend_labels = service_spec.selector.as_ref().unwrap();
        let egress = spec.egress.as_ref().unwrap();
        let allowed = egress.iter().any(|rule| {
            let to_backend = rule.to.iter().flatten().any(|peer| {
                peer.pod_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|labels| {
                        labels.iter().all(|(k, v)| backend_labels.get(k) == Some(v))
                    })
            });
            let on_port = rule.ports.iter().flatten().any(|p| {
                p.port == Some(IntOrString::Int(port))
                    || p.port == Some(IntOrString::String("http".to_owned()))
            });
            to_backend && on_port
        });
        assert!(
            allowed,
            "{overlay}: the NetworkPolicy does not let workers reach {url}"
        );

        // The worker's service account exists and mounts no token.
        let account = pod.service_account_name.as_deref().unwrap();
        let account = named(&rendered.service_accounts, account);
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }
}

#[test]
fn every_secret_reference_uses_the_templates_name_and_keys() {
    let template = secret_template();
    let name = template.metadata.name.clone().unwrap();
    let keys: BTreeSet<String> = template.string_data.clone().unwrap().into_keys().collect();
    assert_eq!(template.metadata.namespace.as_deref(), Some("leviathan"));

    for overlay in OVERLAYS {
        let rendered = render(overlay);
        let job = serde_json::to_value(generated_job(&rendered)).unwrap();
        let mut references = Vec::new();
        for document in rendered.documents.iter().chain([&job]) {
            collect_secret_key_refs(document, &mut references);
        }
        let from_job = {
            let mut refs = Vec::new();
            collect_secret_key_refs(&job, &mut refs);
            refs
        };
        assert_eq!(
            from_job
                .iter()
                .map(|(_, key)| key.as_str())
                .collect::<Vec<_>>(),
            ["control-plane-token", "github-token"],
            "no model provider key in a worker's Job: only the control plane's gateway holds it"
        );
        for (secret, key) in &references {
            assert_eq!(secret, &name, "{overlay}: a reference to another secret");
            assert!(
                keys.contains(key),
                "{overlay}: key `{key}` is not in secret.template.yaml ({keys:?})"
            );
        }
    }
}

/// Every `secretKeyRef` below `value`, as (secret, key).
fn collect_secret_key_refs(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("secretKeyRef") {
                out.push((
                    reference["name"].as_str().unwrap().to_owned(),
                    reference["key"].as_str().unwrap().to_owned(),
                ));
            }
            map.values().for_each(|v| collect_secret_key_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_secret_key_refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_role_grants_exactly_the_executors_api_calls() {
    let executor: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .map(|(g, r, v)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
        .collect();
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        let scheduler = named(&rendered.deployments, "leviathan-scheduler");
        let account = scheduler
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .expect("the scheduler runs under its own service account");
        let binding = rendered
            .role_bindings
            .iter()
            .find(|b| {
                b.subjects.iter().flatten().any(|s| {
                    s.kind == "ServiceAccount"
                        && s.name == account
                        && s.namespace.as_deref() == Some("leviathan")
                })
            })
            .unwrap_or_else(|| panic!("{overlay}: nothing binds {account}"));
        assert_eq!(binding.role_ref.kind, "Role");
        let role = named(&rendered.roles, &binding.role_ref.name);

        let mut granted = BTreeSet::new();
        for rule in role.rules.iter().flatten() {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        assert!(
                            granted.insert((group.clone(), resource.clone(), verb.clone())),
                            "{overlay}: {group}/{resource} {verb} granted twice"
                        );
                    }
                }
            }
        }
        assert_eq!(
            granted, executor,
            "{overlay}: the Role must grant exactly leviathan_exec_k8s::API_CALLS"
        );
        assert_eq!(
            rendered.roles.len(),
            1,
            "{overlay}: no other Role grants anything"
        );
    }
}

#[test]
fn the_bootstrap_script_passes_bash_n_and_shellcheck() {
    let scripts: Vec<PathBuf> = std::fs::read_dir(ops())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    assert!(
        scripts.iter().any(|p| p.ends_with("kind-bootstrap.sh")),
        "{scripts:?}"
    );
    for script in &scripts {
        let path = script.to_str().unwrap();
        let syntax = run("bash", &["-n", path], "apt-get install -y bash");
        assert!(
            syntax.status.success(),
            "bash -n {path}: {}",
            String::from_utf8_lossy(&syntax.stderr)
        );
        let lint = run(
            "shellcheck",
            &["--severity=style", path],
            "apt-get install -y shellcheck",
        );
        assert!(
            lint.status.success(),
            "shellcheck {path}:\n{}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
    }
}
