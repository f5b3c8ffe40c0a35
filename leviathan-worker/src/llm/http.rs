//! JSON over HTTP for the API providers: bounded retries on 429, 529, 5xx and transport
//! failures, honouring `retry-after`.

use std::{fmt, time::Duration};

use leviathan_core::retry::{RetryPolicy, Verdict};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::code_model::ModelError;

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
    retry: &RetryPolicy,
    build: impl Fn() -> RequestBuilder,
) -> Result<Value, ModelError> {
    let attempts = retry.max_attempts.max(1);
    let once = || send_once(what, build());
    match retry.retry(what, once, Failure::verdict).await {
        Ok(value) => Ok(value),
        Err(Failure::Final(error)) => Err(error),
        Err(Failure::Retryable { reason, .. }) => Err(ModelError::Unavailable(format!(
            "{reason} (gave up after {attempts} tries)"
        ))),
    }
}

/// One try's failure.
#[derive(Debug)]
enum Failure {
    /// Worth another try, after the server's `retry-after` when it gave one.
    Retryable {
        reason: String,
        wait: Option<Duration>,
    },
    /// Not worth another try.
    Final(ModelError),
}

impl Failure {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Final(_) => Verdict::Permanent,
            Self::Retryable {
                wait: Some(wait), ..
            } => Verdict::RetryAfter(*wait),
            Self::Retryable { wait: None, .. } => Verdict::Transient,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable { reason, .. } => f.write_str(reason),
            Self::Final(error) => error.fmt(f),
        }
    }
}

async fn send_once(what: &str, request: RequestBuilder) -> Result<Value, Failure> {
    let response = request.send().await.map_err(|e| Failure::Retryable {
        reason: format!("{what}: {}", describe(&e)),
        wait: None,
    })?;
    let status = response.status();
    if status.is_success() {
        return response.json::<Value>().await.map_err(|e| {
            Failure::Final(ModelError::BadResponse(format!(
                "{what}: {status} with an unreadable body: {e}"
            )))
        });
    }
    let wait = retry_after(&response);
    let body = response.text().await.unwrap_or_default();
    let reason = format!("{what}: HTTP {status}: {}", excerpt(&body));
    if let Some(scope) = budget_exhausted(status, &body) {
        return Err(Failure::Final(ModelError::BudgetExhausted {
            reason,
            scope,
        }));
    }
    if retryable(status) {
        Err(Failure::Retryable { reason, wait })
    } else if status.is_client_error() {
        Err(Failure::Final(ModelError::Rejected(reason)))
    } else {
        Err(Failure::Final(ModelError::Unavailable(reason)))
    }
}

/// The scope of the spent budget when the gateway refused the call for it (`402` with error
/// type `budget_exhausted`, in either provider's shape).
fn budget_exhausted(status: StatusCode, body: &str) -> Option<String> {
    if status != StatusCode::PAYMENT_REQUIRED {
        return None;
    }
    let error = serde_json::from_str::<Value>(body)
        .ok()?
        .get("error")?
        .clone();
    (error.get("type")? == "budget_exhausted").then(|| {
        error
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    })
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
