//! JSON over HTTP for the API providers: bounded retries on 429, 529, 5xx and transport
//! failures, honouring `retry-after`.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::code_model::ModelError;
use crate::config::Backoff;

/// Statuses worth retrying: rate limits, Anthropic's 529 "overloaded", and transient server errors.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504 | 529)
}

/// `retry-after` in seconds (integer or decimal); HTTP dates are not used by model APIs.
fn retry_after(response: &Response) -> Option<Duration> {
    let raw = response.headers().get("retry-after")?.to_str().ok()?;
    let secs: f64 = raw.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A reqwest client with the per-call time limit.
pub(super) fn client(timeout: Duration) -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| ModelError::Unavailable(format!("cannot build an HTTP client: {e}")))
}

/// Sends the request `build` makes (again for each retry) and returns the JSON body of the
/// first successful answer.
pub(super) async fn send_json(
    what: &str,
    backoff: &Backoff,
    build: impl Fn() -> RequestBuilder,
) -> Result<Value, ModelError> {
    let attempts = backoff.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let last = attempt >= attempts;
        let (reason, wait) = match build().send().await {
            Ok(response) if response.status().is_success() => {
                let status = response.status();
                return response.json::<Value>().await.map_err(|e| {
                    ModelError::BadResponse(format!(
                        "{what}: {status} with an unreadable body: {e}"
                    ))
                });
            }
            Ok(response) => {
                let status = response.status();
                let wait = retry_after(&response);
                let body = response.text().await.unwrap_or_default();
                let reason = format!("{what}: HTTP {status}: {}", excerpt(&body));
                if !retryable(status) {
                    return Err(if status.is_client_error() {
                        ModelError::Rejected(reason)
                    } else {
                        ModelError::Unavailable(reason)
                    });
                }
                (reason, wait)
            }
            Err(e) => (format!("{what}: {}", describe(&e)), None),
        };
        if last {
            return Err(ModelError::Unavailable(format!(
                "{reason} (gave up after {attempts} tries)"
            )));
        }
        tokio::time::sleep(backoff.delay(attempt, wait)).await;
        attempt += 1;
    }
}

/// The start of an error body, on one line.
fn excerpt(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The error's source chain carries the useful part (e.g. "connection refused").
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    format!("{kind}: {detail}")
}
