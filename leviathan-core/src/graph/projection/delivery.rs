//! What an attempt delivers: `commit.created`, `pr.created`, `pr.merged`, `pr.closed`, and the
//! proposal behind them (`delivery.requested` and the answers that deliver nothing).

use super::effect::{Effect, Rejection};
use crate::{
    catalogue as cat,
    graph::node::{AttemptNode, CommitNode, EdgeKind, Node, NodeId, ProposalRef, PullRequestNode},
    id::AttemptId,
    model::PrState,
};

impl Effect<'_, '_> {
    /// The commit of the attempt, on its branch.
    pub(super) fn create_commit(&mut self, p: &cat::CommitCreated) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&p.attempt_id)?;
        attempt.commit_sha = Some(p.commit_sha.clone());
        attempt.branch = Some(p.branch.clone());
        self.note(&mut attempt);
        let commit = CommitNode {
            sha: p.commit_sha.clone(),
            branch: p.branch.clone(),
            message: p.message.clone(),
            attempt_id: p.attempt_id.clone(),
            meta: self.new_meta(),
        };
        self.link(
            NodeId::attempt(&p.attempt_id),
            EdgeKind::Produced,
            NodeId::commit(&p.commit_sha),
        );
        self.put(Node::Attempt(attempt));
        self.put(Node::Commit(commit));
        Ok(())
    }

    /// The attempt opened (or reopened) its pull request.
    pub(super) fn create_pr(&mut self, p: &cat::PrCreated) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&p.attempt_id)?;
        let number = pr_number(p.pr_number);
        attempt.pr_number = Some(number);
        attempt.pr_url = Some(p.pr_url.clone());
        if let Some(branch) = &p.branch {
            attempt.branch = Some(branch.clone());
        }
        self.note(&mut attempt);
        self.record_pr(
            &attempt,
            number,
            &p.pr_url,
            p.title.as_deref(),
            p.branch.as_deref(),
        )?;
        self.put(Node::Attempt(attempt));
        Ok(())
    }

    /// Creates or refreshes the PR node of an attempt and links it.
    pub(super) fn record_pr(
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

    /// A pull request was merged or closed.
    pub(super) fn resolve_pr(
        &mut self,
        c: &cat::PrStateChange,
        state: PrState,
    ) -> Result<(), Rejection> {
        let number = pr_number(c.pr_number);
        let mut pr = self.pull_request(&c.target_id, number).ok_or_else(|| {
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
        let mut target = self.target(&c.target_id, "target_id")?;
        target.open_prs = target.open_prs.saturating_sub(1);
        pr.state = state;
        pr.resolved_at = Some(self.at.timestamp);
        self.touch(&mut pr.meta);
        self.touch(&mut target.meta);
        self.put(Node::PullRequest(pr));
        self.put(Node::Target(target));
        Ok(())
    }
}

pub(super) fn pr_number(n: i64) -> u64 {
    // Payload checks guarantee a positive number.
    n.unsigned_abs()
}

impl Effect<'_, '_> {
    /// The worker's proposal, one per attempt. An ended attempt's proposal is kept too: the
    /// trusted side answers it with `delivery.refused`.
    pub(super) fn request_delivery(&mut self, p: &cat::DeliveryRequested) -> Result<(), Rejection> {
        let mut attempt = self.attempt(&p.attempt_id)?;
        if attempt.proposal.is_some() {
            return Err(Rejection::at(
                "attempt_id",
                format!("attempt `{}` already made its proposal", p.attempt_id),
            ));
        }
        attempt.proposal = Some(ProposalRef {
            base: p.base.clone(),
            patch_sha256: p.patch_sha256,
            message_sha256: p.message_sha256,
            answered: false,
        });
        self.note(&mut attempt);
        self.put(Node::Attempt(attempt));
        Ok(())
    }

    /// The trusted side's answer that delivered nothing (`delivery.refused` with its reason,
    /// `delivery.unchanged`).
    pub(super) fn answer_delivery(
        &mut self,
        attempt_id: &AttemptId,
        refused: Option<&str>,
    ) -> Result<(), Rejection> {
        let mut attempt = self.attempt(attempt_id)?;
        let Some(proposal) = attempt.proposal.as_mut() else {
            return Err(Rejection::at(
                "attempt_id",
                format!("attempt `{attempt_id}` made no proposal"),
            ));
        };
        proposal.answered = true;
        attempt.delivery_refused = refused.map(str::to_owned);
        self.note(&mut attempt);
        self.put(Node::Attempt(attempt));
        Ok(())
    }
}
