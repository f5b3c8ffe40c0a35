//! What differs between the two protocols the gateway speaks: where a client puts its key, the
//! upstream path, how a request's worst case is bounded, where the usage is in an answer (whole
//! or streamed) and the shape of an error.

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse as _, Response},
};
use serde_json::{Value, json};

/// Headers of an Anthropic request the gateway passes upstream (the key is replaced).
const ANTHROPIC_FORWARDED: &[&str] = &["anthropic-version", "anthropic-beta"];

/// A protocol the gateway speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// The Anthropic Messages API.
    Anthropic,
    /// OpenAI-compatible chat completions.
    OpenAi,
}

/// Tokens an upstream says a call used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Input (prompt) tokens, cache reads and writes included.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
}

/// What the gateway reads from a request before forwarding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    /// `model`.
    pub model: String,
    /// The most output tokens it may produce.
    pub max_tokens: u64,
    /// Whether the answer is streamed.
    pub stream: bool,
}

impl Provider {
    /// The name recorded in `model.call_completed`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
        }
    }

    /// The path appended to the upstream's base URL.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Anthropic => "/v1/messages",
            Self::OpenAi => "/chat/completions",
        }
    }

    /// The credential a client presents: `x-api-key` (as Anthropic's clients send it) or
    /// `Authorization: Bearer` (as OpenAI's do); either works on both endpoints.
    pub(crate) fn credential(headers: &HeaderMap) -> Option<&str> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        bearer
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim)
    }

    /// Reads what the gateway needs from a request body and bounds its worst case: an
    /// OpenAI-compatible call without `max_tokens`/`max_completion_tokens` gets
    /// `default_max_tokens`, and a streamed one asks for its usage in the stream.
    pub(crate) fn prepare(self, body: &mut Value, default_max_tokens: u64) -> Result<Call, String> {
        let Some(object) = body.as_object_mut() else {
            return Err("the request body must be a JSON object".to_owned());
        };
        let model = match object.get("model").and_then(Value::as_str) {
            Some(model) if !model.trim().is_empty() => model.to_owned(),
            _ => return Err("model: a model name is required".to_owned()),
        };
        let stream = object.get("stream").and_then(Value::as_bool) == Some(true);
        let limit = ["max_tokens", "max_completion_tokens"]
            .iter()
            .find_map(|field| object.get(*field).map(|value| (*field, value)));
        let max_tokens = match (self, limit) {
            (_, Some((field, value))) => value
                .as_u64()
                .filter(|tokens| *tokens >= 1)
                .ok_or_else(|| format!("{field}: must be a positive integer"))?,
            (Self::Anthropic, None) => return Err("max_tokens: Field required".to_owned()),
            (Self::OpenAi, None) => {
                object.insert("max_tokens".to_owned(), json!(default_max_tokens));
                default_max_tokens
            }
        };
        if self == Self::OpenAi && stream {
            let options = object.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(options) = options.as_object_mut() {
                options.insert("include_usage".to_owned(), json!(true));
            }
        }
        Ok(Call {
            model,
            max_tokens,
            stream,
        })
    }

    /// The headers of the upstream request: the server's key, and for Anthropic its version
    /// headers as the client sent them.
    pub(crate) fn upstream_headers(self, client: &HeaderMap, key: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let key = key.and_then(|key| HeaderValue::from_str(key).ok());
        match self {
            Self::Anthropic => {
                for name in ANTHROPIC_FORWARDED {
                    if let Some(value) = client.get(*name) {
                        headers.insert(*name, value.clone());
                    }
                }
                if let Some(key) = key {
                    headers.insert("x-api-key", key);
                }
            }
            Self::OpenAi => {
                let bearer = key.and_then(|key| {
                    HeaderValue::from_str(&format!("Bearer {}", key.to_str().unwrap_or(""))).ok()
                });
                if let Some(bearer) = bearer {
                    headers.insert(AUTHORIZATION, bearer);
                }
            }
        }
        headers
    }

    /// The usage of a whole (not streamed) answer.
    pub(crate) fn usage(self, answer: &Value) -> Option<Usage> {
        let usage = answer.get("usage")?;
        let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
        match self {
            Self::Anthropic => Some(Usage {
                input: count("input_tokens")
                    + count("cache_creation_input_tokens")
                    + count("cache_read_input_tokens"),
                output: count("output_tokens"),
            })
            .filter(|_| usage.get("output_tokens").is_some()),
            Self::OpenAi => Some(Usage {
                input: count("prompt_tokens"),
                output: count("completion_tokens"),
            })
            .filter(|_| usage.get("completion_tokens").is_some()),
        }
    }

    /// The usage of a streamed answer, from its server-sent events: Anthropic's
    /// `message_start` (input) and last `message_delta` (output, cumulative); the OpenAI
    /// chunk that carries `usage` (the gateway asks for it).
    pub(crate) fn stream_usage(self, stream: &[u8]) -> Option<Usage> {
        let text = String::from_utf8_lossy(stream);
        let events = text
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok());
        let mut found = None;
        for event in events {
            match self {
                Self::Anthropic => {
                    if let Some(message) = event.get("message")
                        && let Some(usage) = self.usage(message)
                    {
                        found = Some(usage);
                    } else if event["type"] == "message_delta"
                        && let Some(output) = event["usage"]["output_tokens"].as_u64()
                    {
                        let mut usage = found.unwrap_or_default();
                        usage.output = output;
                        found = Some(usage);
                    }
                }
                Self::OpenAi => {
                    if let Some(usage) = self.usage(&event) {
                        found = Some(usage);
                    }
                }
            }
        }
        found
    }

    /// An error in the provider's own shape, so that the client reports it as it reports the
    /// provider's. `kind` is the provider's error type (`budget_exhausted` for refusals, with
    /// the spent budget's `scope` beside the message, so a worker knows whether it resets).
    pub(crate) fn error(
        self,
        status: StatusCode,
        kind: &str,
        message: &str,
        scope: Option<&str>,
    ) -> Response {
        let mut body = match self {
            Self::Anthropic => {
                json!({ "type": "error", "error": { "type": kind, "message": message } })
            }
            Self::OpenAi => {
                json!({ "error": { "message": message, "type": kind, "param": null, "code": kind } })
            }
        };
        if let Some(scope) = scope {
            body["error"]["scope"] = json!(scope);
        }
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_calls_get_a_bounded_worst_case_and_stream_their_usage() {
        let mut body = json!({ "model": "m", "stream": true, "messages": [] });
        let call = Provider::OpenAi.prepare(&mut body, 512).unwrap();
        assert_eq!((call.max_tokens, call.stream), (512, true));
        assert_eq!(body["max_tokens"], 512);
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn bad_requests_say_which_field() {
        let mut no_limit = json!({ "model": "m", "messages": [] });
        assert_eq!(
            Provider::Anthropic.prepare(&mut no_limit, 1).unwrap_err(),
            "max_tokens: Field required"
        );
        let mut zero = json!({ "model": "m", "max_completion_tokens": 0 });
        assert!(
            Provider::OpenAi
                .prepare(&mut zero, 1)
                .unwrap_err()
                .starts_with("max_completion_tokens")
        );
        let mut no_model = json!({ "max_tokens": 5 });
        assert!(
            Provider::OpenAi
                .prepare(&mut no_model, 1)
                .unwrap_err()
                .starts_with("model")
        );
        assert!(Provider::OpenAi.prepare(&mut json!([1]), 1).is_err());
    }

    #[test]
    fn streamed_anthropic_usage_takes_the_last_cumulative_output() {
        let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n";
        assert_eq!(
            Provider::Anthropic.stream_usage(stream),
            Some(Usage {
                input: 12,
                output: 9
            })
        );
        assert_eq!(Provider::OpenAi.stream_usage(b"data: [DONE]\n\n"), None);
    }
}
