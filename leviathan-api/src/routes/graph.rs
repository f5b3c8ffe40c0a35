//! Queries over the graph and the one operator action, invalidation.

use axum::{
    Json,
    extract::{Path, State},
};
use leviathan_core::{
    GraphSummary,
    graph::{AttemptQuery, FailureQuery},
    id::AttemptId,
};

use super::ApiError;
use super::extract::{ApiJson, ApiQuery};
use crate::{
    state::ApiState,
    wire::{
        AttemptDetail, AttemptsPage, AttemptsQuery, FailuresPage, FailuresQuery, InvalidateRequest,
        InvalidateResponse,
    },
};

/// Attempts or failures per page when the client does not say.
const DEFAULT_PAGE: usize = 50;

pub(super) async fn summary(State(state): State<ApiState>) -> Result<Json<GraphSummary>, ApiError> {
    Ok(Json(state.control_plane().summary().await?))
}

pub(super) async fn attempts(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<AttemptsQuery>,
) -> Result<Json<AttemptsPage>, ApiError> {
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
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AttemptDetail>, ApiError> {
    let id = attempt_id(id)?;
    let max_events = state.config().limits.page_size;
    Ok(Json(state.control_plane().attempt(&id, max_events).await?))
}

pub(super) async fn failures(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<FailuresQuery>,
) -> Result<Json<FailuresPage>, ApiError> {
    let max = state.config().limits.page_size;
    let query = FailureQuery {
        target: query.target,
        limit: query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, max),
        cursor: query.cursor,
    };
    Ok(Json(state.control_plane().failures(&query).await?))
}

pub(super) async fn invalidate(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<InvalidateRequest>,
) -> Result<Json<InvalidateResponse>, ApiError> {
    let id = attempt_id(id)?;
    let response = state
        .control_plane()
        .invalidate(&id, &request.reason, request.event_id)
        .await?;
    if !response.duplicate {
        tracing::info!(attempt_id = %id, seq = response.event.seq, "attempt invalidated by an operator");
    }
    Ok(Json(response))
}
