//! Errors as the API answers them: always JSON `{"error": {"code", "message", "details"?}}` with
//! a stable snake_case code and the right status. Internal failures are logged with a reference
//! and answered without their details.

use std::fmt;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use leviathan_core::{
    ArtifactError, EventStoreError, GraphStoreError, LedgerError, store::EventRejection,
};
use serde_json::{Value, json};

use crate::wire::{ErrorBody, ErrorDetail};

/// Stable error codes (the `error.code` field).
pub mod code {
    /// Missing or wrong bearer token.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// No such route.
    pub const NOT_FOUND: &str = "not_found";
    /// No attempt with this id.
    pub const ATTEMPT_NOT_FOUND: &str = "attempt_not_found";
    /// No event with this id.
    pub const EVENT_NOT_FOUND: &str = "event_not_found";
    /// No artifact with this digest.
    pub const ARTIFACT_NOT_FOUND: &str = "artifact_not_found";
    /// The route exists, the method does not.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The body is not JSON (the message says where).
    pub const MALFORMED_JSON: &str = "malformed_json";
    /// A query parameter, path segment or header is malformed.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The JSON does not have the expected shape (the message names the field).
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// An integer literal cannot be stored exactly.
    pub const INEXACT_NUMBER: &str = "inexact_number";
    /// Events were refused; `details` has one entry per offending event.
    pub const VALIDATION_FAILED: &str = "validation_failed";
    /// Referenced artifacts are not stored.
    pub const ARTIFACTS_MISSING: &str = "artifacts_missing";
    /// Uploaded content does not hash to the address it was sent to.
    pub const DIGEST_MISMATCH: &str = "digest_mismatch";
    /// The request body is larger than allowed.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// The bundle has more events than allowed.
    pub const TOO_MANY_EVENTS: &str = "too_many_events";
    /// A stream expectation failed; nothing was appended.
    pub const WRONG_EXPECTED_VERSION: &str = "wrong_expected_version";
    /// An event id is already used with different content.
    pub const EVENT_CONFLICT: &str = "event_conflict";
    /// The request conflicts with the current state (e.g. invalidating an invalidated attempt).
    pub const INVALID_STATE: &str = "invalid_state";
    /// The request did not finish in time.
    pub const TIMEOUT: &str = "timeout";
    /// A store is unreachable or overloaded; retry later.
    pub const STORE_UNAVAILABLE: &str = "store_unavailable";
    /// The control plane cannot serve yet.
    pub const NOT_READY: &str = "not_ready";
    /// Stored data fails its integrity check.
    pub const STORE_CORRUPT: &str = "store_corrupt";
    /// Anything else; the server log has the details under the reference in the message.
    pub const INTERNAL: &str = "internal";
}

/// An error answer of the API.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Value>,
    retry_after_secs: Option<u64>,
}

/// Marks responses built from an [`ApiError`], so the catch-all JSON layer leaves them alone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JsonErrorMarker;

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }

    /// Tells clients when to retry.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Structured details.
    pub fn details(&self) -> &[Value] {
        &self.details
    }

    /// 401, saying nothing else about the server.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "missing or invalid bearer token",
        )
    }

    /// 400 for a malformed query, path or header.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message)
    }

    /// 422 for well-formed JSON of the wrong shape.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::INVALID_REQUEST,
            message,
        )
    }

    /// 404 with a specific code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 422 listing refused events, one entry each.
    pub fn rejected(rejections: &[EventRejection]) -> Self {
        let details = rejections.iter().map(rejection_detail).collect();
        let message = match rejections {
            [one] => format!("1 event refused: {one}"),
            many => format!(
                "{} events refused; nothing was appended (see details)",
                many.len()
            ),
        };
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::VALIDATION_FAILED,
            message,
        )
        .with_details(details)
    }

    /// 500 for an unexpected failure: logged in full with a reference, answered with the
    /// reference only.
    pub fn internal(context: &str, error: &dyn fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(%reference, context, error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            format!("internal error (reference {reference})"),
        )
    }

    /// 503 for a store that cannot be reached: logged, answered without the store's details.
    pub fn unavailable(context: &str, error: &dyn fmt::Display) -> Self {
        tracing::warn!(context, error = %error, "store unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::STORE_UNAVAILABLE,
            format!("{context}: the store is unavailable; retry later"),
        )
        .retry_after(1)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

/// One refused event as it appears in `details`.
fn rejection_detail(r: &EventRejection) -> Value {
    json!({
        "index": r.index,
        "event_id": r.event_id,
        "event_type": r.event_type,
        "field": r.field,
        "reason": r.reason,
    })
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after_secs;
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(JsonErrorMarker);
        response
    }
}

impl From<EventStoreError> for ApiError {
    fn from(error: EventStoreError) -> Self {
        match error {
            EventStoreError::Invalid { rejections } => Self::rejected(&rejections),
            EventStoreError::Conflict { event_id, index } => Self::new(
                StatusCode::CONFLICT,
                code::EVENT_CONFLICT,
                format!(
                    "event `{event_id}` (index {index}) already exists with different content; nothing was appended"
                ),
            )
            .with_details(vec![json!({"index": index, "event_id": event_id})]),
            EventStoreError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => wrong_expected_version(&stream, expected, actual),
            EventStoreError::Corrupt { seq, reason } => {
                tracing::error!(?seq, %reason, "event store is corrupt");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::STORE_CORRUPT,
                    match seq {
                        Some(seq) => format!(
                            "the event store is corrupt at seq {seq}; run `leviathan events verify`"
                        ),
                        None => "the event store is corrupt; run `leviathan events verify`".into(),
                    },
                )
            }
            e @ (EventStoreError::Unavailable { .. } | EventStoreError::Locked { .. }) => {
                Self::unavailable("event store", &e)
            }
            other => Self::internal("event store", &other),
        }
    }
}

fn wrong_expected_version(
    stream: &leviathan_core::StreamId,
    expected: leviathan_core::ExpectedVersion,
    actual: u64,
) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        code::WRONG_EXPECTED_VERSION,
        format!(
            "stream `{stream}` is at version {actual}, expected {expected}; nothing was appended"
        ),
    )
    .with_details(vec![json!({
        "stream": stream,
        "expected": expected,
        "actual": actual,
    })])
}

impl From<GraphStoreError> for ApiError {
    fn from(error: GraphStoreError) -> Self {
        if error.is_transient() {
            Self::unavailable("graph store", &error)
        } else {
            Self::internal("graph store", &error)
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Rejected(rejections) => Self::rejected(&rejections),
            LedgerError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => wrong_expected_version(&stream, expected, actual),
            LedgerError::EventStore(e) => e.into(),
            LedgerError::GraphStore(e) => e.into(),
            other => Self::internal("ledger", &other),
        }
    }
}

impl From<ArtifactError> for ApiError {
    fn from(error: ArtifactError) -> Self {
        match error {
            ArtifactError::NotFound(sha256) => Self::not_found(
                code::ARTIFACT_NOT_FOUND,
                format!("no artifact {sha256} is stored"),
            ),
            ArtifactError::DigestMismatch { expected, actual } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code::DIGEST_MISMATCH,
                format!("the content hashes to {actual}, not {expected}; nothing was stored"),
            ),
            ArtifactError::Corrupt { sha256, reason } => {
                tracing::error!(%sha256, %reason, "stored artifact is corrupt");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::STORE_CORRUPT,
                    format!("the stored artifact {sha256} fails its hash check"),
                )
            }
            e @ ArtifactError::Unavailable { .. } => Self::unavailable("artifact store", &e),
            other => Self::internal("artifact store", &other),
        }
    }
}
