//! The evidence an attempt leaves: `artifact.created`, `model.call_completed`, `tests.passed`
//! and `tests.failed`.

use super::effect::{Effect, Rejection};
use crate::{
    catalogue as cat,
    graph::node::{ArtifactNode, EdgeKind, ModelCallNode, Node, NodeId, TestRunNode},
};

impl Effect<'_, '_> {
    /// An artifact, linked to the attempt that produced it when it names one.
    pub(super) fn create_artifact(&mut self, p: &cat::ArtifactCreated) -> Result<(), Rejection> {
        let id = NodeId::artifact(&p.sha256);
        let node = match self.view.node(&id) {
            Some(Node::Artifact(existing)) => existing.clone(),
            _ => ArtifactNode {
                sha256: p.sha256,
                kind: p.kind.clone(),
                size: p.size,
                name: p.name.clone(),
                uri: p.uri.clone(),
                meta: self.new_meta(),
            },
        };
        if let Some(attempt_id) = &p.attempt_id {
            // Executors may attach artifacts (pod logs) after the attempt ended.
            let mut attempt = self.attempt(attempt_id)?;
            self.note(&mut attempt);
            self.put(Node::Attempt(attempt));
            self.link(NodeId::attempt(attempt_id), EdgeKind::Produced, id);
        }
        self.put(Node::Artifact(node));
        Ok(())
    }

    /// One model call of a live attempt, with its tokens.
    pub(super) fn complete_model_call(
        &mut self,
        p: &cat::ModelCallCompleted,
    ) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&p.attempt_id)?;
        let index = attempt.model_calls;
        attempt.model_calls += 1;
        attempt.tokens_in = attempt.tokens_in.saturating_add(p.tokens_in);
        attempt.tokens_out = attempt.tokens_out.saturating_add(p.tokens_out);
        attempt.cost_usd += p.cost_usd.unwrap_or(0.0);
        self.note(&mut attempt);
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
            cost_usd: p.cost_usd,
            meta: self.new_meta(),
        };
        self.link(
            NodeId::attempt(&p.attempt_id),
            EdgeKind::Produced,
            NodeId::model_call(&p.attempt_id, index),
        );
        self.put(Node::Attempt(attempt));
        self.put(Node::ModelCall(call));
        Ok(())
    }

    /// One test run of a live attempt.
    pub(super) fn record_tests(
        &mut self,
        r: &cat::TestRunReport,
        passed: bool,
    ) -> Result<(), Rejection> {
        let mut attempt = self.live_attempt(&r.attempt_id)?;
        let index = attempt.test_runs;
        attempt.test_runs += 1;
        self.note(&mut attempt);
        let run = TestRunNode {
            attempt_id: r.attempt_id.clone(),
            index,
            round: r.round,
            passed,
            command: r.command.clone(),
            exit_code: r.exit_code,
            output_sha256: r.output_sha256,
            duration_ms: r.duration_ms,
            meta: self.new_meta(),
        };
        self.link(
            NodeId::attempt(&r.attempt_id),
            EdgeKind::Produced,
            NodeId::test_run(&r.attempt_id, index),
        );
        self.put(Node::Attempt(attempt));
        self.put(Node::TestRun(run));
        Ok(())
    }
}
