//! Canned REST failures a test injects, and GitHub's error body they answer with.

use axum::{
    Json,
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// GitHub's generic documentation link in error bodies.
pub(super) const DOCS: &str = "https://docs.github.com/rest";

/// GitHub's error body: `message`, `documentation_url` and the status as a string.
pub(super) fn error_body(status: StatusCode, message: &str, documentation_url: &str) -> Value {
    json!({ "message": message, "documentation_url": documentation_url, "status": status.as_str() })
}

/// A canned REST error response, injected with [`FakeGitHub::fail_next_rest`] or
/// [`FakeGitHub::fail_pull_listing`] to exercise a client's error handling.
#[derive(Debug, Clone)]
pub struct RestFailure {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Value,
}

impl RestFailure {
    /// A failure with `status` and GitHub's usual body for it
    /// (`{"message": …, "documentation_url": …, "status": "<code>"}`); a number that is not an
    /// HTTP status code becomes 500.
    pub fn new(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match status {
            StatusCode::UNAUTHORIZED => "Bad credentials",
            StatusCode::FORBIDDEN => "Resource not accessible by personal access token",
            StatusCode::NOT_FOUND => "Not Found",
            StatusCode::UNPROCESSABLE_ENTITY => "Validation Failed",
            status if status.is_server_error() => "Server Error",
            status => status.canonical_reason().unwrap_or("Error"),
        };
        Self {
            status,
            headers: Vec::new(),
            body: error_body(status, message, DOCS),
        }
    }

    /// GitHub's primary rate limit response: 403 with `x-ratelimit-remaining: 0` and an
    /// `x-ratelimit-reset` one minute from now.
    pub fn rate_limited() -> Self {
        let reset = chrono::Utc::now().timestamp() + 60;
        Self {
            status: StatusCode::FORBIDDEN,
            headers: vec![
                ("x-ratelimit-limit".into(), "5000".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-used".into(), "5000".into()),
                ("x-ratelimit-reset".into(), reset.to_string()),
                ("x-ratelimit-resource".into(), "core".into()),
            ],
            body: error_body(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for user ID 1.",
                "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            ),
        }
    }

    /// Adds a response header, e.g. `retry-after` for a secondary rate limit.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the JSON body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = body;
        self
    }
}

impl IntoResponse for RestFailure {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
            {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}
