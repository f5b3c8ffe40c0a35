//! Deterministic event fixtures: realistic attempt lifecycles for tests and benchmarks.

use serde_json::json;

use crate::{
    catalogue::{
        ArtifactCreated, AttemptCreated, AttemptFailed, AttemptStarted, AttemptSucceeded,
        CircuitClosed, CircuitOpened, CommitCreated, JobSubmitted, ModelCallCompleted, Payload,
        PrCreated, PrMerged, PrStateChange, RetryScheduled, TargetRegistered, TaskCompleted,
        TaskCreated, TaskDefinition, TaskTransition, TestRunReport, TestsFailed, TestsPassed,
    },
    digest::Sha256Digest,
    event::{Event, NewEvent},
    id::{AttemptId, EventId, TargetId, TaskId},
    model::{FailureClass, FailureKind, Priority, TaskSpec},
    paths::AllowedPaths,
    timestamp::Timestamp,
};

/// Builds a plausible log one fact at a time, with deterministic ids and timestamps.
#[derive(Debug)]
pub struct Scenario {
    prefix: String,
    target: TargetId,
    counter: u64,
    start_micros: i64,
    events: Vec<NewEvent>,
}

impl Scenario {
    /// A scenario about `target`; event ids start with `prefix`.
    pub fn new(prefix: &str, target: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            target: TargetId::new(target).expect("fixture target ids are valid"),
            counter: 0,
            start_micros: 1_769_601_600_000_000, // 2026-01-28T12:00:00Z
            events: Vec::new(),
        }
    }

    fn push<P: Payload>(&mut self, actor: &str, payload: &P) {
        self.counter += 1;
        let id = EventId::new(format!("{}-{:08}", self.prefix, self.counter))
            .expect("fixture event ids are valid");
        let ts = Timestamp::from_unix_micros(self.start_micros + self.counter as i64 * 1_000)
            .expect("fixture times are in range");
        self.events
            .push(NewEvent::new(id, ts, Some(actor.to_owned()), payload));
    }

    /// The target being described.
    pub fn target(&self) -> &TargetId {
        &self.target
    }

    /// The timestamp the next event will get.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.start_micros + (self.counter as i64 + 1) * 1_000)
            .expect("fixture times are in range")
    }

    /// `target.registered`.
    pub fn register_target(&mut self) -> &mut Self {
        let p = TargetRegistered {
            target_id: self.target.clone(),
            name: Some(format!("{} repository", self.target)),
            repo_url: format!("https://git.example.com/acme/{}.git", self.target),
            default_branch: "main".into(),
            test_command: Some("make test".into()),
        };
        self.push("scheduler", &p);
        self
    }

    /// `task.created` for a ready task under `docs/`.
    pub fn create_task(
        &mut self,
        task: &str,
        dependencies: &[&str],
        priority: Priority,
    ) -> &mut Self {
        let mut spec = TaskSpec::new(format!("Write {task} — café ✓"));
        spec.scope = "docs".into();
        spec.priority = priority;
        spec.dependencies = dependencies
            .iter()
            .filter_map(|d| TaskId::new(*d).ok())
            .collect();
        spec.allowed_paths =
            AllowedPaths::parse(&[format!("docs/{task}.md")]).expect("fixture paths are valid");
        spec.acceptance_criteria = vec!["Explains setup".into(), "Has an example".into()];
        let def = TaskDefinition {
            target_id: self.target.clone(),
            task_id: task_id(task),
            spec,
            backlog_index: Some(self.counter as u32),
        };
        self.push("scheduler", &TaskCreated(def));
        self
    }

    /// `attempt.created` then `attempt.started` and `job.submitted`.
    pub fn start_attempt(&mut self, task: &str, attempt: &str, number: u32) -> &mut Self {
        let attempt_id = attempt_id(attempt);
        let created = AttemptCreated {
            attempt_id: attempt_id.clone(),
            task_id: task_id(task),
            target_id: self.target.clone(),
            attempt_number: number,
            executor: Some("k8s".into()),
            deadline_seconds: Some(900),
            base: None,
        };
        self.push("scheduler", &created);
        let job = JobSubmitted {
            attempt_id: attempt_id.clone(),
            executor: "k8s".into(),
            job_name: Some(format!("leviathan-{attempt}")),
            namespace: Some("leviathan".into()),
        };
        self.push("scheduler", &job);
        let started = AttemptStarted {
            attempt_id: attempt_id.clone(),
            task_id: Some(task_id(task)),
            target_id: Some(self.target.clone()),
            worker: Some(format!("leviathan-{attempt}-x7k2p")),
            sandbox: None,
        };
        self.push(&format!("worker-{attempt}"), &started);
        self
    }

    /// A model call, a failing and a passing test run, artifacts, a commit, a PR, success and
    /// `task.completed`.
    pub fn succeed_attempt(&mut self, task: &str, attempt: &str, pr_number: i64) -> &mut Self {
        let actor = format!("worker-{attempt}");
        let attempt_id = attempt_id(attempt);
        for round in 0..2u32 {
            let prompt = Sha256Digest::of(format!("prompt {attempt} {round}").as_bytes());
            let response = Sha256Digest::of(format!("response {attempt} {round}").as_bytes());
            for (sha, kind) in [(prompt, "model_prompt"), (response, "model_output")] {
                self.push(
                    &actor,
                    &ArtifactCreated {
                        sha256: sha,
                        kind: kind.into(),
                        size: 2048,
                        name: Some(format!("{kind}-{round}.txt")),
                        uri: Some(format!("/v1/artifacts/{sha}")),
                        attempt_id: Some(attempt_id.clone()),
                    },
                );
            }
            self.push(
                &actor,
                &ModelCallCompleted {
                    attempt_id: attempt_id.clone(),
                    model: "claude-sonnet-4-5".into(),
                    provider: Some("anthropic".into()),
                    tokens_in: 1800 + u64::from(round) * 400,
                    tokens_out: 900,
                    prompt_sha256: prompt,
                    response_sha256: response,
                    round,
                    duration_ms: Some(4200),
                    target_id: None,
                    cost_usd: None,
                    prices_as_of: None,
                },
            );
            let report = TestRunReport {
                attempt_id: attempt_id.clone(),
                round,
                command: "make test".into(),
                exit_code: Some(if round == 0 { 1 } else { 0 }),
                output_sha256: Some(Sha256Digest::of(
                    format!("tests {attempt} {round}").as_bytes(),
                )),
                duration_ms: Some(1300),
            };
            if round == 0 {
                self.push(&actor, &TestsFailed(report));
            } else {
                self.push(&actor, &TestsPassed(report));
            }
        }
        let commit = hex_commit(attempt);
        let branch = format!("agent/{task}-{attempt}");
        self.push(
            &actor,
            &CommitCreated {
                attempt_id: attempt_id.clone(),
                commit_sha: commit.clone(),
                branch: branch.clone(),
                message: Some(format!("docs: {task}")),
            },
        );
        let url = format!(
            "https://github.example.com/acme/{}/pull/{pr_number}",
            self.target
        );
        self.push(
            &actor,
            &PrCreated {
                attempt_id: attempt_id.clone(),
                pr_number,
                pr_url: url.clone(),
                title: Some(format!("Leviathan: {task}")),
                branch: Some(branch.clone()),
                reused: false,
            },
        );
        self.push(
            &actor,
            &AttemptSucceeded {
                attempt_id: attempt_id.clone(),
                branch,
                commit_sha: commit,
                pr_number,
                pr_url: url,
            },
        );
        self.push(
            "scheduler",
            &TaskCompleted(TaskTransition {
                target_id: self.target.clone(),
                task_id: task_id(task),
                reason: Some("pull request opened".into()),
                attempt_id: Some(attempt_id),
                status: None,
            }),
        );
        self
    }

    /// `attempt.failed` (tests failed, transient) then `retry.scheduled`.
    pub fn fail_attempt(&mut self, task: &str, attempt: &str, retry_number: u32) -> &mut Self {
        let attempt_id = attempt_id(attempt);
        self.push(
            &format!("worker-{attempt}"),
            &AttemptFailed {
                attempt_id: attempt_id.clone(),
                failure_kind: FailureKind::TestsFailed,
                failure_class: Some(FailureClass::Transient),
                error_summary: "tests failed after 3 repair rounds: 2 failures in test_guide"
                    .into(),
            },
        );
        let not_before = self
            .now()
            .saturating_add(std::time::Duration::from_secs(60));
        self.push(
            "scheduler",
            &RetryScheduled {
                target_id: self.target.clone(),
                task_id: task_id(task),
                retry_number,
                backoff_seconds: 60.0,
                not_before,
                attempt_id: Some(attempt_id),
            },
        );
        self
    }

    /// `pr.merged`.
    pub fn merge_pr(&mut self, pr_number: i64) -> &mut Self {
        let change = PrStateChange {
            target_id: self.target.clone(),
            pr_number,
            pr_url: None,
        };
        self.push("scheduler", &PrMerged(change));
        self
    }

    /// `circuit.opened` then `circuit.closed`.
    pub fn trip_and_reset_circuit(&mut self) -> &mut Self {
        let open_until = self
            .now()
            .saturating_add(std::time::Duration::from_secs(1800));
        self.push(
            "scheduler",
            &CircuitOpened {
                target_id: self.target.clone(),
                consecutive_failures: 3,
                open_until,
            },
        );
        self.push(
            "scheduler",
            &CircuitClosed {
                target_id: self.target.clone(),
                reason: Some("probe succeeded".into()),
            },
        );
        self
    }

    /// An event outside the catalogue (kept, ignored by the projection).
    pub fn unknown_event(&mut self) -> &mut Self {
        self.counter += 1;
        let id = EventId::new(format!("{}-{:08}", self.prefix, self.counter))
            .expect("fixture event ids are valid");
        self.events.push(NewEvent {
            event_id: id,
            event_type: "topo.area.discovered".into(),
            timestamp: self.now(),
            actor_id: Some("topology-indexer".into()),
            payload: json!({"area_id": "docs", "path_prefixes": ["docs/"], "file_count": 12, "target_id": self.target}),
            principal: None,
        });
        self
    }

    /// The events so far.
    pub fn build(&self) -> Vec<NewEvent> {
        self.events.clone()
    }
}

fn task_id(s: &str) -> TaskId {
    TaskId::new(s).expect("fixture task ids are valid")
}

fn attempt_id(s: &str) -> AttemptId {
    AttemptId::new(s).expect("fixture attempt ids are valid")
}

fn hex_commit(seed: &str) -> String {
    Sha256Digest::of(seed.as_bytes()).to_hex()[..40].to_owned()
}

/// A log of `tasks` tasks on one target: each task fails once and then succeeds with a PR, every
/// other PR is merged, plus an unknown event and a circuit trip. About 30 events per task.
pub fn lifecycle(prefix: &str, target: &str, tasks: usize) -> Vec<NewEvent> {
    let mut s = Scenario::new(prefix, target);
    s.register_target();
    for t in 0..tasks {
        let task = format!("task-{t:05}");
        let deps: Vec<String> = if t > 0 {
            vec![format!("task-{:05}", t - 1)]
        } else {
            Vec::new()
        };
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        let priority = [Priority::High, Priority::Medium, Priority::Low][t % 3];
        s.create_task(&task, &deps, priority);
        let first = format!("attempt-{t:05}-a");
        let second = format!("attempt-{t:05}-b");
        s.start_attempt(&task, &first, 1)
            .fail_attempt(&task, &first, 2);
        s.start_attempt(&task, &second, 2)
            .succeed_attempt(&task, &second, t as i64 + 1);
        if t % 2 == 0 {
            s.merge_pr(t as i64 + 1);
        }
        if t % 10 == 5 {
            s.unknown_event().trip_and_reset_circuit();
        }
    }
    s.build()
}

/// Chains events as a store would (seq from 1), without a store.
pub fn seal_all(events: Vec<NewEvent>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for (i, new) in events.into_iter().enumerate() {
        let prev = out.last().map(|e| e.hash);
        out.push(Event::seal(new, i as u64 + 1, prev));
    }
    out
}
