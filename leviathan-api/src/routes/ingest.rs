//! `POST /v1/events/ingest`.

use std::time::Instant;

use axum::{
    Json,
    body::Body,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use leviathan_core::{NewEvent, auth::Principal, catalogue, store::EventRejection};
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use super::extract::{Caller, missing_field, parse_json, read_limited};
use crate::{
    code::ErrorCode,
    metrics::IngestOutcome,
    state::ApiState,
    wire::{BundleArtifact, IngestRequest, IngestResponse, WireExpectation},
};

/// The bundle with its events still raw, so that each event's envelope is checked on its own and
/// reported with its index.
#[derive(Deserialize)]
struct RawBundle {
    target: String,
    bundle_id: String,
    events: Vec<Value>,
    #[serde(default)]
    artifacts: Vec<BundleArtifact>,
    #[serde(default)]
    expectations: Vec<WireExpectation>,
}

pub(super) async fn ingest(
    Caller(principal): Caller,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = ingest_bundle(&state, &principal, &headers, body).await;
    let outcome = match &result {
        Ok(r) if r.status == IngestResponse::DUPLICATE => IngestOutcome::Duplicate,
        Ok(_) => IngestOutcome::Ok,
        Err(e) if e.status().is_client_error() => IngestOutcome::Rejected,
        Err(_) => IngestOutcome::Failed,
    };
    state.metrics().record_ingest(outcome, started.elapsed());
    match result {
        Ok(response) => Json(response).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn ingest_bundle(
    state: &ApiState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestResponse, ApiError> {
    let limits = &state.config().limits;
    let bytes = read_limited(headers, body, limits.json_body_bytes as u64).await?;
    // Fast path: the bundle decodes as it should. Only a bundle that does not is decoded again,
    // event by event, to name every offending event.
    let request = match parse_json::<IngestRequest>(&bytes) {
        Ok(request) => request,
        Err(error) if error.code() == ErrorCode::InvalidRequest => {
            let raw: RawBundle = parse_json(&bytes)?;
            check_count(raw.events.len(), limits.events_per_bundle)?;
            IngestRequest {
                events: parse_events(raw.events)?,
                target: raw.target,
                bundle_id: raw.bundle_id,
                artifacts: raw.artifacts,
                expectations: raw.expectations,
            }
        }
        Err(error) => return Err(error),
    };
    check_count(request.events.len(), limits.events_per_bundle)?;
    check_label("target", &request.target)?;
    check_label("bundle_id", &request.bundle_id)?;
    let target = request.target.clone();
    let response = state.control_plane().ingest(principal, request).await?;
    tracing::debug!(
        %target,
        bundle_id = %response.bundle_id,
        ingested = response.ingested,
        duplicates = response.duplicates,
        "bundle ingested"
    );
    Ok(response)
}

fn check_count(events: usize, max: usize) -> Result<(), ApiError> {
    if events > max {
        return Err(ApiError::new(
            ErrorCode::TooManyEvents,
            format!("the bundle has {events} events; at most {max} are allowed per bundle"),
        ));
    }
    Ok(())
}

/// `target` and `bundle_id` are labels for logs: 1 to 256 bytes without control characters.
fn check_label(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(ApiError::invalid_request(format!(
            "field `{field}`: must be 1 to 256 bytes without control characters"
        )));
    }
    Ok(())
}

/// Decodes each event's envelope. When some fail, the others are checked against the catalogue
/// too, so that one answer lists every offending event.
fn parse_events(raw: Vec<Value>) -> Result<Vec<NewEvent>, ApiError> {
    let mut events = Vec::with_capacity(raw.len());
    let mut rejections = Vec::new();
    for (index, value) in raw.into_iter().enumerate() {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let (event_id, event_type) = (text("event_id"), text("event_type"));
        match serde_path_to_error::deserialize::<_, NewEvent>(value) {
            Ok(event) => events.push((index, event)),
            Err(error) => {
                let path = error.path().to_string();
                let reason = error.into_inner().to_string();
                rejections.push(EventRejection {
                    index,
                    event_id,
                    event_type: event_type.unwrap_or_default(),
                    field: missing_field(&reason, &path),
                    reason,
                });
            }
        }
    }
    if rejections.is_empty() {
        return Ok(events.into_iter().map(|(_, e)| e).collect());
    }
    for (index, event) in &events {
        if let Err(error) = catalogue::validate(event) {
            rejections.push(EventRejection::from_payload(*index, event, error));
        }
    }
    rejections.sort_by_key(|r| r.index);
    Err(ApiError::rejected(&rejections))
}
