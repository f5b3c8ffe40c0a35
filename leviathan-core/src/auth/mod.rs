//! Who may do what: the roles of the control plane's tokens, the [`Principal`] a request acts as,
//! and [`authorize`], the one pure rule book that the API routes, the console and the model
//! gateway all ask before they act (so no two of them can disagree).
//!
//! | Role | May |
//! |---|---|
//! | `admin` | everything, including minting and revoking tokens |
//! | `operator` | read; invalidate and cancel attempts |
//! | `reader` | read: queries, the log, the event stream, artifacts |
//! | `scheduler` | read; record the scheduling events; upload logs; mint worker tokens |
//! | `worker` | for its one attempt: append that attempt's events, upload artifacts, read it, call models through the gateway |

pub mod principal;
pub mod token;

use std::fmt;

use serde_json::Value;

pub use principal::{Principal, Role, UnknownRole};

use crate::{
    catalogue::{
        ArtifactCreated, AttemptCreated, AttemptFailed, AttemptHeartbeat, AttemptStarted,
        AttemptSucceeded, AttemptTimedOut, CircuitClosed, CircuitOpened, CommitCreated,
        DeliveryRefused, DeliveryRequested, DeliveryUnchanged, JobSubmitted, ModelCallCompleted,
        Payload, PrClosed, PrCreated, PrMerged, RetryScheduled, TargetRegistered, TargetUpdated,
        TaskBlocked, TaskCompleted, TaskCreated, TaskFailed, TaskUpdated, TestsFailed, TestsPassed,
    },
    event::NewEvent,
    id::AttemptId,
};

/// What a request asks to do.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Action<'a> {
    /// Read the log, the graph, the event stream, chain verification and metrics.
    Read,
    /// Read one attempt: its node, its events, its artifacts' metadata and its pull request.
    ReadAttempt(&'a AttemptId),
    /// Read stored artifact content.
    ReadArtifact,
    /// Store artifact content.
    UploadArtifact,
    /// Append one event of an ingest batch (`index` is its place in the batch).
    Append {
        /// The event's index in its batch.
        index: usize,
        /// The event.
        event: &'a NewEvent,
    },
    /// Declare an attempt void.
    Invalidate(&'a AttemptId),
    /// Stop a running attempt.
    Cancel(&'a AttemptId),
    /// Mint the worker token of an attempt.
    MintWorkerToken(&'a AttemptId),
    /// Create, list and revoke tokens; rotate the signing keys.
    ManageTokens,
    /// Call a model through the gateway, on the principal's own attempt's budget.
    CallModel,
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read => f.write_str("read the log and the graph"),
            Self::ReadAttempt(attempt) => write!(f, "read attempt `{attempt}`"),
            Self::ReadArtifact => f.write_str("read artifacts"),
            Self::UploadArtifact => f.write_str("upload artifacts"),
            Self::Append { index, event } => {
                write!(
                    f,
                    "append event {index} (`{}`, {})",
                    event.event_id, event.event_type
                )?;
                match event_attempt(event) {
                    Some(attempt) => write!(f, " of attempt `{attempt}`"),
                    None => f.write_str(", which names no attempt"),
                }
            }
            Self::Invalidate(attempt) => write!(f, "invalidate attempt `{attempt}`"),
            Self::Cancel(attempt) => write!(f, "cancel attempt `{attempt}`"),
            Self::MintWorkerToken(attempt) => {
                write!(f, "mint the worker token of attempt `{attempt}`")
            }
            Self::ManageTokens => f.write_str("manage tokens"),
            Self::CallModel => f.write_str("call a model through the gateway"),
        }
    }
}

/// A refusal, naming the principal's scope and what it tried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{scope} may not {attempted}")]
pub struct Forbidden {
    /// The principal (`worker token `tok-1` of attempt `a1``).
    pub scope: String,
    /// What it tried (`append event 2 (`e-7`, attempt.invalidated) of attempt `a1``).
    pub attempted: String,
    /// For an append, the refused event's index in its batch.
    pub index: Option<usize>,
}

/// Event types the control plane records itself, through its own endpoints (bundle receipts,
/// token issuance and revocation): no token may append them through an ingest.
pub const SERVER_RECORDED_EVENTS: &[&str] = &[
    "bundle.ingested",
    "token.issued",
    "token.revoked",
    "budget.exhausted",
];

/// Event types a worker may append, each about its own attempt only (`attempt_id` equal to the
/// token's attempt).
pub const WORKER_EVENTS: &[&str] = &[
    AttemptStarted::EVENT_TYPE,
    AttemptHeartbeat::EVENT_TYPE,
    AttemptSucceeded::EVENT_TYPE,
    AttemptFailed::EVENT_TYPE,
    ArtifactCreated::EVENT_TYPE,
    ModelCallCompleted::EVENT_TYPE,
    TestsPassed::EVENT_TYPE,
    TestsFailed::EVENT_TYPE,
    CommitCreated::EVENT_TYPE,
    PrCreated::EVENT_TYPE,
    DeliveryRequested::EVENT_TYPE,
];

/// Event types a scheduler may append: backlog sync, dispatch, the outcomes it records for
/// attempts whose worker could not, retries, the circuit breaker, pull request states, and what
/// the trusted delivery records (the commit, the pull request, a refused or unchanged delivery).
pub const SCHEDULER_EVENTS: &[&str] = &[
    TargetRegistered::EVENT_TYPE,
    TargetUpdated::EVENT_TYPE,
    TaskCreated::EVENT_TYPE,
    TaskUpdated::EVENT_TYPE,
    TaskCompleted::EVENT_TYPE,
    TaskFailed::EVENT_TYPE,
    TaskBlocked::EVENT_TYPE,
    AttemptCreated::EVENT_TYPE,
    JobSubmitted::EVENT_TYPE,
    AttemptSucceeded::EVENT_TYPE,
    AttemptFailed::EVENT_TYPE,
    AttemptTimedOut::EVENT_TYPE,
    ArtifactCreated::EVENT_TYPE,
    RetryScheduled::EVENT_TYPE,
    CircuitOpened::EVENT_TYPE,
    CircuitClosed::EVENT_TYPE,
    PrMerged::EVENT_TYPE,
    PrClosed::EVENT_TYPE,
    CommitCreated::EVENT_TYPE,
    PrCreated::EVENT_TYPE,
    DeliveryRefused::EVENT_TYPE,
    DeliveryUnchanged::EVENT_TYPE,
];

/// Whether `principal` may do `action`. Pure: the same answer wherever it is asked.
pub fn authorize(principal: &Principal, action: Action<'_>) -> Result<(), Forbidden> {
    use Role::{Admin, Operator, Reader, Scheduler, Worker};
    let role = principal.role;
    let own = |attempt: &AttemptId| principal.attempt.as_ref() == Some(attempt);
    let allowed = match action {
        Action::Read | Action::ReadArtifact => {
            matches!(role, Admin | Operator | Reader | Scheduler)
        }
        Action::ReadAttempt(attempt) => {
            matches!(role, Admin | Operator | Reader | Scheduler)
                || (role == Worker && own(attempt))
        }
        Action::UploadArtifact => matches!(role, Admin | Scheduler | Worker),
        Action::Append { event, .. } => may_append(principal, event),
        Action::Invalidate(_) | Action::Cancel(_) => matches!(role, Admin | Operator),
        Action::MintWorkerToken(_) => matches!(role, Admin | Scheduler),
        Action::ManageTokens => role == Admin,
        // Only an attempt's own token: every call is charged to that attempt's budgets.
        Action::CallModel => role == Worker && principal.attempt.is_some(),
    };
    if allowed {
        return Ok(());
    }
    Err(Forbidden {
        scope: principal.to_string(),
        attempted: action.to_string(),
        index: match action {
            Action::Append { index, .. } => Some(index),
            _ => None,
        },
    })
}

/// Whether `principal` may append every event of `events`; the first refusal otherwise.
pub fn authorize_append(principal: &Principal, events: &[NewEvent]) -> Result<(), Forbidden> {
    events
        .iter()
        .enumerate()
        .try_for_each(|(index, event)| authorize(principal, Action::Append { index, event }))
}

fn may_append(principal: &Principal, event: &NewEvent) -> bool {
    let ty = event.event_type.as_str();
    if SERVER_RECORDED_EVENTS.contains(&ty) {
        return false;
    }
    match principal.role {
        Role::Admin => true,
        Role::Scheduler => SCHEDULER_EVENTS.contains(&ty),
        Role::Worker => {
            WORKER_EVENTS.contains(&ty)
                && principal
                    .attempt
                    .as_ref()
                    .is_some_and(|own| event_attempt(event) == Some(own.as_str()))
        }
        Role::Operator | Role::Reader => false,
    }
}

/// The attempt an event's payload names (`attempt_id`), if any.
fn event_attempt(event: &NewEvent) -> Option<&str> {
    event.payload.get("attempt_id").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Timestamp,
        id::{EventId, TokenId},
    };

    fn token(id: &str) -> TokenId {
        TokenId::new(id).unwrap()
    }

    fn attempt(id: &str) -> AttemptId {
        AttemptId::new(id).unwrap()
    }

    fn event(ty: &str, payload: Value) -> NewEvent {
        NewEvent {
            event_id: EventId::new(format!("e-{ty}")).unwrap(),
            event_type: ty.to_owned(),
            timestamp: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            actor_id: None,
            payload,
            principal: None,
        }
    }

    fn of(a: &str) -> Value {
        serde_json::json!({ "attempt_id": a })
    }

    fn every_role() -> Vec<Principal> {
        Role::ALL
            .into_iter()
            .map(|role| match role {
                Role::Worker => Principal::worker(token("tok-w"), attempt("a1")),
                other => Principal::new(token(&format!("tok-{other}")), other),
            })
            .collect()
    }

    /// The module docs' table, action by action.
    #[test]
    fn the_role_table() {
        let a1 = attempt("a1");
        let a2 = attempt("a2");
        let table: [(Action<'_>, [bool; 5]); 9] = [
            (Action::Read, [true, true, true, true, false]),
            (Action::ReadAttempt(&a1), [true, true, true, true, true]),
            (Action::ReadAttempt(&a2), [true, true, true, true, false]),
            (Action::ReadArtifact, [true, true, true, true, false]),
            (Action::UploadArtifact, [true, false, false, true, true]),
            (Action::Invalidate(&a1), [true, true, false, false, false]),
            (Action::Cancel(&a1), [true, true, false, false, false]),
            (
                Action::MintWorkerToken(&a1),
                [true, false, false, true, false],
            ),
            (Action::ManageTokens, [true, false, false, false, false]),
        ];
        for (action, expected) in table {
            for (principal, allowed) in every_role().iter().zip(expected) {
                assert_eq!(
                    authorize(principal, action).is_ok(),
                    allowed,
                    "{principal} / {action}"
                );
            }
        }
    }

    #[test]
    fn a_worker_appends_its_own_attempts_events_only() {
        let worker = Principal::worker(token("tok-w"), attempt("a1"));
        let own = [
            event("attempt.started", of("a1")),
            event("tests.failed", of("a1")),
            event("attempt.succeeded", of("a1")),
        ];
        assert_eq!(authorize_append(&worker, &own), Ok(()));
        let sibling = [
            event("tests.passed", of("a1")),
            event("attempt.failed", of("a2")),
        ];
        let refused = authorize_append(&worker, &sibling).unwrap_err();
        assert_eq!(refused.index, Some(1));
        assert_eq!(
            refused.to_string(),
            "worker token `tok-w` of attempt `a1` may not append event 1 \
             (`e-attempt.failed`, attempt.failed) of attempt `a2`"
        );
        for (ty, payload) in [
            ("attempt.invalidated", of("a1")),
            ("attempt.created", of("a1")),
            ("attempt.timed_out", of("a1")),
            (
                "task.completed",
                serde_json::json!({"target_id": "t", "task_id": "x"}),
            ),
            ("artifact.created", serde_json::json!({"sha256": "00"})),
            ("custom.thing", of("a1")),
            ("token.revoked", of("a1")),
            ("delivery.refused", of("a1")),
            ("delivery.unchanged", of("a1")),
        ] {
            let refused = authorize_append(&worker, &[event(ty, payload)]).unwrap_err();
            assert!(refused.attempted.contains(ty), "{refused}");
        }
    }

    #[test]
    fn a_worker_without_an_attempt_appends_nothing() {
        let unbound = Principal::new(token("tok-w"), Role::Worker);
        assert!(authorize_append(&unbound, &[event("attempt.started", of("a1"))]).is_err());
        assert!(authorize(&unbound, Action::ReadAttempt(&attempt("a1"))).is_err());
    }

    #[test]
    fn schedulers_record_scheduling_events_and_nobody_writes_server_records() {
        let scheduler = Principal::new(token("tok-s"), Role::Scheduler);
        let admin = Principal::new(token("tok-a"), Role::Admin);
        let created = event("attempt.created", of("a1"));
        assert!(authorize_append(&scheduler, std::slice::from_ref(&created)).is_ok());
        for worker_only in ["tests.passed", "delivery.requested", "attempt.invalidated"] {
            assert!(authorize_append(&scheduler, &[event(worker_only, of("a1"))]).is_err());
        }
        // The scheduler delivers: it records the commit, the pull request and its answers.
        for delivered in [
            "commit.created",
            "pr.created",
            "delivery.refused",
            "delivery.unchanged",
        ] {
            assert!(authorize_append(&scheduler, &[event(delivered, of("a1"))]).is_ok());
        }
        assert!(authorize_append(&admin, &[event("attempt.invalidated", of("a1"))]).is_ok());
        assert!(authorize_append(&admin, &[event("custom.thing", of("a1"))]).is_ok());
        for principal in every_role() {
            for ty in SERVER_RECORDED_EVENTS {
                assert!(authorize_append(&principal, &[event(ty, of("a1"))]).is_err());
            }
        }
        for reader in [Role::Reader, Role::Operator] {
            let p = Principal::new(token("tok-r"), reader);
            assert!(authorize_append(&p, std::slice::from_ref(&created)).is_err());
        }
    }

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert!(err.to_string().contains("admin, operator"), "{err}");
    }

    #[test]
    fn principals_serialize_without_an_empty_attempt() {
        let reader = Principal::new(token("tok-r"), Role::Reader);
        assert_eq!(
            serde_json::to_string(&reader).unwrap(),
            r#"{"token_id":"tok-r","role":"reader"}"#
        );
        let worker = Principal::worker(token("tok-w"), attempt("a1"));
        let json = serde_json::to_string(&worker).unwrap();
        assert_eq!(serde_json::from_str::<Principal>(&json).unwrap(), worker);
    }
}
