//! What an operator does to an attempt: invalidate it (void, its task done again) or cancel it
//! (stopped, its task not retried). Both are one event appended with the operator as actor;
//! the scheduler running a cancelled attempt stops it on the executor.

use leviathan_core::{
    Expectations, LedgerError, NewEvent, Timestamp,
    auth::{Action, Principal},
    catalogue::{AttemptFailed, AttemptInvalidated, Payload},
    id::{AttemptId, EventId},
    model::{FailureClass, FailureKind},
};

use super::{ControlPlane, ControlPlaneError, OPERATOR_ACTOR};
use crate::wire::InvalidateResponse;

/// An operator's action on an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptAction {
    /// `attempt.invalidated`.
    Invalidate,
    /// `attempt.failed` with the kind `cancelled`, permanent.
    Cancel,
}

impl AttemptAction {
    /// What a principal needs to be allowed to do it.
    pub fn authorization(self, attempt: &AttemptId) -> Action<'_> {
        match self {
            Self::Invalidate => Action::Invalidate(attempt),
            Self::Cancel => Action::Cancel(attempt),
        }
    }

    /// The verb, as in event ids and URLs.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Invalidate => "invalidate",
            Self::Cancel => "cancel",
        }
    }

    /// The attempt's state after it, as answered.
    pub fn done(self) -> &'static str {
        match self {
            Self::Invalidate => "invalidated",
            Self::Cancel => "cancelled",
        }
    }

    fn event(self, attempt_id: &AttemptId, reason: &str, id: EventId) -> NewEvent {
        let (at, actor) = (Timestamp::now(), Some(OPERATOR_ACTOR.to_owned()));
        match self {
            Self::Invalidate => NewEvent::new(
                id,
                at,
                actor,
                &AttemptInvalidated {
                    attempt_id: attempt_id.clone(),
                    reason: reason.to_owned(),
                },
            ),
            Self::Cancel => NewEvent::new(
                id,
                at,
                actor,
                &AttemptFailed {
                    attempt_id: attempt_id.clone(),
                    failure_kind: FailureKind::Cancelled,
                    failure_class: Some(FailureClass::Permanent),
                    error_summary: format!("cancelled by an operator: {reason}"),
                },
            ),
        }
    }

    /// Whether `event` is this action on `attempt_id` (a retried request).
    fn recorded_by(self, event: &leviathan_core::Event, attempt_id: &AttemptId) -> bool {
        let event_type = match self {
            Self::Invalidate => AttemptInvalidated::EVENT_TYPE,
            Self::Cancel => AttemptFailed::EVENT_TYPE,
        };
        event.event_type == event_type
            && event.payload.get("attempt_id").and_then(|v| v.as_str()) == Some(attempt_id.as_str())
    }
}

impl ControlPlane {
    /// Declares an attempt void by appending `attempt.invalidated` (actor `operator`, written by
    /// `principal` when the request came through the API).
    ///
    /// With `event_id`, a repeated request (a client retry) answers with the event already in
    /// the log instead of invalidating twice.
    pub async fn invalidate(
        &self,
        attempt_id: &AttemptId,
        reason: &str,
        event_id: Option<EventId>,
        principal: Option<Principal>,
    ) -> Result<InvalidateResponse, ControlPlaneError> {
        self.attempt_action(
            AttemptAction::Invalidate,
            attempt_id,
            reason,
            event_id,
            principal,
        )
        .await
    }

    /// Stops a live attempt: appends `attempt.failed` with the kind `cancelled` (permanent, so
    /// its task is not retried; actor `operator`), and the scheduler running it cancels it on
    /// its executor. Refused when the attempt has ended. `event_id` as for
    /// [`ControlPlane::invalidate`].
    pub async fn cancel(
        &self,
        attempt_id: &AttemptId,
        reason: &str,
        event_id: Option<EventId>,
        principal: Option<Principal>,
    ) -> Result<InvalidateResponse, ControlPlaneError> {
        self.attempt_action(
            AttemptAction::Cancel,
            attempt_id,
            reason,
            event_id,
            principal,
        )
        .await
    }

    /// Does `action` on the attempt (see [`ControlPlane::invalidate`], [`ControlPlane::cancel`]).
    pub async fn attempt_action(
        &self,
        action: AttemptAction,
        attempt_id: &AttemptId,
        reason: &str,
        event_id: Option<EventId>,
        principal: Option<Principal>,
    ) -> Result<InvalidateResponse, ControlPlaneError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ControlPlaneError::InvalidRequest {
                field: "reason",
                problem: "must not be empty".to_owned(),
            });
        }
        if let Some(id) = &event_id
            && let Some(existing) = self.events().get(id).await?
        {
            if !action.recorded_by(&existing, attempt_id) {
                return Err(ControlPlaneError::EventIdTaken {
                    event_id: id.clone(),
                    seq: existing.seq,
                });
            }
            return Ok(answer(action, attempt_id, existing, true));
        }
        self.ledger.catch_up().await?;
        if self.ledger.graph().await.attempt(attempt_id).is_none() {
            return Err(ControlPlaneError::AttemptNotFound(attempt_id.clone()));
        }
        let event_id = match event_id {
            Some(id) => id,
            None => EventId::new(format!(
                "{}-{attempt_id}-{}",
                action.verb(),
                uuid::Uuid::new_v4().simple()
            ))
            .map_err(|e| ControlPlaneError::Internal {
                context: "operator event id",
                source: Box::new(e),
            })?,
        };
        let mut event = action.event(attempt_id, reason, event_id.clone());
        event.principal = principal;
        let receipt = match self.ledger.ingest(vec![event], Expectations::Derived).await {
            Ok(receipt) => receipt,
            Err(LedgerError::Rejected(rejections)) => {
                let why = rejections
                    .iter()
                    .map(|r| r.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(ControlPlaneError::AttemptActionRefused {
                    attempt_id: attempt_id.clone(),
                    action: action.done(),
                    reason: why,
                });
            }
            Err(other) => return Err(other.into()),
        };
        self.metrics.record_appended(&receipt.appended);
        let (event, duplicate) = match receipt.appended.into_iter().next() {
            Some(event) => (event, false),
            None => {
                let stored = self.events().get(&event_id).await?.ok_or_else(|| {
                    ControlPlaneError::Internal {
                        context: "operator action",
                        source: "appended event not found".into(),
                    }
                })?;
                (stored, true)
            }
        };
        Ok(answer(action, attempt_id, event, duplicate))
    }
}

fn answer(
    action: AttemptAction,
    attempt_id: &AttemptId,
    event: leviathan_core::Event,
    duplicate: bool,
) -> InvalidateResponse {
    InvalidateResponse {
        status: action.done().to_owned(),
        attempt_id: attempt_id.clone(),
        event,
        duplicate,
    }
}
