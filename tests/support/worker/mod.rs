//! What the real `leviathan worker` needs around it, on 127.0.0.1: a repository on
//! `FakeGitHub` with a backlog, `ScriptedLlm` behind the control plane's model gateway, and the
//! control plane's router over memory stores with the scheduler's events (`target.registered`,
//! `task.created`, `attempt.created`) seeded.
//! Shared by the executors' end-to-end tests; [`Outside`] (the forge and the model) and
//! [`cluster`] (the fake Kubernetes cluster) also serve the system test, which runs the real
//! control plane instead.

#[allow(dead_code, reason = "only the Kubernetes tests run a cluster")]
pub(crate) mod cluster;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use leviathan::api::{
    ApiConfig, ApiState, BearerToken,
    gateway::{GatewayConfig, Upstream},
    router,
};
use leviathan_core::{
    AttemptId, AttemptSpec, EventId, Expectations, Ledger, NewEvent, TaskId, Timestamp,
    WorkerTokens,
    catalogue::AttemptCreated,
    graph::AttemptNode,
    memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    model::Priority,
    store::ArtifactStore,
    testkit::Scenario,
};
use leviathan_testkit::{
    TestServer,
    github::{FakeGitHub, PullSummary},
    llm::ScriptedLlm,
};

pub(crate) const TARGET: &str = "demo";
pub(crate) const OWNER: &str = "acme";
pub(crate) const REPO: &str = "widgets";
pub(crate) const TASK: &str = "docs-guide";
pub(crate) const CP_TOKEN: &str = "cp-token-for-executor-tests-0123456789";
/// What the scripted model writes; the task's test command checks for `Setup`.
pub(crate) const GOOD_GUIDE: &str = "# Guide\n\nSetup: run `make`.\n";
pub(crate) const BAD_GUIDE: &str = "# Guide\n\nTo be written.\n";

pub(crate) struct World {
    pub(crate) github: FakeGitHub,
    pub(crate) llm: ScriptedLlm,
    _api: TestServer,
    pub(crate) api_url: String,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) artifacts: Arc<MemoryArtifactStore>,
    pub(crate) repo_url: String,
    state: ApiState,
}

impl World {
    /// Everything up, the target registered and the task created.
    pub(crate) async fn start() -> Self {
        Self::start_with(&format!(
            "version: \"1\"\ntasks:\n  - id: {TASK}\n    title: Write the guide\n    scope: docs\n    priority: high\n    ready: true\n    allowed_paths: [\"docs/GUIDE.md\"]\n    acceptance_criteria: [\"Explains setup\"]\n    test_command: \"grep -q Setup docs/GUIDE.md\"\n"
        ))
        .await
    }

    /// [`World::start`] with another backlog (whose task [`TASK`] the attempts run).
    pub(crate) async fn start_with(backlog: &str) -> Self {
        let Outside {
            github,
            llm,
            repo_url,
        } = Outside::start(backlog).await;
        let ledger = Arc::new(
            Ledger::open(
                Arc::new(MemoryEventStore::new()),
                Arc::new(MemoryGraphStore::new()),
            )
            .await
            .expect("ledger"),
        );
        let artifacts = Arc::new(MemoryArtifactStore::new());
        let state = ApiState::new(
            Arc::clone(&ledger),
            Arc::clone(&artifacts) as Arc<dyn ArtifactStore>,
            ApiConfig::new(BearerToken::new(CP_TOKEN).unwrap()).with_gateway(gateway_to(&llm)),
        );
        let api = TestServer::spawn(router(state.clone()))
            .await
            .expect("control plane");
        let mut scenario = Scenario::new("seed", TARGET);
        scenario
            .register_target()
            .create_task(TASK, &[], Priority::High);
        ledger
            .ingest(scenario.build(), Expectations::Derived)
            .await
            .expect("seed target and task");
        Self {
            github,
            llm,
            api_url: api.url(),
            _api: api,
            ledger,
            artifacts,
            repo_url,
            state,
        }
    }

    /// Records `attempt.created` as the scheduler does before dispatch, and returns the spec
    /// it would hand the executor.
    pub(crate) async fn create_attempt(
        &self,
        attempt: &str,
        number: u32,
        executor: &str,
    ) -> AttemptSpec {
        let attempt_id = AttemptId::new(attempt).unwrap();
        let event = NewEvent::new(
            EventId::new(format!("seed-{attempt}-created")).unwrap(),
            Timestamp::now(),
            Some("scheduler".into()),
            &AttemptCreated {
                attempt_id: attempt_id.clone(),
                task_id: TaskId::new(TASK).unwrap(),
                target_id: TARGET.parse().unwrap(),
                attempt_number: number,
                executor: Some(executor.into()),
                deadline_seconds: Some(300),
                base: None,
            },
        );
        self.ledger
            .ingest(vec![event], Expectations::Derived)
            .await
            .expect("attempt.created");
        let expires = Timestamp::now().saturating_add(Duration::from_secs(3600));
        let worker_token = Some(self.state.mint(&attempt_id, expires).await.unwrap());
        AttemptSpec {
            attempt_id,
            attempt_number: number,
            task_id: TASK.parse().unwrap(),
            target_id: TARGET.parse().unwrap(),
            repo_url: self.repo_url.clone(),
            base_branch: "main".to_owned(),
            deadline: Duration::from_secs(300),
            env: BTreeMap::from(
                [
                    ("LEVIATHAN_GITHUB_API_URL", self.github.api_url()),
                    ("LEVIATHAN_REPAIR_ROUNDS", "0".to_owned()),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            ),
            // As the scheduler mints it at dispatch: the worker's key to the model gateway.
            worker_token,
        }
    }

    /// The attempt as the control plane's graph has it now.
    pub(crate) async fn attempt(&self, attempt: &str) -> AttemptNode {
        self.ledger.catch_up().await.unwrap();
        self.ledger
            .graph()
            .await
            .attempt(&AttemptId::new(attempt).unwrap())
            .cloned()
            .expect("attempt in the graph")
    }

    pub(crate) fn pulls(&self) -> Vec<PullSummary> {
        self.github.pull_requests(OWNER, REPO).unwrap()
    }

    /// The secrets a worker needs, as (worker variable, value).
    pub(crate) fn secrets(&self) -> [(&'static str, String); 2] {
        worker_secrets(CP_TOKEN, &self.github)
    }
}

/// What a worker talks to besides the control plane: `OWNER/REPO` on `FakeGitHub` (a README and
/// a backlog on `main`) and `ScriptedLlm`.
pub(crate) struct Outside {
    pub(crate) github: FakeGitHub,
    pub(crate) llm: ScriptedLlm,
    pub(crate) repo_url: String,
}

impl Outside {
    /// Both up, with `backlog` as the repository's `.leviathan/backlog.yaml`.
    pub(crate) async fn start(backlog: &str) -> Self {
        let github = FakeGitHub::start().await.expect("FakeGitHub");
        let repo_url = github
            .create_target_repo(OWNER, REPO, backlog)
            .await
            .expect("seed repository");
        let llm = ScriptedLlm::start().await.expect("ScriptedLlm");
        Self {
            github,
            llm,
            repo_url,
        }
    }
}

/// The secrets a worker's executor holds to reach a control plane with `control_plane_token`
/// and `github`, as (worker variable, value): no model key, the model is behind the control
/// plane's gateway.
pub(crate) fn worker_secrets(
    control_plane_token: &str,
    github: &FakeGitHub,
) -> [(&'static str, String); 2] {
    [
        ("CONTROL_PLANE_TOKEN", control_plane_token.to_owned()),
        ("GITHUB_TOKEN", github.token().to_owned()),
    ]
}

/// The control plane's model gateway to `llm`, on both protocols, with its key.
pub(crate) fn gateway_to(llm: &ScriptedLlm) -> GatewayConfig {
    let key = || Some(leviathan_core::secret::Secret::new(llm.api_key()));
    GatewayConfig::new(
        Some(Upstream::new(llm.url(), key())),
        Some(Upstream::new(format!("{}/v1", llm.url()), key())),
    )
}
