//! Keeping the graph in step with the targets' configuration and backlogs.

use std::collections::BTreeSet;

use leviathan_core::{
    Expectations, NewEvent, Payload as _, TaskId,
    backlog::Backlog,
    catalogue::{
        TargetRegistered, TargetUpdated, TaskBlocked, TaskCreated, TaskDefinition, TaskTransition,
        TaskUpdated,
    },
    graph::Graph,
    model::TaskStatus,
    target::TargetConfig,
};

/// Why a task that left the backlog is blocked.
const REMOVED: &str = "no longer in the backlog (change its definition to run it again)";

use super::{Inner, Recorded, SchedulerError, Served};

/// How often a sync is computed again after another writer got in first.
const SYNC_ROUNDS: usize = 3;

impl Inner {
    /// Registers (or updates) the target and records its backlog's new and changed tasks.
    /// `Ok(Err(reason))` when the target must fail closed this cycle; `Ok(Ok(ids))` lists the
    /// tasks the backlog holds now.
    pub(super) async fn sync_target(
        &self,
        served: &Served,
    ) -> Result<Result<BTreeSet<TaskId>, String>, SchedulerError> {
        let config = &served.config;
        if let Err(reason) = self
            .sync_rounds(|graph| registration(graph, config))
            .await?
        {
            return Ok(Err(format!("cannot register the target: {reason}")));
        }
        let backlog = match self.backlog.fetch(config, &config.default_branch).await {
            Ok(backlog) => backlog,
            Err(error) => return Ok(Err(format!("cannot read the backlog: {error}"))),
        };
        if let Err(reason) = self
            .sync_rounds(|graph| task_changes(graph, config, &backlog))
            .await?
        {
            return Ok(Err(format!("cannot record the backlog's tasks: {reason}")));
        }
        Ok(Ok(backlog.tasks.iter().map(|t| t.id.clone()).collect()))
    }

    /// Records what `changes` finds missing in the graph, computing it again (a bounded number
    /// of times) when another writer changed the graph in between.
    async fn sync_rounds(
        &self,
        changes: impl Fn(&Graph) -> Vec<Change>,
    ) -> Result<Result<(), String>, SchedulerError> {
        let mut last_refusal = String::new();
        for _ in 0..SYNC_ROUNDS {
            self.ledger.catch_up().await?;
            let pending = changes(&*self.ledger.graph().await);
            if pending.is_empty() {
                return Ok(Ok(()));
            }
            let events: Vec<NewEvent> = pending
                .iter()
                .map(|c| {
                    let (event_type, payload) = c.parts();
                    self.event_of(event_type, payload)
                })
                .collect();
            match self.record(events, Expectations::Derived).await? {
                Recorded::Appended => {
                    for change in &pending {
                        tracing::info!("{}", change.line());
                    }
                    return Ok(Ok(()));
                }
                Recorded::Refused(reason) => last_refusal = reason,
            }
        }
        Ok(Err(last_refusal))
    }
}

/// One event a sync records.
enum Change {
    Registered(TargetRegistered),
    Updated(TargetUpdated),
    Created(TaskDefinition),
    Redefined(TaskDefinition),
    Removed(TaskTransition),
}

impl Change {
    /// The event's type and payload.
    fn parts(&self) -> (&'static str, serde_json::Value) {
        match self {
            Self::Registered(p) => (TargetRegistered::EVENT_TYPE, p.to_value()),
            Self::Updated(p) => (TargetUpdated::EVENT_TYPE, p.to_value()),
            Self::Created(d) => (TaskCreated::EVENT_TYPE, TaskCreated(d.clone()).to_value()),
            Self::Redefined(d) => (TaskUpdated::EVENT_TYPE, TaskUpdated(d.clone()).to_value()),
            Self::Removed(t) => (TaskBlocked::EVENT_TYPE, TaskBlocked(t.clone()).to_value()),
        }
    }

    fn line(&self) -> String {
        match self {
            Self::Registered(p) => format!(
                "register target {} ({} at `{}`)",
                p.target_id, p.repo_url, p.default_branch
            ),
            Self::Updated(p) => format!("update target {}", p.target_id),
            Self::Created(d) => format!("task {}/{} created", d.target_id, d.task_id),
            Self::Redefined(d) => format!("task {}/{} updated", d.target_id, d.task_id),
            Self::Removed(t) => format!("block {}/{}: {REMOVED}", t.target_id, t.task_id),
        }
    }
}

/// `target.registered` when the graph lacks the target, `target.updated` when its repository,
/// branch or test command changed.
fn registration(graph: &Graph, config: &TargetConfig) -> Vec<Change> {
    let Some(node) = graph.target(&config.name) else {
        return vec![Change::Registered(TargetRegistered {
            target_id: config.name.clone(),
            name: None,
            repo_url: config.repo_url.clone(),
            default_branch: config.default_branch.clone(),
            test_command: config.test_command.clone(),
        })];
    };
    let changed = |now: &str, then: &str| (now != then).then(|| now.to_owned());
    let update = TargetUpdated {
        target_id: config.name.clone(),
        name: None,
        repo_url: changed(&config.repo_url, &node.repo_url),
        default_branch: changed(&config.default_branch, &node.default_branch),
        test_command: config
            .test_command
            .clone()
            .filter(|c| node.test_command.as_ref() != Some(c)),
    };
    if update.repo_url.is_none() && update.default_branch.is_none() && update.test_command.is_none()
    {
        Vec::new()
    } else {
        vec![Change::Updated(update)]
    }
}

/// `task.created` for tasks the graph lacks, `task.updated` for those whose definition or place
/// in the backlog changed, and `task.blocked` for pending tasks the backlog no longer has (a
/// worker would not find them).
fn task_changes(graph: &Graph, config: &TargetConfig, backlog: &Backlog) -> Vec<Change> {
    let listed: BTreeSet<&TaskId> = backlog.tasks.iter().map(|t| &t.id).collect();
    let removed = graph
        .tasks_of(&config.name)
        .filter(|t| t.status == TaskStatus::Pending && !listed.contains(&t.task_id))
        .map(|t| {
            Change::Removed(TaskTransition {
                target_id: t.target_id.clone(),
                task_id: t.task_id.clone(),
                reason: Some(REMOVED.to_owned()),
                attempt_id: None,
                status: None,
            })
        });
    let defined = backlog
        .tasks
        .iter()
        .enumerate()
        .filter_map(|(index, task)| {
            let definition = TaskDefinition {
                target_id: config.name.clone(),
                task_id: task.id.clone(),
                spec: task.spec.clone(),
                backlog_index: u32::try_from(index).ok(),
            };
            match graph.task(&config.name, &task.id) {
                None => Some(Change::Created(definition)),
                Some(node)
                    if node.spec != definition.spec
                        || node.backlog_index != definition.backlog_index =>
                {
                    Some(Change::Redefined(definition))
                }
                Some(_) => None,
            }
        });
    defined.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    use leviathan_core::{
        Ledger,
        backlog::parse_backlog,
        memory::{MemoryEventStore, MemoryGraphStore},
        target::parse_target_config,
    };

    use super::*;

    fn config(extra: &str) -> TargetConfig {
        parse_target_config(
            "demo.yaml",
            &format!("name: demo\nrepo_url: https://example.com/o/demo.git\n{extra}"),
            None,
        )
        .unwrap()
    }

    async fn apply(ledger: &Ledger, inner_events: Vec<NewEvent>) {
        ledger
            .ingest(inner_events, Expectations::Derived)
            .await
            .unwrap();
    }

    fn events(changes: &[Change]) -> Vec<NewEvent> {
        changes
            .iter()
            .map(|c| {
                let (event_type, payload) = c.parts();
                NewEvent {
                    event_id: super::super::new_event_id(),
                    event_type: event_type.to_owned(),
                    timestamp: leviathan_core::Timestamp::now(),
                    actor_id: None,
                    payload,
                    principal: None,
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn registers_then_updates_only_what_changed() {
        let ledger = Ledger::open(
            std::sync::Arc::new(MemoryEventStore::new()),
            std::sync::Arc::new(MemoryGraphStore::new()),
        )
        .await
        .unwrap();
        let first = config("test_command: make test\n");
        let changes = registration(&*ledger.graph().await, &first);
        assert!(matches!(changes.as_slice(), [Change::Registered(_)]));
        apply(&ledger, events(&changes)).await;
        assert!(registration(&*ledger.graph().await, &first).is_empty());

        let moved = config("default_branch: trunk\ntest_command: make test\n");
        let changes = registration(&*ledger.graph().await, &moved);
        let [Change::Updated(update)] = changes.as_slice() else {
            panic!("one update");
        };
        assert_eq!(update.default_branch.as_deref(), Some("trunk"));
        assert_eq!(update.repo_url, None);
        assert_eq!(update.test_command, None);
    }

    #[tokio::test]
    async fn tasks_are_created_then_updated_when_their_definition_or_place_changes() {
        let ledger = Ledger::open(
            std::sync::Arc::new(MemoryEventStore::new()),
            std::sync::Arc::new(MemoryGraphStore::new()),
        )
        .await
        .unwrap();
        let target = config("");
        let registered = registration(&*ledger.graph().await, &target);
        apply(&ledger, events(&registered)).await;
        let backlog = parse_backlog(
            "b.yaml",
            "tasks:\n  - {id: a, title: A, ready: true}\n  - {id: b, title: B}\n",
        )
        .unwrap();
        let changes = task_changes(&*ledger.graph().await, &target, &backlog);
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| matches!(c, Change::Created(_))));
        apply(&ledger, events(&changes)).await;
        assert!(task_changes(&*ledger.graph().await, &target, &backlog).is_empty());

        // b moves first and a's title changes: both are redefined; nothing else.
        let reordered = parse_backlog(
            "b.yaml",
            "tasks:\n  - {id: b, title: B}\n  - {id: a, title: A2, ready: true}\n",
        )
        .unwrap();
        let changes = task_changes(&*ledger.graph().await, &target, &reordered);
        let redefined: Vec<(String, Option<u32>)> = changes
            .iter()
            .map(|c| match c {
                Change::Redefined(d) => (d.task_id.to_string(), d.backlog_index),
                _ => panic!("only updates"),
            })
            .collect();
        assert_eq!(
            redefined,
            [("b".to_owned(), Some(0)), ("a".to_owned(), Some(1))]
        );
        apply(&ledger, events(&changes)).await;

        // a leaves the backlog: it is blocked, once.
        let shrunk = parse_backlog("b.yaml", "tasks:\n  - {id: b, title: B}\n").unwrap();
        let changes = task_changes(&*ledger.graph().await, &target, &shrunk);
        let blocked: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Removed(t) => t.task_id.to_string(),
                Change::Redefined(d) => panic!("unexpected update of {}", d.task_id),
                _ => panic!("only the removal"),
            })
            .collect();
        assert_eq!(blocked, ["a"]);
        apply(&ledger, events(&changes)).await;
        assert!(task_changes(&*ledger.graph().await, &target, &shrunk).is_empty());
    }
}
