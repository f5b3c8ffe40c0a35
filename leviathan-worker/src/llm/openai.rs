//! OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp server, Ollama):
//! `POST {base}/chat/completions`, the key (if any) as a bearer token.

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

/// A chat model behind an OpenAI-compatible API.
#[derive(Debug)]
pub struct OpenAiModel {
    client: reqwest::Client,
    endpoint: String,
    api_key: Secret,
    model: String,
    max_tokens: u32,
    retry: RetryPolicy,
}

impl OpenAiModel {
    /// A client for `model` at `base_url` (the gateway's `…/v1/gateway/openai/v1`).
    pub fn new(
        base_url: &str,
        api_key: Secret,
        model: &str,
        settings: &ModelSettings,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            client: http::client(settings.timeout)?,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_owned(),
            max_tokens: settings.max_output_tokens,
            retry: settings.retry,
        })
    }
}

#[async_trait]
impl CodeModel for OpenAiModel {
    fn provider(&self) -> &str {
        "openai"
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
        let answer = http::send_json("chat completions API", &self.retry, || {
            self.client
                .post(&self.endpoint)
                .bearer_auth(self.api_key.expose())
                .json(&body)
        })
        .await?;
        parse_completion(&answer)
    }
}

/// The first choice's message, usage and finish reason.
fn parse_completion(answer: &Value) -> Result<Completion, ModelError> {
    let choice = answer
        .pointer("/choices/0")
        .ok_or_else(|| ModelError::BadResponse("chat completion has no `choices[0]`".into()))?;
    let text = match choice.pointer("/message/content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(_) => {
            return Err(ModelError::BadResponse(
                "`choices[0].message.content` is not a string".into(),
            ));
        }
    };
    let usage = |key: &str| {
        answer
            .pointer(&format!("/usage/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Completion {
        text,
        tokens_in: usage("prompt_tokens"),
        tokens_out: usage("completion_tokens"),
        truncated: choice.get("finish_reason").and_then(Value::as_str) == Some("length"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choice_usage_and_truncation() {
        let answer = json!({
            "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        });
        assert_eq!(
            parse_completion(&answer).unwrap(),
            Completion {
                text: "hi".into(),
                tokens_in: 3,
                tokens_out: 4,
                truncated: true
            }
        );
        assert!(parse_completion(&json!({"choices": []})).is_err());
    }
}
