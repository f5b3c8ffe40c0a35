//! Recording a forwarded call: the request and the answer as content-addressed artifacts
//! (redacted of every secret the gateway knows), and `model.call_completed` with the upstream's
//! own usage, its cost from the price table, the latency and both artifacts' digests, appended
//! by the control plane itself in one batch.

use std::time::Duration;

use bytes::Bytes;
use leviathan_core::{
    Expectations, NewEvent, Sha256Digest, Timestamp,
    catalogue::{ArtifactCreated, ModelCallCompleted},
    id::{AttemptId, EventId, TargetId},
    redact::Redactor,
};

use super::{budget::GATEWAY_ACTOR, provider::Usage};
use crate::service::{ControlPlane, ControlPlaneError};

/// One call that got an answer.
#[derive(Debug)]
pub(crate) struct Answered {
    /// Its attempt.
    pub attempt: AttemptId,
    /// The attempt's target.
    pub target: TargetId,
    /// `anthropic` or `openai`.
    pub provider: &'static str,
    /// `model` of the request.
    pub model: String,
    /// The body sent upstream.
    pub request: Bytes,
    /// The answer's body (the whole event stream when streamed).
    pub response: Bytes,
    /// The upstream's usage; a call whose answer says none is charged its worst case.
    pub usage: Usage,
    /// Cost in USD.
    pub cost_usd: f64,
    /// The price table's date.
    pub prices_as_of: String,
    /// From forwarding to the answer's last byte.
    pub latency: Duration,
}

/// Stores both bodies, redacted, and appends `artifact.created` for each and
/// `model.call_completed`; returns the request's and the response's digests.
pub(crate) async fn record(
    plane: &ControlPlane,
    redactor: &Redactor,
    call: Answered,
) -> Result<(Sha256Digest, Sha256Digest), ControlPlaneError> {
    let request = store(plane, redactor, &call.request).await?;
    let response = store(plane, redactor, &call.response).await?;
    let now = Timestamp::now();
    let event = |payload: &dyn Fn(EventId) -> NewEvent| -> Result<NewEvent, ControlPlaneError> {
        let id = EventId::new(format!("gw-{}", uuid::Uuid::new_v4())).map_err(|e| {
            ControlPlaneError::Internal {
                context: "gateway event id",
                source: Box::new(e),
            }
        })?;
        Ok(payload(id))
    };
    let artifact = |sha256: Sha256Digest, size: usize, kind: &str| {
        let payload = ArtifactCreated {
            sha256,
            kind: kind.to_owned(),
            size: size as u64,
            name: Some(format!("{kind}.json")),
            uri: Some(format!("/v1/artifacts/{sha256}")),
            attempt_id: Some(call.attempt.clone()),
        };
        move |id| NewEvent::new(id, now, Some(GATEWAY_ACTOR.to_owned()), &payload)
    };
    let completed = ModelCallCompleted {
        attempt_id: call.attempt.clone(),
        model: call.model.clone(),
        provider: Some(call.provider.to_owned()),
        tokens_in: call.usage.input,
        tokens_out: call.usage.output,
        prompt_sha256: request.0,
        response_sha256: response.0,
        round: 0,
        duration_ms: Some(u64::try_from(call.latency.as_millis()).unwrap_or(u64::MAX)),
        target_id: Some(call.target.clone()),
        cost_usd: Some(call.cost_usd),
        prices_as_of: Some(call.prices_as_of.clone()),
    };
    let events = vec![
        event(&artifact(request.0, request.1, "model_request"))?,
        event(&artifact(response.0, response.1, "model_response"))?,
        event(&|id| NewEvent::new(id, now, Some(GATEWAY_ACTOR.to_owned()), &completed))?,
    ];
    let receipt = plane.ledger().ingest(events, Expectations::Derived).await?;
    plane.metrics().record_appended(&receipt.appended);
    Ok((request.0, response.0))
}

/// Stores `content` with every known secret replaced; its digest and size.
async fn store(
    plane: &ControlPlane,
    redactor: &Redactor,
    content: &Bytes,
) -> Result<(Sha256Digest, usize), ControlPlaneError> {
    let redacted = Bytes::from(redactor.redact(&String::from_utf8_lossy(content)));
    let size = redacted.len();
    let stored = plane.artifacts().put(redacted).await?;
    Ok((stored.sha256, size))
}
