//! `PUT|GET /v1/artifacts/{sha256}`: content-addressed uploads and downloads.

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use leviathan_core::{
    ArtifactError, Sha256Digest,
    auth::{Action, Role},
};

use super::ApiError;
use super::extract::{Caller, spool_hashed};
use crate::{service::ControlPlaneError, state::ApiState};

fn digest(raw: &str) -> Result<Sha256Digest, ApiError> {
    Sha256Digest::parse_hex(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Receives the body as it arrives, hashing each chunk and spooling it to a temporary file,
/// refused (413) as soon as it passes the artifact limit and (422 `digest_mismatch`) unless it
/// hashes to the address; only then is it stored, so a refused upload keeps nothing. Content
/// is in memory only while it is written into the store, a few uploads at a time (the
/// `artifact_writes` limit). 201 when new, 200 when it was already stored.
pub(super) async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::UploadArtifact)?;
    let expected = digest(&sha256)?;
    let limit = state.config().limits.artifact_bytes;
    let spooled = spool_hashed(&headers, body, limit).await?;
    let actual = spooled.sha256;
    if actual != expected {
        return Err(
            ControlPlaneError::from(ArtifactError::DigestMismatch { expected, actual }).into(),
        );
    }
    let _writing = state
        .artifact_writes()
        .acquire()
        .await
        .map_err(|e| ApiError::internal("the artifact writers are closed", &e))?;
    let stored = state
        .control_plane()
        .put_verified_artifact(spooled.into_bytes().await?)
        .await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)).into_response())
}

pub(super) async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let sha256 = digest(&sha256)?;
    if caller.may(Action::ReadArtifact).is_err() {
        // A worker reads its own attempt's base bundle, and nothing else.
        let own_base = match (&caller.0.role, &caller.0.attempt) {
            (Role::Worker, Some(attempt)) => state.control_plane().base_bundle_of(attempt).await?,
            _ => None,
        };
        if own_base != Some(sha256) {
            caller.may(Action::ReadArtifact)?;
        }
    }
    let content = state.control_plane().get_artifact(&sha256).await?;
    let mut response = content.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(response)
}
