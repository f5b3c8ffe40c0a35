//! The event log: pages by `seq`, lookups by id, the head, stream versions and the live stream.

use std::convert::Infallible;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{StreamExt, future::ready};
use leviathan_core::{Event, StreamId, auth::Action, id::EventId};
use serde::Deserialize;

use super::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::{
    code::ErrorCode,
    state::ApiState,
    wire::{
        EventsPage, EventsQuery, FindEventsRequest, FoundEvents, HeadResponse, LAST_EVENT_ID,
        StreamVersion,
    },
};

/// Events per page when the client does not say.
const DEFAULT_PAGE: usize = 100;

pub(super) async fn page(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    caller.may(Action::Read)?;
    let max = state.config().limits.page_size;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, max);
    let page = state
        .control_plane()
        .events_page(query.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(page))
}

pub(super) async fn find(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<FindEventsRequest>,
) -> Result<Json<FoundEvents>, ApiError> {
    caller.may(Action::Read)?;
    let max = state.config().limits.events_per_bundle;
    if request.ids.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooManyEvents,
            format!(
                "{} ids requested; at most {max} per request",
                request.ids.len()
            ),
        ));
    }
    Ok(Json(state.control_plane().find_events(&request.ids).await?))
}

pub(super) async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(event_id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    caller.may(Action::Read)?;
    let id = EventId::new(event_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(state.control_plane().event(&id).await?))
}

pub(super) async fn head(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<HeadResponse>, ApiError> {
    caller.may(Action::Read)?;
    Ok(Json(HeadResponse {
        head: state.control_plane().head().await?,
    }))
}

pub(super) async fn stream_version(
    caller: Caller,
    State(state): State<ApiState>,
    Path(stream): Path<String>,
) -> Result<Json<StreamVersion>, ApiError> {
    caller.may(Action::Read)?;
    if stream.is_empty() || stream.len() > 512 || stream.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "the stream name must be 1 to 512 bytes without control characters",
        ));
    }
    let stream = StreamId::from_raw(stream);
    let version = state.control_plane().stream_version(&stream).await?;
    Ok(Json(StreamVersion { stream, version }))
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamQuery {
    after: Option<u64>,
}

/// `GET /v1/events/stream`: every event with `seq > after` (or `>` the `Last-Event-ID` header,
/// which wins), then each new one as it is appended. The SSE id of each event is its `seq`.
/// A store error is sent as an `error` event and ends the stream.
pub(super) async fn stream(
    caller: Caller,
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    caller.may(Action::Read)?;
    let slot = state
        .throttle()
        .open_stream(&caller.0.token_id)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "token `{}` has {} event streams open already; close one first",
                    caller.0.token_id,
                    state.config().limits.streams_per_principal
                ),
            )
            .retry_after(1)
        })?;
    let after = match headers.get(LAST_EVENT_ID) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "header `Last-Event-ID` must be the seq of an event (a non-negative integer)",
                )
            })?,
        None => query.after.unwrap_or(0),
    };
    let events = state.control_plane().events().subscribe(after).await?;
    let closed = state.streams_closed();
    let stream = events
        .scan(false, |ended, item| {
            if *ended {
                return ready(None);
            }
            let message = match item {
                Ok(event) => to_sse(&event),
                Err(error) => {
                    *ended = true;
                    error_sse(ApiError::from(error))
                }
            };
            ready(Some(Ok::<_, Infallible>(message)))
        })
        .take_until(closed.cancelled_owned())
        // The stream holds its principal's slot until it ends or its client goes away.
        .map(move |message| {
            let _held = &slot;
            message
        });
    let keep_alive = KeepAlive::new().interval(state.config().limits.stream_keep_alive);
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    // Reverse proxies must pass events through as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn to_sse(event: &Event) -> SseEvent {
    match SseEvent::default()
        .id(event.seq.to_string())
        .json_data(event)
    {
        Ok(message) => message,
        Err(error) => error_sse(ApiError::internal("event stream", &error)),
    }
}

fn error_sse(error: ApiError) -> SseEvent {
    let body = serde_json::to_string(&error.body()).unwrap_or_else(|_| {
        r#"{"error":{"code":"internal","message":"internal error"}}"#.to_owned()
    });
    SseEvent::default().event("error").data(body)
}
