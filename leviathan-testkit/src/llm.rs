//! A scripted LLM server on 127.0.0.1 speaking the Anthropic Messages API (`POST /v1/messages`) and
//! OpenAI-compatible chat completions (`POST /v1/chat/completions`), with the providers' headers,
//! validation, success and error shapes, so Leviathan's real model clients are tested over HTTP.
//!
//! Replies come from one FIFO script shared by both endpoints ([`ScriptedLlm::push_text`] and
//! friends); when it is empty, an optional fallback responder answers, and without one the server
//! replies 500 "script exhausted". Only authenticated, valid requests consume the script.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse as _, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use futures::StreamExt as _;
use rand::{Rng as _, distr::Alphanumeric};
use serde_json::{Value, json};

use crate::TestServer;

/// The only `anthropic-version` the Messages API endpoint accepts.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A scripted LLM server, stopped on drop.
pub struct ScriptedLlm {
    server: TestServer,
    shared: Arc<Shared>,
}

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1/chat/completions`.
    OpenAi,
}

/// A request as the server saw it, for assertions and for the fallback responder.
///
/// The API key is never recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// Endpoint it came through.
    pub provider: Provider,
    /// `model` from the body, empty if absent.
    pub model: String,
    /// Text of every `user` message (string content or `text` blocks), joined by blank lines.
    pub prompt: String,
    /// The raw JSON body, `Null` if it was not JSON.
    pub body: Value,
    /// Whether the request carried the right API key.
    pub authenticated: bool,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmReply {
    /// A complete answer (`stop_reason: end_turn`, `finish_reason: stop`).
    Text(String),
    /// An answer cut off by the token limit (`stop_reason: max_tokens`, `finish_reason: length`).
    Truncated(String),
    /// A provider-shaped error with this HTTP status (e.g. 429, 500, 529) and an optional
    /// `retry-after` header in seconds.
    Error {
        /// HTTP status code.
        status: u16,
        /// Value of the `retry-after` header, in seconds.
        retry_after: Option<u64>,
    },
}

type Responder = Arc<dyn Fn(&LlmRequest) -> LlmReply + Send + Sync>;

struct Shared {
    key: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<LlmReply>,
    fallback: Option<Responder>,
    requests: Vec<LlmRequest>,
    pace: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next scripted reply, else the fallback's answer (called outside the lock), else `None`.
    fn next_reply(&self, request: &LlmRequest) -> Option<LlmReply> {
        let fallback = {
            let mut inner = self.lock();
            if let Some(reply) = inner.script.pop_front() {
                return Some(reply);
            }
            inner.fallback.clone()
        };
        fallback.map(|respond| respond(request))
    }

    /// Waits [`ScriptedLlm::set_pace`]'s time before an answer's head.
    async fn wait_pace(&self) -> Duration {
        let pace = self.lock().pace;
        tokio::time::sleep(pace).await;
        pace
    }
}

impl ScriptedLlm {
    /// Starts a server with a random API key and an empty script.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            key: format!("sk-test-{}", random_suffix(32)),
            inner: Mutex::new(Inner::default()),
        });
        let router = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1/chat/completions", post(openai))
            .with_state(Arc::clone(&shared));
        let server = TestServer::spawn(router).await?;
        Ok(Self { server, shared })
    }

    /// Base URL, `http://127.0.0.1:PORT`; clients append `/v1/messages` or `/v1/chat/completions`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The accepted key, as `x-api-key` (Anthropic) or `Authorization: Bearer` (OpenAI).
    pub fn api_key(&self) -> &str {
        &self.shared.key
    }

    /// Appends a reply to the script.
    pub fn push(&self, reply: LlmReply) {
        self.shared.lock().script.push_back(reply);
    }

    /// Appends a complete text answer.
    pub fn push_text(&self, text: impl Into<String>) {
        self.push(LlmReply::Text(text.into()));
    }

    /// Appends an answer truncated by the token limit.
    pub fn push_truncated(&self, text: impl Into<String>) {
        self.push(LlmReply::Truncated(text.into()));
    }

    /// Appends an error reply with an optional `retry-after` (seconds).
    pub fn push_error(&self, status: u16, retry_after: Option<u64>) {
        self.push(LlmReply::Error {
            status,
            retry_after,
        });
    }

    /// Sets the responder used once the script is empty, e.g. to answer based on the prompt.
    pub fn set_fallback(&self, respond: impl Fn(&LlmRequest) -> LlmReply + Send + Sync + 'static) {
        self.shared.lock().fallback = Some(Arc::new(respond));
    }

    /// Makes every answer wait `pace` before its head, and a streamed one also between its
    /// events, as a slow model does (zero, the default, answers at once).
    pub fn set_pace(&self, pace: Duration) {
        self.shared.lock().pace = pace;
    }

    /// Number of scripted replies not consumed yet.
    pub fn remaining(&self) -> usize {
        self.shared.lock().script.len()
    }

    /// Every request received so far, in arrival order, including rejected ones.
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.shared.lock().requests.clone()
    }
}

/// The model-output envelope Leviathan's worker expects in rewrite mode:
/// `{"files":[{"path":…,"content_b64":<standard base64>}]}`.
pub fn files_envelope<P: AsRef<str>, C: AsRef<[u8]>>(files: &[(P, C)]) -> String {
    let files: Vec<Value> = files
        .iter()
        .map(|(path, content)| json!({ "path": path.as_ref(), "content_b64": STANDARD.encode(content) }))
        .collect();
    json!({ "files": files }).to_string()
}

fn random_suffix(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A rough token count (about four bytes per token), so usage numbers are plausible and grow with
/// the text.
fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

/// Text of every `user` message: string content, or the `text` of `text` blocks/parts.
fn user_prompt(body: &Value) -> String {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let mut texts = Vec::new();
    for message in messages.iter().filter(|message| message["role"] == "user") {
        match &message["content"] {
            Value::String(text) => texts.push(text.as_str()),
            Value::Array(blocks) => texts.extend(
                blocks
                    .iter()
                    .filter(|block| block["type"] == "text")
                    .filter_map(|block| block["text"].as_str()),
            ),
            _ => {}
        }
    }
    texts.join("\n\n")
}

/// Parses and records a request (never its key), before any validation, so rejected ones show too.
fn record(shared: &Shared, provider: Provider, body: &[u8], authenticated: bool) -> LlmRequest {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let request = LlmRequest {
        provider,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        prompt: user_prompt(&body),
        body,
        authenticated,
    };
    shared.lock().requests.push(request.clone());
    request
}

/// Checks shared by both APIs: a JSON object with a non-empty `messages` array of objects whose
/// role is one of `roles`.
fn validate_messages(body: &Value, roles: &[&str]) -> Result<(), String> {
    if !body.is_object() {
        return Err("request body must be a JSON object".into());
    }
    let messages = match body.get("messages").and_then(Value::as_array) {
        Some(messages) if !messages.is_empty() => messages,
        _ => return Err("messages: at least one message is required".into()),
    };
    for (index, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !roles.contains(&role) {
            return Err(format!(
                "messages.{index}.role: Input should be one of {}",
                roles.join(", ")
            ));
        }
        match message.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            _ => return Err(format!("messages.{index}.content: Field required")),
        }
    }
    Ok(())
}

fn with_headers(mut response: Response, headers: &[(&'static str, String)]) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::try_from(value.as_str()) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

fn retry_after_header(retry_after: Option<u64>) -> Vec<(&'static str, String)> {
    retry_after
        .map(|seconds| ("retry-after", seconds.to_string()))
        .into_iter()
        .collect()
}

fn scripted_status(status: u16) -> Result<StatusCode, String> {
    StatusCode::from_u16(status)
        .map_err(|_| format!("scripted status {status} is not an HTTP status code"))
}

const EXHAUSTED: &str = "leviathan-testkit ScriptedLlm: script exhausted (no scripted reply left and no fallback responder)";

// ---------------------------------------------------------------------------------------------
// Anthropic Messages API

fn anthropic_error(
    status: StatusCode,
    message: &str,
    extra_headers: &[(&'static str, String)],
) -> Response {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    let mut headers = vec![("request-id", format!("req_{}", random_suffix(24)))];
    headers.extend_from_slice(extra_headers);
    with_headers((status, Json(body)).into_response(), &headers)
}

fn anthropic_validate(body: &Value) -> Result<(), String> {
    validate_messages(body, &["user", "assistant"])?;
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("model: Field required".into());
    }
    match body.get("max_tokens").map(Value::as_u64) {
        None => Err("max_tokens: Field required".into()),
        Some(Some(tokens)) if tokens >= 1 => Ok(()),
        Some(_) => Err("max_tokens: Input should be an integer greater than or equal to 1".into()),
    }
}

async fn anthropic(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let authenticated = headers
        .get("x-api-key")
        .is_some_and(|key| key.as_bytes() == shared.key.as_bytes());
    let request = record(&shared, Provider::Anthropic, &body, authenticated);
    if !authenticated {
        return anthropic_error(StatusCode::UNAUTHORIZED, "invalid x-api-key", &[]);
    }
    match headers.get("anthropic-version").map(HeaderValue::to_str) {
        None => {
            return anthropic_error(
                StatusCode::BAD_REQUEST,
                "anthropic-version: header is required",
                &[],
            );
        }
        Some(Ok(ANTHROPIC_VERSION)) => {}
        Some(version) => {
            let shown = version.unwrap_or("<non-ASCII>");
            let message = format!("anthropic-version: {shown:?} is not a valid version");
            return anthropic_error(StatusCode::BAD_REQUEST, &message, &[]);
        }
    }
    if let Err(message) = anthropic_validate(&request.body) {
        return anthropic_error(StatusCode::BAD_REQUEST, &message, &[]);
    }
    let (text, stop_reason) = match shared.next_reply(&request) {
        None => return anthropic_error(StatusCode::INTERNAL_SERVER_ERROR, EXHAUSTED, &[]),
        Some(LlmReply::Text(text)) => (text, "end_turn"),
        Some(LlmReply::Truncated(text)) => (text, "max_tokens"),
        Some(LlmReply::Error {
            status,
            retry_after,
        }) => {
            return match scripted_status(status) {
                Ok(status) => {
                    let message = match status.as_u16() {
                        429 => "Number of requests has exceeded your rate limit",
                        529 => "Overloaded",
                        500 => "Internal server error",
                        _ => status.canonical_reason().unwrap_or("Error"),
                    };
                    anthropic_error(status, message, &retry_after_header(retry_after))
                }
                Err(message) => anthropic_error(StatusCode::INTERNAL_SERVER_ERROR, &message, &[]),
            };
        }
    };
    let pace = shared.wait_pace().await;
    let usage = (estimate_tokens(&request.prompt), estimate_tokens(&text));
    let id = format!("msg_{}", random_suffix(24));
    let response = if streams(&request.body) {
        event_stream(
            anthropic_stream(&id, &request.model, &text, stop_reason, usage),
            pace,
        )
    } else {
        let body = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": [{ "type": "text", "text": text }],
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": { "input_tokens": usage.0, "output_tokens": usage.1 },
        });
        Json(body).into_response()
    };
    with_headers(
        response,
        &[("request-id", format!("req_{}", random_suffix(24)))],
    )
}

/// Whether the request asks for a server-sent event stream (`"stream": true`).
fn streams(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool) == Some(true)
}

/// One server-sent event: its name, if any, and its data.
type StreamEvent = (Option<&'static str>, String);

/// A `text/event-stream` response of these events, as the providers send them, `pace` apart.
fn event_stream(events: Vec<StreamEvent>, pace: Duration) -> Response {
    let frames = events.into_iter().map(|(name, data)| {
        let name = name
            .map(|name| format!("event: {name}\n"))
            .unwrap_or_default();
        Bytes::from(format!("{name}data: {data}\n\n"))
    });
    let paced = futures::stream::iter(frames).then(move |frame| async move {
        tokio::time::sleep(pace).await;
        Ok::<_, std::convert::Infallible>(frame)
    });
    let mut response = axum::body::Body::from_stream(paced).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// The Messages API's stream: `message_start` (input usage), the text in two deltas,
/// `message_delta` (stop reason, output usage), `message_stop`.
fn anthropic_stream(
    id: &str,
    model: &str,
    text: &str,
    stop_reason: &str,
    (input, output): (usize, usize),
) -> Vec<StreamEvent> {
    let middle = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(text.len(), |(i, _)| i);
    let (first, second) = text.split_at(middle);
    let delta = |part: &str| {
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": part } }).to_string()
    };
    vec![
        (
            Some("message_start"),
            json!({ "type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": input, "output_tokens": 1 } } })
            .to_string(),
        ),
        (
            Some("content_block_start"),
            json!({ "type": "content_block_start", "index": 0,
            "content_block": { "type": "text", "text": "" } })
            .to_string(),
        ),
        (Some("content_block_delta"), delta(first)),
        (Some("content_block_delta"), delta(second)),
        (
            Some("content_block_stop"),
            json!({ "type": "content_block_stop", "index": 0 }).to_string(),
        ),
        (
            Some("message_delta"),
            json!({ "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": { "output_tokens": output } })
            .to_string(),
        ),
        (
            Some("message_stop"),
            json!({ "type": "message_stop" }).to_string(),
        ),
    ]
}

/// Chat completions' stream: a role chunk, the text in one chunk, the finish chunk, a usage
/// chunk when `stream_options.include_usage` asks for it, then `[DONE]`.
fn openai_stream(
    id: &str,
    model: &str,
    text: &str,
    finish_reason: &str,
    usage: Option<(usize, usize)>,
) -> Vec<StreamEvent> {
    let created = chrono::Utc::now().timestamp();
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        .to_string()
    };
    let mut events = vec![
        (
            None,
            chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
        ),
        (None, chunk(json!({ "content": text }), Value::Null)),
        (None, chunk(json!({}), json!(finish_reason))),
    ];
    if let Some((prompt, completion)) = usage {
        events.push((
            None,
            json!({ "id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": { "prompt_tokens": prompt,
            "completion_tokens": completion, "total_tokens": prompt + completion } })
            .to_string(),
        ));
    }
    events.push((None, "[DONE]".to_owned()));
    events
}

// ---------------------------------------------------------------------------------------------
// OpenAI-compatible chat completions

fn openai_error(
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    extra_headers: &[(&'static str, String)],
) -> Response {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        429 => ("requests", Some("rate_limit_exceeded")),
        status if status >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    let body =
        json!({ "error": { "message": message, "type": kind, "param": param, "code": code } });
    let mut headers = vec![("x-request-id", format!("req_{}", random_suffix(24)))];
    headers.extend_from_slice(extra_headers);
    with_headers((status, Json(body)).into_response(), &headers)
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let authenticated = presented == Some(shared.key.as_str());
    let request = record(&shared, Provider::OpenAi, &body, authenticated);
    if !authenticated {
        let message = if presented.is_some() {
            "Incorrect API key provided."
        } else {
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        };
        return openai_error(StatusCode::UNAUTHORIZED, message, None, &[]);
    }
    if request.model.is_empty() && request.body.is_object() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            None,
            &[],
        );
    }
    if let Err(message) = validate_messages(
        &request.body,
        &["system", "developer", "user", "assistant", "tool"],
    ) {
        return openai_error(StatusCode::BAD_REQUEST, &message, Some("messages"), &[]);
    }
    let (text, finish_reason) = match shared.next_reply(&request) {
        None => return openai_error(StatusCode::INTERNAL_SERVER_ERROR, EXHAUSTED, None, &[]),
        Some(LlmReply::Text(text)) => (text, "stop"),
        Some(LlmReply::Truncated(text)) => (text, "length"),
        Some(LlmReply::Error {
            status,
            retry_after,
        }) => {
            return match scripted_status(status) {
                Ok(status) => {
                    let message = match status.as_u16() {
                        429 => "Rate limit reached for requests",
                        status if status >= 500 => {
                            "The server had an error while processing your request."
                        }
                        _ => status.canonical_reason().unwrap_or("Error"),
                    };
                    openai_error(status, message, None, &retry_after_header(retry_after))
                }
                Err(message) => {
                    openai_error(StatusCode::INTERNAL_SERVER_ERROR, &message, None, &[])
                }
            };
        }
    };
    let pace = shared.wait_pace().await;
    let prompt_tokens = estimate_tokens(&request.prompt);
    let completion_tokens = estimate_tokens(&text);
    if streams(&request.body) {
        let include_usage = request.body["stream_options"]["include_usage"] == true;
        let id = format!("chatcmpl-{}", random_suffix(29));
        let usage = include_usage.then_some((prompt_tokens, completion_tokens));
        let events = openai_stream(&id, &request.model, &text, finish_reason, usage);
        return event_stream(events, pace);
    }
    let body = json!({
        "id": format!("chatcmpl-{}", random_suffix(29)),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    Json(body).into_response()
}
