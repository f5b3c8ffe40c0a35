//! What can go wrong talking to a control plane.

use std::time::Duration;

use leviathan_core::{Sha256Digest, retry::Verdict};
use serde_json::Value;

use crate::{code::ErrorCode, config::TokenError};

/// An error of [`super::ControlPlaneClient`]. Never contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is unusable.
    #[error("invalid control-plane URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials, if any, removed).
        url: String,
        /// Why.
        reason: String,
    },
    /// The token is unusable.
    #[error("invalid control-plane token: {0}")]
    InvalidToken(#[from] TokenError),
    /// The control plane answered with an error.
    #[error("{endpoint}: HTTP {status} {}: {message}", code_label(*status, *code))]
    Status {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The API's stable error code; `None` when the body was not an API error (e.g. a
        /// proxy's page).
        code: Option<ErrorCode>,
        /// The API's message.
        message: String,
        /// Structured details (e.g. one entry per refused event).
        details: Vec<Value>,
        /// The `Retry-After` the server asked for.
        retry_after: Option<Duration>,
    },
    /// The request did not complete (connection refused or reset, timeout…).
    #[error("{endpoint}: {source}")]
    Transport {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not what the API promises.
    #[error("{endpoint}: unexpected answer: {reason}")]
    Decode {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// A downloaded artifact does not hash to its address.
    #[error("artifact {expected}: downloaded content hashes to {actual}")]
    DigestMismatch {
        /// The address asked for.
        expected: Sha256Digest,
        /// The digest of what arrived.
        actual: Sha256Digest,
    },
    /// An event stream broke its promise (a gap or a reordering) or ended in an error.
    #[error("event stream: {reason}")]
    Stream {
        /// What happened.
        reason: String,
    },
}

impl ClientError {
    /// True when the same request may succeed later: connection failures and timeouts, 408,
    /// 429 and 5xx answers (except 501 and 505).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { source, .. } => !source.is_builder() && !source.is_redirect(),
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code of an error answer (`None` for other errors, and for answers that
    /// were not the API's).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Status { code, .. } => *code,
            _ => None,
        }
    }

    /// What the one retry policy makes of this error: transient ones are retried, after the
    /// server's `Retry-After` when it gave one.
    pub fn verdict(&self) -> Verdict {
        match (self.is_transient(), self.retry_after()) {
            (false, _) => Verdict::Permanent,
            (true, Some(wait)) => Verdict::RetryAfter(wait),
            (true, None) => Verdict::Transient,
        }
    }

    /// How long the server asked to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The code as messages show it: the API's, or `http_<status>` for an answer that was not the
/// API's.
pub(super) fn code_label(status: u16, code: Option<ErrorCode>) -> String {
    code.map_or_else(|| format!("http_{status}"), |code| code.to_string())
}
