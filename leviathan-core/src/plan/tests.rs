//! One test per guardrail.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::{
    event::NewEvent,
    id::EventId,
    model::Priority,
    testkit::{Scenario, seal_all},
};

const T0: &str = "2026-01-28T12:00:00Z";

fn at(offset_secs: u64) -> Timestamp {
    Timestamp::parse(T0)
        .unwrap()
        .saturating_add(Duration::from_secs(offset_secs))
}

fn demo() -> TargetId {
    TargetId::new("demo").unwrap()
}

fn policy(edit: impl FnOnce(&mut Policy)) -> SchedulingPolicy {
    let mut p = Policy {
        autonomy_enabled: true,
        allowed_path_prefixes: vec!["docs/".into()],
        max_open_prs: 10,
        max_running_attempts: 5,
        ..Policy::default()
    };
    edit(&mut p);
    SchedulingPolicy {
        targets: [(demo(), p)].into(),
        max_running_global: 10,
    }
}

/// Folds a scenario plus extra raw events (type, payload).
fn graph(s: &Scenario, extra: &[(&str, Value)]) -> Graph {
    let mut events = s.build();
    for (i, (ty, payload)) in extra.iter().enumerate() {
        events.push(NewEvent {
            event_id: EventId::new(format!("x-{i}")).unwrap(),
            event_type: (*ty).into(),
            timestamp: at(1),
            actor_id: None,
            payload: payload.clone(),
            principal: None,
        });
    }
    let mut g = Graph::new();
    for e in seal_all(events) {
        g.apply(&e);
    }
    assert!(g.anomalies().is_empty(), "{:?}", g.anomalies());
    g
}

fn base() -> Scenario {
    let mut s = Scenario::new("p", "demo");
    s.register_target();
    s
}

fn dispatched(plan: &Plan) -> Vec<&str> {
    plan.dispatch.iter().map(|d| d.task_id.as_str()).collect()
}

fn reason<'a>(plan: &'a Plan, task: &str) -> &'a SkipReason {
    &plan
        .skipped
        .iter()
        .find(|s| s.task_id == task)
        .unwrap_or_else(|| panic!("{task} not skipped: {plan:?}"))
        .reason
}

#[test]
fn priority_then_backlog_order_and_dependencies() {
    let mut s = base();
    s.create_task("low", &[], Priority::Low)
        .create_task("first-high", &[], Priority::High)
        .create_task("second-high", &[], Priority::High)
        .create_task("child", &["first-high"], Priority::High);
    let plan = plan(&graph(&s, &[]), &policy(|_| {}), &PlanContext::at(at(0)));
    assert_eq!(dispatched(&plan), ["first-high", "second-high", "low"]);
    assert_eq!(
        reason(&plan, "child"),
        &SkipReason::Dependencies {
            waiting_on: vec![TaskId::new("first-high").unwrap()]
        }
    );
    assert_eq!(plan.dispatch[0].attempt_number, 1);
}

#[test]
fn completed_dependency_releases_the_child() {
    let mut s = base();
    s.create_task("parent", &[], Priority::High)
        .create_task("child", &["parent"], Priority::High);
    s.start_attempt("parent", "a1", 1)
        .succeed_attempt("parent", "a1", 1);
    let plan = plan(&graph(&s, &[]), &policy(|_| {}), &PlanContext::at(at(0)));
    assert_eq!(dispatched(&plan), ["child"]);
    assert_eq!(
        reason(&plan, "parent"),
        &SkipReason::Status {
            status: "completed".into()
        }
    );
}

#[test]
fn not_ready_and_backlog_status_and_scope() {
    let mut s = base();
    s.create_task("ok", &[], Priority::Medium);
    let g = graph(
        &s,
        &[
            (
                "task.created",
                json!({"target_id": "demo", "task_id": "draft", "ready": false, "allowed_paths": ["docs/x.md"]}),
            ),
            (
                "task.created",
                json!({"target_id": "demo", "task_id": "done", "ready": true, "status": "completed", "allowed_paths": ["docs/y.md"]}),
            ),
            (
                "task.created",
                json!({"target_id": "demo", "task_id": "review", "ready": true, "status": "pr_opened", "allowed_paths": ["docs/z.md"]}),
            ),
            (
                "task.created",
                json!({"target_id": "demo", "task_id": "src", "ready": true, "allowed_paths": ["docs/a.md", "src/lib.rs"]}),
            ),
        ],
    );
    let plan = plan(&g, &policy(|_| {}), &PlanContext::at(at(0)));
    assert_eq!(dispatched(&plan), ["ok"]);
    assert_eq!(reason(&plan, "draft"), &SkipReason::NotReady);
    assert_eq!(
        reason(&plan, "done"),
        &SkipReason::Status {
            status: "completed".into()
        }
    );
    assert_eq!(
        reason(&plan, "review"),
        &SkipReason::Status {
            status: "pr_opened".into()
        }
    );
    assert_eq!(
        reason(&plan, "src"),
        &SkipReason::Scope {
            outside: vec!["src/lib.rs".into()]
        }
    );
}

#[test]
fn autonomy_fails_closed() {
    let mut s = base();
    s.create_task("ok", &[], Priority::Medium);
    let g = graph(&s, &[]);
    let off = plan(
        &g,
        &policy(|p| p.autonomy_enabled = false),
        &PlanContext::at(at(0)),
    );
    assert!(off.dispatch.is_empty());
    assert_eq!(reason(&off, "ok"), &SkipReason::AutonomyDisabled);
    let none = plan(
        &g,
        &SchedulingPolicy {
            targets: BTreeMap::new(),
            max_running_global: 10,
        },
        &PlanContext::at(at(0)),
    );
    assert!(
        none.dispatch.is_empty(),
        "a target without policy is never dispatched"
    );
}

#[test]
fn max_running_per_target_and_global() {
    let mut s = base();
    for t in ["a", "b", "c", "d"] {
        s.create_task(t, &[], Priority::Medium);
    }
    s.start_attempt("a", "att-a", 1);
    let g = graph(&s, &[]);
    let p = plan(
        &g,
        &policy(|p| p.max_running_attempts = 2),
        &PlanContext::at(at(0)),
    );
    assert_eq!(dispatched(&p), ["b"]);
    assert_eq!(
        reason(&p, "c"),
        &SkipReason::MaxRunning {
            scope: "target",
            running: 2,
            max: 2
        }
    );
    assert_eq!(
        reason(&p, "a"),
        &SkipReason::InFlight {
            attempt_id: AttemptId::new("att-a").unwrap()
        }
    );
    let mut global = policy(|_| {});
    global.max_running_global = 1;
    let p = plan(&g, &global, &PlanContext::at(at(0)));
    assert!(p.dispatch.is_empty());
    assert_eq!(
        reason(&p, "b"),
        &SkipReason::MaxRunning {
            scope: "global",
            running: 1,
            max: 1
        }
    );
}

#[test]
fn a_transient_failure_is_retried_after_a_scheduled_backoff() {
    let mut s = base();
    s.create_task("t", &[], Priority::Medium)
        .start_attempt("t", "a1", 1);
    let g = graph(
        &s,
        &[(
            "attempt.failed",
            json!({"attempt_id": "a1", "failure_kind": "tests_failed"}),
        )],
    );
    let p = plan(&g, &policy(|_| {}), &PlanContext::at(at(0)));
    assert!(p.dispatch.is_empty());
    assert_eq!(reason(&p, "t"), &SkipReason::Backoff { until: None });
    assert_eq!(
        p.actions,
        [Action::ScheduleRetry {
            target_id: demo(),
            task_id: TaskId::new("t").unwrap(),
            retry_number: 2,
            attempt_id: Some(AttemptId::new("a1").unwrap())
        }]
    );
    // The fixture's fail_attempt also records the retry: dispatch waits until not_before.
    let mut s = base();
    s.create_task("t", &[], Priority::Medium)
        .start_attempt("t", "a1", 1)
        .fail_attempt("t", "a1", 2);
    let g = graph(&s, &[]);
    let until = g
        .task(&demo(), &TaskId::new("t").unwrap())
        .unwrap()
        .not_before
        .unwrap();
    let early = plan(&g, &policy(|_| {}), &PlanContext::at(at(0)));
    assert_eq!(
        reason(&early, "t"),
        &SkipReason::Backoff { until: Some(until) }
    );
    let late = plan(&g, &policy(|_| {}), &PlanContext::at(until));
    assert_eq!(dispatched(&late), ["t"]);
    assert_eq!(late.dispatch[0].attempt_number, 2);
}

#[test]
fn max_attempts_fails_the_task_and_invalidations_do_not_count() {
    let mut s = base();
    s.create_task("t", &[], Priority::Medium);
    s.start_attempt("t", "a1", 1).fail_attempt("t", "a1", 2);
    s.start_attempt("t", "a2", 2);
    let g = graph(
        &s,
        &[(
            "attempt.invalidated",
            json!({"attempt_id": "a2", "reason": "operator"}),
        )],
    );
    let p = plan(
        &g,
        &policy(|p| p.max_attempts_per_task = 2),
        &PlanContext::at(at(3600)),
    );
    assert_eq!(
        dispatched(&p),
        ["t"],
        "one failure and one invalidation: one more attempt allowed"
    );
    assert_eq!(p.dispatch[0].attempt_number, 3);

    let mut s = base();
    s.create_task("t", &[], Priority::Medium);
    s.start_attempt("t", "a1", 1).fail_attempt("t", "a1", 2);
    s.start_attempt("t", "a2", 2).fail_attempt("t", "a2", 3);
    let p = plan(
        &graph(&s, &[]),
        &policy(|p| p.max_attempts_per_task = 2),
        &PlanContext::at(at(3600)),
    );
    assert_eq!(
        reason(&p, "t"),
        &SkipReason::MaxAttempts {
            attempts: 2,
            max: 2
        }
    );
    assert!(
        matches!(&p.actions[..], [Action::FailTask { .. }]),
        "{:?}",
        p.actions
    );
}

#[test]
fn a_permanent_failure_is_never_retried() {
    let mut s = base();
    s.create_task("t", &[], Priority::Medium)
        .start_attempt("t", "a1", 1);
    let g = graph(
        &s,
        &[(
            "attempt.failed",
            json!({"attempt_id": "a1", "failure_kind": "path_violation", "error_summary": "touched src/"}),
        )],
    );
    let p = plan(&g, &policy(|_| {}), &PlanContext::at(at(99_999)));
    assert!(p.dispatch.is_empty());
    assert!(
        matches!(&p.actions[..], [Action::BlockTask { reason, .. }] if reason.contains("path_violation")),
        "{:?}",
        p.actions
    );
}

#[test]
fn open_pr_latch_counts_graph_forge_and_in_flight() {
    let mut s = base();
    s.create_task("done", &[], Priority::High)
        .create_task("next", &[], Priority::Medium)
        .create_task("later", &[], Priority::Low);
    s.start_attempt("done", "a1", 1)
        .succeed_attempt("done", "a1", 1);
    let g = graph(&s, &[]);
    let p = plan(&g, &policy(|p| p.max_open_prs = 1), &PlanContext::at(at(0)));
    assert!(p.dispatch.is_empty());
    assert_eq!(
        reason(&p, "next"),
        &SkipReason::OpenPrLatch { open: 1, max: 1 }
    );
    let p = plan(&g, &policy(|p| p.max_open_prs = 2), &PlanContext::at(at(0)));
    assert_eq!(
        dispatched(&p),
        ["next"],
        "the dispatched attempt counts as a future PR"
    );
    assert_eq!(
        reason(&p, "later"),
        &SkipReason::OpenPrLatch { open: 2, max: 2 }
    );
    let mut ctx = PlanContext::at(at(0));
    ctx.forge_open_prs.insert(demo(), 3);
    let p = plan(&g, &policy(|p| p.max_open_prs = 3), &ctx);
    assert_eq!(
        reason(&p, "next"),
        &SkipReason::OpenPrLatch { open: 3, max: 3 },
        "PRs the log does not know hold the latch"
    );
}

#[test]
fn a_spent_daily_model_budget_dispatches_nothing_for_its_target() {
    let mut s = base();
    s.create_task("next", &[], Priority::High);
    let g = graph(&s, &[]);
    let mut ctx = PlanContext::at(at(0));
    ctx.spent_budgets
        .insert(demo(), "target:demo:1970-01-01".to_owned());
    let p = plan(&g, &policy(|_| {}), &ctx);
    assert!(p.dispatch.is_empty());
    let spent = reason(&p, "next");
    assert_eq!(
        spent,
        &SkipReason::BudgetSpent {
            scope: "target:demo:1970-01-01".to_owned()
        }
    );
    assert_eq!(spent.kind(), "budget_spent");
    assert_eq!(
        dispatched(&plan(&g, &policy(|_| {}), &PlanContext::at(at(0)))),
        ["next"]
    );
}

#[test]
fn circuit_opens_cools_down_probes_once_and_closes() {
    let mut s = base();
    for t in ["a", "b", "c"] {
        s.create_task(t, &[], Priority::Medium);
    }
    let fail = |att: &str| {
        (
            "attempt.failed",
            json!({"attempt_id": att, "failure_kind": "infrastructure"}),
        )
    };
    s.start_attempt("a", "a1", 1);
    let mut extra = vec![fail("a1")];
    let tripped = {
        let mut s2 = base();
        for t in ["a", "b", "c"] {
            s2.create_task(t, &[], Priority::Medium);
        }
        s2.start_attempt("a", "a1", 1);
        graph(&s2, &extra)
    };
    let cb = |p: &mut Policy| {
        p.circuit_breaker.threshold = 1;
        p.circuit_breaker.cooldown = Duration::from_secs(600);
    };
    let p = plan(&tripped, &policy(cb), &PlanContext::at(at(10)));
    assert!(
        matches!(
            &p.actions[0],
            Action::OpenCircuit {
                consecutive_failures: 1,
                ..
            }
        ),
        "{:?}",
        p.actions
    );
    assert!(p.dispatch.is_empty());
    assert!(matches!(reason(&p, "b"), SkipReason::CircuitOpen { .. }));

    extra.push(("retry.scheduled", json!({"target_id": "demo", "task_id": "a", "retry_number": 2, "not_before": "2026-01-28T12:00:00Z"})));
    extra.push(("circuit.opened", json!({"target_id": "demo", "consecutive_failures": 1, "open_until": "2026-01-28T12:10:00Z"})));
    let open = graph(&s, &extra);
    let cooling = plan(&open, &policy(cb), &PlanContext::at(at(300)));
    assert!(cooling.dispatch.is_empty());
    assert!(cooling.actions.is_empty());
    let half_open = plan(&open, &policy(cb), &PlanContext::at(at(600)));
    assert_eq!(
        half_open.dispatch.len(),
        1,
        "exactly one probe: {half_open:?}"
    );
    assert!(half_open.dispatch[0].probe);

    // The probe fails: the circuit opens again.
    let mut s3 = base();
    for t in ["a", "b", "c"] {
        s3.create_task(t, &[], Priority::Medium);
    }
    s3.start_attempt("a", "a1", 1);
    let mut events = extra.clone();
    events.push((
        "attempt.created",
        json!({"attempt_id": "probe", "task_id": "a", "target_id": "demo", "attempt_number": 2}),
    ));
    events.push(fail("probe"));
    let failed_probe = graph(&s3, &events);
    let p = plan(&failed_probe, &policy(cb), &PlanContext::at(at(700)));
    assert!(
        matches!(
            &p.actions[..],
            [
                Action::OpenCircuit {
                    consecutive_failures: 2,
                    ..
                },
                ..
            ]
        ),
        "{:?}",
        p.actions
    );

    // The probe succeeds: the circuit closes and dispatch resumes.
    let mut s4 = base();
    for t in ["a", "b", "c"] {
        s4.create_task(t, &[], Priority::Medium);
    }
    s4.start_attempt("a", "a1", 1);
    let mut g4 = extra.clone();
    g4.push((
        "attempt.created",
        json!({"attempt_id": "probe", "task_id": "b", "target_id": "demo", "attempt_number": 1}),
    ));
    g4.push(("attempt.succeeded", json!({"attempt_id": "probe", "branch": "agent/b-probe", "commit_sha": "a".repeat(40), "pr_number": 5, "pr_url": "https://x/pull/5"})));
    let healed = graph(&s4, &g4);
    let p = plan(&healed, &policy(cb), &PlanContext::at(at(700)));
    assert!(
        p.actions
            .contains(&Action::CloseCircuit { target_id: demo() }),
        "{:?}",
        p.actions
    );
    assert!(!p.dispatch.is_empty());
}

#[test]
fn attempts_past_their_deadline_time_out() {
    let mut s = base();
    s.create_task("t", &[], Priority::Medium)
        .start_attempt("t", "a1", 1);
    let g = graph(&s, &[]);
    let before = plan(&g, &policy(|_| {}), &PlanContext::at(at(899)));
    assert!(before.actions.is_empty());
    let after = plan(&g, &policy(|_| {}), &PlanContext::at(at(901)));
    assert_eq!(
        after.actions,
        [Action::TimeOut {
            attempt_id: AttemptId::new("a1").unwrap(),
            deadline_seconds: 900
        }]
    );
}

#[test]
fn retry_delay_grows_caps_and_jitters_within_bounds() {
    let p = Policy::default().retry;
    assert_eq!(
        retry_delay(&RetryPolicy { jitter: false, ..p }, 2, 0.5),
        Duration::from_secs(60)
    );
    assert_eq!(
        retry_delay(&RetryPolicy { jitter: false, ..p }, 3, 0.5),
        Duration::from_secs(120)
    );
    assert_eq!(
        retry_delay(&RetryPolicy { jitter: false, ..p }, 30, 0.5),
        Duration::from_secs(3600)
    );
    for unit in [0.0, 0.25, 0.999] {
        let d = retry_delay(&p, 4, unit);
        assert!(d <= Duration::from_secs(240), "{d:?}");
        assert_eq!(d, Duration::from_secs_f64(240.0 * unit));
    }
}

#[test]
fn skip_kinds_are_the_serde_tags() {
    let reasons = [
        SkipReason::AutonomyDisabled,
        SkipReason::NotReady,
        SkipReason::Backoff { until: None },
        SkipReason::MaxRunning {
            scope: "global",
            running: 4,
            max: 4,
        },
        SkipReason::OpenPrLatch { open: 1, max: 1 },
    ];
    for reason in reasons {
        let value = serde_json::to_value(&reason).unwrap();
        assert_eq!(value["reason"], reason.kind(), "{reason:?}");
    }
}
