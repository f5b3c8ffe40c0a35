//! What a console request can fail with, rendered as a small HTML page with its status.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{DOCTYPE, html};

use crate::service::ControlPlaneError;

/// A console request that could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConsoleError {
    /// No session, or it ended.
    #[error("{0}")]
    Unauthenticated(String),
    /// Signed in, but not allowed (role, CSRF, cross-site).
    #[error("{0}")]
    Forbidden(String),
    /// A parameter or form field is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// Try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The token is over its request rate: try again after the seconds given.
    #[error("{0}")]
    TooManyRequests(String, u64),
    /// The control plane refused or failed.
    #[error(transparent)]
    Plane(#[from] ControlPlaneError),
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::Plane(e) => crate::routes::error::status_of(e.code()),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "console request failed");
        }
        let message = match &self {
            Self::Plane(e) if status.is_server_error() => {
                format!("the control plane could not answer ({})", e.code().as_str())
            }
            other => other.to_string(),
        };
        let page = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "Error " (status.as_u16()) } }
                body { main { h1 { (status) } p role="alert" { (message) } } }
            }
        };
        let mut response = (status, page).into_response();
        if let Self::TooManyRequests(_, seconds) = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
