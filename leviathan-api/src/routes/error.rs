//! Errors as the API answers them: always JSON `{"error": {"code", "message", "details"?}}` with
//! a stable [`ErrorCode`] and its HTTP status. This is the one place where the control plane's
//! semantic errors ([`ControlPlaneError`]) become statuses. Internal failures are logged with a
//! reference and answered without their details.

use std::fmt;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use leviathan_core::{
    ArtifactError, EventStoreError, ExpectedVersion, LedgerError, StreamId, auth::Forbidden,
    store::EventRejection,
};
use serde_json::{Value, json};

use crate::{
    authority::Unauthenticated,
    code::ErrorCode,
    service::ControlPlaneError,
    wire::{ErrorBody, ErrorDetail},
};

/// The HTTP status an error code is answered with (a few conversions of other layers' errors
/// keep their own status, see [`ApiError::with_status`]).
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound
        | ErrorCode::AttemptNotFound
        | ErrorCode::EventNotFound
        | ErrorCode::TokenNotFound
        | ErrorCode::ArtifactNotFound
        | ErrorCode::NoCheckpoint => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MalformedJson | ErrorCode::BadRequest | ErrorCode::OutsideTree => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::InvalidRequest
        | ErrorCode::InexactNumber
        | ErrorCode::ValidationFailed
        | ErrorCode::ArtifactsMissing
        | ErrorCode::DigestMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::BodyTooLarge | ErrorCode::TooManyEvents => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::WrongExpectedVersion
        | ErrorCode::EventConflict
        | ErrorCode::BundleConflict
        | ErrorCode::InvalidState => StatusCode::CONFLICT,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Timeout | ErrorCode::StoreUnavailable | ErrorCode::NotReady => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::StoreCorrupt | ErrorCode::Internal | ErrorCode::Unrecognized => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// An error answer of the API.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    details: Vec<Value>,
    retry_after_secs: Option<u64>,
}

/// Marks responses built from an [`ApiError`], so the catch-all JSON layer leaves them alone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JsonErrorMarker;

impl ApiError {
    /// An error with a stable code (answered with the code's status) and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_status(status_of(code), code, message)
    }

    /// An error answered with `status` rather than the code's own (e.g. a 408 from a lower
    /// layer, reported as `timeout`).
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
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
    pub fn code(&self) -> ErrorCode {
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
        Self::new(ErrorCode::Unauthorized, "missing or invalid bearer token")
    }

    /// 401 for a token that is not accepted, saying why (never quoting it).
    pub fn unauthenticated(why: &Unauthenticated) -> Self {
        match why {
            Unauthenticated::Unverifiable(error) => {
                tracing::warn!(%error, "cannot read the log to check a token's revocation");
                Self::new(
                    ErrorCode::StoreUnavailable,
                    "cannot check the token now; retry later",
                )
                .retry_after(1)
            }
            Unauthenticated::Missing | Unauthenticated::Invalid => Self::unauthorized(),
            other => Self::new(ErrorCode::Unauthorized, other.to_string()),
        }
    }

    /// 403 naming the principal's scope and what it may not do.
    pub fn forbidden(refusal: &Forbidden) -> Self {
        let mut error = Self::new(ErrorCode::Forbidden, refusal.to_string());
        if let Some(index) = refusal.index {
            error.message.push_str("; nothing was appended");
            error.details = vec![json!({ "index": index, "scope": refusal.scope })];
        }
        error
    }

    /// 400 for a malformed query, path or header.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 422 for well-formed JSON of the wrong shape.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
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
        Self::new(ErrorCode::ValidationFailed, message).with_details(details)
    }

    /// 500 for an unexpected failure: logged in full with a reference, answered with the
    /// reference only.
    pub fn internal(context: &str, error: &dyn fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(%reference, context, error = %error, "internal error");
        Self::new(
            ErrorCode::Internal,
            format!("internal error (reference {reference})"),
        )
    }

    /// 503 for a store that cannot be reached: logged, answered without the store's details.
    pub fn unavailable(context: &str, error: &dyn fmt::Display) -> Self {
        tracing::warn!(context, error = %error, "store unavailable");
        Self::new(
            ErrorCode::StoreUnavailable,
            format!("{context}: the store is unavailable; retry later"),
        )
        .retry_after(1)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
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

impl From<ControlPlaneError> for ApiError {
    fn from(error: ControlPlaneError) -> Self {
        let code = error.code();
        match error {
            ControlPlaneError::Ledger(error) => ledger_error(code, error),
            ControlPlaneError::EventStore(error) => event_store_error(code, error),
            ControlPlaneError::Artifacts(error) => artifact_error(code, error),
            ControlPlaneError::Internal { context, source } => Self::internal(context, &source),
            ControlPlaneError::Forbidden(refusal) => Self::forbidden(&refusal),
            ControlPlaneError::ArtifactsMissing(missing) => {
                let message = ControlPlaneError::ArtifactsMissing(missing.clone()).to_string();
                let details = missing
                    .iter()
                    .map(|m| json!({"sha256": m.sha256, "referenced_by": m.referenced_by}))
                    .collect();
                Self::new(code, message).with_details(details)
            }
            other => Self::new(code, other.to_string()),
        }
    }
}

/// The event log's failures as the event stream route meets them.
impl From<EventStoreError> for ApiError {
    fn from(error: EventStoreError) -> Self {
        ControlPlaneError::from(error).into()
    }
}

fn ledger_error(code: ErrorCode, error: LedgerError) -> ApiError {
    match error {
        LedgerError::Rejected(rejections) => ApiError::rejected(&rejections),
        LedgerError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => wrong_expected_version(code, &stream, expected, actual),
        LedgerError::EventStore(error) => event_store_error(code, error),
        error @ LedgerError::GraphStore(_) if code == ErrorCode::StoreUnavailable => {
            ApiError::unavailable("graph store", &error)
        }
        LedgerError::GraphStore(error) => ApiError::internal("graph store", &error),
        other => ApiError::internal("ledger", &other),
    }
}

fn event_store_error(code: ErrorCode, error: EventStoreError) -> ApiError {
    match error {
        EventStoreError::Invalid { rejections } => ApiError::rejected(&rejections),
        EventStoreError::Conflict { event_id, index } => ApiError::new(
            code,
            format!(
                "event `{event_id}` (index {index}) already exists with different content; nothing was appended"
            ),
        )
        .with_details(vec![json!({"index": index, "event_id": event_id})]),
        EventStoreError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => wrong_expected_version(code, &stream, expected, actual),
        EventStoreError::Corrupt { seq, reason } => {
            tracing::error!(?seq, %reason, "event store is corrupt");
            ApiError::new(
                code,
                match seq {
                    Some(seq) => format!(
                        "the event store is corrupt at seq {seq}; run `leviathan events verify`"
                    ),
                    None => "the event store is corrupt; run `leviathan events verify`".into(),
                },
            )
        }
        error if code == ErrorCode::StoreUnavailable => ApiError::unavailable("event store", &error),
        other => ApiError::internal("event store", &other),
    }
}

fn wrong_expected_version(
    code: ErrorCode,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) -> ApiError {
    ApiError::new(
        code,
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

fn artifact_error(code: ErrorCode, error: ArtifactError) -> ApiError {
    match error {
        ArtifactError::NotFound(sha256) => {
            ApiError::new(code, format!("no artifact {sha256} is stored"))
        }
        ArtifactError::DigestMismatch { expected, actual } => ApiError::new(
            code,
            format!("the content hashes to {actual}, not {expected}; nothing was stored"),
        ),
        ArtifactError::Corrupt { sha256, reason } => {
            tracing::error!(%sha256, %reason, "stored artifact is corrupt");
            ApiError::new(
                code,
                format!("the stored artifact {sha256} fails its hash check"),
            )
        }
        error if code == ErrorCode::StoreUnavailable => {
            ApiError::unavailable("artifact store", &error)
        }
        other => ApiError::internal("artifact store", &other),
    }
}

#[cfg(test)]
mod tests {
    use leviathan_core::{GraphStoreError, Sha256Digest, id::AttemptId};

    use super::*;
    use crate::service::MissingArtifact;

    /// The answer carries the code the operation's error has, whatever the layer it came from.
    #[test]
    fn answers_keep_the_semantic_code() {
        let sha = Sha256Digest::of(b"x");
        let errors = vec![
            ControlPlaneError::AttemptNotFound(AttemptId::new("a-1").unwrap()),
            ControlPlaneError::ArtifactsMissing(vec![MissingArtifact {
                sha256: sha,
                referenced_by: "artifacts[0]".into(),
            }]),
            ControlPlaneError::Ledger(LedgerError::Rejected(Vec::new())),
            ControlPlaneError::Ledger(LedgerError::GraphStore(GraphStoreError::Unavailable {
                reason: "down".into(),
                source: None,
            })),
            ControlPlaneError::EventStore(EventStoreError::Corrupt {
                seq: Some(3),
                reason: "bad hash".into(),
            }),
            ControlPlaneError::Artifacts(ArtifactError::NotFound(sha)),
            ControlPlaneError::Artifacts(ArtifactError::Unavailable {
                reason: "down".into(),
                source: None,
            }),
            ControlPlaneError::Internal {
                context: "test",
                source: "boom".into(),
            },
        ];
        for error in errors {
            let code = error.code();
            let answer = ApiError::from(error);
            assert_eq!(answer.code(), code);
            assert_eq!(answer.status(), status_of(code));
        }
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let answer = ApiError::from(ControlPlaneError::Internal {
            context: "test",
            source: "secret detail".into(),
        });
        assert!(!answer.message().contains("secret detail"), "{answer}");
        assert!(answer.message().starts_with("internal error (reference "));
    }
}
