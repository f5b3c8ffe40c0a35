//! The effect of each event type on the graph, computed from a read-only view, one module per
//! family of events.
//!
//! Separating "compute the changes" from "apply them" gives per-event atomicity for free: an
//! event either yields all its changes or a [`Rejection`] and no change at all.

mod attempt;
mod circuit;
mod delivery;
mod effect;
mod evidence;
mod target;
mod task;
mod view;

pub(crate) use effect::At;
pub use effect::Rejection;
pub(crate) use view::{Base, Change, Overlay, View, WaitingOn};

use crate::{
    catalogue::{self as cat, EventBody},
    model::{PrState, TaskStatus},
};

/// The changes an event at `at` with payload `body` makes to the graph seen through `view`, or
/// why it cannot be accepted.
pub(crate) fn effect(view: &View<'_>, at: At, body: &EventBody) -> Result<Vec<Change>, Rejection> {
    use EventBody as B;
    let mut fx = effect::Effect {
        view,
        at,
        changes: Vec::new(),
    };
    match body {
        B::TargetRegistered(p) => fx.register_target(p),
        B::TargetUpdated(p) => fx.update_target(p),
        B::TaskCreated(cat::TaskCreated(def)) => fx.create_task(def),
        B::TaskUpdated(cat::TaskUpdated(def)) => fx.update_task(def),
        B::TaskCompleted(cat::TaskCompleted(t)) => fx.complete_task(t),
        B::TaskFailed(cat::TaskFailed(t)) => fx.transition_task(t, TaskStatus::Failed),
        B::TaskBlocked(cat::TaskBlocked(t)) => fx.transition_task(t, TaskStatus::Blocked),
        B::RetryScheduled(p) => fx.schedule_retry(p),
        B::AttemptCreated(p) => fx.create_attempt(p),
        B::AttemptStarted(p) => fx.start_attempt(p),
        B::AttemptHeartbeat(p) => fx.beat(p),
        B::JobSubmitted(p) => fx.submit_job(p),
        B::AttemptSucceeded(p) => fx.succeed_attempt(p),
        B::AttemptFailed(p) => fx.fail_attempt(p),
        B::AttemptTimedOut(p) => fx.time_out_attempt(p),
        B::AttemptInvalidated(p) => fx.invalidate_attempt(p),
        B::ArtifactCreated(p) => fx.create_artifact(p),
        B::ModelCallCompleted(p) => fx.complete_model_call(p),
        B::TestsPassed(cat::TestsPassed(r)) => fx.record_tests(r, true),
        B::TestsFailed(cat::TestsFailed(r)) => fx.record_tests(r, false),
        B::CommitCreated(p) => fx.create_commit(p),
        B::PrCreated(p) => fx.create_pr(p),
        B::PrMerged(cat::PrMerged(c)) => fx.resolve_pr(c, PrState::Merged),
        B::PrClosed(cat::PrClosed(c)) => fx.resolve_pr(c, PrState::Closed),
        B::CircuitOpened(p) => fx.open_circuit(p),
        B::CircuitClosed(p) => fx.close_circuit(p),
        // Budgets are the model gateway's; the attempt's failure (kind `budget`) is its own event.
        B::BudgetExhausted(p) => fx.note_on_attempt(&p.attempt_id, |a| {
            a.budget_exhausted = Some(format!(
                "{} of {} (spent {} of {})",
                p.resource, p.scope, p.spent, p.limit
            ));
        }),
        // The graph holds no tokens: the control plane's token registry reads these.
        B::TokenIssued(_) | B::TokenRevoked(_) | B::Unknown => Ok(()),
        // The graph learns the delivered commit and pull request from `commit.created` and
        // `pr.created`; it keeps the proposal so that the trusted side finds what it owes.
        B::DeliveryRequested(p) => fx.request_delivery(p),
        B::DeliveryRefused(p) => fx.answer_delivery(&p.attempt_id, Some(&p.reason)),
        B::DeliveryUnchanged(p) => fx.answer_delivery(&p.attempt_id, None),
    }?;
    Ok(fx.changes)
}
