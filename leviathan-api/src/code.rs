//! The stable error codes of the API (`error.code` in every error body), shared by the server,
//! which answers with them, and the client, which returns them typed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable error code. On the wire it is the snake_case name (`attempt_not_found`); a code
/// this build does not know (from a newer server) reads as [`ErrorCode::Unrecognized`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Missing, wrong, expired or revoked bearer token.
    Unauthorized,
    /// The token is genuine but its role or scope does not allow the request (the message names
    /// both).
    Forbidden,
    /// No such route.
    NotFound,
    /// No attempt with this id.
    AttemptNotFound,
    /// No event with this id.
    EventNotFound,
    /// No token with this id or name.
    TokenNotFound,
    /// No artifact with this digest.
    ArtifactNotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// The body is not JSON (the message says where).
    MalformedJson,
    /// A query parameter, path segment or header is malformed.
    BadRequest,
    /// The JSON does not have the expected shape (the message names the field).
    InvalidRequest,
    /// An integer literal cannot be stored exactly.
    InexactNumber,
    /// Events were refused; `details` has one entry per offending event.
    ValidationFailed,
    /// Referenced artifacts are not stored.
    ArtifactsMissing,
    /// Uploaded content does not hash to the address it was sent to.
    DigestMismatch,
    /// The request body is larger than allowed.
    BodyTooLarge,
    /// The bundle has more events than allowed.
    TooManyEvents,
    /// A stream expectation failed; nothing was appended.
    WrongExpectedVersion,
    /// No signed checkpoint can be served (none signed yet, or the log is not signed).
    NoCheckpoint,
    /// A proof was asked for a leaf or tree size beyond the log, or from a larger tree to a
    /// smaller one.
    OutsideTree,
    /// An event id is already used with different content.
    EventConflict,
    /// A bundle id was already ingested with other content; nothing was appended.
    BundleConflict,
    /// The request conflicts with the current state (e.g. invalidating an invalidated attempt).
    InvalidState,
    /// Too many requests are in progress; retry after `Retry-After` seconds.
    TooManyRequests,
    /// The request did not finish in time.
    Timeout,
    /// A store is unreachable or overloaded; retry later.
    StoreUnavailable,
    /// The control plane cannot serve yet.
    NotReady,
    /// Stored data fails its integrity check.
    StoreCorrupt,
    /// Anything else; the server log has the details under the reference in the message.
    Internal,
    /// A code this build does not know (a newer server's); servers never send it.
    #[serde(other)]
    Unrecognized,
}

impl ErrorCode {
    /// Every code a server may send, in documentation order.
    pub const ALL: [Self; 29] = [
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::AttemptNotFound,
        Self::EventNotFound,
        Self::TokenNotFound,
        Self::ArtifactNotFound,
        Self::MethodNotAllowed,
        Self::MalformedJson,
        Self::BadRequest,
        Self::InvalidRequest,
        Self::InexactNumber,
        Self::ValidationFailed,
        Self::ArtifactsMissing,
        Self::DigestMismatch,
        Self::BodyTooLarge,
        Self::TooManyEvents,
        Self::WrongExpectedVersion,
        Self::NoCheckpoint,
        Self::OutsideTree,
        Self::EventConflict,
        Self::BundleConflict,
        Self::InvalidState,
        Self::TooManyRequests,
        Self::Timeout,
        Self::StoreUnavailable,
        Self::NotReady,
        Self::StoreCorrupt,
        Self::Internal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::AttemptNotFound => "attempt_not_found",
            Self::EventNotFound => "event_not_found",
            Self::TokenNotFound => "token_not_found",
            Self::ArtifactNotFound => "artifact_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::MalformedJson => "malformed_json",
            Self::BadRequest => "bad_request",
            Self::InvalidRequest => "invalid_request",
            Self::InexactNumber => "inexact_number",
            Self::ValidationFailed => "validation_failed",
            Self::ArtifactsMissing => "artifacts_missing",
            Self::DigestMismatch => "digest_mismatch",
            Self::BodyTooLarge => "body_too_large",
            Self::TooManyEvents => "too_many_events",
            Self::WrongExpectedVersion => "wrong_expected_version",
            Self::NoCheckpoint => "no_checkpoint",
            Self::OutsideTree => "outside_tree",
            Self::EventConflict => "event_conflict",
            Self::BundleConflict => "bundle_conflict",
            Self::InvalidState => "invalid_state",
            Self::TooManyRequests => "too_many_requests",
            Self::Timeout => "timeout",
            Self::StoreUnavailable => "store_unavailable",
            Self::NotReady => "not_ready",
            Self::StoreCorrupt => "store_corrupt",
            Self::Internal => "internal",
            Self::Unrecognized => "unrecognized",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_is_the_serde_name() {
        for code in ErrorCode::ALL.into_iter().chain([ErrorCode::Unrecognized]) {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str(), "{code:?}");
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), code);
        }
    }

    #[test]
    fn unknown_codes_read_as_unrecognized() {
        let code: ErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(code, ErrorCode::Unrecognized);
        assert!(!ErrorCode::ALL.contains(&ErrorCode::Unrecognized));
    }
}
