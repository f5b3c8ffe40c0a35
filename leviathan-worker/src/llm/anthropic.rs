//! Anthropic's Messages API: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    code_model::{CodeModel, Completion, ModelError, ModelRequest},
    http,
};
use leviathan_core::secret::Secret;

use crate::{
    config::{ModelSettings, RetryPolicy},
    prompt::OutputStyle,
};

/// The API version this client speaks.
pub(super) const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A Claude model behind the Messages API.
#[derive(Debug)]
pub struct AnthropicModel {
    client: reqwest::Client,
    endpoint: String,
    api_key: Secret,
    model: String,
    max_tokens: u32,
    retry: RetryPolicy,
}

impl AnthropicModel {
    /// A client for `model` at `base_url` (the gateway's `…/v1/gateway/anthropic`).
    pub fn new(
        base_url: &str,
        api_key: Secret,
        model: &str,
        settings: &ModelSettings,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            client: http::client(settings.timeout)?,
            endpoint: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_owned(),
            max_tokens: settings.max_output_tokens,
            retry: settings.retry,
        })
    }
}

#[async_trait]
impl CodeModel for AnthropicModel {
    fn provider(&self) -> &str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn output_style(&self) -> OutputStyle {
        OutputStyle::Envelope
    }

    async fn complete(&self, request: &ModelRequest<'_>) -> Result<Completion, ModelError> {
        let body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0.2,
            "messages": [{"role": "user", "content": request.prompt}],
        });
        let answer = http::send_json("Anthropic Messages API", &self.retry, || {
            self.client
                .post(&self.endpoint)
                .header("x-api-key", self.api_key.expose())
                .header("anthropic-version", ANTHROPIC_VERSION)
                .json(&body)
        })
        .await?;
        parse_message(&answer)
    }
}

/// The text blocks, usage and stop reason of a Messages API answer.
fn parse_message(answer: &Value) -> Result<Completion, ModelError> {
    let blocks = answer
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ModelError::BadResponse("Messages API answer has no `content` array".into())
        })?;
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let usage = |key: &str| {
        answer
            .pointer(&format!("/usage/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Completion {
        text,
        tokens_in: usage("input_tokens"),
        tokens_out: usage("output_tokens"),
        truncated: answer.get("stop_reason").and_then(Value::as_str) == Some("max_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_blocks_usage_and_truncation() {
        let answer = json!({
            "content": [{"type": "text", "text": "a"}, {"type": "tool_use"}, {"type": "text", "text": "b"}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 12, "output_tokens": 34},
        });
        let c = parse_message(&answer).unwrap();
        assert_eq!(
            c,
            Completion {
                text: "ab".into(),
                tokens_in: 12,
                tokens_out: 34,
                truncated: true
            }
        );
        assert!(matches!(
            parse_message(&json!({"type": "error"})),
            Err(ModelError::BadResponse(_))
        ));
    }
}
