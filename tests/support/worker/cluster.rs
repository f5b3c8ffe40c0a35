//! The testkit's fake Kubernetes API server, its worker image mapped to the built `leviathan`
//! binary (so its kubelet runs the real `leviathan worker`), with the Secret the Kubernetes
//! executor's Jobs reference, filled under the keys they reference.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, Client, Config, api::PostParams};
use leviathan_exec_k8s::{DEFAULT_SECRET_NAME, default_secret_env};
use leviathan_testkit::kubernetes::{FakeKubernetes, FakeKubernetesOptions};

/// The worker image the fake runs as the built binary.
pub(crate) const IMAGE: &str = "leviathan-worker:test";
/// Where the Jobs and the Secret live.
pub(crate) const NAMESPACE: &str = "leviathan";

/// The fake cluster and a client of it.
pub(crate) struct Cluster {
    pub(crate) fake: FakeKubernetes,
    pub(crate) client: Client,
}

impl Cluster {
    /// Starts the fake and creates the executor's default Secret in [`NAMESPACE`], each key its
    /// default configuration references holding the value `secrets` gives its worker variable
    /// (pairs of worker variable and value).
    pub(crate) async fn start(secrets: &[(&str, String)]) -> Self {
        Self::start_running(secrets, Path::new(env!("CARGO_BIN_EXE_leviathan"))).await
    }

    /// [`Cluster::start`] with [`IMAGE`] standing for `executable` (a wrapper of the binary).
    pub(crate) async fn start_running(secrets: &[(&str, String)], executable: &Path) -> Self {
        let options = FakeKubernetesOptions::new()
            .image(IMAGE, executable)
            .termination_grace_period(Duration::from_secs(5));
        let fake = FakeKubernetes::start(options)
            .await
            .expect("fake API server");
        let client = Client::try_from(Config::new(fake.url().parse().unwrap())).unwrap();
        let values: BTreeMap<&str, &String> = secrets.iter().map(|(k, v)| (*k, v)).collect();
        let string_data = default_secret_env()
            .into_iter()
            .map(|entry| {
                let value = values.get(entry.variable.as_str()).unwrap_or_else(|| {
                    panic!("no value for {} (secret key {})", entry.variable, entry.key)
                });
                (entry.key, (*value).clone())
            })
            .collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SECRET_NAME.to_owned()),
                ..ObjectMeta::default()
            },
            string_data: Some(string_data),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(client.clone(), NAMESPACE)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
        Self { fake, client }
    }
}
