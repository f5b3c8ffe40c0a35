//! The projection's effect per event type.

use serde_json::json;

use super::*;
use crate::{
    catalogue::{EventBody, StreamId},
    event::{Event, NewEvent},
    id::{AttemptId, EventId, TargetId, TaskId},
    model::{AttemptStatus, FailureKind, PrState, Priority, TaskStatus},
    testkit::{Scenario, lifecycle, seal_all},
    timestamp::Timestamp,
};

fn fold(events: Vec<NewEvent>) -> Graph {
    let mut g = Graph::new();
    for e in seal_all(events) {
        g.apply(&e);
    }
    g
}

fn extra(events: &mut Vec<NewEvent>, ty: &str, payload: serde_json::Value) {
    let n = events.len();
    events.push(NewEvent {
        event_id: EventId::new(format!("extra-{n}")).unwrap(),
        event_type: ty.into(),
        timestamp: Timestamp::parse("2026-03-01T00:00:00Z").unwrap(),
        actor_id: Some("operator".into()),
        payload,
        principal: None,
    });
}

fn demo() -> TargetId {
    TargetId::new("demo").unwrap()
}

#[test]
fn lifecycle_projects_without_anomalies() {
    let g = fold(lifecycle("t", "demo", 6));
    assert!(g.anomalies().is_empty(), "{:?}", g.anomalies());
    let s = g.summary();
    assert_eq!(s.nodes_by_type["Target"], 1);
    assert_eq!(s.nodes_by_type["Task"], 6);
    assert_eq!(s.nodes_by_type["Attempt"], 12);
    assert_eq!(s.attempts_by_status["succeeded"], 6);
    assert_eq!(s.attempts_by_status["failed"], 6);
    assert_eq!(s.tasks_by_status["completed"], 6);
    assert_eq!(s.open_prs, 3, "every other PR was merged");
    assert_eq!(s.edges_by_type["DEPENDS_ON"], 5);
    let target = g.target(&demo()).unwrap();
    assert_eq!(
        (
            target.open_prs,
            target.live_attempts,
            target.consecutive_failures
        ),
        (3, 0, 0)
    );
}

#[test]
fn attempt_lifecycle_updates_task_target_and_pr() {
    let mut s = Scenario::new("a", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::High)
        .start_attempt("guide", "att-1", 1);
    let g = fold(s.build());
    let task = g.task(&demo(), &TaskId::new("guide").unwrap()).unwrap();
    assert_eq!(task.status, TaskStatus::InProgress);
    assert_eq!(task.live_attempt.as_ref().unwrap().as_str(), "att-1");
    let attempt = g.attempt(&AttemptId::new("att-1").unwrap()).unwrap();
    assert_eq!(attempt.status, AttemptStatus::Running);
    assert_eq!(attempt.job_name.as_deref(), Some("leviathan-att-1"));
    assert_eq!(attempt.event_seqs.len(), 3);

    s.fail_attempt("guide", "att-1", 2);
    let g = fold(s.build());
    let task = g.task(&demo(), &TaskId::new("guide").unwrap()).unwrap();
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(
        task.last_failure.as_ref().unwrap().kind,
        FailureKind::TestsFailed
    );
    assert!(task.not_before.is_some());
    assert_eq!(g.target(&demo()).unwrap().consecutive_failures, 1);
    assert_eq!(
        g.failures_page(&FailureQuery {
            limit: 10,
            ..FailureQuery::default()
        })
        .0
        .len(),
        1
    );

    s.start_attempt("guide", "att-2", 2)
        .succeed_attempt("guide", "att-2", 7);
    let g = fold(s.build());
    let attempt = g.attempt(&AttemptId::new("att-2").unwrap()).unwrap();
    assert_eq!(attempt.status, AttemptStatus::Succeeded);
    assert_eq!(
        (attempt.model_calls, attempt.test_runs, attempt.tokens_out),
        (2, 2, 1800)
    );
    assert_eq!(attempt.pr_number, Some(7));
    let pr = g.pull_request(&demo(), 7).unwrap();
    assert_eq!(pr.state, PrState::Open);
    assert_eq!(pr.attempt_id.as_ref(), Some(&attempt.attempt_id));
    assert_eq!(g.target(&demo()).unwrap().consecutive_failures, 0);
    let produced: Vec<_> = g
        .produced_by(&attempt.attempt_id, NodeKind::Artifact)
        .collect();
    assert_eq!(produced.len(), 4);
    assert_eq!(
        g.produced_by(&attempt.attempt_id, NodeKind::PullRequest)
            .count(),
        1
    );
}

#[test]
fn a_cancellation_does_not_count_toward_the_circuit_breaker() {
    let mut s = Scenario::new("c", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::High)
        .start_attempt("guide", "att-1", 1);
    let mut events = s.build();
    extra(
        &mut events,
        "attempt.failed",
        json!({"attempt_id": "att-1", "failure_kind": "cancelled", "error_summary": "cancelled by an operator"}),
    );
    let g = fold(events);
    assert!(g.anomalies().is_empty(), "{:?}", g.anomalies());
    let attempt = g.attempt(&AttemptId::new("att-1").unwrap()).unwrap();
    assert_eq!(attempt.status, AttemptStatus::Failed);
    assert_eq!(g.target(&demo()).unwrap().consecutive_failures, 0);
    let task = g.task(&demo(), &TaskId::new("guide").unwrap()).unwrap();
    assert_eq!(
        task.consecutive_failures, 1,
        "the task's own count still blocks it after a permanent failure"
    );
    assert_eq!(
        task.last_failure.as_ref().unwrap().kind,
        FailureKind::Cancelled
    );
}

#[test]
fn stage_refuses_and_explains() {
    let mut s = Scenario::new("r", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::Medium);
    let g = fold(s.build());
    let check = |ty: &str, payload: serde_json::Value| {
        let event = NewEvent {
            event_id: EventId::new("probe").unwrap(),
            event_type: ty.into(),
            timestamp: Timestamp::now(),
            actor_id: None,
            payload,
            principal: None,
        };
        let body = EventBody::parse(ty, &event.payload).unwrap();
        g.stage().accept(&event, &body)
    };
    let r = check("attempt.started", json!({"attempt_id": "ghost"})).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("attempt_id"));
    let r = check(
        "task.created",
        json!({"target_id": "demo", "task_id": "guide"}),
    )
    .unwrap_err();
    assert!(r.reason.contains("already exists"), "{r}");
    let r = check(
        "task.created",
        json!({"target_id": "elsewhere", "task_id": "x"}),
    )
    .unwrap_err();
    assert!(r.reason.contains("not registered"), "{r}");
    let r = check(
        "attempt.created",
        json!({"attempt_id": "a", "task_id": "guide", "target_id": "demo", "attempt_number": 2}),
    )
    .unwrap_err();
    assert_eq!(r.field.as_deref(), Some("attempt_number"));
    let r = check("pr.merged", json!({"target_id": "demo", "pr_number": 3})).unwrap_err();
    assert!(r.reason.contains("unknown"), "{r}");
    let r = check("circuit.closed", json!({"target_id": "demo"})).unwrap_err();
    assert!(r.reason.contains("not open"), "{r}");
    assert!(
        check(
            "attempt.created",
            json!({"attempt_id": "a", "task_id": "guide", "target_id": "demo", "attempt_number": 1})
        )
        .is_ok()
    );
}

#[test]
fn a_batch_sees_its_own_earlier_events() {
    let mut s = Scenario::new("b", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::Medium);
    let g = fold(s.build());
    s.start_attempt("guide", "att-1", 1);
    let batch = &s.build()[2..];
    let mut stage = g.stage();
    for e in batch {
        let body = EventBody::parse(&e.event_type, &e.payload).unwrap();
        stage.accept(e, &body).unwrap();
    }
    let expectations = stage.expectations();
    assert!(expectations.contains(&(StreamId::from_raw("task:demo/guide"), 1)));
    assert!(expectations.contains(&(StreamId::from_raw("attempt:att-1"), 0)));
    // The base graph is untouched.
    assert!(g.attempt(&AttemptId::new("att-1").unwrap()).is_none());
}

#[test]
fn one_live_attempt_per_task_and_no_second_terminal_event() {
    let mut s = Scenario::new("l", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::Medium)
        .start_attempt("guide", "att-1", 1);
    let mut events = s.build();
    extra(
        &mut events,
        "attempt.created",
        json!({"attempt_id": "att-2", "task_id": "guide", "target_id": "demo", "attempt_number": 2}),
    );
    extra(
        &mut events,
        "attempt.failed",
        json!({"attempt_id": "att-1", "failure_kind": "push"}),
    );
    extra(
        &mut events,
        "attempt.failed",
        json!({"attempt_id": "att-1", "failure_kind": "push"}),
    );
    let g = fold(events);
    assert_eq!(g.anomalies().len(), 2, "{:?}", g.anomalies());
    assert!(g.anomalies()[0].reason.contains("live attempt"));
    assert!(g.anomalies()[1].reason.contains("already ended"));
}

#[test]
fn invalidation_reopens_the_task() {
    let mut s = Scenario::new("i", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::Medium)
        .start_attempt("guide", "att-1", 1)
        .succeed_attempt("guide", "att-1", 4);
    let mut events = s.build();
    extra(
        &mut events,
        "attempt.invalidated",
        json!({"attempt_id": "att-1", "reason": "wrong file"}),
    );
    let g = fold(events);
    let attempt = g.attempt(&AttemptId::new("att-1").unwrap()).unwrap();
    assert_eq!(attempt.status, AttemptStatus::Invalidated);
    assert_eq!(attempt.invalidated_reason.as_deref(), Some("wrong file"));
    let task = g.task(&demo(), &TaskId::new("guide").unwrap()).unwrap();
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.succeeded_attempt, None);
}

#[test]
fn dependency_edges_arrive_in_any_order() {
    let mut s = Scenario::new("d", "demo");
    s.register_target()
        .create_task("b", &["a"], Priority::Medium)
        .create_task("a", &[], Priority::Medium);
    let g = fold(s.build());
    let edge = Edge::id(
        &NodeId::task(&demo(), &TaskId::new("b").unwrap()),
        EdgeKind::DependsOn,
        &NodeId::task(&demo(), &TaskId::new("a").unwrap()),
    );
    assert!(
        g.edges().any(|e| e.edge_id == edge),
        "late dependency linked"
    );
}

#[test]
fn a_dependency_dropped_before_it_is_defined_gets_no_edge() {
    let mut s = Scenario::new("w", "demo");
    s.register_target()
        .create_task("b", &["a"], Priority::Medium);
    let mut events = s.build();
    extra(
        &mut events,
        "task.updated",
        json!({"target_id": "demo", "task_id": "b", "title": "B", "dependencies": []}),
    );
    extra(
        &mut events,
        "task.created",
        json!({"target_id": "demo", "task_id": "a", "title": "A"}),
    );
    let g = fold(events);
    assert_eq!(g.summary().edges_by_type.get("DEPENDS_ON"), None);
    assert_eq!(g, Graph::from_snapshot(g.snapshot()));
}

/// Defining a task reads what its definition names, not the other tasks of its target: the
/// thousands defined before cost nothing.
#[test]
fn defining_one_more_task_reads_a_bounded_number_of_entries() {
    let mut s = Scenario::new("n", "demo");
    s.register_target();
    for i in 0..3000 {
        let dep = format!("later-{}", i % 7);
        s.create_task(&format!("task-{i}"), &[&dep], Priority::Medium);
    }
    let mut g = fold(s.build());
    g.take_delta();
    let reads = |payload: serde_json::Value| {
        let event = NewEvent {
            event_id: EventId::new("probe").unwrap(),
            event_type: "task.created".into(),
            timestamp: Timestamp::now(),
            actor_id: None,
            payload,
            principal: None,
        };
        let body = EventBody::parse("task.created", &event.payload).unwrap();
        let mut stage = g.stage();
        stage.accept(&event, &body).unwrap();
        // What folding it gives the store to write: the new task and its edges, nothing else.
        let mut folded = g.clone();
        folded.apply(&Event::seal(event, g.checkpoint_seq() + 1, None));
        let delta = folded.take_delta();
        (stage.reads, delta.nodes.len() + delta.edges.len())
    };
    let (independent, written) = reads(
        json!({"target_id": "demo", "task_id": "new", "title": "New",
        "dependencies": ["task-1", "task-2", "undefined"]}),
    );
    assert!(independent <= 12, "{independent} entries read");
    assert_eq!(
        written, 4,
        "the task, its target edge and two dependency edges"
    );
    // A task that 3000/7 others wait on links each of them, and reads no other task.
    let (awaited, written) =
        reads(json!({"target_id": "demo", "task_id": "later-3", "title": "Later"}));
    assert!(awaited <= 3000 / 7 + 12, "{awaited} entries read");
    assert!(
        awaited > 3000 / 7,
        "each waiting task gets its edge: {awaited}"
    );
    let waiters = (0..3000).filter(|i| i % 7 == 3).count();
    assert_eq!(
        written,
        2 + waiters,
        "the task, its target edge and each waiter's edge"
    );
}

#[test]
fn task_updates_unblock_and_backlog_completion() {
    let mut s = Scenario::new("u", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::Medium);
    let mut events = s.build();
    extra(
        &mut events,
        "task.blocked",
        json!({"target_id": "demo", "task_id": "guide", "reason": "path violation"}),
    );
    let blocked = fold(events.clone());
    assert_eq!(
        blocked
            .task(&demo(), &TaskId::new("guide").unwrap())
            .unwrap()
            .status,
        TaskStatus::Blocked
    );
    extra(
        &mut events,
        "task.updated",
        json!({"target_id": "demo", "task_id": "guide", "title": "New title", "ready": true}),
    );
    let g = fold(events.clone());
    let task = g.task(&demo(), &TaskId::new("guide").unwrap()).unwrap();
    assert_eq!(
        (task.status, task.spec.title.as_str()),
        (TaskStatus::Pending, "New title")
    );
    extra(
        &mut events,
        "task.updated",
        json!({"target_id": "demo", "task_id": "guide", "title": "New title", "status": "completed"}),
    );
    assert_eq!(
        fold(events)
            .task(&demo(), &TaskId::new("guide").unwrap())
            .unwrap()
            .status,
        TaskStatus::Completed
    );
}

#[test]
fn circuit_and_pr_resolution() {
    let mut s = Scenario::new("c", "demo");
    s.register_target()
        .create_task("guide", &[], Priority::Medium)
        .start_attempt("guide", "att-1", 1)
        .succeed_attempt("guide", "att-1", 9);
    let mut events = s.build();
    extra(
        &mut events,
        "circuit.opened",
        json!({"target_id": "demo", "consecutive_failures": 3, "open_until": "2026-03-01T01:00:00Z"}),
    );
    let g = fold(events.clone());
    assert!(matches!(
        g.target(&demo()).unwrap().circuit,
        Circuit::Open { failures: 3, .. }
    ));
    extra(
        &mut events,
        "pr.closed",
        json!({"target_id": "demo", "pr_number": 9}),
    );
    extra(
        &mut events,
        "pr.merged",
        json!({"target_id": "demo", "pr_number": 9}),
    );
    let g = fold(events);
    assert_eq!(g.pull_request(&demo(), 9).unwrap().state, PrState::Closed);
    assert_eq!(g.target(&demo()).unwrap().open_prs, 0);
    assert_eq!(g.anomalies().len(), 1, "a PR is resolved once");
}

#[test]
fn unknown_events_change_nothing_but_the_checkpoint() {
    let mut s = Scenario::new("x", "demo");
    s.register_target();
    let before = fold(s.build());
    s.unknown_event();
    let after = fold(s.build());
    assert_eq!(before.nodes().count(), after.nodes().count());
    assert_eq!(after.checkpoint_seq(), 2);
    assert!(after.anomalies().is_empty());
}

#[test]
fn deltas_and_snapshots_round_trip() {
    let events = seal_all(lifecycle("s", "demo", 4));
    let mut g = Graph::new();
    let mut stored = StoredGraph::default();
    for chunk in events.chunks(13) {
        for e in chunk {
            g.apply(e);
        }
        // Merge the delta the way every store does, then load it back.
        stored.merge(g.take_delta());
        stored = {
            let mut reloaded = StoredGraph::default();
            reloaded.merge(Graph::from_snapshot(stored.into_snapshot()).snapshot_delta());
            reloaded
        };
    }
    assert_eq!(Graph::from_snapshot(stored.into_snapshot()), g);
    assert!(!g.has_pending_changes());
}

#[test]
fn attempt_pages_and_failures() {
    let g = fold(lifecycle("p", "demo", 5));
    let (page, next) = g.attempts_page(&AttemptQuery {
        limit: 4,
        ..AttemptQuery::default()
    });
    assert_eq!(page.len(), 4);
    assert!(
        page.windows(2)
            .all(|w| w[0].meta.created_seq > w[1].meta.created_seq),
        "newest first"
    );
    let (rest, end) = g.attempts_page(&AttemptQuery {
        limit: 100,
        cursor: next,
        ..AttemptQuery::default()
    });
    assert_eq!(rest.len(), 6);
    assert_eq!(end, None);
    let (failed, _) = g.attempts_page(&AttemptQuery {
        limit: 100,
        status: Some(AttemptStatus::Failed),
        ..AttemptQuery::default()
    });
    assert_eq!(failed.len(), 5);
    let failures = |target: Option<TargetId>, limit, cursor| {
        g.failures_page(&FailureQuery {
            target,
            limit,
            cursor,
        })
    };
    let (first, next) = failures(Some(demo()), 3, None);
    assert_eq!(first.len(), 3);
    let (rest, end) = failures(Some(demo()), 3, next);
    assert_eq!(rest.len(), 2);
    assert_eq!(end, None, "the last page has no cursor");
    let ended =
        |page: &[&AttemptNode]| page.iter().map(|a| a.ended_at.unwrap()).collect::<Vec<_>>();
    let all = [ended(&first), ended(&rest)].concat();
    assert!(
        all.windows(2).all(|w| w[0] >= w[1]),
        "most recently ended first"
    );
    let ids: std::collections::BTreeSet<_> =
        first.iter().chain(&rest).map(|a| &a.attempt_id).collect();
    assert_eq!(ids.len(), 5, "no attempt on two pages");
    let (exact, none) = failures(None, 5, None);
    assert_eq!((exact.len(), none), (5, None));
    assert!(
        failures(Some(TargetId::new("other").unwrap()), 5, None)
            .0
            .is_empty()
    );
}
