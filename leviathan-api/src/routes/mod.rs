//! The router: routes, bearer authentication, deadlines, and JSON for every error.

mod artifacts;
pub(crate) mod error;
mod events;
mod extract;
mod graph;
mod ingest;
mod log;
mod ops;
mod tokens;

use std::{any::Any, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use headers::{Authorization, HeaderMapExt, authorization::Bearer};
use leviathan_core::{
    Timestamp,
    auth::{Principal, Role},
};
use tokio::sync::Semaphore;
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

pub use self::error::ApiError;

use self::{error::JsonErrorMarker, extract::Caller};
use crate::{authority::Unauthenticated, code::ErrorCode, state::ApiState};

/// The control plane's routes, ready to serve or to `nest`/`merge` into another service.
///
/// Open: `GET /healthz`, `GET /readyz` and (unless [`crate::ApiConfig::metrics_require_auth`])
/// `GET /metrics`. Everything else, including unknown paths, requires the bearer token, so an
/// unauthenticated client learns nothing about the server. Every error is JSON.
///
/// The router has a fallback (a JSON 404 behind the token); merge it only into a router without
/// one, or `nest` it under a prefix.
pub fn router(state: ApiState) -> Router {
    let limits = state.config().limits.clone();
    let quick = Router::new()
        .route("/v1/events/ingest", post(ingest::ingest))
        .route("/v1/events", get(events::page))
        .route("/v1/events/find", post(events::find))
        .route("/v1/events/head", get(events::head))
        .route("/v1/events/by-id/{event_id}", get(events::get))
        .route("/v1/streams/{stream}", get(events::stream_version))
        .route("/v1/graph/summary", get(graph::summary))
        .route("/v1/attempts", get(graph::attempts))
        .route("/v1/attempts/{attempt_id}", get(graph::attempt))
        .route(
            "/v1/attempts/{attempt_id}/invalidate",
            post(graph::invalidate),
        )
        .route("/v1/attempts/{attempt_id}/cancel", post(graph::cancel))
        .route("/v1/failures", get(graph::failures))
        .route(
            "/v1/attempts/{attempt_id}/token",
            post(tokens::mint_worker_token),
        )
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/rotate-key", post(tokens::rotate_key))
        .route("/v1/tokens/{token}/revoke", post(tokens::revoke))
        .merge(log::routes())
        .route_layer(middleware::from_fn_with_state(
            limits.request_timeout,
            deadline,
        ));
    let slow = Router::new()
        .route(
            "/v1/artifacts/{sha256}",
            put(artifacts::put).get(artifacts::get),
        )
        .route("/v1/chain/verify", get(ops::verify))
        .route_layer(middleware::from_fn_with_state(
            limits.long_request_timeout,
            deadline,
        ));
    let mut protected = quick
        .merge(slow)
        .route("/v1/events/stream", get(events::stream));
    let mut open = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    if state.config().metrics_require_auth {
        protected = protected.route("/metrics", get(ops::metrics_protected));
    } else {
        open = open.route("/metrics", get(ops::metrics));
    }
    let permits = state.requests_in_progress().clone();
    // The gateway counts against the same limit on requests in progress (until its answer's
    // head: a stream's body runs on without a slot), keeps its own deadline and answers in the
    // providers' error shapes, so it sits outside `json_errors`.
    let gateway = crate::gateway::routes(limits.json_body_bytes)
        .layer(middleware::from_fn_with_state(permits.clone(), admit));
    let protected = protected
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), pace))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ))
        .layer(middleware::from_fn_with_state(permits, admit));
    open.merge(protected)
        .layer(middleware::map_response(json_errors))
        .merge(gateway)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Lets a request through only with `Authorization: Bearer <token>` that authenticates (the
/// static admin token, compared in constant time, or a genuine, unexpired, unrevoked signed
/// token); the handlers find its [`Principal`](leviathan_core::auth::Principal) as a
/// [`extract::Caller`].
async fn require_bearer(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(bearer) = request.headers().typed_get::<Authorization<Bearer>>() else {
        return ApiError::unauthenticated(&Unauthenticated::Missing).into_response();
    };
    let plane = state.control_plane();
    let head = plane.ledger().checkpoint().await.map_or(0, |h| h.seq);
    let authenticated = state
        .authority()
        .authenticate(
            bearer.token(),
            plane.events().as_ref(),
            head,
            Timestamp::now(),
        )
        .await;
    match authenticated {
        Ok(principal) => {
            request.extensions_mut().insert(Caller(principal));
            next.run(request).await
        }
        Err(why) => ApiError::unauthenticated(&why).into_response(),
    }
}

/// Holds each principal that could be in an attacker's hands (a worker, a reader, an operator)
/// to its request rate: over it, 429 with the seconds until it may retry. Admin and scheduler
/// tokens are the control plane's own machinery (a scheduler replays and dispatches in bursts),
/// bounded by the global concurrency limit only.
async fn pace(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(Caller(principal)) = request.extensions().get::<Caller>() else {
        return next.run(request).await;
    };
    if let Err(wait) = over_rate(&state, principal) {
        return ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "token `{}` is over its request rate; retry later",
                principal.token_id
            ),
        )
        .retry_after(wait.as_secs().max(1))
        .into_response();
    }
    next.run(request).await
}

/// `Err(wait)` when `principal` is over its request rate (never for admin and scheduler tokens).
pub(crate) fn over_rate(state: &ApiState, principal: &Principal) -> Result<(), Duration> {
    match principal.role {
        Role::Admin | Role::Scheduler => Ok(()),
        _ => state.throttle().admit(&principal.token_id),
    }
}

/// Admits a request only while fewer than the configured number are in progress (bodies are
/// read inside, so this bounds their memory); the others get 429 with `Retry-After` at once,
/// rather than a queue that would hold their connections and grow without bound.
pub(crate) async fn admit(
    State(permits): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(permit) = permits.try_acquire() else {
        return ApiError::new(
            ErrorCode::TooManyRequests,
            "too many requests in progress; retry later",
        )
        .retry_after(1)
        .into_response();
    };
    let response = next.run(request).await;
    drop(permit);
    response
}

/// Ends a request that runs past `limit` with a retryable 503.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "the request did not complete within {} s; retry later",
                limit.as_secs_f64()
            ),
        )
        .retry_after(1)
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// Turns any error response that is not already an API error (axum's own 405, an extractor's
/// rejection) into the JSON error shape, keeping its status and headers.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<JsonErrorMarker>().is_some()
    {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this route does not support this method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::BodyTooLarge, "the request body is too large"),
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "the request took too long"),
        StatusCode::UNPROCESSABLE_ENTITY => (ErrorCode::InvalidRequest, "the request is invalid"),
        s if s.is_server_error() => (ErrorCode::Internal, "internal error"),
        _ => (ErrorCode::BadRequest, "the request is malformed"),
    };
    let (parts, _) = response.into_parts();
    let mut converted = ApiError::with_status(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().append(name, value.clone());
        }
    }
    converted
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal("request handler", &"the handler panicked").into_response()
}
