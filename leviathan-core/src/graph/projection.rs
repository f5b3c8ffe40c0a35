//! The effect of each event type on the graph, computed from a read-only view.
//!
//! Separating "compute the changes" from "apply them" gives per-event atomicity for free: an
//! event either yields all its changes or a [`Rejection`] and no change at all.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use serde::Serialize;

use super::{
    ArtifactNode, AttemptNode, Change, Circuit, CommitNode, Edge, EdgeKind, Graph, ModelCallNode,
    Node, NodeId, NodeMeta, PullRequestNode, TargetNode, TaskNode, TestRunNode,
};
use crate::{
    catalogue::{self as cat, EventBody, StreamId},
    id::{AttemptId, TargetId, TaskId},
    model::{AttemptStatus, Failure, FailureClass, FailureKind, PrState, TaskSpec, TaskStatus},
};

/// Why the projection cannot accept an event in the current state of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The payload field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl Rejection {
    pub(crate) fn new(field: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
    fn at(field: &str, reason: impl Into<String>) -> Self {
        Self::new(Some(field.to_owned()), reason)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Rejection {}

/// Nodes, edges and stream versions staged on top of a graph.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    nodes: BTreeMap<NodeId, Node>,
    edges: BTreeSet<String>,
    pub(crate) streams: BTreeMap<StreamId, u64>,
}

impl Overlay {
    pub(crate) fn absorb(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Put(node) => {
                    self.nodes.insert(node.id(), *node);
                }
                Change::Link(edge) => {
                    self.edges.insert(edge.edge_id);
                }
            }
        }
    }
}

/// A graph, optionally with an overlay, as the projection reads it.
pub(crate) struct View<'a> {
    base: &'a Graph,
    overlay: Option<&'a Overlay>,
}

impl<'a> View<'a> {
    pub(crate) fn base(base: &'a Graph) -> Self {
        Self {
            base,
            overlay: None,
        }
    }

    pub(crate) fn staged(base: &'a Graph, overlay: &'a Overlay) -> Self {
        Self {
            base,
            overlay: Some(overlay),
        }
    }

    fn node(&self, id: &NodeId) -> Option<&'a Node> {
        self.overlay
            .and_then(|o| o.nodes.get(id))
            .or_else(|| self.base.nodes.get(id))
    }

    fn has_edge(&self, id: &str) -> bool {
        self.overlay.is_some_and(|o| o.edges.contains(id)) || self.base.edges.contains_key(id)
    }

    fn task(&self, target: &TargetId, task: &TaskId) -> Option<&'a TaskNode> {
        match self.node(&NodeId::task(target, task)) {
            Some(Node::Task(t)) => Some(t),
            _ => None,
        }
    }

    /// The tasks of a target, overlay first.
    fn tasks_of(&self, target: &TargetId) -> Vec<&'a TaskNode> {
        let mut ids: BTreeSet<&NodeId> = self
            .base
            .index
            .tasks_by_target
            .get(target)
            .into_iter()
            .flatten()
            .collect();
        if let Some(overlay) = self.overlay {
            ids.extend(overlay.nodes.iter().filter_map(|(id, n)| match n {
                Node::Task(t) if &t.target_id == target => Some(id),
                _ => None,
            }));
        }
        ids.into_iter()
            .filter_map(|id| match self.node(id) {
                Some(Node::Task(t)) => Some(t),
                _ => None,
            })
            .collect()
    }
}

/// Builds the changes of one event.
struct Effect<'v, 'a> {
    view: &'v View<'a>,
    at: At,
    changes: Vec<Change>,
}

impl Effect<'_, '_> {
    fn new_meta(&self) -> NodeMeta {
        NodeMeta {
            created_seq: self.at.seq,
            updated_seq: self.at.seq,
            created_at: self.at.timestamp,
            updated_at: self.at.timestamp,
        }
    }

    fn touch(&self, meta: &mut NodeMeta) {
        meta.updated_seq = self.at.seq;
        meta.updated_at = self.at.timestamp;
    }

    fn put(&mut self, node: Node) {
        self.changes.push(Change::Put(Box::new(node)));
    }

    fn link(&mut self, from: NodeId, kind: EdgeKind, to: NodeId) {
        let edge_id = Edge::id(&from, kind, &to);
        if self.view.has_edge(&edge_id) {
            return;
        }
        self.changes.push(Change::Link(Edge {
            edge_id,
            edge_type: kind,
            from,
            to,
            created_seq: self.at.seq,
            created_at: self.at.timestamp,
        }));
    }

    /// A node as this effect has left it so far: its latest pending change, else the view's.
    fn current(&self, id: &NodeId) -> Option<Node> {
        self.changes
            .iter()
            .rev()
            .find_map(|c| match c {
                Change::Put(n) if &n.id() == id => Some((**n).clone()),
                _ => None,
            })
            .or_else(|| self.view.node(id).cloned())
    }

    fn target(&self, id: &TargetId, field: &str) -> Result<TargetNode, Rejection> {
        match self.current(&NodeId::target(id)) {
            Some(Node::Target(t)) => Ok(t),
            _ => Err(Rejection::at(
                field,
                format!("target `{id}` is not registered"),
            )),
        }
    }

    fn task(&self, target: &TargetId, task: &TaskId) -> Result<TaskNode, Rejection> {
        match self.current(&NodeId::task(target, task)) {
            Some(Node::Task(t)) => Ok(t),
            _ => Err(Rejection::at(
                "task_id",
                format!("task `{task}` of target `{target}` is unknown"),
            )),
        }
    }

    fn attempt(&self, id: &AttemptId) -> Result<AttemptNode, Rejection> {
        match self.current(&NodeId::attempt(id)) {
            Some(Node::Attempt(a)) => Ok(a),
            _ => Err(Rejection::at(
                "attempt_id",
                format!("attempt `{id}` is unknown"),
            )),
        }
    }

    fn pull_request(&self, target: &TargetId, number: u64) -> Option<PullRequestNode> {
        match self.current(&NodeId::pull_request(target, number)) {
            Some(Node::PullRequest(p)) => Some(p),
            _ => None,
        }
    }

    /// An attempt that has not ended yet.
    fn live_attempt(&self, id: &AttemptId) -> Result<AttemptNode, Rejection> {
        let attempt = self.attempt(id)?;
        if !attempt.status.is_live() {
            return Err(Rejection::at(
                "attempt_id",
                format!("attempt `{id}` already ended ({})", attempt.status),
            ));
        }
        Ok(attempt)
    }

    /// Records this event on the attempt's event list and provenance.
    fn note(&self, attempt: &mut AttemptNode) {
        attempt.event_seqs.push(self.at.seq);
        self.touch(&mut attempt.meta);
    }

    /// Ends a live attempt and releases its task and target.
    fn end_attempt(
        &mut self,
        mut attempt: AttemptNode,
        status: AttemptStatus,
        failure: Option<Failure>,
    ) -> Result<(), Rejection> {
        let mut task = self.task(&attempt.target_id, &attempt.task_id)?;
        let mut target = self.target(&attempt.target_id, "target_id")?;
        attempt.status = status;
        attempt.ended_at = Some(self.at.timestamp);
        attempt.ended_seq = Some(self.at.seq);
        if task.live_attempt.as_ref() == Some(&attempt.attempt_id) {
            task.live_attempt = None;
        }
        target.live_attempts = target.live_attempts.saturating_sub(1);
        match &failure {
            None => {
                task.status = TaskStatus::Completed;
                task.status_reason = Some(format!(
                    "attempt {} delivered a pull request",
                    attempt.attempt_id
                ));
                task.succeeded_attempt = Some(attempt.attempt_id.clone());
                task.consecutive_failures = 0;
                target.consecutive_failures = 0;
            }
            Some(failure) => {
                if task.status == TaskStatus::InProgress {
                    task.status = TaskStatus::Pending;
                }
                task.last_failure = Some(failure.clone());
                task.awaiting_retry = failure.class == FailureClass::Transient;
                task.consecutive_failures += 1;
                target.consecutive_failures += 1;
            }
        }
        attempt.failure = failure;
        self.note(&mut attempt);
        self.touch(&mut task.meta);
        self.touch(&mut target.meta);
        self.put(Node::Attempt(attempt));
        self.put(Node::Task(task));
        self.put(Node::Target(target));
        Ok(())
    }

    /// Creates or refreshes the PR node of an attempt and links it.
    fn record_pr(
        &mut self,
        attempt: &AttemptNode,
        number: u64,
        url: &str,
        title: Option<&str>,
        branch: Option<&str>,
    ) -> Result<(), Rejection> {
        let mut target = self.target(&attempt.target_id, "target_id")?;
        let id = NodeId::pull_request(&attempt.target_id, number);
        let pr = match self.pull_request(&attempt.target_id, number) {
            Some(mut pr) => {
                if pr.state != PrState::Open {
                    target.open_prs += 1;
                }
                pr.state = PrState::Open;
                pr.resolved_at = None;
                pr.url = url.to_owned();
                pr.title = title.map(str::to_owned).or(pr.title);
                pr.branch = branch.map(str::to_owned).or(pr.branch);
                pr.attempt_id = Some(attempt.attempt_id.clone());
                self.touch(&mut pr.meta);
                pr
            }
            None => {
                target.open_prs += 1;
                PullRequestNode {
                    target_id: attempt.target_id.clone(),
                    number,
                    url: url.to_owned(),
                    title: title.map(str::to_owned),
                    branch: branch.map(str::to_owned),
                    state: PrState::Open,
                    attempt_id: Some(attempt.attempt_id.clone()),
                    resolved_at: None,
                    meta: self.new_meta(),
                }
            }
        };
        self.touch(&mut target.meta);
        self.put(Node::PullRequest(pr));
        self.put(Node::Target(target));
        self.link(NodeId::attempt(&attempt.attempt_id), EdgeKind::Produced, id);
        Ok(())
    }

    fn define_task(
        &mut self,
        def: &cat::TaskDefinition,
        existing: Option<TaskNode>,
    ) -> Result<(), Rejection> {
        let task_node_id = NodeId::task(&def.target_id, &def.task_id);
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
        for dep in &def.spec.dependencies {
            if self.view.task(&def.target_id, dep).is_some() {
                self.link(
                    task_node_id.clone(),
                    EdgeKind::DependsOn,
                    NodeId::task(&def.target_id, dep),
                );
            }
        }
        // Tasks defined earlier that wait on this one get their edge now.
        for other in self.view.tasks_of(&def.target_id) {
            if other.task_id != def.task_id && other.spec.dependencies.contains(&def.task_id) {
                self.link(
                    NodeId::task(&other.target_id, &other.task_id),
                    EdgeKind::DependsOn,
                    task_node_id.clone(),
                );
            }
        }
        self.put(Node::Task(task));
        Ok(())
    }

    fn transition_task(
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

fn initial_status(spec: &TaskSpec) -> TaskStatus {
    match spec.status.as_deref() {
        Some("completed") => TaskStatus::Completed,
        Some("failed") => TaskStatus::Failed,
        Some("blocked") => TaskStatus::Blocked,
        _ => TaskStatus::Pending,
    }
}

fn pr_number(n: i64) -> u64 {
    // Payload checks guarantee a positive number.
    n.unsigned_abs()
}

/// Where an event sits in the log: all the projection reads of it besides its payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub(crate) seq: u64,
    pub(crate) timestamp: crate::timestamp::Timestamp,
}

/// The changes an event at `at` with payload `body` makes to the graph seen through `view`, or
/// why it cannot be accepted.
pub(crate) fn effect(view: &View<'_>, at: At, body: &EventBody) -> Result<Vec<Change>, Rejection> {
    use EventBody as B;
    let mut fx = Effect {
        view,
        at,
        changes: Vec::new(),
    };
    match body {
        B::TargetRegistered(p) => {
            if fx.current(&NodeId::target(&p.target_id)).is_some() {
                return Err(Rejection::at(
                    "target_id",
                    format!(
                        "target `{}` is already registered; use target.updated",
                        p.target_id
                    ),
                ));
            }
            let node = TargetNode {
                target_id: p.target_id.clone(),
                name: p.name.clone(),
                repo_url: p.repo_url.clone(),
                default_branch: p.default_branch.clone(),
                test_command: p.test_command.clone(),
                circuit: Circuit::Closed,
                consecutive_failures: 0,
                open_prs: 0,
                live_attempts: 0,
                meta: fx.new_meta(),
            };
            fx.put(Node::Target(node));
        }
        B::TargetUpdated(p) => {
            let mut target = fx.target(&p.target_id, "target_id")?;
            if let Some(name) = &p.name {
                target.name = Some(name.clone());
            }
            if let Some(url) = &p.repo_url {
                target.repo_url = url.clone();
            }
            if let Some(branch) = &p.default_branch {
                target.default_branch = branch.clone();
            }
            if let Some(cmd) = &p.test_command {
                target.test_command = Some(cmd.clone());
            }
            fx.touch(&mut target.meta);
            fx.put(Node::Target(target));
        }
        B::TaskCreated(cat::TaskCreated(def)) => {
            fx.target(&def.target_id, "target_id")?;
            if view.task(&def.target_id, &def.task_id).is_some() {
                return Err(Rejection::at(
                    "task_id",
                    format!("task `{}` already exists; use task.updated", def.task_id),
                ));
            }
            fx.define_task(def, None)?;
        }
        B::TaskUpdated(cat::TaskUpdated(def)) => {
            let existing = fx.task(&def.target_id, &def.task_id)?;
            fx.define_task(def, Some(existing))?;
        }
        B::TaskCompleted(cat::TaskCompleted(t)) => {
            let status = if t.status.as_deref() == Some("failed") {
                TaskStatus::Failed
            } else {
                TaskStatus::Completed
            };
            fx.transition_task(t, status)?;
        }
        B::TaskFailed(cat::TaskFailed(t)) => fx.transition_task(t, TaskStatus::Failed)?,
        B::TaskBlocked(cat::TaskBlocked(t)) => fx.transition_task(t, TaskStatus::Blocked)?,
        B::AttemptCreated(p) => {
            let mut task = fx.task(&p.target_id, &p.task_id)?;
            let mut target = fx.target(&p.target_id, "target_id")?;
            if fx.current(&NodeId::attempt(&p.attempt_id)).is_some() {
                return Err(Rejection::at(
                    "attempt_id",
                    format!("attempt `{}` already exists", p.attempt_id),
                ));
            }
            if let Some(live) = &task.live_attempt {
                return Err(Rejection::at(
                    "task_id",
                    format!("task `{}` already has a live attempt `{live}`", p.task_id),
                ));
            }
            if matches!(
                task.status,
                TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Blocked
            ) {
                return Err(Rejection::at(
                    "task_id",
                    format!("task `{}` is {}", p.task_id, task.status),
                ));
            }
            if p.attempt_number != task.attempts + 1 {
                return Err(Rejection::at(
                    "attempt_number",
                    format!(
                        "must be {} (task `{}` has had {} attempts)",
                        task.attempts + 1,
                        p.task_id,
                        task.attempts
                    ),
                ));
            }
            task.attempts += 1;
            task.live_attempt = Some(p.attempt_id.clone());
            task.last_attempt = Some(p.attempt_id.clone());
            task.status = TaskStatus::InProgress;
            task.not_before = None;
            task.awaiting_retry = false;
            fx.touch(&mut task.meta);
            target.live_attempts += 1;
            fx.touch(&mut target.meta);
            let attempt = AttemptNode {
                attempt_id: p.attempt_id.clone(),
                task_id: p.task_id.clone(),
                target_id: p.target_id.clone(),
                attempt_number: p.attempt_number,
                status: AttemptStatus::Created,
                executor: p.executor.clone(),
                deadline_seconds: p.deadline_seconds,
                job_name: None,
                worker: None,
                started_at: None,
                last_heartbeat_at: None,
                ended_at: None,
                ended_seq: None,
                failure: None,
                branch: None,
                commit_sha: None,
                pr_number: None,
                pr_url: None,
                invalidated_reason: None,
                model_calls: 0,
                test_runs: 0,
                tokens_in: 0,
                tokens_out: 0,
                event_seqs: vec![at.seq],
                meta: fx.new_meta(),
            };
            fx.link(
                NodeId::attempt(&p.attempt_id),
                EdgeKind::AttemptOf,
                NodeId::task(&p.target_id, &p.task_id),
            );
            fx.put(Node::Attempt(attempt));
            fx.put(Node::Task(task));
            fx.put(Node::Target(target));
        }
        B::AttemptStarted(p) => {
            let mut attempt = fx.live_attempt(&p.attempt_id)?;
            if attempt.status == AttemptStatus::Running {
                return Err(Rejection::at(
                    "attempt_id",
                    format!("attempt `{}` already started", p.attempt_id),
                ));
            }
            check_matches(&attempt, p.task_id.as_ref(), p.target_id.as_ref())?;
            attempt.status = AttemptStatus::Running;
            attempt.started_at = Some(at.timestamp);
            attempt.worker = p.worker.clone().or(attempt.worker);
            fx.note(&mut attempt);
            fx.put(Node::Attempt(attempt));
        }
        B::AttemptHeartbeat(p) => {
            let mut attempt = fx.live_attempt(&p.attempt_id)?;
            attempt.last_heartbeat_at = Some(at.timestamp);
            fx.note(&mut attempt);
            fx.put(Node::Attempt(attempt));
        }
        B::AttemptSucceeded(p) => {
            let mut attempt = fx.live_attempt(&p.attempt_id)?;
            let number = pr_number(p.pr_number);
            attempt.branch = Some(p.branch.clone());
            attempt.commit_sha = Some(p.commit_sha.clone());
            attempt.pr_number = Some(number);
            attempt.pr_url = Some(p.pr_url.clone());
            if fx
                .pull_request(&attempt.target_id, number)
                .is_none_or(|pr| pr.attempt_id.as_ref() != Some(&attempt.attempt_id))
            {
                fx.record_pr(&attempt, number, &p.pr_url, None, Some(&p.branch))?;
            }
            fx.end_attempt(attempt, AttemptStatus::Succeeded, None)?;
        }
        B::AttemptFailed(p) => {
            let attempt = fx.live_attempt(&p.attempt_id)?;
            let failure = Failure {
                kind: p.failure_kind,
                class: p.class(),
                summary: p.error_summary.clone(),
            };
            fx.end_attempt(attempt, AttemptStatus::Failed, Some(failure))?;
        }
        B::AttemptTimedOut(p) => {
            let attempt = fx.live_attempt(&p.attempt_id)?;
            let summary = p.summary.clone().unwrap_or_else(|| {
                match p.deadline_seconds.or(attempt.deadline_seconds) {
                    Some(s) => format!("attempt exceeded its deadline of {s} s"),
                    None => "attempt exceeded its deadline".to_owned(),
                }
            });
            let failure = Failure {
                kind: FailureKind::Timeout,
                class: FailureClass::Transient,
                summary,
            };
            fx.end_attempt(attempt, AttemptStatus::TimedOut, Some(failure))?;
        }
        B::AttemptInvalidated(p) => {
            let mut attempt = fx.attempt(&p.attempt_id)?;
            if attempt.status == AttemptStatus::Invalidated {
                return Err(Rejection::at(
                    "attempt_id",
                    format!("attempt `{}` is already invalidated", p.attempt_id),
                ));
            }
            let mut task = fx.task(&attempt.target_id, &attempt.task_id)?;
            let mut target = fx.target(&attempt.target_id, "target_id")?;
            if attempt.status.is_live() {
                target.live_attempts = target.live_attempts.saturating_sub(1);
                attempt.ended_at = Some(at.timestamp);
                attempt.ended_seq = Some(at.seq);
            }
            if task.live_attempt.as_ref() == Some(&attempt.attempt_id) {
                task.live_attempt = None;
                task.status = TaskStatus::Pending;
                task.awaiting_retry = false;
            }
            if task.succeeded_attempt.as_ref() == Some(&attempt.attempt_id) {
                // The delivered change is void: the task must be done again.
                task.succeeded_attempt = None;
                if task.status == TaskStatus::Completed {
                    task.status = TaskStatus::Pending;
                }
            }
            task.status_reason = Some(format!(
                "attempt {} invalidated: {}",
                attempt.attempt_id, p.reason
            ));
            attempt.status = AttemptStatus::Invalidated;
            attempt.invalidated_reason = Some(p.reason.clone());
            fx.note(&mut attempt);
            fx.touch(&mut task.meta);
            fx.touch(&mut target.meta);
            fx.put(Node::Attempt(attempt));
            fx.put(Node::Task(task));
            fx.put(Node::Target(target));
        }
        B::RetryScheduled(p) => {
            let mut task = fx.task(&p.target_id, &p.task_id)?;
            task.not_before = Some(p.not_before);
            task.awaiting_retry = false;
            fx.touch(&mut task.meta);
            fx.put(Node::Task(task));
        }
        B::JobSubmitted(p) => {
            let mut attempt = fx.live_attempt(&p.attempt_id)?;
            attempt.executor = Some(p.executor.clone());
            attempt.job_name = p.job_name.clone();
            fx.note(&mut attempt);
            fx.put(Node::Attempt(attempt));
        }
        B::ArtifactCreated(p) => {
            let id = NodeId::artifact(&p.sha256);
            let node = match view.node(&id) {
                Some(Node::Artifact(existing)) => existing.clone(),
                _ => ArtifactNode {
                    sha256: p.sha256,
                    kind: p.kind.clone(),
                    size: p.size,
                    name: p.name.clone(),
                    uri: p.uri.clone(),
                    meta: fx.new_meta(),
                },
            };
            if let Some(attempt_id) = &p.attempt_id {
                // Executors may attach artifacts (pod logs) after the attempt ended.
                let mut attempt = fx.attempt(attempt_id)?;
                fx.note(&mut attempt);
                fx.put(Node::Attempt(attempt));
                fx.link(NodeId::attempt(attempt_id), EdgeKind::Produced, id);
            }
            fx.put(Node::Artifact(node));
        }
        B::ModelCallCompleted(p) => {
            let mut attempt = fx.live_attempt(&p.attempt_id)?;
            let index = attempt.model_calls;
            attempt.model_calls += 1;
            attempt.tokens_in = attempt.tokens_in.saturating_add(p.tokens_in);
            attempt.tokens_out = attempt.tokens_out.saturating_add(p.tokens_out);
            fx.note(&mut attempt);
            let call = ModelCallNode {
                attempt_id: p.attempt_id.clone(),
                index,
                model: p.model.clone(),
                provider: p.provider.clone(),
                tokens_in: p.tokens_in,
                tokens_out: p.tokens_out,
                prompt_sha256: p.prompt_sha256,
                response_sha256: p.response_sha256,
                round: p.round,
                duration_ms: p.duration_ms,
                meta: fx.new_meta(),
            };
            fx.link(
                NodeId::attempt(&p.attempt_id),
                EdgeKind::Produced,
                NodeId::model_call(&p.attempt_id, index),
            );
            fx.put(Node::Attempt(attempt));
            fx.put(Node::ModelCall(call));
        }
        B::TestsPassed(cat::TestsPassed(r)) => record_tests(&mut fx, r, true)?,
        B::TestsFailed(cat::TestsFailed(r)) => record_tests(&mut fx, r, false)?,
        B::CommitCreated(p) => {
            let mut attempt = fx.live_attempt(&p.attempt_id)?;
            attempt.commit_sha = Some(p.commit_sha.clone());
            attempt.branch = Some(p.branch.clone());
            fx.note(&mut attempt);
            let commit = CommitNode {
                sha: p.commit_sha.clone(),
                branch: p.branch.clone(),
                message: p.message.clone(),
                attempt_id: p.attempt_id.clone(),
                meta: fx.new_meta(),
            };
            fx.link(
                NodeId::attempt(&p.attempt_id),
                EdgeKind::Produced,
                NodeId::commit(&p.commit_sha),
            );
            fx.put(Node::Attempt(attempt));
            fx.put(Node::Commit(commit));
        }
        B::PrCreated(p) => {
            let mut attempt = fx.live_attempt(&p.attempt_id)?;
            let number = pr_number(p.pr_number);
            attempt.pr_number = Some(number);
            attempt.pr_url = Some(p.pr_url.clone());
            if let Some(branch) = &p.branch {
                attempt.branch = Some(branch.clone());
            }
            fx.note(&mut attempt);
            fx.record_pr(
                &attempt,
                number,
                &p.pr_url,
                p.title.as_deref(),
                p.branch.as_deref(),
            )?;
            fx.put(Node::Attempt(attempt));
        }
        B::PrMerged(cat::PrMerged(c)) => resolve_pr(&mut fx, c, PrState::Merged)?,
        B::PrClosed(cat::PrClosed(c)) => resolve_pr(&mut fx, c, PrState::Closed)?,
        B::CircuitOpened(p) => {
            let mut target = fx.target(&p.target_id, "target_id")?;
            target.circuit = Circuit::Open {
                opened_at: at.timestamp,
                until: p.open_until,
                failures: p.consecutive_failures,
            };
            fx.touch(&mut target.meta);
            fx.put(Node::Target(target));
        }
        B::CircuitClosed(p) => {
            let mut target = fx.target(&p.target_id, "target_id")?;
            if target.circuit == Circuit::Closed {
                return Err(Rejection::at(
                    "target_id",
                    format!("the circuit of target `{}` is not open", p.target_id),
                ));
            }
            target.circuit = Circuit::Closed;
            target.consecutive_failures = 0;
            fx.touch(&mut target.meta);
            fx.put(Node::Target(target));
        }
        B::Unknown => {}
    }
    Ok(fx.changes)
}

fn check_matches(
    attempt: &AttemptNode,
    task: Option<&TaskId>,
    target: Option<&TargetId>,
) -> Result<(), Rejection> {
    if let Some(task) = task
        && task != &attempt.task_id
    {
        return Err(Rejection::at(
            "task_id",
            format!(
                "attempt `{}` belongs to task `{}`, not `{task}`",
                attempt.attempt_id, attempt.task_id
            ),
        ));
    }
    if let Some(target) = target
        && target != &attempt.target_id
    {
        return Err(Rejection::at(
            "target_id",
            format!(
                "attempt `{}` belongs to target `{}`, not `{target}`",
                attempt.attempt_id, attempt.target_id
            ),
        ));
    }
    Ok(())
}

fn record_tests(
    fx: &mut Effect<'_, '_>,
    r: &cat::TestRunReport,
    passed: bool,
) -> Result<(), Rejection> {
    let mut attempt = fx.live_attempt(&r.attempt_id)?;
    let index = attempt.test_runs;
    attempt.test_runs += 1;
    fx.note(&mut attempt);
    let run = TestRunNode {
        attempt_id: r.attempt_id.clone(),
        index,
        round: r.round,
        passed,
        command: r.command.clone(),
        exit_code: r.exit_code,
        output_sha256: r.output_sha256,
        duration_ms: r.duration_ms,
        meta: fx.new_meta(),
    };
    fx.link(
        NodeId::attempt(&r.attempt_id),
        EdgeKind::Produced,
        NodeId::test_run(&r.attempt_id, index),
    );
    fx.put(Node::Attempt(attempt));
    fx.put(Node::TestRun(run));
    Ok(())
}

fn resolve_pr(
    fx: &mut Effect<'_, '_>,
    c: &cat::PrStateChange,
    state: PrState,
) -> Result<(), Rejection> {
    let number = pr_number(c.pr_number);
    let mut pr = fx.pull_request(&c.target_id, number).ok_or_else(|| {
        Rejection::at(
            "pr_number",
            format!(
                "pull request #{number} of target `{}` is unknown",
                c.target_id
            ),
        )
    })?;
    if pr.state != PrState::Open {
        let state = if pr.state == PrState::Merged {
            "merged"
        } else {
            "closed"
        };
        return Err(Rejection::at(
            "pr_number",
            format!("pull request #{number} is already {state}"),
        ));
    }
    let mut target = fx.target(&c.target_id, "target_id")?;
    target.open_prs = target.open_prs.saturating_sub(1);
    pr.state = state;
    pr.resolved_at = Some(fx.at.timestamp);
    fx.touch(&mut pr.meta);
    fx.touch(&mut target.meta);
    fx.put(Node::PullRequest(pr));
    fx.put(Node::Target(target));
    Ok(())
}
