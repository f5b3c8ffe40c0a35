//! The verifiable log: the latest signed checkpoint (C2SP signed note, `text/plain`, with any
//! witnesses' cosignatures), signing on demand, witnesses posting cosignatures, inclusion and
//! consistency proofs (JSON, hashes in base64).

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use leviathan_core::{
    auth::Action,
    id::EventId,
    tlog::{ConsistencyProof, InclusionProof, StoredCheckpoint},
};
use serde::Deserialize;

use super::{
    ApiError,
    extract::{ApiQuery, Caller},
};
use crate::{code::ErrorCode, service::Leaf, state::ApiState};

/// The log's routes: for readers and up. Signing a checkpoint on demand only signs what the log
/// already holds, and a cosignature is accepted only from a configured witness's key, so
/// neither needs more than reading.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/log/checkpoint", get(checkpoint).post(sign))
        .route("/v1/log/cosignature", post(cosign))
        .route("/v1/log/proof/inclusion", get(inclusion))
        .route("/v1/log/proof/consistency", get(consistency))
}

fn note(checkpoint: StoredCheckpoint) -> Response {
    let mut response = checkpoint.note.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn checkpoint(caller: Caller, State(state): State<ApiState>) -> Result<Response, ApiError> {
    caller.may(Action::Read)?;
    Ok(note(state.control_plane().latest_checkpoint().await?))
}

async fn sign(caller: Caller, State(state): State<ApiState>) -> Result<Response, ApiError> {
    caller.may(Action::Read)?;
    Ok(note(state.control_plane().sign_checkpoint().await?))
}

/// The body is the latest checkpoint as a signed note carrying the witness's cosignature (C2SP
/// `tlog-cosignature`); the answer is the checkpoint with every cosignature it now has.
async fn cosign(
    caller: Caller,
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.may(Action::Read)?;
    Ok(note(state.control_plane().add_cosignature(&body).await?))
}

/// `seq` or `event_id` (one of them), and `size` (default: the latest checkpoint's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    seq: Option<u64>,
    event_id: Option<String>,
    size: Option<u64>,
}

async fn inclusion(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    caller.may(Action::Read)?;
    let leaf =
        match (query.seq, query.event_id) {
            (Some(seq), None) => Leaf::Seq(seq),
            (None, Some(id)) => Leaf::EventId(EventId::new(id).map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("query `event_id`: {e}"))
            })?),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "give exactly one of the query parameters `seq` and `event_id`",
                ));
            }
        };
    let proof = state
        .control_plane()
        .inclusion_proof(leaf, query.size)
        .await?;
    Ok(Json(proof))
}

/// `from` and `to` (default: the latest checkpoint's size).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

async fn consistency(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    caller.may(Action::Read)?;
    let proof = state
        .control_plane()
        .consistency_proof(query.from, query.to)
        .await?;
    Ok(Json(proof))
}
