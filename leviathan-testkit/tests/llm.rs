//! `ScriptedLlm` driven with reqwest exactly as a model client would, with the responses decoded
//! into structs that mirror the providers' documented fields (unknown fields rejected).
#![cfg(feature = "llm")]

use base64::{Engine as _, engine::general_purpose::STANDARD};
use leviathan_testkit::llm::{LlmReply, Provider, ScriptedLlm, files_envelope};
use reqwest::{Client, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnthropicMessage {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    role: String,
    model: String,
    content: Vec<AnthropicContent>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: AnthropicUsage,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnthropicContent {
    #[serde(rename = "type")]
    kind: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnthropicError {
    #[serde(rename = "type")]
    kind: String,
    error: AnthropicErrorDetail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnthropicErrorDetail {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatCompletion {
    id: String,
    object: String,
    created: i64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: ChatUsage,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatChoice {
    index: u32,
    message: ChatMessage,
    finish_reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenAiError {
    error: OpenAiErrorDetail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenAiErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: String,
    param: Option<String>,
    code: Option<String>,
}

const MODEL: &str = "claude-3-5-sonnet-latest";

fn anthropic_body(prompt: &str) -> Value {
    json!({
        "model": MODEL,
        "max_tokens": 4096,
        "temperature": 0.2,
        "messages": [{ "role": "user", "content": prompt }],
    })
}

async fn call_anthropic(llm: &ScriptedLlm, key: &str, body: &Value) -> Response {
    Client::new()
        .post(format!("{}/v1/messages", llm.url()))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn chat_body(prompt: &str) -> Value {
    json!({
        "model": "qwen2.5-coder",
        "messages": [
            { "role": "system", "content": "You edit code." },
            { "role": "user", "content": prompt },
        ],
    })
}

async fn call_openai(llm: &ScriptedLlm, key: &str, body: &Value) -> Response {
    Client::new()
        .post(format!("{}/v1/chat/completions", llm.url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn anthropic_text(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let message: AnthropicMessage = response.json().await.unwrap();
    message
        .content
        .into_iter()
        .map(|block| block.text)
        .collect()
}

async fn openai_text(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let completion: ChatCompletion = response.json().await.unwrap();
    completion
        .choices
        .into_iter()
        .map(|choice| choice.message.content)
        .collect()
}

#[tokio::test]
async fn anthropic_success_has_the_messages_api_shape() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_text("{\"files\":[]}");
    let response =
        call_anthropic(&llm, llm.api_key(), &anthropic_body("TASK DETAILS: do it")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("request-id"));
    let message: AnthropicMessage = response.json().await.unwrap();
    assert!(message.id.starts_with("msg_"));
    assert_eq!(
        (
            message.kind.as_str(),
            message.role.as_str(),
            message.model.as_str()
        ),
        ("message", "assistant", MODEL)
    );
    assert_eq!(message.content.len(), 1);
    assert_eq!(
        (
            message.content[0].kind.as_str(),
            message.content[0].text.as_str()
        ),
        ("text", "{\"files\":[]}")
    );
    assert_eq!(message.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(message.stop_sequence, None);
    assert!(message.usage.input_tokens > 0 && message.usage.output_tokens > 0);

    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].provider, Provider::Anthropic);
    assert_eq!(requests[0].model, MODEL);
    assert_eq!(requests[0].prompt, "TASK DETAILS: do it");
    assert_eq!(requests[0].body["max_tokens"], 4096);
    assert!(requests[0].authenticated);
    assert!(
        !format!("{requests:?}").contains(llm.api_key()),
        "the key is never recorded"
    );
}

#[tokio::test]
async fn openai_success_has_the_chat_completion_shape() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_text("done");
    let response = call_openai(&llm, llm.api_key(), &chat_body("fix the bug")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let completion: ChatCompletion = response.json().await.unwrap();
    assert!(completion.id.starts_with("chatcmpl-"));
    assert_eq!(completion.object, "chat.completion");
    assert!(completion.created > 1_600_000_000);
    assert_eq!(completion.model, "qwen2.5-coder");
    assert_eq!(completion.choices.len(), 1);
    let choice = &completion.choices[0];
    assert_eq!(
        (
            choice.index,
            choice.message.role.as_str(),
            choice.message.content.as_str()
        ),
        (0, "assistant", "done")
    );
    assert_eq!(choice.finish_reason, "stop");
    assert_eq!(
        completion.usage.total_tokens,
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    );

    let requests = llm.requests();
    assert_eq!(
        (requests[0].provider, requests[0].prompt.as_str()),
        (Provider::OpenAi, "fix the bug")
    );
}

#[tokio::test]
async fn wrong_keys_get_401_without_consuming_the_script() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_text("kept");

    let response = call_anthropic(&llm, "sk-wrong", &anthropic_body("hi")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error: AnthropicError = response.json().await.unwrap();
    assert_eq!(
        (error.kind.as_str(), error.error.kind.as_str()),
        ("error", "authentication_error")
    );
    assert_eq!(error.error.message, "invalid x-api-key");

    let response = call_openai(&llm, "sk-wrong", &chat_body("hi")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error: OpenAiError = response.json().await.unwrap();
    assert_eq!(error.error.kind, "invalid_request_error");
    assert_eq!(error.error.code.as_deref(), Some("invalid_api_key"));
    assert_eq!(error.error.param, None);
    assert!(
        !error.error.message.contains("sk-wrong"),
        "the presented key is not echoed"
    );

    let unauthenticated = Client::new()
        .post(format!("{}/v1/messages", llm.url()))
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(llm.remaining(), 1);
    let requests = llm.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|request| !request.authenticated));
    assert_eq!(
        anthropic_text(call_anthropic(&llm, llm.api_key(), &anthropic_body("hi")).await).await,
        "kept"
    );
}

#[tokio::test]
async fn anthropic_version_header_is_required() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_text("unused");
    for version in [None, Some("2020-01-01")] {
        let mut request = Client::new()
            .post(format!("{}/v1/messages", llm.url()))
            .header("x-api-key", llm.api_key())
            .json(&anthropic_body("hi"));
        if let Some(version) = version {
            request = request.header("anthropic-version", version);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "version {version:?}"
        );
        let error: AnthropicError = response.json().await.unwrap();
        assert_eq!(error.error.kind, "invalid_request_error");
        assert!(
            error.error.message.contains("anthropic-version"),
            "{}",
            error.error.message
        );
    }
    assert_eq!(llm.remaining(), 1);
}

#[tokio::test]
async fn invalid_bodies_get_400() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_text("unused");
    let cases = [
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "x" }] }),
            "max_tokens",
        ),
        (
            json!({ "max_tokens": 10, "messages": [{ "role": "user", "content": "x" }] }),
            "model",
        ),
        (
            json!({ "model": MODEL, "max_tokens": 10, "messages": [] }),
            "messages",
        ),
        (
            json!({ "model": MODEL, "max_tokens": 0, "messages": [{ "role": "user", "content": "x" }] }),
            "max_tokens",
        ),
        (
            json!({ "model": MODEL, "max_tokens": 10, "messages": [{ "role": "robot", "content": "x" }] }),
            "role",
        ),
    ];
    for (body, field) in cases {
        let response = call_anthropic(&llm, llm.api_key(), &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: AnthropicError = response.json().await.unwrap();
        assert_eq!(error.error.kind, "invalid_request_error");
        assert!(
            error.error.message.contains(field),
            "{body}: {}",
            error.error.message
        );
    }

    let response = call_openai(
        &llm,
        llm.api_key(),
        &json!({ "messages": [{ "role": "user", "content": "x" }] }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: OpenAiError = response.json().await.unwrap();
    assert!(error.error.message.contains("model"));
    let response = call_openai(
        &llm,
        llm.api_key(),
        &json!({ "model": "m", "messages": [] }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: OpenAiError = response.json().await.unwrap();
    assert_eq!(error.error.param.as_deref(), Some("messages"));
    assert_eq!(llm.remaining(), 1);
}

#[tokio::test]
async fn overloaded_then_success_with_retry_after() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_error(529, Some(3));
    llm.push_error(429, Some(7));
    llm.push_error(500, None);
    llm.push_text("finally");

    let body = anthropic_body("hi");
    let overloaded = call_anthropic(&llm, llm.api_key(), &body).await;
    assert_eq!(overloaded.status().as_u16(), 529);
    assert_eq!(overloaded.headers()["retry-after"], "3");
    let error: AnthropicError = overloaded.json().await.unwrap();
    assert_eq!(
        (error.kind.as_str(), error.error.kind.as_str()),
        ("error", "overloaded_error")
    );

    let limited = call_anthropic(&llm, llm.api_key(), &body).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    let error: AnthropicError = limited.json().await.unwrap();
    assert_eq!(error.error.kind, "rate_limit_error");

    let failed = call_anthropic(&llm, llm.api_key(), &body).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!failed.headers().contains_key("retry-after"));
    let error: AnthropicError = failed.json().await.unwrap();
    assert_eq!(error.error.kind, "api_error");

    assert_eq!(
        anthropic_text(call_anthropic(&llm, llm.api_key(), &body).await).await,
        "finally"
    );
}

#[tokio::test]
async fn openai_rate_limit_has_retry_after() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_error(429, Some(2));
    let response = call_openai(&llm, llm.api_key(), &chat_body("hi")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    let error: OpenAiError = response.json().await.unwrap();
    assert_eq!(error.error.code.as_deref(), Some("rate_limit_exceeded"));
}

#[tokio::test]
async fn one_script_serves_both_endpoints_in_order_then_runs_out() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_text("first");
    llm.push_truncated("second, cut o");
    llm.push(LlmReply::Text("third".into()));
    llm.push_truncated("fourth, cut o");

    assert_eq!(
        anthropic_text(call_anthropic(&llm, llm.api_key(), &anthropic_body("1")).await).await,
        "first"
    );

    let truncated = call_openai(&llm, llm.api_key(), &chat_body("2")).await;
    let completion: ChatCompletion = truncated.json().await.unwrap();
    assert_eq!(completion.choices[0].message.content, "second, cut o");
    assert_eq!(completion.choices[0].finish_reason, "length");

    assert_eq!(
        anthropic_text(call_anthropic(&llm, llm.api_key(), &anthropic_body("3")).await).await,
        "third"
    );

    let truncated = call_anthropic(&llm, llm.api_key(), &anthropic_body("4")).await;
    let message: AnthropicMessage = truncated.json().await.unwrap();
    assert_eq!(message.stop_reason.as_deref(), Some("max_tokens"));
    assert_eq!(message.content[0].text, "fourth, cut o");
    assert_eq!(llm.remaining(), 0);

    let exhausted = call_anthropic(&llm, llm.api_key(), &anthropic_body("5")).await;
    assert_eq!(exhausted.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let error: AnthropicError = exhausted.json().await.unwrap();
    assert!(
        error.error.message.contains("script exhausted"),
        "{}",
        error.error.message
    );
    let exhausted = call_openai(&llm, llm.api_key(), &chat_body("6")).await;
    assert_eq!(exhausted.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let error: OpenAiError = exhausted.json().await.unwrap();
    assert!(error.error.message.contains("script exhausted"));

    let prompts: Vec<String> = llm
        .requests()
        .into_iter()
        .map(|request| request.prompt)
        .collect();
    assert_eq!(prompts, ["1", "2", "3", "4", "5", "6"]);
}

#[tokio::test]
async fn fallback_answers_from_the_prompt_once_the_script_is_empty() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.push_text("scripted");
    llm.set_fallback(|request| match request.provider {
        Provider::Anthropic => LlmReply::Text(format!("anthropic saw: {}", request.prompt)),
        Provider::OpenAi => LlmReply::Truncated(format!("openai saw: {}", request.prompt)),
    });

    assert_eq!(
        anthropic_text(call_anthropic(&llm, llm.api_key(), &anthropic_body("one")).await).await,
        "scripted"
    );
    assert_eq!(
        anthropic_text(call_anthropic(&llm, llm.api_key(), &anthropic_body("two")).await).await,
        "anthropic saw: two"
    );
    let blocks = json!({
        "model": MODEL,
        "max_tokens": 10,
        "messages": [
            { "role": "user", "content": [{ "type": "text", "text": "part a" }, { "type": "text", "text": "part b" }] },
            { "role": "assistant", "content": "ignored" },
            { "role": "user", "content": "part c" },
        ],
    });
    assert_eq!(
        anthropic_text(call_anthropic(&llm, llm.api_key(), &blocks).await).await,
        "anthropic saw: part a\n\npart b\n\npart c"
    );
    assert_eq!(
        openai_text(call_openai(&llm, llm.api_key(), &chat_body("three")).await).await,
        "openai saw: three"
    );
}

#[test]
fn files_envelope_is_the_worker_output_format() {
    let envelope = files_envelope(&[
        ("src/app.py", "print('hi')\n"),
        ("data/x.json", "{\"a\": 1}"),
    ]);
    let parsed: Value = serde_json::from_str(&envelope).unwrap();
    let files = parsed["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["path"], "src/app.py");
    assert_eq!(files[0]["content_b64"], "cHJpbnQoJ2hpJykK");
    let decoded = STANDARD
        .decode(files[1]["content_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, b"{\"a\": 1}");
    assert_eq!(parsed.as_object().unwrap().len(), 1, "nothing but `files`");
    assert_eq!(
        files[0].as_object().unwrap().len(),
        2,
        "exactly path and content_b64"
    );
}
