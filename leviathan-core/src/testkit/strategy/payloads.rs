//! Payloads of every catalogue type: valid ones, and ones broken in a field the catalogue must
//! name when it refuses them.

use proptest::{collection::vec, option, prelude::*, sample::select};
use serde_json::{Value, json};

use crate::{
    auth::Role,
    catalogue::{self as cat, KNOWN_EVENT_TYPES, Payload, TaskDefinition, TaskTransition},
    digest::Sha256Digest,
    id::{AttemptId, KeyId, TargetId, TaskId, TokenId},
    model::{FailureClass, FailureKind, Priority, TaskSpec},
    paths::AllowedPaths,
    timestamp::Timestamp,
};

/// Any type of the catalogue.
pub fn catalogue_type() -> impl Strategy<Value = &'static str> {
    select(KNOWN_EVENT_TYPES)
}

/// A payload of `event_type` (a type of the catalogue) that the catalogue accepts. Ids come from
/// small pools (`target-0`…, `task-0`…, `attempt-0`…) so that events of one test refer to each
/// other; whether the projection accepts the event depends on what came before it.
///
/// # Panics
///
/// When `event_type` is not in the catalogue.
pub fn valid_payload(event_type: &str) -> BoxedStrategy<Value> {
    match event_type {
        "target.registered" | "target.updated" => target_payload(event_type),
        "task.created" | "task.updated" => task_definition()
            .prop_map(|def| cat::TaskCreated(def).to_value())
            .boxed(),
        "task.completed" | "task.failed" | "task.blocked" => task_transition()
            .prop_map(|t| cat::TaskCompleted(t).to_value())
            .boxed(),
        "retry.scheduled" => retry_scheduled(),
        "circuit.opened" | "circuit.closed" => circuit_payload(event_type),
        "pr.merged" | "pr.closed" => (target_id(), 1i64..9)
            .prop_map(|(target_id, pr_number)| {
                let change = cat::PrStateChange {
                    target_id,
                    pr_number,
                    pr_url: None,
                };
                cat::PrMerged(change).to_value()
            })
            .boxed(),
        "token.issued" | "token.revoked" => token_payload(event_type),
        ty => attempt_payload(ty),
    }
}

/// A payload of `event_type` that the catalogue must refuse, and the field it must name.
///
/// Three kinds of damage, each on a field the type requires: the field is missing, the field
/// holds a JSON object where a scalar belongs, or (for fields with rules beyond their type) the
/// field holds a value the rule refuses (a pull request number of 0, an empty reason…).
///
/// # Panics
///
/// When `event_type` is not in the catalogue.
pub fn broken_payload(event_type: &'static str) -> BoxedStrategy<(Value, &'static str)> {
    let required = required_fields(event_type);
    let refused = refused_values(event_type);
    let damage = prop_oneof![
        select(required.clone()).prop_map(|field| (field, None)),
        select(required).prop_map(|field| (field, Some(json!({"not": "a scalar"})))),
    ];
    let damage = if refused.is_empty() {
        damage.boxed()
    } else {
        prop_oneof![
            damage,
            select(refused).prop_map(|(field, value)| (field, Some(value()))),
        ]
        .boxed()
    };
    (valid_payload(event_type), damage)
        .prop_map(|(mut payload, (field, value))| {
            if let Value::Object(map) = &mut payload {
                match value {
                    Some(value) => map.insert(field.to_owned(), value),
                    None => map.remove(field),
                };
            }
            (payload, field)
        })
        .boxed()
}

/// The fields each type cannot do without.
fn required_fields(event_type: &str) -> Vec<&'static str> {
    match event_type {
        "target.registered" => vec!["target_id", "repo_url"],
        "target.updated" | "circuit.closed" => vec!["target_id"],
        "task.created" | "task.updated" | "task.completed" | "task.failed" | "task.blocked" => {
            vec!["target_id", "task_id"]
        }
        "attempt.created" => vec!["attempt_id", "task_id", "target_id", "attempt_number"],
        "attempt.started" | "attempt.heartbeat" | "attempt.timed_out" => vec!["attempt_id"],
        "attempt.succeeded" => vec!["attempt_id", "branch", "commit_sha", "pr_number", "pr_url"],
        "attempt.failed" => vec!["attempt_id", "failure_kind"],
        "attempt.invalidated" => vec!["attempt_id", "reason"],
        "retry.scheduled" => vec!["target_id", "task_id", "retry_number", "not_before"],
        "job.submitted" => vec!["attempt_id", "executor"],
        "artifact.created" => vec!["sha256", "kind", "size"],
        "model.call_completed" => vec!["attempt_id", "model", "prompt_sha256", "response_sha256"],
        "budget.exhausted" => vec!["scope", "resource", "limit", "spent", "attempt_id"],
        "tests.passed" | "tests.failed" => vec!["attempt_id", "command"],
        "commit.created" => vec!["attempt_id", "commit_sha", "branch"],
        "pr.created" => vec!["attempt_id", "pr_number", "pr_url"],
        "delivery.requested" => vec!["attempt_id", "base", "patch_sha256", "files_changed"],
        "delivery.refused" => vec!["attempt_id", "reason"],
        "delivery.unchanged" => vec!["attempt_id", "branch", "commit_sha", "pr_number", "pr_url"],
        "pr.merged" | "pr.closed" => vec!["target_id", "pr_number"],
        "circuit.opened" => vec!["target_id", "consecutive_failures", "open_until"],
        "token.issued" => vec!["token_id", "role", "key_id", "expires"],
        "token.revoked" => vec!["token_id"],
        other => panic!("`{other}` is not a catalogue type"),
    }
}

/// Values of the right JSON type that a type's rules refuse.
type Refused = (&'static str, fn() -> Value);

fn refused_values(event_type: &str) -> Vec<Refused> {
    let pr: [Refused; 3] = [
        ("pr_number", || json!(0)),
        ("pr_number", || json!(-7)),
        ("pr_url", || json!("ftp://forge.example/pull/1")),
    ];
    match event_type {
        "target.registered" => vec![
            ("repo_url", || json!("")),
            ("default_branch", || json!("a..b")),
        ],
        "task.created" | "task.updated" => vec![("title", || json!(""))],
        "attempt.created" => vec![("attempt_number", || json!(0))],
        "attempt.succeeded" => {
            let mut refused = pr.to_vec();
            refused.push(("commit_sha", || json!("not-a-commit")));
            refused.push(("branch", || json!("bad..branch")));
            refused
        }
        "pr.created" | "delivery.unchanged" => pr.to_vec(),
        "delivery.requested" => vec![("base", || json!("HEAD"))],
        "delivery.refused" => vec![("reason", || json!(""))],
        "pr.merged" | "pr.closed" => pr[..2].to_vec(),
        "attempt.invalidated" => vec![("reason", || json!(""))],
        "retry.scheduled" => vec![
            ("retry_number", || json!(0)),
            ("backoff_seconds", || json!(-1.5)),
        ],
        "job.submitted" => vec![("executor", || json!(""))],
        "artifact.created" => vec![("kind", || json!(""))],
        "model.call_completed" => vec![("model", || json!("")), ("cost_usd", || json!(-0.5))],
        "budget.exhausted" => vec![("scope", || json!("")), ("resource", || json!(""))],
        "commit.created" => vec![("commit_sha", || json!("ABCDEF"))],
        "token.issued" => vec![("name", || json!("")), ("role", || json!("root"))],
        _ => Vec::new(),
    }
}

pub(super) fn target_id() -> impl Strategy<Value = TargetId> {
    (0u8..3).prop_map(|n| TargetId::new(format!("target-{n}")).expect("valid target id"))
}

pub(super) fn task_id() -> impl Strategy<Value = TaskId> {
    (0u8..4).prop_map(|n| TaskId::new(format!("task-{n}")).expect("valid task id"))
}

pub(super) fn attempt_id() -> impl Strategy<Value = AttemptId> {
    (0u8..6).prop_map(|n| AttemptId::new(format!("attempt-{n}")).expect("valid attempt id"))
}

fn digest() -> impl Strategy<Value = Sha256Digest> {
    any::<u64>().prop_map(|n| Sha256Digest::of(&n.to_le_bytes()))
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0i64..4_000_000_000).prop_map(|s| {
        Timestamp::from_unix_micros(1_700_000_000_000_000 + s * 1_000).expect("in range")
    })
}

/// Printable text that is not blank, sometimes beyond ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z ]{0,11}", "[a-z]\\PC{0,8}"]
}

fn token_payload(event_type: &str) -> BoxedStrategy<Value> {
    let issued = event_type == "token.issued";
    let token_id = (0u8..4).prop_map(|n| TokenId::new(format!("tok-{n}")).expect("valid token id"));
    let role = select(Role::ALL.to_vec());
    (
        token_id,
        role,
        attempt_id(),
        option::of(text()),
        timestamp(),
    )
        .prop_map(move |(token_id, role, attempt, name, expires)| {
            if !issued {
                return cat::TokenRevoked {
                    token_id,
                    reason: name,
                }
                .to_value();
            }
            cat::TokenIssued {
                token_id,
                role,
                name,
                attempt_id: (role == Role::Worker).then_some(attempt),
                key_id: KeyId::new("k-1").expect("valid key id"),
                expires,
            }
            .to_value()
        })
        .boxed()
}

fn target_payload(event_type: &str) -> BoxedStrategy<Value> {
    let registered = event_type == "target.registered";
    (target_id(), option::of(text()), option::of("[a-z]{1,6}"))
        .prop_map(move |(target_id, name, branch)| {
            let repo_url = format!("https://git.example.com/acme/{target_id}.git");
            if registered {
                cat::TargetRegistered {
                    target_id,
                    name,
                    repo_url,
                    default_branch: branch.unwrap_or_else(|| "main".into()),
                    test_command: Some("make test".into()),
                }
                .to_value()
            } else {
                cat::TargetUpdated {
                    target_id,
                    name,
                    repo_url: Some(repo_url),
                    default_branch: branch,
                    test_command: None,
                }
                .to_value()
            }
        })
        .boxed()
}

fn task_definition() -> impl Strategy<Value = TaskDefinition> {
    let priority = select(vec![Priority::High, Priority::Medium, Priority::Low]);
    (
        target_id(),
        task_id(),
        text(),
        priority,
        vec(task_id(), 0..3),
        option::of(select(vec!["pending", "completed"])),
        option::of(0u32..50),
    )
        .prop_map(
            |(target_id, task_id, title, priority, deps, status, index)| {
                let mut spec = TaskSpec::new(title);
                spec.priority = priority;
                spec.dependencies = deps.into_iter().filter(|d| d != &task_id).collect();
                spec.status = status.map(str::to_owned);
                spec.allowed_paths = AllowedPaths::parse(&[format!("docs/{task_id}.md")])
                    .expect("valid allowed path");
                TaskDefinition {
                    target_id,
                    task_id,
                    spec,
                    backlog_index: index,
                }
            },
        )
}

fn task_transition() -> impl Strategy<Value = TaskTransition> {
    (
        target_id(),
        task_id(),
        option::of(text()),
        option::of(attempt_id()),
    )
        .prop_map(|(target_id, task_id, reason, attempt_id)| TaskTransition {
            target_id,
            task_id,
            reason,
            attempt_id,
            status: None,
        })
}

fn retry_scheduled() -> BoxedStrategy<Value> {
    (target_id(), task_id(), 1u32..5, 0.0f64..3600.0, timestamp())
        .prop_map(
            |(target_id, task_id, retry_number, backoff_seconds, not_before)| {
                cat::RetryScheduled {
                    target_id,
                    task_id,
                    retry_number,
                    backoff_seconds,
                    not_before,
                    attempt_id: None,
                }
                .to_value()
            },
        )
        .boxed()
}

fn circuit_payload(event_type: &str) -> BoxedStrategy<Value> {
    let opened = event_type == "circuit.opened";
    (target_id(), 1u32..10, timestamp())
        .prop_map(move |(target_id, consecutive_failures, open_until)| {
            if opened {
                cat::CircuitOpened {
                    target_id,
                    consecutive_failures,
                    open_until,
                }
                .to_value()
            } else {
                cat::CircuitClosed {
                    target_id,
                    reason: Some("probe succeeded".into()),
                }
                .to_value()
            }
        })
        .boxed()
}

/// The payloads of the attempt's own events, which all name the attempt.
fn attempt_payload(event_type: &str) -> BoxedStrategy<Value> {
    let event_type = event_type.to_owned();
    (
        attempt_id(),
        target_id(),
        task_id(),
        digest(),
        digest(),
        1i64..9,
        1u32..4,
    )
        .prop_map(move |(attempt, target, task, a, b, number, round)| {
            attempt_value(&event_type, attempt, target, task, (a, b), number, round)
        })
        .boxed()
}

/// A valid payload of one of the `delivery.*` types.
fn delivery_value(
    event_type: &str,
    attempt_id: AttemptId,
    task_id: &TaskId,
    (a, b): (Sha256Digest, Sha256Digest),
    number: i64,
    round: u32,
) -> Value {
    let commit_sha = a.to_hex()[..40].to_owned();
    let pr_url = format!("https://github.example.com/acme/widgets/pull/{number}");
    match event_type {
        "delivery.requested" => cat::DeliveryRequested {
            attempt_id,
            base: commit_sha,
            patch_sha256: a,
            files_changed: round,
            message_sha256: (round != 1).then_some(b),
        }
        .to_value(),
        "delivery.refused" => cat::DeliveryRefused {
            attempt_id,
            reason: "attempt no longer live".into(),
        }
        .to_value(),
        "delivery.unchanged" => cat::DeliveryUnchanged {
            attempt_id,
            branch: format!("agent/{task_id}"),
            commit_sha,
            pr_number: number,
            pr_url,
        }
        .to_value(),
        other => panic!("`{other}` is not a delivery type"),
    }
}

/// The payloads of the model calls and budgets of an attempt.
fn metering_value(
    event_type: &str,
    attempt_id: &AttemptId,
    (a, b): (Sha256Digest, Sha256Digest),
    round: u32,
) -> Option<Value> {
    Some(match event_type {
        "model.call_completed" => cat::ModelCallCompleted {
            attempt_id: attempt_id.clone(),
            model: "claude-sonnet-4-5".into(),
            provider: Some("anthropic".into()),
            tokens_in: 100,
            tokens_out: 50,
            prompt_sha256: a,
            response_sha256: b,
            round,
            duration_ms: None,
            target_id: None,
            cost_usd: None,
            prices_as_of: None,
        }
        .to_value(),
        "budget.exhausted" => cat::BudgetExhausted {
            scope: format!("attempt:{attempt_id}"),
            resource: "tokens".into(),
            limit: 1000.0,
            spent: f64::from(round) * 400.0,
            attempt_id: attempt_id.clone(),
            target_id: None,
        }
        .to_value(),
        _ => return None,
    })
}

fn attempt_value(
    event_type: &str,
    attempt_id: AttemptId,
    target_id: TargetId,
    task_id: TaskId,
    (a, b): (Sha256Digest, Sha256Digest),
    number: i64,
    round: u32,
) -> Value {
    if let Some(value) = metering_value(event_type, &attempt_id, (a, b), round) {
        return value;
    }
    let commit_sha = a.to_hex()[..40].to_owned();
    let branch = format!("agent/{task_id}-{attempt_id}");
    let pr_url = format!("https://github.example.com/acme/{target_id}/pull/{number}");
    let report = cat::TestRunReport {
        attempt_id: attempt_id.clone(),
        round,
        command: "make test".into(),
        exit_code: Some(1),
        output_sha256: Some(b),
        duration_ms: Some(1200),
    };
    match event_type {
        "attempt.created" => cat::AttemptCreated {
            attempt_id,
            task_id,
            target_id,
            attempt_number: round,
            executor: Some("local".into()),
            deadline_seconds: Some(900),
            base: None,
        }
        .to_value(),
        "attempt.started" => cat::AttemptStarted {
            attempt_id,
            task_id: Some(task_id),
            target_id: Some(target_id),
            worker: None,
            sandbox: None,
        }
        .to_value(),
        "attempt.heartbeat" => cat::AttemptHeartbeat { attempt_id }.to_value(),
        "attempt.succeeded" => cat::AttemptSucceeded {
            attempt_id,
            branch,
            commit_sha,
            pr_number: number,
            pr_url,
        }
        .to_value(),
        "attempt.failed" => cat::AttemptFailed {
            attempt_id,
            failure_kind: [FailureKind::TestsFailed, FailureKind::PathViolation]
                [round as usize % 2],
            failure_class: (round == 3).then_some(FailureClass::Permanent),
            error_summary: "tests failed".into(),
        }
        .to_value(),
        "attempt.timed_out" => cat::AttemptTimedOut {
            attempt_id,
            deadline_seconds: Some(900),
            summary: None,
        }
        .to_value(),
        "delivery.requested" | "delivery.refused" | "delivery.unchanged" => {
            delivery_value(event_type, attempt_id, &task_id, (a, b), number, round)
        }
        "attempt.invalidated" => cat::AttemptInvalidated {
            attempt_id,
            reason: "operator".into(),
        }
        .to_value(),
        "job.submitted" => cat::JobSubmitted {
            attempt_id,
            executor: "local".into(),
            job_name: Some(format!("leviathan-{round}")),
            namespace: None,
        }
        .to_value(),
        "artifact.created" => cat::ArtifactCreated {
            sha256: a,
            kind: "log".into(),
            size: u64::from(round) * 100,
            name: None,
            uri: None,
            attempt_id: (round != 1).then_some(attempt_id),
        }
        .to_value(),
        "tests.passed" => cat::TestsPassed(report).to_value(),
        "tests.failed" => cat::TestsFailed(report).to_value(),
        "commit.created" => cat::CommitCreated {
            attempt_id,
            commit_sha,
            branch,
            message: None,
        }
        .to_value(),
        "pr.created" => cat::PrCreated {
            attempt_id,
            pr_number: number,
            pr_url,
            title: Some("Leviathan: a task".into()),
            branch: Some(branch),
            reused: false,
        }
        .to_value(),
        other => panic!("`{other}` is not a catalogue type"),
    }
}
