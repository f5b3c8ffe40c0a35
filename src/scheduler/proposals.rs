//! The trusted half of delivery: the workers' proposals (`delivery.requested`) delivered by the
//! scheduler, which alone holds the forge token ([`crate::delivery::Deliverer`]).
//!
//! A proposal is owed an answer until the log has one: `commit.created`, `pr.created` and
//! `attempt.succeeded` (one batch), `delivery.unchanged` and `attempt.succeeded`, or
//! `delivery.refused` (with `attempt.failed` while the attempt is live). A delivery cut short (a
//! crash, a forge outage) leaves the proposal owed; the next cycle delivers it again and the
//! forge is the second source of truth (the pushed branch and the open pull request are
//! adopted, not duplicated).

use std::{collections::BTreeSet, sync::Mutex};

use leviathan_core::{
    AttemptId, Expectations, NewEvent,
    catalogue::{
        AttemptFailed, AttemptSucceeded, CommitCreated, DeliveryRefused, DeliveryUnchanged,
        PrCreated,
    },
    delivery::ProposalText,
    forge::PullRequest,
    graph::ProposalRef,
    model::{FailureClass, FailureKind},
    paths::AllowedPaths,
};

use super::{Inner, Recorded, SchedulerError};
use crate::delivery::{Delivered, DeliveryError, Liveness, Proposal, Refusal};

/// What the scheduler needs to deliver one proposal, read from the graph.
struct Owed {
    attempt_id: AttemptId,
    task_id: leviathan_core::TaskId,
    target_id: leviathan_core::TargetId,
    attempt_number: u32,
    live: bool,
    /// The base `attempt.created` recorded, when the scheduler published one.
    dispatched_base: Option<String>,
    proposal: ProposalRef,
    allowed: AllowedPaths,
}

/// Marks an attempt whose proposal a task of this process delivers; released on drop.
struct Delivering<'a> {
    set: &'a Mutex<BTreeSet<AttemptId>>,
    attempt: AttemptId,
}

impl<'a> Delivering<'a> {
    /// `None` when another task delivers `attempt` now.
    fn claim(set: &'a Mutex<BTreeSet<AttemptId>>, attempt: &AttemptId) -> Option<Self> {
        let mut claimed = set.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        claimed.insert(attempt.clone()).then(|| Self {
            set,
            attempt: attempt.clone(),
        })
    }
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.attempt);
    }
}

/// Liveness as the log says, caught up at each question.
struct LogLiveness<'a>(&'a Inner);

#[async_trait::async_trait]
impl Liveness for LogLiveness<'_> {
    async fn is_live(&self, attempt: &AttemptId) -> bool {
        if let Err(error) = self.0.ledger.catch_up().await {
            tracing::warn!("cannot read the log to see whether attempt={attempt} is live: {error}");
            return false;
        }
        self.0
            .ledger
            .graph()
            .await
            .attempt(attempt)
            .is_some_and(|a| a.status.is_live())
    }
}

impl Inner {
    /// Delivers every proposal of a live attempt of the served targets that has no answer yet.
    pub(super) async fn deliver_owed(&self) -> Result<(), SchedulerError> {
        let owed: Vec<AttemptId> = {
            let graph = self.ledger.graph().await;
            graph
                .live_attempts()
                .filter(|a| self.targets.contains_key(&a.target_id))
                .filter(|a| a.proposal.as_ref().is_some_and(|p| !p.answered))
                .map(|a| a.attempt_id.clone())
                .collect()
        };
        for attempt_id in owed {
            self.deliver_proposal(&attempt_id).await?;
        }
        Ok(())
    }

    /// Answers `attempt_id`'s proposal when it has one without an answer; true when it had one
    /// (answered now, or left owed after a failure that delivering again may cure).
    pub(super) async fn deliver_proposal(
        &self,
        attempt_id: &AttemptId,
    ) -> Result<bool, SchedulerError> {
        let Some(_delivering) = Delivering::claim(&self.delivering, attempt_id) else {
            // Another task of this process delivers it right now.
            return Ok(true);
        };
        self.ledger.catch_up().await?;
        let Some(owed) = self.owed(attempt_id).await else {
            return Ok(false);
        };
        let label = format!("{}/{} attempt={attempt_id}", owed.target_id, owed.task_id);
        if !owed.live {
            self.answer(&owed, &label, &Refusal::NotLive).await?;
            return Ok(true);
        }
        if let Some(dispatched) = owed
            .dispatched_base
            .clone()
            .filter(|d| *d != owed.proposal.base)
        {
            let proposed = owed.proposal.base.clone();
            let refusal = Refusal::WrongBase {
                proposed,
                dispatched,
            };
            self.answer(&owed, &label, &refusal).await?;
            return Ok(true);
        }
        let proposal = match self.read_proposal(&owed).await {
            Ok(proposal) => proposal,
            Err(reason) => {
                self.answer(&owed, &label, &Refusal::Unreadable(reason))
                    .await?;
                return Ok(true);
            }
        };
        let Some(deliverer) = self
            .targets
            .get(&owed.target_id)
            .and_then(|served| served.deliverer.as_ref())
        else {
            return Ok(true);
        };
        let delivered = deliverer
            .deliver(&proposal, &owed.allowed, &LogLiveness(self))
            .await;
        let events = match delivered {
            Ok(delivered) => self.delivered_events(&owed, &proposal, delivered),
            Err(DeliveryError::Refused(refusal)) => {
                self.answer(&owed, &label, &refusal).await?;
                return Ok(true);
            }
            Err(error) => {
                tracing::warn!("delivery of {label} failed, delivered again next cycle: {error}");
                return Ok(true);
            }
        };
        let line = format!("delivered {label}");
        match self.record(events, Expectations::Derived).await? {
            Recorded::Appended => tracing::info!("{line}"),
            Recorded::Refused(reason) => tracing::info!("not recorded ({line}): {reason}"),
        }
        self.complete_if_delivered(&owed.target_id, &owed.task_id, attempt_id)
            .await?;
        Ok(true)
    }

    /// The attempt's unanswered proposal with what delivering it needs.
    async fn owed(&self, attempt_id: &AttemptId) -> Option<Owed> {
        let graph = self.ledger.graph().await;
        let attempt = graph.attempt(attempt_id)?;
        let proposal = attempt.proposal.clone().filter(|p| !p.answered)?;
        let task = graph.task(&attempt.target_id, &attempt.task_id)?;
        Some(Owed {
            attempt_id: attempt_id.clone(),
            task_id: attempt.task_id.clone(),
            target_id: attempt.target_id.clone(),
            attempt_number: attempt.attempt_number,
            live: attempt.status.is_live(),
            dispatched_base: attempt.base.as_ref().map(|b| b.commit.clone()),
            proposal,
            allowed: task.spec.allowed_paths.clone(),
        })
    }

    /// The proposal's patch and words from the artifact store; `Err(reason)` refuses it.
    async fn read_proposal(&self, owed: &Owed) -> Result<Proposal, String> {
        let artifacts = self
            .artifacts
            .as_ref()
            .ok_or("this scheduler has no artifact store to read proposals from")?;
        let patch = artifacts
            .get(&owed.proposal.patch_sha256)
            .await
            .map_err(|e| format!("cannot read the patch artifact: {e}"))?;
        let sha = owed
            .proposal
            .message_sha256
            .ok_or("the proposal names no message artifact")?;
        let text = artifacts
            .get(&sha)
            .await
            .map_err(|e| format!("cannot read the message artifact: {e}"))?;
        let text: ProposalText = serde_json::from_slice(&text)
            .map_err(|e| format!("the message artifact is not a proposal's text: {e}"))?;
        Ok(Proposal {
            task_id: owed.task_id.clone(),
            attempt_id: owed.attempt_id.clone(),
            attempt_number: owed.attempt_number,
            base_commit: owed.proposal.base.clone(),
            patch: patch.to_vec(),
            message: text.message,
            title: text.title,
            body: text.body,
        })
    }

    /// The events of a delivery, recorded as one batch: either all or none of them is in the log.
    fn delivered_events(
        &self,
        owed: &Owed,
        proposal: &Proposal,
        delivered: Delivered,
    ) -> Vec<NewEvent> {
        let attempt_id = owed.attempt_id.clone();
        let succeeded = |branch: &str, commit_sha: &str, pr: &PullRequest| {
            self.event(&AttemptSucceeded {
                attempt_id: attempt_id.clone(),
                branch: branch.to_owned(),
                commit_sha: commit_sha.to_owned(),
                pr_number: i64::try_from(pr.number).unwrap_or(i64::MAX),
                pr_url: pr.url.clone(),
            })
        };
        match delivered {
            Delivered::Pushed {
                branch,
                commit_sha,
                pr,
            } => vec![
                self.event(&CommitCreated {
                    attempt_id: attempt_id.clone(),
                    commit_sha: commit_sha.clone(),
                    branch: branch.clone(),
                    message: Some(proposal.message.trim_end().to_owned()),
                }),
                self.event(&PrCreated {
                    attempt_id: attempt_id.clone(),
                    pr_number: i64::try_from(pr.number).unwrap_or(i64::MAX),
                    pr_url: pr.url.clone(),
                    title: Some(proposal.title.clone()),
                    branch: Some(branch.clone()),
                    reused: pr.reused,
                }),
                succeeded(&branch, &commit_sha, &pr),
            ],
            Delivered::Unchanged {
                branch,
                commit_sha,
                pr,
            } => vec![
                self.event(&DeliveryUnchanged {
                    attempt_id: attempt_id.clone(),
                    branch: branch.clone(),
                    commit_sha: commit_sha.clone(),
                    pr_number: i64::try_from(pr.number).unwrap_or(i64::MAX),
                    pr_url: pr.url.clone(),
                }),
                succeeded(&branch, &commit_sha, &pr),
            ],
        }
    }

    /// `delivery.refused` with the refusal's reason, and the attempt's failure while it is live.
    async fn answer(
        &self,
        owed: &Owed,
        label: &str,
        refusal: &Refusal,
    ) -> Result<(), SchedulerError> {
        let reason = refusal.to_string();
        let mut events = vec![self.event(&DeliveryRefused {
            attempt_id: owed.attempt_id.clone(),
            reason: reason.clone(),
        })];
        if owed.live {
            let kind = match refusal {
                Refusal::Policy(_) => FailureKind::PathViolation,
                Refusal::Empty => FailureKind::NoChanges,
                _ => FailureKind::Push,
            };
            events.push(self.event(&AttemptFailed {
                attempt_id: owed.attempt_id.clone(),
                failure_kind: kind,
                failure_class: Some(FailureClass::Permanent),
                error_summary: format!("delivery refused: {reason}"),
            }));
        }
        let line = format!("refuse delivery of {label}: {reason}");
        match self.record(events, Expectations::Derived).await? {
            Recorded::Appended => tracing::info!("{line}"),
            Recorded::Refused(why) => tracing::info!("not recorded ({line}): {why}"),
        }
        Ok(())
    }
}
