//! Liveness, readiness, metrics and chain verification.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use leviathan_core::auth::Action;

use super::{ApiError, extract::Caller};
use crate::{
    code::ErrorCode,
    state::ApiState,
    wire::{ChainVerification, Health},
};

/// How long readiness waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        head: None,
    })
}

/// Ready when the event store answers. The answer is open, so a failure says nothing about the
/// store beyond that; the log has the details.
pub(super) async fn readyz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    let not_ready =
        || ApiError::new(ErrorCode::NotReady, "the event store is not reachable").retry_after(1);
    match tokio::time::timeout(READY_TIMEOUT, state.control_plane().events().head()).await {
        Ok(Ok(head)) => Ok(Json(Health {
            status: "ready".into(),
            head,
        })),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            Err(not_ready())
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            Err(not_ready())
        }
    }
}

/// `/metrics` when it is behind the token: readers and up.
pub(super) async fn metrics_protected(
    caller: Caller,
    state: State<ApiState>,
) -> Result<Response, ApiError> {
    caller.may(Action::Read)?;
    Ok(metrics(state).await)
}

pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    let plane = state.control_plane();
    let head = plane.events().head().await.map_err(|error| {
        tracing::warn!(%error, "metrics: cannot read the event log's head");
    });
    let summary = plane.summary().await.unwrap_or_default();
    let text = state.metrics().render(head, &summary);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

pub(super) async fn verify(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<ChainVerification>, ApiError> {
    caller.may(Action::Read)?;
    let verification = state.control_plane().verify().await?;
    if let ChainVerification::Broken(broken) = &verification {
        tracing::error!(seq = broken.seq, fault = %broken.fault, "the event chain does not verify");
    }
    Ok(Json(verification))
}
