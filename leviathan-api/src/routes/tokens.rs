//! Tokens: create, list, revoke and rotate the signing key (admin); mint an attempt's worker
//! token (scheduler, admin).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use leviathan_core::{auth::Action, id::AttemptId};

use super::{
    ApiError,
    extract::{ApiJson, Caller},
};
use crate::{
    state::ApiState,
    wire::{
        CreateTokenRequest, IssuedToken, MintWorkerTokenRequest, RevokeTokenRequest, RevokedToken,
        RotatedKey, TokenList,
    },
};

pub(super) async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    caller.may(Action::ManageTokens)?;
    let ledger = state.control_plane().ledger();
    let issued = state.authority().create(ledger, &caller.0, request).await?;
    tracing::info!(token_id = %issued.info.issued.token_id, role = %issued.info.issued.role, by = %caller.0, "token issued");
    Ok((StatusCode::CREATED, Json(issued)))
}

pub(super) async fn list(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<TokenList>, ApiError> {
    caller.may(Action::ManageTokens)?;
    let tokens = state
        .authority()
        .list(state.control_plane().ledger())
        .await?;
    Ok(Json(TokenList { tokens }))
}

pub(super) async fn revoke(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id_or_name): Path<String>,
    ApiJson(request): ApiJson<RevokeTokenRequest>,
) -> Result<Json<RevokedToken>, ApiError> {
    caller.may(Action::ManageTokens)?;
    let ledger = state.control_plane().ledger();
    let revoked = state
        .authority()
        .revoke(ledger, &caller.0, &id_or_name, request)
        .await?;
    if !revoked.duplicate {
        tracing::info!(token_id = %revoked.token_id, by = %caller.0, "token revoked");
    }
    Ok(Json(revoked))
}

pub(super) async fn rotate_key(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<RotatedKey>, ApiError> {
    caller.may(Action::ManageTokens)?;
    let key_id = state
        .authority()
        .rotate_key()
        .map_err(|e| ApiError::internal("rotating the signing key", &e))?;
    tracing::info!(%key_id, by = %caller.0, "signing key rotated");
    Ok(Json(RotatedKey { key_id }))
}

pub(super) async fn mint_worker_token(
    caller: Caller,
    State(state): State<ApiState>,
    Path(attempt): Path<String>,
    ApiJson(request): ApiJson<MintWorkerTokenRequest>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let attempt = AttemptId::new(attempt).map_err(|e| ApiError::bad_request(e.to_string()))?;
    caller.may(Action::MintWorkerToken(&attempt))?;
    let ledger = state.control_plane().ledger();
    let issued = state
        .authority()
        .mint_worker_token(ledger, &caller.0, &attempt, request)
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}
