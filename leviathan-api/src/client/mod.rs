//! The typed client of the control-plane API (reqwest, rustls), used by the worker, the
//! scheduler and the CLI. Transient failures are retried with the one [`RetryPolicy`]
//! (exponential backoff, full jitter, `Retry-After` honoured); [`RemoteEventStore`] turns a control plane into an [`leviathan_core::EventStore`].

mod error;
mod sse;
mod store;
mod tokens;

use std::{fmt, time::Duration};

use bytes::Bytes;
use leviathan_core::{
    Event, GraphSummary, Head, Sha256Digest, StreamId,
    id::{AttemptId, EventId},
    tlog::{ConsistencyProof, InclusionProof},
};
use reqwest::{
    Method, StatusCode,
    header::{self, HeaderValue},
};
use serde::{Serialize, de::DeserializeOwned};
use url::Url;

pub use error::ClientError;
pub use leviathan_core::retry::RetryPolicy;
pub use sse::ClientEventStream;
pub use store::RemoteEventStore;

use crate::{
    code::ErrorCode,
    config::BearerToken,
    wire::{
        AttemptDetail, AttemptsPage, AttemptsQuery, CancelResponse, ChainVerification, ErrorBody,
        EventsPage, EventsQuery, FailuresPage, FailuresQuery, FindEventsRequest, FoundEvents,
        HeadResponse, Health, IngestRequest, IngestResponse, InvalidateRequest, InvalidateResponse,
        LAST_EVENT_ID, StreamVersion,
    },
};

/// 5 tries, with sleeps capped at 200 ms doubling up to 10 s.
const DEFAULT_RETRY: RetryPolicy =
    RetryPolicy::new(5, Duration::from_millis(200), Duration::from_secs(10));
/// How much of an unexpected error body is kept in an error message.
const ERROR_BODY_EXCERPT: usize = 300;

/// A request body.
#[derive(Clone)]
struct Body {
    bytes: Bytes,
    content_type: &'static str,
}

/// One API call, replayable for retries.
struct Call {
    method: Method,
    url: Url,
    endpoint: String,
    body: Option<Body>,
    timeout: Option<Duration>,
    last_event_id: Option<u64>,
}

/// A client of one control plane. Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct ControlPlaneClient {
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
    retry: RetryPolicy,
    timeout: Duration,
    transfer_timeout: Duration,
    stream_idle_timeout: Duration,
}

impl fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneClient")
            .field("base", &self.base.as_str())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneClient {
    /// A client of the control plane at `base_url` (`http(s)://host[:port][/prefix]`). The URL
    /// must not carry credentials: the token travels only in the `Authorization` header.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: redact_url(base_url),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "the URL must not carry credentials; the token is sent in the Authorization header",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the URL must not have a query or a fragment"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let token = BearerToken::new(token.into())?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ClientError::InvalidToken(crate::config::TokenError::BadCharacter))?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("leviathan-api-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            authorization,
            retry: DEFAULT_RETRY,
            timeout: Duration::from_secs(60),
            transfer_timeout: Duration::from_secs(600),
            stream_idle_timeout: Duration::from_secs(60),
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The deadline of ordinary requests (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline of artifact transfers and chain verification (default 10 min).
    pub fn with_transfer_timeout(mut self, timeout: Duration) -> Self {
        self.transfer_timeout = timeout;
        self
    }

    /// How long an event stream may stay silent (no event, no keep-alive) before it is
    /// reconnected (default 60 s; the server sends keep-alives every 15 s by default).
    pub fn with_stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// `path` under the base URL, then `segments` percent-encoded one by one.
    fn url(&self, path: &str, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            // A base URL with a host (checked in `new`) always has path segments.
            if let Ok(mut parts) = url.path_segments_mut() {
                parts.pop_if_empty();
                parts.extend(path.split('/'));
                parts.extend(segments);
            }
        }
        url
    }

    fn call(&self, method: Method, path: &str, segments: &[&str]) -> Call {
        let endpoint = if segments.is_empty() {
            format!("{method} /{path}")
        } else {
            format!("{method} /{path}/{}", segments.join("/"))
        };
        Call {
            url: self.url(path, segments),
            method,
            endpoint,
            body: None,
            timeout: Some(self.timeout),
            last_event_id: None,
        }
    }

    fn json_body<T: Serialize>(call: &mut Call, value: &T) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ClientError::Decode {
            endpoint: call.endpoint.clone(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        call.body = Some(Body {
            bytes: bytes.into(),
            content_type: "application/json",
        });
        Ok(())
    }

    /// Sends `call`, retrying transient failures; returns a successful response.
    async fn send(&self, call: &Call) -> Result<reqwest::Response, ClientError> {
        self.retry
            .retry(
                &call.endpoint,
                || self.send_once(call),
                ClientError::verdict,
            )
            .await
    }

    async fn send_once(&self, call: &Call) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .header(header::AUTHORIZATION, self.authorization.clone());
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = &call.body {
            request = request
                .header(header::CONTENT_TYPE, body.content_type)
                .body(body.bytes.clone());
        }
        if let Some(seq) = call.last_event_id {
            request = request
                .header(LAST_EVENT_ID, seq)
                .header(header::ACCEPT, "text/event-stream");
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                endpoint: call.endpoint.clone(),
                source: source.without_url(),
            })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(&call.endpoint, response).await)
        }
    }

    /// Sends `call` and decodes a JSON answer.
    async fn text(&self, call: &Call) -> Result<String, ClientError> {
        let response = self.send(call).await?;
        response
            .text()
            .await
            .map_err(|source| ClientError::Transport {
                endpoint: call.endpoint.clone(),
                source: source.without_url(),
            })
    }

    async fn json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ClientError> {
        let response = self.send(call).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                endpoint: call.endpoint.clone(),
                source: source.without_url(),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            endpoint: call.endpoint.clone(),
            reason: e.to_string(),
        })
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(&self.call(Method::GET, "healthz", &[])).await
    }

    /// `GET /readyz`: `Ok` when the control plane's store answers.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.json(&self.call(Method::GET, "readyz", &[])).await
    }

    /// `GET /metrics`: the Prometheus exposition text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let call = self.call(Method::GET, "metrics", &[]);
        let response = self.send(&call).await?;
        response
            .text()
            .await
            .map_err(|source| ClientError::Transport {
                endpoint: call.endpoint,
                source: source.without_url(),
            })
    }

    /// `POST /v1/events/ingest`: appends a bundle atomically. Idempotent by event ids, so it is
    /// retried like any transient failure.
    pub async fn ingest(&self, bundle: &IngestRequest) -> Result<IngestResponse, ClientError> {
        let mut call = self.call(Method::POST, "v1/events/ingest", &[]);
        Self::json_body(&mut call, bundle)?;
        self.json(&call).await
    }

    /// `PUT /v1/artifacts/{sha256}`: stores content under its digest (the server checks it).
    pub async fn put_artifact(
        &self,
        sha256: &Sha256Digest,
        content: Bytes,
    ) -> Result<(), ClientError> {
        let hex = sha256.to_hex();
        let mut call = self.call(Method::PUT, "v1/artifacts", &[&hex]);
        call.timeout = Some(self.transfer_timeout);
        call.body = Some(Body {
            bytes: content,
            content_type: "application/octet-stream",
        });
        self.send(&call).await.map(drop)
    }

    /// `GET /v1/artifacts/{sha256}`: the content, checked against its digest.
    pub async fn get_artifact(&self, sha256: &Sha256Digest) -> Result<Bytes, ClientError> {
        let hex = sha256.to_hex();
        let mut call = self.call(Method::GET, "v1/artifacts", &[&hex]);
        call.timeout = Some(self.transfer_timeout);
        let response = self.send(&call).await?;
        let content = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                endpoint: call.endpoint.clone(),
                source: source.without_url(),
            })?;
        let actual = Sha256Digest::of(&content);
        if &actual != sha256 {
            return Err(ClientError::DigestMismatch {
                expected: *sha256,
                actual,
            });
        }
        Ok(content)
    }

    /// `GET /v1/graph/summary`.
    pub async fn graph_summary(&self) -> Result<GraphSummary, ClientError> {
        self.json(&self.call(Method::GET, "v1/graph/summary", &[]))
            .await
    }

    /// `GET /v1/attempts`: a page of attempts, newest first.
    pub async fn attempts(&self, query: &AttemptsQuery) -> Result<AttemptsPage, ClientError> {
        let mut call = self.call(Method::GET, "v1/attempts", &[]);
        set_query(&mut call, query)?;
        self.json(&call).await
    }

    /// `GET /v1/attempts/{id}`: an attempt, its events, artifacts and pull request.
    pub async fn attempt(&self, id: &AttemptId) -> Result<AttemptDetail, ClientError> {
        self.json(&self.call(Method::GET, "v1/attempts", &[id.as_str()]))
            .await
    }

    /// `GET /v1/failures`: failed and timed-out attempts, most recent first.
    pub async fn failures(&self, query: &FailuresQuery) -> Result<FailuresPage, ClientError> {
        let mut call = self.call(Method::GET, "v1/failures", &[]);
        set_query(&mut call, query)?;
        self.json(&call).await
    }

    /// `POST /v1/attempts/{id}/invalidate`. The client picks the event id, so a retried request
    /// is answered with the first invalidation instead of a conflict.
    pub async fn invalidate(
        &self,
        id: &AttemptId,
        reason: &str,
    ) -> Result<InvalidateResponse, ClientError> {
        self.attempt_action(id, "invalidate", reason).await
    }

    /// `POST /v1/attempts/{id}/cancel`: stops a live attempt. The event id is picked here, as
    /// for [`ControlPlaneClient::invalidate`].
    pub async fn cancel(
        &self,
        id: &AttemptId,
        reason: &str,
    ) -> Result<CancelResponse, ClientError> {
        self.attempt_action(id, "cancel", reason).await
    }

    async fn attempt_action(
        &self,
        id: &AttemptId,
        verb: &str,
        reason: &str,
    ) -> Result<InvalidateResponse, ClientError> {
        let event_id = EventId::new(format!("{verb}-{id}-{}", uuid::Uuid::new_v4().simple()))
            .map_err(|e| ClientError::Decode {
                endpoint: verb.into(),
                reason: e.to_string(),
            })?;
        let mut call = self.call(Method::POST, "v1/attempts", &[id.as_str(), verb]);
        let request = InvalidateRequest {
            reason: reason.to_owned(),
            event_id: Some(event_id),
        };
        Self::json_body(&mut call, &request)?;
        self.json(&call).await
    }

    /// `GET /v1/events?after=&limit=`: a page of events in `seq` order.
    pub async fn events_page(&self, after: u64, limit: usize) -> Result<EventsPage, ClientError> {
        let mut call = self.call(Method::GET, "v1/events", &[]);
        set_query(
            &mut call,
            &EventsQuery {
                after: Some(after),
                limit: Some(limit),
            },
        )?;
        self.json(&call).await
    }

    /// `GET /v1/events/by-id/{event_id}`; `None` when there is no such event.
    pub async fn event(&self, id: &EventId) -> Result<Option<Event>, ClientError> {
        match self
            .json(&self.call(Method::GET, "v1/events/by-id", &[id.as_str()]))
            .await
        {
            Ok(event) => Ok(Some(event)),
            Err(e) if e.code() == Some(ErrorCode::EventNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/events/find`: the events among `ids` that exist, in `seq` order.
    pub async fn find_events(&self, ids: &[EventId]) -> Result<Vec<Event>, ClientError> {
        let mut call = self.call(Method::POST, "v1/events/find", &[]);
        Self::json_body(&mut call, &FindEventsRequest { ids: ids.to_vec() })?;
        let found: FoundEvents = self.json(&call).await?;
        Ok(found.events)
    }

    /// `GET /v1/events/head`.
    pub async fn head(&self) -> Result<Option<Head>, ClientError> {
        let answer: HeadResponse = self
            .json(&self.call(Method::GET, "v1/events/head", &[]))
            .await?;
        Ok(answer.head)
    }

    /// `GET /v1/streams/{stream}`: the number of events in a stream.
    pub async fn stream_version(&self, stream: &StreamId) -> Result<u64, ClientError> {
        let answer: StreamVersion = self
            .json(&self.call(Method::GET, "v1/streams", &[stream.as_str()]))
            .await?;
        Ok(answer.version)
    }

    /// `GET /v1/chain/verify`.
    pub async fn verify_chain(&self) -> Result<ChainVerification, ClientError> {
        let mut call = self.call(Method::GET, "v1/chain/verify", &[]);
        call.timeout = Some(self.transfer_timeout);
        self.json(&call).await
    }

    /// `GET /v1/events/stream`: every event with `seq > after`, then each new one, in order.
    ///
    /// The first connection is made (and retried) before this returns, so a wrong token or an
    /// unreachable server is an error here. Afterwards a dropped connection is reopened with
    /// `Last-Event-ID` set to the last delivered `seq`, with the client's backoff; the stream
    /// ends with an error when reconnecting fails `max_attempts` times in a row, or when an
    /// event arrives out of order.
    pub async fn stream_events(&self, after: u64) -> Result<ClientEventStream, ClientError> {
        let response = self.send(&self.stream_call(after)).await?;
        Ok(sse::follow(self.clone(), after, response))
    }

    fn stream_call(&self, after: u64) -> Call {
        let mut call = self.call(Method::GET, "v1/events/stream", &[]);
        call.timeout = None;
        call.last_event_id = Some(after);
        call
    }

    /// `GET /v1/log/checkpoint`: the latest signed checkpoint (a C2SP signed note).
    pub async fn checkpoint(&self) -> Result<String, ClientError> {
        self.text(&self.call(Method::GET, "v1/log/checkpoint", &[]))
            .await
    }

    /// `POST /v1/log/checkpoint`: a checkpoint of the whole log, signed now if it grew.
    pub async fn sign_checkpoint(&self) -> Result<String, ClientError> {
        self.text(&self.call(Method::POST, "v1/log/checkpoint", &[]))
            .await
    }

    /// `POST /v1/log/cosignature`: adds the cosignature(s) `cosigned` carries (the latest
    /// checkpoint with a witness's cosignature); answers the checkpoint with all of them.
    pub async fn post_cosignature(&self, cosigned: &str) -> Result<String, ClientError> {
        let mut call = self.call(Method::POST, "v1/log/cosignature", &[]);
        call.body = Some(Body {
            bytes: Bytes::copy_from_slice(cosigned.as_bytes()),
            content_type: "text/plain; charset=utf-8",
        });
        self.text(&call).await
    }

    /// `GET /v1/log/proof/inclusion`: the proof that the event at `seq` is in the tree of
    /// `size` leaves (default: the latest checkpoint's).
    pub async fn inclusion_proof(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, ClientError> {
        let mut call = self.call(Method::GET, "v1/log/proof/inclusion", &[]);
        call.url
            .query_pairs_mut()
            .append_pair("seq", &seq.to_string());
        if let Some(size) = size {
            call.url
                .query_pairs_mut()
                .append_pair("size", &size.to_string());
        }
        self.json(&call).await
    }

    /// `GET /v1/log/proof/consistency`: the proof that the tree of `to` leaves (default: the
    /// latest checkpoint's) extends the tree of `from`.
    pub async fn consistency_proof(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, ClientError> {
        let mut call = self.call(Method::GET, "v1/log/proof/consistency", &[]);
        call.url
            .query_pairs_mut()
            .append_pair("from", &from.to_string());
        if let Some(to) = to {
            call.url
                .query_pairs_mut()
                .append_pair("to", &to.to_string());
        }
        self.json(&call).await
    }

    /// This control plane as an [`leviathan_core::EventStore`].
    pub fn event_store(&self) -> RemoteEventStore {
        RemoteEventStore::new(self.clone())
    }
}

fn set_query<Q: Serialize>(call: &mut Call, query: &Q) -> Result<(), ClientError> {
    let value = serde_json::to_value(query).map_err(|e| ClientError::Decode {
        endpoint: call.endpoint.clone(),
        reason: format!("cannot encode the query: {e}"),
    })?;
    if let serde_json::Value::Object(map) = value {
        let mut pairs = call.url.query_pairs_mut();
        for (key, value) in map {
            match value {
                serde_json::Value::String(s) => pairs.append_pair(&key, &s),
                serde_json::Value::Null => continue,
                other => pairs.append_pair(&key, &other.to_string()),
            };
        }
    }
    Ok(())
}

/// Builds the error of a non-2xx answer from its body (an API error, or an excerpt of whatever
/// else came back, e.g. from a proxy).
async fn status_error(endpoint: &str, response: reqwest::Response) -> ClientError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.unwrap_or_default();
    let (code, message, details) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { error }) => (Some(error.code), error.message, error.details),
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            let excerpt: String = text.chars().take(ERROR_BODY_EXCERPT).collect();
            let reason = status.canonical_reason().unwrap_or("error");
            let message = if excerpt.trim().is_empty() {
                reason.to_owned()
            } else {
                format!("{reason}: {}", excerpt.trim())
            };
            (None, message, Vec::new())
        }
    };
    ClientError::Status {
        endpoint: endpoint.to_owned(),
        status: status.as_u16(),
        code,
        message,
        details,
        retry_after: if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
        {
            retry_after
        } else {
            None
        },
    }
}

/// A URL for error messages, without user info.
fn redact_url(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "<unparsable>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_prefix_and_encode_segments() {
        let client =
            ControlPlaneClient::new("http://127.0.0.1:8000/cp", "0123456789abcdef").unwrap();
        assert_eq!(
            client.url("v1/streams", &["task:demo/x#1"]).as_str(),
            "http://127.0.0.1:8000/cp/v1/streams/task:demo%2Fx%231"
        );
        let root = ControlPlaneClient::new("http://h:1/", "0123456789abcdef").unwrap();
        assert_eq!(root.url("healthz", &[]).as_str(), "http://h:1/healthz");
    }

    #[test]
    fn credentials_in_urls_are_refused_without_echoing_them() {
        let err = ControlPlaneClient::new("http://user:hunter2hunter2@h/", "0123456789abcdef")
            .unwrap_err();
        assert!(matches!(err, ClientError::InvalidUrl { .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(ControlPlaneClient::new("ftp://h/", "0123456789abcdef").is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let client = ControlPlaneClient::new("http://h/", "very-secret-token-123").unwrap();
        assert!(!format!("{client:?}").contains("very-secret"));
    }
}
