//! `task.created`, `task.updated`, `task.completed`, `task.failed`, `task.blocked` and
//! `retry.scheduled`.

use std::collections::BTreeSet;

use super::effect::{Effect, Rejection};
use crate::{
    catalogue as cat,
    graph::node::{EdgeKind, Node, NodeId, TaskNode},
    id::TaskId,
    model::{TaskSpec, TaskStatus},
};

impl Effect<'_, '_> {
    /// A new task of a registered target.
    pub(super) fn create_task(&mut self, def: &cat::TaskDefinition) -> Result<(), Rejection> {
        self.target(&def.target_id, "target_id")?;
        if self.view.task(&def.target_id, &def.task_id).is_some() {
            return Err(Rejection::at(
                "task_id",
                format!("task `{}` already exists; use task.updated", def.task_id),
            ));
        }
        self.define_task(def, None)?;
        Ok(())
    }

    /// A new definition of an existing task.
    pub(super) fn update_task(&mut self, def: &cat::TaskDefinition) -> Result<(), Rejection> {
        let existing = self.task(&def.target_id, &def.task_id)?;
        self.define_task(def, Some(existing))?;
        Ok(())
    }

    /// `task.completed`, which may say that the task failed.
    pub(super) fn complete_task(&mut self, t: &cat::TaskTransition) -> Result<(), Rejection> {
        let status = if t.status.as_deref() == Some("failed") {
            TaskStatus::Failed
        } else {
            TaskStatus::Completed
        };
        self.transition_task(t, status)?;
        Ok(())
    }

    /// The earliest time the task may run again.
    pub(super) fn schedule_retry(&mut self, p: &cat::RetryScheduled) -> Result<(), Rejection> {
        let mut task = self.task(&p.target_id, &p.task_id)?;
        task.not_before = Some(p.not_before);
        task.awaiting_retry = false;
        self.touch(&mut task.meta);
        self.put(Node::Task(task));
        Ok(())
    }

    pub(super) fn define_task(
        &mut self,
        def: &cat::TaskDefinition,
        existing: Option<TaskNode>,
    ) -> Result<(), Rejection> {
        let task_node_id = NodeId::task(&def.target_id, &def.task_id);
        let previous = task_deps(existing.as_ref().map(|t| &t.spec));
        let task = match existing {
            None => TaskNode {
                target_id: def.target_id.clone(),
                task_id: def.task_id.clone(),
                spec: def.spec.clone(),
                backlog_index: def.backlog_index,
                status: initial_status(&def.spec),
                status_reason: None,
                attempts: 0,
                live_attempt: None,
                last_attempt: None,
                succeeded_attempt: None,
                last_failure: None,
                consecutive_failures: 0,
                not_before: None,
                awaiting_retry: false,
                meta: self.new_meta(),
            },
            Some(mut task) => {
                let changed = task.spec != def.spec;
                if def.spec.backlog_completed() && task.live_attempt.is_none() {
                    task.status = TaskStatus::Completed;
                    task.status_reason = Some("completed in the backlog".to_owned());
                } else if changed && matches!(task.status, TaskStatus::Blocked | TaskStatus::Failed)
                {
                    // A blocked or failed task runs again once its definition changes.
                    task.status = initial_status(&def.spec);
                    task.status_reason = Some("definition changed".to_owned());
                    task.consecutive_failures = 0;
                    task.not_before = None;
                }
                task.spec = def.spec.clone();
                task.backlog_index = def.backlog_index.or(task.backlog_index);
                self.touch(&mut task.meta);
                task
            }
        };
        self.link(
            task_node_id.clone(),
            EdgeKind::BelongsTo,
            NodeId::target(&def.target_id),
        );
        let deps = task_deps(Some(&def.spec));
        for dep in &deps {
            let dep_node = NodeId::task(&def.target_id, dep);
            if self.view.task(&def.target_id, dep).is_some() {
                self.link(task_node_id.clone(), EdgeKind::DependsOn, dep_node);
            } else if dep != &def.task_id {
                // Linked when `dep` is defined (below, in its own definition).
                let mut waiters = self.waiters(&dep_node);
                if waiters.insert(def.task_id.clone()) {
                    self.set_waiters(dep_node, waiters);
                }
            }
        }
        for dropped in previous.difference(&deps) {
            let dep_node = NodeId::task(&def.target_id, dropped);
            let mut waiters = self.waiters(&dep_node);
            if waiters.remove(&def.task_id) {
                self.set_waiters(dep_node, waiters);
            }
        }
        // Tasks defined earlier that wait on this one get their edge now.
        let waiting = self.waiters(&task_node_id);
        if !waiting.is_empty() {
            for waiter in &waiting {
                self.link(
                    NodeId::task(&def.target_id, waiter),
                    EdgeKind::DependsOn,
                    task_node_id.clone(),
                );
            }
            self.set_waiters(task_node_id, BTreeSet::new());
        }
        self.put(Node::Task(task));
        Ok(())
    }

    pub(super) fn transition_task(
        &mut self,
        t: &cat::TaskTransition,
        status: TaskStatus,
    ) -> Result<(), Rejection> {
        let mut task = self.task(&t.target_id, &t.task_id)?;
        if let Some(live) = &task.live_attempt {
            return Err(Rejection::at(
                "task_id",
                format!("task `{}` has a live attempt `{live}`", t.task_id),
            ));
        }
        task.status = status;
        task.status_reason = t.reason.clone();
        self.touch(&mut task.meta);
        self.put(Node::Task(task));
        Ok(())
    }
}

/// The dependencies a definition names, once each.
fn task_deps(spec: Option<&TaskSpec>) -> BTreeSet<TaskId> {
    spec.map(|s| s.dependencies.iter().cloned().collect())
        .unwrap_or_default()
}

fn initial_status(spec: &TaskSpec) -> TaskStatus {
    match spec.status.as_deref() {
        Some("completed") => TaskStatus::Completed,
        Some("failed") => TaskStatus::Failed,
        Some("blocked") => TaskStatus::Blocked,
        _ => TaskStatus::Pending,
    }
}
