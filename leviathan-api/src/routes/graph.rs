//! Queries over the graph and the one operator action, invalidation.

use axum::{
    Json,
    extract::{Path, State},
};
use leviathan_core::{
    GraphSummary,
    auth::Action,
    graph::{AttemptQuery, FailureQuery},
    id::AttemptId,
};

use super::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::{
    AttemptAction,
    state::ApiState,
    wire::{
        AttemptDetail, AttemptsPage, AttemptsQuery, CancelRequest, CancelResponse, FailuresPage,
        FailuresQuery, InvalidateRequest, InvalidateResponse,
    },
};

/// Attempts or failures per page when the client does not say.
const DEFAULT_PAGE: usize = 50;

pub(super) async fn summary(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<GraphSummary>, ApiError> {
    caller.may(Action::Read)?;
    Ok(Json(state.control_plane().summary().await?))
}

pub(super) async fn attempts(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<AttemptsQuery>,
) -> Result<Json<AttemptsPage>, ApiError> {
    caller.may(Action::Read)?;
    let max = state.config().limits.page_size;
    let query = AttemptQuery {
        target: query.target,
        status: query.status,
        limit: query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, max),
        cursor: query.cursor,
    };
    Ok(Json(state.control_plane().attempts(&query).await?))
}

fn attempt_id(raw: String) -> Result<AttemptId, ApiError> {
    AttemptId::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub(super) async fn attempt(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AttemptDetail>, ApiError> {
    let id = attempt_id(id)?;
    caller.may(Action::ReadAttempt(&id))?;
    let max_events = state.config().limits.page_size;
    Ok(Json(state.control_plane().attempt(&id, max_events).await?))
}

pub(super) async fn failures(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<FailuresQuery>,
) -> Result<Json<FailuresPage>, ApiError> {
    caller.may(Action::Read)?;
    let max = state.config().limits.page_size;
    let query = FailureQuery {
        target: query.target,
        limit: query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, max),
        cursor: query.cursor,
    };
    Ok(Json(state.control_plane().failures(&query).await?))
}

pub(super) async fn invalidate(
    caller: Caller,
    state: State<ApiState>,
    id: Path<String>,
    ApiJson(request): ApiJson<InvalidateRequest>,
) -> Result<Json<InvalidateResponse>, ApiError> {
    act(AttemptAction::Invalidate, caller, state, id, request).await
}

pub(super) async fn cancel(
    caller: Caller,
    state: State<ApiState>,
    id: Path<String>,
    ApiJson(request): ApiJson<CancelRequest>,
) -> Result<Json<CancelResponse>, ApiError> {
    act(AttemptAction::Cancel, caller, state, id, request).await
}

async fn act(
    action: AttemptAction,
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: InvalidateRequest,
) -> Result<Json<InvalidateResponse>, ApiError> {
    let id = attempt_id(id)?;
    caller.may(action.authorization(&id))?;
    let response = state
        .control_plane()
        .attempt_action(
            action,
            &id,
            &request.reason,
            request.event_id,
            Some(caller.0),
        )
        .await?;
    if !response.duplicate {
        tracing::info!(attempt_id = %id, seq = response.event.seq, "attempt {} by an operator", action.done());
    }
    Ok(Json(response))
}
